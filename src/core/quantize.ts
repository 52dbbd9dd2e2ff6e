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
import type { QuantMode } from "../common/quant_mode.ts";
import { roundToF16 } from "./f16.ts";

/**
 * ε of BitNet b1.58: the ternary divisor is `γ + ε`, and the per-token and
 * per-channel int8 quantizers clamp a row's `max|·|` below by ε, so all-zero
 * input gives finite scales and zero codes instead of NaN.
 */
export const QUANT_EPS: number = 1e-5;

const F32_MAX = 3.4028234663852886e38;
/**
 * The largest f32 step s with `127 · s ≤ F32_MAX`: `fround(F32_MAX / 127)` rounds
 * up, and a row whose absmax is within an ulp of F32_MAX would dequantize to ∞.
 */
const MAX_STEP: number = (() => {
  const b = Float32Array.of(F32_MAX / 127);
  if (127 * b[0] > F32_MAX) new Uint32Array(b.buffer)[0]--; // next f32 towards 0
  return b[0];
})();

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

/** Options of {@link fakeQuantizeWeights}. */
export interface FakeQuantizeOptions {
  /** For `"ternary"`: use {@link dynamicThresholdTernary} instead of {@link absmeanTernary}. */
  readonly dynamicThreshold?: boolean;
}

/**
 * Rounds to the nearest integer, ties to even: `roundHalfEven(2.5) = 2`,
 * `roundHalfEven(-1.5) = -2`, `roundHalfEven(0.5) = 0`. Symmetric, so every
 * quantizer here satisfies `Q(−w) = −Q(w)`. Inputs in [−0.5, 0) give −0.
 */
