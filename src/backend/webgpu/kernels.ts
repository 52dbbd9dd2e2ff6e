/**
 * Compute pipelines for the WGSL kernels of `kernels/` and typed wrappers that
 * record dispatches into a caller-supplied `GPUCommandEncoder`. Nothing here submits
 * or reads back: a step records everything into one encoder and hands it to
 * {@link BufferPool.submit} or {@link BufferPool.readBack} at the end.
 *
 * Binding numbers and uniform layouts are not written here: `kernels.wgsl.ts`
 * (generated from the WGSL by `scripts/build_kernels.ts`) lists each module's
 * bindings and uniform fields, and a wrapper names the buffers and uniform values
 * of a dispatch by their WGSL names. The element-wise kernels are one table.
 *
 * All tensors are f32, row-major, and start at element 0 of their buffer (a buffer
 * may be larger than the tensor: pooled buffers are rounded up to a size class).
 *
 * @module
 */
import type { GpuAdapterInfo, GpuDeviceShape } from "./adapter.ts";
import type { BufferPool } from "./buffer_pool.ts";
import { MAX_INT8_STEP, QUANT_EPS } from "../numeric.ts";
import { kernelSource, type UniformType } from "./kernel_layout.ts";
import { KERNEL_MODULES, type KernelName } from "./kernels.wgsl.ts";

/**
 * Matmul implementation: `"register"` (8×4 outputs per invocation, no workgroup
 * memory; fastest on software adapters such as llvmpipe) or `"shared"` (16×16
 * workgroups over 64×64 tiles staged in workgroup memory; fastest on real GPUs).
 */
export type MatmulVariant = "register" | "shared";

/** The matmul variant for an adapter: `"register"` on a fallback adapter, else `"shared"`. */
export function defaultMatmulVariant(info: GpuAdapterInfo): MatmulVariant {
  return info.isFallback ? "register" : "shared";
}

/** Arguments of {@link WebGpuKernels.matmul}. */
export interface MatmulArgs {
  /** op(A) is m×k: A is stored m×k, or k×m when `transA`. */
  readonly a: GPUBuffer;
  /** op(B) is k×n: B is stored k×n, or n×k when `transB`. */
  readonly b: GPUBuffer;
  /** C, m×n. */
  readonly c: GPUBuffer;
  /** Rows of C. */
  readonly m: number;
  /** Columns of C. */
  readonly n: number;
  /** Inner dimension. */
  readonly k: number;
  /** Use Aᵀ. */
  readonly transA?: boolean;
  /** Use Bᵀ. */
  readonly transB?: boolean;
  /** Add to C instead of overwriting it. */
  readonly accumulate?: boolean;
  /** Scale of the product (default 1). */
  readonly alpha?: number;
  /** Number of independent products (default 1). */
  readonly batch?: number;
  /** Elements between consecutive A matrices (default m·k; 0 broadcasts A). */
  readonly strideA?: number;
  /** Elements between consecutive B matrices (default k·n; 0 broadcasts B). */
  readonly strideB?: number;
  /** Elements between consecutive C matrices (default m·n). */
  readonly strideC?: number;
  /** Overrides the kernels' default variant. */
  readonly variant?: MatmulVariant;
}

/** Grouping of token positions by id for {@link WebGpuKernels.embeddingBackward}. */
export interface EmbeddingGradIndex {
  /** `[distinct ids (unique) | run offsets (unique + 1) | positions (tokens)]`, to upload. */
  readonly data: Uint32Array<ArrayBuffer>;
  /** Number of distinct ids. */
  readonly unique: number;
  /** Number of token positions. */
  readonly tokens: number;
}

/**
 * Groups token positions by id (a counting sort, O(tokens + vocab)) so the
 * embedding gradient needs no float atomics: `data` lists the distinct ids in
 * increasing order, where each one's run of positions starts and ends, and the
 * positions themselves.
 */
export function embeddingGradIndex(
  ids: ArrayLike<number>,
  vocab: number,
): EmbeddingGradIndex {
  requireInt("vocab", vocab, 1);
  const counts = new Uint32Array(vocab);
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t];
    if (!Number.isInteger(id) || id < 0 || id >= vocab) {
      throw new Error(`ids[${t}] = ${id} is not an integer in [0, ${vocab})`);
    }
    counts[id]++;
  }
  let unique = 0;
  for (let v = 0; v < vocab; v++) if (counts[v] > 0) unique++;
  const tokens = ids.length;
  const data = new Uint32Array(2 * unique + 1 + tokens);
  const next = new Uint32Array(vocab); // write cursor of each id's run
  let u = 0;
  let offset = 0;
  for (let v = 0; v < vocab; v++) {
    if (counts[v] === 0) continue;
    data[u] = v;
    data[unique + u] = offset;
    next[v] = offset;
    offset += counts[v];
    u++;
  }
  data[2 * unique] = offset;
  const order = 2 * unique + 1;
  for (let t = 0; t < tokens; t++) data[order + next[ids[t]]++] = t;
  return { data, unique, tokens };
}

/**
 * RoPE cos/sin table for {@link WebGpuKernels.rope}, computed in f64:
 * `table[p·h + i] = cos(p·θ_i)`, `table[maxPositions·h + p·h + i] = sin(p·θ_i)`,
 * `θ_i = base^(−2i/rotaryDim)`, `h = rotaryDim / 2`.
 */
export function ropeTable(
  maxPositions: number,
  rotaryDim: number,
  base: number,
): Float32Array<ArrayBuffer> {
  requireInt("maxPositions", maxPositions, 1);
  requireInt("rotaryDim", rotaryDim, 2);
  if (rotaryDim % 2 !== 0) {
    throw new Error(`rotaryDim must be even, got ${rotaryDim}`);
  }
  if (!(base > 0 && Number.isFinite(base))) {
    throw new Error(`base must be finite and > 0, got ${base}`);
  }
  const half = rotaryDim / 2;
  const table = new Float32Array(2 * maxPositions * half);
  for (let p = 0; p < maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * Math.pow(base, (-2 * i) / rotaryDim);
      table[p * half + i] = Math.cos(angle);
      table[maxPositions * half + p * half + i] = Math.sin(angle);
    }
  }
  return table;
}

/** Shape of a causal attention call; see {@link WebGpuKernels.attentionForward}. */
export interface AttentionShape {
  /** batch · seqLen. */
  readonly tokens: number;
  /** Sequence length; tokens must be a multiple of it. */
  readonly seqLen: number;
  /** Query heads. */
  readonly heads: number;
  /** Key/value heads (default `heads`); must divide `heads` (grouped-query attention). */
  readonly kvHeads?: number;
  /** Dimensions per head, at most 256. */
  readonly headDim: number;
  /** Score scale (default 1/sqrt(headDim)). */
  readonly scale?: number;
}

/** Options of {@link WebGpuKernels}. */
export interface WebGpuKernelsOptions {
  /** Matmul variant when a call names none (default: {@link defaultMatmulVariant}). */
  readonly matmulVariant?: MatmulVariant;
}

/**
 * Arguments of an element-wise wrapper: the buffers `B` (each of `n` elements),
 * the scalars `S`, and `n`.
 */
export type ElementwiseArgs<B extends string, S extends string = never> =
  & { readonly [K in B]: GPUBuffer }
  & { readonly [K in S]: number }
  & { readonly n: number };

/** An element-wise wrapper: records one dispatch over `args.n` values. */
export type Elementwise<B extends string, S extends string = never> = (
  encoder: GPUCommandEncoder,
  args: ElementwiseArgs<B, S>,
) => void;

