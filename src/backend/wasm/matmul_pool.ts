/**
 * The thread pool of {@link WasmKernels}: `threads − 1` workers (the calling
 * thread is the first) that run the same kernel module on the same shared
 * `WebAssembly.Memory`. Jobs: the f32 matmul (rows of C split), the int8 ×
 * ternary and int8 × int8 matmuls (tokens split), the row jobs —
 * quantization, RMSNorm, softmax rows, the scoring loss (rows split), RoPE
 * (whole sequences), the element-wise kernels of training and scoring
 * (elements split: activations and their gradients, products, axpy, AdamW…)
 * — whole-sequence attention ((sequence, head) pairs split) and training's
 * attention forward and backward ((sequence, head) and (sequence, KV head)
 * units).
 *
 * Protocol, over a control block of i32 words in that memory ({@link JOB}):
 * the caller writes a job (the matmul's arguments, tile and row chunk), zeroes
 * `done`, publishes the job's claim word (generation, next chunk, chunks),
 * bumps `generation` and notifies. Every thread, the caller included, claims
 * chunks of C's rows by compare-and-swap on the claim word, runs the ordinary
 * single-thread kernel on each with its own packing workspace and counts it
 * `done`; the caller returns when all chunks are. Claiming (rather than a fixed
 * share per thread) keeps a descheduled worker from stalling the caller on a
 * loaded machine; a worker that wakes late finds the claim word of a newer
 * generation and goes back to sleep. A chunk that throws is counted all the
 * same, its thread recording the first failure (thread, rows, message) in the
 * block for the caller to rethrow: no trap leaves the caller waiting.
 *
 * Results are bit-identical for any thread count and any claiming order:
 * every element of C is summed by the same kernel in the same order (the
 * order depends only on the depth blocking `kc`), whichever thread computes
 * it; the row jobs compute each row (token, element block, head) exactly as
 * a one-thread call computes it.
 *
 * @module
 */

import {
  attentionBackwardUnit,
  attentionBlock,
  attentionForwardUnit,
  type AttentionJob,
} from "./train_attention.ts";

/** One `matmul_<mr>x<nr>` export of the kernel module. */
export type MatmulExport = (
  a: number,
  b: number,
  c: number,
  m: number,
  n: number,
  k: number,
  lda: number,
  ldb: number,
  ldc: number,
  flags: number,
  work: number,
  mc: number,
  kc: number,
  nc: number,
) => void;

/** Word offsets of the control block (i32). */
export const JOB = {
  generation: 0,
  done: 1,
  op: 2,
  a: 3,
  b: 4,
  c: 5,
  m: 6,
  n: 7,
  k: 8,
  lda: 9,
  ldb: 10,
  ldc: 11,
  flags: 12,
  mc: 13,
  kc: 14,
  nc: 15,
  mr: 16,
  nr: 17,
  /** Rows of C per chunk (a multiple of mr). */
  chunk: 18,
  /** `generation · 65536 + next chunk · 256 + chunks` (at most 255 chunks). */
  claim: 19,
  /** Ternary jobs: per-token sums and inverse scales, and the weight scale's f32 bits. */
  sums: 20,
  invScales: 21,
  scaleBits: 22,
  /**
   * 0, or 1 + the index of the first thread whose chunk threw (a kernel
   * trap); that thread then writes `errorRow` and the message.
   */
  error: 23,
  /** First row of the chunk that threw. */
  errorRow: 24,
  /** Length in bytes of the UTF-8 message at word `message`. */
  errorLength: 25,
  /** Row jobs: bits set by any chunk (1: `act_quant` met a non-finite row). */
  status: 26,
  /** Workspace pointer of thread i at `work + i`. */
  work: 32,
  /** The first error's message, UTF-8, at most 4 · 64 bytes. */
  message: 128,
  /** Arguments of the row jobs ({@link OP_INT8} …), 8-byte aligned for f64s. */
  args: 192,
  /** Words in the block (up to 96 threads, the message, the arguments). */
  words: 224,
} as const;

