/**
 * Seeded, resumable batching of a token stream into (input, target) windows,
 * and the unigram baseline perplexity.
 *
 * @module
 */
import { Rng } from "./rng.ts";
import type { RngState } from "./rng.ts";

/** A token stream: any array of integer ids. */
export type TokenArray = ArrayLike<number>;

/** One batch: B windows of T inputs and their next-token targets. */
export interface Batch {
  /** `inputs[b·T + t] = tokens[starts[b] + t]`. */
  readonly inputs: Int32Array;
  /** `targets[b·T + t] = tokens[starts[b] + t + 1]`. */
  readonly targets: Int32Array;
  /** The start of each window in the token array. */
  readonly starts: Int32Array;
}

/** Shape of the batches. */
export interface BatchShape {
  /** Windows per batch (B). */
  readonly batchSize: number;
  /** Tokens per window (T); a window reads T + 1 tokens. */
  readonly seqLen: number;
}

/** Options of a {@link BatchSampler}. */
export interface BatchSamplerOptions extends BatchShape {
  /** Seed of the window order. */
  readonly seed: number;
}

/**
 * Where a {@link BatchSampler} stands, as plain JSON: the epoch, the position
 * in that epoch's window order, the RNG state the order was drawn from, and
 * the window count (to refuse a state from another token array or shape).
 */
export interface SamplerState {
  /** The current epoch, 0-based. */
  readonly epoch: number;
  /** Windows of this epoch already handed out. */
  readonly position: number;
  /** RNG state before this epoch's shuffle. */
  readonly rng: RngState;
  /** Windows per epoch of the sampler that saved the state. */
  readonly windows: number;
}

const checkShape = (tokens: TokenArray, shape: BatchShape): number => {
  const { batchSize, seqLen } = shape;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`batchSize must be a positive integer, got ${batchSize}`);
  }
  if (!Number.isInteger(seqLen) || seqLen < 1) {
    throw new Error(`seqLen must be a positive integer, got ${seqLen}`);
  }
  return windowCount(tokens.length, seqLen);
};

/**
 * Number of non-overlapping input windows: starts 0, T, 2T, … with
 * `start + T + 1 ≤ n`, i.e. `floor((n − 1) / T)` (0 when n < 2).
 */
export const windowCount = (n: number, seqLen: number): number =>
  n < 2 ? 0 : Math.floor((n - 1) / seqLen);

const fill = (
  tokens: TokenArray,
  starts: Int32Array,
  seqLen: number,
): Batch => {
  const inputs = new Int32Array(starts.length * seqLen);
  const targets = new Int32Array(starts.length * seqLen);
  for (let b = 0; b < starts.length; b++) {
    const s = starts[b];
    for (let t = 0; t < seqLen; t++) {
      inputs[b * seqLen + t] = tokens[s + t];
      targets[b * seqLen + t] = tokens[s + t + 1];
    }
  }
  return { inputs, targets, starts };
};

/**
 * Random batches over a token array. An epoch is a seeded permutation of all
 * window starts (each window exactly once); batches take the next B windows
 * of that order and run on into the next epoch's order, so every batch is
 * full. {@link getState} / {@link BatchSampler.fromState} resume exactly.
 */
export class BatchSampler {
  /** Windows per epoch. */
  readonly windows: number;
  private readonly tokens: TokenArray;
  private readonly shape: BatchShape;
  private readonly rng: Rng;
  private order: Int32Array;
  private epochRng: RngState;
  private epochIndex = 0;
  private position = 0;

  /**
   * Throws (naming the argument) unless batchSize and seqLen are positive
   * integers and the tokens hold at least batchSize windows.
   */
  constructor(tokens: TokenArray, options: BatchSamplerOptions) {
    this.windows = checkShape(tokens, options);
    if (this.windows < options.batchSize) {
      throw new Error(
        `tokens: ${tokens.length} tokens give ${this.windows} windows of ${
          options.seqLen + 1
        }, fewer than batchSize ${options.batchSize}`,
      );
    }
    this.tokens = tokens;
    this.shape = { batchSize: options.batchSize, seqLen: options.seqLen };
    this.rng = new Rng(options.seed);
    this.epochRng = this.rng.getState();
    this.order = this.shuffled();
  }

