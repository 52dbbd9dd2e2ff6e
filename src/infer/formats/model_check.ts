/**
 * Checks shared by the exporters and readers: which stored form each tensor
 * takes under a bit map, and whether a {@link ModelWeights} holds exactly the
 * tensors of its config in those forms.
 *
 * @module
 */
import { bitMapIssues, type OneBitLlmConfig } from "../../common/config.ts";
import type { QuantMode } from "../../common/quant_mode.ts";
import { modelTensors, type TensorSpec } from "../../core/tensors.ts";
import { f32ArrayToF16Bits } from "../../core/f16.ts";
import { tensorMode } from "../from_latents.ts";
import type { ModelWeights, StoredTensor } from "../weights.ts";
import { ExportError } from "./errors.ts";

/** The {@link StoredTensor} kind a tensor of `mode` is stored as (norms: `"dense"`). */
export function storedKind(
  spec: TensorSpec,
  mode: QuantMode,
): StoredTensor["kind"] {
  if (spec.kind === "norm") return "dense";
  switch (mode) {
    case "f16":
      return "dense";
    case "eightbit":
      return "int8";
    case "ternary":
      return "ternary";
    case "binary":
      return "binary";
  }
}

/**
 * The number of tensors {@link modelTensors} lists for `config`, computed
 * without building the list (readers check it before trusting a config's
 * sizes).
 */
export function tensorCount(config: OneBitLlmConfig): number {
  const normParts = config.norm_type === "layer_norm" ? 2 : 1;
  const perLayer = 6 + (config.use_swiglu ? 1 : 0) +
    normParts *
      (2 + (config.use_qk_norm ? 2 : 0) + (config.use_subln ? 2 : 0));
  return 1 + config.num_layers * perLayer + normParts +
    (config.tie_embeddings ? 0 : 1);
}

/** The dimensions of a stored tensor, outermost first. */
export function storedShape(t: StoredTensor): readonly number[] {
  return t.kind === "dense" ? t.shape : [t.rows, t.cols];
}

const sameShape = (a: readonly number[], b: readonly number[]): boolean =>
  a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * Every tensor of `modelTensors(w.config)` with its stored form, in that
 * (deterministic) order.
 *
 * @throws {ExportError} when the bit map does not fit the config, a tensor is
 * missing, extra, mis-shaped, or not in the form its mode stores, or its
 * arrays have the wrong length.
 */
export function checkedTensors(
  w: ModelWeights,
): Array<readonly [TensorSpec, StoredTensor]> {
  const issues = bitMapIssues(w.config, w.bitMap);
  if (issues.length > 0) {
    throw new ExportError({ message: issues.join("; ") });
  }
  const specs = modelTensors(w.config);
  const known = new Set(specs.map((s) => s.name));
  for (const name of w.tensors.keys()) {
    if (!known.has(name)) {
      throw new ExportError({
        message: `tensor ${name} is not part of this config's model`,
      });
    }
  }
  return specs.map((spec) => {
    const t = w.tensors.get(spec.name);
    if (t === undefined) {
      throw new ExportError({ message: `missing tensor ${spec.name}` });
    }
    const mode = tensorMode(spec, w.bitMap);
    const kind = storedKind(spec, mode);
    if (t.kind !== kind) {
      throw new ExportError({
        message: `${spec.name} is stored as ${t.kind}, but its mode ${
          spec.kind === "norm" ? "(a norm)" : mode
        } stores it as ${kind}`,
      });
    }
    if (!sameShape(storedShape(t), spec.shape)) {
      throw new ExportError({
        message: `${spec.name} has shape [${
          storedShape(t)
        }], the config expects [${spec.shape}]`,
      });
    }
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const length = t.kind === "dense" ? t.data.length : t.codes.length;
    if (length !== n || (t.kind === "int8" && t.scales.length !== t.rows)) {
      throw new ExportError({
        message: `${spec.name}: its arrays do not match shape [${spec.shape}]`,
      });
    }
    return [spec, t] as const;
  });
}

/**
 * The f16 bits of a dense tensor's values.
 *
 * @throws {ExportError} naming the tensor when a value is beyond the f16
 * range (it would become ±Infinity).
 */
export function f16Bits(name: string, data: Float32Array): Uint16Array {
  const bits = f32ArrayToF16Bits(data);
  for (let i = 0; i < bits.length; i++) {
    if ((bits[i] & 0x7c00) === 0x7c00) {
      throw new ExportError({
        message: `${name}: value ${i} (${data[i]}) is outside the f16 range`,
      });
    }
  }
  return bits;
}
