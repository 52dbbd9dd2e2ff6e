/**
 * {@link ModelWeights} from a trained run's latent (full-precision) weights:
 * each linear, the embedding and the LM head quantized once, per its mode in
 * the bit map, with the quantizers of `src/core/quantize.ts` — the same ones
 * the training model's forward pass applies at λ = 1.
 *
 * @module
 */
import { bitMapIssues, type OneBitLlmConfig } from "../common/config.ts";
import {
  type LayerBitMap,
  linearMode,
  lmHeadMode,
} from "../common/layer_bit_map.ts";
import type { QuantMode } from "../common/quant_mode.ts";
import type { Tokenizer } from "../common/tokenizer.ts";
import {
  absmeanTernary,
  binarize,
  dynamicThresholdTernary,
  fakeQuantizeWeights,
  int8PerChannel,
} from "../core/quantize.ts";
import { modelTensors, tensorNumel, type TensorSpec } from "../core/tensors.ts";
import { InferenceError } from "./errors.ts";
import type { ModelWeights, StoredTensor } from "./weights.ts";

/** A trained model as training holds it: latent weights and the λ its forward pass ends at. */
export interface LatentModel {
  /** The architecture. */
  readonly config: OneBitLlmConfig;
  /** The mode of every linear, the embedding and the head. */
  readonly bitMap: LayerBitMap;
  /** The tokenizer the model was trained with. */
  readonly tokenizer: Tokenizer;
  /** Latent f32 weights by tensor name (`modelTensors(config)`). */
  readonly params: ReadonlyMap<string, Float32Array>;
  /**
   * λ of the quantizers at the end of the run: 1 (quantized, the usual case)
   * or 0 (the run never left full precision). Values in between are refused.
   */
  readonly lambda: number;
}

/** The mode of one stored tensor under `bitMap` (norms: `"f16"`, kept as f32). */
export function tensorMode(spec: TensorSpec, bitMap: LayerBitMap): QuantMode {
  switch (spec.kind) {
    case "embedding":
      return bitMap.embedding;
    case "lm_head":
      return lmHeadMode(bitMap);
    case "linear":
      return linearMode(bitMap, spec.layer, spec.linear);
    case "norm":
      return "f16";
  }
}

/**
 * One tensor quantized as the training model's forward pass sees it at λ = 1:
 * norms as they are; `"f16"` rounded to f16 and widened; `"eightbit"` int8
 * codes with a scale per row; `"ternary"` absmean codes (dynamic-threshold for
 * block linears when `config.use_dynamic_threshold`); `"binary"` sign codes.
 *
 * @throws {InferenceError} naming the tensor when its values are not finite
 * or (for `"f16"`) outside the f16 range.
 */
export function quantizeTensor(
  spec: TensorSpec,
  latent: Float32Array,
  mode: QuantMode,
  config: OneBitLlmConfig,
): StoredTensor {
  const shape = spec.shape;
  if (spec.kind === "norm") {
    return { kind: "dense", shape, data: latent.slice() };
  }
  const [rows, cols] = shape;
  try {
    switch (mode) {
      case "f16":
        return {
          kind: "dense",
          shape,
          data: fakeQuantizeWeights("f16", latent, rows, cols),
        };
      case "eightbit": {
        const q = int8PerChannel(latent, rows, cols);
        return { kind: "int8", rows, cols, codes: q.codes, scales: q.scales };
      }
      case "ternary": {
        // The training model passes the dynamic threshold to block linears only.
        const dynamic = spec.kind === "linear" && config.use_dynamic_threshold;
        const q = dynamic
          ? dynamicThresholdTernary(latent)
          : absmeanTernary(latent);
        return { kind: "ternary", rows, cols, codes: q.codes, scale: q.scale };
      }
      case "binary": {
        const q = binarize(latent);
        return { kind: "binary", rows, cols, codes: q.codes, scale: q.scale };
      }
    }
  } catch (e) {
    if (e instanceof RangeError) {
      throw new InferenceError({ message: `${spec.name}: ${e.message}` });
    }
    throw e;
  }
}

/** Every tensor of `config`, checked against `params` by name and length. */
function latentTensors(
  config: OneBitLlmConfig,
  params: ReadonlyMap<string, Float32Array>,
): Array<readonly [TensorSpec, Float32Array]> {
  return modelTensors(config).map((spec) => {
    const v = params.get(spec.name);
    if (v === undefined) {
      throw new InferenceError({ message: `missing tensor ${spec.name}` });
    }
    if (v.length !== tensorNumel(spec)) {
      throw new InferenceError({
        message: `${spec.name} has ${v.length} values, expected ${
          tensorNumel(spec)
        } (shape [${spec.shape}])`,
      });
    }
    return [spec, v] as const;
  });
}

/**
 * The inference weights of a trained run, each tensor quantized once by
 * {@link quantizeTensor} under `run.bitMap`. At λ = 0 (a run that never left
 * full precision) every tensor stays dense and unrounded, as the training
 * model runs it, and the bit map says `"f16"` everywhere.
 *
 * @throws {InferenceError} for λ strictly between 0 and 1, a bit map that does
 * not fit the config, or a missing or mis-sized tensor.
 */
export function weightsFromTrainedRun(run: LatentModel): ModelWeights {
  const { config, bitMap, lambda } = run;
  if (lambda !== 0 && lambda !== 1) {
    throw new InferenceError({
      message:
        `the run ends at quantization λ = ${lambda}, between full precision (0) and quantized (1); ` +
        "inference runs a finished run only (train it to the end of its λ schedule)",
    });
  }
  const issues = bitMapIssues(config, bitMap);
  if (issues.length > 0) {
    throw new InferenceError({ message: issues.join("; ") });
  }
  const tensors = new Map<string, StoredTensor>();
  if (lambda === 0) {
    for (const [spec, v] of latentTensors(config, run.params)) {
      tensors.set(spec.name, {
        kind: "dense",
        shape: spec.shape,
        data: v.slice(),
      });
    }
    return {
      config,
      bitMap: {
        embedding: "f16",
        layer_modes: bitMap.layer_modes.map(() => "f16" as const),
      },
      tokenizer: run.tokenizer,
      tensors,
    };
  }
  for (const [spec, v] of latentTensors(config, run.params)) {
    tensors.set(
      spec.name,
      quantizeTensor(spec, v, tensorMode(spec, bitMap), config),
    );
  }
  return { config, bitMap, tokenizer: run.tokenizer, tensors };
}
