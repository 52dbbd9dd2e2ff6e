/**
 * `deno task train`, `deno task prep` and `deno task eval`: the flags, their
 * checks (each error names its flag) and the programs they run.
 *
 * @module
 */
import { Console, Effect, Layer, Option } from "effect";
import { Flag } from "effect/cli";
import { ComputeBackend } from "../backend/service.ts";
import type { GpuUnavailableError } from "../backend/webgpu/device.ts";
import {
  bitMapIssues,
  type OneBitLlmConfig,
  resolveBitMap,
} from "../common/config.ts";
import {
  type ConfigError,
  loadBitMap,
  loadConfig,
} from "../common/config_file.ts";
import {
  type LayerBitMap,
  LINEAR_NAMES,
  linearMode,
  lmHeadMode,
} from "../common/layer_bit_map.ts";
import {
  CHECKPOINT_FILES,
  pathExists,
  resolveCheckpoint,
} from "../train/checkpoint.ts";
import { prepareDataset } from "../common/dataset.ts";
import { DataError, readText } from "../common/text_sources.ts";
import { quantPhases } from "../core/schedule.ts";
import { ProgressPrinter } from "../train/report.ts";
import { readHfConfig } from "../infer/formats/hf.ts";
import { runTraining } from "../train/run.ts";
import {
  defaultSettings,
  lrSchedule,
  type TrainSettings,
} from "../train/settings.ts";
import {
  DEFAULT_CACHE_DIR,
  loadTrainedModel,
  loadTrainedRun,
  type TrainedRun,
} from "../train/trained_model.ts";
import { evaluateModel, type TrainError } from "../train/trainer.ts";
import { initSourceKind, trainFromRun } from "../train/init_from.ts";
import { UsageError } from "./errors.ts";
import { evalWindowsProgram } from "./eval_windows.ts";
import type { SearchError } from "../search/space.ts";
import { resolveBitMapFlag, resolveConfig } from "./stats.ts";
import { checkThreads, threadsFlag } from "./threads.ts";

const int = (name: string, description: string) =>
  Flag.Int(name).pipe(Flag.optional, Flag.withDescription(description));
const num = (name: string, description: string) =>
  Flag.Finite(name).pipe(Flag.optional, Flag.withDescription(description));
const str = (name: string, description: string) =>
  Flag.String(name).pipe(Flag.optional, Flag.withDescription(description));

/** The preset of `train` and `prep` without --preset or --config. */
const DEFAULT_PRESET = "ref-4m";

/** The flags of `train`. */
export const trainFlags = {
  preset: Flag.String("preset").pipe(
    Flag.optional,
    Flag.withDescription(
      `preset model: tiny, ref-4m, bitnet-100m (default ${DEFAULT_PRESET})`,
    ),
  ),
  config: str("config", "model config JSON (overrides --preset)"),
  bitMap: str("bit-map", "LayerBitMap JSON (per-layer modes)"),
  init: str(
    "init",
    "start from a run directory or a transformers BitNet directory (an hf export, or PyTorch's): its model and latent weights (--bit-map may change the modes)",
  ),
  data: str(
    "data",
    "training text: file, directory, JSONL or WikiText (default: Brown corpus; with --resume or --init RUN, the run's own)",
  ),
  out: str(
    "out",
    "run directory (default: runs/<preset>; with --init RUN, RUN-ft)",
  ),
  steps: int("steps", "optimizer steps (default: as many as --time allows)"),
  time: str(
    "time",
    "time budget, e.g. 90s, 10m, 1h (default 10m without --steps)",
  ),
  batch: int("batch", "sequences per micro-batch (default 16)"),
  seq: int("seq", "tokens per sequence (default: the model's max_seq_len)"),
  accum: int("accum", "micro-batches per step (default 1)"),
  lr: num("lr", "peak learning rate (default 1.5e-3)"),
  warmup: int("warmup", "warmup steps (default min(100, steps/10))"),
  schedule: Flag.Literals("schedule", [
    "cosine",
    "linear",
    "two-stage",
    "cosine-from-start",
  ]).pipe(
    Flag.optional,
    Flag.withDescription(
      "LR schedule, default cosine (two-stage: BitNet, WD 0.1 → 0; cosine-from-start: warmup × cosine over the whole run, as the PyTorch reference)",
    ),
  ),
  weightDecay: num(
    "weight-decay",
    "weight decay of linear matrices (default 0.1)",
  ),
  fpSteps: int(
    "fp-steps",
    "full-precision steps before quantization (default 0)",
  ),
  softSteps: int(
    "soft-steps",
    "steps over which λ rises 0 → 1 (default 0: hard)",
  ),
  labelSmoothing: num(
    "label-smoothing",
    "training label smoothing (default 0)",
  ),
  evalEvery: int("eval-every", "validate every N steps (default steps/5)"),
  saveEvery: int(
    "save-every",
    "checkpoint every N steps (default: at validations)",
  ),
  backend: Flag.Literals("backend", ["auto", "cpu", "webgpu"]).pipe(
    Flag.withDefault("auto"),
    Flag.withDescription("compute backend"),
  ),
  threads: threadsFlag,
  seed: int("seed", "seed of initialization and batch order (default 0)"),
  resume: Flag.Boolean("resume").pipe(
    Flag.withDefault(false),
    Flag.withDescription("continue the checkpoint in --out"),
  ),
};

