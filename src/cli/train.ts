/**
 * `deno task train`, `deno task prep` and `deno task eval`: the flags, their
 * checks (each error names its flag) and the programs they run.
 *
 * @module
 */
import { Console, Effect, type Layer, Option } from "effect";
import { Flag } from "effect/cli";
import { ComputeBackend } from "../backend/service.ts";
import type { GpuUnavailableError } from "../backend/webgpu/device.ts";
import type { OneBitLlmConfig } from "../common/config.ts";
import type { ConfigError } from "../common/config_file.ts";
import { prepareDataset } from "../common/dataset.ts";
import { DataError, readText } from "../common/text_sources.ts";
import { quantPhases } from "../core/schedule.ts";
import { OneBitLlm } from "../core/model.ts";
import { loadCheckpoint } from "../train/checkpoint.ts";
import type { LrSchedule } from "../train/lr_schedule.ts";
import { runTraining } from "../train/run.ts";
import {
  defaultSettings,
  evaluateModel,
  measureStepSeconds,
  stepsForBudget,
  TrainError,
  type TrainSettings,
} from "../train/trainer.ts";
import { lambdaAt } from "../core/schedule.ts";
import { resolveBitMap } from "../common/config.ts";
import { UsageError } from "./errors.ts";
import { resolveBitMapFlag, resolveConfig } from "./stats.ts";

/** Where prepared datasets are cached. */
export const CACHE_DIR = ".cache/datasets";

const int = (name: string, description: string) =>
  Flag.Int(name).pipe(Flag.optional, Flag.withDescription(description));
const num = (name: string, description: string) =>
  Flag.Finite(name).pipe(Flag.optional, Flag.withDescription(description));
const str = (name: string, description: string) =>
  Flag.String(name).pipe(Flag.optional, Flag.withDescription(description));

