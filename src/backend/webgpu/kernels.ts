/**
 * Compute pipelines for the WGSL kernels of `kernels/` and typed wrappers that
 * record dispatches into a caller-supplied `GPUCommandEncoder`. Nothing here submits
 * or reads back: a step records everything into one encoder and hands it to
 * {@link BufferPool.submit} or {@link BufferPool.readBack} at the end.
 *
 * All tensors are f32, row-major, and start at element 0 of their buffer (a buffer
 * may be larger than the tensor: pooled buffers are rounded up to a size class).
 *
 * @module
 */
import type { GpuAdapterInfo, GpuDeviceShape } from "./adapter.ts";
import type { BufferPool } from "./buffer_pool.ts";
import {
  ACT_QUANT_WGSL,
  ACTIVATIONS_WGSL,
  ADAMW_WGSL,
  ARITH_WGSL,
  ATTENTION_WGSL,
  EMBEDDING_WGSL,
  GRAD_CLIP_WGSL,
  LAYERNORM_WGSL,
  MATMUL_REGISTER_WGSL,
  MATMUL_SHARED_WGSL,
  REDUCE_WGSL,
  RMSNORM_WGSL,
  ROPE_WGSL,
  SOFTMAX_CROSS_ENTROPY_WGSL,
  TERNARY_QUANT_WGSL,
  WEIGHT_QUANT_WGSL,
} from "./kernels.wgsl.ts";

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
  if (!(base > 1)) throw new Error(`base must be > 1, got ${base}`);
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

// Caps the workgroups of grid-stride kernels: enough to fill an H100, and every
// dimension stays under the 65535 limit.
const MAX_GROUPS = 4096;
const REDUCE_GROUPS = 256; // = the finish pass's workgroup size

// The largest f32 step s with 127·s ≤ f32 max, the cap of the int8 weight step (as
// `src/core/quantize.ts`: fround(f32 max / 127) rounds up).
const MAX_INT8_STEP: number = (() => {
  const b = Float32Array.of(3.4028234663852886e38 / 127);
  if (127 * b[0] > 3.4028234663852886e38) new Uint32Array(b.buffer)[0]--;
  return b[0];
})();

type PipelineKey =
  | "matmul_register"
  | "matmul_shared"
  | "arith"
  | "activations"
  | "rmsnorm"
  | "reduce"
  | "ternary_quant"
  | "act_quant"
  | "embedding"
  | "rope"
  | "adamw"
  | "grad_clip"
  | "attention"
  | "weight_quant"
  | "layernorm"
  | "softmax_cross_entropy";

const SOURCES: Record<PipelineKey, string> = {
  matmul_register: MATMUL_REGISTER_WGSL,
  matmul_shared: MATMUL_SHARED_WGSL,
  arith: ARITH_WGSL,
  activations: ACTIVATIONS_WGSL,
  rmsnorm: RMSNORM_WGSL,
  reduce: REDUCE_WGSL,
  ternary_quant: TERNARY_QUANT_WGSL,
  act_quant: ACT_QUANT_WGSL,
  embedding: EMBEDDING_WGSL,
  rope: ROPE_WGSL,
  adamw: ADAMW_WGSL,
  grad_clip: GRAD_CLIP_WGSL,
  attention: ATTENTION_WGSL,
  weight_quant: WEIGHT_QUANT_WGSL,
  layernorm: LAYERNORM_WGSL,
  softmax_cross_entropy: SOFTMAX_CROSS_ENTROPY_WGSL,
};