type Opt<A> = Option.Option<A>;

/** The LR schedules of `--schedule`. */
type ScheduleName = "cosine" | "linear" | "two-stage" | "cosine-from-start";

/** The parsed flags of `train`. */
export interface TrainFlags {
  readonly preset: Opt<string>;
  readonly config: Opt<string>;
  readonly bitMap: Opt<string>;
  readonly init: Opt<string>;
  readonly data: Opt<string>;
  readonly out: Opt<string>;
  readonly steps: Opt<number>;
  readonly time: Opt<string>;
  readonly batch: Opt<number>;
  readonly seq: Opt<number>;
  readonly accum: Opt<number>;
  readonly lr: Opt<number>;
  readonly warmup: Opt<number>;
  readonly schedule: Opt<ScheduleName>;
  readonly weightDecay: Opt<number>;
  readonly fpSteps: Opt<number>;
  readonly softSteps: Opt<number>;
  readonly labelSmoothing: Opt<number>;
  readonly evalEvery: Opt<number>;
  readonly saveEvery: Opt<number>;
  readonly backend: "auto" | "cpu" | "webgpu";
  readonly threads: Opt<number>;
  readonly seed: Opt<number>;
  readonly resume: boolean;
}

/** `90s`, `10m`, `1.5h`, `600` (seconds) → seconds. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(s|m|h)?$/.exec(text.trim());
  if (m === null) return undefined;
  const value = Number(m[1]) * ({ s: 1, m: 60, h: 3600 }[m[2] ?? "s"] ?? 1);
  return value > 0 ? value : undefined;
}

function positive(
  name: string,
  value: Opt<number>,
  min = 1,
): Effect.Effect<number | undefined, UsageError> {
  if (Option.isNone(value)) return Effect.succeed(undefined);
  const v = value.value;
  return Number.isInteger(v) && v >= min ? Effect.succeed(v) : Effect.fail(
    new UsageError({
      message: `--${name}: expected an integer ≥ ${min}, got ${v}`,
    }),
  );
}

/**
 * The backend layer a `--backend` flag asks for: `auto` uses WebGPU only on a
 * real (non-fallback) adapter, `webgpu` forces it (a software adapter too),
 * `cpu` forces WebAssembly SIMD. The CPU backend runs on `threads` threads
 * (default: every core; check the flag with `checkThreads` first).
 */
