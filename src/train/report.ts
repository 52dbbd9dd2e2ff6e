/**
 * The trainer's reporting: a progress line for terminals and log files, and a
 * `metrics.jsonl` log that survives crashes and resumes, read back to redraw
 * the curves (see `lossCurveSvg`).
 *
 * @module
 */
import { Cause, Effect, Exit, Option, Schema } from "effect";
import { DataError } from "../common/text_sources.ts";
import { issueMessage } from "./decode.ts";
import { describeCause as describe } from "../common/describe.ts";

/** What the trainer knows after one optimizer step. */
export interface StepMetrics {
  /** Optimizer steps completed so far (counting those before a resume). */
  readonly step: number;
  /** Steps of the whole run, when it is step-limited. */
  readonly totalSteps?: number;
  /** Training loss of this step (mean cross-entropy in nats per token). */
  readonly loss: number;
  /** Learning rate of this step. */
  readonly lr: number;
  /** Quantization blend λ of this step (0 = full precision, 1 = ternary). */
  readonly lambda: number;
  /** Current training throughput in tokens per second. */
  readonly tokensPerSecond: number;
  /** Seconds of training so far, the clock a time budget is checked against. */
  readonly elapsedSeconds: number;
  /** Training tokens consumed so far. */
  readonly tokens: number;
  /** Global gradient L2 norm before clipping, when measured. */
  readonly gradNorm?: number;
}

/** One validation pass. */
export interface EvalMetrics {
  /** The step after which validation ran. */
  readonly step: number;
  /** Mean validation cross-entropy in nats per token, without label smoothing. */
  readonly valLoss: number;
  /** Validation perplexity, `exp(valLoss)`. */
  readonly valPpl: number;
  /** Training tokens consumed when validation ran. */
  readonly tokens: number;
}

/** Options of {@link formatProgress} and {@link etaSeconds}. */
export interface ProgressOptions {
  /** Wall-clock budget of the run in seconds, compared with `elapsedSeconds`. */
  readonly timeBudgetSeconds?: number;
}

/**
 * A duration as `45s`, `6m40s` or `1h02m`: rounded to whole seconds, hours
 * shown with minutes (truncated) and no seconds.
 */
export function formatDuration(seconds: number): string {
  if (!(seconds >= 0) || !Number.isFinite(seconds)) {
    throw new RangeError(
      `formatDuration: seconds must be finite and >= 0, got ${seconds}`,
    );
  }
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) {
    return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  }
  const minutes = Math.floor((s % 3600) / 60);
  return `${Math.floor(s / 3600)}h${String(minutes).padStart(2, "0")}m`;
}

/**
 * Seconds until the run ends, or `undefined` when that cannot be known yet.
 *
 * By steps: `(totalSteps − step) · (tokens / step) / tokensPerSecond`, the
 * remaining steps at the current throughput. By time budget:
 * `max(0, timeBudgetSeconds − elapsedSeconds)`. With both, the sooner one.
 */
export function etaSeconds(
  m: StepMetrics,
  opts: ProgressOptions = {},
): number | undefined {
  const candidates: number[] = [];
  if (
    m.totalSteps !== undefined && m.step > 0 && m.tokens > 0 &&
    m.tokensPerSecond > 0
  ) {
    const bySteps = Math.max(0, m.totalSteps - m.step) * (m.tokens / m.step) /
      m.tokensPerSecond;
    if (Number.isFinite(bySteps)) candidates.push(bySteps);
  }
  if (opts.timeBudgetSeconds !== undefined) {
    candidates.push(Math.max(0, opts.timeBudgetSeconds - m.elapsedSeconds));
  }
  return candidates.length === 0 ? undefined : Math.min(...candidates);
}

/** `1234567` → `1,234,567` (no locale lookup, so output is the same everywhere). */
function groupThousands(n: number): string {
  const s = String(Math.round(Math.abs(n)));
  const grouped = s.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return n < 0 ? `-${grouped}` : grouped;
}

/** Fixed decimals for finite values; a diverged run prints `NaN`/`inf` rather than throwing. */
function fixed(x: number, digits: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  return x.toFixed(digits);
}

/** Fixed decimals in the usual range, exponent form for very large or small values. */
function compact(x: number, digits: number): string {
  if (!Number.isFinite(x) || x === 0) return fixed(x, digits);
  const a = Math.abs(x);
  return a >= 1e5 || a < 10 ** -digits ? x.toExponential(2) : x.toFixed(digits);
}

/**
 * One progress line, e.g.
 * `step 120/600  loss 5.812  ppl 334.5  lr 1.20e-3  λ 0.45  1,234 tok/s  |g| 0.84  elapsed 1m40s  ETA 6m40s`.
 *
 * `ppl = exp(loss)` is the perplexity of the training batch, with label
 * smoothing included when the loss uses it; validation perplexity comes from
 * {@link EvalMetrics}. `|g|` appears when `gradNorm` is set, `ETA` when
 * {@link etaSeconds} can tell.
 */
