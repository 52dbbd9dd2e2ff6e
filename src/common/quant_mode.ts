/**
 * The storage and compute precision of one tensor or linear layer.
 *
 * @module
 */
import { Schema } from "effect";

/** The quantization modes, with the names of the original `ternary-core`. */
export const QUANT_MODES: readonly ["f16", "eightbit", "ternary", "binary"] = [
  "f16",
  "eightbit",
  "ternary",
  "binary",
] as const;

/**
 * One quantization mode:
 * - `"f16"`: full precision (latent f32 in training, stored as f16);
 * - `"eightbit"`: int8 weights, absmax scale per output channel;
 * - `"ternary"`: weights in {−γ, 0, +γ}, γ = mean |W| (BitNet b1.58);
 * - `"binary"`: weights in {−γ, +γ}, γ = mean |W|.
 */
export type QuantMode = typeof QUANT_MODES[number];

/** Schema of a {@link QuantMode} as it appears in JSON. */
export const QuantMode: Schema.Literals<
  readonly ["f16", "eightbit", "ternary", "binary"]
> = Schema.Literals(QUANT_MODES);
