/**
 * WebAssembly SIMD kernels for the CPU compute engine: f32 matmul (packed
 * panels, 2×16 register tile), f32 matvec and its f16-weight form, per-row
 * int8 quantization, ternarization + 2-bit packing of weights, the ternary ×
 * int8 matmul/matvec of BitNet b1.58, the int8 × int8 matmul of `eightbit`
 * linears, a session's attention over its KV cache, and the element-wise and
 * per-row kernels of training ({@link TrainingKernels}).
 *
 * All kernels work on byte pointers into one `WebAssembly.Memory` (shared
 * where the engine allows) owned by a {@link WasmKernels} instance, which
 * also manages it as an arena ({@link WasmKernels.alloc} /
 * {@link WasmKernels.free}). Views returned by {@link WasmKernels.f32} and
 * friends must be re-created after any `alloc`, which may grow the memory.
 * The first calls of a kernel run V8's baseline code; time them after a
 * warmup.
 *
 * @module
 */
import {
  PORTABLE_KERNELS_BASE64,
  RELAXED_KERNELS_BASE64,
} from "./kernels.wasm.ts";
import {
  f64Words,
  JOB,
  MAP_KERNEL_NAMES,
  MAP_KERNELS,
  MAP_SCALARS,
  MAP_UNIT,
  type MapKernel,
  type MatmulExport,
  MatmulPool,
  OP_ACT_QUANT,
  OP_ATTEND,
  OP_ATTENTION_BWD,
  OP_ATTENTION_FWD,
  OP_INT8,
  OP_MAP,
  OP_MATMUL,
  OP_MATMUL_COLS,
  OP_NLL,
  OP_QUANTIZE,
  OP_RMSNORM,
  OP_ROPE,
  OP_SOFTMAX,
  OP_TERNARY,
  type PoolExports,
  runHere,
} from "./matmul_pool.ts";

/**
 * Which kernel module runs: `"relaxed"` (relaxed SIMD: fused multiply-add and
 * the i8×i7 dot product) or `"portable"` (SIMD128 only).
 */
export type WasmVariant = "relaxed" | "portable";

function decodeBase64(text: string): Uint8Array<ArrayBuffer> {
  const s = atob(text);
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return bytes;
}

const BYTES: Record<WasmVariant, Uint8Array<ArrayBuffer>> = {
  relaxed: decodeBase64(RELAXED_KERNELS_BASE64),
  portable: decodeBase64(PORTABLE_KERNELS_BASE64),
};

/**
 * The module with its imported memory declared unshared: the limits flag of
 * the `env.memory` import goes from 0x03 (max, shared) to 0x01 (max). For
 * engines without shared memory (browsers that are not cross-origin isolated).
 */
function unsharedMemoryBytes(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const tag = [3, 0x65, 0x6e, 0x76, 6, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 2];
  for (let i = 8; i + tag.length < bytes.length; i++) {
    if (tag.every((b, j) => bytes[i + j] === b)) {
      const out = bytes.slice();
      if (out[i + tag.length] !== 3) break;
      out[i + tag.length] = 1;
      return out;
    }
  }
  throw new Error("kernels: no shared env.memory import found");
}

/** The wasm bytes of one kernel module variant (a copy). */
export function wasmKernelBytes(variant: WasmVariant): Uint8Array {
  return BYTES[variant].slice();
}

/** Whether this engine accepts the relaxed-SIMD module. */
export const RELAXED_SIMD_SUPPORTED: boolean = WebAssembly.validate(
  BYTES.relaxed,
);

/** Whether this engine can create a shared `WebAssembly.Memory`. */
export const SHARED_MEMORY_SUPPORTED: boolean = (() => {
  try {
    new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    return true;
  } catch {
    return false;
  }
})();

/** The variant {@link WasmKernels.create} picks by default on this engine. */
export const ACTIVE_WASM_VARIANT: WasmVariant = RELAXED_SIMD_SUPPORTED
  ? "relaxed"
  : "portable";

/** Weights per ternary block: 64 weights in 16 bytes. */
export const TERNARY_BLOCK = 64;

/** `cols` rounded up to a whole number of ternary blocks (64). */
export function ternaryPaddedCols(cols: number): number {
  checkCount(cols, "cols");
  return Math.ceil(cols / TERNARY_BLOCK) * TERNARY_BLOCK;
}

/** Bytes per packed ternary row: `ternaryPaddedCols(cols) / 4`. */
export function ternaryRowBytes(cols: number): number {
  return ternaryPaddedCols(cols) / 4;
}

/**
 * Packs ternary weights {−1, 0, +1} (row-major `rows × cols`) into 2-bit codes
 * c = w + 1: per row, blocks of 64 weights in 16 bytes, byte i of a block
 * holding weight 16j + i in bits 2j..2j+1; rows padded to a multiple of 64
 * with code 1 (weight 0). Result: `rows × ternaryRowBytes(cols)` bytes.
 */
export function packTernaryRows(
  weights: Int8Array,
  rows: number,
  cols: number,
): Uint8Array {
  checkCount(rows, "rows");
  const rb = ternaryRowBytes(cols);
  if (weights.length !== rows * cols) {
    throw new RangeError(
      `weights: length ${weights.length} is not rows·cols = ${rows * cols}`,
    );
  }
  // 0x55 = code 1 in all four slots: the padding reads as weight 0.
  const out = new Uint8Array(rows * rb).fill(0x55);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < cols; k++) {
      const w = weights[r * cols + k];
      if (w < -1 || w > 1) {
        throw new RangeError(
          `weights: element ${r * cols + k} is ${w}, not in {-1, 0, 1}`,
        );
      }
      const block = k >> 6, within = k & 63;
      const byte = r * rb + block * 16 + (within & 15);
      const shift = 2 * (within >> 4);
      out[byte] = (out[byte] & ~(3 << shift)) | ((w + 1) << shift);
    }
  }
  return out;
}

/** Inverse of {@link packTernaryRows}: the weights {−1, 0, +1}, row-major. */
export function unpackTernaryRows(
  packed: Uint8Array,
  rows: number,
  cols: number,
): Int8Array {
  checkCount(rows, "rows");
  const rb = ternaryRowBytes(cols);
  if (packed.length < rows * rb) {
    throw new RangeError(
      `packed: length ${packed.length} is below rows·rowBytes = ${rows * rb}`,
    );
  }
  const out = new Int8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < cols; k++) {
      const byte = packed[r * rb + (k >> 6) * 16 + (k & 15)];
      const code = (byte >> (2 * ((k & 63) >> 4))) & 3;
      if (code === 3) {
        throw new RangeError(`packed: invalid code 3 at row ${r}, col ${k}`);
      }
      out[r * cols + k] = code - 1;
    }
  }
  return out;
}

/** Arguments of {@link WasmKernels.matmul}; pointers are byte offsets. */
export interface MatmulArgs {
  /** op(A) is M×K: A stored M×K row-major, or K×M when `transA`. */
  readonly a: number;
  /** op(B) is K×N: B stored K×N row-major, or N×K when `transB`. */
  readonly b: number;
  /** C, M×N row-major. */
  readonly c: number;
  /** Rows of C. */
  readonly m: number;
  /** Columns of C. */
  readonly n: number;
  /** Inner dimension (0 gives C = 0, or C unchanged with `accumulate`). */
  readonly k: number;
  /** A is stored transposed (K×M). Default false. */
  readonly transA?: boolean;
  /** B is stored transposed (N×K). Default false. */
  readonly transB?: boolean;
  /** C += op(A)·op(B) instead of C = op(A)·op(B). Default false. */
  readonly accumulate?: boolean;
  /** Leading dimension of A in elements (default: its row length). */
  readonly lda?: number;
  /** Leading dimension of B in elements (default: its row length). */
  readonly ldb?: number;
  /** Leading dimension of C in elements (default n). */
  readonly ldc?: number;
}

/**
 * The register tiles of the f32 matmul the module holds (rows × columns of C
 * per micro-kernel call); see scripts/wasm_kernels_wat.ts.
 */
export const MATMUL_TILES: readonly MatmulTileName[] = [
  "2x16",
  "5x8",
  "6x8",
  "3x12",
];

/** A register tile of the f32 matmul, `<rows>x<columns>`. */
export type MatmulTileName = "2x16" | "5x8" | "6x8" | "3x12";

/**
 * How the f32 matmul runs: its register tile and its cache blocking (BLIS
 * style: `kc`-deep panels, `mc` rows of A and `nc` columns of B per packed
 * block). Chosen per machine by measurement (src/backend/cpu/matmul_tuning.ts);
 * every choice computes the same sums in the same order per `kc` block, so
 * results differ between configurations only when `kc` differs.
 */
