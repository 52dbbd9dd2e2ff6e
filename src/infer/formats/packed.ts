/**
 * The `packed` format: ternary-core's own compact model file, holding a
 * {@link ModelWeights} exactly (f16-mode tensors as f16).
 *
 * ```text
 * offset 0   8 bytes  magic "TERNPACK"
 *        8   u32      format version (1)
 *       12   u32      J: byte length of the header JSON
 *       16   J bytes  header JSON (UTF-8), then zero padding to a multiple of 64
 *       …             tensor data, every segment starting at a multiple of 64;
 *                     the file ends where the last segment ends
 * ```
 *
 * The header JSON is `{"config", "bit_map", "tokenizer", "tensors"}`: the
 * model config and bit map as in their JSON files, the tokenizer as its
 * Hugging Face `tokenizer.json` object, and one entry per tensor of
 * `modelTensors(config)`, in that order:
 * `{"name", "encoding", "shape", "offset", "bytes", "scale"?, "scales_offset"?}`
 * (offsets from the start of the file, ascending). Encodings:
 * - `f32` (norms), `f16` (f16-mode tensors): little-endian values;
 * - `ternary2`: codes at 2 bits (`pack2bit`), `scale` = γ;
 * - `ternary_base3`: codes five per byte (`packBase3`, 1.6 bits), `scale` = γ;
 * - `binary1`: signs at 1 bit (`packBinary`), `scale` = γ;
 * - `int8`: `rows·cols` int8 codes, then at `scales_offset` `rows` f32 scales.
 * All little-endian; integers in the JSON are exact, scales are the f32 values
 * written as JSON numbers.
 *
 * @module
 */
import { Effect, Schema } from "effect";
import {
  bitMapIssues,
  OneBitLlmConfig,
  type OneBitLlmConfig as Config,
} from "../../common/config.ts";
import { LayerBitMap } from "../../common/layer_bit_map.ts";
import { DataError } from "../../common/text_sources.ts";
import { parseTokenizerJson, tokenizerToJson } from "../../common/tokenizer.ts";
import { f16BitsToF32Array } from "../../core/f16.ts";
import {
  pack2bit,
  packBase3,
  packBinary,
  unpack2bit,
  unpackBase3,
  unpackBinary,
} from "../../core/packing.ts";
import { modelTensors, type TensorSpec } from "../../core/tensors.ts";
import { tensorMode } from "../from_latents.ts";
import type { ModelWeights, StoredTensor } from "../weights.ts";
import {
  ByteReader,
  f32Bytes,
  FormatViolation,
  readF32Array,
  readU16Array,
} from "./bytes.ts";
import { ExportError } from "./errors.ts";
import { readModelFile, writeModelFile } from "./model_file.ts";
import {
  checkedTensors,
  f16Bits,
  storedKind,
  tensorCount,
} from "./model_check.ts";
import { describeCause as describe } from "../../common/describe.ts";

/** The 8 bytes a `packed` file starts with. */
export const PACKED_MAGIC = "TERNPACK";
/** The format version written and read. */
export const PACKED_VERSION = 1;
/** Every tensor segment starts at a multiple of this many bytes (mmap-friendly). */
export const PACKED_ALIGNMENT = 64;

/** How a tensor's data is laid out in a `packed` file. */
export type PackedEncoding =
  | "f32"
  | "f16"
  | "ternary2"
  | "ternary_base3"
  | "binary1"
  | "int8";

/** Options of {@link encodePacked}. */
export interface PackedOptions {
  /** Ternary codes five per byte (1.6 bits) instead of four (2 bits). */
  readonly base3?: boolean;
}

interface Entry {
  readonly name: string;
  readonly encoding: PackedEncoding;
  readonly shape: readonly number[];
  readonly offset: number;
  readonly bytes: number;
  readonly scale?: number;
  readonly scales_offset?: number;
}