/**
 * Op code of an f32 matmul job (rows of C split). With more chunks than
 * threads the caller packs B once (`pack_b_<nr>`) and the job's flags carry
 * bit 8: the chunks read that packing instead of packing B again each.
 */
export const OP_MATMUL = 1;
/**
 * Op code of an f32 matmul job with the columns of C split (for a C much
 * wider than tall, e.g. the LM head of a few hundred rows: split by rows,
 * every chunk would pack all of B again). Words as {@link OP_MATMUL}, but `m`
 * holds the columns n (the units) and `mr` the tile's nr (the chunk unit);
 * the rows m are argument 0 and the tile's mr argument 1.
 */
export const OP_MATMUL_COLS = 11;
/**
 * Op code of a ternary × int8 job (`tmatmul`: tokens split). Words: `a` the
 * packed weights, `b` the int8 tokens (row stride `lda` bytes), `c` the
 * output (row stride `ldc` floats), `m` tokens, `n` weight rows, `k` the
 * padded depth, and `sums`, `invScales`, `scaleBits`; `mr` is the chunk unit.
 */
export const OP_TERNARY = 3;
/** Op code that stops the workers. */
export const OP_QUIT = 2;
/**
 * Op code of an int8 × int8 job (`i8matmul`: tokens split). Args: weights,
 * weight rows, padded depth, int8 tokens, per-row scales, per-token inverse
 * scales, output, output row stride (floats).
 */
export const OP_INT8 = 4;
/**
 * Op code of per-row int8 quantization (`quantize_rows`: rows split). Args:
 * x, cols, ldx, out, padded cols, inverse scales, sums, eps (f32 bits).
 */
export const OP_QUANTIZE = 5;
/**
 * Op code of `act_quant` (rows split). Args: x, out, cols; a non-finite row
 * sets bit 1 of `status`.
 */
export const OP_ACT_QUANT = 6;
/** Op code of `rmsnorm_fwd` (rows split). Args: x, gain, out, rstd, dim; eps (f64) at args + 6. */
export const OP_RMSNORM = 7;
/**
 * Op code of the scoring loss (rows split): per row r with target y ≥ 0,
 * `softmax_row` in place over its `vocab` logits and
 * `loss[r] = max + ln Σ e^(x − max) − logit_y` (f64), 0 where y = −1. Args:
 * logits, vocab, targets (i32), losses (f64).
 */
export const OP_NLL = 8;
/**
 * Op code of causal attention over whole sequences (units of one (sequence,
 * head) split): per unit, as the runtime's one-thread attention computes it
 * (score matmuls in the query blocks of `attentionBlock`, as training's,
 * `softmax_causal`, value matmuls). Args: q, k, v, out, T, qRow, kvRow, head
 * dim, heads, heads per kv head, k/v bytes per sequence, the scores' byte
 * offset in the thread's workspace, scale (f32 bits), then the matmul's mc,
 * kc, nc, mr, nr (its workspace at the thread's workspace).
 */
export const OP_ATTEND = 9;
/**
 * Op codes of training's causal attention, forward (units: (sequence, query
 * head)) and backward (units: (sequence, KV head)), see
 * `train_attention.ts`. Args: q, k, v, out (the backward: its gradient),
 * probs, dq, dk, dv, T, heads, KV heads, head dim, scale (f32 bits), the
 * matmul's mc, kc, nc, mr, nr, and the byte offset of the backward's `[T, T]`
 * scratch in the thread's workspace (the matmul's workspace before it).
 */
export const OP_ATTENTION_FWD = 12;
/** See {@link OP_ATTENTION_FWD}. */
export const OP_ATTENTION_BWD = 13;
/**
 * Op code of `softmax_row` over rows (rows split): row r of `x` softmaxed
 * into row r of `p`, its stats (max, Σ e^(x − max), Σ x as f64) at
 * `stats + 24·r`. Args: x, p, row length, stats.
 */
export const OP_SOFTMAX = 14;

/**
 * Op code of `rope` (rows split in whole sequences, so that row r keeps
 * position r mod T). Args: x, o, T, heads, head dim, cos, sin, neox, acc.
 */
