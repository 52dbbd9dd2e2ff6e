/**
 * Fuzzing the readers of a run directory's own files: a checkpoint's
 * `state.json` (the checkpoint state, then the run state inside it) and
 * `metrics.jsonl`. Every input is rejected with a DataError naming the file,
 * or decodes to a value that re-encodes to text that decodes to the same value.
 */
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect } from "effect";
import { decodeCheckpointState } from "../../src/train/checkpoint.ts";
import { decodeRunState } from "../../src/train/run_state.ts";
import { type MetricsHistory, parseMetrics } from "../../src/train/report.ts";
import {
  decodeOnce,
  fuzzParameters,
  FuzzStats,
  jsonInputs,
  keptIn,
  mutatedBytes,
  randomBytes,
} from "./harness.ts";

const STATE_FILE = "fuzz/ckpt-20/state.json";
const METRICS_FILE = "fuzz/metrics.jsonl";

/** A `state.json` as a tiny training run writes it. */
const validState = {
  format_version: 1,
  step: 20,
  tokens_seen: 20480,
  sampler: {
    epoch: 0,
    position: 320,
    rng: [2462723854, 1020716019, 454327756, 1275600319],
    windows: 40835,
  },
  schedule: {
    steps: 20,
    batch: 16,
    accumulation: 1,
    seqLen: 64,
    lr: {
      kind: "cosine",
      peakLr: 0.0015,
      warmupSteps: 2,
      totalSteps: 20,
      decayFromStart: false,
    },
    weightDecay: 0.1,
    maxGradNorm: 1,
    beta2: 0.95,
    lambda: { kind: "linear", start: 0, steps: 0 },
    labelSmoothing: 0,
    evalEvery: 4,
    evalWindows: 64,
    seed: 0,
  },
  rng: [2462723854, 1020716019, 454327756, 1275600319],
  elapsed_seconds: 1.9239890120000003,
};

const stateVariants: unknown[] = [
  validState,
  { ...validState, best_val_loss: 5.649 },
  {
    ...validState,
    schedule: {
      ...validState.schedule,
      lambda: { kind: "sigmoid", fpSteps: 2, softSteps: 4, sharpness: 8 },
    },
  },
];

Deno.test("fuzz: state.json", () => {
  const stats = new FuzzStats("state.json");
  fc.assert(
    fc.property(
      jsonInputs(stateVariants, ["schedule", "sampler", "budget", "data"]),
      ([kind, text]) => {
        stats.count(kind);
        const r = decodeOnce(
          stats,
          () =>
            Effect.flatMap(
              decodeCheckpointState(text, STATE_FILE),
              (state) =>
                Effect.map(
                  decodeRunState(state, STATE_FILE),
                  (run) => ({ state, run }),
                ),
            ),
          STATE_FILE,
          ["DataError"],
        );
        if (!r.ok) return;
        const again = JSON.stringify(r.value.state, null, 2);
        assert.ok(keptIn(JSON.parse(text), JSON.parse(again)), again);
        // Compared as JSON: -0 in the input is written back as 0.
        const back = Effect.runSync(decodeCheckpointState(again, STATE_FILE));
        assert.equal(JSON.stringify(back, null, 2), again);
        assert.equal(
          JSON.stringify(Effect.runSync(decodeRunState(back, STATE_FILE))),
          JSON.stringify(r.value.run),
        );
      },
    ),
    fuzzParameters(),
  );
  console.log(stats.summary());
});

const finite = fc.double({ noNaN: true, noDefaultInfinity: true });
const count = fc.nat({ max: 1_000_000 });
const recordArb = fc.oneof(
  fc.record({
    kind: fc.constant("train"),
    step: count,
    totalSteps: count,
    loss: finite,
    lr: finite,
    lambda: finite,
    tokensPerSecond: finite,
    elapsedSeconds: finite,
    tokens: count,
    gradNorm: finite,
  }, { requiredKeys: ["kind", "step", "loss", "lr", "lambda", "tokens"] }),
  fc.record({
    kind: fc.constant("eval"),
    step: count,
    valLoss: finite,
    valPpl: finite,
    tokens: count,
  }),
);

