// loadTrainedRun / loadTrainedModel / runValidationTokens on a short real run:
// what they return, that the model's tensors go with the scope, and that every
// bad directory, state field, tensor or bit map fails with an error naming the
// file (and the field or tensor).
import { strict as assert } from "node:assert";
import { Effect, Exit } from "effect";
import {
  encodeSafetensors,
  readSafetensors,
} from "../../src/common/safetensors.ts";
import { modelTensors } from "../../src/core/tensors.ts";
import { lambdaAt, quantPhases } from "../../src/core/schedule.ts";
import { CHECKPOINT_FILES } from "../../src/train/checkpoint.ts";
import { defaultSettings } from "../../src/train/settings.ts";
import {
  loadTrainedModel,
  loadTrainedRun,
  runValidationTokens,
} from "../../src/train/trained_model.ts";
import { evaluateModel } from "../../src/train/trainer.ts";
import {
  backend,
  backendLayer,
  config,
  syntheticText,
  train,
} from "./fixtures.ts";

const work = await Deno.makeTempDir();
const dataPath = `${work}/text.txt`;
await Deno.writeTextFile(dataPath, syntheticText());
const cacheDir = `${work}/cache`;
const runDir = `${work}/run`;
const settings = defaultSettings(config, 6, {
  batch: 4,
  seqLen: 16,
  evalEvery: 0,
  lambda: quantPhases({ fpSteps: 2, softSteps: 8 }),
});
await train({
  config,
  settings,
  out: runDir,
  resume: false,
  data: dataPath,
  cacheDir,
  saveEvery: 0,
});
const ckptName = (await Deno.readTextFile(`${runDir}/latest`)).trim();

/** A copy of the run directory whose checkpoint `edit` may damage. */
async function damagedCopy(
  name: string,
  edit: (ckpt: string) => Promise<void>,
): Promise<string> {
  const dir = `${work}/${name}`;
  await Deno.mkdir(`${dir}/${ckptName}`, { recursive: true });
  await Deno.copyFile(`${runDir}/latest`, `${dir}/latest`);
  for (const f of Object.values(CHECKPOINT_FILES)) {
    await Deno.copyFile(
      `${runDir}/${ckptName}/${f}`,
      `${dir}/${ckptName}/${f}`,
    );
  }
  await edit(`${dir}/${ckptName}`);
  return dir;
}

async function editState(
  ckpt: string,
  f: (state: Record<string, unknown>) => void,
): Promise<void> {
  const path = `${ckpt}/${CHECKPOINT_FILES.state}`;
  const state = JSON.parse(await Deno.readTextFile(path));
  f(state);
  await Deno.writeTextFile(path, JSON.stringify(state));
}

async function failure(
  effect: Effect.Effect<unknown, { _tag: string; message: string }>,
): Promise<{ _tag: string; message: string }> {
  const exit = await Effect.runPromiseExit(effect);
  assert.ok(Exit.isFailure(exit), "expected a failure");
  const e = await Effect.runPromise(Effect.flip(effect));
  return e;
}

Deno.test("loadTrainedRun: the run as trained, every tensor in modelTensors order", async () => {
  const run = await Effect.runPromise(loadTrainedRun(runDir));
  assert.equal(run.dir, runDir);
  assert.equal(run.checkpointPath, `${runDir}/${ckptName}`);
  assert.deepEqual(run.config, config);
  assert.deepEqual(run.bitMap, {
    embedding: "f16",
    layer_modes: ["ternary"],
  });
  assert.deepEqual(run.settings, settings);
  assert.equal(run.step, 6);
  assert.equal(run.lambda, lambdaAt(settings.lambda, 5));
  assert.ok(run.lambda > 0 && run.lambda < 1, `λ ${run.lambda}`);
  assert.equal(run.data, dataPath);
  const specs = modelTensors(config);
  assert.deepEqual([...run.params.keys()], specs.map((s) => s.name));
  for (const s of specs) {
    assert.equal(
      run.params.get(s.name)!.length,
      s.shape.reduce((a, b) => a * b, 1),
    );
  }
});

Deno.test("loadTrainedModel: evaluates, and its tensors are released with the scope", async () => {
  const before = backend.liveTensors;
  const ppl = await Effect.runPromise(
    Effect.scoped(Effect.gen(function* () {
      const m = yield* loadTrainedModel(runDir);
      assert.ok(backend.liveTensors > before);
      const tokens = yield* runValidationTokens(m, cacheDir);
      return yield* evaluateModel(m.model, tokens, {
        batch: 4,
        seqLen: 16,
        lambda: m.lambda,
      });
    })).pipe(Effect.provide(backendLayer)),
  );
  assert.ok(Number.isFinite(ppl.ppl) && ppl.ppl > 1, `ppl ${ppl.ppl}`);
  assert.equal(backend.liveTensors, before);
});

Deno.test("loadTrainedRun --bit-map: a map that fits replaces the run's; one that does not names its source", async () => {
  const f16 = { embedding: "f16", layer_modes: ["f16"] } as const;
  const run = await Effect.runPromise(loadTrainedRun(runDir, { bitMap: f16 }));
  assert.deepEqual(run.bitMap, f16);
  assert.deepEqual(run.config.layer_bit_map, f16);
  const e = await failure(loadTrainedRun(runDir, {
    bitMap: { embedding: "f16", layer_modes: ["f16", "f16"] },
    bitMapSource: "map.json",
  }));
  assert.equal(e._tag, "ConfigError");
  assert.match(
    e.message,
    /^map\.json: does not fit the model of .*config\.json: layer_bit_map\.layer_modes has 2 entries but num_layers is 1$/,
  );
});

