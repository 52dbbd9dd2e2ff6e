/**
 * `deno task search`: the smallest bit map of a trained run within a
 * perplexity limit. Writes `bitmap.json`, `search.json` (resumable journal)
 * and `frontier.svg` to `--out`; with `--finetune-steps K`, then trains the
 * chosen map for K steps from the run's latent weights into a new run
 * (`--finetune-out`) and reports its perplexity before and after.
 *
 * @module
 */
import { Console, Context, Effect, Layer, Option, type Scope } from "effect";
import { Flag } from "effect/cli";
import { ComputeBackend } from "../backend/service.ts";
import type { GpuUnavailableError } from "../backend/webgpu/device.ts";
import type { ConfigError } from "../common/config_file.ts";
import { writeFileAtomic } from "../common/atomic_write.ts";
import { QUANT_MODES, type QuantMode } from "../common/quant_mode.ts";
import type { DataError } from "../common/text_sources.ts";
import { frontierSvg } from "../search/chart.ts";
import type { LayerBitMap } from "../common/layer_bit_map.ts";
import { selectEvalWindows } from "../search/evaluator.ts";
import { scoreMap } from "../search/weights_evaluator.ts";
import { readPriorScores, searchRecordJson } from "../search/record.ts";
import {
  DEFAULT_BUDGET,
  type Evaluation,
  type Progress,
  search,
} from "../search/search.ts";
import {
  buildSpace,
  type Granularity,
  parsePins,
  SearchError,
  type SearchSpace,
  toSearchError,
} from "../search/space.ts";
import { openSearchRun, runEvaluator } from "../search/run_evaluator.ts";
import type { TrainError } from "../train/trainer.ts";
import { resolveCheckpoint } from "../train/checkpoint.ts";
import { fineTuneSettings, trainFromRun } from "../train/init_from.ts";
import { ProgressPrinter } from "../train/report.ts";
import { checkNewRunDir } from "../train/run.ts";
import { DEFAULT_CACHE_DIR, loadTrainedRun } from "../train/trained_model.ts";
import type { Backend } from "../backend/backend.ts";
import type { SearchRun } from "../search/run_evaluator.ts";
import type { EvalWindows, Score } from "../search/evaluator.ts";
import type { WasmKernels } from "../backend/wasm/wasm_kernels.ts";
import type { TrainSettings } from "../train/settings.ts";
import { UsageError } from "./errors.ts";
import { asUsage, DEFAULT_EVAL_TOKENS, positiveInt } from "./eval_windows.ts";
import { backendLayer, trainFlags } from "./train.ts";
import { checkThreads, runtimeKernels } from "./threads.ts";

const opt = <A>(flag: Flag.Flag<A>, description: string) =>
  flag.pipe(Flag.optional, Flag.withDescription(description));

/** The flags of `search`. */
export const searchFlags = {
  model: Flag.String("model").pipe(
    Flag.withDefault("runs/ref-4m"),
    Flag.withDescription("run directory of the trained model"),
  ),
  maxPpl: opt(Flag.Finite("max-ppl"), "largest perplexity allowed"),
  maxPplRatio: opt(
    Flag.Finite("max-ppl-ratio"),
    "largest perplexity allowed, relative to the run's own bit map (e.g. 1.1)",
  ),
  maxSizeMb: opt(
    Flag.Finite("max-size-mb"),
    "largest total size allowed, in MiB (2^20 bytes)",
  ),
  granularity: Flag.Literals("granularity", ["block", "linear"]).pipe(
    Flag.withDefault("block"),
    Flag.withDescription("search units: whole blocks, or each linear"),
  ),
  modes: opt(
    Flag.String("modes"),
    `candidate modes, comma-separated (default ${QUANT_MODES.join(",")})`,
  ),
  pin: opt(
    Flag.String("pin"),
    "keep units fixed: blocks or linears, optionally =mode (e.g. 0,5,3.mlp.down=eightbit)",
  ),
  unpinEmbedding: Flag.Boolean("unpin-embedding").pipe(
    Flag.withDefault(false),
    Flag.withDescription("search the embedding and LM head too"),
  ),
  budget: opt(
    Flag.Int("budget"),
    `most evaluations (default ${DEFAULT_BUDGET})`,
  ),
  exhaustive: Flag.Boolean("exhaustive").pipe(
    Flag.withDefault(false),
    Flag.withDescription("evaluate every map of the space (small spaces)"),
  ),
  evalTokens: opt(
    Flag.Int("eval-tokens"),
    `validation tokens per evaluation (default ${DEFAULT_EVAL_TOKENS})`,
  ),
  seed: opt(Flag.Int("seed"), "seed of the evaluation windows (default 0)"),
  out: opt(
    Flag.String("out"),
    "output directory (default <model>/search)",
  ),
  fullSplit: Flag.Boolean("full-split").pipe(
    Flag.withDefault(true),
    Flag.withDescription(
      "afterwards, score the chosen and the run's map on the whole validation split (--no-full-split: skip)",
    ),
  ),
  evaluator: Flag.Literals("evaluator", ["runtime", "training"]).pipe(
    Flag.withDefault("runtime"),
    Flag.withDescription(
      "forward pass that scores maps: the inference runtime, or the (slower) training forward",
    ),
  ),
  finetuneSteps: opt(
    Flag.Int("finetune-steps"),
    "afterwards, train the chosen map for this many steps from the run's weights (a new run; the source is not changed)",
  ),
  finetuneOut: opt(
    Flag.String("finetune-out"),
    "run directory of the fine-tune (default <model>-ft)",
  ),
  backend: trainFlags.backend,
  threads: trainFlags.threads,
};

