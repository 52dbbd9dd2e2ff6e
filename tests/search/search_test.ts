import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect, Schema } from "effect";
import { OneBitLlmConfig, resolveBitMap } from "../../src/common/config.ts";
import type { LayerBitMap } from "../../src/common/layer_bit_map.ts";
import { Rng } from "../../src/common/rng.ts";
import type { Score } from "../../src/search/evaluator.ts";
import {
  type Constraint,
  DEFAULT_BUDGET,
  search,
} from "../../src/search/search.ts";
import {
  allAssignments,
  type Assignment,
  assignmentBytes,
  buildSpace,
  fromBitMap,
  type SearchSpace,
} from "../../src/search/space.ts";
import { exhaustiveOptimumBy } from "./oracle.ts";

const decode = Schema.decodeSync(OneBitLlmConfig);
const config = decode({
  vocab_size: 50,
  hidden_size: 16,
  num_heads: 2,
  num_layers: 3,
  intermediate_size: 24,
  max_seq_len: 8,
});

const BLOCK = buildSpace(config, resolveBitMap(config));
const LINEAR = buildSpace(config, resolveBitMap(config), {
  granularity: "linear",
  pins: [{ target: 0 }, { target: 1 }],
  modes: ["binary", "ternary", "eightbit"],
});

/**
 * A synthetic loss over every point: per-unit effects (lower precision is
 * usually, not always, worse; f16 can be worse than int8, as for a model
 * trained ternary) plus pairwise interactions of strength `mix`.
 */
function syntheticModel(space: SearchSpace, seed: number, mix: number) {
  const rng = new Rng(seed);
  const effect = space.units.map((u) =>
    u.modes.map((m) =>
      ({ binary: 0.3, ternary: 0.1, eightbit: 0.02, f16: 0.04 })[m] *
      (0.2 + 2 * rng.nextFloat())
    )
  );
  const n = space.units.length;
  const pair = Array.from(
    { length: n * n },
    () => mix * (rng.nextFloat() - 0.5),
  );
  return (a: Assignment): Score => {
    let loss = 3;
    for (let u = 0; u < n; u++) {
      loss += effect[u][a[u]];
      for (let v = u + 1; v < n; v++) {
        if (a[u] === 0 && a[v] === 0) loss += pair[u * n + v];
      }
    }
    return { loss, ppl: Math.exp(loss), tokens: 100 };
  };
}

type Model = (a: Assignment) => Score;

function modelEvaluator(space: SearchSpace, model: Model) {
  let calls = 0;
  return {
    calls: () => calls,
    evaluate: (map: LayerBitMap) =>
      Effect.sync((): Score => {
        calls++;
        const a = fromBitMap(space, map);
        if (a === undefined) throw new Error("map outside the space");
        return model(a);
      }),
  };
}

/** The lowest and highest perplexity of the space. */
function pplRange(space: SearchSpace, model: Model): [number, number] {
  let lo = Infinity, hi = -Infinity;
  for (const a of allAssignments(space)) {
    const p = model(a).ppl;
    lo = Math.min(lo, p);
    hi = Math.max(hi, p);
  }
  return [lo, hi];
}

const cases = fc.record({
  space: fc.constantFrom(BLOCK, LINEAR),
  seed: fc.nat(),
  mix: fc.constantFrom(0, 0.05, 0.3),
  limit: fc.double({ min: 0, max: 1, noNaN: true }),
  size: fc.option(fc.double({ min: 0.3, max: 1.2, noNaN: true })),
});

function constraintOf(
  space: SearchSpace,
  model: Model,
  limit: number,
  size: number | null,
): Constraint {
  const [lo, hi] = pplRange(space, model);
  const top = assignmentBytes(
    space,
    space.units.map((u) => u.modes.length - 1),
  );
  return {
    // Below the minimum too, so infeasible limits are drawn.
    maxPpl: lo * 0.99 + limit * (hi - lo * 0.99),
    ...(size === null ? {} : { maxBytes: Math.floor(size * top) }),
  };
}

Deno.test("search: the exhaustive optimum for every limit the budget covers (synthetic, non-additive losses)", async () => {
  await fc.assert(
    fc.asyncProperty(cases, async (c) => {
      const table = syntheticModel(c.space, c.seed, c.mix);
      const constraint = constraintOf(c.space, table, c.limit, c.size);
      const ev = modelEvaluator(c.space, table);
      const r = await Effect.runPromise(
        search({ space: c.space, evaluator: ev.evaluate, constraint }),
      );
      const best = exhaustiveOptimumBy(c.space, table, constraint);
      if (c.space.size <= DEFAULT_BUDGET || r.optimality.proven) {
        // Within the budget every smaller map gets evaluated: exact, and proven.
        assert.ok(r.optimality.proven);
        assert.equal(r.choice?.bytes, best?.bytes);
        assert.equal(r.choice?.ppl, best?.ppl);
      } else {
        if (r.choice) {
          assert.ok(best !== undefined && r.choice.bytes >= best.bytes);
        }
        if (best) assert.ok(best.bytes >= r.optimality.lowerBoundBytes);
      }
      assert.ok(ev.calls() === r.evaluations.length);
      assert.ok(r.evaluations.length <= 200);
      if (best === undefined && r.optimality.proven) {
        // Proven infeasible: the whole space was evaluated; the lowest perplexity is reported.
        const [lowest] = pplRange(c.space, table);
        if (constraint.maxBytes === undefined) {
          assert.equal(r.lowestPpl.ppl, lowest);
        }
      }
    }),
    { numRuns: 150 },
  );
});

