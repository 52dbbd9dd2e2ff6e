import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect, Exit } from "effect";
import {
  etaSeconds,
  type EvalMetrics,
  formatDuration,
  formatEval,
  formatProgress,
  MetricsLog,
  parseMetrics,
  ProgressPrinter,
  readMetrics,
  type StepMetrics,
} from "../../src/train/report.ts";

Deno.test("formatDuration: known answers", () => {
  const cases: Array<[number, string]> = [
    [0, "0s"],
    [0.4, "0s"],
    [45, "45s"],
    [59.4, "59s"],
    [59.6, "1m00s"],
    [65, "1m05s"],
    [100, "1m40s"],
    [400, "6m40s"],
    [3599.4, "59m59s"],
    [3599.6, "1h00m"],
    [3720, "1h02m"],
    [3779, "1h02m"],
    [90061, "25h01m"],
  ];
  for (const [s, want] of cases) assert.equal(formatDuration(s), want, `${s}`);
  assert.throws(() => formatDuration(-1), /seconds/);
  assert.throws(() => formatDuration(NaN), /seconds/);
  assert.throws(() => formatDuration(Infinity), /seconds/);
});

Deno.test("formatDuration: parses back to the input within its resolution", () => {
  fc.assert(fc.property(fc.double({ min: 0, max: 1e7, noNaN: true }), (s) => {
    const text = formatDuration(s);
    const m = /^(?:(\d+)h(\d\d)m|(?:(\d+)m(\d\d)s)|(\d+)s)$/.exec(text);
    assert.ok(m, text);
    const back = m[1] !== undefined
      ? Number(m[1]) * 3600 + Number(m[2]) * 60
      : m[3] !== undefined
      ? Number(m[3]) * 60 + Number(m[4])
      : Number(m[5]);
    if (m[1] !== undefined) {
      assert.ok(Number(m[2]) < 60);
      // Hours drop the seconds: the text is at most a minute below the value.
      assert.ok(back <= s + 0.5 && s - back < 60.5, `${s} → ${text}`);
    } else {
      if (m[4] !== undefined) assert.ok(Number(m[4]) < 60 && Number(m[3]) > 0);
      assert.ok(Math.abs(back - s) <= 0.5, `${s} → ${text}`);
    }
  }));
});

const example: StepMetrics = {
  step: 120,
  totalSteps: 600,
  loss: 5.812,
  lr: 1.2e-3,
  lambda: 0.45,
  tokensPerSecond: 1234,
  elapsedSeconds: 100,
  // 1028.33… tokens per step: the 480 remaining steps take 400 s at 1,234 tok/s.
  tokens: 123_400,
  gradNorm: 0.84,
};

Deno.test("formatProgress: the documented line", () => {
  assert.equal(
    formatProgress(example),
    "step 120/600  loss 5.812  ppl 334.3  lr 1.20e-3  λ 0.45  1,234 tok/s  |g| 0.84  elapsed 1m40s  ETA 6m40s",
  );
  // Without total steps, grad norm or budget: no fraction, no |g|, no ETA.
  const { totalSteps: _, gradNorm: __, ...bare } = example;
  assert.equal(
    formatProgress({ ...bare, tokensPerSecond: 1_234_567.4 }),
    "step 120  loss 5.812  ppl 334.3  lr 1.20e-3  λ 0.45  1,234,567 tok/s  elapsed 1m40s",
  );
  // The time budget ends sooner: 150 s left.
  assert.match(
    formatProgress(example, { timeBudgetSeconds: 250 }),
    /ETA 2m30s$/,
  );
  // A diverged step prints instead of throwing.
  const diverged = formatProgress({
    ...example,
    loss: NaN,
    gradNorm: Infinity,
  });
  assert.match(diverged, /loss NaN {2}ppl NaN .* \|g\| inf /);
  assert.match(formatProgress({ ...example, loss: 800 }), /ppl inf/);
  assert.match(formatProgress({ ...example, loss: 12 }), /ppl 1\.63e\+5/);
});

Deno.test("formatEval: known answer", () => {
  assert.equal(
    formatEval({
      step: 120,
      valLoss: 5.7012,
      valPpl: 299.23,
      tokens: 1_228_800,
    }),
    "eval step 120  val loss 5.701  val ppl 299.2  tokens 1,228,800",
  );
});

