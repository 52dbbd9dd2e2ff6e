/**
 * WebGPU matmul throughput: 512³ and m=256 × k=512 × n=1536, both kernel variants.
 * Each measurement records several dispatches into one encoder and times the
 * submit until `onSubmittedWorkDone`, after a warm-up submit; the result is checked
 * (A = B = 1 gives C = k) so a kernel that silently failed cannot report a speed.
 *
 * Also decode tokens/s of the WebGPU inference runtime on random ternary weights
 * at the `ref-4m` and `bitnet-100m` shapes (one submit and one logits read-back
 * per token, after a short prompt); the logits are checked finite.
 *
 * Run: `deno run -A bench/webgpu_bench.ts [--decode-only] [--tiny]` (set
 * `DENO_WEBGPU_BACKEND=vulkan` to pick the backend; `--tiny` decodes a small
 * shape only, for software adapters). Software adapters (llvmpipe) are allowed
 * and labelled as such.
 *
 * @module
 */
import { requestGpuDevice } from "../src/backend/webgpu/adapter.ts";
import { BufferPool } from "../src/backend/webgpu/buffer_pool.ts";
import {
  type MatmulVariant,
  WebGpuKernels,
} from "../src/backend/webgpu/kernels.ts";
import type { OneBitLlmConfig } from "../src/common/config.ts";
import type { Tokenizer } from "../src/common/tokenizer.ts";
import type { ModelWeights, StoredTensor } from "../src/infer/weights.ts";
import { WebGpuInferenceModel } from "../src/infer/webgpu_runtime.ts";

/** A decode shape: name, vocab, hidden, layers, heads, FFN, context. */
export type DecodeShape = readonly [
  string,
  number,
  number,
  number,
  number,
  number,
  number,
];

/** The presets' shapes (src/common/presets.ts, BitNet architecture). */
export const DECODE_SHAPES: readonly DecodeShape[] = [
  ["ref-4m", 4096, 256, 4, 4, 768, 128],
  ["bitnet-100m", 4096, 768, 12, 12, 2048, 512],
];

/** A shape small enough for a software adapter. */
export const TINY_DECODE_SHAPE: DecodeShape = ["tiny", 512, 64, 2, 4, 128, 64];

// Random ternary weights of `shape` (the BitNet architecture of the presets,
// written out so that this file imports no npm package).
function randomWeights(shape: DecodeShape): ModelWeights {
  const [, vocab, d, layers, heads, ffn, ctx] = shape;
  const config: OneBitLlmConfig = {
    vocab_size: vocab,
    hidden_size: d,
    num_heads: heads,
    num_kv_heads: heads,
    num_layers: layers,
    intermediate_size: ffn,
    max_seq_len: ctx,
    layer_norm_eps: 1e-5,
    rope_theta: 10000,
    rope_style: "neox",
    norm_type: "rms_norm",
    tie_embeddings: true,
    use_ternary: true,
    use_relu2: false,
    use_swiglu: true,
    use_subln: true,
    use_rope: true,
    use_qk_norm: false,
    use_residual_scaling: false,
    use_dynamic_threshold: false,
    latent_clamp_max: 1,
    latent_clip_max_training: 1,
  };
  let seed = 1;
  const next = () => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed / 2 ** 32;
  };
  const tensors = new Map<string, StoredTensor>();
  const dense = (name: string, n: number, f: () => number) =>
    tensors.set(name, {
      kind: "dense",
      shape: [n],
      data: Float32Array.from({ length: n }, f),
    });
  const coded = (name: string, rows: number, cols: number) =>
    tensors.set(name, {
      kind: "ternary",
      rows,
      cols,
      codes: Int8Array.from(
        { length: rows * cols },
        () => Math.floor(next() * 3) - 1,
      ),
      scale: 0.02,
    });
  tensors.set("token_embd.weight", {
    kind: "dense",
    shape: [vocab, d],
    data: Float32Array.from({ length: vocab * d }, () => next() - 0.5),
  });
  for (let l = 0; l < layers; l++) {
    const b = `blk.${l}`;
    for (const n of ["attn_norm", "ffn_norm", "attn_sub_norm"]) {
      dense(`${b}.${n}.weight`, d, () => 1);
    }
    dense(`${b}.ffn_sub_norm.weight`, ffn, () => 1);
    for (const n of ["attn_q", "attn_k", "attn_v", "attn_output"]) {
      coded(`${b}.${n}.weight`, d, d);
    }
    coded(`${b}.ffn_gate.weight`, ffn, d);
    coded(`${b}.ffn_up.weight`, ffn, d);
    coded(`${b}.ffn_down.weight`, d, ffn);
  }
  dense("output_norm.weight", d, () => 1);
  return {
    config,
    bitMap: {
      embedding: "f16",
      layer_modes: Array(layers).fill("ternary"),
      lm_head: "f16",
      overrides: {},
    },
    // Decoding needs no text: only the vocabulary size is read.
    tokenizer: { vocabSize: vocab } as unknown as Tokenizer,
    tensors,
  };
}

/** Decode tokens/s of the WebGPU runtime at `shape` after an 8-token prompt. */
async function timeDecode(
  kernels: WebGpuKernels,
  shape: DecodeShape,
  tokens: number,
): Promise<number> {
  const model = WebGpuInferenceModel.create(randomWeights(shape), kernels);
  try {
    const session = model.session();
    const V = shape[1];
    await session.prefill([1, 2, 3, 4, 5, 6, 7, 8]);
    await session.decode(9); // warm-up: pipelines compiled
    const n = Math.min(tokens, shape[6] - session.position);
    const t0 = performance.now();
    let id = 10;
    for (let i = 0; i < n; i++) {
      const logits = await session.decode(id);
      id = (id * 31 + 7) % V;
      if (!Number.isFinite(logits[0])) {
        throw new Error(`decode at ${shape[0]} gave logit ${logits[0]}`);
      }
    }
    return n / ((performance.now() - t0) / 1000);
  } finally {
    model.release();
  }
}

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
  /** Decode shapes (default none; the command line runs {@link DECODE_SHAPES}). */
  readonly decodeShapes?: readonly DecodeShape[];
  /** Tokens decoded per shape (default 64; at most its context). */
  readonly decodeTokens?: number;
  /** Skip the matmuls. */
  readonly decodeOnly?: boolean;
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
 * Runs the matmul benchmarks (GFLOP/s) and the decode benchmarks of
 * `decodeShapes` (tokens/s) on the default WebGPU adapter. Loads no npm
 * package (only types come from modules that do), so it runs from a bare Deno
 * binary.
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
    for (const shape of options.decodeOnly ? [] : shapes) {
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
    for (const shape of options.decodeShapes ?? []) {
      const tps = await timeDecode(
        kernels,
        shape,
        options.decodeTokens ?? 64,
      );
      results.push({
        name: `webgpu decode ${
          shape[0]
        } (random ternary weights) on ${adapter}`,
        value: Math.round(tps * 10) / 10,
        unit: "tokens/s",
      });
    }
    return results;
  } finally {
    pool.destroy();
    gpu.device.destroy();
  }
}

if (import.meta.main) {
  try {
    const tiny = Deno.args.includes("--tiny");
    const options: WebGpuBenchOptions = {
      decodeOnly: Deno.args.includes("--decode-only"),
      decodeShapes: tiny ? [TINY_DECODE_SHAPE] : DECODE_SHAPES,
      decodeTokens: tiny ? 8 : undefined,
    };
    for (const r of await runWebGpuBench(options)) {
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