export const OP_ROPE = 15;

/**
 * Op code of an element-wise kernel (elements split). Args: the kernel's
 * index in {@link MAP_KERNEL_NAMES}, its arrays from argument 1, its scalars
 * as f64 from argument {@link MAP_SCALARS}.
 */
export const OP_MAP = 10;

/**
 * The element-wise kernels of {@link OP_MAP}: per kernel, its f32 arrays
 * (byte offsets, split with the elements) and then its scalars (passed
 * whole: f32, f64 or an i32 flag), in the order of its parameters; the
 * element count comes last.
 */
export const MAP_KERNELS: Readonly<
  Record<MapKernel, readonly [arrays: number, scalars: number]>
> = {
  fill_f32: [1, 1],
  clamp_f32: [1, 1],
  mul_f32: [3, 0],
  mul_acc_f32: [3, 1],
  axmb_f32: [2, 3],
  silu_f32: [2, 0],
  relu2_f32: [2, 0],
  silu_bwd_f32: [3, 1],
  relu2_bwd_f32: [3, 1],
  adamw_f64: [4, 10],
};

/** An element-wise kernel of {@link MAP_KERNELS}. */
export type MapKernel =
  | "fill_f32"
  | "clamp_f32"
  | "mul_f32"
  | "mul_acc_f32"
  | "axmb_f32"
  | "silu_f32"
  | "relu2_f32"
  | "silu_bwd_f32"
  | "relu2_bwd_f32"
  | "adamw_f64";

/** The kernels of {@link MAP_KERNELS} in the order of their job index. */
export const MAP_KERNEL_NAMES: readonly MapKernel[] = Object.keys(
  MAP_KERNELS,
) as MapKernel[];

/** Argument word of an {@link OP_MAP} job's first scalar (f64s, two words each). */
export const MAP_SCALARS = 6;

/** Elements per unit of an {@link OP_MAP} job: chunks start on whole SIMD blocks. */
export const MAP_UNIT = 256;

/** The kernel module's exports as the pool calls them. */
export type PoolExports = Record<string, (...args: number[]) => unknown>;

/** What a worker is started with. */
export interface InitMessage {
  /** The kernel module (shared-memory form). */
  readonly bytes: Uint8Array;
  /** The shared memory. */
  readonly memory: WebAssembly.Memory;
  /** Byte offset of the control block. */
  readonly control: number;
  /** This thread's index (1 … threads − 1; the caller is 0): its workspace is `JOB.work + index`. */
  readonly index: number;
}

/**
 * Rows of C per chunk of a row-split f32 matmul at least (up to one chunk a
 * thread): each chunk packs all of B again, which costs about as much as
 * multiplying 8 rows by it, so for short products (a linear's dW: 256 rows ×
 * 2,048 tokens) four chunks a thread spent a quarter of the time packing.
 * Measured (2 threads, same process, 12 rounds): dW 256 × 2048 × 256 4.5 →
 * 3.7 ms, 768 × 2048 × 256 12.1 → 11.3 ms; taller products unchanged.
 */
export const MATMUL_MIN_CHUNK_ROWS = 128;

/**
 * Rows per chunk for `m` rows on `threads` threads: ~4 chunks a thread (so
 * that a thread slowed by other load takes fewer), but at least `minRows`
 * unless that leaves a thread without a chunk; whole tiles, ≤ 255 chunks.
 */
export function chunkRows(
  m: number,
  mr: number,
  threads: number,
  minRows = 0,
): number {
  const tiles = (rows: number) => Math.ceil(rows / mr) * mr;
  const wanted = Math.min(m / threads, Math.max(m / (4 * threads), minRows));
  return Math.max(mr, tiles(wanted), tiles(m / 255));
}

/**
 * Claims and runs chunks of the job of generation `gen` until none is left
 * (or a newer job replaced it), counting each in `done`. `thread` is this
 * thread's index (0: the caller), named in the report of a chunk that throws.
 */
