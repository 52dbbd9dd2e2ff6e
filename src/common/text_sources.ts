/**
 * Readers for user text: a plain text file, a directory of `.txt` files, JSONL
 * with a `text` field, and WikiText raw files. Each yields documents; a
 * {@link TextSplit} adds the validation documents.
 *
 * @module
 */
import { Effect } from "effect";
import { DataError } from "./data_error.ts";
import { describeCause as describe } from "./describe.ts";
import { pathExists } from "./path_exists.ts";

export {
  DataError,
  DataErrorBase,
  type DataErrorFields,
} from "./data_error.ts";

/** Documents for training and for validation. */
export interface TextSplit {
  /** Training documents. */
  readonly train: readonly string[];
  /** Validation documents. */
  readonly valid: readonly string[];
}

/**
 * The deterministic 9:1 document split used when no validation file exists:
 * document i (in the given order) goes to validation when `i % 10 === 9`,
 * so validation is every 10th document, spread evenly over the input.
 */
export const splitDocuments = (docs: readonly string[]): TextSplit => ({
  train: docs.filter((_, i) => i % 10 !== 9),
  valid: docs.filter((_, i) => i % 10 === 9),
});

/** Offset of the first byte that does not belong to a valid UTF-8 sequence, or -1. */
export function invalidUtf8Offset(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    // Sequence length and the range of its second byte (no overlongs,
    // surrogates or code points above U+10FFFF).
    const [n, lo, hi] = b >= 0xc2 && b <= 0xdf
      ? [2, 0x80, 0xbf]
      : b === 0xe0
      ? [3, 0xa0, 0xbf]
      : b === 0xed
      ? [3, 0x80, 0x9f]
      : b >= 0xe1 && b <= 0xef
      ? [3, 0x80, 0xbf]
      : b === 0xf0
      ? [4, 0x90, 0xbf]
      : b >= 0xf1 && b <= 0xf3
      ? [4, 0x80, 0xbf]
      : b === 0xf4
      ? [4, 0x80, 0x8f]
      : [0, 0, 0];
    if (n === 0 || i + n > bytes.length) return i;
    if (bytes[i + 1] < lo || bytes[i + 1] > hi) return i;
    for (let k = 2; k < n; k++) {
      if (bytes[i + k] < 0x80 || bytes[i + k] > 0xbf) return i;
    }
    i += n;
  }
  return -1;
}

/**
 * The text of a file's bytes, which must be UTF-8 (a leading byte-order mark
 * is dropped). Fails with a DataError naming `path` for UTF-16 (a UTF-16
 * byte-order mark), binary data (a NUL byte, which no text file holds) and
 * invalid UTF-8 — decoding with replacement characters would train or score a
 * model on garbage without a word.
 */
export const decodeText = (
  bytes: Uint8Array,
  path: string,
): Effect.Effect<string, DataError> => {
  const fail = (why: string) =>
    Effect.fail(new DataError({ file: path, message: `${path}: ${why}` }));
  const [b0, b1] = bytes;
  if ((b0 === 0xff && b1 === 0xfe) || (b0 === 0xfe && b1 === 0xff)) {
    return fail(
      `UTF-16 text (byte-order mark ${
        b0 === 0xff ? "FF FE" : "FE FF"
      }); convert it to UTF-8`,
    );
  }
  const nul = bytes.indexOf(0);
  if (nul >= 0) {
    return fail(
      `a binary file, not text (a NUL byte at offset ${nul}); give UTF-8 text`,
    );
  }
  const bad = invalidUtf8Offset(bytes);
  if (bad >= 0) {
    return fail(
      `not valid UTF-8 (byte 0x${
        bytes[bad].toString(16).padStart(2, "0")
      } at offset ${bad}); convert it to UTF-8`,
    );
  }
  return Effect.try({
    try: () => new TextDecoder("utf-8", { fatal: true }).decode(bytes),
    catch: (cause) =>
      new DataError({
        file: path,
        message: `${path}: not valid UTF-8 (${describe(cause)})`,
      }),
  });
};

/** Reads a UTF-8 text file (see {@link decodeText}), failing with a DataError that names it. */
export const readText = (path: string): Effect.Effect<string, DataError> =>
  Effect.tryPromise({
    try: () => Deno.readFile(path),
    catch: (cause) =>
      new DataError({
        file: path,
        message: `cannot read ${path}: ${describe(cause)}`,
      }),
  }).pipe(Effect.flatMap((bytes) => decodeText(bytes, path)));

const statPath = (path: string): Effect.Effect<Deno.FileInfo, DataError> =>
  path === ""
    ? Effect.fail(new DataError({ file: path, message: "empty path" }))
    : Effect.tryPromise({
      try: () => Deno.stat(path),
      catch: (cause) =>
        new DataError({
          file: path,
          message: `cannot open ${path}: ${describe(cause)}`,
        }),
    });

const nonEmpty = (
  path: string,
  docs: string[],
): Effect.Effect<string[], DataError> =>
  docs.length === 0
    ? Effect.fail(
      new DataError({ file: path, message: `${path} holds no text` }),
    )
    : Effect.succeed(docs);

/**
 * Splits plain text into documents at blank lines (one or more lines holding
 * only whitespace); documents keep their inner newlines, and empty ones are
 * dropped.
 */
export const paragraphs = (text: string): string[] =>
  text.split(/\r?\n(?:[ \t]*\r?\n)+/).map((p) => p.trim()).filter((p) =>
    p !== ""
  );

/**
 * One plain text file; its paragraphs (separated by blank lines) are the
 * documents, so that a single file can still be split 9:1.
 */
