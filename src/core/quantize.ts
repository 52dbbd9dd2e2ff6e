/**
 * Weight and activation quantizers of BitNet b1.58 and its relatives, as pure
 * functions over typed arrays.
 *
 * Conventions shared by every function here:
 * - matrices are row-major `[rows, cols]` `Float32Array`s; for weights a row is
 *   one output channel, for activations a row is one token;
 * - rounding is {@link roundHalfEven} (ties to even, as `torch.round`, which
 *   the BitNet reference code uses);
 * - scales are rounded to f32 (`Math.fround`) before they are used, so the
 *   stored scale is exactly the one the codes were computed with and
 *   quantize → dequantize → quantize gives back the same codes and scales
 *   (for {@link absmeanTernary} the codes only: see there);
 * - arithmetic is f64 on the f32 inputs; dequantized values are rounded to f32
 *   once, when stored;
 * - non-finite input (NaN, ±Infinity) throws a `RangeError` naming the
 *   argument (detected from one sum of |·| per tensor or row, not per element);
 * - an `out` argument, where accepted, must have the input's length, may alias
 *   the input, and is returned.
 *
 * @module
 */
import {
  absMean,
  binaryCode,
  channelCode,
  channelStep,
  checkMatrix,
  dynamicThresholdInto,
  outFor,
  QUANT_EPS,
  ternaryCode,
  tokenCode,
  tokenScale,
} from "../backend/numeric.ts";

// The fake quantizers and the rounding primitives live below the backend, which
// uses them too; they are part of this module's API.
export {
  f16Round,
  fakeQuantizeActivations,
  type FakeQuantizeOptions,
  fakeQuantizeWeights,
  QUANT_EPS,
  roundHalfEven,
} from "../backend/numeric.ts";

/** Codes in {−1, 0, +1} (ternary) or {−1, +1} (binary) with one scale per tensor. */
export interface PerTensorCodes {
  /** One code per weight, same layout as the input. */
  readonly codes: Int8Array;
  /** The f32 scale γ; the dequantized weight is `codes[i] · scale`. */
  readonly scale: number;
}

/** Int8 weight codes with one absmax scale per output channel (row). */
export interface Int8PerChannel {
  /** Tags the dequantization rule, so per-token codes cannot be passed by mistake. */
  readonly layout: "per_channel";
  /** `rows · cols` codes in [−127, 127], row-major. */
  readonly codes: Int8Array;
  /** Per-row step `s_r`; the dequantized weight is `codes[r, c] · scales[r]`. */
  readonly scales: Float32Array;
  /** Number of rows (output channels). */
  readonly rows: number;
  /** Number of columns (input features). */
  readonly cols: number;
}

/** Int8 activation codes with one absmax scale per token (row). */
export interface Int8PerToken {
  /** Tags the dequantization rule, so per-channel codes cannot be passed by mistake. */
  readonly layout: "per_token";
  /** `rows · cols` codes in [−128, 127], row-major. */
  readonly codes: Int8Array;
  /**
   * Per-row multiplier `s = 127 / max(max|x_row|, ε)` (BitNet's convention,
   * the reciprocal of a step): the dequantized activation is `codes[r, c] / scales[r]`.
   */
  readonly scales: Float32Array;
  /** Number of rows (tokens). */
  readonly rows: number;
  /** Number of columns (features). */
  readonly cols: number;
}

/**
 * BitNet b1.58 absmean ternary quantizer:
 * `γ = fround(mean|w|)`, `q_i = clamp(roundHalfEven(w_i / (γ + ε)), −1, 1)`
 * with ε = {@link QUANT_EPS}; returns `{codes: q, scale: γ}`. A quotient of
 * exactly ±½ would get code 0 (tie to even). Empty or all-zero `w` gives γ = 0
 * and all codes 0.
 *
 * Not a projection: re-quantizing the dequantized weights gives the same codes
 * (when γ ≥ 2ε) but the scale `γ · nnz / n`, since zeros now count in the mean.
 *
 * @throws {RangeError} if `w` holds a non-finite value.
 */
export function absmeanTernary(w: Float32Array): PerTensorCodes {
  const gamma = absMean("absmeanTernary", w);
  const codes = new Int8Array(w.length);
  const d = gamma + QUANT_EPS;
  for (let i = 0; i < w.length; i++) codes[i] = ternaryCode(w[i] / d);
  return { codes, scale: gamma };
}

/**
 * Dynamic-threshold ternary quantizer (the variant of the Rust original):
 * `Δ = 0.7 · mean|w|`, `q_i = sign(w_i)` if `|w_i| > Δ` else 0, and
 * `scale = fround(mean{|w_i| : q_i ≠ 0})`, the mean magnitude of the weights
 * kept. When `mean|w| > 0` the largest weight is always kept; when `w` is empty
 * or all zero every code is 0 and the scale is 0 (never NaN).
 *
 * Unlike {@link absmeanTernary} this is a projection: quantizing the
 * dequantized weights gives back the same codes and scale.
 *
 * @throws {RangeError} if `w` holds a non-finite value.
 */