export function runChunks(
  exports: PoolExports,
  memory: WebAssembly.Memory,
  ctrl: Int32Array,
  gen: number,
  work: number,
  thread: number,
): void {
  const m = ctrl[JOB.m], chunk = ctrl[JOB.chunk];
  for (;;) {
    const w = Atomics.load(ctrl, JOB.claim);
    if (w >>> 16 !== gen) return;
    const next = (w >>> 8) & 255;
    if (next >= (w & 255)) return;
    if (Atomics.compareExchange(ctrl, JOB.claim, w, w + 256) !== w) continue;
    const i0 = next * chunk;
    try {
      runShare(
        exports,
        memory,
        ctrl,
        { i0, rows: Math.min(chunk, m - i0) },
        work,
      );
    } catch (e) {
      reportFailure(ctrl, thread, i0, e);
    } finally {
      // Counted as done all the same, so that the caller never waits forever.
      Atomics.add(ctrl, JOB.done, 1);
      Atomics.notify(ctrl, JOB.done);
    }
  }
}

const MESSAGE_BYTES = 4 * (JOB.words - JOB.message);

/** Records the first failure of a job (later ones are dropped). */
function reportFailure(
  ctrl: Int32Array,
  thread: number,
  row: number,
  e: unknown,
): void {
  if (Atomics.compareExchange(ctrl, JOB.error, 0, 1 + thread) !== 0) return;
  const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  const bytes = new TextEncoder().encode(text).subarray(0, MESSAGE_BYTES);
  new Uint8Array(
    ctrl.buffer,
    ctrl.byteOffset + 4 * JOB.message,
    MESSAGE_BYTES,
  ).set(bytes);
  ctrl[JOB.errorRow] = row;
  ctrl[JOB.errorLength] = bytes.length;
}

/** The kernel a job of the control block runs (named in its failure). */
function kernelName(ctrl: Int32Array): string {
  switch (Atomics.load(ctrl, JOB.op)) {
    case OP_TERNARY:
      return "tmatmul";
    case OP_INT8:
      return "i8matmul";
    case OP_QUANTIZE:
      return "quantize_rows";
    case OP_ACT_QUANT:
      return "act_quant";
    case OP_RMSNORM:
      return "rmsnorm_fwd";
    case OP_NLL:
      return "softmax_row (scoring loss)";
    case OP_SOFTMAX:
      return "softmax_row";
    case OP_ROPE:
      return "rope";
    case OP_ATTEND:
      return "attention";
    case OP_ATTENTION_FWD:
      return "attention forward";
    case OP_ATTENTION_BWD:
      return "attention backward";
    case OP_MAP:
      return MAP_KERNEL_NAMES[ctrl[JOB.args]];
    case OP_MATMUL_COLS:
      return `matmul_${ctrl[JOB.args + 1]}x${ctrl[JOB.nr]} (columns)`;
    default:
      return `matmul_${ctrl[JOB.mr]}x${ctrl[JOB.nr]}`;
  }
}

/**
 * The error for the failure {@link reportFailure} recorded: it names the
 * kernel, the thread and the rows, with the thrown error's own message.
 */
function failureError(ctrl: Int32Array): Error {
  const thread = Atomics.load(ctrl, JOB.error) - 1;
  const row = ctrl[JOB.errorRow];
  // slice: TextDecoder does not read shared memory.
  const message = new TextDecoder().decode(
    new Uint8Array(
      ctrl.buffer,
      ctrl.byteOffset + 4 * JOB.message,
      ctrl[JOB.errorLength],
    ).slice(),
  );
  const where = thread === 0 ? "the calling thread" : `worker ${thread}`;
  const m = ctrl[JOB.m], end = Math.min(row + ctrl[JOB.chunk], m) - 1;
  return new Error(
    `kernels: ${
      kernelName(ctrl)
    } failed on ${where} (rows ${row}–${end} of ${m}): ${message}`,
  );
}