Deno.test("loadTrainedRun: not a run directory", async () => {
  await Deno.mkdir(`${work}/empty`);
  const e = await failure(loadTrainedRun(`${work}/empty`));
  assert.equal(e._tag, "DataError");
  assert.equal(
    e.message,
    `${work}/empty: not a run directory: no \`latest\` file`,
  );
  const m = await failure(loadTrainedRun(`${work}/missing`));
  assert.match(m.message, /missing: not a run directory: no such directory$/);
});

Deno.test("loadTrainedRun: a tensor of the wrong shape, or missing, names the tensor and the file", async (t) => {
  const q = "blk.0.attn_q.weight";
  const rewrite =
    (change: (name: string, shape: number[]) => number[] | null) =>
    async (ckpt: string) => {
      const file = `${ckpt}/${CHECKPOINT_FILES.model}`;
      const { tensors } = await Effect.runPromise(readSafetensors(file));
      const out: Record<
        string,
        { dtype: "F32"; shape: number[]; data: Float32Array }
      > = {};
      for (const [name, tensor] of tensors) {
        const shape = change(name, [...tensor.shape]);
        if (shape !== null) {
          out[name] = {
            dtype: "F32",
            shape,
            data: tensor.data as Float32Array,
          };
        }
      }
      await Deno.writeFile(file, encodeSafetensors(out));
    };
  await t.step("wrong shape", async () => {
    const dir = await damagedCopy(
      "shape",
      rewrite((n, s) => n === q ? [s[0] / 2, s[1] * 2] : s),
    );
    const e = await failure(loadTrainedRun(dir));
    assert.equal(e._tag, "DataError");
    assert.equal(
      e.message,
      `${dir}/${ckptName}/model.safetensors: tensor ${q} has shape [16,64] but config expects [32,32]`,
    );
  });
  await t.step("missing", async () => {
    const dir = await damagedCopy(
      "gone",
      rewrite((n, s) => n === q ? null : s),
    );
    const e = await failure(loadTrainedRun(dir));
    assert.equal(
      e.message,
      `${dir}/${ckptName}/model.safetensors: missing tensor ${q} (config expects [32,32])`,
    );
  });
});

Deno.test("loadTrainedRun: state.json fields are decoded, not cast", async (t) => {
  const cases: [string, (s: Record<string, unknown>) => void, RegExp][] = [
    [
      "seqLen a string",
      (s) => (s.schedule as Record<string, unknown>).seqLen = "x",
      /at schedule\.seqLen: Expected number, got "x"/,
    ],
    [
      "steps a string",
      (s) => (s.schedule as Record<string, unknown>).steps = "many",
      /at schedule\.steps: Expected number, got "many"/,
    ],
    ["empty schedule", (s) => s.schedule = {}, /at schedule\.steps: missing/],
    ["null schedule", (s) => s.schedule = null, /schedule: Expected object/],
    [
      "null LR schedule",
      (s) => (s.schedule as Record<string, unknown>).lr = null,
      /at schedule\.lr: /,
    ],
    [
      "unknown λ kind",
      (s) =>
        (s.schedule as Record<string, unknown>).lambda = {
          kind: "cubic",
          start: 0,
          steps: 1,
        },
      /at schedule\.lambda: Expected a λ schedule: .*, got \{"kind":"cubic"/,
    ],
    [
      "sampler rng of three words",
      (s) => (s.sampler as Record<string, unknown>).rng = [1, 2, 3],
      /at sampler\.rng/,
    ],
    [
      "data not a string",
      (s) => s.data = 7,
      /at data: Expected string, got 7$/,
    ],
  ];
  for (const [name, edit, pattern] of cases) {
    await t.step(name, async () => {
      const dir = await damagedCopy(
        name.replaceAll(" ", "-"),
        (ckpt) => editState(ckpt, edit),
      );
      const e = await failure(loadTrainedRun(dir));
      assert.equal(e._tag, "DataError");
      const file = `${dir}/${ckptName}/state.json`;
      assert.ok(e.message.startsWith(`${file}: `), e.message);
      assert.match(e.message, pattern);
    });
  }
});

Deno.test("loadTrainedRun: a checkpoint without the data field loads as the built-in corpus", async () => {
  const dir = await damagedCopy(
    "old",
    (ckpt) => editState(ckpt, (s) => delete s.data),
  );
  const run = await Effect.runPromise(loadTrainedRun(dir));
  assert.equal(run.data, undefined);
});

Deno.test("runValidationTokens: a cached dataset from another tokenizer is refused", async () => {
  const run = await Effect.runPromise(loadTrainedRun(runDir));
  // The same file name and digest, but a cache prepared with another vocabulary.
  const other = { ...run, config: { ...run.config, vocab_size: 280 } };
  const e = await failure(
    Effect.scoped(runValidationTokens(other, `${work}/cache2`)),
  );
  assert.equal(e._tag, "DataError");
  assert.match(e.message, /tokenizer\.json differs from the run's tokenizer/);
});
