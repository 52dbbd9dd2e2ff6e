// Finite-difference gradient checks (f64, central differences, h = 1e-6) of every
// backward in src/backend/reference, on random small shapes. Gradient buffers start
// with random values, so every check also checks that backward accumulates.
import fc from "fast-check";
import { strict as assert } from "node:assert";
import {
  addBackward,
  addForward,
  attentionBackward,
  attentionForward,
  bitlinearBackward,
  bitlinearForward,
  crossEntropyBackward,
  crossEntropyForward,
  embeddingBackward,
  embeddingForward,
  layernormBackward,
  layernormForward,
  linearBackward,
  linearForward,
  matmulBackward,
  matmulForward,
  mulBackward,
  mulForward,
  relu2Backward,
  relu2Forward,
  rmsnormBackward,
  rmsnormForward,
  ropeBackward,
  ropeForward,
  scaleBackward,
  scaleForward,
  siluBackward,
  siluForward,
  swigluBackward,
  swigluForward,
  type WeightQuantMode,
} from "../../src/backend/reference/mod.ts";
import {
  dot,
  expectGrads,
  GradBuf,
  mulberry32,
  randInts,
  randn,
} from "./gradcheck.ts";

const RUNS = { numRuns: 20 };
const seed = fc.integer({ min: 0, max: 0x7fffffff });
const dim = (max: number) => fc.integer({ min: 1, max });
const MODES: readonly WeightQuantMode[] = [
  "f16",
  "eightbit",
  "ternary",
  "binary",
];

Deno.test("gradcheck: the checker rejects a wrong gradient", () => {
  const x = randn(mulberry32(1), 4);
  const wrong = x.map((v, i) => (i === 2 ? 2.01 * v : 2 * v));
  assert.throws(
    () => expectGrads(() => dot(x, x), [["x", x, wrong]]),
    /x\[2\]/,
  );
  expectGrads(() => dot(x, x), [["x", x, x.map((v) => 2 * v)]]);
});

Deno.test("gradcheck: matmul with every transpose combination", () => {
  fc.assert(
    fc.property(
      dim(5),
      dim(5),
      dim(5),
      fc.boolean(),
      fc.boolean(),
      seed,
      (m, n, k, transA, transB, s) => {
        const rand = mulberry32(s);
        const shape = { m, n, k, transA, transB };
        const a = randn(rand, m * k);
        const b = randn(rand, k * n);
        const wc = randn(rand, m * n);
        const da = new GradBuf(rand, a.length);
        const db = new GradBuf(rand, b.length);
        matmulBackward(wc, { a, b }, { da: da.buf, db: db.buf }, shape);
        expectGrads(() => dot(matmulForward(a, b, shape), wc), [
          ["a", a, da.delta],
          ["b", b, db.delta],
        ]);
      },
    ),
    RUNS,
  );
});

Deno.test("gradcheck: linear with and without bias", () => {
  fc.assert(
    fc.property(
      dim(4),
      dim(5),
      dim(5),
      fc.boolean(),
      seed,
      (rows, inF, outF, withBias, s) => {
        const rand = mulberry32(s);
        const shape = { rows, inFeatures: inF, outFeatures: outF };
        const x = randn(rand, rows * inF);
        const w = randn(rand, outF * inF);
        const bias = randn(rand, outF);
        const wy = randn(rand, rows * outF);
        const dx = new GradBuf(rand, x.length);
        const dw = new GradBuf(rand, w.length);
        const db = new GradBuf(rand, bias.length);
        const b = withBias ? bias : undefined;
        linearBackward(wy, { x, w }, {
          dx: dx.buf,
          dw: dw.buf,
          db: withBias ? db.buf : undefined,
        }, shape);
        const params: [string, Float64Array, Float64Array][] = [
          ["x", x, dx.delta],
          ["w", w, dw.delta],
        ];
        if (withBias) params.push(["bias", bias, db.delta]);
        expectGrads(() => dot(linearForward(x, w, b, shape), wy), params);
      },
    ),
    RUNS,
  );
});

Deno.test("gradcheck: BitLinear at λ = 0 (exact) in every mode", () => {
  fc.assert(
    fc.property(
      dim(4),
      dim(6),
      dim(5),
      fc.constantFrom(...MODES),
      seed,
      (rows, inF, outF, mode, s) => {
        const rand = mulberry32(s);
        const shape = {
          rows,
          inFeatures: inF,
          outFeatures: outF,
          mode,
          lambdaA: 0,
          lambdaW: 0,
        };
        const x = randn(rand, rows * inF);
        const w = randn(rand, outF * inF, 0.1);
        const wy = randn(rand, rows * outF);
        const dx = new GradBuf(rand, x.length);
        const dw = new GradBuf(rand, w.length);
        bitlinearBackward(wy, bitlinearForward(x, w, shape), {
          dx: dx.buf,
          dw: dw.buf,
        }, shape);
        expectGrads(() => dot(bitlinearForward(x, w, shape).out, wy), [
          ["x", x, dx.delta],
          ["w", w, dw.delta],
        ]);
      },
    ),
    RUNS,
  );
});

