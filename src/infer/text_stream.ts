/**
 * Token ids to text as they come: each token's bytes go through a streaming
 * UTF-8 decoder, so a character split across byte-level BPE tokens is
 * emitted whole once its last byte arrives (never a broken character), and
 * text that could be the start of a stop string is held back until it is
 * known not to be one.
 *
 * @module
 */
import { BYTE_TO_CHAR, type Tokenizer } from "../common/tokenizer.ts";

const utf8 = new TextEncoder();
const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(
  BYTE_TO_CHAR.map((c, b) => [c, b]),
);

/**
 * The bytes a token stands for: the UTF-8 of a special token's text, else
 * its byte-level characters mapped back to bytes (a character outside the
 * byte table as its own UTF-8), as `Tokenizer.decode` reads them.
 */
export function tokenBytes(tokenizer: Tokenizer, id: number): Uint8Array {
  const text = tokenizer.tokens[id];
  if (text === undefined) {
    throw new RangeError(
      `token id ${id} is outside the vocabulary (0 … ${
        tokenizer.vocabSize - 1
      })`,
    );
  }
  if (tokenizer.specialTokens.some((s) => s.id === id)) {
    return utf8.encode(text);
  }
  const bytes: number[] = [];
  for (const ch of text) {
    const b = CHAR_TO_BYTE.get(ch);
    if (b === undefined) bytes.push(...utf8.encode(ch));
    else bytes.push(b);
  }
  return Uint8Array.from(bytes);
}

/**
 * Decodes generated tokens to text incrementally. {@link push} returns the
 * text that became final with a token; {@link finish} the rest. The pieces
 * joined equal `tokenizer.decode(ids)` cut before the first stop string.
 */
export class TextStreamer {
  /** The tokenizer whose tokens are decoded. */
  readonly tokenizer: Tokenizer;
  /** Strings that end the text (not included in it). */
  readonly stop: readonly string[];
  readonly #decoder = new TextDecoder("utf-8");
  readonly #bytes = new Map<number, Uint8Array>();
  #pending = "";
  #stopped = false;

  /** A streamer for `tokenizer`'s ids, ending at the first of `stop`. */
  constructor(tokenizer: Tokenizer, stop: readonly string[] = []) {
    if (stop.some((s) => s.length === 0)) {
      throw new RangeError("stop strings must not be empty");
    }
    this.tokenizer = tokenizer;
    this.stop = stop;
  }

  /** Whether a stop string has been seen (later tokens add nothing). */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** Adds one token; returns the text that is now final ("" if none). */
  push(id: number): string {
    if (this.#stopped) return "";
    let bytes = this.#bytes.get(id);
    if (bytes === undefined) {
      bytes = tokenBytes(this.tokenizer, id);
      this.#bytes.set(id, bytes);
    }
    this.#pending += this.#decoder.decode(bytes, { stream: true });
    return this.#release(false);
  }

  /** Ends the text: returns what was held back (an unfinished character becomes U+FFFD). */
  finish(): string {
    if (!this.#stopped) this.#pending += this.#decoder.decode();
    return this.#release(true);
  }

  /** The final part of the pending text: up to a stop string, or all but a possible start of one. */
  #release(end: boolean): string {
    const text = this.#pending;
    let cut = -1;
    for (const s of this.stop) {
      const at = text.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.#stopped = true;
      this.#pending = "";
      return text.slice(0, cut);
    }
    if (end || this.#stopped) {
      this.#pending = "";
      return text;
    }
    // Hold back the longest suffix that is a proper prefix of a stop string.
    let hold = 0;
    for (const s of this.stop) {
      for (let n = Math.min(s.length - 1, text.length); n > hold; n--) {
        if (text.endsWith(s.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    this.#pending = text.slice(text.length - hold);
    return text.slice(0, text.length - hold);
  }
}
