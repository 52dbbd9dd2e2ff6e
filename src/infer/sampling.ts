/**
 * Choosing the next token from a row of logits: penalties on recently seen
 * tokens (repetition, presence, frequency), then greedy or a draw from the
 * softmax at a temperature restricted by top-k, top-p (nucleus) and min-p —
 * driven by a uniform random number, so generation is reproducible from a
 * seed ({@link TokenSampler}).
 *
 * @module
 */
import { Rng } from "../common/rng.ts";

/** How to pick the next token. `temperature` 0 means greedy (argmax). */
export interface SamplingOptions {
  /** Softmax temperature T ≥ 0: p ∝ exp(logit / T); 0 is greedy. */
  readonly temperature: number;
  /** Keep only the k most likely tokens (0 or absent: all). */
  readonly topK?: number;
  /** Keep the smallest set of most likely tokens whose mass reaches p, in (0, 1] (absent: 1). */
  readonly topP?: number;
  /** Keep only tokens at least this fraction as likely as the most likely, in [0, 1] (absent: 0). */
  readonly minP?: number;
}

/** Penalties on the tokens of a recent window (all off by default). */
export interface PenaltyOptions {
  /**
   * Repetition penalty r ≥ 1 (CTRL, llama.cpp): a seen token's logit ℓ becomes
   * ℓ / r when positive, ℓ · r when not. 1 is off.
   */
  readonly repetitionPenalty?: number;
  /** Subtracted once from the logit of every seen token (≥ 0). */
  readonly presencePenalty?: number;
  /** Subtracted from a seen token's logit once per occurrence (≥ 0). */
  readonly frequencyPenalty?: number;
  /** How many of the latest tokens count as seen (default 64). */
  readonly penaltyWindow?: number;
}

/** Index of the largest logit (the first one on ties). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

/** Checks sampling options, throwing a RangeError naming the option. */
export function checkSamplingOptions(options: SamplingOptions): void {
  const { temperature: t, topK = 0, topP = 1, minP = 0 } = options;
  if (!(t >= 0) || !Number.isFinite(t)) {
    throw new RangeError(`temperature must be a finite number ≥ 0, got ${t}`);
  }
  if (!Number.isInteger(topK) || topK < 0) {
    throw new RangeError(`topK must be an integer ≥ 0, got ${topK}`);
  }
  if (!(topP > 0 && topP <= 1)) {
    throw new RangeError(`topP must be in (0, 1], got ${topP}`);
  }
  if (!(minP >= 0 && minP <= 1)) {
    throw new RangeError(`minP must be in [0, 1], got ${minP}`);
  }
}

/** Checks penalty options, throwing a RangeError naming the option. */
export function checkPenaltyOptions(options: PenaltyOptions): void {
  const {
    repetitionPenalty = 1,
    presencePenalty = 0,
    frequencyPenalty = 0,
    penaltyWindow = 64,
  } = options;
  if (!(repetitionPenalty >= 1) || !Number.isFinite(repetitionPenalty)) {
    throw new RangeError(
      `repetitionPenalty must be a finite number ≥ 1, got ${repetitionPenalty}`,
    );
  }
  for (
    const [name, v] of [
      ["presencePenalty", presencePenalty],
      ["frequencyPenalty", frequencyPenalty],
    ] as const
  ) {
    if (!(v >= 0) || !Number.isFinite(v)) {
      throw new RangeError(`${name} must be a finite number ≥ 0, got ${v}`);
    }
  }
  if (!Number.isInteger(penaltyWindow) || penaltyWindow < 0) {
    throw new RangeError(
      `penaltyWindow must be an integer ≥ 0, got ${penaltyWindow}`,
    );
  }
}

/**
 * Applies the penalties in place to `logits` for the last `penaltyWindow`
 * tokens of `history`: every seen token's logit goes down (or stays), no other
 * logit changes — so no penalty raises the probability of the seen tokens
 * taken together, nor of a lone seen token.
 */
