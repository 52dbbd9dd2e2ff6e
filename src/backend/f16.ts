/**
 * IEEE 754 binary16 ("f16", ggml's `ggml_half`) conversion.
 *
 * Implemented in plain arithmetic rather than with `Math.f16round` /
 * `Float16Array`, so the results are identical on engines that lack them (JSR
 * consumers may run older ones); the tests cross-check against the native
 * versions where the engine has them.
 *
 * @module
 */

// Big-endian views make the f64 bit split independent of platform endianness.
const scratch = new DataView(new ArrayBuffer(8));

/** 2^-14: the smallest normal f16. */
const MIN_NORMAL = 6.103515625e-5;
/** 65520 = 65504 + ulp/2: from here on round-to-nearest-even gives infinity. */
const OVERFLOW = 65520;

/** Rounds `v ≥ 0` to the nearest integer, ties to even. */
function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const r = v - f;
  return r > 0.5 || (r === 0.5 && (f & 1) === 1) ? f + 1 : f;
}

/**
 * Rounds a number to the nearest f16 and returns its 16 bit pattern.
 *
 * Round to nearest, ties to even, in a single rounding from the given value
 * (for any f32 input this equals ggml's `GGML_FP32_TO_FP16` / F16C
 * `vcvtps2ph` with rounding mode 0). Magnitudes ≥ 65520 (and ±Infinity) give
 * ±Infinity (0x7c00 | sign); values below 2^-14 become subnormals
 * `round(|x|·2^24)`, flushing to ±0 only below 2^-25 (ties to +0). NaN gives
 * the quiet NaN 0x7e00 with the input's sign bit (payloads are not kept).
 */
export function f32ToF16Bits(x: number): number {
  scratch.setFloat64(0, x);
  const hi = scratch.getUint32(0);
  const sign = (hi >>> 16) & 0x8000;
  if (Number.isNaN(x)) return sign | 0x7e00;
  const a = Math.abs(x);
  if (a >= OVERFLOW) return sign | 0x7c00;
  // Subnormal range: the quantum is 2^-24; a·2^24 is exact (power-of-two scale).
  // A result of 1024 is the smallest normal, which the bit pattern encodes as is.
  if (a < MIN_NORMAL) return sign | roundHalfEven(a * 16777216);
  const e = ((hi >>> 20) & 0x7ff) - 1023; // unbiased exponent, −14..15
  // Mantissa with implicit bit, in [1024, 2048]; 2048 carries into the exponent.
  const m = roundHalfEven(a * 2 ** (10 - e));
  return sign | (((e + 15) << 10) + m - 1024);
}

/**
 * Decodes an f16 bit pattern to its exact value:
 * `(−1)^s · 2^(e−15) · (1 + m/1024)` for normals, `(−1)^s · 2^−24 · m` for
 * subnormals (e = 0), ±Infinity for e = 31, m = 0, and NaN for e = 31, m ≠ 0.
 * Every f16 value is exactly representable in f32, so the result is one too.
 *
 * @throws {RangeError} if `h` is not an integer in [0, 65535].
 */
export function f16BitsToF32(h: number): number {
  if (!Number.isInteger(h) || h < 0 || h > 0xffff) {
    throw new RangeError(`h must be an integer in [0, 65535], got ${h}`);
  }
  return decode(h);
}

function decode(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 5.960464477539063e-8; // m · 2^-24
  if (e === 31) return m === 0 ? s * Infinity : NaN;
  return s * (1024 + m) * 2 ** (e - 25);
}

/**
 * Rounds `x` to the nearest f16 value (ties to even) and returns it as a
 * number: `f16BitsToF32(f32ToF16Bits(x))`. This is the value a reader of an
 * f16 field written from `x` gets back.
 */
export function roundToF16(x: number): number {
  return decode(f32ToF16Bits(x));
}

/**
 * Converts every element with {@link f32ToF16Bits}; `out[i] = f16bits(src[i])`.
 */
export function f32ArrayToF16Bits(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToF16Bits(src[i]);
  return out;
}

/**
 * Decodes every element with {@link f16BitsToF32}; `out[i] = f16value(src[i])`
 * (exact: every f16 value is an f32 value).
 */
export function f16BitsToF32Array(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = decode(src[i]);
  return out;
}
