/**
 * The compute engine's interface: a {@link Backend} owns tensor storage and runs
 * every kernel of training and inference. Two implementations sit behind it —
 * the CPU (WebAssembly SIMD for the hot loops, TypeScript for cheap element-wise
 * work) and WebGPU (WGSL kernels) — so the autograd tape and the model above it
 * are written once.
 *
 * Conventions, for every implementation:
 * - tensors are flat, row-major f32 (token ids i32); shapes travel as explicit
 *   arguments (the `*Shape` types of `./shapes.ts`, whose validators every
 *   implementation and the reference ops share);
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
  Activation,
  AdamWStep,
  AttentionShape,
  CrossEntropyShape,
  EmbeddingShape,
  FakeQuantOptions,
  LinearShape,
  MatmulOptions,
  NormShape,
  RopeShape,
  WeightQuantMode,
} from "./shapes.ts";

export type {
  Activation,
  AdamWStep,
  AttentionShape,
  CrossEntropyShape,
  EmbeddingShape,
  FakeQuantOptions,
  LinearShape,
  MatmulOptions,
  NormShape,
  RopeShape,
  RopeStyle,
  WeightQuantMode,
} from "./shapes.ts";
export { checkAdamWStep } from "./shapes.ts";

/** A tensor owned by a backend: a handle to its storage plus its element count. */
export interface Tensor {
  /** Element type: f32 for values, i32 for token ids and targets. */
  readonly dtype: "f32" | "i32";
  /** Number of elements. */
  readonly size: number;
}

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
  /**
   * Optional integer form of a BitLinear forward at λ = 1: `y ← xq · wqᵀ`
   * (`xq` rows × k, `wq` n × k, `y` rows × n) where `xq` is the output of
   * {@link fakeQuantActivations} at λ = 1 and every element of `wq` is −a, 0
   * or +a for one a ≥ 0 (ternary or binary at λ = 1), computed as int8 ×
   * ternary products rescaled by the two scales. Agrees with `matmul` to
   * float rounding; throws if `wq` is not of that form.
   */
  ternaryLinear?(
    xq: Tensor,
    wq: Tensor,
    y: Tensor,
    shape: LinearShape,
  ): void;

  /**
   * Optional integer form of an `eightbit` BitLinear forward at λ = 1:
   * `y ← xq · Q(w)ᵀ` (`xq` rows × k, `w` n × k latent weights, `y` rows × n)
   * where `xq` is the output of {@link fakeQuantActivations} at λ = 1 and Q
   * the `eightbit` weight quantizer of {@link fakeQuantWeights} (int8 codes
   * with a step per row), computed as int8 × int8 products rescaled by the
   * two scales. Agrees with `matmul(xq, Q(w))` to float rounding.
   */
  int8Linear?(
    xq: Tensor,
    w: Tensor,
    y: Tensor,
    shape: LinearShape,
  ): void;

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
