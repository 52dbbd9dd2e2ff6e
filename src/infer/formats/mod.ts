/**
 * Model files: the `packed` format (ours), GGUF for llama.cpp's `bitnet`
 * architecture, and Hugging Face BitNet directories for PyTorch — writers
 * from inference weights (`ModelWeights`; latent weights for `hf`) and readers back.
 *
 * @example
 * ```ts
 * import { Effect } from "effect";
 * import { readPacked, writeGgufModel } from "@ternary/core/infer";
 *
 * const weights = await Effect.runPromise(readPacked("model.packed"));
 * await Effect.runPromise(writeGgufModel("model.gguf", weights));
 * ```
 *
 * @module
 */
export * from "./errors.ts";
export * from "./gguf.ts";
export * from "./gguf_file.ts";
export * from "./hf.ts";
export * from "./packed.ts";
