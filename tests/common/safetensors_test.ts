import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Cause, Effect, Exit } from "effect";
import {
  decodeSafetensors,
  DTYPE_ARRAY,
  encodeSafetensors,
  readSafetensors,
  type Safetensors,
  type SafetensorsDtype,
  type SafetensorsTensor,
  writeSafetensors,
} from "../../src/common/safetensors.ts";
import { writeFileAtomic } from "../../src/common/atomic_write.ts";
import { DataError } from "../../src/common/text_sources.ts";

const FILE = "m.safetensors";
const DTYPES: SafetensorsDtype[] = ["F32", "F16", "BF16", "I32", "I8", "U8"];

/** The DataError of an effect that must fail; a success or a defect fails the test. */
const failure = <A>(effect: Effect.Effect<A, DataError>): DataError => {
  const exit = Effect.runSyncExit(effect);
  if (Exit.isSuccess(exit)) assert.fail("expected a DataError, got a success");
  const err = Cause.findErrorOption(exit.cause);
  assert.ok(err._tag === "Some", `not a typed failure: ${exit.cause}`);
  assert.ok(err.value instanceof DataError);
  return err.value;
};

const decodeMessage = (bytes: Uint8Array): string => {
  const e = failure(decodeSafetensors(bytes, FILE));
  assert.equal(e.file, FILE);
  assert.ok(e.message.startsWith(`${FILE}: `), e.message);
  return e.message;
};

const decoded = (bytes: Uint8Array): Safetensors =>
  Effect.runSync(decodeSafetensors(bytes, FILE));

const rawBytes = (t: SafetensorsTensor): number[] =>
  Array.from(
    new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
  );

/** A file with the given header text (padded to 8) and data bytes. */
const fileOf = (header: string, data: number[] = []): Uint8Array => {
  const json = new TextEncoder().encode(header);
  const n = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + n + data.length).fill(0x20, 8, 8 + n);
  new DataView(out.buffer).setBigUint64(0, BigInt(n), true);
  out.set(json, 8);
  out.set(data, 8 + n);
  return out;
};

const le32 = (values: number[]): number[] =>
  Array.from(new Uint8Array(new Float32Array(values).buffer));

Deno.test("known answer: one F32 tensor, header padded with spaces to 8", () => {
  const bytes = encodeSafetensors({
    attn0: {
      dtype: "F32",
      shape: [1, 1, 2, 3],
      data: new Float32Array([0, 1, 2, 3, 4, 5]),
    },
  });
  // 65 bytes of JSON + 7 spaces = 72; the data starts at 8 + 72 = 80, and
  // 6 floats are 24 bytes. Same bytes as Hugging Face's
  // test_serialization_forced_alignement.
  const header =
    '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}';
  assert.equal(header.length, 65);
  const expected = [
    72,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    ...new TextEncoder().encode(header + " ".repeat(7)),
    ...[0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64],
    ...[0, 0, 128, 64, 0, 0, 160, 64],
  ];
  assert.deepEqual(Array.from(bytes), expected);
  const back = decoded(bytes).tensors.get("attn0")!;
  assert.deepEqual(Array.from(back.data), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(back.shape, [1, 1, 2, 3]);
});

Deno.test("known answer: no tensors, metadata only", () => {
  const bytes = encodeSafetensors({}, { framework: "pt" });
  const header = '{"__metadata__":{"framework":"pt"}}';
  assert.deepEqual(Array.from(bytes), [
    40,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    ...new TextEncoder().encode(header + " ".repeat(40 - header.length)),
  ]);
  assert.deepEqual(decoded(bytes).metadata, { framework: "pt" });
  assert.equal(decoded(bytes).tensors.size, 0);
  assert.deepEqual(
    Array.from(encodeSafetensors({})),
    [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32],
  );
});

Deno.test("known answer: wider dtypes first, then names; offsets follow", () => {
  const bytes = encodeSafetensors({
    a: { dtype: "U8", shape: [3], data: new Uint8Array([1, 2, 3]) },
    c: { dtype: "F16", shape: [1], data: new Uint16Array([0x3c00]) },
    b: { dtype: "F32", shape: [], data: new Float32Array([1]) },
    d: { dtype: "F32", shape: [0, 2], data: new Float32Array(0) },
  }, { z: "1", a: "2" });
  const header = '{"__metadata__":{"a":"2","z":"1"},' +
    '"b":{"dtype":"F32","shape":[],"data_offsets":[0,4]},' +
    '"d":{"dtype":"F32","shape":[0,2],"data_offsets":[4,4]},' +
    '"c":{"dtype":"F16","shape":[1],"data_offsets":[4,6]},' +
    '"a":{"dtype":"U8","shape":[3],"data_offsets":[6,9]}}';
  assert.deepEqual(
    Array.from(bytes),
    Array.from(fileOf(header, [...le32([1]), 0x00, 0x3c, 1, 2, 3])),
  );
  const back = decoded(bytes);
  assert.deepEqual([...back.tensors.keys()], ["b", "d", "c", "a"]);
  assert.deepEqual(back.metadata, { a: "2", z: "1" });
  assert.ok(back.tensors.get("c")!.data instanceof Uint16Array);
});

Deno.test("names sort by code point, as Rust's UTF-8 byte order does", () => {
  const t = (): SafetensorsTensor => ({
    dtype: "U8",
    shape: [1],
    data: new Uint8Array([7]),
  });
  // JS `<` would put U+10000 (a surrogate pair) before U+FFFF.
  const bytes = encodeSafetensors({ "\u{10000}": t(), "\uffff": t() });
  const text = new TextDecoder().decode(bytes);
  assert.ok(text.indexOf("\uffff") < text.indexOf("\u{10000}"));
  assert.deepEqual([...decoded(bytes).tensors.keys()], ["\uffff", "\u{10000}"]);
});

Deno.test("__proto__ as a tensor name and metadata key round-trips", () => {
  const tensors: Record<string, SafetensorsTensor> = {};
  Object.defineProperty(tensors, "__proto__", {
    value: { dtype: "I8", shape: [2], data: new Int8Array([-1, 1]) },
    enumerable: true,
  });
  const metadata: Record<string, string> = {};
  Object.defineProperty(metadata, "__proto__", {
    value: "x",
    enumerable: true,
  });
  const back = decoded(encodeSafetensors(tensors, metadata));
  assert.deepEqual(Array.from(back.tensors.get("__proto__")!.data), [-1, 1]);
  assert.equal(
    Object.getOwnPropertyDescriptor(back.metadata, "__proto__")?.value,
    "x",
  );
});

const tensorArb: fc.Arbitrary<SafetensorsTensor> = fc.record({
  dtype: fc.constantFrom(...DTYPES),
  shape: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 3 }),
}).chain(({ dtype, shape }) => {
  const size = DTYPE_ARRAY[dtype].BYTES_PER_ELEMENT;
  const count = shape.reduce((n, d) => n * d, 1);
  return fc.uint8Array({ minLength: count * size, maxLength: count * size })
    .map((raw) => ({
      dtype,
      shape,
      data: new DTYPE_ARRAY[dtype](raw.buffer, raw.byteOffset, count),
    }));
});