export function backendLayer(
  kind: "auto" | "cpu" | "webgpu",
  threads?: number,
): Layer.Layer<ComputeBackend, GpuUnavailableError> {
  if (threads === undefined) {
    switch (kind) {
      case "cpu":
        return ComputeBackend.cpu;
      case "webgpu":
        return ComputeBackend.webgpu({ allowFallback: true });
      case "auto":
        return ComputeBackend.auto;
    }
  }
  const cpu = ComputeBackend.cpuWith({ threads });
  if (kind === "cpu") return cpu;
  if (kind === "webgpu") return ComputeBackend.webgpu({ allowFallback: true });
  // ComputeBackend.auto, with the CPU fallback on `threads` threads.
  return ComputeBackend.webgpu({ powerPreference: "high-performance" }).pipe(
    Layer.tap(() =>
      Effect.logInfo(
        `--threads ${threads}: not used, a GPU computes (--backend cpu to compute on the CPU)`,
      )
    ),
    Layer.catchTag("GpuUnavailableError", (error) =>
      Layer.unwrap(
        Effect.logInfo(
          `using the cpu backend, WebGPU is unavailable (${error.reason}): ${error.message}`,
        ).pipe(Effect.as(cpu)),
      )),
  );
}

/**
 * `program` on the backend that `--backend` and `--threads` ask for, the
 * flags checked before any backend is built.
 */
function withBackend<A, E, R>(
  flags: {
    readonly backend: "auto" | "cpu" | "webgpu";
    readonly threads: Opt<number>;
  },
  program: Effect.Effect<A, E, R>,
): Effect.Effect<
  A,
  E | UsageError | GpuUnavailableError,
  Exclude<R, ComputeBackend>
> {
  return checkThreads(flags.threads, flags.backend).pipe(
    Effect.flatMap((threads) =>
      program.pipe(Effect.provide(backendLayer(flags.backend, threads)))
    ),
  );
}

/**
 * The bit map `file` (of `--bit-map`) checked against the model of the
 * `--init` directory `init`: one line naming the flag, the file and every
 * misfit.
 */
function initBitMap(
  config: OneBitLlmConfig,
  file: string,
  init: string,
): Effect.Effect<LayerBitMap, UsageError | ConfigError> {
  return loadBitMap(file).pipe(
    Effect.flatMap((map) => {
      const issues = bitMapIssues(config, map);
      return issues.length === 0 ? Effect.succeed(map) : Effect.fail(
        new UsageError({
          message:
            `--bit-map: ${file} does not fit the model of --init ${init}: ${
              issues.join("; ")
            }`,
        }),
      );
    }),
  );
}

/**
 * The model of the `--init` directory: a run's (under `--bit-map` when
 * given, loaded with its latent weights) or a transformers BitNet
 * directory's. Fails naming `--init` for a directory that is neither.
 */
function initModel(
  init: string,
  bitMap: Opt<string>,
): Effect.Effect<
  { readonly config: OneBitLlmConfig; readonly run?: TrainedRun },
  UsageError | ConfigError | DataError
> {
  return Effect.gen(function* () {
    const kind = yield* initSourceKind(init);
    if (kind === undefined) {
      return yield* new UsageError({
        message: (yield* pathExists(init))
          ? `--init: ${init} is neither a run directory (no \`latest\` file) nor a transformers BitNet directory (no config.json and model.safetensors)`
          : `--init: ${init}: no such directory`,
      });
    }
    if (kind === "hf") {
      const { config } = yield* readHfConfig(init);
      return {
        config: Option.isSome(bitMap)
          ? {
            ...config,
            layer_bit_map: yield* initBitMap(config, bitMap.value, init),
          }
          : config,
      };
    }
    const map = Option.isSome(bitMap)
      ? yield* initBitMap(yield* checkpointConfig(init), bitMap.value, init)
      : undefined;
    const run = yield* loadTrainedRun(init, {
      bitMap: map,
      bitMapSource: Option.getOrUndefined(bitMap),
    });
    return { config: run.config, run };
  });
}

