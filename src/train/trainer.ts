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
import { type Cause, Data } from "effect";
import type { Backend } from "../backend/backend.ts";
import { Tape } from "../backend/tape.ts";
import { OneBitLlm } from "../core/model.ts";
import {
  lambdaAt,
  type LambdaSchedule,
  quantPhases,
} from "../core/schedule.ts";
import { type OneBitLlmConfig, resolveBitMap } from "../common/config.ts";
import {
  BatchSampler,
  type SamplerState,
  type TokenArray,
} from "../common/batches.ts";
import { lrAt, type LrSchedule } from "./lr_schedule.ts";
import { AdamW } from "./optimizer.ts";

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

/** Everything that decides a run's numbers (saved in `state.json`). */
export interface TrainSettings {
  /** Optimizer steps of the run. */
  readonly steps: number;
  /** Sequences per micro-batch. */
  readonly batch: number;
  /** Micro-batches per optimizer step (gradient accumulation). */
  readonly accumulation: number;
  /** Tokens per sequence. */
  readonly seqLen: number;
  /** The learning-rate schedule. */
  readonly lr: LrSchedule;
  /** Weight decay of linear matrices (the schedule may override it per step). */
  readonly weightDecay: number;
  /** Global gradient-norm limit. */
  readonly maxGradNorm: number;
  /** AdamW β2 (β1 is 0.9). */
  readonly beta2: number;
  /** λ of the quantizers per step. */
  readonly lambda: LambdaSchedule;
  /** Label smoothing of the training loss (never of the reported perplexity). */
  readonly labelSmoothing: number;
  /** Evaluate every this many steps (0: only at the end). */
  readonly evalEvery: number;
  /** Validation windows of a periodic evaluation (the final one uses all). */
  readonly evalWindows: number;
  /** Seed of initialization and batch order. */
  readonly seed: number;
}

/** The default settings for `config` and a number of steps. */
export function defaultSettings(
  config: OneBitLlmConfig,
  steps: number,
  overrides: Partial<TrainSettings> = {},
): TrainSettings {
  const warmup = Math.min(100, Math.max(1, Math.floor(steps / 10)));
  return {
    steps,
    batch: 16,
    accumulation: 1,
    seqLen: config.max_seq_len,
    lr: {
      kind: "cosine",
      peakLr: 1.5e-3,
      warmupSteps: warmup,
      totalSteps: steps,
    },
    weightDecay: 0.1,
    maxGradNorm: 1,
    beta2: 0.95,
    lambda: quantPhases({ fpSteps: 0, softSteps: 0 }),
    labelSmoothing: 0,
    evalEvery: Math.max(1, Math.floor(steps / 5)),
    evalWindows: 64,
    seed: 0,
    ...overrides,
  };
}

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

/** A model, its optimizer and its batch stream, advanced one step at a time. */
export class Trainer {
  /** The model being trained. */
  readonly model: OneBitLlm;
  /** Its optimizer. */
  readonly optimizer: AdamW;
  /** The run's settings. */
  readonly settings: TrainSettings;
  readonly #sampler: BatchSampler;
  readonly #backend: Backend;
  #step: number;
  #tokens: number;

  /**
   * A trainer over `train` tokens for `model` and `optimizer` as they are
   * (fresh, or loaded from a checkpoint). `resume` continues the batch order,
   * step and token counts of a saved {@link TrainState}.
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
    this.settings = settings;
    this.#backend = model.backend;
    const shape = { batchSize: settings.batch, seqLen: settings.seqLen };
    this.#sampler = resume
      ? BatchSampler.fromState(train, shape, resume.sampler)
      : new BatchSampler(train, { ...shape, seed: settings.seed });
    this.#step = resume?.step ?? 0;
    this.#tokens = resume?.tokens ?? 0;
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
   * the weights.
   */
  async runStep(): Promise<StepReport> {
    const s = this.settings;
    const b = this.#backend;
    const stepIndex = this.#step; // 0-based index of the step being taken
    const lambda = lambdaAt(s.lambda, stepIndex);
    const hyper = lrAt(s.lr, stepIndex);
    this.model.zeroGrads();
    const n = s.batch * s.seqLen;
    const ids = b.zeros(n, "i32");
    const targets = b.zeros(n, "i32");
    // Mean loss over the micro-batches, summed on the device: one read-back a step.
    const lossSum = b.zeros(2);
    let meanLoss: number;
    try {
      for (let micro = 0; micro < s.accumulation; micro++) {
        const batch = this.#sampler.nextBatch();
        b.write(ids, batch.inputs);
        b.write(targets, batch.targets);
        const tape = new Tape(b);
        try {
          const loss = this.model.loss(tape, ids, targets, {
            batch: s.batch,
            seqLen: s.seqLen,
            lambda,
            labelSmoothing: s.labelSmoothing,
          });
          tape.backward(loss, 1 / s.accumulation);
          b.addScaled(lossSum, loss.value, 1 / s.accumulation);
        } catch (e) {
          // The quantizers refuse NaN/Inf input: the same divergence as a NaN loss.
          if (e instanceof RangeError && /non-finite/.test(e.message)) {
            throw new TrainError({
              message: `non-finite values at step ${
                stepIndex + 1
              } (${e.message}); stopping (lower --lr, or raise the warmup). The last checkpoint is kept.`,
            });
          }
          throw e;
        } finally {
          tape.reset();
        }
      }
      meanLoss = (await b.read(lossSum))[0];
    } finally {
      b.release(ids);
      b.release(targets);
      b.release(lossSum);
    }
    if (!Number.isFinite(meanLoss)) {
      throw new TrainError({
        message: `loss is ${meanLoss} at step ${
          stepIndex + 1
        }; stopping (lower --lr, or raise the warmup). The last checkpoint is kept.`,
      });
    }
    this.optimizer.step(
      {
        lr: hyper.lr,
        weightDecay: hyper.weightDecay ?? s.weightDecay,
        step: stepIndex + 1,
      },
      Math.min(
        this.model.config.latent_clip_max_training,
        this.model.config.latent_clamp_max,
      ),
    );
    const gradNorm = await this.optimizer.gradNorm();
    this.#step++;
    this.#tokens += n * s.accumulation;
    return {
      step: this.#step,
      loss: meanLoss,
      lr: hyper.lr,
      lambda,
      gradNorm,
      tokens: n * s.accumulation,
    };
  }