const setArb = fc.dictionary(
  fc.string({ minLength: 1, maxLength: 8 }).filter((s) => s !== "__metadata__"),
  tensorArb,
  { maxKeys: 6 },
);
const metaArb = fc.option(fc.dictionary(fc.string(), fc.string()), {
  nil: undefined,
});

Deno.test("round trip: any tensor set, bytes deterministic, data aligned views (property)", () => {
  fc.assert(
    fc.property(setArb, metaArb, (tensors, metadata) => {
      const bytes = encodeSafetensors(tensors, metadata);
      const headerLength = Number(
        new DataView(bytes.buffer).getBigUint64(0, true),
      );
      assert.equal(headerLength % 8, 0);
      // Insertion order does not change the bytes.
      const reversed = Object.fromEntries(Object.entries(tensors).reverse());
      assert.deepEqual(encodeSafetensors(reversed, metadata), bytes);
      const back = decoded(bytes);
      assert.deepEqual(back.metadata, { ...metadata });
      assert.deepEqual(
        [...back.tensors.keys()].sort(),
        Object.keys(tensors).sort(),
      );
      for (const [name, t] of back.tensors) {
        const want = tensors[name];
        assert.equal(t.dtype, want.dtype);
        assert.deepEqual(t.shape, want.shape);
        assert.ok(t.data instanceof DTYPE_ARRAY[want.dtype]);
        assert.deepEqual(rawBytes(t), rawBytes(want));
        assert.equal(t.data.buffer, bytes.buffer, `${name} is not a view`);
      }
    }),
    { numRuns: 200 },
  );
});

Deno.test("a misaligned input buffer gives copies with the same values", () => {
  const bytes = encodeSafetensors({
    w: { dtype: "F32", shape: [3], data: new Float32Array([1.5, -2, 3]) },
    i: { dtype: "I32", shape: [1], data: new Int32Array([-7]) },
  });
  const shifted = new Uint8Array(bytes.length + 1);
  shifted.set(bytes, 1);
  const back = decoded(shifted.subarray(1));
  assert.deepEqual(Array.from(back.tensors.get("w")!.data), [1.5, -2, 3]);
  assert.deepEqual(Array.from(back.tensors.get("i")!.data), [-7]);
  assert.notEqual(back.tensors.get("w")!.data.buffer, shifted.buffer);
});

