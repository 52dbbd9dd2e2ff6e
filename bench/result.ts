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

/**
 * A positive integer setting of a benchmark from `text` (an environment
 * variable's or a flag's value; undefined: `fallback`); throws a RangeError
 * naming `name` when it is not one.
 *
 * @example
 * ```ts
 * const rounds = positiveCount("MATMUL_BENCH_ROUNDS", Deno.env.get("MATMUL_BENCH_ROUNDS"), 15);
 * ```
 */
export function positiveCount(
  name: string,
  text: string | undefined,
  fallback: number,
): number {
  if (text === undefined) return fallback;
  const v = Number(text);
  if (!/^\s*\d+\s*$/.test(text) || !Number.isSafeInteger(v) || v < 1) {
    throw new RangeError(`${name} must be a positive integer, got "${text}"`);
  }
  return v;
}
