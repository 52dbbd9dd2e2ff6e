import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Cause, Effect, Exit } from "effect";
import {
  type AdamMoments,
  type Checkpoint,
  CHECKPOINT_FILES,
  type CheckpointData,
  type CheckpointState,
  LATEST_FILE,
  loadCheckpoint,
  type LoadCheckpointOptions,
  saveCheckpoint,
} from "../../src/train/checkpoint.ts";
import { PRESETS } from "../../src/common/presets.ts";
import { ConfigError } from "../../src/common/config_file.ts";
import { DataError } from "../../src/common/text_sources.ts";
import {
  BYTE_TO_CHAR,
  Tokenizer,
  tokenizerToJson,
} from "../../src/common/tokenizer.ts";
import {
  encodeSafetensors,
  readSafetensors,
  type SafetensorsTensor,
} from "../../src/common/safetensors.ts";

const TOKENIZER_JSON = tokenizerToJson(
  new Tokenizer([...BYTE_TO_CHAR], [], []),
);

const SHAPES: [string, number[]][] = [
  ["tok_embeddings.weight", [5, 4]],
  ["blk.0.attn_q.weight", [4, 4]],
  ["blk.0.attn_norm.weight", [4]],
  ["empty", [0, 4]],
  ["scale", []],
];

/** Values that differ per run (seed) and per tensor. */
const filled = (n: number, seed: number): Float32Array =>
  Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 97 + i) * 3);

const makeData = (
  seed: number,
  shapes: [string, number[]][] = SHAPES,
): CheckpointData => {
  const params = new Map<string, Float32Array>();
  const moments = new Map<string, AdamMoments>();
  shapes.forEach(([name, shape], k) => {
    const n = shape.reduce((a, d) => a * d, 1);
    params.set(name, filled(n, seed + k));
    moments.set(name, {
      m: filled(n, seed + k + 100),
      v: filled(n, seed + k + 200).map(Math.abs),
    });
  });
  const state: CheckpointState = {
    format_version: 1,
    step: seed,
    tokens_seen: seed * 4096,
    sampler: { epoch: 1, position: seed, rng: [1, 2, 3, 4], windows: 9 },
    schedule: { kind: "cosine", peakLr: 1.5e-3, warmupSteps: 10 },
    rng: [seed, 7, 8, 9],
    best_val_loss: 3.25 + seed,
    ...(seed % 2 === 0 ? { elapsed_seconds: seed * 1.5 } : {}),
  };
  return {
    config: PRESETS.tiny,
    tokenizerJson: TOKENIZER_JSON,
    params,
    shapes: new Map(shapes),
    moments,
    state,
  };
};

const bits = (a: Float32Array): number[] =>
  Array.from(new Uint32Array(Float32Array.from(a).buffer));

const assertSame = (got: Checkpoint, want: CheckpointData) => {
  assert.deepEqual(got.state, want.state);
  assert.deepEqual(got.config, want.config);
  assert.equal(got.tokenizerJson, want.tokenizerJson);
  assert.equal(got.tokenizer.vocabSize, 256);
  assert.deepEqual(
    [...got.params.keys()].sort(),
    [...want.params.keys()].sort(),
  );
  for (const [name, values] of want.params) {
    assert.deepEqual(bits(got.params.get(name)!), bits(values), name);
    assert.deepEqual(got.shapes.get(name), want.shapes.get(name));
    const m = want.moments.get(name)!;
    assert.deepEqual(bits(got.moments.get(name)!.m), bits(m.m), `${name}.m`);
    assert.deepEqual(bits(got.moments.get(name)!.v), bits(m.v), `${name}.v`);
  }
  assert.equal(got.moments.size, want.moments.size);
};

const save = (dir: string, data: CheckpointData) =>
  Effect.runPromise(saveCheckpoint(dir, data));
const load = (dir: string, options?: LoadCheckpointOptions) =>
  Effect.runPromise(loadCheckpoint(dir, options));

/** The error of a load that must fail with a typed error. */
const loadError = async (
  dir: string,
  options?: LoadCheckpointOptions,
): Promise<DataError | ConfigError> => {
  const exit = await Effect.runPromiseExit(loadCheckpoint(dir, options));
  if (Exit.isSuccess(exit)) assert.fail("expected the load to fail");
  const err = Cause.findErrorOption(exit.cause);
  assert.ok(err._tag === "Some", `not a typed failure: ${exit.cause}`);
  return err.value;
};

const withDir = async (body: (dir: string) => Promise<void>) => {
  const dir = await Deno.makeTempDir();
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
};