Deno.test("encode refuses bad input, naming the tensor", () => {
  const f32 = (n: number) => new Float32Array(n);
  const cases: [Record<string, SafetensorsTensor>, RegExp][] = [
    [
      { w: { dtype: "F32", shape: [2, 2], data: f32(3) } },
      /tensors\["w"\]: shape \[2,2\] needs 4 elements, data has 3/,
    ],
    [
      { w: { dtype: "F16", shape: [2], data: f32(2) } },
      /tensors\["w"\]: F16 data must be a Uint16Array, got Float32Array/,
    ],
    [
      { w: { dtype: "F32", shape: [-1], data: f32(0) } },
      /tensors\["w"\]: shape \[-1\] must hold non-negative integers/,
    ],
    [
      { w: { dtype: "F64" as SafetensorsDtype, shape: [1], data: f32(1) } },
      /tensors\["w"\]: unsupported dtype "F64"/,
    ],
    [
      { __metadata__: { dtype: "F32", shape: [1], data: f32(1) } },
      /the name "__metadata__" is reserved/,
    ],
    [{ "": { dtype: "F32", shape: [1], data: f32(1) } }, /reserved/],
  ];
  for (const [tensors, message] of cases) {
    assert.throws(() => encodeSafetensors(tensors), message);
  }
  assert.throws(
    () => encodeSafetensors({}, { k: 1 as unknown as string }),
    /metadata\["k"\] must be a string/,
  );
});

const entry = (dtype: string, shape: unknown, offsets: unknown) =>
  JSON.stringify({ dtype, shape, data_offsets: offsets });

Deno.test("decode errors name the file and the tensor", () => {
  const eight = [1, 2, 3, 4, 5, 6, 7, 8];
  const cases: [Uint8Array, string][] = [
    [
      new Uint8Array(5),
      "truncated: 5 bytes, fewer than the 8-byte header length",
    ],
    [
      (() => {
        const b = fileOf("{}");
        new DataView(b.buffer).setBigUint64(0, 100n, true);
        return b;
      })(),
      "truncated: header says 100 bytes, file has 8 after the 8-byte length",
    ],
    [
      (() => {
        const b = fileOf("{}");
        new DataView(b.buffer).setBigUint64(0, 2n ** 63n, true);
        return b;
      })(),
      "header length 9223372036854775808 is over the 100000000-byte limit (not a safetensors file?)",
    ],
    [fileOf('{"a":'), "header is not valid JSON"],
    [fileOf("[1, 2]"), "header is not a JSON object"],
    [
      (() => {
        const b = fileOf('{"\u00e9":1}');
        b[10] = 0xff;
        return b;
      })(),
      "header is not valid JSON",
    ],
    [
      fileOf(`{"w":${entry("F64", [1], [0, 8])}}`, eight),
      'tensor "w": unknown dtype "F64" (supported: F32, I32, BF16, F16, I8, U8)',
    ],
    [
      fileOf(`{"w":${entry("F32", [1.5], [0, 4])}}`, eight.slice(4)),
      'tensor "w": shape [1.5] is not a list of non-negative integers',
    ],
    [
      fileOf(`{"w":${entry("F32", [1], [0])}}`, eight.slice(4)),
      'tensor "w": data_offsets [0] is not [begin, end] in bytes',
    ],
    [
      fileOf(`{"w":${entry("F32", [2], [4, 0])}}`, eight),
      'tensor "w": data_offsets [4, 0] end before they begin',
    ],
    [
      fileOf(`{"w":${entry("F32", [3], [0, 8])}}`, eight),
      'tensor "w": shape [3] of F32 needs 12 bytes, but data_offsets [0, 8] hold 8',
    ],
    [
      fileOf(`{"w":${entry("F32", [3], [0, 12])}}`, eight),
      'truncated: tensor "w" needs data bytes [0, 12), the file holds 8',
    ],
    [
      fileOf(
        `{"a":${entry("U8", [6], [0, 6])},"b":${entry("U8", [4], [4, 8])}}`,
        eight,
      ),
      'tensors "a" [0, 6] and "b" [4, 8] overlap (data_offsets)',
    ],
    [
      fileOf(`{"a":${entry("U8", [4], [0, 4])},"b":"x"}`, eight.slice(4)),
      'tensor "b": expected {dtype, shape, data_offsets}, got "x"',
    ],
    [
      fileOf(
        `{"a":${entry("U8", [2], [0, 2])},"b":${entry("U8", [4], [4, 8])}}`,
        eight,
      ),
      'data bytes [2, 4) before tensor "b" belong to no tensor',
    ],
    [
      fileOf(`{"a":${entry("U8", [4], [0, 4])}}`, eight),
      "4 bytes after the last tensor belong to no tensor",
    ],
    [
      fileOf('{"__metadata__":{"k":1}}'),
      '__metadata__["k"] is 1, not a string',
    ],
    [fileOf('{"__metadata__":[]}'), "__metadata__ is not an object of strings"],
  ];
  for (const [bytes, message] of cases) {
    const got = decodeMessage(bytes);
    assert.ok(
      got.startsWith(`${FILE}: ${message}`),
      `${got}\n  does not start with\n${FILE}: ${message}`,
    );
  }
});

