/**
 * The shapes and settings of the backend's ops, and their validators. The
 * reference ops, the CPU backend and the WebGPU backend all check their
 * arguments here, so the three accept and reject the same inputs with the
 * same `RangeError` message (the one exception, a backend's own limit such as
 * WebGPU's head dimension, is passed in and names the backend).
 *
 * @module
 */

/**
 * Weight quantizer of a BitLinear: the members of `QuantMode`
 * (`src/common/quant_mode.ts`), spelled out so the backend depends on no schema.
 */
export type WeightQuantMode = "f16" | "eightbit" | "ternary" | "binary";

/** Pairing of the elements RoPE rotates: `(i, i + d/2)` (NEOX) or `(2i, 2i + 1)`. */
export type RopeStyle = "neox" | "interleaved";

/** The element-wise activations with a forward and a backward kernel. */
export type Activation = "silu" | "relu2";

/** Shape of a normalization over `rows` vectors of width `dim`. */
export interface NormShape {
  /** Number of vectors (tokens). */
  readonly rows: number;
  /** Width normalized over. */
  readonly dim: number;
  /** Added to the mean square (RMSNorm) or variance (LayerNorm) before the square root; finite, ≥ 0. */
  readonly eps: number;
}

/**
 * Shape of causal attention over a batch of sequences. Layouts: q and out
 * `[batch, seqLen, numHeads·headDim]`; k and v `[batch, seqLen, numKvHeads·headDim]`;
 * query head h reads KV head `⌊h / (numHeads / numKvHeads)⌋`.
 */
export interface AttentionShape {
  /** Number of sequences. */
  readonly batch: number;
  /** Tokens per sequence. */
  readonly seqLen: number;
  /** Query heads. */
  readonly numHeads: number;
  /** Key/value heads; must divide `numHeads`. */
  readonly numKvHeads: number;
  /** Width of a head. */
  readonly headDim: number;
}

/** Shape and settings of a RoPE application to x `[batch, seqLen, heads·headDim]`. */
export interface RopeShape {
  /** Number of sequences. */
  readonly batch: number;
  /** Tokens per sequence. */
  readonly seqLen: number;
  /** Heads per token. */
  readonly heads: number;
  /** Width of a head; must be even. */
  readonly headDim: number;
  /** Frequency base (10000 in most models); finite, > 0. */
  readonly base: number;
  /** Pairing of rotated elements. */
  readonly style: RopeStyle;
  /** Position of token 0 of every sequence (tokens already in a KV cache); default 0. */
  readonly posOffset?: number;
}

/** Shape of an embedding table `[vocab, dim]`. */
export interface EmbeddingShape {
  /** Number of rows (token ids `0 … vocab−1`). */
  readonly vocab: number;
  /** Width of a row. */
  readonly dim: number;
}

/** Shape and settings of a softmax cross-entropy over `[rows, vocab]` logits. */
export interface CrossEntropyShape {
  /** Number of tokens (rows of logits). */
  readonly rows: number;
  /** Number of classes (columns of logits). */
  readonly vocab: number;
  /** Label smoothing ε ∈ [0, 1]; default 0. */
  readonly labelSmoothing?: number;
  /** Target value of tokens left out of loss and gradient (an i32); default −1. */
  readonly ignoreIndex?: number;
}

/** `C (+)= op(A) · op(B)` with op = identity or transpose; C is `[m, n]`, the inner size `k`. */
export interface MatmulOptions {
  /** Rows of C. */
  readonly m: number;
  /** Columns of C. */
  readonly n: number;
  /** Inner dimension. */
  readonly k: number;
  /** A is stored `[k, m]` and used transposed. */
  readonly transA?: boolean;
  /** B is stored `[n, k]` and used transposed (a PyTorch `[out, in]` weight). */
  readonly transB?: boolean;
  /** Add into C instead of overwriting it. */
  readonly accumulate?: boolean;
}

/** Shape of an integer BitLinear forward `y ← xq · wqᵀ` (see `Backend.ternaryLinear`). */
export interface LinearShape {
  /** Rows of `xq` and `y` (tokens). */
  readonly rows: number;
  /** Inputs: columns of `xq` and `wq`. */
  readonly k: number;
  /** Outputs: rows of `wq`, columns of `y`. */
  readonly n: number;
}

/** Returns `shape` after checking that every field is an integer ≥ 0 (a RangeError naming `op` and the field). */
export function checkLinearShape(op: string, shape: LinearShape): LinearShape {
  for (const name of ["rows", "k", "n"] as const) {
    const v = shape[name];
    if (!Number.isInteger(v) || v < 0) {
      throw new RangeError(`${op}: ${name} must be an integer ≥ 0`);
    }
  }
  return shape;
}

