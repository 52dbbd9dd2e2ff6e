/**
 * Byte-exact llama.cpp ternary block layouts TQ2_0 and TQ1_0 (ported from
 * ggml `ggml/src/ggml-quants.c`), and bitnet.cpp's tensor-wide I2_S layout.
 *
 * A row of `n` weights (n a multiple of {@link QK_K}) is `n / 256` consecutive
 * blocks, each with one f16 scale `d` (little-endian) and ternary codes
 * q ∈ {−1, 0, +1} stored as c = q + 1; the weight is `q·d`.
 *
 * Exporters should use {@link packTernaryRowTq2_0} / {@link packTernaryRowTq1_0}
 * (codes plus one scale γ): the ggml quantizers set d to each block's absmax,
 * which re-ternarizes with the wrong threshold unless the weights are already
 * exactly {−γ, 0, +γ}, and stores d = 0 for an all-zero block.
 *
 * @module
 */

import { f16BitsToF32, f32ToF16Bits } from "./f16.ts";

/** Weights per TQ1_0 / TQ2_0 block (ggml's `QK_K`). */
export const QK_K: number = 256;
/** ggml type id of TQ1_0 (`GGML_TYPE_TQ1_0`). */
export const GGML_TYPE_TQ1_0: number = 34;
/** ggml type id of TQ2_0 (`GGML_TYPE_TQ2_0`). */
export const GGML_TYPE_TQ2_0: number = 35;
/** ggml type id of I2_S in bitnet.cpp's ggml fork (not in upstream ggml). */
export const GGML_TYPE_I2_S: number = 36;
/** Bytes per TQ2_0 block: `{u8 qs[64]; f16 d}` (2.0625 bits/weight). */
export const BLOCK_TQ2_0_BYTES: number = 66;
/** Bytes per TQ1_0 block: `{u8 qs[48]; u8 qh[4]; f16 d}` (1.6875 bits/weight). */
export const BLOCK_TQ1_0_BYTES: number = 54;
/** Weights per I2_S interleaving block (x86 layout; 32 bytes). */
export const QK_I2_S: number = 128;

/** Ternary codes of a row with one scale per 256-weight block. */
export interface TernaryBlocks {
  /** Codes q ∈ {−1, 0, +1}, one per weight. */
  readonly codes: Int8Array;
  /** Block scales d (f16 values), one per {@link QK_K} weights; weight = q·d. */
  readonly blockScales: Float32Array;
}

/** Codes and the single scale of an I2_S tensor; weight = q·scale. */
export interface I2STensor {
  /** Codes q ∈ {−1, 0, +1}, one per weight. */
  readonly codes: Int8Array;
  /** The per-tensor f32 scale. */
  readonly scale: number;
}

function checkRowLength(n: number, name: string): number {
  if (!Number.isSafeInteger(n) || n < 0 || n % QK_K !== 0) {
    throw new RangeError(
      `${name} = ${n} is not a non-negative multiple of QK_K = ${QK_K}`,
    );
  }
  return n / QK_K;
}

function checkBytes(bytes: Uint8Array, needed: number): void {
  if (bytes.length < needed) {
    throw new RangeError(`bytes has ${bytes.length} bytes, ${needed} needed`);
  }
}

function checkCodes(codes: Int8Array): void {
  for (let i = 0; i < codes.length; i++) {
    if (codes[i] < -1 || codes[i] > 1) {
      throw new RangeError(`codes[${i}] = ${codes[i]} is not in {-1, 0, 1}`);
    }
  }
}

/** f16 bits of a block scale, which must be ≥ 0 and finite in f16. */
function scaleBits(d: number, name: string): number {
  const h = f32ToF16Bits(d);
  if (!(d >= 0) || (h & 0x7c00) === 0x7c00) {
    throw new RangeError(
      `${name} = ${d} must be ≥ 0 and below 65520 (finite as f16)`,
    );
  }
  return h;
}

