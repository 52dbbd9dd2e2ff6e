/**
 * Inference runtime speed, every figure measured in one run:
 * - scoring (`InferenceModel.nll`) against training (`Trainer.runStep`,
 *   forward + backward + AdamW) and the tape's evaluation (`evaluateModel`)
 *   on `ref-4m` at batch 16 × 128, all three on the same threads (every core,
 *   or `--threads N`), interleaved so that machine load hits them alike:
 *   tokens/s each (wall clock: the threads' CPU time would count each second
 *   once per thread) and the ratios;
 * - prefill and greedy decode tokens/s at the `ref-4m` and `bitnet-100m`
 *   shapes (random weights, ternary blocks, f16 tied embedding), and the
 *   share of decode time in the block linears, quantization, attention, the
 *   LM head, greedy sampling and the rest (from a separate, timed run: the
 *   clock reads cost a little).
 *
 * Generation times are CPU time of the process (see `clock`; it runs on one
 * thread), so that other work on a shared machine does not count.
 *
 * Usage: `deno run -A bench/infer_bench.ts [--quick] [--threads N] [scoring] [ref-4m] [bitnet-100m]`.
 *
 * @module
 */
import process from "node:process";
import { Effect } from "effect";
import { CpuBackend } from "../src/backend/cpu/cpu_backend.ts";
import { tunedMatmulConfig } from "../src/backend/cpu/matmul_tuning.ts";
import { WasmKernels } from "../src/backend/wasm/wasm_kernels.ts";
import { type OneBitLlmConfig, resolveBitMap } from "../src/common/config.ts";
import { PRESETS } from "../src/common/presets.ts";
import { Rng } from "../src/common/rng.ts";
import { BYTE_TO_CHAR, Tokenizer } from "../src/common/tokenizer.ts";
import { modelTensors, tensorNumel } from "../src/core/tensors.ts";
import { weightsFromTrainedRun } from "../src/infer/from_latents.ts";
import { InferenceModel } from "../src/infer/runtime.ts";
import { argmax } from "../src/infer/sampling.ts";
import {
  defaultSettings,
  evaluateModel,
  initTraining,
  Trainer,
} from "../src/train/trainer.ts";
import { type BenchResult, median } from "./result.ts";

const quick = Deno.args.includes("--quick");
/**
 * Milliseconds of CPU time of this process: on a shared machine the wall
 * clock also counts the time other processes hold the core, the CPU time
 * (the work is single-threaded) does not.
 */
const clock = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
/** Threads of the scoring comparison: `--threads N`, default every core. */
const threads = (() => {
  const i = Deno.args.indexOf("--threads");
  const n = i < 0 ? navigator.hardwareConcurrency : Number(Deno.args[i + 1]);
  if (!Number.isInteger(n) || n < 1 || n > 96) {
    console.error(`error: --threads: expected an integer from 1 to 96`);
    Deno.exit(1);
  }
  return n;
})();
/** Parts named on the command line (`scoring`, `ref-4m`, `bitnet-100m`); none: all. */
const parts = Deno.args.filter((a, i) =>
  !a.startsWith("--") && Deno.args[i - 1] !== "--threads"
);
const want = (part: string) => parts.length === 0 || parts.includes(part);

/** Random latent weights of `config` (normal-ish, std 0.02; norms 1). */
function randomParams(config: OneBitLlmConfig): Map<string, Float32Array> {
  const rng = new Rng(1);
  const params = new Map<string, Float32Array>();
  for (const s of modelTensors(config)) {
    const v = new Float32Array(tensorNumel(s));
    for (let i = 0; i < v.length; i++) {
      v[i] = s.kind === "norm"
        ? 1
        : 0.02 * Math.sqrt(3) * (2 * rng.nextFloat() - 1);
    }
    params.set(s.name, v);
  }
  return params;
}

const tokenizer = new Tokenizer([...BYTE_TO_CHAR], [], []);

async function loadRandom(
  config: OneBitLlmConfig,
  kernels?: WasmKernels,
): Promise<InferenceModel> {
  return await InferenceModel.create(
    weightsFromTrainedRun({
      config,
      bitMap: resolveBitMap(config),
      tokenizer,
      params: randomParams(config),
      lambda: 1,
    }),
    { kernels },
  );
}

