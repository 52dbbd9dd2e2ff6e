/**
 * Rotary position embedding (RoPE), NEOX and interleaved pairings.
 *
 * @module
 */
import { alloc, type Arr, checkLen } from "./arr.ts";
import {
  checkRopeShape as checkShape,
  type RopeShape,
  type RopeStyle,
} from "../shapes.ts";

export type { RopeShape, RopeStyle };

/**
 * Visits every rotated pair: `f(ia, ib, cos, sin)` with flat indices of the pair and
 * the rotation angle `pos · θ_i`, `θ_i = base^(−2i/headDim)`, `pos = posOffset + t`.
 */
function forEachPair(
  shape: RopeShape,
  f: (ia: number, ib: number, cos: number, sin: number) => void,
): void {
  const { batch, seqLen, heads, headDim, base, style } = shape;
  const off = shape.posOffset ?? 0;
  const half = headDim / 2;
  const theta = Array.from(
    { length: half },
    (_, i) => Math.pow(base, (-2 * i) / headDim),
  );
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < seqLen; t++) {
      const pos = off + t;
      for (let h = 0; h < heads; h++) {
        const head = ((b * seqLen + t) * heads + h) * headDim;
        for (let i = 0; i < half; i++) {
          const angle = pos * theta[i];
          const [a, bb] = style === "neox" ? [i, i + half] : [2 * i, 2 * i + 1];
          f(head + a, head + bb, Math.cos(angle), Math.sin(angle));
        }
      }
    }
  }
}

/**
 * Forward: each pair `(a, b)` rotated by its angle:
 * `y_a = x_a·cos − x_b·sin`, `y_b = x_a·sin + x_b·cos`. Returns y, shaped like x.
 */
export function ropeForward<T extends Arr>(x: T, shape: RopeShape): T {
  checkShape(shape);
  const { batch, seqLen, heads, headDim } = shape;
  checkLen("x", x, batch * seqLen * heads * headDim);
  const y = alloc(x, x.length);
  forEachPair(shape, (ia, ib, c, s) => {
    y[ia] = x[ia] * c - x[ib] * s;
    y[ib] = x[ia] * s + x[ib] * c;
  });
  return y;
}

/**
 * Backward: the inverse (transposed) rotation; accumulates
 * `dx_a += dy_a·cos + dy_b·sin`, `dx_b += −dy_a·sin + dy_b·cos`.
 */
export function ropeBackward(
  dout: Arr,
  grads: { readonly dx?: Arr },
  shape: RopeShape,
): void {
  checkShape(shape);
  const { batch, seqLen, heads, headDim } = shape;
  const n = batch * seqLen * heads * headDim;
  checkLen("dout", dout, n);
  const { dx } = grads;
  if (!dx) return;
  checkLen("grads.dx", dx, n);
  forEachPair(shape, (ia, ib, c, s) => {
    dx[ia] += dout[ia] * c + dout[ib] * s;
    dx[ib] += -dout[ia] * s + dout[ib] * c;
  });
}