// For λ > 0 the forward is piecewise constant in the quantized part, so its true
// derivative is not what training wants; the STE gradient is defined as the linear
// backward evaluated at the fake-quantized operands x̃, W̃.
Deno.test("BitLinear at λ > 0: STE backward is the linear backward at x̃, W̃", () => {
  fc.assert(
    fc.property(
      dim(4),
      dim(6),
      dim(5),
      fc.constantFrom(...MODES),
      fc.double({ min: 0.05, max: 1, noNaN: true }),
      fc.double({ min: 0.05, max: 1, noNaN: true }),
      seed,
      (rows, inF, outF, mode, lambdaA, lambdaW, s) => {
        const rand = mulberry32(s);
        const shape = {
          rows,
          inFeatures: inF,
          outFeatures: outF,
          mode,
          lambdaA,
          lambdaW,
        };
        const x = randn(rand, rows * inF);
        const w = randn(rand, outF * inF, 0.1);
        const wy = randn(rand, rows * outF);
        const fwd = bitlinearForward(x, w, shape);
        assert.deepEqual(
          fwd.out,
          linearForward(fwd.xTilde, fwd.wTilde, undefined, shape),
        );
        const dx = new Float64Array(x.length);
        const dw = new Float64Array(w.length);
        bitlinearBackward(wy, fwd, { dx, dw }, shape);
        const ex = new Float64Array(x.length);
        const ew = new Float64Array(w.length);
        linearBackward(
          wy,
          { x: fwd.xTilde, w: fwd.wTilde },
          { dx: ex, dw: ew },
          shape,
        );
        assert.deepEqual(dx, ex);
        assert.deepEqual(dw, ew);
      },
    ),
    RUNS,
  );
});

Deno.test("gradcheck: embedding scatter-add, with repeated ids", () => {
  fc.assert(
    fc.property(dim(6), dim(5), dim(8), seed, (vocab, d, n, s) => {
      const rand = mulberry32(s);
      const shape = { vocab, dim: d };
      const table = randn(rand, vocab * d);
      const ids = randInts(rand, n, 0, vocab);
      const wy = randn(rand, n * d);
      const dt = new GradBuf(rand, table.length);
      embeddingBackward(wy, { ids }, { dtable: dt.buf }, shape);
      expectGrads(() => dot(embeddingForward(table, ids, shape), wy), [
        ["table", table, dt.delta],
      ]);
    }),
    RUNS,
  );
});

Deno.test("gradcheck: RMSNorm", () => {
  fc.assert(
    fc.property(
      dim(4),
      dim(8),
      fc.constantFrom(1e-5, 1e-6, 0.1),
      seed,
      (rows, d, eps, s) => {
        const rand = mulberry32(s);
        const shape = { rows, dim: d, eps };
        const x = randn(rand, rows * d);
        const g = randn(rand, d);
        const wy = randn(rand, rows * d);
        const dx = new GradBuf(rand, x.length);
        const dg = new GradBuf(rand, g.length);
        const { rstd } = rmsnormForward(x, g, shape);
        rmsnormBackward(wy, { x, g, rstd }, { dx: dx.buf, dg: dg.buf }, shape);
        expectGrads(() => dot(rmsnormForward(x, g, shape).out, wy), [
          ["x", x, dx.delta],
          ["g", g, dg.delta],
        ]);
      },
    ),
    RUNS,
  );
});

Deno.test("gradcheck: LayerNorm with weight and bias", () => {
  fc.assert(
    fc.property(dim(4), fc.integer({ min: 2, max: 8 }), seed, (rows, d, s) => {
      const rand = mulberry32(s);
      const shape = { rows, dim: d, eps: 1e-5 };
      const x = randn(rand, rows * d);
      const weight = randn(rand, d);
      const bias = randn(rand, d);
      const wy = randn(rand, rows * d);
      const dx = new GradBuf(rand, x.length);
      const dw = new GradBuf(rand, d);
      const db = new GradBuf(rand, d);
      const { mean, rstd } = layernormForward(x, weight, bias, shape);
      layernormBackward(wy, { x, weight, mean, rstd }, {
        dx: dx.buf,
        dweight: dw.buf,
        dbias: db.buf,
      }, shape);
      expectGrads(() => dot(layernormForward(x, weight, bias, shape).out, wy), [
        ["x", x, dx.delta],
        ["weight", weight, dw.delta],
        ["bias", bias, db.delta],
      ]);
    }),
    RUNS,
  );
});

