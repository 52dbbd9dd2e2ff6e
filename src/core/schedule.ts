/**
 * Schedules for the soft→hard quantization recipe, as plain data plus
 * evaluation: λ(step) for the blended STE (`x + λ · stopgrad(Q(x) − x)`) and
 * α(step) for the tanh soft quantizer.
 *
 * A ramp runs over `[start, start + steps]` with progress
 * `t = clamp((step − start) / steps, 0, 1)`; every ramp shape maps t = 0 to
 * exactly 0 and t = 1 to exactly 1, is non-decreasing, and stays in [0, 1].
 * With `steps = 0` the ramp is a switch: λ = 0 before `start`, 1 from `start` on.
 *
 * @module
 */

/** λ fixed for all steps: 0 is full precision, 1 the plain hard STE. */
export interface ConstantLambda {
  /** Discriminant. */
  readonly kind: "constant";
  /** The λ for every step, in [0, 1]. */
  readonly value: number;
}

/** The step window a ramp runs over. */
export interface RampWindow {
  /** First step of the ramp (λ = 0 up to and including it); a non-negative integer. */
  readonly start: number;
  /** Length of the ramp in steps (λ = 1 from `start + steps`); a non-negative integer. */
  readonly steps: number;
}

/** Linear ramp `λ = t` (the winner in the HF 1.58-bit fine-tuning study). */
export interface LinearLambda extends RampWindow {
  /** Discriminant. */
  readonly kind: "linear";
}

/** Exponential ramp `λ = 1 − (1 − t)^k`: fast early rise for k > 1. */
export interface ExponentialLambda extends RampWindow {
  /** Discriminant. */
  readonly kind: "exponential";
  /** Exponent k, finite and > 0. */
  readonly k: number;
}

/**
 * Sigmoid ramp, the logistic curve `σ(sharpness · (t − ½))` rescaled to hit 0
 * and 1 exactly at t = 0 and 1:
 * `λ = ½ + tanh(sharpness · (t − ½) / 2) / (2 · tanh(sharpness / 4))`.
 */
export interface SigmoidLambda extends RampWindow {
  /** Discriminant. */
  readonly kind: "sigmoid";
  /**
   * Steepness, in [1e-300, ∞): the slope at the midpoint is `(s/4) / tanh(s/4)`.
   * Small values approach the linear ramp; the floor keeps `tanh(s/4)` from underflowing.
   */
  readonly sharpness: number;
}

/** A λ schedule: step → λ ∈ [0, 1]. */
export type LambdaSchedule =
  | ConstantLambda
  | LinearLambda
  | ExponentialLambda
  | SigmoidLambda;

/** The shape of a ramp without its window, for {@link quantPhases}. */
export type LambdaShape =
  | { readonly kind: "linear" }
  | { readonly kind: "exponential"; readonly k: number }
  | { readonly kind: "sigmoid"; readonly sharpness: number };

/** The three training phases of {@link quantPhases}. */
export interface QuantPhases {
  /** Full-precision warmup steps (λ = 0 for steps < fpSteps); a non-negative integer. */
  readonly fpSteps: number;
  /** Length of the soft phase over which λ rises to 1; a non-negative integer. */
  readonly softSteps: number;
  /** How λ rises during the soft phase; linear when omitted. */
  readonly shape?: LambdaShape;
}

/**
 * Geometric growth of the tanh quantizer's α:
 * `α = α0 · (α1/α0)^t` with t the ramp progress over the window, exactly α0
 * up to `start` and exactly α1 from `start + steps` on.
 */
export interface AlphaSchedule extends RampWindow {
  /** α at and before `start`, finite and > 0. */
  readonly alpha0: number;
  /** α at and after `start + steps`, finite and ≥ `alpha0`. */
  readonly alpha1: number;
}

/**
 * The λ schedule of a run in three phases: full precision (λ = 0) for steps
 * `< fpSteps`, a soft phase over `[fpSteps, fpSteps + softSteps]` where λ rises
 * along `shape`, then hard quantization (λ = 1). Returns the schedule as data;
 * evaluate it with {@link lambdaAt}.
 *
 * @throws {RangeError} if a step count is not a non-negative integer or the shape is invalid.
 */
export function quantPhases(phases: QuantPhases): LambdaSchedule {
  const shape: LambdaShape = phases.shape ?? { kind: "linear" };
  const schedule: LambdaSchedule = {
    ...shape,
    start: phases.fpSteps,
    steps: phases.softSteps,
  };
  validateLambda("quantPhases", schedule);
  return schedule;
}

