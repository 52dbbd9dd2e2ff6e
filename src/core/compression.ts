/**
 * Storage size of a model under a bit map.
 *
 * @module
 */
import {
  bitMapIssues,
  type OneBitLlmConfig,
  resolveBitMap,
} from "../common/config.ts";
import {
  type LayerBitMap,
  linearMode,
  lmHeadMode,
} from "../common/layer_bit_map.ts";
import type { QuantMode } from "../common/quant_mode.ts";
import { modelTensors, tensorNumel, type TensorSpec } from "./tensors.ts";

/** How a tensor is stored: a quantization mode, or f32 for norms. */
export type StorageMode = QuantMode | "f32";

/** Storage of one tensor. */
export interface TensorStats {
  /** Tensor name (see `modelTensors`). */
  readonly name: string;
  /** Number of weights. */
  readonly params: number;
  /** How it is stored. */
  readonly mode: StorageMode;
  /** Bytes it takes, scales included. */
  readonly bytes: number;
  /** 8 · bytes / params. */
  readonly bitsPerParam: number;
}

/** Storage of one transformer block (its linears and norms). */
export interface LayerStats {
  /** Block index. */
  readonly layer: number;
  /** Number of weights in the block. */
  readonly params: number;
  /** Bytes the block takes. */
  readonly bytes: number;
  /** 8 · bytes / params. */
  readonly bitsPerParam: number;
}

/** Storage of a whole model; see {@link compressionStats}. */
export interface CompressionStats {
  /** Number of stored weights (a tied LM head counted once). */
  readonly totalParams: number;
  /** Bytes of all stored tensors. */
  readonly totalBytes: number;
  /** 8 · totalBytes / totalParams. */
  readonly bitsPerParam: number;
  /** Bytes of the same model with every embedding, head and linear in f16. */
  readonly f16Bytes: number;
  /** f16Bytes / totalBytes. */
  readonly ratio: number;
  /** Every stored tensor, in `modelTensors` order. */
  readonly tensors: ReadonlyArray<TensorStats>;
  /** Every block. */
  readonly layers: ReadonlyArray<LayerStats>;
}

/**
 * Bytes to store an `[rows, cols]` weight matrix (a vector is one row) in
 * `mode`, n = rows · cols:
 * - `f32`: 4n;
 * - `f16`: 2n;
 * - `eightbit`: n int8 weights + one f32 absmax scale per output row: n + 4·rows;
 * - `ternary`: base-3 packing, 5 trits per byte, + one f32 scale γ per
 *   tensor: ceil(n / 5) + 4 (≈ 1.6 bits per weight);
 * - `binary`: 1 bit per weight + one f32 scale per tensor: ceil(n / 8) + 4.
 */
export function storageBytes(
  mode: StorageMode,
  shape: ReadonlyArray<number>,
): number {
  const n = shape.reduce((a, b) => a * b, 1);
  const rows = shape.length > 1 ? shape[0] : 1;
  switch (mode) {
    case "f32":
      return 4 * n;
    case "f16":
      return 2 * n;
    case "eightbit":
      return n + 4 * rows;
    case "ternary":
      return Math.ceil(n / 5) + 4;
    case "binary":
      return Math.ceil(n / 8) + 4;
    default:
      throw new Error(`storageBytes: unknown mode ${JSON.stringify(mode)}`);
  }
}

function tensorMode(spec: TensorSpec, map: LayerBitMap): StorageMode {
  switch (spec.kind) {
    case "norm":
      return "f32";
    case "embedding":
      return map.embedding;
    case "lm_head":
      return lmHeadMode(map);
    case "linear":
      return linearMode(map, spec.layer, spec.linear);
  }
}

function stats(
  map: LayerBitMap,
  specs: ReadonlyArray<TensorSpec>,
): ReadonlyArray<TensorStats> {
  return specs.map((spec) => {
    const mode = tensorMode(spec, map);
    const params = tensorNumel(spec);
    const bytes = storageBytes(mode, spec.shape);
    return {
      name: spec.name,
      params,
      mode,
      bytes,
      bitsPerParam: 8 * bytes / params,
    };
  });
}

const sum = (xs: ReadonlyArray<number>): number =>
  xs.reduce((a, b) => a + b, 0);

/**
 * Storage of `config` under `bitMap` (default `resolveBitMap(config)`): every
 * tensor of `modelTensors(config)` counted once at {@link storageBytes} of
 * its mode — norms f32, the embedding at `bitMap.embedding`, an untied LM head
 * at `lm_head` (a tied one is stored once, as the embedding), each linear at
 * `linearMode`. `f16Bytes` is the same model under an all-`f16` map, so
 * `ratio = f16Bytes / totalBytes` is 1 for an all-f16 map. Throws if `bitMap`
 * does not fit `config`.
 */
export function compressionStats(
  config: OneBitLlmConfig,
  bitMap?: LayerBitMap,
): CompressionStats {
  const map = bitMap ?? resolveBitMap(config);
  const issues = bitMapIssues(config, map);
  if (issues.length > 0) {
    throw new Error(
      `compressionStats: bitMap does not fit the config: ${issues.join("; ")}`,
    );
  }
  const specs = modelTensors(config);
  const tensors = stats(map, specs);
  const f16Map: LayerBitMap = {
    embedding: "f16",
    layer_modes: map.layer_modes.map(() => "f16"),
  };
  const f16Bytes = sum(stats(f16Map, specs).map((t) => t.bytes));
  const totalParams = sum(tensors.map((t) => t.params));
  const totalBytes = sum(tensors.map((t) => t.bytes));
  // One pass over the tensors (a filter per layer was quadratic in depth).
  const layerParams = new Float64Array(config.num_layers);
  const layerBytes = new Float64Array(config.num_layers);
  tensors.forEach((t, i) => {
    const layer = specs[i].layer;
    if (layer === undefined) return;
    layerParams[layer] += t.params;
    layerBytes[layer] += t.bytes;
  });
  const layers = Array.from({ length: config.num_layers }, (_, layer) => {
    const params = layerParams[layer];
    const bytes = layerBytes[layer];
    return { layer, params, bytes, bitsPerParam: 8 * bytes / params };
  });
  return {
    totalParams,
    totalBytes,
    bitsPerParam: 8 * totalBytes / totalParams,
    f16Bytes,
    ratio: f16Bytes / totalBytes,
    tensors,
    layers,
  };
}
