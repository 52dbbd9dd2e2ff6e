// Forward properties and hand-computed examples of the reference ops: quantizers,
// RoPE, attention, cross-entropy, AdamW, clipping, the f32 path and argument errors.
import fc from "fast-check";
import { strict as assert } from "node:assert";
import type { QuantMode } from "../../src/common/quant_mode.ts";
import {
  actFakeQuant,
  adamwStep,
  type Arr,
  attentionBackward,
  attentionForward,
  bitlinearForward,
  clipGradNorm,
  crossEntropyBackward,
  crossEntropyForward,
  embeddingForward,
  layernormForward,
  linearForward,
  matmulForward,
  rmsnormBackward,
  rmsnormForward,
  ropeBackward,
  ropeForward,
  type RopeShape,
  siluForward,
  swigluForward,
  weightFakeQuant,
  type WeightQuantMode,
} from "../../src/backend/reference/mod.ts";
import { mulberry32, randInts, randn } from "./gradcheck.ts";
import { QUANT_EPS, roundHalfEven } from "../../src/core/quantize.ts";

const seed = fc.integer({ min: 0, max: 0x7fffffff });
const dim = (max: number) => fc.integer({ min: 1, max });

function maxAbs(a: Float64Array): number {
  return a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
}

function close(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what = "value",
): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    if (!(err <= tol * Math.max(1, Math.abs(expected[i])))) {
      assert.fail(`${what}[${i}]: ${actual[i]} vs expected ${expected[i]}`);
    }
  }
}

// WeightQuantMode must stay the same union as QuantMode (both directions assignable).
const _toQuantMode = (m: WeightQuantMode): QuantMode => m;
const _fromQuantMode = (m: QuantMode): WeightQuantMode => m;

Deno.test("matmul: transposed operands equal explicit transposed copies", () => {
  const transpose = (a: Float64Array, rows: number, cols: number) =>
    Float64Array.from(
      { length: a.length },
      (_, i) => a[(i % rows) * cols + Math.floor(i / rows)],
    );
  fc.assert(
    fc.property(dim(5), dim(5), dim(5), seed, (m, n, k, s) => {
      const rand = mulberry32(s);
      const a = randn(rand, m * k);
      const b = randn(rand, k * n);
      const plain = matmulForward(a, b, { m, n, k });
      const at = transpose(a, m, k); // [k, m]
      const bt = transpose(b, k, n); // [n, k]
      assert.deepEqual(matmulForward(at, b, { m, n, k, transA: true }), plain);
      assert.deepEqual(matmulForward(a, bt, { m, n, k, transB: true }), plain);
      assert.deepEqual(
        matmulForward(at, bt, { m, n, k, transA: true, transB: true }),
        plain,
      );
    }),
    { numRuns: 30 },
  );
  // [[1, 2], [3, 4]] · [[5, 6], [7, 8]] = [[19, 22], [43, 50]]
  assert.deepEqual(
    matmulForward(
      new Float64Array([1, 2, 3, 4]),
      new Float64Array([5, 6, 7, 8]),
      {
        m: 2,
        n: 2,
        k: 2,
      },
    ),
    new Float64Array([19, 22, 43, 50]),
  );
  // linear: y = x·Wᵀ + b with W [out=2, in=2]
  assert.deepEqual(
    linearForward(
      new Float64Array([1, 2]),
      new Float64Array([1, 0, 1, 1]),
      new Float64Array([10, 20]),
      {
        rows: 1,
        inFeatures: 2,
        outFeatures: 2,
      },
    ),
    new Float64Array([11, 23]),
  );
});

Deno.test("roundHalfEven: ties to even, otherwise nearest", () => {
  const ties: [number, number][] = [
    [0.5, 0],
    [1.5, 2],
    [2.5, 2],
    [-0.5, 0],
    [-1.5, -2],
    [-2.5, -2],
    [
      127.5,
      128,
    ],
  ];
  for (const [x, r] of ties) {
    assert.equal(roundHalfEven(x) + 0, r, `round(${x})`);
  }
  fc.assert(
    fc.property(fc.double({ min: -1e6, max: 1e6, noNaN: true }), (x) => {
      const r = roundHalfEven(x);
      assert.ok(Number.isInteger(r));
      assert.ok(Math.abs(r - x) <= 0.5);
      if (Math.abs(r - x) !== 0.5) assert.equal(r, Math.round(x));
      else assert.equal(r % 2, 0);
    }),
  );
});

