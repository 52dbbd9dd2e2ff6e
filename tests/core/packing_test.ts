import fc from "fast-check";
import { strict as assert } from "node:assert";
import {
  pack2bit,
  packBase3,
  packBinary,
  packed2bitLength,
  packedBase3Length,
  packedBinaryLength,
  unpack2bit,
  unpackBase3,
  unpackBinary,
} from "../../src/core/packing.ts";

/** Lengths that straddle every packing group size (4, 5, 8, 256), plus random ones. */
const length: fc.Arbitrary<number> = fc.oneof(
  fc.constantFrom(0, 1, 3, 4, 5, 7, 8, 9, 10, 255, 256, 257),
  fc.integer({ min: 0, max: 2000 }),
);
const ternary: fc.Arbitrary<Int8Array> = length.chain((n) =>
  fc.int8Array({ min: -1, max: 1, minLength: n, maxLength: n })
);
const signs: fc.Arbitrary<Int8Array> = length.chain((n) =>
  fc.array(fc.constantFrom(-1, 1), { minLength: n, maxLength: n })
    .map((a) => Int8Array.from(a))
);

const throwsRange = (f: () => unknown, pattern: RegExp): void => {
  assert.throws(
    f,
    (e: unknown) => e instanceof RangeError && pattern.test(e.message),
  );
};

Deno.test("pack2bit: round trip for any length, padding is code 0", () => {
  fc.assert(
    fc.property(ternary, (codes) => {
      const n = codes.length;
      const bytes = pack2bit(codes);
      assert.equal(bytes.length, Math.ceil(n / 4));
      assert.equal(packed2bitLength(n), bytes.length);
      assert.deepEqual(unpack2bit(bytes, n), codes);
      // Reading the whole last byte shows zero codes past the end.
      const all = unpack2bit(bytes, 4 * bytes.length);
      assert.deepEqual(all.subarray(0, n), codes);
      assert.ok(all.subarray(n).every((q) => q === 0));
    }),
    { numRuns: 300 },
  );
});

Deno.test("pack2bit: code i sits in byte i>>2 at bits 2(i&3)", () => {
  fc.assert(
    fc.property(ternary, (codes) => {
      const bytes = pack2bit(codes);
      for (let i = 0; i < codes.length; i++) {
        assert.equal((bytes[i >> 2] >> (2 * (i % 4))) & 3, codes[i] + 1);
      }
    }),
    { numRuns: 100 },
  );
  // c = 2,0,1,2 → 0b10_01_00_10; then c = 0 and three pads (c = 1) → 0b01_01_01_00
  assert.deepEqual(
    pack2bit(Int8Array.of(1, -1, 0, 1, -1)),
    Uint8Array.of(0x92, 0x54),
  );
});

Deno.test("pack2bit: packing inverts unpacking on valid bytes", () => {
  const field = fc.integer({ min: 0, max: 2 });
  const valid = fc.array(fc.tuple(field, field, field, field), {
    maxLength: 300,
  }).map((groups) =>
    Uint8Array.from(groups, ([a, b, c, d]) => a | b << 2 | c << 4 | d << 6)
  );
  fc.assert(
    fc.property(valid, (bytes) => {
      assert.deepEqual(pack2bit(unpack2bit(bytes, 4 * bytes.length)), bytes);
    }),
  );
});

Deno.test("packBase3: round trip for any length, padding is code 0", () => {
  fc.assert(
    fc.property(ternary, (codes) => {
      const n = codes.length;
      const bytes = packBase3(codes);
      assert.equal(bytes.length, Math.ceil(n / 5));
      assert.equal(packedBase3Length(n), bytes.length);
      assert.ok(bytes.every((b) => b < 243));
      assert.deepEqual(unpackBase3(bytes, n), codes);
      const all = unpackBase3(bytes, 5 * bytes.length);
      assert.ok(all.subarray(n).every((q) => q === 0));
    }),
    { numRuns: 300 },
  );
});

