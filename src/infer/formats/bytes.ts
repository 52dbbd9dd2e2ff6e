/**
 * Little-endian byte cursors for the binary model formats: a growable writer
 * and a bounds-checked reader. The reader never allocates more than the bytes
 * it was given can hold: every count is checked against what is left before
 * anything is built from it, so a corrupt length (2^60, say) is an error, not
 * a huge allocation or a hang.
 *
 * @module
 */

/** A violation of a file format, found by {@link ByteReader}; readers turn it into a `DataError`. */
export class FormatViolation extends Error {
  /** What is wrong, without the file name (the caller adds it). */
  constructor(message: string) {
    super(message);
    this.name = "FormatViolation";
  }
}

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });

/**
 * Appends little-endian values to a buffer that grows as needed. (Each method
 * reserves before it touches `buf`/`view`, which growing replaces.)
 */
export class ByteWriter {
  private buf: Uint8Array = new Uint8Array(1 << 16);
  private view: DataView = new DataView(this.buf.buffer);
  /** Bytes written so far. */
  length = 0;

  /** Grows the buffer to hold `n` more bytes; returns where they start. */
  private reserve(n: number): number {
    const at = this.length;
    if (at + n > this.buf.length) {
      let size = this.buf.length * 2;
      while (size < at + n) size *= 2;
      const next = new Uint8Array(size);
      next.set(this.buf.subarray(0, at));
      this.buf = next;
      this.view = new DataView(next.buffer);
    }
    this.length = at + n;
    return at;
  }

  /** Appends one byte. */
  u8(v: number): void {
    const at = this.reserve(1);
    this.buf[at] = v;
  }

  /** Appends a u32. */
  u32(v: number): void {
    const at = this.reserve(4);
    this.view.setUint32(at, v, true);
  }

  /** Appends an i32. */
  i32(v: number): void {
    const at = this.reserve(4);
    this.view.setInt32(at, v, true);
  }

  /** Appends a u64 (a safe integer). */
  u64(v: number): void {
    const at = this.reserve(8);
    this.view.setBigUint64(at, BigInt(v), true);
  }

  /** Appends an f32. */
  f32(v: number): void {
    const at = this.reserve(4);
    this.view.setFloat32(at, v, true);
  }

  /** Appends raw bytes. */
  bytes(b: Uint8Array): void {
    const at = this.reserve(b.length);
    this.buf.set(b, at);
  }

  /** Appends a UTF-8 string as a u64 byte length and its bytes (GGUF's string). */
  string(s: string): void {
    const b = utf8.encode(s);
    this.u64(b.length);
    this.bytes(b);
  }

  /** Appends zero bytes up to the next multiple of `alignment`. */
  align(alignment: number): void {
    const pad = (alignment - (this.length % alignment)) % alignment;
    this.reserve(pad);
    this.buf.fill(0, this.length - pad, this.length);
  }

  /** The bytes written (a copy). */
  finish(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

/** Reads little-endian values from bytes, throwing {@link FormatViolation} past the end. */
export class ByteReader {
  private readonly view: DataView;
  /** The read position. */
  at = 0;

  /** A reader over `bytes`, starting at offset 0. */
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  }

  /** Bytes left after the read position. */
  get left(): number {
    return this.bytes.length - this.at;
  }

  /** Throws unless `n` more bytes are there, `what` naming them. */
  need(n: number, what: string): void {
    if (n > this.left) {
      throw new FormatViolation(
        `truncated: ${what} needs ${n} bytes at offset ${this.at}, the file has ${this.left} left`,
      );
    }
  }

  /** Reads a u8. */
  u8(what: string): number {
    this.need(1, what);
    return this.bytes[this.at++];
  }

  /** Reads a u32. */
  u32(what: string): number {
    this.need(4, what);
    const v = this.view.getUint32(this.at, true);
    this.at += 4;
    return v;
  }

  /** Reads an i32. */
  i32(what: string): number {
    this.need(4, what);
    const v = this.view.getInt32(this.at, true);
    this.at += 4;
    return v;
  }

  /**
   * Reads a u64 that must be at most `max` (itself a safe integer), so that
   * it can be used as a count or offset; `what` names it in the message.
   */
  u64(what: string, max: number): number {
    this.need(8, what);
    const v = this.view.getBigUint64(this.at, true);
    this.at += 8;
    if (v > BigInt(max)) {
      throw new FormatViolation(`${what} = ${v} is larger than ${max}`);
    }
    return Number(v);
  }

  /** Reads an f32. */
  f32(what: string): number {
    this.need(4, what);
    const v = this.view.getFloat32(this.at, true);
    this.at += 4;
    return v;
  }

  /** Reads an f64. */
  f64(what: string): number {
    this.need(8, what);
    const v = this.view.getFloat64(this.at, true);
    this.at += 8;
    return v;
  }

  /** A view of the next `n` bytes (no copy). */
  take(n: number, what: string): Uint8Array {
    this.need(n, what);
    const v = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    return v;
  }

  /** Reads a GGUF string: u64 byte length, then that many bytes of UTF-8. */
  string(what: string): string {
    const n = this.u64(`${what} length`, this.left);
    try {
      return utf8Strict.decode(this.take(n, what));
    } catch (e) {
      if (e instanceof FormatViolation) throw e;
      throw new FormatViolation(`${what} is not valid UTF-8`);
    }
  }
}

/** The bytes of a `Float32Array` (a view, little-endian hosts). */
export function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** A copy of `n` little-endian f32 values at the start of `bytes` (any alignment). */
export function readF32Array(bytes: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  new Uint8Array(out.buffer).set(bytes.subarray(0, 4 * n));
  return out;
}

/** A copy of `n` little-endian u16 values at the start of `bytes` (any alignment). */
export function readU16Array(bytes: Uint8Array, n: number): Uint16Array {
  const out = new Uint16Array(n);
  new Uint8Array(out.buffer).set(bytes.subarray(0, 2 * n));
  return out;
}
