/**
 * Learning-rate and weight-decay schedules of the trainer, as plain data plus
 * evaluation, so a schedule is saved with a checkpoint and resumes exactly.
 *
 * @module
 */
import { Schema } from "effect";

/** Linear warmup from 0, then cosine (or linear) decay to `minLr` at `totalSteps`. */
export interface WarmupDecaySchedule {
  /** Discriminant. */
  readonly kind: "cosine" | "linear";
  /** Peak learning rate, reached at the end of warmup. */
  readonly peakLr: number;
  /** Final learning rate at `totalSteps` (default 0). */
  readonly minLr?: number;
  /** Warmup steps: `lr = peakLr · (step + 1) / warmupSteps` while `step < warmupSteps`. */
  readonly warmupSteps: number;
  /** Total steps of the run; the rate stays at `minLr` after it. */
  readonly totalSteps: number;
  /**
   * Measure the decay from step 0 and multiply it by the warmup ramp,
   * `lr = peak · min(1, (step+1)/warmup) · decay(step / totalSteps)`, as the
   * PyTorch reference (`bitnet_ref.py`) does (default false: decay starts
   * after warmup).
   */
  readonly decayFromStart?: boolean;
}

/**
 * The two-stage BitNet b1.58 recipe: warmup, then linear decay from `peakLr`
 * for the first half of training, then — from `stage2Start` — linear decay
 * from the lower `stage2PeakLr` to `minLr`. Weight decay is `weightDecay` in
 * stage 1 and 0 in stage 2 (decay on latent weights makes ternary values flip).
 */
export interface TwoStageSchedule {
  /** Discriminant. */
  readonly kind: "two_stage";
  /** Stage-1 peak learning rate. */
  readonly peakLr: number;
  /** Stage-2 peak learning rate (lower, e.g. 2/3 of `peakLr`). */
  readonly stage2PeakLr: number;
  /** Final learning rate (default 0). */
  readonly minLr?: number;
  /** Warmup steps at the start of stage 1. */
  readonly warmupSteps: number;
  /** Total steps of the run. */
  readonly totalSteps: number;
  /** First step of stage 2 (default `totalSteps / 2`, rounded down). */
  readonly stage2Start?: number;
  /** Stage-1 weight decay (stage 2 uses 0). */
  readonly weightDecay: number;
}

/** A learning-rate schedule. */
export type LrSchedule = WarmupDecaySchedule | TwoStageSchedule;

const NonNegativeInt = Schema.Number.check(
  Schema.isInt(),
  Schema.isGreaterThanOrEqualTo(0),
);
const Rate = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0));
const Span = {
  warmupSteps: NonNegativeInt,
  totalSteps: Schema.Number.check(
    Schema.isInt(),
    Schema.isGreaterThanOrEqualTo(1),
  ),
};

/** Schema of a {@link LrSchedule} (as saved in `state.json`). */
export const LrSchedule: Schema.Codec<LrSchedule> = Schema.Union([
  Schema.Struct({
    kind: Schema.Literals(["cosine", "linear"]),
    peakLr: Rate,
    minLr: Schema.optionalKey(Rate),
    ...Span,
    decayFromStart: Schema.optionalKey(Schema.Boolean),
  }),
  Schema.Struct({
    kind: Schema.Literal("two_stage"),
    peakLr: Rate,
    stage2PeakLr: Rate,
    minLr: Schema.optionalKey(Rate),
    ...Span,
    stage2Start: Schema.optionalKey(NonNegativeInt),
    weightDecay: Rate,
  }),
]).annotate({
  expected:
    'an LR schedule: kind "cosine" or "linear" (peakLr, warmupSteps, totalSteps, optional minLr and decayFromStart), or "two_stage" (also stage2PeakLr, weightDecay, optional stage2Start)',
});

/** What the optimizer uses at one step. */
export interface StepHyper {
  /** Learning rate. */
  readonly lr: number;
  /** Weight decay, or `undefined` to keep the optimizer's own. */
  readonly weightDecay: number | undefined;
}

function checkSchedule(s: LrSchedule): void {
  const int = (n: number) => Number.isInteger(n) && n >= 0;
  if (!(s.peakLr >= 0) || !Number.isFinite(s.peakLr)) {
    throw new RangeError(`peakLr must be a finite number ≥ 0, got ${s.peakLr}`);
  }
  if (!int(s.warmupSteps)) {
    throw new RangeError(
      `warmupSteps must be an integer ≥ 0, got ${s.warmupSteps}`,
    );
  }
  if (!int(s.totalSteps) || s.totalSteps < 1) {
    throw new RangeError(
      `totalSteps must be an integer ≥ 1, got ${s.totalSteps}`,
    );
  }
}

/** Decay from `from` at progress 0 to `to` at progress 1. */
function decay(
  kind: "cosine" | "linear",
  from: number,
  to: number,
  t: number,
): number {
  const p = Math.min(Math.max(t, 0), 1);
  const f = kind === "cosine" ? 0.5 * (1 + Math.cos(Math.PI * p)) : 1 - p;
  return to + (from - to) * f;
}

/**
 * The learning rate and weight decay at `step` (0-based):
 * - warmup: `lr = peak · (step + 1) / warmupSteps` for `step < warmupSteps`;
 * - cosine: `lr = min + (peak − min) · ½(1 + cos(π·t))`, linear:
 *   `lr = min + (peak − min) · (1 − t)`, with
 *   `t = (step − warmupSteps) / (totalSteps − warmupSteps)`, clamped to [0, 1];
 * - with `decayFromStart`: `lr = min + (decay(step / totalSteps) − min) ·
 *   min(1, (step + 1) / warmupSteps)`;
 * - two-stage: linear decay from `peakLr` towards `minLr` over the whole run,
 *   cut at `stage2Start`, where it restarts from `stage2PeakLr` and decays
 *   linearly to `minLr` at `totalSteps`; weight decay 0 in stage 2.
 */
export function lrAt(schedule: LrSchedule, step: number): StepHyper {
  checkSchedule(schedule);
  const min = schedule.minLr ?? 0;
  const { warmupSteps, totalSteps, peakLr } = schedule;
  if (schedule.kind !== "two_stage" && schedule.decayFromStart) {
    const ramp = warmupSteps > 0 ? Math.min(1, (step + 1) / warmupSteps) : 1;
    return {
      lr: min +
        (decay(schedule.kind, peakLr, min, step / totalSteps) - min) * ramp,
      weightDecay: undefined,
    };
  }
  if (step < warmupSteps) {
    return {
      lr: peakLr * (step + 1) / warmupSteps,
      weightDecay: schedule.kind === "two_stage"
        ? schedule.weightDecay
        : undefined,
    };
  }
  if (schedule.kind !== "two_stage") {
    const span = Math.max(totalSteps - warmupSteps, 1);
    return {
      lr: decay(schedule.kind, peakLr, min, (step - warmupSteps) / span),
      weightDecay: undefined,
    };
  }
  const stage2 = schedule.stage2Start ?? Math.floor(totalSteps / 2);
  if (step < stage2) {
    const span = Math.max(totalSteps - warmupSteps, 1);
    return {
      lr: decay("linear", peakLr, min, (step - warmupSteps) / span),
      weightDecay: schedule.weightDecay,
    };
  }
  const span = Math.max(totalSteps - stage2, 1);
  return {
    lr: decay("linear", schedule.stage2PeakLr, min, (step - stage2) / span),
    weightDecay: 0,
  };
}
