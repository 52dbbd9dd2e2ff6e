/**
 * Fuzzing the safetensors reader: every input is rejected with a DataError
 * naming the file, or decodes to tensors that fit in the file and re-encode to
 * a file that decodes to the same tensors (to the same bytes when the input
 * was written by `encodeSafetensors`).
 */
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect } from "effect";
import {
  decodeSafetensors,
  DTYPE_ARRAY,
  encodeSafetensors,
  type Safetensors,
  type SafetensorsDtype,
  type SafetensorsTensor,
} from "../../src/common/safetensors.ts";
import {
  decodeOnce,
  fuzzParameters,
  FuzzStats,
  jsonText,
  mutatedBytes,
  randomBytes,
  weirdJson,
} from "./harness.ts";

const FILE = "fuzz/model.safetensors";
const DTYPES = Object.keys(DTYPE_ARRAY) as SafetensorsDtype[];

const tensorArb: fc.Arbitrary<SafetensorsTensor> = fc.record({
  dtype: fc.constantFrom(...DTYPES),
  shape: fc.array(fc.integer({ min: 0, max: 6 }), { maxLength: 3 }),
}).chain(({ dtype, shape }) => {
  const Typed = DTYPE_ARRAY[dtype];
  const count = shape.reduce((n, d) => n * d, 1);
  return fc.uint8Array({
    minLength: count * Typed.BYTES_PER_ELEMENT,
    maxLength: count * Typed.BYTES_PER_ELEMENT,
  }).map((b): SafetensorsTensor => ({
    dtype,
    shape,
    data: new Typed(b.buffer),
  }));
});

const nameArb = fc.oneof(
  fc.string({ minLength: 1, maxLength: 10 }),
  fc.constantFrom(
    "blk.0.attn_q.weight",
    "token_embd.weight",
    "__proto__",
    "constructor",
  ),
).filter((s) => s !== "__metadata__");

const fileArb: fc.Arbitrary<Uint8Array> = fc.tuple(
  fc.uniqueArray(fc.tuple(nameArb, tensorArb), {
    maxLength: 5,
    selector: ([n]) => n,
  }),
  fc.option(
    fc.dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 8 }), {
      minKeys: 1,
      maxKeys: 3,
    }),
    { nil: undefined },
  ),
).map(([entries, metadata]) => {
  const tensors: Record<string, SafetensorsTensor> = {};
  for (const [name, t] of entries) {
    Object.defineProperty(tensors, name, { value: t, enumerable: true });
  }
  return encodeSafetensors(tensors, metadata);
});

const headerOf = (bytes: Uint8Array): { json: unknown; dataStart: number } => {
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  return {
    json: JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))),
    dataStart: 8 + n,
  };
};

/** `bytes` with the JSON header `header` (its length field fixed up). */
const rebuild = (
  header: unknown,
  bytes: Uint8Array,
  dataStart: number,
): Uint8Array => {
  const text = new TextEncoder().encode(jsonText(header, 0));
  const out = new Uint8Array(8 + text.length + bytes.length - dataStart);
  new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
  out.set(text, 8);
  out.set(bytes.subarray(dataStart), 8 + text.length);
  return out;
};

/** A valid file with its JSON header edited (wrong types, huge offsets), lengths fixed up. */
const headerEditArb: fc.Arbitrary<Uint8Array> = fc.tuple(
  fileArb,
  fc.nat(),
  weirdJson,
  fc.constantFrom(
    "dtype",
    "shape",
    "data_offsets",
    "replace entry",
    "rename",
    "offset0",
    "offset1",
    "dim",
  ),
)
  .map(([bytes, pick, value, what]) => {
    const { json, dataStart } = headerOf(bytes);
    const header = json as Record<string, Record<string, unknown>>;
    const names = Object.keys(header);
    if (names.length > 0) {
      const name = names[pick % names.length];
      const entry = { ...header[name] };
      if (what === "rename") {
        const renamed: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(header)) {
          const key = k === name ? String(value) : k;
          Object.defineProperty(renamed, key, {
            value: v,
            enumerable: true,
            configurable: true,
          });
        }
        return rebuild(renamed, bytes, dataStart);
      }
      if (what === "replace entry") {
        header[name] = value as Record<string, unknown>;
      } else if (what === "offset0" || what === "offset1") {
        const o = [...(entry.data_offsets as number[] ?? [0, 0])];
        o[what === "offset0" ? 0 : 1] = value as number;
        entry.data_offsets = o;
        header[name] = entry;
      } else if (what === "dim") {
        const shape = [...(entry.shape as number[] ?? [])];
        shape[pick % (shape.length + 1)] = value as number;
        entry.shape = shape;
        header[name] = entry;
      } else {
        entry[what] = value;
        header[name] = entry;
      }
    }
    return rebuild(header, bytes, dataStart);
  });

