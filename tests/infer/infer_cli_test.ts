import { strict as assert } from "node:assert";

const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;

async function cli(
  args: string[],
  stdin?: string,
): Promise<{ code: number; out: string; err: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-q", "-A", MAIN, ...args],
    env: { NO_COLOR: "1" },
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    out: dec.decode(out.stdout),
    err: dec.decode(out.stderr),
  };
}

/** One `error: ...` line matching `pattern`, exit status 1, no stack trace. */
function assertOneError(
  r: { code: number; err: string },
  pattern: RegExp,
): void {
  assert.equal(r.code, 1, r.err);
  const lines = r.err.trim().split("\n");
  assert.equal(lines.length, 1, r.err);
  assert.match(lines[0], /^error: /);
  assert.match(lines[0], pattern);
  assert.ok(!/\bat .*\.ts:\d+/.test(r.err), `stack trace in: ${r.err}`);
}

// A tiny run trained for a few steps on generated text.
const dir = await Deno.makeTempDir();
const words = ["the cat", "a dog", "sat on", "looked at", "the mat", "a house"];
let s = 7;
const text = Array.from({ length: 300 }, () => {
  s = (s * 1103515245 + 12345) >>> 0;
  return `${words[s % 6]} ${words[(s >>> 8) % 6]} ${words[(s >>> 16) % 6]}.`;
}).join("\n\n");
await Deno.writeTextFile(`${dir}/text.txt`, text);
await Deno.writeTextFile(
  `${dir}/config.json`,
  JSON.stringify({
    vocab_size: 280,
    hidden_size: 32,
    num_heads: 4,
    num_layers: 2,
    intermediate_size: 48,
    max_seq_len: 16,
  }),
);
const run = `${dir}/run`;
const trained = await new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    MAIN,
    "train",
    "--config",
    `${dir}/config.json`,
    "--data",
    `${dir}/text.txt`,
    "--steps",
    "3",
    "--batch",
    "4",
    "--out",
    run,
  ],
  cwd: dir,
  env: { NO_COLOR: "1" },
  stdout: "piped",
  stderr: "piped",
}).output();
const trainErr = new TextDecoder().decode(trained.stderr);

Deno.test({
  name:
    "cli infer: streams a continuation with a summary line; --json prints one object",
  sanitizeResources: false,
  fn: async () => {
    assert.equal(trained.code, 0, trainErr);
    const r = await cli([
      "infer",
      "--model",
      run,
      "--prompt",
      "the cat",
      "--max-tokens",
      "6",
      "--temperature",
      "0",
    ]);
    assert.equal(r.code, 0, r.err);
    assert.ok(r.out.startsWith("the cat"), r.out);
    assert.match(
      r.err,
      /prompt: \d+ tokens, [\d.]+ tokens\/s \| generated: \d+ tokens, [\d.]+ tokens\/s/,
    );
    const j = await cli([
      "infer",
      "--model",
      run,
      "--prompt",
      "the cat",
      "--max-tokens",
      "6",
      "--seed",
      "5",
      "--json",
    ]);
    assert.equal(j.code, 0, j.err);
    const o = JSON.parse(j.out);
    assert.equal(typeof o.text, "string");
    assert.ok(Array.isArray(o.tokens) && o.tokens.length <= 6);
    assert.equal(o.seed, 5);
    assert.ok(o.timings.prompt_tokens_per_second > 0);
    // The same seed gives the same output.
    const again = await cli([
      "infer",
      "--model",
      run,
      "--prompt",
      "the cat",
      "--max-tokens",
      "6",
      "--seed",
      "5",
      "--json",
    ]);
    assert.deepEqual(JSON.parse(again.out).tokens, o.tokens);
  },
});

Deno.test({
  name: "cli infer --chat: one reply per stdin line until end of input",
  sanitizeResources: false,
  fn: async () => {
    const r = await cli(
      ["infer", "--model", run, "--chat", "--max-tokens", "3", "--seed", "1"],
      "the dog\na cat\n",
    );
    assert.equal(r.code, 0, r.err);
    assert.equal(r.err.match(/prompt: \d+ tokens/g)?.length, 2, r.err);
  },
});

Deno.test({
  name: "cli infer: bad input gives one error line naming the flag or file",
  sanitizeResources: false,
  fn: async () => {
    assertOneError(
      await cli(["infer", "--model", `${dir}/nope`, "--prompt", "x"]),
      /nope: no such model/,
    );
    assertOneError(
      await cli(["infer", "--model", `${dir}/text.txt`, "--prompt", "x"]),
      /text\.txt: not a model/,
    );
    assertOneError(
      await cli(["infer", "--model", run, "--prompt", "the cat ".repeat(20)]),
      /--prompt is \d+ tokens, longer than the context of 16 tokens/,
    );
    for (
      const [flag, value] of [
        ["--temperature", "-1"],
        ["--top-p", "0"],
        ["--min-p", "1.5"],
        ["--top-k", "-2"],
        ["--repetition-penalty", "0.5"],
        ["--max-tokens", "-1"],
      ]
    ) {
      assertOneError(
        await cli(["infer", "--model", run, "--prompt", "x", flag, value]),
        new RegExp(flag),
      );
    }
    assertOneError(await cli(["infer", "--model", run]), /--prompt/);
  },
});

Deno.test({
  name: "cli infer: cleanup",
  fn: async () => {
    await Deno.remove(dir, { recursive: true });
  },
});
