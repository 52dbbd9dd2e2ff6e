// Every method of the CPU backend against the reference ops (or the core
// quantizers) on random shapes, odd sizes included, for both WASM variants.
// Outputs are poisoned with NaN before each call, so a kernel that skips an
// element fails; gradients are pre-filled with random values, so a backward
// that overwrites instead of adding fails.
//
// Tolerances: the reference runs in f64 on the same f32 inputs. The
// quantizers, AdamW and sums of squares compute in f64 on the CPU too and must
// match exactly. Smooth f32 kernels are held to |got − want| ≤ atol + rtol·|want|
// with rtol 2e-5 or 1e-4 (a few f32 ulps through products, sums of at most a
// few hundred terms and the ≈ 1-ulp exp), and an atol scaled to the magnitude
// of the terms that cancel (sums of gradients).
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { CpuBackend } from "../../src/backend/cpu/cpu_backend.ts";
import type { Tensor } from "../../src/backend/backend.ts";
import {
  actFakeQuant,
  adamwStep,
  attentionBackward,
  attentionForward,
  crossEntropyBackward,
  crossEntropyForward,
  embeddingBackward,
  embeddingForward,
  layernormBackward,
  layernormForward,
  mulBackward,
  relu2Backward,
  relu2Forward,
  rmsnormBackward,
  rmsnormForward,
  ropeBackward,
  ropeForward,
  siluBackward,
  siluForward,
  weightFakeQuant,
  type WeightQuantMode,
} from "../../src/backend/reference/mod.ts";
import {
  fakeQuantizeActivations,
  fakeQuantizeWeights,
} from "../../src/core/quantize.ts";
import { steBlend } from "../../src/core/ste.ts";
import {
  RELAXED_SIMD_SUPPORTED,
  type WasmVariant,
} from "../../src/backend/wasm/wasm_kernels.ts";
import { mulberry32, randInts, randn } from "./gradcheck.ts";

const VARIANTS: WasmVariant[] = RELAXED_SIMD_SUPPORTED
  ? ["relaxed", "portable"]
  : ["portable"];
const backends = new Map<WasmVariant, CpuBackend>();
for (const v of VARIANTS) {
  backends.set(v, await CpuBackend.create({ variant: v }));
}

/** Runs `f` once per variant. */
async function each(
  f: (b: CpuBackend) => void | Promise<void>,
): Promise<void> {
  for (const b of backends.values()) await f(b);
}

const seedArb = fc.integer({ min: 1, max: 2 ** 31 - 1 });

function f32s(rand: () => number, n: number, scale = 1): Float32Array {
  return Float32Array.from(randn(rand, n, scale));
}

/** A tensor of `n` NaNs (an output the kernel must overwrite everywhere). */
function poisoned(b: CpuBackend, n: number): Tensor {
  const t = b.zeros(n);
  b.fill(t, NaN);
  return t;
}

function view(t: Tensor): Float32Array {
  return (t as Tensor & { data: Float32Array }).data;
}

function close(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  what: string,
  rtol: number,
  atol = 0,
): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    const g = got[i], w = want[i];
    if (!(Math.abs(g - w) <= atol + rtol * Math.abs(w))) {
      assert.fail(`${what}[${i}]: got ${g}, want ${w}`);
    }
  }
}

function exact(got: ArrayLike<number>, want: ArrayLike<number>, what: string) {
  close(got, want, what, 0, 0);
}

/** Largest |x| of the arrays (an absolute scale for sums that cancel). */
function scaleOf(...xs: ArrayLike<number>[]): number {
  let m = 0;
  for (const x of xs) {
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]));
  }
  return m;
}

function release(b: CpuBackend, ...ts: Tensor[]): void {
  for (const t of ts) b.release(t);
}

/** `g0 + delta`, what an accumulating backward must leave in a buffer holding g0. */
function plus(g0: Float32Array, delta: ArrayLike<number>): Float64Array {
  return Float64Array.from(g0, (v, i) => v + delta[i]);
}

/**
 * `zeros(n)` on a block that held NaN: the backend writes zeros lazily, so a
 * kernel that overwrites such a tensor but skips an element leaves a NaN.
 */
