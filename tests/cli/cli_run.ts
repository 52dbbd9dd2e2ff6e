/**
 * Runs `src/cli/main.ts` as a child process for the CLI tests, and checks
 * that a failure is one `error:` line.
 *
 * @module
 */
import { strict as assert } from "node:assert";

const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;

/** `deno run -q -A src/cli/main.ts ...args`: exit status and both streams. */
export async function cli(
  ...args: string[]
): Promise<{ code: number; out: string; err: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-q", "-A", MAIN, ...args],
    env: { NO_COLOR: "1" },
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

/** Exit status 1 and one `error:` line matching `pattern`, no stack trace. */
export function assertOneLineError(
  r: { code: number; err: string },
  pattern: RegExp,
): void {
  assert.equal(r.code, 1, r.err);
  const errors = r.err.trim().split("\n").filter((l) => l.startsWith("error:"));
  assert.equal(errors.length, 1, r.err);
  assert.match(errors[0], pattern);
  assert.ok(!/\bat .*\.ts:\d+/.test(r.err), `stack trace in: ${r.err}`);
}