export function formatProgress(
  m: StepMetrics,
  opts: ProgressOptions = {},
): string {
  const parts = [
    m.totalSteps === undefined
      ? `step ${m.step}`
      : `step ${m.step}/${m.totalSteps}`,
    `loss ${fixed(m.loss, 3)}`,
    `ppl ${compact(Math.exp(m.loss), 1)}`,
    `lr ${Number.isFinite(m.lr) ? m.lr.toExponential(2) : fixed(m.lr, 0)}`,
    `λ ${fixed(m.lambda, 2)}`,
    `${
      Number.isFinite(m.tokensPerSecond)
        ? groupThousands(m.tokensPerSecond)
        : fixed(m.tokensPerSecond, 0)
    } tok/s`,
  ];
  if (m.gradNorm !== undefined) parts.push(`|g| ${compact(m.gradNorm, 2)}`);
  if (m.elapsedSeconds >= 0 && Number.isFinite(m.elapsedSeconds)) {
    parts.push(`elapsed ${formatDuration(m.elapsedSeconds)}`);
  }
  const eta = etaSeconds(m, opts);
  if (eta !== undefined) parts.push(`ETA ${formatDuration(eta)}`);
  return parts.join("  ");
}

/** One validation line, e.g. `eval step 120  val loss 5.701  val ppl 299.2  tokens 1,228,800`. */
export function formatEval(e: EvalMetrics): string {
  return [
    `eval step ${e.step}`,
    `val loss ${fixed(e.valLoss, 3)}`,
    `val ppl ${compact(e.valPpl, 1)}`,
    `tokens ${groupThousands(e.tokens)}`,
  ].join("  ");
}

/** Options of {@link ProgressPrinter}. */
export interface ProgressPrinterOptions {
  /** Where text goes (default: standard error). */
  readonly write?: (s: string) => void;
  /** Overwrite one line with `\r` (default: whether standard error is a terminal). */
  readonly isTty?: boolean;
  /** Without a terminal, print every this many steps (default 10). */
  readonly every?: number;
  /** Passed to {@link formatProgress} for the ETA. */
  readonly timeBudgetSeconds?: number;
}

function writeStderr(s: string): void {
  const bytes = new TextEncoder().encode(s);
  let off = 0;
  while (off < bytes.length) off += Deno.stderr.writeSync(bytes.subarray(off));
}

/**
 * Prints {@link formatProgress} lines. On a terminal each step rewrites the
 * same line (`\r`, then erase to end of line); elsewhere — a log file — it
 * prints whole lines for the first step shown, every `every` steps and the
 * last step, so the log stays readable.
 */
export class ProgressPrinter {
  readonly #write: (s: string) => void;
  readonly #isTty: boolean;
  readonly #every: number;
  readonly #opts: ProgressOptions;
  /** A `\r` line is on screen without its newline. */
  #open = false;
  #printedAny = false;

  /** A printer; see {@link ProgressPrinterOptions} for the defaults. */
  constructor(options: ProgressPrinterOptions = {}) {
    const every = options.every ?? 10;
    if (!Number.isInteger(every) || every < 1) {
      throw new RangeError(
        `ProgressPrinter: every must be an integer >= 1, got ${every}`,
      );
    }
    this.#write = options.write ?? writeStderr;
    this.#isTty = options.isTty ?? Deno.stderr.isTerminal();
    this.#every = every;
    this.#opts = { timeBudgetSeconds: options.timeBudgetSeconds };
  }

