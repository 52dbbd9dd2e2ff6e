/**
 * Hugging Face safetensors files: an 8-byte little-endian header length N,
 * N bytes of JSON `{name: {dtype, shape, data_offsets: [begin, end]},
 * "__metadata__": {key: value}}` padded with spaces to a multiple of 8, then
 * the tensor data; offsets count from the end of the header, and the tensors
 * tile the data exactly (no gaps, no overlaps, nothing after the last).
 *
 * Elements are little-endian, the byte order of every host Deno runs on, so
 * typed arrays are written and read as they are. F16 and BF16 travel as their
 * raw 16-bit patterns (`Uint16Array`).
 *
 * @module
 */
import { Effect } from "effect";
import { DataError } from "./text_sources.ts";
import { writeFileAtomic } from "./atomic_write.ts";

/** The element types handled here. */
export type SafetensorsDtype = "F32" | "F16" | "BF16" | "I32" | "I8" | "U8";

/** The typed arrays that hold tensor data (see {@link DTYPE_ARRAY}). */
export type SafetensorsData =
  | Float32Array
  | Uint16Array
  | Int32Array
  | Uint8Array
  | Int8Array;

/** One tensor: element type, shape (row-major) and its elements. */
export interface SafetensorsTensor {
  /** Element type; decides which typed array `data` is. */
  readonly dtype: SafetensorsDtype;
  /** Dimensions, outermost first; `[]` is a scalar (one element). */
  readonly shape: readonly number[];
  /** The elements, `shape` multiplied out of them. */
  readonly data: SafetensorsData;
}

/** The contents of a safetensors file. */
export interface Safetensors {
  /** Tensors by name, in file (offset) order. */
  readonly tensors: Map<string, SafetensorsTensor>;
  /** The `__metadata__` strings (empty when the file has none). */
  readonly metadata: Record<string, string>;
}

/** Which typed array holds each dtype's elements. */
export const DTYPE_ARRAY: Readonly<
  Record<
    SafetensorsDtype,
    | Float32ArrayConstructor
    | Uint16ArrayConstructor
    | Int32ArrayConstructor
    | Uint8ArrayConstructor
    | Int8ArrayConstructor
  >
> = {
  F32: Float32Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I32: Int32Array,
  I8: Int8Array,
  U8: Uint8Array,
};

// Hugging Face orders tensors by dtype, widest alignment first (its `Dtype`
// enum, descending), then by name; matching it keeps every tensor aligned to
// its element size and our bytes equal to theirs.
const DTYPE_RANK: Readonly<Record<SafetensorsDtype, number>> = {
  F32: 0,
  I32: 1,
  BF16: 2,
  F16: 3,
  I8: 4,
  U8: 5,
};

const DTYPES = Object.keys(DTYPE_RANK) as SafetensorsDtype[];

const isDtype = (x: unknown): x is SafetensorsDtype =>
  typeof x === "string" && Object.hasOwn(DTYPE_RANK, x);

/** Hugging Face's reader refuses longer headers; so do we. */
export const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = "__metadata__";

