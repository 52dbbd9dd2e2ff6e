import fc from "fast-check";
import { strict as assert } from "node:assert";
import {
  absmeanTernary,
  binarize,
  dequantizeInt8PerChannel,
  dequantizeInt8PerToken,
  dequantizePerTensor,
  dynamicThresholdTernary,
  f16Round,
  fakeQuantizeActivations,
  fakeQuantizeWeights,
  int8PerChannel,
  int8PerToken,
  QUANT_EPS,
  roundHalfEven,
} from "../../src/core/quantize.ts";
import { roundToF16 } from "../../src/core/f16.ts";
import { QUANT_MODES } from "../../src/common/quant_mode.ts";

const RUNS = { numRuns: 1000 };
const fr = Math.fround;

// ---------------------------------------------------------------- generators

/** Every finite f32, subnormals, ±0 and values near FLT_MAX included. */
const anyF32 = fc.float({ noNaN: true, noDefaultInfinity: true });
/** Weight-like values, with exact zeros and half-integers mixed in. */
const weightF32 = fc.oneof(
  { arbitrary: fc.float({ min: -4, max: 4, noNaN: true }), weight: 6 },
  { arbitrary: fc.constantFrom(0, -0, 0.5, -0.5, 1.5, -2.5), weight: 2 },
  { arbitrary: anyF32, weight: 2 },
);
const vec = (el: fc.Arbitrary<number>, min = 1, max = 64) =>
  fc.array(el, { minLength: min, maxLength: max }).map((a) =>
    Float32Array.from(a)
  );

interface Mat {
  rows: number;
  cols: number;
  data: Float32Array;
}
const mat = (el: fc.Arbitrary<number>): fc.Arbitrary<Mat> =>
  fc.tuple(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 24 }))
    .chain((
      [rows, cols],
    ) =>
      fc.array(el, { minLength: rows * cols, maxLength: rows * cols }).map((
        a,
      ) => ({
        rows,
        cols,
        data: Float32Array.from(a),
      }))
    );

// ---------------------------------------------------------------- references

