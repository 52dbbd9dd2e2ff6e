// Shared by the training tests: a small model, a small generated text, and a
// short run of them on the CPU backend.
import { Effect, Layer } from "effect";
import { CpuBackend } from "../../src/backend/cpu/cpu_backend.ts";
import { ComputeBackend } from "../../src/backend/service.ts";
import { PRESETS } from "../../src/common/presets.ts";
import type { OneBitLlmConfig } from "../../src/common/config.ts";
import { type RunOptions, runTraining } from "../../src/train/run.ts";
import type { RunResult } from "../../src/train/run.ts";

/** The backend every training test runs on. */
export const backend: CpuBackend = await CpuBackend.create();

/** {@link backend} as the ComputeBackend service. */
export const backendLayer: Layer.Layer<ComputeBackend> = Layer.succeed(
  ComputeBackend,
  backend,
);

/** A one-layer model small enough for a test to train in seconds. */
export const config: OneBitLlmConfig = {
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
export function syntheticText(): string {
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

/** Runs {@link runTraining} on {@link backend}. */
export function train(options: RunOptions): Promise<RunResult> {
  return Effect.runPromise(
    Effect.scoped(runTraining(options)).pipe(Effect.provide(backendLayer)),
  );
}
