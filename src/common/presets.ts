/**
 * Named model configurations.
 *
 * @module
 */
import { Schema } from "effect";
import { OneBitLlmConfig, type OneBitLlmConfigEncoded } from "./config.ts";

/** The names of the presets in {@link PRESETS}. */
export type PresetName = "tiny" | "ref-4m" | "bitnet-100m";

// llama.cpp's `bitnet` architecture: SwiGLU + SubLN + NEOX RoPE + RMSNorm,
// tied embeddings, no QK-norm, no residual scaling.
const BITNET_ARCH = {
  norm_type: "rms_norm",
  rope_style: "neox",
  use_rope: true,
  use_swiglu: true,
  use_relu2: false,
  use_subln: true,
  use_qk_norm: false,
  use_residual_scaling: false,
  tie_embeddings: true,
  use_ternary: true,
} as const satisfies Partial<OneBitLlmConfigEncoded>;

const decode = Schema.decodeSync(OneBitLlmConfig);

/**
 * The presets, decoded (defaults filled in) and validated:
 * - `tiny`: vocab 512 (the smallest byte-level BPE worth training: 256 bytes + merges), hidden 64, 2 layers, 4 heads, FFN 128, seq 64 — for
 *   tests, trains in seconds;
 * - `ref-4m`: vocab 4096, hidden 256, 4 layers, 4 heads, FFN 768, seq 128
 *   (4.46M parameters), the PyTorch reference model;
 * - `bitnet-100m`: vocab 4096, hidden 768, 12 layers, 12 heads, FFN 2048,
 *   seq 512.
 *
 * All use llama.cpp's `bitnet` architecture (SwiGLU, SubLN, NEOX RoPE, RMSNorm,
 * tied embeddings, no QK-norm, no residual scaling) with ternary blocks.
 */
export const PRESETS: Readonly<Record<PresetName, OneBitLlmConfig>> = {
  "tiny": decode({
    ...BITNET_ARCH,
    vocab_size: 512,
    hidden_size: 64,
    num_layers: 2,
    num_heads: 4,
    intermediate_size: 128,
    max_seq_len: 64,
  }),
  "ref-4m": decode({
    ...BITNET_ARCH,
    vocab_size: 4096,
    hidden_size: 256,
    num_layers: 4,
    num_heads: 4,
    intermediate_size: 768,
    max_seq_len: 128,
  }),
  "bitnet-100m": decode({
    ...BITNET_ARCH,
    vocab_size: 4096,
    hidden_size: 768,
    num_layers: 12,
    num_heads: 12,
    intermediate_size: 2048,
    max_seq_len: 512,
  }),
};

/** The preset called `name`; throws an error listing the known names otherwise. */
export function preset(name: string): OneBitLlmConfig {
  if (!Object.hasOwn(PRESETS, name)) {
    throw new Error(
      `unknown preset ${JSON.stringify(name)}; known presets: ${
        Object.keys(PRESETS).join(", ")
      }`,
    );
  }
  return PRESETS[name as PresetName];
}
