// The time-budget planner with a fake clock: runs whose probe is wrong by up
// to 3× either way, whose steps are noisy and drift, with evaluations and
// checkpoints of up to 1% of the budget each, end within ±5% of the budget
// with their planned steps done.
import { strict as assert } from "node:assert";
import fc from "fast-check";
import {
  BUDGET_AIM,
  BUDGET_OVERRUN,
  BudgetPlanner,
  CostMeter,
  planSteps,
  replansAfter,
} from "../../src/train/budget.ts";
import { defaultEvalEvery, defaultWarmup } from "../../src/train/settings.ts";

interface Simulated {
  /** Seconds when training ended (the last checkpoint written). */
  readonly seconds: number;
  readonly stepsDone: number;
  readonly plannedSteps: number;
  readonly stoppedEarly: boolean;
}

/**
 * The loop of `runTraining` on a fake clock: a step, its evaluation, the
 * planner, its checkpoint; the hard stop before each step; a last checkpoint.
 */
function simulate(o: {
  budget: number;
  probe: number;
  stepSeconds: (index: number) => number;
  evalSeconds: number;
  saveSeconds: number;
  saveEvery: number;
}): Simulated {
  let clock = 0;
  const planner = new BudgetPlanner({
    budgetSeconds: o.budget,
    probeStepSeconds: o.probe,
    evalSecondsEstimate: o.probe,
    evalEvery: defaultEvalEvery,
    saveEvery: o.saveEvery,
    clock: () => clock,
  });
  let steps = planner.plan.steps;
  const warmup = defaultWarmup(steps);
  let step = 0;
  let lastSaved = 0;
  let stoppedEarly = false;
  while (step < steps) {
    if (clock >= o.budget * BUDGET_OVERRUN) {
      stoppedEarly = true;
      break;
    }
    const dt = o.stepSeconds(step);
    clock += dt;
    planner.recordStep(dt);
    step++;
    const evalEvery = defaultEvalEvery(steps);
    const evalNow = step % evalEvery === 0 && step < steps;
    if (evalNow) {
      clock += o.evalSeconds;
      planner.recordEval(o.evalSeconds);
    }
    const next = planner.afterStep(step, evalNow, warmup);
    if (next !== undefined) steps = next;
    if (evalNow || (o.saveEvery > 0 && step % o.saveEvery === 0)) {
      clock += o.saveSeconds;
      planner.recordSave(o.saveSeconds);
      lastSaved = step;
    }
  }
  if (step !== lastSaved || stoppedEarly) clock += o.saveSeconds;
  return { seconds: clock, stepsDone: step, plannedSteps: steps, stoppedEarly };
}

/** Deterministic noise in [-1, 1) from a seed and an index. */
const noise = (seed: number, i: number): number => {
  let x = (seed ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b) >>> 0;
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35) >>> 0;
  return ((x ^ (x >>> 16)) >>> 0) / 2 ** 31 - 1;
};

