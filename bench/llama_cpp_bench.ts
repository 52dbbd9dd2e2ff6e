/**
 * llama.cpp beside our runtime on the same GGUF export, in one run:
 * exports a model (a trained run with `--model`, or random weights at a
 * preset's shape) with `writeGgufModel`, loads it in llama.cpp through
 * `node-llama-cpp@3.21.1` (installed into `--llama-dir` with npm if missing;
 * its prebuilt CPU binary) and in our runtime (`InferenceModel`, from the
 * GGUF read back by `readGgufModel`), and measures with one thread each:
 * prefill tokens/s (the prompt in one batch) and greedy decode tokens/s,
 * median of `--repeat` runs, interleaved so machine load hits both alike.
 * It also compares the first 32 greedy tokens of the two, and the next-token
 * distributions after the prompt (KL(llama.cpp ‖ ours)).
 *
 * Usage:
 *   deno run -A bench/llama_cpp_bench.ts [--preset ref-4m|bitnet-100m] [--model RUN_DIR]
 *     [--prompt P] [--tokens N] [--repeat R] [--tq1] [--llama-dir DIR] [--json]
 *
 * @module
 */
import { Effect } from "effect";
import { parseArgs } from "node:util";
import { resolveBitMap } from "../src/common/config.ts";
import { PRESETS } from "../src/common/presets.ts";
import { Rng } from "../src/common/rng.ts";
import { modelTensors, tensorNumel } from "../src/core/tensors.ts";
import { weightsFromTrainedRun } from "../src/infer/from_latents.ts";
import { readGgufModel, writeGgufModel } from "../src/infer/formats/gguf.ts";
import { InferenceModel } from "../src/infer/runtime.ts";
import type { ModelWeights } from "../src/infer/weights.ts";
import { loadTrainedRun } from "../src/train/trained_model.ts";
import { tokenizerOfSize } from "../tests/infer/formats_gen.ts";
import { type BenchResult, median } from "./result.ts";

const { values: opts } = parseArgs({
  args: Deno.args,
  options: {
    preset: { type: "string", default: "ref-4m" },
    model: { type: "string" },
    prompt: { type: "string" },
    tokens: { type: "string" },
    repeat: { type: "string", default: "3" },
    tq1: { type: "boolean", default: false },
    "llama-dir": { type: "string", default: ".scratch/llama-cpp" },
    json: { type: "boolean", default: false },
  },
});

const NODE_LLAMA_CPP = "3.21.1";
const GREEDY_COMPARED = 32;

