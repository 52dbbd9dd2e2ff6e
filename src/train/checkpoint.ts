/**
 * Training checkpoints: everything needed to resume a run exactly.
 *
 * A run directory holds one complete checkpoint per subdirectory and a
 * pointer to the current one:
 *
 * ```text
 * <dir>/latest                          "ckpt-00001000-<random>\n"
 * <dir>/ckpt-00001000-<random>/config.json            model config
 *                             /tokenizer.json         HF tokenizer
 *                             /model.safetensors      latent F32 weights
 *                             /optimizer.safetensors  AdamW `<name>.m`, `<name>.v`
 *                             /state.json             {@link CheckpointState}
 * ```
 *
 * Crash safety: a save writes a fresh subdirectory (every file flushed to
 * disk), then replaces `latest` atomically ({@link writeFileAtomic}); that
 * rename is the commit. A crash before it leaves `latest` naming the old,
 * untouched checkpoint; after it, the new one. Either way the checkpoint that
 * loads is complete, never a mix. Subdirectories `latest` does not name (the
 * previous checkpoint, or a crashed save's remains) are removed after the
 * commit. One process saves into a directory at a time.
 *
 * @module
 */
import { Effect, Schema } from "effect";
import type { OneBitLlmConfig } from "../common/config.ts";
import {
  ConfigError,
  encodeConfigJson,
  loadConfig,
} from "../common/config_file.ts";
import { DataError } from "../common/text_sources.ts";
import { decodeField } from "./decode.ts";
import { parseTokenizerJson, type Tokenizer } from "../common/tokenizer.ts";
import { syncDir, writeFileAtomic } from "../common/atomic_write.ts";
import { pathExists } from "../common/path_exists.ts";
import {
  encodeSafetensors,
  readSafetensors,
  type Safetensors,
  type SafetensorsTensor,
} from "../common/safetensors.ts";
import { describeCause as describe } from "../common/describe.ts";

// Re-exported for the modules of `train` that check run directories.
export { pathExists };

/** The file in a run directory naming the current checkpoint subdirectory. */
export const LATEST_FILE = "latest";

/** The files of one checkpoint subdirectory. */
export const CHECKPOINT_FILES: {
  readonly config: "config.json";
  readonly tokenizer: "tokenizer.json";
  readonly model: "model.safetensors";
  readonly optimizer: "optimizer.safetensors";
  readonly state: "state.json";
} = {
  config: "config.json",
  tokenizer: "tokenizer.json",
  model: "model.safetensors",
  optimizer: "optimizer.safetensors",
  state: "state.json",
};

/** The `format_version` written and read. */
export const CHECKPOINT_FORMAT_VERSION = 1;

/**
 * The trainer's progress, saved as `state.json` (the trainer's own state
 * object maps onto it; fields are snake_case as in the other JSON files).
 */
export interface CheckpointState {
  /** Always {@link CHECKPOINT_FORMAT_VERSION}. */
  readonly format_version: 1;
  /** Optimizer steps taken. */
  readonly step: number;
  /** Training tokens consumed so far. */
  readonly tokens_seen: number;
  /** The batch sampler's state (opaque JSON, e.g. a `SamplerState`). */
  readonly sampler: unknown;
  /** The learning-rate schedule and its position (opaque JSON). */
  readonly schedule: unknown;
  /** The trainer's RNG state words. */
  readonly rng: readonly number[];
  /** Lowest validation loss seen so far, when validated. */
  readonly best_val_loss?: number;
  /** Seconds spent training before this checkpoint, across resumes. */
  readonly elapsed_seconds?: number;
  /** The run's training text as given to `--data` (absent: the built-in corpus). */
  readonly data?: string;
  /** How a time budget planned the run's steps (opaque JSON), when one did. */
  readonly budget?: unknown;
}

const NonNegativeInt = Schema.Number.check(
  Schema.isInt(),
  Schema.isGreaterThanOrEqualTo(0),
);

/**
 * Schema of a {@link CheckpointState}. `sampler` and `schedule` must be present
 * (any JSON); unknown fields are rejected when decoding `state.json`.
 */