const magicBytes = new TextEncoder().encode(PACKED_MAGIC);

const numel = (shape: readonly number[]): number =>
  shape.reduce((a, b) => a * b, 1);

/** Bytes of the main segment of a tensor of `n` elements in `encoding`. */
function segmentBytes(encoding: PackedEncoding, n: number): number {
  switch (encoding) {
    case "f32":
      return 4 * n;
    case "f16":
      return 2 * n;
    case "ternary2":
      return Math.ceil(n / 4);
    case "ternary_base3":
      return Math.ceil(n / 5);
    case "binary1":
      return Math.ceil(n / 8);
    case "int8":
      return n;
  }
}

/** The encoding of a tensor of `spec` stored as `kind`. */
function encodingOf(
  spec: TensorSpec,
  kind: StoredTensor["kind"],
  base3: boolean,
): PackedEncoding {
  switch (kind) {
    case "dense":
      return spec.kind === "norm" ? "f32" : "f16";
    case "ternary":
      return base3 ? "ternary_base3" : "ternary2";
    case "binary":
      return "binary1";
    case "int8":
      return "int8";
  }
}

/** The data of one tensor in its encoding (and the int8 scales). */
function tensorData(
  spec: TensorSpec,
  t: StoredTensor,
  encoding: PackedEncoding,
): { main: Uint8Array; scales?: Uint8Array; scale?: number } {
  try {
    switch (t.kind) {
      case "dense": {
        if (encoding === "f32") return { main: f32Bytes(t.data) };
        const bits = f16Bits(spec.name, t.data);
        return { main: new Uint8Array(bits.buffer) };
      }
      case "ternary":
      case "binary": {
        if (!Number.isFinite(t.scale) || t.scale < 0) {
          throw new RangeError(`scale ${t.scale} is not a finite γ ≥ 0`);
        }
        const main = encoding === "ternary2"
          ? pack2bit(t.codes)
          : encoding === "ternary_base3"
          ? packBase3(t.codes)
          : packBinary(t.codes);
        return { main, scale: t.scale };
      }
      case "int8":
        return {
          main: new Uint8Array(
            t.codes.buffer,
            t.codes.byteOffset,
            t.codes.length,
          ),
          scales: f32Bytes(t.scales),
        };
    }
  } catch (e) {
    if (e instanceof RangeError) {
      throw new ExportError({ message: `${spec.name}: ${e.message}` });
    }
    throw e;
  }
}

/**
 * The bytes of a `packed` file holding `weights` (see the module docs).
 * Deterministic: the same weights give the same bytes.
 *
 * @throws {ExportError} when the weights do not match their config and bit
 * map, or a code or scale is out of range (naming the tensor).
 */
export function encodePacked(
  weights: ModelWeights,
  options: PackedOptions = {},
): Uint8Array {
  const tensors = checkedTensors(weights);
  const parts = tensors.map(([spec, t]) => {
    const encoding = encodingOf(spec, t.kind, options.base3 === true);
    return { spec, encoding, ...tensorData(spec, t, encoding) };
  });
  // Offsets depend on the header's length, which depends on the offsets'
  // digits: lay out with a guess, then again until the header fits.
  const configJson = Schema.encodeSync(OneBitLlmConfig)(weights.config);
  const bitMapJson = Schema.encodeSync(LayerBitMap)(weights.bitMap);
  const tokenizerJson = JSON.parse(tokenizerToJson(weights.tokenizer));
  const align = (n: number) =>
    Math.ceil(n / PACKED_ALIGNMENT) * PACKED_ALIGNMENT;
  let dataStart = PACKED_ALIGNMENT;
  for (;;) {
    let at = dataStart, end = dataStart;
    const entries: Entry[] = parts.map((p) => {
      const offset = at;
      end = offset + p.main.length;
      at = align(end);
      const entry: Entry = {
        name: p.spec.name,
        encoding: p.encoding,
        shape: p.spec.shape,
        offset,
        bytes: p.main.length,
      };
      if (p.scale !== undefined) return { ...entry, scale: p.scale };
      if (p.scales !== undefined) {
        const scalesOffset = at;
        end = scalesOffset + p.scales.length;
        at = align(end);
        return { ...entry, scales_offset: scalesOffset };
      }
      return entry;
    });
    const header = new TextEncoder().encode(JSON.stringify({
      config: configJson,
      bit_map: bitMapJson,
      tokenizer: tokenizerJson,
      tensors: entries,
    }));
    const needed = align(16 + header.length);
    if (needed > dataStart) {
      dataStart = needed;
      continue;
    }
    // The file ends with the last segment: no trailing padding.
    const out = new Uint8Array(end);
    out.set(magicBytes, 0);
    const view = new DataView(out.buffer);
    view.setUint32(8, PACKED_VERSION, true);
    view.setUint32(12, header.length, true);
    out.set(header, 16);
    parts.forEach((p, i) => {
      out.set(p.main, entries[i].offset);
      if (p.scales !== undefined) out.set(p.scales, entries[i].scales_offset!);
    });
    return out;
  }
}

