/**
 * BitLinear (BitNet b1.58): a linear layer whose input and weight are fake-quantized
 * in the forward pass and passed straight through (STE) in the backward pass.
 *
 * @module
 */
import { alloc, type Arr, checkLen, rounderFor } from "./arr.ts";
import { linearBackward, linearForward, type LinearShape } from "./matmul.ts";
import { QUANT_EPS, roundHalfEven } from "../numeric.ts";
import { checkFakeQuant, type WeightQuantMode } from "../shapes.ts";

export type { WeightQuantMode };

/** `v + λ(q − v)`, with λ = 1 giving `q` exactly (no rounding residue of `v`). */
function blend(v: number, q: number, lambda: number): number {
  return lambda === 1 ? q : v + lambda * (q - v);
}

/**
 * Per-token int8 absmax fake-quantization, blended: for each row of x `[rows, cols]`,
 * `s = 127 / max(max|x_row|, ε)`, `xq = clamp(roundHalfEven(x·s), −128, 127) / s`,
 * `x̃ = x + λ(xq − x)`. The scale s is rounded to the element type of `x` before use
 * (as `../numeric.ts` does for f32); products are exact doubles.
 */
export function actFakeQuant<T extends Arr>(
  x: T,
  rows: number,
  cols: number,
  lambda: number,
): T {
  checkFakeQuant({ rows, cols, lambda });
  checkLen("x", x, rows * cols);
  const rnd = rounderFor(x);
  const out = alloc(x, x.length);
  for (let r = 0; r < rows; r++) {
    const row = r * cols;
    let maxAbs = 0;
    for (let i = 0; i < cols; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(x[row + i]));
    }
    const s = rnd(127 / Math.max(maxAbs, QUANT_EPS));
    for (let i = 0; i < cols; i++) {
      const q = Math.min(127, Math.max(-128, roundHalfEven(x[row + i] * s)));
      out[row + i] = blend(x[row + i], q / s, lambda);
    }
  }
  return out;
}

/**
 * Weight fake-quantization `Q(W)` of W `[outFeatures, inFeatures]`, blended as
 * `W̃ = W + λ(Q(W) − W)`:
 * - `"ternary"`: `γ = mean|W|`, `Q(W) = clamp(roundHalfEven(W / (γ + ε)), −1, 1) · γ`;
 * - `"binary"`: `γ = mean|W|`, `Q(W) = sign(W) · γ` with `sign(0) = +1`, so every
 *   weight is `±γ`;
 * - `"eightbit"`: per output row the step `s = max(max|W_row|, ε) / 127`,
 *   `Q(W) = clamp(roundHalfEven(W / s), −127, 127) · s`;
 * - `"f16"`: `Q(W) = W` (full precision in this reference).
 * The scales γ and s are rounded to the element type of `w` before use (as
 * `../numeric.ts` does for f32); divisions and products are exact doubles.
 */
export function weightFakeQuant<T extends Arr>(
  w: T,
  outFeatures: number,
  inFeatures: number,
  mode: WeightQuantMode,
  lambda: number,
): T {
  checkFakeQuant({ rows: outFeatures, cols: inFeatures, lambda }, mode);
  checkLen("w", w, outFeatures * inFeatures);
  const rnd = rounderFor(w);
  const out = alloc(w, w.length);
  const meanAbs = (): number => {
    let sum = 0;
    for (let i = 0; i < w.length; i++) sum += Math.abs(w[i]);
    return rnd(sum / w.length);
  };
  switch (mode) {
    case "f16":
      out.set(w);
      return out;
    case "ternary": {
      const gamma = meanAbs();
      const div = gamma + QUANT_EPS;
      for (let i = 0; i < w.length; i++) {
        const q = Math.min(1, Math.max(-1, roundHalfEven(w[i] / div)));
        out[i] = blend(w[i], q * gamma, lambda);
      }
      return out;
    }
    case "binary": {
      const gamma = meanAbs();
      for (let i = 0; i < w.length; i++) {
        out[i] = blend(w[i], w[i] >= 0 ? gamma : -gamma, lambda);
      }
      return out;
    }
  }
  // "eightbit"
  for (let o = 0; o < outFeatures; o++) {
    const row = o * inFeatures;
    let maxAbs = 0;
    for (let i = 0; i < inFeatures; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(w[row + i]));
    }
    const s = rnd(Math.max(maxAbs, QUANT_EPS) / 127);
    for (let i = 0; i < inFeatures; i++) {
      const q = Math.min(127, Math.max(-127, roundHalfEven(w[row + i] / s)));
      out[row + i] = blend(w[row + i], q * s, lambda);
    }
  }
  return out;
}

/** Shape and quantization settings of a BitLinear layer. */
export interface BitLinearShape extends LinearShape {
  /** Weight quantizer. */
  readonly mode: WeightQuantMode;
  /** Activation blend λ_a ∈ [0, 1]: 0 = full precision, 1 = fully quantized. */
  readonly lambdaA: number;
  /** Weight blend λ_w ∈ [0, 1]: 0 = full precision, 1 = fully quantized. */
  readonly lambdaW: number;
}

/** Output of {@link bitlinearForward}: y and the fake-quantized operands backward needs. */
export interface BitLinearForward<T extends Arr> {
  /** `y = x̃·W̃ᵀ`, `[rows, outFeatures]`. */
  readonly out: T;
  /** `x̃ = x + λ_a(xq − x)`, `[rows, inFeatures]`. */
  readonly xTilde: T;
  /** `W̃ = W + λ_w(Q(W) − W)`, `[outFeatures, inFeatures]`. */
  readonly wTilde: T;
}

/**
 * Forward: `y = x̃·W̃ᵀ` with `x̃ = ` {@link actFakeQuant}`(x, λ_a)` (per token) and
 * `W̃ = ` {@link weightFakeQuant}`(W, mode, λ_w)`. No bias (BitNet has none).
 */
export function bitlinearForward<T extends Arr>(
  x: T,
  w: T,
  shape: BitLinearShape,
): BitLinearForward<T> {
  const { rows, inFeatures, outFeatures } = shape;
  const xTilde = actFakeQuant(x, rows, inFeatures, shape.lambdaA);
  const wTilde = weightFakeQuant(
    w,
    outFeatures,
    inFeatures,
    shape.mode,
    shape.lambdaW,
  );
  return {
    out: linearForward(xTilde, wTilde, undefined, shape),
    xTilde,
    wTilde,
  };
}

/**
 * Backward (straight-through estimator): the quantizers count as identity, so it
 * accumulates `dx += dy·W̃` and `dw += dyᵀ·x̃`. For λ = 0 this is the exact gradient;
 * for λ > 0 it is by definition not the derivative of the (piecewise-constant)
 * forward, but the linear backward evaluated at `x̃`, `W̃`.
 */
export function bitlinearBackward(
  dy: Arr,
  saved: { readonly xTilde: Arr; readonly wTilde: Arr },
  grads: { readonly dx?: Arr; readonly dw?: Arr },
  shape: BitLinearShape,
): void {
  linearBackward(dy, { x: saved.xTilde, w: saved.wTilde }, grads, shape);
}
