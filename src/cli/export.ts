/**
 * `deno task export`: write a trained run (or an exported model file) as a
 * `packed` file, a GGUF file for llama.cpp, or a Hugging Face directory for
 * PyTorch, and print its size against an f16 model of the same shape.
 *
 * @module
 */
import { Console, Effect, Option } from "effect";
import { Command, Flag } from "effect/cli";
import { type ConfigError, loadBitMap } from "../common/config_file.ts";
import type { OneBitLlmConfig } from "../common/config.ts";
import type { LayerBitMap } from "../common/layer_bit_map.ts";
import type { DataError } from "../common/text_sources.ts";
import { modelTensors, tensorNumel } from "../core/tensors.ts";
import { InferenceError } from "../infer/errors.ts";
import { ExportError } from "../infer/formats/errors.ts";
import { writeGgufModel } from "../infer/formats/gguf.ts";
import { writeHfDirectory } from "../infer/formats/hf.ts";
import { writePacked } from "../infer/formats/packed.ts";
import { loadModelWeights } from "../infer/load.ts";
import { loadTrainedRun } from "../train/trained_model.ts";
import { UsageError } from "./errors.ts";

/** The formats `export` writes. */
export const EXPORT_FORMATS: readonly ["packed", "gguf", "hf"] = [
  "packed",
  "gguf",
  "hf",
];

/** The flags of `export`. */
export const exportFlags = {
  model: Flag.String("model").pipe(
    Flag.withDescription(
      "run directory of a trained model (packed/gguf also take a packed or GGUF file)",
    ),
  ),
  format: Flag.String("format").pipe(
    Flag.withDescription("packed | gguf | hf"),
  ),
  out: Flag.String("out").pipe(
    Flag.withDescription("output file (packed, gguf) or directory (hf)"),
  ),
  base3: Flag.Boolean("base3").pipe(
    Flag.withDefault(false),
    Flag.withDescription("packed: ternary codes five per byte (1.6 bits)"),
  ),
  tq1: Flag.Boolean("tq1").pipe(
    Flag.withDefault(false),
    Flag.withDescription("gguf: TQ1_0 (1.69 bits) instead of TQ2_0 (2.06)"),
  ),
  q8Embedding: Flag.Boolean("q8-embedding").pipe(
    Flag.withDefault(false),
    Flag.withDescription(
      "gguf: the embedding as Q8_0 (int8 rows, f16 scales; lossy) instead of F16",
    ),
  ),
  bitMap: Flag.String("bit-map").pipe(
    Flag.optional,
    Flag.withDescription(
      "LayerBitMap JSON: quantize the run under this map instead of its own",
    ),
  ),
};

/** The parsed flags of `export`. */
export interface ExportFlags {
  /** Run directory or model file. */
  readonly model: string;
  /** One of {@link EXPORT_FORMATS}. */
  readonly format: string;
  /** Output file or directory. */
  readonly out: string;
  /** packed: base-3 ternary codes. */
  readonly base3: boolean;
  /** gguf: TQ1_0. */
  readonly tq1: boolean;
  /** gguf: Q8_0 embedding. */
  readonly q8Embedding: boolean;
  /** A bit-map file. */
  readonly bitMap: Option.Option<string>;
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(3)} MiB`;

/** Bytes of every tensor of `config` at 2 bytes per value. */
export function f16ModelBytes(config: OneBitLlmConfig): number {
  return modelTensors(config).reduce((n, s) => n + 2 * tensorNumel(s), 0);
}

const isDirectory = (path: string): Effect.Effect<boolean> =>
  Effect.promise(() => Deno.stat(path).then((s) => s.isDirectory, () => false));

const usage = (message: string) => Effect.fail(new UsageError({ message }));

const toExportError = (e: InferenceError): ExportError =>
  new ExportError({ message: e.message });

/** The `export` command's program. */
export function exportProgram(
  flags: ExportFlags,
): Effect.Effect<void, ConfigError | DataError | UsageError | ExportError> {
  return Effect.gen(function* () {
    const format = flags.format;
    if (!(EXPORT_FORMATS as readonly string[]).includes(format)) {
      return yield* usage(
        `--format: unknown format ${JSON.stringify(format)}; one of ${
          EXPORT_FORMATS.join(", ")
        }`,
      );
    }
    if (flags.base3 && format !== "packed") {
      return yield* usage("--base3 applies to --format packed only");
    }
    if ((flags.tq1 || flags.q8Embedding) && format !== "gguf") {
      return yield* usage(
        `--${flags.tq1 ? "tq1" : "q8-embedding"} applies to --format gguf only`,
      );
    }
    let bitMap: LayerBitMap | undefined;
    if (Option.isSome(flags.bitMap)) {
      bitMap = yield* loadBitMap(flags.bitMap.value);
    }
    const bitMapSource = Option.getOrUndefined(flags.bitMap);
    let written: number;
    let config: OneBitLlmConfig;
    if (format === "hf") {
      if (!(yield* isDirectory(flags.model))) {
        return yield* usage(
          `--model: the hf export writes latent weights, so it needs a run directory; ${flags.model} is not one`,
        );
      }
      const run = yield* loadTrainedRun(flags.model, { bitMap, bitMapSource });
      config = run.config;
      written = yield* writeHfDirectory(flags.out, run);
    } else {
      const weights = yield* loadModelWeights(flags.model, {
        bitMap,
        bitMapSource,
      }).pipe(
        Effect.mapError((e) =>
          e instanceof InferenceError ? toExportError(e) : e
        ),
      );
      config = weights.config;
      written = format === "packed"
        ? yield* writePacked(flags.out, weights, { base3: flags.base3 })
        : yield* writeGgufModel(flags.out, weights, {
          tq1: flags.tq1,
          q8Embedding: flags.q8Embedding,
        });
    }
    const f16 = f16ModelBytes(config);
    yield* Console.log(
      `wrote ${flags.out} (${format}${
        format === "hf" ? ", latent f32 weights" : ""
      }): ${written} bytes (${
        mib(written)
      }); an f16 model of the same shape: ${f16} bytes (${mib(f16)}); ratio ${
        (written / f16).toFixed(3)
      }`,
    );
  });
}

/** The `export` subcommand. */
export const exportCommand: Command.Command<
  "export",
  ExportFlags,
  // deno-lint-ignore ban-types
  {},
  ConfigError | DataError | UsageError | ExportError
> = Command.make("export", exportFlags, exportProgram).pipe(
  Command.withDescription(
    "write a trained model as packed (ours), gguf (llama.cpp) or hf (PyTorch)",
  ),
);
