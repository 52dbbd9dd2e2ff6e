import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect } from "effect";
import {
  encodeTokenFile,
  openTokenFile,
  TOKEN_FILE_HEADER_BYTES,
  writeTokenFile,
} from "../../src/common/token_file.ts";
import type { OpenTokenFileOptions } from "../../src/common/token_file.ts";
import { mmapAvailable } from "../../src/common/mmap.ts";
import { toHex } from "../../src/common/tokenizer.ts";
import type { DataError } from "../../src/common/text_sources.ts";

const hashOf = (seed: number): Uint8Array =>
  Uint8Array.from({ length: 32 }, (_, i) => (seed * 31 + i * 7) & 255);

/** Opens a token file and copies out what the scope would otherwise unmap. */
const readBack = (path: string, options?: OpenTokenFileOptions) =>
  Effect.runPromise(Effect.scoped(Effect.map(
    openTokenFile(path, options),
    (f) => ({
      ids: Array.from(f.ids),
      kind: f.ids.constructor.name,
      mapped: f.mapped,
      hash: toHex(f.tokenizerHash),
    }),
  )));

const openFailure = (path: string, options?: OpenTokenFileOptions) =>
  Effect.runPromise(
    Effect.flip(Effect.scoped(openTokenFile(path, options))),
  ) as Promise<DataError>;

const withDir = async (body: (dir: string) => Promise<void>) => {
  const dir = await Deno.makeTempDir();
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
};

Deno.test("token files round-trip through mmap and read, u16 and u32 (property)", async () => {
  assert.equal(
    mmapAvailable(),
    Deno.build.os === "linux" || Deno.build.os === "darwin",
  );
  await withDir(async (dir) => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(300, 4096, 65536, 65537, 200_000),
        fc.array(fc.nat(), { maxLength: 500 }),
        fc.nat(255),
        async (vocabSize, raw, seed) => {
          const ids = raw.map((x) => x % vocabSize);
          const path = `${dir}/t.bin`;
          await Effect.runPromise(
            writeTokenFile(path, ids, vocabSize, hashOf(seed)),
          );
          const width = vocabSize <= 65536 ? 2 : 4;
          assert.equal(
            (await Deno.stat(path)).size,
            TOKEN_FILE_HEADER_BYTES + width * ids.length,
          );
          for (const mode of ["auto", "read"] as const) {
            const back = await readBack(path, {
              mode,
              expectedHash: hashOf(seed),
            });
            assert.deepEqual(back.ids, ids);
            assert.equal(
              back.kind,
              width === 2 ? "Uint16Array" : "Uint32Array",
            );
            assert.equal(back.mapped, mode === "auto" && mmapAvailable());
            assert.equal(back.hash, toHex(hashOf(seed)));
          }
        },
      ),
      { numRuns: 40 },
    );
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["t.bin"]);
  });
});

Deno.test("token file header layout", () => {
  const bytes = encodeTokenFile([1, 2, 65535], 65536, hashOf(3));
  const view = new DataView(bytes.buffer);
  assert.equal(new TextDecoder().decode(bytes.subarray(0, 4)), "TCTK");
  assert.equal(view.getUint32(4, true), 1);
  assert.equal(view.getUint32(8, true), 0);
  assert.equal(view.getBigUint64(12, true), 3n);
  assert.deepEqual(bytes.subarray(20, 52), hashOf(3));
  assert.deepEqual([...bytes.subarray(52, 64)], new Array(12).fill(0));
  assert.deepEqual([...bytes.subarray(64)], [1, 0, 2, 0, 255, 255]);
  const wide = encodeTokenFile([70000], 70001, hashOf(3));
  assert.equal(new DataView(wide.buffer).getUint32(8, true), 1);
  assert.equal(new DataView(wide.buffer).getUint32(64, true), 70000);
});

Deno.test("the mapping lives exactly as long as the scope", async () => {
  if (Deno.build.os !== "linux") return;
  // mincore(2) succeeds on mapped pages and fails (ENOMEM) once unmapped.
  const libc = Deno.dlopen("libc.so.6", {
    mincore: { parameters: ["pointer", "usize", "buffer"], result: "i32" },
  });
  const resident = (base: Deno.PointerValue) =>
    libc.symbols.mincore(base, 64n, new Uint8Array(1)) === 0;
  try {
    await withDir(async (dir) => {
      const path = `${dir}/mapped.bin`;
      await Effect.runPromise(writeTokenFile(path, [5, 6, 7], 10, hashOf(1)));
      let base: Deno.PointerValue = null;
      const inside = await Effect.runPromise(Effect.scoped(Effect.map(
        openTokenFile(path),
        (f) => {
          // The ids start 64 bytes into the page-aligned mapping.
          base = Deno.UnsafePointer.offset(Deno.UnsafePointer.of(f.ids)!, -64);
          return {
            mapped: f.mapped,
            resident: resident(base),
            first: f.ids[0],
          };
        },
      )));
      assert.deepEqual(inside, { mapped: true, resident: true, first: 5 });
      assert.equal(resident(base), false);
    });
  } finally {
    libc.close();
  }
});

