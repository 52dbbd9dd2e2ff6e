/**
 * The thread pool of {@link WasmKernels}' f32 matmul: `threads − 1` workers
 * (the calling thread is the first) that run the same kernel module on the
 * same shared `WebAssembly.Memory`.
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
 * it.
 *
 * @module
 */

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
  /** Workspace pointer of thread i at `work + i`. */
  work: 32,
  /** The first error's message, UTF-8, at most 4 · 64 bytes. */
  message: 128,
  /** Words in the block (up to 96 threads, then the message). */
  words: 192,
} as const;

/** Op code of an f32 matmul job (rows of C split). */
export const OP_MATMUL = 1;
/**
 * Op code of a ternary × int8 job (`tmatmul`: tokens split). Words: `a` the
 * packed weights, `b` the int8 tokens (row stride `lda` bytes), `c` the
 * output (row stride `ldc` floats), `m` tokens, `n` weight rows, `k` the
 * padded depth, and `sums`, `invScales`, `scaleBits`; `mr` is the chunk unit.
 */
export const OP_TERNARY = 3;
/** Op code that stops the workers. */
export const OP_QUIT = 2;

/** The `tmatmul` export of the kernel module. */
export type TernaryExport = (
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
) => void;

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

/** Rows per chunk for `m` rows on `threads` threads: ~4 chunks a thread, whole tiles, ≤ 255 chunks. */
export function chunkRows(m: number, mr: number, threads: number): number {
  const tiles = (rows: number) => Math.ceil(rows / mr) * mr;
  return Math.max(mr, tiles(m / (4 * threads)), tiles(m / 255));
}

/**
 * Claims and runs chunks of the job of generation `gen` until none is left
 * (or a newer job replaced it), counting each in `done`. `thread` is this
 * thread's index (0: the caller), named in the report of a chunk that throws.
 */
export function runChunks(
  exports: Record<string, MatmulExport>,
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
      runShare(exports, ctrl, { i0, rows: Math.min(chunk, m - i0) }, work);
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

/** The kernel export a job of the control block runs. */
function kernelName(ctrl: Int32Array): string {
  return Atomics.load(ctrl, JOB.op) === OP_TERNARY
    ? "tmatmul"
    : `matmul_${ctrl[JOB.mr]}x${ctrl[JOB.nr]}`;
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
  exports: Record<string, MatmulExport>,
  ctrl: Int32Array,
  share: { i0: number; rows: number },
  work: number,
): void {
  const flags = ctrl[JOB.flags], lda = ctrl[JOB.lda], ldc = ctrl[JOB.ldc];
  const { i0, rows } = share;
  if (Atomics.load(ctrl, JOB.op) === OP_TERNARY) {
    const scale = new Float32Array(Int32Array.of(ctrl[JOB.scaleBits]).buffer);
    (exports.tmatmul as unknown as TernaryExport)(
      ctrl[JOB.a] >>> 0,
      ctrl[JOB.n],
      ctrl[JOB.k],
      (ctrl[JOB.b] >>> 0) + i0 * lda,
      lda,
      rows,
      (ctrl[JOB.sums] >>> 0) + 4 * i0,
      (ctrl[JOB.invScales] >>> 0) + 4 * i0,
      scale[0],
      (ctrl[JOB.c] >>> 0) + 4 * i0 * ldc,
      ldc,
    );
    return;
  }
  // Row i of op(A) starts at i·lda, or at column i when A is stored K×M.
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

/** A started pool: its control block, and the workers to stop. */
export class MatmulPool {
  /** Threads, the caller included. */
  readonly threads: number;
  /** Byte offset of the control block in the memory. */
  readonly control: number;
  readonly #ctrl: Int32Array;
  readonly #workers: Worker[];
  #closed = false;

  private constructor(
    threads: number,
    control: number,
    ctrl: Int32Array,
    workers: Worker[],
  ) {
    this.threads = threads;
    this.control = control;
    this.#ctrl = ctrl;
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
    return new MatmulPool(threads, control, ctrl, workers);
  }

  /**
   * Runs a job (`op`, and its words as word → value) across the pool, the
   * caller's chunks with workspace `work0`; returns when all chunks are done.
   * A chunk that throws on any thread (a kernel trap: out-of-bounds access,
   * `unreachable`) still counts as done; once all are, this throws an Error
   * naming the kernel, the thread and the trap, and the pool stays usable.
   */
  run(
    op: typeof OP_MATMUL | typeof OP_TERNARY,
    job: ReadonlyArray<readonly [number, number]>,
    exports: Record<string, MatmulExport>,
    work0: number,
  ): void {
    if (this.#closed) throw new Error("matmul pool: already closed");
    const ctrl = this.#ctrl;
    for (const [word, value] of job) ctrl[word] = value;
    const m = ctrl[JOB.m];
    const chunk = chunkRows(m, ctrl[JOB.mr], this.threads);
    ctrl[JOB.chunk] = chunk;
    const chunks = Math.ceil(m / chunk);
    const gen = (Atomics.load(ctrl, JOB.generation) + 1) & 0xffff;
    Atomics.store(ctrl, JOB.op, op);
    Atomics.store(ctrl, JOB.done, 0);
    Atomics.store(ctrl, JOB.error, 0);
    Atomics.store(ctrl, JOB.claim, gen * 65536 + chunks);
    Atomics.store(ctrl, JOB.generation, gen);
    Atomics.notify(ctrl, JOB.generation);
    runChunks(exports, ctrl, gen, work0, 0);
    for (let spin = 0;; spin++) {
      const done = Atomics.load(ctrl, JOB.done);
      if (done >= chunks) break;
      if (spin > 1000) Atomics.wait(ctrl, JOB.done, done, 1);
    }
    // Every chunk is counted, failed or not, so the pool is idle and usable.
    if (Atomics.load(ctrl, JOB.error) !== 0) throw failureError(ctrl);
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
