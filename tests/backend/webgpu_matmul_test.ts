// Both matmul variants against an f64 reference on random shapes that are not
// multiples of any tile (8×4 register tile, 64×64 shared tile, 16-deep K slices).
import fc from "fast-check";
import { test } from "./gpu_gate.ts";
import type { MatmulVariant } from "../../src/backend/webgpu/kernels.ts";
import {
  assertClose,
  type Check,
  type GpuContext,
  poisoned,
  randomArray,
  rng,
  runBatch,
  U,
  uploadPadded,
  withGpu,
} from "./webgpu_harness.ts";

interface MatmulCase {
  readonly m: number;
  readonly n: number;
  readonly k: number;
  readonly batch: number;
  readonly transA: boolean;
  readonly transB: boolean;
  readonly accumulate: boolean;
  readonly alpha: number;
  readonly seed: number;
}

const dim = (edges: number[], max: number) =>
  fc.oneof(fc.constantFrom(...edges), fc.integer({ min: 1, max }));

const matmulCase: fc.Arbitrary<MatmulCase> = fc.record({
  m: dim([1, 3, 17, 33, 65], 70),
  n: dim([1, 5, 31, 65], 70),
  k: dim([1, 7, 16, 17, 129], 130),
  batch: fc.integer({ min: 1, max: 3 }),
  transA: fc.boolean(),
  transB: fc.boolean(),
  accumulate: fc.boolean(),
  alpha: fc.constantFrom(1, -0.5, 2),
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
});

// C = alpha·op(A)·op(B) (+ C0), in f64, with Σ|alpha·a·b| + |C0| per element for the
// error bound.
function reference(
  c: MatmulCase,
  a: Float32Array,
  b: Float32Array,
  c0: Float32Array | null,
) {
  const { m, n, k, batch } = c;
  const want = new Float64Array(batch * m * n);
  const mag = new Float64Array(batch * m * n);
  for (let z = 0; z < batch; z++) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        let sa = 0;
        for (let p = 0; p < k; p++) {
          const av = a[z * m * k + (c.transA ? p * m + i : i * k + p)];
          const bv = b[z * k * n + (c.transB ? j * k + p : p * n + j)];
          s += av * bv;
          sa += Math.abs(av * bv);
        }
        const idx = z * m * n + i * n + j;
        want[idx] = c.alpha * s + (c0 ? c0[idx] : 0);
        mag[idx] = Math.abs(c.alpha) * sa + (c0 ? Math.abs(c0[idx]) : 0);
      }
    }
  }
  return { want, mag };
}

function recordCase(
  ctx: GpuContext,
  encoder: GPUCommandEncoder,
  release: GPUBuffer[],
  c: MatmulCase,
  variant: MatmulVariant,
): Check {
  const next = rng(c.seed);
  const a = randomArray(next, c.batch * c.m * c.k);
  const b = randomArray(next, c.batch * c.k * c.n);
  const c0 = c.accumulate ? randomArray(next, c.batch * c.m * c.n) : null;
  const ga = uploadPadded(ctx.pool, a);
  const gb = uploadPadded(ctx.pool, b);
  const gc = c0 ? ctx.pool.upload(c0) : poisoned(ctx.pool, c.batch * c.m * c.n);
  release.push(ga, gb, gc);
  ctx.kernels.matmul(encoder, { ...c, a: ga, b: gb, c: gc, variant });
  const { want, mag } = reference(c, a, b, c0);
  return {
    buffer: gc,
    length: want.length,
    // Recursive f32 summation of k products: |error| ≤ γ_k·Σ|a·b| with γ_k ≈ k·u; the
    // final alpha scaling and the C0 addition add 2u·(…); 2·(k + 2)·u is a safe bound.
    check: (got) =>
      assertClose(
        `${variant} ${JSON.stringify(c)}`,
        got,
        want,
        (i) => 2 * (c.k + 2) * U * mag[i] + 1e-30,
      ),
  };
}

for (const variant of ["register", "shared"] as const) {
  test.gpu(`webgpu matmul (${variant}) matches the f64 reference`, () =>
    withGpu(async (ctx) => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(matmulCase, { minLength: 12, maxLength: 12 }),
          (cases) =>
            runBatch(
              ctx,
              (encoder, release) =>
                cases.map((c) => recordCase(ctx, encoder, release, c, variant)),
            ),
        ),
        {
          numRuns: 3,
          examples: [[[
            {
              m: 1,
              n: 1,
              k: 1,
              batch: 1,
              transA: false,
              transB: false,
              accumulate: false,
              alpha: 1,
              seed: 1,
            },
            {
              m: 3,
              n: 5,
              k: 7,
              batch: 2,
              transA: true,
              transB: false,
              accumulate: true,
              alpha: 1,
              seed: 2,
            },
            {
              m: 17,
              n: 31,
              k: 129,
              batch: 1,
              transA: false,
              transB: true,
              accumulate: false,
              alpha: -0.5,
              seed: 3,
            },
            {
              m: 33,
              n: 65,
              k: 17,
              batch: 1,
              transA: true,
              transB: true,
              accumulate: true,
              alpha: 2,
              seed: 4,
            },
            {
              m: 65,
              n: 65,
              k: 16,
              batch: 3,
              transA: false,
              transB: false,
              accumulate: false,
              alpha: 1,
              seed: 5,
            },
            {
              m: 70,
              n: 3,
              k: 1,
              batch: 1,
              transA: true,
              transB: true,
              accumulate: false,
              alpha: 1,
              seed: 6,
            },
          ]]],
        },
      );
    }));
}

test.gpu("webgpu matmul broadcasts B with strideB = 0 and rejects undersized buffers", () =>
  withGpu(async (ctx) => {
    const next = rng(7);
    const [m, n, k, batch] = [5, 9, 11, 3];
    const a = randomArray(next, batch * m * k);
    const b = randomArray(next, k * n);
    await runBatch(ctx, (encoder, release) => {
      const ga = uploadPadded(ctx.pool, a);
      const gb = uploadPadded(ctx.pool, b);
      const gc = poisoned(ctx.pool, batch * m * n);
      release.push(ga, gb, gc);
      ctx.kernels.matmul(encoder, {
        a: ga,
        b: gb,
        c: gc,
        m,
        n,
        k,
        batch,
        strideB: 0,
      });
      const want = new Float64Array(batch * m * n);
      for (let z = 0; z < batch; z++) {
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            let s = 0;
            for (let p = 0; p < k; p++) {
              s += a[z * m * k + i * k + p] * b[p * n + j];
            }
            want[z * m * n + i * n + j] = s;
          }
        }
      }
      return [{
        buffer: gc,
        length: want.length,
        check: (got) =>
          assertClose("broadcast B", got, want, () => 2 * (k + 2) * U * k),
      }];
    });
    const small = ctx.pool.acquire(16);
    const encoder = ctx.gpu.device.createCommandEncoder();
    let message = "";
    try {
      ctx.kernels.matmul(encoder, {
        a: small,
        b: small,
        c: small,
        m: 9,
        n: 9,
        k: 9,
      });
    } catch (e) {
      message = (e as Error).message;
    }
    if (!message.startsWith("a holds 64 4-byte elements but 81")) {
      throw new Error(`unexpected error "${message}"`);
    }
    ctx.pool.release(small);
  }));
