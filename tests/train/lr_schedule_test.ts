import { strict as assert } from "node:assert";
import fc from "fast-check";
import { lrAt, type LrSchedule } from "../../src/train/lr_schedule.ts";

const schedule = fc.record({
  kind: fc.constantFrom("cosine" as const, "linear" as const),
  peakLr: fc.double({ min: 1e-6, max: 1, noNaN: true }),
  minLr: fc.double({ min: 0, max: 1e-6, noNaN: true }),
  warmupSteps: fc.integer({ min: 0, max: 50 }),
  totalSteps: fc.integer({ min: 51, max: 500 }),
});

Deno.test("warmup rises linearly to the peak, decay is monotone and ends at minLr", () => {
  fc.assert(fc.property(schedule, (s) => {
    let prev = -Infinity;
    for (let step = 0; step < s.warmupSteps; step++) {
      const lr = lrAt(s, step).lr;
      assert.ok(lr > prev);
      prev = lr;
    }
    if (s.warmupSteps > 0) {
      assert.ok(Math.abs(lrAt(s, s.warmupSteps - 1).lr - s.peakLr) < 1e-15);
    }
    assert.ok(Math.abs(lrAt(s, s.warmupSteps).lr - s.peakLr) < 1e-15);
    prev = Infinity;
    for (let step = s.warmupSteps; step <= s.totalSteps + 5; step++) {
      const lr = lrAt(s, step).lr;
      assert.ok(lr <= prev + 1e-18, `not monotone at ${step}`);
      assert.ok(lr >= s.minLr - 1e-18);
      prev = lr;
    }
    assert.ok(Math.abs(lrAt(s, s.totalSteps).lr - s.minLr) < 1e-15);
  }));
});

Deno.test("cosine is halfway at the midpoint of the decay", () => {
  const s: LrSchedule = {
    kind: "cosine",
    peakLr: 1,
    warmupSteps: 10,
    totalSteps: 110,
  };
  assert.ok(Math.abs(lrAt(s, 60).lr - 0.5) < 1e-12);
  assert.equal(lrAt(s, 0).lr, 0.1);
  assert.equal(lrAt(s, 0).weightDecay, undefined);
});

Deno.test("two-stage: lower second peak and weight decay 0 in stage 2", () => {
  const s: LrSchedule = {
    kind: "two_stage",
    peakLr: 1.5e-3,
    stage2PeakLr: 1e-3,
    warmupSteps: 10,
    totalSteps: 100,
    weightDecay: 0.1,
  };
  assert.equal(lrAt(s, 5).weightDecay, 0.1);
  assert.equal(lrAt(s, 49).weightDecay, 0.1);
  assert.equal(lrAt(s, 50).weightDecay, 0);
  assert.equal(lrAt(s, 50).lr, 1e-3);
  // stage 1 decays from its peak over the whole run; stage 2 restarts at its lower peak.
  assert.ok(Math.abs(lrAt(s, 49).lr - 1.5e-3 * (1 - 39 / 90)) < 1e-15);
  assert.ok(Math.abs(lrAt(s, 100).lr) < 1e-18);
  for (let step = 51; step <= 100; step++) {
    assert.ok(lrAt(s, step).lr < lrAt(s, step - 1).lr);
  }
});

Deno.test("bad schedules are rejected naming the field", () => {
  assert.throws(
    () =>
      lrAt({ kind: "cosine", peakLr: 1, warmupSteps: -1, totalSteps: 10 }, 0),
    /warmupSteps/,
  );
  assert.throws(
    () =>
      lrAt({ kind: "cosine", peakLr: NaN, warmupSteps: 1, totalSteps: 10 }, 0),
    /peakLr/,
  );
  assert.throws(
    () => lrAt({ kind: "linear", peakLr: 1, warmupSteps: 1, totalSteps: 0 }, 0),
    /totalSteps/,
  );
});

Deno.test("decayFromStart matches the PyTorch reference's warmup × cosine", () => {
  const s: LrSchedule = {
    kind: "cosine",
    peakLr: 1.5e-3,
    warmupSteps: 100,
    totalSteps: 300,
    decayFromStart: true,
  };
  for (const step of [0, 1, 50, 99, 100, 150, 299]) {
    const ref = 1.5e-3 * Math.min(1, (step + 1) / 100) *
      (0.5 * (1 + Math.cos(Math.PI * step / 300)));
    assert.ok(Math.abs(lrAt(s, step).lr - ref) < 1e-18, `step ${step}`);
  }
});