function blockScaleBits(blockScales: ArrayLike<number>, nb: number): number[] {
  if (blockScales.length !== nb) {
    throw new RangeError(
      `blockScales.length = ${blockScales.length}, expected ${nb} (one per block)`,
    );
  }
  const bits: number[] = [];
  for (let b = 0; b < nb; b++) {
    bits.push(scaleBits(blockScales[b], `blockScales[${b}]`));
  }
  return bits;
}

function readF16(bytes: Uint8Array, at: number): number {
  return f16BitsToF32(bytes[at] | (bytes[at + 1] << 8));
}

/** C `lroundf`: nearest integer, halfway cases away from zero. */
function lround(v: number): number {
  return v < 0 ? -Math.round(-v) : Math.round(v);
}

/**
 * ggml's reference ternarization (shared by `quantize_row_tq1_0_ref` and
 * `quantize_row_tq2_0_ref`): per block d = max|x|, q = lroundf(x · (1/d)) in
 * f32 arithmetic.
 */
function ternarizeRow(x: Float32Array): TernaryBlocks {
  const nb = checkRowLength(x.length, "x.length");
  const codes = new Int8Array(x.length);
  const blockScales = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    const base = b * QK_K;
    let amax = 0;
    for (let j = base; j < base + QK_K; j++) {
      if (!Number.isFinite(x[j])) {
        throw new RangeError(`x[${j}] = ${x[j]} is not finite`);
      }
      amax = Math.max(amax, Math.abs(x[j]));
    }
    // 1/d overflows f32 for d < ~2.9e-39, which is undefined behaviour
    // upstream (lroundf(inf)); such a d rounds to f16 zero, so code 0 is exact.
    let id = amax ? Math.fround(1 / amax) : 0;
    if (!Number.isFinite(id)) id = 0;
    for (let j = base; j < base + QK_K; j++) {
      codes[j] = lround(Math.fround(x[j] * id));
    }
    blockScales[b] = amax;
  }
  return { codes, blockScales };
}

/** Bytes of a TQ2_0 row of `n` weights: `n / 256 · 66`. */
export function rowBytesTq2_0(n: number): number {
  return checkRowLength(n, "n") * BLOCK_TQ2_0_BYTES;
}

/** Bytes of a TQ1_0 row of `n` weights: `n / 256 · 54`. */
export function rowBytesTq1_0(n: number): number {
  return checkRowLength(n, "n") * BLOCK_TQ1_0_BYTES;
}

/**
 * Writes a TQ2_0 row from codes and per-block scales (the layout half of
 * ggml `quantize_row_tq2_0_ref`). Within each 128-weight half h of a block,
 * `qs[32h + m] = Σ_{l=0..3} c[128h + m + 32l] << 2l`; `d = f16(blockScales[b])`
 * is stored little-endian at byte 64.
 *
 * @throws {RangeError} if `codes.length` is not a multiple of 256, a code is
 * not in {−1, 0, 1}, `blockScales` does not have one entry per block, or a
 * scale is negative, NaN or not finite as f16.
 */
export function encodeRowTq2_0(
  codes: Int8Array,
  blockScales: ArrayLike<number>,
): Uint8Array {
  const nb = checkRowLength(codes.length, "codes.length");
  checkCodes(codes);
  const dBits = blockScaleBits(blockScales, nb);
  const out = new Uint8Array(nb * BLOCK_TQ2_0_BYTES);
  for (let b = 0; b < nb; b++) {
    const o = b * BLOCK_TQ2_0_BYTES;
    let x = b * QK_K;
    for (let j = 0; j < 64; j += 32) {
      for (let m = 0; m < 32; m++) {
        let q = 0;
        for (let n = 0; n < 4; n++) q += (codes[x + m + n * 32] + 1) << (2 * n);
        out[o + j + m] = q;
      }
      x += 4 * 32;
    }
    out[o + 64] = dBits[b] & 0xff;
    out[o + 65] = dBits[b] >>> 8;
  }
  return out;
}