function dirtyZeros(b: CpuBackend, n: number): Tensor {
  const t = b.zeros(n);
  b.fill(t, NaN);
  b.release(t);
  return b.zeros(n);
}

/**
 * A gradient buffer for a backward: `g0` (the backward must add to it) or,
 * when `lazy`, fresh zeros (pending: the backward may overwrite them).
 */
function gradBuf(b: CpuBackend, g0: Float32Array, lazy: boolean): Tensor {
  return lazy ? dirtyZeros(b, g0.length) : b.upload(g0);
}

/** What a backward must leave in {@link gradBuf}`(g0, lazy)`: `g0 + delta` or `delta`. */
function after(
  g0: Float32Array,
  delta: ArrayLike<number>,
  lazy: boolean,
): Float64Array {
  return lazy ? Float64Array.from(delta) : plus(g0, delta);
}

Deno.test("cpu: zeros, upload, write, read, fill and release", async () => {
  await each(async (b) => {
    const z = b.zeros(7);
    b.fill(z, NaN);
    b.release(z);
    const t = b.zeros(7); // reuses the poisoned block: must be zeroed again
    assert.deepEqual([...await b.read(t)], [0, 0, 0, 0, 0, 0, 0]);
    b.fill(t, 1.1);
    assert.deepEqual([...await b.read(t)], Array(7).fill(Math.fround(1.1)));
    const ids = b.upload(Int32Array.of(3, -4, 5));
    assert.equal(ids.dtype, "i32");
    assert.deepEqual([...await b.read(ids)], [3, -4, 5]);
    b.write(ids, Int32Array.of(1, 2, 3));
    b.fill(ids, 9);
    assert.deepEqual([...await b.read(ids)], [9, 9, 9]);
    const x = b.upload(Float32Array.of(1, 2, 3, 4, 5));
    b.write(x, Float32Array.of(5, 4, 3, 2, 1));
    const r = await b.read(x);
    r[0] = 99; // a copy, not a view
    assert.deepEqual([...await b.read(x)], [5, 4, 3, 2, 1]);
    assert.throws(() => b.write(x, new Float32Array(4)), RangeError);
    release(b, t, ids, x);
  });
});

Deno.test("cpu: clamp equals the f64 comparison, NaN kept", async () => {
  await each((b) => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 37 }),
      fc.double({ min: 0.01, max: 3, noNaN: true }),
      seedArb,
      (n, limit, seed) => {
        const x = f32s(mulberry32(seed), n);
        x[0] = NaN;
        const t = b.upload(x);
        b.clamp(t, limit);
        const want = Float32Array.from(
          x,
          (d) => d > limit ? limit : d < -limit ? -limit : d,
        );
        assert.ok(Number.isNaN(view(t)[0]));
        exact(view(t).subarray(1), want.subarray(1), "clamp");
        b.release(t);
      },
    ));
  });
});

Deno.test("cpu: add, addScaled, mul and mulBackward", async () => {
  await each((b) => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 70 }),
      fc.double({ min: -2, max: 2, noNaN: true }),
      fc.boolean(),
      seedArb,
      (n, s, lazy, seed) => {
        const r = mulberry32(seed);
        const x = f32s(r, n), y = f32s(r, n), g0 = f32s(r, n);
        const dout = f32s(r, n);
        const a = b.upload(x), c = b.upload(y);
        const out = poisoned(b, n);
        b.add(a, c, out);
        close(view(out), x.map((v, i) => v + y[i]), "add", 1e-7);
        b.mul(a, c, out);
        close(view(out), Float64Array.from(x, (v, i) => v * y[i]), "mul", 1e-7);
        const acc = gradBuf(b, g0, lazy);
        b.addScaled(acc, a, s);
        close(
          view(acc),
          after(g0, Float64Array.from(x, (v) => s * v), lazy),
          "addScaled",
          2e-7,
          2e-7 * scaleOf(g0),
        );
        const da = gradBuf(b, g0, lazy),
          db = gradBuf(b, g0, lazy),
          d = b.upload(dout);
        b.mulBackward(d, a, c, da, db);
        const ra = new Float64Array(n), rb = new Float64Array(n);
        mulBackward(Float64Array.from(dout), {
          a: Float64Array.from(x),
          b: Float64Array.from(y),
        }, { da: ra, db: rb });
        const tol = 2e-7 * (scaleOf(g0) + scaleOf(ra, rb));
        close(view(da), after(g0, ra, lazy), "mulBackward da", 2e-7, tol);
        close(view(db), after(g0, rb, lazy), "mulBackward db", 2e-7, tol);
        b.mulBackward(d, a, c, undefined, db); // da left out
        close(
          view(db),
          after(g0, rb.map((v) => 2 * v), lazy),
          "mulBackward db twice",
          4e-7,
          2 * tol,
        );
        release(b, a, c, out, acc, da, db, d);
      },
    ));
  });
});

