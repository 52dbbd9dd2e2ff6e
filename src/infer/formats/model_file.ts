/**
 * Reading and atomically writing whole model files, shared by the `packed`
 * and GGUF formats: an encoder's exceptions become an `ExportError`, an
 * unreadable file a `DataError` naming it.
 *
 * @module
 */
import { Effect } from "effect";
import { writeFileAtomic } from "../../common/atomic_write.ts";
import { DataError } from "../../common/text_sources.ts";
import type { ModelWeights } from "../weights.ts";
import { ExportError } from "./errors.ts";
import { describeCause as describe } from "../../common/describe.ts";

/** Writes `encode()`'s bytes to `path` atomically; returns the size. */
export const writeModelFile = (
  path: string,
  encode: () => Uint8Array,
): Effect.Effect<number, ExportError | DataError> =>
  Effect.try({
    try: encode,
    catch: (e) =>
      e instanceof ExportError
        ? e
        : new ExportError({ message: `${path}: ${describe(e)}` }),
  }).pipe(
    Effect.flatMap((bytes) =>
      writeFileAtomic(path, bytes).pipe(Effect.as(bytes.length))
    ),
  );

/** Reads `path` whole and decodes it with `decode`. */
export const readModelFile = (
  path: string,
  decode: (
    bytes: Uint8Array,
    file: string,
  ) => Effect.Effect<ModelWeights, DataError>,
): Effect.Effect<ModelWeights, DataError> =>
  Effect.tryPromise({
    try: () => Deno.readFile(path),
    catch: (cause) =>
      new DataError({
        file: path,
        message: cause instanceof Deno.errors.NotFound
          ? `${path}: file not found`
          : `${path}: cannot read: ${describe(cause)}`,
      }),
  }).pipe(Effect.flatMap((bytes) => decode(bytes, path)));