type Opt<A> = Option.Option<A>;

/** The parsed flags of `search`. */
export interface SearchFlags {
  readonly model: string;
  readonly maxPpl: Opt<number>;
  readonly maxPplRatio: Opt<number>;
  readonly maxSizeMb: Opt<number>;
  readonly granularity: Granularity;
  readonly modes: Opt<string>;
  readonly pin: Opt<string>;
  readonly unpinEmbedding: boolean;
  readonly budget: Opt<number>;
  readonly exhaustive: boolean;
  readonly evalTokens: Opt<number>;
  readonly seed: Opt<number>;
  readonly out: Opt<string>;
  readonly fullSplit: boolean;
  readonly evaluator: "runtime" | "training";
  readonly finetuneSteps: Opt<number>;
  readonly finetuneOut: Opt<string>;
  readonly backend: "auto" | "cpu" | "webgpu";
  readonly threads: Opt<number>;
}

const usage = (message: string) => new UsageError({ message });
const MIB = 2 ** 20;
const mib = (bytes: number) =>
  bytes < MIB
    ? `${(bytes / 1024).toFixed(2)} KiB`
    : `${(bytes / MIB).toFixed(3)} MiB`;

function parseModes(
  text: Opt<string>,
): Effect.Effect<ReadonlyArray<QuantMode> | undefined, UsageError> {
  if (Option.isNone(text)) return Effect.succeed(undefined);
  const modes = text.value.split(",").map((m) => m.trim()).filter((m) =>
    m !== ""
  );
  const bad = modes.find((m) =>
    !(QUANT_MODES as readonly string[]).includes(m)
  );
  if (bad !== undefined || modes.length === 0) {
    return Effect.fail(
      usage(
        `--modes: ${
          bad === undefined
            ? "no mode given"
            : `unknown mode ${JSON.stringify(bad)}`
        } (expected some of ${QUANT_MODES.join(", ")})`,
      ),
    );
  }
  return Effect.succeed([...new Set(modes)] as QuantMode[]);
}

function progressLine(
  space: SearchSpace,
  e: Evaluation,
  p: Progress,
): string {
  const rate = e.seconds > 0
    ? `${e.seconds.toFixed(2)}s ${Math.round(e.tokens / e.seconds)} tok/s`
    : "cached";
  const best = p.best
    ? `best ${mib(p.best.bytes)} ppl ${p.best.ppl.toFixed(3)}`
    : "no feasible map yet";
  const eta = p.etaSeconds > 0 ? ` | eta ≤ ${formatSeconds(p.etaSeconds)}` : "";
  const what = e.assignment === undefined
    ? "run's own map"
    : space.units.length <= 8
    ? space.units.map((u, i) => `${u.name}:${u.modes[e.assignment![i]]}`)
      .join(" ")
    : `${e.assignment.length} units`;
  return `[${String(p.done).padStart(String(p.budget).length)}/${p.budget}] ${
    e.phase.padEnd(11)
  } ${mib(e.bytes)} ppl ${e.ppl.toFixed(3)}${
    e.feasible ? " ✓" : "  "
  } (${rate}) | ${best}${eta} | ${what}`;
}