Deno.test("ETA: remaining steps at the current throughput, or the remaining budget when sooner", () => {
  fc.assert(fc.property(
    fc.integer({ min: 1, max: 100_000 }), // total steps
    fc.double({ min: 0, max: 1, noNaN: true }), // fraction done
    fc.integer({ min: 1, max: 1 << 20 }), // tokens per step
    fc.double({ min: 1, max: 1e7, noNaN: true }), // tokens per second
    fc.double({ min: 0, max: 1e6, noNaN: true }), // elapsed
    fc.option(fc.double({ min: 0, max: 1e6, noNaN: true }), { nil: undefined }),
    (total, frac, tokensPerStep, tps, elapsed, budget) => {
      const step = Math.max(1, Math.round(frac * total));
      const m: StepMetrics = {
        step,
        totalSteps: total,
        loss: 3,
        lr: 1e-3,
        lambda: 1,
        tokensPerSecond: tps,
        elapsedSeconds: elapsed,
        tokens: step * tokensPerStep,
      };
      const bySteps = (total - step) * tokensPerStep / tps;
      const want = budget === undefined
        ? bySteps
        : Math.min(bySteps, Math.max(0, budget - elapsed));
      const got = etaSeconds(m, { timeBudgetSeconds: budget });
      assert.ok(got !== undefined);
      assert.ok(
        Math.abs(got - want) <= 1e-9 * Math.max(1, want),
        `${got} vs ${want}`,
      );
      assert.ok(
        formatProgress(m, { timeBudgetSeconds: budget }).endsWith(
          `ETA ${formatDuration(got)}`,
        ),
      );
    },
  ));
});

Deno.test("ETA: unknown without a rate or a limit; 0 once the budget is spent or the run is past its end", () => {
  assert.equal(etaSeconds({ ...example, totalSteps: undefined }), undefined);
  assert.equal(etaSeconds({ ...example, step: 0, tokens: 0 }), undefined);
  assert.equal(etaSeconds({ ...example, tokensPerSecond: 0 }), undefined);
  assert.equal(
    etaSeconds({ ...example, tokensPerSecond: 0 }, { timeBudgetSeconds: 160 }),
    60,
  );
  assert.equal(
    etaSeconds({ ...example, totalSteps: undefined }, {
      timeBudgetSeconds: 160,
    }),
    60,
  );
  assert.equal(etaSeconds(example, { timeBudgetSeconds: 90 }), 0);
  assert.equal(etaSeconds({ ...example, step: 700 }), 0);
  assert.ok(
    !formatProgress({ ...example, tokensPerSecond: 0 }).includes("ETA"),
  );
});

function capture(isTty: boolean, every?: number) {
  const writes: string[] = [];
  const printer = new ProgressPrinter({
    write: (s) => writes.push(s),
    isTty,
    every,
  });
  return { writes, printer };
}

const stepN = (step: number, totalSteps = 10): StepMetrics => ({
  ...example,
  step,
  totalSteps,
  tokens: step * 1000,
});
const evalAt: EvalMetrics = {
  step: 6,
  valLoss: 5,
  valPpl: Math.exp(5),
  tokens: 6000,
};

Deno.test("ProgressPrinter without a terminal: whole lines for the first, every n-th and last step", () => {
  const { writes, printer } = capture(false, 3);
  for (let s = 1; s <= 10; s++) {
    printer.step(stepN(s));
    if (s === 6) printer.printEval(evalAt);
  }
  printer.finish();
  assert.ok(writes.every((w) => w.endsWith("\n") && !w.includes("\r")));
  const shown = writes.map((w) => w.split("  ")[0]);
  assert.deepEqual(shown, [
    "step 1/10",
    "step 3/10",
    "step 6/10",
    "eval step 6",
    "step 9/10",
    "step 10/10",
  ]);
  assert.equal(writes[0], `${formatProgress(stepN(1))}\n`);
  assert.throws(() => new ProgressPrinter({ every: 0, isTty: false }), /every/);
});

