/**
 * `deno task stats`: validate a config and bit map and print what every tensor
 * costs to store.
 *
 * @module
 */
import { Console, Effect, Option } from "effect";
import { bitMapIssues, type OneBitLlmConfig } from "../common/config.ts";
import { ConfigError, loadBitMap, loadConfig } from "../common/config_file.ts";
import type { LayerBitMap } from "../common/layer_bit_map.ts";
import { preset, PRESETS } from "../common/presets.ts";
import { resolveBitMap } from "../common/config.ts";
import {
  type CompressionStats,
  compressionStats,
} from "../core/compression.ts";
import { UsageError } from "./errors.ts";

/** Flags of the `stats` command. */
export interface StatsFlags {
  /** A preset name; ignored when `config` is given. */
  readonly preset: string;
  /** A config JSON file. */
  readonly config: Option.Option<string>;
  /** A bit-map JSON file, replacing the config's own map. */
  readonly bitMap: Option.Option<string>;
  /** Print JSON instead of a table. */
  readonly json: boolean;
}

/** The config named by `--config` or `--preset`. */
export function resolveConfig(
  flags: Pick<StatsFlags, "preset" | "config">,
): Effect.Effect<OneBitLlmConfig, ConfigError | UsageError> {
  if (Option.isSome(flags.config)) return loadConfig(flags.config.value);
  if (!Object.hasOwn(PRESETS, flags.preset)) {
    return Effect.fail(
      new UsageError({
        message: `--preset: unknown preset ${
          JSON.stringify(flags.preset)
        }; known presets: ${Object.keys(PRESETS).join(", ")}`,
      }),
    );
  }
  return Effect.succeed(preset(flags.preset));
}

/** The bit map given by `--bit-map`, checked against `config`; else the config's own. */
export function resolveBitMapFlag(
  config: OneBitLlmConfig,
  path: Option.Option<string>,
): Effect.Effect<LayerBitMap, ConfigError> {
  if (Option.isNone(path)) return Effect.succeed(resolveBitMap(config));
  return loadBitMap(path.value).pipe(
    Effect.flatMap((map) => {
      const issues = bitMapIssues(config, map);
      return issues.length === 0 ? Effect.succeed(map) : Effect.fail(
        new ConfigError({
          file: path.value,
          message: issues.map((i) => `${path.value}: ${i}`).join("\n"),
        }),
      );
    }),
  );
}

const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(3);

/** The stats as a text table. */
export function formatStats(stats: CompressionStats): string {
  const w = stats.tensors.reduce((m, t) => Math.max(m, t.name.length), 0);
  const lines = [
    `${"tensor".padEnd(w)}  ${"mode".padEnd(8)}  ${"params".padStart(10)}  ${
      "bytes".padStart(10)
    }  bits/param`,
    ...stats.tensors.map((t) =>
      `${t.name.padEnd(w)}  ${t.mode.padEnd(8)}  ${
        String(t.params).padStart(10)
      }  ${String(t.bytes).padStart(10)}  ${t.bitsPerParam.toFixed(3)}`
    ),
    "",
    `total: ${stats.totalParams} params, ${stats.totalBytes} bytes (${
      mib(stats.totalBytes)
    } MiB), ${stats.bitsPerParam.toFixed(3)} bits/param`,
    `all-f16: ${stats.f16Bytes} bytes (${
      mib(stats.f16Bytes)
    } MiB); compression ${stats.ratio.toFixed(2)}×`,
  ];
  return lines.join("\n");
}

/** The `stats` command's program. */
export function statsProgram(
  flags: StatsFlags,
): Effect.Effect<void, ConfigError | UsageError> {
  return Effect.gen(function* () {
    const config = yield* resolveConfig(flags);
    const map = yield* resolveBitMapFlag(config, flags.bitMap);
    const stats = compressionStats(config, map);
    yield* Console.log(
      flags.json ? JSON.stringify(stats, null, 2) : formatStats(stats),
    );
  });
}
