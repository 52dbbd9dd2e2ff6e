import fc from "fast-check";
import { strict as assert } from "node:assert";
import {
  alphaAt,
  type AlphaSchedule,
  lambdaAt,
  type LambdaSchedule,
  type LambdaShape,
  quantPhases,
} from "../../src/core/schedule.ts";

const RUNS = { numRuns: 1000 };
const rangeErr = (re: RegExp) => (e: unknown) =>
  e instanceof RangeError && re.test(e.message);

const window = fc.record({
  start: fc.integer({ min: 0, max: 1_000_000 }),
  steps: fc.oneof(
    fc.integer({ min: 1, max: 100_000 }),
    fc.integer({ min: 1, max: 5 }),
  ),
});
const shapeArb: fc.Arbitrary<LambdaShape> = fc.oneof(
  fc.constant({ kind: "linear" as const }),
  fc.record({
    kind: fc.constant("exponential" as const),
    k: fc.oneof(
      fc.double({ min: 1e-3, max: 50, noNaN: true }),
      fc.constantFrom(1, 2, 3),
    ),
  }),
  fc.record({
    kind: fc.constant("sigmoid" as const),
    sharpness: fc.oneof(
      fc.double({ min: 1e-9, max: 1e4, noNaN: true }),
      fc.constantFrom(1e-300, 5, 10, 1e300),
    ),
  }),
);
const rampArb: fc.Arbitrary<LambdaSchedule> = fc.tuple(shapeArb, window).map((
  [shape, w],
) => ({ ...shape, ...w }));
/** Steps around a window: before, inside (fractional too) and after. */
const stepNear = (s: { start: number; steps: number }) =>
  fc.oneof(
    fc.double({ min: s.start - 10, max: s.start + s.steps + 10, noNaN: true }),
    fc.integer({ min: Math.max(0, s.start - 3), max: s.start + s.steps + 3 }),
  );

Deno.test("lambdaAt: hand-computed values", () => {
  const lin: LambdaSchedule = { kind: "linear", start: 100, steps: 1000 };
  assert.equal(lambdaAt(lin, 0), 0);
  assert.equal(lambdaAt(lin, 100), 0);
  assert.equal(lambdaAt(lin, 350), 0.25);
  assert.equal(lambdaAt(lin, 1100), 1);
  assert.equal(lambdaAt(lin, 5000), 1);
  const exp: LambdaSchedule = {
    kind: "exponential",
    start: 0,
    steps: 10,
    k: 2,
  };
  assert.equal(lambdaAt(exp, 5), 0.75); // 1 − (1 − ½)²
  assert.equal(lambdaAt(exp, 10), 1);
  const sig: LambdaSchedule = {
    kind: "sigmoid",
    start: 0,
    steps: 4,
    sharpness: 8,
  };
  assert.equal(lambdaAt(sig, 2), 0.5);
  // Against the logistic form (σ(s(t−½)) − σ(−s/2)) / (σ(s/2) − σ(−s/2)) at t = ¼.
  const sigma = (z: number) => 1 / (1 + Math.exp(-z));
  const want = (sigma(8 * -0.25) - sigma(-4)) / (sigma(4) - sigma(-4));
  assert.ok(
    Math.abs(lambdaAt(sig, 1) - want) < 1e-15,
    `${lambdaAt(sig, 1)} vs ${want}`,
  );
  assert.equal(lambdaAt({ kind: "constant", value: 0.3 }, 1e9), 0.3);
});

Deno.test("lambdaAt: ramps hit 0 at start and 1 at start + steps exactly, clamp outside", () => {
  fc.assert(
    fc.property(rampArb, fc.integer({ min: 1, max: 1e6 }), (s, d) => {
      const { start, steps } = s as { start: number; steps: number };
      assert.equal(lambdaAt(s, start), 0);
      assert.equal(lambdaAt(s, start + steps), 1);
      assert.equal(lambdaAt(s, start - d), 0);
      assert.equal(lambdaAt(s, start + steps + d), 1);
    }),
    RUNS,
  );
});

Deno.test("lambdaAt: monotone non-decreasing and in [0, 1]", () => {
  fc.assert(
    fc.property(
      rampArb.chain((s) =>
        fc.tuple(
          fc.constant(s),
          stepNear(s as { start: number; steps: number }),
          stepNear(s as { start: number; steps: number }),
        )
      ),
      ([s, a, b]) => {
        const [lo, hi] = a <= b ? [a, b] : [b, a];
        const la = lambdaAt(s, lo), lb = lambdaAt(s, hi);
        assert.ok(la >= 0 && lb <= 1, `${la}, ${lb}`);
        assert.ok(
          la <= lb,
          `λ(${lo}) = ${la} > λ(${hi}) = ${lb} for ${JSON.stringify(s)}`,
        );
      },
    ),
    RUNS,
  );
});

Deno.test("lambdaAt: every integer step of short ramps is monotone", () => {
  for (
    const shape of [{ kind: "linear" }, { kind: "exponential", k: 0.3 }, {
      kind: "exponential",
      k: 7,
    }, {
      kind: "sigmoid",
      sharpness: 12,
    }] as LambdaShape[]
  ) {
    const s = { ...shape, start: 7, steps: 997 } as LambdaSchedule;
    let prev = 0;
    for (let step = 0; step <= 1010; step++) {
      const l = lambdaAt(s, step);
      assert.ok(l >= prev && l <= 1, `${shape.kind} at ${step}`);
      prev = l;
    }
    assert.equal(prev, 1);
  }
});

