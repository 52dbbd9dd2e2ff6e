// The training run end to end on a small model and a small generated text:
// loss goes down, an interrupted-and-resumed run reproduces the uninterrupted
// one bit for bit, a non-finite loss stops before the update (a typed
// TrainError), every tensor is released, a time budget is planned and its plan
// resumed, and bad input fails with an error naming the file.
import { strict as assert } from "node:assert";
import { Cause, Effect, Exit, Option } from "effect";
import { defaultSettings } from "../../src/train/settings.ts";
import { initTraining, Trainer, TrainError } from "../../src/train/trainer.ts";
import { parseMetrics } from "../../src/train/report.ts";
import { runTraining } from "../../src/train/run.ts";
import { decodeRunState } from "../../src/train/run_state.ts";
import { loadTrainedRun } from "../../src/train/trained_model.ts";
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

function run(
  out: string,
  steps: number,
  extra: {
    resume?: boolean;
    time?: number;
    batch?: number;
    lr?: number;
    cache?: string;
  } = {},
) {
  return train({
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
    // The last test of "bad input" damages the default cache.
    cacheDir: `${work}/${extra.cache ?? "cache"}`,
    timeBudgetSeconds: extra.time,
    saveEvery: 0,
  });
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
  const e = await Effect.runPromise(Effect.flip(trainer.runStep()));
  assert.ok(e instanceof TrainError);
  assert.match(e.message, /(loss is NaN|non-finite values) at step 1/);
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
      train({
        config,
        settings: defaultSettings(config, 2, { batch: 2, seqLen: 8 }),
        out: `${work}/nodata`,
        resume: false,
        data: `${work}/missing.txt`,
        cacheDir: `${work}/cache`,
        saveEvery: 0,
      }),
      /missing\.txt/,
    );
  });
  await t.step("empty data file", async () => {
    await Deno.writeTextFile(`${work}/empty.txt`, "");
    await fail(
      train({
        config,
        settings: defaultSettings(config, 2, { batch: 2, seqLen: 8 }),
        out: `${work}/emptydata`,
        resume: false,
        data: `${work}/empty.txt`,
        cacheDir: `${work}/cache`,
        saveEvery: 0,
      }),
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
      train({
        config: other,
        settings: defaultSettings(other, 2, { batch: 2, seqLen: 8 }),
        out: `${work}/learn`,
        resume: true,
        data: dataPath,
        cacheDir: `${work}/cache`,
        saveEvery: 0,
      }),
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
    await train({
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
    });
    const otherDir = `${foreign}/${[...Deno.readDirSync(foreign)][0].name}`;
    await Deno.copyFile(`${otherDir}/train.tok`, `${dir}/train.tok`);
    await fail(run(`${work}/hash`, 1), /train\.tok.*another tokenizer/);
  });
});

Deno.test("a run releases every tensor it allocated: finished, diverged or stopped", async () => {
  const before = backend.liveTensors;
  await run(`${work}/leak-done`, 4, { cache: "cache-b" });
  assert.equal(backend.liveTensors, before);
  const exit = await run(`${work}/leak-nan`, 30, { lr: 1e30, cache: "cache-b" })
    .then(
      Exit.succeed,
      Exit.fail,
    );
  assert.ok(Exit.isFailure(exit));
  assert.equal(backend.liveTensors, before);
  await run(`${work}/leak-stop`, 30, { time: 1e-9, cache: "cache-b" });
  assert.equal(backend.liveTensors, before);
});

Deno.test("a diverging run fails with a typed TrainError, not a defect", async () => {
  const exit = await Effect.runPromiseExit(
    Effect.scoped(runTraining({
      config,
      settings: defaultSettings(config, 30, {
        batch: 4,
        seqLen: 16,
        evalEvery: 0,
        lr: { kind: "cosine", peakLr: 1e30, warmupSteps: 1, totalSteps: 30 },
      }),
      out: `${work}/diverge`,
      resume: false,
      data: dataPath,
      cacheDir: `${work}/cache-b`,
      saveEvery: 0,
    })).pipe(Effect.provide(backendLayer)),
  );
  assert.ok(Exit.isFailure(exit));
  const error = Cause.findErrorOption(exit.cause);
  assert.ok(Option.isSome(error), Cause.pretty(exit.cause));
  assert.ok(error.value instanceof TrainError);
  assert.match(
    error.value.message,
    /(loss is NaN|non-finite values) at step \d+/,
  );
});

Deno.test("a budgeted run plans its steps and saves the plan; a resume finishes that plan", async () => {
  const out = `${work}/budget`;
  const seconds = 2;
  const settingsFor = (steps: number) =>
    defaultSettings(config, steps, { batch: 4, seqLen: 16 });
  const first = await train({
    config,
    budget: { seconds, settingsFor },
    out,
    resume: false,
    data: dataPath,
    cacheDir: `${work}/cache-b`,
    // Stopped early, as by Ctrl-C.
    timeBudgetSeconds: 0.3,
    saveEvery: 0,
  });
  assert.ok(first.stoppedEarly && first.steps < first.plannedSteps);
  const run1 = await Effect.runPromise(loadTrainedRun(out));
  const state = await Effect.runPromise(
    decodeRunState(
      JSON.parse(
        await Deno.readTextFile(`${run1.checkpointPath}/state.json`),
      ),
      "state.json",
    ),
  );
  assert.ok(state.budget !== undefined);
  assert.equal(state.budget.budgetSeconds, seconds);
  assert.equal(state.budget.steps, first.plannedSteps);
  assert.equal(state.settings.steps, first.plannedSteps);
  assert.equal(state.settings.lr.totalSteps, first.plannedSteps);
  // No data given: the resume reads the run's own (state.json `data`).
  const rest = await train({
    out,
    resume: true,
    cacheDir: `${work}/cache-b`,
    saveEvery: 0,
  });
  assert.equal(rest.steps, first.plannedSteps);
  assert.ok(!rest.stoppedEarly);
  const losses = await trainLosses(out);
  assert.deepEqual(
    [...losses.keys()],
    Array.from({ length: rest.steps }, (_, i) => i + 1),
  );
});

Deno.test("a budgeted run ends by its plan, close to its budget", async () => {
  const seconds = 2;
  const r = await train({
    config,
    budget: {
      seconds,
      settingsFor: (steps) =>
        defaultSettings(config, steps, { batch: 4, seqLen: 16 }),
    },
    out: `${work}/budget-full`,
    resume: false,
    data: dataPath,
    cacheDir: `${work}/cache-b`,
    saveEvery: 0,
  });
  assert.ok(r.steps > 10, `${r.steps} steps`);
  // The hard stop: 5% past the budget, plus the step and checkpoint under way.
  assert.ok(r.trainSeconds < seconds * 1.05 + 0.5, `${r.trainSeconds}s`);
});