/** The fine-tune `--finetune-steps` asks for. */
interface FineTunePlan {
  readonly steps: number;
  readonly out: string;
}

/** `path` made absolute (against the working directory) and normalized. */
const absolute = (path: string) =>
  new URL(path.replace(/\/+$/, ""), `file://${Deno.cwd()}/`).pathname;

/**
 * The fine-tune the flags ask for (undefined: none), checked before the
 * search spends its time: a step count ≥ 1 and a directory that may hold a
 * new run (missing, empty, or a run's own files without a checkpoint) other
 * than the search's `--out`.
 */
function fineTunePlan(
  flags: SearchFlags,
  out: string,
): Effect.Effect<FineTunePlan | undefined, UsageError | TrainError> {
  return Effect.gen(function* () {
    if (Option.isNone(flags.finetuneSteps)) {
      if (Option.isSome(flags.finetuneOut)) {
        return yield* usage(
          "--finetune-out: give --finetune-steps K too (the steps to train the chosen map)",
        );
      }
      return undefined;
    }
    const steps = yield* positiveInt("finetune-steps", flags.finetuneSteps, 1);
    const dir = Option.getOrElse(
      flags.finetuneOut,
      () => `${flags.model.replace(/\/+$/, "")}-ft`,
    );
    if (absolute(dir) === absolute(out)) {
      return yield* usage(
        `--finetune-out: ${dir} is the search's --out; give the fine-tune its own directory`,
      );
    }
    const held = yield* resolveCheckpoint(dir).pipe(
      Effect.map(() => true),
      Effect.catch(() => Effect.succeed(false)),
    );
    if (held) {
      return yield* usage(
        `--finetune-out: ${dir} already holds a run; give a new or empty directory`,
      );
    }
    yield* checkNewRunDir(dir, "--finetune-out");
    return { steps, out: dir };
  });
}

const scoreJson = (s: Score) => ({
  loss: s.loss,
  ppl: s.ppl,
  tokens: s.tokens,
});

/** A fine-tune of the chosen map, scored. */
interface FineTuned {
  readonly steps: number;
  readonly settings: TrainSettings;
  readonly trainSeconds: number;
  readonly tokensPerSecond: number;
  /** The fine-tuned weights under the map, on the search's windows. */
  readonly windows: Score;
  /** The same on the whole validation split (when it was asked for). */
  readonly wholeSplit?: Score;
}

/**
 * Trains `map` for `plan.steps` steps from `run`'s latent weights into the
 * new run `plan.out` (the source run is only read), then scores the result
 * under `map` with the search's evaluator on its windows, and on the whole
 * validation split when `wholeSplit` is given.
 */
function fineTuneChoice(options: {
  readonly run: SearchRun;
  readonly map: LayerBitMap;
  readonly plan: FineTunePlan;
  readonly windows: EvalWindows;
  readonly wholeSplit: EvalWindows | undefined;
  /** The backend the fine-tune trains on. */
  readonly backend: Backend;
  /** The search's evaluator backend (undefined: the inference runtime). */
  readonly evaluatorBackend: Backend | undefined;
  readonly kernels: WasmKernels;
}): Effect.Effect<
  FineTuned,
  TrainError | DataError | ConfigError | SearchError,
  Scope.Scope
> {
  return Effect.gen(function* () {
    const { run, map, plan, kernels } = options;
    const settings = fineTuneSettings(run.settings, plan.steps);
    console.error(
      `fine-tune: the chosen map from ${run.checkpointPath}, ${plan.steps} steps (peak lr ${settings.lr.peakLr}) → ${plan.out}`,
    );
    const trained = yield* trainFromRun({
      source: {
        ...run,
        config: { ...run.config, layer_bit_map: map },
        bitMap: map,
      },
      out: plan.out,
      settings,
      cacheDir: DEFAULT_CACHE_DIR,
      saveEvery: 0,
      progress: new ProgressPrinter(),
    }).pipe(Effect.provideService(ComputeBackend, options.backend));
    const tuned = yield* loadTrainedRun(plan.out);
    const evaluator = yield* runEvaluator(
      { ...tuned, valid: run.valid, seqLen: run.seqLen, batch: run.batch },
      options.windows,
      options.evaluatorBackend,
      kernels,
    );
    const windows = yield* evaluator.evaluate(map);
    const whole = options.wholeSplit;
    const wholeSplit = whole === undefined ? undefined : yield* Effect
      .tryPromise({
        try: () => scoreMap(tuned, map, run.valid, whole, run.batch, kernels),
        catch: toSearchError,
      });
    return {
      steps: trained.steps,
      settings,
      trainSeconds: trained.trainSeconds,
      tokensPerSecond: trained.tokensPerSecond,
      windows,
      ...(wholeSplit === undefined ? {} : { wholeSplit }),
    };
  });
}