export const CheckpointState: Schema.Codec<CheckpointState, CheckpointState> =
  Schema.Struct({
    format_version: Schema.Literal(CHECKPOINT_FORMAT_VERSION),
    step: NonNegativeInt,
    tokens_seen: NonNegativeInt,
    sampler: Schema.Unknown,
    schedule: Schema.Unknown,
    rng: Schema.Array(Schema.Finite),
    best_val_loss: Schema.optionalKey(Schema.Finite),
    elapsed_seconds: Schema.optionalKey(
      Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)),
    ),
    data: Schema.optionalKey(Schema.String),
    budget: Schema.optionalKey(Schema.Unknown),
  });

/** AdamW's first and second moment estimates of one parameter. */
export interface AdamMoments {
  /** First moment m (running mean of gradients). */
  readonly m: Float32Array;
  /** Second moment v (running mean of squared gradients). */
  readonly v: Float32Array;
}

/** What a checkpoint holds, as given to {@link saveCheckpoint}. */
export interface CheckpointData {
  /** The model config (written with `encodeConfigJson`). */
  readonly config: OneBitLlmConfig;
  /** The tokenizer as Hugging Face `tokenizer.json` text. */
  readonly tokenizerJson: string;
  /** Latent F32 weights by tensor name. */
  readonly params: ReadonlyMap<string, Float32Array>;
  /** The shape of every parameter (row-major, outermost first). */
  readonly shapes: ReadonlyMap<string, readonly number[]>;
  /** AdamW moments of every parameter, each as long as the parameter. */
  readonly moments: ReadonlyMap<string, AdamMoments>;
  /** The trainer's progress. */
  readonly state: CheckpointState;
}

/** A loaded checkpoint. Tensors view the buffer their file was read into. */
export interface Checkpoint extends CheckpointData {
  /** The checkpoint subdirectory the files came from. */
  readonly path: string;
  /** The parsed tokenizer. */
  readonly tokenizer: Tokenizer;
  /** Latent F32 weights by tensor name, in file order. */
  readonly params: Map<string, Float32Array>;
  /** The shape of every parameter. */
  readonly shapes: Map<string, number[]>;
  /** AdamW moments of every parameter. */
  readonly moments: Map<string, AdamMoments>;
}

/** Options of {@link saveCheckpoint}. */
export interface SaveCheckpointOptions {
  /**
   * Called after each file is durable, with its name: the files of
   * {@link CHECKPOINT_FILES} (`state.json` last), then {@link LATEST_FILE}
   * once the new checkpoint is committed. A throw stops the save right there,
   * as a crash would (tests use it to check crash safety).
   */
  readonly afterWrite?: (file: string) => void;
}

/** Options of {@link loadCheckpoint}. */
export interface LoadCheckpointOptions {
  /** Fail with a ConfigError naming each field where the saved config differs. */
  readonly expectedConfig?: OneBitLlmConfig;
  /**
   * The model's parameters and their shapes: the checkpoint must hold exactly
   * these tensors, with these shapes.
   */
  readonly expectedShapes?: ReadonlyMap<string, readonly number[]>;
  /**
   * Skip `optimizer.safetensors` (`moments` comes back empty): for using the
   * weights, not resuming. Default false.
   */
  readonly skipOptimizer?: boolean;
}

const shapeText = (shape: readonly number[]): string => `[${shape.join(",")}]`;

const sameShape = (a: readonly number[], b: readonly number[]): boolean =>
  a.length === b.length && a.every((d, i) => d === b[i]);

const dataError = (file: string, message: string): DataError =>
  new DataError({ file, message: `${file}: ${message}` });

/** Decodes `state.json` text; messages name `file` and the field. */
export const decodeCheckpointState = (
  text: string,
  file: string,
): Effect.Effect<CheckpointState, DataError> =>
  Effect.try({
    try: (): unknown => JSON.parse(text),
    catch: (cause) => dataError(file, `not valid JSON: ${describe(cause)}`),
  }).pipe(
    Effect.flatMap((json) => decodeField(CheckpointState, json, file, "")),
  );