// The element-wise kernels: module and entry point, the WGSL binding of each buffer
// argument (n elements each), and the uniform `alpha` of arith.wgsl: the scalar
// argument it comes from, or a constant.
const ELEMENTWISE = {
  add: ["arith", "add", { a: "in0", b: "in1", out: "out0" }, 1],
  mul: ["arith", "mul", { a: "in0", b: "in1", out: "out0" }, 1],
  mulAccumulate: ["arith", "mul_acc", { a: "in0", b: "in1", out: "out0" }, 1],
  axpy: ["arith", "axpy", { x: "in0", y: "out0" }, "alpha"],
  scale: ["arith", "scale", { a: "in0", out: "out0" }, "alpha"],
  fill: ["arith", "fill", { out: "out0" }, "value"],
  clampAbs: ["arith", "clamp_abs", { x: "out0" }, "limit"],
  siluForward: ["activations", "silu_fwd", { x: "in0", out: "out0" }],
  siluBackward: ["activations", "silu_bwd", {
    x: "in0",
    dy: "in1",
    dx: "out0",
  }],
  relu2Forward: ["activations", "relu2_fwd", { x: "in0", out: "out0" }],
  relu2Backward: [
    "activations",
    "relu2_bwd",
    { x: "in0", dy: "in1", dx: "out0" },
  ],
  swigluForward: [
    "activations",
    "swiglu_fwd",
    { gate: "in0", up: "in1", out: "out0" },
  ],
  swigluBackward: ["activations", "swiglu_bwd", {
    gate: "in0",
    up: "in1",
    dy: "in2",
    dGate: "out0",
    dUp: "out1",
  }],
} as const satisfies Record<
  string,
  readonly [KernelName, string, Record<string, string>, (string | number)?]
>;

// Override constants of the modules compiled in several variants.
const VARIANTS: Partial<Record<KernelName, Record<string, number>[]>> = {
  matmul_register: transposes(),
  matmul_shared: transposes(),
};

function transposes(): Record<string, number>[] {
  return [0, 1].flatMap((a) => [0, 1].map((b) => ({ TRANS_A: a, TRANS_B: b })));
}

// Caps the workgroups of grid-stride kernels: enough to fill an H100, and every
// dimension stays under the 65535 limit.
const MAX_GROUPS = 4096;
const REDUCE_GROUPS = 256; // = the finish pass's workgroup size

// One storage binding of a dispatch, keyed by its WGSL name: the argument's name
// (for errors), the buffer, and the number of 4-byte elements the kernel touches.
type Bind = readonly [string, GPUBuffer, number];

type Groups = readonly [number, number, number];

function requireInt(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min || value > 0xffffffff) {
    throw new Error(
      `${name} must be an integer in [${min}, 2^32), got ${value}`,
    );
  }
}

function requireFinite(name: string, value: number): void {
  if (!Number.isFinite(value)) {
    throw new Error(`${name} must be finite, got ${value}`);
  }
}

function groupsFor(items: number, perGroup: number): Groups {
  return [Math.min(Math.max(Math.ceil(items / perGroup), 1), MAX_GROUPS), 1, 1];
}

/**
 * The WebGPU kernels of one device: compiled pipelines (created on first use, or
 * all at once by {@link WebGpuKernels.compileAll}) and one recording method per
 * kernel. Every method validates its arguments (sizes, ranges, no output aliasing
 * an input) and throws an `Error` naming the offending argument before recording.
 */
export class WebGpuKernels {
  /** The device the pipelines belong to. */
  readonly device: GPUDevice;
  /** Where transient uniform buffers come from. */
  readonly pool: BufferPool;
  /** Variant of {@link WebGpuKernels.matmul} when a call names none. */
  readonly matmulVariant: MatmulVariant;
  readonly #maxGroups: number;
  readonly #modules = new Map<KernelName, GPUShaderModule>();
  readonly #pipelines = new Map<string, GPUComputePipeline>();
  // Per-workgroup partial sums of the two-pass reductions, taken from the pool for
  // the kernels' lifetime; shared by every reduction because the dispatches of an
  // encoder run in order.
  readonly #partials: GPUBuffer;
  // γ and the kept-weight mean of the weight quantizers, and the kept partial sums;
  // taken from the pool on first use (shared like #partials).
  #stats: GPUBuffer | undefined;
  #kept: GPUBuffer | undefined;

  /** Kernels for `gpu`, taking uniform buffers from `pool`. */
  constructor(
    gpu: GpuDeviceShape,
    pool: BufferPool,
    options: WebGpuKernelsOptions = {},
  ) {
    if (pool.device !== gpu.device) {
      throw new Error("pool must belong to gpu.device");
    }
    this.device = gpu.device;
    this.pool = pool;
    this.matmulVariant = options.matmulVariant ??
      defaultMatmulVariant(gpu.info);
    this.#maxGroups = gpu.limits.maxComputeWorkgroupsPerDimension;
    this.#partials = pool.acquire(REDUCE_GROUPS * 4);
  }

  /**
   * Creates every pipeline now; rejects with the compiler's message if any WGSL
   * module or pipeline fails validation.
   */
  async compileAll(): Promise<void> {
    this.device.pushErrorScope("validation");
    for (const [key, module] of Object.entries(KERNEL_MODULES)) {
      const kernel = key as KernelName;
      for (const entry of Object.keys(module.entries)) {
        for (const constants of VARIANTS[kernel] ?? [undefined]) {
          this.#pipeline(kernel, entry, constants);
        }
      }
    }
    const error = await this.device.popErrorScope();
    if (error !== null) {
      throw new Error(`WGSL pipeline creation failed: ${error.message}`);
    }
  }

