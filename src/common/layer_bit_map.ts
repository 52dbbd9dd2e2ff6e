/**
 * Per-layer (and optionally per-linear) quantization modes of a model.
 *
 * JSON form, as written by the original `ternary-core`:
 *
 * ```json
 * {
 *   "embedding": "f16",
 *   "layer_modes": ["ternary", "ternary", "eightbit", "ternary"],
 *   "lm_head": "f16",
 *   "overrides": { "3.mlp.down": "eightbit" }
 * }
 * ```
 *
 * @module
 */
import { Schema } from "effect";
import { QuantMode } from "./quant_mode.ts";

/**
 * The linear layers of one transformer block, in `<group>.<linear>` form.
 * `mlp.gate` exists only in SwiGLU models.
 */
export const LINEAR_NAMES: readonly [
  "attn.q",
  "attn.k",
  "attn.v",
  "attn.o",
  "mlp.gate",
  "mlp.up",
  "mlp.down",
] = [
  "attn.q",
  "attn.k",
  "attn.v",
  "attn.o",
  "mlp.gate",
  "mlp.up",
  "mlp.down",
] as const;

/** One of {@link LINEAR_NAMES}. */
export type LinearName = typeof LINEAR_NAMES[number];

/**
 * Syntax of an override key `<layer>.<linear>`: a canonical decimal layer index
 * (no sign, no leading zeros) and one of {@link LINEAR_NAMES}.
 */
export const OVERRIDE_KEY_PATTERN: RegExp =
  /^(0|[1-9][0-9]*)\.(attn\.q|attn\.k|attn\.v|attn\.o|mlp\.gate|mlp\.up|mlp\.down)$/;

/** A decoded {@link LayerBitMap}. */
export interface LayerBitMap {
  /** Mode of the token embedding table. */
  readonly embedding: QuantMode;
  /** Mode of every linear of block `i`, one entry per block. */
  readonly layer_modes: ReadonlyArray<QuantMode>;
  /** Mode of the LM head; absent means the same as `embedding`. */
  readonly lm_head?: QuantMode;
  /** Finer per-linear modes, keyed `<layer>.<linear>` (e.g. `"3.mlp.down"`). */
  readonly overrides?: { readonly [key: string]: QuantMode };
}

// Checked on the record rather than as its key schema: a record drops keys that
// fail the key schema instead of reporting them.
const Overrides = Schema.Record(Schema.String, QuantMode).check(
  Schema.makeFilter((overrides) =>
    Object.keys(overrides).filter((key) => !OVERRIDE_KEY_PATTERN.test(key))
      .map((key) => ({
        path: [key],
        issue: `expected a key "<layer>.<linear>" with <linear> one of ${
          LINEAR_NAMES.join(", ")
        }`,
      }))
  ),
);

/**
 * Schema of a {@link LayerBitMap}. Checks the syntax of override keys; whether
 * the map fits a model (length, layer indices, `mlp.gate`) is checked by the
 * model config.
 */
export const LayerBitMap: Schema.Codec<LayerBitMap> = Schema.Struct({
  embedding: QuantMode,
  layer_modes: Schema.Array(QuantMode),
  lm_head: Schema.optionalKey(QuantMode),
  overrides: Schema.optionalKey(Overrides),
});

/** The mode of the LM head: `map.lm_head`, falling back to `map.embedding`. */
export function lmHeadMode(map: LayerBitMap): QuantMode {
  return map.lm_head ?? map.embedding;
}

/**
 * The mode of linear `linear` of block `layer`:
 * `overrides["<layer>.<linear>"]` if present, else `layer_modes[layer]`.
 * Throws if `layer` is not an index of `layer_modes`.
 */
export function linearMode(
  map: LayerBitMap,
  layer: number,
  linear: LinearName,
): QuantMode {
  if (
    !Number.isInteger(layer) || layer < 0 || layer >= map.layer_modes.length
  ) {
    throw new RangeError(
      `linearMode: layer ${layer} is out of range (the bit map has ${map.layer_modes.length} layers)`,
    );
  }
  return map.overrides?.[`${layer}.${linear}`] ?? map.layer_modes[layer];
}
