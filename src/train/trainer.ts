/**
 * The training loop as an Effect program: batches from mmap'd token files,
 * forward and backward per micro-batch on the tape, AdamW with global-norm
 * clipping, the LR / weight-decay schedule and the full-precision → soft →
 * hard quantization phases, periodic evaluation with true perplexity,
 * checkpoints that resume exactly, and progress, `metrics.jsonl` and
 * `loss.svg` in the run directory.
 *
 * @module
 */
import { type Cause, Data, Effect, type Scope } from "effect";
import type { Backend, Tensor } from "../backend/backend.ts";
import { ComputeBackend } from "../backend/service.ts";
import { Tape } from "../backend/tape.ts";
import { OneBitLlm } from "../core/model.ts";
import { lambdaAt } from "../core/schedule.ts";
import { type OneBitLlmConfig, resolveBitMap } from "../common/config.ts";
import {
  BatchSampler,
  type SamplerState,
  type TokenArray,
} from "../common/batches.ts";
import { lrAt } from "./lr_schedule.ts";
import type { AdamMoments } from "./checkpoint.ts";
import { AdamW } from "./optimizer.ts";
import type { TrainSettings } from "./settings.ts";
import { describeCause as describe } from "../common/describe.ts";

// Where these lived before `settings.ts`; other modules import them from here.
export { defaultSettings, type TrainSettings } from "./settings.ts";

/** The fields of a {@link TrainError}. */
export interface TrainErrorFields {
  /** What went wrong, for a person. */
  readonly message: string;
}

/** The typed base of {@link TrainError} (explicit for JSR). */
export const TrainErrorBase: new (
  fields: TrainErrorFields,
) =>
  & Cause.YieldableError
  & { readonly _tag: "TrainError" }
  & TrainErrorFields = Data.TaggedError("TrainError");

/** A run that cannot go on: a non-finite loss, or an unusable setting. */
export class TrainError extends TrainErrorBase {}

/** Where a run stands; with the model and optimizer tensors, enough to resume exactly. */
export interface TrainState {
  /** Optimizer steps done. */
  readonly step: number;
  /** Training tokens consumed. */
  readonly tokens: number;
  /** The batch sampler's position. */
  readonly sampler: SamplerState;
  /** Seconds spent training before this state (across resumes). */
  readonly elapsedSeconds: number;
}

/** What one step reports. */
export interface StepReport {
  /** Step number, 1-based. */
  readonly step: number;
  /** Mean training loss of the step's micro-batches (with smoothing, if any). */
  readonly loss: number;
  /** Learning rate used. */
  readonly lr: number;
  /** Quantization λ used. */
  readonly lambda: number;
  /** Global gradient norm before clipping. */
  readonly gradNorm: number;
  /** Tokens this step consumed. */
  readonly tokens: number;
}

/** Mean validation NLL and perplexity over windows of `tokens`. */
export interface EvalResult {
  /** Mean cross-entropy in nats per token (no smoothing). */
  readonly loss: number;
  /** exp(loss). */
  readonly ppl: number;
  /** Tokens scored. */
  readonly tokens: number;
}

/** A failure of `what` as a {@link TrainError} (a TrainError passes through). */
const trainFailure = (what: string) => (cause: unknown): TrainError =>
  cause instanceof TrainError
    ? cause
    : new TrainError({ message: `${what}: ${describe(cause)}` });

/** Reads a tensor back from the backend; a failed read is a {@link TrainError}. */
const readBack = (
  backend: Backend,
  t: Tensor,
  what: string,
): Effect.Effect<Float32Array, TrainError> =>
  Effect.tryPromise({ try: () => backend.read(t), catch: trainFailure(what) });

const divergence = (
  step: number,
  what: string,
  detail?: string,
): TrainError =>
  new TrainError({
    message: `${what} at step ${step}${
      detail === undefined ? "" : ` (${detail})`
    }; stopping (lower --lr, or raise the warmup). The last checkpoint is kept.`,
  });

/** A model, its optimizer and its batch stream, advanced one step at a time. */
export class Trainer {
  /** The model being trained. */
  readonly model: OneBitLlm;
  /** Its optimizer. */
  readonly optimizer: AdamW;
  readonly #sampler: BatchSampler;
  readonly #backend: Backend;
  #settings: TrainSettings;
  #step: number;
  #tokens: number;