const NonNegInt = Schema.Number.check(
  Schema.makeFilter((n: number) => Number.isSafeInteger(n) && n >= 0, {
    expected: "a non-negative integer",
  }),
);

const EntrySchema = Schema.Struct({
  name: Schema.String,
  encoding: Schema.Literals([
    "f32",
    "f16",
    "ternary2",
    "ternary_base3",
    "binary1",
    "int8",
  ]),
  shape: Schema.Array(NonNegInt),
  offset: NonNegInt,
  bytes: NonNegInt,
  scale: Schema.optionalKey(Schema.Number),
  scales_offset: Schema.optionalKey(NonNegInt),
});

const HeaderSchema = Schema.Struct({
  config: Schema.Unknown,
  bit_map: Schema.Unknown,
  tokenizer: Schema.Unknown,
  tensors: Schema.Array(EntrySchema),
});

/** Decodes `value` with `schema`, throwing a {@link FormatViolation} naming `what`. */
function decodeField<T>(
  schema: Schema.Codec<T, unknown>,
  value: unknown,
  what: string,
): T {
  try {
    return Schema.decodeUnknownSync(schema)(value);
  } catch (e) {
    throw new FormatViolation(`${what}: ${describe(e)}`);
  }
}

/** Checks one entry against its spec and the file; returns its decoded tensor. */
function readTensor(
  bytes: Uint8Array,
  spec: TensorSpec,
  mode: ReturnType<typeof tensorMode>,
  entry: typeof EntrySchema.Type,
  minOffset: number,
): { tensor: StoredTensor; end: number } {
  const what = `tensor ${spec.name}`;
  if (entry.name !== spec.name) {
    throw new FormatViolation(
      `tensor entry ${JSON.stringify(entry.name)} where ${spec.name} belongs`,
    );
  }
  const kind = storedKind(spec, mode);
  const allowed: readonly PackedEncoding[] = kind === "dense"
    ? [spec.kind === "norm" ? "f32" : "f16"]
    : kind === "ternary"
    ? ["ternary2", "ternary_base3"]
    : kind === "binary"
    ? ["binary1"]
    : ["int8"];
  if (!allowed.includes(entry.encoding)) {
    throw new FormatViolation(
      `${what} is encoded ${entry.encoding}, but its mode stores it as ${
        allowed.join(" or ")
      }`,
    );
  }
  if (
    entry.shape.length !== spec.shape.length ||
    entry.shape.some((d, i) => d !== spec.shape[i])
  ) {
    throw new FormatViolation(
      `${what} has shape [${entry.shape}], the config expects [${spec.shape}]`,
    );
  }
  const n = numel(spec.shape);
  const size = segmentBytes(entry.encoding, n);
  const segment = (offset: number, length: number, name: string) => {
    if (offset % PACKED_ALIGNMENT !== 0) {
      throw new FormatViolation(
        `${what}: ${name} ${offset} is not a multiple of ${PACKED_ALIGNMENT}`,
      );
    }
    if (offset < minOffset) {
      throw new FormatViolation(
        `${what}: ${name} ${offset} overlaps the header or the previous tensor (ends at ${minOffset})`,
      );
    }
    if (offset + length > bytes.length) {
      throw new FormatViolation(
        `truncated: ${what} needs bytes ${offset}…${
          offset + length
        }, the file has ${bytes.length}`,
      );
    }
    return bytes.subarray(offset, offset + length);
  };
  if (entry.bytes !== size) {
    throw new FormatViolation(
      `${what}: ${entry.bytes} bytes, ${entry.encoding} of ${n} values takes ${size}`,
    );
  }
  const main = segment(entry.offset, size, "offset");
  const end = entry.offset + size;
  const [rows, cols] = spec.shape;
  const needScale = () => {
    const s = entry.scale;
    if (s === undefined || !Number.isFinite(s) || s < 0) {
      throw new FormatViolation(`${what}: scale ${s} is not a finite γ ≥ 0`);
    }
    return s;
  };
  switch (entry.encoding) {
    case "f32":
    case "f16": {
      const data = entry.encoding === "f32"
        ? readF32Array(main, n)
        : f16BitsToF32Array(readU16Array(main, n));
      for (let i = 0; i < n; i++) {
        if (!Number.isFinite(data[i])) {
          throw new FormatViolation(`${what}: value ${i} is ${data[i]}`);
        }
      }
      return { tensor: { kind: "dense", shape: spec.shape, data }, end };
    }
    case "ternary2":
    case "ternary_base3":
    case "binary1": {
      const scale = needScale();
      let codes: Int8Array;
      try {
        codes = entry.encoding === "ternary2"
          ? unpack2bit(main, n)
          : entry.encoding === "ternary_base3"
          ? unpackBase3(main, n)
          : unpackBinary(main, n);
      } catch (e) {
        throw new FormatViolation(`${what}: ${describe(e)}`);
      }
      const k = entry.encoding === "binary1" ? "binary" : "ternary";
      return { tensor: { kind: k, rows, cols, codes, scale }, end };
    }
    case "int8": {
      if (entry.scales_offset === undefined) {
        throw new FormatViolation(`${what}: int8 without scales_offset`);
      }
      const scalesBytes = segment(
        entry.scales_offset,
        4 * rows,
        "scales_offset",
      );
      const scales = readF32Array(scalesBytes, rows);
      for (let r = 0; r < rows; r++) {
        if (!Number.isFinite(scales[r]) || scales[r] < 0) {
          throw new FormatViolation(
            `${what}: scale of row ${r} is ${scales[r]}`,
          );
        }
      }
      const codes = new Int8Array(main.slice().buffer);
      for (let i = 0; i < n; i++) {
        if (codes[i] === -128) {
          throw new FormatViolation(
            `${what}: code ${i} is -128 (outside ±127)`,
          );
        }
      }
      return {
        tensor: { kind: "int8", rows, cols, codes, scales },
        end: entry.scales_offset + 4 * rows,
      };
    }
  }
}

