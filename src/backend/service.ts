/**
 * Backend selection as an effect service: {@link ComputeBackend} holds the
 * {@link Backend} a program computes on, and its static layers build one —
 * the CPU (WASM) backend, the WebGPU backend (its device destroyed when the
 * layer's scope closes), or the automatic choice: WebGPU on a real GPU, else
 * the CPU, since on a CPU the WASM kernels beat a software GPU adapter.
 *
 * @module
 */
import { Context, Effect, Layer, type Scope } from "effect";
import type { Backend } from "./backend.ts";
import { CpuBackend } from "./cpu/cpu_backend.ts";
import { acquireGpuDevice, type GpuUnavailableError } from "./webgpu/device.ts";
import {
  WebGpuBackend,
  type WebGpuBackendOptions,
} from "./webgpu/webgpu_backend.ts";

/** Base class of {@link ComputeBackend} (explicitly typed for JSR). */
export const ComputeBackendBase: Context.ServiceClass<
  ComputeBackend,
  "ternary/ComputeBackend",
  Backend
> = Context.Service<ComputeBackend, Backend>()("ternary/ComputeBackend");

/** Options of the CPU backend layer. */
export interface CpuLayerOptions {
  /**
   * Threads the matmuls run on (default: every core the engine reports);
   * results are bit-identical for any count.
   */
  readonly threads?: number;
}

/** A CPU backend whose worker threads stop when the current scope closes. */
function cpuBackend(
  options: CpuLayerOptions = {},
): Effect.Effect<Backend, never, Scope.Scope> {
  return Effect.acquireRelease(
    Effect.promise(() =>
      CpuBackend.create({
        threads: options.threads ?? navigator.hardwareConcurrency ?? 1,
      })
    ),
    (backend) => Effect.sync(() => backend.close()),
  );
}

/**
 * A WebGPU backend on a device acquired in the current scope; the backend's
 * buffers and then the device are destroyed when the scope closes.
 */
function webgpuBackend(
  options: WebGpuBackendOptions,
): Effect.Effect<Backend, GpuUnavailableError, Scope.Scope> {
  return Effect.gen(function* () {
    const gpu = yield* acquireGpuDevice(options);
    return yield* Effect.acquireRelease(
      Effect.sync(() => new WebGpuBackend(gpu, options)),
      (backend) => Effect.sync(() => backend.destroy()),
    );
  });
}

/**
 * The compute backend of a program. Its `kind` and `description` say which
 * implementation (and, for WebGPU, which adapter) was chosen.
 */
export class ComputeBackend extends ComputeBackendBase {
  /** The CPU backend (WebAssembly SIMD kernels) on every core. */
  static readonly cpu: Layer.Layer<ComputeBackend> = Layer.effect(
    ComputeBackend,
    cpuBackend(),
  );

  /** The CPU backend with `options` (e.g. `threads`); workers stop with the layer's scope. */
  static cpuWith(options: CpuLayerOptions): Layer.Layer<ComputeBackend> {
    return Layer.effect(ComputeBackend, cpuBackend(options));
  }

  /**
   * The WebGPU backend on the adapter `options` select; fails with
   * `GpuUnavailableError` when there is none (or only a fallback adapter and
   * `allowFallback` is not set). Scoped: the device is destroyed on release.
   */
  static webgpu(
    options: WebGpuBackendOptions = {},
  ): Layer.Layer<ComputeBackend, GpuUnavailableError> {
    return Layer.effect(ComputeBackend, webgpuBackend(options));
  }

  /**
   * WebGPU when a real (non-fallback) adapter exists, preferring a discrete
   * GPU; otherwise the CPU backend, logging (at info level) why WebGPU was not
   * used.
   */
  static readonly auto: Layer.Layer<ComputeBackend> = Layer.effect(
    ComputeBackend,
    webgpuBackend({ powerPreference: "high-performance" }).pipe(
      Effect.catchTag("GpuUnavailableError", (error) =>
        Effect.logInfo(
          `ComputeBackend.auto: using the cpu backend, WebGPU is unavailable (${error.reason}): ${error.message}`,
        ).pipe(Effect.andThen(cpuBackend()))),
    ),
  );
}