/** Runs rows `[i0, i0 + rows)` of the job in `ctrl` with workspace `work`. */
export function runShare(
  exports: PoolExports,
  memory: WebAssembly.Memory,
  ctrl: Int32Array,
  share: { i0: number; rows: number },
  work: number,
): void {
  const { i0, rows } = share;
  const op = Atomics.load(ctrl, JOB.op);
  const arg = (i: number) => ctrl[JOB.args + i] >>> 0;
  const lda = ctrl[JOB.lda], ldc = ctrl[JOB.ldc];
  switch (op) {
    case OP_TERNARY:
      exports.tmatmul(
        ctrl[JOB.a] >>> 0,
        ctrl[JOB.n],
        ctrl[JOB.k],
        (ctrl[JOB.b] >>> 0) + i0 * lda,
        lda,
        rows,
        (ctrl[JOB.sums] >>> 0) + 4 * i0,
        (ctrl[JOB.invScales] >>> 0) + 4 * i0,
        f32Bits(ctrl[JOB.scaleBits]),
        (ctrl[JOB.c] >>> 0) + 4 * i0 * ldc,
        ldc,
      );
      return;
    case OP_INT8: {
      const kpad = arg(2), ldo = arg(7);
      exports.i8matmul(
        arg(0),
        arg(1),
        kpad,
        arg(3) + i0 * kpad,
        kpad,
        rows,
        arg(4),
        arg(5) + 4 * i0,
        arg(6) + 4 * i0 * ldo,
        ldo,
      );
      return;
    }
    case OP_QUANTIZE: {
      const kpad = arg(4);
      exports.quantize_rows(
        arg(0) + 4 * i0 * arg(2),
        rows,
        arg(1),
        arg(2),
        arg(3) + i0 * kpad,
        kpad,
        arg(5) + 4 * i0,
        arg(6) + 4 * i0,
        f32Bits(ctrl[JOB.args + 7]),
      );
      return;
    }
    case OP_ACT_QUANT: {
      const cols = arg(2);
      const bad = exports.act_quant(
        arg(0) + 4 * i0 * cols,
        arg(1) + 4 * i0 * cols,
        rows,
        cols,
      );
      if (bad !== 0) Atomics.or(ctrl, JOB.status, 1);
      return;
    }
    case OP_RMSNORM: {
      const dim = arg(4);
      exports.rmsnorm_fwd(
        arg(0) + 4 * i0 * dim,
        arg(1),
        arg(2) + 4 * i0 * dim,
        arg(3) + 4 * i0,
        rows,
        dim,
        f64Arg(ctrl, 6),
      );
      return;
    }
    case OP_NLL:
      return nllRows(exports, memory, ctrl, i0, rows, work);
    case OP_ROPE: {
      const row = 4 * i0 * arg(3) * arg(4);
      exports.rope(
        arg(0) + row,
        arg(1) + row,
        rows,
        arg(2),
        arg(3),
        arg(4),
        arg(5),
        arg(6),
        arg(7),
        arg(8),
      );
      return;
    }
    case OP_SOFTMAX: {
      const V = arg(2);
      for (let r = i0; r < i0 + rows; r++) {
        exports.softmax_row(
          arg(0) + 4 * r * V,
          arg(1) + 4 * r * V,
          V,
          arg(3) + 24 * r,
        );
      }
      return;
    }
    case OP_ATTEND:
      for (let u = i0; u < i0 + rows; u++) attendUnit(exports, ctrl, u, work);
      return;
    case OP_ATTENTION_FWD:
    case OP_ATTENTION_BWD: {
      const job = attentionJob(ctrl);
      const unit = op === OP_ATTENTION_FWD
        ? attentionForwardUnit
        : attentionBackwardUnit;
      for (let u = i0; u < i0 + rows; u++) unit(exports, job, u, work);
      return;
    }
    case OP_MATMUL_COLS: {
      // Column j of op(B) starts at j·ldb when B is stored N×K, else at j.
      const flags = ctrl[JOB.flags], ldb = ctrl[JOB.ldb];
      const bOff = (flags & 2) !== 0 ? 4 * i0 * ldb : 4 * i0;
      exports[`matmul_${arg(1)}x${ctrl[JOB.nr]}`](
        ctrl[JOB.a] >>> 0,
        (ctrl[JOB.b] >>> 0) + bOff,
        (ctrl[JOB.c] >>> 0) + 4 * i0,
        arg(0),
        rows,
        ctrl[JOB.k],
        lda,
        ldb,
        ldc,
        flags,
        work,
        ctrl[JOB.mc],
        ctrl[JOB.kc],
        ctrl[JOB.nc],
      );
      return;
    }
    case OP_MAP: {
      const name = MAP_KERNEL_NAMES[ctrl[JOB.args]];
      const [arrays, scalars] = MAP_KERNELS[name];
      const params: number[] = [];
      for (let i = 0; i < arrays; i++) params.push(arg(1 + i) + 4 * i0);
      for (let i = 0; i < scalars; i++) {
        params.push(f64Arg(ctrl, MAP_SCALARS + 2 * i));
      }
      exports[name](...params, rows);
      return;
    }
  }
  // Row i of op(A) starts at i·lda, or at column i when A is stored K×M.
  const flags = ctrl[JOB.flags];
  const aOff = (flags & 1) !== 0 ? 4 * i0 : 4 * i0 * lda;
  exports[`matmul_${ctrl[JOB.mr]}x${ctrl[JOB.nr]}`](
    (ctrl[JOB.a] >>> 0) + aOff,
    ctrl[JOB.b] >>> 0,
    (ctrl[JOB.c] >>> 0) + 4 * i0 * ldc,
    rows,
    ctrl[JOB.n],
    ctrl[JOB.k],
    lda,
    ctrl[JOB.ldb],
    ldc,
    flags,
    work,
    ctrl[JOB.mc],
    ctrl[JOB.kc],
    ctrl[JOB.nc],
  );
}

