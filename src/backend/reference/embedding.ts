/**
 * Embedding lookup (gather) and its scatter-add backward.
 *
 * @module
 */
import { alloc, type Arr, checkGrad, checkLen } from "./arr.ts";
import { checkEmbedding, type EmbeddingShape } from "../shapes.ts";

export type { EmbeddingShape };

/**
 * Forward: `out[t, :] = table[ids[t], :]`. Returns out `[ids.length, dim]`.
 */
export function embeddingForward<T extends Arr>(
  table: T,
  ids: ArrayLike<number>,
  shape: EmbeddingShape,
): T {
  const { vocab, dim } = shape;
  checkEmbedding(shape, ids);
  checkLen("table", table, vocab * dim);
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
  checkEmbedding(shape, ids);
  checkLen("dout", dout, ids.length * dim);
  checkGrad("grads.dtable", dtable, vocab * dim);
  if (!dtable) return;
  for (let t = 0; t < ids.length; t++) {
    const row = ids[t] * dim;
    for (let i = 0; i < dim; i++) dtable[row + i] += dout[t * dim + i];
  }
}