const inputArb: fc.Arbitrary<[string, Uint8Array]> = fc.oneof(
  {
    weight: 1,
    arbitrary: fileArb.map((b): [string, Uint8Array] => ["valid", b]),
  },
  { weight: 5, arbitrary: fileArb.chain((b) => mutatedBytes(b, [0, 4])) },
  {
    weight: 3,
    arbitrary: headerEditArb.map((
      b,
    ): [string, Uint8Array] => ["header edits", b]),
  },
  { weight: 1, arbitrary: randomBytes() },
);

const tensorsOf = (s: Safetensors): Record<string, SafetensorsTensor> => {
  const out: Record<string, SafetensorsTensor> = {};
  for (const [name, t] of s.tensors) {
    Object.defineProperty(out, name, { value: t, enumerable: true });
  }
  return out;
};

const sameTensors = (a: Safetensors, b: Safetensors): void => {
  assert.deepEqual([...a.tensors.keys()].sort(), [...b.tensors.keys()].sort());
  for (const [name, t] of a.tensors) {
    const u = b.tensors.get(name)!;
    assert.equal(u.dtype, t.dtype);
    assert.deepEqual(u.shape, t.shape);
    assert.deepEqual(
      new Uint8Array(u.data.buffer, u.data.byteOffset, u.data.byteLength),
      new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
    );
  }
  assert.deepEqual(a.metadata, b.metadata);
};

Deno.test("fuzz: safetensors", () => {
  const stats = new FuzzStats("safetensors");
  fc.assert(
    fc.property(inputArb, ([kind, bytes]) => {
      stats.count(kind);
      const r = decodeOnce(stats, () => decodeSafetensors(bytes, FILE), FILE, [
        "DataError",
      ]);
      if (!r.ok) return;
      let held = 0;
      for (const t of r.value.tensors.values()) held += t.data.byteLength;
      assert.ok(
        held <= bytes.length,
        `${held} tensor bytes from a ${bytes.length}-byte file`,
      );
      const metadata = Object.keys(r.value.metadata).length > 0
        ? r.value.metadata
        : undefined;
      const again = encodeSafetensors(tensorsOf(r.value), metadata);
      if (kind === "valid") assert.deepEqual(again, bytes);
      const back = Effect.runSync(decodeSafetensors(again, FILE));
      sameTensors(back, r.value);
      assert.deepEqual(encodeSafetensors(tensorsOf(back), metadata), again);
    }),
    fuzzParameters(),
  );
  console.log(stats.summary());
});

/** A file of one JSON header (its length in front) and `data`. */
const withHeader = (header: string, data = new Uint8Array(0)): Uint8Array => {
  const text = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + text.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
  out.set(text, 8);
  out.set(data, 8 + text.length);
  return out;
};

const failure = (bytes: Uint8Array) =>
  Effect.runSync(Effect.flip(decodeSafetensors(bytes, FILE)));

Deno.test("regression (fuzz): a huge or deeply nested header value is quoted in at most 80 characters", () => {
  const huge = `[${"1,".repeat(500_000)}1]`;
  const deep = "[".repeat(200_000) + "]".repeat(200_000);
  const long = `"${"x".repeat(1_000_000)}"`;
  const headers = [huge, deep, long].flatMap((value) => [
    `{"t":{"dtype":"F32","shape":${value},"data_offsets":[0,0]}}`,
    `{"t":${value}}`,
    ...(value === long ? [`{${long}:5}`] : [`{"__metadata__":{"k":${value}}}`]),
  ]);
  for (const header of headers) {
    const e = failure(withHeader(header));
    assert.ok(e.message.startsWith(`${FILE}: `), e.message);
    assert.ok(e.message.length < 300, `${e.message.length} chars`);
  }
});

Deno.test("regression (fuzz): a tensor with the empty name is refused, as the writer refuses it", () => {
  const e = failure(
    withHeader(
      `{"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`,
      new Uint8Array([7]),
    ),
  );
  assert.equal(e.message, `${FILE}: a tensor has the empty name ""`);
});

Deno.test("a header or tensor claiming 2^60 bytes is refused without allocating it", () => {
  const bytes = withHeader(`{}`);
  new DataView(bytes.buffer).setBigUint64(0, 2n ** 60n, true);
  assert.match(
    failure(bytes).message,
    /header length 1152921504606846976 is over/,
  );
  const e = failure(
    withHeader(
      `{"t":{"dtype":"U8","shape":[${2 ** 52}],"data_offsets":[0,${2 ** 52}]}}`,
    ),
  );
  assert.match(
    e.message,
    /truncated: tensor "t" needs data bytes \[0, 4503599627370496\)/,
  );
});
