/**
 * The kernels' thread pool under failure: a kernel that traps on a worker or
 * on the caller fails its job with an Error naming the kernel and the trap,
 * the pool then runs the next job, and no worker outlives `close` (a worker
 * left blocked in `Atomics.wait` keeps the process from exiting: the bug that
 * made a trap "hang"). Each scenario runs in a child process with a deadline,
 * since a hang blocks the thread it happens on.
 */
import { strict as assert } from "node:assert";

const SCENARIO = new URL("./matmul_pool_scenario.ts", import.meta.url);
const ROOT = new URL("../../", import.meta.url);
const DEADLINE_MS = 60_000;

/** Runs a scenario of `matmul_pool_scenario.ts`; fails if it does not exit by the deadline. */
async function scenario(name: string): Promise<Record<string, unknown>> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", SCENARIO.href, name],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<"hung">((resolve) => {
    timer = setTimeout(() => resolve("hung"), DEADLINE_MS);
  });
  const output = child.output();
  const result = await Promise.race([output, deadline]);
  clearTimeout(timer);
  if (result === "hung") {
    child.kill("SIGKILL");
    await output;
    assert.fail(`scenario ${name}: still running after ${DEADLINE_MS} ms`);
  }
  const out = new TextDecoder().decode(result.stdout);
  const err = new TextDecoder().decode(result.stderr);
  assert(result.success, `scenario ${name} failed: ${err}`);
  return JSON.parse(out.trim().split("\n").at(-1)!);
}

Deno.test("pools closed right after they start let the process exit", async () => {
  assert.deepEqual(await scenario("start-close"), { closed: 20 });
});

Deno.test("a worker's trap fails the job with an Error naming the kernel; the pool runs the next job", async () => {
  const r = await scenario("worker-trap");
  assert.match(
    String(r.first),
    /^Error: kernels: matmul_2x16 failed on worker [12] \(rows \d+–\d+ of 64\): RuntimeError: unreachable$/,
  );
  assert.equal(r.second, "returned");
});

Deno.test("an out-of-bounds read fails the job on whichever thread; the pool then computes correctly", async () => {
  const r = await scenario("out-of-bounds");
  assert.match(
    String(r.first),
    /^Error: kernels: matmul_2x16 failed on (the calling thread|worker [12]) \(rows \d+–\d+ of 256\): RuntimeError: memory access out of bounds$/,
  );
  assert.equal(r.second, "returned");
  assert.equal(r.wrong, 0);
});

Deno.test("a trap of the ternary kernel names tmatmul", async () => {
  const r = await scenario("ternary-trap");
  assert.match(
    String(r.first),
    /^Error: kernels: tmatmul failed on (the calling thread|worker [12]) \(rows \d+–\d+ of 64\): RuntimeError: memory access out of bounds$/,
  );
});
