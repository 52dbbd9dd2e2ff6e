/**
 * Inference: choosing tokens from logits (greedy, temperature, top-k, top-p).
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
export * from "./sampling.ts";
