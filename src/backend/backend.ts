/**
 * The compute engine's interface: a {@link Backend} owns tensor storage and runs
 * every kernel of training and inference. Two implementations sit behind it —
 * the CPU (WebAssembly SIMD for the hot loops, TypeScript for cheap element-wise
 * work) and WebGPU (WGSL kernels) — so the autograd tape and the model above it
 * are written once.
 *
 * Conventions, for every implementation:
 * - tensors are flat, row-major f32 (token ids i32); shapes travel as explicit
 *   arguments (the `*Shape` types of the reference ops);
 * - every kernel writes into an output tensor the caller allocated; a
 *   `*Backward` kernel ADDS into its gradient outputs (zero them first), so
 *   gradients of a value used twice accumulate without extra buffers;
 * - kernels are recorded in order and may run asynchronously: {@link
 *   Backend.read} is the only way to see a result, and it waits for all work
 *   recorded before it. Read back at the end of a step, not in the middle.
 *
 * @module
 */
import type {
  AttentionShape,
  CrossEntropyShape,
  EmbeddingShape,
  NormShape,
  RopeShape,
  WeightQuantMode,
} from "./reference/mod.ts";

export type {
  AttentionShape,
  CrossEntropyShape,
  EmbeddingShape,
  NormShape,
  RopeShape,
  RopeStyle,
  WeightQuantMode,
} from "./reference/mod.ts";

/** A tensor owned by a backend: a handle to its storage plus its element count. */
export interface Tensor {
  /** Element type: f32 for values, i32 for token ids and targets. */
  readonly dtype: "f32" | "i32";
  /** Number of elements. */
  readonly size: number;
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

/**
 * Checks one AdamW step's settings and the clipping limit, throwing a
 * `RangeError` naming the field: β1, β2 in [0, 1); lr, ε and weight decay
 * finite and ≥ 0; step an integer ≥ 1; maxNorm > 0 (`Infinity`: no clipping).
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
  if (!(maxNorm > 0)) {
    throw new RangeError(
      `maxNorm must be > 0 (Infinity: no clipping), got ${maxNorm}`,
    );
  }
}

/** The element-wise activations with a forward and a backward kernel. */
export type Activation = "silu" | "relu2";

/** The compute engine. See the module documentation for the conventions. */
export interface Backend {
  /** Which implementation this is. */
  readonly kind: "cpu" | "webgpu";
  /** Human-readable description (WASM variant, GPU adapter). */
  readonly description: string;

  /** A new zero-filled tensor. */
  zeros(size: number, dtype?: "f32" | "i32"): Tensor;
  /** A new tensor holding a copy of `data`. */
  upload(data: Float32Array | Int32Array): Tensor;
  /** Overwrites a tensor's contents with `data` (same length). */
  write(t: Tensor, data: Float32Array | Int32Array): void;
  /** A copy of the tensor's contents, after all recorded work has finished. */
  read(t: Tensor): Promise<Float32Array>;
  /** Returns the tensor's storage to the backend; the handle is dead afterwards. */
  release(t: Tensor): void;

  /** `t ← value` everywhere. */
  fill(t: Tensor, value: number): void;
  /** `t ← clamp(t, −limit, limit)` (latent-weight clipping). */
  clamp(t: Tensor, limit: number): void;
  /** `out ← a + b`. */
  add(a: Tensor, b: Tensor, out: Tensor): void;
  /** `out ← out + s · a` (axpy). */
  addScaled(out: Tensor, a: Tensor, s: number): void;
  /** `out ← a ⊙ b`. */
  mul(a: Tensor, b: Tensor, out: Tensor): void;
  /** `da += dout ⊙ b`, `db += dout ⊙ a` (either may be omitted). */
  mulBackward(
    dout: Tensor,
    a: Tensor,
    b: Tensor,
    da?: Tensor,
    db?: Tensor,
  ): void;

  /** `C (+)= op(A) · op(B)`. */
  matmul(a: Tensor, b: Tensor, c: Tensor, options: MatmulOptions): void;

