/**
 * The stored tensors of a model, named as in llama.cpp's `bitnet` GGUF
 * architecture. The model, checkpoints and the GGUF export all use this list.
 *
 * @module
 */
import { headDim, type OneBitLlmConfig } from "../common/config.ts";
import type { LinearName } from "../common/layer_bit_map.ts";

/** What a stored tensor is; decides how it is quantized and stored. */
export type TensorKind = "embedding" | "lm_head" | "linear" | "norm";

/** Fields shared by every {@link TensorSpec}. */
export interface TensorSpecBase {
  /** GGUF-style name, e.g. `blk.3.ffn_down.weight`. */
  readonly name: string;
  /** `[out, in]` for linears and the LM head, `[vocab, hidden]` for the embedding, `[n]` for norms. */
  readonly shape: ReadonlyArray<number>;
}

/** A linear layer of block `layer`. */
export interface LinearTensorSpec extends TensorSpecBase {
  /** What the tensor is. */
  readonly kind: "linear";
  /** The block index. */
  readonly layer: number;
  /** The linear's bit-map name. */
  readonly linear: LinearName;
}

/** A norm weight or bias, inside block `layer` or (no layer) the final norm. */
export interface NormTensorSpec extends TensorSpecBase {
  /** What the tensor is. */
  readonly kind: "norm";
  /** The block index; absent for `output_norm`. */
  readonly layer?: number;
  /** Norms belong to no linear. */
  readonly linear?: undefined;
}

/** The token embedding or the untied LM head. */
export interface TableTensorSpec extends TensorSpecBase {
  /** What the tensor is. */
  readonly kind: "embedding" | "lm_head";
  /** Outside every block. */
  readonly layer?: undefined;
  /** Not a block linear. */
  readonly linear?: undefined;
}

/** One stored tensor of the model: `{ name, shape, kind, layer?, linear? }`. */
export type TensorSpec = LinearTensorSpec | NormTensorSpec | TableTensorSpec;

/** Number of elements of a tensor: the product of its shape. */
export function tensorNumel(spec: TensorSpec): number {
  return spec.shape.reduce((a, b) => a * b, 1);
}

/**
 * Every stored tensor of the model, in graph order:
 * `token_embd.weight` [vocab, hidden]; per block N:
 * `attn_norm`, `attn_q` [hidden, hidden], `attn_k`/`attn_v`
 * [num_kv_heads·head_dim, hidden], `attn_q_norm`/`attn_k_norm` [head_dim]
 * (use_qk_norm), `attn_sub_norm` [hidden] (use_subln), `attn_output`
 * [hidden, hidden], `ffn_norm`, `ffn_gate` [ffn, hidden] (use_swiglu),
 * `ffn_up` [ffn, hidden], `ffn_sub_norm` [ffn] (use_subln), `ffn_down`
 * [hidden, ffn]; then `output_norm` and, unless tied, `output.weight`
 * [vocab, hidden]. Every norm has a `.weight`, and with `layer_norm` also a
 * `.bias` of the same shape.
 */
export function modelTensors(
  config: OneBitLlmConfig,
): ReadonlyArray<TensorSpec> {
  const d = config.hidden_size;
  const ffn = config.intermediate_size;
  const hd = headDim(config);
  const kvOut = config.num_kv_heads * hd;
  const out: Array<TensorSpec> = [];
  const norm = (base: string, size: number, layer?: number) => {
    const suffixes = config.norm_type === "layer_norm"
      ? ["weight", "bias"]
      : ["weight"];
    for (const suffix of suffixes) {
      out.push({
        name: `${base}.${suffix}`,
        shape: [size],
        kind: "norm",
        ...(layer === undefined ? {} : { layer }),
      });
    }
  };
  const linear = (
    layer: number,
    name: string,
    linear: LinearName,
    rows: number,
    cols: number,
  ) => {
    out.push({
      name: `blk.${layer}.${name}.weight`,
      shape: [rows, cols],
      kind: "linear",
      layer,
      linear,
    });
  };

  out.push({
    name: "token_embd.weight",
    shape: [config.vocab_size, d],
    kind: "embedding",
  });
  for (let l = 0; l < config.num_layers; l++) {
    const blk = `blk.${l}`;
    norm(`${blk}.attn_norm`, d, l);
    linear(l, "attn_q", "attn.q", d, d);
    linear(l, "attn_k", "attn.k", kvOut, d);
    linear(l, "attn_v", "attn.v", kvOut, d);
    if (config.use_qk_norm) {
      norm(`${blk}.attn_q_norm`, hd, l);
      norm(`${blk}.attn_k_norm`, hd, l);
    }
    if (config.use_subln) norm(`${blk}.attn_sub_norm`, d, l);
    linear(l, "attn_output", "attn.o", d, d);
    norm(`${blk}.ffn_norm`, d, l);
    if (config.use_swiglu) linear(l, "ffn_gate", "mlp.gate", ffn, d);
    linear(l, "ffn_up", "mlp.up", ffn, d);
    if (config.use_subln) norm(`${blk}.ffn_sub_norm`, ffn, l);
    linear(l, "ffn_down", "mlp.down", d, ffn);
  }
  norm("output_norm", d);
  if (!config.tie_embeddings) {
    out.push({
      name: "output.weight",
      shape: [config.vocab_size, d],
      kind: "lm_head",
    });
  }
  return out;
}
