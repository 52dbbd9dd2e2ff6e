// Row-wise kernels with workgroup reductions: RMSNorm forward/backward and per-token
// int8 activation fake-quantization, against f64 references on ragged shapes.
// (Softmax cross-entropy is checked through the backend: webgpu_backend_test.ts.)
import fc from "fast-check";
import { test } from "./gpu_gate.ts";
import {
  assertClose,
  type Check,
  type GpuContext,
  poisoned,
  randomArray,
  rng,
  roundHalfEven,
  runBatch,
  U,
  withGpu,
} from "./webgpu_harness.ts";

interface RowCase {
  readonly rows: number;
  readonly dim: number;
  readonly seed: number;
}

const rowCase: fc.Arbitrary<RowCase> = fc.record({
  rows: fc.oneof(fc.constantFrom(1, 3, 17), fc.integer({ min: 1, max: 40 })),
  dim: fc.oneof(
    fc.constantFrom(1, 5, 127, 128, 129, 300),
    fc.integer({ min: 1, max: 400 }),
  ),
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
});

function rmsNormChecks(
  ctx: GpuContext,
  encoder: GPUCommandEncoder,
  release: GPUBuffer[],
  { rows, dim, seed }: RowCase,
): Check[] {
  const { pool, kernels } = ctx;
  const next = rng(seed);
  const eps = 1e-5;
  const x = randomArray(next, rows * dim, 3);
  const w = randomArray(next, dim, 2);
  const dy = randomArray(next, rows * dim);
  const dw0 = randomArray(next, dim);
  const gx = pool.upload(x);
  const gw = pool.upload(w);
  const gdy = pool.upload(dy);
  const gy = poisoned(pool, rows * dim);
  const gr = poisoned(pool, rows);
  const gdx = poisoned(pool, rows * dim);
  const gdw = pool.upload(dw0);
  release.push(gx, gw, gdy, gy, gr, gdx, gdw);
  kernels.rmsNormForward(encoder, {
    x: gx,
    weight: gw,
    out: gy,
    invRms: gr,
    rows,
    dim,
    eps,
  });
  kernels.rmsNormBackward(encoder, {
    x: gx,
    weight: gw,
    dy: gdy,
    invRms: gr,
    dx: gdx,
    dWeight: gdw,
    rows,
    dim,
    accumulateWeight: true,
  });

  const r = new Float64Array(rows);
  const y = new Float64Array(rows * dim);
  const yMag = new Float64Array(rows * dim);
  const dx = new Float64Array(rows * dim);
  const dxMag = new Float64Array(rows * dim);
  const dw = Float64Array.from(dw0);
  const dwMag = Float64Array.from(dw0, Math.abs);
  for (let i = 0; i < rows; i++) {
    let ss = 0;
    let dot = 0;
    let dotAbs = 0;
    for (let j = 0; j < dim; j++) {
      const v = x[i * dim + j];
      ss += v * v;
      dot += dy[i * dim + j] * w[j] * v;
      dotAbs += Math.abs(dy[i * dim + j] * w[j] * v);
    }
    r[i] = 1 / Math.sqrt(ss / dim + eps);
    const c = (dot / dim) * r[i] ** 3;
    const cMag = (dotAbs / dim) * r[i] ** 3;
    for (let j = 0; j < dim; j++) {
      const k = i * dim + j;
      y[k] = x[k] * r[i] * w[j];
      yMag[k] = Math.abs(y[k]);
      dx[k] = r[i] * w[j] * dy[k] - c * x[k];
      dxMag[k] = Math.abs(r[i] * w[j] * dy[k]) + cMag * Math.abs(x[k]);
      dw[j] += dy[k] * x[k] * r[i];
      dwMag[j] += Math.abs(dy[k] * x[k] * r[i]);
    }
  }
  // Each invocation sums ⌈dim/128⌉ terms, then a 7-level tree: the sums of squares
  // and dot products err by ≤ (dim/128 + 8)·u relative to the sum of magnitudes;
  // inverseSqrt adds 2 ULP. dWeight sums over rows sequentially: (rows + 2)·u.
  const rowTol = (dim / 128 + 16) * 4 * U;
  const label = `rmsnorm rows=${rows} dim=${dim} seed=${seed}`;
  return [
    {
      buffer: gr,
      length: rows,
      check: (got) => assertClose(`${label} r`, got, r, (i) => rowTol * r[i]),
    },
    {
      buffer: gy,
      length: rows * dim,
      check: (got) =>
        assertClose(`${label} y`, got, y, (i) => rowTol * yMag[i] + 1e-30),
    },
    {
      buffer: gdx,
      length: rows * dim,
      check: (got) =>
        assertClose(`${label} dx`, got, dx, (i) => rowTol * dxMag[i] + 1e-30),
    },
    {
      buffer: gdw,
      length: dim,
      check: (got) =>
        assertClose(
          `${label} dw`,
          got,
          dw,
          (j) => (rows + 4) * 4 * U * dwMag[j] + 1e-30,
        ),
    },
  ];
}

