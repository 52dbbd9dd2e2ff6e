/**
 * The quantizer arithmetic shared by the backends and the codes of
 * `src/core/quantize.ts`: BitNet's ε, ties-to-even rounding, the per-tensor,
 * per-channel and per-token scales, and the fake quantizers (the weights and
 * activations the forward pass sees). It sits below both, so the backend
 * imports nothing from `src/core`, and a code quantizer and its fake quantizer
 * cannot drift apart.
 *
 * Conventions (those of `src/core/quantize.ts`):
 * - matrices are row-major `[rows, cols]` `Float32Array`s; for weights a row is
 *   one output channel, for activations a row is one token;
 * - rounding is {@link roundHalfEven} (ties to even, as `torch.round`);
 * - scales are rounded to f32 (`Math.fround`) before they are used;
 * - arithmetic is f64 on the f32 inputs; results are rounded to f32 once, when
 *   stored;
 * - non-finite input throws a `RangeError` naming the argument (detected from
 *   one sum of |·| per tensor or row, not per element);
 * - an `out` argument must have the input's length, may alias the input, and
 *   is returned.
 *
 * @module
 */
import { roundToF16 } from "./f16.ts";
import type { WeightQuantMode } from "./shapes.ts";

/**
 * ε of BitNet b1.58: the ternary divisor is `γ + ε`, and the per-token and
 * per-channel int8 quantizers clamp a row's `max|·|` below by ε, so all-zero
 * input gives finite scales and zero codes instead of NaN.
 */
export const QUANT_EPS: number = 1e-5;

const F32_MAX = 3.4028234663852886e38;

/**
 * The largest f32 step s with `127 · s ≤ F32_MAX`, the cap of the int8 weight
 * step: `fround(F32_MAX / 127)` rounds up, and a row whose absmax is within an
 * ulp of F32_MAX would dequantize to ∞.
 */
export const MAX_INT8_STEP: number = (() => {
  const b = Float32Array.of(F32_MAX / 127);
  if (127 * b[0] > F32_MAX) new Uint32Array(b.buffer)[0]--; // next f32 towards 0
  return b[0];
})();

/** Options of {@link fakeQuantizeWeights}. */
export interface FakeQuantizeOptions {
  /** For `"ternary"`: the dynamic-threshold quantizer instead of absmean. */
  readonly dynamicThreshold?: boolean;
}

/**
 * Rounds to the nearest integer, ties to even: `roundHalfEven(2.5) = 2`,
 * `roundHalfEven(-1.5) = -2`, `roundHalfEven(0.5) = 0`. Symmetric, so every
 * quantizer satisfies `Q(−w) = −Q(w)`. Inputs in [−0.5, 0) give −0.
 */
export function roundHalfEven(v: number): number {
  const r = Math.round(v); // ties towards +∞
  // r − v is exact (both are within 0.5 of each other), so a tie is detected exactly.
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
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
 * codes (bitwise equal to dequantizing the codes of `src/core/quantize.ts`):
 * - `"f16"`: `f16Round(w_i)`;
 * - `"eightbit"`: per row `s_r = fround(max(max_c |w_rc|, ε) / 127)`, then
 *   `clamp(roundHalfEven(w_rc / s_r), −127, 127) · s_r`;
 * - `"ternary"`: `γ = fround(mean|w|)`, `clamp(roundHalfEven(w_i / (γ + ε)), −1, 1) · γ`
 *   (or, with `options.dynamicThreshold`, `sign(w_i) · scale` where
 *   `|w_i| > 0.7·mean|w|`, scale the mean magnitude of the weights kept);
 * - `"binary"`: `sign(w_i) · γ` with `sign(±0) = +1`.
 *
 * `rows` and `cols` are the matrix shape (only `"eightbit"` depends on it, but
 * it is checked for every mode).
 *
 * @throws {RangeError} if `rows · cols ≠ w.length`, `out` has the wrong length,
 * `w` holds a non-finite value, or (for `"f16"`) a magnitude ≥ 65520.
 */
export function fakeQuantizeWeights(
  mode: WeightQuantMode,
  w: Float32Array,
  rows: number,
  cols: number,
  options: FakeQuantizeOptions = {},
  out?: Float32Array,
): Float32Array {
  const fn = "fakeQuantizeWeights";
  checkMatrix(fn, "w", w, rows, cols);
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
      const gamma = absMean(fn, w);
      const d = gamma + QUANT_EPS;
      for (let i = 0; i < w.length; i++) o[i] = ternaryCode(w[i] / d) * gamma;
      return o;
    }
    case "binary": {
      const gamma = absMean(fn, w);
      for (let i = 0; i < w.length; i++) o[i] = binaryCode(w[i]) * gamma;
      return o;
    }
    default:
      throw new RangeError(`${fn}: unknown mode ${JSON.stringify(mode)}`);
  }
}