const entries = async (dir: string): Promise<string[]> => {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
};

const latestPath = async (dir: string): Promise<string> =>
  `${dir}/${(await Deno.readTextFile(`${dir}/${LATEST_FILE}`)).trim()}`;

Deno.test("save then load returns everything, bit for bit", async () => {
  await withDir(async (dir) => {
    const data = makeData(3);
    await save(`${dir}/run`, data);
    const got = await load(`${dir}/run`, {
      expectedConfig: PRESETS.tiny,
      expectedShapes: new Map(SHAPES),
    });
    assertSame(got, data);
    assert.equal(got.path, await latestPath(`${dir}/run`));
    assert.match(got.path, /\/ckpt-00000003-[0-9a-f]{8}$/);
    assert.deepEqual(
      await entries(got.path),
      Object.values(CHECKPOINT_FILES).sort(),
    );
    // The checkpoint subdirectory itself loads too.
    assertSame(await load(got.path), data);
    // Latent weights are F32 under their own names; moments as .m / .v.
    const model = await Effect.runPromise(
      readSafetensors(`${got.path}/${CHECKPOINT_FILES.model}`),
    );
    assert.deepEqual(
      [...model.tensors.keys()].sort(),
      SHAPES.map(([n]) => n).sort(),
    );
    const optimizer = await Effect.runPromise(
      readSafetensors(`${got.path}/${CHECKPOINT_FILES.optimizer}`),
    );
    assert.deepEqual(
      [...optimizer.tensors.keys()].sort(),
      SHAPES.flatMap(([n]) => [`${n}.m`, `${n}.v`]).sort(),
    );
  });
});

Deno.test("a new save replaces the old checkpoint and removes it (property)", async () => {
  await withDir(async (dir) => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.nat(1000), { minLength: 1, maxLength: 3 }),
        async (seeds) => {
          for (const seed of seeds) {
            const data = makeData(seed);
            await save(dir, data);
            assertSame(await load(dir), data);
            const names = await entries(dir);
            assert.equal(names.length, 2, names.join(", "));
            assert.equal(names[1], LATEST_FILE);
          }
        },
      ),
      { numRuns: 8 },
    );
  });
});

Deno.test("a crash at any point of a save leaves a complete checkpoint", async () => {
  const steps = [...Object.values(CHECKPOINT_FILES), LATEST_FILE];
  // state.json is written last, just before the commit.
  assert.equal(steps[steps.length - 2], CHECKPOINT_FILES.state);
  for (let crashAfter = 0; crashAfter < steps.length; crashAfter++) {
    await withDir(async (dir) => {
      const old = makeData(1);
      const next = makeData(2);
      await save(dir, old);
      const seen: string[] = [];
      const exit = await Effect.runPromiseExit(
        saveCheckpoint(dir, next, {
          afterWrite: (file) => {
            seen.push(file);
            if (seen.length === crashAfter + 1) throw new Error("crash");
          },
        }),
      );
      assert.ok(Exit.isFailure(exit), `no crash after ${steps[crashAfter]}`);
      assert.deepEqual(seen, steps.slice(0, crashAfter + 1));
      const committed = steps[crashAfter] === LATEST_FILE;
      assertSame(await load(dir), committed ? next : old);
      // The crashed save left two subdirectories; the next save cleans up.
      assert.equal((await entries(dir)).length, 3);
      const third = makeData(5);
      await save(dir, third);
      assertSame(await load(dir), third);
      assert.equal((await entries(dir)).length, 2);
    });
  }
});

