/**
 * Byte-level BPE (GPT-2 style): text → UTF-8 bytes → one printable character
 * per byte → pre-tokens (GPT-2 regex) → merges applied by rank. Saved and
 * loaded as a Hugging Face `tokenizer.json`. The trainer is in `bpe_train.ts`.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { Effect, Schema } from "effect";
import { DataError, readText } from "./text_sources.ts";
import { writeFileAtomic } from "./atomic_write.ts";

/**
 * GPT-2's pre-tokenization regex: contractions, optional space + letters,
 * optional space + digits, optional space + other symbols, whitespace not
 * followed by a non-space, and remaining whitespace.
 */
export const GPT2_PATTERN: RegExp =
  /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/**
 * GPT-2's byte → character table: the printable bytes `!`…`~`, `¡`…`¬`,
 * `®`…`ÿ` stand for themselves; the other 68 bytes, in order, map to
 * U+0100, U+0101, … so every byte is a visible character.
 */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) ||
      (b >= 174 && b <= 255);
    table[b] = String.fromCharCode(printable ? b : 256 + extra++);
  }
  return table;
})();

const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(
  BYTE_TO_CHAR.map((c, b) => [c, b]),
);

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8");

/** A special (added) token: matched verbatim in text before pre-tokenization. */
export interface SpecialToken {
  /** Its id. */
  readonly id: number;
  /** Its text, e.g. `<|endoftext|>`. */
  readonly content: string;
}

/** The conventional end-of-text / document separator token. */
export const END_OF_TEXT = "<|endoftext|>";

/** Encoded pre-tokens kept per tokenizer; cleared when it grows past this. */
const CACHE_LIMIT = 200_000;

const escapeRegExp = (s: string): string =>
  s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

// A token can be as long as its file; a message quotes at most this much.
const MAX_QUOTE_CHARS = 80;

/** A string as JSON, cut to {@link MAX_QUOTE_CHARS}. */
const quote = (text: string | undefined): string => {
  const json = JSON.stringify(text) ?? "undefined";
  return json.length > MAX_QUOTE_CHARS
    ? `${json.slice(0, MAX_QUOTE_CHARS - 1)}…`
    : json;
};

/**
 * A byte-level BPE tokenizer. Ids are dense (0 … vocabSize−1); each merge
 * `(left, right)` of rank r turns the adjacent pair into the token
 * `left + right`, and encoding applies the lowest-rank pair first.
 */
export class Tokenizer {
  /** Number of ids. */
  readonly vocabSize: number;
  /** id → token: byte-level characters, or the text of a special token. */
  readonly tokens: readonly string[];
  /** Merges in rank order, as (left, right) token pairs. */
  readonly merges: readonly (readonly [string, string])[];
  /** Special tokens, matched in text before pre-tokenization. */
  readonly specialTokens: readonly SpecialToken[];
  private readonly vocab: Map<string, number>;
  private readonly specialIds: Map<string, number>;
  private readonly specialSplit: RegExp | undefined;
  private readonly byteIds: Int32Array;
  private readonly mergeRank: Map<number, number>;
  private readonly mergeResult: Int32Array;
  private readonly tokenBytes: Uint8Array[];
  private readonly cache: Map<string, Int32Array> = new Map();

  /**
   * Builds the lookup tables. Throws if a token repeats, a byte has no token,
   * a merge names a missing token or makes one, or a special token's id does
   * not hold its text.
   */
  constructor(
    tokens: readonly string[],
    merges: readonly (readonly [string, string])[],
    specialTokens: readonly SpecialToken[],
  ) {
    this.vocabSize = tokens.length;
    this.tokens = tokens;
    this.merges = merges;
    this.specialTokens = specialTokens;
    this.vocab = new Map();
    tokens.forEach((t, id) => {
      if (this.vocab.has(t)) {
        throw new Error(
          `tokens: ${quote(t)} appears twice (ids ${
            this.vocab.get(t)
          } and ${id})`,
        );
      }
      this.vocab.set(t, id);
    });
    this.specialIds = new Map();
    for (const s of specialTokens) {
      if (tokens[s.id] !== s.content) {
        throw new Error(
          `specialTokens: id ${s.id} holds ${quote(tokens[s.id])}, not ${
            quote(s.content)
          }`,
        );
      }
      this.specialIds.set(s.content, s.id);
    }
    this.specialSplit = specialTokens.length === 0 ? undefined : new RegExp(
      `(${
        [...this.specialIds.keys()].sort((a, b) => b.length - a.length).map(
          escapeRegExp,
        ).join("|")
      })`,
    );
    this.byteIds = new Int32Array(256);
    for (let b = 0; b < 256; b++) {
      const id = this.vocab.get(BYTE_TO_CHAR[b]);
      if (id === undefined) {
        throw new Error(
          `tokens: no token for byte 0x${b.toString(16).padStart(2, "0")} (${
            JSON.stringify(BYTE_TO_CHAR[b])
          }); byte-level BPE needs all 256`,
        );
      }
      this.byteIds[b] = id;
    }
    this.mergeRank = new Map();
    this.mergeResult = new Int32Array(merges.length);
    merges.forEach(([l, r], rank) => {
      const a = this.vocab.get(l), b = this.vocab.get(r);
      const c = this.vocab.get(l + r);
      if (a === undefined || b === undefined || c === undefined) {
        throw new Error(
          `merges: rank ${rank} (${quote(l)}, ${
            quote(r)
          }) uses or makes a token missing from the vocabulary`,
        );
      }
      const key = a * this.vocabSize + b;
      if (!this.mergeRank.has(key)) this.mergeRank.set(key, rank);
      this.mergeResult[rank] = c;
    });
    this.tokenBytes = tokens.map((t) => {
      if (this.specialIds.has(t)) return utf8.encode(t);
      const bytes: number[] = [];
      for (const ch of t) {
        const b = CHAR_TO_BYTE.get(ch);
        // A foreign vocabulary may hold characters outside the byte table.
        if (b === undefined) bytes.push(...utf8.encode(ch));
        else bytes.push(b);
      }
      return Uint8Array.from(bytes);
    });
  }

