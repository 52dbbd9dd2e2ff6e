/**
 * Validation perplexity of inference weights: the windows, batching and
 * averaging of the trainer's `evaluateModel`, on the tape-free runtime.
 *
 * @module
 */
import type { TokenArray } from "../common/batches.ts";
import { InferenceError } from "./errors.ts";
import { InferenceModel, type InferenceModelOptions } from "./runtime.ts";
import type { ModelWeights } from "./weights.ts";

/** Options of {@link evaluateWeights} and {@link evaluateModelWeights}. */
export interface EvaluateWeightsOptions {
  /** Tokens per window (≤ `max_seq_len`). */
  readonly seqLen: number;
  /** Windows per forward pass. */
  readonly batch: number;
  /** Score at most this many windows, spread evenly (default: all). */
  readonly maxWindows?: number;
}

/** Mean NLL and perplexity of a scored split. */
export interface WeightsEvalResult {
  /** Mean cross-entropy in nats per token. */
  readonly loss: number;
  /** exp(loss). */
  readonly ppl: number;
  /** Tokens scored. */
  readonly tokens: number;
}

/**
 * True perplexity of a loaded model on `tokens`: `floor((n − 1) / seqLen)`
 * non-overlapping windows, of which `maxWindows` evenly spaced ones (window
 * `floor(i · windows / take)`), in batches of `batch`; every target counted
 * once, no label smoothing — the windows of the trainer's `evaluateModel`.
 *
 * @throws {InferenceError} if the split holds less than one window.
 */
export function evaluateModelWeights(
  model: InferenceModel,
  tokens: TokenArray,
  o: EvaluateWeightsOptions,
): WeightsEvalResult {
  for (const [name, v] of [["seqLen", o.seqLen], ["batch", o.batch]] as const) {
    if (!Number.isInteger(v) || v < 1) {
      throw new InferenceError({
        message: `${name} must be a positive integer, got ${v}`,
      });
    }
  }
  const windows = Math.floor((tokens.length - 1) / o.seqLen);
  const take = Math.min(windows, o.maxWindows ?? windows);
  if (take < 1) {
    throw new InferenceError({
      message:
        `the split has ${tokens.length} tokens, fewer than one window of ${
          o.seqLen + 1
        }`,
    });
  }
  const ids = new Int32Array(Math.min(o.batch, take) * o.seqLen);
  const targets = new Int32Array(ids.length);
  let sum = 0;
  let count = 0;
  for (let first = 0; first < take; first += o.batch) {
    const rows = Math.min(o.batch, take - first);
    for (let r = 0; r < rows; r++) {
      const start = Math.floor((first + r) * windows / take) * o.seqLen;
      for (let t = 0; t < o.seqLen; t++) {
        ids[r * o.seqLen + t] = tokens[start + t];
        targets[r * o.seqLen + t] = tokens[start + t + 1];
      }
    }
    const n = rows * o.seqLen;
    const part = model.nll(
      ids.subarray(0, n),
      targets.subarray(0, n),
      rows,
      o.seqLen,
    );
    sum += part.sum;
    count += part.count;
  }
  const loss = sum / count;
  return { loss, ppl: Math.exp(loss), tokens: count };
}

/**
 * {@link evaluateModelWeights} of `weights` loaded for the occasion (and
 * released after). To score many bit maps, load one {@link InferenceModel}
 * and swap linears with `setTensor` instead.
 */
export async function evaluateWeights(
  weights: ModelWeights,
  tokens: TokenArray,
  o: EvaluateWeightsOptions,
  options: InferenceModelOptions = {},
): Promise<WeightsEvalResult> {
  const model = await InferenceModel.create(weights, options);
  try {
    return evaluateModelWeights(model, tokens, o);
  } finally {
    model.release();
  }
}