export function applyPenalties(
  logits: Float32Array | Float64Array,
  history: ArrayLike<number>,
  options: PenaltyOptions,
): void {
  checkPenaltyOptions(options);
  const {
    repetitionPenalty: r = 1,
    presencePenalty: presence = 0,
    frequencyPenalty: frequency = 0,
    penaltyWindow = 64,
  } = options;
  if (r === 1 && presence === 0 && frequency === 0) return;
  const counts = new Map<number, number>();
  for (
    let i = Math.max(0, history.length - penaltyWindow);
    i < history.length;
    i++
  ) {
    const id = history[i];
    if (id >= 0 && id < logits.length) {
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
  }
  for (const [id, n] of counts) {
    let l = logits[id];
    l = l > 0 ? l / r : l * r;
    logits[id] = l - presence - n * frequency;
  }
}

/**
 * The filtered, renormalized distribution sampling draws from: softmax of
 * `logits / T` restricted to the top-k tokens, then to the smallest prefix of
 * them (by probability, descending; ties by id) whose mass reaches `topP`,
 * then to those with at least `minP` times the largest probability. Returns
 * the kept token ids and their probabilities (summing to 1), most likely first.
 *
 * @throws {RangeError} naming the option when it is out of range (here the
 * temperature must be > 0).
 */
export function samplingDistribution(
  logits: ArrayLike<number>,
  options: SamplingOptions,
): { readonly ids: Int32Array; readonly probs: Float64Array } {
  checkSamplingOptions(options);
  const { temperature: t, topK = 0, topP = 1, minP = 0 } = options;
  if (!(t > 0)) {
    throw new RangeError(
      `temperature must be a finite number > 0 here, got ${t}`,
    );
  }
  const n = logits.length;
  if (n === 0) throw new RangeError("logits is empty");
  const order = topK > 0 && topK < n
    ? topIds(logits, topK)
    : Array.from({ length: n }, (_, i) => i).sort((a, b) =>
      logits[b] - logits[a] || a - b
    );
  const k = order.length;
  const max = logits[order[0]];
  const weights = new Float64Array(k);
  let total = 0;
  for (let j = 0; j < k; j++) {
    weights[j] = Math.exp((logits[order[j]] - max) / t);
    total += weights[j];
  }
  let kept = 0;
  let mass = 0;
  while (kept < k && (kept === 0 || mass < topP * total)) {
    mass += weights[kept++];
  }
  // weights[0] = 1 is the largest: min-p keeps a prefix of the sorted order.
  while (kept > 1 && weights[kept - 1] < minP) kept--;
  mass = 0;
  for (let j = 0; j < kept; j++) mass += weights[j];
  const ids = Int32Array.from(order.slice(0, kept));
  const probs = weights.slice(0, kept).map((w) => w / mass);
  return { ids, probs };
}

/** The ids of the `k` largest logits, largest first (ties by id), in O(n·log k). */
function topIds(logits: ArrayLike<number>, k: number): number[] {
  // `before(a, b)`: a ranks above b.
  const before = (a: number, b: number) =>
    logits[a] > logits[b] || (logits[a] === logits[b] && a < b);
  // A min-heap (by rank) of the best k so far: its root is the worst kept.
  const heap: number[] = [];
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let w = i;
      if (l < heap.length && before(heap[w], heap[l])) w = l;
      if (r < heap.length && before(heap[w], heap[r])) w = r;
      if (w === i) return;
      [heap[i], heap[w]] = [heap[w], heap[i]];
      i = w;
    }
  };
  for (let id = 0; id < logits.length; id++) {
    if (heap.length < k) {
      heap.push(id);
      for (let i = heap.length - 1; i > 0;) {
        const p = (i - 1) >> 1;
        if (!before(heap[p], heap[i])) break;
        [heap[i], heap[p]] = [heap[p], heap[i]];
        i = p;
      }
    } else if (before(id, heap[0])) {
      heap[0] = id;
      down(0);
    }
  }
  return heap.sort((a, b) => (before(a, b) ? -1 : 1));
}

/**
 * The next token: argmax when `temperature` is 0, else a draw from
 * {@link samplingDistribution} with the uniform number `u ∈ [0, 1)`.
 */
export function sampleToken(
  logits: ArrayLike<number>,
  options: SamplingOptions,
  u: number,
): number {
  if (options.temperature === 0) {
    checkSamplingOptions(options);
    return argmax(logits);
  }
  const { ids, probs } = samplingDistribution(logits, options);
  let acc = 0;
  for (let j = 0; j < ids.length; j++) {
    acc += probs[j];
    if (u < acc) return ids[j];
  }
  return ids[ids.length - 1];
}

/** Everything a {@link TokenSampler} needs: sampling, penalties and a seed. */
export interface SamplerOptions extends SamplingOptions, PenaltyOptions {
  /** Seed of the draws (default 0): the same seed gives the same tokens. */
  readonly seed?: number;
}

/**
 * Picks tokens one after another: copies the logits (the model's buffer is
 * left alone), applies the penalties over the history, then
 * {@link sampleToken} with the next number of its seeded generator.
 */
export class TokenSampler {
  /** The options, checked. */
  readonly options: SamplerOptions;
  readonly #rng: Rng;
  #buf = new Float64Array(0);

  /**
   * A sampler for `options`, its draws seeded by `options.seed`.
   *
   * @throws {RangeError} naming an option out of range.
   */
  constructor(options: SamplerOptions) {
    checkSamplingOptions(options);
    checkPenaltyOptions(options);
    const seed = options.seed ?? 0;
    if (!Number.isSafeInteger(seed)) {
      throw new RangeError(`seed must be a safe integer, got ${seed}`);
    }
    this.options = options;
    this.#rng = new Rng(seed);
  }

  /** The next token after `history` (prompt and generated tokens so far). */
  next(logits: ArrayLike<number>, history: ArrayLike<number>): number {
    if (this.#buf.length !== logits.length) {
      this.#buf = new Float64Array(logits.length);
    }
    const buf = this.#buf;
    for (let i = 0; i < logits.length; i++) buf[i] = logits[i];
    applyPenalties(buf, history, this.options);
    // Greedy draws nothing: the stream of numbers stays the same.
    if (this.options.temperature === 0) return argmax(buf);
    return sampleToken(buf, this.options, this.#rng.nextFloat());
  }
}
