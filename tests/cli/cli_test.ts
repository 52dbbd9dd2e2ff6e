import { strict as assert } from "node:assert";

const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;

async function cli(
  ...args: string[]
): Promise<{ code: number; out: string; err: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    // -q: no "Download …" lines from a first run on a fresh machine.
    args: ["run", "-q", "-A", MAIN, ...args],
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

async function withFile(
  json: unknown,
  f: (path: string) => Promise<void>,
): Promise<void> {
  const path = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(
      path,
      typeof json === "string" ? json : JSON.stringify(json),
    );
    await f(path);
  } finally {
    await Deno.remove(path);
  }
}

const base = {
  vocab_size: 64,
  hidden_size: 32,
  num_heads: 4,
  num_layers: 2,
  intermediate_size: 48,
  max_seq_len: 16,
};

/** One `error: <file>: ...` line naming `field`, exit status 1, no stack trace. */
function assertUserError(
  r: { code: number; err: string },
  file: string,
  field: string,
): void {
  assert.equal(r.code, 1, r.err);
  const lines = r.err.trim().split("\n");
  assert.equal(lines.length, 1, r.err);
  assert.ok(lines[0].startsWith(`error: ${file}: `), r.err);
  assert.ok(lines[0].includes(field), `expected ${field} in: ${r.err}`);
  assert.ok(!/\bat .*\.ts:\d+/.test(r.err), `stack trace in: ${r.err}`);
}

Deno.test("cli stats: a valid config prints every tensor and the totals", async () => {
  await withFile(base, async (path) => {
    const r = await cli("stats", "--config", path, "--json");
    assert.equal(r.code, 0, r.err);
    const stats = JSON.parse(r.out);
    assert.ok(stats.totalBytes > 0);
    assert.ok(
      stats.tensors.some((t: { name: string }) =>
        t.name === "blk.1.ffn_down.weight"
      ),
    );
  });
});

Deno.test("cli stats: malformed configs give one readable line naming the field", async (t) => {
  const cases: Array<[string, unknown, string]> = [
    ["wrong type", { ...base, vocab_size: "many" }, "vocab_size"],
    ["missing field", { ...base, hidden_size: undefined }, "hidden_size"],
    ["heads not dividing hidden", { ...base, hidden_size: 30 }, "num_heads"],
    [
      "bit map of the wrong length",
      {
        ...base,
        layer_bit_map: { embedding: "f16", layer_modes: ["ternary"] },
      },
      "layer_modes",
    ],
    ["not JSON", "{ vocab_size: 1", "JSON"],
  ];
  for (const [name, json, field] of cases) {
    await t.step(name, async () => {
      await withFile(
        json,
        async (path) =>
          assertUserError(await cli("stats", "--config", path), path, field),
      );
    });
  }
});

Deno.test("cli stats: a bit map file of the wrong length is rejected", async () => {
  await withFile({
    embedding: "f16",
    layer_modes: ["ternary", "ternary", "f16"],
  }, async (path) => {
    assertUserError(
      await cli("stats", "--preset", "tiny", "--bit-map", path),
      path,
      "layer_modes",
    );
  });
});

Deno.test("cli: unknown preset and unbuilt tasks fail with one line", async () => {
  const r = await cli("stats", "--preset", "huge");
  assert.equal(r.code, 1);
  assert.match(
    r.err.trim(),
    /^error: --preset: unknown preset "huge"; known presets: tiny, ref-4m, bitnet-100m$/,
  );
  const t = await cli("search");
  assert.equal(t.code, 1);
  assert.match(t.err.trim(), /^error: give a perplexity limit: --max-ppl/);
});

/** A small model and text in a temporary directory, for training runs. */
async function smallRunFiles(): Promise<string> {
  const dir = await Deno.makeTempDir();
  const words = [
    "the cat",
    "a dog",
    "sat on",
    "looked at",
    "the mat",
    "a red house",
    "the river",
  ];
  let s = 7;
  const text = Array.from({ length: 400 }, () => {
    s = (s * 1103515245 + 12345) >>> 0;
    return `${words[s % 7]} ${words[(s >>> 8) % 7]} ${words[(s >>> 16) % 7]}.`;
  }).join("\n\n");
  await Deno.writeTextFile(`${dir}/text.txt`, text);
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({ ...base, vocab_size: 280 }),
  );
  return dir;
}

