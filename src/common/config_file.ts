/**
 * Reading and writing model configs and bit maps as JSON files, with errors a
 * person can act on: one short line per problem, naming the file and the JSON
 * field, e.g. `config.json: at hidden_size: expected a positive integer, got -3`.
 *
 * @module
 */
import { type Cause, Data, Effect, Schema, SchemaIssue } from "effect";
import { OneBitLlmConfig } from "./config.ts";
import { LayerBitMap } from "./layer_bit_map.ts";

/** The fields of a {@link ConfigError}. */
export interface ConfigErrorFields {
  /** The file (as given by the caller). */
  readonly file: string;
  /** One line per problem, each starting with `<file>: `. */
  readonly message: string;
}

/**
 * The base class of {@link ConfigError}: `Data.TaggedError("ConfigError")`,
 * held in a typed constant because JSR needs an explicit superclass type.
 */
export const ConfigErrorBase: new (
  fields: ConfigErrorFields,
) =>
  & Cause.YieldableError
  & { readonly _tag: "ConfigError" }
  & ConfigErrorFields = Data.TaggedError("ConfigError");

/** A config or bit-map file that could not be read or is not valid. */
export class ConfigError extends ConfigErrorBase {}

// More lines than this would bury the first problem; the rest are counted.
const MAX_LINES = 5;
// Reported inputs can be large (a whole array); a line stays readable.
const MAX_LINE_CHARS = 240;

const PARSE_OPTIONS = {
  errors: "all",
  onExcessProperty: "error",
  reportInput: true,
} as const;

/** `hidden_size`, `layer_bit_map.layer_modes[3]`, `overrides["3.mlp.down"]`. */
function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else if (typeof key === "string" && /^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      out += out === "" ? key : `.${key}`;
    } else out += `[${JSON.stringify(String(key))}]`;
  }
  return out;
}

// Effect's messages start with a capital ("Expected number"); after "at <path>:"
// a lower-case start reads as one sentence.
function lowerFirst(message: string): string {
  return /^[A-Z][a-z]/.test(message)
    ? message[0].toLowerCase() + message.slice(1)
    : message;
}

const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1({
  leafHook: (issue) => {
    switch (issue._tag) {
      case "MissingKey":
        return "missing required field";
      case "UnexpectedKey":
        return "unknown field";
      default:
        return SchemaIssue.defaultLeafHook(issue);
    }
  },
});

/** The lines of a {@link ConfigError} message for a schema issue tree. */
function issueMessage(file: string, issue: SchemaIssue.Issue): string {
  const entries = formatIssues(issue).issues;
  const lines = entries.slice(0, MAX_LINES).map((entry) => {
    const path = formatPath(
      (entry.path ?? []).map((p) => typeof p === "object" ? p.key : p),
    );
    const text = lowerFirst(entry.message);
    const line = path === ""
      ? `${file}: ${text}`
      : `${file}: at ${path}: ${text}`;
    return line.length > MAX_LINE_CHARS
      ? `${line.slice(0, MAX_LINE_CHARS - 1)}…`
      : line;
  });
  if (entries.length > MAX_LINES) {
    lines.push(`${file}: and ${entries.length - MAX_LINES} more problems`);
  }
  return lines.join("\n");
}

function decodeJson<T>(
  schema: Schema.Codec<T, unknown>,
  text: string,
  file: string,
): Effect.Effect<T, ConfigError> {
  return Effect.try({
    try: (): unknown => JSON.parse(text),
    catch: (e) =>
      new ConfigError({
        file,
        message: `${file}: not valid JSON: ${
          e instanceof Error ? e.message : String(e)
        }`,
      }),
  }).pipe(
    Effect.flatMap((json) =>
      Schema.decodeUnknownEffect(schema, PARSE_OPTIONS)(json)
    ),
    Effect.mapError((e) =>
      e instanceof ConfigError
        ? e
        : new ConfigError({ file, message: issueMessage(file, e.issue) })
    ),
  );
}

/**
 * Decodes and validates a {@link OneBitLlmConfig} from JSON text; `file` names
 * the source in messages. Unknown fields are errors (they are usually typos).
 */
export function decodeConfigJson(
  text: string,
  file: string,
): Effect.Effect<OneBitLlmConfig, ConfigError> {
  return decodeJson(OneBitLlmConfig, text, file);
}

/**
 * Decodes a {@link LayerBitMap} from JSON text; `file` names the source in
 * messages. Whether it fits a model is checked by `bitMapIssues`.
 */
export function decodeBitMapJson(
  text: string,
  file: string,
): Effect.Effect<LayerBitMap, ConfigError> {
  return decodeJson(LayerBitMap, text, file);
}

function readText(path: string): Effect.Effect<string, ConfigError> {
  return Effect.tryPromise({
    try: () => Deno.readTextFile(path),
    catch: (e) =>
      new ConfigError({
        file: path,
        message: e instanceof Deno.errors.NotFound
          ? `${path}: file not found`
          : `${path}: cannot read: ${e instanceof Error ? e.message : e}`,
      }),
  });
}

/** Reads and decodes a config file (see {@link decodeConfigJson}). Needs read permission. */
export function loadConfig(
  path: string,
): Effect.Effect<OneBitLlmConfig, ConfigError> {
  return readText(path).pipe(
    Effect.flatMap((text) => decodeConfigJson(text, path)),
  );
}

/** Reads and decodes a bit-map file (see {@link decodeBitMapJson}). Needs read permission. */
export function loadBitMap(
  path: string,
): Effect.Effect<LayerBitMap, ConfigError> {
  return readText(path).pipe(
    Effect.flatMap((text) => decodeBitMapJson(text, path)),
  );
}

/** The JSON text of a config, every field written, indented by 2 spaces. */
export function encodeConfigJson(config: OneBitLlmConfig): string {
  return JSON.stringify(Schema.encodeSync(OneBitLlmConfig)(config), null, 2);
}

/** The JSON text of a bit map, indented by 2 spaces. */
export function encodeBitMapJson(map: LayerBitMap): string {
  return JSON.stringify(Schema.encodeSync(LayerBitMap)(map), null, 2);
}
