/**
 * Turning a time budget into a step count. A fixed step count keeps the
 * schedule — and a resume — independent of the clock; the plan starts from a
 * probe of the step time and is re-made from measured real steps early in
 * the run, so training ends close to the budget.
 *
 * @module
 */
import { Schema } from "effect";

/** How a time budget planned a run's steps (saved in `state.json`). */
export interface BudgetPlan {
  /** The budget of training (steps, evaluations, checkpoints), in seconds. */
  readonly budgetSeconds: number;
  /** The probe's seconds per step. */
  readonly probeStepSeconds: number;
  /** Seconds per step the plan in effect assumes. */
  readonly stepSeconds: number;
  /** The step after which the plan in effect was made (0: from the probe). */
  readonly plannedAtStep: number;
  /** The steps planned. */
  readonly steps: number;
}

const Seconds = Schema.Finite.check(Schema.isGreaterThan(0));

/** Schema of a {@link BudgetPlan}. */
export const BudgetPlan: Schema.Codec<BudgetPlan> = Schema.Struct({
  budgetSeconds: Seconds,
  probeStepSeconds: Seconds,
  stepSeconds: Seconds,
  plannedAtStep: Schema.Number.check(
    Schema.isInt(),
    Schema.isGreaterThanOrEqualTo(0),
  ),
  steps: Schema.Number.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(1)),
});

/** What the parts of a run cost, in seconds. */
export interface RunCosts {
  /** One optimizer step. */
  readonly stepSeconds: number;
  /** One periodic evaluation. */
  readonly evalSeconds: number;
  /** One checkpoint. */
  readonly saveSeconds: number;
}

/** What {@link planSteps} plans from. */
export interface PlanInput {
  /** The budget of training, in seconds. */
  readonly budgetSeconds: number;
  /** Seconds of it used so far. */
  readonly elapsedSeconds: number;
  /** Steps done so far. */
  readonly step: number;
  /** What the rest of the run will cost. */
  readonly costs: RunCosts;
  /** The evaluation period of a run planned at `steps` steps (0: none). */
  readonly evalEvery: (steps: number) => number;
  /** The checkpoint period besides evaluations (0: none). */
  readonly saveEvery: number;
}

/**
 * The share of the budget a plan aims at: a little under it, so noise in the
 * step time rarely reaches the hard stop at the budget, which would cut the
 * LR schedule short.
 */
export const BUDGET_AIM = 0.98;

/** Multiples of `k` in `(from, to]` (none when k is 0). */
const multiples = (k: number, from: number, to: number): number =>
  k > 0 ? Math.floor(to / k) - Math.floor(from / k) : 0;

const gcd = (a: number, b: number): number => b === 0 ? a : gcd(b, a % b);

/**
 * Seconds that steps `(step, n]` of an `n`-step run take: the steps, the
 * periodic evaluations (at multiples of the period below `n`) and the
 * checkpoints (at evaluations, at multiples of `saveEvery`, and after step n).
 */
function remainingSeconds(input: PlanInput, n: number): number {
  const { step, costs, saveEvery } = input;
  const evalEvery = input.evalEvery(n);
  const evals = multiples(evalEvery, step, n - 1);
  const both = evalEvery > 0 && saveEvery > 0
    ? multiples(evalEvery / gcd(evalEvery, saveEvery) * saveEvery, step, n - 1)
    : 0;
  const periodicSaves = multiples(saveEvery, step, n);
  const lastIsPeriodic = saveEvery > 0 && n % saveEvery === 0;
  const saves = evals + periodicSaves - both + (lastIsPeriodic ? 0 : 1);
  return (n - step) * costs.stepSeconds + evals * costs.evalSeconds +
    saves * costs.saveSeconds;
}

/**
 * The most steps whose remaining steps, evaluations and checkpoints fit in
 * {@link BUDGET_AIM} of the budget: the largest `N` with `elapsed +
 * remaining(N) ≤ aim · budget`, searched down from the steps alone would
 * take (the overhead is not monotone in N: the evaluation period moves with
 * it). At least one step, and never fewer than are done.
 */
export function planSteps(input: PlanInput): number {
  const { step, costs } = input;
  const left = BUDGET_AIM * input.budgetSeconds - input.elapsedSeconds;
  let n = step + Math.max(0, Math.floor(left / costs.stepSeconds));
  while (n > step && remainingSeconds(input, n) > left) n--;
  return Math.max(1, n);
}

/**
 * Whether a budgeted run re-plans after `step` (besides at its periodic
 * evaluations): at steps 2, 4, 8, … within the first tenth of the run or its
 * warmup, whichever is longer — early, so the LR schedule it stretches or
 * shrinks has barely started decaying — and then every twentieth of the run,
 * small corrections for a step time that drifts.
 */
export function replansAfter(
  step: number,
  plannedSteps: number,
  warmupSteps: number,
): boolean {
  const window = Math.max(warmupSteps, Math.ceil(plannedSteps / 10));
  const early = step >= 2 && step <= window && (step & (step - 1)) === 0;
  return early || step % Math.ceil(plannedSteps / 20) === 0;
}

