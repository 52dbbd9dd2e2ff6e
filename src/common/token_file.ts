/**
 * Token files: a 64-byte header, then the token ids as little-endian u16
 * (vocabularies up to 65,536) or u32.
 *
 * | offset | size | field                                   |
 * | ------ | ---- | --------------------------------------- |
 * | 0      | 4    | magic `TCTK`                            |
 * | 4      | 4    | u32 version = 1                         |
 * | 8      | 4    | u32 dtype: 0 = u16, 1 = u32             |
 * | 12     | 8    | u64 token count                         |
 * | 20     | 32   | tokenizer hash (`tokenizerHash`)        |
 * | 52     | 12   | zero padding                            |
 * | 64     | …    | ids                                     |
 *
 * @module
 */
import { Effect } from "effect";
import type { Scope } from "effect";
import { fileBytes } from "./mmap.ts";
import type { LoadMode } from "./mmap.ts";
import { DataError } from "./text_sources.ts";
import { writeFileAtomic } from "./atomic_write.ts";
import { toHex } from "./tokenizer.ts";

/** The 4 bytes at the start of every token file. */
export const TOKEN_FILE_MAGIC = "TCTK";
/** The format version written and read. */
export const TOKEN_FILE_VERSION = 1;
/** Size of the header; the ids start here (aligned for u32 views). */
export const TOKEN_FILE_HEADER_BYTES = 64;
/** Length of the tokenizer hash in the header. */
export const TOKENIZER_HASH_BYTES = 32;

// The zero padding after the hash.
const PADDING_START = 20 + TOKENIZER_HASH_BYTES;

/** An opened token file. */
export interface TokenFile {
  /** The file's path. */
  readonly path: string;
  /** The ids; a view of the mapping when `mapped`, valid inside the scope. */
  readonly ids: Uint16Array | Uint32Array;
  /** Whether `ids` views a memory mapping (true) or a copy read into memory. */
  readonly mapped: boolean;
  /** The tokenizer hash stored in the header. */
  readonly tokenizerHash: Uint8Array;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const endianError = (file: string): DataError =>
  new DataError({
    file,
    message: `token files are little-endian; this host is big-endian (${file})`,
  });

/**
 * The bytes of a token file: header, then the ids as u16 when
 * `vocabSize ≤ 65536`, else u32. Throws (naming the argument) on an id
 * outside [0, vocabSize), a bad vocabSize or a hash that is not 32 bytes.
 */
export const encodeTokenFile = (
  ids: ArrayLike<number>,
  vocabSize: number,
  tokenizerHash: Uint8Array,
): Uint8Array => {
  if (!Number.isInteger(vocabSize) || vocabSize < 1 || vocabSize > 2 ** 32) {
    throw new Error(
      `vocabSize must be an integer in [1, 2^32], got ${vocabSize}`,
    );
  }
  if (tokenizerHash.length !== TOKENIZER_HASH_BYTES) {
    throw new Error(
      `tokenizerHash must be ${TOKENIZER_HASH_BYTES} bytes, got ${tokenizerHash.length}`,
    );
  }
  const wide = vocabSize > 65536;
  const width = wide ? 4 : 2;
  const out = new Uint8Array(TOKEN_FILE_HEADER_BYTES + ids.length * width);
  const view = new DataView(out.buffer);
  out.set(new TextEncoder().encode(TOKEN_FILE_MAGIC), 0);
  view.setUint32(4, TOKEN_FILE_VERSION, true);
  view.setUint32(8, wide ? 1 : 0, true);
  view.setBigUint64(12, BigInt(ids.length), true);
  out.set(tokenizerHash, 20);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new Error(
        `ids[${i}] = ${id} is outside the vocabulary [0, ${vocabSize})`,
      );
    }
    const at = TOKEN_FILE_HEADER_BYTES + i * width;
    if (wide) view.setUint32(at, id, true);
    else view.setUint16(at, id, true);
  }
  return out;
};

/**
 * Writes a token file atomically ({@link writeFileAtomic}): readers never see
 * a partial file.
 */
export const writeTokenFile = (
  path: string,
  ids: ArrayLike<number>,
  vocabSize: number,
  tokenizerHash: Uint8Array,
): Effect.Effect<void, DataError> =>
  Effect.gen(function* () {
    const bytes = yield* Effect.try({
      try: () => encodeTokenFile(ids, vocabSize, tokenizerHash),
      catch: (cause) =>
        new DataError({
          file: path,
          message: `cannot write ${path}: ${
            cause instanceof Error ? cause.message : String(cause)
          }`,
        }),
    });
    yield* writeFileAtomic(path, bytes);
  });

