/**
 * The integer BitLinear forward (`CpuBackend.ternaryLinear`, used by
 * `ops.bitLinear` at λ = 1 for ternary and binary weights) against two f32
 * evaluations of the same product:
 * - the f32 matmul of the fake-quantized operands, `xq · wqᵀ`: equal to float
 *   rounding only, since each of its products and partial sums rounds;
 * - the f32 matmul of their integer-valued codes, rescaled per token in the
 *   integer kernel's order ({@link codesLinear}): exact, so bit-identical —
 *   per call on random shapes, and over whole training runs.
 *
 * Why the training runs compare against the second: quantized training
 * amplifies any change of float rounding. Measured on the first model below
 * against `xq · wqᵀ` (the f32 path before): the forwards differ by an ulp
 * here and there, so the gradients do, and AdamW (which divides by √v) turns
 * that into weights differing by up to 4e-6 after step 1 (5,015 of 89,472).
 * Ternary: losses equal for 4 steps; at step 5 the first weight crosses a
 * code threshold, and the losses differ by 5e-6, then up to 4e-4 by step 20.
 * Binary: activation codes flip in the very first forward (12 of 122,880),
 * 7e-7 at step 1, 3e-3 by step 20. No tolerance short of that drift holds
 * for a different rounding; the exact f32 evaluation holds bit for bit.
 */
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect } from "effect";
import type { Backend, Tensor } from "../../src/backend/backend.ts";
import {
  CpuBackend,
  type CpuTensor,
} from "../../src/backend/cpu/cpu_backend.ts";
import {
  fakeQuantizeActivations,
  roundHalfEven,
  tokenCode,
  tokenScale,
} from "../../src/backend/numeric.ts";
import type { OneBitLlmConfig } from "../../src/common/config.ts";
import { PRESETS } from "../../src/common/presets.ts";
import {
  defaultSettings,
  initTraining,
  Trainer,
} from "../../src/train/trainer.ts";

const backend = await CpuBackend.create();

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const f32 = (t: Tensor) => (t as CpuTensor).data as Float32Array;

/** The lower bound of the row absmax in the int8 re-quantization (an f32). */
const EPS = Math.fround(1e-5);

/**
 * `y ← xq · wqᵀ` (the contract of `Backend.ternaryLinear`) as an f32 product
 * of integer-valued codes: `wq`'s codes are `wq / a` (−1, 0 or +1, exactly);
 * `xq`'s are re-quantized per token as the kernel does (`m = max(max|xq|, ε)`,
 * `s = fround(127 / m)`, `q = clamp(roundHalfEven(fround(xq·s)), −128, 127)`,
 * which gives back the codes of the fake quantizer); the backend's f32
 * matmul sums them exactly (every partial sum is an integer below k·128 <
 * 2^24), and each sum S is rescaled in the kernel's order,
 * `y = fround(S · fround(a · fround(m / 127)))`.
 */
function codesLinear(
  b: Backend,
  xq: Tensor,
  wq: Tensor,
  y: Tensor,
  shape: { readonly rows: number; readonly k: number; readonly n: number },
): void {
  const { rows, k, n } = shape;
  assert(k * 128 < 2 ** 24, `k = ${k}: f32 sums of codes would round`);
  const x = f32(xq), w = f32(wq);
  let a = 0;
  for (let i = 0; i < n * k && a === 0; i++) a = Math.abs(w[i]);
  const wc = new Float32Array(n * k);
  for (let i = 0; i < n * k; i++) wc[i] = a === 0 ? 0 : w[i] / a;
  const xc = new Float32Array(rows * k), scale = new Float32Array(rows);
  for (let t = 0; t < rows; t++) {
    let m = EPS;
    for (let i = 0; i < k; i++) m = Math.max(m, Math.abs(x[t * k + i]));
    const s = Math.fround(127 / m);
    for (let i = 0; i < k; i++) {
      const q = roundHalfEven(Math.fround(x[t * k + i] * s));
      xc[t * k + i] = Math.min(127, Math.max(-128, q));
    }
    scale[t] = Math.fround(a * Math.fround(m / 127));
  }
  const tx = b.upload(xc), tw = b.upload(wc), ts = b.zeros(rows * n);
  try {
    b.matmul(tx, tw, ts, { m: rows, n, k, transB: true });
    const sums = f32(ts), out = f32(y);
    for (let t = 0; t < rows; t++) {
      for (let j = 0; j < n; j++) {
        out[t * n + j] = Math.fround(sums[t * n + j] * scale[t]);
      }
    }
  } finally {
    for (const t of [tx, tw, ts]) b.release(t);
  }
}