  /** Weight fake-quant per mode (ternary absmean, binary, eightbit per row, f16), blended by λ. */
  fakeQuantWeights(
    w: Tensor,
    out: Tensor,
    mode: WeightQuantMode,
    options: FakeQuantOptions,
  ): void;
  /** Per-token int8 absmax fake-quant of activations, blended by λ. */
  fakeQuantActivations(x: Tensor, out: Tensor, options: FakeQuantOptions): void;

  /** `out[i] ← table[ids[i]]`. */
  embedding(
    table: Tensor,
    ids: Tensor,
    out: Tensor,
    shape: EmbeddingShape,
  ): void;
  /** `dtable[ids[i]] += dout[i]`. */
  embeddingBackward(
    dout: Tensor,
    ids: Tensor,
    dtable: Tensor,
    shape: EmbeddingShape,
  ): void;

  /** RMSNorm `out = x / sqrt(mean(x²) + ε) · g`; writes the per-row `rstd` for backward. */
  rmsnorm(
    x: Tensor,
    g: Tensor,
    out: Tensor,
    rstd: Tensor,
    shape: NormShape,
  ): void;
  /** Adds the RMSNorm gradients into `dx` and `dg`. */
  rmsnormBackward(
    dout: Tensor,
    x: Tensor,
    g: Tensor,
    rstd: Tensor,
    dx: Tensor,
    dg: Tensor,
    shape: NormShape,
  ): void;

  /** LayerNorm `out = (x − mean) / sqrt(var + ε) · w + b`; writes per-row `mean` and `rstd`. */
  layernorm(
    x: Tensor,
    w: Tensor,
    bias: Tensor,
    out: Tensor,
    mean: Tensor,
    rstd: Tensor,
    shape: NormShape,
  ): void;
  /** Adds the LayerNorm gradients into `dx`, `dw`, `dbias`. */
  layernormBackward(
    dout: Tensor,
    x: Tensor,
    w: Tensor,
    mean: Tensor,
    rstd: Tensor,
    dx: Tensor,
    dw: Tensor,
    dbias: Tensor,
    shape: NormShape,
  ): void;

  /** Rotary position embedding of `[batch, seqLen, heads·headDim]`. */
  rope(x: Tensor, out: Tensor, shape: RopeShape): void;
  /** `dx += R⁻¹ dout`. */
  ropeBackward(dout: Tensor, dx: Tensor, shape: RopeShape): void;

  /** Causal softmax attention with grouped KV heads; writes the probabilities for backward. */
  attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    probs: Tensor,
    shape: AttentionShape,
  ): void;
  /** Adds the attention gradients into `dq`, `dk`, `dv`. */
  attentionBackward(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    probs: Tensor,
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    shape: AttentionShape,
  ): void;

  /** `out ← f(x)` for an element-wise activation. */
  activation(kind: Activation, x: Tensor, out: Tensor): void;
  /** `dx += f'(x) ⊙ dout`. */
  activationBackward(
    kind: Activation,
    dout: Tensor,
    x: Tensor,
    dx: Tensor,
  ): void;

  /**
   * Softmax cross-entropy: writes `probs` (softmax of each row) and `losses`
   * `[2]` = (smoothed mean loss, unsmoothed mean NLL) over counted tokens.
   */
  crossEntropy(
    logits: Tensor,
    targets: Tensor,
    probs: Tensor,
    losses: Tensor,
    shape: CrossEntropyShape,
  ): void;
  /** `dlogits += scale · ∂loss/∂logits` for the smoothed mean loss. */
  crossEntropyBackward(
    probs: Tensor,
    targets: Tensor,
    dlogits: Tensor,
    scale: number,
    shape: CrossEntropyShape,
  ): void;

  /** `out[0] ← Σ_t Σ_i t_i²` over all the tensors. */
  sumSquares(ts: ReadonlyArray<Tensor>, out: Tensor): void;
  /**
   * One AdamW step in place. The gradient is multiplied by
   * `min(1, maxNorm / (sqrt(sumSq[0]) + 1e-6))` first (global-norm clipping
   * without a read-back); `maxNorm = Infinity` disables clipping.
   */
  adamw(
    p: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
    hyper: AdamWStep,
    sumSq: Tensor,
    maxNorm: number,
  ): void;
}