  /** The id of a token (byte-level characters or special text), if any. */
  tokenId(token: string): number | undefined {
    return this.vocab.get(token);
  }

  /**
   * Applies the merges to one pre-token's byte ids, lowest rank first and
   * leftmost first among equal ranks (a binary heap of (rank, position) over
   * a linked list of symbols: O(n log n)).
   */
  private bpe(text: string): Int32Array {
    const bytes = utf8.encode(text);
    const n = bytes.length;
    const sym = new Int32Array(n);
    for (let i = 0; i < n; i++) sym[i] = this.byteIds[bytes[i]];
    if (n < 2) return sym;
    const next = new Int32Array(n), prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const V = this.vocabSize;
    // Heap entries packed as rank·n + position: ordered by rank, then position.
    const heap: number[] = [];
    const push = (pos: number): void => {
      const rank = this.mergeRank.get(sym[pos] * V + sym[next[pos]]);
      if (rank === undefined) return;
      let i = heap.length;
      const v = rank * n + pos;
      heap.push(v);
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (heap[p] <= v) break;
        heap[i] = heap[p];
        i = p;
      }
      heap[i] = v;
    };
    const pop = (): number => {
      const top = heap[0];
      const last = heap.pop()!;
      const len = heap.length;
      if (len > 0) {
        let i = 0;
        for (;;) {
          const l = 2 * i + 1;
          if (l >= len) break;
          const c = l + 1 < len && heap[l + 1] < heap[l] ? l + 1 : l;
          if (heap[c] >= last) break;
          heap[i] = heap[c];
          i = c;
        }
        heap[i] = last;
      }
      return top;
    };
    for (let i = 0; i + 1 < n; i++) push(i);
    let count = n;
    while (heap.length > 0) {
      const v = pop();
      const rank = Math.floor(v / n), pos = v - rank * n;
      const q = next[pos];
      if (sym[pos] < 0 || q < 0) continue;
      // Stale entry: the pair at pos changed since it was pushed.
      if (this.mergeRank.get(sym[pos] * V + sym[q]) !== rank) continue;
      sym[pos] = this.mergeResult[rank];
      sym[q] = -1;
      next[pos] = next[q];
      if (next[q] >= 0) prev[next[q]] = pos;
      count--;
      if (prev[pos] >= 0) push(prev[pos]);
      if (next[pos] >= 0) push(pos);
    }
    const out = new Int32Array(count);
    for (let i = 0, k = 0; i >= 0; i = next[i]) out[k++] = sym[i];
    return out;
  }

  /** Encodes text with no special-token matching, appending ids to `out`. */
  private encodePlain(text: string, out: number[]): void {
    for (const m of text.matchAll(GPT2_PATTERN)) {
      const piece = m[0];
      let ids = this.cache.get(piece);
      if (ids === undefined) {
        ids = this.bpe(piece);
        if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
        this.cache.set(piece, ids);
      }
      for (let i = 0; i < ids.length; i++) out.push(ids[i]);
    }
  }

  /**
   * Encodes text to ids: special tokens are matched first (longest first),
   * the rest is split by {@link GPT2_PATTERN} and each piece merged by rank.
   * `decode(encode(s)) === s` for every well-formed string.
   */
  encode(text: string): number[] {
    const out: number[] = [];
    this.encodeInto(text, out);
    return out;
  }

  /** Encodes text (special tokens matched first), appending ids to `out`. */
  private encodeInto(text: string, out: number[]): void {
    if (this.specialSplit === undefined) {
      this.encodePlain(text, out);
      return;
    }
    text.split(this.specialSplit).forEach((part, i) => {
      // split() with one capture group puts the matched separators at odd i.
      if (i % 2 === 1) out.push(this.specialIds.get(part)!);
      else if (part !== "") this.encodePlain(part, out);
    });
  }

  /**
   * Encodes documents into one id stream, each document followed by the
   * special token `separator` (GPT-2's convention for training data).
   */
  encodeDocuments(
    docs: Iterable<string>,
    separator: string = END_OF_TEXT,
  ): Uint32Array {
    const sep = this.specialIds.get(separator);
    if (sep === undefined) {
      throw new Error(
        `separator: ${JSON.stringify(separator)} is not a special token`,
      );
    }
    const out: number[] = [];
    for (const doc of docs) {
      this.encodeInto(doc, out);
      out.push(sep);
    }
    return Uint32Array.from(out);
  }

  /**
   * Decodes ids to text: the bytes of all tokens are concatenated and read as
   * UTF-8 (invalid sequences, possible for arbitrary id lists, become U+FFFD).
   */
  decode(ids: ArrayLike<number>): string {
    let length = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new Error(
          `ids[${i}] = ${id} is outside the vocabulary (0 … ${
            this.vocabSize - 1
          })`,
        );
      }
      length += this.tokenBytes[id].length;
    }
    const bytes = new Uint8Array(length);
    for (let i = 0, at = 0; i < ids.length; i++) {
      const t = this.tokenBytes[ids[i]];
      bytes.set(t, at);
      at += t.length;
    }
    return utf8Decoder.decode(bytes);
  }
}