// A plain assignment of the key "__proto__" would set the prototype instead.
const setOwn = <T>(target: Record<string, T>, key: string, value: T): void => {
  Object.defineProperty(target, key, {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
};

// Rust compares names as UTF-8 bytes, i.e. by code point; JS `<` compares
// UTF-16 code units, which differs above U+FFFF.
const compareCodePoints = (a: string, b: string): number => {
  const x = [...a].map((c) => c.codePointAt(0)!);
  const y = [...b].map((c) => c.codePointAt(0)!);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
};

// A header can hold megabytes in one value; a message quotes at most this much.
const MAX_QUOTE_CHARS = 80;

/** A value from the header as JSON, cut to {@link MAX_QUOTE_CHARS}. */
const show = (value: unknown): string => {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > MAX_QUOTE_CHARS
    ? `${text.slice(0, MAX_QUOTE_CHARS - 1)}…`
    : text;
};

const shapeText = (shape: readonly number[]): string => {
  const text = `[${shape.join(",")}]`;
  return text.length > MAX_QUOTE_CHARS
    ? `${text.slice(0, MAX_QUOTE_CHARS - 2)}…]`
    : text;
};

const elementCount = (shape: readonly number[]): number =>
  shape.reduce((n, d) => n * d, 1);

/**
 * The bytes of a safetensors file, identical to Hugging Face's `serialize`
 * for the same tensors: tensors sorted by dtype (F32, I32, BF16, F16, I8, U8)
 * then by name (code point order), metadata keys sorted, compact JSON padded
 * with spaces to a multiple of 8 bytes, so the output is deterministic and
 * every tensor starts at a multiple of its element size.
 *
 * Throws, naming the tensor, when a name is empty or `__metadata__`, a shape
 * entry is not a non-negative integer, `data` is not the dtype's typed array
 * ({@link DTYPE_ARRAY}), or `data.length` is not the product of the shape.
 */
export const encodeSafetensors = (
  tensors: Readonly<Record<string, SafetensorsTensor>>,
  metadata?: Readonly<Record<string, string>>,
): Uint8Array => {
  const names = Object.keys(tensors);
  for (const name of names) {
    const { dtype, shape, data } = tensors[name];
    const what = `tensors[${JSON.stringify(name)}]`;
    if (name === "" || name === METADATA_KEY) {
      throw new Error(`${what}: the name ${JSON.stringify(name)} is reserved`);
    }
    if (!isDtype(dtype)) {
      throw new Error(
        `${what}: unsupported dtype ${JSON.stringify(dtype)} (one of ${
          DTYPES.join(", ")
        })`,
      );
    }
    if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new Error(
        `${what}: shape ${shapeText(shape)} must hold non-negative integers`,
      );
    }
    if (!(data instanceof DTYPE_ARRAY[dtype])) {
      throw new Error(
        `${what}: ${dtype} data must be a ${
          DTYPE_ARRAY[dtype].name
        }, got ${data.constructor.name}`,
      );
    }
    if (data.length !== elementCount(shape)) {
      throw new Error(
        `${what}: shape ${shapeText(shape)} needs ${
          elementCount(shape)
        } elements, data has ${data.length}`,
      );
    }
  }
  names.sort((a, b) =>
    DTYPE_RANK[tensors[a].dtype] - DTYPE_RANK[tensors[b].dtype] ||
    compareCodePoints(a, b)
  );
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    const sorted: Record<string, string> = {};
    for (const key of Object.keys(metadata).sort(compareCodePoints)) {
      if (typeof metadata[key] !== "string") {
        throw new Error(`metadata[${JSON.stringify(key)}] must be a string`);
      }
      setOwn(sorted, key, metadata[key]);
    }
    header[METADATA_KEY] = sorted;
  }
  let offset = 0;
  for (const name of names) {
    const { dtype, shape, data } = tensors[name];
    setOwn(header, name, {
      dtype,
      shape,
      data_offsets: [offset, offset + data.byteLength],
    });
    offset += data.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let at = 8 + headerLength;
  for (const name of names) {
    const { data } = tensors[name];
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    at += data.byteLength;
  }
  return out;
};

interface Entry {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: number[];
  readonly begin: number;
  readonly end: number;
}

const isCount = (x: unknown): x is number =>
  typeof x === "number" && Number.isSafeInteger(x) && x >= 0;

/** One header entry checked on its own, or the reason it is bad. */
const parseEntry = (name: string, raw: unknown): Entry | string => {
  const at = `tensor ${show(name)}`;
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    return `${at}: expected {dtype, shape, data_offsets}, got ${show(raw)}`;
  }
  const { dtype, shape, data_offsets: offsets } = raw as Record<
    string,
    unknown
  >;
  if (!isDtype(dtype)) {
    return `${at}: unknown dtype ${show(dtype)} (supported: ${
      DTYPES.join(", ")
    })`;
  }
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    return `${at}: shape ${show(shape)} is not a list of non-negative integers`;
  }
  if (
    !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)
  ) {
    return `${at}: data_offsets ${show(offsets)} is not [begin, end] in bytes`;
  }
  const [begin, end] = offsets as number[];
  if (end < begin) {
    return `${at}: data_offsets [${begin}, ${end}] end before they begin`;
  }
  const bytes = elementCount(shape) * DTYPE_ARRAY[dtype].BYTES_PER_ELEMENT;
  if (bytes !== end - begin) {
    return `${at}: shape ${
      shapeText(shape)
    } of ${dtype} needs ${bytes} bytes, but data_offsets [${begin}, ${end}] hold ${
      end - begin
    }`;
  }
  return { name, dtype, shape, begin, end };
};

/** The header's tensors in offset order, or the first problem found. */
const checkLayout = (
  entries: Entry[],
  dataBytes: number,
): string | undefined => {
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  const past = entries.find((e) => e.end > dataBytes);
  if (past !== undefined) {
    return `truncated: tensor ${
      show(past.name)
    } needs data bytes [${past.begin}, ${past.end}), the file holds ${dataBytes}`;
  }
  let prev: Entry | undefined;
  for (const e of entries) {
    const start = prev?.end ?? 0;
    if (e.begin < start) {
      return `tensors ${show(prev!.name)} [${prev!.begin}, ${prev!.end}] and ${
        show(e.name)
      } [${e.begin}, ${e.end}] overlap (data_offsets)`;
    }
    if (e.begin > start) {
      return `data bytes [${start}, ${e.begin}) before tensor ${
        show(e.name)
      } belong to no tensor`;
    }
    prev = e;
  }
  const used = prev?.end ?? 0;
  return used < dataBytes
    ? `${dataBytes - used} bytes after the last tensor belong to no tensor`
    : undefined;
};

