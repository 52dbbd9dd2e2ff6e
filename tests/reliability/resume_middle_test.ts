/**
 * Resume from the middle of a run (issue 11 §3): a run stopped at a step k
 * past warmup — through interruption, as Ctrl-C stops it — and resumed must
 * take every later step exactly as the uninterrupted run: the same training
 * loss and gradient norm at each step, and bit-for-bit the same final weights
 * and AdamW moments. k comes from a seeded fast-check property, over gradient
 * accumulation 1 and 2 and λ held in its soft phase (0 < λ < 1) at k.
 */
import { strict as assert } from "node:assert";
import { Effect, Fiber } from "effect";
import fc from "fast-check";
import { quantPhases } from "../../src/core/schedule.ts";
import { parseMetrics, type StepMetrics } from "../../src/train/report.ts";
import { type ProgressSink, runTraining } from "../../src/train/run.ts";
import {
  defaultSettings,
  type TrainSettings,
} from "../../src/train/settings.ts";
import {
  backendLayer,
  config,
  syntheticText,
  train,
} from "../train/fixtures.ts";

const STEPS = 12;
const WARMUP = 3;
const work = await Deno.makeTempDir({ prefix: "ternary-resume-" });
const data = `${work}/text.txt`;
await Deno.writeTextFile(data, syntheticText());

interface Variant {
  readonly accumulation: number;
  /** λ rises 0 → 1 over the whole run, so it is soft at every k. */
  readonly soft: boolean;
}

const settings = (v: Variant): TrainSettings =>
  defaultSettings(config, STEPS, {
    batch: 4,
    seqLen: 16,
    accumulation: v.accumulation,
    evalEvery: 4,
    evalWindows: 4,
    lr: {
      kind: "cosine",
      peakLr: 3e-3,
      warmupSteps: WARMUP,
      totalSteps: STEPS,
    },
    lambda: quantPhases({ fpSteps: 0, softSteps: v.soft ? STEPS + 4 : 0 }),
  });

const options = (out: string, v: Variant, resume: boolean) => ({
  config,
  settings: settings(v),
  out,
  resume,
  data,
  cacheDir: `${work}/cache`,
  saveEvery: 0,
});

/** Runs until step `k` is done, then interrupts the run as Ctrl-C would. */
async function runUntil(out: string, v: Variant, k: number): Promise<void> {
  let reached: () => void = () => {};
  const atK = new Promise<void>((resolve) => (reached = resolve));
  const progress: ProgressSink = {
    step: (m: StepMetrics) => {
      if (m.step === k) reached();
    },
    printEval: () => {},
    finish: () => {},
  };
  await Effect.runPromise(
    Effect.gen(function* () {
      const fiber = yield* Effect.forkChild(
        Effect.scoped(runTraining({ ...options(out, v, false), progress })),
      );
      yield* Effect.promise(() => atK);
      yield* Fiber.interrupt(fiber);
    }).pipe(Effect.provide(backendLayer)),
  );
}

async function trainRecords(out: string): Promise<Map<number, StepMetrics>> {
  const history = await Effect.runPromise(
    parseMetrics(await Deno.readTextFile(`${out}/metrics.jsonl`), out),
  );
  return new Map(history.train.map((m) => [m.step, m]));
}

async function latestFiles(out: string): Promise<Map<string, Uint8Array>> {
  const name = (await Deno.readTextFile(`${out}/latest`)).trim();
  const files = new Map<string, Uint8Array>();
  for (const f of ["model.safetensors", "optimizer.safetensors"]) {
    files.set(f, await Deno.readFile(`${out}/${name}/${f}`));
  }
  const state = JSON.parse(
    await Deno.readTextFile(`${out}/${name}/state.json`),
  );
  files.set("step", new TextEncoder().encode(String(state.step)));
  return files;
}

const reference = new Map<string, Promise<string>>();
/** The uninterrupted run of a variant (once per variant). */
function uninterrupted(v: Variant): Promise<string> {
  const key = `a${v.accumulation}-${v.soft ? "soft" : "hard"}`;
  if (!reference.has(key)) {
    const out = `${work}/ref-${key}`;
    reference.set(key, train(options(out, v, false)).then(() => out));
  }
  return reference.get(key)!;
}

let cases = 0;
const covered = new Set<string>();
Deno.test("a run stopped at step k past warmup resumes bit for bit (seeded property)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: WARMUP + 1, max: STEPS - 2 }),
      fc.constantFrom(1, 2),
      fc.boolean(),
      async (k, accumulation, soft) => {
        const v = { accumulation, soft };
        covered.add(`${accumulation}/${soft}`);
        const ref = await uninterrupted(v);
        const out = `${work}/stop-${cases++}`;
        await runUntil(out, v, k);
        const stopped = await latestFiles(out);
        assert.equal(
          new TextDecoder().decode(stopped.get("step")),
          String(k),
          "the interrupted run's checkpoint is not at step k",
        );
        const resumed = await train(options(out, v, true));
        assert.equal(resumed.steps, STEPS);
        const a = await trainRecords(ref);
        const b = await trainRecords(out);
        for (let step = k + 1; step <= STEPS; step++) {
          const x = a.get(step)!, y = b.get(step)!;
          assert.ok(y !== undefined, `no step ${step} after the resume`);
          assert.equal(y.loss, x.loss, `loss at step ${step} (k ${k})`);
          assert.equal(y.gradNorm, x.gradNorm, `|g| at step ${step}`);
          assert.equal(y.lr, x.lr, `lr at step ${step}`);
          assert.equal(y.lambda, x.lambda, `λ at step ${step}`);
          if (soft) assert.ok(y.lambda > 0 && y.lambda < 1, `λ ${y.lambda}`);
        }
        const final = await latestFiles(out);
        const want = await latestFiles(ref);
        for (const f of ["model.safetensors", "optimizer.safetensors"]) {
          assert.deepEqual(final.get(f), want.get(f), `${f} differs (k ${k})`);
        }
      },
    ),
    { seed: 20261203, numRuns: 8, endOnFailure: true },
  );
  // The seed's cases cover both accumulations, soft and hard λ.
  assert.deepEqual([...covered].sort(), [
    "1/false",
    "1/true",
    "2/false",
    "2/true",
  ]);
});
