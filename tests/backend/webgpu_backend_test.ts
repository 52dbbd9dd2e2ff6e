// The WebGPU backend against the CPU backend: every Backend method on random
// shapes (odd sizes included), outputs poisoned with NaN and gradients
// pre-filled with random values (the *Backward kernels add); the encoder
// ordering rules (writes, releases, reads); and a full model step — loss, every
// gradient, one AdamW update — on both. A missing adapter fails these tests
// (software adapters are allowed), it never skips them.
import { strict as assert } from "node:assert";
import { test } from "./gpu_gate.ts";
import fc from "fast-check";
import type { Backend, Tensor } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu/cpu_backend.ts";
import { WebGpuBackend } from "../../src/backend/webgpu/webgpu_backend.ts";
import type { WeightQuantMode } from "../../src/backend/reference/mod.ts";
import { Tape } from "../../src/backend/tape.ts";
import { OneBitLlm } from "../../src/core/model.ts";
import { AdamW } from "../../src/train/optimizer.ts";
import { preset } from "../../src/common/presets.ts";
import { resolveBitMap } from "../../src/common/config.ts";
import { QUANT_EPS } from "../../src/core/quantize.ts";
import { f16BitsToF32 } from "../../src/core/f16.ts";

const cpu = await CpuBackend.create();

/** mulberry32: a seeded generator, so a fast-check seed reproduces the data. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function uniform(next: () => number, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => (2 * next() - 1) * scale);
}

/** A tensor on both backends. */
interface Pair {
  readonly c: Tensor;
  readonly g: Tensor;
}

/** Runs every op on both backends; tensors are created and read in pairs. */
class Both {
  readonly #made: Pair[] = [];
  constructor(readonly gpu: WebGpuBackend) {}

  upload(data: Float32Array | Int32Array): Pair {
    const p = { c: cpu.upload(data), g: this.gpu.upload(data) };
    this.#made.push(p);
    return p;
  }

  /** `n` NaNs: an element a kernel leaves unwritten stays NaN. */
  poisoned(n: number): Pair {
    return this.upload(new Float32Array(n).fill(NaN));
  }

  /** Runs `f` on each backend with `s` picking that backend's tensor of a pair. */
  run(f: (b: Backend, s: (p: Pair) => Tensor) => void): void {
    f(cpu, (p) => p.c);
    f(this.gpu, (p) => p.g);
  }

  async read(p: Pair): Promise<{ want: Float32Array; got: Float32Array }> {
    return { want: await cpu.read(p.c), got: await this.gpu.read(p.g) };
  }

  releaseAll(): void {
    for (const p of this.#made) {
      cpu.release(p.c);
      this.gpu.release(p.g);
    }
    this.#made.length = 0;
  }
}

/**
 * Normwise check `max|got − want| ≤ rel·max|want| + abs` and no NaN where the
 * CPU has a number: the backends sum in different orders (the GPU in f32 trees,
 * the CPU in SIMD lanes or f64), so errors scale with the largest values.
 * `abs` may differ per element (a bound from the terms that make it up).
 */
function assertNear(
  label: string,
  { got, want }: { got: Float32Array; want: Float32Array },
  rel: number,
  abs: number | ((i: number) => number) = 0,
): void {
  assert.equal(got.length, want.length, `${label}: length`);
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < want.length; i++) {
    const tol = rel * scale + (typeof abs === "number" ? abs : abs(i));
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= tol)) {
      assert.fail(
        `${label}: [${i}] got ${got[i]}, want ${
          want[i]
        } (tol ${tol}, scale ${scale})`,
      );
    }
  }
}

const numRuns = 6;

function withBoth(body: (both: Both) => Promise<void>): () => Promise<void> {
  return async () => {
    const gpu = await WebGpuBackend.create({ allowFallback: true });
    try {
      await body(new Both(gpu));
    } finally {
      gpu.destroy();
    }
  };
}

const dims = fc.record({
  rows: fc.integer({ min: 1, max: 9 }),
  cols: fc.integer({ min: 1, max: 70 }),
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
});