/** The problems with save input, or undefined when it is consistent. */
const inputProblem = (data: CheckpointData): string | undefined => {
  for (const [name, values] of data.params) {
    const shape = data.shapes.get(name);
    if (shape === undefined) return `shapes: no shape for parameter ${name}`;
    if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      return `shapes: ${name} has shape ${
        shapeText(shape)
      }, not non-negative integers`;
    }
    const count = shape.reduce((n, d) => n * d, 1);
    if (count !== values.length) {
      return `params: ${name} holds ${values.length} values, its shape ${
        shapeText(shape)
      } needs ${count}`;
    }
    const moments = data.moments.get(name);
    if (moments === undefined) {
      return `moments: no AdamW moments for parameter ${name}`;
    }
    for (const key of ["m", "v"] as const) {
      if (moments[key].length !== values.length) {
        return `moments: ${name}.${key} holds ${
          moments[key].length
        } values, the parameter ${values.length}`;
      }
    }
  }
  for (const name of data.shapes.keys()) {
    if (!data.params.has(name)) return `shapes: ${name} is not a parameter`;
  }
  for (const name of data.moments.keys()) {
    if (!data.params.has(name)) return `moments: ${name} is not a parameter`;
  }
  return undefined;
};

// Object.fromEntries defines own keys, so even "__proto__" is a plain name.
const modelTensors = (
  data: CheckpointData,
): Record<string, SafetensorsTensor> =>
  Object.fromEntries(
    [...data.params].map((
      [name, values],
    ) => [name, { dtype: "F32", shape: data.shapes.get(name)!, data: values }]),
  );

const optimizerTensors = (
  data: CheckpointData,
): Record<string, SafetensorsTensor> =>
  Object.fromEntries(
    [...data.moments].flatMap(([name, { m, v }]) => {
      const shape = data.shapes.get(name)!;
      return [
        [`${name}.m`, { dtype: "F32", shape, data: m }],
        [`${name}.v`, { dtype: "F32", shape, data: v }],
      ];
    }),
  );

const SUBDIR = /^ckpt-\d+-[0-9a-f]+$/;

const fsEffect = <A>(
  file: string,
  what: string,
  run: () => Promise<A>,
): Effect.Effect<A, DataError> =>
  Effect.tryPromise({
    try: run,
    catch: (cause) => dataError(file, `cannot ${what}: ${describe(cause)}`),
  });

/** Removes subdirectories and temporary pointer files `latest` no longer needs. */
const removeStale = (
  dir: string,
  keep: string,
): Effect.Effect<void, DataError> =>
  fsEffect(dir, "clean up", async () => {
    for await (const entry of Deno.readDir(dir)) {
      const stale = entry.name !== keep && SUBDIR.test(entry.name) ||
        entry.name.startsWith(`${LATEST_FILE}.tmp-`);
      if (stale) await Deno.remove(`${dir}/${entry.name}`, { recursive: true });
    }
  });

/**
 * Saves a checkpoint into the run directory `dir` (created if missing) as
 * described in the module doc: files into a new subdirectory
 * `ckpt-<step, 8 digits>-<random>`, `state.json` last, then the atomic
 * replacement of `latest`, then removal of older subdirectories. Fails
 * before writing anything when the input is inconsistent (a parameter
 * without a valid shape or without moments, a length that does not match its
 * shape, a state that {@link CheckpointState} rejects once through JSON). A save
 * that fails later leaves `latest` as it was; its partial subdirectory is
 * removed by the next successful save.
 */