Deno.test("inconsistent save input fails and writes nothing", async () => {
  await withDir(async (dir) => {
    const good = makeData(4);
    await save(dir, good);
    const before = await entries(dir);
    const name = "blk.0.attn_q.weight";
    const cases: [CheckpointData, string][] = [
      [
        {
          ...good,
          params: new Map([...good.params, [name, new Float32Array(3)]]),
        },
        `params: ${name} holds 3 values, its shape [4,4] needs 16`,
      ],
      [
        {
          ...good,
          shapes: new Map([...good.shapes].filter(([n]) => n !== name)),
        },
        `shapes: no shape for parameter ${name}`,
      ],
      [
        { ...good, shapes: new Map([...good.shapes, ["scale", [-1, -1]]]) },
        "shapes: scale has shape [-1,-1], not non-negative integers",
      ],
      [
        { ...good, shapes: new Map([...good.shapes, ["ghost", [1]]]) },
        "shapes: ghost is not a parameter",
      ],
      [
        {
          ...good,
          moments: new Map([...good.moments].filter(([n]) => n !== name)),
        },
        `moments: no AdamW moments for parameter ${name}`,
      ],
      [
        {
          ...good,
          moments: new Map([...good.moments, [name, {
            m: new Float32Array(16),
            v: new Float32Array(2),
          }]]),
        },
        `moments: ${name}.v holds 2 values, the parameter 16`,
      ],
      [
        {
          ...good,
          moments: new Map([...good.moments, ["ghost", {
            m: new Float32Array(1),
            v: new Float32Array(1),
          }]]),
        },
        "moments: ghost is not a parameter",
      ],
      [
        { ...good, state: { ...good.state, sampler: undefined } },
        "state: at sampler: missing required field",
      ],
      [
        { ...good, state: { ...good.state, step: -2 } },
        "state: at step: Expected a value greater than or equal to 0, got -2",
      ],
      [
        { ...good, state: { ...good.state, elapsed_seconds: Infinity } },
        // JSON writes Infinity as null.
        "state: at elapsed_seconds: Expected number, got null",
      ],
    ];
    for (const [data, message] of cases) {
      const e = await Effect.runPromise(Effect.flip(saveCheckpoint(dir, data)));
      assert.ok(e instanceof DataError);
      assert.equal(e.message, `${dir}: cannot save: ${message}`);
      assert.deepEqual(await entries(dir), before);
    }
    assertSame(await load(dir), good);
  });
});

/** Saves `data`, then lets `spoil` damage the files of the saved checkpoint. */
const spoiled = async (
  dir: string,
  spoil: (path: string) => Promise<void>,
  data: CheckpointData = makeData(6),
): Promise<string> => {
  await save(dir, data);
  const path = await latestPath(dir);
  await spoil(path);
  return path;
};

const writeTensors = (
  path: string,
  tensors: Record<string, SafetensorsTensor>,
) => Deno.writeFile(path, encodeSafetensors(tensors));

const f32 = (shape: number[]): SafetensorsTensor => ({
  dtype: "F32",
  shape,
  data: new Float32Array(shape.reduce((a, d) => a * d, 1)),
});

Deno.test("resume without a checkpoint says so", async () => {
  await withDir(async (dir) => {
    let e = await loadError(`${dir}/missing`);
    assert.ok(e instanceof DataError);
    assert.equal(
      e.message,
      `${dir}/missing: no checkpoint to resume (no such directory)`,
    );
    e = await loadError(dir);
    assert.equal(
      e.message,
      `${dir}: no checkpoint to resume (missing latest and state.json)`,
    );
    await Deno.writeTextFile(`${dir}/${LATEST_FILE}`, "../elsewhere\n");
    e = await loadError(dir);
    assert.equal(
      e.message,
      `${dir}/latest: "../elsewhere" does not name a checkpoint subdirectory`,
    );
    await Deno.writeTextFile(`${dir}/${LATEST_FILE}`, "ckpt-00000001-0a\n");
    e = await loadError(dir);
    assert.equal(
      e.message,
      `${dir}/ckpt-00000001-0a/state.json: file not found`,
    );
  });
});