const MODES: WeightQuantMode[] = ["ternary", "binary", "eightbit", "f16"];

Deno.test("cpu: fakeQuantWeights equals the core quantizer and STE blend bit for bit", async () => {
  await each((b) => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 13 }),
      fc.integer({ min: 1, max: 41 }),
      fc.constantFrom(...MODES),
      fc.boolean(),
      fc.constantFrom(0, 0.3, 0.999, 1),
      seedArb,
      (rows, cols, mode, dyn, lambda, seed) => {
        const w = f32s(mulberry32(seed), rows * cols, 0.05);
        if (seed % 3 === 0) w[seed % w.length] = 0;
        const o = { dynamicThreshold: dyn && mode === "ternary" };
        const q = fakeQuantizeWeights(mode, w, rows, cols, o);
        const want = steBlend(w, q, lambda);
        const wt = b.upload(w), out = poisoned(b, rows * cols);
        b.fakeQuantWeights(wt, out, mode, {
          rows,
          cols,
          lambda,
          dynamicThreshold: o.dynamicThreshold,
        });
        exact(view(out), want, `${mode} λ=${lambda}`);
        // … and agrees with the reference BitLinear quantizer (its blend
        // rounds differently; f16 is full precision there).
        if (mode !== "f16" && !o.dynamicThreshold) {
          const ref = weightFakeQuant(w, rows, cols, mode, lambda);
          close(view(out), ref, `${mode} vs reference`, 1e-6, 1e-9);
        }
        release(b, wt, out);
      },
    ));
  });
});

Deno.test("cpu: fakeQuantActivations equals the core quantizer bit for bit", async () => {
  await each((b) => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 9 }),
      fc.integer({ min: 1, max: 70 }),
      fc.constantFrom(0, 0.25, 1),
      seedArb,
      (rows, cols, lambda, seed) => {
        const r = mulberry32(seed);
        const x = f32s(r, rows * cols, 2);
        x[0] = 0; // a zero, and an all-zero row when cols = 1
        // Exact ties x·s = k + ½ (rounded half to even) in the last row.
        const last = (rows - 1) * cols;
        x[last] = 127;
        for (let i = 1; i < cols; i++) x[last + i] = (i % 9) - 4.5;
        const want = steBlend(
          x,
          fakeQuantizeActivations(x, rows, cols),
          lambda,
        );
        const xt = b.upload(x), out = poisoned(b, rows * cols);
        b.fakeQuantActivations(xt, out, { rows, cols, lambda });
        exact(view(out), want, `act λ=${lambda}`);
        close(
          view(out),
          actFakeQuant(x, rows, cols, lambda),
          "act vs reference",
          1e-6,
          1e-9,
        );
        release(b, xt, out);
      },
    ));
  });
});