/** Installs node-llama-cpp into `dir` unless that version is there. */
async function ensureNodeLlamaCpp(dir: string): Promise<void> {
  const pkg = `${dir}/node_modules/node-llama-cpp/package.json`;
  const have = await Deno.readTextFile(pkg).then(
    (t) => JSON.parse(t).version as string,
    () => undefined,
  );
  if (have === NODE_LLAMA_CPP) return;
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/package.json`,
    JSON.stringify({ name: "llama-cpp-peer", private: true }),
  );
  console.error(`installing node-llama-cpp@${NODE_LLAMA_CPP} into ${dir} …`);
  const out = await new Deno.Command("npm", {
    args: ["i", "-E", `node-llama-cpp@${NODE_LLAMA_CPP}`],
    cwd: dir,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`npm install failed in ${dir}`);
}

/** The node script that runs the model in llama.cpp and prints one JSON line. */
const PEER_SCRIPT = `
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
const [path, promptJson, tokens, repeat] = process.argv.slice(2);
const prompt = JSON.parse(promptJson);
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: path });
const ctx = await model.createContext({ contextSize: prompt.length + Number(tokens) + 8, threads: 1, batchSize: prompt.length });
const seq = ctx.getSequence();
const runs = [];
for (let r = 0; r < Number(repeat); r++) {
  await seq.clearHistory();
  const out = [];
  const t0 = performance.now();
  let t1 = 0;
  for await (const t of seq.evaluate(prompt, { temperature: 0 })) {
    if (out.length === 0) t1 = performance.now();
    out.push(t);
    if (out.length >= Number(tokens)) break;
  }
  const t2 = performance.now();
  runs.push({ prefill: prompt.length / ((t1 - t0) / 1000), decode: (out.length - 1) / ((t2 - t1) / 1000), tokens: out });
}
await seq.clearHistory();
let probs = [];
for await (const o of seq.evaluateWithMetadata(prompt, { probabilities: true }, { temperature: 1, topK: 0, topP: 1, minP: 0 })) {
  probs = [...o.probabilities.entries()];
  break;
}
console.log(JSON.stringify({ runs, probs }));
`;

interface Run {
  readonly prefill: number;
  readonly decode: number;
  readonly tokens: readonly number[];
}

/** What one llama.cpp process measured, and its next-token distribution after the prompt. */
interface PeerOutput {
  readonly runs: Run[];
  readonly probs: Array<[number, number]>;
}

/** One llama.cpp pass (a node process: load, then `repeat` runs). */
async function runPeer(
  dir: string,
  gguf: string,
  prompt: readonly number[],
  tokens: number,
  repeat: number,
): Promise<PeerOutput> {
  const script = `${dir}/peer_bench.mjs`;
  await Deno.writeTextFile(script, PEER_SCRIPT);
  const out = await new Deno.Command("node", {
    args: [
      "peer_bench.mjs",
      await Deno.realPath(gguf),
      JSON.stringify(prompt),
      String(tokens),
      String(repeat),
    ],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success || text === "") {
    throw new Error(
      `llama.cpp failed: ${new TextDecoder().decode(out.stderr)}${text}`,
    );
  }
  return JSON.parse(text.split("\n").at(-1)!);
}

/** One pass of ours: prefill the prompt, then greedy decode. */
function runOurs(
  model: InferenceModel,
  prompt: readonly number[],
  tokens: number,
): Run {
  const argmax = (l: Float32Array) =>
    l.reduce((b, v, i) => (v > l[b] ? i : b), 0);
  const session = model.session({ contextLength: prompt.length + tokens });
  try {
    const t0 = performance.now();
    const out = [argmax(session.prefill(prompt))];
    const t1 = performance.now();
    while (out.length < tokens) {
      out.push(argmax(session.decode(out[out.length - 1])));
    }
    const t2 = performance.now();
    return {
      prefill: prompt.length / ((t1 - t0) / 1000),
      decode: (out.length - 1) / ((t2 - t1) / 1000),
      tokens: out,
    };
  } finally {
    session.release();
  }
}

/** KL(llama.cpp ‖ ours) of the next-token distributions after `prompt`, in nats. */
function firstTokenKl(
  model: InferenceModel,
  prompt: readonly number[],
  probs: ReadonlyArray<readonly [number, number]>,
): number {
  const session = model.session({ contextLength: prompt.length });
  try {
    const logits = session.prefill(prompt);
    let max = -Infinity;
    for (const l of logits) max = Math.max(max, l);
    let z = 0;
    for (const l of logits) z += Math.exp(l - max);
    let kl = 0;
    for (const [t, p] of probs) {
      if (p > 0) kl += p * (Math.log(p) - (logits[t] - max - Math.log(z)));
    }
    return kl;
  } finally {
    session.release();
  }
}

/** Random latent weights at `preset`'s shape (ternary blocks, f16 embedding). */
function randomWeights(preset: string): ModelWeights {
  const config = PRESETS[preset as keyof typeof PRESETS];
  if (config === undefined) throw new Error(`--preset: unknown ${preset}`);
  const rng = new Rng(1);
  const params = new Map<string, Float32Array>();
  for (const s of modelTensors(config)) {
    const v = new Float32Array(tensorNumel(s));
    for (let i = 0; i < v.length; i++) {
      v[i] = s.kind === "norm" ? 1 : 0.05 * (2 * rng.nextFloat() - 1);
    }
    params.set(s.name, v);
  }
  return weightsFromTrainedRun({
    config,
    bitMap: resolveBitMap(config),
    tokenizer: tokenizerOfSize(config.vocab_size),
    params,
    lambda: 1,
  });
}

/** Runs the comparison; returns its figures. */
export async function run(): Promise<ReadonlyArray<BenchResult>> {
  const dir = opts["llama-dir"]!;
  await ensureNodeLlamaCpp(dir);
  const source = opts.model === undefined
    ? randomWeights(opts.preset!)
    : weightsFromTrainedRun(
      await Effect.runPromise(loadTrainedRun(opts.model)),
    );
  const ctx = source.config.max_seq_len;
  const promptLength = Number(opts.prompt ?? Math.max(1, ctx >> 2));
  const tokens = Number(opts.tokens ?? ctx - promptLength);
  const repeat = Number(opts.repeat);
  const tmp = await Deno.makeTempDir();
  const gguf = `${tmp}/model.gguf`;
  const size = await Effect.runPromise(
    writeGgufModel(gguf, source, { tq1: opts.tq1 }),
  );
  // Ours runs what llama.cpp runs: the GGUF read back.
  const weights = await Effect.runPromise(readGgufModel(gguf));
  const rng = new Rng(7);
  const prompt = opts.model === undefined
    ? Array.from({ length: promptLength }, () => rng.nextInt(256))
    : weights.tokenizer.encode(
      "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced no evidence that any irregularities took place. The jury further said in term-end presentments that the City Executive Committee, which had over-all charge of the election, deserves the praise",
    ).slice(0, promptLength);
  const model = await InferenceModel.create(weights);
  const peerRuns: Run[] = [];
  const ourRuns: Run[] = [];
  let kl = 0;
  try {
    for (let r = 0; r < repeat; r++) {
      const peer = await runPeer(dir, gguf, prompt, tokens, 1);
      peerRuns.push(...peer.runs);
      ourRuns.push(runOurs(model, prompt, tokens));
      if (r === 0) kl = firstTokenKl(model, prompt, peer.probs);
    }
  } finally {
    model.release();
    await Deno.remove(tmp, { recursive: true });
  }
  const peerTokens = peerRuns[0].tokens.slice(0, GREEDY_COMPARED);
  const ourTokens = ourRuns[0].tokens.slice(0, GREEDY_COMPARED);
  let same = 0;
  while (same < peerTokens.length && peerTokens[same] === ourTokens[same]) {
    same++;
  }
  const m = (runs: Run[], k: "prefill" | "decode") =>
    median(runs.map((x) => x[k]));
  const name = opts.model === undefined ? opts.preset! : "model";
  const results: BenchResult[] = [
    { name: `gguf_${name}_bytes`, value: size, unit: "bytes" },
    {
      name: `llama_cpp_${name}_prefill`,
      value: m(peerRuns, "prefill"),
      unit: "tokens/s",
    },
    {
      name: `ours_${name}_prefill`,
      value: m(ourRuns, "prefill"),
      unit: "tokens/s",
    },
    {
      name: `llama_cpp_${name}_decode`,
      value: m(peerRuns, "decode"),
      unit: "tokens/s",
    },
    {
      name: `ours_${name}_decode`,
      value: m(ourRuns, "decode"),
      unit: "tokens/s",
    },
    {
      name: `ours_over_llama_cpp_${name}_prefill`,
      value: m(ourRuns, "prefill") / m(peerRuns, "prefill"),
      unit: "ratio",
    },
    {
      name: `ours_over_llama_cpp_${name}_decode`,
      value: m(ourRuns, "decode") / m(peerRuns, "decode"),
      unit: "ratio",
    },
    {
      name: `greedy_${name}_same_leading_tokens`,
      value: same,
      unit: `of ${peerTokens.length}`,
    },
    { name: `next_token_kl_${name}`, value: kl, unit: "nats" },
  ];
  if (!opts.json) {
    console.log(
      `prompt ${prompt.length} tokens, ${tokens} generated, ${repeat} runs each, 1 thread`,
    );
    console.log(`llama.cpp greedy: ${peerTokens.join(" ")}`);
    console.log(`ours greedy:      ${ourTokens.join(" ")}`);
  }
  return results;
}

if (import.meta.main) {
  const results = await run();
  if (opts.json) console.log(JSON.stringify(results));
  else {
    for (const r of results) {
      console.log(
        `${r.name.padEnd(44)} ${
          (r.unit === "nats"
            ? r.value.toExponential(2)
            : r.value.toFixed(r.unit === "ratio" ? 3 : 1)).padStart(12)
        } ${r.unit}`,
      );
    }
  }
}