test.gpu(
  "webgpu backend: storage, element-wise and matmul match the cpu backend",
  withBoth(async (both) => {
    const gpu = both.gpu;
    assert.equal(gpu.kind, "webgpu");
    assert.match(gpu.description, /^webgpu \(/);
    await fc.assert(
      fc.asyncProperty(
        dims,
        fc.double({ min: -3, max: 3, noNaN: true }),
        async ({ rows, cols, seed }, s) => {
          const n = rows * cols;
          const next = rng(seed);
          const A = uniform(next, n), B = uniform(next, n);
          const a = both.upload(A), b = both.upload(B);
          const sum = both.poisoned(n), prod = both.poisoned(n);
          const ACC = uniform(next, n), acc = both.upload(ACC);
          const DA = uniform(next, n), DB = uniform(next, n);
          const da = both.upload(DA), db = both.upload(DB);
          const filled = both.poisoned(n),
            clamped = both.upload(uniform(next, n, 2));
          both.run((be, t) => {
            be.add(t(a), t(b), t(sum));
            be.mul(t(a), t(b), t(prod));
            be.addScaled(t(acc), t(a), s);
            be.mulBackward(t(acc), t(a), t(b), t(da), t(db));
            be.fill(t(filled), s);
            be.clamp(t(clamped), 0.75);
          });
          assertNear("add", await both.read(sum), 0, 0);
          assertNear("mul", await both.read(prod), 0, 0);
          // A sum that cancels keeps an ulp of its terms, not of itself (the
          // CPU's fused multiply-add rounds once where WGSL may round twice):
          // seed 2139090921 (1×1), mulBackward da off by 3e-8 at 0.06.
          const added = await both.read(acc);
          assertNear(
            "addScaled",
            added,
            2 ** -23,
            (i) => 2 ** -23 * (Math.abs(ACC[i]) + Math.abs(s * A[i])),
          );
          const grad = (g0: Float32Array, other: Float32Array) => (i: number) =>
            2 ** -22 * (Math.abs(g0[i]) + Math.abs(added.want[i] * other[i]));
          assertNear(
            "mulBackward da",
            await both.read(da),
            2 ** -22,
            grad(DA, B),
          );
          assertNear(
            "mulBackward db",
            await both.read(db),
            2 ** -22,
            grad(DB, A),
          );
          assertNear("fill", await both.read(filled), 0, 0);
          assertNear("clamp", await both.read(clamped), 0, 0);
          // In place (out aliases an input) works as on the CPU.
          both.run((be, t) => {
            be.add(t(a), t(a), t(a));
            be.mul(t(b), t(b), t(b));
          });
          assertNear("add in place", await both.read(a), 0, 0);
          assertNear("mul in place", await both.read(b), 0, 0);
          both.releaseAll();
        },
      ),
      {
        numRuns,
        examples: [[
          { rows: 1, cols: 1, seed: 2139090921 },
          2.8046513795852666,
        ]],
      },
    );

    // matmul: every transpose combination, overwrite and accumulate.
    const mk = fc.record({
      m: fc.integer({ min: 1, max: 40 }),
      n: fc.integer({ min: 1, max: 40 }),
      k: fc.integer({ min: 1, max: 70 }),
      transA: fc.boolean(),
      transB: fc.boolean(),
      accumulate: fc.boolean(),
      seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    });
    await fc.assert(
      fc.asyncProperty(mk, async ({ seed, ...o }) => {
        const next = rng(seed);
        const a = both.upload(uniform(next, o.m * o.k));
        const b = both.upload(uniform(next, o.k * o.n));
        const c = o.accumulate
          ? both.upload(uniform(next, o.m * o.n))
          : both.poisoned(o.m * o.n);
        both.run((be, t) => be.matmul(t(a), t(b), t(c), o));
        // k products of magnitude ≤ 1 summed in different orders.
        assertNear(
          `matmul ${JSON.stringify(o)}`,
          await both.read(c),
          0,
          4e-7 * o.k + 1e-6,
        );
        both.releaseAll();
      }),
      { numRuns: 10 },
    );

    // Storage: zeros (both dtypes), upload/write/read round trips, i32 read as f32.
    const ids = both.upload(Int32Array.of(0, -7, 2 ** 30, 5));
    const zi = gpu.zeros(3, "i32"), zf = gpu.zeros(5);
    assert.deepEqual([...await gpu.read(ids.g)], [0, -7, 2 ** 30, 5]);
    assert.deepEqual([...await gpu.read(zi)], [0, 0, 0]);
    assert.deepEqual([...await gpu.read(zf)], [0, 0, 0, 0, 0]);
    gpu.write(zi, Float32Array.of(1.9, -2.5, 3));
    gpu.fill(zf, -0.5);
    assert.deepEqual([...await gpu.read(zi)], [1, -2, 3]);
    assert.deepEqual([...await gpu.read(zf)], [-0.5, -0.5, -0.5, -0.5, -0.5]);
    gpu.fill(zi, 9);
    gpu.fill(zf, Infinity);
    assert.deepEqual([...await gpu.read(zi)], [9, 9, 9]);
    assert.deepEqual([...await gpu.read(zf)], Array(5).fill(Infinity));
    const empty = gpu.zeros(0);
    assert.deepEqual([...await gpu.read(empty)], []);
    for (const t of [zi, zf, empty]) gpu.release(t);
    both.releaseAll();

    // Errors name the argument; foreign and released tensors are refused.
    const x = gpu.zeros(4);
    assert.throws(() => gpu.add(x, gpu.zeros(3), x), /sizes differ/);
    assert.throws(() => gpu.add(cpu.zeros(4), x, x), /another backend/);
    assert.throws(
      () => gpu.embedding(x, x, x, { vocab: 2, dim: 2 }),
      /ids: expected an i32/,
    );
    gpu.release(x);
    assert.throws(() => gpu.fill(x, 1), /released/);
    assert.throws(() => gpu.release(x), /released/);
  }),
);

test.gpu(
  "webgpu backend: recorded work, writes, releases and reads are ordered",
  withBoth(async ({ gpu }) => {
    const x = gpu.upload(Float32Array.of(1, 2, 3));
    const y = gpu.upload(Float32Array.of(10, 20, 30));
    const first = gpu.zeros(3), second = gpu.zeros(3);
    gpu.add(x, y, first);
    // A write after recorded work must not overtake it (writeBuffer would run first).
    gpu.write(x, Float32Array.of(100, 200, 300));
    gpu.add(x, y, second);
    // Releasing y while recorded work reads it: a later upload must not land in y's
    // buffer before that work runs; zeros may reuse it (its clear is recorded after).
    gpu.add(x, y, x);
    gpu.release(y);
    const uploaded = gpu.upload(Float32Array.of(-1, -1, -1));
    const reused = gpu.zeros(3);
    assert.notEqual(uploaded.buffer, y.buffer);
    assert.equal(reused.buffer, y.buffer);
    const third = gpu.zeros(3);
    gpu.add(reused, uploaded, third);
    const inUse = gpu.pool.stats().inUse;
    assert.deepEqual([...await gpu.read(first)], [11, 22, 33]);
    assert.deepEqual([...await gpu.read(second)], [110, 220, 330]);
    assert.deepEqual([...await gpu.read(x)], [110, 220, 330]);
    assert.deepEqual([...await gpu.read(third)], [-1, -1, -1]);
    // Released while recorded, returned to the pool at the submit: once nothing is
    // recorded, a release is immediate.
    gpu.release(third);
    assert.equal(gpu.pool.stats().inUse, inUse - 1);
    // flush submits without reading; the next read sees the flushed work.
    gpu.fill(first, 7);
    gpu.flush();
    assert.deepEqual([...await gpu.read(first)], [7, 7, 7]);
    // A WebGPU error (here: a destroyed buffer used by a command) rejects the read.
    const broken = gpu.zeros(4);
    broken.buffer.destroy();
    gpu.fill(broken, 1);
    await assert.rejects(gpu.read(first), /WebGPU reported an error/);
    assert.deepEqual([...await gpu.read(first)], [7, 7, 7]);
  }),
);

/** Quantization inputs: a weight-like matrix with an all-zero row when rows > 1. */
const quantCase = fc.record({
  rows: fc.integer({ min: 1, max: 7 }),
  cols: fc.integer({ min: 1, max: 300 }),
  lambda: fc.constantFrom(0, 0.25, 0.7, 1),
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
});

function quantInput(
  rows: number,
  cols: number,
  seed: number,
  scale: number,
): Float32Array {
  const w = uniform(rng(seed), rows * cols, scale);
  if (rows > 1) w.fill(0, cols, 2 * cols);
  return w;
}

/**
 * f16 test values: odd elements are exact ties between neighbouring f16 values
 * (normal and subnormal), even ones random with magnitudes from 2^-26 to 2^13
 * (f16 normals, subnormals and underflow; the CPU refuses |w| ≥ 65520, so
 * overflow is not compared).
 */
function f16Input(n: number, seed: number): Float32Array {
  const next = rng(seed);
  return Float32Array.from({ length: n }, (_, i) => {
    const sign = next() < 0.5 ? -1 : 1;
    if (i % 2 === 0) return sign * next() * 2 ** ((i % 40) - 26);
    const h = 1 + Math.floor(next() * 0x7bfe); // a finite f16 below the largest
    return sign * (f16BitsToF32(h) + f16BitsToF32(h + 1)) / 2;
  });
}

/**
 * Compares a fake-quant output element-wise, skipping elements whose quotient
 * lies within `margin` of a rounding threshold (the GPU's f32 scale and
 * quotient may round them the other way); fails if more than 1% are skipped.
 */
function assertQuant(
  label: string,
  { got, want }: { got: Float32Array; want: Float32Array },
  nearThreshold: (i: number) => boolean,
  tol: (i: number) => number,
): void {
  let skipped = 0;
  for (let i = 0; i < want.length; i++) {
    if (nearThreshold(i)) {
      skipped++;
      continue;
    }
    if (!(Math.abs(got[i] - want[i]) <= tol(i))) {
      assert.fail(
        `${label}: [${i}] got ${got[i]}, want ${want[i]} (tol ${tol(i)})`,
      );
    }
  }
  assert.ok(
    skipped <= Math.max(1, want.length / 100),
    `${label}: ${skipped} near thresholds`,
  );
}

const nearHalf = (q: number, margin: number) =>
  Math.abs(Math.abs(q - Math.trunc(q)) - 0.5) < margin;

test.gpu(
  "webgpu backend: weight and activation fake-quant match the cpu backend",
  withBoth(async (both) => {
    const modes: { mode: WeightQuantMode; dynamicThreshold?: boolean }[] = [
      { mode: "ternary" },
      { mode: "ternary", dynamicThreshold: true },
      { mode: "binary" },
      { mode: "eightbit" },
      { mode: "f16" },
    ];
    await fc.assert(
      fc.asyncProperty(
        quantCase,
        fc.constantFrom(...modes),
        async ({ rows, cols, lambda, seed }, m) => {
          const n = rows * cols;
          // f16: magnitudes from 2^-26 to 2^13 cover f16 normals, subnormals and underflow
          // (the CPU refuses |w| ≥ 65520, so overflow is not compared).
          const w = m.mode === "f16"
            ? f16Input(n, seed)
            : quantInput(rows, cols, seed, 0.05);
          const pw = both.upload(w);
          const out = both.poisoned(n);
          const o = {
            rows,
            cols,
            lambda,
            dynamicThreshold: m.dynamicThreshold,
          };
          both.run((be, t) => be.fakeQuantWeights(t(pw), t(out), m.mode, o));
          let sum = 0;
          for (const v of w) sum += Math.abs(v);
          const gamma = sum / n;
          const rowMax = (i: number) => {
            const r = Math.floor(i / cols);
            let mx = 0;
            for (let j = 0; j < cols; j++) {
              mx = Math.max(mx, Math.abs(w[r * cols + j]));
            }
            return mx;
          };
          const near = (i: number): boolean => {
            const a = Math.abs(w[i]);
            switch (m.mode) {
              case "ternary":
                return m.dynamicThreshold
                  ? Math.abs(a - 0.7 * gamma) < 1e-5 * gamma
                  : Math.abs(a / (gamma + QUANT_EPS) - 0.5) < 1e-5;
              case "eightbit":
                return nearHalf(
                  w[i] / (Math.max(rowMax(i), QUANT_EPS) / 127),
                  1e-4,
                );
              default:
                return false;
            }
          };
          // Scales agree to a few ulp; the blend (1 − λ)·w + λ·q adds one rounding.
          const tol = (i: number) =>
            2e-6 *
            (Math.abs(w[i]) + (m.mode === "f16" ? 0 : gamma + rowMax(i)));
          assertQuant(
            `${m.mode}${
              m.dynamicThreshold ? " dyn" : ""
            } ${rows}×${cols} λ=${lambda}`,
            await both.read(out),
            near,
            tol,
          );
          // In place (out = w) gives what the out-of-place call gave. (Not compared with
          // the CPU backend, whose in-place blend reads the already quantized values.)
          const outOfPlace = await both.gpu.read(out.g);
          both.gpu.fakeQuantWeights(pw.g, pw.g, m.mode, o);
          assert.deepEqual(await both.gpu.read(pw.g), outOfPlace, "in place");
          both.releaseAll();
        },
      ),
      { numRuns: 25 },
    );

    await fc.assert(
      fc.asyncProperty(quantCase, async ({ rows, cols, lambda, seed }) => {
        const n = rows * cols;
        const x = quantInput(rows, cols, seed, 4);
        const px = both.upload(x);
        const out = both.poisoned(n);
        both.run((be, t) =>
          be.fakeQuantActivations(t(px), t(out), { rows, cols, lambda })
        );
        const near = (i: number) => {
          const r = Math.floor(i / cols);
          let mx = 0;
          for (let j = 0; j < cols; j++) {
            mx = Math.max(mx, Math.abs(x[r * cols + j]));
          }
          return nearHalf(x[i] * 127 / Math.max(mx, QUANT_EPS), 1e-4);
        };
        assertQuant(
          `act ${rows}×${cols} λ=${lambda}`,
          await both.read(out),
          near,
          (i) => 1e-6 * (Math.abs(x[i]) + 4),
        );
        both.releaseAll();
      }),
      { numRuns: 10 },
    );

    // The ternary hard quantizer takes exactly three values (0 and ±γ), as on the CPU.
    const w = quantInput(3, 65, 7, 0.05);
    const pw = both.upload(w);
    const out = both.poisoned(w.length);
    both.run((be, t) =>
      be.fakeQuantWeights(t(pw), t(out), "ternary", {
        rows: 3,
        cols: 65,
        lambda: 1,
      })
    );
    const { got } = await both.read(out);
    assert.equal(new Set([...got].map(Math.abs)).size, 2);
    assert.throws(
      () =>
        both.gpu.fakeQuantWeights(pw.g, out.g, "int4" as WeightQuantMode, {
          rows: 3,
          cols: 65,
          lambda: 1,
        }),
      /mode must be/,
    );
    assert.throws(() =>
      both.gpu.fakeQuantActivations(pw.g, out.g, {
        rows: 3,
        cols: 65,
        lambda: 2,
      }), /lambda must be in \[0, 1\]/);
    both.releaseAll();
  }),
);

test.gpu(
  "webgpu backend: embedding, norms, RoPE, attention and activations match the cpu backend",
  withBoth(async (both) => {
    // Embedding: repeated ids, gradient added into a pre-filled table gradient.
    await fc.assert(
      fc.asyncProperty(
        dims,
        fc.integer({ min: 1, max: 13 }),
        async ({ rows: tokens, cols: dim, seed }, vocab) => {
          const next = rng(seed);
          const table = both.upload(uniform(next, vocab * dim));
          const ids = both.upload(
            Int32Array.from(
              { length: tokens },
              () => Math.floor(next() * vocab),
            ),
          );
          const out = both.poisoned(tokens * dim);
          const dout = both.upload(uniform(next, tokens * dim));
          const dtable = both.upload(uniform(next, vocab * dim));
          const shape = { vocab, dim };
          both.run((be, t) => {
            be.embedding(t(table), t(ids), t(out), shape);
            be.embeddingBackward(t(dout), t(ids), t(dtable), shape);
          });
          assertNear("embedding", await both.read(out), 0, 0);
          assertNear("embeddingBackward", await both.read(dtable), 4e-7);
          assert.throws(
            () => both.gpu.embedding(table.g, ids.g, out.g, { vocab: 0, dim }),
            /shape.vocab/,
          );
          both.releaseAll();
        },
      ),
      { numRuns },
    );

    // RMSNorm and LayerNorm, forward and accumulating backward.
    await fc.assert(
      fc.asyncProperty(dims, async ({ rows, cols: dim, seed }) => {
        const next = rng(seed);
        const x = both.upload(uniform(next, rows * dim, 2));
        const g = both.upload(uniform(next, dim));
        const bias = both.upload(uniform(next, dim));
        const dout = both.upload(uniform(next, rows * dim));
        const out = both.poisoned(rows * dim), rstd = both.poisoned(rows);
        const lnOut = both.poisoned(rows * dim),
          mean = both.poisoned(rows),
          lnRstd = both.poisoned(rows);
        const grads = [rows * dim, dim, rows * dim, dim, dim].map((k) =>
          both.upload(uniform(next, k))
        );
        const [dx, dg, lnDx, lnDw, lnDb] = grads;
        const [dx0, dg0, dw0, db0] = await Promise.all(
          [dx, dg, lnDw, lnDb].map(async (p) => (await both.read(p)).want),
        );
        const shape = { rows, dim, eps: 1e-5 };
        both.run((be, t) => {
          be.rmsnorm(t(x), t(g), t(out), t(rstd), shape);
          be.rmsnormBackward(t(dout), t(x), t(g), t(rstd), t(dx), t(dg), shape);
          be.layernorm(
            t(x),
            t(g),
            t(bias),
            t(lnOut),
            t(mean),
            t(lnRstd),
            shape,
          );
          be.layernormBackward(
            t(dout),
            t(x),
            t(g),
            t(mean),
            t(lnRstd),
            t(lnDx),
            t(lnDw),
            t(lnDb),
            shape,
          );
        });
        const label = `${rows}×${dim}`;
        assertNear(`rmsnorm ${label}`, await both.read(out), 1e-6);
        assertNear(`rmsnorm rstd ${label}`, await both.read(rstd), 1e-6);
        // x − mean cancels when dim is tiny (2): f32 loses ~|x|/|x − mean| bits there,
        // seen as 2.2e-6 relative (seed 651472526, 3×2); 4e-6 bounds it.
        assertNear(`layernorm ${label}`, await both.read(lnOut), 4e-6);
        assertNear(
          `layernorm mean ${label}`,
          await both.read(mean),
          1e-6,
          1e-7,
        );
        assertNear(`layernorm rstd ${label}`, await both.read(lnRstd), 1e-6);
        // dx = r·(d − mean(d) − x̂·mean(d·x̂)), d = dy·w, cancels when dim is
        // tiny (at dim 2 it is r·(d₀ − d₁)/2·ε·r²): f32 leaves a few ulps of
        // the terms before they cancel, not of dx, and an ulp of r moves x̂ by
        // as much. Seed 1031438188 (2×2): dx off by 3.5e-6, terms of ~60.
        const [xs, gs, dys, mus, rs] = await Promise.all(
          [x, g, dout, mean, lnRstd].map(async (p) =>
            (await both.read(p)).want
          ),
        );
        const terms = new Float64Array(rows * dim);
        for (let r = 0; r < rows; r++) {
          let md = 0, mdx = 0;
          for (let j = 0; j < dim; j++) {
            const d = dys[r * dim + j] * gs[j];
            md += d / dim;
            mdx += d * (xs[r * dim + j] - mus[r]) * rs[r] / dim;
          }
          for (let j = 0; j < dim; j++) {
            const xhat = (xs[r * dim + j] - mus[r]) * rs[r];
            terms[r * dim + j] = rs[r] * (Math.abs(dys[r * dim + j] * gs[j]) +
              Math.abs(md) + Math.abs(xhat * mdx));
          }
        }
        assertNear(
          `layernorm dx ${label}`,
          await both.read(lnDx),
          2e-6,
          (i) => 2 ** -21 * terms[i],
        );
        // RMSNorm's dx = r·d − r³·x·mean(d·x), d = dy·g, cancels the same way
        // where x² is not much above eps (dim 1: r·d·eps/(x² + eps)): seed
        // 622886918 (3×1), off by 1.4e-6 where dx was 0.3, terms of ~100.
        const rmsRstd = (await both.read(rstd)).want;
        const rmsTerms = Float64Array.from(dx0, Math.abs);
        for (let r = 0; r < rows; r++) {
          let mdx = 0;
          for (let j = 0; j < dim; j++) {
            mdx += Math.abs(dys[r * dim + j] * gs[j] * xs[r * dim + j]) / dim;
          }
          for (let j = 0; j < dim; j++) {
            rmsTerms[r * dim + j] += rmsRstd[r] *
                Math.abs(dys[r * dim + j] * gs[j]) +
              rmsRstd[r] ** 3 * Math.abs(xs[r * dim + j]) * mdx;
          }
        }
        assertNear(
          `rmsnorm dx ${label}`,
          await both.read(dx),
          2e-6,
          (i) => 2 ** -21 * rmsTerms[i],
        );
        // dg, dw and db add sums over the rows into pre-filled gradients,
        // which cancel too (a 3×1 case: db off by 6e-8 where it was 0.009).
        const dgTerms = Float64Array.from(dg0, Math.abs);
        const dwTerms = Float64Array.from(dw0, Math.abs);
        const dbTerms = Float64Array.from(db0, Math.abs);
        for (let r = 0; r < rows; r++) {
          for (let j = 0; j < dim; j++) {
            const dy = dys[r * dim + j];
            dgTerms[j] += Math.abs(dy * xs[r * dim + j] * rmsRstd[r]);
            dwTerms[j] += Math.abs(dy * (xs[r * dim + j] - mus[r]) * rs[r]);
            dbTerms[j] += Math.abs(dy);
          }
        }
        assertNear(
          `rmsnorm dg ${label}`,
          await both.read(dg),
          2e-6,
          (j) => 2 ** -21 * dgTerms[j],
        );
        assertNear(
          `layernorm dw ${label}`,
          await both.read(lnDw),
          2e-6,
          (j) => 2 ** -21 * dwTerms[j],
        );
        assertNear(
          `layernorm dbias ${label}`,
          await both.read(lnDb),
          2e-6,
          (j) => 2 ** -21 * dbTerms[j],
        );
        both.releaseAll();
      }),
      { numRuns, examples: [[{ rows: 3, cols: 1, seed: 622886918 }]] },
    );

    // RoPE (both pairings, a position offset) and attention with grouped KV heads.
    const attn = fc.record({
      batch: fc.integer({ min: 1, max: 2 }),
      seqLen: fc.integer({ min: 1, max: 11 }),
      numKvHeads: fc.integer({ min: 1, max: 2 }),
      group: fc.integer({ min: 1, max: 3 }),
      headDim: fc.integer({ min: 1, max: 9 }).map((h) => 2 * h),
      style: fc.constantFrom("neox" as const, "interleaved" as const),
      posOffset: fc.integer({ min: 0, max: 5 }),
      seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    });
    await fc.assert(
      fc.asyncProperty(
        attn,
        async (
          { batch, seqLen, numKvHeads, group, headDim, style, posOffset, seed },
        ) => {
          const next = rng(seed);
          const H = numKvHeads * group;
          const nq = batch * seqLen * H * headDim,
            nk = batch * seqLen * numKvHeads * headDim;
          const q = both.upload(uniform(next, nq)),
            k = both.upload(uniform(next, nk)),
            v = both.upload(uniform(next, nk));
          const rq = both.poisoned(nq), drq = both.upload(uniform(next, nq));
          const out = both.poisoned(nq),
            probs = both.poisoned(batch * H * seqLen * seqLen);
          const dout = both.upload(uniform(next, nq));
          const dq = both.upload(uniform(next, nq)),
            dk = both.upload(uniform(next, nk)),
            dv = both.upload(uniform(next, nk));
          const rope = {
            batch,
            seqLen,
            heads: H,
            headDim,
            base: 10000,
            style,
            posOffset,
          };
          const shape = { batch, seqLen, numHeads: H, numKvHeads, headDim };
          both.run((be, t) => {
            be.rope(t(q), t(rq), rope);
            be.ropeBackward(t(dout), t(drq), rope);
            be.attention(t(rq), t(k), t(v), t(out), t(probs), shape);
            be.attentionBackward(
              t(dout),
              t(rq),
              t(k),
              t(v),
              t(probs),
              t(dq),
              t(dk),
              t(dv),
              shape,
            );
          });
          const label = JSON.stringify({
            batch,
            seqLen,
            H,
            numKvHeads,
            headDim,
            style,
            posOffset,
          });
          assertNear(`rope ${label}`, await both.read(rq), 1e-6);
          assertNear(`ropeBackward ${label}`, await both.read(drq), 1e-6);
          assertNear(`attention ${label}`, await both.read(out), 2e-6);
          assertNear(`attention dq ${label}`, await both.read(dq), 4e-6);
          assertNear(`attention dk ${label}`, await both.read(dk), 4e-6);
          assertNear(`attention dv ${label}`, await both.read(dv), 4e-6);
          both.releaseAll();
        },
      ),
      { numRuns: 10 },
    );

    // Activations.
    await fc.assert(
      fc.asyncProperty(
        dims,
        fc.constantFrom("silu" as const, "relu2" as const),
        async ({ rows, cols, seed }, kind) => {
          const n = rows * cols;
          const next = rng(seed);
          const x = both.upload(uniform(next, n, 6));
          const out = both.poisoned(n);
          const dout = both.upload(uniform(next, n)),
            dx = both.upload(uniform(next, n));
          both.run((be, t) => {
            be.activation(kind, t(x), t(out));
            be.activationBackward(kind, t(dout), t(x), t(dx));
          });
          assertNear(`${kind}`, await both.read(out), 1e-6);
          assertNear(`${kind} backward`, await both.read(dx), 1e-6);
          both.releaseAll();
        },
      ),
      { numRuns },
    );
  }),
);

test.gpu(
  "webgpu backend: cross-entropy, sum of squares and AdamW match the cpu backend",
  withBoth(async (both) => {
    const ce = fc.record({
      rows: fc.integer({ min: 1, max: 9 }),
      vocab: fc.integer({ min: 1, max: 600 }),
      smoothing: fc.constantFrom(0, 0.1, 1),
      ignoreIndex: fc.constantFrom(undefined, -100, 0),
      ignoreAll: fc.boolean(),
      scale: fc.double({ min: 0.1, max: 3, noNaN: true }),
      seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    });
    await fc.assert(
      fc.asyncProperty(
        ce,
        async (
          { rows, vocab, smoothing, ignoreIndex, ignoreAll, scale, seed },
        ) => {
          const next = rng(seed);
          const ignore = ignoreIndex ?? -1;
          const t = Int32Array.from(
            { length: rows },
            () =>
              ignoreAll || next() < 0.2 ? ignore : Math.floor(next() * vocab),
          );
          const logits = both.upload(uniform(next, rows * vocab, 5));
          const targets = both.upload(t);
          const probs = both.poisoned(rows * vocab), losses = both.poisoned(2);
          const dlogits = both.upload(uniform(next, rows * vocab));
          const shape = { rows, vocab, labelSmoothing: smoothing, ignoreIndex };
          both.run((be, s) => {
            be.crossEntropy(s(logits), s(targets), s(probs), s(losses), shape);
            be.crossEntropyBackward(
              s(probs),
              s(targets),
              s(dlogits),
              scale,
              shape,
            );
          });
          const label = JSON.stringify({
            rows,
            vocab,
            smoothing,
            ignoreIndex,
            ignoreAll,
          });
          assertNear(`probs ${label}`, await both.read(probs), 2e-6);
          assertNear(`losses ${label}`, await both.read(losses), 2e-6);
          assertNear(`dlogits ${label}`, await both.read(dlogits), 2e-6);
          assert.throws(
            () =>
              both.gpu.crossEntropy(logits.g, targets.g, probs.g, losses.g, {
                rows,
                vocab: 0,
              }),
            /shape.vocab/,
          );
          both.releaseAll();
        },
      ),
      { numRuns: 10 },
    );
    const bad = both.upload(Int32Array.of(0, 5));
    const l = both.poisoned(2),
      p = both.poisoned(4),
      lg = both.upload(new Float32Array(4));
    assert.throws(
      () => both.gpu.crossEntropy(lg.g, bad.g, p.g, l.g, { rows: 2, vocab: 2 }),
      /targets\[1\] must be -1 \(ignored\)/,
    );
    both.releaseAll();

    // sumSquares over tensors of odd sizes (one empty), also into one of its inputs.
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 3000 }), { maxLength: 5 }),
        fc.integer(),
        async (sizes, seed) => {
          const next = rng(seed);
          const ts = sizes.map((k) => both.upload(uniform(next, k)));
          const out = both.poisoned(1);
          both.run((be, s) => be.sumSquares(ts.map(s), s(out)));
          assertNear(`sumSquares ${sizes}`, await both.read(out), 2e-6);
          // Into the last input: its sum must use its value before the write.
          const last = ts.at(-1);
          if (last !== undefined && last.c.size > 0) {
            both.run((be, s) => be.sumSquares(ts.map(s), s(last)));
            const { got, want } = await both.read(last);
            assertNear("sumSquares into an input", {
              got: got.subarray(0, 1),
              want: want.subarray(0, 1),
            }, 2e-6);
          }
          both.releaseAll();
        },
      ),
      { numRuns },
    );

    // AdamW with and without clipping; the clip scale comes from sumSquares on the device.
    const adam = fc.record({
      n: fc.integer({ min: 1, max: 5000 }),
      lr: fc.double({ min: 1e-4, max: 1e-1, noNaN: true }),
      weightDecay: fc.constantFrom(0, 0.1),
      step: fc.integer({ min: 1, max: 50 }),
      // maxNorm as a multiple of the gradient norm: clipping on (< 1) or off.
      clip: fc.constantFrom(Infinity, 0.01, 0.8, 1.5),
      seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    });
    await fc.assert(
      fc.asyncProperty(
        adam,
        async ({ n, lr, weightDecay, step, clip, seed }) => {
          const next = rng(seed);
          const pv = uniform(next, n);
          const gv = uniform(next, n, 0.01);
          const maxNorm = clip * Math.hypot(...gv);
          const p = both.upload(pv), g = both.upload(gv);
          const m = both.upload(uniform(next, n, 0.01));
          const v = both.upload(
            Float32Array.from(uniform(next, n, 1e-4), Math.abs),
          );
          const sumSq = both.poisoned(1);
          const hyper = {
            lr,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weightDecay,
            step,
          };
          both.run((be, s) => {
            be.sumSquares([s(g)], s(sumSq));
            be.adamw(s(p), s(g), s(m), s(v), hyper, s(sumSq), maxNorm);
          });
          const label = JSON.stringify({ n, lr, weightDecay, step, maxNorm });
          // The f32 update is within a few ulp of the f64 one, relative to lr.
          assertNear(`adamw p ${label}`, await both.read(p), 2e-7, 4e-6 * lr);
          assertNear(`adamw m ${label}`, await both.read(m), 2e-6);
          assertNear(`adamw v ${label}`, await both.read(v), 2e-6);
          assert.throws(
            () => both.gpu.adamw(p.g, g.g, m.g, v.g, hyper, sumSq.g, 0),
            /maxNorm must be > 0/,
          );
          assert.throws(() =>
            both.gpu.adamw(
              p.g,
              g.g,
              m.g,
              v.g,
              { ...hyper, step: 0 },
              sumSq.g,
              1,
            ), /hyper.step/);
          both.releaseAll();
        },
      ),
      { numRuns: 8 },
    );
  }),
);