/**
 * SHA-256 (32 bytes) of the tokenizer's canonical JSON
 * `{"tokens":[…by id],"merges":[[l,r],…],"special":[[id,content],…]}`, so the
 * same vocabulary and merges hash the same whatever file they came from.
 */
export const tokenizerHash = (tokenizer: Tokenizer): Uint8Array =>
  new Uint8Array(
    createHash("sha256").update(
      JSON.stringify({
        tokens: tokenizer.tokens,
        merges: tokenizer.merges,
        special: tokenizer.specialTokens.map((s) => [s.id, s.content]),
      }),
    ).digest(),
  );

/** Lower-case hex of bytes (for hashes in messages and metadata). */
export const toHex = (bytes: Uint8Array): string =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

/**
 * Serializes to Hugging Face `tokenizer.json` (model `BPE`, `ByteLevel`
 * pre-tokenizer and decoder, specials as `added_tokens`); vocab in id order,
 * merges as `"left right"` strings (as `[left, right]` pairs when a token
 * contains a space, where the string form would be ambiguous).
 */
export const tokenizerToJson = (tokenizer: Tokenizer): string => {
  const q = JSON.stringify;
  const stringMerges = tokenizer.merges.every(([l, r]) =>
    !l.includes(" ") && !r.includes(" ")
  );
  const merges = tokenizer.merges.map(([l, r]) =>
    stringMerges ? q(`${l} ${r}`) : q([l, r])
  );
  const added = tokenizer.specialTokens.map((s) =>
    q({
      id: s.id,
      content: s.content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })
  );
  const byteLevel = (extra: string) =>
    `{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true${extra}}`;
  return [
    "{",
    '  "version": "1.0",',
    '  "truncation": null,',
    '  "padding": null,',
    `  "added_tokens": [${
      added.length ? `\n    ${added.join(",\n    ")}\n  ` : ""
    }],`,
    '  "normalizer": null,',
    `  "pre_tokenizer": ${byteLevel("")},`,
    `  "post_processor": ${byteLevel("")},`,
    `  "decoder": ${byteLevel("")},`,
    '  "model": {',
    '    "type": "BPE",',
    '    "dropout": null,',
    '    "unk_token": null,',
    '    "continuing_subword_prefix": null,',
    '    "end_of_word_suffix": null,',
    '    "fuse_unk": false,',
    '    "byte_fallback": false,',
    '    "ignore_merges": false,',
    `    "vocab": {\n      ${
      tokenizer.tokens.map((t, id) => `${q(t)}: ${id}`).join(",\n      ")
    }\n    },`,
    `    "merges": [${
      merges.length ? `\n      ${merges.join(",\n      ")}\n    ` : ""
    }]`,
    "  }",
    "}",
    "",
  ].join("\n");
};

const ByteLevel = Schema.Struct({
  type: Schema.Literal("ByteLevel"),
  add_prefix_space: Schema.optional(Schema.Boolean),
  use_regex: Schema.optional(Schema.Boolean),
});

