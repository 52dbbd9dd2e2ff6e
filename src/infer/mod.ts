/**
 * Inference: a trained model's weights quantized once ({@link ModelWeights}),
 * run forward on the CPU without an autograd tape ({@link InferenceModel}:
 * batched scoring, and prefill + decode over a preallocated KV cache; the
 * same on a WebGPU device with {@link WebGpuInferenceModel}),
 * sampling (greedy, temperature, top-k, top-p, min-p, penalties, seeded) and
 * generation as an effect `Stream` of tokens with their text.
 *
 * @example
 * ```ts
 * import { sampleToken } from "@ternary/core/infer";
 *
 * const logits = new Float32Array([0.1, 2.5, -1.0, 0.7]);
 * console.log(sampleToken(logits, { temperature: 0 }, 0)); // 1, greedy
 * console.log(sampleToken(logits, { temperature: 0.8, topK: 2 }, Math.random()));
 * ```
 *
 * @module
 */
export * from "./errors.ts";
export * from "./evaluate.ts";
export * from "./formats/mod.ts";
export * from "./from_latents.ts";
export * from "./generate.ts";
export * from "./load.ts";
export * from "./runtime.ts";
export * from "./sampling.ts";
export * from "./text_stream.ts";
export * from "./weights.ts";
export * from "./webgpu_runtime.ts";