  /** Reports one step (see the class description for when it prints). */
  step(m: StepMetrics): void {
    const line = formatProgress(m, this.#opts);
    if (this.#isTty) {
      this.#write(`\r${line}\x1b[K`);
      this.#open = true;
      return;
    }
    if (
      !this.#printedAny || m.step % this.#every === 0 ||
      m.step === m.totalSteps
    ) {
      this.#write(`${line}\n`);
      this.#printedAny = true;
    }
  }

  /** Prints a validation line in full, keeping the last progress line visible above it. */
  printEval(e: EvalMetrics): void {
    this.finish();
    this.#write(`${formatEval(e)}\n`);
  }

  /** Ends an open terminal line with a newline, so what follows starts on its own line. */
  finish(): void {
    if (this.#open) this.#write("\n");
    this.#open = false;
  }
}

/** One line of `metrics.jsonl`. */
export type MetricsRecord =
  | ({ readonly kind: "train" } & StepMetrics)
  | ({ readonly kind: "eval" } & EvalMetrics);

/** The records of a `metrics.jsonl`, by kind, in file order. */
export interface MetricsHistory {
  /** Training steps. */
  readonly train: readonly StepMetrics[];
  /** Validation passes. */
  readonly eval: readonly EvalMetrics[];
  /** What was tolerated while reading, e.g. a truncated last line. */
  readonly notes: readonly string[];
}

const Count = Schema.Number.check(
  Schema.isInt(),
  Schema.isGreaterThanOrEqualTo(0),
);
/** A measured value; JSON stores NaN and ±Infinity as null, read back as NaN. */
const Measured = Schema.NullOr(Schema.Finite);

const TrainRecord = Schema.Struct({
  kind: Schema.Literal("train"),
  step: Count,
  totalSteps: Schema.optionalKey(Count),
  loss: Measured,
  lr: Measured,
  lambda: Measured,
  tokensPerSecond: Measured,
  elapsedSeconds: Measured,
  tokens: Count,
  gradNorm: Schema.optionalKey(Measured),
});

const EvalRecord = Schema.Struct({
  kind: Schema.Literal("eval"),
  step: Count,
  valLoss: Measured,
  valPpl: Measured,
  tokens: Count,
});

const AnyRecord = Schema.Union([TrainRecord, EvalRecord]);

const nan = (v: number | null): number => v ?? NaN;

/** A record from one parsed line, or a message saying what is wrong with it. */
function toRecord(v: unknown): MetricsRecord | string {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    return "not a JSON object";
  }
  const kind = (v as { kind?: unknown }).kind;
  if (kind !== "train" && kind !== "eval") {
    const shown = JSON.stringify(kind) ?? "nothing";
    return `kind must be "train" or "eval", got ${
      shown.length > 40 ? `${shown.slice(0, 39)}…` : shown
    }`;
  }
  const decoded = Schema.decodeUnknownExit(AnyRecord, OPTIONS)(v);
  if (Exit.isFailure(decoded)) {
    const error = Cause.findErrorOption(decoded.cause);
    return Option.isSome(error)
      ? issueMessage("", "", error.value.issue).replace(/^: (at )?/, "field ")
      : "cannot decode";
  }
  const r = decoded.value;
  if (r.kind === "eval") {
    return {
      kind: "eval",
      step: r.step,
      valLoss: nan(r.valLoss),
      valPpl: nan(r.valPpl),
      tokens: r.tokens,
    };
  }
  return {
    kind: "train",
    step: r.step,
    ...(r.totalSteps === undefined ? {} : { totalSteps: r.totalSteps }),
    loss: nan(r.loss),
    lr: nan(r.lr),
    lambda: nan(r.lambda),
    tokensPerSecond: nan(r.tokensPerSecond),
    elapsedSeconds: nan(r.elapsedSeconds),
    tokens: r.tokens,
    ...(r.gradNorm === undefined ? {} : { gradNorm: nan(r.gradNorm) }),
  };
}

// The first problem of a line is enough to find it.
const OPTIONS = {
  errors: "first",
  onExcessProperty: "error",
  reportInput: true,
} as const;

/**
 * Parses the text of a `metrics.jsonl`. A last line without its newline that
 * does not parse is what a crash mid-write leaves: it is skipped with a note.
 * Any other malformed line fails with a {@link DataError} naming `file` and
 * the line number.
 */
export function parseMetrics(
  text: string,
  file: string,
): Effect.Effect<MetricsHistory, DataError> {
  return Effect.suspend(() => {
    const train: StepMetrics[] = [];
    const evals: EvalMetrics[] = [];
    const notes: string[] = [];
    const lines = text.split("\n");
    // After the final newline split() leaves "" (complete file) or a partial record.
    const tail = lines.pop() ?? "";
    const bodies: Array<[string, number, boolean]> = lines.map((l, i) => [
      l,
      i + 1,
      false,
    ]);
    if (tail !== "") bodies.push([tail, lines.length + 1, true]);
    for (const [line, lineNo, unterminated] of bodies) {
      if (line.trim() === "") continue;
      let rec: MetricsRecord | string;
      try {
        rec = toRecord(JSON.parse(line));
      } catch (e) {
        rec = e instanceof Error ? e.message : String(e);
      }
      if (typeof rec === "string") {
        if (unterminated) {
          notes.push(
            `${file}:${lineNo}: skipped a truncated last line (the run stopped while writing it)`,
          );
          continue;
        }
        return Effect.fail(
          new DataError({ file, message: `${file}:${lineNo}: ${rec}` }),
        );
      }
      if (rec.kind === "train") {
        const { kind: _, ...m } = rec;
        train.push(m);
      } else {
        const { kind: _, ...m } = rec;
        evals.push(m);
      }
    }
    return Effect.succeed({ train, eval: evals, notes });
  });
}

/** Reads and parses a `metrics.jsonl` (see {@link parseMetrics}). Needs read permission. */
export function readMetrics(
  path: string,
): Effect.Effect<MetricsHistory, DataError> {
  return Effect.tryPromise({
    try: () => Deno.readTextFile(path),
    catch: (cause) =>
      new DataError({
        file: path,
        message: `cannot read ${path}: ${describe(cause)}`,
      }),
  }).pipe(Effect.flatMap((text) => parseMetrics(text, path)));
}

/** Options of {@link MetricsLog.open}. */
export interface MetricsLogOptions {
  /**
   * Resuming from a checkpoint taken after this step: keep the records with
   * `step <= resumeStep` and drop the later ones (written after that
   * checkpoint, so the resumed run writes them again). Without it the log
   * starts empty, replacing an old one.
   */
  readonly resumeStep?: number;
}

/** Appends training and validation records to `<dir>/metrics.jsonl`, one JSON object per line. */
export class MetricsLog {
  /** The path of the log file. */
  readonly path: string;
  /** What opening tolerated or dropped (see {@link MetricsLogOptions.resumeStep}). */
  readonly notes: readonly string[];

