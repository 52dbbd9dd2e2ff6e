/**
 * f32 matmul throughput (WASM SIMD kernels, one thread) on the shapes that
 * matter: 512³, 256×512×1536 and the reference model's FFN (2048 tokens,
 * 256 → 768) in its forward and backward forms, plus the f32 matvec. Prints
 * GFLOP/s and the fraction of the measured FMA peak.
 *
 * Run: `deno run -A bench/matmul_bench.ts`.
 *
 * @module
 */
import { WasmKernels } from "../src/backend/wasm/wasm_kernels.ts";
import type { BenchResult } from "./result.ts";

export type { BenchResult };
import {
  measurePeakGflops,
  medianSeconds,
  printResults,
} from "./peak_bench.ts";

interface Shape {
  readonly name: string;
  readonly m: number;
  readonly n: number;
  readonly k: number;
  readonly transA?: boolean;
  readonly transB?: boolean;
}

// The reference model's FFN (2048 tokens, 256 → 768) as Y = X·Wᵀ, and its
// backward products dX = dY·W and dW = dYᵀ·X.
const SHAPES: readonly Shape[] = [
  { name: "matmul_f32_512x512x512", m: 512, n: 512, k: 512 },
  { name: "matmul_f32_m256_k512_n1536", m: 256, n: 1536, k: 512 },
  {
    name: "matmul_f32_ffn_fwd_a_bt_m2048_k256_n768",
    m: 2048,
    n: 768,
    k: 256,
    transB: true,
  },
  { name: "matmul_f32_ffn_dx_a_b_m2048_k768_n256", m: 2048, n: 256, k: 768 },
  {
    name: "matmul_f32_ffn_dw_at_b_m768_k2048_n256",
    m: 768,
    n: 256,
    k: 2048,
    transA: true,
  },
];

/** Runs the matmul and matvec benchmarks (GFLOP/s, fraction of peak). */
export async function run(): Promise<BenchResult[]> {
  const kernels = await WasmKernels.create();
  const peak = measurePeakGflops(kernels);
  const results: BenchResult[] = [];
  for (const s of SHAPES) {
    const a = kernels.alloc(4 * s.m * s.k);
    const b = kernels.alloc(4 * s.k * s.n);
    const c = kernels.alloc(4 * s.m * s.n);
    kernels.f32(a, s.m * s.k).fill(0.5);
    kernels.f32(b, s.k * s.n).fill(0.25);
    const sec = medianSeconds(() =>
      kernels.matmul({
        a,
        b,
        c,
        m: s.m,
        n: s.n,
        k: s.k,
        transA: s.transA,
        transB: s.transB,
      })
    );
    const gflops = (2 * s.m * s.n * s.k) / sec / 1e9;
    results.push(
      { name: s.name, value: gflops, unit: "GFLOP/s" },
      { name: `${s.name}_vs_peak`, value: gflops / peak, unit: "ratio" },
    );
    for (const p of [a, b, c]) kernels.free(p);
  }
  const n = 5632, k = 2048;
  const w = kernels.alloc(4 * n * k), x = kernels.alloc(4 * k);
  const y = kernels.alloc(4 * n);
  kernels.f32(w, n * k).fill(0.5);
  kernels.f32(x, k).fill(0.25);
  const sec = medianSeconds(() => kernels.matvec({ w, x, y, n, k }));
  results.push({
    name: "matvec_f32_k2048_n5632",
    value: (n * k) / sec / 1e9,
    unit: "Gweights/s",
  });
  for (const p of [w, x, y]) kernels.free(p);
  return results;
}

if (import.meta.main) printResults(await run());
