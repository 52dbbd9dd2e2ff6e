/**
 * A trained run directory, loaded for use: its config, bit map, tokenizer,
 * settings and latent weights ({@link loadTrainedRun}), as a model on the
 * compute backend ({@link loadTrainedModel}), and its validation tokens
 * ({@link runValidationTokens}). Evaluation, search and inference start here.
 *
 * @module
 */
import { Effect, type Scope } from "effect";
import { ComputeBackend } from "../backend/service.ts";
import type { TokenArray } from "../common/batches.ts";
import {
  bitMapIssues,
  type OneBitLlmConfig,
  resolveBitMap,
} from "../common/config.ts";
import { ConfigError, loadConfig } from "../common/config_file.ts";
import { prepareDataset } from "../common/dataset.ts";
import type { LayerBitMap } from "../common/layer_bit_map.ts";
import { DataError } from "../common/text_sources.ts";
import { openTokenFile } from "../common/token_file.ts";
import {
  type Tokenizer,
  tokenizerHash,
  tokenizerToJson,
} from "../common/tokenizer.ts";
import { OneBitLlm } from "../core/model.ts";
import { lambdaAt } from "../core/schedule.ts";
import { modelTensors } from "../core/tensors.ts";
import {
  CHECKPOINT_FILES,
  LATEST_FILE,
  loadCheckpoint,
  pathExists,
  resolveCheckpoint,
} from "./checkpoint.ts";
import { decodeRunState } from "./run_state.ts";
import type { TrainSettings } from "./settings.ts";

/** Where prepared datasets are cached unless told otherwise. */
export const DEFAULT_CACHE_DIR = ".cache/datasets";

/** A trained run directory, loaded into host memory. */
export interface TrainedRun {
  /** The run directory given. */
  readonly dir: string;
  /** The `ckpt-*` directory loaded. */
  readonly checkpointPath: string;
  /** The config as trained; `layer_bit_map` replaced by the override when one is given. */
  readonly config: OneBitLlmConfig;
  /** The bit map in effect: the run's own, or the override checked against the config. */
  readonly bitMap: LayerBitMap;
  /** The run's tokenizer. */
  readonly tokenizer: Tokenizer;
  /** The run's settings. */
  readonly settings: TrainSettings;
  /** Optimizer steps taken. */
  readonly step: number;
  /** λ of the last step taken: `lambdaAt(settings.lambda, max(0, step − 1))`. */
  readonly lambda: number;
  /** The run's `--data` source (undefined: the built-in Brown corpus). */
  readonly data: string | undefined;
  /** Latent weights in host memory: every tensor of `modelTensors(config)`, in its order. */
  readonly params: ReadonlyMap<string, Float32Array>;
}

/** Options of {@link loadTrainedRun} and {@link loadTrainedModel}. */
export interface LoadTrainedOptions {
  /** Quantize the trained weights under this map instead of the run's own. */
  readonly bitMap?: LayerBitMap;
  /** Names {@link bitMap} in messages (e.g. its file); default "the bit map". */
  readonly bitMapSource?: string;
}

/**
 * Loads the current checkpoint of the run directory `dir` (or a `ckpt-*`
 * directory given directly) without its optimizer state. Fails with a
 * `DataError` naming the file for a directory that is not a run, a damaged
 * file, a `state.json` field that does not decode, or a tensor missing or of
 * the wrong shape for the config; with a `ConfigError` for a bad
 * `config.json`, or an override bit map that does not fit the config.
 */