/** The {@link OP_ATTENTION_FWD} / {@link OP_ATTENTION_BWD} job in `ctrl`'s arguments. */
function attentionJob(ctrl: Int32Array): AttentionJob {
  const arg = (i: number) => ctrl[JOB.args + i] >>> 0;
  return {
    q: arg(0),
    k: arg(1),
    v: arg(2),
    out: arg(3),
    probs: arg(4),
    dq: arg(5),
    dk: arg(6),
    dv: arg(7),
    T: arg(8),
    H: arg(9),
    Hkv: arg(10),
    D: arg(11),
    scale: f32Bits(ctrl[JOB.args + 12]),
    mc: arg(13),
    kc: arg(14),
    nc: arg(15),
    matmul: `matmul_${arg(16)}x${arg(17)}`,
    mr: arg(16),
    scratch: arg(18),
  };
}

/** The f32 whose bits are `bits`. */
function f32Bits(bits: number): number {
  return new Float32Array(Int32Array.of(bits).buffer)[0];
}

/** The f64 in argument words `i`, `i + 1` of the job. */
function f64Arg(ctrl: Int32Array, i: number): number {
  return new Float64Array(
    Int32Array.of(ctrl[JOB.args + i], ctrl[JOB.args + i + 1]).buffer,
  )[0];
}

/** Writes `value` as the f64 in argument words `i`, `i + 1` (see {@link f64Arg}). */
export function f64Words(value: number): [number, number] {
  const w = new Int32Array(Float64Array.of(value).buffer);
  return [w[0], w[1]];
}

/** {@link OP_NLL} on rows `[i0, i0 + rows)`; `work` holds the 24 bytes of `softmax_row`'s stats. */
function nllRows(
  exports: PoolExports,
  memory: WebAssembly.Memory,
  ctrl: Int32Array,
  i0: number,
  rows: number,
  work: number,
): void {
  const logits = ctrl[JOB.args] >>> 0, V = ctrl[JOB.args + 1];
  const targets = ctrl[JOB.args + 2] >>> 0, losses = ctrl[JOB.args + 3] >>> 0;
  // Fresh views: the memory may have grown since `ctrl` was made.
  const buf = memory.buffer;
  const y = new Int32Array(buf, targets, i0 + rows);
  const lg = new Float32Array(buf, logits, (i0 + rows) * V);
  const out = new Float64Array(buf, losses, i0 + rows);
  const st = new Float64Array(buf, work, 3);
  for (let r = i0; r < i0 + rows; r++) {
    const t = y[r];
    if (t === -1) {
      out[r] = 0;
      continue;
    }
    const ly = lg[r * V + t];
    const row = logits + 4 * r * V;
    exports.softmax_row(row, row, V, work);
    out[r] = st[0] + Math.log(st[1]) - ly;
  }
}

