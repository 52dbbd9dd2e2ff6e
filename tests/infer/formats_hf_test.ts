import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect, Exit, Schema } from "effect";
import { OneBitLlmConfig } from "../../src/common/config.ts";
import type { LayerBitMap } from "../../src/common/layer_bit_map.ts";
import { readSafetensors } from "../../src/common/safetensors.ts";
import { modelTensors } from "../../src/core/tensors.ts";
import {
  type HfExportModel,
  hfTensorName,
  readHfDirectory,
  readHfForTraining,
  writeHfDirectory,
} from "../../src/infer/formats/hf.ts";
import { weightsFromTrainedRun } from "../../src/infer/from_latents.ts";
import { evaluateWeights } from "../../src/infer/evaluate.ts";
import { assertSameTokenizer, tokenizerOfSize } from "./formats_gen.ts";
import { latentParams, randomIds } from "./model_gen.ts";

/** Random transformers-BitNet-shaped models (any sizes), all-ternary linears. */
const hfModel: fc.Arbitrary<HfExportModel> = fc.record({
  heads: fc.constantFrom(1, 2, 4),
  kvDiv: fc.constantFrom(1, 2),
  hd: fc.constantFrom(2, 4, 8),
  ffn: fc.integer({ min: 3, max: 40 }),
  layers: fc.integer({ min: 1, max: 3 }),
  vocab: fc.integer({ min: 256, max: 280 }),
  tie: fc.boolean(),
  seed: fc.integer({ min: 0, max: 1e6 }),
}).map((r) => {
  const config = Schema.decodeSync(OneBitLlmConfig)({
    vocab_size: r.vocab,
    hidden_size: r.heads * r.hd,
    num_heads: r.heads,
    num_kv_heads: r.heads % r.kvDiv === 0 ? r.heads / r.kvDiv : r.heads,
    num_layers: r.layers,
    intermediate_size: r.ffn,
    max_seq_len: 16,
    tie_embeddings: r.tie,
  });
  const bitMap: LayerBitMap = {
    embedding: "f16",
    layer_modes: Array.from({ length: r.layers }, () => "ternary" as const),
  };
  return {
    config,
    bitMap,
    tokenizer: tokenizerOfSize(r.vocab),
    params: latentParams({ config, bitMap, seed: r.seed, std: 0.1 }),
    lambda: 1,
  };
});

const withDir = async (f: (dir: string) => Promise<void>): Promise<void> => {
  const dir = await Deno.makeTempDir();
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
};

Deno.test("hf: readHfDirectory(writeHfDirectory(m)) gives the same config, bit map, tokenizer and latent weights", async () => {
  for (const m of fc.sample(hfModel, { numRuns: 8, seed: 42 })) {
    await withDir(async (dir) => {
      await Effect.runPromise(writeHfDirectory(dir, m));
      const back = await Effect.runPromise(readHfDirectory(dir));
      assert.deepEqual(back.config, m.config);
      assert.deepEqual(back.bitMap, m.bitMap);
      assertSameTokenizer(back.tokenizer!, m.tokenizer);
      assert.deepEqual(back.params, m.params);
    });
  }
});

Deno.test("hf: config.json and model.safetensors use transformers' BitNet names", async () => {
  const m = fc.sample(hfModel, { numRuns: 1, seed: 3 })[0];
  await withDir(async (dir) => {
    await Effect.runPromise(writeHfDirectory(dir, m));
    const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    assert.equal(config.model_type, "bitnet");
    assert.deepEqual(config.architectures, ["BitNetForCausalLM"]);
    assert.equal(config.hidden_act, "silu");
    assert.deepEqual(config.quantization_config, {
      quant_method: "bitnet",
      linear_class: "autobitlinear",
      quantization_mode: "online",
    });
    assert.equal(config.tie_word_embeddings, m.config.tie_embeddings);
    const st = await Effect.runPromise(
      readSafetensors(`${dir}/model.safetensors`),
    );
    const names = [...st.tensors.keys()].sort();
    assert.deepEqual(
      names,
      modelTensors(m.config).map((s) => hfTensorName(s.name)).sort(),
    );
    assert.ok(names.includes("model.layers.0.self_attn.attn_sub_norm.weight"));
    assert.ok(names.includes("model.layers.0.mlp.ffn_sub_norm.weight"));
    assert.equal(names.includes("lm_head.weight"), !m.config.tie_embeddings);
    for (
      const f of [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
      ]
    ) {
      JSON.parse(await Deno.readTextFile(`${dir}/${f}`));
    }
  });
});

