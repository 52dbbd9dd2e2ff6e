import { strict as assert } from "node:assert";
import fc from "fast-check";
import {
  applyPenalties,
  argmax,
  sampleToken,
  samplingDistribution,
  TokenSampler,
} from "../../src/infer/sampling.ts";

const logits = fc.array(fc.double({ min: -20, max: 20, noNaN: true }), {
  minLength: 1,
  maxLength: 50,
});

Deno.test("sampling distribution: sums to 1, sorted, respects top-k and top-p", () => {
  fc.assert(fc.property(
    logits,
    fc.double({ min: 0.05, max: 5, noNaN: true }),
    fc.integer({ min: 0, max: 60 }),
    fc.double({ min: 0.01, max: 1, noNaN: true }),
    (l, temperature, topK, topP) => {
      const { ids, probs } = samplingDistribution(l, {
        temperature,
        topK,
        topP,
      });
      assert.ok(ids.length >= 1);
      if (topK > 0) assert.ok(ids.length <= topK);
      assert.ok(Math.abs(probs.reduce((a, b) => a + b, 0) - 1) < 1e-9);
      for (let j = 1; j < ids.length; j++) {
        assert.ok(l[ids[j - 1]] >= l[ids[j]]);
      }
      assert.equal(ids[0], argmax(l));
    },
  ));
});

Deno.test("top-p keeps the smallest prefix reaching the mass", () => {
  // softmax of ln([4, 3, 2, 1]) = [0.4, 0.3, 0.2, 0.1]
  const l = [4, 3, 2, 1].map(Math.log);
  assert.deepEqual([
    ...samplingDistribution(l, { temperature: 1, topP: 0.7 }).ids,
  ], [0, 1]);
  assert.deepEqual([
    ...samplingDistribution(l, { temperature: 1, topP: 0.71 }).ids,
  ], [0, 1, 2]);
  const { probs } = samplingDistribution(l, { temperature: 1, topK: 2 });
  assert.ok(Math.abs(probs[0] - 4 / 7) < 1e-12);
});

Deno.test("sampleToken: greedy at temperature 0, and draws follow the distribution", () => {
  fc.assert(
    fc.property(
      logits,
      (l) => assert.equal(sampleToken(l, { temperature: 0 }, 0.5), argmax(l)),
    ),
  );
  const l = [4, 3, 2, 1].map(Math.log);
  const counts = [0, 0, 0, 0];
  const n = 2000;
  for (let i = 0; i < n; i++) {
    counts[sampleToken(l, { temperature: 1 }, (i + 0.5) / n)]++;
  }
  assert.deepEqual(counts, [800, 600, 400, 200]);
});

Deno.test("sampling options out of range are rejected naming the option", () => {
  assert.throws(
    () => samplingDistribution([1], { temperature: -1 }),
    /temperature/,
  );
  assert.throws(
    () => samplingDistribution([1], { temperature: 1, topK: 1.5 }),
    /topK/,
  );
  assert.throws(
    () => samplingDistribution([1], { temperature: 1, topP: 0 }),
    /topP/,
  );
  assert.throws(() => samplingDistribution([], { temperature: 1 }), /empty/);
});

/** Softmax of `logits / t` in f64. */
function softmax(l: ArrayLike<number>, t = 1): number[] {
  const m = Math.max(...Array.from(l));
  const e = Array.from(l, (x) => Math.exp((x - m) / t));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

const temperature = fc.double({ min: 0.05, max: 5, noNaN: true });
const unit = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });

Deno.test("top-k never samples outside the k largest logits", () => {
  fc.assert(fc.property(
    logits,
    temperature,
    fc.integer({ min: 1, max: 60 }),
    unit,
    (l, t, k, u) => {
      const id = sampleToken(l, { temperature: t, topK: k }, u);
      const sorted = Array.from(l).sort((a, b) => b - a);
      const kth = sorted[Math.min(k, l.length) - 1];
      assert.ok(l[id] >= kth, `logit ${l[id]} below the k-th ${kth}`);
    },
  ));
});

