/**
 * `--threads N` of train, eval and infer: the numbers do not depend on the
 * thread count (bit for bit), and bad values fail with one line naming the
 * flag.
 */
import { strict as assert } from "node:assert";
import { assertOneLineError, cli } from "./cli_run.ts";

/** Every number of a run's metrics that does not measure time. */
const numbers = async (run: string): Promise<unknown[]> =>
  (await Deno.readTextFile(`${run}/metrics.jsonl`)).trim().split("\n")
    .map((l) => JSON.parse(l))
    .map(({ tokensPerSecond: _t, elapsedSeconds: _e, ...rest }) => rest);

const work = await Deno.makeTempDir();

const train = (threads: string, out: string) =>
  cli(
    "train",
    "--preset",
    "tiny",
    "--steps",
    "2",
    "--backend",
    "cpu",
    "--threads",
    threads,
    "--out",
    out,
  );

Deno.test("cli --threads: 1 and 2 threads give bit-identical runs, evaluations and generations", async () => {
  const [one, two] = [`${work}/t1`, `${work}/t2`];
  const r1 = await train("1", one);
  assert.equal(r1.code, 0, r1.err);
  const r2 = await train("2", two);
  assert.equal(r2.code, 0, r2.err);
  const n1 = await numbers(one);
  assert.equal(
    n1.filter((m) => (m as { kind: string }).kind === "train").length,
    2,
  );
  // Losses, gradient norms and the final validation, bit for bit.
  assert.deepEqual(await numbers(two), n1);

  const evalWith = (threads: string) =>
    cli(
      "eval",
      "--model",
      one,
      "--eval-tokens",
      "1024",
      "--threads",
      threads,
      "--json",
    );
  const e1 = await evalWith("1");
  assert.equal(e1.code, 0, e1.err);
  const e2 = await evalWith("2");
  assert.equal(e2.code, 0, e2.err);
  assert.deepEqual(JSON.parse(e2.out), JSON.parse(e1.out));

  const inferWith = (threads: string) =>
    cli(
      "infer",
      "--model",
      one,
      "--prompt",
      "The",
      "--max-tokens",
      "24",
      "--temperature",
      "0",
      "--ignore-eos",
      "--json",
      "--backend",
      "cpu",
      "--threads",
      threads,
    );
  const i1 = await inferWith("1");
  assert.equal(i1.code, 0, i1.err);
  const i2 = await inferWith("2");
  assert.equal(i2.code, 0, i2.err);
  const ids = (r: { out: string }) => {
    const j = JSON.parse(r.out);
    return { text: j.text, tokens: j.tokens };
  };
  assert.deepEqual(ids(i2), ids(i1));
});

Deno.test("cli --threads: bad values and --backend webgpu fail with one line naming the flag", async () => {
  for (const bad of ["0", "97"]) {
    assertOneLineError(
      await train(bad, `${work}/bad`),
      /^error: --threads: expected an integer from 1 to 96, got \d+$/,
    );
  }
  assertOneLineError(
    await cli(
      "train",
      "--preset",
      "tiny",
      "--steps",
      "1",
      "--backend",
      "webgpu",
      "--threads",
      "2",
      "--out",
      `${work}/gpu`,
    ),
    /^error: --threads: .*--backend webgpu/,
  );
  assertOneLineError(
    await cli(
      "infer",
      "--model",
      `${work}/none`,
      "--prompt",
      "a",
      "--backend",
      "webgpu",
      "--threads",
      "1",
    ),
    /^error: --threads: .*--backend webgpu/,
  );
  assertOneLineError(
    await cli(
      "search",
      "--model",
      `${work}/none`,
      "--max-ppl-ratio",
      "1.1",
      "--threads",
      "0",
    ),
    /^error: --threads: expected an integer from 1 to 96, got 0$/,
  );
});
