/**
 * `deno task search` end to end on a freshly trained tiny run: outputs,
 * resume, the eval command reproducing the reported perplexity, and one-line
 * errors with exit status 1.
 */
import { strict as assert } from "node:assert";

const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;

async function cli(
  ...args: string[]
): Promise<{ code: number; out: string; err: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    out: dec.decode(out.stdout),
    err: dec.decode(out.stderr),
  };
}

/** Exit status 1 and one `error:` line matching `pattern`, no stack trace. */
function assertOneLineError(
  r: { code: number; err: string },
  pattern: RegExp,
): void {
  assert.equal(r.code, 1, r.err);
  const errors = r.err.trim().split("\n").filter((l) => l.startsWith("error:"));
  assert.equal(errors.length, 1, r.err);
  assert.match(errors[0], pattern);
  assert.ok(!/\bat .*\.ts:\d+/.test(r.err), `stack trace in: ${r.err}`);
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

Deno.test("cli search: outputs, resume, and eval reproducing the choice's perplexity", async () => {
  const out = `${work}/search`;
  const args = [
    "search",
    "--model",
    run,
    "--max-ppl-ratio",
    "1.002",
    "--eval-tokens",
    "512",
    "--seed",
    "3",
    "--no-full-split",
    "--out",
    out,
  ];
  const r = await cli(...args);
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /\[ *1\/200\] reference/);
  assert.match(
    r.err,
    /optimal: every map no larger than the choice was evaluated/,
  );
  const map = JSON.parse(await Deno.readTextFile(`${out}/bitmap.json`));
  assert.deepEqual(JSON.parse(r.out), map);
  const record = JSON.parse(await Deno.readTextFile(`${out}/search.json`));
  assert.equal(record.complete, true);
  assert.deepEqual(record.choice.map, map);
  assert.ok(record.evaluations.length >= 5);
  const svg = await Deno.readTextFile(`${out}/frontier.svg`);
  for (
    const name of ["Pareto frontier", "all binary", "all f16", "chosen map"]
  ) {
    assert.ok(svg.includes(name), name);
  }

  // Resumed: every score comes from search.json, the choice is the same.
  const again = await cli(...args);
  assert.equal(again.code, 0, again.err);
  assert.match(
    again.err,
    new RegExp(`${record.evaluations.length} scores from`),
  );
  assert.match(again.err, /\(0 computed/);
  assert.deepEqual(JSON.parse(again.out), map);

  // `deno task eval` on the same windows gives the same perplexity, exactly.
  const ev = await cli(
    "eval",
    "--model",
    run,
    "--bit-map",
    `${out}/bitmap.json`,
    "--eval-tokens",
    "512",
    "--seed",
    "3",
    "--json",
  );
  assert.equal(ev.code, 0, ev.err);
  assert.equal(JSON.parse(ev.out).ppl, record.choice.ppl);
});

Deno.test("cli search: an infeasible limit names the best perplexity and its map", async () => {
  const r = await cli(
    "search",
    "--model",
    run,
    "--max-ppl",
    "1.5",
    "--eval-tokens",
    "256",
    "--out",
    `${work}/infeasible`,
  );
  assertOneLineError(
    r,
    /^error: no map exists within ppl ≤ 1\.500; the lowest perplexity reached is [0-9.]+ \(.*\) with \{"embedding"/,
  );
});

Deno.test("cli search: bad flags and run directories are one error line", async () => {
  const m = ["--model", run, "--max-ppl-ratio", "1.1"];
  const cases: Array<[string[], RegExp]> = [
    [["--model", run], /^error: give a perplexity limit/],
    [[...m, "--pin", "9"], /^error: --pin: 9: block 9 is out of range/],
    [
      [...m, "--pin", "0.attn.x"],
      /^error: --pin: "0\.attn\.x": unknown linear/,
    ],
    [[...m, "--modes", "int4"], /^error: --modes: unknown mode "int4"/],
    [[...m, "--budget", "0"], /^error: --budget: expected an integer ≥ 1/],
    [
      [...m, "--eval-tokens", "0"],
      /^error: --eval-tokens: expected an integer ≥ 1/,
    ],
    [
      ["--model", run, "--max-ppl", "-2"],
      /^error: --max-ppl: expected a positive number/,
    ],
    [["--model", `${work}/nope`, "--max-ppl", "9"], /nope/],
    [["--model", work, "--max-ppl", "9"], /^error: .*not a run directory/],
  ];
  for (const [args, pattern] of cases) {
    assertOneLineError(await cli("search", ...args), pattern);
  }
});

globalThis.addEventListener("unload", () => {
  Deno.removeSync(work, { recursive: true });
});
