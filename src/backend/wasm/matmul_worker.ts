/**
 * A worker of {@link WasmKernels}' thread pool: it instantiates the kernel
 * module on the pool's shared memory, then waits on the control block for
 * jobs and claims chunks of each (see `matmul_pool.ts` for the
 * protocol). Started by the pool; not an API.
 *
 * @module
 */
import {
  type InitMessage,
  JOB,
  OP_QUIT,
  type PoolExports,
  runChunks,
} from "./matmul_pool.ts";

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<InitMessage>) => void) | null;
  postMessage(message: unknown): void;
};

scope.onmessage = (e: MessageEvent<InitMessage>) => {
  scope.onmessage = null;
  const { bytes, memory, control, index } = e.data;
  const instance = new WebAssembly.Instance(
    new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>),
    { env: { memory } },
  );
  const exports = instance.exports as unknown as PoolExports;
  const ctrl = new Int32Array(memory.buffer, control, JOB.words);
  // Read before "ready", when the caller cannot have published anything: read
  // after, it could already be the generation of the stop (`close` right
  // after a short job), and the wait below would then never return — nor
  // would `terminate` end it, so the process could not exit.
  let seen = Atomics.load(ctrl, JOB.generation);
  scope.postMessage("ready");
  for (;;) {
    Atomics.wait(ctrl, JOB.generation, seen);
    seen = Atomics.load(ctrl, JOB.generation);
    if (Atomics.load(ctrl, JOB.op) === OP_QUIT) break;
    runChunks(
      exports,
      memory,
      ctrl,
      seen,
      Atomics.load(ctrl, JOB.work + index),
      index,
    );
  }
  scope.postMessage("quit");
};
