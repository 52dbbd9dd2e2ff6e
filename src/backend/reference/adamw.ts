/**
 * AdamW (PyTorch `torch.optim.AdamW` order) and global-norm gradient clipping
 * (PyTorch `clip_grad_norm_`).
 *
 * @module
 */
import { type Arr, checkLen } from "./arr.ts";
import { checkAdamWStep, checkMaxNorm } from "../shapes.ts";

/** Hyper-parameters of one {@link adamwStep}. */
export interface AdamWConfig {
  /** Learning rate. */
  readonly lr: number;
  /** Decay of the first moment, in [0, 1). */
  readonly beta1: number;
  /** Decay of the second moment, in [0, 1). */
  readonly beta2: number;
  /** Added to `sqrt(v̂)` in the denominator. */
  readonly eps: number;
  /** Decoupled weight decay (0 for none). */
  readonly weightDecay: number;
}

/**
 * One AdamW step, in place, for step number `step` (1 for the first step), in
 * PyTorch's order, element by element:
 * 1. `p ← p·(1 − lr·wd)` (decoupled decay, on the parameter before this update);
 * 2. `m ← β1·m + (1 − β1)·g`, `v ← β2·v + (1 − β2)·g²`;
 * 3. `p ← p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + ε)`,
 *    i.e. `p −= lr·m̂ / (sqrt(v̂) + ε)` with PyTorch's placement of ε.
 * Together: `p_new = p − lr·(m̂ / (sqrt(v̂) + ε) + wd·p)`.
 */
export function adamwStep(
  param: Arr,
  grad: Arr,
  m: Arr,
  v: Arr,
  step: number,
  cfg: AdamWConfig,
): void {
  checkAdamWStep({ ...cfg, step }, Infinity);
  const n = param.length;
  checkLen("grad", grad, n);
  checkLen("m", m, n);
  checkLen("v", v, n);
  const { lr, beta1, beta2, eps, weightDecay } = cfg;
  const stepSize = lr / (1 - beta1 ** step);
  const bc2Sqrt = Math.sqrt(1 - beta2 ** step);
  const decay = 1 - lr * weightDecay;
  for (let i = 0; i < n; i++) {
    const g = grad[i];
    param[i] *= decay;
    m[i] = beta1 * m[i] + (1 - beta1) * g;
    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
    param[i] -= (stepSize * m[i]) / (Math.sqrt(v[i]) / bc2Sqrt + eps);
  }
}

/**
 * Global-norm clipping over all gradient buffers, in place: `‖g‖ = sqrt(Σ g²)` over
 * every element of every buffer, then each element is multiplied by
 * `min(1, maxNorm / (‖g‖ + 1e-6))`. Returns `‖g‖` before clipping.
 */
export function clipGradNorm(grads: readonly Arr[], maxNorm: number): number {
  checkMaxNorm(maxNorm);
  let ss = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) ss += g[i] * g[i];
  const norm = Math.sqrt(ss);
  const coef = Math.min(1, maxNorm / (norm + 1e-6));
  if (coef < 1) {
    for (const g of grads) for (let i = 0; i < g.length; i++) g[i] *= coef;
  }
  return norm;
}