export interface MatmulConfig {
  /** The register tile. */
  readonly tile: MatmulTileName;
  /** Rows of A per packed block (a positive multiple of the tile's rows). */
  readonly mc: number;
  /** Depth of a packed block (a positive multiple of 4). */
  readonly kc: number;
  /** Columns of B per packed block (a positive multiple of the tile's columns). */
  readonly nc: number;
}

/**
 * The configuration tuned on the AVX-512 machine the kernels were first
 * written on (there 64 rows of a 4-byte A panel; 16 rows of the splatted
 * panel keep its 64 KiB).
 */
export const DEFAULT_MATMUL_CONFIG: MatmulConfig = {
  tile: "2x16",
  mc: 16,
  kc: 256,
  nc: 2048,
};

/** Rows and columns of a tile name. */
function tileShape(tile: MatmulTileName): { mr: number; nr: number } {
  const [mr, nr] = tile.split("x").map(Number);
  return { mr, nr };
}

/**
 * Workspace bytes of one f32 matmul producing `n` columns under `config`:
 * the spill tile, the packed A block (each element splatted to four lanes,
 * so 16 bytes an element) and the packed B block (whole tile columns).
 */
function matmulWorkBytes(config: MatmulConfig, n: number): number {
  const { mc, kc, nc } = config;
  const { mr, nr } = tileShape(config.tile);
  return 4 *
    (mr * nr + 4 * mc * kc + Math.ceil(Math.min(n, nc) / nr) * nr * kc);
}

/** Throws a RangeError naming the field when `config` is not a valid {@link MatmulConfig}. */
export function checkMatmulConfig(config: MatmulConfig): void {
  if (!MATMUL_TILES.includes(config.tile)) {
    throw new RangeError(
      `tile: unknown matmul tile ${config.tile} (one of ${
        MATMUL_TILES.join(", ")
      })`,
    );
  }
  const { mr, nr } = tileShape(config.tile);
  const multiple = (v: number, of: number, name: string) => {
    if (!Number.isInteger(v) || v <= 0 || v % of !== 0 || v > 1 << 16) {
      throw new RangeError(
        `${name}: expected a positive multiple of ${of} up to 65536, got ${v}`,
      );
    }
  };
  multiple(config.mc, mr, "mc");
  multiple(config.kc, 4, "kc");
  multiple(config.nc, nr, "nc");
}

/** Arguments of {@link WasmKernels.matvec}; pointers are byte offsets. */
export interface MatvecArgs {
  /** W, n×k row-major (f32). */
  readonly w: number;
  /** x, k floats. */
  readonly x: number;
  /** y, n floats. */
  readonly y: number;
  /** Rows of W (outputs). */
  readonly n: number;
  /** Columns of W (inputs). */
  readonly k: number;
  /** Leading dimension of W in elements (default k). */
  readonly ldw?: number;
  /** y += W·x instead of y = W·x. Default false. */
  readonly accumulate?: boolean;
}

/** Arguments of {@link WasmKernels.matvecF16}; pointers are byte offsets. */
export interface MatvecF16Args {
  /** W, n×k row-major f16 bit patterns (2 bytes each, finite values). */
  readonly w: number;
  /** x, k f32 values. */
  readonly x: number;
  /** y, n f32 values. */
  readonly y: number;
  /** Rows of W (outputs). */
  readonly n: number;
  /** Columns of W (inputs). */
  readonly k: number;
  /** Leading dimension of W in elements (default k). */
  readonly ldw?: number;
  /** y += W·x instead of y = W·x. Default false. */
  readonly accumulate?: boolean;
}

/** Arguments of {@link WasmKernels.int8Matmul}; pointers are byte offsets. */
export interface Int8MatmulArgs {
  /** int8 weights: n rows of ternaryPaddedCols(k) bytes, zero-padded ({@link packInt8Rows}). */
  readonly w: number;
  /** f32 per weight row: its step (the weight is `code · scale`). */
  readonly scales: number;
  /** Output features (weight rows). */
  readonly n: number;
  /** Input features (logical, unpadded; at most {@link INT8_MAX_K}). */
  readonly k: number;
  /** int8 activations, `tokens` rows of ternaryPaddedCols(k) bytes, zero-padded. */
  readonly x: number;
  /** Tokens (rows of x and of out). */
  readonly tokens: number;
  /** f32 per token: 1/s of its quantization. */
  readonly invScales: number;
  /** f32 output, tokens × n. */
  readonly out: number;
  /** Leading dimension of out in elements (default n). */
  readonly ldo?: number;
}

/**
 * Input features the int8 × int8 kernel takes at most: its i32 sums of
 * products (each |c·x| ≤ 127·128) cannot overflow below 2^17 columns.
 */
export const INT8_MAX_K = 1 << 17;

/**
 * Lays int8 weights (row-major `rows × cols`) out for
 * {@link WasmKernels.int8Matmul}: rows padded with zeros to
 * `ternaryPaddedCols(cols)` bytes (the padding of the activations).
 */
export function packInt8Rows(
  codes: Int8Array,
  rows: number,
  cols: number,
): Int8Array {
  checkCount(rows, "rows");
  const kpad = ternaryPaddedCols(cols);
  if (codes.length !== rows * cols) {
    throw new RangeError(
      `codes: length ${codes.length} is not rows·cols = ${rows * cols}`,
    );
  }
  const out = new Int8Array(rows * kpad);
  for (let r = 0; r < rows; r++) {
    out.set(codes.subarray(r * cols, (r + 1) * cols), r * kpad);
  }
  return out;
}

/** Arguments of {@link WasmKernels.attendSession}; pointers are byte offsets. */
export interface AttendSessionArgs {
  /** Queries, `T` rows of `qRow` floats (head h at `h·D`). */
  readonly q: number;
  /** Keys, head-major `[Hkv, ctx, D]` f32. */
  readonly k: number;
  /** Values, transposed `[Hkv·D, ctx]` f32. */
  readonly vt: number;
  /** Output, `T` rows of `qRow` floats (head h at `h·D`). */
  readonly out: number;
  /** New queries. */
  readonly T: number;
  /** Query heads. */
  readonly heads: number;
  /** Key/value heads (dividing `heads`). */
  readonly kvHeads: number;
  /** Head dimension D. */
  readonly headDim: number;
  /** Rows of the cache. */
  readonly ctx: number;
  /** Absolute position of the first query (query r sees `min(pos0 + r + 1, ctx)` rows). */
  readonly pos0: number;
  /** Floats per query/output row (≥ heads·D). */
  readonly qRow: number;
  /** Scores scratch, `ctx` floats. */
  readonly scores: number;
  /** Multiplier of the scores before the softmax (1/√D). */
  readonly scale: number;
  /** f64 scratch of 3 values (the softmax's statistics), 8-aligned. */
  readonly stats: number;
}

/** Arguments of {@link WasmKernels.quantizeRows}; pointers are byte offsets. */
export interface QuantizeArgs {
  /** x, rows × cols f32. */
  readonly x: number;
  /** Rows (tokens) to quantize, each on its own scale. */
  readonly rows: number;
  /** Values per row. */
  readonly cols: number;
  /** Leading dimension of x in elements (default cols). */
  readonly ldx?: number;
  /** int8 output, rows × ternaryPaddedCols(cols), zero-padded. */
  readonly out: number;
  /** f32 per row: 1/s = max(max|x|, eps)/127. */
  readonly invScales: number;
  /** i32 per row: Σ of the row's int8 values. */
  readonly sums: number;
  /** Lower bound of the absmax (default 1e-5). */
  readonly eps?: number;
}

/** Arguments of {@link WasmKernels.actQuant}; pointers are byte offsets. */
export interface ActQuantArgs {
  /** Input, rows × cols f32 (contiguous). */
  readonly x: number;
  /** Output `q / s`, rows × cols f32 (may alias x). */
  readonly o: number;
  /** Rows, each on its own scale. */
  readonly rows: number;
  /** Values per row. */
  readonly cols: number;
}

/** Arguments of {@link WasmKernels.rmsnorm}; pointers are byte offsets. */
export interface RmsnormArgs {
  /** Input, rows × dim f32 (contiguous). */
  readonly x: number;
  /** Gain, dim f32. */
  readonly g: number;
  /** Output, rows × dim f32 (may alias x). */
  readonly o: number;
  /** f32 per row: 1/√(mean x² + eps). */
  readonly rstd: number;
  /** Rows. */
  readonly rows: number;
  /** Values per row. */
  readonly dim: number;
  /** Added to the mean square. */
  readonly eps: number;
}

export type { MapKernel };

/** Arguments of {@link WasmKernels.map}; pointers are byte offsets. */
export interface MapArgs {
  /** The element-wise kernel. */
  readonly kernel: MapKernel;
  /** Its arrays of `n` f32 in the order of its parameters (outputs may alias inputs). */
  readonly arrays: readonly number[];
  /** Its scalar parameters in order (none by default). */
  readonly scalars?: readonly number[];
  /** Elements. */
  readonly n: number;
}