const ELEMENT_TYPES = [
  ["f64", (a: ArrayLike<number>): Arr => Float64Array.from(a)],
  ["f32", (a: ArrayLike<number>): Arr => Float32Array.from(a)],
] as const;

for (const [name, make] of ELEMENT_TYPES) {
  // Scales are rounded to the element type before use.
  const rnd = name === "f32" ? Math.fround : (v: number) => v;

  Deno.test(`actFakeQuant (${name}): per-token int8 grid, λ blend`, () => {
    fc.assert(
      fc.property(
        dim(4),
        dim(9),
        fc.double({ min: 0, max: 1, noNaN: true }),
        seed,
        (rows, cols, lambda, s) => {
          const rand = mulberry32(s);
          const x = make(randn(rand, rows * cols, 3));
          x.fill(0, 0, cols); // an all-zero token must stay zero
          const xq = actFakeQuant(x, rows, cols, 1);
          assert.equal(xq.constructor, x.constructor);
          const q = new Float64Array(x.length); // code / s, before storing
          for (let r = 0; r < rows; r++) {
            const row = Float64Array.from(x.subarray(r * cols, (r + 1) * cols));
            const sc = rnd(127 / Math.max(maxAbs(row), QUANT_EPS));
            for (let i = 0; i < cols; i++) {
              const code = Math.min(
                127,
                Math.max(-128, roundHalfEven(row[i] * sc)),
              );
              q[r * cols + i] = code / sc;
              assert.equal(xq[r * cols + i], rnd(code / sc), `xq[${r}, ${i}]`);
              assert.ok(Math.abs(code) <= 127);
              // Nearest grid point: off by at most half a step.
              assert.ok(
                Math.abs(xq[r * cols + i] - row[i]) <= (0.5 + 1e-4) / sc,
              );
            }
          }
          assert.ok(xq.subarray(0, cols).every((v: number) => v === 0));
          assert.deepEqual(actFakeQuant(x, rows, cols, 0), x);
          const xb = actFakeQuant(x, rows, cols, lambda);
          // λ = 1 gives Q(x) exactly, otherwise x + λ(Q(x) − x), rounded once.
          const expected = make(
            Array.from(
              x,
              (v, i) => lambda === 1 ? q[i] : v + lambda * (q[i] - v),
            ),
          );
          assert.deepEqual(xb, expected);
        },
      ),
      { numRuns: 30 },
    );
  });

  Deno.test(`weightFakeQuant (${name}): values of each mode`, () => {
    fc.assert(
      fc.property(dim(5), dim(8), seed, (outF, inF, s) => {
        const rand = mulberry32(s);
        const w = make(randn(rand, outF * inF, 0.05));
        const w64 = Float64Array.from(w);
        const g = rnd(w64.reduce((a, v) => a + Math.abs(v), 0) / w.length);
        const t = weightFakeQuant(w, outF, inF, "ternary", 1);
        const b = weightFakeQuant(w, outF, inF, "binary", 1);
        assert.equal(t.constructor, w.constructor);
        for (let i = 0; i < w.length; i++) {
          const code = Math.min(
            1,
            Math.max(-1, roundHalfEven(w64[i] / (g + QUANT_EPS))),
          );
          assert.equal(t[i], code * g, `ternary[${i}]`);
          assert.equal(b[i], w64[i] >= 0 ? g : -g, `binary[${i}]`);
        }
        const e = weightFakeQuant(w, outF, inF, "eightbit", 1);
        for (let o = 0; o < outF; o++) {
          const row = w64.subarray(o * inF, (o + 1) * inF);
          const step = rnd(Math.max(maxAbs(row), QUANT_EPS) / 127);
          for (let i = 0; i < inF; i++) {
            const code = roundHalfEven(row[i] / step);
            assert.ok(Math.abs(code) <= 127);
            assert.equal(
              e[o * inF + i],
              rnd(code * step),
              `eightbit[${o}, ${i}]`,
            );
            assert.ok(Math.abs(e[o * inF + i] - row[i]) <= step * (0.5 + 1e-4));
          }
        }
        for (const mode of ["f16", "eightbit", "ternary", "binary"] as const) {
          assert.deepEqual(weightFakeQuant(w, outF, inF, mode, 0), w);
        }
        assert.deepEqual(weightFakeQuant(w, outF, inF, "f16", 0.7), w);
      }),
      { numRuns: 30 },
    );
  });
}