const TokenizerJson = Schema.Struct({
  added_tokens: Schema.optional(Schema.Array(Schema.Struct({
    id: Schema.Int,
    content: Schema.String,
    special: Schema.optional(Schema.Boolean),
  }))),
  normalizer: Schema.optional(Schema.Null),
  pre_tokenizer: ByteLevel,
  decoder: Schema.optional(Schema.NullOr(ByteLevel)),
  model: Schema.Struct({
    type: Schema.Literal("BPE"),
    dropout: Schema.optional(Schema.Null),
    continuing_subword_prefix: Schema.optional(
      Schema.NullOr(Schema.Literal("")),
    ),
    end_of_word_suffix: Schema.optional(Schema.NullOr(Schema.Literal(""))),
    byte_fallback: Schema.optional(Schema.Literal(false)),
    vocab: Schema.Record(Schema.String, Schema.Int),
    merges: Schema.Array(
      Schema.Union([
        Schema.String,
        Schema.Tuple([Schema.String, Schema.String]),
      ]),
    ),
  }),
});

/**
 * Parses a Hugging Face `tokenizer.json` holding a byte-level BPE: ours or a
 * GPT-2 style one (merges as `"a b"` strings or `["a", "b"]` pairs; added
 * tokens merged into the vocabulary, the `special` ones matched in text).
 * Other normalizers, pre-tokenizers (or ByteLevel with `add_prefix_space` or
 * without its regex), models and options fail with a DataError naming `file`.
 */
export const parseTokenizerJson = (
  text: string,
  file: string,
): Effect.Effect<Tokenizer, DataError> =>
  Effect.gen(function* () {
    const fail = (message: string) =>
      new DataError({ file, message: `${file}: ${message}` });
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (cause) {
      return yield* Effect.fail(fail(`invalid JSON (${String(cause)})`));
    }
    const json = yield* Schema.decodeUnknownEffect(TokenizerJson)(raw).pipe(
      Effect.mapError((e) =>
        fail(`not a byte-level BPE tokenizer.json: ${e.message}`)
      ),
    );
    if (json.pre_tokenizer.add_prefix_space === true) {
      return yield* Effect.fail(
        fail("pre_tokenizer.add_prefix_space = true is not supported"),
      );
    }
    if (json.pre_tokenizer.use_regex === false) {
      return yield* Effect.fail(
        fail("pre_tokenizer.use_regex = false is not supported"),
      );
    }
    const byId = new Map<number, string>();
    const added = json.added_tokens ?? [];
    const entries: [string, number][] = [
      ...Object.entries(json.model.vocab),
      ...added.map((t): [string, number] => [t.content, t.id]),
    ];
    for (const [token, id] of entries) {
      const held = byId.get(id);
      if (held !== undefined && held !== token) {
        return yield* Effect.fail(
          fail(
            `id ${id} is both ${quote(held)} and ${quote(token)}`,
          ),
        );
      }
      byId.set(id, token);
    }
    const tokens: string[] = [];
    for (let id = 0; id < byId.size; id++) {
      const t = byId.get(id);
      if (t === undefined) {
        return yield* Effect.fail(
          fail(`vocabulary ids are not dense: id ${id} is missing`),
        );
      }
      tokens.push(t);
    }
    const merges: [string, string][] = [];
    for (const [i, m] of json.model.merges.entries()) {
      if (typeof m !== "string") merges.push([m[0], m[1]]);
      else {
        const parts = m.split(" ");
        if (parts.length !== 2) {
          return yield* Effect.fail(
            fail(`model.merges[${i}] = ${quote(m)} is not "a b"`),
          );
        }
        merges.push([parts[0], parts[1]]);
      }
    }
    const specials = added.filter((t) => t.special !== false).map((t) => ({
      id: t.id,
      content: t.content,
    }));
    return yield* Effect.try({
      try: () => new Tokenizer(tokens, merges, specials),
      catch: (cause) =>
        fail(cause instanceof Error ? cause.message : String(cause)),
    });
  });

/** Reads a `tokenizer.json` (see {@link parseTokenizerJson}). */
export const loadTokenizer = (
  path: string,
): Effect.Effect<Tokenizer, DataError> =>
  Effect.flatMap(readText(path), (text) => parseTokenizerJson(text, path));

/**
 * Writes {@link tokenizerToJson} to `path` atomically (see
 * {@link writeFileAtomic}).
 */
export const saveTokenizer = (
  path: string,
  tokenizer: Tokenizer,
): Effect.Effect<void, DataError> =>
  Effect.suspend(() => writeFileAtomic(path, tokenizerToJson(tokenizer)));