export function roundHalfEven(v: number): number {
  const r = Math.round(v); // ties towards +∞
  // r − v is exact (both are within 0.5 of each other), so a tie is detected exactly.
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
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
  const gamma = absmean("absmeanTernary", w);
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
  const gamma = absmean("binarize", w);
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
  checkShape("int8PerChannel", "w", w, rows, cols);
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
  checkShape("int8PerToken", "x", x, rows, cols);
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

/**
 * Rounds to the nearest f16 value, ties to even (`Math.f16round` where the
 * engine has it, else the portable `roundToF16` of `./f16.ts`; both give the
 * same results). Magnitudes ≥ 65520 give ±Infinity.
 */
export const f16Round: (x: number) => number =
  typeof Math.f16round === "function" ? Math.f16round : roundToF16;

/**
 * The weights the forward pass sees under `mode`, `Q(w)`, without materializing
 * codes (bitwise equal to dequantizing the codes):
 * - `"f16"`: `f16Round(w_i)`;
 * - `"eightbit"`: {@link int8PerChannel} then `q_rc · s_r`;
 * - `"ternary"`: {@link absmeanTernary} (or {@link dynamicThresholdTernary} with
 *   `options.dynamicThreshold`) then `q_i · γ`;
 * - `"binary"`: {@link binarize} then `q_i · γ`.
 *
 * `rows` and `cols` are the matrix shape (only `"eightbit"` depends on it, but
 * it is checked for every mode).
 *
 * @throws {RangeError} if `rows · cols ≠ w.length`, `out` has the wrong length,
 * `w` holds a non-finite value, or (for `"f16"`) a magnitude ≥ 65520.
 */
export function fakeQuantizeWeights(
  mode: QuantMode,
  w: Float32Array,
  rows: number,
  cols: number,
  options: FakeQuantizeOptions = {},
  out?: Float32Array,
): Float32Array {
  const fn = "fakeQuantizeWeights";
  checkShape(fn, "w", w, rows, cols);
  const o = outFor(fn, out, w.length);
  switch (mode) {
    case "f16": {
      // Checked before writing, so an in-place call that throws leaves w intact.
      const m = rowAbsMax(fn, "w", w, 0, w.length);
      if (m >= 65520) {
        throw new RangeError(
          `${fn}: w holds ${m} in magnitude, outside the f16 range (< 65520)`,
        );
      }
      roundArrayToF16(w, o);
      return o;
    }
    case "eightbit":
      for (let r = 0, off = 0; r < rows; r++, off += cols) {
        const s = channelStep(fn, w, off, cols);
        for (let i = off; i < off + cols; i++) o[i] = channelCode(w[i] / s) * s;
      }
      return o;
    case "ternary": {
      if (options.dynamicThreshold) {
        // The codes go to o first (exact small integers), then are scaled in place.
        const scale = dynamicThresholdInto(fn, w, o);
        for (let i = 0; i < o.length; i++) o[i] *= scale;
        return o;
      }
      const gamma = absmean(fn, w);
      const d = gamma + QUANT_EPS;
      for (let i = 0; i < w.length; i++) o[i] = ternaryCode(w[i] / d) * gamma;
      return o;
    }
    case "binary": {
      const gamma = absmean(fn, w);
      for (let i = 0; i < w.length; i++) o[i] = binaryCode(w[i]) * gamma;
      return o;
    }
    default:
      throw new RangeError(`${fn}: unknown mode ${JSON.stringify(mode)}`);
  }
}

/**
 * The activations the forward pass sees: per-token int8 quantization
 * ({@link int8PerToken}) followed by dequantization, `out_rc = q_rc / s_r`,
 * bitwise equal to `dequantizeInt8PerToken(int8PerToken(x, rows, cols))`.
 *
 * @throws {RangeError} if `rows · cols ≠ x.length`, `out` has the wrong length,
 * or `x` holds a non-finite value.
 */
export function fakeQuantizeActivations(
  x: Float32Array,
  rows: number,
  cols: number,
  out?: Float32Array,
): Float32Array {
  const fn = "fakeQuantizeActivations";
  checkShape(fn, "x", x, rows, cols);
  const o = outFor(fn, out, x.length);
  for (let r = 0, off = 0; r < rows; r++, off += cols) {
    const s = tokenScale(fn, x, off, cols);
    for (let i = off; i < off + cols; i++) o[i] = tokenCode(x[i] * s) / s;
  }
  return o;
}

// ---------------------------------------------------------------------------

const F16_CHUNK = 8192;
let f16Scratch: Float16Array | undefined;

/**
 * `o[i] = f16Round(w[i])`. Through a `Float16Array` where the engine has one: its
 * bulk conversion (a single ties-to-even rounding, like `Math.f16round`) measured
 * ~5× faster than calling `Math.f16round` per element.
 */
function roundArrayToF16(w: Float32Array, o: Float32Array): void {
  if (typeof Float16Array !== "function") {
    for (let i = 0; i < w.length; i++) o[i] = f16Round(w[i]);
    return;
  }
  const h = (f16Scratch ??= new Float16Array(F16_CHUNK));
  for (let off = 0; off < w.length; off += F16_CHUNK) {
    const end = Math.min(off + F16_CHUNK, w.length);
    h.set(w.subarray(off, end));
    o.set(h.subarray(0, end - off), off);
  }
}

// The code functions avoid data-dependent branches: on random signs a mispredicted
// `?:` per element made these loops ~10× slower than the arithmetic forms below.

/** `clamp(roundHalfEven(v), −1, 1)`, written as the two thresholds it reduces to. */
function ternaryCode(v: number): number {
  return Number(v > 0.5) - Number(v < -0.5);
}

/** sign(w) with sign(±0) = +1. */
function binaryCode(w: number): number {
  return 1 - 2 * Number(w < 0);
}

/** 1.5 · 2^52: adding and subtracting it rounds |v| ≤ 2^51 to an integer, ties to even. */
const RNE_MAGIC = 6755399441055744;

/**
 * `roundHalfEven(v)` for the bounded quotients of the int8 quantizers (|v| ≤ 128
 * by construction of the scales), using the FPU's own round-to-nearest-even.
 */
function roundBounded(v: number): number {
  return v + RNE_MAGIC - RNE_MAGIC;
}

function channelCode(v: number): number {
  const q = roundBounded(v);
  return q > 127 ? 127 : q < -127 ? -127 : q; // rarely binds: predictable branches
}

function tokenCode(v: number): number {
  const q = roundBounded(v);
  return q > 127 ? 127 : q < -128 ? -128 : q;
}

/** `fround(mean|w|)` (0 for empty w), checking that every element is finite. */
function absmean(fn: string, w: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < w.length; i++) sum += Math.abs(w[i]);
  checkFinite(fn, "w", sum);
  return w.length === 0 ? 0 : Math.fround(sum / w.length);
}