Deno.test("re-quantizing xq gives back the codes of x", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 300 }),
      fc.constantFrom(1e-9, 1e-6, 1e-3, 1, 1e3, 1e6),
      fc.integer(),
      (k, scale, seed) => {
        const r = rng(seed);
        const x = Float32Array.from({ length: k }, () => (r() - 0.5) * scale);
        const xq = fakeQuantizeActivations(x, 1, k);
        const s = tokenScale("test", x, 0, k);
        let m = EPS;
        for (const v of xq) m = Math.max(m, Math.abs(v));
        const s2 = Math.fround(127 / m);
        for (let i = 0; i < k; i++) {
          assert.equal(
            tokenCode(Math.fround(xq[i] * s2)),
            tokenCode(x[i] * s),
            `element ${i} of ${k}`,
          );
        }
      },
    ),
    { numRuns: 300 },
  );
});

/** Asserts `got` and `want` equal bit for bit, naming the first element that is not. */
function assertBitEqual(got: Float32Array, want: Float32Array, what: string) {
  assert.equal(got.length, want.length, `${what}: length`);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  const i = g.findIndex((v, j) => v !== w[j]);
  assert(i < 0, `${what}[${i}] = ${got[i]}, f32 path ${want[i]}`);
}

type Mode = "ternary" | "binary" | "dynamic";

/** xq and wq as `ops.bitLinear` makes them at λ = 1, for random x and W. */
function quantizedOperands(
  o: {
    rows: number;
    k: number;
    n: number;
    mode: Mode;
    xScale: number;
    seed: number;
  },
): { xq: Tensor; wq: Tensor; release: () => void } {
  const { rows, k, n, mode, xScale } = o;
  const r = rng(o.seed);
  const x = backend.upload(
    Float32Array.from({ length: rows * k }, () => (r() - 0.5) * xScale),
  );
  const w = backend.upload(
    Float32Array.from({ length: n * k }, () => (r() - 0.5) * 0.1),
  );
  const xq = backend.zeros(rows * k), wq = backend.zeros(n * k);
  backend.fakeQuantActivations(x, xq, { rows, cols: k, lambda: 1 });
  backend.fakeQuantWeights(w, wq, mode === "binary" ? "binary" : "ternary", {
    rows: n,
    cols: k,
    lambda: 1,
    dynamicThreshold: mode === "dynamic",
  });
  backend.release(x);
  backend.release(w);
  return {
    xq,
    wq,
    release: () => [xq, wq].forEach((t) => backend.release(t)),
  };
}

const shapes = fc.record({
  rows: fc.integer({ min: 1, max: 37 }),
  k: fc.integer({ min: 1, max: 300 }),
  n: fc.integer({ min: 1, max: 41 }),
  mode: fc.constantFrom<Mode>("ternary", "binary", "dynamic"),
  xScale: fc.constantFrom(1e-7, 1e-3, 1, 300),
  seed: fc.integer(),
});

Deno.test("ternaryLinear equals the f32 product of the codes bit for bit", () => {
  fc.assert(
    fc.property(shapes, (o) => {
      const { rows, k, n } = o;
      const { xq, wq, release } = quantizedOperands(o);
      const yInt = backend.zeros(rows * n), yF32 = backend.zeros(rows * n);
      try {
        backend.ternaryLinear(xq, wq, yInt, { rows, k, n });
        codesLinear(backend, xq, wq, yF32, { rows, k, n });
        assertBitEqual(f32(yInt), f32(yF32), "y");
      } finally {
        release();
        backend.release(yInt);
        backend.release(yF32);
      }
    }),
    {
      numRuns: 60,
      // Depths of whole 64-weight blocks, more than one chunk of the kernel's
      // i16 accumulators, and a tall product on several tokens and rows.
      examples: [
        [{ rows: 5, k: 64, n: 3, mode: "ternary", xScale: 1, seed: 1 }],
        [{ rows: 9, k: 2048, n: 7, mode: "binary", xScale: 300, seed: 2 }],
        [{ rows: 70, k: 257, n: 130, mode: "dynamic", xScale: 1, seed: 3 }],
      ],
    },
  );
});