  /**
   * A trainer over `train` tokens for `model` and `optimizer` as they are
   * (fresh, or loaded from a checkpoint). `resume` continues the batch order,
   * step and token counts of a saved {@link TrainState}; throws when that
   * sampler state does not fit `train` and the settings.
   */
  constructor(
    model: OneBitLlm,
    optimizer: AdamW,
    train: TokenArray,
    settings: TrainSettings,
    resume?: TrainState,
  ) {
    this.model = model;
    this.optimizer = optimizer;
    this.#settings = settings;
    this.#backend = model.backend;
    const shape = { batchSize: settings.batch, seqLen: settings.seqLen };
    this.#sampler = resume
      ? BatchSampler.fromState(train, shape, resume.sampler)
      : new BatchSampler(train, { ...shape, seed: settings.seed });
    this.#step = resume?.step ?? 0;
    this.#tokens = resume?.tokens ?? 0;
  }

  /** The run's settings. */
  get settings(): TrainSettings {
    return this.#settings;
  }

  /**
   * Continues with `next`, a re-planned schedule of the same run (a time
   * budget's new step count): the batch shape must stay.
   */
  replan(next: TrainSettings): void {
    const s = this.#settings;
    if (next.batch !== s.batch || next.seqLen !== s.seqLen) {
      throw new RangeError(
        `replan: batch ${next.batch}×${next.seqLen} differs from ${s.batch}×${s.seqLen}`,
      );
    }
    this.#settings = next;
  }

  /** Optimizer steps done. */
  get step(): number {
    return this.#step;
  }

  /** Training tokens consumed. */
  get tokens(): number {
    return this.#tokens;
  }

  /** The state to save with a checkpoint. */
  state(elapsedSeconds: number): TrainState {
    return {
      step: this.#step,
      tokens: this.#tokens,
      sampler: this.#sampler.getState(),
      elapsedSeconds,
    };
  }

  /**
   * One optimizer step: `accumulation` micro-batches, each forward and
   * backward on its own tape (so memory holds one micro-batch's activations),
   * gradients summed with weight 1/accumulation; then AdamW. Fails with a
   * {@link TrainError} when the loss is not finite, before the update touches
   * the weights (and for any other failure of the step).
   */
  runStep(): Effect.Effect<StepReport, TrainError> {
    // Suspended: the step index and schedule are read when the step runs.
    return Effect.suspend(() => this.#nextStep());
  }

  #nextStep(): Effect.Effect<StepReport, TrainError> {
    const s = this.#settings;
    const b = this.#backend;
    const model = this.model;
    const stepIndex = this.#step; // 0-based index of the step being taken
    const step = stepIndex + 1;
    const what = `step ${step}`;
    const lambda = lambdaAt(s.lambda, stepIndex);
    const hyper = lrAt(s.lr, stepIndex);
    const n = s.batch * s.seqLen;
    const microBatches = (ids: Tensor, targets: Tensor, lossSum: Tensor) =>
      Effect.try({
        try: () => {
          model.zeroGrads();
          for (let micro = 0; micro < s.accumulation; micro++) {
            const batch = this.#sampler.nextBatch();
            b.write(ids, batch.inputs);
            b.write(targets, batch.targets);
            const tape = new Tape(b);
            try {
              const loss = model.loss(tape, ids, targets, {
                batch: s.batch,
                seqLen: s.seqLen,
                lambda,
                labelSmoothing: s.labelSmoothing,
              });
              tape.backward(loss, 1 / s.accumulation);
              b.addScaled(lossSum, loss.value, 1 / s.accumulation);
            } finally {
              tape.reset();
            }
          }
        },
        catch: (e) =>
          // The quantizers refuse NaN/Inf input: the same divergence as a NaN loss.
          e instanceof RangeError && /non-finite/.test(e.message)
            ? divergence(step, "non-finite values", e.message)
            : trainFailure(what)(e),
      });
    // Mean loss over the micro-batches, summed on the device: one read-back a step.
    const meanLoss = Effect.acquireUseRelease(
      Effect.try({
        try: () => ({
          ids: b.zeros(n, "i32"),
          targets: b.zeros(n, "i32"),
          lossSum: b.zeros(2),
        }),
        catch: trainFailure(what),
      }),
      ({ ids, targets, lossSum }) =>
        microBatches(ids, targets, lossSum).pipe(
          Effect.andThen(readBack(b, lossSum, what)),
          Effect.map((sum) => sum[0]),
        ),
      ({ ids, targets, lossSum }) =>
        Effect.sync(() => {
          b.release(ids);
          b.release(targets);
          b.release(lossSum);
        }),
    );
    return Effect.gen({ self: this }, function* () {
      const loss = yield* meanLoss;
      if (!Number.isFinite(loss)) {
        return yield* divergence(step, `loss is ${loss}`);
      }
      yield* Effect.try({
        try: () =>
          this.optimizer.step(
            {
              lr: hyper.lr,
              weightDecay: hyper.weightDecay ?? s.weightDecay,
              step,
            },
            Math.min(
              model.config.latent_clip_max_training,
              model.config.latent_clamp_max,
            ),
          ),
        catch: trainFailure(what),
      });
      const gradNorm = yield* Effect.tryPromise({
        try: () => this.optimizer.gradNorm(),
        catch: trainFailure(what),
      });
      this.#step++;
      this.#tokens += n * s.accumulation;
      return {
        step,
        loss,
        lr: hyper.lr,
        lambda,
        gradNorm,
        tokens: n * s.accumulation,
      };
    });
  }

