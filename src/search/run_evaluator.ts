/**
 * The evaluator of a trained run: its validation split, its latent weights
 * and the fastest forward pass available.
 *
 * @module
 */
import { Effect, type Scope } from "effect";
import type { Backend } from "../backend/backend.ts";
import type { WasmKernels } from "../backend/wasm/wasm_kernels.ts";
import { ComputeBackend } from "../backend/service.ts";
import type { ConfigError } from "../common/config_file.ts";
import type { DataError } from "../common/text_sources.ts";
import {
  DEFAULT_CACHE_DIR,
  loadTrainedRun,
  runValidationTokens,
  type TrainedRun,
} from "../train/trained_model.ts";
import {
  type Evaluator,
  type EvalWindows,
  latentEvaluator,
} from "./evaluator.ts";
import { weightsEvaluator } from "./weights_evaluator.ts";
import type { SearchError } from "./space.ts";

/** A trained run with what the search scores it on. */
export interface SearchRun extends TrainedRun {
  /** The run's validation split. */
  readonly valid: ArrayLike<number>;
  /** Tokens per window (the run's training sequence length). */
  readonly seqLen: number;
  /** Sequences per forward pass (the run's batch). */
  readonly batch: number;
}

/**
 * Loads the run in `dir` (`loadTrainedRun`) and its validation split
 * (prepared under `cacheDir` from the run's own data source).
 */
export function openSearchRun(
  dir: string,
  cacheDir: string = DEFAULT_CACHE_DIR,
): Effect.Effect<SearchRun, DataError | ConfigError> {
  return Effect.scoped(Effect.gen(function* () {
    const run = yield* loadTrainedRun(dir);
    const valid = yield* runValidationTokens(run, cacheDir);
    return {
      ...run,
      valid: Int32Array.from(valid),
      seqLen: Math.min(run.settings.seqLen, run.config.max_seq_len),
      batch: run.settings.batch,
    };
  }));
}

/** A named evaluator. */
export interface NamedEvaluator {
  /** What computes the scores (recorded in `search.json`). */
  readonly name: string;
  /** The evaluator. */
  readonly evaluate: Evaluator<SearchError>;
}

/**
 * The evaluator of `run` on `windows` of its validation split: without a
 * backend, the inference runtime on weights quantized once per mode (on
 * `kernels` when given); with one, the training model's forward on it (the
 * reference the runtime is checked against; slower).
 */
export function runEvaluator(
  run: SearchRun,
  windows: EvalWindows,
  backend?: Backend,
  kernels?: WasmKernels,
): Effect.Effect<NamedEvaluator, never, Scope.Scope> {
  if (backend === undefined) {
    return weightsEvaluator(run, run.valid, windows, run.batch, kernels).pipe(
      Effect.map((evaluate) => ({
        name: "inference runtime",
        evaluate,
      })),
    );
  }
  const latent = latentEvaluator(run, run.valid, windows, run.batch);
  return Effect.succeed({
    name: "training forward",
    evaluate: (map) =>
      latent(map).pipe(Effect.provideService(ComputeBackend, backend)),
  });
}
