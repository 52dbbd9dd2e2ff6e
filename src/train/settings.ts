/**
 * A run's settings: what decides its numbers, their one set of defaults, and
 * the schemas that decode them (and the sampler's position) from `state.json`
 * (with `decodeField`).
 *
 * @module
 */
import { Schema } from "effect";
import type { OneBitLlmConfig } from "../common/config.ts";
import type { SamplerState } from "../common/batches.ts";
import { type LambdaSchedule, quantPhases } from "../core/schedule.ts";
import { LrSchedule } from "./lr_schedule.ts";

/** Everything that decides a run's numbers (saved in `state.json`). */
export interface TrainSettings {
  /** Optimizer steps of the run. */
  readonly steps: number;
  /** Sequences per micro-batch. */
  readonly batch: number;
  /** Micro-batches per optimizer step (gradient accumulation). */
  readonly accumulation: number;
  /** Tokens per sequence. */
  readonly seqLen: number;
  /** The learning-rate schedule. */
  readonly lr: LrSchedule;
  /** Weight decay of linear matrices (the schedule may override it per step). */
  readonly weightDecay: number;
  /** Global gradient-norm limit. */
  readonly maxGradNorm: number;
  /** AdamW β2 (β1 is 0.9). */
  readonly beta2: number;
  /** λ of the quantizers per step. */
  readonly lambda: LambdaSchedule;
  /** Label smoothing of the training loss (never of the reported perplexity). */
  readonly labelSmoothing: number;
  /** Evaluate every this many steps (0: only at the end). */
  readonly evalEvery: number;
  /** Validation windows of a periodic evaluation (the final one uses all). */
  readonly evalWindows: number;
  /** Seed of initialization and batch order. */
  readonly seed: number;
}

/** Default peak learning rate (the reference recipe). */
export const DEFAULT_PEAK_LR = 1.5e-3;
/** Default weight decay of linear matrices. */
export const DEFAULT_WEIGHT_DECAY = 0.1;
/** Default sequences per micro-batch. */
export const DEFAULT_BATCH = 16;

/** Default warmup of a run of `steps` steps: a tenth of it, between 1 and 100. */
export function defaultWarmup(steps: number): number {
  return Math.min(100, Math.max(1, Math.floor(steps / 10)));
}

/** Default evaluation period of a run of `steps` steps: five evaluations. */
export function defaultEvalEvery(steps: number): number {
  return Math.max(1, Math.floor(steps / 5));
}

/** The LR schedule shapes of the CLI's `--schedule`. */
export type LrScheduleKind =
  | "cosine"
  | "linear"
  | "two-stage"
  | "cosine-from-start";

/** What {@link lrSchedule} builds from; absent fields take the defaults. */
export interface LrScheduleChoices {
  /** Steps of the run. */
  readonly steps: number;
  /** Peak learning rate (default {@link DEFAULT_PEAK_LR}). */
  readonly peakLr?: number;
  /** Warmup steps (default {@link defaultWarmup}). */
  readonly warmupSteps?: number;
  /** Stage-1 weight decay of `two-stage` (default {@link DEFAULT_WEIGHT_DECAY}). */
  readonly weightDecay?: number;
}

/**
 * The LR schedule of a kind: `cosine` / `linear` decay after warmup,
 * `cosine-from-start` (warmup × cosine over the whole run, as the PyTorch
 * reference), or `two-stage` (BitNet: second peak at ⅔, weight decay 0 in
 * stage 2).
 */
export function lrSchedule(
  kind: LrScheduleKind,
  choices: LrScheduleChoices,
): LrSchedule {
  const { steps } = choices;
  const peakLr = choices.peakLr ?? DEFAULT_PEAK_LR;
  const warmupSteps = choices.warmupSteps ?? defaultWarmup(steps);
  if (kind === "two-stage") {
    return {
      kind: "two_stage",
      peakLr,
      stage2PeakLr: peakLr * 2 / 3,
      warmupSteps,
      totalSteps: steps,
      weightDecay: choices.weightDecay ?? DEFAULT_WEIGHT_DECAY,
    };
  }
  return {
    kind: kind === "linear" ? "linear" : "cosine",
    peakLr,
    warmupSteps,
    totalSteps: steps,
    ...(kind === "cosine-from-start" ? { decayFromStart: true } : {}),
  };
}

