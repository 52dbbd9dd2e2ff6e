/**
 * f32 matmul throughput (WASM SIMD kernels, one thread) on the shapes that
 * matter: 512³, 256×512×1536 and every f32 matmul shape of a `ref-4m`
 * training step (batch 16 × seq 128: each linear's forward at λ < 1 and its
 * dX and dW, the LM head's forward, dX and dW), plus the f32 matvec. Prints
 * GFLOP/s and the fraction of the FMA peak, the probe sampled beside each
 * shape in every round (see {@link run}), with the blocking training uses
 * here (`tunedMatmulConfig`: tuned on first use).
 *
 * Run: `deno run -A bench/matmul_bench.ts`.
 *
 * @module
 */
import { tunedMatmulConfig } from "../src/backend/cpu/matmul_tuning.ts";
import { WasmKernels } from "../src/backend/wasm/wasm_kernels.ts";
import type { BenchResult } from "./result.ts";

export type { BenchResult };
import { PRESETS } from "../src/common/presets.ts";
import { FLOPS_PER_ITER, medianSeconds, printResults } from "./peak_bench.ts";
import { median, positiveCount } from "./result.ts";

interface Shape {
  readonly name: string;
  readonly m: number;
  readonly n: number;
  readonly k: number;
  readonly transA?: boolean;
  readonly transB?: boolean;
}

/**
 * The f32 matmuls of one `ref-4m` training step, by shape: for a linear
 * `in → out` over `T` tokens, the forward `Y = X·Wᵀ` (f32 only at λ < 1; at
 * λ = 1 it runs in integers), `dX = dY·W` and `dW = dYᵀ·X`; the tied LM head
 * is the same with `in` = hidden and `out` = vocab.
 */
function trainingStepShapes(): Shape[] {
  const c = PRESETS["ref-4m"];
  const T = 16 * 128, d = c.hidden_size, f = c.intermediate_size;
  const linears: Array<[string, number, number]> = [
    ["attn", d, d],
    ["ffn_up", d, f],
    ["ffn_down", f, d],
    ["head", d, c.vocab_size],
  ];
  return linears.flatMap(([what, inF, out]) => [
    {
      name: `matmul_f32_${what}_fwd_a_bt_m${T}_k${inF}_n${out}`,
      m: T,
      n: out,
      k: inF,
      transB: true,
    },
    {
      name: `matmul_f32_${what}_dx_a_b_m${T}_k${out}_n${inF}`,
      m: T,
      n: inF,
      k: out,
    },
    {
      name: `matmul_f32_${what}_dw_at_b_m${out}_k${T}_n${inF}`,
      m: out,
      n: inF,
      k: T,
      transA: true,
    },
  ]);
}

const SHAPES: readonly Shape[] = [
  { name: "matmul_f32_512x512x512", m: 512, n: 512, k: 512 },
  { name: "matmul_f32_m256_k512_n1536", m: 256, n: 1536, k: 512 },
  ...trainingStepShapes(),
];

/** Rounds of the interleaved measurement (`MATMUL_BENCH_ROUNDS` overrides). */
const ROUNDS = positiveCount(
  "MATMUL_BENCH_ROUNDS",
  Deno.env.get("MATMUL_BENCH_ROUNDS"),
  15,
);

/** Seconds of one call of `fn`, repeated until at least `minMs` have passed. */
function sampleSeconds(fn: () => void, minMs: number): number {
  let calls = 0;
  const t0 = performance.now();
  do {
    fn();
    calls++;
  } while (performance.now() - t0 < minMs);
  return (performance.now() - t0) / calls / 1000;
}

/**
 * Runs the matmul and matvec benchmarks (GFLOP/s, fraction of peak).
 *
 * The machines we run on are shared VMs whose speed moves by up to ±40% over
 * seconds, and load-heavy code (a matmul) suffers more from that than the
 * register-only FMA probe. So every shape is sampled in `ROUNDS` rounds spread
 * over the run, each sample right after a sample of the probe: `_vs_peak` is
 * the best rate over the best probe rate (what the kernel reaches when the
 * machine is not disturbed), `_vs_peak_median` the median over rounds of the
 * ratio to the probe sampled just before it.
 */
export async function run(): Promise<BenchResult[]> {
  const kernels = await WasmKernels.create();
  // The blocking training uses on this machine (tuned once, cached in .cache/).
  kernels.matmulConfig = tunedMatmulConfig(kernels);
  const { tile, mc, kc, nc } = kernels.matmulConfig;
  console.error(`matmul blocking: tile ${tile}, mc ${mc}, kc ${kc}, nc ${nc}`);
  const PROBE_ITERS = 50_000;
  const probeRate = () =>
    (PROBE_ITERS * FLOPS_PER_ITER) /
    sampleSeconds(() => kernels.fmaProbe(PROBE_ITERS), 5) / 1e9;
  const cases = SHAPES.map((s) => {
    const a = kernels.alloc(4 * s.m * s.k);
    const b = kernels.alloc(4 * s.k * s.n);
    const c = kernels.alloc(4 * s.m * s.n);
    kernels.f32(a, s.m * s.k).fill(0.5);
    kernels.f32(b, s.k * s.n).fill(0.25);
    const call = () =>
      kernels.matmul({
        a,
        b,
        c,
        m: s.m,
        n: s.n,
        k: s.k,
        transA: s.transA,
        transB: s.transB,
      });
    call(); // first call: compilation tier-up and first-touch memory
    return {
      s,
      call,
      ptrs: [a, b, c],
      rates: [] as number[],
      ratios: [] as number[],
    };
  });
  let bestPeak = 0;
  for (let r = 0; r < ROUNDS; r++) {
    for (const x of cases) {
      const peak = probeRate();
      bestPeak = Math.max(bestPeak, peak);
      const rate = (2 * x.s.m * x.s.n * x.s.k) / sampleSeconds(x.call, 5) / 1e9;
      x.rates.push(rate);
      x.ratios.push(rate / peak);
    }
  }
  const results: BenchResult[] = [
    { name: "matmul_bench_fma_peak", value: bestPeak, unit: "GFLOP/s" },
  ];
  for (const x of cases) {
    const best = Math.max(...x.rates);
    results.push(
      { name: x.s.name, value: best, unit: "GFLOP/s" },
      { name: `${x.s.name}_vs_peak`, value: best / bestPeak, unit: "ratio" },
      {
        name: `${x.s.name}_vs_peak_median`,
        value: median(x.ratios),
        unit: "ratio",
      },
    );
    for (const p of x.ptrs) kernels.free(p);
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
