import fc from "fast-check";
import { strict as assert } from "node:assert";
import {
  steBlend,
  tanhSoftTernary,
  tanhSoftTernaryAt,
  tanhSoftTernaryGrad,
  tanhSoftTernaryGradAt,
} from "../../src/core/ste.ts";
import { fakeQuantizeWeights } from "../../src/core/quantize.ts";
import { QUANT_MODES } from "../../src/common/quant_mode.ts";

const RUNS = { numRuns: 1000 };
const fr = Math.fround;
const f32 = fc.float({ min: -1e6, max: 1e6, noNaN: true });
const pair = fc.integer({ min: 1, max: 48 }).chain((n) =>
  fc.tuple(
    fc.array(f32, { minLength: n, maxLength: n }).map((a) =>
      Float32Array.from(a)
    ),
    fc.array(f32, { minLength: n, maxLength: n }).map((a) =>
      Float32Array.from(a)
    ),
  )
);
const poisoned = (n: number) => new Float32Array(n).fill(NaN);
const rangeErr = (re: RegExp) => (e: unknown) =>
  e instanceof RangeError && re.test(e.message);

// ---------------------------------------------------------------- steBlend

Deno.test("steBlend: λ = 0 is the identity, λ = 1 is q, bit for bit", () => {
  fc.assert(
    fc.property(pair, ([x, q]) => {
      const a = steBlend(x, q, 0, poisoned(x.length));
      const b = steBlend(x, q, 1, poisoned(x.length));
      for (let i = 0; i < x.length; i++) {
        assert.ok(a[i] === x[i], `λ=0 [${i}]: ${a[i]} vs ${x[i]}`);
        assert.ok(b[i] === q[i], `λ=1 [${i}]: ${b[i]} vs ${q[i]}`);
      }
    }),
    RUNS,
  );
});

Deno.test("steBlend: λ = 1 with the hard quantizer's output gives the hard quantizer exactly", () => {
  const arb = fc.tuple(
    fc.array(fc.float({ min: -3, max: 3, noNaN: true }), {
      minLength: 1,
      maxLength: 64,
    }),
    fc.constantFrom(...QUANT_MODES),
  );
  fc.assert(
    fc.property(arb, ([a, mode]) => {
      const w = Float32Array.from(a);
      const hard = fakeQuantizeWeights(mode, w, 1, w.length);
      const blended = steBlend(w, hard, 1);
      for (let i = 0; i < w.length; i++) assert.ok(blended[i] === hard[i]);
    }),
    RUNS,
  );
});

Deno.test("steBlend: stays between x and q and matches x + λ(q − x)", () => {
  fc.assert(
    fc.property(
      pair,
      fc.double({ min: 0, max: 1, noNaN: true }),
      ([x, q], lambda) => {
        const out = steBlend(x, q, lambda);
        for (let i = 0; i < x.length; i++) {
          const lo = Math.min(x[i], q[i]), hi = Math.max(x[i], q[i]);
          assert.ok(
            out[i] >= lo && out[i] <= hi,
            `${out[i]} outside [${lo}, ${hi}]`,
          );
          const want = x[i] + lambda * (q[i] - x[i]);
          // Both forms are within a few f64 ulps of each other; the f32 store dominates:
          // relative 2^-24 for normal results, absolute 2^-150 in the subnormal range.
          const tol = 2 ** -23 * Math.max(Math.abs(x[i]), Math.abs(q[i])) +
            2 ** -149;
          assert.ok(Math.abs(out[i] - want) <= tol, `${out[i]} vs ${want}`);
        }
      },
    ),
    RUNS,
  );
  assert.deepEqual([
    ...steBlend(Float32Array.of(1, -2), Float32Array.of(3, 2), 0.25),
  ], [1.5, -1]);
});

Deno.test("steBlend: in place, and errors", () => {
  const x = Float32Array.of(1, 2, 3);
  const q = Float32Array.of(3, 2, 1);
  assert.equal(steBlend(x, q, 0.5, x), x);
  assert.deepEqual([...x], [2, 2, 2]);
  assert.throws(
    () => steBlend(x, q, 1.5),
    rangeErr(/lambda must be in \[0, 1\], got 1.5/),
  );
  assert.throws(() => steBlend(x, q, NaN), rangeErr(/lambda/));
  assert.throws(
    () => steBlend(x, new Float32Array(2), 0),
    rangeErr(/q.length \(2\)/),
  );
  assert.throws(
    () => steBlend(x, q, 0, new Float32Array(4)),
    rangeErr(/out.length must be 3/),
  );
});

// ---------------------------------------------------------------- tanh soft ternary

const alphaArb = fc.double({ min: 0.05, max: 50, noNaN: true });
const gammaArb = fc.double({ min: 1e-3, max: 10, noNaN: true });
const uArb = fc.double({ min: -3, max: 3, noNaN: true }); // w / γ

/** The hard ternary staircase on u = w/γ, thresholds ±½ (ties to 0 do not matter here). */
const staircase = (u: number) => (u > 0.5 ? 1 : u < -0.5 ? -1 : 0);

Deno.test("tanhSoftTernaryGradAt: matches a central finite difference (f64)", () => {
  fc.assert(
    fc.property(alphaArb, gammaArb, uArb, (alpha, gamma, u) => {
      const w = u * gamma;
      // Step in units of the curve's own scale γ/α; truncation error ~ (1e-4)² relative.
      const h = (1e-4 * gamma) / alpha;
      const fd = (tanhSoftTernaryAt(w + h, alpha, gamma) -
        tanhSoftTernaryAt(w - h, alpha, gamma)) /
        (2 * h);
      const d = tanhSoftTernaryGradAt(w, alpha, gamma);
      assert.ok(d >= 0 && d <= alpha, `f' = ${d} outside [0, α]`);
      assert.ok(
        Math.abs(fd - d) <= 1e-6 * alpha,
        `fd ${fd} vs ${d} (α ${alpha}, γ ${gamma}, u ${u})`,
      );
    }),
    { numRuns: 2000 },
  );
});