/**
 * Reads a TQ2_0 row back to codes and block scales (the layout half of ggml
 * `dequantize_row_tq2_0`): weight `128h + 32l + m` of a block is
 * `((qs[32h + m] >> 2l) & 3) − 1`.
 *
 * @throws {RangeError} if `n` is not a multiple of 256, `bytes` is shorter
 * than {@link rowBytesTq2_0}(n), or a 2-bit field holds 3 (upstream would
 * decode it as +2·d; it is never written by a ternary quantizer).
 */
export function decodeRowTq2_0(bytes: Uint8Array, n: number): TernaryBlocks {
  const nb = checkRowLength(n, "n");
  checkBytes(bytes, nb * BLOCK_TQ2_0_BYTES);
  const codes = new Int8Array(n);
  const blockScales = new Float32Array(nb);
  let y = 0;
  for (let b = 0; b < nb; b++) {
    const o = b * BLOCK_TQ2_0_BYTES;
    blockScales[b] = readF16(bytes, o + 64);
    for (let j = 0; j < 64; j += 32) {
      for (let l = 0; l < 4; l++) {
        for (let m = 0; m < 32; m++) {
          const c = (bytes[o + j + m] >> (l * 2)) & 3;
          if (c === 3) {
            throw new RangeError(
              `bytes[${o + j + m}] holds the invalid TQ2_0 code 3`,
            );
          }
          codes[y++] = c - 1;
        }
      }
    }
  }
  return { codes, blockScales };
}

/**
 * Quantizes a row to TQ2_0 exactly like ggml `quantize_row_tq2_0_ref`: per
 * 256-block d = max|x|, q = lroundf(x · f32(1/d)) (so |x| ≥ d/2 ↦ ±1), then the
 * {@link encodeRowTq2_0} layout with f16(d).
 *
 * @throws {RangeError} if `x.length` is not a multiple of 256 or an element
 * is not finite.
 */
export function quantizeRowTq2_0(x: Float32Array): Uint8Array {
  const t = ternarizeRow(x);
  return encodeRowTq2_0(t.codes, t.blockScales);
}

/**
 * Dequantizes a TQ2_0 row like ggml `dequantize_row_tq2_0`: `y = q · d` with
 * the block's f16 scale d.
 *
 * @throws {RangeError} as {@link decodeRowTq2_0}.
 */
export function dequantizeRowTq2_0(bytes: Uint8Array, n: number): Float32Array {
  return scaleCodes(decodeRowTq2_0(bytes, n));
}

/**
 * Packs already-ternary codes with one scale γ as TQ2_0: every block gets
 * d = f16(γ), so dequantizing gives exactly `q · f16(γ)` (all-zero blocks
 * included).
 *
 * @throws {RangeError} if `codes.length` is not a multiple of 256, a code is
 * not in {−1, 0, 1}, or `gamma` is negative, NaN or ≥ 65520.
 */
export function packTernaryRowTq2_0(
  codes: Int8Array,
  gamma: number,
): Uint8Array {
  scaleBits(gamma, "gamma");
  const nb = checkRowLength(codes.length, "codes.length");
  return encodeRowTq2_0(codes, new Array<number>(nb).fill(gamma));
}

/** `ceil(q · 256 / 243)`: TQ1_0's byte for the 5-trit value q (243 = 3^5). */
function tritByte(q: number): number {
  return ((q * 256 + 242) / 243) | 0;
}

/**
 * Writes a TQ1_0 row from codes and per-block scales (the layout half of ggml
 * `quantize_row_tq1_0_ref`). Per block: `qs[m]` (m < 32) holds weights
 * m + 32n, `qs[32 + m]` (m < 16) holds 160 + m + 16n (n = 0..4), and `qh[j]`
 * (j < 4) holds 240 + j + 4m (m = 0..3), each as the trits
 * q = Σ c_n·3^(4−n) (first weight most significant; qh has an extra ·3)
 * stored as `ceil(q·256/243)`; `d = f16(blockScales[b])` is stored
 * little-endian at byte 52.
 *
 * @throws {RangeError} as {@link encodeRowTq2_0}.
 */
