/**
 * WebGPU matmul throughput: 512³ and m=256 × k=512 × n=1536, both kernel variants.
 * Each measurement records several dispatches into one encoder and times the
 * submit until `onSubmittedWorkDone`, after a warm-up submit; the result is checked
 * (A = B = 1 gives C = k) so a kernel that silently failed cannot report a speed.
 *
 * Run: `deno run -A bench/webgpu_bench.ts` (set `DENO_WEBGPU_BACKEND=vulkan` to pick
 * the backend). Software adapters (llvmpipe) are allowed and labelled as such.
 *
 * @module
 */
import { requestGpuDevice } from "../src/backend/webgpu/adapter.ts";
import { BufferPool } from "../src/backend/webgpu/buffer_pool.ts";
import {
  type MatmulVariant,
  WebGpuKernels,
} from "../src/backend/webgpu/kernels.ts";

/** One benchmark figure. */
export interface BenchResult {
  /** What was measured, including shape, variant and adapter kind. */
  readonly name: string;
  /** The figure. */
  readonly value: number;
  /** Its unit. */
  readonly unit: string;
}

/** Options of {@link runWebGpuBench}. */
export interface WebGpuBenchOptions {
  /** Seconds of GPU work to aim for per measurement (default 0.3). */
  readonly targetSeconds?: number;
  /** Shapes as [m, k, n] (default 512³ and 256×512×1536). */
  readonly shapes?: readonly (readonly [number, number, number])[];
  /** Variants to time (default both). */
  readonly variants?: readonly MatmulVariant[];
}

// Enough dispatches to dwarf the submit overhead even for a 50 µs matmul on an H100.
const MAX_REPEATS = 2000;

async function timeMatmul(
  kernels: WebGpuKernels,
  [m, k, n]: readonly [number, number, number],
  variant: MatmulVariant,
  targetSeconds: number,
): Promise<number> {
  const { device, pool } = kernels;
  const a = pool.upload(new Float32Array(m * k).fill(1));
  const b = pool.upload(new Float32Array(k * n).fill(1));
  const c = pool.acquire(m * n * 4);
  // Seconds from submit to completion of `repeats` matmuls recorded in one encoder.
  const run = async (repeats: number): Promise<number> => {
    const encoder = device.createCommandEncoder();
    for (let r = 0; r < repeats; r++) {
      kernels.matmul(encoder, { a, b, c, m, n, k, variant });
    }
    const t0 = performance.now();
    pool.submit(encoder);
    await device.queue.onSubmittedWorkDone();
    return (performance.now() - t0) / 1000;
  };
  try {
    await run(1); // warm-up: shader compilation and first-use costs
    const single = await run(1);
    const repeats = Math.max(
      2,
      Math.min(MAX_REPEATS, Math.ceil(targetSeconds / single)),
    );
    const seconds = await run(repeats);
    const [sample] = await pool.readBack(device.createCommandEncoder(), [
      { buffer: c, length: 1, offset: m * n - 1 },
    ]);
    if (sample[0] !== k) {
      throw new Error(
        `matmul ${variant} ${m}×${k}×${n} computed ${sample[0]}, expected ${k}`,
      );
    }
    return (2 * m * n * k * repeats) / seconds / 1e9;
  } finally {
    for (const buffer of [a, b, c]) pool.release(buffer);
  }
}

/**
 * Runs the matmul benchmarks on the default WebGPU adapter and returns GFLOP/s
 * figures. Imports no npm package, so it runs from a bare Deno binary.
 */
export async function runWebGpuBench(
  options: WebGpuBenchOptions = {},
): Promise<BenchResult[]> {
  const shapes = options.shapes ?? [[512, 512, 512], [256, 512, 1536]];
  const variants = options.variants ?? ["register", "shared"];
  const target = options.targetSeconds ?? 0.3;
  const gpu = await requestGpuDevice({
    allowFallback: true,
    powerPreference: "high-performance",
  });
  const pool = new BufferPool(gpu.device);
  try {
    const kernels = new WebGpuKernels(gpu, pool);
    await kernels.compileAll();
    const adapter = `${gpu.info.description || gpu.info.vendor}${
      gpu.info.isFallback ? " (fallback)" : ""
    }`;
    const results: BenchResult[] = [];
    for (const shape of shapes) {
      for (const variant of variants) {
        const gflops = await timeMatmul(kernels, shape, variant, target);
        results.push({
          name: `webgpu matmul ${shape.join("×")} (m×k×n) ${variant}${
            variant === kernels.matmulVariant ? " [default]" : ""
          } on ${adapter}`,
          value: Math.round(gflops * 100) / 100,
          unit: "GFLOP/s",
        });
      }
    }
    return results;
  } finally {
    pool.destroy();
    gpu.device.destroy();
  }
}

if (import.meta.main) {
  try {
    for (const r of await runWebGpuBench()) {
      console.log(`${r.name}: ${r.value} ${r.unit}`);
    }
  } catch (error) {
    console.error(
      `webgpu bench failed: ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
    Deno.exit(1);
  }
}
