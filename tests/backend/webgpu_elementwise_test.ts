// Element-wise kernels (add, axpy, scale, SiLU, ReLU², SwiGLU forward and backward)
// against f64 references, many lengths per submit, outputs NaN-poisoned.
import fc from "fast-check";
import { test } from "./gpu_gate.ts";
import {
  assertClose,
  type Check,
  type GpuContext,
  poisoned,
  randomArray,
  rng,
  runBatch,
  U,
  withGpu,
} from "./webgpu_harness.ts";

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

// Tolerance c·u·mag[i], mag the sum of the magnitudes of the terms: each op is a
// few roundings, and WGSL lets exp() err by 3 + 2|x| ULP, ≤ 63 ULP for |x| ≤ 30.
// A wrong formula is off by O(mag), far above that.
function magTol(mag: ArrayLike<number>, c: number): (i: number) => number {
  return (i) => c * U * mag[i] + 1e-37;
}

interface Case {
  readonly n: number;
  readonly seed: number;
  readonly alpha: number;
}

function recordCase(
  ctx: GpuContext,
  encoder: GPUCommandEncoder,
  release: GPUBuffer[],
  c: Case,
): Check[] {
  const { pool, kernels } = ctx;
  const next = rng(c.seed);
  const n = c.n;
  const x = randomArray(next, n, 8);
  // Saturated tails of σ (e^±30 stays finite in f32).
  if (n >= 4) x.set([-30, 30, 0, -1.2784645], n - 4);
  const y = randomArray(next, n, 2);
  const dy = randomArray(next, n, 2);
  const [gx, gy, gdy] = [pool.upload(x), pool.upload(y), pool.upload(dy)];
  const out = () => {
    const b = poisoned(pool, n);
    release.push(b);
    return b;
  };
  release.push(gx, gy, gdy);
  const checks: Check[] = [];
  const expect = (
    name: string,
    buffer: GPUBuffer,
    f: (i: number) => number,
    mag: (i: number) => number,
    ulps: number,
  ) => {
    const want = Float64Array.from({ length: n }, (_, i) => f(i));
    const m = Float64Array.from({ length: n }, (_, i) => mag(i));
    checks.push({
      buffer,
      length: n,
      check: (got) =>
        assertClose(
          `${name} n=${n} seed=${c.seed}`,
          got,
          want,
          magTol(m, ulps),
        ),
    });
  };

  const add = out();
  kernels.add(encoder, { a: gx, b: gy, out: add, n });
  expect("add", add, (i) => x[i] + y[i], (i) => Math.abs(x[i] + y[i]), 1);

  const acc = pool.upload(y);
  release.push(acc);
  kernels.axpy(encoder, { x: gx, y: acc, n, alpha: c.alpha });
  const alpha = Math.fround(c.alpha);
  expect(
    "axpy",
    acc,
    (i) => y[i] + alpha * x[i],
    (i) => Math.abs(y[i]) + Math.abs(alpha * x[i]),
    2,
  );

  const scaled = out();
  kernels.scale(encoder, { a: gx, out: scaled, n, alpha: c.alpha });
  expect(
    "scale",
    scaled,
    (i) => alpha * x[i],
    (i) => Math.abs(alpha * x[i]),
    1,
  );

  const silu = out();
  kernels.siluForward(encoder, { x: gx, out: silu, n });
  expect("silu", silu, (i) => x[i] * sigmoid(x[i]), (i) => Math.abs(x[i]), 80);

  const siluDx = out();
  kernels.siluBackward(encoder, { x: gx, dy: gdy, dx: siluDx, n });
  expect(
    "silu'",
    siluDx,
    (i) => {
      const s = sigmoid(x[i]);
      return dy[i] * s * (1 + x[i] * (1 - s));
    },
    (i) => Math.abs(dy[i]) * (1 + Math.abs(x[i])),
    80,
  );

  const relu2 = out();
  kernels.relu2Forward(encoder, { x: gx, out: relu2, n });
  expect("relu2", relu2, (i) => Math.max(x[i], 0) ** 2, (i) => x[i] * x[i], 1);

  const relu2Dx = out();
  kernels.relu2Backward(encoder, { x: gx, dy: gdy, dx: relu2Dx, n });
  expect(
    "relu2'",
    relu2Dx,
    (i) => dy[i] * 2 * Math.max(x[i], 0),
    (i) => Math.abs(2 * dy[i] * x[i]),
    2,
  );

  const swiglu = out();
  kernels.swigluForward(encoder, { gate: gx, up: gy, out: swiglu, n });
  expect(
    "swiglu",
    swiglu,
    (i) => x[i] * sigmoid(x[i]) * y[i],
    (i) => Math.abs(x[i] * y[i]),
    80,
  );

  const dGate = out();
  const dUp = out();
  kernels.swigluBackward(encoder, { gate: gx, up: gy, dy: gdy, dGate, dUp, n });
  expect(
    "swiglu' gate",
    dGate,
    (i) => {
      const s = sigmoid(x[i]);
      return dy[i] * y[i] * s * (1 + x[i] * (1 - s));
    },
    (i) => Math.abs(dy[i] * y[i]) * (1 + Math.abs(x[i])),
    80,
  );
  expect(
    "swiglu' up",
    dUp,
    (i) => dy[i] * x[i] * sigmoid(x[i]),
    (i) => Math.abs(dy[i] * x[i]),
    80,
  );
  return checks;
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  n: fc.oneof(
    fc.constantFrom(1, 3, 255, 256, 257, 1025),
    fc.integer({ min: 1, max: 3000 }),
  ),
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  alpha: fc.double({ min: -3, max: 3, noNaN: true }),
});

test.gpu("webgpu element-wise kernels match f64 references", () =>
  withGpu(async (ctx) => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(caseArb, { minLength: 6, maxLength: 6 }),
        (cases) =>
          runBatch(
            ctx,
            (encoder, release) =>
              cases.flatMap((c) => recordCase(ctx, encoder, release, c)),
          ),
      ),
      {
        numRuns: 3,
        examples: [[[
          { n: 1, seed: 1, alpha: 0.5 },
          { n: 257, seed: 2, alpha: -2 },
          { n: 1025, seed: 3, alpha: 1 },
        ]]],
      },
    );
  }));

test.gpu("webgpu add covers more elements than one grid-stride pass (n > 4096·256)", () =>
  withGpu(async (ctx) => {
    const n = 4096 * 256 + 1001;
    const next = rng(11);
    const a = randomArray(next, n);
    const b = randomArray(next, n);
    await runBatch(ctx, (encoder, release) => {
      const ga = ctx.pool.upload(a);
      const gb = ctx.pool.upload(b);
      const out = poisoned(ctx.pool, n);
      release.push(ga, gb, out);
      ctx.kernels.add(encoder, { a: ga, b: gb, out, n });
      const want = Float64Array.from({ length: n }, (_, i) => a[i] + b[i]);
      return [{
        buffer: out,
        length: n,
        check: (got) =>
          assertClose("add", got, want, (i) => U * Math.abs(want[i])),
      }];
    });
  }));