function actQuantChecks(
  ctx: GpuContext,
  encoder: GPUCommandEncoder,
  release: GPUBuffer[],
  { rows, dim, seed }: RowCase,
  lambda: number,
): Check[] {
  const { pool, kernels } = ctx;
  const next = rng(seed);
  const x = randomArray(next, rows * dim, 4);
  if (rows > 1) x.fill(0, 0, dim); // an all-zero row: s is clamped by eps, output 0
  const gx = pool.upload(x);
  const gout = poisoned(pool, rows * dim);
  release.push(gx, gout);
  kernels.activationFakeQuant(encoder, { x: gx, out: gout, rows, dim, lambda });
  const lam = Math.fround(lambda);
  const label = `actquant rows=${rows} dim=${dim} λ=${lambda} seed=${seed}`;
  return [{
    buffer: gout,
    length: rows * dim,
    check: (got) => {
      const bad: string[] = [];
      for (let i = 0; i < rows; i++) {
        let m = 0;
        for (let j = 0; j < dim; j++) m = Math.max(m, Math.abs(x[i * dim + j]));
        const s = 127 / Math.max(m, 1e-5);
        for (let j = 0; j < dim; j++) {
          const v = x[i * dim + j];
          const xs = v * s;
          // The kernel's s may differ from 127/m by a few ULP, so an x·s within
          // 1e-5 of a rounding boundary may round either way.
          const candidates =
            Math.abs(Math.abs(xs - Math.trunc(xs)) - 0.5) < 1e-5
              ? [Math.floor(xs), Math.ceil(xs)]
              : [roundHalfEven(xs)];
          const ok = candidates.some((q0) => {
            const q = Math.min(127, Math.max(-128, q0));
            const want = v + lam * (q / s - v);
            return Math.abs(got[i * dim + j] - want) <=
              16 * U * (Math.abs(v) + Math.abs(q / s)) + 1e-30;
          });
          if (!ok && bad.length < 5) {
            bad.push(`[${i},${j}] x=${v} got ${got[i * dim + j]}`);
          }
        }
      }
      if (bad.length > 0) throw new Error(`${label}: ${bad.join("; ")}`);
    },
  }];
}

test.gpu("webgpu RMSNorm forward and backward match the f64 reference", () =>
  withGpu(async (ctx) => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(rowCase, { minLength: 8, maxLength: 8 }),
        (cases) =>
          runBatch(
            ctx,
            (encoder, release) =>
              cases.flatMap((c) => rmsNormChecks(ctx, encoder, release, c)),
          ),
      ),
      {
        numRuns: 3,
        examples: [[[
          { rows: 1, dim: 1, seed: 1 },
          { rows: 3, dim: 129, seed: 2 },
          { rows: 17, dim: 300, seed: 3 },
        ]]],
      },
    );
  }));

test.gpu("webgpu per-token int8 activation fake-quant matches the reference", () =>
  withGpu(async (ctx) => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(rowCase, fc.constantFrom(0, 0.25, 1)), {
          minLength: 8,
          maxLength: 8,
        }),
        (cases) =>
          runBatch(
            ctx,
            (encoder, release) =>
              cases.flatMap(([c, lambda]) =>
                actQuantChecks(ctx, encoder, release, c, lambda)
              ),
          ),
      ),
      {
        numRuns: 3,
        examples: [[[[{ rows: 1, dim: 1, seed: 1 }, 1], [{
          rows: 4,
          dim: 129,
          seed: 2,
        }, 0.25]]]],
      },
    );
  }));