/** The run's settings at a step count, from the flags (absent flags take the defaults). */
function settingsFrom(
  flags: TrainFlags,
  config: OneBitLlmConfig,
  values: {
    batch?: number;
    seq?: number;
    accum?: number;
    warmup?: number;
    fpSteps?: number;
    softSteps?: number;
    evalEvery?: number;
    seed?: number;
  },
): (steps: number) => TrainSettings {
  const weightDecay = Option.getOrUndefined(flags.weightDecay);
  const given: Partial<TrainSettings> = {
    batch: values.batch,
    seqLen: values.seq,
    accumulation: values.accum,
    weightDecay,
    labelSmoothing: Option.getOrUndefined(flags.labelSmoothing),
    evalEvery: values.evalEvery,
    seed: values.seed,
  };
  const overrides = Object.fromEntries(
    Object.entries(given).filter(([, v]) => v !== undefined),
  ) as Partial<TrainSettings>;
  return (steps) =>
    defaultSettings(config, steps, {
      ...overrides,
      lr: lrSchedule(Option.getOrElse(flags.schedule, () => "cosine"), {
        steps,
        peakLr: Option.getOrUndefined(flags.lr),
        warmupSteps: values.warmup,
        weightDecay,
      }),
      lambda: quantPhases({
        fpSteps: values.fpSteps ?? 0,
        softSteps: values.softSteps ?? 0,
      }),
    });
}

/**
 * Fails on a flag value no run can use, before any work: a learning rate that
 * is not positive, a negative weight decay, a label smoothing outside [0, 1);
 * and, with --resume, on every flag that would change the saved settings
 * (only --steps may: the run goes on to that many steps).
 */
function checkFlagValues(flags: TrainFlags): Effect.Effect<void, UsageError> {
  const bad = (flag: string, value: number, expected: string) =>
    Effect.fail(
      new UsageError({
        message: `--${flag}: expected ${expected}, got ${value}`,
      }),
    );
  const lr = Option.getOrUndefined(flags.lr);
  if (lr !== undefined && !(lr > 0)) {
    return bad("lr", lr, "a learning rate > 0");
  }
  const wd = Option.getOrUndefined(flags.weightDecay);
  if (wd !== undefined && !(wd >= 0)) {
    return bad("weight-decay", wd, "a weight decay ≥ 0");
  }
  const ls = Option.getOrUndefined(flags.labelSmoothing);
  if (ls !== undefined && !(ls >= 0 && ls < 1)) {
    return bad("label-smoothing", ls, "a value in [0, 1)");
  }
  if (flags.resume) {
    const fixed: Array<[string, Opt<unknown>]> = [
      ["preset", flags.preset],
      ["batch", flags.batch],
      ["seq", flags.seq],
      ["accum", flags.accum],
      ["lr", flags.lr],
      ["warmup", flags.warmup],
      ["schedule", flags.schedule],
      ["weight-decay", flags.weightDecay],
      ["fp-steps", flags.fpSteps],
      ["soft-steps", flags.softSteps],
      ["label-smoothing", flags.labelSmoothing],
      ["eval-every", flags.evalEvery],
      ["seed", flags.seed],
    ];
    const given = fixed.find(([, v]) => Option.isSome(v));
    if (given !== undefined) {
      return Effect.fail(
        new UsageError({
          message: `--${
            given[0]
          }: a resumed run keeps the settings saved in its checkpoint; start a new run (another --out) to change them`,
        }),
      );
    }
  }
  return Effect.void;
}

/** Whether two maps (of the same depth) store every tensor in the same mode. */
const sameModes = (a: LayerBitMap, b: LayerBitMap): boolean =>
  a.embedding === b.embedding && lmHeadMode(a) === lmHeadMode(b) &&
  a.layer_modes.length === b.layer_modes.length &&
  a.layer_modes.every((_, l) =>
    LINEAR_NAMES.every((n) => linearMode(a, l, n) === linearMode(b, l, n))
  );

/** The config of the current checkpoint in the run directory `out`. */
const checkpointConfig = (
  out: string,
): Effect.Effect<OneBitLlmConfig, DataError | ConfigError> =>
  resolveCheckpoint(out).pipe(
    Effect.flatMap((path) => loadConfig(`${path}/${CHECKPOINT_FILES.config}`)),
  );

/** The `train` command's program. */
export function trainProgram(
  flags: TrainFlags,
): Effect.Effect<
  void,
  UsageError | ConfigError | DataError | TrainError | GpuUnavailableError