export const saveCheckpoint = (
  dir: string,
  data: CheckpointData,
  options: SaveCheckpointOptions = {},
): Effect.Effect<void, DataError> =>
  Effect.gen(function* () {
    const problem = inputProblem(data);
    if (problem !== undefined) {
      return yield* Effect.fail(dataError(dir, `cannot save: ${problem}`));
    }
    const stateJson = yield* Effect.try({
      try: () => JSON.stringify(data.state, null, 2),
      catch: (cause) =>
        dataError(dir, `cannot save: state: ${describe(cause)}`),
    });
    // What is written must load: this checks the fields, and JSON drops
    // undefined ones, for one.
    yield* decodeCheckpointState(stateJson, "state").pipe(
      Effect.mapError((e) => dataError(dir, `cannot save: ${e.message}`)),
    );
    const random = crypto.getRandomValues(new Uint32Array(1))[0];
    const name = `ckpt-${String(data.state.step).padStart(8, "0")}-${
      random.toString(16).padStart(8, "0")
    }`;
    const path = `${dir}/${name}`;
    yield* fsEffect(dir, "create the checkpoint directory", async () => {
      await Deno.mkdir(dir, { recursive: true });
      await Deno.mkdir(path);
    });
    const afterWrite = (file: string) =>
      Effect.sync(() => options.afterWrite?.(file));
    const files: [string, () => Uint8Array | string][] = [
      [CHECKPOINT_FILES.config, () => encodeConfigJson(data.config)],
      [CHECKPOINT_FILES.tokenizer, () => data.tokenizerJson],
      [CHECKPOINT_FILES.model, () => encodeSafetensors(modelTensors(data))],
      [
        CHECKPOINT_FILES.optimizer,
        () => encodeSafetensors(optimizerTensors(data)),
      ],
      [CHECKPOINT_FILES.state, () => stateJson],
    ];
    for (const [file, contents] of files) {
      const bytes = yield* Effect.try({
        try: contents,
        catch: (cause) =>
          dataError(`${path}/${file}`, `cannot save: ${describe(cause)}`),
      });
      yield* writeFileAtomic(`${path}/${file}`, bytes);
      yield* afterWrite(file);
    }
    yield* writeFileAtomic(`${dir}/${LATEST_FILE}`, `${name}\n`);
    yield* afterWrite(LATEST_FILE);
    yield* removeStale(dir, name);
    yield* fsEffect(dir, "flush", () => syncDir(dir));
  });

/**
 * The directory holding the current checkpoint of `dir`: the subdirectory
 * named by `<dir>/latest`, or `dir` itself when it holds a `state.json` (a
 * checkpoint subdirectory given directly). Fails with
 * `<dir>: no checkpoint to resume (...)` when there is neither.
 */
export const resolveCheckpoint = (
  dir: string,
): Effect.Effect<string, DataError> =>
  Effect.gen(function* () {
    const latest = `${dir}/${LATEST_FILE}`;
    if (!(yield* pathExists(dir))) {
      return yield* Effect.fail(
        dataError(dir, "no checkpoint to resume (no such directory)"),
      );
    }
    if (yield* pathExists(latest)) {
      const name = (yield* readFileText(latest)).trim();
      if (!SUBDIR.test(name)) {
        return yield* Effect.fail(
          dataError(
            latest,
            `${JSON.stringify(name)} does not name a checkpoint subdirectory`,
          ),
        );
      }
      return `${dir}/${name}`;
    }
    if (yield* pathExists(`${dir}/${CHECKPOINT_FILES.state}`)) return dir;
    return yield* Effect.fail(
      dataError(
        dir,
        `no checkpoint to resume (missing ${LATEST_FILE} and ${CHECKPOINT_FILES.state})`,
      ),
    );
  });

const readFileText = (path: string): Effect.Effect<string, DataError> =>
  Effect.tryPromise({
    try: () => Deno.readTextFile(path),
    catch: (cause) =>
      dataError(
        path,
        cause instanceof Deno.errors.NotFound
          ? "file not found"
          : `cannot read: ${describe(cause)}`,
      ),
  });

/** The tensors of a file, failing unless every one is F32. */
const f32Tensors = (
  file: string,
  { tensors }: Safetensors,
): Effect.Effect<Map<string, SafetensorsTensor>, DataError> => {
  for (const [name, t] of tensors) {
    if (t.dtype !== "F32") {
      return Effect.fail(
        dataError(file, `tensor ${name} is ${t.dtype}, expected F32`),
      );
    }
  }
  return Effect.succeed(tensors);
};

const configMismatch = (
  file: string,
  saved: OneBitLlmConfig,
  expected: OneBitLlmConfig,
): ConfigError | undefined => {
  const a = JSON.parse(encodeConfigJson(saved)) as Record<string, unknown>;
  const b = JSON.parse(encodeConfigJson(expected)) as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
  const lines = keys.filter((k) =>
    JSON.stringify(a[k]) !== JSON.stringify(b[k])
  ).map((k) =>
    `${file}: ${k} is ${
      JSON.stringify(a[k]) ?? "absent"
    } in the checkpoint but ${
      JSON.stringify(b[k]) ?? "absent"
    } in the expected config`
  );
  return lines.length === 0
    ? undefined
    : new ConfigError({ file, message: lines.join("\n") });
};

