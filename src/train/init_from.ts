/**
 * A new run that starts from the latent weights of another model: a trained
 * run (possibly under a different bit map — the fine-tune of a map the search
 * chose, or `deno task train --init RUN --bit-map MAP`) or a transformers
 * BitNet directory. The source is only read; the new run has its own
 * directory, settings and fresh optimizer moments.
 *
 * @module
 */
import { Effect, type Scope } from "effect";
import type { ComputeBackend } from "../backend/service.ts";
import type { ConfigError } from "../common/config_file.ts";
import type { DataError } from "../common/text_sources.ts";
import { quantPhases } from "../core/schedule.ts";
import { HF_FILES } from "../infer/formats/hf.ts";
import { CHECKPOINT_FILES, LATEST_FILE, pathExists } from "./checkpoint.ts";
import { type RunOptions, type RunResult, runTraining } from "./run.ts";
import {
  defaultEvalEvery,
  lrSchedule,
  type TrainSettings,
} from "./settings.ts";
import type { TrainedRun } from "./trained_model.ts";
import { TrainError } from "./trainer.ts";

/** What a directory to start from holds. */
export type InitSourceKind = "run" | "hf";

/**
 * Whether `dir` is a run directory (a `latest` file, or a `ckpt-*` directory
 * given directly), a transformers BitNet directory (`config.json` and
 * `model.safetensors`), or neither (`undefined`; also when it does not
 * exist). A path that cannot be checked is a `DataError` naming it.
 */
export function initSourceKind(
  dir: string,
): Effect.Effect<InitSourceKind | undefined, DataError> {
  return Effect.gen(function* () {
    if (
      (yield* pathExists(`${dir}/${LATEST_FILE}`)) ||
      (yield* pathExists(`${dir}/${CHECKPOINT_FILES.state}`))
    ) return "run";
    if (
      (yield* pathExists(`${dir}/${HF_FILES.config}`)) &&
      (yield* pathExists(`${dir}/${HF_FILES.model}`))
    ) return "hf";
    return undefined;
  });
}

/** Options of {@link fineTuneSettings}. */
export interface FineTuneChoices {
  /** Peak learning rate (default: the source run's). */
  readonly peakLr?: number;
}

/**
 * The settings of a fine-tune of `steps` steps from a run trained with
 * `source`: its batch, sequence length, optimizer and seed, with a cosine
 * schedule of its own (warmup a tenth of the steps, peak the source's unless
 * given), hard quantization from the first step (the map is trained as it
 * will be used), and five evaluations.
 */
export function fineTuneSettings(
  source: TrainSettings,
  steps: number,
  choices: FineTuneChoices = {},
): TrainSettings {
  return {
    ...source,
    steps,
    lr: lrSchedule("cosine", {
      steps,
      peakLr: choices.peakLr ?? source.lr.peakLr,
    }),
    lambda: quantPhases({ fpSteps: 0, softSteps: 0 }),
    evalEvery: defaultEvalEvery(steps),
  };
}

/** Options of {@link trainFromRun}: those of a new run, less its model and start. */
export interface TrainFromRunOptions
  extends
    Omit<RunOptions, "config" | "init" | "resume" | "resumeSteps" | "data"> {
  /**
   * The run to start from, loaded by `loadTrainedRun` (with its `bitMap`
   * option to train under another map): its config (and map in effect) is
   * the new run's model, its latent weights the start.
   */
  readonly source: TrainedRun;
  /** Training text (default: the source run's own). */
  readonly data?: string;
}

/**
 * Trains a new run in `options.out` from the latent weights of
 * `options.source`, with fresh optimizer moments, under the source's bit map
 * in effect. The source's directory is never written. Fails with a
 * {@link TrainError} when `out` is the source's directory or is not a new run
 * directory, and otherwise as `runTraining` does (e.g. a `DataError` when the
 * data's tokenizer is not the source's).
 */
export function trainFromRun(
  options: TrainFromRunOptions,
): Effect.Effect<
  RunResult,
  TrainError | DataError | ConfigError,
  ComputeBackend | Scope.Scope
> {
  return Effect.gen(function* () {
    const { source, ...rest } = options;
    const real = (path: string) =>
      Effect.promise(() => Deno.realPath(path).catch(() => undefined));
    const out = yield* real(options.out);
    if (out !== undefined && out === (yield* real(source.dir))) {
      return yield* new TrainError({
        message:
          `${options.out} is the run being started from; give the new run another directory`,
      });
    }
    return yield* runTraining({
      ...rest,
      config: source.config,
      init: source,
      resume: false,
      data: options.data ?? source.data,
    });
  });
}