> {
  return Effect.scoped(Effect.gen(function* () {
    yield* checkFlagValues(flags);
    const preset = Option.getOrElse(flags.preset, () => DEFAULT_PRESET);
    const values = {
      batch: yield* positive("batch", flags.batch),
      seq: yield* positive("seq", flags.seq),
      accum: yield* positive("accum", flags.accum),
      warmup: yield* positive("warmup", flags.warmup, 0),
      fpSteps: yield* positive("fp-steps", flags.fpSteps, 0),
      softSteps: yield* positive("soft-steps", flags.softSteps, 0),
      evalEvery: yield* positive("eval-every", flags.evalEvery, 0),
      seed: yield* positive("seed", flags.seed, 0),
    };
    const stepsFlag = yield* positive("steps", flags.steps);
    const saveEvery = (yield* positive("save-every", flags.saveEvery, 0)) ?? 0;
    let budget: number | undefined;
    if (Option.isSome(flags.time)) {
      budget = parseDuration(flags.time.value);
      if (budget === undefined) {
        return yield* new UsageError({
          message: `--time: expected a duration like 90s, 10m or 1h, got ${
            JSON.stringify(flags.time.value)
          }`,
        });
      }
    } else if (stepsFlag === undefined && !flags.resume) budget = 600;
    const explicitConfig = Option.isSome(flags.config) ||
      Option.isSome(flags.bitMap) || !flags.resume;
    const init = Option.getOrUndefined(flags.init);
    const clash = flags.resume
      ? "resume"
      : Option.isSome(flags.config)
      ? "config"
      : Option.isSome(flags.preset)
      ? "preset"
      : undefined;
    if (init !== undefined && clash !== undefined) {
      return yield* new UsageError({
        message:
          `--init starts a new run from ${init}'s model: drop --${clash}`,
      });
    }
    const initial = init === undefined
      ? undefined
      : yield* initModel(init, flags.bitMap);
    let config = initial !== undefined
      ? initial.config
      : explicitConfig
      ? yield* resolveConfig({ preset, config: flags.config })
      : undefined;
    const out = Option.getOrElse(
      flags.out,
      () =>
        initial?.run !== undefined
          ? `${init!.replace(/\/+$/, "")}-ft`
          : `runs/${Option.isSome(flags.config) ? "custom" : preset}`,
    );
    if (out.trim() === "") {
      return yield* new UsageError({
        message: "--out: empty path; give the run a directory",
      });
    }
    if (flags.resume && Option.isSome(flags.bitMap)) {
      // A resumed run keeps its model: the map must be the run's own.
      const saved = yield* checkpointConfig(out);
      const map = yield* resolveBitMapFlag(saved, flags.bitMap);
      if (!sameModes(map, resolveBitMap(saved))) {
        return yield* new UsageError({
          message:
            `--bit-map: ${flags.bitMap.value} differs from the bit map of the run in ${out}, which a resume keeps; try other maps with \`eval --bit-map\` or \`search\``,
        });
      }
      config = Option.isSome(flags.config)
        ? { ...config!, layer_bit_map: map }
        : undefined;
    } else if (
      initial === undefined && config !== undefined &&
      Option.isSome(flags.bitMap)
    ) {
      const map = yield* resolveBitMapFlag(config, flags.bitMap);
      config = { ...config, layer_bit_map: map };
    }
    if (
      config !== undefined && values.seq !== undefined &&
      values.seq > config.max_seq_len
    ) {
      return yield* new UsageError({
        message:
          `--seq: ${values.seq} exceeds the model's max_seq_len ${config.max_seq_len}`,
      });
    }
    const settingsFor = config && settingsFrom(flags, config, values);
    const planned = settingsFor !== undefined && !flags.resume &&
      stepsFlag === undefined && budget !== undefined;
    const common = {
      settings: settingsFor && stepsFlag !== undefined
        ? settingsFor(stepsFlag)
        : undefined,
      budget: planned
        ? { seconds: budget!, settingsFor: settingsFor! }
        : undefined,
      out,
      data: Option.getOrUndefined(flags.data),
      cacheDir: DEFAULT_CACHE_DIR,
      // A planned run stops by its plan (see runTraining); else --time is a limit.
      timeBudgetSeconds: planned ? undefined : budget,
      saveEvery,
      progress: new ProgressPrinter({ timeBudgetSeconds: budget }),
    };
    const source = initial?.run;
    const result = source !== undefined
      ? yield* trainFromRun({ ...common, source })
      : yield* runTraining({
        ...common,
        resumeSteps: flags.resume ? stepsFlag : undefined,
        config,
        resume: flags.resume,
        init,
      });
    yield* Effect.logInfo(
      `done: ${result.steps} steps in ${
        result.trainSeconds.toFixed(1)
      }s of training${budget === undefined ? "" : ` (budget ${budget}s)`}, ${
        result.tokens.toLocaleString("en-US")
      } tokens, ${result.tokensPerSecond.toFixed(0)} tokens/s; run in ${out}`,
    );
  })).pipe((program) => withBackend(flags, program));
}

