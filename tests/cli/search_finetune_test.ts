/**
 * `deno task search --finetune-steps K` and `deno task train --init RUN`
 * end to end on a freshly trained tiny run: the fine-tune is a new run that
 * starts from the source's weights under the chosen map, its perplexity
 * before and after is reported (and reproduced by `eval`), the source run is
 * not modified, and bad flags fail with one line naming the flag.
 */
import { strict as assert } from "node:assert";
import { assertOneLineError, cli } from "./cli_run.ts";

/** SHA-256 of every file under `dir`, by relative path. */
async function hashTree(dir: string): Promise<Map<string, string>> {
  const hashes = new Map<string, string>();
  const walk = async (sub: string) => {
    for await (const e of Deno.readDir(`${dir}/${sub}`)) {
      const rel = sub === "" ? e.name : `${sub}/${e.name}`;
      if (e.isDirectory) await walk(rel);
      else {
        const digest = await crypto.subtle.digest(
          "SHA-256",
          await Deno.readFile(`${dir}/${rel}`),
        );
        hashes.set(
          rel,
          [...new Uint8Array(digest)].map((b) =>
            b.toString(16).padStart(2, "0")
          )
            .join(""),
        );
      }
    }
  };
  await walk("");
  return hashes;
}

const losses = async (run: string): Promise<number[]> =>
  (await Deno.readTextFile(`${run}/metrics.jsonl`)).trim().split("\n")
    .map((l) => JSON.parse(l)).filter((m) => m.kind === "train")
    .map((m) => m.loss);

/**
 * A run's first loss is nearer the source run's last loss than its first (a
 * fresh model's): it started from the trained weights.
 */
function assertStartedFrom(run: number[], source: number[]): void {
  const [fresh, last] = [source[0], source[source.length - 1]];
  assert.ok(
    Math.abs(run[0] - last) < Math.abs(run[0] - fresh),
    `first loss ${run[0]}; the source went from ${fresh} to ${last}`,
  );
}

const work = await Deno.makeTempDir();
const run = `${work}/tiny`;
const trained = await cli(
  "train",
  "--preset",
  "tiny",
  "--steps",
  "20",
  "--backend",
  "cpu",
  "--out",
  run,
);
assert.equal(trained.code, 0, trained.err);

Deno.test("cli search --finetune-steps: a new run from the source's weights, ppl before and after, source untouched", async () => {
  const before = await hashTree(run);
  const out = `${work}/search`;
  const ft = `${work}/ft`;
  const r = await cli(
    "search",
    "--model",
    run,
    "--max-ppl-ratio",
    "1.05",
    "--eval-tokens",
    "512",
    "--seed",
    "3",
    "--out",
    out,
    "--finetune-steps",
    "4",
    "--finetune-out",
    ft,
    "--backend",
    "cpu",
  );
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /fine-tuned 4 steps → .*: ppl on the search's windows/);
  assert.deepEqual(await hashTree(run), before, "the source run changed");

  const map = JSON.parse(await Deno.readTextFile(`${out}/bitmap.json`));
  assert.deepEqual(JSON.parse(r.out), map);
  const record = JSON.parse(await Deno.readTextFile(`${out}/search.json`));
  const f = record.finetune;
  assert.equal(f.out, ft);
  assert.equal(f.steps, 4);
  assert.equal(f.windows.before.ppl, record.choice.ppl);
  assert.ok(Number.isFinite(f.windows.after.ppl) && f.windows.after.ppl > 1);
  assert.ok(Number.isFinite(f.wholeSplit.after.ppl));
  assert.ok(record.evaluations.length > 0, "evaluations kept");

  // The fine-tune is a run of the chosen map, 4 steps long.
  const config = JSON.parse(await Deno.readTextFile(`${ft}/config.json`));
  assert.deepEqual(config.layer_bit_map, map);
  assert.equal((await losses(ft)).length, 4);
  assertStartedFrom(await losses(ft), await losses(run));

  // `eval` on the fine-tuned run reproduces the reported perplexity exactly.
  const e = await cli(
    "eval",
    "--model",
    ft,
    "--eval-tokens",
    "512",
    "--seed",
    "3",
    "--bit-map",
    `${out}/bitmap.json`,
    "--json",
  );
  assert.equal(e.code, 0, e.err);
  assert.equal(JSON.parse(e.out).ppl, f.windows.after.ppl);

  // The journal with its fine-tune is read back by a later search.
  const again = await cli(
    "search",
    "--model",
    run,
    "--max-ppl-ratio",
    "1.05",
    "--eval-tokens",
    "512",
    "--seed",
    "3",
    "--no-full-split",
    "--out",
    out,
  );
  assert.equal(again.code, 0, again.err);
  assert.match(again.err, /scores from .*search\.json/);

  // A second fine-tune into the same directory is refused before searching.
  assertOneLineError(
    await cli(
      "search",
      "--model",
      run,
      "--max-ppl-ratio",
      "1.05",
      "--out",
      out,
      "--finetune-steps",
      "4",
      "--finetune-out",
      ft,
    ),
    /^error: --finetune-out: .*ft already holds a run/,
  );
});