Deno.test("bad token files fail with a DataError naming the file", async () => {
  await withDir(async (dir) => {
    const good = encodeTokenFile([1, 2, 3, 4], 100, hashOf(9));
    const variant = async (
      name: string,
      edit: (b: Uint8Array) => Uint8Array,
    ) => {
      const path = `${dir}/${name}`;
      await Deno.writeFile(path, edit(good.slice()));
      return path;
    };
    const set = (at: number, value: number) => (b: Uint8Array) => {
      b[at] = value;
      return b;
    };
    const cases: [string, (b: Uint8Array) => Uint8Array, RegExp][] = [
      ["magic", set(0, 88), /bad magic "XCTK"/],
      ["version", set(4, 2), /unknown version 2/],
      ["dtype", set(8, 7), /unknown dtype 7/],
      ["short", (b) => b.subarray(0, b.length - 1), /truncated/],
      ["header", (b) => b.subarray(0, 30), /truncated header \(30 of 64/],
      ["long", (b) => Uint8Array.from([...b, 0, 0]), /trailing data/],
    ];
    for (const [name, edit, re] of cases) {
      const path = await variant(name, edit);
      for (const mode of ["auto", "read"] as const) {
        const e = await openFailure(path, { mode });
        assert.equal(e._tag, "DataError");
        assert.equal(e.file, path);
        assert.match(e.message, re);
      }
    }
    const ok = await variant("ok", (b) => b);
    const mismatch = await openFailure(ok, { expectedHash: hashOf(10) });
    assert.equal(
      mismatch.message,
      `token file ${ok} was made with another tokenizer (hash ${
        toHex(hashOf(9))
      }), expected ${toHex(hashOf(10))}`,
    );
    const missing = await openFailure(`${dir}/none.bin`);
    assert.equal(missing.file, `${dir}/none.bin`);
  });
});

Deno.test("writeTokenFile refuses bad ids and leaves nothing behind", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/t.bin`;
    const fail = (ids: number[], vocab: number, hash = hashOf(0)) =>
      Effect.runPromise(Effect.flip(writeTokenFile(path, ids, vocab, hash)));
    assert.match((await fail([1, 10], 10)).message, /ids\[1\] = 10 is outside/);
    assert.match((await fail([-1], 10)).message, /ids\[0\] = -1/);
    assert.match((await fail([1.5], 10)).message, /ids\[0\] = 1.5/);
    assert.match((await fail([1], 0)).message, /vocabSize must be/);
    assert.match(
      (await fail([1], 10, new Uint8Array(31))).message,
      /tokenizerHash must be 32 bytes/,
    );
    assert.equal((await fail([1], 10, new Uint8Array(31))).file, path);
    const noDir = await Effect.runPromise(
      Effect.flip(writeTokenFile(`${dir}/no/t.bin`, [1], 10, hashOf(0))),
    );
    assert.equal(noDir.file, `${dir}/no/t.bin`);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("without --allow-ffi: auto falls back to reading, mmap mode fails", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/t.bin`;
    await Effect.runPromise(
      writeTokenFile(path, [3, 1, 4, 1, 5], 10, hashOf(2)),
    );
    const script = `${dir}/child.ts`;
    const module =
      new URL("../../src/common/token_file.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { Effect } from "effect";
import { openTokenFile } from "${module}";
const auto = await Effect.runPromise(Effect.scoped(Effect.map(
  openTokenFile(${JSON.stringify(path)}),
  (f) => ({ mapped: f.mapped, ids: Array.from(f.ids) }),
)));
const forced = await Effect.runPromise(Effect.flip(Effect.scoped(
  openTokenFile(${JSON.stringify(path)}, { mode: "mmap" }),
)));
console.log(JSON.stringify({ auto, forced: forced.message }));
`,
    );
    const config = new URL("../../deno.json", import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", `--config=${config}`, script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const result = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.deepEqual(result.auto, { mapped: false, ids: [3, 1, 4, 1, 5] });
    assert.match(result.forced, /cannot map .*--allow-ffi/);
  });
});
