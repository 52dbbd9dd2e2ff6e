/**
 * RMSNorm and LayerNorm over the last dimension, with learned per-channel weights.
 *
 * @module
 */
import { alloc, type Arr, checkGrad, checkLen } from "./arr.ts";
import { checkNormShape as checkShape, type NormShape } from "../shapes.ts";

export type { NormShape };

/** Output of {@link rmsnormForward}. */
export interface RmsNormForward<T extends Arr> {
  /** `y`, `[rows, dim]`. */
  readonly out: T;
  /** Per row `r = 1 / sqrt(mean(x²) + eps)`, `[rows]`. */
  readonly rstd: T;
}

/** Forward: `y = x · r · g` with `r = 1 / sqrt(mean(x²) + eps)` per row. */
export function rmsnormForward<T extends Arr>(
  x: T,
  g: Arr,
  shape: NormShape,
): RmsNormForward<T> {
  checkShape(shape);
  const { rows, dim, eps } = shape;
  checkLen("x", x, rows * dim);
  checkLen("g", g, dim);
  const out = alloc(x, rows * dim);
  const rstd = alloc(x, rows);
  for (let r = 0; r < rows; r++) {
    const row = r * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[row + i] * x[row + i];
    const rs = 1 / Math.sqrt(ss / dim + eps);
    rstd[r] = rs;
    for (let i = 0; i < dim; i++) out[row + i] = x[row + i] * rs * g[i];
  }
  return { out, rstd };
}

/**
 * Backward of {@link rmsnormForward}; accumulates
 * `dx_j += r·g_j·dy_j − (r³/dim)·x_j·Σ_i dy_i·g_i·x_i` and `dg_i += Σ_rows dy_i·x_i·r`.
 */
export function rmsnormBackward(
  dout: Arr,
  saved: { readonly x: Arr; readonly g: Arr; readonly rstd: Arr },
  grads: { readonly dx?: Arr; readonly dg?: Arr },
  shape: NormShape,
): void {
  checkShape(shape);
  const { rows, dim } = shape;
  const { x, g, rstd } = saved;
  const { dx, dg } = grads;
  checkLen("dout", dout, rows * dim);
  checkLen("saved.x", x, rows * dim);
  checkLen("saved.g", g, dim);
  checkLen("saved.rstd", rstd, rows);
  checkGrad("grads.dx", dx, rows * dim);
  checkGrad("grads.dg", dg, dim);
  for (let r = 0; r < rows; r++) {
    const row = r * dim;
    // Read r from the cache, as a kernel would, so f32 caches compare like for like.
    const rs = rstd[r];
    if (dg) {
      for (let i = 0; i < dim; i++) dg[i] += dout[row + i] * x[row + i] * rs;
    }
    if (dx) {
      let dot = 0;
      for (let i = 0; i < dim; i++) dot += dout[row + i] * g[i] * x[row + i];
      const c = (rs * rs * rs * dot) / dim;
      for (let i = 0; i < dim; i++) {
        dx[row + i] += rs * g[i] * dout[row + i] - c * x[row + i];
      }
    }
  }
}

/** Output of {@link layernormForward}. */
export interface LayerNormForward<T extends Arr> {
  /** `y`, `[rows, dim]`. */
  readonly out: T;
  /** Per row mean `μ`, `[rows]`. */
  readonly mean: T;
  /** Per row `r = 1 / sqrt(var + eps)` (biased variance), `[rows]`. */
  readonly rstd: T;
}

/**
 * Forward: `y = x̂ · w + b` with `x̂ = (x − μ) · r`, `μ = mean(x)`,
 * `r = 1 / sqrt(mean((x − μ)²) + eps)` per row (biased variance, as PyTorch).
 */
export function layernormForward<T extends Arr>(
  x: T,
  weight: Arr,
  bias: Arr,
  shape: NormShape,
): LayerNormForward<T> {
  checkShape(shape);
  const { rows, dim, eps } = shape;
  checkLen("x", x, rows * dim);
  checkLen("weight", weight, dim);
  checkLen("bias", bias, dim);
  const out = alloc(x, rows * dim);
  const mean = alloc(x, rows);
  const rstd = alloc(x, rows);
  for (let r = 0; r < rows; r++) {
    const row = r * dim;
    let sum = 0;
    for (let i = 0; i < dim; i++) sum += x[row + i];
    const mu = sum / dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += (x[row + i] - mu) ** 2;
    const rs = 1 / Math.sqrt(ss / dim + eps);
    mean[r] = mu;
    rstd[r] = rs;
    for (let i = 0; i < dim; i++) {
      out[row + i] = (x[row + i] - mu) * rs * weight[i] + bias[i];
    }
  }
  return { out, mean, rstd };
}

/**
 * Backward of {@link layernormForward}; with `dx̂ = dy · w` it accumulates
 * `dx += r · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂))`, `dw += Σ_rows dy · x̂` and
 * `db += Σ_rows dy`.
 */
export function layernormBackward(
  dout: Arr,
  saved: {
    readonly x: Arr;
    readonly weight: Arr;
    readonly mean: Arr;
    readonly rstd: Arr;
  },
  grads: { readonly dx?: Arr; readonly dweight?: Arr; readonly dbias?: Arr },
  shape: NormShape,
): void {
  checkShape(shape);
  const { rows, dim } = shape;
  const { x, weight, mean, rstd } = saved;
  const { dx, dweight, dbias } = grads;
  checkLen("dout", dout, rows * dim);
  checkLen("saved.x", x, rows * dim);
  checkLen("saved.weight", weight, dim);
  checkLen("saved.mean", mean, rows);
  checkLen("saved.rstd", rstd, rows);
  checkGrad("grads.dx", dx, rows * dim);
  checkGrad("grads.dweight", dweight, dim);
  checkGrad("grads.dbias", dbias, dim);
  for (let r = 0; r < rows; r++) {
    const row = r * dim;
    const mu = mean[r];
    const rs = rstd[r];
    const xhat = (i: number): number => (x[row + i] - mu) * rs;
    if (dweight || dbias) {
      for (let i = 0; i < dim; i++) {
        if (dweight) dweight[i] += dout[row + i] * xhat(i);
        if (dbias) dbias[i] += dout[row + i];
      }
    }
    if (dx) {
      let meanD = 0;
      let meanDX = 0;
      for (let i = 0; i < dim; i++) {
        const d = dout[row + i] * weight[i];
        meanD += d;
        meanDX += d * xhat(i);
      }
      meanD /= dim;
      meanDX /= dim;
      for (let i = 0; i < dim; i++) {
        const d = dout[row + i] * weight[i];
        dx[row + i] += rs * (d - meanD - xhat(i) * meanDX);
      }
    }
  }
}