/**
 * Unit `u` of an {@link OP_ATTEND} job: sequence `⌊u / heads⌋`, head
 * `u mod heads`, exactly as the runtime attends one head on one thread.
 */
function attendUnit(
  exports: PoolExports,
  ctrl: Int32Array,
  u: number,
  work: number,
): void {
  const arg = (i: number) => ctrl[JOB.args + i] >>> 0;
  const T = arg(4), qRow = arg(5), kvRow = arg(6), D = arg(7), H = arg(8);
  const s = Math.floor(u / H), h = u % H, g = Math.floor(h / arg(9));
  const q = arg(0) + 4 * s * T * qRow, out = arg(3) + 4 * s * T * qRow;
  const k = arg(1) + s * arg(10), v = arg(2) + s * arg(10);
  const S = work + arg(11), scale = f32Bits(ctrl[JOB.args + 12]);
  const mc = arg(13), kc = arg(14), nc = arg(15);
  const matmul = exports[`matmul_${arg(16)}x${arg(17)}`];
  const block = attentionBlock(arg(16));
  for (let t0 = 0; t0 < T; t0 += block) {
    const t1 = Math.min(T, t0 + block);
    // S[t0:t1, 0:t1] = Q_h[t0:t1] · K_gᵀ (transposed B).
    matmul(
      q + 4 * (t0 * qRow + h * D),
      k + 4 * g * D,
      S + 4 * t0 * T,
      t1 - t0,
      t1,
      D,
      qRow,
      kvRow,
      T,
      2,
      work,
      mc,
      kc,
      nc,
    );
  }
  exports.softmax_causal(S, T, T, scale);
  for (let t0 = 0; t0 < T; t0 += block) {
    const t1 = Math.min(T, t0 + block);
    matmul(
      S + 4 * t0 * T,
      v + 4 * g * D,
      out + 4 * (t0 * qRow + h * D),
      t1 - t0,
      D,
      t1,
      T,
      kvRow,
      qRow,
      0,
      work,
      mc,
      kc,
      nc,
    );
  }
}

/**
 * Runs a job (`op` and its words) wholly on this thread, without a pool: the
 * code each chunk of a pooled job runs, over all units at once. Returns the
 * job's `status` bits.
 */
export function runHere(
  op: number,
  job: ReadonlyArray<readonly [number, number]>,
  exports: PoolExports,
  memory: WebAssembly.Memory,
  work: number,
): number {
  const ctrl = new Int32Array(JOB.words);
  for (const [word, value] of job) ctrl[word] = value;
  ctrl[JOB.op] = op;
  runShare(exports, memory, ctrl, { i0: 0, rows: ctrl[JOB.m] }, work);
  return ctrl[JOB.status];
}

/** A started pool: its control block, and the workers to stop. */
export class MatmulPool {
  /** Threads, the caller included. */
  readonly threads: number;
  /** Byte offset of the control block in the memory. */
  readonly control: number;
  readonly #ctrl: Int32Array;
  readonly #memory: WebAssembly.Memory;
  readonly #workers: Worker[];
  #closed = false;

  private constructor(
    threads: number,
    control: number,
    ctrl: Int32Array,
    memory: WebAssembly.Memory,
    workers: Worker[],
  ) {
    this.threads = threads;
    this.control = control;
    this.#ctrl = ctrl;
    this.#memory = memory;
    this.#workers = workers;
  }