function formatSeconds(s: number): string {
  return s < 90
    ? `${Math.ceil(s)}s`
    : `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, "0")}s`;
}

/** The `search` command's program. */
export function searchProgram(
  flags: SearchFlags,
): Effect.Effect<
  void,
  | UsageError
  | ConfigError
  | DataError
  | TrainError
  | GpuUnavailableError
  | SearchError
> {
  return Effect.scoped(Effect.gen(function* () {
    const log = (line: string) => console.error(line);
    const maxPpl = Option.getOrUndefined(flags.maxPpl);
    const maxPplRatio = Option.getOrUndefined(flags.maxPplRatio);
    if (maxPpl === undefined && maxPplRatio === undefined) {
      return yield* usage(
        "give a perplexity limit: --max-ppl X or --max-ppl-ratio r",
      );
    }
    for (
      const [name, v] of [["max-ppl", maxPpl], [
        "max-ppl-ratio",
        maxPplRatio,
      ]] as const
    ) {
      if (v !== undefined && !(v > 0)) {
        return yield* usage(`--${name}: expected a positive number, got ${v}`);
      }
    }
    const maxSize = Option.getOrUndefined(flags.maxSizeMb);
    if (maxSize !== undefined && !(maxSize > 0)) {
      return yield* usage(
        `--max-size-mb: expected a positive size, got ${maxSize}`,
      );
    }
    const modes = yield* parseModes(flags.modes);
    const pinText = Option.getOrUndefined(flags.pin);
    const pins = pinText !== undefined
      ? yield* asUsage(Effect.try({
        try: () => parsePins(pinText),
        catch: (e) =>
          e instanceof SearchError
            ? e
            : new SearchError({ message: `--pin: ${e}` }),
      }))
      : [];
    const evalTokens = yield* positiveInt(
      "eval-tokens",
      flags.evalTokens,
      DEFAULT_EVAL_TOKENS,
    );
    const seed = yield* positiveInt("seed", flags.seed, 0, 0);
    const out = Option.getOrElse(flags.out, () => `${flags.model}/search`);
    const threads = yield* checkThreads(flags.threads, flags.backend);
    const finetune = yield* fineTunePlan(flags, out);

    const run = yield* openSearchRun(flags.model);
    const space = yield* asUsage(Effect.try({
      try: () =>
        buildSpace(run.config, run.bitMap, {
          granularity: flags.granularity,
          modes,
          unpinEmbedding: flags.unpinEmbedding,
          pins,
        }),
      catch: (e) =>
        e instanceof SearchError ? e : new SearchError({ message: String(e) }),
    }));
    if (space.units.length === 0) {
      return yield* usage("--pin: every unit is pinned; nothing to search");
    }
    const budget = flags.exhaustive
      ? space.size + 1 + QUANT_MODES.length
      : yield* positiveInt("budget", flags.budget, DEFAULT_BUDGET);
    if (flags.exhaustive && space.size > 1_000_000) {
      return yield* usage(
        `--exhaustive: the space has ${space.size} maps; use --pin or --granularity block`,
      );
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
    // Only the training forward (and a fine-tune) runs on a compute backend.
    const buildBackend = Effect.map(
      Layer.build(backendLayer(flags.backend, threads)),
      (context) => Context.get(context, ComputeBackend),
    );
    const backend = flags.evaluator === "training"
      ? yield* buildBackend
      : undefined;
    const kernels = yield* runtimeKernels(threads);
    const evaluator = yield* runEvaluator(run, windows, backend, kernels);

    const source = {
      model: run.checkpointPath,
      step: run.step,
      evalTokens: windows.starts.length * windows.seqLen,
      seqLen: windows.seqLen,
      seed,
      evaluator: evaluator.name,
    };
    const header = {
      source,
      space: {
        granularity: space.granularity,
        size: space.size,
        units: space.units.map((u) => ({
          name: u.name,
          modes: u.modes,
          bytes: u.bytes,
        })),
        pinned: Object.fromEntries(space.fixed),
      },
      constraint: {
        ...(maxPpl !== undefined ? { maxPpl } : {}),
        ...(maxPplRatio !== undefined ? { maxPplRatio } : {}),
        ...(maxSize !== undefined ? { maxSizeMb: maxSize } : {}),
        budget,
      },
    };
    yield* Effect.tryPromise({
      try: () => Deno.mkdir(out, { recursive: true }),
      catch: (e) => usage(`--out: cannot create ${out}: ${e}`),
    });
    const journal = `${out}/search.json`;
    const prior = yield* asUsage(readPriorScores(journal, source));
    log(
      `search: ${space.units.length} ${space.granularity} units (${
        space.units.map((u) => u.name).join(" ")
      }), ${
        space.size.toLocaleString("en-US")
      } maps; ${windows.starts.length} windows × ${windows.seqLen} tokens (seed ${seed}) with ${evaluator.name}${
        backend ? ` on ${backend.description}` : ""
      }; budget ${budget}${
        prior.length > 0 ? `; ${prior.length} scores from ${journal}` : ""
      }`,
    );
    const evaluations: Array<Evaluation> = [];
    const result = yield* asUsage(search({
      space,
      evaluator: evaluator.evaluate,
      constraint: {
        maxPpl,
        maxPplRatio,
        ...(maxSize !== undefined
          ? { maxBytes: Math.floor(maxSize * MIB) }
          : {}),
      },
      budget,
      exhaustive: flags.exhaustive,
      prior,
      onEvaluation: (e, p) =>
        Effect.gen(function* () {
          evaluations.push(e);
          log(progressLine(space, e, p));
          yield* writeFileAtomic(
            journal,
            searchRecordJson(header, evaluations),
          );
        }),
    }));
    yield* writeFileAtomic(
      journal,
      searchRecordJson(header, result.evaluations, result),
    );
    yield* writeFileAtomic(
      `${out}/frontier.svg`,
      frontierSvg(result, `Bit-width search — ${flags.model}`),
    );
    const fresh = result.evaluations.filter((e) => !e.cached);
    const evalSeconds = fresh.reduce((s, e) => s + e.seconds, 0);
    const tokens = fresh.reduce((s, e) => s + e.tokens, 0);
    const o = result.optimality;
    log(
      `${result.evaluations.length} evaluations (${fresh.length} computed, ${
        evalSeconds > 0 ? Math.round(tokens / evalSeconds) : 0
      } tokens/s) in ${formatSeconds(result.seconds)}; reference map ${
        mib(result.reference.bytes)
      } ppl ${result.reference.ppl.toFixed(3)}; limit ppl ≤ ${
        result.maxPpl.toFixed(3)
      }${
        result.maxBytes !== undefined ? `, size ≤ ${mib(result.maxBytes)}` : ""
      }`,
    );
    log(
      o.proven
        ? `optimal: every map no larger than the ${
          result.choice ? "choice" : "size limit"
        } was evaluated (${o.evaluatedPoints} of ${
          o.spaceSize.toLocaleString("en-US")
        } maps)`
        : `not proven optimal: ${o.evaluatedPoints} of ${
          o.spaceSize.toLocaleString("en-US")
        } maps evaluated (budget ${budget}); ${
          o.countCapped ? "more than " : ""
        }${o.unevaluatedSmaller} unevaluated maps are smaller${
          result.choice
            ? `; the optimum is at least ${mib(o.lowerBoundBytes)} (gap ≤ ${
              (result.choice.bytes - o.lowerBoundBytes).toLocaleString("en-US")
            } bytes, ${
              (100 * (result.choice.bytes - o.lowerBoundBytes) /
                result.choice.bytes).toFixed(1)
            }%)`
            : ""
        }`,
    );
    log(`wrote ${journal}, ${out}/frontier.svg`);
    if (result.choice === undefined) {
      const best = result.lowestPpl;
      yield* Console.error(
        `error: no map ${o.proven ? "exists" : "was found"} within ppl ≤ ${
          result.maxPpl.toFixed(3)
        }${
          result.maxBytes !== undefined ? ` and ${mib(result.maxBytes)}` : ""
        }; the lowest perplexity reached${
          result.maxBytes !== undefined ? ` within ${mib(result.maxBytes)}` : ""
        } is ${best.ppl.toFixed(3)} (${mib(best.bytes)}) with ${
          JSON.stringify(best.map)
        }`,
      );
      Deno.exitCode = 1;
      return;
    }
    const c = result.choice;
    // The limit was checked on a sample of windows; here is the whole split.
    const all = flags.fullSplit
      ? selectEvalWindows(run.valid.length, {
        seqLen: run.seqLen,
        evalTokens: run.valid.length,
        seed: 0,
      })
      : undefined;
    let chosenWhole: Score | undefined;
    if (all !== undefined) {
      const score = (map: LayerBitMap) =>
        Effect.tryPromise({
          try: () => scoreMap(run, map, run.valid, all, run.batch, kernels),
          catch: toSearchError,
        });
      // Two full passes over the split: say so, they take a while.
      const tokens = all.starts.length * all.seqLen;
      const started = performance.now();
      log(
        `scoring the run's map and the chosen map on the whole validation split (${tokens} tokens) …`,
      );
      const ref = yield* score(result.reference.map);
      log(
        `run's map: ppl ${ref.ppl.toFixed(3)} (${
          ((performance.now() - started) / 1000).toFixed(1)
        }s); now the chosen map …`,
      );
      const chosen = yield* score(c.map);
      chosenWhole = chosen;
      log(
        `whole validation split (${chosen.tokens} tokens): chosen ppl ${
          chosen.ppl.toFixed(3)
        }, run's map ${ref.ppl.toFixed(3)} (ratio ${
          (chosen.ppl / ref.ppl).toFixed(4)
        }${maxPplRatio !== undefined ? `, limit ${maxPplRatio}` : ""}${
          maxPpl !== undefined ? `, limit ppl ${maxPpl}` : ""
        })`,
      );
    }
    yield* writeFileAtomic(
      `${out}/bitmap.json`,
      JSON.stringify(c.map, null, 2) + "\n",
    );
    log(
      `chosen: ${mib(c.bytes)} (${
        (100 * c.bytes / result.reference.bytes).toFixed(1)
      }% of the run's map), ppl ${c.ppl} (loss ${c.loss}) → ${out}/bitmap.json`,
    );
    if (finetune !== undefined) {
      const tuned = yield* fineTuneChoice({
        run,
        map: c.map,
        plan: finetune,
        windows,
        wholeSplit: all,
        backend: backend ?? (yield* buildBackend),
        // The fine-tune is scored as the search scored the choice.
        evaluatorBackend: backend,
        kernels,
      });
      const before = { loss: c.loss, ppl: c.ppl, tokens: c.tokens };
      log(
        `fine-tuned ${finetune.steps} steps → ${finetune.out}: ppl on the search's windows ${
          c.ppl.toFixed(3)
        } → ${tuned.windows.ppl.toFixed(3)}${
          tuned.wholeSplit && chosenWhole
            ? `; whole validation split ${chosenWhole.ppl.toFixed(3)} → ${
              tuned.wholeSplit.ppl.toFixed(3)
            }`
            : ""
        }`,
      );
      const { evaluations, ...done } = JSON.parse(
        searchRecordJson(header, result.evaluations, result),
      );
      yield* writeFileAtomic(
        journal,
        JSON.stringify(
          {
            ...done,
            finetune: {
              out: finetune.out,
              steps: tuned.steps,
              settings: tuned.settings,
              trainSeconds: tuned.trainSeconds,
              tokensPerSecond: tuned.tokensPerSecond,
              windows: { before, after: scoreJson(tuned.windows) },
              ...(tuned.wholeSplit && chosenWhole
                ? {
                  wholeSplit: {
                    before: scoreJson(chosenWhole),
                    after: scoreJson(tuned.wholeSplit),
                  },
                }
                : {}),
            },
            evaluations,
          },
          null,
          1,
        ) + "\n",
      );
    }
    yield* Console.log(JSON.stringify(c.map));
  }));
}