Deno.test("tanhSoftTernary: within 2γ·exp(−2α·dist) of the hard staircase, for every α", () => {
  fc.assert(
    fc.property(
      fc.double({ min: 0.05, max: 1e4, noNaN: true }),
      gammaArb,
      uArb,
      (alpha, gamma, u) => {
        const w = u * gamma;
        const dist = Math.min(Math.abs(u - 0.5), Math.abs(u + 0.5));
        const err = Math.abs(
          tanhSoftTernaryAt(w, alpha, gamma) - gamma * staircase(u),
        );
        assert.ok(
          err <= 2 * gamma * Math.exp(-2 * alpha * dist) + 1e-15 * gamma,
          `err ${err}`,
        );
      },
    ),
    { numRuns: 2000 },
  );
});

Deno.test("tanhSoftTernary: large α gives values in {−γ, 0, +γ} away from the thresholds", () => {
  const gamma = 0.75;
  const w = Float32Array.of(-2, -0.6, -0.3, 0, 0.1, 0.3, 0.45, 1.5);
  const out = tanhSoftTernary(w, 200, gamma);
  assert.deepEqual([...out], [-0.75, -0.75, 0, 0, 0, 0, 0.75, 0.75]);
  // At a threshold the soft value is the midpoint of the step; the derivative peaks there.
  assert.ok(
    Math.abs(tanhSoftTernaryAt(gamma / 2, 200, gamma) - gamma / 2) < 1e-12,
  );
  assert.ok(tanhSoftTernaryGradAt(gamma / 2, 200, gamma) > 99);
  // Not the identity STE: far from the thresholds the gradient vanishes.
  assert.ok(tanhSoftTernaryGradAt(0, 200, gamma) < 1e-80); // 200·sech²(100)
  assert.ok(tanhSoftTernaryGradAt(1.5, 200, gamma) < 1e-250); // 100·sech²(300) + …
});

Deno.test("tanhSoftTernary: odd, non-decreasing, bounded by γ", () => {
  fc.assert(
    fc.property(alphaArb, gammaArb, uArb, uArb, (alpha, gamma, u1, u2) => {
      const [a, b] = u1 <= u2
        ? [u1 * gamma, u2 * gamma]
        : [u2 * gamma, u1 * gamma];
      const fa = tanhSoftTernaryAt(a, alpha, gamma);
      const fb = tanhSoftTernaryAt(b, alpha, gamma);
      assert.ok(fa <= fb, `f(${a}) = ${fa} > f(${b}) = ${fb}`);
      assert.ok(Math.abs(fa) <= gamma);
      assert.ok(tanhSoftTernaryAt(-a, alpha, gamma) === -fa, "odd");
    }),
    RUNS,
  );
});

Deno.test("tanhSoftTernary arrays: f32 of the scalar forms; backward is gradOut · f'", () => {
  fc.assert(
    fc.property(alphaArb, gammaArb, pair, (alpha, gamma, [w, g]) => {
      const out = tanhSoftTernary(w, alpha, gamma, poisoned(w.length));
      const grad = tanhSoftTernaryGrad(w, g, alpha, gamma, poisoned(w.length));
      for (let i = 0; i < w.length; i++) {
        assert.equal(out[i], fr(tanhSoftTernaryAt(w[i], alpha, gamma)));
        assert.equal(
          grad[i],
          fr(g[i] * tanhSoftTernaryGradAt(w[i], alpha, gamma)),
        );
      }
    }),
    RUNS,
  );
});

Deno.test("tanhSoftTernary: γ = 0 is the zero map with the γ → 0⁺ derivative limit", () => {
  const alpha = 3;
  assert.equal(tanhSoftTernaryAt(0.2, alpha, 0), 0);
  assert.equal(tanhSoftTernaryAt(0, alpha, 0), 0);
  assert.equal(tanhSoftTernaryGradAt(0.2, alpha, 0), 0);
  const limit = tanhSoftTernaryGradAt(0, alpha, 0);
  assert.ok(limit > 0, "all-zero weights still get a gradient");
  assert.equal(limit, tanhSoftTernaryGradAt(0, alpha, 1e-300));
  assert.ok(Math.abs(tanhSoftTernaryGradAt(0.2, alpha, 1e-3)) < 1e-300);
  const z = tanhSoftTernary(new Float32Array(4), alpha, 0);
  assert.deepEqual([...z], [0, 0, 0, 0]);
});

Deno.test("tanhSoftTernary: parameter and length errors", () => {
  const w = Float32Array.of(1, 2);
  assert.throws(
    () => tanhSoftTernary(w, 0, 1),
    rangeErr(/alpha must be finite and > 0, got 0/),
  );
  assert.throws(() => tanhSoftTernaryAt(1, Infinity, 1), rangeErr(/alpha/));
  assert.throws(
    () => tanhSoftTernaryGradAt(1, 1, -1),
    rangeErr(/gamma must be finite and ≥ 0, got -1/),
  );
  assert.throws(
    () => tanhSoftTernaryGrad(w, new Float32Array(3), 1, 1),
    rangeErr(/gradOut.length \(3\)/),
  );
  assert.throws(
    () => tanhSoftTernary(w, 1, 1, new Float32Array(1)),
    rangeErr(/out.length must be 2/),
  );
});
