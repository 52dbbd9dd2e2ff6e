/**
 * One training step of the `ref-4m` preset (batch 16 × seq 128, vocab 4096,
 * hidden 256, 4 layers, FFN 768) on the CPU backend, on one thread (or `N`): the
 * step time and tokens/s of `Trainer.runStep` (forward, backward, AdamW,
 * λ = 1) — wall-clock median and best step, and the median CPU time of the
 * process, which other load on a shared machine disturbs less — then a second
 * pass through a timing proxy of the backend that splits a step into op
 * categories (matmuls by role, attention, loss, norms…), in CPU time on one
 * thread and in wall time on several (CPU time would add the workers' time).
 *
 * Run: `deno run -A bench/train_step_bench.ts [--steps N] [--threads N]`
 * (default 5 timed steps after 2 warm-up steps, one thread; prints the
 * breakdown table).
 *
 * @module
 */
import process from "node:process";
import { Effect } from "effect";
import type { Backend, MatmulOptions } from "../src/backend/backend.ts";
import { CpuBackend } from "../src/backend/cpu/cpu_backend.ts";
import { PRESETS } from "../src/common/presets.ts";
import {
  defaultSettings,
  initTraining,
  Trainer,
} from "../src/train/trainer.ts";
import { type BenchResult, median, positiveCount } from "./result.ts";

export type { BenchResult };

const PRESET = "ref-4m";

/** Milliseconds per step spent in each op category, and the calls made. */
interface Breakdown {
  /** Whether calls are being recorded (off during model set-up and warm-up). */
  on: boolean;
  /** Category → total milliseconds over the profiled steps. */
  readonly ms: Map<string, number>;
  /** Category → number of calls over the profiled steps. */
  readonly calls: Map<string, number>;
}

/** The category of a matmul by its role in a BitLinear (forward, dX, dW; LM head apart). */
function matmulCategory(o: MatmulOptions, vocab: number): string {
  const head = o.m === vocab || o.n === vocab || o.k === vocab;
  const role = o.transA ? "dW" : o.accumulate ? "dX" : "fwd";
  return `matmul ${head ? "head " : ""}${role}`;
}

/**
 * A backend whose every method call is timed into `b` in CPU time of the
 * process (the CPU backend runs synchronously, so on one thread a call's CPU
 * time is its kernel's, and steadier than wall time on a shared machine), or
 * in wall time with `wall` (several threads).
 */
function timed(
  inner: Backend,
  b: Breakdown,
  vocab: number,
  wall: boolean,
): Backend {
  const add = (cat: string, ms: number) => {
    b.ms.set(cat, (b.ms.get(cat) ?? 0) + ms);
    b.calls.set(cat, (b.calls.get(cat) ?? 0) + 1);
  };
  return new Proxy(inner, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        if (!b.on) return v.apply(target, args);
        const w0 = performance.now(), c0 = process.cpuUsage();
        const r = v.apply(target, args);
        const c = process.cpuUsage(c0), w = performance.now() - w0;
        const cat = prop === "matmul"
          ? matmulCategory(args[3] as MatmulOptions, vocab)
          : prop === "activation" || prop === "activationBackward"
          ? `${String(prop)} ${args[0]}`
          : String(prop);
        add(cat, wall ? w : (c.user + c.system) / 1000);
        return r;
      };
    },
  });
}

/** Random tokens for the sampler (the step's cost does not depend on them). */
function randomTokens(n: number, vocab: number): Int32Array {
  const t = new Int32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    t[i] = (s >>> 8) % vocab;
  }
  return t;
}

/** Results of {@link measureTrainStep}. */
export interface TrainStepMeasurement {
  /** Median wall-clock seconds of one step. */
  readonly stepSeconds: number;
  /** Fastest step in wall-clock seconds (the least disturbed by other load). */
  readonly minStepSeconds: number;
  /**
   * Median CPU seconds of one step (user + system time of the process): on a
   * machine shared with other work this tracks the code's own cost better.
   */
  readonly stepCpuSeconds: number;
  /** Tokens per step. */
  readonly tokensPerStep: number;
  /** Per-category CPU milliseconds of the profiled steps, divided by their count. */
  readonly perStepMs: ReadonlyArray<
    { category: string; ms: number; calls: number }
  >;
}

/**
 * Times `steps` training steps of `ref-4m` (after 2 warm-up steps) on
 * `threads` threads, then profiles 2 steps of a fresh model (after 1
 * unprofiled step).
 */
export async function measureTrainStep(
  steps = 5,
  threads = 1,
): Promise<TrainStepMeasurement> {
  const config = PRESETS[PRESET];
  const backend = await CpuBackend.create({ threads });
  try {
    return await measureOn(backend, config, steps, threads > 1);
  } finally {
    backend.close();
  }
}