/** Writes dynamic-threshold codes into `codes` and returns the scale. */
function dynamicThresholdInto(
  fn: string,
  w: Float32Array,
  codes: Int8Array | Float32Array,
): number {
  let sum = 0;
  for (let i = 0; i < w.length; i++) sum += Math.abs(w[i]);
  checkFinite(fn, "w", sum);
  const delta = w.length === 0 ? 0 : 0.7 * (sum / w.length);
  let kept = 0;
  let n = 0;
  for (let i = 0; i < w.length; i++) {
    const v = w[i];
    const keep = Number(Math.abs(v) > delta);
    codes[i] = keep * (1 - 2 * Number(v < 0));
    kept += keep * Math.abs(v);
    n += keep;
  }
  return n === 0 ? 0 : Math.fround(kept / n);
}

/** `max|·|` of `cols` elements from `off`, checking that they are finite. */
function rowAbsMax(
  fn: string,
  arg: string,
  a: Float32Array,
  off: number,
  cols: number,
): number {
  let m = 0;
  let sum = 0; // NaN and ±Infinity survive a sum; a max by comparison drops NaN
  for (let i = off; i < off + cols; i++) {
    const v = Math.abs(a[i]);
    if (v > m) m = v;
    sum += v;
  }
  checkFinite(fn, arg, sum);
  return m;
}

function channelStep(
  fn: string,
  w: Float32Array,
  off: number,
  cols: number,
): number {
  const s = Math.fround(
    Math.max(rowAbsMax(fn, "w", w, off, cols), QUANT_EPS) / 127,
  );
  return s > MAX_STEP ? MAX_STEP : s;
}

function tokenScale(
  fn: string,
  x: Float32Array,
  off: number,
  cols: number,
): number {
  return Math.fround(
    127 / Math.max(rowAbsMax(fn, "x", x, off, cols), QUANT_EPS),
  );
}

function checkFinite(fn: string, arg: string, sum: number): void {
  if (!Number.isFinite(sum)) {
    throw new RangeError(
      `${fn}: ${arg} holds a non-finite value (NaN or ±Infinity)`,
    );
  }
}

function checkShape(
  fn: string,
  arg: string,
  a: Float32Array,
  rows: number,
  cols: number,
): void {
  if (!Number.isSafeInteger(rows) || rows < 0) {
    throw new RangeError(
      `${fn}: rows must be a non-negative integer, got ${rows}`,
    );
  }
  if (!Number.isSafeInteger(cols) || cols < 0) {
    throw new RangeError(
      `${fn}: cols must be a non-negative integer, got ${cols}`,
    );
  }
  if (rows * cols !== a.length) {
    throw new RangeError(
      `${fn}: rows · cols = ${rows} · ${cols} must equal ${arg}.length = ${a.length}`,
    );
  }
}

function outFor(
  fn: string,
  out: Float32Array | undefined,
  n: number,
): Float32Array {
  if (out === undefined) return new Float32Array(n);
  if (out.length !== n) {
    throw new RangeError(`${fn}: out.length must be ${n}, got ${out.length}`);
  }
  return out;
}
