/**
 * Training a byte-level BPE vocabulary (see `tokenizer.ts` for the model).
 *
 * @module
 */
import {
  BYTE_TO_CHAR,
  END_OF_TEXT,
  GPT2_PATTERN,
  type SpecialToken,
  Tokenizer,
} from "./tokenizer.ts";

/** Options of {@link trainBpe}. */
export interface TrainBpeOptions {
  /** Ids in the result: special tokens + 256 bytes + merges. */
  readonly vocabSize: number;
  /** Pairs seen fewer times than this are never merged (default 2). */
  readonly minFrequency?: number;
  /** Special tokens, given ids 0, 1, … (default `["<|endoftext|>"]`). */
  readonly specialTokens?: readonly string[];
}

/**
 * A max-heap of (count, pair key): highest count first, then the smallest key
 * (= smallest left id, then right id), which makes ties deterministic.
 */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];

  get size(): number {
    return this.counts.length;
  }

  private above(c1: number, k1: number, c2: number, k2: number): boolean {
    return c1 > c2 || (c1 === c2 && k1 < k2);
  }

  push(count: number, key: number): void {
    const { counts, keys } = this;
    let i = counts.length;
    counts.push(count);
    keys.push(key);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.above(count, key, counts[p], keys[p])) break;
      counts[i] = counts[p];
      keys[i] = keys[p];
      i = p;
    }
    counts[i] = count;
    keys[i] = key;
  }

  /** Removes the top; returns [count, key]. */
  pop(): [number, number] {
    const { counts, keys } = this;
    const top: [number, number] = [counts[0], keys[0]];
    const c = counts.pop()!, k = keys.pop()!;
    const n = counts.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const best = r < n && this.above(counts[r], keys[r], counts[l], keys[l])
          ? r
          : l;
        if (!this.above(counts[best], keys[best], c, k)) break;
        counts[i] = counts[best];
        keys[i] = keys[best];
        i = best;
      }
      counts[i] = c;
      keys[i] = k;
    }
    return top;
  }
}

/** Counts the GPT-2 pre-tokens of the documents (special tokens cut out). */
const countWords = (
  docs: Iterable<string>,
  specials: readonly string[],
): Map<string, number> => {
  const counts = new Map<string, number>();
  const split = specials.length === 0 ? undefined : new RegExp(
    specials.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|"),
  );
  for (const doc of docs) {
    for (const part of split ? doc.split(split) : [doc]) {
      for (const m of part.matchAll(GPT2_PATTERN)) {
        counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
      }
    }
  }
  return counts;
};

/**
 * Trains byte-level BPE: ids 0 … S−1 are the special tokens, S … S+255 the
 * bytes (in byte order), then one token per merge. Each step merges the pair
 * of adjacent tokens with the highest count Σ_words freq(word) · occurrences
 * (ties → smallest (left id, right id)), as in GPT-2 / Hugging Face.
 *
 * Cost: the unique pre-tokens are counted once; pair counts are then updated
 * incrementally — an index pair → words holding it limits each merge to the
 * words it touches, and a lazy max-heap yields the best pair.
 *
 * Throws (naming `vocabSize`) when it is smaller than S + 256 or when the
 * documents run out of pairs seen `minFrequency` times before reaching it.
 */