/**
 * The activations the forward pass sees: BitNet's per-token int8 quantization,
 * `s_r = fround(127 / max(max_c |x_rc|, ε))`,
 * `out_rc = clamp(roundHalfEven(x_rc · s_r), −128, 127) / s_r`.
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
  checkMatrix(fn, "x", x, rows, cols);
  const o = outFor(fn, out, x.length);
  for (let r = 0, off = 0; r < rows; r++, off += cols) {
    const s = tokenScale(fn, x, off, cols);
    for (let i = off; i < off + cols; i++) o[i] = tokenCode(x[i] * s) / s;
  }
  return o;
}

// --- the pieces the code quantizers of src/core/quantize.ts share -----------------

// The code functions avoid data-dependent branches: on random signs a mispredicted
// `?:` per element made these loops ~10× slower than the arithmetic forms below.

/** The ternary code `clamp(roundHalfEven(v), −1, 1)`, as the two thresholds it reduces to. */
export function ternaryCode(v: number): number {
  return Number(v > 0.5) - Number(v < -0.5);
}

/** The binary code sign(w), with sign(±0) = +1. */
export function binaryCode(w: number): number {
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

/** The per-channel int8 weight code `clamp(roundHalfEven(v), −127, 127)`. */
export function channelCode(v: number): number {
  const q = roundBounded(v);
  return q > 127 ? 127 : q < -127 ? -127 : q; // rarely binds: predictable branches
}

/** The per-token int8 activation code `clamp(roundHalfEven(v), −128, 127)`. */
export function tokenCode(v: number): number {
  const q = roundBounded(v);
  return q > 127 ? 127 : q < -128 ? -128 : q;
}

/** `fround(mean|w|)` (0 for empty w); `fn` names the caller in the non-finite error. */
export function absMean(fn: string, w: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < w.length; i++) sum += Math.abs(w[i]);
  checkFinite(fn, "w", sum);
  return w.length === 0 ? 0 : Math.fround(sum / w.length);
}

/**
 * Writes the dynamic-threshold ternary codes of `w` into `codes`
 * (`sign(w_i)` where `|w_i| > 0.7·mean|w|`, else 0) and returns the scale
 * `fround(mean{|w_i| : kept})`, 0 when nothing is kept.
 */
export function dynamicThresholdInto(
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

/** `max|·|` of `cols` elements of `a` from `off`, checking that they are finite. */
export function rowAbsMax(
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

/** The int8 weight step of one row, `fround(max(max|w_row|, ε) / 127)`, capped at {@link MAX_INT8_STEP}. */
export function channelStep(
  fn: string,
  w: Float32Array,
  off: number,
  cols: number,
): number {
  const s = Math.fround(
    Math.max(rowAbsMax(fn, "w", w, off, cols), QUANT_EPS) / 127,
  );
  return s > MAX_INT8_STEP ? MAX_INT8_STEP : s;
}

/** The int8 activation multiplier of one row, `fround(127 / max(max|x_row|, ε))`. */
export function tokenScale(
  fn: string,
  x: Float32Array,
  off: number,
  cols: number,
): number {
  return Math.fround(
    127 / Math.max(rowAbsMax(fn, "x", x, off, cols), QUANT_EPS),
  );
}

/**
 * Throws a `RangeError` unless `rows` and `cols` are non-negative integers with
 * `rows · cols = a.length`; `fn` and `arg` name the caller and the array.
 */
export function checkMatrix(
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

/** `out`, checked to hold `n` values, or a new array of `n` when it is absent. */
export function outFor(
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

function checkFinite(fn: string, arg: string, sum: number): void {
  if (!Number.isFinite(sum)) {
    throw new RangeError(
      `${fn}: ${arg} holds a non-finite value (NaN or ±Infinity)`,
    );
  }
}

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