Deno.test("top-p never samples outside the smallest prefix reaching the mass", () => {
  fc.assert(fc.property(
    logits,
    temperature,
    fc.double({ min: 0.01, max: 1, noNaN: true }),
    unit,
    (l, t, p, u) => {
      const id = sampleToken(l, { temperature: t, topP: p }, u);
      const probs = softmax(l, t);
      // The mass ranked before the drawn token (logit descending, ties by
      // id) must be below p: a token is kept while that mass is below p.
      const before = probs.reduce(
        (a, q, j) => a + (l[j] > l[id] || (l[j] === l[id] && j < id) ? q : 0),
        0,
      );
      assert.ok(before < p + 1e-9, `mass before ${before} ≥ p = ${p}`);
    },
  ));
});

Deno.test("min-p never samples a token less likely than minP times the most likely", () => {
  fc.assert(fc.property(
    logits,
    temperature,
    fc.double({ min: 0, max: 1, noNaN: true }),
    unit,
    (l, t, minP, u) => {
      const id = sampleToken(l, { temperature: t, minP }, u);
      const probs = softmax(l, t);
      assert.ok(probs[id] >= minP * Math.max(...probs) * (1 - 1e-9));
    },
  ));
});

Deno.test("greedy sampling is the argmax, with no penalty", () => {
  fc.assert(fc.property(logits, fc.integer(), (l, seed) => {
    const s = new TokenSampler({ temperature: 0, seed });
    assert.equal(s.next(l, []), argmax(l));
  }));
});

Deno.test("the same seed gives the same tokens, another seed (nearly always) others", () => {
  const l = Float32Array.from({ length: 200 }, (_, i) => Math.sin(i) * 3);
  const run = (seed: number) => {
    const s = new TokenSampler({ temperature: 1, topK: 50, topP: 0.95, seed });
    const out: number[] = [];
    for (let i = 0; i < 64; i++) out.push(s.next(l, out));
    return out;
  };
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 1e9 }), (seed) => {
      assert.deepEqual(run(seed), run(seed));
    }),
    { numRuns: 20 },
  );
  assert.notDeepEqual(run(1), run(2));
});

Deno.test("a penalty never raises the probability of the penalized tokens", () => {
  fc.assert(fc.property(
    logits,
    fc.array(fc.nat(), { maxLength: 30 }),
    fc.double({ min: 1, max: 3, noNaN: true }),
    fc.double({ min: 0, max: 2, noNaN: true }),
    fc.double({ min: 0, max: 2, noNaN: true }),
    (l, rawHistory, repetitionPenalty, presencePenalty, frequencyPenalty) => {
      const history = rawHistory.map((i) => i % l.length);
      const opts = { repetitionPenalty, presencePenalty, frequencyPenalty };
      const after = Float64Array.from(l);
      applyPenalties(after, history, opts);
      const seen = new Set(history);
      for (let i = 0; i < l.length; i++) {
        if (seen.has(i)) assert.ok(after[i] <= l[i]);
        else assert.equal(after[i], l[i]);
      }
      const p0 = softmax(l), p1 = softmax(after);
      const mass = (p: number[]) => [...seen].reduce((a, i) => a + p[i], 0);
      assert.ok(mass(p1) <= mass(p0) + 1e-12);
      // A lone penalized token never gains.
      if (history.length > 0) {
        const one = Float64Array.from(l);
        applyPenalties(one, [history[0]], opts);
        assert.ok(softmax(one)[history[0]] <= p0[history[0]] + 1e-12);
      }
    },
  ));
});

Deno.test("penalties apply over the window only, and bad values are rejected naming the option", () => {
  const l = new Float64Array([1, 1, 1]);
  applyPenalties(l, [0, 1, 2, 2], { presencePenalty: 1, penaltyWindow: 2 });
  assert.deepEqual([...l], [1, 1, 0]);
  assert.throws(
    () => new TokenSampler({ temperature: 1, repetitionPenalty: 0.5 }),
    /repetitionPenalty/,
  );
  assert.throws(() => new TokenSampler({ temperature: 1, minP: 2 }), /minP/);
  assert.throws(
    () => new TokenSampler({ temperature: 1, frequencyPenalty: -1 }),
    /frequencyPenalty/,
  );
});