Deno.test("cpu: the quantizers refuse NaN and ±∞ with a 'non-finite' RangeError", async () => {
  await each((b) => {
    for (const bad of [NaN, Infinity, -Infinity]) {
      const x = Float32Array.of(1, 2, 3, 4, 5, 6);
      x[4] = bad;
      const t = b.upload(x), out = b.zeros(6);
      assert.throws(
        () => b.fakeQuantActivations(t, out, { rows: 2, cols: 3, lambda: 1 }),
        (e: unknown) => e instanceof RangeError && /non-finite/.test(e.message),
      );
      assert.throws(
        () =>
          b.fakeQuantWeights(t, out, "ternary", {
            rows: 2,
            cols: 3,
            lambda: 1,
          }),
        (e: unknown) => e instanceof RangeError && /non-finite/.test(e.message),
      );
      release(b, t, out);
    }
    const t = b.zeros(4);
    assert.throws(
      () => b.fakeQuantActivations(t, t, { rows: 2, cols: 2, lambda: 1.5 }),
      /lambda/,
    );
    assert.throws(
      () => b.fakeQuantActivations(t, t, { rows: 2, cols: 3, lambda: 1 }),
      /must have 6 elements/,
    );
    b.release(t);
  });
});

Deno.test("cpu: embedding gathers rows and its backward scatter-adds", async () => {
  await each((b) => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 9 }),
      fc.integer({ min: 1, max: 19 }),
      fc.integer({ min: 1, max: 30 }),
      fc.boolean(),
      seedArb,
      (vocab, dim, n, lazy, seed) => {
        const r = mulberry32(seed);
        const table = f32s(r, vocab * dim), ids = randInts(r, n, 0, vocab);
        const dout = f32s(r, n * dim), g0 = f32s(r, vocab * dim);
        const shape = { vocab, dim };
        const tt = b.upload(table), it = b.upload(ids);
        const out = poisoned(b, n * dim);
        b.embedding(tt, it, out, shape);
        exact(view(out), embeddingForward(table, ids, shape), "gather");
        const dt = gradBuf(b, g0, lazy), dt64 = new Float64Array(vocab * dim);
        b.embeddingBackward(b.upload(dout), it, dt, shape);
        embeddingBackward(
          Float64Array.from(dout),
          { ids },
          { dtable: dt64 },
          shape,
        );
        close(
          view(dt),
          after(g0, dt64, lazy),
          "scatter",
          1e-6,
          1e-6 * scaleOf(g0, dt64),
        );
        const bad = b.upload(Int32Array.of(0, vocab));
        assert.throws(
          () => b.embedding(tt, bad, b.zeros(2 * dim), shape),
          /ids\[1\]/,
        );
        release(b, tt, it, out, dt, bad);
      },
    ));
  });
});

