/**
 * Choosing the next token from a row of logits: greedy, temperature, top-k and
 * top-p (nucleus) sampling, driven by a caller-supplied uniform random number
 * so generation is reproducible from a seed.
 *
 * @module
 */

/** How to pick the next token. `temperature` 0 means greedy (argmax). */
export interface SamplingOptions {
  /** Softmax temperature T ≥ 0: p ∝ exp(logit / T); 0 is greedy. */
  readonly temperature: number;
  /** Keep only the k most likely tokens (0 or absent: all). */
  readonly topK?: number;
  /** Keep the smallest set of most likely tokens whose mass reaches p, in (0, 1] (absent: 1). */
  readonly topP?: number;
}

/** Index of the largest logit (the first one on ties). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

/**
 * The filtered, renormalized distribution sampling draws from: softmax of
 * `logits / T` restricted to the top-k tokens, then to the smallest prefix of
 * them (by probability, descending) whose mass reaches `topP`. Returns the kept
 * token ids and their probabilities (summing to 1), most likely first.
 *
 * @throws {RangeError} naming the option when it is out of range.
 */
export function samplingDistribution(
  logits: ArrayLike<number>,
  options: SamplingOptions,
): { readonly ids: Int32Array; readonly probs: Float64Array } {
  const { temperature: t, topK = 0, topP = 1 } = options;
  if (!(t > 0) || !Number.isFinite(t)) {
    throw new RangeError(
      `temperature must be a finite number > 0 here, got ${t}`,
    );
  }
  if (!Number.isInteger(topK) || topK < 0) {
    throw new RangeError(`topK must be an integer ≥ 0, got ${topK}`);
  }
  if (!(topP > 0 && topP <= 1)) {
    throw new RangeError(`topP must be in (0, 1], got ${topP}`);
  }
  const n = logits.length;
  if (n === 0) throw new RangeError("logits is empty");
  const order = Array.from({ length: n }, (_, i) => i)
    .sort((a, b) => logits[b] - logits[a] || a - b);
  const k = topK > 0 ? Math.min(topK, n) : n;
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
  const ids = Int32Array.from(order.slice(0, kept));
  const probs = weights.slice(0, kept).map((w) => w / mass);
  return { ids, probs };
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
  if (options.temperature === 0) return argmax(logits);
  const { ids, probs } = samplingDistribution(logits, options);
  let acc = 0;
  for (let j = 0; j < ids.length; j++) {
    acc += probs[j];
    if (u < acc) return ids[j];
  }
  return ids[ids.length - 1];
}
