/** Test oracle: the optimum of a fully evaluated space. */
import type { Score } from "../../src/search/evaluator.ts";
import type { Constraint } from "../../src/search/search.ts";
import {
  allAssignments,
  type Assignment,
  assignmentBytes,
  fromBitMap,
  mapKey,
  type SearchSpace,
  toBitMap,
} from "../../src/search/space.ts";

/** Scores of every point, by `mapKey`. */
export type Table = Map<string, Score>;

/**
 * The smallest point within `c` (ties: lower perplexity), scoring every
 * point with `scoreOf`; `maxPplRatio` is relative to the reference map's
 * score (the reference must be a point of the space).
 */
export function exhaustiveOptimumBy(
  space: SearchSpace,
  scoreOf: (a: Assignment) => Score,
  c: Constraint,
): { bytes: number; ppl: number } | undefined {
  let maxPpl = c.maxPpl ?? Infinity;
  if (c.maxPplRatio !== undefined) {
    const ref = scoreOf(fromBitMap(space, space.reference)!);
    maxPpl = Math.min(maxPpl, c.maxPplRatio * ref.ppl);
  }
  let best: { bytes: number; ppl: number } | undefined;
  for (const a of allAssignments(space)) {
    const s = scoreOf(a);
    const bytes = assignmentBytes(space, a);
    if (s.ppl > maxPpl || bytes > (c.maxBytes ?? Infinity)) continue;
    if (
      best === undefined || bytes < best.bytes ||
      (bytes === best.bytes && s.ppl < best.ppl)
    ) best = { bytes, ppl: s.ppl };
  }
  return best;
}

/** {@link exhaustiveOptimumBy} over a table of every point's score. */
export function exhaustiveOptimum(
  space: SearchSpace,
  table: Table,
  c: Constraint,
): { bytes: number; ppl: number } | undefined {
  return exhaustiveOptimumBy(
    space,
    (a) => table.get(mapKey(space.config, toBitMap(space, a)))!,
    c,
  );
}
