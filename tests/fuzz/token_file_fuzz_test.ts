/**
 * Fuzzing the token-file reader: every input is rejected with a DataError
 * naming the file, or gives ids that fit in the file and re-encode to the
 * same bytes.
 */
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect } from "effect";
import {
  encodeTokenFile,
  parseTokenFile,
  TOKEN_FILE_HEADER_BYTES,
} from "../../src/common/token_file.ts";
import {
  decodeOnce,
  fuzzParameters,
  FuzzStats,
  mutatedBytes,
  randomBytes,
} from "./harness.ts";

const FILE = "fuzz/train.tok";

const hashArb = fc.uint8Array({ minLength: 32, maxLength: 32 });

const fileArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.tuple(fc.array(fc.nat({ max: 65535 }), { maxLength: 200 }), hashArb).map((
    [ids, hash],
  ) => encodeTokenFile(ids, 65536, hash)),
  fc.tuple(fc.array(fc.nat(), { maxLength: 100 }), hashArb).map((
    [ids, hash],
  ) => encodeTokenFile(ids, 2 ** 32, hash)),
);

// The version, dtype and count fields, and the padding after the hash.
const FIELDS = [4, 8, 12, 16, 52, 56, 60];

/** Bytes, the hash the caller expects (none, the file's own or another), and whether the copy is unaligned. */
const inputArb: fc.Arbitrary<
  [string, Uint8Array, "none" | "own" | "other", boolean]
> = fc
  .tuple(
    fc.oneof(
      {
        weight: 1,
        arbitrary: fileArb.map((b): [string, Uint8Array] => ["valid", b]),
      },
      { weight: 6, arbitrary: fileArb.chain((b) => mutatedBytes(b, FIELDS)) },
      { weight: 1, arbitrary: randomBytes() },
    ),
    fc.constantFrom("none" as const, "own" as const, "other" as const),
    fc.boolean(),
  ).map(([[kind, bytes], hash, unaligned]) => [kind, bytes, hash, unaligned]);

Deno.test("fuzz: token file header", () => {
  const stats = new FuzzStats("token file");
  fc.assert(
    fc.property(inputArb, ([kind, bytes, hash, unaligned]) => {
      stats.count(kind);
      // A plain read may give a buffer at an odd offset.
      const input = unaligned
        ? new Uint8Array(bytes.length + 1).subarray(1)
        : new Uint8Array(bytes.length);
      input.set(bytes);
      const expectedHash = hash === "none"
        ? undefined
        : hash === "own"
        ? bytes.slice(20, 52)
        : new Uint8Array(32).fill(7);
      const r = decodeOnce(
        stats,
        () => parseTokenFile(input, FILE, expectedHash),
        FILE,
        ["DataError"],
      );
      if (!r.ok) return;
      const { ids, tokenizerHash } = r.value;
      assert.ok(ids.byteLength <= input.length);
      const vocab = ids instanceof Uint16Array ? 65536 : 2 ** 32;
      assert.deepEqual(encodeTokenFile(ids, vocab, tokenizerHash), bytes);
    }),
    fuzzParameters(),
  );
  console.log(stats.summary());
});

const failure = (bytes: Uint8Array) =>
  Effect.runSync(Effect.flip(parseTokenFile(bytes, FILE)));

Deno.test("regression (fuzz): non-zero bytes in the header's padding are refused", () => {
  const bytes = encodeTokenFile([1, 2, 3], 512, new Uint8Array(32));
  for (const at of [52, 63]) {
    const bad = bytes.slice();
    bad[at] = 1;
    assert.equal(
      failure(bad).message,
      `token file ${FILE}: header bytes 52–63 must be zero (byte ${at} is 1)`,
    );
  }
});

Deno.test("a header claiming 2^60 tokens is refused without allocating them", () => {
  const bytes = encodeTokenFile([1, 2, 3], 512, new Uint8Array(32));
  new DataView(bytes.buffer).setBigUint64(12, 2n ** 60n, true);
  assert.match(
    failure(bytes).message,
    /70 bytes, but its header announces 1152921504606846976 u16 tokens .*truncated/,
  );
  assert.equal(TOKEN_FILE_HEADER_BYTES + 3 * 2, 70);
});