Deno.test("a planned run ends within ±5% of its budget, its steps done (fake clock, property)", () => {
  fc.assert(
    fc.property(
      fc.record({
        stepSeconds: fc.double({ min: 1e-3, max: 5, noNaN: true }),
        probeRatio: fc.double({ min: 1 / 3, max: 3, noNaN: true }),
        stepsInBudget: fc.integer({ min: 100, max: 3000 }),
        firstStepFactor: fc.double({ min: 1, max: 5, noNaN: true }),
        jitter: fc.double({ min: 0, max: 0.15, noNaN: true }),
        drift: fc.double({ min: -0.2, max: 0.2, noNaN: true }),
        // Each evaluation and checkpoint up to 1% of the budget: a coarser
        // overhead cannot be fitted to ±5% by choosing a step count.
        evalShare: fc.double({ min: 0, max: 0.01, noNaN: true }),
        saveShare: fc.double({ min: 0, max: 0.01, noNaN: true }),
        extraSaves: fc.boolean(),
        seed: fc.integer(),
      }),
      (p) => {
        const budget = p.stepSeconds * p.stepsInBudget;
        const expectedSteps = p.stepsInBudget;
        const r = simulate({
          budget,
          probe: p.stepSeconds * p.probeRatio,
          stepSeconds: (i) =>
            p.stepSeconds * (i === 0 ? p.firstStepFactor : 1) *
            (1 + p.drift * Math.min(1, i / expectedSteps)) *
            (1 + p.jitter * noise(p.seed, i)),
          evalSeconds: budget * p.evalShare,
          saveSeconds: budget * p.saveShare,
          saveEvery: p.extraSaves ? Math.ceil(p.stepsInBudget / 8) : 0,
        });
        const ratio = r.seconds / budget;
        assert.ok(
          ratio >= 0.95 && ratio <= 1.05,
          `ended at ${(100 * ratio).toFixed(1)}% of the budget: ${
            JSON.stringify(r)
          }`,
        );
        assert.ok(!r.stoppedEarly, JSON.stringify(r));
        assert.equal(r.stepsDone, r.plannedSteps);
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("planSteps: known answers", () => {
  const costs = { stepSeconds: 1, evalSeconds: 0, saveSeconds: 0 };
  const none = () => 0;
  const plan = (o: Partial<Parameters<typeof planSteps>[0]>) =>
    planSteps({
      budgetSeconds: 100,
      elapsedSeconds: 0,
      step: 0,
      costs,
      evalEvery: none,
      saveEvery: 0,
      ...o,
    });
  assert.equal(plan({}), Math.floor(100 * BUDGET_AIM));
  // 10 s used by 5 steps: 88 s left at 1 s a step.
  assert.equal(plan({ step: 5, elapsedSeconds: 10 }), 5 + 88);
  // A final checkpoint of 3 s.
  assert.equal(plan({ costs: { ...costs, saveSeconds: 3 } }), 95);
  // Out of time: never fewer steps than done, never 0.
  assert.equal(plan({ step: 40, elapsedSeconds: 500 }), 40);
  assert.equal(plan({ elapsedSeconds: 500 }), 1);
});

/** The seconds of steps (step, n] of an n-step run, counted one step at a time. */
function slowRemaining(
  step: number,
  n: number,
  c: { stepSeconds: number; evalSeconds: number; saveSeconds: number },
  evalEvery: number,
  saveEvery: number,
): number {
  let t = 0;
  for (let m = step + 1; m <= n; m++) {
    t += c.stepSeconds;
    const evalNow = evalEvery > 0 && m % evalEvery === 0 && m < n;
    if (evalNow) t += c.evalSeconds;
    if (evalNow || (saveEvery > 0 && m % saveEvery === 0) || m === n) {
      t += c.saveSeconds;
    }
  }
  return t;
}

Deno.test("planSteps: the most steps that fit, as counted step by step (property)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 300 }),
      fc.integer({ min: 1, max: 60 }),
      fc.double({ min: 0.2, max: 1, noNaN: true }),
      fc.double({ min: 0, max: 5, noNaN: true }),
      fc.double({ min: 0, max: 5, noNaN: true }),
      fc.constantFrom(0, 1, 7, 25),
      fc.constantFrom("default", "none", "fixed"),
      (step, budget, stepSeconds, evalSeconds, saveSeconds, saveEvery, ev) => {
        const costs = { stepSeconds, evalSeconds, saveSeconds };
        const evalEvery = ev === "default"
          ? defaultEvalEvery
          : ev === "none"
          ? () => 0
          : () => 10;
        const elapsed = step * stepSeconds;
        const n = planSteps({
          budgetSeconds: budget,
          elapsedSeconds: elapsed,
          step,
          costs,
          evalEvery,
          saveEvery,
        });
        const left = BUDGET_AIM * budget - elapsed;
        // Sums and products of the same costs round differently: 1e-9 slack.
        const slack = 1e-9 * budget;
        const remaining = (k: number) =>
          slowRemaining(step, k, costs, evalEvery(k), saveEvery);
        const fits = (k: number) => remaining(k) <= left + slack;
        // When nothing fits: the steps done, and at least one.
        if (n <= step || !fits(n)) assert.equal(n, Math.max(1, step));
        const most = step + Math.floor(left / stepSeconds);
        for (let k = n + 1; k <= most; k++) {
          assert.ok(remaining(k) > left - slack, `${k} > ${n} fits too`);
        }
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("replansAfter: powers of two early, then every twentieth of the run", () => {
  const at = (n: number, warmup: number) =>
    Array.from({ length: n }, (_, i) => i + 1).filter((s) =>
      replansAfter(s, n, warmup)
    );
  assert.deepEqual(at(200, 5), [
    2,
    4,
    8,
    10,
    16,
    20,
    ...Array.from({ length: 18 }, (_, i) => 30 + 10 * i),
  ]);
  assert.deepEqual(at(10, 1), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
});

Deno.test("CostMeter: the first step is not counted once others are; evaluation and checkpoint the latest", () => {
  const m = new CostMeter({ stepSeconds: 9, evalSeconds: 8, saveSeconds: 7 });
  assert.deepEqual(m.costs, { stepSeconds: 9, evalSeconds: 8, saveSeconds: 7 });
  m.step(5);
  assert.equal(m.costs.stepSeconds, 5);
  m.step(1);
  m.step(2);
  assert.equal(m.costs.stepSeconds, 1.5);
  m.eval(3);
  m.eval(4);
  m.save(0.5);
  assert.deepEqual(m.costs, {
    stepSeconds: 1.5,
    evalSeconds: 4,
    saveSeconds: 0.5,
  });
});
