/**
 * The math of ternary models: quantizers, the straight-through estimator and
 * its schedules, bit packing, and honest storage statistics.
 *
 * @example Quantize a weight matrix to ternary and pack it
 * ```ts
 * import { absmeanTernary, packBase3, unpackBase3 } from "@ternary/core/core";
 *
 * const { codes, scale } = absmeanTernary(new Float32Array([0.4, -0.05, -0.9, 0.2]));
 * const bytes = packBase3(codes); // 5 weights per byte
 * console.log(scale, unpackBase3(bytes, codes.length));
 * ```
 *
 * @module
 */
export * from "./f16.ts";
export * from "./packing.ts";
export * from "./gguf_blocks.ts";
export * from "./tensors.ts";
export * from "./compression.ts";
export * from "./quantize.ts";
export * from "./ste.ts";
export * from "./schedule.ts";
export * from "./model.ts";