/** Options of {@link openTokenFile}. */
export interface OpenTokenFileOptions {
  /** Fail unless the header holds this tokenizer hash. */
  readonly expectedHash?: Uint8Array;
  /** Map or read (default `"auto"`: map when FFI is permitted). */
  readonly mode?: LoadMode;
}

/**
 * Checks a token file's bytes and returns a typed view of its ids (no copy
 * when the ids are 4-byte aligned). Fails on bad magic, an unknown version or
 * dtype, non-zero padding, a size that does not match the count, or an
 * unexpected hash.
 */
export const parseTokenFile = (
  bytes: Uint8Array,
  file: string,
  expectedHash?: Uint8Array,
): Effect.Effect<
  { ids: Uint16Array | Uint32Array; tokenizerHash: Uint8Array },
  DataError
> =>
  Effect.suspend(() => {
    const fail = (message: string) =>
      Effect.fail(
        new DataError({ file, message: `token file ${file}: ${message}` }),
      );
    if (!LITTLE_ENDIAN) return Effect.fail(endianError(file));
    if (bytes.length < TOKEN_FILE_HEADER_BYTES) {
      return fail(
        `truncated header (${bytes.length} of ${TOKEN_FILE_HEADER_BYTES} bytes)`,
      );
    }
    const magic = new TextDecoder().decode(bytes.subarray(0, 4));
    if (magic !== TOKEN_FILE_MAGIC) {
      return fail(`bad magic ${JSON.stringify(magic)}, expected "TCTK"`);
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const version = view.getUint32(4, true);
    if (version !== TOKEN_FILE_VERSION) {
      return fail(`unknown version ${version}, expected ${TOKEN_FILE_VERSION}`);
    }
    const dtype = view.getUint32(8, true);
    if (dtype !== 0 && dtype !== 1) {
      return fail(`unknown dtype ${dtype} (0 = u16, 1 = u32)`);
    }
    // Reserved: a reader that ignored them could not write the same file back.
    const padding = bytes.subarray(PADDING_START, TOKEN_FILE_HEADER_BYTES)
      .findIndex((b) => b !== 0);
    if (padding >= 0) {
      const at = PADDING_START + padding;
      return fail(
        `header bytes ${PADDING_START}–${
          TOKEN_FILE_HEADER_BYTES - 1
        } must be zero (byte ${at} is ${bytes[at]})`,
      );
    }
    const count = view.getBigUint64(12, true);
    const width = dtype === 0 ? 2 : 4;
    const expected = BigInt(TOKEN_FILE_HEADER_BYTES) + count * BigInt(width);
    if (BigInt(bytes.length) !== expected) {
      return fail(
        `${bytes.length} bytes, but its header announces ${count} ${
          dtype === 0 ? "u16" : "u32"
        } tokens (${expected} bytes): ${
          BigInt(bytes.length) < expected ? "truncated" : "trailing data"
        }`,
      );
    }
    const tokenizerHash = bytes.slice(20, 20 + TOKENIZER_HASH_BYTES);
    if (
      expectedHash !== undefined && toHex(expectedHash) !== toHex(tokenizerHash)
    ) {
      return Effect.fail(
        new DataError({
          file,
          message: `token file ${file} was made with another tokenizer (hash ${
            toHex(tokenizerHash)
          }), expected ${toHex(expectedHash)}`,
        }),
      );
    }
    const start = bytes.byteOffset + TOKEN_FILE_HEADER_BYTES;
    // A typed view needs an aligned offset; a read buffer may not give one.
    const data = start % width === 0 ? bytes : bytes.slice(0, bytes.length);
    const offset = data === bytes ? start : TOKEN_FILE_HEADER_BYTES;
    const n = Number(count);
    const ids = dtype === 0
      ? new Uint16Array(data.buffer, offset, n)
      : new Uint32Array(data.buffer, offset, n);
    return Effect.succeed({ ids, tokenizerHash });
  });

/**
 * Opens a token file as a scoped resource: mapped read-only through mmap when
 * FFI is permitted (unmapped when the scope closes; `ids` must not escape
 * it), otherwise read into memory; `mapped` says which.
 */
export const openTokenFile = (
  path: string,
  options: OpenTokenFileOptions = {},
): Effect.Effect<TokenFile, DataError, Scope.Scope> =>
  Effect.gen(function* () {
    const { bytes, mapped } = yield* fileBytes(path, options.mode ?? "auto");
    const { ids, tokenizerHash } = yield* parseTokenFile(
      bytes,
      path,
      options.expectedHash,
    );
    return { path, ids, mapped, tokenizerHash };
  });
