import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect } from "effect";
import { loadTrainedRun } from "../../src/train/trained_model.ts";
import { weightsFromTrainedRun } from "../../src/infer/from_latents.ts";
import { readPacked } from "../../src/infer/formats/packed.ts";
import {
  decodeGgufModel,
  encodeGgufModel,
} from "../../src/infer/formats/gguf.ts";
import { decodePacked, encodePacked } from "../../src/infer/formats/packed.ts";
import { readHfDirectory } from "../../src/infer/formats/hf.ts";
import {
  assertSameTokenizer,
  assertSameWeights,
  greedyTokens,
  tinyWeights,
} from "./formats_gen.ts";
import { tinyModel } from "./model_gen.ts";
import { PRESETS } from "../../src/common/presets.ts";

const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;

const cli = async (...args: string[]) => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-q", "-A", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
};

const dir = await Deno.makeTempDir();
const run = `${dir}/run`;

Deno.test({
  name:
    "export CLI: packed, base-3 packed and hf of a trained tiny run read back exactly; GGUF refuses tiny in one line",
  sanitizeResources: false,
  fn: async () => {
    const trained = await cli(
      "train",
      "--preset",
      "tiny",
      "--steps",
      "2",
      "--out",
      run,
    );
    assert.equal(trained.code, 0, trained.stderr);
    const runData = await Effect.runPromise(loadTrainedRun(run));
    const weights = weightsFromTrainedRun(runData);
    for (const extra of [[], ["--base3"]]) {
      const r = await cli(
        "export",
        "--model",
        run,
        "--format",
        "packed",
        "--out",
        `${dir}/m.packed`,
        ...extra,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stdout,
        /wrote .*m\.packed \(packed\): \d+ bytes .* f16 model of the same shape: \d+ bytes .* ratio 0\.\d+/,
      );
      assertSameWeights(
        await Effect.runPromise(readPacked(`${dir}/m.packed`)),
        weights,
      );
    }
    const hf = await cli(
      "export",
      "--model",
      run,
      "--format",
      "hf",
      "--out",
      `${dir}/hf`,
    );
    assert.equal(hf.code, 0, hf.stderr);
    const back = await Effect.runPromise(readHfDirectory(`${dir}/hf`));
    assert.deepEqual(back.params, runData.params);
    assert.deepEqual(back.config, runData.config);
    assertSameTokenizer(back.tokenizer!, runData.tokenizer);
    const gguf = await cli(
      "export",
      "--model",
      run,
      "--format",
      "gguf",
      "--out",
      `${dir}/m.gguf`,
    );
    assert.equal(gguf.code, 1, gguf.stdout + gguf.stderr);
    assert.equal(gguf.stdout, "");
    assert.match(
      gguf.stderr,
      /^error: cannot export to GGUF: .*hidden_size = 64 is not a multiple of 256/,
    );
    assert.equal(gguf.stderr.trim().split("\n").length, 1);
  },
});

Deno.test({
  name: "train --init DIR starts a run from an hf export's latent weights",
  sanitizeResources: false,
  fn: async () => {
    const out = `${dir}/from-hf`;
    // A learning rate of 1e-12 leaves the imported weights as they are.
    const r = await cli(
      "train",
      "--init",
      `${dir}/hf`,
      "--steps",
      "1",
      "--lr",
      "1e-12",
      "--warmup",
      "0",
      "--out",
      out,
    );
    assert.equal(r.code, 0, r.stderr);
    const source = await Effect.runPromise(readHfDirectory(`${dir}/hf`));
    const started = await Effect.runPromise(loadTrainedRun(out));
    assert.deepEqual(started.config, source.config);
    for (const [name, v] of source.params) {
      const w = started.params.get(name)!;
      assert.ok(w.every((x, i) => Math.abs(x - v[i]) < 1e-9), name);
    }
    const both = await cli(
      "train",
      "--init",
      `${dir}/hf`,
      "--resume",
      "--out",
      out,
    );
    assert.equal(both.code, 1);
    assert.match(
      both.stderr,
      /^error: --init starts a new run .*: drop --resume/m,
    );
  },
});

Deno.test("export CLI: bad flags and files give one error line naming them, exit 1", async () => {
  const cases: Array<[string[], RegExp]> = [
    [
      ["--model", run, "--format", "onnx", "--out", `${dir}/x`],
      /--format: unknown format "onnx"/,
    ],
    [
      ["--model", `${dir}/nope`, "--format", "packed", "--out", `${dir}/x`],
      /nope: no such model/,
    ],
    [
      ["--model", run, "--format", "gguf", "--base3", "--out", `${dir}/x`],
      /--base3 applies to --format packed only/,
    ],
    [
      ["--model", run, "--format", "packed", "--tq1", "--out", `${dir}/x`],
      /--tq1 applies to --format gguf only/,
    ],
    [[
      "--model",
      run,
      "--format",
      "packed",
      "--bit-map",
      `${dir}/none.json`,
      "--out",
      `${dir}/x`,
    ], /none\.json: file not found/],
    [
      ["--model", `${dir}/m.packed`, "--format", "hf", "--out", `${dir}/x`],
      /--model: the hf export .* needs a run directory/,
    ],
    [
      ["--model", run, "--format", "packed", "--out", `${dir}/no/such/dir/x`],
      /no\/such\/dir\/x/,
    ],
  ];
  for (const [args, pattern] of cases) {
    const r = await cli("export", ...args);
    assert.equal(r.code, 1, args.join(" "));
    assert.match(r.stderr, pattern);
    assert.match(r.stderr, /^error: /);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});

Deno.test("greedy tokens are identical from the weights, the packed export and the GGUF read back", async () => {
  // A bitnet-shaped model GGUF can hold (rows of 256), random weights.
  const m = fc.sample(tinyModel, { numRuns: 1, seed: 1 })[0];
  const w = tinyWeights({
    ...m,
    config: {
      ...PRESETS["ref-4m"],
      vocab_size: 300,
      num_layers: 2,
      intermediate_size: 256,
      max_seq_len: 48,
    },
    bitMap: { embedding: "f16", layer_modes: ["ternary", "ternary"] },
    std: 0.05,
  });
  const prompt = [5, 17, 42, 99, 7];
  const want = await greedyTokens(w, prompt, 32);
  const packed = await Effect.runPromise(
    decodePacked(encodePacked(w, { base3: true }), "m.packed"),
  );
  const gguf = await Effect.runPromise(
    decodeGgufModel(encodeGgufModel(w), "m.gguf"),
  );
  assert.deepEqual(await greedyTokens(packed, prompt, 32), want);
  assert.deepEqual(await greedyTokens(gguf, prompt, 32), want);
});

globalThis.addEventListener(
  "unload",
  () => Deno.removeSync(dir, { recursive: true }),
);