Deno.test("weightFakeQuant: hand example of each mode", () => {
  // γ = mean|W| = (0.1 + 0.5 + 0 + 1.0) / 4 = 0.4; W/(γ+ε) ≈ [0.25, −1.25, 0, 2.5]
  const w = new Float64Array([0.1, -0.5, 0, 1.0]);
  const g = 0.4;
  close(
    weightFakeQuant(w, 1, 4, "ternary", 1),
    [0, -g, 0, g],
    1e-15,
    "ternary",
  );
  close(weightFakeQuant(w, 1, 4, "binary", 1), [g, -g, g, g], 1e-15, "binary");
  // The ε of γ + ε matters at tiny scales: γ = 1.25e-5, so W/(γ + ε) = W/2.25e-5 =
  // [0.89, −0.89, 0.44, 0] → codes [1, −1, 0, 0] (W/γ alone would give 0.8 → 1).
  const tiny = new Float64Array([2e-5, -2e-5, 1e-5, 0]);
  close(
    weightFakeQuant(tiny, 2, 2, "ternary", 1),
    [1.25e-5, -1.25e-5, 0, 0],
    0,
    "tiny",
  );
  // Row absmax 127 → step exactly 1: 12.5 → 12 and −63.5 → −64 (ties to even).
  close(
    weightFakeQuant(
      new Float64Array([12.5, -63.5, 0.2, 127]),
      1,
      4,
      "eightbit",
      1,
    ),
    [12, -64, 0, 127],
    0,
    "eightbit",
  );
  // Blend halfway: W + 0.5·(Q(W) − W).
  close(
    weightFakeQuant(w, 1, 4, "ternary", 0.5),
    [0.05, -0.45, 0, 0.7],
    1e-15,
    "blend",
  );
});

Deno.test("BitLinear at λ = 1 (ternary) equals the integer matmul rescaled by γ/s", () => {
  fc.assert(
    fc.property(dim(4), dim(12), dim(5), seed, (rows, inF, outF, s) => {
      const rand = mulberry32(s);
      const x = randn(rand, rows * inF);
      const w = randn(rand, outF * inF, 0.02);
      const shape = {
        rows,
        inFeatures: inF,
        outFeatures: outF,
        mode: "ternary" as const,
        lambdaA: 1,
        lambdaW: 1,
      };
      const y = bitlinearForward(x, w, shape).out;
      const gamma = w.reduce((a, v) => a + Math.abs(v), 0) / w.length;
      const wc = w.map((v) =>
        Math.min(1, Math.max(-1, roundHalfEven(v / (gamma + QUANT_EPS))))
      );
      for (let r = 0; r < rows; r++) {
        const xr = x.subarray(r * inF, (r + 1) * inF);
        const sc = 127 / Math.max(Math.max(...xr.map(Math.abs)), QUANT_EPS);
        const xc = xr.map((v) =>
          Math.min(127, Math.max(-128, roundHalfEven(v * sc)))
        );
        for (let o = 0; o < outF; o++) {
          let acc = 0; // integer accumulator, as the inference kernels use
          for (let i = 0; i < inF; i++) acc += xc[i] * wc[o * inF + i];
          close([y[r * outF + o]], [(acc * gamma) / sc], 1e-12, "y");
        }
      }
    }),
    { numRuns: 30 },
  );
});

Deno.test("embedding: gathers rows; rejects ids outside the vocab", () => {
  const table = new Float64Array([0, 1, 10, 11, 20, 21]);
  assert.deepEqual(
    embeddingForward(table, [2, 0, 2], { vocab: 3, dim: 2 }),
    new Float64Array([20, 21, 0, 1, 20, 21]),
  );
  assert.throws(
    () => embeddingForward(table, [3], { vocab: 3, dim: 2 }),
    /ids\[0\]/,
  );
  assert.throws(
    () => embeddingForward(table, [0.5], { vocab: 3, dim: 2 }),
    /ids\[0\]/,
  );
});