/**
 * The default settings for `config` and a number of steps, with `overrides`
 * replacing whole fields: a cosine schedule peaking at {@link DEFAULT_PEAK_LR}
 * after {@link defaultWarmup} steps, batch 16 of `max_seq_len` tokens, weight
 * decay 0.1, hard quantization from the first step, five evaluations of 64
 * windows, seed 0.
 */
export function defaultSettings(
  config: OneBitLlmConfig,
  steps: number,
  overrides: Partial<TrainSettings> = {},
): TrainSettings {
  return {
    steps,
    batch: DEFAULT_BATCH,
    accumulation: 1,
    seqLen: config.max_seq_len,
    lr: lrSchedule("cosine", { steps }),
    weightDecay: DEFAULT_WEIGHT_DECAY,
    maxGradNorm: 1,
    beta2: 0.95,
    lambda: quantPhases({ fpSteps: 0, softSteps: 0 }),
    labelSmoothing: 0,
    evalEvery: defaultEvalEvery(steps),
    evalWindows: 64,
    seed: 0,
    ...overrides,
  };
}

const NonNegativeInt = Schema.Number.check(
  Schema.isInt(),
  Schema.isGreaterThanOrEqualTo(0),
);
const PositiveInt = Schema.Number.check(
  Schema.isInt(),
  Schema.isGreaterThanOrEqualTo(1),
);
const NonNegativeFinite = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0));
const PositiveFinite = Schema.Finite.check(Schema.isGreaterThan(0));
const Window = { start: NonNegativeInt, steps: NonNegativeInt };

/** Schema of a λ schedule (`LambdaSchedule` of `core/schedule.ts`). */
export const LambdaScheduleSchema: Schema.Codec<LambdaSchedule> = Schema.Union([
  Schema.Struct({
    kind: Schema.Literal("constant"),
    value: Schema.Finite.check(
      Schema.isBetween({ minimum: 0, maximum: 1 }),
    ),
  }),
  Schema.Struct({ kind: Schema.Literal("linear"), ...Window }),
  Schema.Struct({
    kind: Schema.Literal("exponential"),
    ...Window,
    k: PositiveFinite,
  }),
  Schema.Struct({
    kind: Schema.Literal("sigmoid"),
    ...Window,
    sharpness: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(1e-300)),
  }),
]).annotate({
  expected:
    'a λ schedule: kind "constant" (value), or "linear", "exponential" (k) or "sigmoid" (sharpness) with start and steps',
});

/** Schema of a batch sampler's position (`SamplerState` of `common/batches.ts`). */
export const SamplerStateSchema: Schema.Codec<SamplerState> = Schema.Struct({
  epoch: NonNegativeInt,
  position: NonNegativeInt,
  rng: Schema.Tuple([
    Schema.Number.check(Schema.isUint32()),
    Schema.Number.check(Schema.isUint32()),
    Schema.Number.check(Schema.isUint32()),
    Schema.Number.check(Schema.isUint32()),
  ]),
  windows: NonNegativeInt,
});

/** Schema of {@link TrainSettings} as saved in `state.json` (its `schedule` field). */
export const TrainSettings: Schema.Codec<TrainSettings> = Schema.Struct({
  steps: PositiveInt,
  batch: PositiveInt,
  accumulation: PositiveInt,
  seqLen: PositiveInt,
  lr: LrSchedule,
  weightDecay: NonNegativeFinite,
  maxGradNorm: PositiveFinite,
  beta2: Schema.Finite.check(
    Schema.isBetween({ minimum: 0, maximum: 1, exclusiveMaximum: true }),
  ),
  lambda: LambdaScheduleSchema,
  labelSmoothing: Schema.Finite.check(
    Schema.isBetween({ minimum: 0, maximum: 1, exclusiveMaximum: true }),
  ),
  evalEvery: NonNegativeInt,
  evalWindows: PositiveInt,
  seed: NonNegativeInt,
});