export function dynamicThresholdTernary(w: Float32Array): PerTensorCodes {
  const codes = new Int8Array(w.length);
  const scale = dynamicThresholdInto("dynamicThresholdTernary", w, codes);
  return { codes, scale };
}

/**
 * Binary quantizer: `q_i = sign(w_i)` with `sign(±0) = +1`, `scale =
 * fround(mean|w|)`, so the dequantized weights are in {−γ, +γ}.
 *
 * @throws {RangeError} if `w` holds a non-finite value.
 */
export function binarize(w: Float32Array): PerTensorCodes {
  const gamma = absMean("binarize", w);
  const codes = new Int8Array(w.length);
  for (let i = 0; i < w.length; i++) codes[i] = binaryCode(w[i]);
  return { codes, scale: gamma };
}

/**
 * Dequantizes per-tensor codes (ternary or binary): `out_i = codes_i · scale`.
 *
 * @throws {RangeError} if `out` has the wrong length.
 */
export function dequantizePerTensor(
  q: PerTensorCodes,
  out?: Float32Array,
): Float32Array {
  const { codes, scale } = q;
  const o = outFor("dequantizePerTensor", out, codes.length);
  for (let i = 0; i < codes.length; i++) o[i] = codes[i] * scale;
  return o;
}

/**
 * Int8 weights with an absmax scale per output channel (row r):
 * `s_r = fround(max(max_c |w_rc|, ε) / 127)`,
 * `q_rc = clamp(roundHalfEven(w_rc / s_r), −127, 127)`. The clamp to ε keeps
 * the scale of an all-zero row positive (its codes are 0) and its f32 value
 * normal, so `|w_rc − q_rc · s_r| ≤ s_r / 2` holds for every row. (Rows whose
 * absmax is within an ulp of the f32 maximum get the largest step whose
 * `127 · s_r` is still finite.)
 *
 * @throws {RangeError} if `rows · cols ≠ w.length` or `w` holds a non-finite value.
 */
export function int8PerChannel(
  w: Float32Array,
  rows: number,
  cols: number,
): Int8PerChannel {
  checkMatrix("int8PerChannel", "w", w, rows, cols);
  const codes = new Int8Array(w.length);
  const scales = new Float32Array(rows);
  for (let r = 0, off = 0; r < rows; r++, off += cols) {
    const s = channelStep("int8PerChannel", w, off, cols);
    scales[r] = s;
    for (let i = off; i < off + cols; i++) codes[i] = channelCode(w[i] / s);
  }
  return { layout: "per_channel", codes, scales, rows, cols };
}

/**
 * Dequantizes per-channel int8 weights: `out_rc = codes_rc · scales_r`.
 *
 * @throws {RangeError} if `out` has the wrong length.
 */
export function dequantizeInt8PerChannel(
  q: Int8PerChannel,
  out?: Float32Array,
): Float32Array {
  const { codes, scales, rows, cols } = q;
  const o = outFor("dequantizeInt8PerChannel", out, codes.length);
  for (let r = 0, off = 0; r < rows; r++, off += cols) {
    const s = scales[r];
    for (let i = off; i < off + cols; i++) o[i] = codes[i] * s;
  }
  return o;
}

/**
 * BitNet per-token int8 activation quantizer, for row r (one token):
 * `s_r = fround(127 / max(max_c |x_rc|, ε))`,
 * `q_rc = clamp(roundHalfEven(x_rc · s_r), −128, 127)`; `scales` holds the
 * multipliers `s_r` and the dequantized value is `q_rc / s_r`. No zero point.
 * The clamp is BitNet's; it never binds, since `|x · s_r| ≤ 127 · (1 + 2^-24)`,
 * so −128 does not occur.
 *
 * @throws {RangeError} if `rows · cols ≠ x.length` or `x` holds a non-finite value.
 */
export function int8PerToken(
  x: Float32Array,
  rows: number,
  cols: number,
): Int8PerToken {
  checkMatrix("int8PerToken", "x", x, rows, cols);
  const codes = new Int8Array(x.length);
  const scales = new Float32Array(rows);
  for (let r = 0, off = 0; r < rows; r++, off += cols) {
    const s = tokenScale("int8PerToken", x, off, cols);
    scales[r] = s;
    for (let i = off; i < off + cols; i++) codes[i] = tokenCode(x[i] * s);
  }
  return { layout: "per_token", codes, scales, rows, cols };
}

/**
 * Dequantizes per-token int8 activations: `out_rc = codes_rc / scales_r`.
 *
 * @throws {RangeError} if `out` has the wrong length.
 */
export function dequantizeInt8PerToken(
  q: Int8PerToken,
  out?: Float32Array,
): Float32Array {
  const { codes, scales, rows, cols } = q;
  const o = outFor("dequantizeInt8PerToken", out, codes.length);
  for (let r = 0, off = 0; r < rows; r++, off += cols) {
    const s = scales[r];
    for (let i = off; i < off + cols; i++) o[i] = codes[i] / s;
  }
  return o;
}