  /**
   * Starts `threads − 1` workers on `memory` (shared) with the control block
   * at `control` (`JOB.words` i32 words, zeroed); resolves when all are ready.
   */
  static async start(
    bytes: Uint8Array,
    memory: WebAssembly.Memory,
    control: number,
    threads: number,
  ): Promise<MatmulPool> {
    const ctrl = new Int32Array(memory.buffer, control, JOB.words);
    const workers: Worker[] = [];
    try {
      const ready: Promise<void>[] = [];
      for (let index = 1; index < threads; index++) {
        const w = new Worker(
          new URL("./matmul_worker.ts", import.meta.url).href,
          { type: "module" },
        );
        workers.push(w);
        ready.push(
          new Promise((resolve, reject) => {
            w.onmessage = () => resolve();
            w.onerror = (e) => {
              e.preventDefault();
              reject(new Error(`matmul worker ${index}: ${e.message}`));
            };
          }),
        );
        const init: InitMessage = { bytes, memory, control, index };
        w.postMessage(init);
      }
      await Promise.all(ready);
    } catch (e) {
      stopWorkers(ctrl, workers);
      throw e;
    }
    return new MatmulPool(threads, control, ctrl, memory, workers);
  }

  /**
   * Units per chunk of a job of `op` over `m` units in multiples of `mr`
   * ({@link chunkRows}, with {@link MATMUL_MIN_CHUNK_ROWS} for f32 matmuls).
   */
  chunkFor(op: number, m: number, mr: number): number {
    return chunkRows(
      m,
      mr,
      this.threads,
      op === OP_MATMUL ? MATMUL_MIN_CHUNK_ROWS : 0,
    );
  }

  /**
   * Runs a job (`op`, and its words as word → value) across the pool, the
   * caller's chunks with workspace `work0`; returns when all chunks are done.
   * A chunk that throws on any thread (a kernel trap: out-of-bounds access,
   * `unreachable`) still counts as done; once all are, this throws an Error
   * naming the kernel, the thread and the trap, and the pool stays usable.
   * Returns the job's `status` bits.
   */
  run(
    op: number,
    job: ReadonlyArray<readonly [number, number]>,
    exports: PoolExports,
    work0: number,
  ): number {
    if (this.#closed) throw new Error("matmul pool: already closed");
    const ctrl = this.#ctrl;
    for (const [word, value] of job) ctrl[word] = value;
    const m = ctrl[JOB.m];
    const chunk = this.chunkFor(op, m, ctrl[JOB.mr]);
    ctrl[JOB.chunk] = chunk;
    const chunks = Math.ceil(m / chunk);
    const gen = (Atomics.load(ctrl, JOB.generation) + 1) & 0xffff;
    Atomics.store(ctrl, JOB.op, op);
    Atomics.store(ctrl, JOB.done, 0);
    Atomics.store(ctrl, JOB.error, 0);
    Atomics.store(ctrl, JOB.status, 0);
    Atomics.store(ctrl, JOB.claim, gen * 65536 + chunks);
    Atomics.store(ctrl, JOB.generation, gen);
    Atomics.notify(ctrl, JOB.generation);
    runChunks(exports, this.#memory, ctrl, gen, work0, 0);
    for (let spin = 0;; spin++) {
      const done = Atomics.load(ctrl, JOB.done);
      if (done >= chunks) break;
      if (spin > 1000) Atomics.wait(ctrl, JOB.done, done, 1);
    }
    // Every chunk is counted, failed or not, so the pool is idle and usable.
    if (Atomics.load(ctrl, JOB.error) !== 0) throw failureError(ctrl);
    return Atomics.load(ctrl, JOB.status);
  }

  /** Stops the workers (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    stopWorkers(this.#ctrl, this.#workers);
  }
}

/**
 * Publishes the stop and terminates the workers. The stop comes first:
 * `terminate` alone does not end a worker blocked in `Atomics.wait`, and such
 * a worker keeps the process from exiting.
 */
function stopWorkers(ctrl: Int32Array, workers: readonly Worker[]): void {
  Atomics.store(ctrl, JOB.op, OP_QUIT);
  Atomics.add(ctrl, JOB.generation, 1);
  Atomics.notify(ctrl, JOB.generation);
  for (const w of workers) w.terminate();
}