export function encodeRowTq1_0(
  codes: Int8Array,
  blockScales: ArrayLike<number>,
): Uint8Array {
  const nb = checkRowLength(codes.length, "codes.length");
  checkCodes(codes);
  const dBits = blockScaleBits(blockScales, nb);
  const out = new Uint8Array(nb * BLOCK_TQ1_0_BYTES);
  for (let b = 0; b < nb; b++) {
    const o = b * BLOCK_TQ1_0_BYTES;
    let x = b * QK_K;
    // 5 elements per byte, along 32 bytes
    for (let m = 0; m < 32; m++) {
      let q = 0;
      for (let n = 0; n < 5; n++) q = q * 3 + codes[x + m + n * 32] + 1;
      out[o + m] = tritByte(q);
    }
    x += 5 * 32;
    // along 16 bytes
    for (let m = 0; m < 16; m++) {
      let q = 0;
      for (let n = 0; n < 5; n++) q = q * 3 + codes[x + m + n * 16] + 1;
      out[o + 32 + m] = tritByte(q);
    }
    x += 5 * 16;
    // 4 elements per byte; ·3 shifts the first to the most significant trit
    for (let j = 0; j < 4; j++) {
      let q = 0;
      for (let m = 0; m < 4; m++) q = q * 3 + codes[x + j + m * 4] + 1;
      out[o + 48 + j] = tritByte(q * 3);
    }
    out[o + 52] = dBits[b] & 0xff;
    out[o + 53] = dBits[b] >>> 8;
  }
  return out;
}

const POW3 = [1, 3, 9, 27, 81, 243];

/**
 * Reads a TQ1_0 row back to codes and block scales (the layout half of ggml
 * `dequantize_row_tq1_0`): trit n of byte b is `((u8)(b·3^n) · 3) >> 8`.
 *
 * @throws {RangeError} if `n` is not a multiple of 256 or `bytes` is shorter
 * than {@link rowBytesTq1_0}(n).
 */
export function decodeRowTq1_0(bytes: Uint8Array, n: number): TernaryBlocks {
  const nb = checkRowLength(n, "n");
  checkBytes(bytes, nb * BLOCK_TQ1_0_BYTES);
  const codes = new Int8Array(n);
  const blockScales = new Float32Array(nb);
  const trit = (byte: number, k: number): number =>
    ((((byte * POW3[k]) & 0xff) * 3) >> 8) - 1;
  let y = 0;
  for (let b = 0; b < nb; b++) {
    const o = b * BLOCK_TQ1_0_BYTES;
    blockScales[b] = readF16(bytes, o + 52);
    // Loop order as upstream: trit k (k = n there) of each byte in turn.
    for (let k = 0; k < 5; k++) {
      for (let m = 0; m < 32; m++) codes[y++] = trit(bytes[o + m], k);
    }
    for (let k = 0; k < 5; k++) {
      for (let m = 0; m < 16; m++) codes[y++] = trit(bytes[o + 32 + m], k);
    }
    for (let k = 0; k < 4; k++) {
      for (let j = 0; j < 4; j++) codes[y++] = trit(bytes[o + 48 + j], k);
    }
  }
  return { codes, blockScales };
}

/**
 * Quantizes a row to TQ1_0 exactly like ggml `quantize_row_tq1_0_ref`: the
 * same ternarization as {@link quantizeRowTq2_0}, then the
 * {@link encodeRowTq1_0} layout.
 *
 * @throws {RangeError} if `x.length` is not a multiple of 256 or an element
 * is not finite.
 */
export function quantizeRowTq1_0(x: Float32Array): Uint8Array {
  const t = ternarizeRow(x);
  return encodeRowTq1_0(t.codes, t.blockScales);
}

/**
 * Dequantizes a TQ1_0 row like ggml `dequantize_row_tq1_0`: `y = q · d` with
 * the block's f16 scale d.
 *
 * @throws {RangeError} as {@link decodeRowTq1_0}.
 */