  /**
   * `C = alpha·op(A)·op(B)` (`+ C` when `accumulate`) for each of `batch` matrices,
   * f32 accumulation in k order (register) or in slices of 16 (shared).
   */
  matmul(encoder: GPUCommandEncoder, args: MatmulArgs): void {
    const { m, n, k } = args;
    requireInt("m", m, 1);
    requireInt("n", n, 1);
    requireInt("k", k, 1);
    const batch = args.batch ?? 1;
    requireInt("batch", batch, 1);
    const strideA = args.strideA ?? m * k;
    const strideB = args.strideB ?? k * n;
    const strideC = args.strideC ?? m * n;
    requireInt("strideA", strideA, 0);
    requireInt("strideB", strideB, 0);
    requireInt("strideC", strideC, m * n);
    const alpha = args.alpha ?? 1;
    requireFinite("alpha", alpha);
    const variant = args.variant ?? this.matmulVariant;
    if (variant !== "register" && variant !== "shared") {
      throw new Error(
        `variant must be "register" or "shared", got ${String(variant)}`,
      );
    }
    // register: 8×8 invocations of 8×4 outputs = 64×32 per workgroup; shared: 64×64.
    const groups = [
      Math.ceil(n / (variant === "register" ? 32 : 64)),
      Math.ceil(m / 64),
      batch,
    ] as const;
    ["n", "m", "batch"].forEach((name, i) => {
      if (groups[i] > this.#maxGroups) {
        throw new Error(
          `${name} = ${
            [n, m, batch][i]
          } needs more workgroups than the device allows`,
        );
      }
    });
    this.#launch(
      encoder,
      `matmul_${variant}`,
      "main",
      {
        a: ["a", args.a, (batch - 1) * strideA + m * k],
        b: ["b", args.b, (batch - 1) * strideB + k * n],
        c: ["c", args.c, (batch - 1) * strideC + m * n],
      },
      {
        m,
        n,
        k,
        accumulate: args.accumulate ? 1 : 0,
        stride_a: strideA,
        stride_b: strideB,
        stride_c: strideC,
        alpha,
      },
      groups,
      { TRANS_A: args.transA ? 1 : 0, TRANS_B: args.transB ? 1 : 0 },
    );
  }

  /** `out = a + b`, element-wise over `n` values. */
  readonly add: Elementwise<"a" | "b" | "out"> = this.#op("add");

  /** `y += alpha·x` over `n` values (y is updated in place). */
  readonly axpy: Elementwise<"x" | "y", "alpha"> = this.#op("axpy");

  /** `out = alpha·a` over `n` values. */
  readonly scale: Elementwise<"a" | "out", "alpha"> = this.#op("scale");

  /** `out = value` over `n` values. */
  readonly fill: Elementwise<"out", "value"> = this.#op("fill");

  /** `x = max(min(x, limit), −limit)` in place over `n` values (latent-weight clipping). */
  readonly clampAbs: Elementwise<"x", "limit"> = this.#op("clampAbs");

  /** `out = a ⊙ b` over `n` values. */
  readonly mul: Elementwise<"a" | "b" | "out"> = this.#op("mul");

  /** `out += a ⊙ b` over `n` values (fused multiply-add). */
  readonly mulAccumulate: Elementwise<"a" | "b" | "out"> = this.#op(
    "mulAccumulate",
  );

  /** SiLU: `out = x·σ(x)`. */
  readonly siluForward: Elementwise<"x" | "out"> = this.#op("siluForward");

  /** SiLU backward: `dx = dy·σ(x)·(1 + x·(1 − σ(x)))`. */
  readonly siluBackward: Elementwise<"x" | "dy" | "dx"> = this.#op(
    "siluBackward",
  );

  /** ReLU²: `out = max(x, 0)²`. */
  readonly relu2Forward: Elementwise<"x" | "out"> = this.#op("relu2Forward");

  /** ReLU² backward: `dx = dy·2·max(x, 0)`. */
  readonly relu2Backward: Elementwise<"x" | "dy" | "dx"> = this.#op(
    "relu2Backward",
  );

  /** SwiGLU: `out = silu(gate)·up`. */
  readonly swigluForward: Elementwise<"gate" | "up" | "out"> = this.#op(
    "swigluForward",
  );

  /** SwiGLU backward: `dGate = dy·up·silu'(gate)`, `dUp = dy·silu(gate)`. */
  readonly swigluBackward: Elementwise<"gate" | "up" | "dy" | "dGate" | "dUp"> =
    this.#op("swigluBackward");

  /**
   * RMSNorm per row of x (rows × dim): `r = 1/sqrt(mean(x²) + eps)`,
   * `out = x·r·weight`; saves `r` per row in `invRms` for the backward pass.
   */
  rmsNormForward(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly weight: GPUBuffer;
      readonly out: GPUBuffer;
      readonly invRms: GPUBuffer;
      readonly rows: number;
      readonly dim: number;
      readonly eps: number;
    },
  ): void {
    const { rows, dim } = args;
    requireFinite("eps", args.eps);
    this.#launch(
      encoder,
      "rmsnorm",
      "fwd",
      {
        x: ["x", args.x, rows * dim],
        w: ["weight", args.weight, dim],
        out0: ["out", args.out, rows * dim],
        rms_out: ["invRms", args.invRms, rows],
      },
      rowParams(rows, dim, { eps: args.eps, accumulate: 0 }),
      this.#rows(rows),
    );
  }

  /**
   * RMSNorm backward, given `invRms` from the forward pass:
   * `dx_j = r·w_j·dy_j − r³·x_j·(1/dim)·Σ_i dy_i·w_i·x_i`;
   * `dWeight_j (+)= Σ_rows dy_j·x_j·r` (added when `accumulateWeight`).
   */
  rmsNormBackward(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly weight: GPUBuffer;
      readonly dy: GPUBuffer;
      readonly invRms: GPUBuffer;
      readonly dx: GPUBuffer;
      readonly dWeight: GPUBuffer;
      readonly rows: number;
      readonly dim: number;
      readonly accumulateWeight?: boolean;
    },
  ): void {
    const { rows, dim } = args;
    const uniform = rowParams(rows, dim, {
      eps: 0,
      accumulate: args.accumulateWeight ? 1 : 0,
    });
    const x: Bind = ["x", args.x, rows * dim];
    const dy: Bind = ["dy", args.dy, rows * dim];
    const rms: Bind = ["invRms", args.invRms, rows];
    this.#launch(
      encoder,
      "rmsnorm",
      "bwd_dx",
      {
        x,
        w: ["weight", args.weight, dim],
        dy,
        rms_in: rms,
        out0: ["dx", args.dx, rows * dim],
      },
      uniform,
      this.#rows(rows),
    );
    this.#launch(
      encoder,
      "rmsnorm",
      "bwd_dw",
      {
        x,
        dy,
        rms_in: rms,
        out0: ["dWeight", args.dWeight, dim],
      },
      uniform,
      groupsFor(dim, 128),
    );
  }

  /** `out[outIndex] = mean |x|` over `n` values (γ of BitNet's weight quantizer). */
  absMean(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly n: number;
      readonly out: GPUBuffer;
      readonly outIndex?: number;
    },
  ): void {
    requireInt("n", args.n, 1);
    this.#reduce(encoder, args, 0, 1 / args.n, false);
  }

  /**
   * `out[outIndex] (+)= Σ x²` over `n` values; with `accumulate`, calls over all
   * gradients sum into one slot: the squared global norm.
   */
  sumSquares(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly n: number;
      readonly out: GPUBuffer;
      readonly outIndex?: number;
      readonly accumulate?: boolean;
    },
  ): void {
    requireInt("n", args.n, 1);
    this.#reduce(encoder, args, 1, 1, args.accumulate ?? false);
  }

  /**
   * Ternary fake-quantization with λ blending, `γ = gamma[0]` (from
   * {@link WebGpuKernels.absMean}): `q = clamp(round(w / (γ + eps)), −1, 1)`,
   * `out = (1 − λ)·w + λ·q·γ` (`steBlend`'s form of `w + λ·(q·γ − w)`).
   */
  ternaryFakeQuant(
    encoder: GPUCommandEncoder,
    args: {
      readonly w: GPUBuffer;
      readonly gamma: GPUBuffer;
      readonly out: GPUBuffer;
      readonly n: number;
      readonly lambda: number;
      readonly eps?: number;
    },
  ): void {
    const n = args.n;
    requireInt("n", n, 1);
    requireFinite("lambda", args.lambda);
    this.#launch(
      encoder,
      "ternary_quant",
      "main",
      {
        w: ["w", args.w, n],
        gamma: ["gamma", args.gamma, 1],
        out: ["out", args.out, n],
      },
      { n, lambda: args.lambda, eps: args.eps ?? QUANT_EPS },
      groupsFor(n, 256),
    );
  }

  /**
   * Per-token int8 fake-quantization with λ blending, per row of x (rows × dim):
   * `s = 127 / max(max|x|, eps)`, `out = (1 − λ)·x + λ·clamp(round(x·s), −128, 127)/s`.
   */
  activationFakeQuant(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly out: GPUBuffer;
      readonly rows: number;
      readonly dim: number;
      readonly lambda: number;
      readonly eps?: number;
    },
  ): void {
    const { rows, dim } = args;
    requireFinite("lambda", args.lambda);
    this.#launch(
      encoder,
      "act_quant",
      "main",
      {
        x: ["x", args.x, rows * dim],
        out: ["out", args.out, rows * dim],
      },
      rowParams(rows, dim, {
        lambda: args.lambda,
        eps: args.eps ?? QUANT_EPS,
      }),
      this.#rows(rows),
    );
  }

  /** Embedding lookup: `out[t, :] = table[ids[t], :]` (u32 ids; 0 for an id ≥ vocab). */
  embeddingForward(
    encoder: GPUCommandEncoder,
    args: {
      readonly table: GPUBuffer;
      readonly ids: GPUBuffer;
      readonly out: GPUBuffer;
      readonly tokens: number;
      readonly dim: number;
      readonly vocab: number;
    },
  ): void {
    const { tokens, dim, vocab } = args;
    requireInt("tokens", tokens, 1);
    requireInt("dim", dim, 1);
    requireInt("vocab", vocab, 1);
    this.#launch(
      encoder,
      "embedding",
      "gather",
      {
        src: ["table", args.table, vocab * dim],
        ids: ["ids", args.ids, tokens],
        dst: ["out", args.out, tokens * dim],
      },
      { tokens, dim, vocab, unique: 0 },
      groupsFor(tokens * dim, 256),
    );
  }

  /**
   * Embedding gradient: `dTable[v, :] += Σ_{t : ids[t] = v} dOut[t, :]`, with the
   * positions grouped by {@link embeddingGradIndex} (`indexBuffer` holds its `data`).
   */
  embeddingBackward(
    encoder: GPUCommandEncoder,
    args: {
      readonly dOut: GPUBuffer;
      readonly index: EmbeddingGradIndex;
      readonly indexBuffer: GPUBuffer;
      readonly dTable: GPUBuffer;
      readonly dim: number;
      readonly vocab: number;
    },
  ): void {
    const { unique, tokens, data } = args.index;
    const { dim, vocab } = args;
    requireInt("dim", dim, 1);
    requireInt("vocab", vocab, 1);
    if (unique === 0) return;
    // Ids are listed in increasing order, so the last one is the largest.
    if (data[unique - 1] >= vocab) {
      throw new Error(
        `index lists id ${data[unique - 1]}, outside vocab = ${vocab}`,
      );
    }
    this.#launch(
      encoder,
      "embedding",
      "scatter_add",
      {
        src: ["dOut", args.dOut, tokens * dim],
        ids: ["indexBuffer", args.indexBuffer, data.length],
        dst: ["dTable", args.dTable, vocab * dim],
      },
      { tokens, dim, vocab, unique },
      groupsFor(unique * dim, 256),
    );
  }

  /**
   * Rotary position embedding of x = (tokens·heads) × headDim, out of place; token
   * t is at position `posOffset + t mod seqLen`; `table` from {@link ropeTable}.
   * `"neox"` rotates pairs (i, i + rotaryDim/2), `"interleaved"` pairs (2i, 2i + 1):
   * `(a, b) → (a·cos − b·sin, a·sin + b·cos)`. `inverse` rotates back (the backward
   * pass: the rotation's transpose). Dimensions ≥ rotaryDim are copied.
   */
  rope(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly out: GPUBuffer;
      readonly table: GPUBuffer;
      readonly tokens: number;
      readonly heads: number;
      readonly headDim: number;
      readonly rotaryDim: number;
      readonly seqLen: number;
      readonly maxPositions: number;
      readonly style: "neox" | "interleaved";
      readonly posOffset?: number;
      readonly inverse?: boolean;
    },
  ): void {
    const { tokens, heads, headDim, rotaryDim, seqLen, maxPositions } = args;
    const posOffset = args.posOffset ?? 0;
    requireInt("tokens", tokens, 1);
    requireInt("heads", heads, 1);
    requireInt("headDim", headDim, 2);
    requireInt("seqLen", seqLen, 1);
    requireInt("posOffset", posOffset, 0);
    requireInt("maxPositions", maxPositions, 1);
    if (
      !Number.isInteger(rotaryDim) || rotaryDim < 2 || rotaryDim % 2 !== 0 ||
      rotaryDim > headDim
    ) {
      throw new Error(
        `rotaryDim must be even, ≥ 2 and ≤ headDim = ${headDim}, got ${rotaryDim}`,
      );
    }
    if (args.style !== "neox" && args.style !== "interleaved") {
      throw new Error(
        `style must be "neox" or "interleaved", got ${String(args.style)}`,
      );
    }
    const lastPos = posOffset + Math.min(seqLen, tokens) - 1;
    if (lastPos >= maxPositions) {
      throw new Error(
        `positions reach ${lastPos} but maxPositions = ${maxPositions}`,
      );
    }
    const rows = tokens * heads;
    this.#launch(encoder, "rope", "main", {
      x: ["x", args.x, rows * headDim],
      table: ["table", args.table, maxPositions * rotaryDim],
      out: ["out", args.out, rows * headDim],
    }, {
      rows,
      head_dim: headDim,
      rot_dim: rotaryDim,
      heads,
      seq_len: seqLen,
      pos_offset: posOffset,
      max_pos: maxPositions,
      interleaved: args.style === "interleaved" ? 1 : 0,
      inverse: args.inverse ? 1 : 0,
    }, groupsFor(rows * headDim, 256));
  }

  /**
   * Global-norm clipping factor from `sumSquares[0]` (see
   * {@link WebGpuKernels.sumSquares}): `scale[0] = min(1, maxNorm / (sqrt(sumSquares[0]) + 1e-6))`
   * (1 when maxNorm ≤ 0), `scale[1] = sqrt(sumSquares[0])`.
   */
  gradClipScale(
    encoder: GPUCommandEncoder,
    args: {
      readonly sumSquares: GPUBuffer;
      readonly scale: GPUBuffer;
      readonly maxNorm: number;
    },
  ): void {
    requireFinite("maxNorm", args.maxNorm);
    this.#launch(
      encoder,
      "grad_clip",
      "main",
      {
        sumsq: ["sumSquares", args.sumSquares, 1],
        scale: ["scale", args.scale, 2],
      },
      { max_norm: args.maxNorm },
      [1, 1, 1],
    );
  }

  /**
   * One AdamW step (PyTorch semantics) on `n` values, gradient scaled by
   * `gradScale[0]`: `p ← p·(1 − lr·wd)`, `m ← β1·m + (1 − β1)·g`,
   * `v ← β2·v + (1 − β2)·g²`, `p ← p − lr/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + eps)`
   * for `t = step ≥ 1`. The bias corrections are computed here in f64 and passed as
   * uniforms (WGSL's `pow` is too coarse near 1).
   */
  adamw(
    encoder: GPUCommandEncoder,
    args: {
      readonly param: GPUBuffer;
      readonly grad: GPUBuffer;
      readonly m: GPUBuffer;
      readonly v: GPUBuffer;
      readonly gradScale: GPUBuffer;
      readonly n: number;
      readonly step: number;
      readonly lr: number;
      readonly beta1: number;
      readonly beta2: number;
      readonly eps: number;
      readonly weightDecay: number;
    },
  ): void {
    const { n, step, lr, beta1, beta2 } = args;
    requireInt("n", n, 1);
    requireInt("step", step, 1);
    for (const name of ["lr", "eps", "weightDecay"] as const) {
      requireFinite(name, args[name]);
    }
    for (const name of ["beta1", "beta2"] as const) {
      if (!(args[name] >= 0 && args[name] < 1)) {
        throw new Error(`${name} must be in [0, 1), got ${args[name]}`);
      }
    }
    this.#launch(encoder, "adamw", "main", {
      grad: ["grad", args.grad, n],
      gscale: ["gradScale", args.gradScale, 1],
      param: ["param", args.param, n],
      m1: ["m", args.m, n],
      m2: ["v", args.v, n],
    }, {
      n,
      step_size: lr / (1 - Math.pow(beta1, step)),
      bc2_sqrt: Math.sqrt(1 - Math.pow(beta2, step)),
      beta1,
      beta2,
      eps: args.eps,
      decay: 1 - lr * args.weightDecay,
    }, groupsFor(n, 256));
  }

  /**
   * Causal attention forward: per query row (token t at position i, head h),
   * `s_j = scale·q·k_j` for keys j ≤ i of its sequence, `lse = log Σ_j exp(s_j)`
   * (saved for the backward pass), `out = Σ_j exp(s_j − lse)·v_j`. q and out are
   * tokens × heads × headDim; k and v tokens × kvHeads × headDim.
   */
  attentionForward(
    encoder: GPUCommandEncoder,
    args: AttentionShape & {
      readonly q: GPUBuffer;
      readonly k: GPUBuffer;
      readonly v: GPUBuffer;
      readonly out: GPUBuffer;
      readonly lse: GPUBuffer;
    },
  ): void {
    const a = attentionParams(args);
    this.#launch(
      encoder,
      "attention",
      "fwd",
      {
        q: ["q", args.q, a.queryElems],
        k: ["k", args.k, a.kvElems],
        v: ["v", args.v, a.kvElems],
        out0: ["out", args.out, a.queryElems],
        out1: ["lse", args.lse, a.queryRows],
      },
      a.uniform,
      this.#rows(a.queryRows),
    );
  }

  /**
   * Causal attention backward from `dOut`, the forward's `out` and `lse`:
   * `D = dOut·out` (per row, written to `delta`), `p_j = exp(s_j − lse)`,
   * `ds_j = p_j·(dOut·v_j − D)`, `dq = scale·Σ_j ds_j·k_j`,
   * `dk_j = scale·Σ_i ds_ij·q_i`, `dv_j = Σ_i p_ij·dOut_i` (summed over the query
   * heads sharing a kv head). Overwrites dq, dk, dv.
   */
  attentionBackward(
    encoder: GPUCommandEncoder,
    args: AttentionShape & {
      readonly q: GPUBuffer;
      readonly k: GPUBuffer;
      readonly v: GPUBuffer;
      readonly out: GPUBuffer;
      readonly lse: GPUBuffer;
      readonly dOut: GPUBuffer;
      readonly delta: GPUBuffer;
      readonly dq: GPUBuffer;
      readonly dk: GPUBuffer;
      readonly dv: GPUBuffer;
    },
  ): void {
    const a = attentionParams(args);
    const inputs = {
      q: ["q", args.q, a.queryElems],
      k: ["k", args.k, a.kvElems],
      v: ["v", args.v, a.kvElems],
      dout: ["dOut", args.dOut, a.queryElems],
      lse_in: ["lse", args.lse, a.queryRows],
    } as const;
    this.#launch(
      encoder,
      "attention",
      "bwd_dq",
      {
        ...inputs,
        o_in: ["out", args.out, a.queryElems],
        out0: ["dq", args.dq, a.queryElems],
        out1: ["delta", args.delta, a.queryRows],
      },
      a.uniform,
      this.#rows(a.queryRows),
    );
    this.#launch(
      encoder,
      "attention",
      "bwd_dkv",
      {
        ...inputs,
        delta_in: ["delta", args.delta, a.queryRows],
        out0: ["dk", args.dk, a.kvElems],
        out1: ["dv", args.dv, a.kvElems],
      },
      a.uniform,
      this.#rows(a.kvElems / args.headDim),
    );
  }

  /**
   * Weight fake-quantization of w (rows × cols) in every mode, blended as
   * `steBlend`: `out = (1 − λ)·w + λ·Q(w)`, with `γ = mean|W|` reduced on the GPU:
   * - `"ternary"`: `Q = clamp(round(w / (γ + eps)), −1, 1)·γ` (see
   *   {@link WebGpuKernels.ternaryFakeQuant}); with `dynamicThreshold`,
   *   `Δ = 0.7·γ`, `Q = sign(w)·mean{|w| : |w| > Δ}` where `|w| > Δ`, else 0;
   * - `"binary"`: `Q = ±γ` by the sign of w, `sign(±0) = +1`;
   * - `"eightbit"`: per row `s = max(max|w_row|, eps) / 127`,
   *   `Q = clamp(round(w / s), −127, 127)·s`;
   * - `"f16"`: `Q` = w rounded to f16 (ties to even; ±inf from 65520).
   * Rounding is half-to-even throughout.
   */
  weightFakeQuant(
    encoder: GPUCommandEncoder,
    args: {
      readonly w: GPUBuffer;
      readonly out: GPUBuffer;
      readonly rows: number;
      readonly cols: number;
      readonly mode: "ternary" | "binary" | "eightbit" | "f16";
      readonly lambda: number;
      readonly dynamicThreshold?: boolean;
    },
  ): void {
    const { rows, cols, mode, lambda } = args;
    requireInt("rows", rows, 1);
    requireInt("cols", cols, 1);
    if (!(lambda >= 0 && lambda <= 1)) {
      throw new Error(`lambda must be in [0, 1], got ${lambda}`);
    }
    const n = rows * cols;
    if (mode === "ternary" && !args.dynamicThreshold) {
      const gamma = this.#quantStats();
      this.absMean(encoder, { x: args.w, n, out: gamma });
      this.ternaryFakeQuant(encoder, {
        w: args.w,
        gamma,
        out: args.out,
        n,
        lambda,
      });
      return;
    }
    const codes = { ternary: 1, binary: 2, f16: 3, eightbit: 0 } as const;
    if (!Object.hasOwn(codes, mode)) {
      throw new Error(
        `mode must be "ternary", "binary", "eightbit" or "f16", got ${
          String(mode)
        }`,
      );
    }
    const stats = this.#quantStats();
    const uniform = (groups: number) => ({
      n,
      rows,
      cols,
      mode: codes[mode],
      lambda,
      eps: QUANT_EPS,
      max_step: MAX_INT8_STEP,
      groups,
    });
    const w: Bind = ["w", args.w, n];
    const out: Bind = ["out", args.out, n];
    const st: Bind = ["stats", stats, 2];
    if (mode === "eightbit") {
      this.#launch(
        encoder,
        "weight_quant",
        "eightbit",
        { w, out },
        uniform(0),
        this.#rows(rows),
      );
      return;
    }
    if (mode !== "f16") this.absMean(encoder, { x: args.w, n, out: stats });
    if (mode === "ternary") {
      const groups = Math.min(groupsFor(n, 1024)[0], REDUCE_GROUPS);
      const partials: Bind = ["partials", this.#keptPartials(), 2 * groups];
      this.#launch(
        encoder,
        "weight_quant",
        "kept_partial",
        {
          w,
          stats: st,
          partials,
        },
        uniform(groups),
        [groups, 1, 1],
      );
      this.#launch(
        encoder,
        "weight_quant",
        "kept_finish",
        {
          stats: st,
          partials,
        },
        uniform(groups),
        [1, 1, 1],
      );
    }
    // f16 ignores the stats.
    this.#launch(
      encoder,
      "weight_quant",
      "apply",
      { w, stats: st, out },
      uniform(0),
      groupsFor(n, 256),
    );
  }

  /**
   * LayerNorm per row of x (rows × dim): `μ = mean(x)`,
   * `r = 1 / sqrt(mean((x − μ)²) + eps)`, `out = (x − μ)·r·weight + bias`; saves
   * `μ` and `r` per row for the backward pass.
   */
  layerNormForward(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly weight: GPUBuffer;
      readonly bias: GPUBuffer;
      readonly out: GPUBuffer;
      readonly mean: GPUBuffer;
      readonly rstd: GPUBuffer;
      readonly rows: number;
      readonly dim: number;
      readonly eps: number;
    },
  ): void {
    const { rows, dim } = args;
    requireFinite("eps", args.eps);
    this.#launch(
      encoder,
      "layernorm",
      "fwd",
      {
        x: ["x", args.x, rows * dim],
        w: ["weight", args.weight, dim],
        b: ["bias", args.bias, dim],
        out0: ["out", args.out, rows * dim],
        out1: ["mean", args.mean, rows],
        out2: ["rstd", args.rstd, rows],
      },
      rowParams(rows, dim, { eps: args.eps }),
      this.#rows(rows),
    );
  }

  /**
   * LayerNorm backward, adding into the gradients: with `x̂ = (x − μ)·r` and
   * `d = dy·weight`, `dx += r·(d − mean(d) − x̂·mean(d·x̂))`,
   * `dWeight += Σ_rows dy·x̂`, `dBias += Σ_rows dy`.
   */
  layerNormBackward(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly weight: GPUBuffer;
      readonly dy: GPUBuffer;
      readonly mean: GPUBuffer;
      readonly rstd: GPUBuffer;
      readonly dx: GPUBuffer;
      readonly dWeight: GPUBuffer;
      readonly dBias: GPUBuffer;
      readonly rows: number;
      readonly dim: number;
    },
  ): void {
    const { rows, dim } = args;
    const uniform = rowParams(rows, dim, { eps: 0 });
    const inputs = {
      x: ["x", args.x, rows * dim],
      dy: ["dy", args.dy, rows * dim],
      mean_in: ["mean", args.mean, rows],
      rstd_in: ["rstd", args.rstd, rows],
    } as const;
    this.#launch(
      encoder,
      "layernorm",
      "bwd_dx",
      {
        ...inputs,
        w: ["weight", args.weight, dim],
        out0: ["dx", args.dx, rows * dim],
      },
      uniform,
      this.#rows(rows),
    );
    this.#launch(
      encoder,
      "layernorm",
      "bwd_dwb",
      {
        ...inputs,
        out1: ["dWeight", args.dWeight, dim],
        out2: ["dBias", args.dBias, dim],
      },
      uniform,
      groupsFor(dim, 128),
    );
  }

  /**
   * Softmax cross-entropy with probabilities: per row of `logits` (rows × vocab)
   * `lse = log Σ exp(z)`, `probs = exp(z − lse)`, `nll = lse − z_y`,
   * `loss = (1 − ε)·nll + ε·(lse − mean(z))`; then
   * `losses = [Σ loss, Σ nll] / count` over the rows whose i32 target is not
   * `ignore` (`count` counted by the caller; 0 gives [0, 0]). Ignored rows get
   * probabilities 0. `rowStats` (2·rows values) is scratch.
   */
  softmaxCrossEntropyForward(
    encoder: GPUCommandEncoder,
    args: CrossEntropyArgs & {
      readonly logits: GPUBuffer;
      readonly probs: GPUBuffer;
      readonly rowStats: GPUBuffer;
      readonly losses: GPUBuffer;
    },
  ): void {
    const { rows, vocab, count } = args;
    const uniform = crossEntropyParams(args, count > 0 ? 1 / count : 0, 0);
    const rowStats: Bind = ["rowStats", args.rowStats, 2 * rows];
    this.#launch(
      encoder,
      "softmax_cross_entropy",
      "fwd",
      {
        logits: ["logits", args.logits, rows * vocab],
        targets: ["targets", args.targets, rows],
        out0: ["probs", args.probs, rows * vocab],
        row_stats: rowStats,
      },
      uniform,
      this.#rows(rows),
    );
    this.#launch(
      encoder,
      "softmax_cross_entropy",
      "finish",
      {
        row_stats: rowStats,
        losses: ["losses", args.losses, 2],
      },
      uniform,
      [1, 1, 1],
    );
  }

  /**
   * Gradient of {@link WebGpuKernels.softmaxCrossEntropyForward}'s mean loss,
   * added: `dLogits += scale / count · (probs − (1 − ε)·onehot(y) − ε/vocab)` on
   * rows whose target is not `ignore`.
   */
  softmaxCrossEntropyBackward(
    encoder: GPUCommandEncoder,
    args: CrossEntropyArgs & {
      readonly probs: GPUBuffer;
      readonly dLogits: GPUBuffer;
      readonly scale: number;
    },
  ): void {
    const { rows, vocab, count } = args;
    requireFinite("scale", args.scale);
    if (count === 0) return;
    this.#launch(
      encoder,
      "softmax_cross_entropy",
      "bwd",
      {
        targets: ["targets", args.targets, rows],
        probs_in: ["probs", args.probs, rows * vocab],
        out0: ["dLogits", args.dLogits, rows * vocab],
      },
      crossEntropyParams(args, 0, args.scale / count),
      groupsFor(rows * vocab, 256),
    );
  }

  /**
   * Per-token int8 activations for {@link WebGpuKernels.ternaryLinear}, per row
   * of x (rows × cols): `s = 127 / max(max|x|, eps)`, `q = clamp(round(x·s),
   * −128, 127)` (half to even on the exact product), packed four to a u32 in
   * rows of `ternaryPaddedCols(cols) / 4` words (zero-padded); `stats` gets
   * per row `[1/s', Σ q]` with `1/s' = max(max|q| / s, eps) / 127`.
   */
  quantizeActivations(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly q: GPUBuffer;
      readonly stats: GPUBuffer;
      readonly rows: number;
      readonly cols: number;
      readonly eps?: number;
    },
  ): void {
    const { rows, cols } = args;
    requireInt("rows", rows, 1);
    requireInt("cols", cols, 1);
    const words = paddedCols(cols) / 4;
    this.#launch(
      encoder,
      "qlinear",
      "quantize",
      {
        x: ["x", args.x, rows * cols],
        q_out: ["q", args.q, rows * words],
        s_out: ["stats", args.stats, 2 * rows],
      },
      {
        rows,
        n: 0,
        k: cols,
        kw: words,
        scale: 0,
        eps: args.eps ?? QUANT_EPS,
      },
      this.#rows(rows),
    );
  }

  /**
   * Int8 × ternary product: `out[t, r] = (Σ_j w_rj·q_tj) · γ / s'_t` for `rows`
   * tokens of `q`/`stats` from {@link WebGpuKernels.quantizeActivations} and
   * the `n × k` weights packed by `packTernaryRows` (2-bit codes `w + 1`),
   * summed in integers.
   */
  ternaryLinear(
    encoder: GPUCommandEncoder,
    args: {
      readonly q: GPUBuffer;
      readonly stats: GPUBuffer;
      readonly w: GPUBuffer;
      readonly out: GPUBuffer;
      readonly rows: number;
      readonly n: number;
      readonly k: number;
      readonly scale: number;
    },
  ): void {
    const { rows, n, k } = args;
    requireInt("rows", rows, 1);
    requireInt("n", n, 1);
    requireInt("k", k, 1);
    requireFinite("scale", args.scale);
    const kpad = paddedCols(k);
    this.#launch(
      encoder,
      "qlinear",
      "ternary",
      {
        w: ["w", args.w, n * kpad / 16],
        xq: ["q", args.q, rows * kpad / 4],
        xs: ["stats", args.stats, 2 * rows],
        out: ["out", args.out, rows * n],
      },
      { rows, n, k, kw: kpad / 16, scale: args.scale, eps: 0 },
      this.#linearGroups(rows, n),
    );
  }

  /** `out[t, r] = Σ_j w[r, j]·x[t, j]` (f32) for `rows` tokens and `n × k` weights. */
  denseLinear(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly w: GPUBuffer;
      readonly out: GPUBuffer;
      readonly rows: number;
      readonly n: number;
      readonly k: number;
    },
  ): void {
    const { rows, n, k } = args;
    requireInt("rows", rows, 1);
    requireInt("n", n, 1);
    requireInt("k", k, 1);
    this.#launch(
      encoder,
      "qlinear",
      "dense",
      {
        x: ["x", args.x, rows * k],
        wf: ["w", args.w, n * k],
        out: ["out", args.out, rows * n],
      },
      { rows, n, k, kw: 0, scale: 0, eps: 0 },
      this.#linearGroups(rows, n),
    );
  }

  /**
   * Writes `tokens` new key or value rows (`src`, `[tokens, kvHeads·headDim]`)
   * into a head-major cache (`[kvHeads, ctx, headDim]`) at rows
   * `(slot0 + t) mod ctx`.
   */
  kvStore(
    encoder: GPUCommandEncoder,
    args: KvCacheShape & {
      readonly src: GPUBuffer;
      readonly cache: GPUBuffer;
      readonly slot0: number;
    },
  ): void {
    const a = kvParams(args, args.heads ?? args.kvHeads, 0, args.slot0);
    const n = args.tokens * a.kvRow;
    this.#launch(
      encoder,
      "kv_attention",
      "store",
      {
        src: ["src", args.src, n],
        cache: ["cache", args.cache, a.cacheElems],
      },
      a.uniform,
      groupsFor(n, 256),
    );
  }

  /**
   * Attention of `tokens` new queries (`q`, `[tokens, heads·headDim]`, query t
   * at position `pos0 + t`) over head-major caches `k`, `v`
   * (`[kvHeads, ctx, headDim]`): query t sees rows `[0, min(pos0 + t + 1, ctx))`;
   * `out = softmax(scale·q·Kᵀ)·V` per head, grouped-query heads sharing a kv head.
   */
  kvAttention(
    encoder: GPUCommandEncoder,
    args: KvCacheShape & {
      readonly heads: number;
      readonly q: GPUBuffer;
      readonly k: GPUBuffer;
      readonly v: GPUBuffer;
      readonly out: GPUBuffer;
      readonly pos0: number;
      readonly scale?: number;
    },
  ): void {
    const a = kvParams(
      args,
      args.heads,
      args.pos0,
      0,
      args.scale ?? 1 / Math.sqrt(args.headDim),
    );
    const qElems = args.tokens * args.heads * args.headDim;
    this.#launch(
      encoder,
      "kv_attention",
      "attend",
      {
        q: ["q", args.q, qElems],
        k_cache: ["k", args.k, a.cacheElems],
        v_cache: ["v", args.v, a.cacheElems],
        out: ["out", args.out, qElems],
      },
      a.uniform,
      this.#rows(args.tokens * args.heads),
    );
  }

  // Workgroups of the linear kernels: 8 output features × 4 tokens each.
  #linearGroups(rows: number, n: number): Groups {
    const groups = [Math.ceil(n / 8), Math.ceil(rows / 4), 1] as const;
    if (groups[0] > this.#maxGroups || groups[1] > this.#maxGroups) {
      throw new Error(
        `a ${rows} × ${n} linear output needs more workgroups than the device allows`,
      );
    }
    return groups;
  }

  #quantStats(): GPUBuffer {
    return this.#stats ??= this.pool.acquire(2 * 4);
  }

  #keptPartials(): GPUBuffer {
    return this.#kept ??= this.pool.acquire(2 * REDUCE_GROUPS * 4);
  }

  // One workgroup per row, grid-stride over the rows beyond the device's limit.
  #rows(rows: number): Groups {
    return [Math.min(rows, this.#maxGroups), 1, 1];
  }

  // The wrapper of an element-wise kernel of the table.
  #op(
    name: keyof typeof ELEMENTWISE,
  ): (
    encoder: GPUCommandEncoder,
    args: Readonly<Record<string, GPUBuffer | number>>,
  ) => void {
    return (encoder, args) => this.#elementwise(encoder, name, args);
  }

  #elementwise(
    encoder: GPUCommandEncoder,
    name: keyof typeof ELEMENTWISE,
    args: Readonly<Record<string, GPUBuffer | number>>,
  ): void {
    const [kernel, entry, buffers, alpha] = ELEMENTWISE[name];
    const n = args.n as number;
    requireInt("n", n, 1);
    const uniform: Record<string, number> = { n };
    if (typeof alpha === "string") {
      requireFinite(alpha, args[alpha] as number);
      uniform.alpha = args[alpha] as number;
    } else if (alpha !== undefined) uniform.alpha = alpha;
    const binds: Record<string, Bind> = {};
    for (const [arg, binding] of Object.entries(buffers)) {
      binds[binding] = [arg, args[arg] as GPUBuffer, n];
    }
    this.#launch(encoder, kernel, entry, binds, uniform, groupsFor(n, 256));
  }

  // Two passes: ≤ 256 workgroups write partial sums, one workgroup adds them up.
  #reduce(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly n: number;
      readonly out: GPUBuffer;
      readonly outIndex?: number;
    },
    mode: 0 | 1,
    scale: number,
    accumulate: boolean,
  ): void {
    const { n } = args;
    const outIndex = args.outIndex ?? 0;
    requireInt("outIndex", outIndex, 0);
    const groups = Math.min(groupsFor(n, 1024)[0], REDUCE_GROUPS);
    const uniform = {
      n,
      mode,
      groups,
      out_index: outIndex,
      scale,
      accumulate: accumulate ? 1 : 0,
    };
    const partials: Bind = ["partials", this.#partials, groups];
    this.#launch(
      encoder,
      "reduce",
      "partial",
      {
        x: ["x", args.x, n],
        partials,
      },
      uniform,
      [groups, 1, 1],
    );
    this.#launch(
      encoder,
      "reduce",
      "finish",
      {
        partials,
        out: ["out", args.out, outIndex + 1],
      },
      uniform,
      [1, 1, 1],
    );
  }

  /**
   * Records one dispatch of `kernel`'s `entry` in its own compute pass: binds
   * `buffers` by their WGSL names (exactly the storage bindings the entry point
   * uses, after checking sizes and that no written buffer is bound twice) and a
   * fresh uniform buffer packed from `uniform` by the WGSL struct's fields.
   */
  #launch(
    encoder: GPUCommandEncoder,
    kernel: KernelName,
    entry: string,
    buffers: Readonly<Record<string, Bind>>,
    uniform: Readonly<Record<string, number>>,
    groups: Groups,
    constants?: Record<string, number>,
  ): void {
    const module = KERNEL_MODULES[kernel];
    const [uniformName, uniformBinding, , fields] = module.uniform;
    const used = module.entries[entry].filter((b) => b !== uniformName);
    const given = Object.keys(buffers);
    if (
      given.length !== used.length ||
      used.some((b) => !Object.hasOwn(buffers, b))
    ) {
      throw new Error(
        `${kernel}.${entry} binds ${used.join(", ")}, not ${given.join(", ")}`,
      );
    }
    const entries: GPUBindGroupEntry[] = [];
    for (const [variable, binding, access] of module.storage) {
      if (!Object.hasOwn(buffers, variable)) continue;
      const [name, buffer, elements] = buffers[variable];
      if (elements * 4 > buffer.size) {
        throw new Error(
          `${name} holds ${
            buffer.size / 4
          } 4-byte elements but ${elements} are needed`,
        );
      }
      // WebGPU forbids a buffer bound read-write alongside any other binding of it.
      const other = access === "read_write" &&
        Object.values(buffers).find(([n, b]) => b === buffer && n !== name);
      if (other) {
        throw new Error(`${name} must not be the same buffer as ${other[0]}`);
      }
      entries.push({ binding, resource: { buffer } });
    }
    entries.push({
      binding: uniformBinding,
      resource: {
        buffer: this.pool.uniform(encoder, pack(kernel, fields, uniform)),
      },
    });
    const pipeline = this.#pipeline(kernel, entry, constants);
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(
      0,
      this.device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries,
      }),
    );
    pass.dispatchWorkgroups(groups[0], groups[1], groups[2]);
    pass.end();
  }

  #pipeline(
    kernel: KernelName,
    entryPoint: string,
    constants?: Record<string, number>,
  ): GPUComputePipeline {
    const id = `${kernel}:${entryPoint}:${JSON.stringify(constants ?? {})}`;
    let pipeline = this.#pipelines.get(id);
    if (pipeline === undefined) {
      let module = this.#modules.get(kernel);
      if (module === undefined) {
        module = this.device.createShaderModule({
          label: kernel,
          code: kernelSource(KERNEL_MODULES[kernel]),
        });
        this.#modules.set(kernel, module);
      }
      pipeline = this.device.createComputePipeline({
        label: id,
        layout: "auto",
        compute: { module, entryPoint, constants },
      });
      this.#pipelines.set(id, pipeline);
    }
    return pipeline;
  }
}