const metricsArb = fc.array(recordArb, { maxLength: 12 }).map((records) =>
  records.map((r) => `${JSON.stringify(r)}\n`).join("")
);

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const metricsInputs: fc.Arbitrary<[string, string]> = fc.oneof(
  metricsArb.map((t): [string, string] => ["valid", t]),
  metricsArb.chain((t) => mutatedBytes(encoder.encode(t))).map((
    [kind, b],
  ): [string, string] => [`text ${kind}`, decoder.decode(b)]),
  fc.tuple(
    metricsArb,
    jsonInputs([{
      kind: "train",
      step: 1,
      totalSteps: 20,
      loss: 6.25,
      lr: 0.00075,
      lambda: 1,
      tokensPerSecond: 7946.8,
      elapsedSeconds: 0.13,
      tokens: 1024,
      gradNorm: 1.49,
    }, { kind: "eval", step: 4, valLoss: 6.05, valPpl: 425.9, tokens: 4096 }]),
  )
    .map(([t, [kind, line]]): [string, string] => [
      `line ${kind}`,
      `${t}${line.replaceAll("\n", " ")}\n`,
    ]),
  randomBytes().map(([kind, b]): [string, string] => [
    kind,
    decoder.decode(b),
  ]),
);

/** The history as `metrics.jsonl` text: training records, then evaluations. */
const metricsText = (
  h: MetricsHistory,
): string =>
  [
    ...h.train.map((m) => ({ kind: "train", ...m })),
    ...h.eval.map((e) => ({ kind: "eval", ...e })),
  ].map((r) => `${JSON.stringify(r)}\n`).join("");

Deno.test("fuzz: metrics.jsonl", () => {
  const stats = new FuzzStats("metrics.jsonl");
  fc.assert(
    fc.property(metricsInputs, ([kind, text]) => {
      stats.count(kind);
      const r = decodeOnce(
        stats,
        () => parseMetrics(text, METRICS_FILE),
        METRICS_FILE,
        ["DataError"],
      );
      if (!r.ok) return;
      const again = metricsText(r.value);
      // Compared as text: -0 in the input is written back as 0.
      const back = Effect.runSync(parseMetrics(again, METRICS_FILE));
      assert.equal(metricsText(back), again);
    }),
    fuzzParameters(),
  );
  console.log(stats.summary());
});

const stateFailure = (text: string) =>
  Effect.runSync(Effect.flip(
    Effect.flatMap(
      decodeCheckpointState(text, STATE_FILE),
      (state) => decodeRunState(state, STATE_FILE),
    ),
  ));

const shortLines = (message: string): void => {
  const lines = message.split("\n");
  assert.ok(lines.length <= 6, `${lines.length} lines`);
  for (const line of lines) {
    assert.ok(line.startsWith(`${STATE_FILE}: `), line.slice(0, 100));
    assert.ok(line.length <= 500, `${line.length} chars`);
  }
};

Deno.test("regression (fuzz): a state.json error is a few short lines however large the input", () => {
  const deep = "[".repeat(200_000) + "]".repeat(200_000);
  const beta2 = JSON.stringify({
    ...validState,
    schedule: { ...validState.schedule, beta2: "DEEP" },
  }).replace('"DEEP"', deep);
  shortLines(stateFailure(beta2).message);
  const many = Object.fromEntries(
    Array.from({ length: 20 }, (_, i) => [`unknown_${i}`, "x".repeat(100_000)]),
  );
  shortLines(stateFailure(JSON.stringify({ ...validState, ...many })).message);
});

const metricsFailure = (text: string) =>
  Effect.runSync(Effect.flip(parseMetrics(text, METRICS_FILE)));

Deno.test("regression (fuzz): metrics.jsonl refuses numbers beyond a double, unknown fields and quotes kind briefly", () => {
  const line = (extra: string) =>
    `{"kind":"eval","step":4,"valLoss":6.05,"valPpl":425.9,"tokens":4096${extra}}\n`;
  const overflow = metricsFailure(line("").replace("6.05", "1e400"));
  assert.match(overflow.message, /^fuzz\/metrics\.jsonl:1: .*valLoss/);
  assert.match(
    metricsFailure(line(`,"bogus":1`)).message,
    /^fuzz\/metrics\.jsonl:1: .*bogus/,
  );
  const kind = metricsFailure(`{"kind":"${"k".repeat(1_000_000)}"}\n`);
  assert.ok(kind.message.length < 200, `${kind.message.length} chars`);
});