/** Arguments of {@link WasmKernels.rope}; pointers are byte offsets. */
export interface RopeArgs {
  /** Input rows, rows × heads × headDim f32. */
  readonly x: number;
  /** Output rows (added into with `accumulate`). */
  readonly o: number;
  /** Rows: sequences of `T` positions, row r at position r mod T. */
  readonly rows: number;
  /** Positions per sequence. */
  readonly T: number;
  /** Heads per row. */
  readonly heads: number;
  /** Head width (even). */
  readonly headDim: number;
  /** Per position `headDim` cosines, T × headDim f32. */
  readonly cos: number;
  /** Per position `headDim` signed sines (negated for the inverse), T × headDim f32. */
  readonly sin: number;
  /** NEOX pairs (j, j + headDim/2); else adjacent pairs (2i, 2i + 1). */
  readonly neox: boolean;
  /** Add into `o` instead of overwriting it. */
  readonly accumulate?: boolean;
}

/** Arguments of {@link WasmKernels.softmaxRows}; pointers are byte offsets. */
export interface SoftmaxRowsArgs {
  /** Input rows, rows × cols f32. */
  readonly x: number;
  /** Output rows, rows × cols f32 (may alias x). */
  readonly p: number;
  /** Rows. */
  readonly rows: number;
  /** Elements per row. */
  readonly cols: number;
  /** Per row three f64: the max, Σ e^(x − max) and Σ x. */
  readonly stats: number;
}

/** Arguments of {@link WasmKernels.softmaxNll}; pointers are byte offsets. */
export interface SoftmaxNllArgs {
  /** Logits, rows × vocab f32, softmaxed in place. */
  readonly logits: number;
  /** Logits per row. */
  readonly vocab: number;
  /** Rows. */
  readonly rows: number;
  /** i32 per row: the target id, or −1 for a row not counted. */
  readonly targets: number;
  /** f64 per row (8-aligned): the row's −log p(target), 0 for −1. */
  readonly losses: number;
}

/** Arguments of {@link WasmKernels.attendRows}; pointers are byte offsets. */
export interface AttendRowsArgs {
  /** Queries, seqs·T rows of `qRow` floats (head h at `h·D`). */
  readonly q: number;
  /** Keys of sequence s at `k + s·seqBytes`: T rows of `kvRow` floats. */
  readonly k: number;
  /** Values, laid out as the keys. */
  readonly v: number;
  /** Output, laid out as the queries. */
  readonly out: number;
  /** Sequences. */
  readonly seqs: number;
  /** Tokens per sequence (all from position 0). */
  readonly T: number;
  /** Query heads. */
  readonly heads: number;
  /** Key/value heads (dividing `heads`). */
  readonly kvHeads: number;
  /** Head dimension D. */
  readonly headDim: number;
  /** Floats per query/output row (default heads·D). */
  readonly qRow?: number;
  /** Floats per key/value row (default kvHeads·D). */
  readonly kvRow?: number;
  /** Bytes from one sequence's keys (values) to the next's (default 4·T·kvRow). */
  readonly seqBytes?: number;
  /** Multiplier of the scores before the softmax (1/√D). */
  readonly scale: number;
}

/**
 * Arguments of {@link WasmKernels.causalAttention}: training's attention over
 * `[batch, T, heads·headDim]` tensors; pointers are byte offsets.
 */
export interface CausalAttentionArgs {
  /** Queries `[batch, T, heads·headDim]`. */
  readonly q: number;
  /** Keys `[batch, T, kvHeads·headDim]`. */
  readonly k: number;
  /** Values, as the keys. */
  readonly v: number;
  /** Output, as the queries. */
  readonly out: number;
  /** Probabilities `[batch, heads, T, T]` (written; zero past the diagonal). */
  readonly probs: number;
  /** Sequences. */
  readonly batch: number;
  /** Tokens per sequence. */
  readonly T: number;
  /** Query heads. */
  readonly heads: number;
  /** Key/value heads (dividing `heads`). */
  readonly kvHeads: number;
  /** Head width. */
  readonly headDim: number;
}

/**
 * Arguments of {@link WasmKernels.causalAttentionBackward}: the forward's
 * tensors with `out` as the output's gradient, and the gradients of the
 * queries, keys and values (added into).
 */
export interface CausalAttentionGradArgs extends CausalAttentionArgs {
  /** Gradient of the queries (accumulated). */
  readonly dq: number;
  /** Gradient of the keys (accumulated). */
  readonly dk: number;
  /** Gradient of the values (accumulated). */
  readonly dv: number;
}

/** Arguments of {@link WasmKernels.ternaryMatmul}; pointers are byte offsets. */
export interface TernaryMatmulArgs {
  /** Packed ternary weights: n rows of ternaryRowBytes(k) bytes. */
  readonly w: number;
  /** Output features (weight rows). */
  readonly n: number;
  /** Input features (logical, unpadded). */
  readonly k: number;
  /** int8 activations, `tokens` rows of ternaryPaddedCols(k) bytes, zero-padded. */
  readonly x: number;
  /** Tokens (rows of x and of out). */
  readonly tokens: number;
  /** i32 per token: Σ of its int8 activations. */
  readonly sums: number;
  /** f32 per token: 1/s of its quantization. */
  readonly invScales: number;
  /** Weight scale γ. */
  readonly scale: number;
  /** f32 output, tokens × n. */
  readonly out: number;
  /** Leading dimension of out in elements (default n). */
  readonly ldo?: number;
}

/** Arguments of {@link WasmKernels.packTernary}; pointers are byte offsets. */
export interface PackTernaryArgs {
  /** Latent f32 weights, rows × cols. */
  readonly w: number;
  /** Weight rows (output features). */
  readonly rows: number;
  /** Weights per row (input features). */
  readonly cols: number;
  /** Leading dimension of w in elements (default cols). */
  readonly ldw?: number;
  /** Multiplier before rounding, 1/(γ + ε) for BitNet's absmean γ. */
  readonly invScale: number;
  /** Packed output, rows × ternaryRowBytes(cols) bytes. */
  readonly out: number;
}

/**
 * The element-wise and per-row kernels of training, as raw exports: pointers
 * are byte offsets into {@link WasmKernels.memory}, counts are elements, and
 * NOTHING is checked — the caller (the CPU backend) validates every size
 * first. f32 kernels run in SIMD; the `*_f64` ones compute in f64 and match
 * the TypeScript reference bit for bit. `e^x` is a Cephes-style polynomial
 * (≈ 1 ulp), 0 below x = −87.34 and saturating at e^88.
 */