  /**
   * Mean validation NLL (no label smoothing) over `maxWindows` windows of
   * `tokens` spread evenly over the split (all windows when absent), at the
   * λ of the last step taken.
   */
  evaluate(
    tokens: TokenArray,
    maxWindows?: number,
  ): Effect.Effect<EvalResult, TrainError> {
    return Effect.suspend(() =>
      evaluateModel(this.model, tokens, {
        batch: this.#settings.batch,
        seqLen: this.#settings.seqLen,
        lambda: lambdaAt(this.#settings.lambda, Math.max(0, this.#step - 1)),
        maxWindows,
      })
    );
  }
}

/** Options of {@link evaluateModel}. */
export interface EvaluateOptions {
  /** Sequences per forward pass. */
  readonly batch: number;
  /** Tokens per window. */
  readonly seqLen: number;
  /** Quantization λ of the forward pass (1 for a trained ternary model). */
  readonly lambda: number;
  /** Score at most this many windows, spread evenly (default: all). */
  readonly maxWindows?: number;
}

/**
 * True perplexity of `model` on `tokens`: `exp(mean NLL)` over non-overlapping
 * windows, every target counted once, without label smoothing. Fails with a
 * {@link TrainError} when the tokens hold less than one window, or the
 * forward pass or a read-back fails.
 */
export function evaluateModel(
  model: OneBitLlm,
  tokens: TokenArray,
  o: EvaluateOptions,
): Effect.Effect<EvalResult, TrainError> {
  return Effect.gen(function* () {
    const b = model.backend;
    const windows = Math.floor((tokens.length - 1) / o.seqLen);
    const take = Math.min(windows, o.maxWindows ?? windows);
    if (take < 1) {
      return yield* new TrainError({
        message:
          `validation split has ${tokens.length} tokens, fewer than one window of ${
            o.seqLen + 1
          }`,
      });
    }
    const fail = trainFailure("evaluation");
    // Evenly spaced windows, so a partial evaluation sees the whole split.
    const picked = new Int32Array(take);
    for (let i = 0; i < take; i++) picked[i] = Math.floor(i * windows / take);
    let nll = 0;
    let count = 0;
    let lastTurn = performance.now();
    for (let first = 0; first < take; first += o.batch) {
      const rows = Math.min(o.batch, take - first);
      const ids = new Int32Array(rows * o.seqLen);
      const targets = new Int32Array(rows * o.seqLen);
      for (let r = 0; r < rows; r++) {
        const start = picked[first + r] * o.seqLen;
        for (let t = 0; t < o.seqLen; t++) {
          ids[r * o.seqLen + t] = tokens[start + t];
          targets[r * o.seqLen + t] = tokens[start + t + 1];
        }
      }
      const batchNll = yield* Effect.acquireUseRelease(
        Effect.try({
          try: () => ({
            ids: b.upload(ids),
            targets: b.upload(targets),
            tape: new Tape(b),
          }),
          catch: fail,
        }),
        (r) =>
          Effect.try({
            try: () =>
              model.loss(r.tape, r.ids, r.targets, {
                batch: rows,
                seqLen: o.seqLen,
                lambda: o.lambda,
              }),
            catch: fail,
          }).pipe(
            Effect.flatMap((loss) => readBack(b, loss.value, "evaluation")),
            Effect.map((l) => l[1]),
          ),
        (r) =>
          Effect.sync(() => {
            r.tape.reset();
            b.release(r.ids);
            b.release(r.targets);
          }),
      );
      nll += batchNll * rows * o.seqLen;
      count += rows * o.seqLen;
      // A macrotask turn now and then, so a signal (Ctrl-C) can interrupt a
      // long evaluation between batches.
      if (performance.now() - lastTurn > 100) {
        yield* Effect.sleep(0);
        lastTurn = performance.now();
      }
    }
    const loss = nll / count;
    return { loss, ppl: Math.exp(loss), tokens: count };
  });
}

/** A fresh model and optimizer for `config` on `backend` (release both when done). */
export function initTraining(
  config: OneBitLlmConfig,
  backend: Backend,
  settings: TrainSettings,
): { model: OneBitLlm; optimizer: AdamW } {
  const model = OneBitLlm.init(
    config,
    resolveBitMap(config),
    backend,
    settings.seed,
  );
  const optimizer = new AdamW(model, {
    beta2: settings.beta2,
    maxGradNorm: settings.maxGradNorm,
  });
  return { model, optimizer };
}

/** Saved weights and moments to start a model and optimizer from. */
export interface TrainingValues {
  /** Latent weights by tensor name (every tensor of the config). */
  readonly params: ReadonlyMap<string, Float32Array>;
  /** AdamW moments by tensor name. */
  readonly moments: ReadonlyMap<string, AdamMoments>;
}

/**
 * A model and optimizer on the `ComputeBackend` — fresh, or holding `values`
 * (a checkpoint's) — released when the scope closes.
 */
export function acquireTraining(
  config: OneBitLlmConfig,
  settings: TrainSettings,
  values?: TrainingValues,
): Effect.Effect<
  { model: OneBitLlm; optimizer: AdamW },
  TrainError,
  ComputeBackend | Scope.Scope
> {
  return Effect.gen(function* () {
    const backend = yield* ComputeBackend;
    return yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          if (values === undefined) {
            return initTraining(config, backend, settings);
          }
          const model = OneBitLlm.fromValues(
            config,
            resolveBitMap(config),
            backend,
            values.params,
          );
          const optimizer = new AdamW(model, {
            beta2: settings.beta2,
            maxGradNorm: settings.maxGradNorm,
          });
          for (const [name, { m, v }] of optimizer.moments) {
            const saved = values.moments.get(name)!;
            backend.write(m, saved.m);
            backend.write(v, saved.v);
          }
          return { model, optimizer };
        },
        catch: trainFailure(
          `cannot set up the model on ${backend.description}`,
        ),
      }),
      ({ model, optimizer }) =>
        Effect.sync(() => {
          optimizer.release();
          model.release();
        }),
    );
  });
}