// Packs a uniform struct's fields (u32, i32 or f32, 4 bytes each) in WGSL order,
// each from `values` by name; a missing or unknown name is a wrapper bug.
function pack(
  kernel: string,
  fields: readonly (readonly [string, UniformType])[],
  values: Readonly<Record<string, number>>,
): ArrayBuffer {
  const extra = Object.keys(values).filter((k) =>
    !fields.some(([f]) => f === k)
  );
  if (extra.length > 0) throw new Error(`${kernel}: no uniform field ${extra}`);
  const buffer = new ArrayBuffer(fields.length * 4);
  const view = new DataView(buffer);
  fields.forEach(([name, type], i) => {
    const value = values[name];
    if (value === undefined) {
      throw new Error(`${kernel}: uniform ${name} unset`);
    }
    if (type === "u32") view.setUint32(i * 4, value, true);
    else if (type === "i32") view.setInt32(i * 4, value, true);
    else view.setFloat32(i * 4, value, true);
  });
  return buffer;
}

// The uniform of a per-row kernel (rows × dim), after checking the sizes.
function rowParams(
  rows: number,
  dim: number,
  rest: Readonly<Record<string, number>>,
): Record<string, number> {
  requireInt("rows", rows, 1);
  requireInt("dim", dim, 1);
  return { rows, dim, ...rest };
}

