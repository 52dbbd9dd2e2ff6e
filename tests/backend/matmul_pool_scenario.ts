/**
 * Scenarios of the kernels' thread pool that could hang the process, run by
 * `matmul_pool_test.ts` in a child process with a deadline (a hang blocks the
 * thread it happens on, so the test cannot time it out in-process). Prints one
 * JSON line of what happened; the process must then exit.
 *
 * Usage: `deno run --allow-read matmul_pool_scenario.ts <scenario>` with
 * scenario `start-close`, `worker-trap`, `out-of-bounds` or `ternary-trap`.
 *
 * @module
 */
import wabtInit from "wabt";
import {
  JOB,
  type MatmulExport,
  MatmulPool,
  OP_MATMUL,
  OP_TERNARY,
} from "../../src/backend/wasm/matmul_pool.ts";
import {
  ACTIVE_WASM_VARIANT,
  wasmKernelBytes,
} from "../../src/backend/wasm/wasm_kernels.ts";

/** Byte offset of the control block in each scenario's memory. */
const CONTROL = 1024;

/**
 * A stand-in for the kernel module whose `matmul_2x16` traps (`unreachable`)
 * on every thread whose workspace word is 1 (the workers), after raising the
 * flag at byte 64; a thread whose word is 0 (the caller) waits up to 10 s for
 * that flag, so that the workers surely take chunks, and returns.
 */
const TRAPPING_MODULE = `(module
  (import "env" "memory" (memory 1 65536 shared))
  (func (export "matmul_2x16")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (param $work i32) (param i32 i32 i32)
    (if (i32.atomic.load (local.get $work))
      (then
        (i32.atomic.store (i32.const 64) (i32.const 1))
        (drop (memory.atomic.notify (i32.const 64) (i32.const 96)))
        unreachable))
    (drop (memory.atomic.wait32 (i32.const 64) (i32.const 0) (i64.const 10000000000)))))`;

async function assemble(wat: string): Promise<Uint8Array<ArrayBuffer>> {
  const wabt = await wabtInit();
  const module = wabt.parseWat("trapping.wat", wat, { threads: true });
  try {
    return new Uint8Array(module.toBinary({}).buffer);
  } finally {
    module.destroy();
  }
}

/** A shared memory with the module instantiated on it and a pool of `threads`. */
async function poolOn(bytes: Uint8Array<ArrayBuffer>, threads: number) {
  const memory = new WebAssembly.Memory({
    initial: 64,
    maximum: 65536,
    shared: true,
  });
  new Int32Array(memory.buffer, CONTROL, JOB.words).fill(0);
  const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), {
    env: { memory },
  });
  const exports = instance.exports as unknown as Record<string, MatmulExport>;
  const pool = await MatmulPool.start(bytes, memory, CONTROL, threads);
  return { memory, exports, pool };
}

/** The message of what `f` throws, or undefined when it returns. */
function thrown(f: () => void): string | undefined {
  try {
    f();
    return undefined;
  } catch (e) {
    return String(e);
  }
}

/** The words of an f32 matmul job `C[m×n] = A[m×k] · B[k×n]` with the 2×16 tile. */
function matmulJob(
  p: { a: number; b: number; c: number; m: number; n: number; k: number },
): [number, number][] {
  return [
    [JOB.a, p.a],
    [JOB.b, p.b],
    [JOB.c, p.c],
    [JOB.m, p.m],
    [JOB.n, p.n],
    [JOB.k, p.k],
    [JOB.lda, p.k],
    [JOB.ldb, p.n],
    [JOB.ldc, p.n],
    [JOB.flags, 0],
    [JOB.mc, 64],
    [JOB.kc, 64],
    [JOB.nc, 256],
    [JOB.mr, 2],
    [JOB.nr, 16],
  ];
}