Deno.test("hf: models transformers' BitNet cannot hold are refused naming the field", async () => {
  const m = fc.sample(hfModel, { numRuns: 1, seed: 5 })[0];
  const expectRefusal = async (bad: HfExportModel, pattern: RegExp) => {
    await withDir(async (dir) => {
      const exit = await Effect.runPromise(
        Effect.exit(writeHfDirectory(dir, bad)),
      );
      assert.ok(Exit.isFailure(exit));
      assert.match(String(exit.cause), pattern);
      assert.match(String(exit.cause), /ExportError/);
    });
  };
  const patch = (p: object) =>
    Schema.decodeSync(OneBitLlmConfig)({
      ...Schema.encodeSync(OneBitLlmConfig)(m.config),
      ...p,
    });
  await expectRefusal({
    ...m,
    config: patch({ use_relu2: true, use_swiglu: false }),
  }, /use_relu2 = true/);
  await expectRefusal(
    { ...m, config: patch({ use_dynamic_threshold: true }) },
    /use_dynamic_threshold/,
  );
  await expectRefusal({ ...m, lambda: 0 }, /λ = 0/);
  await expectRefusal(
    { ...m, bitMap: { ...m.bitMap, overrides: { "0.attn.v": "eightbit" } } },
    /0\.attn\.v is eightbit/,
  );
});

Deno.test("hf reader: bad directories fail with one DataError naming the file", async () => {
  const m = fc.sample(hfModel, { numRuns: 1, seed: 8 })[0];
  await withDir(async (dir) => {
    const missing = await Effect.runPromise(
      Effect.exit(readHfDirectory(`${dir}/nope`)),
    );
    assert.match(String(missing), /config\.json: file not found/);
    await Effect.runPromise(writeHfDirectory(dir, m));
    const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    const expectFailure = async (patch: object, pattern: RegExp) => {
      await Deno.writeTextFile(
        `${dir}/config.json`,
        JSON.stringify({ ...config, ...patch }),
      );
      const exit = await Effect.runPromise(Effect.exit(readHfDirectory(dir)));
      assert.ok(Exit.isFailure(exit));
      assert.match(String(exit.cause), pattern);
      assert.match(String(exit.cause), /config\.json|model\.safetensors/);
    };
    await expectFailure(
      { model_type: "llama" },
      /not a transformers BitNet config/,
    );
    await expectFailure(
      { hidden_act: "relu2" },
      /hidden_act "relu2" is not supported/,
    );
    await expectFailure({
      quantization_config: {
        quant_method: "bitnet",
        quantization_mode: "offline",
      },
    }, /online/);
    await expectFailure({
      hidden_size: config.hidden_size * 2,
      head_dim: undefined,
      ternary_core: undefined,
    }, /has shape/);
    await expectFailure({
      ternary_core: {
        ...config.ternary_core,
        config: { ...config.ternary_core.config, num_layers: 9 },
      },
    }, /disagrees/);
    await expectFailure(
      { num_hidden_layers: 1000, ternary_core: undefined },
      /tensors, but config\.json describes a model of/,
    );
    // No ternary_core: the transformers keys and an all-ternary bit map.
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ ...config, ternary_core: undefined }),
    );
    await Deno.remove(`${dir}/tokenizer.json`);
    const back = await Effect.runPromise(readHfDirectory(dir));
    assert.equal(back.tokenizer, undefined);
    assert.deepEqual(back.bitMap, m.bitMap);
    assert.deepEqual(back.params, m.params);
  });
});

