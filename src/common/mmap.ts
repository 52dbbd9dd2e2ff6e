/**
 * Read-only file mapping through Deno FFI (libc `open`, `mmap`, `munmap`,
 * `close`), with a plain-read fallback when FFI is not permitted.
 *
 * @module
 */
import { Effect } from "effect";
import type { Scope } from "effect";
import { DataError } from "./text_sources.ts";
import { describeCause as describe } from "./describe.ts";

/**
 * How to get a file's bytes: `"auto"` maps it when FFI is permitted on Linux
 * or macOS and reads it otherwise; `"mmap"` requires the mapping; `"read"`
 * always reads the file into memory.
 */
export type LoadMode = "auto" | "mmap" | "read";

/** A file's bytes and how they were obtained. */
export interface FileBytes {
  /** The whole file. For a mapping, valid only inside the scope. */
  readonly bytes: Uint8Array;
  /** True when `bytes` is a read-only private mapping of the file. */
  readonly mapped: boolean;
}

const PROT_READ = 1;
const MAP_PRIVATE = 2;
const O_RDONLY = 0;

const LIBC: string | undefined = Deno.build.os === "linux"
  ? "libc.so.6"
  : Deno.build.os === "darwin"
  ? "libSystem.B.dylib"
  : undefined;

const symbols = {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  mmap: {
    parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"],
    result: "pointer",
  },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  errno: {
    name: Deno.build.os === "darwin" ? "__error" : "__errno_location",
    parameters: [],
    result: "pointer",
  },
} as const;

type Libc = Deno.DynamicLibrary<typeof symbols>["symbols"];
let libc: Libc | undefined;

const loadLibc = (): Libc => {
  if (libc === undefined) libc = Deno.dlopen(LIBC!, symbols).symbols;
  return libc;
};

/**
 * Whether `"auto"` maps files here: Linux or macOS, and FFI permission
 * granted for libc.
 */
export const mmapAvailable = (): boolean =>
  LIBC !== undefined &&
  Deno.permissions.querySync({ name: "ffi", path: LIBC }).state === "granted";

const errno = (lib: Libc): number => {
  const p = lib.errno();
  return p === null ? -1 : new Deno.UnsafePointerView(p).getInt32();
};

interface Mapping {
  readonly pointer: Deno.PointerObject;
  readonly length: number;
}

const mapFile = (
  path: string,
  length: number,
): Effect.Effect<Mapping, DataError> =>
  Effect.suspend(() => {
    const fail = (what: string) =>
      Effect.fail(new DataError({ file: path, message: `${what} ${path}` }));
    let lib: Libc;
    try {
      lib = loadLibc();
    } catch (cause) {
      return fail(`cannot load ${LIBC} (${describe(cause)}) to map`);
    }
    const fd = lib.open(new TextEncoder().encode(`${path}\0`), O_RDONLY);
    if (fd < 0) return fail(`open failed (errno ${errno(lib)}) for`);
    const pointer = lib.mmap(
      null,
      BigInt(length),
      PROT_READ,
      MAP_PRIVATE,
      fd,
      0n,
    );
    const code = errno(lib);
    // The mapping keeps the file referenced; the descriptor is not needed.
    lib.close(fd);
    // MAP_FAILED is (void*)-1.
    if (
      pointer === null ||
      Deno.UnsafePointer.value(pointer) === 0xffffffffffffffffn
    ) {
      return fail(`mmap failed (errno ${code}) for`);
    }
    return Effect.succeed({ pointer, length });
  });

/**
 * The bytes of a file as a scoped resource: mapped read-only (and unmapped
 * when the scope closes) or read into memory, per `mode`. With `"auto"` and
 * FFI permitted, a failing `open`/`mmap` is an error, not a silent fallback.
 * The mapped bytes must not be used after the scope closes.
 */
export const fileBytes = (
  path: string,
  mode: LoadMode = "auto",
): Effect.Effect<FileBytes, DataError, Scope.Scope> =>
  Effect.gen(function* () {
    const info = yield* Effect.tryPromise({
      try: () => Deno.stat(path),
      catch: (cause) =>
        new DataError({
          file: path,
          message: `cannot open ${path}: ${describe(cause)}`,
        }),
    });
    if (!info.isFile) {
      return yield* Effect.fail(
        new DataError({ file: path, message: `${path} is not a file` }),
      );
    }
    const useMap = mode === "mmap" || (mode === "auto" && mmapAvailable());
    if (mode === "mmap" && !mmapAvailable()) {
      return yield* Effect.fail(
        new DataError({
          file: path,
          message:
            `cannot map ${path}: mmap needs Linux or macOS and --allow-ffi`,
        }),
      );
    }
    // mmap rejects a zero length; an empty file needs no mapping.
    if (useMap && info.size > 0) {
      const m = yield* Effect.acquireRelease(
        mapFile(path, info.size),
        (m) =>
          Effect.sync(() => loadLibc().munmap(m.pointer, BigInt(m.length))),
      );
      const buffer = Deno.UnsafePointerView.getArrayBuffer(m.pointer, m.length);
      return { bytes: new Uint8Array(buffer), mapped: true };
    }
    const bytes = yield* Effect.tryPromise({
      try: () => Deno.readFile(path),
      catch: (cause) =>
        new DataError({
          file: path,
          message: `cannot read ${path}: ${describe(cause)}`,
        }),
    });
    return { bytes, mapped: false };
  });
