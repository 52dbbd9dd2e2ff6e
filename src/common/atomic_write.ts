/**
 * Crash-safe file replacement: readers of a path see either its old content
 * or the complete new content, never a partial file.
 *
 * @module
 */
import { Effect } from "effect";
import { DataError } from "./text_sources.ts";
import { describeCause as describe } from "./describe.ts";

const parentDir = (path: string): string => {
  const cut = path.lastIndexOf("/");
  return cut < 0 ? "." : cut === 0 ? "/" : path.slice(0, cut);
};

/**
 * Flushes a directory's entries (the names created or renamed in it) to
 * disk. Windows cannot open a directory as a file; there it is skipped.
 */
export const syncDir = (dir: string): Promise<void> => {
  if (Deno.build.os === "windows") return Promise.resolve();
  return Deno.open(dir, { read: true }).then(async (handle) => {
    try {
      await handle.sync();
    } finally {
      handle.close();
    }
  });
};

/**
 * Replaces `path` with `data` (bytes, or a string written as UTF-8): writes
 * `<path>.tmp-<random>` in the same directory, flushes it to disk
 * (`syncData`), renames it over `path` (atomic on POSIX within one file
 * system), then flushes the directory so the rename itself survives a power
 * loss. On failure the temporary file is removed and the old `path`, if any,
 * is untouched.
 */
export const writeFileAtomic = (
  path: string,
  data: Uint8Array | string,
): Effect.Effect<void, DataError> =>
  Effect.tryPromise({
    try: async () => {
      const bytes = typeof data === "string"
        ? new TextEncoder().encode(data)
        : data;
      const tmp = `${path}.tmp-${crypto.randomUUID()}`;
      try {
        const file = await Deno.open(tmp, { write: true, createNew: true });
        try {
          let done = 0;
          while (done < bytes.length) {
            done += await file.write(bytes.subarray(done));
          }
          await file.syncData();
        } finally {
          file.close();
        }
        await Deno.rename(tmp, path);
      } catch (e) {
        await Deno.remove(tmp).catch(() => {});
        throw e;
      }
      await syncDir(parentDir(path));
    },
    catch: (cause) =>
      new DataError({
        file: path,
        message: `cannot write ${path}: ${describe(cause)}`,
      }),
  });