// Every (module, entry point, override constants) the wrappers use.
const ENTRY_POINTS:
  readonly (readonly [PipelineKey, string, Record<string, number>?])[] = [
    ...(["matmul_register", "matmul_shared"] as const).flatMap((key) =>
      [0, 1].flatMap((ta) =>
        [0, 1].map((tb) => [key, "main", { TRANS_A: ta, TRANS_B: tb }] as const)
      )
    ),
    ["arith", "add"],
    ["arith", "axpy"],
    ["arith", "scale"],
    ["arith", "fill"],
    ["arith", "clamp_abs"],
    ["arith", "mul"],
    ["arith", "mul_acc"],
    ["activations", "silu_fwd"],
    ["activations", "silu_bwd"],
    ["activations", "relu2_fwd"],
    ["activations", "relu2_bwd"],
    ["activations", "swiglu_fwd"],
    ["activations", "swiglu_bwd"],
    ["rmsnorm", "fwd"],
    ["rmsnorm", "bwd_dx"],
    ["rmsnorm", "bwd_dw"],
    ["reduce", "partial"],
    ["reduce", "finish"],
    ["ternary_quant", "main"],
    ["act_quant", "main"],
    ["embedding", "gather"],
    ["embedding", "scatter_add"],
    ["rope", "main"],
    ["adamw", "main"],
    ["grad_clip", "main"],
    ["attention", "fwd"],
    ["attention", "bwd_dq"],
    ["attention", "bwd_dkv"],
    ["weight_quant", "apply"],
    ["weight_quant", "kept_partial"],
    ["weight_quant", "kept_finish"],
    ["weight_quant", "eightbit"],
    ["layernorm", "fwd"],
    ["layernorm", "bwd_dx"],
    ["layernorm", "bwd_dwb"],
    ["softmax_cross_entropy", "fwd"],
    ["softmax_cross_entropy", "finish"],
    ["softmax_cross_entropy", "bwd"],
  ];

type Field = readonly ["u" | "i" | "f", number];

// One storage-buffer argument of a dispatch: its name (for errors), binding
// number, buffer, the number of 4-byte elements the kernel touches, and whether
// the kernel writes it.
type Arg = readonly [string, number, GPUBuffer, number, "w"?];

// Packs uniform fields (u32, i32 or f32, 4 bytes each) in declaration order.
function pack(fields: readonly Field[]): ArrayBuffer {
  const buffer = new ArrayBuffer(fields.length * 4);
  const view = new DataView(buffer);
  fields.forEach(([kind, value], i) => {
    if (kind === "u") view.setUint32(i * 4, value, true);
    else if (kind === "i") view.setInt32(i * 4, value, true);
    else view.setFloat32(i * 4, value, true);
  });
  return buffer;
}

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