Deno.test("cli search --finetune-*: bad flags fail with one line naming the flag", async () => {
  const base = ["search", "--model", run, "--max-ppl-ratio", "1.05"];
  assertOneLineError(
    await cli(...base, "--finetune-out", `${work}/x`),
    /^error: --finetune-out: give --finetune-steps/,
  );
  assertOneLineError(
    await cli(...base, "--finetune-steps", "0"),
    /^error: --finetune-steps: expected an integer ≥ 1, got 0$/,
  );
  const foreign = `${work}/foreign`;
  await Deno.mkdir(foreign);
  await Deno.writeTextFile(`${foreign}/notes.txt`, "mine");
  assertOneLineError(
    await cli(...base, "--finetune-steps", "2", "--finetune-out", foreign),
    /^error: --finetune-out: .*foreign is not a run directory \(it holds notes\.txt\)/,
  );
  assertOneLineError(
    await cli(...base, "--finetune-steps", "2", "--finetune-out", run),
    /^error: --finetune-out: .*tiny already holds a run/,
  );
  assertOneLineError(
    await cli(
      ...base,
      "--out",
      `${work}/s2`,
      "--finetune-steps",
      "2",
      "--finetune-out",
      `${work}/s2/`,
    ),
    /^error: --finetune-out: .*s2\/ is the search's --out/,
  );
});

Deno.test("cli train --init RUN: starts from the run's weights under another bit map", async () => {
  const map = {
    embedding: "f16",
    layer_modes: ["eightbit", "ternary"],
  };
  const mapFile = `${work}/map.json`;
  await Deno.writeTextFile(mapFile, JSON.stringify(map));
  const before = await hashTree(run);
  const out = `${work}/init`;
  const r = await cli(
    "train",
    "--init",
    run,
    "--bit-map",
    mapFile,
    "--steps",
    "2",
    "--backend",
    "cpu",
    "--out",
    out,
  );
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, new RegExp(`initialized from ${run}`));
  assert.deepEqual(await hashTree(run), before, "the source run changed");
  const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
  assert.equal(config.layer_bit_map.layer_modes[0], "eightbit");
  assertStartedFrom(await losses(out), await losses(run));

  // Without --out, next to the source.
  const near = await cli(
    "train",
    "--init",
    `${run}/`,
    "--steps",
    "1",
    "--backend",
    "cpu",
  );
  assert.equal(near.code, 0, near.err);
  assert.ok((await Deno.stat(`${run}-ft/latest`)).isFile);

  // Into the source itself: refused, the source untouched.
  const self = await cli(
    "train",
    "--init",
    run,
    "--steps",
    "2",
    "--backend",
    "cpu",
    "--out",
    run,
  );
  assertOneLineError(self, /is the run being started from/);
  assert.deepEqual(await hashTree(run), before, "the source run changed");
});

Deno.test("cli train --init: a directory that is neither, or a bit map that does not fit, fails with one line", async () => {
  assertOneLineError(
    await cli("train", "--init", `${work}/missing`, "--steps", "1"),
    /^error: --init: .*missing: no such directory$/,
  );
  const empty = `${work}/empty`;
  await Deno.mkdir(empty);
  assertOneLineError(
    await cli("train", "--init", empty, "--steps", "1"),
    /^error: --init: .*empty is neither a run directory .* nor a transformers BitNet directory/,
  );
  const bad = `${work}/bad.json`;
  await Deno.writeTextFile(
    bad,
    JSON.stringify({
      embedding: "f16",
      layer_modes: ["ternary", "ternary", "ternary"],
    }),
  );
  assertOneLineError(
    await cli("train", "--init", run, "--bit-map", bad, "--steps", "1"),
    /^error: --bit-map: .*bad\.json does not fit the model of --init .*tiny: .*layer_modes/,
  );
});
