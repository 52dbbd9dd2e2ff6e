/**
 * How the search scores a bit map: an {@link Evaluator} gives the true
 * perplexity of the model quantized under a map on a fixed set of windows.
 * The windows are a seeded sample of a token split ({@link selectEvalWindows}),
 * so `deno task eval` can score a map on exactly the same tokens.
 *
 * @module
 */
import { Effect } from "effect";
import type { OneBitLlmConfig } from "../common/config.ts";
import type { TokenArray } from "../common/batches.ts";
import type { LayerBitMap } from "../common/layer_bit_map.ts";
import { Rng } from "../common/rng.ts";
import { Tape } from "../backend/tape.ts";
import { ComputeBackend } from "../backend/service.ts";
import { OneBitLlm } from "../core/model.ts";
import { SearchError, toSearchError } from "./space.ts";

/** Mean NLL and perplexity of one evaluation. */
export interface Score {
  /** Mean cross-entropy in nats per token. */
  readonly loss: number;
  /** exp(loss). */
  readonly ppl: number;
  /** Tokens scored. */
  readonly tokens: number;
}

/**
 * Scores a bit map. Must be deterministic: the search caches results by map
 * and compares them exactly.
 */
export type Evaluator<E = never, R = never> = (
  map: LayerBitMap,
) => Effect.Effect<Score, E, R>;

/** A sample of the non-overlapping `seqLen` windows of a token split. */
export interface EvalWindows {
  /** Tokens per window (each window also reads the next token as its last target). */
  readonly seqLen: number;
  /** Token offset of each window, ascending; window i is `tokens[start, start + seqLen]`. */
  readonly starts: Int32Array;
}

/** Options of {@link selectEvalWindows}. */
export interface WindowOptions {
  /** Tokens per window. */
  readonly seqLen: number;
  /** Score about this many tokens: ⌈evalTokens / seqLen⌉ windows (all when the split is smaller). */
  readonly evalTokens: number;
  /** Seed of the sample. */
  readonly seed: number;
}

/**
 * The evaluation windows of a split of `tokenCount` tokens: of its
 * `⌊(tokenCount − 1) / seqLen⌋` non-overlapping windows (the grid
 * `evaluateModel` uses), ⌈evalTokens / seqLen⌉ drawn without replacement by a
 * seeded shuffle, in ascending order. Deterministic in its arguments. Throws a
 * {@link SearchError} when the split holds no whole window.
 */
export function selectEvalWindows(
  tokenCount: number,
  o: WindowOptions,
): EvalWindows {
  if (!Number.isInteger(o.seqLen) || o.seqLen < 1) {
    throw new SearchError({
      message: `window length ${o.seqLen} is not a positive integer`,
    });
  }
  if (!Number.isInteger(o.evalTokens) || o.evalTokens < 1) {
    throw new SearchError({
      message:
        `--eval-tokens: expected a positive integer, got ${o.evalTokens}`,
    });
  }
  const windows = Math.floor((tokenCount - 1) / o.seqLen);
  if (windows < 1) {
    throw new SearchError({
      message:
        `the validation split has ${tokenCount} tokens, fewer than one window of ${
          o.seqLen + 1
        }`,
    });
  }
  const take = Math.min(windows, Math.ceil(o.evalTokens / o.seqLen));
  const order = new Rng(o.seed).shuffle(
    Int32Array.from({ length: windows }, (_, i) => i),
  );
  const picked = order.subarray(0, take).sort();
  return { seqLen: o.seqLen, starts: picked.map((w) => w * o.seqLen) };
}

/** Inputs and next-token targets of windows `[first, first + rows)` of `windows`. */
export function windowBatch(
  tokens: TokenArray,
  windows: EvalWindows,
  first: number,
  rows: number,
): { ids: Int32Array; targets: Int32Array } {
  const { seqLen, starts } = windows;
  const ids = new Int32Array(rows * seqLen);
  const targets = new Int32Array(rows * seqLen);
  for (let r = 0; r < rows; r++) {
    const start = starts[first + r];
    for (let t = 0; t < seqLen; t++) {
      ids[r * seqLen + t] = tokens[start + t];
      targets[r * seqLen + t] = tokens[start + t + 1];
    }
  }
  return { ids, targets };
}

/** What {@link latentEvaluator} needs of a trained model. */
export interface LatentWeights {
  /** The architecture. */
  readonly config: OneBitLlmConfig;
  /** Latent (full-precision) parameters by tensor name. */
  readonly params: ReadonlyMap<string, Float32Array>;
  /** Quantization λ of the forward pass (1: hard quantization, as a trained ternary model runs). */
  readonly lambda: number;
}

/**
 * An evaluator through the training model's forward pass
 * (`OneBitLlm.loss`, weights fake-quantized on every call): simple and
 * exactly the function training optimized, but it re-quantizes every weight
 * per batch. The reference the fast inference evaluator is checked against.
 */
export function latentEvaluator(
  model: LatentWeights,
  tokens: TokenArray,
  windows: EvalWindows,
  batch = 16,
): Evaluator<SearchError, ComputeBackend> {
  return (map) =>
    Effect.gen(function* () {
      const backend = yield* ComputeBackend;
      return yield* Effect.tryPromise({
        catch: toSearchError,
        try: async () => {
          const m = OneBitLlm.fromValues(
            model.config,
            map,
            backend,
            model.params,
          );
          const { seqLen, starts } = windows;
          let nll = 0;
          try {
            for (let first = 0; first < starts.length; first += batch) {
              const rows = Math.min(batch, starts.length - first);
              const b = windowBatch(tokens, windows, first, rows);
              const ids = backend.upload(b.ids);
              const targets = backend.upload(b.targets);
              const tape = new Tape(backend);
              try {
                const loss = m.loss(tape, ids, targets, {
                  batch: rows,
                  seqLen,
                  lambda: model.lambda,
                });
                const [, batchNll] = await backend.read(loss.value);
                nll += batchNll * rows * seqLen;
              } finally {
                tape.reset();
                backend.release(ids);
                backend.release(targets);
              }
            }
          } finally {
            m.release();
          }
          const count = starts.length * seqLen;
          const loss = nll / count;
          return { loss, ppl: Math.exp(loss), tokens: count };
        },
      });
    });
}
