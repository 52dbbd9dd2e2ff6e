/** The benchmarks' shared settings parser: counts from environment variables and flags. */
import { strict as assert } from "node:assert";
import { positiveCount } from "../../bench/result.ts";

Deno.test("positiveCount: unset gives the fallback, a positive integer passes", () => {
  assert.equal(positiveCount("ROUNDS", undefined, 15), 15);
  assert.equal(positiveCount("ROUNDS", "7", 15), 7);
  assert.equal(positiveCount("--threads", " 2 ", 1), 2);
});

Deno.test("positiveCount: anything else is a RangeError naming the setting and the text", () => {
  for (
    const text of [
      "",
      "0",
      "-3",
      "2.5",
      "abc",
      "1e3",
      "3x",
      "99999999999999999999",
    ]
  ) {
    assert.throws(
      () => positiveCount("MATMUL_BENCH_ROUNDS", text, 15),
      (e: unknown) =>
        e instanceof RangeError &&
        e.message ===
          `MATMUL_BENCH_ROUNDS must be a positive integer, got "${text}"`,
      text,
    );
  }
});
