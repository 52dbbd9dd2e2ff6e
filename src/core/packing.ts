/**
 * Dense bit packing for ternary and binary weight codes, in this library's own
 * little-endian layouts (for the llama.cpp/bitnet.cpp layouts see
 * `gguf_blocks.ts`).
 *
 * Ternary codes are `Int8Array` values q ∈ {−1, 0, +1}, stored as c = q + 1 ∈
 * {0, 1, 2}. Packers pad the last byte with code 0 (stored c = 1), so a
 * kernel that reads whole bytes sees zero weights past the end; unpackers
 * read exactly `n` codes and ignore the padding.
 *
 * @module
 */

function checkCount(n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(`n must be a non-negative integer, got ${n}`);
  }
}

function checkLength(bytes: Uint8Array, needed: number, n: number): void {
  if (bytes.length < needed) {
    throw new RangeError(
      `bytes has ${bytes.length} bytes, ${needed} needed for n = ${n}`,
    );
  }
}

/** Throws unless `codes[i] ∈ {−1, 0, 1}`; returns the stored value c = q + 1. */
function storedTernary(codes: Int8Array, i: number): number {
  const q = codes[i];
  if (q < -1 || q > 1) {
    throw new RangeError(`codes[${i}] = ${q} is not in {-1, 0, 1}`);
  }
  return q + 1;
}

/** Bytes {@link pack2bit} produces for `n` codes: ⌈n/4⌉. */
export function packed2bitLength(n: number): number {
  checkCount(n);
  return Math.ceil(n / 4);
}

/**
 * Packs ternary codes at 2 bits each: code i is stored as c = q + 1 in byte
 * `i >> 2` at bits `2·(i & 3)` (bit offsets 0, 2, 4, 6; the first code in the
 * low bits). Padding codes are 0 (c = 1).
 *
 * @throws {RangeError} naming the element when a code is not in {−1, 0, 1}.
 */
export function pack2bit(codes: Int8Array): Uint8Array {
  const n = codes.length;
  // 0x55 = four stored c = 1 (code 0): the padding value, overwritten below.
  const out = new Uint8Array(packed2bitLength(n)).fill(0x55);
  for (let i = 0; i < n; i++) {
    const shift = 2 * (i & 3);
    const byte = i >> 2;
    out[byte] = (out[byte] & ~(3 << shift)) |
      (storedTernary(codes, i) << shift);
  }
  return out;
}

/**
 * Inverse of {@link pack2bit}: `q_i = ((bytes[i >> 2] >> 2·(i & 3)) & 3) − 1`
 * for i < n.
 *
 * @throws {RangeError} if `n` is not a non-negative integer, if `bytes` is
 * shorter than ⌈n/4⌉, or if a stored value is 3 (not a ternary code).
 */
export function unpack2bit(bytes: Uint8Array, n: number): Int8Array {
  checkLength(bytes, packed2bitLength(n), n);
  const out = new Int8Array(n);
  for (let i = 0; i < n; i++) {
    const c = (bytes[i >> 2] >> (2 * (i & 3))) & 3;
    if (c === 3) {
      throw new RangeError(
        `bytes[${i >> 2}] holds the invalid 2-bit value 3 for code ${i}`,
      );
    }
    out[i] = c - 1;
  }
  return out;
}

/** Bytes {@link packBase3} produces for `n` codes: ⌈n/5⌉. */
export function packedBase3Length(n: number): number {
  checkCount(n);
  return Math.ceil(n / 5);
}

/**
 * Packs ternary codes five per byte in base 3 (1.6 bits/weight): byte k =
 * Σ_{j=0..4} c_{5k+j}·3^j with c = q + 1, so the first code is the least
 * significant trit and every byte is < 243. Padding codes are 0 (c = 1).
 *
 * @throws {RangeError} naming the element when a code is not in {−1, 0, 1}.
 */
export function packBase3(codes: Int8Array): Uint8Array {
  const n = codes.length;
  const out = new Uint8Array(packedBase3Length(n));
  for (let k = 0; k < out.length; k++) {
    let v = 0;
    // Horner from the most significant trit (j = 4) down to j = 0.
    for (let j = 4; j >= 0; j--) {
      const i = 5 * k + j;
      v = 3 * v + (i < n ? storedTernary(codes, i) : 1);
    }
    out[k] = v;
  }
  return out;
}

/**
 * Inverse of {@link packBase3}: `q_i = ⌊bytes[⌊i/5⌋] / 3^(i mod 5)⌋ mod 3 − 1`
 * for i < n.
 *
 * @throws {RangeError} if `n` is not a non-negative integer, if `bytes` is
 * shorter than ⌈n/5⌉, or if a byte it reads is ≥ 243 (not five trits).
 */
export function unpackBase3(bytes: Uint8Array, n: number): Int8Array {
  const nb = packedBase3Length(n);
  checkLength(bytes, nb, n);
  const out = new Int8Array(n);
  for (let k = 0; k < nb; k++) {
    let v = bytes[k];
    if (v >= 243) {
      throw new RangeError(`bytes[${k}] = ${v} is not a base-3 byte (< 243)`);
    }
    const end = Math.min(n, 5 * k + 5);
    for (let i = 5 * k; i < end; i++) {
      out[i] = (v % 3) - 1;
      v = (v / 3) | 0;
    }
  }
  return out;
}

/** Bytes {@link packBinary} produces for `n` signs: ⌈n/8⌉. */
export function packedBinaryLength(n: number): number {
  checkCount(n);
  return Math.ceil(n / 8);
}

/**
 * Packs signs s ∈ {−1, +1} at 1 bit each: sign i is bit `i & 7` (LSB first)
 * of byte `i >> 3`, set for +1 and clear for −1. Padding bits are 0.
 *
 * @throws {RangeError} naming the element when a sign is not −1 or +1.
 */
export function packBinary(signs: Int8Array): Uint8Array {
  const out = new Uint8Array(packedBinaryLength(signs.length));
  for (let i = 0; i < signs.length; i++) {
    const s = signs[i];
    if (s === 1) out[i >> 3] |= 1 << (i & 7);
    else if (s !== -1) {
      throw new RangeError(`signs[${i}] = ${s} is not -1 or +1`);
    }
  }
  return out;
}

/**
 * Inverse of {@link packBinary}: `s_i = bit(i) ? +1 : −1` for i < n.
 *
 * @throws {RangeError} if `n` is not a non-negative integer or `bytes` is
 * shorter than ⌈n/8⌉.
 */
export function unpackBinary(bytes: Uint8Array, n: number): Int8Array {
  checkLength(bytes, packedBinaryLength(n), n);
  const out = new Int8Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = (bytes[i >> 3] >> (i & 7)) & 1 ? 1 : -1;
  }
  return out;
}