/**
 * Reads a `packed` file's bytes back to the {@link ModelWeights} it was
 * written from; `file` names it in messages. Fails with a {@link DataError}
 * (never throws, never allocates beyond what the file's size allows) on a
 * foreign magic, another version, a truncated file, a malformed header, a
 * config, bit map or tokenizer that does not decode, a tensor list that is not
 * exactly the config's, a segment out of bounds, misaligned or overlapping,
 * and codes or scales out of range.
 */
export const decodePacked = (
  bytes: Uint8Array,
  file: string,
): Effect.Effect<ModelWeights, DataError> =>
  Effect.gen(function* () {
    const fail = (message: string) =>
      new DataError({ file, message: `${file}: ${message}` });
    const parsed = yield* Effect.try({
      try: () => parseHeader(bytes),
      catch: (e) => fail(describe(e)),
    });
    const tokenizer = yield* parseTokenizerJson(
      JSON.stringify(parsed.tokenizer),
      `${file} (tokenizer)`,
    ).pipe(Effect.mapError((e) => fail(e.message)));
    const tensors = yield* Effect.try({
      try: () => readTensors(bytes, parsed),
      catch: (e) => fail(describe(e)),
    });
    return {
      config: parsed.config,
      bitMap: parsed.bitMap,
      tokenizer,
      tensors,
    };
  });