  /**
   * Mean validation NLL (no label smoothing) over `maxWindows` windows of
   * `tokens` spread evenly over the split (all windows when absent), at the
   * model's current λ.
   */
  async evaluate(tokens: TokenArray, maxWindows?: number): Promise<EvalResult> {
    return await evaluateModel(this.model, tokens, {
      batch: this.settings.batch,
      seqLen: this.settings.seqLen,
      lambda: lambdaAt(this.settings.lambda, Math.max(0, this.#step - 1)),
      maxWindows,
    });
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
 * windows, every target counted once, without label smoothing.
 */
export async function evaluateModel(
  model: OneBitLlm,
  tokens: TokenArray,
  o: EvaluateOptions,
): Promise<EvalResult> {
  const b = model.backend;
  const windows = Math.floor((tokens.length - 1) / o.seqLen);
  const take = Math.min(windows, o.maxWindows ?? windows);
  if (take < 1) {
    throw new TrainError({
      message:
        `validation split has ${tokens.length} tokens, fewer than one window of ${
          o.seqLen + 1
        }`,
    });
  }
  // Evenly spaced windows, so a partial evaluation sees the whole split.
  const picked = new Int32Array(take);
  for (let i = 0; i < take; i++) picked[i] = Math.floor(i * windows / take);
  let nll = 0;
  let count = 0;
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
    const idsT = b.upload(ids);
    const targetsT = b.upload(targets);
    const tape = new Tape(b);
    try {
      const loss = model.loss(tape, idsT, targetsT, {
        batch: rows,
        seqLen: o.seqLen,
        lambda: o.lambda,
      });
      const [, batchNll] = await b.read(loss.value);
      nll += batchNll * rows * o.seqLen;
      count += rows * o.seqLen;
    } finally {
      tape.reset();
      b.release(idsT);
      b.release(targetsT);
    }
  }
  const loss = nll / count;
  return { loss, ppl: Math.exp(loss), tokens: count };
}

/** A fresh model and optimizer for `config` on `backend`. */
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

/**
 * Seconds one optimizer step of `settings` takes on `backend`: the median of
 * a few forward+backward passes (after an untimed warm-up pass) of a throwaway model on random tokens (no
 * update). Used to turn a time budget into a fixed step count, so the
 * schedule — and a resume — does not depend on the clock.
 */
export async function measureStepSeconds(
  config: OneBitLlmConfig,
  backend: Backend,
  settings: TrainSettings,
  repeats = 3,
): Promise<number> {
  const { model, optimizer } = initTraining(config, backend, settings);
  const n = settings.batch * settings.seqLen;
  const ids = backend.upload(
    Int32Array.from({ length: n }, (_, i) => (i * 7919) % config.vocab_size),
  );
  const times: number[] = [];
  try {
    // The first pass pays for compilation and first-touch memory: not timed.
    for (let r = -1; r < repeats; r++) {
      const t0 = performance.now();
      for (let micro = 0; micro < settings.accumulation; micro++) {
        const tape = new Tape(backend);
        const loss = model.loss(tape, ids, ids, {
          batch: settings.batch,
          seqLen: settings.seqLen,
          lambda: 1,
        });
        tape.backward(loss, 1);
        await backend.read(loss.value);
        tape.reset();
      }
      if (r >= 0) times.push((performance.now() - t0) / 1000);
    }
  } finally {
    backend.release(ids);
    optimizer.release();
    model.release();
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

/**
 * Steps that fit a time budget at `stepSeconds` a step: 90% of the budget at
 * a 15% slower pace than measured, leaving room for evaluations, checkpoints
 * and the final pass (at least 1).
 */
export function stepsForBudget(
  budgetSeconds: number,
  stepSeconds: number,
): number {
  return Math.max(1, Math.floor(0.9 * budgetSeconds / (stepSeconds * 1.15)));
}
