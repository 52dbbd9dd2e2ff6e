/**
 * Adapter and device acquisition without effect, so that the kernels, the buffer
 * pool and the GPU benchmark load with no npm dependency (the lent GPU machines have
 * no network and a small transfer limit). `device.ts` wraps this in an effect
 * service with scoped release.
 *
 * In Deno 2.9 `navigator.gpu` needs no flag or permission. The backend is chosen by
 * the environment variable `DENO_WEBGPU_BACKEND=vulkan|gl` (unset: wgpu picks; set
 * to an empty or unknown value: no adapter).
 *
 * @module
 */

/** Why no device could be had. */
export type GpuUnavailableReason =
  | "no-webgpu"
  | "no-adapter"
  | "fallback-rejected"
  | "device-request-failed";

/** How to choose the adapter. */
export interface GpuDeviceOptions {
  /** Passed to `requestAdapter`; `"high-performance"` prefers a discrete GPU. */
  readonly powerPreference?: GPUPowerPreference;
  /**
   * Accept a fallback (software) adapter such as Mesa llvmpipe. Default `false`:
   * on a CPU the WASM kernels are faster than a software GPU.
   */
  readonly allowFallback?: boolean;
}

/** The adapter's identity, as reported by `GPUAdapter.info`. */
export interface GpuAdapterInfo {
  /** Vendor name or PCI id (Mesa reports `"65541"`, i.e. 0x10005). */
  readonly vendor: string;
  /** GPU family, often empty. */
  readonly architecture: string;
  /** Device name or id. */
  readonly device: string;
  /** Human-readable description, e.g. `"llvmpipe (LLVM 15.0.6, 256 bits)"`. */
  readonly description: string;
  /** True for a software (CPU) adapter; Deno 2.9 exposes it as `info.isFallbackAdapter`. */
  readonly isFallback: boolean;
}

/** The device limits the kernels depend on. */
export const GPU_LIMIT_NAMES: readonly [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupsPerDimension",
  "minStorageBufferOffsetAlignment",
  "minUniformBufferOffsetAlignment",
] = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupsPerDimension",
  "minStorageBufferOffsetAlignment",
  "minUniformBufferOffsetAlignment",
];

/** Values of {@link GPU_LIMIT_NAMES} on the acquired device. */
export type GpuLimits = {
  readonly [K in typeof GPU_LIMIT_NAMES[number]]: number;
};

/** An acquired device with what the kernels need to know about it. */
export interface GpuDeviceShape {
  /** The device. */
  readonly device: GPUDevice;
  /** The adapter it came from. */
  readonly info: GpuAdapterInfo;
  /** The device's limits (raised to the adapter's for buffer sizes). */
  readonly limits: GpuLimits;
}

/** Thrown by {@link requestGpuDevice}: which step failed and how to fix it. */
export class GpuRequestError extends Error {
  /** Which step failed. */
  readonly reason: GpuUnavailableReason;

  /** An error for `reason`, with a message saying what to install or set. */
  constructor(reason: GpuUnavailableReason, message: string) {
    super(message);
    this.name = "GpuRequestError";
    this.reason = reason;
  }
}

// Limits raised from WebGPU's defaults to the adapter's: big weight and logit
// buffers need more than the default 128 MiB binding / 256 MiB buffer.
const RAISED_LIMITS = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
] as const;

const INSTALL_HINT =
  "install a Vulkan or OpenGL driver (Debian/Ubuntu: apt-get install mesa-vulkan-drivers, " +
  "which brings the llvmpipe software adapter) and, to force a backend, set " +
  "DENO_WEBGPU_BACKEND=vulkan or DENO_WEBGPU_BACKEND=gl";

/**
 * Requests an adapter and a device. The caller owns the device and calls
 * `device.destroy()` when done. Rejects with {@link GpuRequestError} when WebGPU is
 * missing, no adapter is found, only a fallback adapter is found and
 * `allowFallback` is false, or the device request fails.
 */
export async function requestGpuDevice(
  options: GpuDeviceOptions = {},
): Promise<GpuDeviceShape> {
  const gpu = (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
  if (gpu === undefined) {
    throw new GpuRequestError(
      "no-webgpu",
      "WebGPU is unavailable: navigator.gpu is undefined (Deno ≥ 2.0 exposes it without flags)",
    );
  }
  let adapter: GPUAdapter | null;
  try {
    adapter = await withQuietWayland(() =>
      gpu.requestAdapter({ powerPreference: options.powerPreference })
    );
  } catch (cause) {
    throw new GpuRequestError(
      "no-adapter",
      `requestAdapter() failed (${String(cause)}); ${INSTALL_HINT}`,
    );
  }
  if (adapter === null) {
    throw new GpuRequestError(
      "no-adapter",
      `no WebGPU adapter found; ${INSTALL_HINT}`,
    );
  }
  const info = adapterInfo(adapter);
  if (info.isFallback && options.allowFallback !== true) {
    throw new GpuRequestError(
      "fallback-rejected",
      `only a fallback adapter was found (${info.description}); ` +
        "pass allowFallback: true to use it, or install the GPU's Vulkan driver",
    );
  }
  const requiredLimits: Record<string, number> = {};
  for (const name of RAISED_LIMITS) requiredLimits[name] = adapter.limits[name];
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredLimits });
  } catch (cause) {
    throw new GpuRequestError(
      "device-request-failed",
      `requestDevice() failed on ${info.description}: ${String(cause)}`,
    );
  }
  const limits = Object.fromEntries(
    GPU_LIMIT_NAMES.map((name) => [name, device.limits[name]]),
  ) as unknown as GpuLimits;
  return { device, info, limits };
}

const envGranted = (variable: string): boolean =>
  Deno.permissions.querySync({ name: "env", variable }).state === "granted";

/**
 * Runs the first adapter request so that libwayland stays quiet. wgpu's GL
 * backend probes for a Wayland display, and without XDG_RUNTIME_DIR
 * libwayland prints "error: XDG_RUNTIME_DIR is invalid or not set in the
 * environment." (twice) on stderr, though nothing is wrong. When no Wayland
 * display is reachable anyway (no XDG_RUNTIME_DIR, no absolute
 * WAYLAND_DISPLAY, no WAYLAND_SOCKET), XDG_RUNTIME_DIR is pointed at
 * `/dev/null` for the request — an absolute path under which no socket can
 * exist, so the connection fails silently — and removed again after it (wgpu
 * creates its instance, and probes, once per process). Without permission to
 * read and set those variables the request runs as it is.
 */
async function withQuietWayland<A>(request: () => Promise<A>): Promise<A> {
  const vars = ["XDG_RUNTIME_DIR", "WAYLAND_DISPLAY", "WAYLAND_SOCKET"];
  const quiet = vars.every(envGranted) &&
    Deno.env.get("XDG_RUNTIME_DIR") === undefined &&
    Deno.env.get("WAYLAND_SOCKET") === undefined &&
    !(Deno.env.get("WAYLAND_DISPLAY") ?? "").startsWith("/");
  if (!quiet) return await request();
  Deno.env.set("XDG_RUNTIME_DIR", "/dev/null");
  try {
    return await request();
  } finally {
    Deno.env.delete("XDG_RUNTIME_DIR");
  }
}

function adapterInfo(adapter: GPUAdapter): GpuAdapterInfo {
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  // Deno 2.9 reports the flag on `info`; older WebGPU drafts had it on the adapter.
  const legacy = (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter;
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    isFallback: info.isFallbackAdapter ?? legacy ?? false,
  };
}
