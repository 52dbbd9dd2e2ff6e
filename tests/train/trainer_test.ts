// The training run end to end on a small model and a small generated text:
// loss goes down, an interrupted-and-resumed run reproduces the uninterrupted
// one bit for bit, a non-finite loss stops before the update, and bad input
// fails with an error naming the file.
import { strict as assert } from "node:assert";
import { Effect, Exit } from "effect";
import { CpuBackend } from "../../src/backend/cpu/cpu_backend.ts";
import { PRESETS } from "../../src/common/presets.ts";
import type { OneBitLlmConfig } from "../../src/common/config.ts";
import { runTraining } from "../../src/train/run.ts";
import {
  defaultSettings,
  initTraining,
  stepsForBudget,
  Trainer,
  TrainError,
} from "../../src/train/trainer.ts";
import { parseMetrics } from "../../src/train/report.ts";

const backend = await CpuBackend.create();

const config: OneBitLlmConfig = {
  ...PRESETS.tiny,
  vocab_size: 300,
  hidden_size: 32,
  num_heads: 2,
  num_kv_heads: 2,
  num_layers: 1,
  intermediate_size: 48,
  max_seq_len: 16,
};

/**
 * A text from a small grammar: predictable enough that a few dozen steps beat
 * the unigram baseline, varied enough for a 300-token BPE.
 */
function syntheticText(): string {
  let s = 12345;
  const rnd = () => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)];
  const subjects = [
    "the cat",
    "a dog",
    "my friend",
    "the old man",
    "our teacher",
  ];
  const verbs = ["sat on", "looked at", "walked to", "painted", "found"];
  const objects = [
    "the mat",
    "a red house",
    "the river",
    "an apple tree",
    "the door",
  ];
  const paras: string[] = [];
  for (let p = 0; p < 80; p++) {
    const n = 4 + Math.floor(rnd() * 4);
    paras.push(
      Array.from(
        { length: n },
        () => `${pick(subjects)} ${pick(verbs)} ${pick(objects)}.`,
      )
        .join(" "),
    );
  }
  return paras.join("\n\n");
}

const work = await Deno.makeTempDir();
const dataPath = `${work}/text.txt`;
await Deno.writeTextFile(dataPath, syntheticText());
const quiet = () => {};

function run(
  out: string,
  steps: number,
  extra: { resume?: boolean; time?: number; batch?: number; lr?: number } = {},
) {
  return Effect.runPromise(Effect.scoped(runTraining(backend, {
    config,
    settings: defaultSettings(config, steps, {
      batch: extra.batch ?? 4,
      seqLen: 16,
      evalEvery: 0,
      lr: {
        kind: "cosine",
        peakLr: extra.lr ?? 1.5e-3,
        warmupSteps: 10,
        totalSteps: steps,
      },
    }),
    out,
    resume: extra.resume ?? false,
    data: dataPath,
    cacheDir: `${work}/cache`,
    timeBudgetSeconds: extra.time,
    saveEvery: 0,
    log: quiet,
  })));
}

async function trainLosses(out: string): Promise<Map<number, number>> {
  const history = await Effect.runPromise(
    parseMetrics(await Deno.readTextFile(`${out}/metrics.jsonl`), "m"),
  );
  return new Map(history.train.map((m) => [m.step, m.loss]));
}

Deno.test("training lowers the loss and reports perplexity below unigram", async () => {
  const r = await run(`${work}/learn`, 150, { batch: 16, lr: 5e-3 });
  assert.equal(r.steps, 150);
  const losses = await trainLosses(`${work}/learn`);
  const first = losses.get(1)!, last = losses.get(150)!;
  assert.ok(last < first - 0.5, `loss ${first} → ${last}`);
  assert.ok(
    r.valid !== undefined && r.valid.ppl < r.unigramPpl,
    `ppl ${r.valid?.ppl} vs ${r.unigramPpl}`,
  );
  await Deno.stat(`${work}/learn/loss.svg`);
});

Deno.test("a resumed run reproduces the uninterrupted run exactly", async () => {
  await run(`${work}/full`, 24);
  // Interrupt after the first step via a time budget of 0 s past step 1 …
  const part = await run(`${work}/part`, 24, { time: 1e-9 });
  assert.ok(part.stoppedEarly && part.steps < 24);
  // … then resume twice: once more interrupted, then to the end.
  await run(`${work}/part`, 24, { resume: true });
  const a = await trainLosses(`${work}/full`);
  const b = await trainLosses(`${work}/part`);
  assert.equal(b.size, 24);
  for (const [step, loss] of a) assert.equal(b.get(step), loss, `step ${step}`);
});