export const readTextFile = (
  path: string,
): Effect.Effect<string[], DataError> =>
  Effect.flatMap(
    statPath(path),
    () =>
      Effect.flatMap(
        readText(path),
        (text) => nonEmpty(path, paragraphs(text)),
      ),
  );

const listTxt = async (dir: string): Promise<string[]> => {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const full = `${dir}/${entry.name}`;
    if (entry.isDirectory) out.push(...await listTxt(full));
    else if (entry.isFile && entry.name.endsWith(".txt")) out.push(full);
  }
  return out;
};

/**
 * A directory of `.txt` files, searched recursively; each file is one
 * document (whitespace-trimmed; empty files skipped), in sorted path order.
 */
export const readTextDir = (
  dir: string,
): Effect.Effect<string[], DataError> =>
  Effect.gen(function* () {
    yield* statPath(dir);
    const files = yield* Effect.tryPromise({
      try: () => listTxt(dir.replace(/\/+$/, "")),
      catch: (cause) =>
        new DataError({
          file: dir,
          message: `cannot list ${dir}: ${describe(cause)}`,
        }),
    });
    files.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const docs: string[] = [];
    for (const file of files) {
      const text = (yield* readText(file)).trim();
      if (text !== "") docs.push(text);
    }
    return yield* nonEmpty(dir, docs);
  });

/**
 * Parses JSONL: one JSON object per non-blank line, whose string field `text`
 * is one document. A bad line fails with a DataError naming the file and the
 * 1-based line number.
 */
export const parseJsonl = (
  text: string,
  file: string,
): Effect.Effect<string[], DataError> =>
  Effect.gen(function* () {
    const docs: string[] = [];
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i].trim();
      if (line === "") continue;
      const fail = (why: string) =>
        new DataError({ file, message: `${file}:${i + 1}: ${why}` });
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch (cause) {
        return yield* Effect.fail(fail(`invalid JSON (${describe(cause)})`));
      }
      const doc = typeof value === "object" && value !== null
        ? (value as { text?: unknown }).text
        : undefined;
      if (typeof doc !== "string") {
        return yield* Effect.fail(
          fail('expected an object with a string field "text"'),
        );
      }
      docs.push(doc);
    }
    return docs;
  });

/** A JSONL file (see {@link parseJsonl}); empty documents are kept out. */
export const readJsonl = (path: string): Effect.Effect<string[], DataError> =>
  Effect.gen(function* () {
    yield* statPath(path);
    const docs = yield* parseJsonl(yield* readText(path), path);
    return yield* nonEmpty(path, docs.filter((d) => d.trim() !== ""));
  });

/** A top-level WikiText heading: ` = Title = ` (one `=` on each side). */
const WIKI_TITLE = /^ ?= [^=].*[^=] = ?$/;

/**
 * Splits WikiText raw text into articles: each top-level heading line
 * (` = Title = `) starts a new document; sub-headings (` = = Part = = `) and
 * the text itself are kept as they are, blank lines dropped.
 */
export const parseWikiText = (text: string): string[] => {
  const docs: string[] = [];
  let lines: string[] = [];
  const flush = () => {
    if (lines.length > 0) docs.push(lines.join("\n"));
    lines = [];
  };
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\r$/, "");
    if (line.trim() === "") continue;
    if (WIKI_TITLE.test(line)) flush();
    lines.push(line.trim());
  }
  flush();
  return docs;
};

/** A WikiText raw file (`wiki.train.raw` etc.), see {@link parseWikiText}. */
export const readWikiText = (
  path: string,
): Effect.Effect<string[], DataError> =>
  Effect.gen(function* () {
    yield* statPath(path);
    return yield* nonEmpty(path, parseWikiText(yield* readText(path)));
  });

/**
 * Reads documents from `path`, choosing the reader by what it is: a directory
 * → {@link readTextDir}; `*.jsonl` → {@link readJsonl}; `*.raw` →
 * {@link readWikiText}; anything else → {@link readTextFile}.
 */
export const readDocuments = (
  path: string,
): Effect.Effect<string[], DataError> =>
  Effect.flatMap(
    statPath(path),
    (info) =>
      info.isDirectory
        ? readTextDir(path)
        : path.endsWith(".jsonl")
        ? readJsonl(path)
        : path.endsWith(".raw")
        ? readWikiText(path)
        : readTextFile(path),
  );

/**
 * Training and validation documents from user data. WikiText: when `path` is
 * `…/wiki.train.raw` (or a directory holding it) and `wiki.valid.raw` sits
 * beside it, that file is the validation set. Otherwise the documents (of
 * `wiki.train.raw`, or of {@link readDocuments}) are split 9:1 by
 * {@link splitDocuments}; fewer than 10 documents is an error.
 */
export const loadTextSplit = (
  path: string,
): Effect.Effect<TextSplit, DataError> =>
  Effect.gen(function* () {
    const info = yield* statPath(path);
    const trainFile = info.isDirectory
      ? `${path.replace(/\/+$/, "")}/wiki.train.raw`
      : path;
    const isWiki = trainFile.endsWith("wiki.train.raw") &&
      (yield* pathExists(trainFile, "file"));
    if (isWiki) {
      const validFile = trainFile.replace(
        /wiki\.train\.raw$/,
        "wiki.valid.raw",
      );
      if (yield* pathExists(validFile, "file")) {
        return {
          train: yield* readWikiText(trainFile),
          valid: yield* readWikiText(validFile),
        };
      }
    }
    const docs =
      yield* (isWiki ? readWikiText(trainFile) : readDocuments(path));
    if (docs.length < 10) {
      return yield* Effect.fail(
        new DataError({
          file: path,
          message:
            `${path} has ${docs.length} documents; a 9:1 split needs at least 10`,
        }),
      );
    }
    return splitDocuments(docs);
  });
