/**
 * `--threads N` of `train`, `eval`, `search` and `infer`: how many threads
 * the CPU kernels run on (default: every core). Results are bit-identical for
 * any count, so the flag changes speed only.
 *
 * @module
 */
import { Effect, Option, type Scope } from "effect";
import { Flag } from "effect/cli";
import { tunedMatmulConfig } from "../backend/cpu/matmul_tuning.ts";
import { WasmKernels } from "../backend/wasm/wasm_kernels.ts";
import { UsageError } from "./errors.ts";

/** The most threads the WASM kernels run on. */
const MAX_THREADS = 96;

/** The `--threads` flag. */
export const threadsFlag: Flag.Flag<Option.Option<number>> = Flag.Int(
  "threads",
).pipe(
  Flag.optional,
  Flag.withDescription(
    "CPU threads (default: all cores); results are identical for any count",
  ),
);

/** The threads of a CPU computation without `--threads`: every core (at most 96). */
export function defaultThreads(): number {
  return Math.min(MAX_THREADS, navigator.hardwareConcurrency ?? 1);
}

/**
 * The `--threads` value, checked: an integer from 1 to 96, and not with
 * `--backend webgpu` (a CPU-only flag there would change nothing). Absent:
 * `undefined` (every core).
 */
export function checkThreads(
  threads: Option.Option<number>,
  backend: "auto" | "cpu" | "webgpu",
): Effect.Effect<number | undefined, UsageError> {
  if (Option.isNone(threads)) return Effect.succeed(undefined);
  const n = threads.value;
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) {
    return Effect.fail(
      new UsageError({
        message:
          `--threads: expected an integer from 1 to ${MAX_THREADS}, got ${n}`,
      }),
    );
  }
  if (backend === "webgpu") {
    return Effect.fail(
      new UsageError({
        message:
          "--threads: sets the CPU backend's threads, and --backend webgpu computes on the GPU; drop one of them",
      }),
    );
  }
  return Effect.succeed(n);
}

/**
 * WASM kernels for the inference runtime with their f32 matmuls on `threads`
 * threads (default {@link defaultThreads}) and the blocking tuned for this
 * machine, as training uses (cached in `.cache/`; the same sums, since the
 * depth is fixed: scoring 5.21–5.65× training vs 4.93–5.30× with the built-in
 * blocking, alternating runs of `bench/infer_bench.ts scoring`); the workers
 * stop when the scope closes.
 */
export function runtimeKernels(
  threads: number | undefined,
): Effect.Effect<WasmKernels, never, Scope.Scope> {
  return Effect.acquireRelease(
    Effect.promise(async () => {
      const kernels = await WasmKernels.create({
        sharedMemory: true,
        threads: threads ?? defaultThreads(),
      });
      kernels.matmulConfig = tunedMatmulConfig(kernels);
      return kernels;
    }),
    (kernels) => Effect.sync(() => kernels.close()),
  );
}