Deno.test("damaged checkpoint files fail with messages naming the file", async () => {
  const q = "blk.0.attn_q.weight";
  const cases: [
    string,
    (path: string) => Promise<void>,
    (path: string) => string,
    LoadCheckpointOptions?,
  ][] = [
    [
      "truncated model",
      async (p) => {
        const f = `${p}/${CHECKPOINT_FILES.model}`;
        const bytes = await Deno.readFile(f);
        await Deno.writeFile(f, bytes.subarray(0, bytes.length - 5));
      },
      (p) =>
        `${p}/model.safetensors: truncated: tensor "tok_embeddings.weight" needs data bytes [84, 164), the file holds 159`,
    ],
    [
      "shape that the config does not expect",
      () => Promise.resolve(),
      (p) =>
        `${p}/model.safetensors: tensor ${q} has shape [4,4] but config expects [16,16]`,
      { expectedShapes: new Map([...SHAPES, [q, [16, 16]]]) },
    ],
    [
      "tensor the config expects is missing",
      () => Promise.resolve(),
      (p) =>
        `${p}/model.safetensors: missing tensor extra (config expects [2])`,
      { expectedShapes: new Map([...SHAPES, ["extra", [2]]]) },
    ],
    [
      "tensor the config does not know",
      () => Promise.resolve(),
      (p) => `${p}/model.safetensors: tensor scale is not in the model`,
      { expectedShapes: new Map(SHAPES.filter(([n]) => n !== "scale")) },
    ],
    [
      "model tensor that is not F32",
      (p) =>
        writeTensors(`${p}/${CHECKPOINT_FILES.model}`, {
          w: { dtype: "F16", shape: [1], data: new Uint16Array(1) },
        }),
      (p) => `${p}/model.safetensors: tensor w is F16, expected F32`,
    ],
    [
      "optimizer entry missing",
      (p) =>
        writeTensors(
          `${p}/${CHECKPOINT_FILES.optimizer}`,
          Object.fromEntries(
            SHAPES.flatMap(([n, s]) => [[`${n}.m`, f32(s)], [`${n}.v`, f32(s)]])
              .filter(([n]) => n !== `${q}.v`),
          ),
        ),
      (p) => `${p}/optimizer.safetensors: missing tensor ${q}.v`,
    ],
    [
      "optimizer entry of the wrong shape",
      (p) =>
        writeTensors(
          `${p}/${CHECKPOINT_FILES.optimizer}`,
          Object.fromEntries(
            SHAPES.flatMap(([n, s]) => [
              [`${n}.m`, f32(n === q ? [16] : s)],
              [`${n}.v`, f32(s)],
            ]),
          ),
        ),
      (p) =>
        `${p}/optimizer.safetensors: tensor ${q}.m has shape [16] but parameter ${q} has [4,4]`,
    ],
    [
      "optimizer entry of no parameter",
      (p) =>
        writeTensors(
          `${p}/${CHECKPOINT_FILES.optimizer}`,
          Object.fromEntries([
            ...SHAPES.flatMap((
              [n, s],
            ) => [[`${n}.m`, f32(s)], [`${n}.v`, f32(s)]]),
            ["ghost.m", f32([1])],
          ]),
        ),
      (p) =>
        `${p}/optimizer.safetensors: tensor ghost.m is not the m or v of a parameter in model.safetensors`,
    ],
    [
      "optimizer file missing",
      (p) => Deno.remove(`${p}/${CHECKPOINT_FILES.optimizer}`),
      (p) => `${p}/optimizer.safetensors: file not found`,
    ],
    [
      "bad state.json",
      (p) =>
        Deno.writeTextFile(
          `${p}/${CHECKPOINT_FILES.state}`,
          JSON.stringify({ ...makeData(1).state, step: 1.5, lr: 3 }),
        ),
      (p) =>
        `${p}/state.json: at lr: unknown field\n${p}/state.json: at step: Expected an integer, got 1.5`,
    ],
    [
      "state.json not JSON",
      (p) => Deno.writeTextFile(`${p}/${CHECKPOINT_FILES.state}`, "{"),
      (p) => `${p}/state.json: not valid JSON: `,
    ],
    [
      "broken tokenizer.json",
      (p) => Deno.writeTextFile(`${p}/${CHECKPOINT_FILES.tokenizer}`, "[]"),
      (p) => `${p}/tokenizer.json: not a byte-level BPE tokenizer.json`,
    ],
  ];
  for (const [what, spoil, message, options] of cases) {
    await withDir(async (dir) => {
      const path = await spoiled(dir, spoil);
      const e = await loadError(dir, options);
      assert.ok(e instanceof DataError, what);
      const want = message(path);
      assert.ok(
        e.message.startsWith(want),
        `${what}:\n${e.message}\n  does not start with\n${want}`,
      );
    });
  }
});

Deno.test("config problems are ConfigErrors naming config.json and the field", async () => {
  await withDir(async (dir) => {
    const path = await spoiled(dir, () => Promise.resolve());
    let e = await loadError(dir, {
      expectedConfig: { ...PRESETS.tiny, hidden_size: 128, num_layers: 3 },
    });
    assert.ok(e instanceof ConfigError);
    assert.equal(
      e.message,
      [
        `${path}/config.json: hidden_size is 64 in the checkpoint but 128 in the expected config`,
        `${path}/config.json: num_layers is 2 in the checkpoint but 3 in the expected config`,
      ].join("\n"),
    );
    await Deno.writeTextFile(
      `${path}/${CHECKPOINT_FILES.config}`,
      JSON.stringify({ ...PRESETS.tiny, hidden_size: -1 }),
    );
    e = await loadError(dir);
    assert.ok(e instanceof ConfigError);
    assert.match(
      e.message,
      new RegExp(`^${path}/config\\.json: at hidden_size: `),
    );
  });
});