Deno.test("gradcheck: RoPE, NEOX and interleaved, with a position offset", () => {
  fc.assert(
    fc.property(
      dim(2),
      dim(4),
      dim(3),
      fc.integer({ min: 1, max: 4 }).map((h) => 2 * h),
      fc.constantFrom("neox" as const, "interleaved" as const),
      fc.integer({ min: 0, max: 50 }),
      fc.constantFrom(10000, 500000, 10),
      seed,
      (batch, seqLen, heads, headDim, style, posOffset, base, s) => {
        const rand = mulberry32(s);
        const shape = { batch, seqLen, heads, headDim, base, style, posOffset };
        const x = randn(rand, batch * seqLen * heads * headDim);
        const wy = randn(rand, x.length);
        const dx = new GradBuf(rand, x.length);
        ropeBackward(wy, { dx: dx.buf }, shape);
        expectGrads(() => dot(ropeForward(x, shape), wy), [["x", x, dx.delta]]);
      },
    ),
    RUNS,
  );
});

Deno.test("gradcheck: causal attention with grouped KV heads", () => {
  fc.assert(
    fc.property(
      dim(2),
      dim(5),
      dim(2),
      dim(3),
      dim(4),
      seed,
      (batch, seqLen, numKvHeads, group, headDim, s) => {
        const rand = mulberry32(s);
        const numHeads = numKvHeads * group;
        const shape = { batch, seqLen, numHeads, numKvHeads, headDim };
        const q = randn(rand, batch * seqLen * numHeads * headDim);
        const k = randn(rand, batch * seqLen * numKvHeads * headDim);
        const v = randn(rand, k.length);
        const wy = randn(rand, q.length);
        const dq = new GradBuf(rand, q.length);
        const dk = new GradBuf(rand, k.length);
        const dv = new GradBuf(rand, v.length);
        const { probs } = attentionForward(q, k, v, shape);
        attentionBackward(wy, { q, k, v, probs }, {
          dq: dq.buf,
          dk: dk.buf,
          dv: dv.buf,
        }, shape);
        expectGrads(() => dot(attentionForward(q, k, v, shape).out, wy), [
          ["q", q, dq.delta],
          ["k", k, dk.delta],
          ["v", v, dv.delta],
        ]);
      },
    ),
    RUNS,
  );
});

Deno.test("gradcheck: SiLU, ReLU², scale (unary element-wise)", () => {
  fc.assert(
    fc.property(
      dim(12),
      fc.double({ min: -3, max: 3, noNaN: true }),
      seed,
      (n, c, s) => {
        const rand = mulberry32(s);
        const x = randn(rand, n, 2);
        const wy = randn(rand, n);
        const d1 = new GradBuf(rand, n);
        siluBackward(wy, { x }, { dx: d1.buf });
        expectGrads(() => dot(siluForward(x), wy), [["x", x, d1.delta]]);
        const d2 = new GradBuf(rand, n);
        relu2Backward(wy, { x }, { dx: d2.buf });
        expectGrads(() => dot(relu2Forward(x), wy), [["x", x, d2.delta]]);
        const d3 = new GradBuf(rand, n);
        scaleBackward(wy, { dx: d3.buf }, c);
        expectGrads(() => dot(scaleForward(x, c), wy), [["x", x, d3.delta]]);
      },
    ),
    RUNS,
  );
});

Deno.test("gradcheck: SwiGLU, product, residual add (binary element-wise)", () => {
  fc.assert(
    fc.property(dim(12), seed, (n, s) => {
      const rand = mulberry32(s);
      const a = randn(rand, n, 2);
      const b = randn(rand, n, 2);
      const wy = randn(rand, n);
      const cases = [
        [
          swigluForward,
          (da: Float64Array, db: Float64Array) =>
            swigluBackward(wy, { gate: a, up: b }, { dgate: da, dup: db }),
        ],
        [
          mulForward,
          (da: Float64Array, db: Float64Array) =>
            mulBackward(wy, { a, b }, { da, db }),
        ],
        [
          addForward,
          (da: Float64Array, db: Float64Array) => addBackward(wy, { da, db }),
        ],
      ] as const;
      for (const [forward, backward] of cases) {
        const da = new GradBuf(rand, n);
        const db = new GradBuf(rand, n);
        backward(da.buf, db.buf);
        expectGrads(() => dot(forward(a, b), wy), [
          ["a", a, da.delta],
          ["b", b, db.delta],
        ]);
      }
    }),
    RUNS,
  );
});

