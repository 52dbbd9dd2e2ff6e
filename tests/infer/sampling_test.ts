import { strict as assert } from "node:assert";
import fc from "fast-check";
import {
  argmax,
  sampleToken,
  samplingDistribution,
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
