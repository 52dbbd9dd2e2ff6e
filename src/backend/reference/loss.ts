/**
 * Softmax cross-entropy over logits with integer targets, label smoothing and an
 * ignore index.
 *
 * @module
 */
import { alloc, type Arr, checkGrad, checkLen } from "./arr.ts";
import { checkCrossEntropy, type CrossEntropyShape } from "../shapes.ts";

export type { CrossEntropyShape };

/** Output of {@link crossEntropyForward}. */
export interface CrossEntropyForward<T extends Arr> {
  /** Mean over counted tokens of `(1 − ε)·(−log p_y) + ε·mean_c(−log p_c)`; 0 if none counted. */
  readonly loss: number;
  /** Mean over counted tokens of `−log p_y` (no smoothing: the one for perplexity). */
  readonly nll: number;
  /** Number of tokens whose target is not the ignore index. */
  readonly count: number;
  /** Softmax `p`, `[rows, vocab]`; rows of ignored tokens are 0. */
  readonly probs: T;
}

/**
 * Forward: per counted token `p = softmax(logits_row)`,
 * `ℓ = (1 − ε)·(−log p_y) + ε·(1/V)·Σ_c (−log p_c)` (PyTorch's `label_smoothing`);
 * `loss = Σ ℓ / count`. When every token is ignored, loss and nll are 0 (PyTorch
 * returns NaN) and backward adds nothing.
 */
export function crossEntropyForward<T extends Arr>(
  logits: T,
  targets: ArrayLike<number>,
  shape: CrossEntropyShape,
): CrossEntropyForward<T> {
  const { eps, ignore } = checkCrossEntropy(shape, targets);
  const { rows, vocab: V } = shape;
  checkLen("logits", logits, rows * V);
  const probs = alloc(logits, rows * V);
  let lossSum = 0;
  let nllSum = 0;
  let count = 0;
  for (let r = 0; r < rows; r++) {
    const y = targets[r];
    if (y === ignore) continue;
    const row = r * V;
    let max = -Infinity;
    let mean = 0;
    for (let c = 0; c < V; c++) {
      max = Math.max(max, logits[row + c]);
      mean += logits[row + c];
    }
    mean /= V;
    let sum = 0;
    for (let c = 0; c < V; c++) sum += Math.exp(logits[row + c] - max);
    const lse = max + Math.log(sum);
    for (let c = 0; c < V; c++) {
      probs[row + c] = Math.exp(logits[row + c] - lse);
    }
    // −log p_c = lse − logit_c, so mean_c(−log p_c) = lse − mean(logits).
    const nll = lse - logits[row + y];
    nllSum += nll;
    lossSum += (1 - eps) * nll + eps * (lse - mean);
    count++;
  }
  return {
    loss: count ? lossSum / count : 0,
    nll: count ? nllSum / count : 0,
    count,
    probs,
  };
}

/**
 * Backward of {@link crossEntropyForward}; for every counted token accumulates
 * `dlogits[r, c] += (dloss / count)·(p_c − (1 − ε)·[c = y] − ε/V)`.
 */
export function crossEntropyBackward(
  dloss: number,
  saved: {
    readonly probs: Arr;
    readonly targets: ArrayLike<number>;
    readonly count: number;
  },
  grads: { readonly dlogits?: Arr },
  shape: CrossEntropyShape,
): void {
  const { probs, targets, count } = saved;
  const { eps, ignore } = checkCrossEntropy(shape, targets);
  const { rows, vocab: V } = shape;
  const { dlogits } = grads;
  checkLen("saved.probs", probs, rows * V);
  checkGrad("grads.dlogits", dlogits, rows * V);
  if (!dlogits || count === 0) return;
  const k = dloss / count;
  for (let r = 0; r < rows; r++) {
    const y = targets[r];
    if (y === ignore) continue;
    const row = r * V;
    for (let c = 0; c < V; c++) {
      const target = (c === y ? 1 - eps : 0) + eps / V;
      dlogits[row + c] += k * (probs[row + c] - target);
    }
  }
}