// PyTorch interop, when the reference's Python and torch are installed
// (apt-get install python3-torch python3-numpy libopenblas0-pthread).
const PYTHON = "/usr/bin/python3";
const REF =
  new URL("../../../shared/peers/bitnet_ref.py", import.meta.url).pathname;
const hasTorch = await new Deno.Command(PYTHON, {
  args: ["-c", "import torch, numpy"],
  stdout: "null",
  stderr: "null",
})
  .output().then((o) => o.success, () => false) &&
  await Deno.stat(REF).then(() => true, () => false);

const runRef = async (args: string[]): Promise<string> => {
  const out = await new Deno.Command(PYTHON, {
    args: [REF, ...args],
    env: { OPENBLAS_NUM_THREADS: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) +
    new TextDecoder().decode(out.stderr);
  assert.ok(out.success, text);
  return text;
};

Deno.test({
  name:
    "hf ↔ PyTorch: bitnet_ref.py --load scores our export as we do (1e-3), and its --save imports",
  ignore: !hasTorch,
  fn: async () => {
    // The reference has no grouped KV heads.
    const m = fc.sample(
      hfModel.filter((x) =>
        x.config.num_kv_heads === x.config.num_heads && x.config.num_heads > 1
      ),
      { numRuns: 1, seed: 21 },
    )[0];
    const seq = m.config.max_seq_len;
    const tokens = randomIds(seq * 12 + 1, m.config.vocab_size, 7);
    await withDir(async (dir) => {
      const exportDir = `${dir}/export`;
      await Effect.runPromise(writeHfDirectory(exportDir, m));
      const tokenFile = `${dir}/val.u16`;
      await Deno.writeFile(
        tokenFile,
        new Uint8Array(Uint16Array.from(tokens).buffer),
      );
      const text = await runRef([
        "--load",
        exportDir,
        tokenFile,
        "--skip",
        "0",
        "--seq",
        String(seq),
        "--save",
        `${dir}/saved`,
      ]);
      const theirs = Number(/RESULT .* ppl=([0-9.]+)/.exec(text)![1]);
      const ours = await evaluateWeights(
        weightsFromTrainedRun(m),
        Int32Array.from(tokens),
        { seqLen: seq, batch: 4 },
      );
      assert.ok(
        Math.abs(ours.ppl - theirs) / theirs < 1e-3,
        `ours ${ours.ppl} vs PyTorch ${theirs}`,
      );
      // The reference's own writer: same layout, no tokenizer, no ternary_core keys.
      const saved = await Effect.runPromise(readHfDirectory(`${dir}/saved`));
      assert.equal(saved.tokenizer, undefined);
      for (const [name, v] of m.params) {
        const w = saved.params.get(name)!;
        assert.ok(w.every((x, i) => x === v[i]), name);
      }
      assert.equal(saved.config.hidden_size, m.config.hidden_size);
      assert.equal(saved.config.tie_embeddings, m.config.tie_embeddings);
    });
  },
});

Deno.test("hf: readHfForTraining checks the directory against the data's tokenizer", async () => {
  const m = fc.sample(hfModel, { numRuns: 1, seed: 13 })[0];
  await withDir(async (dir) => {
    await Effect.runPromise(writeHfDirectory(dir, m));
    const ok = await Effect.runPromise(readHfForTraining(dir, m.tokenizer));
    assert.deepEqual(ok.params, m.params);
    const other = tokenizerOfSize(m.config.vocab_size + 1);
    const exit = await Effect.runPromise(
      Effect.exit(readHfForTraining(dir, other)),
    );
    assert.match(
      String(exit),
      /tokenizer\.json differs from the tokenizer of the training data/,
    );
    await Deno.remove(`${dir}/tokenizer.json`);
    const noTok = await Effect.runPromise(
      Effect.exit(readHfForTraining(dir, other)),
    );
    assert.match(
      String(noTok),
      /vocab_size \d+ is not the training data's tokenizer size/,
    );
    const sized = await Effect.runPromise(readHfForTraining(dir, m.tokenizer));
    assert.equal(sized.tokenizer, m.tokenizer);
  });
});
