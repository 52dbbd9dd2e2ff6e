import { strict as assert } from "node:assert";
import fc from "fast-check";
import {
  type Candidate,
  paretoFrontier,
  smallestWithin,
} from "../../src/search/frontier.ts";

const candidates = fc.array(
  fc.record({
    bytes: fc.integer({ min: 1, max: 1000 }),
    ppl: fc.integer({ min: 1, max: 100 }),
    map: fc.nat(),
  }),
  { maxLength: 40 },
);

const dominates = (a: Candidate, b: Candidate) =>
  a.bytes <= b.bytes && a.ppl <= b.ppl && (a.bytes < b.bytes || a.ppl < b.ppl);

Deno.test("pareto frontier: exactly the non-dominated candidates, one per point", () => {
  fc.assert(fc.property(candidates, (cs) => {
    const front = paretoFrontier(cs);
    for (let i = 1; i < front.length; i++) {
      assert.ok(
        front[i].bytes > front[i - 1].bytes && front[i].ppl < front[i - 1].ppl,
      );
    }
    for (const f of front) assert.ok(!cs.some((c) => dominates(c, f)));
    for (const c of cs) {
      if (!cs.some((d) => dominates(d, c))) {
        assert.ok(front.some((f) => f.bytes === c.bytes && f.ppl === c.ppl));
      }
    }
  }));
});

Deno.test("smallestWithin: the smallest admissible candidate, lies on the frontier", () => {
  fc.assert(
    fc.property(candidates, fc.integer({ min: 1, max: 100 }), (cs, limit) => {
      const best = smallestWithin(cs, limit);
      const ok = cs.filter((c) => c.ppl <= limit);
      if (ok.length === 0) return assert.equal(best, undefined);
      assert.ok(best !== undefined && best.ppl <= limit);
      assert.equal(best.bytes, Math.min(...ok.map((c) => c.bytes)));
      assert.ok(
        paretoFrontier(cs).some((f) =>
          f.bytes === best.bytes && f.ppl === best.ppl
        ),
      );
    }),
  );
});