const scenarios: Record<string, () => Promise<unknown>> = {
  /** Pools closed as soon as they start: every worker must see the stop. */
  "start-close": async () => {
    const bytes = wasmKernelBytes(ACTIVE_WASM_VARIANT) as Uint8Array<
      ArrayBuffer
    >;
    for (let i = 0; i < 20; i++) (await poolOn(bytes, 3)).pool.close();
    return { closed: 20 };
  },

  /** Workers trap; then the same pool runs a job where nobody does. */
  "worker-trap": async () => {
    const { memory, exports, pool } = await poolOn(
      await assemble(TRAPPING_MODULE),
      3,
    );
    const words = new Int32Array(memory.buffer);
    const role = (ptr: number, v: number) => Atomics.store(words, ptr / 4, v);
    role(128, 0);
    role(192, 1);
    const job = [
      ...matmulJob({ a: 0, b: 0, c: 0, m: 64, n: 16, k: 1 }),
      [JOB.work + 1, 192],
      [JOB.work + 2, 192],
    ] as [number, number][];
    try {
      const first = thrown(() => pool.run(OP_MATMUL, job, exports, 128));
      role(192, 0);
      const second = thrown(() => pool.run(OP_MATMUL, job, exports, 128));
      return { first, second: second ?? "returned" };
    } finally {
      pool.close();
    }
  },

  /**
   * The real f32 kernel reading A past the end of the memory; then a valid
   * product on the same pool, checked against a plain one.
   */
  "out-of-bounds": async () => {
    const { memory, exports, pool } = await poolOn(
      wasmKernelBytes(ACTIVE_WASM_VARIANT) as Uint8Array<ArrayBuffer>,
      3,
    );
    try {
      const m = 256, n = 32, k = 64;
      const a = 1 << 16, b = a + 4 * m * k, c = b + 4 * k * n;
      const work = c + 4 * m * n, stride = 1 << 18;
      const works = [[JOB.work + 1, work + stride], [
        JOB.work + 2,
        work + 2 * stride,
      ]] as [number, number][];
      const first = thrown(() =>
        pool.run(
          OP_MATMUL,
          [
            ...matmulJob({ a: memory.buffer.byteLength - 64, b, c, m, n, k }),
            ...works,
          ],
          exports,
          work,
        )
      );
      const A = new Float32Array(memory.buffer, a, m * k);
      const B = new Float32Array(memory.buffer, b, k * n);
      A.forEach((_, i) => A[i] = ((i * 7) % 13) - 6);
      B.forEach((_, i) => B[i] = ((i * 5) % 11) - 5);
      const second = thrown(() =>
        pool.run(
          OP_MATMUL,
          [
            ...matmulJob({ a, b, c, m, n, k }),
            ...works,
          ],
          exports,
          work,
        )
      );
      const C = new Float32Array(memory.buffer, c, m * n);
      let wrong = 0;
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let l = 0; l < k; l++) s += A[i * k + l] * B[l * n + j];
          if (C[i * n + j] !== s) wrong++; // small integers: exact
        }
      }
      return { first, second: second ?? "returned", wrong };
    } finally {
      pool.close();
    }
  },

  /** The ternary kernel writing its output past the end of the memory. */
  "ternary-trap": async () => {
    const { memory, exports, pool } = await poolOn(
      wasmKernelBytes(ACTIVE_WASM_VARIANT) as Uint8Array<ArrayBuffer>,
      3,
    );
    try {
      const tokens = 64, n = 64, kpad = 64;
      const first = thrown(() =>
        pool.run(
          OP_TERNARY,
          [
            [JOB.a, 1 << 16],
            [JOB.b, 1 << 17],
            [JOB.c, memory.buffer.byteLength - 64],
            [JOB.m, tokens],
            [JOB.n, n],
            [JOB.k, kpad],
            [JOB.lda, kpad],
            [JOB.ldc, n],
            [JOB.sums, 1 << 18],
            [JOB.invScales, 1 << 19],
            [JOB.scaleBits, 0],
            [JOB.mr, 4],
          ],
          exports,
          0,
        )
      );
      return { first };
    } finally {
      pool.close();
    }
  },
};

if (import.meta.main) {
  const scenario = scenarios[Deno.args[0]];
  if (scenario === undefined) {
    throw new Error(
      `unknown scenario ${Deno.args[0]}; one of ${
        Object.keys(scenarios).join(", ")
      }`,
    );
  }
  console.log(JSON.stringify(await scenario()));
}