Deno.test("a file cut anywhere is a DataError, never a throw (property)", () => {
  fc.assert(
    fc.property(
      setArb.filter((t) => Object.values(t).some((x) => x.data.byteLength > 0)),
      fc.double({ min: 0, max: 1, maxExcluded: true }),
      (tensors, at) => {
        const bytes = encodeSafetensors(tensors);
        const cut = Math.floor(at * bytes.length);
        const message = decodeMessage(bytes.subarray(0, cut));
        assert.match(message, /^m\.safetensors: truncated: /);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("any corrupted byte decodes or fails with a DataError (property)", () => {
  fc.assert(
    fc.property(setArb, fc.nat(), fc.nat(255), (tensors, i, value) => {
      const bytes = encodeSafetensors(tensors).slice();
      bytes[i % bytes.length] = value;
      const exit = Effect.runSyncExit(decodeSafetensors(bytes, FILE));
      if (Exit.isFailure(exit)) {
        const err = Cause.findErrorOption(exit.cause);
        assert.ok(err._tag === "Some", `defect: ${exit.cause}`);
        assert.ok(err.value instanceof DataError);
      }
    }),
    { numRuns: 300 },
  );
});

const withDir = async (body: (dir: string) => Promise<void>) => {
  const dir = await Deno.makeTempDir();
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
};

const names = async (dir: string): Promise<string[]> => {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
};

Deno.test("writeSafetensors / readSafetensors: round trip, replace, errors", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/w.safetensors`;
    const w = new Float32Array([1, 2, 3, 4]);
    await Effect.runPromise(
      writeSafetensors(path, { w: { dtype: "F32", shape: [2, 2], data: w } }, {
        step: "3",
      }),
    );
    let back = await Effect.runPromise(readSafetensors(path));
    assert.deepEqual(Array.from(back.tensors.get("w")!.data), [1, 2, 3, 4]);
    assert.deepEqual(back.metadata, { step: "3" });
    await Effect.runPromise(
      writeSafetensors(path, {
        w: { dtype: "F32", shape: [1], data: new Float32Array([9]) },
      }),
    );
    back = await Effect.runPromise(readSafetensors(path));
    assert.deepEqual(Array.from(back.tensors.get("w")!.data), [9]);

    // Invalid input: a DataError naming path and tensor; the file stays.
    const bad = await Effect.runPromise(Effect.flip(
      writeSafetensors(path, {
        w: { dtype: "F32", shape: [5], data: new Float32Array(1) },
      }),
    ));
    assert.equal(bad.file, path);
    assert.equal(
      bad.message,
      `cannot write ${path}: tensors["w"]: shape [5] needs 5 elements, data has 1`,
    );
    back = await Effect.runPromise(readSafetensors(path));
    assert.deepEqual(Array.from(back.tensors.get("w")!.data), [9]);

    const missing = await Effect.runPromise(
      Effect.flip(readSafetensors(`${dir}/nope.safetensors`)),
    );
    assert.equal(missing.message, `${dir}/nope.safetensors: file not found`);

    await Deno.writeFile(`${dir}/cut.safetensors`, new Uint8Array(3));
    const cut = await Effect.runPromise(
      Effect.flip(readSafetensors(`${dir}/cut.safetensors`)),
    );
    assert.match(cut.message, /cut\.safetensors: truncated/);
    assert.deepEqual(await names(dir), ["cut.safetensors", "w.safetensors"]);
  });
});

Deno.test("writeFileAtomic: replaces whole files; a failed write leaves no temp file", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/f.txt`;
    await Effect.runPromise(writeFileAtomic(path, "old"));
    await Effect.runPromise(writeFileAtomic(path, new Uint8Array([110, 101])));
    assert.equal(await Deno.readTextFile(path), "ne");

    // Renaming over a non-empty directory fails after the temp file exists.
    await Deno.mkdir(`${dir}/d`);
    await Deno.writeTextFile(`${dir}/d/x`, "x");
    const e = await Effect.runPromise(
      Effect.flip(writeFileAtomic(`${dir}/d`, "y")),
    );
    assert.equal(e.file, `${dir}/d`);
    assert.match(e.message, new RegExp(`^cannot write ${dir}/d: `));

    const missingDir = await Effect.runPromise(
      Effect.flip(writeFileAtomic(`${dir}/no/f.txt`, "y")),
    );
    assert.match(missingDir.message, /^cannot write .*no\/f\.txt: /);
    assert.deepEqual(await names(dir), ["d", "f.txt"]);
  });
});
