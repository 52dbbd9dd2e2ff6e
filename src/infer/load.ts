/**
 * {@link ModelWeights} from what a user points inference at: a trained run
 * directory (its latent weights quantized under its bit map, or another one),
 * or an exported `packed` or GGUF file (its stored codes as they are).
 *
 * @module
 */
import { Effect } from "effect";
import type { ConfigError } from "../common/config_file.ts";
import type { LayerBitMap } from "../common/layer_bit_map.ts";
import { DataError } from "../common/text_sources.ts";
import { loadTrainedRun } from "../train/trained_model.ts";
import { InferenceError } from "./errors.ts";
import { weightsFromTrainedRun } from "./from_latents.ts";
import { readGgufModel } from "./formats/gguf.ts";
import { PACKED_MAGIC, readPacked } from "./formats/packed.ts";
import type { ModelWeights } from "./weights.ts";
import { describeCause as describe } from "../common/describe.ts";

/** Options of {@link loadModelWeights}. */
export interface LoadModelOptions {
  /** A run directory only: quantize under this map instead of the run's own. */
  readonly bitMap?: LayerBitMap;
  /** Names {@link bitMap} in messages (its file). */
  readonly bitMapSource?: string;
}

const GGUF_MAGIC = "GGUF";

/** The first `n` bytes of a file (fewer if it is shorter). */
const head = (path: string, n: number): Effect.Effect<Uint8Array, DataError> =>
  Effect.tryPromise({
    try: async () => {
      const f = await Deno.open(path, { read: true });
      try {
        const buf = new Uint8Array(n);
        let got = 0;
        while (got < n) {
          const r = await f.read(buf.subarray(got));
          if (r === null) break;
          got += r;
        }
        return buf.subarray(0, got);
      } finally {
        f.close();
      }
    },
    catch: (cause) =>
      new DataError({
        file: path,
        message: `${path}: cannot read: ${describe(cause)}`,
      }),
  });

/**
 * The weights at `path`: a run directory goes through `loadTrainedRun` and
 * {@link weightsFromTrainedRun} (λ strictly between 0 and 1 is refused); a
 * `packed` or GGUF file (told apart by its magic) is read as stored. Fails
 * naming the path.
 */
export function loadModelWeights(
  path: string,
  options: LoadModelOptions = {},
): Effect.Effect<ModelWeights, DataError | ConfigError | InferenceError> {
  return Effect.gen(function* () {
    const info = yield* Effect.tryPromise({
      try: () => Deno.stat(path),
      catch: (cause) =>
        new DataError({
          file: path,
          message: cause instanceof Deno.errors.NotFound
            ? `${path}: no such model (not a run directory or model file)`
            : `${path}: cannot read: ${describe(cause)}`,
        }),
    });
    if (info.isDirectory) {
      const run = yield* loadTrainedRun(path, options);
      return yield* Effect.try({
        try: () => weightsFromTrainedRun(run),
        catch: (cause) =>
          cause instanceof InferenceError
            ? new InferenceError({ message: `${path}: ${cause.message}` })
            : new InferenceError({ message: `${path}: ${describe(cause)}` }),
      });
    }
    if (options.bitMap !== undefined) {
      return yield* new InferenceError({
        message:
          `--bit-map applies to a run directory only: ${path} holds weights already quantized`,
      });
    }
    const magic = new TextDecoder().decode(yield* head(path, 8));
    if (magic.startsWith(PACKED_MAGIC)) return yield* readPacked(path);
    if (magic.startsWith(GGUF_MAGIC)) return yield* readGgufModel(path);
    return yield* new DataError({
      file: path,
      message:
        `${path}: not a model: neither a run directory nor a packed or GGUF file`,
    });
  });
}