Deno.test("cpu: rmsnorm and layernorm, forward and backward", async () => {
  await each((b) => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 7 }),
      fc.integer({ min: 1, max: 70 }),
      fc.constantFrom(1e-6, 1e-5, 0.1),
      fc.boolean(),
      seedArb,
      (rows, dim, eps, lazy, seed) => {
        const r = mulberry32(seed);
        const x = f32s(r, rows * dim), g = f32s(r, dim), bias = f32s(r, dim);
        const dy = f32s(r, rows * dim);
        const gx = f32s(r, rows * dim), gg = f32s(r, dim), gb = f32s(r, dim);
        const shape = { rows, dim, eps };
        const xt = b.upload(x), gt = b.upload(g), bt = b.upload(bias);
        const dyt = b.upload(dy);
        // RMSNorm
        const out = poisoned(b, rows * dim), rstd = poisoned(b, rows);
        b.rmsnorm(xt, gt, out, rstd, shape);
        const ref = rmsnormForward(
          Float64Array.from(x),
          Float64Array.from(g),
          shape,
        );
        close(view(out), ref.out, "rmsnorm out", 2e-6, 1e-7);
        close(view(rstd), ref.rstd, "rmsnorm rstd", 2e-6);
        const dx = gradBuf(b, gx, lazy), dg = gradBuf(b, gg, lazy);
        b.rmsnormBackward(dyt, xt, gt, rstd, dx, dg, shape);
        const rdx = new Float64Array(rows * dim), rdg = new Float64Array(dim);
        rmsnormBackward(
          Float64Array.from(dy),
          {
            x: Float64Array.from(x),
            g: Float64Array.from(g),
            rstd: Float64Array.from(view(rstd)),
          },
          { dx: rdx, dg: rdg },
          shape,
        );
        const s = scaleOf(ref.rstd) * scaleOf(dy) * scaleOf(g) *
          (1 + scaleOf(x));
        close(
          view(dx),
          after(gx, rdx, lazy),
          "rmsnorm dx",
          1e-5,
          1e-5 * (s + 1),
        );
        close(
          view(dg),
          after(gg, rdg, lazy),
          "rmsnorm dg",
          1e-5,
          1e-5 * rows * (s + 1),
        );
        // LayerNorm
        const mean = poisoned(b, rows);
        b.layernorm(xt, gt, bt, out, mean, rstd, shape);
        const lref = layernormForward(
          Float64Array.from(x),
          Float64Array.from(g),
          Float64Array.from(bias),
          shape,
        );
        close(view(out), lref.out, "layernorm out", 1e-5, 1e-5);
        close(view(mean), lref.mean, "layernorm mean", 1e-6, 1e-7);
        const dx2 = gradBuf(b, gx, lazy),
          dw2 = gradBuf(b, gg, lazy),
          db2 = gradBuf(b, gb, lazy);
        b.layernormBackward(dyt, xt, gt, mean, rstd, dx2, dw2, db2, shape);
        const ldx = new Float64Array(rows * dim), ldw = new Float64Array(dim);
        const ldb = new Float64Array(dim);
        layernormBackward(
          Float64Array.from(dy),
          {
            x: Float64Array.from(x),
            weight: Float64Array.from(g),
            mean: Float64Array.from(view(mean)),
            rstd: Float64Array.from(view(rstd)),
          },
          { dx: ldx, dweight: ldw, dbias: ldb },
          shape,
        );
        const ls = 1e-5 * rows * (s + 10);
        close(view(dx2), after(gx, ldx, lazy), "layernorm dx", 1e-5, ls);
        close(view(dw2), after(gg, ldw, lazy), "layernorm dw", 1e-5, ls);
        close(view(db2), after(gb, ldb, lazy), "layernorm db", 1e-5, ls);
        release(b, xt, gt, bt, dyt, out, rstd, dx, dg, mean, dx2, dw2, db2);
      },
    ));
  });
});

Deno.test("cpu: rope forward and backward, both pairings, any head width", async () => {
  await each((b) => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 9 }),
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 12 }).map((h) => 2 * h),
      fc.constantFrom("neox" as const, "interleaved" as const),
      fc.integer({ min: 0, max: 40 }),
      fc.boolean(),
      seedArb,
      (batch, seqLen, heads, headDim, style, posOffset, lazy, seed) => {
        const r = mulberry32(seed);
        const n = batch * seqLen * heads * headDim;
        const x = f32s(r, n), dy = f32s(r, n), g0 = f32s(r, n);
        const shape = {
          batch,
          seqLen,
          heads,
          headDim,
          base: 10000,
          style,
          posOffset,
        };
        const xt = b.upload(x), out = poisoned(b, n);
        b.rope(xt, out, shape);
        close(
          view(out),
          ropeForward(Float64Array.from(x), shape),
          "rope",
          1e-6,
          1e-6,
        );
        const dx = gradBuf(b, g0, lazy), rdx = new Float64Array(n);
        b.ropeBackward(b.upload(dy), dx, shape);
        ropeBackward(Float64Array.from(dy), { dx: rdx }, shape);
        close(
          view(dx),
          after(g0, rdx, lazy),
          "rope dx",
          1e-6,
          1e-6 * (1 + scaleOf(g0)),
        );
        release(b, xt, out, dx);
      },
    ));
  });
});