export function dequantizeRowTq1_0(bytes: Uint8Array, n: number): Float32Array {
  return scaleCodes(decodeRowTq1_0(bytes, n));
}

/**
 * Packs already-ternary codes with one scale γ as TQ1_0: every block gets
 * d = f16(γ), so dequantizing gives exactly `q · f16(γ)`.
 *
 * @throws {RangeError} as {@link packTernaryRowTq2_0}.
 */
export function packTernaryRowTq1_0(
  codes: Int8Array,
  gamma: number,
): Uint8Array {
  scaleBits(gamma, "gamma");
  const nb = checkRowLength(codes.length, "codes.length");
  return encodeRowTq1_0(codes, new Array<number>(nb).fill(gamma));
}

function scaleCodes(t: TernaryBlocks): Float32Array {
  const y = new Float32Array(t.codes.length);
  for (let i = 0; i < y.length; i++) {
    y[i] = t.codes[i] * t.blockScales[(i / QK_K) | 0];
  }
  return y;
}

/** Bytes of an I2_S tensor of `n` weights: n/4 codes, f32 scale, padding to +32. */
export function bytesI2S(n: number): number {
  if (!Number.isSafeInteger(n) || n < 0 || n % QK_I2_S !== 0) {
    throw new RangeError(
      `n = ${n} is not a non-negative multiple of QK_I2_S = ${QK_I2_S}`,
    );
  }
  return n / 4 + 32;
}

/**
 * Packs a whole ternary tensor in bitnet.cpp's x86 I2_S layout (mirrors the
 * packing in bitnet.cpp `quantize_i2_s`): per 128-weight block i, byte
 * `32i + (j mod 32)` holds weight j at bits `6 − 2⌊j/32⌋` (bits 7-6, 5-4, 3-2,
 * 1-0 for j in the 1st..4th 32), with −1→00, 0→01, +1→10; then the f32 scale
 * (little-endian) at byte n/4 and zero padding to n/4 + 32 bytes.
 *
 * @throws {RangeError} if `codes.length` is not a multiple of 128, a code is
 * not in {−1, 0, 1}, or `scale` is not finite as f32.
 */
export function packI2S(codes: Int8Array, scale: number): Uint8Array {
  const out = new Uint8Array(bytesI2S(codes.length));
  if (!Number.isFinite(Math.fround(scale))) {
    throw new RangeError(`scale = ${scale} is not finite as f32`);
  }
  checkCodes(codes);
  for (let i = 0; i < codes.length; i++) {
    const blk = (i / QK_I2_S) | 0;
    const j = i % QK_I2_S;
    out[blk * 32 + (j & 31)] |= (codes[i] + 1) << (6 - 2 * (j >> 5));
  }
  new DataView(out.buffer).setFloat32(codes.length / 4, scale, true);
  return out;
}

/**
 * Reads an I2_S tensor of `n` weights (inverse of {@link packI2S}); only the
 * codes and the 4-byte scale are required, not the trailing padding.
 *
 * @throws {RangeError} if `n` is not a multiple of 128, `bytes` is shorter
 * than n/4 + 4, or a 2-bit field holds 3.
 */
export function unpackI2S(bytes: Uint8Array, n: number): I2STensor {
  bytesI2S(n);
  checkBytes(bytes, n / 4 + 4);
  const codes = new Int8Array(n);
  for (let i = 0; i < n; i++) {
    const at = ((i / QK_I2_S) | 0) * 32 + (i & 31);
    const c = (bytes[at] >> (6 - 2 * ((i % QK_I2_S) >> 5))) & 3;
    if (c === 3) {
      throw new RangeError(`bytes[${at}] holds the invalid I2_S code 3`);
    }
    codes[i] = c - 1;
  }
  const scale = new DataView(bytes.buffer, bytes.byteOffset, bytes.length)
    .getFloat32(n / 4, true);
  return { codes, scale };
}