/**
 * Seconds one optimizer step of `settings` takes on the `ComputeBackend`: the
 * median of `repeats` forward+backward passes (after an untimed warm-up pass)
 * of a throwaway model on fixed tokens (no update). A time budget's first
 * plan starts from it.
 */
export function measureStepSeconds(
  config: OneBitLlmConfig,
  settings: TrainSettings,
  repeats = 3,
): Effect.Effect<number, TrainError, ComputeBackend> {
  return Effect.scoped(Effect.gen(function* () {
    const backend = yield* ComputeBackend;
    const { model } = yield* acquireTraining(config, settings);
    const n = settings.batch * settings.seqLen;
    const ids = yield* Effect.acquireRelease(
      Effect.sync(() =>
        backend.upload(
          Int32Array.from(
            { length: n },
            (_, i) => (i * 7919) % config.vocab_size,
          ),
        )
      ),
      (t) => Effect.sync(() => backend.release(t)),
    );
    const times: number[] = [];
    // The first pass pays for compilation and first-touch memory: not timed.
    for (let r = -1; r < repeats; r++) {
      const t0 = performance.now();
      for (let micro = 0; micro < settings.accumulation; micro++) {
        const tape = new Tape(backend);
        yield* Effect.acquireUseRelease(
          Effect.succeed(tape),
          () =>
            Effect.try({
              try: () => {
                const loss = model.loss(tape, ids, ids, {
                  batch: settings.batch,
                  seqLen: settings.seqLen,
                  lambda: 1,
                });
                tape.backward(loss, 1);
                return loss.value;
              },
              catch: trainFailure("measuring the step time"),
            }).pipe(
              Effect.flatMap((v) =>
                readBack(backend, v, "measuring the step time")
              ),
            ),
          () => Effect.sync(() => tape.reset()),
        );
      }
      if (r >= 0) times.push((performance.now() - t0) / 1000);
    }
    times.sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)];
  }));
}