Deno.test("quantPhases: full precision, then a soft rise, then hard", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 10_000 }),
      fc.integer({ min: 1, max: 10_000 }),
      fc.option(shapeArb, { nil: undefined }),
      (fpSteps, softSteps, shape) => {
        const s = quantPhases({ fpSteps, softSteps, shape });
        assert.equal(s.kind, shape?.kind ?? "linear");
        for (let step = 0; step <= fpSteps; step += Math.max(1, fpSteps >> 4)) {
          assert.equal(lambdaAt(s, step), 0);
        }
        assert.equal(lambdaAt(s, fpSteps), 0);
        const mid = lambdaAt(s, fpSteps + softSteps / 2);
        assert.ok(mid > 0 && mid < 1, `mid-soft λ = ${mid}`);
        assert.equal(lambdaAt(s, fpSteps + softSteps), 1);
        assert.equal(lambdaAt(s, fpSteps + softSteps + 12345), 1);
      },
    ),
    RUNS,
  );
  // softSteps = 0 switches straight from full precision to hard at fpSteps.
  const sw = quantPhases({ fpSteps: 50, softSteps: 0 });
  assert.deepEqual([
    lambdaAt(sw, 49),
    lambdaAt(sw, 49.5),
    lambdaAt(sw, 50),
    lambdaAt(sw, 51),
  ], [0, 0, 1, 1]);
  assert.deepEqual(quantPhases({ fpSteps: 3, softSteps: 4 }), {
    kind: "linear",
    start: 3,
    steps: 4,
  });
});

Deno.test("alphaAt: geometric growth from α0 to α1, exact endpoints, monotone", () => {
  const arb = fc.record({
    start: fc.integer({ min: 0, max: 1e5 }),
    steps: fc.integer({ min: 1, max: 1e5 }),
    alpha0: fc.double({ min: 1e-3, max: 1e3, noNaN: true }),
    ratio: fc.double({ min: 1, max: 1e6, noNaN: true }),
  }).map(({ ratio, ...r }): AlphaSchedule => ({
    ...r,
    alpha1: r.alpha0 * ratio,
  }));
  fc.assert(
    fc.property(
      arb.chain((s) => fc.tuple(fc.constant(s), stepNear(s), stepNear(s))),
      ([s, a, b]) => {
        assert.equal(alphaAt(s, s.start), s.alpha0);
        assert.equal(alphaAt(s, s.start - 1), s.alpha0);
        assert.equal(alphaAt(s, s.start + s.steps), s.alpha1);
        assert.equal(alphaAt(s, s.start + s.steps + 1), s.alpha1);
        const [lo, hi] = a <= b ? [a, b] : [b, a];
        const x = alphaAt(s, lo), y = alphaAt(s, hi);
        assert.ok(x <= y && x >= s.alpha0 && y <= s.alpha1, `${x}, ${y}`);
        const mid = alphaAt(s, s.start + s.steps / 2);
        const geo = Math.sqrt(s.alpha0 * s.alpha1);
        assert.ok(
          Math.abs(mid - geo) <= 1e-12 * geo,
          `midpoint ${mid} vs ${geo}`,
        );
      },
    ),
    RUNS,
  );
  assert.equal(alphaAt({ start: 0, steps: 2, alpha0: 1, alpha1: 100 }, 1), 10);
  assert.equal(alphaAt({ start: 0, steps: 2, alpha0: 7, alpha1: 61 }, 2), 61); // 7·(61/7) < 61
  assert.equal(alphaAt({ start: 5, steps: 0, alpha0: 1, alpha1: 9 }, 5), 9);
});

Deno.test("schedules: invalid parameters throw RangeError naming the field", () => {
  const lin = { kind: "linear", start: 0, steps: 10 } as const;
  assert.throws(
    () => lambdaAt(lin, NaN),
    rangeErr(/lambdaAt: step must be a finite number/),
  );
  assert.throws(
    () => lambdaAt({ ...lin, steps: -1 }, 0),
    rangeErr(/schedule.steps must be a non-negative integer/),
  );
  assert.throws(
    () => lambdaAt({ ...lin, start: 1.5 }, 0),
    rangeErr(/schedule.start/),
  );
  assert.throws(
    () => lambdaAt({ kind: "constant", value: 2 }, 0),
    rangeErr(/schedule.value must be in \[0, 1\]/),
  );
  assert.throws(
    () => lambdaAt({ ...lin, kind: "exponential", k: 0 }, 0),
    rangeErr(/schedule.k/),
  );
  assert.throws(
    () => lambdaAt({ ...lin, kind: "sigmoid", sharpness: -1 }, 0),
    rangeErr(/schedule.sharpness/),
  );
  assert.throws(
    () => lambdaAt({ ...lin, kind: "sigmoid", sharpness: 1e-320 }, 0),
    rangeErr(/≥ 1e-300/),
  );
  assert.throws(
    () => lambdaAt({ ...lin, kind: "cosine" } as unknown as LambdaSchedule, 0),
    rangeErr(/unknown schedule kind "cosine"/),
  );
  assert.throws(
    () => quantPhases({ fpSteps: -5, softSteps: 1 }),
    rangeErr(/quantPhases: schedule.start/),
  );
  const a = { start: 0, steps: 10, alpha0: 1, alpha1: 5 };
  assert.throws(
    () => alphaAt({ ...a, alpha0: 0 }, 0),
    rangeErr(/schedule.alpha0/),
  );
  assert.throws(
    () => alphaAt({ ...a, alpha1: 0.5 }, 0),
    rangeErr(/schedule.alpha1 must be finite and ≥ alpha0/),
  );
  assert.throws(() => alphaAt(a, Infinity), rangeErr(/alphaAt: step/));
});