Deno.test("norms: RMSNorm gives unit RMS and is scale invariant; LayerNorm gives zero mean, unit variance", () => {
  fc.assert(
    fc.property(
      dim(3),
      fc.integer({ min: 2, max: 10 }),
      fc.double({ min: 0.1, max: 10, noNaN: true }),
      seed,
      (rows, d, c, s) => {
        const rand = mulberry32(s);
        const x = randn(rand, rows * d);
        const ones = new Float64Array(d).fill(1);
        const zeros = new Float64Array(d);
        const shape0 = { rows, dim: d, eps: 0 };
        const y = rmsnormForward(x, ones, shape0).out;
        const yc = rmsnormForward(x.map((v) => c * v), ones, shape0).out;
        close(yc, y, 1e-12, "scale invariance");
        const ln = layernormForward(x, ones, zeros, shape0).out;
        for (let r = 0; r < rows; r++) {
          const row = y.subarray(r * d, (r + 1) * d);
          close([row.reduce((a, v) => a + v * v, 0) / d], [1], 1e-12, "rms");
          const lrow = ln.subarray(r * d, (r + 1) * d);
          const mu = lrow.reduce((a, v) => a + v, 0) / d;
          close(
            [mu, lrow.reduce((a, v) => a + v * v, 0) / d],
            [0, 1],
            1e-12,
            "mean, var",
          );
        }
        // Weight and bias apply per channel after normalizing.
        const w = randn(rand, d);
        const b = randn(rand, d);
        close(
          layernormForward(x, w, b, shape0).out,
          ln.map((v, i) => v * w[i % d] + b[i % d]),
          1e-12,
          "affine",
        );
      },
    ),
    { numRuns: 30 },
  );
});

Deno.test("RoPE: hand example of both pairings", () => {
  // headDim 4, base 100: θ = [1, 100^(−1/2)] = [1, 0.1]; position 2 → angles [2, 0.2].
  const x = new Float64Array([1, 2, 3, 4]);
  const shape = {
    batch: 1,
    seqLen: 1,
    heads: 1,
    headDim: 4,
    base: 100,
    posOffset: 2,
  };
  const rot = (
    a: number,
    b: number,
    t: number,
  ) => [a * Math.cos(t) - b * Math.sin(t), a * Math.sin(t) + b * Math.cos(t)];
  const [n0, n2] = rot(1, 3, 2); // NEOX pairs (0, 2) and (1, 3)
  const [n1, n3] = rot(2, 4, 0.2);
  close(
    ropeForward(x, { ...shape, style: "neox" }),
    [n0, n1, n2, n3],
    1e-15,
    "neox",
  );
  const [i0, i1] = rot(1, 2, 2); // interleaved pairs (0, 1) and (2, 3)
  const [i2, i3] = rot(3, 4, 0.2);
  close(
    ropeForward(x, { ...shape, style: "interleaved" }),
    [i0, i1, i2, i3],
    1e-15,
    "interleaved",
  );
});

Deno.test("RoPE: norm-preserving, offset = later position, backward inverts, relative positions", () => {
  fc.assert(
    fc.property(
      dim(4),
      dim(3),
      fc.integer({ min: 1, max: 4 }).map((h) => 2 * h),
      fc.constantFrom("neox" as const, "interleaved" as const),
      fc.integer({ min: 0, max: 30 }),
      seed,
      (seqLen, heads, headDim, style, off, s) => {
        const rand = mulberry32(s);
        const base = 10000;
        const shape: RopeShape = {
          batch: 1,
          seqLen,
          heads,
          headDim,
          base,
          style,
          posOffset: off,
        };
        const width = heads * headDim;
        const x = randn(rand, seqLen * width);
        const y = ropeForward(x, shape);
        const norm = (a: ArrayLike<number>, lo: number, hi: number) => {
          let ss = 0;
          for (let i = lo; i < hi; i++) ss += a[i] * a[i];
          return ss;
        };
        for (let h = 0; h < seqLen * heads; h++) {
          close(
            [norm(y, h * headDim, (h + 1) * headDim)],
            [norm(x, h * headDim, (h + 1) * headDim)],
            1e-12,
            "norm",
          );
        }
        // Token t of a sequence at offset `off` sits at position off + t.
        const last = x.subarray((seqLen - 1) * width);
        close(
          ropeForward(last, {
            ...shape,
            seqLen: 1,
            posOffset: off + seqLen - 1,
          }),
          y.subarray((seqLen - 1) * width),
          1e-15,
          "offset",
        );
        // Backward is the inverse rotation: it maps y back to x.
        const back = new Float64Array(x.length);
        ropeBackward(y, { dx: back }, shape);
        close(back, x, 1e-12, "inverse");
        // q_m·k_n depends only on m − n: shifting both positions keeps the dot product.
        const one = { ...shape, seqLen: 1, heads: 1 };
        const q = randn(rand, headDim);
        const k = randn(rand, headDim);
        const score = (m: number, n: number) => {
          const qr = ropeForward(q, { ...one, posOffset: m });
          const kr = ropeForward(k, { ...one, posOffset: n });
          return qr.reduce((a, v, i) => a + v * kr[i], 0);
        };
        close([score(off + 5, off)], [score(5, 0)], 1e-9, "relative");
      },
    ),
    { numRuns: 30 },
  );
});