Deno.test("ProgressPrinter on a terminal: every step rewrites one line; eval and finish end it", () => {
  fc.assert(fc.property(
    fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 30 }),
    fc.integer({ min: 0, max: 30 }),
    (steps, evalAfter) => {
      const { writes, printer } = capture(true, 7);
      steps.forEach((s, i) => {
        printer.step(stepN(s, 50));
        if (i === evalAfter) printer.printEval(evalAt);
      });
      printer.finish();
      printer.finish(); // a second finish adds nothing
      const text = writes.join("");
      // Every step appears as a \r-rewrite; the screen ends on a fresh line.
      assert.equal(text.split("\r").length - 1, steps.length);
      for (const s of steps) {
        assert.ok(text.includes(`\r${formatProgress(stepN(s, 50))}\x1b[K`));
      }
      assert.ok(text.endsWith("\n") && !text.endsWith("\n\n"));
      if (evalAfter < steps.length) {
        // The progress line stays above the eval line.
        assert.ok(text.includes(`\x1b[K\n${formatEval(evalAt)}\n`));
      }
    },
  ));
});

const finite = (min: number, max: number) =>
  fc.double({ min, max, noNaN: true, noDefaultInfinity: true });
const stepArb: fc.Arbitrary<StepMetrics> = fc.record({
  step: fc.integer({ min: 0, max: 1e6 }),
  totalSteps: fc.option(fc.integer({ min: 0, max: 1e6 }), { nil: undefined }),
  loss: fc.oneof(finite(0, 20), fc.constant(NaN)),
  lr: finite(0, 1),
  lambda: finite(0, 1),
  tokensPerSecond: finite(0, 1e7),
  elapsedSeconds: finite(0, 1e6),
  tokens: fc.integer({ min: 0, max: 2 ** 40 }),
  gradNorm: fc.option(fc.oneof(finite(0, 1e3), fc.constant(NaN)), {
    nil: undefined,
  }),
}, {
  requiredKeys: [
    "step",
    "loss",
    "lr",
    "lambda",
    "tokensPerSecond",
    "elapsedSeconds",
    "tokens",
  ],
});
const evalArb: fc.Arbitrary<EvalMetrics> = fc.record({
  step: fc.integer({ min: 0, max: 1e6 }),
  valLoss: finite(0, 20),
  valPpl: finite(1, 1e8),
  tokens: fc.integer({ min: 0, max: 2 ** 40 }),
});

/** Drops keys holding undefined, as JSON does. */
const plain = <T extends object>(o: T): T =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

