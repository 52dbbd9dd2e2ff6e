/**
 * Plain-TypeScript reference implementations of every neural-network op, each a
 * forward and a backward written next to its formula. They are the ground truth that
 * the WASM and WGSL kernels are tested against, and the f64 path of gradient checks.
 *
 * Conventions: flat row-major {@link Arr} tensors with explicit shapes; forwards
 * return fresh outputs (plus what backward needs); backwards ACCUMULATE into the
 * gradient buffers they are given and skip absent ones.
 *
 * @module
 */
export { alloc, type Arr } from "./arr.ts";
export {
  linearBackward,
  linearForward,
  type LinearShape,
  matmulBackward,
  matmulForward,
  type MatmulShape,
} from "./matmul.ts";
export {
  actFakeQuant,
  bitlinearBackward,
  type BitLinearForward,
  bitlinearForward,
  type BitLinearShape,
  weightFakeQuant,
  type WeightQuantMode,
} from "./bitlinear.ts";
export {
  embeddingBackward,
  embeddingForward,
  type EmbeddingShape,
} from "./embedding.ts";
export {
  layernormBackward,
  type LayerNormForward,
  layernormForward,
  type NormShape,
  rmsnormBackward,
  type RmsNormForward,
  rmsnormForward,
} from "./norm.ts";
export {
  ropeBackward,
  ropeForward,
  type RopeShape,
  type RopeStyle,
} from "./rope.ts";
export {
  attentionBackward,
  type AttentionForward,
  attentionForward,
  type AttentionShape,
} from "./attention.ts";
export {
  addBackward,
  addForward,
  mulBackward,
  mulForward,
  relu2Backward,
  relu2Forward,
  scaleBackward,
  scaleForward,
  sigmoid,
  siluBackward,
  siluForward,
  swigluBackward,
  swigluForward,
} from "./activations.ts";
export {
  crossEntropyBackward,
  type CrossEntropyForward,
  crossEntropyForward,
  type CrossEntropyShape,
} from "./loss.ts";
export { type AdamWConfig, adamwStep, clipGradNorm } from "./adamw.ts";