Deno.test("attention: hand example", () => {
  // One head, headDim 1 (scale 1): q = [1, 1], k = [0, ln 2], v = [3, 6].
  // Token 0 sees only itself → 3; token 1: softmax([0, ln 2]) = [1/3, 2/3] → 1 + 4 = 5.
  const shape = { batch: 1, seqLen: 2, numHeads: 1, numKvHeads: 1, headDim: 1 };
  const { out, probs } = attentionForward(
    new Float64Array([1, 1]),
    new Float64Array([0, Math.LN2]),
    new Float64Array([3, 6]),
    shape,
  );
  close(out, [3, 5], 1e-15, "out");
  close(probs, [1, 0, 1 / 3, 2 / 3], 1e-15, "probs");
});

Deno.test("attention: causal, rows of P sum to 1, GQA equals MHA with repeated KV heads", () => {
  fc.assert(
    fc.property(
      dim(2),
      fc.integer({ min: 2, max: 5 }),
      dim(2),
      dim(3),
      dim(4),
      seed,
      (batch, T, Hkv, group, D, s) => {
        const rand = mulberry32(s);
        const H = Hkv * group;
        const shape = {
          batch,
          seqLen: T,
          numHeads: H,
          numKvHeads: Hkv,
          headDim: D,
        };
        const q = randn(rand, batch * T * H * D);
        const k = randn(rand, batch * T * Hkv * D);
        const v = randn(rand, k.length);
        const { out, probs } = attentionForward(q, k, v, shape);
        for (let row = 0; row < batch * H * T; row++) {
          const t = row % T;
          const p = probs.subarray(row * T, (row + 1) * T);
          close([p.reduce((a, x) => a + x, 0)], [1], 1e-12, "row sum");
          for (let u = t + 1; u < T; u++) assert.equal(p[u], 0);
        }
        // Changing the last token's q, k, v leaves earlier outputs unchanged.
        const last = (a: Float64Array, width: number) => {
          const c = a.slice();
          for (let b = 0; b < batch; b++) {
            for (let i = 0; i < width; i++) c[(b * T + T - 1) * width + i] += 1;
          }
          return c;
        };
        const out2 = attentionForward(
          last(q, H * D),
          last(k, Hkv * D),
          last(v, Hkv * D),
          shape,
        ).out;
        for (let b = 0; b < batch; b++) {
          for (let i = 0; i < (T - 1) * H * D; i++) {
            assert.equal(out2[b * T * H * D + i], out[b * T * H * D + i]);
          }
        }
        // Repeat each KV head `group` times → plain multi-head attention.
        const repeat = (a: Float64Array) => {
          const r = new Float64Array(batch * T * H * D);
          for (let bt = 0; bt < batch * T; bt++) {
            for (let h = 0; h < H; h++) {
              const g = Math.floor(h / group);
              r.set(
                a.subarray((bt * Hkv + g) * D, (bt * Hkv + g + 1) * D),
                (bt * H + h) * D,
              );
            }
          }
          return r;
        };
        const mha = { ...shape, numKvHeads: H };
        const kr = repeat(k);
        const vr = repeat(v);
        close(attentionForward(q, kr, vr, mha).out, out, 1e-15, "gqa vs mha");
        // dK of GQA = dK of MHA summed over the heads of each group.
        const dout = randn(rand, q.length);
        const dk = new Float64Array(k.length);
        attentionBackward(dout, { q, k, v, probs }, { dk }, shape);
        const dkr = new Float64Array(kr.length);
        attentionBackward(dout, { q, k: kr, v: vr, probs }, { dk: dkr }, mha);
        const summed = new Float64Array(k.length);
        for (let bt = 0; bt < batch * T; bt++) {
          for (let h = 0; h < H; h++) {
            const g = Math.floor(h / group);
            for (let i = 0; i < D; i++) {
              summed[(bt * Hkv + g) * D + i] += dkr[(bt * H + h) * D + i];
            }
          }
        }
        close(dk, summed, 1e-12, "dk");
      },
    ),
    { numRuns: 30 },
  );
});