  /**
   * A sampler over `tokens` continuing from `state` (see {@link getState});
   * throws if the state does not fit these tokens and shape.
   */
  static fromState(
    tokens: TokenArray,
    shape: BatchShape,
    state: SamplerState,
  ): BatchSampler {
    const sampler = new BatchSampler(tokens, { ...shape, seed: 0 });
    const { epoch, position, windows } = state;
    if (windows !== sampler.windows) {
      throw new Error(
        `state: saved for ${windows} windows, these tokens give ${sampler.windows}`,
      );
    }
    if (
      !Number.isInteger(epoch) || epoch < 0 || !Number.isInteger(position) ||
      position < 0 || position > windows
    ) {
      throw new Error(
        `state: epoch ${epoch} / position ${position} out of range`,
      );
    }
    sampler.rng.setState(state.rng);
    sampler.epochRng = sampler.rng.getState();
    sampler.order = sampler.shuffled();
    sampler.epochIndex = epoch;
    sampler.position = position;
    return sampler;
  }

  /** Draws a new epoch order: all window starts, shuffled by the RNG. */
  private shuffled(): Int32Array {
    const order = new Int32Array(this.windows);
    for (let i = 0; i < order.length; i++) order[i] = i * this.shape.seqLen;
    return this.rng.shuffle(order);
  }

  /** The epoch (0-based) the last window handed out came from. */
  get epoch(): number {
    return this.epochIndex;
  }

  /** The state to resume from, as plain JSON-serializable values. */
  getState(): SamplerState {
    return {
      epoch: this.epochIndex,
      position: this.position,
      rng: this.epochRng,
      windows: this.windows,
    };
  }

  /** The next B windows: inputs, next-token targets and window starts. */
  nextBatch(): Batch {
    const starts = new Int32Array(this.shape.batchSize);
    for (let b = 0; b < starts.length; b++) {
      if (this.position === this.windows) {
        this.epochIndex++;
        this.position = 0;
        this.epochRng = this.rng.getState();
        this.order = this.shuffled();
      }
      starts[b] = this.order[this.position++];
    }
    return fill(this.tokens, starts, this.shape.seqLen);
  }
}

/**
 * All windows in order, B at a time (the last batch may be smaller): for
 * evaluation, where every window counts once and order does not matter.
 */
export function* sequentialBatches(
  tokens: TokenArray,
  shape: BatchShape,
): Generator<Batch, void, undefined> {
  const windows = checkShape(tokens, shape);
  for (let w = 0; w < windows; w += shape.batchSize) {
    const starts = new Int32Array(Math.min(shape.batchSize, windows - w));
    for (let b = 0; b < starts.length; b++) {
      starts[b] = (w + b) * shape.seqLen;
    }
    yield fill(tokens, starts, shape.seqLen);
  }
}

/**
 * Perplexity of a unigram model fitted on the training ids with add-one
 * (Laplace) smoothing: `p(t) = (count_train(t) + 1) / (N_train + V)`,
 * `ppl = exp(−(1/M) Σ_{v ∈ valid} ln p(v))`. The baseline a language model
 * must beat.
 */
export const unigramPerplexity = (
  trainIds: TokenArray,
  validIds: TokenArray,
  vocabSize: number,
): number => {
  if (!Number.isInteger(vocabSize) || vocabSize < 1) {
    throw new Error(`vocabSize must be a positive integer, got ${vocabSize}`);
  }
  if (validIds.length === 0) {
    throw new Error("validIds must not be empty");
  }
  const counts = new Float64Array(vocabSize);
  const check = (ids: TokenArray, name: string, i: number): number => {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new Error(`${name}[${i}] = ${id} is outside [0, ${vocabSize})`);
    }
    return id;
  };
  for (let i = 0; i < trainIds.length; i++) {
    counts[check(trainIds, "trainIds", i)]++;
  }
  const logDenominator = Math.log(trainIds.length + vocabSize);
  let nll = 0;
  for (let i = 0; i < validIds.length; i++) {
    nll += logDenominator -
      Math.log(counts[check(validIds, "validIds", i)] + 1);
  }
  return Math.exp(nll / validIds.length);
};
