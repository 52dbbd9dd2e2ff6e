/**
 * The GGUF v3 container (llama.cpp's model file), independent of any model:
 *
 * ```text
 * "GGUF" u32 version=3  u64 tensor_count  u64 metadata_count
 * metadata_count × (string key, u32 value_type, value)
 * tensor_count   × (string name, u32 n_dims, u64 dims[n_dims] (innermost first),
 *                   u32 ggml_type, u64 offset (from the start of the data))
 * zero padding to general.alignment (default 32)
 * data: every tensor at a multiple of the alignment
 * ```
 *
 * Strings are a u64 byte length and UTF-8 bytes; value types are 0 u8, 1 i8,
 * 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array (u32 item
 * type, u64 count, items), 10 u64, 11 i64, 12 f64; everything little-endian.
 *
 * The reader checks every length and count against the bytes left before it
 * builds anything, so a corrupt file fails with a {@link FormatViolation}
 * instead of a huge allocation or a hang.
 *
 * @module
 */
import { ByteReader, ByteWriter, FormatViolation } from "./bytes.ts";

/** The GGUF magic, as the first four bytes of the file. */
export const GGUF_MAGIC = "GGUF";
/** The version written and read. */
export const GGUF_VERSION = 3;
/** `general.alignment` when the file does not set it. */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** ggml tensor types this module knows the size of. */
export const GGML_TYPE: {
  readonly F32: 0;
  readonly F16: 1;
  readonly Q8_0: 8;
  readonly TQ1_0: 34;
  readonly TQ2_0: 35;
} = { F32: 0, F16: 1, Q8_0: 8, TQ1_0: 34, TQ2_0: 35 };

/** `[elements per block, bytes per block]` of each known ggml type. */
const BLOCK: Readonly<Record<number, readonly [number, number]>> = {
  0: [1, 4],
  1: [1, 2],
  8: [32, 34],
  34: [256, 54],
  35: [256, 66],
};

const TYPE_NAME: Readonly<Record<number, string>> = {
  0: "F32",
  1: "F16",
  8: "Q8_0",
  34: "TQ1_0",
  35: "TQ2_0",
};

/** The name of a ggml type (`type N` for one this module does not know). */
export function ggmlTypeName(type: number): string {
  return TYPE_NAME[type] ?? `type ${type}`;
}

/** A scalar metadata type. */
export type GgufScalarType =
  | "u8"
  | "i8"
  | "u16"
  | "i16"
  | "u32"
  | "i32"
  | "f32"
  | "bool"
  | "string"
  | "u64"
  | "i64"
  | "f64";

/** One metadata value: a scalar or an array of one scalar type. */
export type GgufValue =
  | { readonly type: "string"; readonly value: string }
  | { readonly type: "bool"; readonly value: boolean }
  | {
    readonly type: Exclude<GgufScalarType, "string" | "bool">;
    readonly value: number;
  }
  | {
    readonly type: "array";
    readonly itemType: GgufScalarType;
    readonly value: ReadonlyArray<string | number | boolean>;
  };

/** A tensor to write: its name, dims (innermost first), ggml type and bytes. */
export interface GgufTensorInput {
  /** The tensor's name, e.g. `blk.0.attn_q.weight`. */
  readonly name: string;
  /** Dimensions, innermost (row) first, as GGUF stores them. */
  readonly dims: readonly number[];
  /** The ggml type id. */
  readonly type: number;
  /** The encoded data, exactly {@link ggmlTensorBytes} long. */
  readonly data: Uint8Array;
}

/** A tensor read from a file: its info and a view of its bytes. */
export interface GgufTensor extends GgufTensorInput {
  /** Offset of the data from the start of the data section. */
  readonly offset: number;
}

/** The contents of a GGUF file. */
export interface GgufFile {
  /** Metadata in file order. */
  readonly metadata: ReadonlyMap<string, GgufValue>;
  /** Tensors in file order. */
  readonly tensors: ReadonlyArray<GgufTensor>;
}

const SCALAR_CODE: Readonly<Record<GgufScalarType, number>> = {
  u8: 0,
  i8: 1,
  u16: 2,
  i16: 3,
  u32: 4,
  i32: 5,
  f32: 6,
  bool: 7,
  string: 8,
  u64: 10,
  i64: 11,
  f64: 12,
};
const ARRAY_CODE = 9;
const CODE_SCALAR: ReadonlyMap<number, GgufScalarType> = new Map(
  Object.entries(SCALAR_CODE).map(([k, v]) => [v, k as GgufScalarType]),
);

/**
 * Bytes of a tensor of `dims` in ggml type `type`: rows of `dims[0]`
 * elements, each a whole number of blocks.
 *
 * @throws {FormatViolation} for an unknown type, or a row length that is not
 * a multiple of the type's block.
 */