Deno.test("ternaryLinear agrees with the f32 product of the fake-quantized operands to float rounding", () => {
  fc.assert(
    fc.property(shapes, (o) => {
      const { rows, k, n } = o;
      const { xq, wq, release } = quantizedOperands(o);
      const yInt = backend.zeros(rows * n), yF32 = backend.zeros(rows * n);
      try {
        backend.ternaryLinear(xq, wq, yInt, { rows, k, n });
        backend.matmul(xq, wq, yF32, { m: rows, n, k, transB: true });
        const a = f32(xq), b = f32(wq), got = f32(yInt), want = f32(yF32);
        for (let t = 0; t < rows; t++) {
          for (let j = 0; j < n; j++) {
            // f32 rounding of k products and sums, relative to Σ|terms|.
            let mag = 0;
            for (let c = 0; c < k; c++) {
              mag += Math.abs(a[t * k + c] * b[j * k + c]);
            }
            const tol = (k + 4) * 2 ** -23 * mag + 1e-30;
            const d = Math.abs(got[t * n + j] - want[t * n + j]);
            assert(
              d <= tol,
              `y[${t},${j}] = ${got[t * n + j]}, f32 ${
                want[t * n + j]
              } (|d| ${d} > ${tol})`,
            );
          }
        }
      } finally {
        release();
        backend.release(yInt);
        backend.release(yF32);
      }
    }),
    { numRuns: 60 },
  );
});

Deno.test("ternaryLinear rejects weights with more than one magnitude", () => {
  const xq = backend.upload(new Float32Array(4).fill(1));
  const wq = backend.upload(Float32Array.from([0.5, -0.5, 0, 0.25]));
  const y = backend.zeros(1);
  try {
    let message = "";
    try {
      backend.ternaryLinear(xq, wq, y, { rows: 1, k: 4, n: 1 });
    } catch (e) {
      message = String(e);
    }
    assert(/not one scale/.test(message), message);
  } finally {
    for (const t of [xq, wq, y]) backend.release(t);
  }
});

/** `inner` with `ternaryLinear` replaced, so that `ops.bitLinear` runs `f32Path` at λ = 1. */
function withF32Path(inner: Backend, f32Path: typeof codesLinear): Backend {
  return new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop === "ternaryLinear") {
        return (xq: Tensor, wq: Tensor, y: Tensor, shape: never) =>
          f32Path(target, xq, wq, y, shape);
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/**
 * Losses of 20 steps of a small model with `mode` linears, all at λ = 1, and
 * its weights after them.
 */
async function run(
  b: Backend,
  mode: Mode,
  dims: { hidden: number; ffn: number },
): Promise<{ losses: number[]; weights: Float32Array[] }> {
  const linear = mode === "dynamic" ? "ternary" : mode;
  const config: OneBitLlmConfig = {
    ...PRESETS.tiny,
    vocab_size: 300,
    hidden_size: dims.hidden,
    num_layers: 2,
    intermediate_size: dims.ffn,
    max_seq_len: 32,
    use_dynamic_threshold: mode === "dynamic",
    layer_bit_map: { embedding: "f16", layer_modes: [linear, linear] },
  };
  const settings = defaultSettings(config, 20, {
    batch: 4,
    seqLen: 32,
    evalEvery: 0,
  });
  const r = rng(7);
  const tokens = Int32Array.from(
    { length: 20_000 },
    () => Math.floor(r() * 300),
  );
  const { model, optimizer } = initTraining(config, b, settings);
  const trainer = new Trainer(model, optimizer, tokens, settings);
  try {
    const losses: number[] = [];
    for (let i = 0; i < 20; i++) {
      const report = await Effect.runPromise(trainer.runStep());
      assert(report.lambda === 1, `step ${i + 1}: λ = ${report.lambda}`);
      losses.push(report.loss);
    }
    return {
      losses,
      weights: [...model.params.values()].map((t) => f32(t).slice()),
    };
  } finally {
    optimizer.release();
    model.release();
  }
}

for (const mode of ["ternary", "binary", "dynamic"] as const) {
  // Widths that fill whole 64-weight blocks and widths that leave them partial.
  for (const dims of [{ hidden: 64, ffn: 96 }, { hidden: 40, ffn: 72 }]) {
    Deno.test(`20 training steps (${mode}, hidden ${dims.hidden}, ffn ${dims.ffn}): integer forward losses and weights equal the f32 path's bit for bit`, async () => {
      const integer = await run(backend, mode, dims);
      const f32Path = await run(
        withF32Path(backend, codesLinear),
        mode,
        dims,
      );
      assert.deepEqual(integer.losses, f32Path.losses);
      integer.weights.forEach((w, i) =>
        assertBitEqual(w, f32Path.weights[i], `weight tensor ${i}`)
      );
    });
  }
}