export const trainBpe = (
  docs: Iterable<string>,
  options: TrainBpeOptions,
): Tokenizer => {
  const specials = options.specialTokens ?? [END_OF_TEXT];
  const minFrequency = options.minFrequency ?? 2;
  const { vocabSize } = options;
  const base = specials.length + 256;
  if (!Number.isInteger(vocabSize) || vocabSize < base) {
    throw new Error(
      `vocabSize must be an integer ≥ ${base} (specials + 256 bytes), got ${vocabSize}`,
    );
  }
  if (!Number.isInteger(minFrequency) || minFrequency < 1) {
    throw new Error(`minFrequency must be an integer ≥ 1, got ${minFrequency}`);
  }
  if (new Set(specials).size !== specials.length) {
    throw new Error(`specialTokens must be distinct, got ${specials}`);
  }

  const tokens: string[] = [...specials, ...BYTE_TO_CHAR];
  const vocab = new Map<string, number>(tokens.map((t, i) => [t, i]));
  const merges: [string, string][] = [];

  // Words: the unique pre-tokens as symbol arrays, merged in place.
  const wordCounts = countWords(docs, specials);
  const nWords = wordCounts.size;
  const words: Int32Array[] = new Array(nWords);
  const lengths = new Int32Array(nWords);
  const freqs = new Float64Array(nWords);
  const encoder = new TextEncoder();
  let w = 0;
  for (const [word, count] of wordCounts) {
    const bytes = encoder.encode(word);
    const sym = new Int32Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) sym[i] = specials.length + bytes[i];
    words[w] = sym;
    lengths[w] = sym.length;
    freqs[w] = count;
    w++;
  }

  // Pair key = left·vocabSize + right (exact below 2^53).
  const K = vocabSize;
  const pairCounts = new Map<number, number>();
  const where = new Map<number, number[]>();
  const add = (key: number, delta: number): void => {
    const c = (pairCounts.get(key) ?? 0) + delta;
    if (c === 0) pairCounts.delete(key);
    else pairCounts.set(key, c);
  };
  const note = (key: number, word: number): void => {
    const list = where.get(key);
    if (list === undefined) where.set(key, [word]);
    else if (list[list.length - 1] !== word) list.push(word);
  };
  for (let i = 0; i < nWords; i++) {
    const sym = words[i];
    for (let j = 0; j + 1 < sym.length; j++) {
      const key = sym[j] * K + sym[j + 1];
      add(key, freqs[i]);
      note(key, i);
    }
  }
  const heap = new PairHeap();
  for (const [key, count] of pairCounts) heap.push(count, key);

  const merged = new Set<number>();
  const visited = new Int32Array(nWords).fill(-1);
  const grown = new Set<number>();
  let step = 0;
  while (tokens.length < vocabSize && heap.size > 0) {
    const [count, key] = heap.pop();
    const current = pairCounts.get(key) ?? 0;
    if (current !== count) {
      // Counts of known pairs only drop between pushes; re-queue the lower one.
      if (current > 0 && current < count) heap.push(current, key);
      continue;
    }
    if (count < minFrequency) break;
    const a = Math.floor(key / K), b = key - a * K;
    const text = tokens[a] + tokens[b];
    let z = vocab.get(text);
    if (z === undefined) {
      z = tokens.length;
      tokens.push(text);
      vocab.set(text, z);
    }
    if (!merged.has(key)) {
      merged.add(key);
      merges.push([tokens[a], tokens[b]]);
    }
    grown.clear();
    for (const wi of where.get(key) ?? []) {
      if (visited[wi] === step) continue;
      visited[wi] = step;
      const sym = words[wi], len = lengths[wi], f = freqs[wi];
      let out = 0;
      for (let j = 0; j < len;) {
        if (j + 1 < len && sym[j] === a && sym[j + 1] === b) {
          add(key, -f);
          if (out > 0) {
            const p = sym[out - 1];
            add(p * K + a, -f);
            add(p * K + z, f);
            note(p * K + z, wi);
            grown.add(p * K + z);
          }
          if (j + 2 < len) {
            const n = sym[j + 2];
            add(b * K + n, -f);
            add(z * K + n, f);
            note(z * K + n, wi);
            grown.add(z * K + n);
          }
          sym[out++] = z;
          j += 2;
        } else {
          sym[out++] = sym[j++];
        }
      }
      lengths[wi] = out;
    }
    where.delete(key);
    pairCounts.delete(key);
    for (const k of grown) {
      const c = pairCounts.get(k);
      if (c !== undefined) heap.push(c, k);
    }
    step++;
  }
  if (tokens.length < vocabSize) {
    throw new Error(
      `vocabSize ${vocabSize} is out of reach: the documents give only ${tokens.length} tokens (no pair left seen ≥ ${minFrequency} times)`,
    );
  }
  const specialTokens: SpecialToken[] = specials.map((content, id) => ({
    id,
    content,
  }));
  return new Tokenizer(tokens, merges, specialTokens);
};