/**
 * How far past its budget a planned run may go to finish its planned steps
 * (and so its LR schedule) before the hard stop: 5%.
 */
export const BUDGET_OVERRUN = 1.05;

/**
 * Measured costs of a run, starting from estimates: the step time is the mean
 * of the measured steps after the first (which pays for first-touch memory
 * and compilation), the evaluation and checkpoint times the latest measured.
 */
export class CostMeter {
  #estimate: RunCosts;
  #stepSum = 0;
  #steps = 0;
  #first: number | undefined;
  #evalSeconds: number | undefined;
  #saveSeconds: number | undefined;

  /** A meter whose costs are `estimate` until measured. */
  constructor(estimate: RunCosts) {
    this.#estimate = estimate;
  }

  /** Records one optimizer step's seconds. */
  step(seconds: number): void {
    if (this.#first === undefined) this.#first = seconds;
    else {
      this.#stepSum += seconds;
      this.#steps++;
    }
  }

  /** Records one periodic evaluation's seconds. */
  eval(seconds: number): void {
    this.#evalSeconds = seconds;
  }

  /** Records one checkpoint's seconds. */
  save(seconds: number): void {
    this.#saveSeconds = seconds;
  }

  /** The costs as measured so far. */
  get costs(): RunCosts {
    return {
      stepSeconds: this.#steps > 0
        ? this.#stepSum / this.#steps
        : this.#first ?? this.#estimate.stepSeconds,
      evalSeconds: this.#evalSeconds ?? this.#estimate.evalSeconds,
      saveSeconds: this.#saveSeconds ?? this.#estimate.saveSeconds,
    };
  }
}

/** Options of {@link BudgetPlanner}. */
export interface BudgetPlannerOptions {
  /** The budget of training, in seconds. */
  readonly budgetSeconds: number;
  /** The probe's seconds per step. */
  readonly probeStepSeconds: number;
  /** Estimated seconds of one periodic evaluation, until one is measured. */
  readonly evalSecondsEstimate: number;
  /** The evaluation period of a run planned at `steps` steps (0: none). */
  readonly evalEvery: (steps: number) => number;
  /** The checkpoint period besides evaluations (0: none). */
  readonly saveEvery: number;
  /** Seconds of training so far (the run's clock). */
  readonly clock: () => number;
}

/**
 * The plan of a budgeted run: the first from the probe, then re-made after
 * steps 2, 4, 8, … early in the run ({@link replansAfter}) and at every
 * periodic evaluation, from the costs measured so far and the clock.
 */
export class BudgetPlanner {
  readonly #o: BudgetPlannerOptions;
  readonly #meter: CostMeter;
  #plan: BudgetPlan;

  /** A planner and its first plan. */
  constructor(options: BudgetPlannerOptions) {
    this.#o = options;
    this.#meter = new CostMeter({
      stepSeconds: options.probeStepSeconds,
      evalSeconds: options.evalSecondsEstimate,
      saveSeconds: 0,
    });
    this.#plan = {
      budgetSeconds: options.budgetSeconds,
      probeStepSeconds: options.probeStepSeconds,
      stepSeconds: options.probeStepSeconds,
      plannedAtStep: 0,
      steps: this.#steps(0, 0),
    };
  }

  /** The plan in effect. */
  get plan(): BudgetPlan {
    return this.#plan;
  }

  /** The costs measured so far. */
  get costs(): RunCosts {
    return this.#meter.costs;
  }

  /** Records one optimizer step's seconds. */
  recordStep(seconds: number): void {
    this.#meter.step(seconds);
  }

  /** Records one periodic evaluation's seconds. */
  recordEval(seconds: number): void {
    this.#meter.eval(seconds);
  }

  /** Records one checkpoint's seconds. */
  recordSave(seconds: number): void {
    this.#meter.save(seconds);
  }

  /**
   * After `step` (and its evaluation, when `evaluated`; before its
   * checkpoint, so that holds the plan in effect): re-plans when due, and
   * returns the new step count when it changed.
   */
  afterStep(
    step: number,
    evaluated: boolean,
    warmupSteps: number,
  ): number | undefined {
    if (!evaluated && !replansAfter(step, this.#plan.steps, warmupSteps)) {
      return undefined;
    }
    // This step's checkpoint is still to come.
    const saves = evaluated ||
      (this.#o.saveEvery > 0 && step % this.#o.saveEvery === 0);
    const pending = saves ? this.#meter.costs.saveSeconds : 0;
    const steps = this.#steps(step, this.#o.clock() + pending);
    const changed = steps !== this.#plan.steps;
    this.#plan = {
      ...this.#plan,
      stepSeconds: this.#meter.costs.stepSeconds,
      plannedAtStep: step,
      steps,
    };
    return changed ? steps : undefined;
  }

  #steps(step: number, elapsedSeconds: number): number {
    return planSteps({
      budgetSeconds: this.#o.budgetSeconds,
      elapsedSeconds,
      step,
      costs: this.#meter.costs,
      evalEvery: this.#o.evalEvery,
      saveEvery: this.#o.saveEvery,
    });
  }
}
