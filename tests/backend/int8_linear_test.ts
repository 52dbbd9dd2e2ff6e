/**
 * The integer `eightbit` BitLinear forward (`CpuBackend.int8Linear`) against
 * the f32 product of the fake-quantized operands.
 */
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { CpuBackend } from "../../src/backend/cpu/cpu_backend.ts";

const backend = await CpuBackend.create();

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

Deno.test("int8Linear agrees with the f32 product of the fake-quantized operands", () => {
  fc.assert(
    fc.property(
      fc.record({
        rows: fc.integer({ min: 1, max: 37 }),
        k: fc.integer({ min: 1, max: 300 }),
        n: fc.integer({ min: 1, max: 41 }),
        xScale: fc.constantFrom(1e-7, 1e-3, 1, 300),
        wScale: fc.constantFrom(1e-8, 0.1, 30),
        seed: fc.integer(),
      }),
      ({ rows, k, n, xScale, wScale, seed }) => {
        const r = rng(seed);
        const x = backend.upload(
          Float32Array.from({ length: rows * k }, () => (r() - 0.5) * xScale),
        );
        const w = backend.upload(
          Float32Array.from({ length: n * k }, () => (r() - 0.5) * wScale),
        );
        const xq = backend.zeros(rows * k), wq = backend.zeros(n * k);
        const yInt = backend.zeros(rows * n), yF32 = backend.zeros(rows * n);
        try {
          backend.fakeQuantActivations(x, xq, { rows, cols: k, lambda: 1 });
          backend.fakeQuantWeights(w, wq, "eightbit", {
            rows: n,
            cols: k,
            lambda: 1,
          });
          backend.int8Linear(xq, w, yInt, { rows, k, n });
          backend.matmul(xq, wq, yF32, { m: rows, n, k, transB: true });
          const a = xq.data as Float32Array, b = wq.data as Float32Array;
          const got = yInt.data as Float32Array;
          const want = yF32.data as Float32Array;
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
          for (const t of [x, w, xq, wq, yInt, yF32]) backend.release(t);
        }
      },
    ),
    { numRuns: 60 },
  );
});

Deno.test("int8Linear names a bad shape", () => {
  const t = backend.upload(new Float32Array(4));
  try {
    assert.throws(
      () => backend.int8Linear(t, t, t, { rows: 1, k: 4, n: 1.5 }),
      /int8Linear: n must be an integer/,
    );
    assert.throws(
      () => backend.int8Linear(t, t, t, { rows: 1, k: 3, n: 1 }),
      /xq must have 3 elements/,
    );
  } finally {
    backend.release(t);
  }
});
