// Shared test harness for the WebGPU kernel tests: acquires the device through the
// GpuDevice layer (a missing adapter fails the test; tests declared with
// `test.gpu` from gpu_gate.ts are ignored instead outside CI), batches
// many cases into one submit, poisons outputs with NaN, and compares against
// plain-TypeScript references computed in f64.
import { Effect, Layer } from "effect";
import type { BufferPool } from "../../src/backend/webgpu/buffer_pool.ts";
import {
  GpuDevice,
  type GpuDeviceShape,
  GpuKernels,
} from "../../src/backend/webgpu/device.ts";
import type { WebGpuKernels } from "../../src/backend/webgpu/kernels.ts";

/** f32 unit roundoff, 2^-24. */
export const U = 2 ** -24;

/** What a GPU test body gets. */
export interface GpuContext {
  readonly gpu: GpuDeviceShape;
  readonly kernels: WebGpuKernels;
  readonly pool: BufferPool;
}

/**
 * Runs `body` with a device (software adapters allowed), kernels and a pool, and
 * fails if WebGPU reported any validation or out-of-memory error meanwhile.
 */
export function withGpu(
  body: (ctx: GpuContext) => Promise<void>,
): Promise<void> {
  return Effect.runPromise(
    Effect.gen(function* () {
      const gpu = yield* GpuDevice;
      const kernels = yield* GpuKernels;
      const ctx: GpuContext = { gpu, kernels, pool: kernels.pool };
      yield* Effect.promise(async () => {
        gpu.device.pushErrorScope("out-of-memory");
        gpu.device.pushErrorScope("validation");
        await kernels.compileAll();
        await body(ctx);
        const validation = await gpu.device.popErrorScope();
        const oom = await gpu.device.popErrorScope();
        if (validation !== null) {
          throw new Error(`WebGPU validation error: ${validation.message}`);
        }
        if (oom !== null) {
          throw new Error(`WebGPU out-of-memory error: ${oom.message}`);
        }
      });
    }).pipe(
      Effect.provide(
        GpuKernels.layer().pipe(
          Layer.provideMerge(GpuDevice.layer({ allowFallback: true })),
        ),
      ),
    ),
  );
}

/** Deterministic PRNG (mulberry32) so a fast-check seed reproduces the data. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` uniform values in [−scale, scale), rounded to f32. */
export function randomArray(
  next: () => number,
  n: number,
  scale = 1,
): Float32Array<ArrayBuffer> {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * next() - 1) * scale;
  return out;
}

/** Round half to even, like WGSL `round` and `torch.round`. */
export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v - Math.trunc(v)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * A pooled buffer holding `data` followed by 64 NaNs: a kernel that reads past
 * the tensor (e.g. a tile edge without its bounds check) turns its output NaN.
 */
export function uploadPadded(pool: BufferPool, data: Float32Array): GPUBuffer {
  const padded = new Float32Array(data.length + 64).fill(NaN);
  padded.set(data);
  return pool.upload(padded);
}

/** A pooled buffer of `n` f32 values, all NaN: an element the kernel leaves unwritten fails. */
export function poisoned(pool: BufferPool, n: number): GPUBuffer {
  return pool.upload(new Float32Array(n).fill(NaN));
}

/**
 * Collects element-wise checks and throws one error listing the first mismatches:
 * `|got − want| ≤ tol(i)` (NaN in `got` always fails).
 */
export function assertClose(
  label: string,
  got: Float32Array,
  want: ArrayLike<number>,
  tol: (i: number) => number,
): void {
  if (got.length !== want.length) {
    throw new Error(`${label}: length ${got.length} ≠ ${want.length}`);
  }
  const bad: string[] = [];
  let count = 0;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= tol(i))) {
      count++;
      if (bad.length < 5) {
        bad.push(`[${i}] got ${got[i]} want ${want[i]} (tol ${tol(i)})`);
      }
    }
  }
  if (count > 0) {
    throw new Error(`${label}: ${count}/${want.length} off: ${bad.join("; ")}`);
  }
}

/** Relative tolerance `rel·|want| + abs`. */
export function relTol(
  want: ArrayLike<number>,
  rel: number,
  abs: number,
): (i: number) => number {
  return (i) => rel * Math.abs(want[i]) + abs;
}

/** One pending check: the buffer region to read and what to do with the values. */
export interface Check {
  readonly buffer: GPUBuffer;
  readonly length: number;
  readonly check: (got: Float32Array) => void;
}

/**
 * Records what `record` puts in one encoder, submits it once, reads every check's
 * buffer back and runs the checks; buffers listed in `release` go back to the pool.
 */
export async function runBatch(
  ctx: GpuContext,
  record: (encoder: GPUCommandEncoder, release: GPUBuffer[]) => Check[],
): Promise<void> {
  const encoder = ctx.gpu.device.createCommandEncoder();
  const release: GPUBuffer[] = [];
  const checks = record(encoder, release);
  const values = await ctx.pool.readBack(
    encoder,
    checks.map((c) => ({ buffer: c.buffer, length: c.length })),
  );
  for (const buffer of release) ctx.pool.release(buffer);
  checks.forEach((c, i) => c.check(values[i]));
}