  private constructor(path: string, notes: readonly string[]) {
    this.path = path;
    this.notes = notes;
  }

  /**
   * Creates `dir` if needed and opens `<dir>/metrics.jsonl` for appending. On a
   * resume the kept records are rewritten atomically (temporary file, rename),
   * so a truncated line from a crash is gone before new lines are appended.
   */
  static open(
    dir: string,
    options: MetricsLogOptions = {},
  ): Effect.Effect<MetricsLog, DataError> {
    const path = `${dir}/metrics.jsonl`;
    const { resumeStep } = options;
    const fail = (cause: unknown) =>
      new DataError({
        file: path,
        message: `cannot open ${path}: ${describe(cause)}`,
      });
    return Effect.gen(function* () {
      if (
        resumeStep !== undefined &&
        (!Number.isInteger(resumeStep) || resumeStep < 0)
      ) {
        return yield* Effect.fail(
          new DataError({
            file: path,
            message:
              `MetricsLog.open: resumeStep must be an integer >= 0, got ${resumeStep}`,
          }),
        );
      }
      yield* Effect.tryPromise({
        try: () => Deno.mkdir(dir, { recursive: true }),
        catch: fail,
      });
      if (resumeStep === undefined) {
        yield* Effect.tryPromise({
          try: () => Deno.writeTextFile(path, ""),
          catch: fail,
        });
        return new MetricsLog(path, []);
      }
      const existing = yield* Effect.tryPromise({
        try: () => Deno.readTextFile(path),
        catch: (cause) => cause,
      }).pipe(
        Effect.catch((cause) =>
          cause instanceof Deno.errors.NotFound
            ? Effect.succeed("")
            : Effect.fail(fail(cause))
        ),
      );
      const history = yield* parseMetrics(existing, path);
      const kept: MetricsRecord[] = [
        ...history.train.map((m) => ({ kind: "train" as const, ...m })),
        ...history.eval.map((m) => ({ kind: "eval" as const, ...m })),
      ];
      const dropped = kept.filter((r) => r.step > resumeStep).length;
      const text = kept.filter((r) => r.step <= resumeStep)
        // An eval at step s ran after train step s.
        .sort((a, b) =>
          a.step - b.step ||
          (a.kind === b.kind ? 0 : a.kind === "train" ? -1 : 1)
        )
        .map((r) => `${JSON.stringify(r)}\n`).join("");
      const tmp = `${path}.${crypto.randomUUID()}.tmp`;
      yield* Effect.tryPromise({
        try: async () => {
          try {
            await Deno.writeTextFile(tmp, text);
            await Deno.rename(tmp, path);
          } catch (e) {
            await Deno.remove(tmp).catch(() => {});
            throw e;
          }
        },
        catch: fail,
      });
      const notes = [...history.notes];
      if (dropped > 0) {
        notes.push(
          `${path}: dropped ${dropped} record(s) after step ${resumeStep}, written after the checkpoint`,
        );
      }
      return new MetricsLog(path, notes);
    });
  }

  /** Appends `{"kind":"train", ...m}`; NaN and ±Infinity are stored as null. */
  train(m: StepMetrics): Effect.Effect<void, DataError> {
    return this.#append({ kind: "train", ...m });
  }

  /** Appends `{"kind":"eval", ...e}`. */
  eval(e: EvalMetrics): Effect.Effect<void, DataError> {
    return this.#append({ kind: "eval", ...e });
  }

  #append(record: MetricsRecord): Effect.Effect<void, DataError> {
    const path = this.path;
    // One write per record, newline included, so a crash leaves at most one partial line.
    return Effect.tryPromise({
      try: () =>
        Deno.writeTextFile(path, `${JSON.stringify(record)}\n`, {
          append: true,
        }),
      catch: (cause) =>
        new DataError({
          file: path,
          message: `cannot append to ${path}: ${describe(cause)}`,
        }),
    });
  }
}