// Validates an attention shape; returns its sizes and uniform.
function attentionParams(shape: AttentionShape): {
  queryRows: number;
  queryElems: number;
  kvElems: number;
  uniform: Record<string, number>;
} {
  const { tokens, seqLen, heads, headDim } = shape;
  const kvHeads = shape.kvHeads ?? heads;
  const scale = shape.scale ?? 1 / Math.sqrt(headDim);
  requireInt("tokens", tokens, 1);
  requireInt("seqLen", seqLen, 1);
  requireInt("heads", heads, 1);
  requireInt("kvHeads", kvHeads, 1);
  requireInt("headDim", headDim, 1);
  requireFinite("scale", scale);
  if (tokens % seqLen !== 0) {
    throw new Error(
      `tokens = ${tokens} must be a multiple of seqLen = ${seqLen}`,
    );
  }
  if (heads % kvHeads !== 0) {
    throw new Error(`kvHeads = ${kvHeads} must divide heads = ${heads}`);
  }
  if (headDim > 256) throw new Error(`headDim must be ≤ 256, got ${headDim}`);
  return {
    queryRows: tokens * heads,
    queryElems: tokens * heads * headDim,
    kvElems: tokens * kvHeads * headDim,
    uniform: {
      tokens,
      seq_len: seqLen,
      heads,
      kv_heads: kvHeads,
      head_dim: headDim,
      scale,
    },
  };
}

