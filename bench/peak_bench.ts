/**
 * Peak f32 throughput of one thread: a WASM loop of 12 independent
 * `f32x4.relaxed_madd` chains (mul + add in the portable variant) with no
 * memory traffic. Also holds the timing helpers the other kernel benches use.
 *
 * Run: `deno run -A bench/peak_bench.ts`.
 *
 * @module
 */
import { WasmKernels } from "../src/backend/wasm/wasm_kernels.ts";
import { type BenchResult, median } from "./result.ts";

export type { BenchResult };

/** Options of {@link medianSeconds}. */
export interface TimingOptions {
  /** Time spent calling `fn` before measuring (lets V8 tier up to TurboFan). */
  readonly warmupMs?: number;
  /** Timed repetitions; the median is returned. */
  readonly reps?: number;
  /** Minimum duration of one repetition (short calls are repeated). */
  readonly minRepMs?: number;
}

/**
 * Median over `reps` repetitions of the seconds one call of `fn` takes,
 * after a warmup; each repetition runs `fn` enough times to last `minRepMs`.
 */
export function medianSeconds(
  fn: () => void,
  options: TimingOptions = {},
): number {
  const { warmupMs = 300, reps = 7, minRepMs = 40 } = options;
  let calls = 0;
  const w0 = performance.now();
  while (calls < 3 || performance.now() - w0 < warmupMs) {
    fn();
    calls++;
  }
  const perCallMs = (performance.now() - w0) / calls;
  const inner = Math.max(1, Math.ceil(minRepMs / Math.max(perCallMs, 1e-3)));
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    for (let i = 0; i < inner; i++) fn();
    times.push((performance.now() - t0) / inner / 1000);
  }
  return median(times);
}

/** Flops of one `fmaProbe` iteration: 12 chains × 4 lanes × 2. */
export const FLOPS_PER_ITER = 96;

/** Measured peak GFLOP/s of one thread for the kernels' active variant. */
export function measurePeakGflops(kernels: WasmKernels): number {
  const iters = 200_000;
  const s = medianSeconds(() => kernels.fmaProbe(iters), { reps: 9 });
  return (iters * FLOPS_PER_ITER) / s / 1e9;
}

/** Runs the peak probe: one result, GFLOP/s of one thread. */
export async function run(): Promise<BenchResult[]> {
  const kernels = await WasmKernels.create();
  return [{
    name: `wasm_peak_fma_f32x4_${kernels.variant}`,
    value: measurePeakGflops(kernels),
    unit: "GFLOP/s",
  }];
}

/** Prints results as an aligned table. */
export function printResults(results: readonly BenchResult[]): void {
  const width = Math.max(...results.map((r) => r.name.length));
  for (const r of results) {
    console.log(`${r.name.padEnd(width)}  ${r.value.toFixed(2)} ${r.unit}`);
  }
}

if (import.meta.main) printResults(await run());