export interface TrainingKernels {
  /** `o[i] ← value`. */
  fill_f32(o: number, value: number, n: number): void;
  /** `bytes` zero bytes at `p`. */
  zero_bytes(p: number, bytes: number): void;
  /** `o ← a + b`. */
  add_f32(a: number, b: number, o: number, n: number): void;
  /** `o ← a ⊙ b`. */
  mul_f32(a: number, b: number, o: number, n: number): void;
  /** `o ← (acc ? o : 0) + a ⊙ b`. */
  mul_acc_f32(a: number, b: number, o: number, acc: number, n: number): void;
  /** `o ← (acc ? o : 0) + s·(x − c)`. */
  axmb_f32(
    x: number,
    o: number,
    s: number,
    c: number,
    acc: number,
    n: number,
  ): void;
  /** `o ← clamp(o, −limit, limit)` (NaN stays NaN). */
  clamp_f32(o: number, limit: number, n: number): void;
  /** `o ← x·σ(x)`. */
  silu_f32(x: number, o: number, n: number): void;
  /** `dx ← (acc ? dx : 0) + dy·σ(x)·(1 + x·(1 − σ(x)))`. */
  silu_bwd_f32(dy: number, x: number, dx: number, acc: number, n: number): void;
  /** `o ← max(x, 0)²`. */
  relu2_f32(x: number, o: number, n: number): void;
  /** `dx ← (acc ? dx : 0) + dy·2·max(x, 0)`. */
  relu2_bwd_f32(
    dy: number,
    x: number,
    dx: number,
    acc: number,
    n: number,
  ): void;
  /** `Σ |p_i|` in f64. */
  abs_sum_f64(p: number, n: number): number;
  /** `Σ p_i²` in f64. */
  sum_sq_f64(p: number, n: number): number;
  /** `o ← γ·clamp(roundHalfEven(w / d), −1, 1)`, the quotient in f64. */
  ternary_fq(w: number, o: number, gamma: number, d: number, n: number): void;
  /** `o ← fround(keep·x + λ·o)` in f64. */
  blend_f64(
    x: number,
    o: number,
    keep: number,
    lambda: number,
    n: number,
  ): void;
  /**
   * AdamW (PyTorch order) in f64 with f32 stores, as `adamwStep`; the
   * gradient is first scaled by `clip` in place when `doClip` is 1.
   */
  adamw_f64(
    p: number,
    g: number,
    m: number,
    v: number,
    clip: number,
    doClip: number,
    decay: number,
    beta1: number,
    oneMinusBeta1: number,
    beta2: number,
    oneMinusBeta2: number,
    stepSize: number,
    bc2Sqrt: number,
    eps: number,
    n: number,
  ): void;
  /** Per-row int8 absmax fake quantization (λ = 1); 1 if a row holds NaN/±∞ (then it stops). */
  act_quant(x: number, o: number, rows: number, cols: number): number;
  /** RMSNorm forward; writes `o` and the per-row `rstd` (f32). */
  rmsnorm_fwd(
    x: number,
    g: number,
    o: number,
    rstd: number,
    rows: number,
    dim: number,
    eps: number,
  ): void;
  /** RMSNorm backward; adds into `dg`, and into `dx` (or overwrites it when `acc` is 0). */
  rmsnorm_bwd(
    dy: number,
    x: number,
    g: number,
    rstd: number,
    dx: number,
    dg: number,
    rows: number,
    dim: number,
    acc: number,
  ): void;
  /** Softmax of one row into `p`; f64 `stats` = [max, Σ e^(x − max), Σ x]. */
  softmax_row(x: number, p: number, n: number, stats: number): void;
  /** Causal softmax in place of `[rows, T]` scores (row r is position r mod T), scaled by `scale`. */
  softmax_causal(s: number, rows: number, T: number, scale: number): void;
  /**
   * Causal softmax backward in place of `dp` (row r is position t = r mod T):
   * `dp_u ← p_u·(dp_u − Σ_{u'≤t} p_u'·dp_u')·scale` for u ≤ t, 0 after.
   */
  softmax_bwd(
    p: number,
    dp: number,
    rows: number,
    T: number,
    scale: number,
  ): void;
  /**
   * Rotation `o_j (+)= x_j·C_j + x_partner(j)·S_j` per head with tables of
   * `hd` entries per position (row r is position r mod T).
   */
  rope(
    x: number,
    o: number,
    rows: number,
    T: number,
    heads: number,
    hd: number,
    cos: number,
    sin: number,
    neox: number,
    acc: number,
  ): void;
  /** `o[r] ← table[ids[r]]` for rows of `dim` f32. */
  gather_rows(
    table: number,
    ids: number,
    o: number,
    n: number,
    dim: number,
  ): void;
  /** `dt[ids[r]] += dy[r]` for rows of `dim` f32. */
  scatter_add_rows(
    dy: number,
    ids: number,
    dt: number,
    n: number,
    dim: number,
  ): void;
}

interface KernelExports extends TrainingKernels {
  readonly [matmulTile: `matmul_${number}x${number}`]: MatmulExport;
  matvec(
    w: number,
    n: number,
    k: number,
    ldw: number,
    x: number,
    y: number,
    accumulate: number,
  ): void;
  quantize_rows(
    x: number,
    rows: number,
    k: number,
    ldx: number,
    out: number,
    kpad: number,
    invs: number,
    sums: number,
    eps: number,
  ): void;
  tmatmul(
    w: number,
    n: number,
    kpad: number,
    x: number,
    ldx: number,
    tokens: number,
    sums: number,
    invs: number,
    wscale: number,
    out: number,
    ldo: number,
  ): void;
  matvec_f16(
    w: number,
    n: number,
    k: number,
    ldw: number,
    x: number,
    y: number,
    accumulate: number,
  ): void;
  attend_session(
    q: number,
    k: number,
    vt: number,
    out: number,
    T: number,
    H: number,
    group: number,
    D: number,
    ctx: number,
    pos0: number,
    qRow: number,
    S: number,
    scale: number,
    stats: number,
  ): void;
  i8matmul(
    w: number,
    n: number,
    kpad: number,
    x: number,
    ldx: number,
    tokens: number,
    scales: number,
    invs: number,
    out: number,
    ldo: number,
  ): void;
  pack_ternary(
    src: number,
    rows: number,
    cols: number,
    ld: number,
    inv: number,
    dst: number,
  ): void;
  ternary_scale(w: number, n: number): number;
  fma_probe(iters: number): number;
}

const PAGE = 65536;
/** Multiply-adds from which a matmul is split across the pool's threads. */
const PARALLEL_MACS = 1 << 22;
/**
 * Elements (or multiply-adds of the integer kernels) from which a row or
 * element-wise job is split: ~50 µs of work, against ~10 µs to wake the
 * workers. A decode step's single token never reaches it.
 */
const PARALLEL_ELEMENTS = 1 << 16;
const MAX_PAGES = 65536;
const ALIGN = 64;
const I32_MAX = 0x7fffffff;

/** A block of the arena that is kept and grown (0 bytes: none yet). */
interface GrownBlock {
  ptr: number;
  bytes: number;
}

/**
 * The words of a row job: its arguments at `JOB.args`, `units` units to split
 * (`JOB.m`) in chunks of whole `unit`s (`JOB.mr`).
 */
function rowArgs(
  values: readonly number[],
  units: number,
  unit: number,
): [number, number][] {
  return [
    ...values.map((v, i) => [JOB.args + i, v] as [number, number]),
    [JOB.m, units],
    [JOB.mr, unit],
  ];
}

function checkCount(v: number, name: string): void {
  if (!Number.isInteger(v) || v < 0 || v > I32_MAX) {
    throw new RangeError(`${name}: expected a non-negative integer, got ${v}`);
  }
}

/** {@link checkCount} for every count of an attention call, in order, then that `kvHeads` divides `heads`. */
function checkHeadCounts(
  counts: Readonly<Record<string, number>>,
  heads: number,
  kvHeads: number,
): void {
  for (const [name, n] of Object.entries(counts)) checkCount(n, name);
  if (kvHeads === 0 || heads % kvHeads !== 0) {
    throw new RangeError(`kvHeads: ${kvHeads} does not divide heads ${heads}`);
  }
}

/** The bits of `x` rounded to f32, as an i32 job word. */
function f32Word(x: number): number {
  return new Int32Array(Float32Array.of(x).buffer)[0];
}

/**
 * The kernels bound to their own memory and arena. Create with
 * {@link WasmKernels.create}.
 */
export class WasmKernels {
  /** The variant this instance runs. */
  readonly variant: WasmVariant;
  /** The memory all pointers refer to (shared, growable). */
  readonly memory: WebAssembly.Memory;
  readonly #k: KernelExports;
  /** Free blocks sorted by address, never adjacent to each other or to #top. */
  readonly #freeList: { ptr: number; size: number }[] = [];
  readonly #sizes = new Map<number, number>();
  #top = ALIGN; // the first 64 bytes stay unused so that no pointer is 0
  /** This thread's matmul workspace. */
  readonly #work: GrownBlock = { ptr: 0, bytes: 0 };
  #matmulConfig: MatmulConfig = DEFAULT_MATMUL_CONFIG;
  #matmulFn: MatmulExport;
  #pool: MatmulPool | undefined;
  /** B packed once for a pooled matmul's chunks. */
  readonly #packedB: GrownBlock = { ptr: 0, bytes: 0 };
  /** Workspace of each pool worker (index 0 unused: the caller's is #work). */
  readonly #poolWork: GrownBlock[] = [];

  private constructor(
    variant: WasmVariant,
    memory: WebAssembly.Memory,
    exports: KernelExports,
  ) {
    this.variant = variant;
    this.memory = memory;
    this.#k = exports;
    this.#matmulFn = exports[`matmul_${DEFAULT_MATMUL_CONFIG.tile}`];
  }