Deno.test("cpu: causal attention with grouped KV heads, forward and backward", async () => {
  await each((b) => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2 }),
        fc.constantFrom(1, 2, 5, 31, 33, 70),
        fc.constantFrom([1, 1], [2, 1], [4, 2], [3, 3]),
        fc.integer({ min: 1, max: 9 }),
        fc.boolean(),
        seedArb,
        (batch, seqLen, [numHeads, numKvHeads], headDim, lazy, seed) => {
          const r = mulberry32(seed);
          const shape = { batch, seqLen, numHeads, numKvHeads, headDim };
          const nq = batch * seqLen * numHeads * headDim;
          const nk = batch * seqLen * numKvHeads * headDim;
          const np = batch * numHeads * seqLen * seqLen;
          const q = f32s(r, nq), k = f32s(r, nk), v = f32s(r, nk);
          const dout = f32s(r, nq);
          const gq = f32s(r, nq), gk = f32s(r, nk), gv = f32s(r, nk);
          const qt = b.upload(q), kt = b.upload(k), vt = b.upload(v);
          const out = poisoned(b, nq), probs = poisoned(b, np);
          b.attention(qt, kt, vt, out, probs, shape);
          const D = (a: Float32Array) => Float64Array.from(a);
          const ref = attentionForward(D(q), D(k), D(v), shape);
          close(view(out), ref.out, "attention out", 1e-5, 1e-5);
          close(view(probs), ref.probs, "attention probs", 1e-5, 1e-7);
          const dq = gradBuf(b, gq, lazy),
            dk = gradBuf(b, gk, lazy),
            dv = gradBuf(b, gv, lazy);
          b.attentionBackward(
            b.upload(dout),
            qt,
            kt,
            vt,
            probs,
            dq,
            dk,
            dv,
            shape,
          );
          const rq = new Float64Array(nq), rk = new Float64Array(nk);
          const rv = new Float64Array(nk);
          attentionBackward(
            D(dout),
            {
              q: D(q),
              k: D(k),
              v: D(v),
              probs: D(view(probs)),
            },
            { dq: rq, dk: rk, dv: rv },
            shape,
          );
          const tol = 1e-5 * seqLen * (1 + scaleOf(dout)) *
            (1 + scaleOf(q, k, v));
          close(view(dq), after(gq, rq, lazy), "attention dq", 1e-5, tol);
          close(view(dk), after(gk, rk, lazy), "attention dk", 1e-5, tol);
          close(view(dv), after(gv, rv, lazy), "attention dv", 1e-5, tol);
          release(b, qt, kt, vt, out, probs, dq, dk, dv);
        },
      ),
      { numRuns: 40 },
    );
  });
});

Deno.test("cpu: silu and relu², forward and backward, including saturation", async () => {
  await each((b) => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 70 }),
      fc.constantFrom(1, 10, 100),
      fc.boolean(),
      seedArb,
      (n, scale, lazy, seed) => {
        const r = mulberry32(seed);
        const x = f32s(r, n, scale), dy = f32s(r, n), g0 = f32s(r, n);
        const xt = b.upload(x), out = poisoned(b, n), dyt = b.upload(dy);
        const X = Float64Array.from(x);
        for (const kind of ["silu", "relu2"] as const) {
          b.activation(kind, xt, out);
          const want = kind === "silu" ? siluForward(X) : relu2Forward(X);
          // silu(x) for x ≪ 0 is below 1e-36: an absolute floor covers e^x's clamp.
          close(view(out), want, `${kind}`, 1e-6, 1e-30);
          const dx = gradBuf(b, g0, lazy), rdx = new Float64Array(n);
          b.activationBackward(kind, dyt, xt, dx);
          (kind === "silu" ? siluBackward : relu2Backward)(
            Float64Array.from(dy),
            { x: X },
            { dx: rdx },
          );
          close(
            view(dx),
            after(g0, rdx, lazy),
            `${kind} dx`,
            1e-6,
            1e-6 * (1 + scaleOf(g0)),
          );
          b.release(dx);
        }
        release(b, xt, out, dyt);
      },
    ));
  });
});