/** The `prep` command's program: build (or find) the cached dataset. */
export function prepProgram(flags: {
  readonly preset: Opt<string>;
  readonly config: Opt<string>;
  readonly data: Opt<string>;
}): Effect.Effect<void, UsageError | ConfigError | DataError> {
  return Effect.gen(function* () {
    const config = yield* resolveConfig({
      preset: Option.getOrElse(flags.preset, () => DEFAULT_PRESET),
      config: flags.config,
    });
    const { files } = yield* prepareDataset({
      data: Option.getOrUndefined(flags.data),
      vocabSize: config.vocab_size,
      cacheDir: DEFAULT_CACHE_DIR,
      log: (line) => console.error(line),
    });
    yield* Console.log(JSON.stringify(files, null, 2));
  });
}

/** The `eval` command's program: true perplexity of a trained model on a text. */
export function evalProgram(flags: {
  readonly model: string;
  readonly text: Opt<string>;
  readonly evalTokens: Opt<number>;
  readonly seed: Opt<number>;
  readonly json: boolean;
  readonly bitMap: Opt<string>;
  readonly backend: "auto" | "cpu" | "webgpu";
  readonly threads: Opt<number>;
}): Effect.Effect<
  void,
  | UsageError
  | ConfigError
  | DataError
  | TrainError
  | GpuUnavailableError
  | SearchError
> {
  const textFile = Option.getOrUndefined(flags.text);
  const evalTokens = Option.getOrUndefined(flags.evalTokens);
  if ((textFile === undefined) === (evalTokens === undefined)) {
    return Effect.fail(
      new UsageError({
        message: "give one of --text FILE or --eval-tokens N",
      }),
    );
  }
  // The search's windows, scored as the search scores them.
  if (evalTokens !== undefined) {
    return checkThreads(flags.threads, flags.backend).pipe(
      Effect.flatMap((threads) =>
        evalWindowsProgram({ ...flags, evalTokens, threads })
      ),
    );
  }
  return Effect.scoped(Effect.gen(function* () {
    const bitMapFile = Option.getOrUndefined(flags.bitMap);
    const bitMap = bitMapFile === undefined
      ? undefined
      : yield* loadBitMap(bitMapFile);
    const run = yield* loadTrainedModel(flags.model, {
      bitMap,
      bitMapSource: bitMapFile,
    });
    const text = yield* readText(textFile!);
    const ids = run.tokenizer.encode(text);
    const seqLen = Math.min(run.settings.seqLen, run.config.max_seq_len);
    if (ids.length < seqLen + 1) {
      return yield* new DataError({
        file: textFile!,
        message: `${textFile}: ${ids.length} tokens, fewer than one window of ${
          seqLen + 1
        }`,
      });
    }
    const r = yield* evaluateModel(run.model, ids, {
      batch: run.settings.batch,
      seqLen,
      lambda: run.lambda,
    });
    yield* Console.log(
      flags.json
        ? JSON.stringify({ tokens: r.tokens, loss: r.loss, ppl: r.ppl })
        : `${textFile}: ${r.tokens} tokens, loss ${
          r.loss.toFixed(4)
        }, perplexity ${r.ppl.toFixed(2)}`,
    );
  })).pipe((program) => withBackend(flags, program));
}
