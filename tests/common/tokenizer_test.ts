import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect } from "effect";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { loadBrown } from "../../src/common/corpus.ts";
import { trainBpe } from "../../src/common/bpe_train.ts";
import {
  BYTE_TO_CHAR,
  END_OF_TEXT,
  GPT2_PATTERN,
  loadTokenizer,
  parseTokenizerJson,
  saveTokenizer,
  toHex,
  Tokenizer,
  tokenizerHash,
  tokenizerToJson,
} from "../../src/common/tokenizer.ts";
import type { DataError } from "../../src/common/text_sources.ts";

const FIXTURE =
  new URL("../fixtures/gpt2_style_tokenizer.json", import.meta.url)
    .pathname;

const brown = await Effect.runPromise(loadBrown());
const t0 = performance.now();
const brownTok = trainBpe(brown.train, { vocabSize: 4096 });
const brownSeconds = (performance.now() - t0) / 1000;
// A slice of training text for the cheaper property runs.
const small = brown.train.slice(0, 30);

const parse = (json: string, file = "t.json"): Promise<Tokenizer> =>
  Effect.runPromise(parseTokenizerJson(json, file));
const failure = (json: string, file = "t.json"): Promise<DataError> =>
  Effect.runPromise(Effect.flip(parseTokenizerJson(json, file)));
const hfOf = (json: string): HfTokenizer =>
  new HfTokenizer(JSON.parse(json), {});
const hfEncode = (hf: HfTokenizer, text: string): number[] =>
  hf.encode(text, { add_special_tokens: false }).ids;

/**
 * Reference trainer: recounts every pair at every step (no incremental
 * updates), same tie rule (highest count, then smallest (left, right) ids),
 * same reuse of ids for a token text made twice.
 */
const naiveTrain = (
  docs: string[],
  vocabSize: number,
  minFrequency: number,
): { tokens: string[]; merges: [string, string][] } => {
  const specials = [END_OF_TEXT];
  const counts = new Map<string, number>();
  for (const doc of docs) {
    for (const part of doc.split(END_OF_TEXT)) {
      for (const m of part.matchAll(GPT2_PATTERN)) {
        counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
      }
    }
  }
  const tokens = [...specials, ...BYTE_TO_CHAR];
  const seqs = [...counts.keys()].map((w) =>
    [...new TextEncoder().encode(w)].map((b) => b + 1)
  );
  const freqs = [...counts.values()];
  const merges: [string, string][] = [];
  const merged = new Set<string>();
  while (tokens.length < vocabSize) {
    const pairs = new Map<string, number>();
    seqs.forEach((s, w) => {
      for (let i = 0; i + 1 < s.length; i++) {
        const k = `${s[i]},${s[i + 1]}`;
        pairs.set(k, (pairs.get(k) ?? 0) + freqs[w]);
      }
    });
    let best: [number, number] | undefined, bestCount = 0;
    for (const [k, c] of pairs) {
      const [a, b] = k.split(",").map(Number);
      if (
        c > bestCount ||
        (c === bestCount && best &&
          (a < best[0] || (a === best[0] && b < best[1])))
      ) {
        best = [a, b];
        bestCount = c;
      }
    }
    if (best === undefined || bestCount < minFrequency) break;
    const [a, b] = best;
    let z = tokens.indexOf(tokens[a] + tokens[b]);
    if (z < 0) {
      z = tokens.length;
      tokens.push(tokens[a] + tokens[b]);
    }
    if (!merged.has(`${a},${b}`)) merges.push([tokens[a], tokens[b]]);
    merged.add(`${a},${b}`);
    for (const s of seqs) {
      for (let i = 0; i + 1 < s.length; i++) {
        if (s[i] === a && s[i + 1] === b) s.splice(i, 2, z);
      }
    }
  }
  return { tokens, merges };
};

Deno.test("trainBpe: full Brown to 4096 tokens, fast", () => {
  assert.equal(brownTok.vocabSize, 4096);
  assert.equal(brownTok.tokens.length, 4096);
  assert.equal(new Set(brownTok.tokens).size, 4096);
  assert.deepEqual(brownTok.specialTokens, [{ id: 0, content: END_OF_TEXT }]);
  assert.equal(brownTok.tokens[1 + 0x41], "A");
  // The commonest English pairs come first.
  assert.deepEqual(brownTok.merges[0], ["Ġ", "t"]);
  assert.ok(brownTok.tokenId("Ġthe") !== undefined);
  assert.ok(brownSeconds < 60, `training took ${brownSeconds} s`);
});