/** The shape of a KV cache call; see {@link WebGpuKernels.kvAttention}. */
export interface KvCacheShape {
  /** New tokens. */
  readonly tokens: number;
  /** Query heads (a multiple of `kvHeads`). */
  readonly heads?: number;
  /** Key/value heads. */
  readonly kvHeads: number;
  /** Dimensions per head, at most 256. */
  readonly headDim: number;
  /** Rows of the cache per kv head (the context length). */
  readonly ctx: number;
}

// Int8 activations and ternary rows are padded to whole blocks of 64 (as the
// CPU's packTernaryRows).
function paddedCols(cols: number): number {
  return Math.ceil(cols / 64) * 64;
}

// Validates a KV cache call; returns its sizes and uniform.
function kvParams(
  shape: KvCacheShape,
  heads: number,
  pos0: number,
  slot0: number,
  scale = 1,
): { kvRow: number; cacheElems: number; uniform: Record<string, number> } {
  const { tokens, kvHeads, headDim, ctx } = shape;
  requireInt("tokens", tokens, 1);
  requireInt("heads", heads, 1);
  requireInt("kvHeads", kvHeads, 1);
  requireInt("headDim", headDim, 1);
  requireInt("ctx", ctx, 1);
  requireInt("pos0", pos0, 0);
  requireInt("slot0", slot0, 0);
  requireFinite("scale", scale);
  if (heads % kvHeads !== 0) {
    throw new Error(`kvHeads = ${kvHeads} must divide heads = ${heads}`);
  }
  if (headDim > 256) throw new Error(`headDim must be ≤ 256, got ${headDim}`);
  return {
    kvRow: kvHeads * headDim,
    cacheElems: kvHeads * ctx * headDim,
    uniform: {
      tokens,
      heads,
      kv_heads: kvHeads,
      head_dim: headDim,
      ctx,
      pos0,
      slot0,
      scale,
    },
  };
}