Deno.test("cross-entropy: hand example with smoothing", () => {
  // logits [0, ln 3] → p = [1/4, 3/4]; target 1; ε = 0.2.
  const logits = new Float64Array([0, Math.log(3), 5, 5]);
  const targets = [1, -1];
  const shape = { rows: 2, vocab: 2, labelSmoothing: 0.2 };
  const fwd = crossEntropyForward(logits, targets, shape);
  const nll = Math.log(4 / 3);
  assert.equal(fwd.count, 1);
  close([fwd.nll], [nll], 1e-15, "nll");
  close([fwd.loss], [0.8 * nll + 0.2 * (Math.log(4) + nll) / 2], 1e-15, "loss");
  const dlogits = new Float64Array(4);
  crossEntropyBackward(1, { ...fwd, targets }, { dlogits }, shape);
  // p − (1 − ε)·onehot − ε/V = [1/4 − 0.1, 3/4 − 0.8 − 0.1]; ignored row 0.
  close(dlogits, [0.15, -0.15, 0, 0], 1e-15, "dlogits");
});

Deno.test("cross-entropy: formula, ε = 0 gives the NLL, gradient rows sum to 0, all ignored gives 0", () => {
  fc.assert(
    fc.property(
      dim(5),
      fc.integer({ min: 2, max: 9 }),
      fc.double({ min: 0, max: 1, noNaN: true }),
      seed,
      (rows, V, eps, s) => {
        const rand = mulberry32(s);
        const logits = randn(rand, rows * V, 3);
        const targets = randInts(rand, rows, 0, V);
        const fwd = crossEntropyForward(logits, targets, {
          rows,
          vocab: V,
          labelSmoothing: eps,
        });
        let loss = 0;
        let nll = 0;
        for (let r = 0; r < rows; r++) {
          const row = logits.subarray(r * V, (r + 1) * V);
          const lse = Math.log(row.reduce((a, v) => a + Math.exp(v), 0));
          const logp = row.map((v) => v - lse);
          nll += -logp[targets[r]];
          loss += (1 - eps) * -logp[targets[r]] +
            eps * -logp.reduce((a, v) => a + v, 0) / V;
        }
        close(
          [fwd.loss, fwd.nll],
          [loss / rows, nll / rows],
          1e-12,
          "loss, nll",
        );
        close(
          [crossEntropyForward(logits, targets, { rows, vocab: V }).loss],
          [nll / rows],
          1e-12,
          "ε = 0",
        );
        const dl = new Float64Array(logits.length);
        crossEntropyBackward(1, { ...fwd, targets }, { dlogits: dl }, {
          rows,
          vocab: V,
          labelSmoothing: eps,
        });
        for (let r = 0; r < rows; r++) {
          close(
            [dl.subarray(r * V, (r + 1) * V).reduce((a, v) => a + v, 0)],
            [0],
            1e-12,
            "row sum",
          );
        }
        const none = new Int32Array(rows).fill(-1);
        const empty = crossEntropyForward(logits, none, { rows, vocab: V });
        assert.deepEqual([empty.loss, empty.nll, empty.count], [0, 0, 0]);
        const d0 = new Float64Array(logits.length).fill(7);
        crossEntropyBackward(1, { ...empty, targets: none }, { dlogits: d0 }, {
          rows,
          vocab: V,
        });
        assert.ok(d0.every((v) => v === 7));
      },
    ),
    { numRuns: 30 },
  );
});