/** The flags of `train`. */
export const trainFlags = {
  preset: Flag.String("preset").pipe(
    Flag.withDefault("ref-4m"),
    Flag.withDescription("preset model: tiny, ref-4m, bitnet-100m"),
  ),
  config: str("config", "model config JSON (overrides --preset)"),
  bitMap: str("bit-map", "LayerBitMap JSON (per-layer modes)"),
  data: str(
    "data",
    "training text: file, directory, JSONL or WikiText (default: Brown corpus)",
  ),
  out: str("out", "run directory (default: runs/<preset>)"),
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
    Flag.withDefault("cosine"),
    Flag.withDescription(
      "LR schedule (two-stage: BitNet, WD 0.1 → 0; cosine-from-start: warmup × cosine over the whole run, as the PyTorch reference)",
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
  seed: int("seed", "seed of initialization and batch order (default 0)"),
  resume: Flag.Boolean("resume").pipe(
    Flag.withDefault(false),
    Flag.withDescription("continue the checkpoint in --out"),
  ),
};

type Opt<A> = Option.Option<A>;

/** The parsed flags of `train`. */
export interface TrainFlags {
  readonly preset: string;
  readonly config: Opt<string>;
  readonly bitMap: Opt<string>;
  readonly data: Opt<string>;
  readonly out: Opt<string>;
  readonly steps: Opt<number>;
  readonly time: Opt<string>;
  readonly batch: Opt<number>;
  readonly seq: Opt<number>;
  readonly accum: Opt<number>;
  readonly lr: Opt<number>;
  readonly warmup: Opt<number>;
  readonly schedule: "cosine" | "linear" | "two-stage" | "cosine-from-start";
  readonly weightDecay: Opt<number>;
  readonly fpSteps: Opt<number>;
  readonly softSteps: Opt<number>;
  readonly labelSmoothing: Opt<number>;
  readonly evalEvery: Opt<number>;
  readonly saveEvery: Opt<number>;
  readonly backend: "auto" | "cpu" | "webgpu";
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
 * `cpu` forces WebAssembly SIMD.
 */
export function backendLayer(
  kind: "auto" | "cpu" | "webgpu",
): Layer.Layer<ComputeBackend, GpuUnavailableError> {
  switch (kind) {
    case "cpu":
      return ComputeBackend.cpu;
    case "webgpu":
      return ComputeBackend.webgpu({ allowFallback: true });
    case "auto":
      return ComputeBackend.auto;
  }
}

/** Settings from the flags, for `config` and a step count. */
function settingsFrom(
  flags: TrainFlags,
  config: OneBitLlmConfig,
  steps: number,
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
): TrainSettings {
  const peak = Option.getOrElse(flags.lr, () => 1.5e-3);
  const warmup = values.warmup ??
    Math.min(100, Math.max(1, Math.floor(steps / 10)));
  const wd = Option.getOrElse(flags.weightDecay, () => 0.1);
  const lr: LrSchedule = flags.schedule === "two-stage"
    ? {
      kind: "two_stage",
      peakLr: peak,
      stage2PeakLr: peak * 2 / 3,
      warmupSteps: warmup,
      totalSteps: steps,
      weightDecay: wd,
    }
    : {
      kind: flags.schedule === "linear" ? "linear" : "cosine",
      peakLr: peak,
      warmupSteps: warmup,
      totalSteps: steps,
      decayFromStart: flags.schedule === "cosine-from-start",
    };
  return defaultSettings(config, steps, {
    batch: values.batch ?? 16,
    seqLen: values.seq ?? config.max_seq_len,
    accumulation: values.accum ?? 1,
    lr,
    weightDecay: wd,
    lambda: quantPhases({
      fpSteps: values.fpSteps ?? 0,
      softSteps: values.softSteps ?? 0,
    }),
    labelSmoothing: Option.getOrElse(flags.labelSmoothing, () => 0),
    evalEvery: values.evalEvery ?? Math.max(1, Math.floor(steps / 5)),
    seed: values.seed ?? 0,
  });
}

/** The `train` command's program. */
export function trainProgram(
  flags: TrainFlags,
): Effect.Effect<
  void,
  UsageError | ConfigError | DataError | TrainError | GpuUnavailableError
> {
  return Effect.scoped(Effect.gen(function* () {
    const log = (line: string) => console.error(line);
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
    let config = explicitConfig ? yield* resolveConfig(flags) : undefined;
    if (config !== undefined && Option.isSome(flags.bitMap)) {
      const map = yield* resolveBitMapFlag(config, flags.bitMap);
      config = { ...config, layer_bit_map: map };
    }
    const out = Option.getOrElse(
      flags.out,
      () => `runs/${Option.isSome(flags.config) ? "custom" : flags.preset}`,
    );
    const backend = yield* ComputeBackend;
    if (
      config !== undefined && values.seq !== undefined &&
      values.seq > config.max_seq_len
    ) {
      return yield* new UsageError({
        message:
          `--seq: ${values.seq} exceeds the model's max_seq_len ${config.max_seq_len}`,
      });
    }
    let steps = stepsFlag;
    if (steps === undefined && config !== undefined && !flags.resume) {
      const probe = settingsFrom(flags, config, 1, values);
      const perStep = yield* Effect.promise(() =>
        measureStepSeconds(config!, backend, probe)
      );
      steps = stepsForBudget(budget!, perStep);
      log(
        `time budget ${budget}s at ~${
          perStep.toFixed(2)
        }s a step → ${steps} steps`,
      );
    }
    const settings = config && steps
      ? settingsFrom(flags, config, steps, values)
      : undefined;
    const result = yield* runTraining(backend, {
      config,
      settings,
      out,
      resume: flags.resume,
      data: Option.getOrUndefined(flags.data),
      cacheDir: CACHE_DIR,
      timeBudgetSeconds: budget,
      saveEvery,
      log,
    });
    log(
      `done: ${result.steps} steps, ${
        result.tokens.toLocaleString("en-US")
      } tokens, ${result.tokensPerSecond.toFixed(0)} tokens/s; run in ${out}`,
    );
  })).pipe(Effect.provide(backendLayer(flags.backend)));
}

/** The `prep` command's program: build (or find) the cached dataset. */
export function prepProgram(flags: {
  readonly preset: string;
  readonly config: Opt<string>;
  readonly data: Opt<string>;
}): Effect.Effect<void, UsageError | ConfigError | DataError> {
  return Effect.gen(function* () {
    const config = yield* resolveConfig(flags);
    const { files } = yield* prepareDataset({
      data: Option.getOrUndefined(flags.data),
      vocabSize: config.vocab_size,
      cacheDir: CACHE_DIR,
      log: (line) => console.error(line),
    });
    yield* Console.log(JSON.stringify(files, null, 2));
  });
}

/** The `eval` command's program: true perplexity of a trained model on a text. */
export function evalProgram(flags: {
  readonly model: string;
  readonly text: string;
  readonly json: boolean;
  readonly backend: "auto" | "cpu" | "webgpu";
}): Effect.Effect<
  void,
  UsageError | ConfigError | DataError | TrainError | GpuUnavailableError
> {
  return Effect.gen(function* () {
    const ckpt = yield* loadCheckpoint(flags.model);
    const text = yield* readText(flags.text);
    const ids = ckpt.tokenizer.encode(text);
    const settings = ckpt.state.schedule as TrainSettings;
    const seqLen = Math.min(settings.seqLen, ckpt.config.max_seq_len);
    if (ids.length < seqLen + 1) {
      return yield* new DataError({
        file: flags.text,
        message:
          `${flags.text}: ${ids.length} tokens, fewer than one window of ${
            seqLen + 1
          }`,
      });
    }
    const backend = yield* ComputeBackend;
    const model = OneBitLlm.fromValues(
      ckpt.config,
      resolveBitMap(ckpt.config),
      backend,
      ckpt.params,
    );
    const lambda = lambdaAt(settings.lambda, Math.max(0, ckpt.state.step - 1));
    const r = yield* Effect.tryPromise({
      try: () =>
        evaluateModel(model, ids, { batch: settings.batch, seqLen, lambda }),
      catch: (e) =>
        e instanceof TrainError ? e : new TrainError({ message: String(e) }),
    });
    yield* Console.log(
      flags.json
        ? JSON.stringify({ tokens: r.tokens, loss: r.loss, ppl: r.ppl })
        : `${flags.text}: ${r.tokens} tokens, loss ${
          r.loss.toFixed(4)
        }, perplexity ${r.ppl.toFixed(2)}`,
    );
  }).pipe(Effect.provide(backendLayer(flags.backend)));
}
