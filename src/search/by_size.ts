/**
 * The points of a search space in order of storage size, smallest first,
 * generated lazily: the search uses it to bound how much smaller than its
 * choice an unevaluated map could be, and to check every smaller map when its
 * budget allows (which proves the choice optimal).
 *
 * Each unit's modes are a chain of size increments. Units are ordered by their
 * first increment; a point's parent lowers its last raised unit one step, or
 * moves a first step back to the unit before. Every point has exactly one
 * parent and is no smaller than it, so a best-first walk from the all-smallest
 * point yields every point once, in nondecreasing size.
 *
 * @module
 */
import { type Assignment, assignmentBytes, type SearchSpace } from "./space.ts";

interface Node {
  readonly bytes: number;
  readonly v: Int8Array;
  readonly pivot: number;
}

/** Every point of `space`, smallest storage first (ties in no set order). */
export function* assignmentsBySize(
  space: SearchSpace,
): Generator<{ assignment: Assignment; bytes: number }> {
  const active = space.units
    .map((unit, u) => ({ u, bytes: unit.bytes }))
    .filter((x) => x.bytes.length > 1)
    .sort((a, b) => (a.bytes[1] - a.bytes[0]) - (b.bytes[1] - b.bytes[0]));
  const n = active.length;
  const step = (i: number, k: number) =>
    active[i].bytes[k + 1] - active[i].bytes[k];
  const heap = new MinHeap<Node>((a, b) => a.bytes - b.bytes);
  const zero = space.units.map(() => 0);
  heap.push({
    bytes: assignmentBytes(space, zero),
    v: new Int8Array(n),
    pivot: -1,
  });
  while (heap.size > 0) {
    const node = heap.pop()!;
    const a = space.units.map(() => 0);
    for (let i = 0; i < n; i++) a[active[i].u] = node.v[i];
    yield { assignment: a, bytes: node.bytes };
    const p = node.pivot;
    if (p >= 0 && node.v[p] < active[p].bytes.length - 1) {
      const v = node.v.slice();
      v[p]++;
      heap.push({ bytes: node.bytes + step(p, node.v[p]), v, pivot: p });
    }
    if (p + 1 < n) {
      const v = node.v.slice();
      v[p + 1] = 1;
      heap.push({ bytes: node.bytes + step(p + 1, 0), v, pivot: p + 1 });
      if (p >= 0 && node.v[p] === 1) {
        const w = v.slice();
        w[p] = 0;
        heap.push({
          bytes: node.bytes - step(p, 0) + step(p + 1, 0),
          v: w,
          pivot: p + 1,
        });
      }
    }
  }
}

/** A binary min-heap ordered by `cmp`. */
class MinHeap<T> {
  readonly #items: Array<T> = [];
  readonly #cmp: (a: T, b: T) => number;

  constructor(cmp: (a: T, b: T) => number) {
    this.#cmp = cmp;
  }

  get size(): number {
    return this.#items.length;
  }

  push(x: T): void {
    const h = this.#items;
    h.push(x);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.#cmp(h[i], h[parent]) >= 0) break;
      [h[i], h[parent]] = [h[parent], h[i]];
      i = parent;
    }
  }

  pop(): T | undefined {
    const h = this.#items;
    if (h.length === 0) return undefined;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      while (true) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && this.#cmp(h[l], h[m]) < 0) m = l;
        if (r < h.length && this.#cmp(h[r], h[m]) < 0) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}