Deno.test("trainBpe: matches a recount-everything reference (property)", () => {
  const text = fc.string({
    unit: fc.constantFrom("a", "b", "c", " ", "é", "\n", "'s"),
    maxLength: 30,
  });
  fc.assert(
    fc.property(
      fc.array(text, { minLength: 1, maxLength: 8 }),
      fc.integer({ min: 257, max: 290 }),
      fc.integer({ min: 1, max: 3 }),
      (docs, vocabSize, minFrequency) => {
        const ref = naiveTrain(docs, vocabSize, minFrequency);
        if (ref.tokens.length < vocabSize) {
          assert.throws(
            () => trainBpe(docs, { vocabSize, minFrequency }),
            /vocabSize \d+ is out of reach/,
          );
          return;
        }
        const tok = trainBpe(docs, { vocabSize, minFrequency });
        assert.deepEqual(tok.tokens, ref.tokens);
        assert.deepEqual(tok.merges, ref.merges);
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("trainBpe: exactly vocabSize tokens (property)", () => {
  fc.assert(
    fc.property(fc.integer({ min: 257, max: 1500 }), (vocabSize) => {
      const tok = trainBpe(small, { vocabSize });
      assert.equal(tok.vocabSize, vocabSize);
      assert.equal(tok.tokens.length, vocabSize);
      assert.equal(tok.merges.length <= vocabSize - 257, true);
    }),
    { numRuns: 8 },
  );
  assert.throws(() => trainBpe(small, { vocabSize: 256 }), /vocabSize must/);
  assert.throws(
    () => trainBpe(["ab ab"], { vocabSize: 400 }),
    /vocabSize 400 is out of reach: the documents give only 258 tokens/,
  );
});

Deno.test("encode/decode round-trips any well-formed string (property)", () => {
  const tok = brownTok;
  for (const unit of ["binary", "grapheme", "binary-ascii"] as const) {
    fc.assert(
      fc.property(fc.string({ unit, maxLength: 200 }), (s) => {
        assert.equal(tok.decode(tok.encode(s)), s);
      }),
      { numRuns: 300 },
    );
  }
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(fc.string({ unit: "binary" }), fc.constant(END_OF_TEXT)),
      ),
      (parts) => {
        const s = parts.join("");
        const ids = tok.encode(s);
        assert.equal(tok.decode(ids), s);
        assert.equal(
          ids.filter((id) => id === 0).length,
          s.split(END_OF_TEXT).length - 1,
        );
      },
    ),
  );
  for (const doc of brown.valid) assert.equal(tok.decode(tok.encode(doc)), doc);
  const stream = tok.encodeDocuments(brown.valid.slice(0, 3));
  assert.equal(stream.filter((id) => id === 0).length, 3);
  assert.equal(
    tok.decode(stream),
    brown.valid.slice(0, 3).map((d) => d + END_OF_TEXT).join(""),
  );
  assert.throws(() => tok.decode([4096]), /ids\[0\] = 4096 is outside/);
});

Deno.test("encode compresses English: ~4 bytes a token on Brown", () => {
  const text = brown.valid.join("\n");
  const bytesPerToken = new TextEncoder().encode(text).length /
    brownTok.encode(text).length;
  assert.ok(bytesPerToken > 3 && bytesPerToken < 5, `${bytesPerToken}`);
});

Deno.test("tokenizer.json: save, load, same tokenizer and hash", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/tokenizer.json`;
    await Effect.runPromise(saveTokenizer(path, brownTok));
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), [
      "tokenizer.json",
    ]);
    const json = JSON.parse(await Deno.readTextFile(path));
    assert.equal(json.model.type, "BPE");
    assert.equal(json.pre_tokenizer.type, "ByteLevel");
    assert.equal(json.decoder.type, "ByteLevel");
    assert.equal(json.model.merges[0], "Ġ t");
    assert.deepEqual(json.added_tokens[0].content, END_OF_TEXT);
    assert.equal(Object.keys(json.model.vocab).length, 4096);
    const loaded = await Effect.runPromise(loadTokenizer(path));
    assert.deepEqual(loaded.tokens, brownTok.tokens);
    assert.deepEqual(loaded.merges, brownTok.merges);
    assert.equal(toHex(tokenizerHash(loaded)), toHex(tokenizerHash(brownTok)));
    const text = brown.valid[3];
    assert.deepEqual(loaded.encode(text), brownTok.encode(text));

    // Merges as [left, right] pairs load to the same tokenizer.
    json.model.merges = json.model.merges.map((m: string) => m.split(" "));
    const pairs = await parse(JSON.stringify(json));
    assert.equal(toHex(tokenizerHash(pairs)), toHex(tokenizerHash(brownTok)));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tokenizerHash: 32 bytes, changes with the merges", () => {
  const a = trainBpe(small, { vocabSize: 300 });
  const b = trainBpe(small, { vocabSize: 301 });
  assert.equal(tokenizerHash(a).length, 32);
  assert.equal(
    toHex(tokenizerHash(a)),
    toHex(tokenizerHash(trainBpe(small, { vocabSize: 300 }))),
  );
  assert.notEqual(toHex(tokenizerHash(a)), toHex(tokenizerHash(b)));
  const noSpecials = new Tokenizer(a.tokens, a.merges, []);
  assert.notEqual(toHex(tokenizerHash(a)), toHex(tokenizerHash(noSpecials)));
});

Deno.test("GPT-2 style tokenizer.json loads and encodes like @huggingface/tokenizers", async () => {
  const text = await Deno.readTextFile(FIXTURE);
  const tok = await Effect.runPromise(loadTokenizer(FIXTURE));
  // GPT-2 layout: bytes in table order, <|endoftext|> last, merges as pairs.
  assert.equal(tok.vocabSize, 781);
  assert.equal(tok.tokenId("!"), 0);
  assert.equal(tok.tokenId(END_OF_TEXT), 780);
  assert.deepEqual(tok.specialTokens, [{ id: 780, content: END_OF_TEXT }]);
  const hf = hfOf(text);
  const sentence = "The cat's whistle, and then they said: \"It's 2019!\"";
  assert.deepEqual(tok.encode(sentence), hfEncode(hf, sentence));
  assert.equal(tok.decode(tok.encode(sentence)), sentence);
  fc.assert(
    fc.property(fc.string({ unit: "binary", maxLength: 80 }), (s) => {
      assert.deepEqual(tok.encode(s), hfEncode(hf, s));
    }),
    { numRuns: 200 },
  );
});

Deno.test("our encoder agrees with @huggingface/tokenizers on our tokenizer.json", async () => {
  const json = tokenizerToJson(brownTok);
  const hf = hfOf(json);
  const loaded = await parse(json);
  const text = brown.valid.slice(0, 8).join(`\n${END_OF_TEXT}`);
  assert.deepEqual(loaded.encode(text), hfEncode(hf, text));
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string({ unit: "grapheme", maxLength: 100 }),
        fc.string({ unit: "binary", maxLength: 100 }),
      ),
      (s) => {
        const ids = loaded.encode(s);
        assert.deepEqual(ids, hfEncode(hf, s));
        // Raw decoding: by default the library also "cleans up" spaces
        // before punctuation (" !" → "!", seed -1647034635), which is
        // transformers' tokenizer_config.json behaviour, not tokenizer.json's.
        if (ids.length > 0) {
          assert.equal(
            hf.decode(ids, { clean_up_tokenization_spaces: false }),
            s,
          );
        }
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("parseTokenizerJson: unsupported or broken files fail naming the file", async () => {
  const base = JSON.parse(tokenizerToJson(trainBpe(small, { vocabSize: 300 })));
  const variant = (edit: (j: typeof base) => void): string => {
    const j = structuredClone(base);
    edit(j);
    return JSON.stringify(j);
  };
  const cases: [string, RegExp][] = [
    ["{not json", /invalid JSON/],
    [variant((j) => (j.model.type = "WordPiece")), /not a byte-level BPE/],
    [
      variant((j) => (j.pre_tokenizer = { type: "Metaspace" })),
      /not a byte-level BPE/,
    ],
    [variant((j) => (j.normalizer = { type: "NFC" })), /not a byte-level BPE/],
    [
      variant((j) => (j.pre_tokenizer.add_prefix_space = true)),
      /add_prefix_space = true is not supported/,
    ],
    [
      variant((j) => {
        j.model.vocab["zz"] = j.model.vocab["Ġ"];
        delete j.model.vocab["Ġ"];
      }),
      /no token for byte 0x20/,
    ],
    [
      variant((j) => (j.model.vocab["zz"] = 900)),
      /not dense: id 300 is missing/,
    ],
    [variant((j) => (j.model.merges[0] = "a b c")), /model\.merges\[0\]/],
    [variant((j) => j.model.merges.push("Ġ q")), /rank 43 \("Ġ", "q"\)/],
  ];
  for (const [json, re] of cases) {
    const e = await failure(json, "bad/tokenizer.json");
    assert.equal(e._tag, "DataError");
    assert.equal(e.file, "bad/tokenizer.json");
    assert.match(e.message, /^bad\/tokenizer\.json: /);
    assert.match(e.message, re);
  }
  const missing = await Effect.runPromise(
    Effect.flip(loadTokenizer("/nonexistent/tokenizer.json")),
  );
  assert.equal(missing.file, "/nonexistent/tokenizer.json");
});