Deno.test("cpu: softmax cross-entropy with smoothing and ignored targets", async () => {
  await each((b) => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 9 }),
      fc.integer({ min: 1, max: 300 }),
      fc.constantFrom(0, 0.1),
      fc.constantFrom(1, 8, 40),
      fc.double({ min: 0.1, max: 2, noNaN: true }),
      fc.boolean(),
      seedArb,
      (rows, vocab, labelSmoothing, scale, dscale, lazy, seed) => {
        const r = mulberry32(seed);
        const logits = f32s(r, rows * vocab, scale);
        const targets = randInts(r, rows, 0, vocab);
        if (seed % 2 === 0) targets[seed % rows] = -1;
        const shape = { rows, vocab, labelSmoothing };
        const lt = b.upload(logits), tt = b.upload(targets);
        const probs = lazy
          ? dirtyZeros(b, rows * vocab)
          : poisoned(b, rows * vocab);
        const losses = lazy ? dirtyZeros(b, 2) : poisoned(b, 2);
        b.crossEntropy(lt, tt, probs, losses, shape);
        const ref = crossEntropyForward(
          Float64Array.from(logits),
          targets,
          shape,
        );
        close(view(probs), ref.probs, "probs", 1e-5, 1e-12);
        close(view(losses), [ref.loss, ref.nll], "losses", 1e-5, 1e-6);
        const g0 = f32s(r, rows * vocab);
        const dl = gradBuf(b, g0, lazy), rdl = new Float64Array(rows * vocab);
        b.crossEntropyBackward(probs, tt, dl, dscale, shape);
        crossEntropyBackward(
          dscale,
          {
            probs: Float64Array.from(view(probs)),
            targets,
            count: ref.count,
          },
          { dlogits: rdl },
          shape,
        );
        close(
          view(dl),
          after(g0, rdl, lazy),
          "dlogits",
          1e-6,
          1e-6 * (1 + scaleOf(g0)),
        );
        release(b, lt, tt, probs, losses, dl);
      },
    ));
    // Every target ignored: zero losses, zero probabilities, no gradient.
    const lt = b.upload(Float32Array.of(1, 2, 3, 4)),
      tt = b.upload(Int32Array.of(-1, -1));
    const probs = poisoned(b, 4), losses = poisoned(b, 2), dl = b.zeros(4);
    const shape = { rows: 2, vocab: 2 };
    b.crossEntropy(lt, tt, probs, losses, shape);
    b.crossEntropyBackward(probs, tt, dl, 1, shape);
    assert.deepEqual(
      [...view(losses), ...view(probs), ...view(dl)],
      Array(10).fill(0),
    );
    assert.throws(
      () =>
        b.crossEntropy(lt, b.upload(Int32Array.of(0, 2)), probs, losses, shape),
      /targets\[1\]/,
    );
    release(b, lt, tt, probs, losses, dl);
  });
});

Deno.test("cpu: sumSquares and AdamW match the reference bit for bit", async () => {
  await each((b) => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 45 }),
      fc.constantFrom(Infinity, 1, 1e-3),
      fc.integer({ min: 1, max: 50 }),
      fc.constantFrom(0, 0.1),
      seedArb,
      (n, maxNorm, step, weightDecay, seed) => {
        const r = mulberry32(seed);
        const p = f32s(r, n), g = f32s(r, n), m = f32s(r, n, 0.1);
        const v = Float32Array.from(f32s(r, n, 0.1), (x) => x * x);
        const pt = b.upload(p), gt = b.upload(g), mt = b.upload(m);
        const vt = b.upload(v), g2 = b.upload(g.subarray(0, 3));
        const ss = poisoned(b, 1);
        b.sumSquares([gt, g2], ss);
        let want = 0;
        for (const x of [...g, ...g.subarray(0, 3)]) want += x * x;
        // An f64 sum in another order: equal after rounding to the f32 output.
        close(view(ss), [Math.fround(want)], "sumSquares", 2 ** -24);
        const hyper = {
          lr: 1e-3,
          beta1: 0.9,
          beta2: 0.95,
          eps: 1e-8,
          weightDecay,
          step,
        };
        b.adamw(pt, gt, mt, vt, hyper, ss, maxNorm);
        const clip = Math.min(1, maxNorm / (Math.sqrt(view(ss)[0]) + 1e-6));
        const rg = Float32Array.from(g, (x) => clip < 1 ? x * clip : x);
        adamwStep(p, rg, m, v, step, hyper);
        exact(view(gt), rg, "clipped grad");
        exact(view(pt), p, "param");
        exact(view(mt), m, "m");
        exact(view(vt), v, "v");
        release(b, pt, gt, mt, vt, g2, ss);
      },
    ));
    const t = b.zeros(2);
    const bad = {
      lr: 1e-3,
      beta1: 1,
      beta2: 0.95,
      eps: 1e-8,
      weightDecay: 0,
      step: 1,
    };
    assert.throws(() => b.adamw(t, t, t, t, bad, t, 1), /beta1/);
    assert.throws(
      () => b.adamw(t, t, t, t, { ...bad, beta1: 0.9, step: 0 }, t, 1),
      /step/,
    );
    b.release(t);
  });
});

