import { strict as assert } from "node:assert";
import fc from "fast-check";
import { BYTE_TO_CHAR, Tokenizer } from "../../src/common/tokenizer.ts";
import { TextStreamer, tokenBytes } from "../../src/infer/text_stream.ts";

// Bytes as tokens, plus merges whose tokens end inside a multi-byte
// character: "a" + the lead byte of "é" (C3 A9), and the first three bytes
// of "😀" (F0 9F 98 80).
const B = (b: number) => BYTE_TO_CHAR[b];
const merges: [string, string][] = [
  ["a", B(0xc3)],
  [B(0xf0), B(0x9f)],
  [B(0xf0) + B(0x9f), B(0x98)],
];
const tokenizer = new Tokenizer(
  [
    ...BYTE_TO_CHAR,
    "a" + B(0xc3),
    B(0xf0) + B(0x9f),
    B(0xf0) + B(0x9f) + B(0x98),
    "<|endoftext|>",
  ],
  merges,
  [{ id: 259, content: "<|endoftext|>" }],
);

const text = fc.string({ unit: "grapheme", maxLength: 40 }).map((s) =>
  s + "aé😀 ü"
);

function stream(ids: number[], stop: string[] = []): string[] {
  const s = new TextStreamer(tokenizer, stop);
  const pieces = ids.map((id) => s.push(id));
  pieces.push(s.finish());
  return pieces;
}

Deno.test("tokens that split a character: the joined pieces are the text, no piece breaks a character", () => {
  const ids = tokenizer.encode("aé😀");
  // "a"+C3, A9, F0 9F 98, 80: both characters are split across tokens.
  assert.deepEqual(ids.map((id) => tokenBytes(tokenizer, id).length), [
    2,
    1,
    3,
    1,
  ]);
  assert.deepEqual(stream(ids), ["a", "é", "", "😀", ""]);
  fc.assert(fc.property(text, (s) => {
    const pieces = stream(tokenizer.encode(s));
    assert.equal(pieces.join(""), s);
    for (const p of pieces) {
      assert.ok(
        !p.includes("\ufffd"),
        `broken character in ${JSON.stringify(p)}`,
      );
      assert.ok(p.isWellFormed(), "a lone surrogate");
    }
  }));
});

Deno.test("a stop string ends the text before it, and nothing of it is emitted first", () => {
  fc.assert(fc.property(
    text,
    fc.string({ unit: "grapheme", minLength: 1, maxLength: 4 }),
    text,
    (a, stop, b) => {
      const s = a + stop + b;
      const pieces = stream(tokenizer.encode(s), [stop]);
      const joined = pieces.join("");
      assert.equal(joined, s.slice(0, s.indexOf(stop)));
    },
  ));
  const s = new TextStreamer(tokenizer, ["END"]);
  assert.equal(s.push(tokenizer.encode("x")[0]), "x");
  assert.equal(s.push(tokenizer.encode("E")[0]), ""); // held: may start "END"
  assert.equal(s.push(tokenizer.encode("N")[0]), "");
  assert.equal(s.push(tokenizer.encode("D")[0]), "");
  assert.ok(s.stopped);
  assert.equal(s.push(tokenizer.encode("y")[0]), "");
  assert.equal(s.finish(), "");
});

Deno.test("special tokens decode to their text; ids outside the vocabulary are refused", () => {
  assert.deepEqual([...tokenBytes(tokenizer, 259)], [
    ...new TextEncoder().encode("<|endoftext|>"),
  ]);
  assert.throws(() => tokenBytes(tokenizer, 260), /outside the vocabulary/);
});
