/**
 * A model's weights as inference stores them: every linear already in its
 * quantized form (codes and scales), everything else as f32. The runtime
 * builds from this, the exporters write it and their readers give it back,
 * so a model loaded from a run directory, a `packed` file or a GGUF file runs
 * the same way.
 *
 * Quantizing is not idempotent (re-quantizing `codes · γ` with absmean gives a
 * different γ), so readers hand over the stored codes, never dequantized
 * weights.
 *
 * @module
 */
import type { OneBitLlmConfig } from "../common/config.ts";
import type { LayerBitMap } from "../common/layer_bit_map.ts";
import type { Tokenizer } from "../common/tokenizer.ts";

/** A tensor kept in f32 (norm weights and biases, and f16-mode tensors widened). */
export interface DenseTensor {
  /** Discriminates the variants. */
  readonly kind: "dense";
  /** Row-major shape, outermost first (`[out, in]` for a linear). */
  readonly shape: readonly number[];
  /** The values. */
  readonly data: Float32Array;
}

/** A `[rows, cols]` weight in {−γ, 0, +γ} (`ternary`) or {−γ, +γ} (`binary`). */
export interface CodedTensor {
  /** Discriminates the variants. */
  readonly kind: "ternary" | "binary";
  /** Output features. */
  readonly rows: number;
  /** Input features. */
  readonly cols: number;
  /** `rows · cols` codes in {−1, 0, 1}, row-major. */
  readonly codes: Int8Array;
  /** γ: the weight is `codes[i] · scale`. */
  readonly scale: number;
}

/** A `[rows, cols]` int8 weight with one scale per row (`eightbit`). */
export interface Int8Tensor {
  /** Discriminates the variants. */
  readonly kind: "int8";
  /** Output features. */
  readonly rows: number;
  /** Input features. */
  readonly cols: number;
  /** `rows · cols` codes in [−127, 127], row-major. */
  readonly codes: Int8Array;
  /** Per-row step: the weight is `codes[r, c] · scales[r]`. */
  readonly scales: Float32Array;
}

/** One stored tensor. */
export type StoredTensor = DenseTensor | CodedTensor | Int8Tensor;

/** Everything an inference runtime or an exporter needs of a model. */
export interface ModelWeights {
  /** The architecture. */
  readonly config: OneBitLlmConfig;
  /** The mode of every linear, the embedding and the head. */
  readonly bitMap: LayerBitMap;
  /** The tokenizer the model was trained with. */
  readonly tokenizer: Tokenizer;
  /** Every tensor of `modelTensors(config)`, by its name (`blk.0.attn_q.weight`, …). */
  readonly tensors: ReadonlyMap<string, StoredTensor>;
}
