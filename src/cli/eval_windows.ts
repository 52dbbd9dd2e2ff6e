/**
 * `deno task eval --eval-tokens N`: a run's perplexity on the search's
 * windows, and the flag checks `search` shares with it.
 *
 * @module
 */
import { Console, Effect, Option } from "effect";
import { bitMapIssues } from "../common/config.ts";
import { ConfigError, loadBitMap } from "../common/config_file.ts";
import type { DataError } from "../common/text_sources.ts";
import { selectEvalWindows } from "../search/evaluator.ts";
import { openSearchRun } from "../search/run_evaluator.ts";
import { SearchError, toSearchError } from "../search/space.ts";
import { scoreMap } from "../search/weights_evaluator.ts";
import { UsageError } from "./errors.ts";
import { runtimeKernels } from "./threads.ts";

type Opt<A> = Option.Option<A>;

/** Evaluation tokens by default: a few seconds an evaluation for `ref-4m`. */
export const DEFAULT_EVAL_TOKENS = 8192;

/** `value` if it is an integer ≥ `min`, `fallback` when absent; else a UsageError naming `--name`. */
export function positiveInt(
  name: string,
  value: Opt<number>,
  fallback: number,
  min = 1,
): Effect.Effect<number, UsageError> {
  if (Option.isNone(value)) return Effect.succeed(fallback);
  const v = value.value;
  return Number.isInteger(v) && v >= min ? Effect.succeed(v) : Effect.fail(
    new UsageError({
      message: `--${name}: expected an integer ≥ ${min}, got ${v}`,
    }),
  );
}

/** A SearchError (whose message names its flag) as a UsageError. */
export const asUsage = <A, E>(e: Effect.Effect<A, E | SearchError>) =>
  e.pipe(
    Effect.catchIf(
      (x): x is SearchError => x instanceof SearchError,
      (x) => Effect.fail(new UsageError({ message: x.message })),
    ),
  );

/**
 * `deno task eval --eval-tokens N [--seed S] [--bit-map F]`: the perplexity
 * of a run under a map on the search's windows of its validation split,
 * scored exactly as the search scored it (on `threads` threads, default
 * every core: the same numbers for any count).
 */
export function evalWindowsProgram(flags: {
  readonly model: string;
  readonly bitMap: Opt<string>;
  readonly evalTokens: number;
  readonly seed: Opt<number>;
  readonly json: boolean;
  readonly threads?: number;
}): Effect.Effect<void, UsageError | ConfigError | DataError | SearchError> {
  return Effect.scoped(Effect.gen(function* () {
    const evalTokens = yield* positiveInt(
      "eval-tokens",
      Option.some(flags.evalTokens),
      DEFAULT_EVAL_TOKENS,
    );
    const seed = yield* positiveInt("seed", flags.seed, 0, 0);
    const run = yield* openSearchRun(flags.model);
    const file = Option.getOrUndefined(flags.bitMap);
    const map = file === undefined ? run.bitMap : yield* loadBitMap(file);
    const issues = bitMapIssues(run.config, map);
    if (issues.length > 0) {
      return yield* new ConfigError({
        file: file!,
        message: issues.map((i) => `${file}: ${i}`).join("\n"),
      });
    }
    const windows = yield* asUsage(Effect.try({
      try: () =>
        selectEvalWindows(run.valid.length, {
          seqLen: run.seqLen,
          evalTokens,
          seed,
        }),
      catch: (e) =>
        e instanceof SearchError ? e : new SearchError({ message: String(e) }),
    }));
    const kernels = yield* runtimeKernels(flags.threads);
    const s = yield* Effect.tryPromise({
      try: () => scoreMap(run, map, run.valid, windows, run.batch, kernels),
      catch: toSearchError,
    });
    yield* Console.log(
      flags.json
        ? JSON.stringify({ tokens: s.tokens, loss: s.loss, ppl: s.ppl })
        : `${flags.model} validation windows (${windows.starts.length} × ${windows.seqLen}, seed ${seed}): ${s.tokens} tokens, loss ${
          s.loss.toFixed(6)
        }, perplexity ${s.ppl.toFixed(6)}`,
    );
  }));
}
