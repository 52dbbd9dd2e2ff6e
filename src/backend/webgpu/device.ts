/**
 * The WebGPU backend as scoped effect resources: {@link GpuDevice} acquires an
 * adapter and a device when its layer is built and destroys the device when the
 * layer's scope closes; {@link GpuKernels} adds the buffer pool and the compiled
 * kernels on top of it.
 *
 * @module
 */
import { type Cause, Context, Data, Effect, Layer, type Scope } from "effect";
import {
  type GpuDeviceOptions,
  type GpuDeviceShape,
  GpuRequestError,
  type GpuUnavailableReason,
  requestGpuDevice,
} from "./adapter.ts";
import { BufferPool } from "./buffer_pool.ts";
import { WebGpuKernels, type WebGpuKernelsOptions } from "./kernels.ts";

export type {
  GpuAdapterInfo,
  GpuDeviceOptions,
  GpuDeviceShape,
  GpuLimits,
  GpuUnavailableReason,
} from "./adapter.ts";

/** Fields of a {@link GpuUnavailableError}. */
export interface GpuUnavailableFields {
  /** Which step failed. */
  readonly reason: GpuUnavailableReason;
  /** What failed and what to install or set to fix it. */
  readonly message: string;
}

/** Base class of {@link GpuUnavailableError} (explicitly typed for JSR). */
export const GpuUnavailableErrorBase: new (
  args: GpuUnavailableFields,
) => Cause.YieldableError & {
  readonly _tag: "GpuUnavailableError";
} & GpuUnavailableFields = Data.TaggedError("GpuUnavailableError");

/** No usable WebGPU device: no `navigator.gpu`, no adapter, or the device request failed. */
export class GpuUnavailableError extends GpuUnavailableErrorBase {}

/**
 * Acquires an adapter and a device in the current scope (see
 * {@link requestGpuDevice}); the device is destroyed when the scope closes.
 */
export function acquireGpuDevice(
  options: GpuDeviceOptions = {},
): Effect.Effect<GpuDeviceShape, GpuUnavailableError, Scope.Scope> {
  return Effect.acquireRelease(
    Effect.tryPromise({
      try: () => requestGpuDevice(options),
      catch: (cause) =>
        cause instanceof GpuRequestError
          ? new GpuUnavailableError({
            reason: cause.reason,
            message: cause.message,
          })
          : new GpuUnavailableError({
            reason: "device-request-failed",
            message: String(cause),
          }),
    }),
    (gpu) => Effect.sync(() => gpu.device.destroy()),
  );
}

/** Base class of {@link GpuDevice} (explicitly typed for JSR). */
export const GpuDeviceBase: Context.ServiceClass<
  GpuDevice,
  "ternary/GpuDevice",
  GpuDeviceShape
> = Context.Service<GpuDevice, GpuDeviceShape>()("ternary/GpuDevice");

/** The WebGPU device service; the device lives as long as the layer's scope. */
export class GpuDevice extends GpuDeviceBase {
  /** A layer acquiring the device with {@link acquireGpuDevice}. */
  static layer(
    options: GpuDeviceOptions = {},
  ): Layer.Layer<GpuDevice, GpuUnavailableError> {
    return Layer.effect(GpuDevice, acquireGpuDevice(options));
  }
}

/** Base class of {@link GpuKernels} (explicitly typed for JSR). */
export const GpuKernelsBase: Context.ServiceClass<
  GpuKernels,
  "ternary/GpuKernels",
  WebGpuKernels
> = Context.Service<GpuKernels, WebGpuKernels>()("ternary/GpuKernels");

/**
 * The kernels of the {@link GpuDevice}, with their buffer pool
 * (`kernels.pool`); every pooled buffer is destroyed when the layer's scope closes.
 */
export class GpuKernels extends GpuKernelsBase {
  /** A layer building the pool and kernels on the {@link GpuDevice} service. */
  static layer(
    options: WebGpuKernelsOptions = {},
  ): Layer.Layer<GpuKernels, never, GpuDevice> {
    return Layer.effect(
      GpuKernels,
      Effect.gen(function* () {
        const gpu = yield* GpuDevice;
        const pool = yield* Effect.acquireRelease(
          Effect.sync(() => new BufferPool(gpu.device)),
          (pool) => Effect.sync(() => pool.destroy()),
        );
        return new WebGpuKernels(gpu, pool, options);
      }),
    );
  }
}