// The tiny preset (vocab 512, hidden 64, 2 layers, SwiGLU + SubLN + RoPE, tied
// embeddings, ternary blocks) on 2 × 32 tokens, every 7th target ignored.
test.gpu("webgpu backend: a tiny-model training step matches the cpu backend", async () => {
  const gpu = await WebGpuBackend.create({ allowFallback: true });
  const cfg = preset("tiny");
  const bitMap = resolveBitMap(cfg);
  const batch = 2, seqLen = 32, rows = batch * seqLen;
  const next = rng(11);
  const ids = Int32Array.from(
    { length: rows },
    () => Math.floor(next() * cfg.vocab_size),
  );
  const targets = Int32Array.from(
    { length: rows },
    (_, i) => i % 7 === 3 ? -1 : Math.floor(next() * cfg.vocab_size),
  );
  const models = [cpu, gpu].map((b) => OneBitLlm.init(cfg, bitMap, b, 5));
  const inputs = [cpu, gpu].map((b) => ({
    ids: b.upload(ids),
    targets: b.upload(targets),
  }));
  /** Loss and gradients of one forward and backward at λ on both backends: [cpu, gpu]. */
  const lossAndGrads = (lambda: number) =>
    Promise.all(models.map(async (model, i) => {
      const b = model.backend;
      model.zeroGrads();
      const tape = new Tape(b);
      const loss = model.loss(tape, inputs[i].ids, inputs[i].targets, {
        batch,
        seqLen,
        lambda,
      });
      tape.backward(loss, 1);
      const value = await b.read(loss.value);
      tape.reset();
      const grads = new Map<string, Float32Array>();
      for (const [name, g] of model.grads) grads.set(name, await b.read(g));
      return { loss: value, grads };
    }));
  try {
    // λ = 1 (hard ternary quantization): a weight within rounding of a threshold
    // may get another code on the GPU (f32 γ), which moves the loss by O(γ·|x|)
    // through a few logits: 1e-3 relative leaves room for a few such flips.
    const [hardCpu, hardGpu] = await lossAndGrads(1);
    assertNear("λ = 1 losses", { got: hardGpu.loss, want: hardCpu.loss }, 1e-3);
    // λ = 0: no thresholds; the backends differ only in f32 summation order, about
    // 1e-6 normwise through the two blocks (measured ≤ 1.4e-6): 2e-5 allows 10×.
    const [want, got] = await lossAndGrads(0);
    assertNear("λ = 0 losses", { got: got.loss, want: want.loss }, 1e-5);
    assert.equal(want.grads.size, models[0].specs.length);
    for (const [name, g] of want.grads) {
      assertNear(`d ${name}`, { got: got.grads.get(name)!, want: g }, 2e-5);
    }
    // One AdamW step from those gradients (global-norm clipping at 1 on both).
    const before = new Map<string, Float32Array>();
    for (const [name, p] of models[0].params) {
      before.set(name, await cpu.read(p));
    }
    const lr = 1e-2, eps = 1e-8;
    for (const m of models) {
      new AdamW(m).step({ lr, weightDecay: 0.1, step: 1 }, 1);
    }
    let sumSq = 0;
    for (const g of want.grads.values()) for (const v of g) sumSq += v * v;
    const clip = Math.min(1, 1 / (Math.sqrt(sumSq) + 1e-6));
    for (const [name, p] of models[0].params) {
      const pc = await cpu.read(p),
        pg = await gpu.read(models[1].params.get(name)!);
      const gc = want.grads.get(name)!, gg = got.grads.get(name)!;
      const p0 = before.get(name)!;
      // At step 1 the update is lr·x/(|x| + ε) with x the clipped gradient, whose
      // slope ε/(|x| + ε)² turns the measured gradient difference δ into an update
      // difference: large only where |x| is within a few δ of 0.
      for (let i = 0; i < pc.length; i++) {
        const x = clip * Math.abs(gc[i]);
        const d = clip * (Math.abs(gg[i] - gc[i]) + 1e-6 * Math.abs(gc[i]));
        const slope = Math.min(2, (d * eps) / (Math.max(x - d, 0) + eps) ** 2);
        const tol = lr * (slope + 1e-6) + 4e-7 * Math.abs(p0[i]);
        if (!(Math.abs(pg[i] - pc[i]) <= tol)) {
          assert.fail(
            `AdamW ${name}[${i}]: got ${pg[i]}, want ${
              pc[i]
            } (tol ${tol}, grad ${gc[i]} vs ${gg[i]})`,
          );
        }
      }
      assert.ok(pc.some((v, i) => v !== p0[i]), `${name} was updated`);
    }
  } finally {
    gpu.destroy();
  }
});
