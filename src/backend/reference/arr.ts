/**
 * Array type and argument checks shared by the reference ops.
 *
 * Conventions of every op in `src/backend/reference`:
 * - tensors are flat, row-major {@link Arr}s; shapes are explicit integer arguments;
 * - arithmetic runs in JS doubles; results are stored in the element type of the
 *   first tensor argument (f64 for gradient checks, f32 to compare with kernels);
 * - `*Forward` returns a fresh output (plus, in an object, what backward needs);
 * - `*Backward` ACCUMULATES (`+=`) into the gradient buffers it is given and skips
 *   the ones left out, so gradients of a tensor used twice (tied embeddings,
 *   residual branches) add up without extra buffers. Zero the buffers before the
 *   first backward of a step.
 *
 * @module
 */

/** A flat, row-major tensor of f32 or f64 elements. */
export type Arr = Float32Array | Float64Array;

/** A fresh zeroed array with the element type of `like` and `length` elements. */
export function alloc<T extends Arr>(like: T, length: number): T {
  return (like instanceof Float32Array
    ? new Float32Array(length)
    : new Float64Array(length)) as T;
}

/**
 * Rounding to the element precision of `like`: `Math.fround` for f32, identity for
 * f64. Quantizers round their scales with it, so an f32 scale is the one an f32
 * kernel stores.
 */
export function rounderFor(like: Arr): (x: number) => number {
  return like instanceof Float32Array ? Math.fround : (x: number) => x;
}

/** Throws a RangeError unless `array.length === length`; `name` names the argument. */
export function checkLen(
  name: string,
  array: ArrayLike<number>,
  length: number,
): void {
  if (array.length !== length) {
    throw new RangeError(
      `${name} must have ${length} elements, got ${array.length}`,
    );
  }
}

/** {@link checkLen} for an optional gradient buffer: absent passes. */
export function checkGrad(
  name: string,
  array: Arr | undefined,
  length: number,
): void {
  if (array !== undefined) checkLen(name, array, length);
}
