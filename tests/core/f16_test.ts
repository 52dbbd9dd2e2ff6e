import fc from "fast-check";
import { strict as assert } from "node:assert";
import {
  f16BitsToF32,
  f16BitsToF32Array,
  f32ArrayToF16Bits,
  f32ToF16Bits,
  roundToF16,
} from "../../src/core/f16.ts";

const isNaNBits = (h: number): boolean =>
  (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;

// deno-lint-ignore no-explicit-any
const g = globalThis as any;
const nativeF16: boolean = typeof g.Float16Array === "function" &&
  typeof (Math as unknown as { f16round?: unknown }).f16round === "function";

Deno.test("f16: every non-NaN bit pattern round-trips through its value", () => {
  for (let h = 0; h < 0x10000; h++) {
    const v = f16BitsToF32(h);
    if (isNaNBits(h)) {
      assert.ok(Number.isNaN(v), `0x${h.toString(16)} should decode to NaN`);
      assert.ok(isNaNBits(f32ToF16Bits(v)));
    } else {
      assert.equal(f32ToF16Bits(v), h, `0x${h.toString(16)}`);
      assert.equal(Math.fround(v), v, "every f16 value is an f32 value");
    }
  }
});

Deno.test("f16: decoding matches the native Float16Array on all patterns", {
  ignore: !nativeF16,
}, () => {
  const bits = new Uint16Array(0x10000).map((_, i) => i);
  const native: ArrayLike<number> = new g.Float16Array(bits.buffer);
  const ours = f16BitsToF32Array(bits);
  for (let h = 0; h < 0x10000; h++) {
    assert.ok(Object.is(ours[h], native[h]), `0x${h.toString(16)}`);
  }
});

Deno.test("f16: hand-derived values", () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [0.1, 0x2e66],
    [65504, 0x7bff],
    [65519.99, 0x7bff],
    [65520, 0x7c00], // tie between 65504 and 2^16 → even → infinity
    [1e9, 0x7c00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [NaN, 0x7e00],
    [2 ** -24, 0x0001],
    [2 ** -25, 0x0000], // tie between 0 and 2^-24 → even
    [2 ** -25 * 1.0000001, 0x0001],
    [3 * 2 ** -25, 0x0002], // 1.5 quanta → even (2)
    [2 ** -14 - 2 ** -25, 0x0400], // 1023.5 quanta → 1024: smallest normal
    [1 + 2 ** -11, 0x3c00], // tie → even mantissa 0
    [1 + 3 * 2 ** -11, 0x3c02], // tie → even mantissa 2
    [1 + 2 ** -11 + 2 ** -40, 0x3c01], // just above the tie (f64 input)
  ];
  for (const [x, h] of cases) {
    assert.equal(f32ToF16Bits(x), h, `f32ToF16Bits(${x})`);
  }
  assert.equal(roundToF16(0.1), 0.0999755859375);
});

Deno.test("f16: f16BitsToF32 rejects non-u16 input naming h", () => {
  for (const h of [-1, 65536, 1.5, NaN]) {
    assert.throws(
      () => f16BitsToF32(h),
      (e: unknown) => e instanceof RangeError && /\bh\b/.test(e.message),
    );
  }
});

Deno.test("f16: rounding is to the nearest f16, ties to even (property)", () => {
  fc.assert(
    fc.property(
      fc.float({ noNaN: true, min: -65504, max: 65504 }),
      (x) => {
        const h = f32ToF16Bits(x);
        const mag = h & 0x7fff;
        const a = Math.abs(x);
        const v = f16BitsToF32(mag);
        assert.ok(mag < 0x7c00, "finite below 65504");
        assert.equal(h & 0x8000 ? -1 : 1, Object.is(x, -0) || x < 0 ? -1 : 1);
        const err = Math.abs(a - v);
        for (const nb of [mag - 1, mag + 1]) {
          if (nb < 0 || nb >= 0x7c00) continue;
          const nerr = Math.abs(a - f16BitsToF32(nb));
          assert.ok(err <= nerr, `${x}: ${v} not nearest (vs neighbour)`);
          if (err === nerr) assert.equal(mag & 1, 0, `${x}: tie not to even`);
        }
      },
    ),
    { numRuns: 3000 },
  );
});

Deno.test("f16: overflow goes to infinity from 65520 on", () => {
  fc.assert(
    fc.property(fc.double({ min: 65520, noNaN: true }), (x) => {
      assert.equal(f32ToF16Bits(x), 0x7c00);
      assert.equal(f32ToF16Bits(-x), 0xfc00);
    }),
  );
  fc.assert(
    fc.property(fc.double({ min: 65504, max: 65519.999, noNaN: true }), (x) => {
      assert.equal(f32ToF16Bits(x), 0x7bff);
    }),
  );
});

Deno.test("f16: encoding matches Math.f16round / Float16Array", {
  ignore: !nativeF16,
}, () => {
  const f16round = (Math as unknown as { f16round(x: number): number })
    .f16round;
  const check = (x: number) => {
    const ours = roundToF16(x);
    assert.ok(Object.is(ours, f16round(x)), `${x}: ${ours}`);
    if (!Number.isNaN(x)) {
      const bits = new Uint16Array(new g.Float16Array([x]).buffer)[0];
      assert.equal(f32ToF16Bits(x), bits, `${x}`);
    }
  };
  fc.assert(fc.property(fc.float(), check), { numRuns: 5000 });
  fc.assert(fc.property(fc.double(), check), { numRuns: 5000 });
  // Dense sweep of small magnitudes where subnormal rounding happens.
  fc.assert(
    fc.property(fc.double({ min: -1e-3, max: 1e-3, noNaN: true }), check),
    { numRuns: 5000 },
  );
});

Deno.test("f16: array conversions agree with the scalar ones", () => {
  fc.assert(
    fc.property(fc.float32Array({ maxLength: 300 }), (src) => {
      const bits = f32ArrayToF16Bits(src);
      assert.equal(bits.length, src.length);
      for (let i = 0; i < src.length; i++) {
        assert.equal(bits[i], f32ToF16Bits(src[i]));
      }
      const back = f16BitsToF32Array(bits);
      assert.equal(back.length, src.length);
      for (let i = 0; i < src.length; i++) {
        assert.ok(Object.is(back[i], roundToF16(src[i])));
      }
    }),
    { numRuns: 200 },
  );
});
