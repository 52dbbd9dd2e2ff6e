/** One measured benchmark figure. */
export interface BenchResult {
  /** Stable name, e.g. `matmul_f32_512x512x512`. */
  readonly name: string;
  /** The measured value. */
  readonly value: number;
  /** Its unit, e.g. `GFLOP/s`, `Gweights/s`, `ratio`. */
  readonly unit: string;
}

/** Median of the samples (the array is sorted in place). */
export function median(samples: number[]): number {
  samples.sort((a, b) => a - b);
  const mid = samples.length >> 1;
  return samples.length % 2
    ? samples[mid]
    : (samples[mid - 1] + samples[mid]) / 2;
}
