/**
 * Embedding lookup (gather) and its scatter-add backward.
 *
 * @module
 */
import { alloc, type Arr, checkDim, checkGrad, checkLen } from "./arr.ts";

/** Shape of an embedding table `[vocab, dim]`. */
export interface EmbeddingShape {
  /** Number of rows (token ids `0 … vocab−1`). */
  readonly vocab: number;
  /** Width of a row. */
  readonly dim: number;
}

function checkIds(ids: ArrayLike<number>, vocab: number): void {
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t];
    if (!Number.isInteger(id) || id < 0 || id >= vocab) {
      throw new RangeError(
        `ids[${t}] must be an integer in [0, ${vocab}), got ${id}`,
      );
    }
  }
}

/**
 * Forward: `out[t, :] = table[ids[t], :]`. Returns out `[ids.length, dim]`.
 */
export function embeddingForward<T extends Arr>(
  table: T,
  ids: ArrayLike<number>,
  shape: EmbeddingShape,
): T {
  const { vocab, dim } = shape;
  checkDim("shape.vocab", vocab);
  checkDim("shape.dim", dim);
  checkLen("table", table, vocab * dim);
  checkIds(ids, vocab);
  const out = alloc(table, ids.length * dim);
  for (let t = 0; t < ids.length; t++) {
    out.set(table.subarray(ids[t] * dim, (ids[t] + 1) * dim), t * dim);
  }
  return out;
}

/** Backward (scatter-add): accumulates `dtable[ids[t], :] += dout[t, :]` for every t. */
export function embeddingBackward(
  dout: Arr,
  saved: { readonly ids: ArrayLike<number> },
  grads: { readonly dtable?: Arr },
  shape: EmbeddingShape,
): void {
  const { vocab, dim } = shape;
  const { ids } = saved;
  const { dtable } = grads;
  checkDim("shape.vocab", vocab);
  checkDim("shape.dim", dim);
  checkLen("dout", dout, ids.length * dim);
  checkGrad("grads.dtable", dtable, vocab * dim);
  checkIds(ids, vocab);
  if (!dtable) return;
  for (let t = 0; t < ids.length; t++) {
    const row = ids[t] * dim;
    for (let i = 0; i < dim; i++) dtable[row + i] += dout[t * dim + i];
  }
}
