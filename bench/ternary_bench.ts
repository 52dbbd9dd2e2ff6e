/**
 * Ternary (2-bit packed) × int8 kernels, one thread: the 2048 → 5632 matvec
 * of decoding, the same layer over batches of tokens, the per-token int8
 * quantization and the ternarize-and-pack of latent f32 weights. Prints G weights/s (weight·token products per second) and,
 * counting a multiply-add as 2 ops, the fraction of the measured f32 FMA peak.
 *
 * Run: `deno run -A bench/ternary_bench.ts`.
 *
 * @module
 */
import {
  packTernaryRows,
  ternaryPaddedCols,
  WasmKernels,
} from "../src/backend/wasm/wasm_kernels.ts";
import type { BenchResult } from "./result.ts";

export type { BenchResult };
import {
  measurePeakGflops,
  medianSeconds,
  printResults,
} from "./peak_bench.ts";

/** Runs the ternary benchmarks (Gweights/s, fraction of the f32 peak). */
export async function run(): Promise<BenchResult[]> {
  const kernels = await WasmKernels.create();
  const peak = measurePeakGflops(kernels);
  const results: BenchResult[] = [];
  const n = 5632, k = 2048, kpad = ternaryPaddedCols(k);
  let seed = 12345;
  const weights = Int8Array.from({ length: n * k }, () => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return (seed >>> 16) % 3 - 1;
  });
  const packed = packTernaryRows(weights, n, k);
  const w = kernels.alloc(packed.length);
  kernels.u8(w, packed.length).set(packed);
  for (const tokens of [1, 4, 16, 64]) {
    const xf = kernels.alloc(4 * tokens * k);
    const xq = kernels.alloc(tokens * kpad);
    const sums = kernels.alloc(4 * tokens), inv = kernels.alloc(4 * tokens);
    const out = kernels.alloc(4 * tokens * n);
    const xs = kernels.f32(xf, tokens * k);
    for (let i = 0; i < xs.length; i++) xs[i] = Math.sin(i);
    const quantize = () =>
      kernels.quantizeRows({
        x: xf,
        rows: tokens,
        cols: k,
        out: xq,
        invScales: inv,
        sums,
      });
    quantize();
    const sec = medianSeconds(() =>
      kernels.ternaryMatmul({
        w,
        n,
        k,
        x: xq,
        tokens,
        sums,
        invScales: inv,
        scale: 0.5,
        out,
      })
    );
    const rate = (n * k * tokens) / sec / 1e9;
    const name = tokens === 1
      ? "ternary_matvec_k2048_n5632"
      : `ternary_matmul_k2048_n5632_t${tokens}`;
    results.push(
      { name, value: rate, unit: "Gweights/s" },
      { name: `${name}_vs_peak`, value: (2 * rate) / peak, unit: "ratio" },
    );
    if (tokens === 64) {
      const qs = medianSeconds(quantize);
      results.push({
        name: "quantize_rows_i8_64x2048",
        value: (tokens * k) / qs / 1e9,
        unit: "Gvalues/s",
      });
    }
    for (const p of [xf, xq, sums, inv, out]) kernels.free(p);
  }
  // Training re-packs the latent weights every step.
  const latent = kernels.alloc(4 * n * k);
  const lw = kernels.f32(latent, n * k);
  for (let i = 0; i < lw.length; i++) lw[i] = Math.sin(i);
  const ps = medianSeconds(() =>
    kernels.packTernary({ w: latent, rows: n, cols: k, invScale: 1.5, out: w })
  );
  results.push({
    name: "pack_ternary_f32_k2048_n5632",
    value: (n * k) / ps / 1e9,
    unit: "Gweights/s",
  });
  kernels.free(latent);
  kernels.free(w);
  return results;
}

if (import.meta.main) printResults(await run());
