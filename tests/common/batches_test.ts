import { strict as assert } from "node:assert";
import fc from "fast-check";
import {
  BatchSampler,
  sequentialBatches,
  unigramPerplexity,
  windowCount,
} from "../../src/common/batches.ts";
import type { Batch, SamplerState } from "../../src/common/batches.ts";
import { Rng } from "../../src/common/rng.ts";

/** Tokens equal to their index; reading outside [0, n) throws. */
const guarded = (n: number): ArrayLike<number> => {
  const data = Int32Array.from({ length: n }, (_, i) => i);
  return new Proxy(data, {
    get(target, key) {
      if (typeof key === "string" && /^-?\d+$/.test(key)) {
        const i = Number(key);
        if (i < 0 || i >= n) throw new Error(`read tokens[${i}] of ${n}`);
      }
      return Reflect.get(target, key);
    },
  });
};

const checkBatch = (batch: Batch, n: number, seqLen: number): void => {
  batch.starts.forEach((s, b) => {
    assert.equal(s % seqLen, 0);
    assert.ok(s >= 0 && s + seqLen + 1 <= n);
    for (let t = 0; t < seqLen; t++) {
      assert.equal(batch.inputs[b * seqLen + t], s + t);
      assert.equal(batch.targets[b * seqLen + t], s + t + 1);
    }
  });
};

const shapes = fc.record({
  n: fc.integer({ min: 2, max: 400 }),
  seqLen: fc.integer({ min: 1, max: 16 }),
  batchSize: fc.integer({ min: 1, max: 8 }),
  seed: fc.integer(),
}).filter(({ n, seqLen, batchSize }) => windowCount(n, seqLen) >= batchSize);

Deno.test("Rng: xoshiro128** reference outputs from state [1, 2, 3, 4]", () => {
  const rng = new Rng(0);
  rng.setState([1, 2, 3, 4]);
  assert.deepEqual(
    [rng.nextU32(), rng.nextU32(), rng.nextU32(), rng.nextU32()],
    [11520, 0, 5927040, 70819200],
  );
});

Deno.test("Rng: seeded, resumable from its state, values in range (property)", () => {
  fc.assert(
    fc.property(
      fc.integer(),
      fc.nat(50),
      fc.integer({ min: 1, max: 1000 }),
      (seed, skip, n) => {
        const a = new Rng(seed), b = new Rng(seed);
        for (let i = 0; i < skip; i++) assert.equal(a.nextU32(), b.nextU32());
        const saved = JSON.parse(JSON.stringify(a.getState()));
        const expected = Array.from({ length: 20 }, () => a.nextInt(n));
        const c = new Rng(seed + 1);
        c.setState(saved);
        assert.deepEqual(
          Array.from({ length: 20 }, () => c.nextInt(n)),
          expected,
        );
        for (const v of expected) {
          assert.ok(
            Number.isInteger(v) && v >= 0 && v < n,
          );
        }
        const f = c.nextFloat();
        assert.ok(f >= 0 && f < 1);
      },
    ),
  );
  assert.notDeepEqual(new Rng(1).getState(), new Rng(2).getState());
  assert.throws(() => new Rng(0).setState([0, 0, 0, 0]), /all zero/);
  assert.throws(() => new Rng(0).setState([1, 2, 3] as never), /four unsigned/);
  assert.throws(() => new Rng(1.5), /seed must be a safe integer/);
});

Deno.test("Rng: nextInt is uniform (chi-square, 10 bins)", () => {
  const rng = new Rng(42);
  const bins = new Array(10).fill(0);
  for (let i = 0; i < 100_000; i++) bins[rng.nextInt(10)]++;
  const chi2 = bins.reduce((s, c) => s + (c - 10_000) ** 2 / 10_000, 0);
  // 9 degrees of freedom: P(χ² > 27.9) = 0.001.
  assert.ok(chi2 < 27.9, `chi2 ${chi2}`);
});

Deno.test("BatchSampler: each epoch visits every window once, in range (property)", () => {
  fc.assert(
    fc.property(shapes, ({ n, seqLen, batchSize, seed }) => {
      const sampler = new BatchSampler(guarded(n), { batchSize, seqLen, seed });
      const windows = windowCount(n, seqLen);
      assert.equal(sampler.windows, windows);
      const seen: number[] = [];
      while (seen.length < 3 * windows) {
        const batch = sampler.nextBatch();
        assert.equal(batch.inputs.length, batchSize * seqLen);
        checkBatch(batch, n, seqLen);
        seen.push(...batch.starts);
      }
      const all = Array.from({ length: windows }, (_, i) => i * seqLen);
      for (let e = 0; e < 3; e++) {
        const epoch = seen.slice(e * windows, (e + 1) * windows);
        assert.deepEqual([...epoch].sort((a, b) => a - b), all);
      }
      assert.equal(sampler.epoch, Math.floor((seen.length - 1) / windows));
    }),
  );
});