Deno.test("gradcheck: cross-entropy with label smoothing and ignored tokens", () => {
  fc.assert(
    fc.property(
      dim(6),
      fc.integer({ min: 2, max: 7 }),
      fc.constantFrom(0, 0.1, 0.5, 1),
      fc.constantFrom(-1, -100),
      fc.double({ min: 0.1, max: 3, noNaN: true }),
      seed,
      (rows, vocab, labelSmoothing, ignoreIndex, dloss, s) => {
        const rand = mulberry32(s);
        const shape = { rows, vocab, labelSmoothing, ignoreIndex };
        const logits = randn(rand, rows * vocab, 2);
        // About a quarter of the tokens ignored; at least one counted.
        const targets = randInts(rand, rows, 0, vocab).map((y, r) =>
          r > 0 && rand() < 0.25 ? ignoreIndex : y
        );
        const fwd = crossEntropyForward(logits, targets, shape);
        const dl = new GradBuf(rand, logits.length);
        crossEntropyBackward(
          dloss,
          { ...fwd, targets },
          { dlogits: dl.buf },
          shape,
        );
        const delta = dl.delta;
        for (let r = 0; r < rows; r++) {
          if (targets[r] !== ignoreIndex) continue;
          for (let c = 0; c < vocab; c++) assert.equal(delta[r * vocab + c], 0);
        }
        expectGrads(
          () => dloss * crossEntropyForward(logits, targets, shape).loss,
          [["logits", logits, delta]],
        );
      },
    ),
    RUNS,
  );
});

// A small pre-norm block built only from the reference ops: checks that the
// accumulate convention composes (x feeds both the residual and the norm).
Deno.test("gradcheck: composed block rmsnorm → BitLinear → RoPE → attention → residual", () => {
  fc.assert(
    fc.property(dim(4), seed, (seqLen, s) => {
      const rand = mulberry32(s);
      const H = 2, Hkv = 1, D = 4, C = H * D, Ckv = Hkv * D;
      const x = randn(rand, seqLen * C);
      const g = randn(rand, C);
      const wq = randn(rand, C * C, 0.3);
      const wk = randn(rand, Ckv * C, 0.3);
      const wv = randn(rand, Ckv * C, 0.3);
      const wy = randn(rand, seqLen * C);
      const norm = { rows: seqLen, dim: C, eps: 1e-5 };
      const lin = (o: number) => ({
        rows: seqLen,
        inFeatures: C,
        outFeatures: o,
        mode: "ternary" as const,
        lambdaA: 0,
        lambdaW: 0,
      });
      const rope = (heads: number) => ({
        batch: 1,
        seqLen,
        heads,
        headDim: D,
        base: 10000,
        style: "neox" as const,
        posOffset: 3,
      });
      const att = {
        batch: 1,
        seqLen,
        numHeads: H,
        numKvHeads: Hkv,
        headDim: D,
      };
      const forward = () => {
        const n = rmsnormForward(x, g, norm);
        const q = bitlinearForward(n.out, wq, lin(C));
        const k = bitlinearForward(n.out, wk, lin(Ckv));
        const v = bitlinearForward(n.out, wv, lin(Ckv));
        const qr = ropeForward(q.out, rope(H));
        const kr = ropeForward(k.out, rope(Hkv));
        const a = attentionForward(qr, kr, v.out, att);
        return { n, q, k, v, qr, kr, a, y: addForward(x, a.out) };
      };
      const f = forward();
      const dx = new Float64Array(x.length);
      const dg = new Float64Array(g.length);
      const dwq = new Float64Array(wq.length);
      const dwk = new Float64Array(wk.length);
      const dwv = new Float64Array(wv.length);
      const da = new Float64Array(f.a.out.length);
      addBackward(wy, { da: dx, db: da });
      const dqr = new Float64Array(f.qr.length);
      const dkr = new Float64Array(f.kr.length);
      const dvo = new Float64Array(f.v.out.length);
      attentionBackward(
        da,
        { q: f.qr, k: f.kr, v: f.v.out, probs: f.a.probs },
        {
          dq: dqr,
          dk: dkr,
          dv: dvo,
        },
        att,
      );
      const dq = new Float64Array(dqr.length);
      const dk = new Float64Array(dkr.length);
      ropeBackward(dqr, { dx: dq }, rope(H));
      ropeBackward(dkr, { dx: dk }, rope(Hkv));
      const dn = new Float64Array(f.n.out.length);
      bitlinearBackward(dq, f.q, { dx: dn, dw: dwq }, lin(C));
      bitlinearBackward(dk, f.k, { dx: dn, dw: dwk }, lin(Ckv));
      bitlinearBackward(dvo, f.v, { dx: dn, dw: dwv }, lin(Ckv));
      rmsnormBackward(dn, { x, g, rstd: f.n.rstd }, { dx, dg }, norm);
      expectGrads(() => dot(forward().y, wy), [
        ["x", x, dx],
        ["g", g, dg],
        ["wq", wq, dwq],
        ["wk", wk, dwk],
        ["wv", wv, dwv],
      ]);
    }),
    { numRuns: 10 },
  );
});
