/**
 * ternary-core: train, compress and run 1.58-bit (ternary) language models.
 *
 * The parts are also importable on their own: `@ternary/core/core` (quantizers,
 * packing, compression stats) and `@ternary/core/common` (configs, bit maps,
 * presets).
 *
 * @example
 * ```ts
 * import { compressionStats, preset } from "@ternary/core";
 *
 * const stats = compressionStats(preset("ref-4m"));
 * console.log(`${stats.bitsPerParam.toFixed(2)} bits/param, ${stats.ratio.toFixed(1)}× smaller than f16`);
 * ```
 *
 * @module
 */
export * from "./src/core/mod.ts";
export * from "./src/common/mod.ts";
export * from "./src/train/mod.ts";
export * from "./src/search/mod.ts";
export * from "./src/infer/mod.ts";
export * from "./src/backend/mod.ts";