export function ggmlTensorBytes(type: number, dims: readonly number[]): number {
  const block = BLOCK[type];
  if (block === undefined) {
    throw new FormatViolation(`unsupported ggml tensor type ${type}`);
  }
  const [per, bytes] = block;
  if (dims.length > 0 && dims[0] % per !== 0) {
    throw new FormatViolation(
      `rows of ${dims[0]} elements are not whole ${
        ggmlTypeName(type)
      } blocks of ${per}`,
    );
  }
  return dims.reduce((a, b) => a * b, 1) / per * bytes;
}

function writeScalar(
  w: ByteWriter,
  type: GgufScalarType,
  v: string | number | boolean,
): void {
  switch (type) {
    case "string":
      return w.string(v as string);
    case "bool":
      return w.u8(v ? 1 : 0);
    case "u8":
      return w.u8(v as number);
    case "u32":
      return w.u32(v as number);
    case "i32":
      return w.i32(v as number);
    case "f32":
      return w.f32(v as number);
    case "u64":
      return w.u64(v as number);
    default:
      throw new Error(`writing GGUF ${type} values is not supported`);
  }
}

/**
 * The bytes of a GGUF v3 file with `metadata` (in the given order) and
 * `tensors` (in order, each at the next multiple of `general.alignment`,
 * which must be in `metadata` as a u32 if it is not 32).
 *
 * @throws {Error} when a tensor's data does not have its type's size.
 */