/** `train` on {@link smallRunFiles} for `steps` steps of batch 4 into `<dir>/run`. */
function smallTrainArgs(dir: string, steps: number): string[] {
  return [
    "train",
    "--config",
    `${dir}/config.json`,
    "--data",
    `${dir}/text.txt`,
    "--steps",
    String(steps),
    "--batch",
    "4",
    "--out",
    `${dir}/run`,
  ];
}

Deno.test("cli train: Ctrl-C saves a checkpoint between steps and exits", async () => {
  const dir = await smallRunFiles();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-q",
      "-A",
      MAIN,
      ...smallTrainArgs(dir, 100000),
      "--eval-every",
      "0",
    ],
    cwd: dir,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // Wait for training to be under way, then interrupt.
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let err = "";
  while (!/step \d+\//.test(err)) {
    const { value, done } = await reader.read();
    if (done) break;
    err += value;
  }
  assert.match(err, /step \d+\//, `training did not start: ${err}`);
  child.kill("SIGINT");
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    err += value;
  }
  await child.status;
  await child.stdout.cancel();
  const m = /interrupted at step (\d+); checkpoint in/.exec(err);
  assert.ok(m, err);
  const latest = (await Deno.readTextFile(`${dir}/run/latest`)).trim();
  assert.ok(latest.startsWith(`ckpt-${m![1].padStart(8, "0")}-`), latest);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("cli train: a diverging run ends with exactly one error line", async () => {
  const dir = await smallRunFiles();
  const r = await cli(
    ...smallTrainArgs(dir, 30),
    "--lr",
    "1e30",
    "--backend",
    "cpu",
  );
  assert.equal(r.code, 1, r.err);
  const errors = r.err.split("\n").filter((l) => l.startsWith("error:"));
  assert.equal(errors.length, 1, r.err);
  assert.match(
    errors[0],
    /^error: (loss is NaN|non-finite values) at step \d+.*The last checkpoint is kept\.$/,
  );
  assert.ok(!/\bat .*\.ts:\d+/.test(r.err), `stack trace in: ${r.err}`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("cli eval: the run's perplexity, and under another bit map", async () => {
  const dir = await smallRunFiles();
  const train = await cli(...smallTrainArgs(dir, 3), "--backend", "cpu");
  assert.equal(train.code, 0, train.err);
  const evaluate = (...extra: string[]) =>
    cli(
      "eval",
      "--model",
      `${dir}/run`,
      "--text",
      `${dir}/text.txt`,
      "--json",
      "--backend",
      "cpu",
      ...extra,
    );
  const own = await evaluate();
  assert.equal(own.code, 0, own.err);
  const a = JSON.parse(own.out);
  assert.ok(a.tokens > 0 && Number.isFinite(a.loss), own.out);
  assert.ok(Math.abs(a.ppl - Math.exp(a.loss)) < 1e-9 * a.ppl);
  await Deno.writeTextFile(
    `${dir}/f16.json`,
    JSON.stringify({ embedding: "f16", layer_modes: ["f16", "f16"] }),
  );
  const f16 = await evaluate("--bit-map", `${dir}/f16.json`);
  assert.equal(f16.code, 0, f16.err);
  const b = JSON.parse(f16.out);
  assert.equal(b.tokens, a.tokens);
  assert.notEqual(b.loss, a.loss);
  await Deno.writeTextFile(
    `${dir}/short.json`,
    JSON.stringify({ embedding: "f16", layer_modes: ["f16"] }),
  );
  assertUserError(
    await evaluate("--bit-map", `${dir}/short.json`),
    `${dir}/short.json`,
    "layer_modes",
  );
  assertUserError(
    await cli(
      "eval",
      "--model",
      dir,
      "--text",
      `${dir}/text.txt`,
      "--backend",
      "cpu",
    ),
    dir,
    "not a run directory",
  );
  await Deno.remove(dir, { recursive: true });
});