export function loadTrainedRun(
  dir: string,
  options: LoadTrainedOptions = {},
): Effect.Effect<TrainedRun, DataError | ConfigError> {
  return Effect.gen(function* () {
    const isRun = (yield* pathExists(`${dir}/${LATEST_FILE}`)) ||
      (yield* pathExists(`${dir}/${CHECKPOINT_FILES.state}`));
    if (!isRun) {
      return yield* new DataError({
        file: dir,
        message: (yield* pathExists(dir))
          ? `${dir}: not a run directory: no \`${LATEST_FILE}\` file`
          : `${dir}: not a run directory: no such directory`,
      });
    }
    // The shapes to expect come from the config, so it is read first.
    const path = yield* resolveCheckpoint(dir);
    const trainedConfig = yield* loadConfig(
      `${path}/${CHECKPOINT_FILES.config}`,
    );
    const specs = modelTensors(trainedConfig);
    const ckpt = yield* loadCheckpoint(path, {
      expectedShapes: new Map(specs.map((s) => [s.name, s.shape])),
      skipOptimizer: true,
    });
    const statePath = `${ckpt.path}/${CHECKPOINT_FILES.state}`;
    const state = yield* decodeRunState(ckpt.state, statePath);
    let config = ckpt.config;
    let bitMap = resolveBitMap(config);
    if (options.bitMap !== undefined) {
      const source = options.bitMapSource ?? "the bit map";
      const issues = bitMapIssues(config, options.bitMap);
      if (issues.length > 0) {
        return yield* new ConfigError({
          file: options.bitMapSource ??
            `${ckpt.path}/${CHECKPOINT_FILES.config}`,
          message: issues.map((i) =>
            `${source}: does not fit the model of ${ckpt.path}/${CHECKPOINT_FILES.config}: ${i}`
          ).join("\n"),
        });
      }
      bitMap = options.bitMap;
      config = { ...config, layer_bit_map: options.bitMap };
    }
    const params = new Map<string, Float32Array>();
    for (const spec of specs) {
      params.set(spec.name, ckpt.params.get(spec.name)!);
    }
    return {
      dir,
      checkpointPath: ckpt.path,
      config,
      bitMap,
      tokenizer: ckpt.tokenizer,
      settings: state.settings,
      step: state.step,
      lambda: lambdaAt(state.settings.lambda, Math.max(0, state.step - 1)),
      data: state.data,
      params,
    };
  });
}

/** A trained run with its model on the compute backend. */
export interface TrainedModel extends TrainedRun {
  /** The model, its tensors released when the scope closes. */
  readonly model: OneBitLlm;
}

/**
 * {@link loadTrainedRun}, then the model on the `ComputeBackend` under the
 * bit map in effect; its tensors are released when the scope closes.
 */
export function loadTrainedModel(
  dir: string,
  options: LoadTrainedOptions = {},
): Effect.Effect<
  TrainedModel,
  DataError | ConfigError,
  ComputeBackend | Scope.Scope
> {
  return Effect.gen(function* () {
    const run = yield* loadTrainedRun(dir, options);
    const backend = yield* ComputeBackend;
    const model = yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          OneBitLlm.fromValues(run.config, run.bitMap, backend, run.params),
        catch: (cause) =>
          new DataError({
            file: run.checkpointPath,
            message:
              `${run.checkpointPath}: cannot load the model on ${backend.description}: ${
                cause instanceof Error ? cause.message : cause
              }`,
          }),
      }),
      (m) => Effect.sync(() => m.release()),
    );
    return { ...run, model };
  });
}

/**
 * The validation split of the data `run` was trained on (prepared into
 * `cacheDir` if needed), checked to be tokenized by the run's tokenizer. The
 * ids may view a memory mapping that is unmapped when the scope closes.
 */
export function runValidationTokens(
  run: TrainedRun,
  cacheDir: string = DEFAULT_CACHE_DIR,
): Effect.Effect<TokenArray, DataError | ConfigError, Scope.Scope> {
  return Effect.gen(function* () {
    const { files, tokenizer } = yield* prepareDataset({
      data: run.data,
      vocabSize: run.config.vocab_size,
      cacheDir,
    });
    if (tokenizerToJson(tokenizer) !== tokenizerToJson(run.tokenizer)) {
      const own = `${run.checkpointPath}/${CHECKPOINT_FILES.tokenizer}`;
      return yield* new DataError({
        file: files.tokenizer,
        message:
          `${files.tokenizer} differs from the run's tokenizer ${own}: the cached dataset of ${
            run.data ?? "the built-in corpus"
          } was prepared with another tokenizer`,
      });
    }
    const valid = yield* openTokenFile(files.valid, {
      expectedHash: tokenizerHash(run.tokenizer),
    });
    return valid.ids;
  });
}
