import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect, Exit } from "effect";
import {
  decodePacked,
  encodePacked,
  PACKED_ALIGNMENT,
  readPacked,
  writePacked,
} from "../../src/infer/formats/packed.ts";
import { ExportError } from "../../src/infer/formats/errors.ts";
import type { ModelWeights } from "../../src/infer/weights.ts";
import { tinyModel } from "./model_gen.ts";
import { assertSameWeights, tinyWeights } from "./formats_gen.ts";

const decode = (bytes: Uint8Array) =>
  Effect.runSync(Effect.exit(decodePacked(bytes, "m.packed")));

const decoded = (bytes: Uint8Array): ModelWeights => {
  const exit = decode(bytes);
  if (Exit.isFailure(exit)) throw new Error(String(exit.cause));
  return exit.value;
};

Deno.test("packed: read(write(w)) equals w for random configs and bit maps (2-bit and base-3)", () => {
  fc.assert(
    fc.property(
      tinyModel,
      fc.boolean(),
      fc.constantFrom(0, 1),
      (m, base3, lambda) => {
        const w = tinyWeights(m, lambda);
        const bytes = encodePacked(w, { base3 });
        assertSameWeights(decoded(bytes), w);
        // Deterministic: the same weights give the same bytes.
        assert.deepEqual(encodePacked(w, { base3 }), bytes);
      },
    ),
    { numRuns: 40 },
  );
});

Deno.test("packed: every tensor segment is 64-byte aligned and ternary codes take 2 or 1.6 bits", () => {
  const w = tinyWeights(fc.sample(tinyModel, { numRuns: 1, seed: 7 })[0]);
  for (const base3 of [false, true]) {
    const bytes = encodePacked(w, { base3 });
    const length = new DataView(bytes.buffer).getUint32(12, true);
    const header = JSON.parse(
      new TextDecoder().decode(bytes.subarray(16, 16 + length)),
    );
    for (const e of header.tensors) {
      assert.equal(e.offset % PACKED_ALIGNMENT, 0, e.name);
      if (e.scales_offset !== undefined) {
        assert.equal(e.scales_offset % PACKED_ALIGNMENT, 0);
      }
      const n = e.shape.reduce((a: number, b: number) => a * b, 1);
      if (e.encoding === "ternary2") assert.equal(e.bytes, Math.ceil(n / 4));
      if (e.encoding === "ternary_base3") {
        assert.equal(e.bytes, Math.ceil(n / 5));
      }
    }
  }
});

Deno.test("packed: weights that do not match the config are refused naming the tensor", () => {
  const w = tinyWeights(fc.sample(tinyModel, { numRuns: 1, seed: 3 })[0]);
  const tensors = new Map(w.tensors);
  tensors.delete("output_norm.weight");
  assert.throws(
    () => encodePacked({ ...w, tensors }),
    (e) => e instanceof ExportError && e.message.includes("output_norm.weight"),
  );
  // An f16-mode value beyond the f16 range is refused, not written as Infinity.
  const f16 = tinyWeights(
    fc.sample(tinyModel.filter((m) => m.bitMap.embedding === "f16"), {
      numRuns: 1,
      seed: 3,
    })[0],
  );
  const embedding = f16.tensors.get("token_embd.weight")!;
  assert.equal(embedding.kind, "dense");
  const data = (embedding as { data: Float32Array }).data.slice();
  data[3] = 1e6;
  const big = new Map(f16.tensors).set(
    "token_embd.weight",
    {
      ...embedding,
      data,
    } as typeof embedding,
  );
  assert.throws(
    () => encodePacked({ ...f16, tensors: big }),
    (e) =>
      e instanceof ExportError &&
      /token_embd\.weight: value 3 .* f16 range/.test(e.message),
  );
});

// A fixed model whose file the mutations start from.
const base = tinyWeights(fc.sample(tinyModel, { numRuns: 1, seed: 11 })[0]);
const good = encodePacked(base);

const failsAsDataError = (bytes: Uint8Array): void => {
  const exit = decode(bytes);
  if (Exit.isSuccess(exit)) return; // a mutation may hit padding or be benign
  const e = exit.cause.toString();
  assert.ok(e.includes("DataError") && e.includes("m.packed"), e);
};

Deno.test("packed reader: truncations, bit flips and overwrites fail as a DataError naming the file", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: good.length - 1 }), (n) => {
      const exit = decode(good.subarray(0, n));
      assert.ok(Exit.isFailure(exit));
      failsAsDataError(good.subarray(0, n));
    }),
    { numRuns: 100 },
  );
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 })), {
        minLength: 1,
        maxLength: 8,
      }),
      (flips) => {
        const b = good.slice();
        for (const [at, bit] of flips) b[at % b.length] ^= 1 << bit;
        failsAsDataError(b);
      },
    ),
    { numRuns: 200 },
  );
  // Bit flips concentrated in the fixed header and the JSON.
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 400 }),
      fc.integer({ min: 0, max: 7 }),
      (at, bit) => {
        const b = good.slice();
        b[at] ^= 1 << bit;
        failsAsDataError(b);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("packed reader: wrong magic, version, huge header length and foreign bytes are refused", () => {
  const cases: Array<[string, (b: Uint8Array) => void, string]> = [
    [
      "magic",
      (b) => b.set(new TextEncoder().encode("GGUF"), 0),
      "not a packed model file",
    ],
    [
      "version",
      (b) => new DataView(b.buffer).setUint32(8, 2, true),
      "version 2",
    ],
    [
      "header length",
      (b) => new DataView(b.buffer).setUint32(12, 0xffffffff, true),
      "truncated",
    ],
  ];
  for (const [what, mutate, text] of cases) {
    const b = good.slice();
    mutate(b);
    const exit = decode(b);
    assert.ok(Exit.isFailure(exit), what);
    assert.ok(String(exit.cause).includes(text), `${what}: ${exit.cause}`);
  }
  failsAsDataError(new Uint8Array(0));
  failsAsDataError(crypto.getRandomValues(new Uint8Array(4096)));
});

Deno.test("packed reader: an offset of 2^52 in the header is refused without allocating", () => {
  const length = new DataView(good.buffer).getUint32(12, true);
  const header = JSON.parse(
    new TextDecoder().decode(good.subarray(16, 16 + length)),
  );
  header.tensors[1].offset = 2 ** 52;
  const text = new TextEncoder().encode(JSON.stringify(header));
  const b = new Uint8Array(good.length + text.length);
  b.set(good.subarray(0, 16));
  new DataView(b.buffer).setUint32(12, text.length, true);
  b.set(text, 16);
  const exit = decode(b);
  assert.ok(Exit.isFailure(exit));
  assert.match(String(exit.cause), /truncated|multiple of 64/);
});

Deno.test("packed: writePacked and readPacked round trip through a file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/m.packed`;
    const size = await Effect.runPromise(
      writePacked(path, base, { base3: true }),
    );
    assert.equal((await Deno.stat(path)).size, size);
    assertSameWeights(await Effect.runPromise(readPacked(path)), base);
    const exit = await Effect.runPromise(
      Effect.exit(readPacked(`${dir}/missing`)),
    );
    assert.ok(
      Exit.isFailure(exit) && String(exit.cause).includes("file not found"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