/** Scoring vs training vs the tape's evaluation on ref-4m, interleaved, on `threads` threads. */
async function scoring(): Promise<BenchResult[]> {
  const config = PRESETS["ref-4m"];
  const batch = 16, seqLen = 128, n = batch * seqLen;
  const backend = await CpuBackend.create({ threads });
  const kernels = await WasmKernels.create({ sharedMemory: true, threads });
  // The blocking training and the CLI's runtime use (`runtimeKernels`).
  kernels.matmulConfig = tunedMatmulConfig(kernels);
  const settings = defaultSettings(config, 1000, { batch, seqLen });
  const rng = new Rng(2);
  const tokens = Int32Array.from(
    { length: 64 * n },
    () => rng.nextInt(config.vocab_size),
  );
  const { model, optimizer } = initTraining(config, backend, settings);
  const trainer = new Trainer(model, optimizer, tokens, settings);
  const rt = await loadRandom(config, kernels);
  const ids = tokens.subarray(0, n), targets = tokens.subarray(1, n + 1);
  const window = tokens.subarray(0, n + 1);
  const train: number[] = [], score: number[] = [], tape: number[] = [];
  const reps = quick ? 3 : 7;
  const wall = () => performance.now();
  for (let r = -1; r < reps; r++) {
    let t0 = wall();
    await Effect.runPromise(trainer.runStep());
    const tTrain = wall() - t0;
    t0 = wall();
    rt.nll(ids, targets, batch, seqLen);
    const tScore = wall() - t0;
    t0 = wall();
    await Effect.runPromise(
      evaluateModel(model, window, { batch, seqLen, lambda: 1 }),
    );
    const tTape = wall() - t0;
    if (r < 0) continue; // warm-up
    train.push(n / (tTrain / 1000));
    score.push(n / (tScore / 1000));
    tape.push(n / (tTape / 1000));
  }
  optimizer.release();
  model.release();
  rt.release();
  kernels.close();
  backend.close();
  const ratio = score.map((s, i) => s / train[i]);
  return [
    {
      name: "ref4m_train_tokens_per_s",
      value: median(train),
      unit: "tokens/s",
    },
    {
      name: "ref4m_tape_eval_tokens_per_s",
      value: median(tape),
      unit: "tokens/s",
    },
    {
      name: "ref4m_infer_eval_tokens_per_s",
      value: median(score),
      unit: "tokens/s",
    },
    { name: "ref4m_infer_eval_vs_train", value: median(ratio), unit: "ratio" },
    { name: "ref4m_scoring_threads", value: threads, unit: "threads" },
  ];
}

/** Prefill and greedy decode at a preset's shape, and the decode time split. */
async function generation(
  name: "ref-4m" | "bitnet-100m",
): Promise<BenchResult[]> {
  const config = PRESETS[name];
  const rt = await loadRandom(config);
  const tag = name.replace("-", "");
  const prompt = Math.min(128, config.max_seq_len / 2);
  const gen = quick ? 32 : 64;
  const rng = new Rng(3);
  const ids = Int32Array.from({ length: prompt }, () => rng.nextInt(256));
  const s = rt.session();
  const once = () => {
    s.reset();
    let t0 = clock();
    let logits = s.prefill(ids);
    const tPrefill = clock() - t0;
    t0 = clock();
    for (let i = 0; i < gen; i++) logits = s.decode(argmax(logits));
    return { tPrefill, tDecode: clock() - t0 };
  };
  once(); // warm-up
  const pre: number[] = [], dec: number[] = [];
  for (let r = 0; r < (quick ? 2 : 5); r++) {
    const { tPrefill, tDecode } = once();
    pre.push(prompt / (tPrefill / 1000));
    dec.push(gen / (tDecode / 1000));
  }
  // The split, from a timed decode run.
  s.reset();
  let logits = s.prefill(ids);
  rt.profile(true);
  let sampling = 0;
  const t0 = performance.now();
  for (let i = 0; i < gen; i++) {
    const ts = performance.now();
    const next = argmax(logits);
    sampling += performance.now() - ts;
    logits = s.decode(next);
  }
  const total = performance.now() - t0;
  const p = rt.profileTimes!;
  rt.profile(false);
  s.release();
  rt.release();
  return [
    {
      name: `${tag}_prefill${prompt}_tokens_per_s`,
      value: median(pre),
      unit: "tokens/s",
    },
    {
      name: `${tag}_decode${gen}_tokens_per_s`,
      value: median(dec),
      unit: "tokens/s",
    },
    {
      name: `${tag}_decode_share_linears`,
      value: p.linears / total,
      unit: "fraction",
    },
    {
      name: `${tag}_decode_share_quantize`,
      value: p.quantize / total,
      unit: "fraction",
    },
    {
      name: `${tag}_decode_share_attention`,
      value: p.attention / total,
      unit: "fraction",
    },
    {
      name: `${tag}_decode_share_head`,
      value: p.head / total,
      unit: "fraction",
    },
    {
      name: `${tag}_decode_share_sampling`,
      value: sampling / total,
      unit: "fraction",
    },
    {
      // Norms, RoPE, activations, residual adds, KV-cache stores, the
      // embedding row and the host-side cost of every kernel call.
      name: `${tag}_decode_share_other`,
      value: (total - p.linears - p.quantize - p.attention - p.head -
        sampling) / total,
      unit: "fraction",
    },
  ];
}

/** Every figure of this benchmark. */
export async function run(): Promise<ReadonlyArray<BenchResult>> {
  return [
    ...(want("scoring") ? await scoring() : []),
    ...(want("ref-4m") ? await generation("ref-4m") : []),
    ...(want("bitnet-100m") ? await generation("bitnet-100m") : []),
  ];
}

if (import.meta.main) {
  for (const r of await run()) {
    const v = r.unit === "fraction" || r.unit === "ratio"
      ? r.value.toFixed(3)
      : r.value.toFixed(0);
    console.log(`${r.name.padEnd(40)} ${v.padStart(10)} ${r.unit}`);
  }
}