interface ParsedHeader {
  readonly config: Config;
  readonly bitMap: LayerBitMap;
  readonly tokenizer: unknown;
  readonly entries: ReadonlyArray<typeof EntrySchema.Type>;
  readonly dataStart: number;
}

function parseHeader(bytes: Uint8Array): ParsedHeader {
  const r = new ByteReader(bytes);
  const magic = r.take(8, "the magic");
  if (!magic.every((b, i) => b === magicBytes[i])) {
    throw new FormatViolation(
      `not a packed model file (magic is not "${PACKED_MAGIC}")`,
    );
  }
  const version = r.u32("the version");
  if (version !== PACKED_VERSION) {
    throw new FormatViolation(
      `packed format version ${version}; this reader reads version ${PACKED_VERSION}`,
    );
  }
  const length = r.u32("the header length");
  const text = r.take(length, "the header JSON");
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(text));
  } catch (e) {
    throw new FormatViolation(`the header is not UTF-8 JSON (${describe(e)})`);
  }
  const header = decodeField(HeaderSchema, json, "header");
  const config = decodeField(OneBitLlmConfig, header.config, "header config");
  const bitMap = decodeField(LayerBitMap, header.bit_map, "header bit_map");
  const issues = bitMapIssues(config, bitMap);
  if (issues.length > 0) {
    throw new FormatViolation(`header bit_map: ${issues.join("; ")}`);
  }
  // Checked before modelTensors(config) builds a list from the config's sizes.
  if (header.tensors.length !== tensorCount(config)) {
    throw new FormatViolation(
      `the header lists ${header.tensors.length} tensors, the config has ${
        tensorCount(config)
      }`,
    );
  }
  return {
    config,
    bitMap,
    tokenizer: header.tokenizer,
    entries: header.tensors,
    dataStart: 16 + length,
  };
}

function readTensors(
  bytes: Uint8Array,
  h: ParsedHeader,
): Map<string, StoredTensor> {
  const tensors = new Map<string, StoredTensor>();
  let minOffset = h.dataStart;
  modelTensors(h.config).forEach((spec, i) => {
    const { tensor, end } = readTensor(
      bytes,
      spec,
      tensorMode(spec, h.bitMap),
      h.entries[i],
      minOffset,
    );
    tensors.set(spec.name, tensor);
    minOffset = end;
  });
  if (bytes.length !== minOffset) {
    throw new FormatViolation(
      `${
        bytes.length - minOffset
      } bytes after the last tensor (ends at ${minOffset})`,
    );
  }
  return tensors;
}

/**
 * Writes {@link encodePacked}'s bytes to `path` atomically.
 *
 * @throws nothing: fails with {@link ExportError} or a DataError naming `path`.
 */
export const writePacked = (
  path: string,
  weights: ModelWeights,
  options: PackedOptions = {},
): Effect.Effect<number, ExportError | DataError> =>
  writeModelFile(path, () => encodePacked(weights, options));

/** Reads and decodes a `packed` file (see {@link decodePacked}). */
export const readPacked = (
  path: string,
): Effect.Effect<ModelWeights, DataError> => readModelFile(path, decodePacked);
