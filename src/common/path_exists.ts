/**
 * {@link pathExists}: whether a path exists, as an Effect that tells a missing
 * path (false) from one that cannot be checked (a {@link DataError}).
 *
 * @module
 */
import { Effect } from "effect";
import { DataError } from "./data_error.ts";
import { describeCause as describe } from "./describe.ts";

/**
 * Whether `path` exists — and, with `kind`, is a regular file or a directory
 * (following symlinks). A missing path, or one under a file, is `false`; any
 * other failure (permission denied, I/O) is a DataError naming the path
 * rather than a silent `false`.
 */
export const pathExists = (
  path: string,
  kind?: "file" | "directory",
): Effect.Effect<boolean, DataError> =>
  Effect.tryPromise({
    try: () =>
      Deno.stat(path).then(
        (info) =>
          kind === undefined ||
          (kind === "file" ? info.isFile : info.isDirectory),
        (e) => {
          if (
            e instanceof Deno.errors.NotFound ||
            e instanceof Deno.errors.NotADirectory
          ) return false;
          throw e;
        },
      ),
    catch: (cause) =>
      new DataError({
        file: path,
        message: `${path}: cannot read: ${describe(cause)}`,
      }),
  });