/** Fake quantization of a `[rows, cols]` tensor blended with the STE: `x + λ(Q(x) − x)`. */
export interface FakeQuantOptions {
  /** Rows (output channels of a weight, tokens of an activation). */
  readonly rows: number;
  /** Columns. */
  readonly cols: number;
  /** λ ∈ [0, 1]: 0 is full precision, 1 the hard quantizer. */
  readonly lambda: number;
  /** Ternary weights only: the dynamic-threshold variant (Δ = 0.7·mean|W|). */
  readonly dynamicThreshold?: boolean;
}

/** One AdamW step's hyper-parameters (PyTorch order; see `adamwStep`). */
export interface AdamWStep {
  /** Learning rate. */
  readonly lr: number;
  /** First-moment decay. */
  readonly beta1: number;
  /** Second-moment decay. */
  readonly beta2: number;
  /** Denominator ε. */
  readonly eps: number;
  /** Decoupled weight decay of this tensor (0 for norms and embeddings). */
  readonly weightDecay: number;
  /** Step number, 1 for the first. */
  readonly step: number;
}

/** A limit of one backend beyond the shared checks, named in its error. */
export interface BackendLimit {
  /** The backend, e.g. `"webgpu"`. */
  readonly backend: string;
  /** The largest value accepted. */
  readonly max: number;
}

// --- validators -----------------------------------------------------------------

/** Throws a `RangeError` unless `value` is a positive integer; `name` names the argument. */
export function checkDim(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
}

/** Throws a `RangeError` unless `value` is a non-negative integer. */
export function checkCount(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(
      `${name} must be a non-negative integer, got ${value}`,
    );
  }
}

/** Throws a `RangeError` unless `value` is finite. */
export function checkFinite(name: string, value: number): void {
  if (!Number.isFinite(value)) {
    throw new RangeError(`${name} must be finite, got ${value}`);
  }
}

/** Throws unless the clamp limit is a number (`Infinity`: no clamping). */
export function checkClampLimit(limit: number): void {
  if (Number.isNaN(limit)) throw new RangeError("limit must not be NaN");
}

/** Checks a {@link NormShape}: positive integer sizes, ε finite and ≥ 0. */
export function checkNormShape(shape: NormShape): void {
  checkDim("shape.rows", shape.rows);
  checkDim("shape.dim", shape.dim);
  if (!(shape.eps >= 0 && Number.isFinite(shape.eps))) {
    throw new RangeError(`shape.eps must be finite and ≥ 0, got ${shape.eps}`);
  }
}

/**
 * Checks an {@link AttentionShape} (positive integer sizes, `numKvHeads`
 * dividing `numHeads`, and `headDim ≤ maxHeadDim.max` where a backend has such
 * a limit); returns the query heads per KV head.
 */
export function checkAttentionShape(
  shape: AttentionShape,
  maxHeadDim?: BackendLimit,
): number {
  const { batch, seqLen, numHeads, numKvHeads, headDim } = shape;
  checkDim("shape.batch", batch);
  checkDim("shape.seqLen", seqLen);
  checkDim("shape.numHeads", numHeads);
  checkDim("shape.numKvHeads", numKvHeads);
  checkDim("shape.headDim", headDim);
  if (numHeads % numKvHeads !== 0) {
    throw new RangeError(
      `shape.numKvHeads (${numKvHeads}) must divide shape.numHeads (${numHeads})`,
    );
  }
  if (maxHeadDim !== undefined && headDim > maxHeadDim.max) {
    throw new RangeError(
      `shape.headDim must be ≤ ${maxHeadDim.max} on the ${maxHeadDim.backend} backend, got ${headDim}`,
    );
  }
  return numHeads / numKvHeads;
}

/**
 * Checks a {@link RopeShape}: positive integer sizes, even `headDim`, `base`
 * finite and > 0, a known style, `posOffset` a non-negative integer. Returns
 * the element count of x.
 */
export function checkRopeShape(shape: RopeShape): number {
  const { batch, seqLen, heads, headDim } = shape;
  checkDim("shape.batch", batch);
  checkDim("shape.seqLen", seqLen);
  checkDim("shape.heads", heads);
  checkDim("shape.headDim", headDim);
  if (headDim % 2 !== 0) {
    throw new RangeError(`shape.headDim must be even, got ${headDim}`);
  }
  if (!(shape.base > 0 && Number.isFinite(shape.base))) {
    throw new RangeError(
      `shape.base must be finite and > 0, got ${shape.base}`,
    );
  }
  if (shape.style !== "neox" && shape.style !== "interleaved") {
    throw new RangeError(
      `shape.style must be "neox" or "interleaved", got ${String(shape.style)}`,
    );
  }
  checkCount("shape.posOffset", shape.posOffset ?? 0);
  return batch * seqLen * heads * headDim;
}

/** Checks an {@link EmbeddingShape} and that every id is an integer in [0, vocab). */
export function checkEmbedding(
  shape: EmbeddingShape,
  ids: ArrayLike<number>,
): void {
  checkDim("shape.vocab", shape.vocab);
  checkDim("shape.dim", shape.dim);
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t];
    if (!Number.isInteger(id) || id < 0 || id >= shape.vocab) {
      throw new RangeError(
        `ids[${t}] must be an integer in [0, ${shape.vocab}), got ${id}`,
      );
    }
  }
}