Deno.test("AdamW: hand-computed two steps (PyTorch order and ε placement)", () => {
  // lr 0.1, β = (0.5, 0.75), ε = 0.5, wd 0.5 → decay factor 1 − lr·wd = 0.95.
  // p = [2, −3]; g₁ = [1, 0], g₂ = [−1, 0].
  // Step 1: p ← 0.95p = [1.9, −2.85]; m = [0.5, 0]; v = [0.25, 0];
  //   m̂ = m/0.5 = [1, 0], sqrt(v̂) = sqrt(v/0.25) = [1, 0];
  //   p ← p − 0.1·m̂/(sqrt(v̂) + 0.5) = [1.9 − 0.1/1.5, −2.85] = [11/6, −2.85].
  // Step 2: p ← 0.95p = [209/120, −2.7075]; m = 0.5·0.5 + 0.5·(−1) = −0.25;
  //   v = 0.75·0.25 + 0.25·1 = 0.4375; m̂ = −0.25/0.75 = −1/3, v̂ = 0.4375/0.4375 = 1;
  //   p ← 209/120 + 0.1·(1/3)/1.5 = 209/120 + 1/45 = 127/72.
  const cfg = { lr: 0.1, beta1: 0.5, beta2: 0.75, eps: 0.5, weightDecay: 0.5 };
  const p = new Float64Array([2, -3]);
  const m = new Float64Array(2);
  const v = new Float64Array(2);
  adamwStep(p, new Float64Array([1, 0]), m, v, 1, cfg);
  close(p, [11 / 6, -2.85], 1e-15, "p after step 1");
  adamwStep(p, new Float64Array([-1, 0]), m, v, 2, cfg);
  close(p, [127 / 72, -2.7075], 1e-15, "p after step 2");
  close(m, [-0.25, 0], 1e-15, "m");
  close(v, [0.4375, 0], 1e-15, "v");
});

Deno.test("AdamW: decay multiplies p before the update and leaves m, v alone; differs from L2 Adam", () => {
  fc.assert(
    fc.property(
      dim(8),
      fc.integer({ min: 1, max: 1000 }),
      fc.double({ min: 1e-4, max: 0.1, noNaN: true }),
      fc.double({ min: 0.01, max: 0.5, noNaN: true }),
      seed,
      (n, step, lr, weightDecay, s) => {
        const rand = mulberry32(s);
        const cfg = { lr, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay };
        const p0 = randn(rand, n);
        const g = randn(rand, n);
        const m0 = randn(rand, n, 0.1);
        const v0 = randn(rand, n, 0.1).map(Math.abs);
        const run = (p: Float64Array, c: typeof cfg, grad = g) => {
          const [pp, mm, vv] = [p.slice(), m0.slice(), v0.slice()];
          adamwStep(pp, grad, mm, vv, step, c);
          return { p: pp, m: mm, v: vv };
        };
        const decayed = run(p0, cfg);
        // Same as plain Adam (wd = 0) started from p·(1 − lr·wd).
        const plain = run(p0.map((x) => x * (1 - lr * weightDecay)), {
          ...cfg,
          weightDecay: 0,
        });
        assert.deepEqual(decayed, plain);
        // With zero gradient and fresh moments the step is the decay alone.
        const zero = new Float64Array(n);
        const pz = p0.slice();
        adamwStep(pz, zero, new Float64Array(n), new Float64Array(n), 1, cfg);
        assert.deepEqual(pz, p0.map((x) => x * (1 - lr * weightDecay)));
        // Coupled L2 (g + wd·p into the moments) is a different optimizer.
        const l2 = run(
          p0,
          { ...cfg, weightDecay: 0 },
          g.map((x, i) => x + weightDecay * p0[i]),
        );
        assert.notDeepEqual(l2.p, decayed.p);
      },
    ),
    { numRuns: 30 },
  );
});

Deno.test("clipGradNorm: global norm over buffers, PyTorch coefficient", () => {
  // ‖[3, 4] ∪ [12]‖ = 13; maxNorm 6.5 → coefficient 6.5/(13 + 1e-6).
  const a = new Float64Array([3, 4]);
  const b = new Float32Array([12]);
  assert.equal(clipGradNorm([a, b], 6.5), 13);
  const c = 6.5 / (13 + 1e-6);
  close(a, [3 * c, 4 * c], 1e-15, "a");
  close(b, [Math.fround(12 * c)], 0, "b");
  // Below the threshold nothing changes (coefficient clamped to 1).
  const d = new Float64Array([0.3, 0.4]);
  assert.equal(clipGradNorm([d], 1), 0.5);
  assert.deepEqual(d, new Float64Array([0.3, 0.4]));
});