Deno.test("packBase3: byte = Σ c_j·3^j, first code least significant", () => {
  fc.assert(
    fc.property(ternary, (codes) => {
      const bytes = packBase3(codes);
      for (let k = 0; k < bytes.length; k++) {
        let v = 0;
        for (let j = 0; j < 5; j++) {
          const i = 5 * k + j;
          v += (i < codes.length ? codes[i] + 1 : 1) * 3 ** j;
        }
        assert.equal(bytes[k], v);
      }
    }),
    { numRuns: 100 },
  );
  // c = 2,0,1,2,0 → 2 + 9 + 54 = 65; c = 2 then pads 1 → 2 + 3 + 9 + 27 + 81 = 122
  assert.deepEqual(
    packBase3(Int8Array.of(1, -1, 0, 1, -1, 1)),
    Uint8Array.of(65, 122),
  );
  const all = Uint8Array.from({ length: 243 }, (_, i) => i);
  assert.deepEqual(packBase3(unpackBase3(all, 5 * 243)), all);
});

Deno.test("packBinary: round trip for any length, LSB-first bits", () => {
  fc.assert(
    fc.property(signs, (s) => {
      const n = s.length;
      const bytes = packBinary(s);
      assert.equal(bytes.length, Math.ceil(n / 8));
      assert.equal(packedBinaryLength(n), bytes.length);
      assert.deepEqual(unpackBinary(bytes, n), s);
      for (let i = 0; i < n; i++) {
        assert.equal((bytes[i >> 3] >> (i % 8)) & 1, s[i] === 1 ? 1 : 0);
      }
      if (n % 8 !== 0) assert.equal(bytes[bytes.length - 1] >> (n % 8), 0);
    }),
    { numRuns: 300 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      assert.deepEqual(
        packBinary(unpackBinary(bytes, 8 * bytes.length)),
        bytes,
      );
    }),
  );
  // +1 at bits 0, 3..7 → 0b11111001; +1 at bit 1 of the second byte
  assert.deepEqual(
    packBinary(Int8Array.of(1, -1, -1, 1, 1, 1, 1, 1, -1, 1)),
    Uint8Array.of(0xf9, 0x02),
  );
});

Deno.test("packing: invalid input throws a RangeError naming the argument", () => {
  throwsRange(() => pack2bit(Int8Array.of(0, 1, 0, 2)), /codes\[3\] = 2/);
  throwsRange(() => pack2bit(Int8Array.of(-2)), /codes\[0\] = -2/);
  throwsRange(() => packBase3(Int8Array.of(0, 0, 0, 0, 0, 0, 5)), /codes\[6\]/);
  throwsRange(() => packBinary(Int8Array.of(1, 0)), /signs\[1\] = 0/);
  throwsRange(() => unpack2bit(new Uint8Array(2), 9), /bytes has 2 bytes, 3/);
  throwsRange(() => unpackBase3(new Uint8Array(2), 11), /bytes has 2 bytes, 3/);
  throwsRange(() => unpackBinary(new Uint8Array(1), 9), /bytes has 1 bytes, 2/);
  throwsRange(() => unpack2bit(Uint8Array.of(0x55, 0x3f), 6), /bytes\[1\]/);
  throwsRange(() => unpackBase3(Uint8Array.of(0, 243), 6), /bytes\[1\] = 243/);
  for (const n of [-1, 1.5, NaN]) {
    throwsRange(() => unpack2bit(new Uint8Array(8), n), /^n must/);
    throwsRange(() => unpackBase3(new Uint8Array(8), n), /^n must/);
    throwsRange(() => unpackBinary(new Uint8Array(8), n), /^n must/);
  }
  // Padding beyond n is not read, so an invalid field there is accepted.
  assert.deepEqual(unpack2bit(Uint8Array.of(0xc1), 1), Int8Array.of(0));
});