/** The settings of a cross-entropy call, resolved by {@link checkCrossEntropy}. */
export interface CrossEntropySettings {
  /** Label smoothing ε. */
  readonly eps: number;
  /** The ignore index. */
  readonly ignore: number;
  /** Number of targets that are not ignored. */
  readonly count: number;
}

/**
 * Checks a {@link CrossEntropyShape} and its `targets` (`rows` of them, each
 * the ignore index or an integer in [0, vocab)); returns the settings.
 */
export function checkCrossEntropy(
  shape: CrossEntropyShape,
  targets: ArrayLike<number>,
): CrossEntropySettings {
  const { rows, vocab } = shape;
  checkDim("shape.rows", rows);
  checkDim("shape.vocab", vocab);
  const eps = shape.labelSmoothing ?? 0;
  if (!(eps >= 0 && eps <= 1)) {
    throw new RangeError(`shape.labelSmoothing must lie in [0, 1], got ${eps}`);
  }
  const ignore = shape.ignoreIndex ?? -1;
  if (!Number.isInteger(ignore) || ignore < -(2 ** 31) || ignore >= 2 ** 31) {
    throw new RangeError(
      `shape.ignoreIndex must be a 32-bit integer, got ${ignore}`,
    );
  }
  if (targets.length !== rows) {
    throw new RangeError(
      `targets must have ${rows} elements, got ${targets.length}`,
    );
  }
  let count = 0;
  for (let r = 0; r < rows; r++) {
    const y = targets[r];
    if (y === ignore) continue;
    if (!(Number.isInteger(y) && y >= 0 && y < vocab)) {
      throw new RangeError(
        `targets[${r}] must be ${ignore} (ignored) or an integer in [0, ${vocab}), got ${y}`,
      );
    }
    count++;
  }
  return { eps, ignore, count };
}

/** Checks {@link MatmulOptions} (named `shape` in errors): m, n and k positive integers. */
export function checkMatmul(options: MatmulOptions): void {
  checkDim("shape.m", options.m);
  checkDim("shape.n", options.n);
  checkDim("shape.k", options.k);
}

/** Throws unless `mode` is a {@link WeightQuantMode}. */
export function checkWeightQuantMode(mode: WeightQuantMode): void {
  if (
    mode !== "f16" && mode !== "eightbit" && mode !== "ternary" &&
    mode !== "binary"
  ) {
    throw new RangeError(
      `mode must be "f16", "eightbit", "ternary" or "binary", got ${
        String(mode)
      }`,
    );
  }
}

/**
 * Checks {@link FakeQuantOptions} (rows and cols non-negative integers, λ in
 * [0, 1]) and, for weights, the mode. Returns `rows · cols`.
 */
export function checkFakeQuant(
  options: FakeQuantOptions,
  mode?: WeightQuantMode,
): number {
  checkCount("options.rows", options.rows);
  checkCount("options.cols", options.cols);
  const lambda = options.lambda;
  if (!(lambda >= 0 && lambda <= 1)) {
    throw new RangeError(`options.lambda must be in [0, 1], got ${lambda}`);
  }
  if (mode !== undefined) checkWeightQuantMode(mode);
  return options.rows * options.cols;
}

/**
 * Checks one AdamW step's settings and the clipping limit: β1, β2 in [0, 1);
 * lr, ε and weight decay finite and ≥ 0; step an integer ≥ 1; maxNorm > 0
 * (`Infinity`: no clipping).
 */
export function checkAdamWStep(hyper: AdamWStep, maxNorm: number): void {
  for (const key of ["beta1", "beta2"] as const) {
    const b = hyper[key];
    if (!(b >= 0 && b < 1)) {
      throw new RangeError(`hyper.${key} must lie in [0, 1), got ${b}`);
    }
  }
  for (const key of ["lr", "eps", "weightDecay"] as const) {
    const x = hyper[key];
    if (!(x >= 0 && Number.isFinite(x))) {
      throw new RangeError(`hyper.${key} must be finite and ≥ 0, got ${x}`);
    }
  }
  if (!Number.isInteger(hyper.step) || hyper.step < 1) {
    throw new RangeError(
      `hyper.step must be an integer ≥ 1, got ${hyper.step}`,
    );
  }
  checkMaxNorm(maxNorm);
}

/** Throws unless the global-norm clipping limit is > 0 (`Infinity`: no clipping). */
export function checkMaxNorm(maxNorm: number): void {
  if (!(maxNorm > 0)) {
    throw new RangeError(
      `maxNorm must be > 0 (Infinity: no clipping), got ${maxNorm}`,
    );
  }
}

/** Throws unless `kind` is an {@link Activation}. */
export function checkActivation(kind: Activation): void {
  if (kind !== "silu" && kind !== "relu2") {
    throw new RangeError(
      `kind must be "silu" or "relu2", got ${String(kind)}`,
    );
  }
}