Deno.test("cpu: shape errors name the argument", async () => {
  await each((b) => {
    const t = b.zeros(6), i = b.upload(Int32Array.of(0));
    assert.throws(() => b.add(t, b.zeros(5), t), /sizes differ/);
    assert.throws(
      () => b.rmsnorm(t, t, t, t, { rows: 2, dim: 3, eps: 1e-5 }),
      /g must have 3 elements/,
    );
    assert.throws(
      () =>
        b.rope(t, t, {
          batch: 1,
          seqLen: 1,
          heads: 2,
          headDim: 3,
          base: 1e4,
          style: "neox",
        }),
      /headDim must be even/,
    );
    assert.throws(
      () =>
        b.attention(t, t, t, t, t, {
          batch: 1,
          seqLen: 1,
          numHeads: 3,
          numKvHeads: 2,
          headDim: 2,
        }),
      /numKvHeads/,
    );
    assert.throws(() => b.activation("silu", i, i), /expected an f32 tensor/);
    release(b, t, i);
  });
});

Deno.test("cpu: matmul into pending zeros equals C = A·B, with or without accumulate", async () => {
  await each((b) => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 9 }),
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 1, max: 20 }),
      fc.boolean(),
      fc.boolean(),
      seedArb,
      (m, n, k, accumulate, bigger, seed) => {
        const r = mulberry32(seed);
        const a = f32s(r, m * k), w = f32s(r, k * n);
        const want = new Float64Array(m * n + (bigger ? 3 : 0));
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            let s = 0;
            for (let p = 0; p < k; p++) s += a[i * k + p] * w[p * n + j];
            want[i * n + j] = s;
          }
        }
        // A C larger than m·n keeps its tail: the pending zeros must be stored.
        const c = dirtyZeros(b, want.length);
        const at = b.upload(a), wt = b.upload(w);
        b.matmul(at, wt, c, { m, n, k, accumulate });
        close(view(c), want, "C", 1e-5, 1e-5 * k);
        if (accumulate) {
          b.matmul(at, wt, c, { m, n, k, accumulate });
          close(view(c), want.map((v) => 2 * v), "C twice", 1e-5, 2e-5 * k);
        }
        release(b, c, at, wt);
      },
    ));
  });
});

Deno.test("fake quantization in place equals out of place, for every λ", async () => {
  const b = await CpuBackend.create();
  fc.assert(fc.property(
    fc.integer({ min: 1, max: 9 }),
    fc.integer({ min: 1, max: 70 }),
    fc.constantFrom("ternary", "binary", "eightbit", "f16") as fc.Arbitrary<
      "ternary" | "binary" | "eightbit" | "f16"
    >,
    fc.double({ min: 0, max: 1, noNaN: true }),
    fc.integer(),
    (rows, cols, mode, lambda, seed) => {
      let s = seed | 0;
      const rnd = () =>
        ((s = (s * 1103515245 + 12345) | 0) >>> 0) / 2 ** 32 - 0.5;
      const data = Float32Array.from({ length: rows * cols }, rnd);
      const o = { rows, cols, lambda };
      const check = (run: (src: Tensor, dst: Tensor) => void) => {
        const src = b.upload(data),
          dst = b.zeros(data.length),
          same = b.upload(data);
        run(src, dst);
        run(same, same);
        assert.deepEqual(
          (same as unknown as { data: Float32Array }).data,
          (dst as unknown as { data: Float32Array }).data,
        );
        for (const t of [src, dst, same]) b.release(t);
      };
      check((src, dst) => b.fakeQuantWeights(src, dst, mode, o));
      check((src, dst) => b.fakeQuantActivations(src, dst, o));
    },
  ));
});