async function measureOn(
  backend: CpuBackend,
  config: (typeof PRESETS)[typeof PRESET],
  steps: number,
  wallCategories: boolean,
): Promise<TrainStepMeasurement> {
  const settings = defaultSettings(config, 1000, { evalEvery: 0 });
  const tokens = randomTokens(200_000, config.vocab_size);
  const profile: Breakdown = { on: false, ms: new Map(), calls: new Map() };
  const warmup = 2, profiled = 2;
  const times: number[] = [], cpuTimes: number[] = [];
  const run = async (b: Backend, n: number): Promise<void> => {
    const { model, optimizer } = initTraining(config, b, settings);
    const trainer = new Trainer(model, optimizer, tokens, settings);
    try {
      for (let i = 0; i < n; i++) {
        profile.on = i >= n - profiled;
        const t0 = performance.now();
        const c0 = process.cpuUsage();
        await Effect.runPromise(trainer.runStep());
        const c = process.cpuUsage(c0);
        times.push((performance.now() - t0) / 1000);
        cpuTimes.push((c.user + c.system) / 1e6);
      }
    } finally {
      profile.on = false;
      optimizer.release();
      model.release();
    }
  };
  await run(backend, warmup + steps);
  const wall = times.slice(warmup), cpuSec = cpuTimes.slice(warmup);
  // Profiling costs a little per call, so it runs apart from the timed steps.
  await run(
    timed(backend, profile, config.vocab_size, wallCategories),
    1 + profiled,
  );
  const perStepMs = [...profile.ms.entries()]
    .map(([category, ms]) => ({
      category,
      ms: ms / profiled,
      calls: (profile.calls.get(category) ?? 0) / profiled,
    }))
    .sort((a, b) => b.ms - a.ms);
  return {
    stepSeconds: median([...wall]),
    minStepSeconds: Math.min(...wall),
    stepCpuSeconds: median(cpuSec),
    tokensPerStep: settings.batch * settings.seqLen,
    perStepMs,
  };
}

/** Runs the benchmark: step seconds, tokens/s and ms per step of each op category. */
export async function run(): Promise<BenchResult[]> {
  const m = await measureTrainStep();
  const slug = (s: string) => s.replace(/[^a-zA-Z0-9]+/g, "_");
  return [
    { name: "train_step_ref4m_seconds", value: m.stepSeconds, unit: "s" },
    {
      name: "train_step_ref4m_tokens_per_s",
      value: m.tokensPerStep / m.stepSeconds,
      unit: "tokens/s",
    },
    {
      name: "train_step_ref4m_best_tokens_per_s",
      value: m.tokensPerStep / m.minStepSeconds,
      unit: "tokens/s",
    },
    {
      name: "train_step_ref4m_cpu_seconds",
      value: m.stepCpuSeconds,
      unit: "s",
    },
    {
      name: "train_step_ref4m_tokens_per_cpu_s",
      value: m.tokensPerStep / m.stepCpuSeconds,
      unit: "tokens/s",
    },
    ...m.perStepMs.map((c) => ({
      name: `train_step_ref4m_ms_${slug(c.category)}`,
      value: c.ms,
      unit: "ms/step",
    })),
  ];
}

if (import.meta.main) {
  const flag = (name: string, fallback: number) => {
    const i = Deno.args.indexOf(name);
    return positiveCount(
      name,
      i >= 0 ? Deno.args[i + 1] ?? "" : undefined,
      fallback,
    );
  };
  const steps = flag("--steps", 5), threads = flag("--threads", 1);
  const m = await measureTrainStep(steps, threads);
  console.log(
    `${PRESET}: ${m.stepSeconds.toFixed(3)} s/step wall (median of ${steps}), ${
      (m.tokensPerStep / m.stepSeconds).toFixed(0)
    } tokens/s (best step ${m.minStepSeconds.toFixed(3)} s, ${
      (m.tokensPerStep / m.minStepSeconds).toFixed(0)
    } tokens/s); ${m.stepCpuSeconds.toFixed(3)} s/step CPU, ${
      (m.tokensPerStep / m.stepCpuSeconds).toFixed(0)
    } tokens per CPU-second`,
  );
  const total = m.perStepMs.reduce((a, c) => a + c.ms, 0);
  console.log(
    `${"category".padEnd(24)} ${
      (threads > 1 ? "wall ms" : "cpu ms").padStart(9)
    } ${"%".padStart(6)} ${"calls".padStart(6)}`,
  );
  for (const c of m.perStepMs) {
    console.log(
      `${c.category.padEnd(24)} ${c.ms.toFixed(1).padStart(9)} ${
        (100 * c.ms / total).toFixed(1).padStart(6)
      } ${c.calls.toFixed(0).padStart(6)}`,
    );
  }
  console.log(
    `${"total (profiled)".padEnd(24)} ${total.toFixed(1).padStart(9)}`,
  );
}
