/**
 * Fuzzing the `tokenizer.json` reader: every input is rejected with a
 * DataError naming the file, or gives a tokenizer whose JSON reads back as the
 * same tokenizer (the same text when the input was written by
 * `tokenizerToJson`).
 */
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect } from "effect";
import {
  parseTokenizerJson,
  type Tokenizer,
  tokenizerToJson,
} from "../../src/common/tokenizer.ts";
import { trainBpe } from "../../src/common/bpe_train.ts";
import {
  decodeOnce,
  fuzzParameters,
  FuzzStats,
  jsonInputs,
} from "./harness.ts";

const FILE = "fuzz/tokenizer.json";

const TEXT = [
  "The Fulton County Grand Jury said Friday an investigation of recent elections produced no evidence.",
  "naïve café — 東京 ✓ 🙂 tabs\tand\nnewlines, numbers 1234 and 'quotes'.",
];

const trained: Tokenizer[] = [
  trainBpe(TEXT, { vocabSize: 257 }),
  trainBpe(TEXT, { vocabSize: 300, minFrequency: 1 }),
  trainBpe(TEXT, {
    vocabSize: 290,
    minFrequency: 1,
    specialTokens: ["<|endoftext|>", "<pad>"],
  }),
];
const canonical = trained.map(tokenizerToJson);

// GPT-2 style: merges as ["a", "b"] pairs, and an added token that is not special.
const gpt2Style = (() => {
  const json = JSON.parse(canonical[1]);
  json.model.merges = json.model.merges.map((m: string) => m.split(" "));
  const id = Object.keys(json.model.vocab).length;
  json.added_tokens.push({ id, content: "<plain>", special: false });
  return json;
})();

const valids: unknown[] = [...canonical.map((t) => JSON.parse(t)), gpt2Style];

const inputArb: fc.Arbitrary<[string, string]> = fc.oneof(
  {
    weight: 1,
    arbitrary: fc.constantFrom(...canonical).map((t): [string, string] => [
      "valid",
      t,
    ]),
  },
  {
    weight: 8,
    arbitrary: jsonInputs(valids, ["added_tokens", "merges", "vocab", "Ġ"]),
  },
);

const parts = (t: Tokenizer) => ({
  tokens: t.tokens,
  merges: t.merges,
  specials: t.specialTokens,
});

Deno.test("fuzz: tokenizer.json", () => {
  const stats = new FuzzStats("tokenizer.json");
  fc.assert(
    fc.property(inputArb, ([kind, text]) => {
      stats.count(kind);
      const r = decodeOnce(
        stats,
        () => parseTokenizerJson(text, FILE),
        FILE,
        ["DataError"],
      );
      if (!r.ok) return;
      const again = tokenizerToJson(r.value);
      if (kind === "valid") assert.equal(again, text);
      const back = Effect.runSync(parseTokenizerJson(again, FILE));
      assert.deepEqual(parts(back), parts(r.value));
      assert.equal(tokenizerToJson(back), again);
    }),
    fuzzParameters(),
  );
  console.log(stats.summary());
});

Deno.test("regression (fuzz): a huge token or merge is quoted in at most 80 characters", () => {
  const long = "é".repeat(1_000_000);
  const json = JSON.parse(canonical[1]);
  const badMerge = { ...json, model: { ...json.model, merges: [long] } };
  const twice = {
    ...json,
    added_tokens: [...json.added_tokens, { id: 0, content: long }],
  };
  for (const bad of [badMerge, twice]) {
    const e = Effect.runSync(
      Effect.flip(parseTokenizerJson(JSON.stringify(bad), FILE)),
    );
    assert.ok(e.message.startsWith(`${FILE}: `), e.message);
    assert.ok(e.message.length < 300, `${e.message.length} chars`);
  }
});
