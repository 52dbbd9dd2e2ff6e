/**
 * The `ternary` command line: `deno task <name>` runs `ternary <name>`.
 *
 * User errors (bad flags, bad config or data files) print one line per problem,
 * naming the flag or file, and exit with status 1 — never a stack trace.
 *
 * @module
 */
import { Console, Effect } from "effect";
import { Command, Flag } from "effect/cli";
import { NodeRuntime, NodeServices } from "@effect/platform-node";
import denoJson from "../../deno.json" with { type: "json" };
import { cliLogger } from "./logger.ts";
import { searchFlags, searchProgram } from "./search.ts";
import { inferCommand } from "./infer.ts";
import { exportCommand } from "./export.ts";
import { statsProgram } from "./stats.ts";
import { evalProgram, prepProgram, trainFlags, trainProgram } from "./train.ts";

const stats = Command.make("stats", {
  preset: Flag.String("preset").pipe(
    Flag.withDefault("ref-4m"),
    Flag.withDescription("preset model (tiny, ref-4m, bitnet-100m)"),
  ),
  config: Flag.String("config").pipe(
    Flag.optional,
    Flag.withDescription("model config JSON file (overrides --preset)"),
  ),
  bitMap: Flag.String("bit-map").pipe(
    Flag.optional,
    Flag.withDescription("LayerBitMap JSON file"),
  ),
  json: Flag.Boolean("json").pipe(
    Flag.withDefault(false),
    Flag.withDescription("print the stats as JSON"),
  ),
}, statsProgram).pipe(
  Command.withDescription(
    "validate a config and bit map; print each tensor's storage cost",
  ),
);

const train = Command.make("train", trainFlags, trainProgram).pipe(
  Command.withDescription(
    "train a ternary LM (default: ref-4m on the built-in Brown corpus, 10 minutes)",
  ),
);

const prep = Command.make("prep", {
  preset: trainFlags.preset,
  config: trainFlags.config,
  data: trainFlags.data,
}, prepProgram).pipe(
  Command.withDescription(
    "train the tokenizer and write the token files (cached; train runs it on first use)",
  ),
);

const evaluate = Command.make("eval", {
  model: Flag.String("model").pipe(
    Flag.withDescription("run directory of a trained model"),
  ),
  text: Flag.String("text").pipe(
    Flag.optional,
    Flag.withDescription("text file to score (or --eval-tokens)"),
  ),
  evalTokens: Flag.Int("eval-tokens").pipe(
    Flag.optional,
    Flag.withDescription(
      "score the search's windows of the validation split instead (as `search --eval-tokens`)",
    ),
  ),
  seed: Flag.Int("seed").pipe(
    Flag.optional,
    Flag.withDescription("with --eval-tokens: seed of the windows (default 0)"),
  ),
  json: Flag.Boolean("json").pipe(
    Flag.withDefault(false),
    Flag.withDescription('print {"tokens", "loss", "ppl"}'),
  ),
  bitMap: Flag.String("bit-map").pipe(
    Flag.optional,
    Flag.withDescription(
      "LayerBitMap JSON: quantize the trained weights under this map instead",
    ),
  ),
  backend: trainFlags.backend,
  threads: trainFlags.threads,
}, evalProgram).pipe(
  Command.withDescription("true perplexity of a trained model on a text file"),
);

const ternary = Command.make("ternary").pipe(
  Command.withSubcommands([
    stats,
    train,
    prep,
    evaluate,
    Command.make("search", searchFlags, searchProgram).pipe(
      Command.withDescription(
        "the smallest bit map of a trained run within a perplexity limit",
      ),
    ),
    inferCommand,
    exportCommand,
  ]),
);

/** Errors that are the user's to fix: their message is all a person needs. */
const USER_ERRORS: ReadonlySet<string> = new Set([
  "ConfigError",
  "DataError",
  "UsageError",
  "SearchError",
  "NotImplementedError",
  "TrainError",
  "GpuUnavailableError",
  "ExportError",
]);

const isUserError = (e: unknown): e is { _tag: string; message: string } =>
  typeof e === "object" && e !== null && "_tag" in e &&
  USER_ERRORS.has(String(e._tag));

const program = Command.run(ternary, { version: denoJson.version }).pipe(
  Effect.catchIf(isUserError, (e) =>
    Console.error(`error: ${e.message}`).pipe(
      Effect.andThen(Effect.sync(() => {
        Deno.exitCode = 1;
      })),
    )),
  Effect.provide(cliLogger),
  Effect.provide(NodeServices.layer),
);

if (import.meta.main) NodeRuntime.runMain(program);