Deno.test("BatchSampler: same seed → same batches, other seed → other order", () => {
  const tokens = guarded(10_000);
  const opts = { batchSize: 4, seqLen: 32, seed: 7 };
  const a = new BatchSampler(tokens, opts), b = new BatchSampler(tokens, opts);
  const c = new BatchSampler(tokens, { ...opts, seed: 8 });
  const starts = (s: BatchSampler) =>
    Array.from({ length: 10 }, () => [...s.nextBatch().starts]).flat();
  const sa = starts(a);
  assert.deepEqual(starts(b), sa);
  assert.notDeepEqual(starts(c), sa);
});

Deno.test("BatchSampler: resumes exactly from a saved JSON state (property)", () => {
  fc.assert(
    fc.property(
      shapes,
      fc.nat(40),
      fc.integer({ min: 1, max: 30 }),
      (shape, before, after) => {
        const { n, seqLen, batchSize, seed } = shape;
        const tokens = guarded(n);
        const original = new BatchSampler(tokens, { batchSize, seqLen, seed });
        for (let i = 0; i < before; i++) original.nextBatch();
        const state: SamplerState = JSON.parse(
          JSON.stringify(original.getState()),
        );
        const resumed = BatchSampler.fromState(
          tokens,
          { batchSize, seqLen },
          state,
        );
        assert.deepEqual(resumed.getState(), original.getState());
        for (let i = 0; i < after; i++) {
          const x = original.nextBatch(), y = resumed.nextBatch();
          assert.deepEqual(y.starts, x.starts);
          assert.deepEqual(y.inputs, x.inputs);
          assert.deepEqual(y.targets, x.targets);
        }
        assert.equal(resumed.epoch, original.epoch);
      },
    ),
  );
});

Deno.test("BatchSampler: argument and state checks", () => {
  assert.throws(
    () => new BatchSampler(guarded(10), { batchSize: 4, seqLen: 4, seed: 1 }),
    /10 tokens give 2 windows of 5, fewer than batchSize 4/,
  );
  assert.throws(
    () => new BatchSampler(guarded(100), { batchSize: 0, seqLen: 4, seed: 1 }),
    /batchSize/,
  );
  assert.throws(
    () =>
      new BatchSampler(guarded(100), { batchSize: 1, seqLen: 2.5, seed: 1 }),
    /seqLen/,
  );
  const s = new BatchSampler(guarded(100), {
    batchSize: 2,
    seqLen: 4,
    seed: 1,
  });
  assert.throws(
    () =>
      BatchSampler.fromState(
        guarded(200),
        { batchSize: 2, seqLen: 4 },
        s.getState(),
      ),
    /state: saved for 24 windows, these tokens give 49/,
  );
  assert.throws(
    () =>
      BatchSampler.fromState(guarded(100), { batchSize: 2, seqLen: 4 }, {
        ...s.getState(),
        position: 99,
      }),
    /position 99 out of range/,
  );
});

Deno.test("sequentialBatches: every window once, in order, last batch partial", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 300 }),
      fc.integer({ min: 1, max: 12 }),
      fc.integer({ min: 1, max: 6 }),
      (n, seqLen, batchSize) => {
        const batches = [
          ...sequentialBatches(guarded(n), { batchSize, seqLen }),
        ];
        const starts = batches.flatMap((b) => [...b.starts]);
        const windows = windowCount(n, seqLen);
        assert.deepEqual(
          starts,
          Array.from({ length: windows }, (_, i) => i * seqLen),
        );
        batches.forEach((b, i) => {
          checkBatch(b, n, seqLen);
          if (i < batches.length - 1) assert.equal(b.starts.length, batchSize);
        });
      },
    ),
  );
});

Deno.test("unigramPerplexity: add-one unigram formula", () => {
  // Uniform training counts: p = (c + 1) / (cV + V) = 1/V, so ppl = V.
  const uniform = Array.from({ length: 40 }, (_, i) => i % 8);
  assert.ok(Math.abs(unigramPerplexity(uniform, [0, 3, 7], 8) - 8) < 1e-9);
  // Hand-computed: train [0, 0, 1], V = 3 → p(0) = 3/6, p(2) = 1/6.
  const expected = Math.exp(-(Math.log(3 / 6) + Math.log(1 / 6)) / 2);
  assert.ok(
    Math.abs(unigramPerplexity([0, 0, 1], [0, 2], 3) - expected) < 1e-12,
  );
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 50 }).chain((v) =>
        fc.tuple(
          fc.constant(v),
          fc.array(fc.nat(v - 1), { maxLength: 200 }),
          fc.array(fc.nat(v - 1), { minLength: 1, maxLength: 200 }),
        )
      ),
      ([v, train, valid]) => {
        const ppl = unigramPerplexity(train, valid, v);
        const counts = new Array(v).fill(0);
        for (const t of train) counts[t]++;
        const nll = valid.reduce(
          (s, t) => s - Math.log((counts[t] + 1) / (train.length + v)),
          0,
        );
        assert.ok(Math.abs(ppl - Math.exp(nll / valid.length)) < 1e-9 * ppl);
        assert.ok(ppl >= 1);
      },
    ),
  );
  assert.throws(
    () => unigramPerplexity([0], [], 2),
    /validIds must not be empty/,
  );
  assert.throws(() => unigramPerplexity([0, 2], [0], 2), /trainIds\[1\] = 2/);
});