/**
 * Loads the current checkpoint of `dir` (see {@link resolveCheckpoint}) and
 * checks it whole: `state.json` against {@link CheckpointState}, `config.json`
 * (ConfigError) and, when given, against `expectedConfig` (ConfigError per
 * differing field), `tokenizer.json` parses, every model tensor F32 and, when
 * given, exactly the names and shapes of `expectedShapes`
 * (`<file>: tensor X has shape [8,8] but config expects [16,16]`), and the
 * optimizer file holds `<name>.m` and `<name>.v` of each parameter's shape
 * and nothing else (unless `skipOptimizer`). Every message names the file.
 */
export const loadCheckpoint = (
  dir: string,
  options: LoadCheckpointOptions = {},
): Effect.Effect<Checkpoint, DataError | ConfigError> =>
  Effect.gen(function* () {
    const path = yield* resolveCheckpoint(dir);
    const file = (name: string) => `${path}/${name}`;
    const statePath = file(CHECKPOINT_FILES.state);
    const state = yield* decodeCheckpointState(
      yield* readFileText(statePath),
      statePath,
    );
    const configPath = file(CHECKPOINT_FILES.config);
    const config = yield* loadConfig(configPath);
    if (options.expectedConfig !== undefined) {
      const mismatch = configMismatch(
        configPath,
        config,
        options.expectedConfig,
      );
      if (mismatch !== undefined) return yield* Effect.fail(mismatch);
    }
    const tokenizerPath = file(CHECKPOINT_FILES.tokenizer);
    const tokenizerJson = yield* readFileText(tokenizerPath);
    const tokenizer = yield* parseTokenizerJson(tokenizerJson, tokenizerPath);

    const modelPath = file(CHECKPOINT_FILES.model);
    const model = yield* f32Tensors(
      modelPath,
      yield* readSafetensors(modelPath),
    );
    const expected = options.expectedShapes;
    if (expected !== undefined) {
      for (const [name, shape] of expected) {
        const t = model.get(name);
        if (t === undefined) {
          return yield* Effect.fail(
            dataError(
              modelPath,
              `missing tensor ${name} (config expects ${shapeText(shape)})`,
            ),
          );
        }
        if (!sameShape(t.shape, shape)) {
          return yield* Effect.fail(
            dataError(
              modelPath,
              `tensor ${name} has shape ${
                shapeText(t.shape)
              } but config expects ${shapeText(shape)}`,
            ),
          );
        }
      }
      for (const name of model.keys()) {
        if (!expected.has(name)) {
          return yield* Effect.fail(
            dataError(modelPath, `tensor ${name} is not in the model`),
          );
        }
      }
    }
    const params = new Map<string, Float32Array>();
    const shapes = new Map<string, number[]>();
    for (const [name, t] of model) {
      params.set(name, t.data as Float32Array);
      shapes.set(name, [...t.shape]);
    }

    const moments = new Map<string, AdamMoments>();
    const checkpoint = {
      path,
      config,
      tokenizerJson,
      tokenizer,
      params,
      shapes,
      moments,
      state,
    };
    if (options.skipOptimizer) return checkpoint;
    const optimizerPath = file(CHECKPOINT_FILES.optimizer);
    const optimizer = yield* f32Tensors(
      optimizerPath,
      yield* readSafetensors(optimizerPath),
    );
    const moment = (name: string, key: "m" | "v", shape: number[]) => {
      const t = optimizer.get(`${name}.${key}`);
      return t === undefined
        ? Effect.fail(dataError(optimizerPath, `missing tensor ${name}.${key}`))
        : sameShape(t.shape, shape)
        ? Effect.succeed(t.data as Float32Array)
        : Effect.fail(dataError(
          optimizerPath,
          `tensor ${name}.${key} has shape ${
            shapeText(t.shape)
          } but parameter ${name} has ${shapeText(shape)}`,
        ));
    };
    for (const [name, shape] of shapes) {
      moments.set(name, {
        m: yield* moment(name, "m", shape),
        v: yield* moment(name, "v", shape),
      });
    }
    for (const name of optimizer.keys()) {
      const param = name.replace(/\.[mv]$/, "");
      if (param === name || !shapes.has(param)) {
        return yield* Effect.fail(
          dataError(
            optimizerPath,
            `tensor ${name} is not the m or v of a parameter in ${CHECKPOINT_FILES.model}`,
          ),
        );
      }
    }
    return checkpoint;
  });
