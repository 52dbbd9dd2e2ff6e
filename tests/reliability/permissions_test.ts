/**
 * The CLI tasks run with the permission sets of deno.json, not `-A`: reading
 * anywhere (user data and configs), writing inside the project (runs, dataset
 * cache, tuning cache), FFI (libc mmap of token files), env (effect reads the
 * environment; the WebGPU probe sets XDG_RUNTIME_DIR). WebGPU needs no
 * permission. Nothing else: no network, no subprocesses.
 */
import { strict as assert } from "node:assert";
import { childEnv } from "./cli_harness.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const denoJson = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));

async function task(...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", ...args],
    cwd: ROOT,
    env: childEnv(),
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    out: dec.decode(out.stdout),
    err: dec.decode(out.stderr),
  };
}

Deno.test("deno.json: the CLI tasks use permission sets, not -A", () => {
  const tasks = denoJson.tasks as Record<string, string>;
  for (const name of ["train", "eval", "prep", "search", "infer", "export"]) {
    assert.match(tasks[name], /^deno run -q -P=cli src\/cli\/main\.ts /, name);
  }
  assert.match(tasks.stats, /^deno run -q -P=stats src\/cli\/main\.ts stats$/);
  const cli = denoJson.permissions.cli;
  assert.deepEqual(cli, {
    read: true,
    write: ["."],
    ffi: true,
    env: true,
    sys: ["systemMemoryInfo"],
  });
  assert.deepEqual(denoJson.permissions.stats, { read: true, env: true });
});

Deno.test("deno task train --preset tiny --steps 2 runs with the cli set (mmap and all)", async () => {
  const out = `runs/.permissions-test-${crypto.randomUUID().slice(0, 8)}`;
  try {
    const r = await task(
      "train",
      "--preset",
      "tiny",
      "--steps",
      "2",
      "--out",
      out,
      "--backend",
      "auto",
    );
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /training tokens \(mmap\)/, r.err);
    assert.match(r.err, /done: 2 steps/, r.err);
    assert.ok(!r.err.includes("XDG_RUNTIME_DIR"), r.err);
    const latest = (await Deno.readTextFile(`${ROOT}${out}/latest`)).trim();
    await Deno.stat(`${ROOT}${out}/${latest}/model.safetensors`);
  } finally {
    await Deno.remove(`${ROOT}${out}`, { recursive: true }).catch(() => {});
  }
});

Deno.test("deno task train may not write outside the project: one error line", async () => {
  const outside = await Deno.makeTempDir();
  try {
    const r = await task(
      "train",
      "--preset",
      "tiny",
      "--steps",
      "1",
      "--out",
      `${outside}/run`,
      "--backend",
      "cpu",
    );
    assert.equal(r.code, 1, r.err);
    const errors = r.err.split("\n").filter((l) => l.startsWith("error"));
    assert.equal(errors.length, 1, r.err);
    assert.ok(errors[0].includes(outside), r.err);
    assert.ok(!/\bat .*\.ts:\d+/.test(r.err), r.err);
  } finally {
    await Deno.remove(outside, { recursive: true });
  }
});
