/**
 * BitLinear forward + backward at the reference model's FFN shape (2048 tokens,
 * 256 → 768, ternary weights, int8 activations, λ = 1) on the CPU backend,
 * against the three f32 matmuls the same layer costs without quantization
 * (Y = X·Wᵀ, dX = dY·W, dW = dYᵀ·X). The target is a ratio ≤ 1.3.
 *
 * Run: `deno run -A bench/bitlinear_bench.ts`.
 *
 * @module
 */
import { CpuBackend } from "../src/backend/cpu/cpu_backend.ts";
import { Tape } from "../src/backend/tape.ts";
import { bitLinear } from "../src/backend/ops.ts";
import { medianSeconds, printResults } from "./peak_bench.ts";
import type { BenchResult } from "./result.ts";

const ROWS = 2048, IN = 256, OUT = 768;

/** Times BitLinear fwd+bwd and the plain f32 matmuls of the same shape. */
export async function run(): Promise<BenchResult[]> {
  const b = await CpuBackend.create();
  const rnd = () => Math.random() * 2 - 1;
  const x = b.upload(Float32Array.from({ length: ROWS * IN }, rnd));
  const w = b.upload(
    Float32Array.from({ length: OUT * IN }, () => 0.02 * rnd()),
  );
  const dx = b.zeros(ROWS * IN), dw = b.zeros(OUT * IN);
  const y = b.zeros(ROWS * OUT),
    dy = b.upload(Float32Array.from({ length: ROWS * OUT }, rnd));

  const bitlinear = medianSeconds(() => {
    const tape = new Tape(b);
    const out = bitLinear(tape, tape.param(x, dx), tape.param(w, dw), {
      rows: ROWS,
      inFeatures: IN,
      outFeatures: OUT,
      mode: "ternary",
      lambdaA: 1,
      lambdaW: 1,
    });
    tape.backward(out, 1); // dY = 1: the same matmuls as any upstream gradient
    tape.reset();
  }, { reps: 7 });
  const f32 = medianSeconds(() => {
    b.matmul(x, w, y, { m: ROWS, n: OUT, k: IN, transB: true });
    b.matmul(dy, w, dx, { m: ROWS, n: IN, k: OUT, accumulate: true });
    b.matmul(dy, x, dw, {
      m: OUT,
      n: IN,
      k: ROWS,
      transA: true,
      accumulate: true,
    });
  }, { reps: 7 });
  const flops = 3 * 2 * ROWS * IN * OUT;
  return [
    {
      name: "bitlinear_ternary_fwd_bwd_2048x256x768",
      value: bitlinear * 1e3,
      unit: "ms",
    },
    { name: "f32_matmuls_fwd_bwd_2048x256x768", value: f32 * 1e3, unit: "ms" },
    {
      name: "bitlinear_fwd_bwd_gflops",
      value: flops / bitlinear / 1e9,
      unit: "GFLOP/s",
    },
    {
      name: "bitlinear_vs_f32_time_ratio",
      value: bitlinear / f32,
      unit: "ratio (target ≤ 1.3)",
    },
  ];
}

if (import.meta.main) printResults(await run());