/**
 * Reads a safetensors file's bytes; `file` names it in messages. Fails with a
 * {@link DataError} (never throws) on: fewer than 8 bytes, a header length
 * beyond the file or over {@link MAX_HEADER_BYTES}, a header that is not
 * UTF-8 JSON object, `__metadata__` that is not string → string, a tensor
 * with the empty name, an entry without a supported dtype, integer shape or `[begin, end]` offsets, offsets
 * whose span is not shape × element size, offsets past the end of the file
 * (truncated), overlapping offsets, and data bytes no tensor covers.
 *
 * A tensor's `data` is a view of `bytes` when its position is aligned to the
 * element size (always so for files written by {@link encodeSafetensors}),
 * else a copy; views share memory with `bytes`.
 */
export const decodeSafetensors = (
  bytes: Uint8Array,
  file: string,
): Effect.Effect<Safetensors, DataError> =>
  Effect.suspend(() => {
    const fail = (message: string) =>
      Effect.fail(new DataError({ file, message: `${file}: ${message}` }));
    if (bytes.length < 8) {
      return fail(
        `truncated: ${bytes.length} bytes, fewer than the 8-byte header length`,
      );
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const n = view.getBigUint64(0, true);
    if (n > BigInt(MAX_HEADER_BYTES)) {
      return fail(
        `header length ${n} is over the ${MAX_HEADER_BYTES}-byte limit (not a safetensors file?)`,
      );
    }
    if (n > BigInt(bytes.length - 8)) {
      return fail(
        `truncated: header says ${n} bytes, file has ${
          bytes.length - 8
        } after the 8-byte length`,
      );
    }
    const headerLength = Number(n);
    let header: unknown;
    try {
      header = JSON.parse(
        new TextDecoder("utf-8", { fatal: true }).decode(
          bytes.subarray(8, 8 + headerLength),
        ),
      );
    } catch (cause) {
      return fail(
        `header is not valid JSON: ${
          cause instanceof Error ? cause.message : String(cause)
        }`,
      );
    }
    if (
      typeof header !== "object" || header === null || Array.isArray(header)
    ) {
      return fail(`header is not a JSON object`);
    }
    const metadata: Record<string, string> = {};
    const entries: Entry[] = [];
    for (const [name, raw] of Object.entries(header)) {
      if (name === METADATA_KEY) {
        if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
          return fail(`${METADATA_KEY} is not an object of strings`);
        }
        for (const [key, value] of Object.entries(raw)) {
          if (typeof value !== "string") {
            return fail(
              `${METADATA_KEY}[${show(key)}] is ${show(value)}, not a string`,
            );
          }
          setOwn(metadata, key, value);
        }
        continue;
      }
      // The writer refuses the empty name too, so what is read can be saved.
      if (name === "") return fail(`a tensor has the empty name ""`);
      const entry = parseEntry(name, raw);
      if (typeof entry === "string") return fail(entry);
      entries.push(entry);
    }
    const dataStart = 8 + headerLength;
    const problem = checkLayout(entries, bytes.length - dataStart);
    if (problem !== undefined) return fail(problem);
    const tensors = new Map<string, SafetensorsTensor>();
    for (const { name, dtype, shape, begin, end } of entries) {
      const Typed = DTYPE_ARRAY[dtype];
      const at = bytes.byteOffset + dataStart + begin;
      // The union of constructors types its buffer as ArrayBuffer; a view of
      // a SharedArrayBuffer works the same.
      const data = at % Typed.BYTES_PER_ELEMENT === 0
        ? new Typed(
          bytes.buffer as ArrayBuffer,
          at,
          (end - begin) / Typed.BYTES_PER_ELEMENT,
        )
        : new Typed(bytes.slice(dataStart + begin, dataStart + end).buffer);
      tensors.set(name, { dtype, shape, data });
    }
    return Effect.succeed({ tensors, metadata });
  });

/**
 * Reads and decodes a safetensors file (see {@link decodeSafetensors}); the
 * tensors view one buffer holding the whole file.
 */
export const readSafetensors = (
  path: string,
): Effect.Effect<Safetensors, DataError> =>
  Effect.tryPromise({
    try: () => Deno.readFile(path),
    catch: (cause) =>
      new DataError({
        file: path,
        message: cause instanceof Deno.errors.NotFound
          ? `${path}: file not found`
          : `${path}: cannot read: ${
            cause instanceof Error ? cause.message : String(cause)
          }`,
      }),
  }).pipe(Effect.flatMap((bytes) => decodeSafetensors(bytes, path)));

/**
 * Writes {@link encodeSafetensors}'s bytes to `path` atomically (see
 * {@link writeFileAtomic}); invalid tensors fail with a DataError naming
 * `path` and the tensor.
 */
export const writeSafetensors = (
  path: string,
  tensors: Readonly<Record<string, SafetensorsTensor>>,
  metadata?: Readonly<Record<string, string>>,
): Effect.Effect<void, DataError> =>
  Effect.try({
    try: () => encodeSafetensors(tensors, metadata),
    catch: (cause) =>
      new DataError({
        file: path,
        message: `cannot write ${path}: ${
          cause instanceof Error ? cause.message : String(cause)
        }`,
      }),
  }).pipe(Effect.flatMap((bytes) => writeFileAtomic(path, bytes)));