/**
 * λ at `step`: `value` for a constant schedule; for a ramp, with
 * `t = clamp((step − start) / steps, 0, 1)`:
 * linear `t`; exponential `1 − (1 − t)^k`; sigmoid
 * `½ + tanh(sharpness·(t − ½)/2) / (2·tanh(sharpness/4))`.
 *
 * @throws {RangeError} if `step` is not finite or the schedule is invalid.
 */
export function lambdaAt(schedule: LambdaSchedule, step: number): number {
  validateLambda("lambdaAt", schedule);
  if (schedule.kind === "constant") return schedule.value;
  const t = progress("lambdaAt", schedule, step);
  switch (schedule.kind) {
    case "linear":
      return t;
    case "exponential":
      return 1 - Math.pow(1 - t, schedule.k);
    case "sigmoid": {
      const s = schedule.sharpness;
      // tanh is odd, so t = 0 gives ½ − ½ = 0 and t = 1 gives ½ + ½ = 1 exactly.
      return 0.5 + Math.tanh((s * (t - 0.5)) / 2) / (2 * Math.tanh(s / 4));
    }
  }
}

/**
 * α at `step`: `α0` while `step ≤ start`, `α1` once `step ≥ start + steps`,
 * and `α0 · (α1/α0)^t` in between (clamped to [α0, α1] against rounding).
 *
 * @throws {RangeError} if `step` is not finite or the schedule is invalid.
 */
export function alphaAt(schedule: AlphaSchedule, step: number): number {
  const fn = "alphaAt";
  checkWindow(fn, schedule);
  const { alpha0, alpha1 } = schedule;
  if (!(Number.isFinite(alpha0) && alpha0 > 0)) {
    throw new RangeError(
      `${fn}: schedule.alpha0 must be finite and > 0, got ${alpha0}`,
    );
  }
  if (!(Number.isFinite(alpha1) && alpha1 >= alpha0)) {
    throw new RangeError(
      `${fn}: schedule.alpha1 must be finite and ≥ alpha0 (${alpha0}), got ${alpha1}`,
    );
  }
  const t = progress(fn, schedule, step);
  // α0 · (α1/α0)^1 can miss α1 by an ulp (7 · (61/7) < 61), so the ends are returned as given.
  if (t === 0) return alpha0;
  if (t === 1) return alpha1;
  return Math.min(
    alpha1,
    Math.max(alpha0, alpha0 * Math.pow(alpha1 / alpha0, t)),
  );
}

function progress(fn: string, w: RampWindow, step: number): number {
  if (!Number.isFinite(step)) {
    throw new RangeError(`${fn}: step must be a finite number, got ${step}`);
  }
  if (step < w.start) return 0;
  return step >= w.start + w.steps ? 1 : (step - w.start) / w.steps;
}

function validateLambda(fn: string, s: LambdaSchedule): void {
  switch (s.kind) {
    case "constant":
      if (!(s.value >= 0 && s.value <= 1)) {
        throw new RangeError(
          `${fn}: schedule.value must be in [0, 1], got ${s.value}`,
        );
      }
      return;
    case "linear":
      return checkWindow(fn, s);
    case "exponential":
      checkWindow(fn, s);
      if (!(Number.isFinite(s.k) && s.k > 0)) {
        throw new RangeError(
          `${fn}: schedule.k must be finite and > 0, got ${s.k}`,
        );
      }
      return;
    case "sigmoid":
      checkWindow(fn, s);
      if (!(Number.isFinite(s.sharpness) && s.sharpness >= 1e-300)) {
        throw new RangeError(
          `${fn}: schedule.sharpness must be finite and ≥ 1e-300, got ${s.sharpness}`,
        );
      }
      return;
    default:
      throw new RangeError(
        `${fn}: unknown schedule kind ${
          JSON.stringify((s as { kind: unknown }).kind)
        }`,
      );
  }
}

function checkWindow(fn: string, w: RampWindow): void {
  if (!Number.isSafeInteger(w.start) || w.start < 0) {
    throw new RangeError(
      `${fn}: schedule.start must be a non-negative integer, got ${w.start}`,
    );
  }
  if (!Number.isSafeInteger(w.steps) || w.steps < 0) {
    throw new RangeError(
      `${fn}: schedule.steps must be a non-negative integer, got ${w.steps}`,
    );
  }
  if (!Number.isSafeInteger(w.start + w.steps)) {
    throw new RangeError(
      `${fn}: schedule.start + schedule.steps must be a safe integer`,
    );
  }
}