  /**
   * Compiles and instantiates the kernels (`variant` defaults to
   * {@link ACTIVE_WASM_VARIANT}); throws if the engine lacks the variant.
   */
  static async create(
    options: {
      readonly variant?: WasmVariant;
      /**
       * Use a shared memory (default: when the engine allows one), so that
       * workers could run kernels on the same arena.
       */
      readonly sharedMemory?: boolean;
      /**
       * Threads the large kernels run on (default 1): with more, workers over
       * the shared memory claim chunks of each matmul (rows or columns of C),
       * integer matmul (tokens), row kernel (rows) and whole-sequence
       * attention ((sequence, head) pairs); results are bit-identical for any
       * count. Release them with {@link close}.
       */
      readonly threads?: number;
    } = {},
  ): Promise<WasmKernels> {
    const threads = options.threads ?? 1;
    if (!Number.isInteger(threads) || threads < 1 || threads > 96) {
      throw new RangeError(
        `threads: expected an integer from 1 to 96, got ${threads}`,
      );
    }
    const variant = options.variant ?? ACTIVE_WASM_VARIANT;
    if (variant !== "relaxed" && variant !== "portable") {
      throw new RangeError(`variant: unknown variant ${variant}`);
    }
    if (variant === "relaxed" && !RELAXED_SIMD_SUPPORTED) {
      throw new Error("variant: this engine does not support relaxed SIMD");
    }
    const shared = options.sharedMemory ?? SHARED_MEMORY_SUPPORTED;
    const memory = new WebAssembly.Memory({
      initial: 16,
      maximum: MAX_PAGES,
      shared,
    });
    const module = await WebAssembly.compile(
      shared ? BYTES[variant] : unsharedMemoryBytes(BYTES[variant]),
    );
    const instance = await WebAssembly.instantiate(module, { env: { memory } });
    const kernels = new WasmKernels(
      variant,
      memory,
      instance.exports as unknown as KernelExports,
    );
    if (threads > 1) {
      if (!shared) {
        throw new RangeError("threads: more than 1 needs a shared memory");
      }
      const control = kernels.alloc(4 * JOB.words);
      kernels.i32(control, JOB.words).fill(0);
      kernels.#pool = await MatmulPool.start(
        BYTES[variant],
        memory,
        control,
        threads,
      );
    }
    return kernels;
  }

  /** Threads the large kernels run on. */
  get threads(): number {
    return this.#pool?.threads ?? 1;
  }

  /** Stops the worker threads, if any (idempotent); the kernels then run on one thread. */
  close(): void {
    this.#pool?.close();
    this.#pool = undefined;
  }

  // ---------------------------------------------------------------- arena

  /**
   * Allocates `bytes` bytes (64-byte aligned, contents unspecified) and
   * returns the pointer; grows the memory when needed.
   */
  alloc(bytes: number): number {
    checkCount(bytes, "bytes");
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    const list = this.#freeList;
    for (let i = 0; i < list.length; i++) {
      const blk = list[i];
      if (blk.size < size) continue;
      const ptr = blk.ptr;
      if (blk.size === size) list.splice(i, 1);
      else {
        blk.ptr += size;
        blk.size -= size;
      }
      this.#sizes.set(ptr, size);
      return ptr;
    }
    const ptr = this.#top;
    this.#ensureCapacity(ptr + size);
    this.#top = ptr + size;
    this.#sizes.set(ptr, size);
    return ptr;
  }

  /** Releases a pointer returned by {@link alloc}. */
  free(ptr: number): void {
    const size = this.#sizes.get(ptr);
    if (size === undefined) {
      throw new RangeError(`ptr: ${ptr} is not an allocated block`);
    }
    this.#sizes.delete(ptr);
    const list = this.#freeList;
    let i = 0;
    while (i < list.length && list[i].ptr < ptr) i++;
    let blk = { ptr, size };
    const prev = list[i - 1];
    if (prev && prev.ptr + prev.size === ptr) {
      prev.size += size;
      blk = prev;
    } else list.splice(i, 0, blk);
    const j = blk === prev ? i : i + 1;
    const next = list[j];
    if (next && blk.ptr + blk.size === next.ptr) {
      blk.size += next.size;
      list.splice(j, 1);
    }
    if (blk.ptr + blk.size === this.#top) {
      this.#top = blk.ptr;
      list.splice(list.indexOf(blk), 1);
    }
  }

  /** Bytes currently allocated (including the kernels' own workspace). */
  get allocatedBytes(): number {
    let total = 0;
    for (const s of this.#sizes.values()) total += s;
    return total;
  }

  #ensureCapacity(end: number): void {
    const have = this.memory.buffer.byteLength;
    if (end <= have) return;
    const pages = Math.ceil(end / PAGE);
    if (pages > MAX_PAGES) {
      throw new RangeError(`bytes: ${end} bytes exceed the 4 GiB wasm memory`);
    }
    // Grow geometrically so that a sequence of allocations stays linear.
    const want = Math.min(MAX_PAGES, Math.max(pages, 2 * (have / PAGE)));
    this.memory.grow(want - have / PAGE);
  }

  /**
   * The training kernels, unchecked (see {@link TrainingKernels}): validate
   * every pointer and size before calling.
   */
  get training(): TrainingKernels {
    return this.#k;
  }

  /** A Float32Array view of `length` floats at `ptr`. */
  f32(ptr: number, length: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, length);
  }

  /** An Int8Array view of `length` bytes at `ptr`. */
  i8(ptr: number, length: number): Int8Array {
    return new Int8Array(this.memory.buffer, ptr, length);
  }

  /** A Uint8Array view of `length` bytes at `ptr`. */
  u8(ptr: number, length: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, ptr, length);
  }

  /** An Int32Array view of `length` ints at `ptr`. */
  i32(ptr: number, length: number): Int32Array {
    return new Int32Array(this.memory.buffer, ptr, length);
  }

  #checkRange(ptr: number, bytes: number, name: string, align = 1): void {
    // Pointers span the whole 4 GiB of a wasm32 memory (i32 params wrap).
    if (!Number.isInteger(ptr) || ptr < 0) {
      throw new RangeError(`${name}: invalid pointer ${ptr}`);
    }
    if (ptr % align !== 0) {
      throw new RangeError(`${name}: pointer ${ptr} is not ${align}-aligned`);
    }
    if (ptr + bytes > this.memory.buffer.byteLength) {
      throw new RangeError(
        `${name}: ${bytes} bytes at ${ptr} run past the memory (${this.memory.buffer.byteLength} bytes)`,
      );
    }
  }

  /** Extent in elements of a rows×cols matrix with leading dimension ld. */
  static #extent(rows: number, cols: number, ld: number): number {
    return rows === 0 || cols === 0 ? 0 : (rows - 1) * ld + cols;
  }

  static #ld(
    ld: number | undefined,
    min: number,
    name: string,
  ): number {
    const v = ld ?? min;
    checkCount(v, name);
    if (v < min) throw new RangeError(`${name}: ${v} is below ${min}`);
    return v;
  }

  // -------------------------------------------------------------- kernels

  /**
   * f32 matmul, row-major: C = op(A)·op(B), or C += op(A)·op(B) with
   * `accumulate`; op is identity or transpose per operand.
   */
  matmul(args: MatmulArgs): void {
    const { a, b, c, m, n, k } = args;
    checkCount(m, "m");
    checkCount(n, "n");
    checkCount(k, "k");
    const transA = args.transA ?? false, transB = args.transB ?? false;
    const lda = WasmKernels.#ld(args.lda, transA ? m : k, "lda");
    const ldb = WasmKernels.#ld(args.ldb, transB ? k : n, "ldb");
    const ldc = WasmKernels.#ld(args.ldc, n, "ldc");
    const ext = WasmKernels.#extent;
    this.#checkRange(a, 4 * (transA ? ext(k, m, lda) : ext(m, k, lda)), "a", 4);
    this.#checkRange(b, 4 * (transB ? ext(n, k, ldb) : ext(k, n, ldb)), "b", 4);
    this.#checkRange(c, 4 * ext(m, n, ldc), "c", 4);
    if (m === 0 || n === 0) return;
    const { mc, kc, nc } = this.#matmulConfig;
    const { mr, nr } = tileShape(this.#matmulConfig.tile);
    const bytes = matmulWorkBytes(this.#matmulConfig, n);
    const work = this.#workspace(bytes);
    const flags = (transA ? 1 : 0) | (transB ? 2 : 0) |
      (args.accumulate ? 4 : 0);
    const pool = this.#pool;
    // Small products stay on this thread: waking the workers costs ~10 µs.
    if (pool === undefined || m < 2 * mr || m * n * k < PARALLEL_MACS) {
      this.#matmulFn(a, b, c, m, n, k, lda, ldb, ldc, flags, work, mc, kc, nc);
      return;
    }
    this.#poolWorkspaces(pool, bytes);
    const words: [number, number][] = [
      [JOB.a, a],
      [JOB.b, b],
      [JOB.c, c],
      [JOB.k, k],
      [JOB.lda, lda],
      [JOB.ldb, ldb],
      [JOB.ldc, ldc],
      [JOB.flags, flags],
      [JOB.mc, mc],
      [JOB.kc, kc],
      [JOB.nc, nc],
      [JOB.nr, nr],
    ];
    if (n >= 4 * m) {
      // Much wider than tall: split the columns, so that B is packed once.
      pool.run(
        OP_MATMUL_COLS,
        [
          ...words,
          [JOB.m, n],
          [JOB.mr, nr],
          [JOB.args, m],
          [JOB.args + 1, mr],
        ],
        this.#exports,
        work,
      );
      return;
    }
    const rows: [number, number][] = [[JOB.m, m], [JOB.n, n], [JOB.mr, mr]];
    if (Math.ceil(m / pool.chunkFor(OP_MATMUL, m, mr)) <= pool.threads) {
      // A chunk a thread: each packs B for itself, in parallel.
      pool.run(OP_MATMUL, [...words, ...rows], this.#exports, work);
      return;
    }
    // More chunks than threads: B is packed once here for all of them (flag
    // 8), not again by every chunk. Two threads, alternating 10 rounds: the
    // head's forward 1.12×, dX 1.01–1.04×, the training shapes' geomean
    // 1.03×. With a chunk a thread, this thread packing alone made dW 0.95×,
    // and packing split over the threads as a job of its own lost 2%.
    const kp = (k + 3) & ~3, jcLast = Math.floor((n - 1) / nc) * nc;
    const packed = this.#grow(
      this.#packedB,
      4 * kp * (jcLast + Math.ceil((n - jcLast) / nr) * nr),
    );
    this.#exports[`pack_b_${nr}`](b, ldb, flags & 2, n, k, kc, nc, packed);
    pool.run(
      OP_MATMUL,
      [
        ...words.map(([w, v]): [number, number] =>
          w === JOB.b ? [w, packed] : w === JOB.flags ? [w, flags | 8] : [w, v]
        ),
        ...rows,
      ],
      this.#exports,
      work,
    );
  }

  /** The register tile and cache blocking {@link matmul} runs with. */
  get matmulConfig(): MatmulConfig {
    return this.#matmulConfig;
  }

  /** Sets the register tile and cache blocking of {@link matmul} (checked). */
  set matmulConfig(config: MatmulConfig) {
    checkMatmulConfig(config);
    this.#matmulConfig = { ...config };
    this.#matmulFn = this.#k[`matmul_${config.tile}`];
  }

  #workspace(bytes: number): number {
    return this.#grow(this.#work, bytes);
  }

  /** `block`'s pointer, reallocated first when it holds fewer than `bytes` bytes (kept, grown). */
  #grow(block: GrownBlock, bytes: number): number {
    if (bytes > block.bytes) {
      if (block.ptr !== 0) this.free(block.ptr);
      block.ptr = this.alloc(bytes);
      block.bytes = bytes;
    }
    return block.ptr;
  }

  /** Gives every pool worker a workspace of at least `bytes` bytes (the caller's is {@link #workspace}). */
  #poolWorkspaces(pool: MatmulPool, bytes: number): void {
    for (let i = 1; i < pool.threads; i++) {
      const w = this.#poolWork[i] ??= { ptr: 0, bytes: 0 };
      if (w.bytes < bytes) {
        this.i32(pool.control, JOB.words)[JOB.work + i] = this.#grow(w, bytes);
      }
    }
  }

  /** Runs a job on `pool`, or on this thread without one; returns its status bits. */
  #dispatch(
    pool: MatmulPool | undefined,
    op: number,
    job: ReadonlyArray<readonly [number, number]>,
    work: number,
  ): number {
    return pool === undefined
      ? runHere(op, job, this.#exports, this.memory, work)
      : pool.run(op, job, this.#exports, work);
  }

  /** The exports as the pool calls them. */
  get #exports(): PoolExports {
    return this.#k as unknown as PoolExports;
  }

  /**
   * The pool, when a job of `units` chunkable units (tokens, rows, heads)
   * and `work` elementary steps (multiply-adds, elements) is worth splitting;
   * else undefined (the job runs on this thread).
   */
  #poolFor(units: number, work: number): MatmulPool | undefined {
    const pool = this.#pool;
    return pool !== undefined && units >= 2 && work >= PARALLEL_ELEMENTS
      ? pool
      : undefined;
  }

  /** f32 matvec: y[i] = Σ_j W[i,j]·x[j] (or y += W·x with `accumulate`). */
  matvec(args: MatvecArgs): void {
    this.#matvecWith("matvec", 4, args);
  }

  /**
   * {@link matvec} of an f16 matrix (bit patterns, finite values): each value
   * is widened to f32 exactly in registers and the sums run in `matvec`'s
   * order, so the result equals `matvec` on the widened matrix bit for bit
   * while reading half the bytes.
   */
  matvecF16(args: MatvecF16Args): void {
    this.#matvecWith("matvec_f16", 2, args);
  }

  /** Checks a matvec's arguments (weights of `wBytes` each) and runs `kernel`. */
  #matvecWith(
    kernel: "matvec" | "matvec_f16",
    wBytes: 2 | 4,
    args: MatvecArgs | MatvecF16Args,
  ): void {
    const { w, x, y, n, k } = args;
    checkCount(n, "n");
    checkCount(k, "k");
    const ldw = WasmKernels.#ld(args.ldw, k, "ldw");
    this.#checkRange(w, wBytes * WasmKernels.#extent(n, k, ldw), "w", wBytes);
    this.#checkRange(x, 4 * k, "x", 4);
    this.#checkRange(y, 4 * n, "y", 4);
    this.#k[kernel](w, n, k, ldw, x, y, args.accumulate ? 1 : 0);
  }

  /**
   * Causal attention of `T` new queries over a session's KV cache, one query
   * at a time: per (query, head) the scores are a {@link matvec} over the
   * keys, scaled and softmaxed (`softmax_row`), and the output a matvec over
   * the transposed values — one host call for all of them.
   */
  attendSession(args: AttendSessionArgs): void {
    const { q, k, vt, out, T, heads, kvHeads, headDim: D, ctx, pos0 } = args;
    checkHeadCounts(
      { T, heads, kvHeads, headDim: D, ctx, pos0 },
      heads,
      kvHeads,
    );
    const qRow = WasmKernels.#ld(args.qRow, heads * D, "qRow");
    this.#checkRange(q, 4 * WasmKernels.#extent(T, heads * D, qRow), "q", 4);
    this.#checkRange(
      out,
      4 * WasmKernels.#extent(T, heads * D, qRow),
      "out",
      4,
    );
    this.#checkRange(k, 4 * kvHeads * ctx * D, "k", 4);
    this.#checkRange(vt, 4 * kvHeads * D * ctx, "vt", 4);
    this.#checkRange(args.scores, 4 * ctx, "scores", 4);
    this.#checkRange(args.stats, 24, "stats", 8);
    this.#k.attend_session(
      q,
      k,
      vt,
      out,
      T,
      heads,
      heads / kvHeads,
      D,
      ctx,
      pos0,
      qRow,
      args.scores,
      args.scale,
      args.stats,
    );
  }

  /**
   * int8 × int8 matmul (`eightbit` linears): out[t][i] =
   * f32(Σ_j c_ij·x_tj) · (scales[i] · invScales[t]), the integer sums exact
   * (the weight is `c · scale`, the activation `x / s`).
   */
  int8Matmul(args: Int8MatmulArgs): void {
    const { w, scales, n, k, x, tokens, invScales, out } = args;
    checkCount(n, "n");
    checkCount(tokens, "tokens");
    const kpad = ternaryPaddedCols(k);
    if (k > INT8_MAX_K) {
      throw new RangeError(`k: ${k} exceeds ${INT8_MAX_K} (i32 sums)`);
    }
    const ldo = WasmKernels.#ld(args.ldo, n, "ldo");
    this.#checkRange(w, n * kpad, "w");
    this.#checkRange(scales, 4 * n, "scales", 4);
    this.#checkRange(x, tokens * kpad, "x");
    this.#checkRange(invScales, 4 * tokens, "invScales", 4);
    this.#checkRange(out, 4 * WasmKernels.#extent(tokens, n, ldo), "out", 4);
    const pool = this.#poolFor(tokens, (tokens * n * kpad) / 256);
    if (pool === undefined) {
      this.#k.i8matmul(
        w,
        n,
        kpad,
        x,
        kpad,
        tokens,
        scales,
        invScales,
        out,
        ldo,
      );
      return;
    }
    pool.run(
      OP_INT8,
      rowArgs([w, n, kpad, x, scales, invScales, out, ldo], tokens, 4),
      this.#exports,
      0,
    );
  }

  /**
   * Per-row absmax int8 quantization (BitNet activations):
   * s = 127 / max(max_j |x_j|, eps), q_j = clamp(round(x_j·s), −128, 127)
   * with round half to even; writes q (zero-padded to
   * ternaryPaddedCols(cols)), 1/s and Σ_j q_j per row.
   */
  quantizeRows(args: QuantizeArgs): void {
    const { x, rows, cols, out, invScales, sums } = args;
    checkCount(rows, "rows");
    const kpad = ternaryPaddedCols(cols);
    const ldx = WasmKernels.#ld(args.ldx, cols, "ldx");
    const eps = args.eps ?? 1e-5;
    if (!(eps > 0)) throw new RangeError(`eps: must be positive, got ${eps}`);
    this.#checkRange(x, 4 * WasmKernels.#extent(rows, cols, ldx), "x", 4);
    this.#checkRange(out, rows * kpad, "out");
    this.#checkRange(invScales, 4 * rows, "invScales", 4);
    this.#checkRange(sums, 4 * rows, "sums", 4);
    const pool = this.#poolFor(rows, rows * cols);
    if (pool === undefined) {
      this.#k.quantize_rows(
        x,
        rows,
        cols,
        ldx,
        out,
        kpad,
        invScales,
        sums,
        eps,
      );
      return;
    }
    const epsBits = f32Word(eps);
    pool.run(
      OP_QUANTIZE,
      rowArgs([x, cols, ldx, out, kpad, invScales, sums, epsBits], rows, 1),
      this.#exports,
      0,
    );
  }

  /**
   * Per-row int8 absmax fake quantization in place of the training model's
   * `act_quant` (`o = q / s`, rows × cols f32, contiguous); rows split
   * across the pool when large. Returns false if a row holds NaN or ±∞
   * (then `o` is unspecified).
   */
  actQuant(args: ActQuantArgs): boolean {
    const { x, o, rows, cols } = args;
    checkCount(rows, "rows");
    checkCount(cols, "cols");
    this.#checkRange(x, 4 * rows * cols, "x", 4);
    this.#checkRange(o, 4 * rows * cols, "o", 4);
    const pool = this.#poolFor(rows, rows * cols);
    if (pool === undefined) return this.#k.act_quant(x, o, rows, cols) === 0;
    const status = pool.run(
      OP_ACT_QUANT,
      rowArgs([x, o, cols], rows, 1),
      this.#exports,
      0,
    );
    return (status & 1) === 0;
  }

  /**
   * RMSNorm forward of `rows` contiguous rows of `dim` floats (`rmsnorm_fwd`:
   * `o = x · rstd · g`, rstd per row in f32); rows split across the pool
   * when large. `o` may alias `x`.
   */
  rmsnorm(args: RmsnormArgs): void {
    const { x, g, o, rstd, rows, dim, eps } = args;
    checkCount(rows, "rows");
    checkCount(dim, "dim");
    this.#checkRange(x, 4 * rows * dim, "x", 4);
    this.#checkRange(o, 4 * rows * dim, "o", 4);
    this.#checkRange(g, 4 * dim, "g", 4);
    this.#checkRange(rstd, 4 * rows, "rstd", 4);
    const pool = this.#poolFor(rows, rows * dim);
    if (pool === undefined) {
      this.#k.rmsnorm_fwd(x, g, o, rstd, rows, dim, eps);
      return;
    }
    pool.run(
      OP_RMSNORM,
      rowArgs([x, g, o, rstd, dim, 0, ...f64Words(eps)], rows, 1),
      this.#exports,
      0,
    );
  }

  /**
   * The element-wise kernel `kernel` of {@link MAP_KERNELS} (`o = f(a)`,
   * products, axpy, clamp, fill, activation gradients, AdamW) over `n`
   * elements, split across the pool in whole blocks of {@link MAP_UNIT} when
   * large: each element computed as alone, so any thread count gives the
   * same bits.
   */
  map(args: MapArgs): void {
    const { kernel, arrays, n } = args;
    const scalars = args.scalars ?? [];
    const which = MAP_KERNEL_NAMES.indexOf(kernel);
    if (which < 0) throw new RangeError(`kernel: unknown kernel ${kernel}`);
    const [na, ns] = MAP_KERNELS[kernel];
    if (arrays.length !== na || scalars.length !== ns) {
      throw new RangeError(
        `${kernel}: takes ${na} arrays and ${ns} scalars, got ${arrays.length} and ${scalars.length}`,
      );
    }
    checkCount(n, "n");
    arrays.forEach((p, i) => this.#checkRange(p, 4 * n, `arrays[${i}]`, 4));
    const pool = this.#poolFor(Math.floor(n / MAP_UNIT), n);
    if (pool === undefined) {
      this.#exports[kernel](...arrays, ...scalars, n);
      return;
    }
    pool.run(
      OP_MAP,
      [
        ...rowArgs([which, ...arrays], n, MAP_UNIT),
        ...scalars.flatMap((v, i) =>
          f64Words(v).map((w, h): [number, number] => [
            JOB.args + MAP_SCALARS + 2 * i + h,
            w,
          ])
        ),
      ],
      this.#exports,
      0,
    );
  }

  /**
   * Rotary embedding of `rows` rows with per-position tables (`rope`),
   * split across the pool in whole sequences when large; each row computed
   * as alone, so any thread count gives the same bits.
   */
  rope(args: RopeArgs): void {
    const { x, o, rows, T, heads, headDim, cos, sin } = args;
    checkCount(rows, "rows");
    checkCount(T, "T");
    checkCount(heads, "heads");
    checkCount(headDim, "headDim");
    if (T === 0 || headDim % 2 !== 0) {
      throw new RangeError(
        `rope: T must be positive and headDim even, got ${T} and ${headDim}`,
      );
    }
    const n = rows * heads * headDim;
    this.#checkRange(x, 4 * n, "x", 4);
    this.#checkRange(o, 4 * n, "o", 4);
    this.#checkRange(cos, 4 * T * headDim, "cos", 4);
    this.#checkRange(sin, 4 * T * headDim, "sin", 4);
    this.#dispatch(
      this.#poolFor(Math.ceil(rows / T), n),
      OP_ROPE,
      rowArgs(
        [
          x,
          o,
          T,
          heads,
          headDim,
          cos,
          sin,
          args.neox ? 1 : 0,
          args.accumulate ? 1 : 0,
        ],
        rows,
        T,
      ),
      0,
    );
  }

  /**
   * `softmax_row` of each of `rows` rows (`p = e^(x − max) / Σ`, the sum in
   * f64), with each row's stats; rows split across the pool when large, each
   * computed as alone, so any thread count gives the same bits.
   */
  softmaxRows(args: SoftmaxRowsArgs): void {
    const { x, p, rows, cols, stats } = args;
    checkCount(rows, "rows");
    checkCount(cols, "cols");
    this.#checkRange(x, 4 * rows * cols, "x", 4);
    this.#checkRange(p, 4 * rows * cols, "p", 4);
    this.#checkRange(stats, 24 * rows, "stats", 8);
    this.#dispatch(
      this.#poolFor(rows, rows * cols),
      OP_SOFTMAX,
      rowArgs([x, p, cols, stats], rows, 1),
      0,
    );
  }

  /**
   * The scoring loss of `rows` rows of `vocab` logits: per row r with
   * target y ≥ 0 (i32 at `targets`), the row is softmaxed in place
   * (`softmax_row`) and `losses[r] = max + ln Σ e^(x − max) − logit_y` (f64,
   * in that order); rows with y = −1 get 0. Rows split across the pool when
   * large; each row is computed as alone, so the losses are the same bits for
   * any thread count.
   */
  softmaxNll(args: SoftmaxNllArgs): void {
    const { logits, vocab, rows, targets, losses } = args;
    checkCount(rows, "rows");
    checkCount(vocab, "vocab");
    this.#checkRange(logits, 4 * rows * vocab, "logits", 4);
    this.#checkRange(targets, 4 * rows, "targets", 4);
    this.#checkRange(losses, 8 * rows, "losses", 8);
    const y = this.i32(targets, rows);
    for (let r = 0; r < rows; r++) {
      if (y[r] !== -1 && !(y[r] >= 0 && y[r] < vocab)) {
        throw new RangeError(`targets[${r}] = ${y[r]} is not in [0, ${vocab})`);
      }
    }
    const work = this.#workspace(24);
    const pool = this.#poolFor(rows, rows * vocab);
    if (pool !== undefined) this.#poolWorkspaces(pool, 24);
    this.#dispatch(
      pool,
      OP_NLL,
      rowArgs([logits, vocab, targets, losses], rows, 1),
      work,
    );
  }

  /**
   * Causal attention of `seqs` whole sequences of `T` tokens from position 0,
   * as the training model computes it: per sequence and head, `S = Q·Kᵀ` by
   * {@link matmul}s in blocks of ~32 query rows (whole tiles),
   * `softmax_causal` (scaled by `scale`), then `P·V`. The (sequence, head)
   * pairs split across the pool, each computed as alone: the same bits for
   * any thread count.
   */
  attendRows(args: AttendRowsArgs): void {
    const { q, k, v, out, seqs, T, heads, kvHeads, headDim: D } = args;
    checkHeadCounts({ seqs, T, heads, kvHeads, headDim: D }, heads, kvHeads);
    const qRow = WasmKernels.#ld(args.qRow, heads * D, "qRow");
    const kvRow = WasmKernels.#ld(args.kvRow, kvHeads * D, "kvRow");
    const seqBytes = WasmKernels.#ld(args.seqBytes, 4 * T * kvRow, "seqBytes");
    const qExt = 4 * WasmKernels.#extent(seqs * T, heads * D, qRow);
    this.#checkRange(q, qExt, "q", 4);
    this.#checkRange(out, qExt, "out", 4);
    const kvExt = seqs === 0 ? 0 : (seqs - 1) * seqBytes +
      4 * WasmKernels.#extent(T, kvHeads * D, kvRow);
    this.#checkRange(k, kvExt, "k", 4);
    this.#checkRange(v, kvExt, "v", 4);
    if (seqs === 0 || T === 0 || heads === 0) return;
    const mm = this.#attentionMatmul(T, D);
    const bytes = mm.bytes + 4 * T * T;
    const work = this.#workspace(bytes);
    const units = seqs * heads;
    const pool = this.#poolFor(units, units * T * T * D);
    if (pool !== undefined) this.#poolWorkspaces(pool, bytes);
    this.#dispatch(
      pool,
      OP_ATTEND,
      rowArgs(
        [
          q,
          k,
          v,
          out,
          T,
          qRow,
          kvRow,
          D,
          heads,
          heads / kvHeads,
          seqBytes,
          mm.bytes,
          f32Word(args.scale),
          ...mm.words,
        ],
        units,
        1,
      ),
      work,
    );
  }

  /**
   * The f32 matmul of an attention job over `T` tokens of width `D`: its
   * workspace bytes, rounded up to {@link ALIGN} (a scratch follows it), and
   * its job words mc, kc, nc, mr, nr.
   */
  #attentionMatmul(T: number, D: number): { bytes: number; words: number[] } {
    const { mc, kc, nc } = this.#matmulConfig;
    const { mr, nr } = tileShape(this.#matmulConfig.tile);
    const bytes = Math.ceil(
      matmulWorkBytes(this.#matmulConfig, Math.max(T, D)) / ALIGN,
    ) * ALIGN;
    return { bytes, words: [mc, kc, nc, mr, nr] };
  }

  /**
   * Training's causal attention forward: per (sequence, head) the scores in
   * causal blocks of ~32 query rows (whole matmul tiles), the causal softmax
   * scaled by 1/√D into `probs`, and `out = P·V` (see `train_attention.ts`);
   * the pairs are split across the threads, with the same bits for any
   * count.
   */
  causalAttention(args: CausalAttentionArgs): void {
    this.#causalAttention(OP_ATTENTION_FWD, args, 0, 0, 0);
  }

  /**
   * The backward of {@link causalAttention} (`args.out` holding the output's
   * gradient): dQ, dK, dV added into, per (sequence, KV head) with its
   * group's heads in order; the units are split across the threads, with the
   * same bits for any count.
   */
  causalAttentionBackward(args: CausalAttentionGradArgs): void {
    this.#causalAttention(OP_ATTENTION_BWD, args, args.dq, args.dk, args.dv);
  }

  #causalAttention(
    op: typeof OP_ATTENTION_FWD | typeof OP_ATTENTION_BWD,
    args: CausalAttentionArgs,
    dq: number,
    dk: number,
    dv: number,
  ): void {
    const { batch: B, T, heads: H, kvHeads: Hkv, headDim: D } = args;
    checkHeadCounts(
      { batch: B, T, heads: H, kvHeads: Hkv, headDim: D },
      H,
      Hkv,
    );
    const nq = 4 * B * T * H * D, nk = 4 * B * T * Hkv * D;
    const backward = op === OP_ATTENTION_BWD;
    for (
      const [name, ptr, bytes] of [
        ["q", args.q, nq],
        ["k", args.k, nk],
        ["v", args.v, nk],
        [backward ? "dout" : "out", args.out, nq],
        ["probs", args.probs, 4 * B * H * T * T],
        ...(backward
          ? [["dq", dq, nq], ["dk", dk, nk], ["dv", dv, nk]] as const
          : []),
      ] as const
    ) this.#checkRange(ptr, bytes, name, 4);
    if (B === 0 || T === 0 || H === 0 || D === 0) return;
    const mm = this.#attentionMatmul(T, D);
    const bytes = mm.bytes + (backward ? 4 * T * T : 0);
    const work = this.#workspace(bytes);
    const units = B * (backward ? Hkv : H);
    const pool = this.#poolFor(units, B * H * T * T * D);
    if (pool !== undefined) this.#poolWorkspaces(pool, bytes);
    this.#dispatch(
      pool,
      op,
      rowArgs(
        [
          args.q,
          args.k,
          args.v,
          args.out,
          args.probs,
          dq,
          dk,
          dv,
          T,
          H,
          Hkv,
          D,
          f32Word(1 / Math.sqrt(D)),
          ...mm.words,
          mm.bytes,
        ],
        units,
        1,
      ),
      work,
    );
  }

  /**
   * Ternary × int8 matmul: out[t][i] = (Σ_j c_ij·x_tj − Σ_j x_tj) · scale ·
   * invScales[t], with c = w + 1 the packed codes, i.e. Σ_j w_ij·x_tj·γ/s_t.
   */
  ternaryMatmul(args: TernaryMatmulArgs): void {
    const { w, n, k, x, tokens, sums, invScales, scale, out } = args;
    checkCount(n, "n");
    checkCount(tokens, "tokens");
    const kpad = ternaryPaddedCols(k);
    const ldo = WasmKernels.#ld(args.ldo, n, "ldo");
    if (!Number.isFinite(scale)) {
      throw new RangeError(`scale: must be finite, got ${scale}`);
    }
    this.#checkRange(w, n * (kpad / 4), "w");
    this.#checkRange(x, tokens * kpad, "x");
    this.#checkRange(sums, 4 * tokens, "sums", 4);
    this.#checkRange(invScales, 4 * tokens, "invScales", 4);
    this.#checkRange(out, 4 * WasmKernels.#extent(tokens, n, ldo), "out", 4);
    const pool = this.#pool;
    if (pool === undefined || tokens * n * kpad < 4 * PARALLEL_MACS) {
      this.#k.tmatmul(
        w,
        n,
        kpad,
        x,
        kpad,
        tokens,
        sums,
        invScales,
        scale,
        out,
        ldo,
      );
      return;
    }
    pool.run(
      OP_TERNARY,
      [
        [JOB.a, w],
        [JOB.b, x],
        [JOB.c, out],
        [JOB.m, tokens],
        [JOB.n, n],
        [JOB.k, kpad],
        [JOB.lda, kpad],
        [JOB.ldc, ldo],
        [JOB.sums, sums],
        [JOB.invScales, invScales],
        [JOB.scaleBits, f32Word(scale)],
        [JOB.mr, 4],
      ],
      this.#exports,
      0,
    );
  }

  /**
   * Ternarizes latent f32 weights and packs them for {@link ternaryMatmul}:
   * w_q = clamp(round(w · invScale), −1, 1) (round half to even), stored as
   * the codes w_q + 1 in the layout of {@link packTernaryRows}. NaN weights
   * give unspecified codes.
   */
  packTernary(args: PackTernaryArgs): void {
    const { w, rows, cols, invScale, out } = args;
    checkCount(rows, "rows");
    const rb = ternaryRowBytes(cols);
    const ldw = WasmKernels.#ld(args.ldw, cols, "ldw");
    if (!Number.isFinite(invScale)) {
      throw new RangeError(`invScale: must be finite, got ${invScale}`);
    }
    this.#checkRange(w, 4 * WasmKernels.#extent(rows, cols, ldw), "w", 4);
    this.#checkRange(out, rows * rb, "out");
    this.#k.pack_ternary(w, rows, cols, ldw, invScale, out);
  }

  /**
   * The one magnitude `a` of the `n` f32 weights at `w` when every |w| is 0
   * or `a` (0 when all are 0), else undefined (two magnitudes, or a NaN): the
   * check that the weights are ternary × one scale, in one SIMD pass.
   */
  ternaryScale(w: number, n: number): number | undefined {
    checkCount(n, "n");
    this.#checkRange(w, 4 * n, "w", 4);
    const a = this.#k.ternary_scale(w, n);
    return a < 0 ? undefined : a;
  }

  /** {@link ternaryMatmul} for one token (the decode path). */
  ternaryMatvec(
    args: Omit<TernaryMatmulArgs, "tokens" | "ldo">,
  ): void {
    this.ternaryMatmul({ ...args, tokens: 1 });
  }

  /**
   * Runs `iters` iterations of 12 independent f32x4 multiply-add chains
   * (96 flops each, no memory traffic) and returns a value derived from them;
   * a peak-throughput probe for benchmarks.
   */
  fmaProbe(iters: number): number {
    checkCount(iters, "iters");
    return this.#k.fma_probe(iters);
  }
}
