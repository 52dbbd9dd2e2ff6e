// The project's FFI mapping alone (src/common/mmap.ts), for the "corrupted size
// vs. prev_size" abort at exit (docs/RELIABILITY.md): maps and unmaps files of
// several sizes many times, reading every mapped page, then exits.
// Run many times: `scripts/exit_abort/measure.sh mmap 100`.
import { Effect } from "effect";
import { fileBytes } from "../../src/common/mmap.ts";

const dir = await Deno.makeTempDir();
try {
  let sum = 0;
  for (const size of [1, 4095, 4096, 4097, 1 << 20, (1 << 20) + 3]) {
    const path = `${dir}/f${size}`;
    await Deno.writeFile(path, new Uint8Array(size).fill(7));
    for (let i = 0; i < 50; i++) {
      sum += await Effect.runPromise(Effect.scoped(Effect.map(
        fileBytes(path, "mmap"),
        ({ bytes, mapped }) => {
          if (!mapped) throw new Error("not mapped");
          let s = 0;
          for (let p = 0; p < bytes.length; p += 4096) s += bytes[p];
          return s + bytes[bytes.length - 1];
        },
      )));
    }
  }
  console.log(`ok ${sum}`);
} finally {
  await Deno.remove(dir, { recursive: true });
}