/** The settings both softmax cross-entropy passes share. */
export interface CrossEntropyArgs {
  /** i32 targets, one per row. */
  readonly targets: GPUBuffer;
  /** Rows of the logits. */
  readonly rows: number;
  /** Columns of the logits. */
  readonly vocab: number;
  /** The target value of rows left out. */
  readonly ignore: number;
  /** Label smoothing ε ∈ [0, 1]. */
  readonly smoothing: number;
  /** Rows whose target is not `ignore` (counted by the caller). */
  readonly count: number;
}

// Validates the arguments of both softmax cross-entropy passes; returns their uniform.
function crossEntropyParams(
  args: CrossEntropyArgs,
  invCount: number,
  k: number,
): Record<string, number> {
  requireInt("rows", args.rows, 1);
  requireInt("vocab", args.vocab, 1);
  requireInt("count", args.count, 0);
  if (args.count > args.rows) {
    throw new Error(`count = ${args.count} exceeds rows = ${args.rows}`);
  }
  if (!Number.isInteger(args.ignore) || Math.abs(args.ignore) > 2 ** 31 - 1) {
    throw new Error(`ignore must be an i32, got ${args.ignore}`);
  }
  if (!(args.smoothing >= 0 && args.smoothing <= 1)) {
    throw new Error(`smoothing must be in [0, 1], got ${args.smoothing}`);
  }
  requireFinite("k", k);
  return {
    rows: args.rows,
    vocab: args.vocab,
    ignore: args.ignore,
    smoothing: args.smoothing,
    inv_count: invCount,
    k,
  };
}