Deno.test("search: with a small budget the choice is feasible and the reported bound holds", async () => {
  await fc.assert(
    fc.asyncProperty(
      cases,
      fc.integer({ min: 2, max: 40 }),
      fc.boolean(),
      async (c, budget, certify) => {
        const table = syntheticModel(c.space, c.seed, c.mix);
        const constraint = constraintOf(c.space, table, c.limit, null);
        const ev = modelEvaluator(c.space, table);
        const r = await Effect.runPromise(
          search({
            space: c.space,
            evaluator: ev.evaluate,
            constraint,
            budget,
            certify,
          }),
        );
        assert.ok(r.evaluations.length <= budget);
        const best = exhaustiveOptimumBy(c.space, table, constraint);
        if (r.choice) {
          assert.ok(r.choice.ppl <= constraint.maxPpl!);
          assert.ok(best !== undefined && r.choice.bytes >= best.bytes);
          // The optimum is never below the reported lower bound.
          assert.ok(best.bytes >= r.optimality.lowerBoundBytes);
          if (r.optimality.proven) assert.equal(r.choice.bytes, best.bytes);
        } else if (r.optimality.proven) assert.equal(best, undefined);
      },
    ),
    { numRuns: 150 },
  );
});

Deno.test("search: a resumed search reuses every prior score and gives the same result", async () => {
  const table = syntheticModel(BLOCK, 7, 0.05);
  const constraint = { maxPplRatio: 1.1 };
  const first = modelEvaluator(BLOCK, table);
  const r1 = await Effect.runPromise(
    search({ space: BLOCK, evaluator: first.evaluate, constraint }),
  );
  // Interrupted after 10 evaluations: those come back as prior scores.
  const prior = r1.evaluations.slice(0, 10).map((e) => ({
    map: e.map,
    score: e,
  }));
  const second = modelEvaluator(BLOCK, table);
  const r2 = await Effect.runPromise(
    search({ space: BLOCK, evaluator: second.evaluate, constraint, prior }),
  );
  assert.equal(second.calls(), r1.evaluations.length - 10);
  assert.deepEqual(r2.choice?.map, r1.choice?.map);
  assert.equal(r2.evaluations.filter((e) => e.cached).length, 10);
});

Deno.test("search: bad limits and budgets fail naming the flag", async () => {
  const ev = modelEvaluator(BLOCK, syntheticModel(BLOCK, 1, 0));
  for (
    const [constraint, budget, flag] of [
      [{}, 10, "--max-ppl"],
      [{ maxPpl: -1 }, 10, "--max-ppl"],
      [{ maxPplRatio: NaN }, 10, "--max-ppl-ratio"],
      [{ maxPpl: 10 }, 0, "--budget"],
    ] as const
  ) {
    const exit = await Effect.runPromiseExit(
      search({ space: BLOCK, evaluator: ev.evaluate, constraint, budget }),
    );
    assert.ok(exit._tag === "Failure");
    assert.match(String(exit.cause), new RegExp(flag));
  }
});

Deno.test("search: exhaustive evaluates every map and returns the oracle's choice", async () => {
  const table = syntheticModel(BLOCK, 3, 0.3);
  const constraint = { maxPplRatio: 1.2 };
  const ev = modelEvaluator(BLOCK, table);
  const r = await Effect.runPromise(
    search({
      space: BLOCK,
      evaluator: ev.evaluate,
      constraint,
      exhaustive: true,
      budget: BLOCK.size + 1,
    }),
  );
  assert.equal(ev.calls(), BLOCK.size);
  assert.equal(r.optimality.evaluatedPoints, BLOCK.size);
  assert.ok(r.optimality.proven);
  assert.equal(
    r.choice?.bytes,
    exhaustiveOptimumBy(BLOCK, table, constraint)?.bytes,
  );
});

Deno.test("search: a reference map outside the space is scored but never chosen", async () => {
  const reference = {
    embedding: "f16" as const,
    layer_modes: ["ternary", "ternary", "ternary"] as const,
    overrides: { "1.mlp.down": "eightbit" as const },
  };
  const space = buildSpace(config, {
    ...reference,
    layer_modes: [...reference.layer_modes],
  });
  const model = syntheticModel(space, 11, 0.05);
  const ev = {
    evaluate: (map: LayerBitMap) =>
      Effect.sync((): Score => {
        const a = fromBitMap(space, map);
        // Outside the space: the block-1 point nearest it, a little better.
        if (a === undefined) {
          const s = model([1, 1, 1]);
          return { ...s, loss: s.loss - 0.01, ppl: Math.exp(s.loss - 0.01) };
        }
        return model(a);
      }),
  };
  const r = await Effect.runPromise(
    search({ space, evaluator: ev.evaluate, constraint: { maxPplRatio: 1.3 } }),
  );
  assert.equal(r.reference.assignment, undefined);
  assert.ok(r.choice?.assignment !== undefined);
  assert.ok(r.optimality.proven);
  assert.equal(
    r.choice.bytes,
    exhaustiveOptimumBy(space, model, { maxPpl: r.maxPpl })?.bytes,
  );
});
