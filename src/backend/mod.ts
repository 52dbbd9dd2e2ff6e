/**
 * The compute engine: the {@link Backend} interface with its CPU (WebAssembly
 * SIMD) implementation, the autograd {@link Tape} and its differentiable ops,
 * and the plain-TypeScript reference ops every kernel is tested against.
 *
 * @example A differentiable computation on the CPU backend
 * ```ts
 * import { CpuBackend, ops, Tape } from "@ternary/core/backend";
 *
 * const backend = await CpuBackend.create();
 * const tape = new Tape(backend);
 * const w = backend.upload(new Float32Array([0.5, -0.2, 0.1, 0.3]));
 * const dw = backend.zeros(4);
 * const x = tape.constant(backend.upload(new Float32Array([1, 2])));
 * const y = ops.bitLinear(tape, x, tape.param(w, dw), {
 *   rows: 1, inFeatures: 2, outFeatures: 2, mode: "ternary", lambdaA: 1, lambdaW: 1,
 * });
 * tape.backward(y, 1);
 * console.log(await backend.read(y.value), await backend.read(dw));
 * ```
 *
 * @module
 */
export * from "./backend.ts";
export * from "./tape.ts";
export * as ops from "./ops.ts";
export * from "./cpu/cpu_backend.ts";
export * as reference from "./reference/mod.ts";
export * from "./wasm/wasm_kernels.ts";
export * from "./service.ts";
