/**
 * The size/perplexity trade-off of bit-width candidates: the Pareto frontier
 * and the smallest candidate within a perplexity limit.
 *
 * @module
 */

/** One evaluated bit-width assignment. */
export interface Candidate<M = unknown> {
  /** Storage size in bytes (see `compressionStats`). */
  readonly bytes: number;
  /** Validation perplexity. */
  readonly ppl: number;
  /** What was evaluated, e.g. a `LayerBitMap`. */
  readonly map: M;
}

/**
 * The candidates no other candidate beats on both axes (smaller or equal size
 * and lower or equal perplexity, one strictly), sorted by size ascending, so
 * perplexity is strictly descending along the result.
 */
export function paretoFrontier<M>(
  candidates: ReadonlyArray<Candidate<M>>,
): Array<Candidate<M>> {
  const sorted = [...candidates].sort((a, b) =>
    a.bytes - b.bytes || a.ppl - b.ppl
  );
  const out: Array<Candidate<M>> = [];
  for (const c of sorted) {
    if (out.length === 0 || c.ppl < out[out.length - 1].ppl) out.push(c);
  }
  return out;
}

/**
 * The smallest candidate whose perplexity is at most `maxPpl` (ties: the lower
 * perplexity), or `undefined` when none is.
 */
export function smallestWithin<M>(
  candidates: ReadonlyArray<Candidate<M>>,
  maxPpl: number,
): Candidate<M> | undefined {
  let best: Candidate<M> | undefined;
  for (const c of candidates) {
    if (!(c.ppl <= maxPpl)) continue;
    if (
      best === undefined || c.bytes < best.bytes ||
      (c.bytes === best.bytes && c.ppl < best.ppl)
    ) {
      best = c;
    }
  }
  return best;
}