/** Ties-to-even rounding written independently of the implementation (floor based). */
function refRound(v: number): number {
  const f = Math.floor(v);
  const r = v - f;
  if (r > 0.5) return f + 1;
  if (r < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}
const clamp = (v: number, lo: number, hi: number) =>
  Math.min(hi, Math.max(lo, v));
const absMean = (w: Float32Array) =>
  w.reduce((s, v) => s + Math.abs(v), 0) / w.length;
const rowMax = (a: Float32Array, r: number, cols: number) => {
  let m = 0;
  for (let c = 0; c < cols; c++) m = Math.max(m, Math.abs(a[r * cols + c]));
  return m;
};
/** The largest f32 s with 127·s ≤ f32 max, found by walking down from fround(max/127). */
const MAX_STEP = (() => {
  const b = Float32Array.of(3.4028234663852886e38 / 127);
  const u = new Uint32Array(b.buffer);
  while (127 * b[0] > 3.4028234663852886e38) u[0]--;
  return b[0];
})();
const poisoned = (n: number) => new Float32Array(n).fill(NaN);

function assertSameValues(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  msg = "",
): void {
  assert.equal(a.length, b.length, `${msg} length`);
  // === on purpose: −0 and +0 are the same weight.
  for (let i = 0; i < a.length; i++) {
    assert.ok(a[i] === b[i], `${msg}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}

// ---------------------------------------------------------------- roundHalfEven

Deno.test("roundHalfEven: hand-computed ties and non-ties", () => {
  const cases: [number, number][] = [
    [0.5, 0],
    [1.5, 2],
    [2.5, 2],
    [-0.5, 0],
    [-1.5, -2],
    [-2.5, -2],
    [2.4999999999999996, 2],
    [0.49999999999999994, 0],
    [-126.5, -126],
    [127.5, 128],
    [3.7, 4],
    [-3.7, -4],
  ];
  for (const [v, want] of cases) {
    assert.ok(roundHalfEven(v) === want, `${v} → ${roundHalfEven(v)}`);
  }
});

Deno.test("roundHalfEven: matches a floor-based reference and is odd", () => {
  const v = fc.oneof(
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.double({ min: -300, max: 300, noNaN: true }),
    fc.integer({ min: -1e6, max: 1e6 }).map((i) => i + 0.5),
  );
  fc.assert(
    fc.property(v, (x) => {
      assert.ok(roundHalfEven(x) === refRound(x), `${x}`);
      assert.ok(roundHalfEven(-x) === -roundHalfEven(x), `odd at ${x}`);
    }),
    { numRuns: 3000 },
  );
});

// ---------------------------------------------------------------- absmean ternary

Deno.test("absmeanTernary: hand-computed example", () => {
  const w = Float32Array.of(0.5, -1.5, 0, 2, -0.25);
  const { codes, scale } = absmeanTernary(w);
  assert.equal(scale, fr(4.25 / 5));
  assert.deepEqual([...codes], [1, -1, 0, 1, 0]);
  assert.deepEqual([...dequantizePerTensor({ codes, scale })], [
    scale,
    -scale,
    0,
    scale,
    0,
  ]);
});

Deno.test("absmeanTernary: the threshold is (γ + ε)/2", () => {
  // γ = 1, d = 1.00001: 0.5 / d < ½ gives 0; 0.50001 / d > ½ gives 1. (An exact tie
  // w/d = ½ cannot occur in practice: d = γ + ε has bits far below any f32 w's.)
  assert.deepEqual([...absmeanTernary(Float32Array.of(0.5, 1.5)).codes], [
    0,
    1,
  ]);
  assert.deepEqual([
    ...absmeanTernary(Float32Array.of(-0.50001, 1.49999)).codes,
  ], [-1, 1]);
});

Deno.test("absmeanTernary: codes and scale match the formula, dequantized in {−γ, 0, +γ}", () => {
  fc.assert(
    fc.property(vec(weightF32), (w) => {
      const { codes, scale } = absmeanTernary(w);
      assert.equal(scale, fr(absMean(w)));
      for (let i = 0; i < w.length; i++) {
        const want = clamp(refRound(w[i] / (scale + QUANT_EPS)), -1, 1);
        assert.ok(codes[i] === want, `code ${i}: ${codes[i]} vs ${want}`);
      }
      const deq = dequantizePerTensor({ codes, scale });
      for (const v of deq) {
        assert.ok(v === scale || v === 0 || v === -scale, `${v} vs γ ${scale}`);
      }
      assertSameValues(
        fakeQuantizeWeights("ternary", w, 1, w.length),
        deq,
        "fake",
      );
    }),
    RUNS,
  );
});

Deno.test("absmeanTernary: re-quantizing keeps codes; scale becomes γ·nnz/n", () => {
  fc.assert(
    fc.property(vec(weightF32), (w) => {
      const a = absmeanTernary(w);
      fc.pre(a.scale > 2 * QUANT_EPS); // below ~ε the divisor γ + ε is dominated by ε
      const b = absmeanTernary(dequantizePerTensor(a));
      assertSameValues(b.codes, a.codes, "codes");
      const nnz = a.codes.reduce((n, c) => n + (c !== 0 ? 1 : 0), 0);
      assert.equal(b.scale, fr((a.scale * nnz) / w.length));
    }),
    RUNS,
  );
});

Deno.test("absmeanTernary: Q(−w) = −Q(w)", () => {
  fc.assert(
    fc.property(vec(weightF32), (w) => {
      const a = absmeanTernary(w);
      const b = absmeanTernary(w.map((v) => -v));
      assert.equal(b.scale, a.scale);
      for (let i = 0; i < w.length; i++) assert.ok(b.codes[i] === -a.codes[i]);
    }),
    RUNS,
  );
});

// ---------------------------------------------------------------- dynamic threshold

Deno.test("dynamicThresholdTernary: hand-computed example", () => {
  // mean|w| = 3.6/4 = 0.9, Δ = 0.63: keeps −1 and 2, scale = 1.5.
  const { codes, scale } = dynamicThresholdTernary(
    Float32Array.of(0.1, -1, 0.5, 2),
  );
  assert.deepEqual([...codes], [0, -1, 0, 1]);
  assert.equal(scale, 1.5);
});

Deno.test("dynamicThresholdTernary: formula, never NaN, idempotent in codes and scale", () => {
  fc.assert(
    fc.property(vec(weightF32), (w) => {
      const a = dynamicThresholdTernary(w);
      const delta = 0.7 * absMean(w);
      let kept = 0, n = 0;
      for (let i = 0; i < w.length; i++) {
        const want = Math.abs(w[i]) > delta ? Math.sign(w[i]) : 0;
        assert.ok(a.codes[i] === want, `code ${i}`);
        if (want !== 0) (kept += Math.abs(w[i])), n++;
      }
      assert.equal(a.scale, n === 0 ? 0 : fr(kept / n));
      assert.ok(Number.isFinite(a.scale));
      if (w.some((v) => v !== 0)) {
        assert.ok(n > 0, "the largest weight is kept");
      }
      const deq = dequantizePerTensor(a);
      assertSameValues(
        fakeQuantizeWeights("ternary", w, 1, w.length, {
          dynamicThreshold: true,
        }),
        deq,
        "fake",
      );
      const b = dynamicThresholdTernary(deq);
      assertSameValues(b.codes, a.codes, "codes");
      assert.equal(b.scale, a.scale);
    }),
    RUNS,
  );
});

// ---------------------------------------------------------------- binary

Deno.test("binarize: hand-computed example, sign(±0) = +1", () => {
  const { codes, scale } = binarize(Float32Array.of(0, -0, -2, 3));
  assert.deepEqual([...codes], [1, 1, -1, 1]);
  assert.equal(scale, 1.25);
});

Deno.test("binarize: codes ±1, dequantized in {−γ, +γ}, idempotent", () => {
  fc.assert(
    fc.property(vec(weightF32), (w) => {
      const a = binarize(w);
      assert.equal(a.scale, fr(absMean(w)));
      for (let i = 0; i < w.length; i++) {
        assert.equal(a.codes[i], w[i] < 0 ? -1 : 1);
      }
      const deq = dequantizePerTensor(a);
      for (const v of deq) assert.ok(v === a.scale || v === -a.scale);
      assertSameValues(
        fakeQuantizeWeights("binary", w, w.length, 1),
        deq,
        "fake",
      );
      const b = binarize(deq);
      assertSameValues(b.codes, a.codes, "codes");
      assert.equal(b.scale, a.scale);
    }),
    RUNS,
  );
});

// ---------------------------------------------------------------- int8 per channel

Deno.test("int8PerChannel: hand-computed example with ties and a zero row", () => {
  const w = Float32Array.of(127, 63.5, -0.5, 2.5, -1.5, 0, 0, 0, 0, 0);
  const q = int8PerChannel(w, 2, 5);
  assert.equal(q.scales[0], 1);
  assert.deepEqual([...q.codes.subarray(0, 5)], [127, 64, 0, 2, -2]);
  assert.equal(q.scales[1], fr(QUANT_EPS / 127));
  assert.deepEqual([...q.codes.subarray(5)], [0, 0, 0, 0, 0]);
  assert.deepEqual([...dequantizeInt8PerChannel(q)], [
    127,
    64,
    0,
    2,
    -2,
    0,
    0,
    0,
    0,
    0,
  ]);
});

Deno.test("int8PerChannel: codes in range, error ≤ s_r/2, idempotent, fake = dequant", () => {
  fc.assert(
    fc.property(mat(fc.oneof(weightF32, anyF32)), ({ rows, cols, data }) => {
      const q = int8PerChannel(data, rows, cols);
      assert.equal(q.scales.length, rows);
      const deq = dequantizeInt8PerChannel(q, poisoned(data.length));
      for (let r = 0; r < rows; r++) {
        const m = rowMax(data, r, cols);
        const s = q.scales[r];
        assert.equal(s, Math.min(fr(Math.max(m, QUANT_EPS) / 127), MAX_STEP));
        assert.ok(Number.isFinite(fr(127 * s)));
        let maxCode = 0;
        for (let c = 0; c < cols; c++) {
          const i = r * cols + c;
          const code = q.codes[i];
          assert.ok(
            code === clamp(refRound(data[i] / s), -127, 127),
            `code ${i}: ${code}`,
          );
          maxCode = Math.max(maxCode, Math.abs(code));
          // Slack: fl(w/s) is within 2^-53 relative of w/s (|w/s| ≤ 128 → s·2^-46), and
          // storing q·s as f32 rounds by at most half an ulp, ≤ 2^-24·|deq|.
          const bound = s / 2 + s * 2 ** -46 + Math.abs(deq[i]) * 2 ** -24;
          assert.ok(
            Math.abs(data[i] - deq[i]) <= bound,
            `row ${r}: ${data[i]} → ${deq[i]}, s ${s}`,
          );
        }
        if (m >= QUANT_EPS) {
          assert.equal(maxCode, 127, "the row's absmax maps to ±127");
        }
      }
      assertSameValues(
        fakeQuantizeWeights(
          "eightbit",
          data,
          rows,
          cols,
          {},
          poisoned(data.length),
        ),
        deq,
      );
      const again = int8PerChannel(deq, rows, cols);
      assertSameValues(again.codes, q.codes, "codes");
      assertSameValues(again.scales, q.scales, "scales");
    }),
    RUNS,
  );
});

// ---------------------------------------------------------------- int8 per token

Deno.test("int8PerToken: hand-computed example", () => {
  const x = Float32Array.of(1, -0.5, 0.25, 0, 0, 0, 0, 0);
  const q = int8PerToken(x, 2, 4);
  assert.equal(q.scales[0], 127);
  assert.deepEqual([...q.codes.subarray(0, 4)], [127, -64, 32, 0]); // −63.5 → −64 (even)
  assert.equal(q.scales[1], fr(127 / QUANT_EPS));
  assert.deepEqual([...q.codes.subarray(4)], [0, 0, 0, 0]);
  const deq = dequantizeInt8PerToken(q);
  assert.deepEqual([...deq.subarray(0, 4)], [
    1,
    fr(-64 / 127),
    fr(32 / 127),
    0,
  ]);
});

Deno.test("int8PerToken: codes in range, error ≤ (1/s)/2, idempotent, fake = dequant", () => {
  fc.assert(
    fc.property(mat(fc.oneof(weightF32, anyF32)), ({ rows, cols, data }) => {
      const q = int8PerToken(data, rows, cols);
      const deq = dequantizeInt8PerToken(q, poisoned(data.length));
      for (let r = 0; r < rows; r++) {
        const m = rowMax(data, r, cols);
        const s = q.scales[r];
        assert.equal(s, fr(127 / Math.max(m, QUANT_EPS)));
        let maxCode = 0;
        for (let c = 0; c < cols; c++) {
          const i = r * cols + c;
          const code = q.codes[i];
          assert.ok(
            code === clamp(refRound(data[i] * s), -128, 127),
            `code ${i}: ${code}`,
          );
          maxCode = Math.max(maxCode, Math.abs(code));
          // x·s is exact in f64 (two f32 factors), so |x − q/s| ≤ (1/s)/2 exactly; the slack
          // is the f64 division (2^-53) and the f32 store (2^-24) of q/s.
          const bound = 0.5 / s + Math.abs(deq[i]) * (2 ** -24 + 2 ** -52);
          assert.ok(
            Math.abs(data[i] - deq[i]) <= bound,
            `row ${r}: ${data[i]} → ${deq[i]}, s ${s}`,
          );
        }
        if (m >= QUANT_EPS) {
          assert.equal(maxCode, 127, "the row's absmax maps to ±127");
        }
      }
      assertSameValues(
        fakeQuantizeActivations(data, rows, cols, poisoned(data.length)),
        deq,
      );
      const again = int8PerToken(deq, rows, cols);
      assertSameValues(again.codes, q.codes, "codes");
      assertSameValues(again.scales, q.scales, "scales");
    }),
    RUNS,
  );
});

// ---------------------------------------------------------------- f16 and modes

Deno.test("fakeQuantizeWeights f16: Math.f16round and the portable rounding agree, idempotent", () => {
  assert.equal(typeof Math.f16round, "function", "this V8 has Math.f16round");
  fc.assert(
    fc.property(
      vec(fc.float({ min: -65504, max: 65504, noNaN: true })),
      (w) => {
        const out = fakeQuantizeWeights(
          "f16",
          w,
          1,
          w.length,
          {},
          poisoned(w.length),
        );
        for (let i = 0; i < w.length; i++) {
          assert.ok(Object.is(out[i], roundToF16(w[i])), `${w[i]}`);
          assert.ok(Object.is(out[i], f16Round(w[i])));
        }
        assertSameValues(
          fakeQuantizeWeights("f16", out, w.length, 1),
          out,
          "idempotent",
        );
      },
    ),
    RUNS,
  );
  // Longer than the conversion's internal chunk, so chunk boundaries are crossed.
  const long = Float32Array.from(
    { length: 20011 },
    (_, i) => Math.sin(i) * 3000 + i * 1e-3,
  );
  const longOut = fakeQuantizeWeights("f16", long, 1, long.length);
  for (let i = 0; i < long.length; i++) {
    assert.ok(Object.is(longOut[i], roundToF16(long[i])), `${i}`);
  }
  assert.equal(f16Round(1 + 2 ** -11), 1); // tie → even mantissa
  assert.equal(f16Round(1 + 3 * 2 ** -11), 1 + 2 ** -9);
  assert.throws(
    () => fakeQuantizeWeights("f16", Float32Array.of(1, 70000), 1, 2),
    (e: unknown) =>
      e instanceof RangeError &&
      /w holds 70000 .*outside the f16 range/.test(e.message),
  );
});

Deno.test("fakeQuantizeWeights: every mode writes all of out, in place too", () => {
  fc.assert(
    fc.property(
      mat(weightF32),
      fc.constantFrom(...QUANT_MODES),
      fc.boolean(),
      (m, mode, dyn) => {
        fc.pre(mode !== "f16" || m.data.every((v) => Math.abs(v) < 65520));
        const opts = { dynamicThreshold: dyn };
        const fresh = fakeQuantizeWeights(mode, m.data, m.rows, m.cols, opts);
        const out = poisoned(m.data.length);
        assert.equal(
          fakeQuantizeWeights(mode, m.data, m.rows, m.cols, opts, out),
          out,
        );
        assertSameValues(out, fresh, "out");
        const inPlace = m.data.slice();
        fakeQuantizeWeights(mode, inPlace, m.rows, m.cols, opts, inPlace);
        assertSameValues(inPlace, fresh, "in place");
      },
    ),
    RUNS,
  );
  const x = Float32Array.of(1, -2, 3, 0.5);
  const inPlace = x.slice();
  fakeQuantizeActivations(inPlace, 2, 2, inPlace);
  assertSameValues(inPlace, fakeQuantizeActivations(x, 2, 2));
});

// ---------------------------------------------------------------- edge cases and errors

Deno.test("edge cases: all-zero, single element, empty", () => {
  const zeros = new Float32Array(6);
  assert.deepEqual(absmeanTernary(zeros), {
    codes: new Int8Array(6),
    scale: 0,
  });
  assert.deepEqual(dynamicThresholdTernary(zeros), {
    codes: new Int8Array(6),
    scale: 0,
  });
  assert.deepEqual(binarize(zeros), {
    codes: new Int8Array(6).fill(1),
    scale: 0,
  });
  for (const mode of QUANT_MODES) {
    for (const v of fakeQuantizeWeights(mode, zeros, 2, 3)) {
      assert.ok(v === 0, mode);
    }
  }
  for (const v of fakeQuantizeActivations(zeros, 3, 2)) assert.ok(v === 0);

  const one = Float32Array.of(-0.3);
  assert.deepEqual([...dequantizePerTensor(absmeanTernary(one))], [fr(-0.3)]);
  assert.deepEqual([...dequantizePerTensor(dynamicThresholdTernary(one))], [
    fr(-0.3),
  ]);
  assert.deepEqual([...dequantizePerTensor(binarize(one))], [fr(-0.3)]);
  assert.deepEqual([...fakeQuantizeWeights("eightbit", one, 1, 1)], [
    fr(fr(0.3 / 127) * -127),
  ]);
  assert.deepEqual([...int8PerToken(one, 1, 1).codes], [-127]);

  const empty = new Float32Array(0);
  assert.equal(absmeanTernary(empty).scale, 0);
  assert.equal(dynamicThresholdTernary(empty).scale, 0);
  assert.equal(binarize(empty).scale, 0);
  assert.equal(int8PerChannel(empty, 0, 5).scales.length, 0);
  assert.deepEqual([...int8PerToken(empty, 2, 0).scales], [
    fr(127 / QUANT_EPS),
    fr(127 / QUANT_EPS),
  ]);
});

Deno.test("errors: non-finite input, shapes and out lengths throw RangeError naming the argument", () => {
  const rangeErr = (re: RegExp) => (e: unknown) =>
    e instanceof RangeError && re.test(e.message);
  for (const bad of [NaN, Infinity, -Infinity]) {
    const w = Float32Array.of(1, bad, 2, 3);
    assert.throws(
      () => absmeanTernary(w),
      rangeErr(/absmeanTernary: w .*non-finite/),
    );
    assert.throws(
      () => dynamicThresholdTernary(w),
      rangeErr(/dynamicThresholdTernary: w /),
    );
    assert.throws(() => binarize(w), rangeErr(/binarize: w /));
    assert.throws(
      () => int8PerChannel(w, 2, 2),
      rangeErr(/int8PerChannel: w .*non-finite/),
    );
    assert.throws(
      () => int8PerToken(w, 2, 2),
      rangeErr(/int8PerToken: x .*non-finite/),
    );
    assert.throws(
      () => fakeQuantizeActivations(w, 2, 2),
      rangeErr(/x .*non-finite/),
    );
    for (const mode of QUANT_MODES) {
      assert.throws(
        () => fakeQuantizeWeights(mode, w, 2, 2),
        rangeErr(/fakeQuantizeWeights: w /),
        mode,
      );
    }
  }
  const w = new Float32Array(6);
  assert.throws(
    () => int8PerChannel(w, 4, 2),
    rangeErr(/rows · cols = 4 · 2 .* w.length = 6/),
  );
  assert.throws(() => int8PerToken(w, 2.5, 2), rangeErr(/rows must be/));
  assert.throws(
    () => fakeQuantizeWeights("ternary", w, 2, -3),
    rangeErr(/cols must be/),
  );
  assert.throws(
    () => fakeQuantizeWeights("ternary", w, 2, 3, {}, new Float32Array(5)),
    rangeErr(/out.length must be 6/),
  );
  assert.throws(
    () => fakeQuantizeWeights("int4" as never, w, 2, 3),
    rangeErr(/unknown mode "int4"/),
  );
  assert.throws(
    () => dequantizePerTensor(absmeanTernary(w), new Float32Array(2)),
    rangeErr(/out.length/),
  );
});