function groupsFor(items: number, perGroup: number): number {
  return Math.min(Math.max(Math.ceil(items / perGroup), 1), MAX_GROUPS);
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
  readonly #modules = new Map<PipelineKey, GPUShaderModule>();
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
    for (const [key, entry, constants] of ENTRY_POINTS) {
      this.#pipeline(key, entry, constants);
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
    ];
    ["n", "m", "batch"].forEach((name, i) => {
      if (groups[i] > this.#maxGroups) {
        throw new Error(
          `${name} = ${
            [n, m, batch][i]
          } needs more workgroups than the device allows`,
        );
      }
    });
    this.#dispatch(
      encoder,
      this.#pipeline(`matmul_${variant}`, "main", {
        TRANS_A: args.transA ? 1 : 0,
        TRANS_B: args.transB ? 1 : 0,
      }),
      [
        ["a", 0, args.a, (batch - 1) * strideA + m * k],
        ["b", 1, args.b, (batch - 1) * strideB + k * n],
        ["c", 2, args.c, (batch - 1) * strideC + m * n, "w"],
      ],
      3,
      pack([
        ["u", m],
        ["u", n],
        ["u", k],
        ["u", args.accumulate ? 1 : 0],
        ["u", strideA],
        ["u", strideB],
        ["u", strideC],
        ["f", alpha],
      ]),
      [groups[0], groups[1], groups[2]],
    );
  }

  /** `out = a + b`, element-wise over `n` values. */
  add(
    encoder: GPUCommandEncoder,
    args: {
      readonly a: GPUBuffer;
      readonly b: GPUBuffer;
      readonly out: GPUBuffer;
      readonly n: number;
    },
  ): void {
    this.#binary(encoder, "add", args);
  }

  // The element-wise kernels of arith.wgsl that read a and b and write out.
  #binary(
    encoder: GPUCommandEncoder,
    entry: "add" | "mul" | "mul_acc",
    args: {
      readonly a: GPUBuffer;
      readonly b: GPUBuffer;
      readonly out: GPUBuffer;
      readonly n: number;
    },
  ): void {
    const n = args.n;
    this.#elementwise(
      encoder,
      "arith",
      entry,
      n,
      [
        ["a", 0, args.a, n],
        ["b", 1, args.b, n],
        ["out", 2, args.out, n, "w"],
      ],
      3,
      [["f", 1]],
    );
  }

  /** `y += alpha·x` over `n` values (y is updated in place). */
  axpy(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly y: GPUBuffer;
      readonly n: number;
      readonly alpha: number;
    },
  ): void {
    requireFinite("alpha", args.alpha);
    const n = args.n;
    this.#elementwise(
      encoder,
      "arith",
      "axpy",
      n,
      [
        ["x", 0, args.x, n],
        ["y", 2, args.y, n, "w"],
      ],
      3,
      [["f", args.alpha]],
    );
  }

  /** `out = alpha·a` over `n` values. */
  scale(
    encoder: GPUCommandEncoder,
    args: {
      readonly a: GPUBuffer;
      readonly out: GPUBuffer;
      readonly n: number;
      readonly alpha: number;
    },
  ): void {
    requireFinite("alpha", args.alpha);
    const n = args.n;
    this.#elementwise(
      encoder,
      "arith",
      "scale",
      n,
      [
        ["a", 0, args.a, n],
        ["out", 2, args.out, n, "w"],
      ],
      3,
      [["f", args.alpha]],
    );
  }

  /** SiLU: `out = x·σ(x)`. */
  siluForward(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly out: GPUBuffer;
      readonly n: number;
    },
  ): void {
    const n = args.n;
    this.#elementwise(
      encoder,
      "activations",
      "silu_fwd",
      n,
      [
        ["x", 0, args.x, n],
        ["out", 3, args.out, n, "w"],
      ],
      5,
      [],
    );
  }

  /** SiLU backward: `dx = dy·σ(x)·(1 + x·(1 − σ(x)))`. */
  siluBackward(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly dy: GPUBuffer;
      readonly dx: GPUBuffer;
      readonly n: number;
    },
  ): void {
    const n = args.n;
    this.#elementwise(
      encoder,
      "activations",
      "silu_bwd",
      n,
      [
        ["x", 0, args.x, n],
        ["dy", 1, args.dy, n],
        ["dx", 3, args.dx, n, "w"],
      ],
      5,
      [],
    );
  }

  /** ReLU²: `out = max(x, 0)²`. */
  relu2Forward(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly out: GPUBuffer;
      readonly n: number;
    },
  ): void {
    const n = args.n;
    this.#elementwise(
      encoder,
      "activations",
      "relu2_fwd",
      n,
      [
        ["x", 0, args.x, n],
        ["out", 3, args.out, n, "w"],
      ],
      5,
      [],
    );
  }

  /** ReLU² backward: `dx = dy·2·max(x, 0)`. */
  relu2Backward(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly dy: GPUBuffer;
      readonly dx: GPUBuffer;
      readonly n: number;
    },
  ): void {
    const n = args.n;
    this.#elementwise(
      encoder,
      "activations",
      "relu2_bwd",
      n,
      [
        ["x", 0, args.x, n],
        ["dy", 1, args.dy, n],
        ["dx", 3, args.dx, n, "w"],
      ],
      5,
      [],
    );
  }

  /** SwiGLU: `out = silu(gate)·up`. */
  swigluForward(
    encoder: GPUCommandEncoder,
    args: {
      readonly gate: GPUBuffer;
      readonly up: GPUBuffer;
      readonly out: GPUBuffer;
      readonly n: number;
    },
  ): void {
    const n = args.n;
    this.#elementwise(
      encoder,
      "activations",
      "swiglu_fwd",
      n,
      [
        ["gate", 0, args.gate, n],
        ["up", 1, args.up, n],
        ["out", 3, args.out, n, "w"],
      ],
      5,
      [],
    );
  }

  /** SwiGLU backward: `dGate = dy·up·silu'(gate)`, `dUp = dy·silu(gate)`. */
  swigluBackward(
    encoder: GPUCommandEncoder,
    args: {
      readonly gate: GPUBuffer;
      readonly up: GPUBuffer;
      readonly dy: GPUBuffer;
      readonly dGate: GPUBuffer;
      readonly dUp: GPUBuffer;
      readonly n: number;
    },
  ): void {
    const n = args.n;
    this.#elementwise(
      encoder,
      "activations",
      "swiglu_bwd",
      n,
      [
        ["gate", 0, args.gate, n],
        ["up", 1, args.up, n],
        ["dy", 2, args.dy, n],
        ["dGate", 3, args.dGate, n, "w"],
        ["dUp", 4, args.dUp, n, "w"],
      ],
      5,
      [],
    );
  }

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
    requireInt("rows", rows, 1);
    requireInt("dim", dim, 1);
    requireFinite("eps", args.eps);
    this.#dispatch(
      encoder,
      this.#pipeline("rmsnorm", "fwd"),
      [
        ["x", 0, args.x, rows * dim],
        ["weight", 1, args.weight, dim],
        ["out", 4, args.out, rows * dim, "w"],
        ["invRms", 5, args.invRms, rows, "w"],
      ],
      6,
      pack([["u", rows], ["u", dim], ["f", args.eps], ["u", 0]]),
      [Math.min(rows, this.#maxGroups), 1, 1],
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
    requireInt("rows", rows, 1);
    requireInt("dim", dim, 1);
    const uniform = pack([["u", rows], ["u", dim], ["f", 0], [
      "u",
      args.accumulateWeight ? 1 : 0,
    ]]);
    const x: Arg = ["x", 0, args.x, rows * dim];
    const dy: Arg = ["dy", 2, args.dy, rows * dim];
    const invRms: Arg = ["invRms", 3, args.invRms, rows];
    this.#dispatch(
      encoder,
      this.#pipeline("rmsnorm", "bwd_dx"),
      [x, ["weight", 1, args.weight, dim], dy, invRms, [
        "dx",
        4,
        args.dx,
        rows * dim,
        "w",
      ]],
      6,
      uniform,
      [Math.min(rows, this.#maxGroups), 1, 1],
    );
    this.#dispatch(
      encoder,
      this.#pipeline("rmsnorm", "bwd_dw"),
      [x, dy, invRms, ["dWeight", 4, args.dWeight, dim, "w"]],
      6,
      uniform,
      [groupsFor(dim, 128), 1, 1],
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
    this.#reduce(
      encoder,
      args.x,
      args.n,
      0,
      args.out,
      args.outIndex ?? 0,
      1 / args.n,
      false,
    );
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
    this.#reduce(
      encoder,
      args.x,
      args.n,
      1,
      args.out,
      args.outIndex ?? 0,
      1,
      args.accumulate ?? false,
    );
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
    this.#dispatch(
      encoder,
      this.#pipeline("ternary_quant", "main"),
      [["w", 0, args.w, n], ["gamma", 1, args.gamma, 1], [
        "out",
        2,
        args.out,
        n,
        "w",
      ]],
      3,
      pack([["u", n], ["f", args.lambda], ["f", args.eps ?? 1e-5]]),
      [groupsFor(n, 256), 1, 1],
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
    requireInt("rows", rows, 1);
    requireInt("dim", dim, 1);
    requireFinite("lambda", args.lambda);
    this.#dispatch(
      encoder,
      this.#pipeline("act_quant", "main"),
      [["x", 0, args.x, rows * dim], ["out", 1, args.out, rows * dim, "w"]],
      2,
      pack([["u", rows], ["u", dim], ["f", args.lambda], [
        "f",
        args.eps ?? 1e-5,
      ]]),
      [Math.min(rows, this.#maxGroups), 1, 1],
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
    this.#dispatch(
      encoder,
      this.#pipeline("embedding", "gather"),
      [
        ["table", 0, args.table, vocab * dim],
        ["ids", 1, args.ids, tokens],
        ["out", 2, args.out, tokens * dim, "w"],
      ],
      3,
      pack([["u", tokens], ["u", dim], ["u", vocab], ["u", 0]]),
      [groupsFor(tokens * dim, 256), 1, 1],
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
    this.#dispatch(
      encoder,
      this.#pipeline("embedding", "scatter_add"),
      [
        ["dOut", 0, args.dOut, tokens * dim],
        ["indexBuffer", 1, args.indexBuffer, data.length],
        ["dTable", 2, args.dTable, vocab * dim, "w"],
      ],
      3,
      pack([["u", tokens], ["u", dim], ["u", vocab], ["u", unique]]),
      [groupsFor(unique * dim, 256), 1, 1],
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
    this.#dispatch(
      encoder,
      this.#pipeline("rope", "main"),
      [
        ["x", 0, args.x, rows * headDim],
        ["table", 1, args.table, maxPositions * rotaryDim],
        ["out", 2, args.out, rows * headDim, "w"],
      ],
      3,
      pack([
        ["u", rows],
        ["u", headDim],
        ["u", rotaryDim],
        ["u", heads],
        ["u", seqLen],
        ["u", posOffset],
        ["u", maxPositions],
        ["u", args.style === "interleaved" ? 1 : 0],
        ["u", args.inverse ? 1 : 0],
      ]),
      [groupsFor(rows * headDim, 256), 1, 1],
    );
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
    this.#dispatch(
      encoder,
      this.#pipeline("grad_clip", "main"),
      [["sumSquares", 0, args.sumSquares, 1], ["scale", 1, args.scale, 2, "w"]],
      2,
      pack([["f", args.maxNorm]]),
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
    this.#dispatch(
      encoder,
      this.#pipeline("adamw", "main"),
      [
        ["grad", 0, args.grad, n],
        ["gradScale", 1, args.gradScale, 1],
        ["param", 2, args.param, n, "w"],
        ["m", 3, args.m, n, "w"],
        ["v", 4, args.v, n, "w"],
      ],
      5,
      pack([
        ["u", n],
        ["f", lr / (1 - Math.pow(beta1, step))],
        ["f", Math.sqrt(1 - Math.pow(beta2, step))],
        ["f", beta1],
        ["f", beta2],
        ["f", args.eps],
        ["f", 1 - lr * args.weightDecay],
      ]),
      [groupsFor(n, 256), 1, 1],
    );
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
    this.#dispatch(
      encoder,
      this.#pipeline("attention", "fwd"),
      [
        ["q", 0, args.q, a.queryElems],
        ["k", 1, args.k, a.kvElems],
        ["v", 2, args.v, a.kvElems],
        ["out", 7, args.out, a.queryElems, "w"],
        ["lse", 8, args.lse, a.queryRows, "w"],
      ],
      9,
      a.uniform,
      [Math.min(a.queryRows, this.#maxGroups), 1, 1],
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
    const q: Arg = ["q", 0, args.q, a.queryElems];
    const k: Arg = ["k", 1, args.k, a.kvElems];
    const v: Arg = ["v", 2, args.v, a.kvElems];
    const dOut: Arg = ["dOut", 4, args.dOut, a.queryElems];
    const lse: Arg = ["lse", 5, args.lse, a.queryRows];
    this.#dispatch(
      encoder,
      this.#pipeline("attention", "bwd_dq"),
      [
        q,
        k,
        v,
        ["out", 3, args.out, a.queryElems],
        dOut,
        lse,
        ["dq", 7, args.dq, a.queryElems, "w"],
        ["delta", 8, args.delta, a.queryRows, "w"],
      ],
      9,
      a.uniform,
      [Math.min(a.queryRows, this.#maxGroups), 1, 1],
    );
    this.#dispatch(
      encoder,
      this.#pipeline("attention", "bwd_dkv"),
      [
        q,
        dOut,
        lse,
        ["delta", 6, args.delta, a.queryRows],
        ["k", 1, args.k, a.kvElems],
        ["v", 2, args.v, a.kvElems],
        ["dk", 7, args.dk, a.kvElems, "w"],
        ["dv", 8, args.dv, a.kvElems, "w"],
      ],
      9,
      a.uniform,
      [Math.min(a.kvElems / args.headDim, this.#maxGroups), 1, 1],
    );
  }

  /** `out = value` over `n` values. */
  fill(
    encoder: GPUCommandEncoder,
    args: {
      readonly out: GPUBuffer;
      readonly n: number;
      readonly value: number;
    },
  ): void {
    requireFinite("value", args.value);
    const n = args.n;
    this.#elementwise(
      encoder,
      "arith",
      "fill",
      n,
      [
        ["out", 2, args.out, n, "w"],
      ],
      3,
      [["f", args.value]],
    );
  }

  /** `x = max(min(x, limit), −limit)` in place over `n` values (latent-weight clipping). */
  clampAbs(
    encoder: GPUCommandEncoder,
    args: {
      readonly x: GPUBuffer;
      readonly n: number;
      readonly limit: number;
    },
  ): void {
    requireFinite("limit", args.limit);
    const n = args.n;
    this.#elementwise(
      encoder,
      "arith",
      "clamp_abs",
      n,
      [
        ["x", 2, args.x, n, "w"],
      ],
      3,
      [["f", args.limit]],
    );
  }

  /** `out = a ⊙ b` over `n` values. */
  mul(
    encoder: GPUCommandEncoder,
    args: {
      readonly a: GPUBuffer;
      readonly b: GPUBuffer;
      readonly out: GPUBuffer;
      readonly n: number;
    },
  ): void {
    this.#binary(encoder, "mul", args);
  }

  /** `out += a ⊙ b` over `n` values (fused multiply-add). */
  mulAccumulate(
    encoder: GPUCommandEncoder,
    args: {
      readonly a: GPUBuffer;
      readonly b: GPUBuffer;
      readonly out: GPUBuffer;
      readonly n: number;
    },
  ): void {
    this.#binary(encoder, "mul_acc", args);
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
    const uniform = (groups: number) =>
      pack([
        ["u", n],
        ["u", rows],
        ["u", cols],
        ["u", codes[mode]],
        ["f", lambda],
        ["f", 1e-5], // QUANT_EPS of src/core/quantize.ts, not imported: this module loads without npm
        ["f", MAX_INT8_STEP],
        ["u", groups],
      ]);
    const w: Arg = ["w", 0, args.w, n];
    const out: Arg = ["out", 3, args.out, n, "w"];
    if (mode === "eightbit") {
      this.#dispatch(
        encoder,
        this.#pipeline("weight_quant", "eightbit"),
        [w, out],
        4,
        uniform(0),
        [Math.min(rows, this.#maxGroups), 1, 1],
      );
      return;
    }
    if (mode !== "f16") this.absMean(encoder, { x: args.w, n, out: stats });
    if (mode === "ternary") {
      const groups = Math.min(groupsFor(n, 1024), REDUCE_GROUPS);
      const partials: Arg = [
        "partials",
        2,
        this.#keptPartials(),
        2 * groups,
        "w",
      ];
      const st: Arg = ["stats", 1, stats, 2, "w"];
      this.#dispatch(
        encoder,
        this.#pipeline("weight_quant", "kept_partial"),
        [w, st, partials],
        4,
        uniform(groups),
        [groups, 1, 1],
      );
      this.#dispatch(
        encoder,
        this.#pipeline("weight_quant", "kept_finish"),
        [st, partials],
        4,
        uniform(groups),
        [1, 1, 1],
      );
    }
    this.#dispatch(
      encoder,
      this.#pipeline("weight_quant", "apply"),
      [w, ["stats", 1, stats, 2, "w"], out], // f16 ignores the stats
      4,
      uniform(0),
      [groupsFor(n, 256), 1, 1],
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
    requireInt("rows", rows, 1);
    requireInt("dim", dim, 1);
    requireFinite("eps", args.eps);
    this.#dispatch(
      encoder,
      this.#pipeline("layernorm", "fwd"),
      [
        ["x", 0, args.x, rows * dim],
        ["weight", 1, args.weight, dim],
        ["bias", 2, args.bias, dim],
        ["out", 6, args.out, rows * dim, "w"],
        ["mean", 7, args.mean, rows, "w"],
        ["rstd", 8, args.rstd, rows, "w"],
      ],
      9,
      pack([["u", rows], ["u", dim], ["f", args.eps]]),
      [Math.min(rows, this.#maxGroups), 1, 1],
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
    requireInt("rows", rows, 1);
    requireInt("dim", dim, 1);
    const uniform = pack([["u", rows], ["u", dim], ["f", 0]]);
    const x: Arg = ["x", 0, args.x, rows * dim];
    const dy: Arg = ["dy", 3, args.dy, rows * dim];
    const mean: Arg = ["mean", 4, args.mean, rows];
    const rstd: Arg = ["rstd", 5, args.rstd, rows];
    this.#dispatch(
      encoder,
      this.#pipeline("layernorm", "bwd_dx"),
      [x, ["weight", 1, args.weight, dim], dy, mean, rstd, [
        "dx",
        6,
        args.dx,
        rows * dim,
        "w",
      ]],
      9,
      uniform,
      [Math.min(rows, this.#maxGroups), 1, 1],
    );
    this.#dispatch(
      encoder,
      this.#pipeline("layernorm", "bwd_dwb"),
      [x, dy, mean, rstd, ["dWeight", 7, args.dWeight, dim, "w"], [
        "dBias",
        8,
        args.dBias,
        dim,
        "w",
      ]],
      9,
      uniform,
      [groupsFor(dim, 128), 1, 1],
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
    args: {
      readonly logits: GPUBuffer;
      readonly targets: GPUBuffer;
      readonly probs: GPUBuffer;
      readonly rowStats: GPUBuffer;
      readonly losses: GPUBuffer;
      readonly rows: number;
      readonly vocab: number;
      readonly ignore: number;
      readonly smoothing: number;
      readonly count: number;
    },
  ): void {
    const { rows, vocab, count } = args;
    const uniform = softmaxCrossEntropyParams(
      args,
      count > 0 ? 1 / count : 0,
      0,
    );
    const rowStats: Arg = ["rowStats", 4, args.rowStats, 2 * rows, "w"];
    this.#dispatch(
      encoder,
      this.#pipeline("softmax_cross_entropy", "fwd"),
      [
        ["logits", 0, args.logits, rows * vocab],
        ["targets", 1, args.targets, rows],
        ["probs", 3, args.probs, rows * vocab, "w"],
        rowStats,
      ],
      6,
      uniform,
      [Math.min(rows, this.#maxGroups), 1, 1],
    );
    this.#dispatch(
      encoder,
      this.#pipeline("softmax_cross_entropy", "finish"),
      [rowStats, ["losses", 5, args.losses, 2, "w"]],
      6,
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
    args: {
      readonly probs: GPUBuffer;
      readonly targets: GPUBuffer;
      readonly dLogits: GPUBuffer;
      readonly rows: number;
      readonly vocab: number;
      readonly ignore: number;
      readonly smoothing: number;
      readonly count: number;
      readonly scale: number;
    },
  ): void {
    const { rows, vocab, count } = args;
    requireFinite("scale", args.scale);
    if (count === 0) return;
    this.#dispatch(
      encoder,
      this.#pipeline("softmax_cross_entropy", "bwd"),
      [
        ["targets", 1, args.targets, rows],
        ["probs", 2, args.probs, rows * vocab],
        ["dLogits", 3, args.dLogits, rows * vocab, "w"],
      ],
      6,
      softmaxCrossEntropyParams(args, 0, args.scale / count),
      [groupsFor(rows * vocab, 256), 1, 1],
    );
  }

  #quantStats(): GPUBuffer {
    return this.#stats ??= this.pool.acquire(2 * 4);
  }

  #keptPartials(): GPUBuffer {
    return this.#kept ??= this.pool.acquire(2 * REDUCE_GROUPS * 4);
  }

  #elementwise(
    encoder: GPUCommandEncoder,
    key: PipelineKey,
    entry: string,
    n: number,
    buffers: readonly Arg[],
    uniformBinding: number,
    extra: readonly Field[],
  ): void {
    requireInt("n", n, 1);
    this.#dispatch(
      encoder,
      this.#pipeline(key, entry),
      buffers,
      uniformBinding,
      pack([["u", n], ...extra]),
      [groupsFor(n, 256), 1, 1],
    );
  }

  // Two passes: ≤ 256 workgroups write partial sums, one workgroup adds them up.
  #reduce(
    encoder: GPUCommandEncoder,
    x: GPUBuffer,
    n: number,
    mode: 0 | 1,
    out: GPUBuffer,
    outIndex: number,
    scale: number,
    accumulate: boolean,
  ): void {
    requireInt("outIndex", outIndex, 0);
    const groups = Math.min(groupsFor(n, 1024), REDUCE_GROUPS);
    const uniform = pack([
      ["u", n],
      ["u", mode],
      ["u", groups],
      ["u", outIndex],
      ["f", scale],
      ["u", accumulate ? 1 : 0],
    ]);
    const partials: Arg = ["partials", 1, this.#partials, groups, "w"];
    this.#dispatch(
      encoder,
      this.#pipeline("reduce", "partial"),
      [["x", 0, x, n], partials],
      3,
      uniform,
      [
        groups,
        1,
        1,
      ],
    );
    this.#dispatch(
      encoder,
      this.#pipeline("reduce", "finish"),
      [partials, ["out", 2, out, outIndex + 1, "w"]],
      3,
      uniform,
      [1, 1, 1],
    );
  }

  // Validates sizes and aliasing, then records one dispatch in its own compute pass
  // with a fresh uniform buffer at `uniformBinding`.
  #dispatch(
    encoder: GPUCommandEncoder,
    pipeline: GPUComputePipeline,
    args: readonly Arg[],
    uniformBinding: number,
    uniform: ArrayBuffer,
    groups: readonly [number, number, number],
  ): void {
    for (const [name, , buffer, elements, written] of args) {
      if (elements * 4 > buffer.size) {
        throw new Error(
          `${name} holds ${
            buffer.size / 4
          } 4-byte elements but ${elements} are needed`,
        );
      }
      // WebGPU forbids a buffer bound read-write alongside any other binding of it.
      const other = written &&
        args.find((a) => a[2] === buffer && a[0] !== name);
      if (other) {
        throw new Error(`${name} must not be the same buffer as ${other[0]}`);
      }
    }
    const entries: GPUBindGroupEntry[] = args.map(([, binding, buffer]) => ({
      binding,
      resource: { buffer },
    }));
    entries.push({
      binding: uniformBinding,
      resource: { buffer: this.pool.uniform(encoder, uniform) },
    });
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
    key: PipelineKey,
    entryPoint: string,
    constants?: Record<string, number>,
  ): GPUComputePipeline {
    const id = `${key}:${entryPoint}:${JSON.stringify(constants ?? {})}`;
    let pipeline = this.#pipelines.get(id);
    if (pipeline === undefined) {
      let module = this.#modules.get(key);
      if (module === undefined) {
        module = this.device.createShaderModule({
          label: key,
          code: SOURCES[key],
        });
        this.#modules.set(key, module);
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

// Validates an attention shape; returns its sizes and packed uniform.
function attentionParams(shape: AttentionShape): {
  queryRows: number;
  queryElems: number;
  kvElems: number;
  uniform: ArrayBuffer;
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
    uniform: pack([
      ["u", tokens],
      ["u", seqLen],
      ["u", heads],
      ["u", kvHeads],
      ["u", headDim],
      ["f", scale],
    ]),
  };
}

// Validates the arguments of both softmax cross-entropy passes; returns their uniform.
function softmaxCrossEntropyParams(
  args: {
    readonly rows: number;
    readonly vocab: number;
    readonly ignore: number;
    readonly smoothing: number;
    readonly count: number;
  },
  invCount: number,
  k: number,
): ArrayBuffer {
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
  return pack([
    ["u", args.rows],
    ["u", args.vocab],
    ["i", args.ignore],
    ["f", args.smoothing],
    ["f", invCount],
    ["f", k],
  ]);
}