Deno.test("a non-finite loss stops the step before the update", async () => {
  const settings = defaultSettings(config, 3, { batch: 2, seqLen: 8 });
  const { model, optimizer } = initTraining(config, backend, settings);
  const tokens = Int32Array.from({ length: 200 }, (_, i) => (i * 7) % 300);
  const trainer = new Trainer(model, optimizer, tokens, settings);
  const emb = model.params.get("token_embd.weight")!;
  const before = await backend.read(model.params.get("blk.0.attn_q.weight")!);
  backend.fill(emb, NaN);
  await assert.rejects(() => trainer.runStep(), (e: unknown) => {
    assert.ok(e instanceof TrainError);
    assert.match(e.message, /(loss is NaN|non-finite values) at step 1/);
    return true;
  });
  assert.deepEqual(
    await backend.read(model.params.get("blk.0.attn_q.weight")!),
    before,
  );
  assert.equal(trainer.step, 0);
  optimizer.release();
  model.release();
});

Deno.test("bad input: each error names the file and loses nothing", async (t) => {
  const fail = async (p: Promise<unknown>, pattern: RegExp) => {
    const exit = await p.then(Exit.succeed, Exit.fail);
    assert.ok(Exit.isFailure(exit), "expected a failure");
    const e = (exit as Exit.Failure<never, unknown>).cause as {
      message?: string;
    };
    assert.match(String(e.message ?? e), pattern);
  };
  await t.step("missing data path", async () => {
    await fail(
      Effect.runPromise(Effect.scoped(runTraining(backend, {
        config,
        settings: defaultSettings(config, 2, { batch: 2, seqLen: 8 }),
        out: `${work}/nodata`,
        resume: false,
        data: `${work}/missing.txt`,
        cacheDir: `${work}/cache`,
        saveEvery: 0,
        log: quiet,
      }))),
      /missing\.txt/,
    );
  });
  await t.step("empty data file", async () => {
    await Deno.writeTextFile(`${work}/empty.txt`, "");
    await fail(
      Effect.runPromise(Effect.scoped(runTraining(backend, {
        config,
        settings: defaultSettings(config, 2, { batch: 2, seqLen: 8 }),
        out: `${work}/emptydata`,
        resume: false,
        data: `${work}/empty.txt`,
        cacheDir: `${work}/cache`,
        saveEvery: 0,
        log: quiet,
      }))),
      /empty\.txt/,
    );
  });
  await t.step("--resume on an empty directory", async () => {
    await Deno.mkdir(`${work}/emptyrun`);
    await fail(
      run(`${work}/emptyrun`, 2, { resume: true }),
      /emptyrun.*no checkpoint/,
    );
  });
  await t.step("a new run never overwrites a checkpoint", async () => {
    const before = await Deno.readTextFile(`${work}/learn/latest`);
    await fail(run(`${work}/learn`, 2), /already holds a checkpoint.*--resume/);
    assert.equal(await Deno.readTextFile(`${work}/learn/latest`), before);
  });
  await t.step("a config whose shapes differ from the checkpoint", async () => {
    const other = { ...config, hidden_size: 64 };
    await fail(
      Effect.runPromise(Effect.scoped(runTraining(backend, {
        config: other,
        settings: defaultSettings(other, 2, { batch: 2, seqLen: 8 }),
        out: `${work}/learn`,
        resume: true,
        data: dataPath,
        cacheDir: `${work}/cache`,
        saveEvery: 0,
        log: quiet,
      }))),
      /config\.json.*hidden_size/,
    );
  });
  await t.step("a token file from another tokenizer", async () => {
    const cacheDirs = [...Deno.readDirSync(`${work}/cache`)].map((e) => e.name);
    const dir = `${work}/cache/${
      cacheDirs.find((n) => n.startsWith("text.txt"))
    }`;
    // Another dataset's token file in place of this one's.
    const foreign = `${work}/cache2`;
    const text2 = `${work}/text2.txt`;
    await Deno.writeTextFile(text2, syntheticText().replaceAll("the", "za"));
    await Effect.runPromise(Effect.scoped(runTraining(backend, {
      config,
      settings: defaultSettings(config, 1, {
        batch: 2,
        seqLen: 8,
        evalEvery: 0,
      }),
      out: `${work}/other`,
      resume: false,
      data: text2,
      cacheDir: foreign,
      saveEvery: 0,
      log: quiet,
    })));
    const otherDir = `${foreign}/${[...Deno.readDirSync(foreign)][0].name}`;
    await Deno.copyFile(`${otherDir}/train.tok`, `${dir}/train.tok`);
    await fail(run(`${work}/hash`, 1), /train\.tok.*another tokenizer/);
  });
});

Deno.test("stepsForBudget leaves room for evaluation and never plans 0 steps", () => {
  assert.equal(stepsForBudget(600, 1.5), Math.floor(540 / 1.725));
  assert.equal(stepsForBudget(1, 100), 1);
});