const run = <A, E>(e: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(e);

Deno.test("MetricsLog round trip: what is appended reads back equal (NaN included)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            stepArb.map((m) => ({ kind: "train" as const, m })),
            evalArb.map((m) => ({ kind: "eval" as const, m })),
          ),
          { maxLength: 20 },
        ),
        async (records) => {
          const log = await run(MetricsLog.open(`${dir}/run`));
          assert.equal(log.path, `${dir}/run/metrics.jsonl`);
          for (const r of records) {
            await run(
              r.kind === "train"
                ? log.train(r.m)
                : log.eval(r.m as EvalMetrics),
            );
          }
          const back = await run(readMetrics(log.path));
          assert.deepEqual(back.notes, []);
          assert.deepEqual(
            back.train,
            records.filter((r) => r.kind === "train").map((r) => plain(r.m)),
          );
          assert.deepEqual(
            back.eval,
            records.filter((r) => r.kind === "eval").map((r) => plain(r.m)),
          );
          const lines = (await Deno.readTextFile(log.path)).split("\n");
          assert.equal(lines.pop(), "");
          lines.forEach((l, i) =>
            assert.equal(JSON.parse(l).kind, records[i].kind)
          );
        },
      ),
      { numRuns: 40 },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readMetrics: a truncated last line is skipped with a note; other bad lines fail with their line number", async () => {
  const a = JSON.stringify({ kind: "train", ...stepN(1) });
  const b = JSON.stringify({ kind: "eval", ...evalAt });
  fc.assert(fc.property(fc.integer({ min: 1, max: b.length - 1 }), (cut) => {
    const h = Effect.runSync(
      parseMetrics(`${a}\n${b.slice(0, cut)}`, "m.jsonl"),
    );
    assert.equal(h.train.length, 1);
    assert.equal(h.eval.length, 0);
    assert.equal(h.notes.length, 1);
    assert.match(h.notes[0], /m\.jsonl:2: skipped a truncated last line/);
  }));
  // A complete record that only lacks its newline is kept.
  const whole = Effect.runSync(parseMetrics(`${a}\n${b}`, "m.jsonl"));
  assert.equal(whole.eval.length, 1);
  assert.deepEqual(whole.notes, []);
  // Empty file, blank lines.
  assert.deepEqual(Effect.runSync(parseMetrics("", "m")).train, []);
  assert.equal(Effect.runSync(parseMetrics(`\n${a}\n\n`, "m")).train.length, 1);

  const bad: Array<[string, RegExp]> = [
    [`${a}\n{"kind":"tr\n${b}\n`, /m\.jsonl:2: /],
    [`${a}\n${b.slice(0, 10)}\n`, /m\.jsonl:2: /],
    [`${a}\n{"kind":"other","step":1}\n`, /m\.jsonl:2: kind must be/],
    [`${a}\n[1,2]\n`, /m\.jsonl:2: not a JSON object/],
    [
      `{"kind":"eval","step":1,"valLoss":"x","valPpl":1,"tokens":1}\n`,
      /m\.jsonl:1: field valLoss/,
    ],
    [
      `{"kind":"train","step":1}\n`,
      /m\.jsonl:1: field loss: missing required field$/,
    ],
  ];
  for (const [text, re] of bad) {
    const exit = Effect.runSyncExit(parseMetrics(text, "m.jsonl"));
    assert.ok(Exit.isFailure(exit), text);
    const err = Effect.runSync(Effect.flip(parseMetrics(text, "m.jsonl")));
    assert.equal(err._tag, "DataError");
    assert.equal(err.file, "m.jsonl");
    assert.match(err.message, re);
  }

  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/metrics.jsonl`;
    await Deno.writeTextFile(path, `${a}\n${b}\n${a.slice(0, 17)}`);
    const h = await run(readMetrics(path));
    assert.equal(h.train.length, 1);
    assert.equal(h.eval.length, 1);
    assert.equal(h.notes.length, 1);
    const missing = await run(Effect.flip(readMetrics(`${dir}/nope.jsonl`)));
    assert.match(missing.message, /cannot read .*nope\.jsonl/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("MetricsLog.open: a resume keeps records up to its step, drops the rest and the partial line; a new run starts empty", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const log = await run(MetricsLog.open(dir));
    for (let s = 1; s <= 12; s++) {
      await run(log.train(stepN(s, 12)));
      if (s % 4 === 0) await run(log.eval({ ...evalAt, step: s }));
    }
    await Deno.writeTextFile(log.path, '{"kind":"train","st', { append: true });

    const resumed = await run(MetricsLog.open(dir, { resumeStep: 8 }));
    assert.equal(resumed.notes.length, 2);
    assert.match(resumed.notes[0], /truncated last line/);
    assert.match(resumed.notes[1], /dropped 5 record\(s\) after step 8/);
    let h = await run(readMetrics(resumed.path));
    assert.deepEqual(h.notes, []);
    assert.deepEqual(h.train.map((m) => m.step), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(h.eval.map((m) => m.step), [4, 8]);
    // In file order an eval follows the train step it ran after.
    const kinds = (await Deno.readTextFile(resumed.path)).trim().split("\n")
      .map((l) => `${JSON.parse(l).kind}${JSON.parse(l).step}`);
    assert.deepEqual(kinds.slice(3, 6), ["train4", "eval4", "train5"]);

    await run(resumed.train(stepN(9, 12)));
    h = await run(readMetrics(resumed.path));
    assert.deepEqual(h.train.map((m) => m.step), [1, 2, 3, 4, 5, 6, 7, 8, 9]);

    // Resuming where no log exists yet starts one.
    const fresh = await run(MetricsLog.open(`${dir}/other`, { resumeStep: 3 }));
    assert.deepEqual((await run(readMetrics(fresh.path))).train, []);

    // Without resumeStep an old log is replaced.
    const again = await run(MetricsLog.open(dir));
    assert.deepEqual(again.notes, []);
    assert.equal(await Deno.readTextFile(again.path), "");

    const badStep = await run(
      Effect.flip(MetricsLog.open(dir, { resumeStep: -1 })),
    );
    assert.match(badStep.message, /resumeStep/);
    // A corrupt line before the end is not silently dropped on resume.
    await Deno.writeTextFile(
      again.path,
      `garbage\n${JSON.stringify({ kind: "train", ...stepN(1) })}\n`,
    );
    const corrupt = await run(
      Effect.flip(MetricsLog.open(dir, { resumeStep: 5 })),
    );
    assert.match(corrupt.message, /metrics\.jsonl:1:/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