Deno.test("f32 path: outputs keep the element type; forwards round the f64 result once", () => {
  fc.assert(
    fc.property(dim(3), dim(4), seed, (T, D2, s) => {
      const rand = mulberry32(s);
      const D = 2 * D2;
      const x64 = Float64Array.from(Float32Array.from(randn(rand, T * D)));
      const x32 = Float32Array.from(x64);
      const g64 = Float64Array.from(Float32Array.from(randn(rand, D)));
      const same = (f32: Float32Array, f64: Float64Array, what: string) => {
        assert.ok(f32 instanceof Float32Array, what);
        assert.deepEqual(f32, Float32Array.from(f64), what);
      };
      const rope = {
        batch: 1,
        seqLen: T,
        heads: 1,
        headDim: D,
        base: 10000,
        style: "neox" as const,
      };
      const att = {
        batch: 1,
        seqLen: T,
        numHeads: 1,
        numKvHeads: 1,
        headDim: D,
      };
      same(
        matmulForward(x32, g64, { m: T, n: 1, k: D }),
        matmulForward(x64, g64, { m: T, n: 1, k: D }),
        "matmul",
      );
      same(ropeForward(x32, rope), ropeForward(x64, rope), "rope");
      same(siluForward(x32), siluForward(x64), "silu");
      same(swigluForward(x32, x64), swigluForward(x64, x64), "swiglu");
      same(
        attentionForward(x32, x64, x64, att).out,
        attentionForward(x64, x64, x64, att).out,
        "attention",
      );
      const n32 = rmsnormForward(x32, g64, { rows: T, dim: D, eps: 1e-5 });
      const n64 = rmsnormForward(x64, g64, { rows: T, dim: D, eps: 1e-5 });
      same(n32.out, n64.out, "rmsnorm");
      // Backward in f32 reads the f32 cache: close to f64, not bit-equal.
      const dx32 = new Float32Array(T * D);
      const dx64 = new Float64Array(T * D);
      rmsnormBackward(x64, { x: x32, g: g64, rstd: n32.rstd }, { dx: dx32 }, {
        rows: T,
        dim: D,
        eps: 1e-5,
      });
      rmsnormBackward(x64, { x: x64, g: g64, rstd: n64.rstd }, { dx: dx64 }, {
        rows: T,
        dim: D,
        eps: 1e-5,
      });
      close(dx32, dx64, 1e-5, "rmsnorm backward");
      const ce = crossEntropyForward(x32, new Int32Array(T), {
        rows: T,
        vocab: D,
      });
      assert.ok(ce.probs instanceof Float32Array);
    }),
    { numRuns: 20 },
  );
});

Deno.test("arguments: wrong sizes and settings throw errors naming the argument", () => {
  const a = new Float64Array(6);
  assert.throws(
    () => matmulForward(a, a, { m: 2, n: 2, k: 2 }),
    /a must have 4/,
  );
  assert.throws(() => matmulForward(a, a, { m: 0, n: 2, k: 3 }), /shape\.m/);
  assert.throws(
    () =>
      attentionForward(a, a, a, {
        batch: 1,
        seqLen: 1,
        numHeads: 3,
        numKvHeads: 2,
        headDim: 2,
      }),
    /numKvHeads/,
  );
  assert.throws(
    () =>
      ropeForward(a, {
        batch: 1,
        seqLen: 2,
        heads: 1,
        headDim: 3,
        base: 10000,
        style: "neox",
      }),
    /headDim must be even/,
  );
  assert.throws(
    () =>
      ropeForward(a, {
        batch: 1,
        seqLen: 3,
        heads: 1,
        headDim: 2,
        base: 10000,
        style: "neox",
        posOffset: -1,
      }),
    /posOffset/,
  );
  assert.throws(
    () => crossEntropyForward(a, [0, 3], { rows: 2, vocab: 3 }),
    /targets\[1\]/,
  );
  assert.throws(
    () =>
      crossEntropyForward(a, [0, 1], { rows: 2, vocab: 3, labelSmoothing: 2 }),
    /labelSmoothing/,
  );
  assert.throws(() => actFakeQuant(a, 2, 3, 1.5), /lambda/);
  assert.throws(
    () => weightFakeQuant(a, 2, 3, "int4" as WeightQuantMode, 1),
    /mode must be/,
  );
  const cfg = { lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0 };
  assert.throws(() => adamwStep(a, a, a, a, 0, cfg), /step must be/);
  assert.throws(
    () => adamwStep(a, a, a, a, 1, { ...cfg, beta2: 1 }),
    /hyper\.beta2/,
  );
  assert.throws(() => clipGradNorm([a], 0), /maxNorm/);
});
