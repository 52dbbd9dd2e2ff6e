/**
 * The WebGPU backend and what it is built from: the device as a scoped
 * service, the buffer pool, and the WGSL kernels with their typed dispatch
 * wrappers (each records into a `GPUCommandEncoder`).
 *
 * @example Run a training step's kernels on the GPU
 * ```ts ignore
 * import { WebGpuBackend } from "@ternary/core/webgpu";
 *
 * const backend = await WebGpuBackend.create({ powerPreference: "high-performance" });
 * console.log(backend.description);
 * backend.destroy();
 * ```
 *
 * @module
 */
export * from "./webgpu_backend.ts";
export * from "./device.ts";
export * from "./adapter.ts";
export * from "./buffer_pool.ts";
export * from "./kernels.ts";