export function encodeGgufFile(
  metadata: ReadonlyArray<readonly [string, GgufValue]>,
  tensors: ReadonlyArray<GgufTensorInput>,
): Uint8Array {
  const alignEntry = metadata.find(([k]) => k === "general.alignment");
  const alignment = alignEntry === undefined
    ? GGUF_DEFAULT_ALIGNMENT
    : Number(alignEntry[1].value);
  const w = new ByteWriter();
  w.bytes(new TextEncoder().encode(GGUF_MAGIC));
  w.u32(GGUF_VERSION);
  w.u64(tensors.length);
  w.u64(metadata.length);
  for (const [key, v] of metadata) {
    w.string(key);
    if (v.type === "array") {
      w.u32(ARRAY_CODE);
      w.u32(SCALAR_CODE[v.itemType]);
      w.u64(v.value.length);
      for (const item of v.value) writeScalar(w, v.itemType, item);
    } else {
      w.u32(SCALAR_CODE[v.type]);
      writeScalar(w, v.type, v.value);
    }
  }
  let offset = 0;
  const offsets = tensors.map((t) => {
    const size = ggmlTensorBytes(t.type, t.dims);
    if (t.data.length !== size) {
      throw new Error(
        `${t.name}: ${t.data.length} bytes, ${
          ggmlTypeName(t.type)
        } [${t.dims}] takes ${size}`,
      );
    }
    const at = offset;
    offset = Math.ceil((at + size) / alignment) * alignment;
    return at;
  });
  tensors.forEach((t, i) => {
    w.string(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(t.type);
    w.u64(offsets[i]);
  });
  w.align(alignment);
  const dataStart = w.length;
  tensors.forEach((t, i) => {
    w.align(alignment);
    if (w.length - dataStart !== offsets[i]) {
      throw new Error(`${t.name}: data offset mismatch`);
    }
    w.bytes(t.data);
  });
  return w.finish();
}

function readScalar(
  r: ByteReader,
  type: GgufScalarType,
  what: string,
): string | number | boolean {
  switch (type) {
    case "u8":
      return r.u8(what);
    case "i8":
      return (r.u8(what) << 24) >> 24;
    case "u16":
      return r.u8(what) | (r.u8(what) << 8);
    case "i16":
      return ((r.u8(what) | (r.u8(what) << 8)) << 16) >> 16;
    case "u32":
      return r.u32(what);
    case "i32":
      return r.i32(what);
    case "f32":
      return r.f32(what);
    case "bool": {
      const b = r.u8(what);
      if (b > 1) throw new FormatViolation(`${what}: bool byte ${b}`);
      return b === 1;
    }
    case "string":
      return r.string(what);
    case "u64":
      return r.u64(what, Number.MAX_SAFE_INTEGER);
    case "i64": {
      r.need(8, what);
      const v = new DataView(r.bytes.buffer, r.bytes.byteOffset + r.at, 8)
        .getBigInt64(0, true);
      r.at += 8;
      if (
        v > BigInt(Number.MAX_SAFE_INTEGER) ||
        -v > BigInt(Number.MAX_SAFE_INTEGER)
      ) {
        throw new FormatViolation(`${what} = ${v} is beyond ±2^53`);
      }
      return Number(v);
    }
    case "f64":
      return r.f64(what);
  }
}

/** Smallest encoded size of one item of each type (bounds array counts). */
const MIN_ITEM_BYTES: Readonly<Record<GgufScalarType, number>> = {
  u8: 1,
  i8: 1,
  bool: 1,
  u16: 2,
  i16: 2,
  u32: 4,
  i32: 4,
  f32: 4,
  u64: 8,
  i64: 8,
  f64: 8,
  string: 8,
};

function scalarType(code: number, what: string): GgufScalarType {
  const t = CODE_SCALAR.get(code);
  if (t === undefined) {
    throw new FormatViolation(`${what}: unknown value type ${code}`);
  }
  return t;
}

/** Most dimensions a ggml tensor has. */
const MAX_DIMS = 4;

/**
 * Parses a GGUF v3 file's bytes; tensor data are views of `bytes`.
 *
 * @throws {FormatViolation} on a foreign magic, another version, a truncated
 * file, an unknown value or tensor type, a count or size larger than the file
 * could hold, a misaligned, overlapping or out-of-bounds tensor, or a
 * duplicate key or tensor name.
 */
export function decodeGgufFile(bytes: Uint8Array): GgufFile {
  const r = new ByteReader(bytes);
  const magic = r.take(4, "the magic");
  if (new TextDecoder().decode(magic) !== GGUF_MAGIC) {
    throw new FormatViolation(`not a GGUF file (magic is not "${GGUF_MAGIC}")`);
  }
  const version = r.u32("the version");
  if (version !== GGUF_VERSION) {
    throw new FormatViolation(
      `GGUF version ${version}; this reader reads version ${GGUF_VERSION}`,
    );
  }
  // A tensor info takes at least 8 + 4 + 4 + 8 bytes, a metadata entry 8 + 4 + 1.
  const tensorCount = r.u64("the tensor count", Math.floor(r.left / 24));
  const metadataCount = r.u64("the metadata count", Math.floor(r.left / 13));
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < metadataCount; i++) {
    const key = r.string(`metadata key ${i}`);
    if (metadata.has(key)) {
      throw new FormatViolation(`metadata key ${key} appears twice`);
    }
    const code = r.u32(`metadata ${key} type`);
    if (code === ARRAY_CODE) {
      const itemType = scalarType(r.u32(`metadata ${key} item type`), key);
      const n = r.u64(
        `metadata ${key} count`,
        Math.floor(r.left / MIN_ITEM_BYTES[itemType]),
      );
      const value: Array<string | number | boolean> = [];
      for (let j = 0; j < n; j++) {
        value.push(readScalar(r, itemType, `metadata ${key}[${j}]`));
      }
      metadata.set(key, { type: "array", itemType, value });
    } else {
      const type = scalarType(code, `metadata ${key}`);
      const value = readScalar(r, type, `metadata ${key}`);
      metadata.set(key, { type, value } as GgufValue);
    }
  }
  const alignValue = metadata.get("general.alignment");
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  if (alignValue !== undefined) {
    const a = alignValue.value;
    if (
      alignValue.type !== "u32" || typeof a !== "number" || a === 0 ||
      (a & (a - 1)) !== 0
    ) {
      throw new FormatViolation(
        `general.alignment must be a u32 power of two, got ${String(a)}`,
      );
    }
    alignment = a;
  }
  const infos: Array<Omit<GgufTensor, "data"> & { size: number }> = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const name = r.string(`tensor ${i} name`);
    if (names.has(name)) {
      throw new FormatViolation(`tensor ${name} appears twice`);
    }
    names.add(name);
    const nDims = r.u32(`tensor ${name} dimension count`);
    if (nDims < 1 || nDims > MAX_DIMS) {
      throw new FormatViolation(
        `tensor ${name} has ${nDims} dimensions (1 to ${MAX_DIMS})`,
      );
    }
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) {
      dims.push(r.u64(`tensor ${name} dimension ${d}`, bytes.length * 8));
    }
    const type = r.u32(`tensor ${name} type`);
    const offset = r.u64(`tensor ${name} offset`, bytes.length);
    if (dims.reduce((a, b) => a * b, 1) > bytes.length * 8) {
      throw new FormatViolation(
        `tensor ${name}: [${dims}] is larger than the file could hold`,
      );
    }
    let size: number;
    try {
      size = ggmlTensorBytes(type, dims);
    } catch (e) {
      throw new FormatViolation(`tensor ${name}: ${(e as Error).message}`);
    }
    if (offset % alignment !== 0) {
      throw new FormatViolation(
        `tensor ${name}: offset ${offset} is not a multiple of the alignment ${alignment}`,
      );
    }
    infos.push({ name, dims, type, offset, size });
  }
  const dataStart = Math.ceil(r.at / alignment) * alignment;
  const dataLength = bytes.length - dataStart;
  const byOffset = [...infos].sort((a, b) => a.offset - b.offset);
  let end = 0;
  for (const t of byOffset) {
    if (t.offset < end) {
      throw new FormatViolation(`tensor ${t.name} overlaps another tensor`);
    }
    end = t.offset + t.size;
    if (end > dataLength) {
      throw new FormatViolation(
        `truncated: tensor ${t.name} needs data bytes ${t.offset}…${end}, the file has ${
          Math.max(0, dataLength)
        }`,
      );
    }
  }
  const tensors = infos.map(({ size, ...t }) => ({
    ...t,
    data: bytes.subarray(dataStart + t.offset, dataStart + t.offset + size),
  }));
  return { metadata, tensors };
}
