import fc from "fast-check";
import { strict as assert } from "node:assert";
import { f32ToF16Bits, roundToF16 } from "../../src/core/f16.ts";
import {
  BLOCK_TQ1_0_BYTES,
  BLOCK_TQ2_0_BYTES,
  bytesI2S,
  decodeRowTq1_0,
  decodeRowTq2_0,
  dequantizeRowTq1_0,
  dequantizeRowTq2_0,
  encodeRowTq1_0,
  encodeRowTq2_0,
  GGML_TYPE_I2_S,
  GGML_TYPE_TQ1_0,
  GGML_TYPE_TQ2_0,
  packI2S,
  packTernaryRowTq1_0,
  packTernaryRowTq2_0,
  QK_I2_S,
  QK_K,
  quantizeRowTq1_0,
  quantizeRowTq2_0,
  rowBytesTq1_0,
  rowBytesTq2_0,
  unpackI2S,
} from "../../src/core/gguf_blocks.ts";

const throwsRange = (f: () => unknown, pattern: RegExp): void => {
  assert.throws(
    f,
    (e: unknown) => e instanceof RangeError && pattern.test(e.message),
  );
};

const codesOf = (len: number): fc.Arbitrary<Int8Array> =>
  fc.int8Array({ min: -1, max: 1, minLength: len, maxLength: len });
/** Ternary rows of 1..4 blocks. */
const row: fc.Arbitrary<Int8Array> = fc.integer({ min: 1, max: 4 }).chain((
  nb,
) => codesOf(nb * QK_K));
const gamma: fc.Arbitrary<number> = fc.double({
  min: 0,
  max: 65000,
  noNaN: true,
});
/** Finite f32 rows of 1..3 blocks, biased to include exact ties and zeros. */
const floatRow: fc.Arbitrary<Float32Array> = fc.integer({ min: 1, max: 3 })
  .chain((nb) =>
    fc.array(
      fc.oneof(
        fc.float({ noNaN: true, noDefaultInfinity: true, min: -1e4, max: 1e4 }),
        fc.constantFrom(0, 0.5, -0.5, 1, -1, 0.25, 2),
      ),
      { minLength: nb * QK_K, maxLength: nb * QK_K },
    )
  ).map((a) => Float32Array.from(a));

interface Layout {
  readonly name: string;
  readonly blockBytes: number;
  readonly scaleAt: number;
  readonly rowBytes: (n: number) => number;
  readonly encode: (c: Int8Array, s: ArrayLike<number>) => Uint8Array;
  readonly decode: typeof decodeRowTq2_0;
  readonly quantize: (x: Float32Array) => Uint8Array;
  readonly dequantize: (b: Uint8Array, n: number) => Float32Array;
  readonly packTernary: (c: Int8Array, g: number) => Uint8Array;
}

const layouts: readonly Layout[] = [
  {
    name: "TQ2_0",
    blockBytes: BLOCK_TQ2_0_BYTES,
    scaleAt: 64,
    rowBytes: rowBytesTq2_0,
    encode: encodeRowTq2_0,
    decode: decodeRowTq2_0,
    quantize: quantizeRowTq2_0,
    dequantize: dequantizeRowTq2_0,
    packTernary: packTernaryRowTq2_0,
  },
  {
    name: "TQ1_0",
    blockBytes: BLOCK_TQ1_0_BYTES,
    scaleAt: 52,
    rowBytes: rowBytesTq1_0,
    encode: encodeRowTq1_0,
    decode: decodeRowTq1_0,
    quantize: quantizeRowTq1_0,
    dequantize: dequantizeRowTq1_0,
    packTernary: packTernaryRowTq1_0,
  },
];

/**
 * Independent reading of REFERENCE.md §3: stored code c of weight k in a
 * block, taken straight from the described bit positions.
 */
function specCode(name: string, block: Uint8Array, k: number): number {
  if (name === "TQ2_0") {
    // Within each 128-weight half, byte m holds m, m+32, m+64, m+96 at 0,2,4,6.
    const half = k >> 7, r = k & 127;
    return (block[32 * half + (r % 32)] >> (2 * Math.floor(r / 32))) & 3;
  }
  // TQ1_0: qs[m] holds m+32n; qs[32+m] holds 160+m+16n; qh[j] holds 240+j+4m.
  let byte: number, digit: number;
  if (k < 160) [byte, digit] = [k % 32, Math.floor(k / 32)];
  else if (k < 240) {
    [byte, digit] = [32 + (k - 160) % 16, Math.floor((k - 160) / 16)];
  } else [byte, digit] = [48 + (k - 240) % 4, Math.floor((k - 240) / 4)];
  return (((block[byte] * 3 ** digit) & 0xff) * 3) >> 8;
}

Deno.test("gguf_blocks: constants", () => {
  assert.equal(QK_K, 256);
  assert.equal(GGML_TYPE_TQ1_0, 34);
  assert.equal(GGML_TYPE_TQ2_0, 35);
  assert.equal(GGML_TYPE_I2_S, 36);
  assert.equal(BLOCK_TQ2_0_BYTES, 64 + 2);
  assert.equal(BLOCK_TQ1_0_BYTES, 48 + 4 + 2);
  assert.equal(rowBytesTq2_0(768), 198);
  assert.equal(rowBytesTq1_0(768), 162);
  assert.equal(bytesI2S(256), 96);
});

Deno.test("TQ1_0: ceil(q·256/243) trits decode with ((u8)(b·3^n)·3)>>8", () => {
  // Exhaustive over all 243 five-trit values, independent of the module.
  for (let q = 0; q < 243; q++) {
    const b = Math.ceil((q * 256) / 243);
    for (let n = 0; n < 5; n++) {
      const digit = Math.floor(q / 3 ** (4 - n)) % 3; // most significant first
      assert.equal((((b * 3 ** n) & 0xff) * 3) >> 8, digit, `q=${q} n=${n}`);
    }
  }
});

for (const L of layouts) {
  Deno.test(`${L.name}: packTernaryRow → dequantize is exactly q·f16(γ)`, () => {
    fc.assert(
      fc.property(row, gamma, (codes, g) => {
        const bytes = L.packTernary(codes, g);
        assert.equal(bytes.length, L.rowBytes(codes.length));
        const d = roundToF16(g);
        const y = L.dequantize(bytes, codes.length);
        assert.equal(y.length, codes.length);
        for (let i = 0; i < y.length; i++) assert.equal(y[i], codes[i] * d);
        const t = L.decode(bytes, codes.length);
        assert.deepEqual(t.codes, codes);
        assert.ok(t.blockScales.every((s) => s === d));
        assert.equal(t.blockScales.length, codes.length / QK_K);
      }),
      { numRuns: 100 },
    );
  });

  Deno.test(`${L.name}: byte layout matches the REFERENCE description`, () => {
    fc.assert(
      fc.property(row, gamma, (codes, g) => {
        const bytes = L.packTernary(codes, g);
        const dBits = f32ToF16Bits(g);
        for (let b = 0; b < codes.length / QK_K; b++) {
          const block = bytes.subarray(
            b * L.blockBytes,
            (b + 1) * L.blockBytes,
          );
          for (let k = 0; k < QK_K; k++) {
            assert.equal(specCode(L.name, block, k), codes[b * QK_K + k] + 1);
          }
          assert.equal(block[L.scaleAt] | block[L.scaleAt + 1] << 8, dBits);
        }
      }),
      { numRuns: 50 },
    );
  });

  Deno.test(`${L.name}: encode/decode round trip with per-block scales`, () => {
    fc.assert(
      fc.property(
        row.chain((c) =>
          fc.tuple(
            fc.constant(c),
            fc.array(gamma, {
              minLength: c.length / QK_K,
              maxLength: c.length / QK_K,
            }),
          )
        ),
        ([codes, scales]) => {
          const t = L.decode(L.encode(codes, scales), codes.length);
          assert.deepEqual(t.codes, codes);
          assert.deepEqual(Array.from(t.blockScales), scales.map(roundToF16));
        },
      ),
      { numRuns: 100 },
    );
  });

  Deno.test(`${L.name}: quantizeRow gives q·d_b with d_b = f16(block absmax)`, () => {
    fc.assert(
      fc.property(floatRow, (x) => {
        const bytes = L.quantize(x);
        assert.equal(bytes.length, L.rowBytes(x.length));
        const y = L.dequantize(bytes, x.length);
        for (let b = 0; b < x.length / QK_K; b++) {
          const blk = x.subarray(b * QK_K, (b + 1) * QK_K);
          const amax = blk.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
          const d = roundToF16(amax);
          for (let k = 0; k < QK_K; k++) {
            const i = b * QK_K + k;
            const r = Math.abs(x[i]) / amax;
            // Away from the 0.5 threshold the f32 rounding cannot matter.
            if (amax > 0 && Math.abs(r - 0.5) < 1e-6) {
              assert.ok(y[i] === 0 || Math.abs(y[i]) === d);
              continue;
            }
            const want = amax > 0 && r >= 0.5 ? Math.sign(x[i]) * d : 0;
            assert.ok(y[i] === want, `x[${i}] = ${x[i]}: ${y[i]} ≠ ${want}`);
          }
        }
      }),
      { numRuns: 60 },
    );
  });

  Deno.test(`${L.name}: re-quantizing {−γ, 0, γ} rows reproduces the packed bytes`, () => {
    fc.assert(
      fc.property(
        row,
        fc.double({ min: 1e-4, max: 6e4, noNaN: true }),
        (codes, g) => {
          // every block needs a nonzero weight, or the ggml quantizer stores d = 0
          for (let b = 0; b < codes.length; b += QK_K) codes[b + 7] = -1;
          const packed = L.packTernary(codes, g);
          const y = L.dequantize(packed, codes.length);
          assert.deepEqual(L.quantize(y), packed);
        },
      ),
      { numRuns: 50 },
    );
  });

  Deno.test(`${L.name}: an all-zero block quantizes to d = 0, packTernary keeps γ`, () => {
    const zeros = new Float32Array(2 * QK_K);
    zeros[300] = -3; // second block nonzero
    const q = L.quantize(zeros);
    assert.equal(q[L.scaleAt] | q[L.scaleAt + 1] << 8, 0);
    assert.equal(
      q[L.blockBytes + L.scaleAt] | q[L.blockBytes + L.scaleAt + 1] << 8,
      0x4200, // f16(3): d is max|x|, so positive although x = −3
    );
    const y = L.dequantize(q, zeros.length);
    assert.deepEqual(Array.from(y), Array.from(zeros));
    const p = L.packTernary(new Int8Array(QK_K), 0.5);
    assert.equal(p[L.scaleAt] | p[L.scaleAt + 1] << 8, 0x3800);
  });

  Deno.test(`${L.name}: decode reads a row inside a larger buffer`, () => {
    fc.assert(
      fc.property(row, fc.integer({ min: 1, max: 9 }), (codes, off) => {
        const packed = L.packTernary(codes, 1.25);
        const big = new Uint8Array(off + packed.length + 5).fill(0xff);
        big.set(packed, off);
        const view = big.subarray(off);
        assert.deepEqual(L.decode(view, codes.length).codes, codes);
      }),
      { numRuns: 30 },
    );
  });

  Deno.test(`${L.name}: invalid input throws a RangeError naming it`, () => {
    throwsRange(() => L.quantize(new Float32Array(255)), /x\.length = 255/);
    throwsRange(
      () => L.packTernary(new Int8Array(300), 1),
      /codes\.length = 300/,
    );
    throwsRange(() => L.dequantize(new Uint8Array(999), 100), /n = 100/);
    throwsRange(() => L.rowBytes(-256), /n = -256/);
    for (const g of [-1, NaN, 65520, Infinity]) {
      throwsRange(() => L.packTernary(new Int8Array(256), g), /^gamma/);
    }
    const bad = new Int8Array(256);
    bad[5] = 2;
    throwsRange(() => L.packTernary(bad, 1), /codes\[5\] = 2/);
    throwsRange(
      () => L.dequantize(new Uint8Array(L.blockBytes * 2 - 1), 512),
      /bytes has/,
    );
    const x = new Float32Array(256);
    x[3] = NaN;
    throwsRange(() => L.quantize(x), /x\[3\] = NaN/);
    x[3] = -Infinity;
    throwsRange(() => L.quantize(x), /x\[3\] = -Infinity/);
    throwsRange(
      () => L.encode(new Int8Array(512), [1]),
      /blockScales\.length = 1/,
    );
    throwsRange(
      () => L.encode(new Int8Array(512), [1, -2]),
      /blockScales\[1\]/,
    );
  });
}

/** A block with 0 everywhere except three hand-placed weights. */
function sparseCodes(set: [number, number][]): Int8Array {
  const c = new Int8Array(QK_K);
  for (const [k, q] of set) c[k] = q;
  return c;
}

Deno.test("TQ2_0: hand-derived bytes", () => {
  // weight 33 = +1 (m = 1, l = 1); weight 133 = −1 (second half, m = 5, l = 0)
  const b = packTernaryRowTq2_0(sparseCodes([[33, 1], [133, -1]]), 1);
  const want = new Uint8Array(66).fill(0x55); // four c = 1 fields
  want[1] = 0b01011001;
  want[37] = 0b01010100;
  want[64] = 0x00; // f16(1) = 0x3c00, little-endian
  want[65] = 0x3c;
  assert.deepEqual(b, want);
  const decodedInvalid = Uint8Array.from(b);
  decodedInvalid[10] = 0xff;
  throwsRange(() => dequantizeRowTq2_0(decodedInvalid, 256), /bytes\[10\]/);
});

Deno.test("TQ1_0: hand-derived bytes", () => {
  // All-zero trits: qs = ceil(121·256/243) = 128, qh = ceil(120·256/243) = 127.
  // weight 32 = +1 → qs[0] digits 1,2,1,1,1 → 148 → 156
  // weight 227 = −1 → qs[35] (160 + 3 + 16·4) digits 1,1,1,1,0 → 120 → 127
  // weight 254 = +1 → qh[2] (240 + 2 + 4·3) digits 1,1,1,2 → 41·3 = 123 → 130
  const b = packTernaryRowTq1_0(
    sparseCodes([[32, 1], [227, -1], [254, 1]]),
    2,
  );
  const want = new Uint8Array(54).fill(128);
  want.fill(127, 48, 52);
  want[0] = 156;
  want[35] = 127;
  want[50] = 130;
  want[52] = 0x00; // f16(2) = 0x4000
  want[53] = 0x40;
  assert.deepEqual(b, want);
});

Deno.test("TQ1_0 and TQ2_0 quantizers agree on the dequantized values", () => {
  fc.assert(
    fc.property(floatRow, (x) => {
      assert.deepEqual(
        dequantizeRowTq1_0(quantizeRowTq1_0(x), x.length),
        dequantizeRowTq2_0(quantizeRowTq2_0(x), x.length),
      );
    }),
    { numRuns: 40 },
  );
});

Deno.test("I2_S: round trip, layout and scale position", () => {
  const tensor = fc.integer({ min: 0, max: 6 }).chain((k) =>
    codesOf(k * QK_I2_S)
  );
  fc.assert(
    fc.property(
      tensor,
      fc.float({ noNaN: true, noDefaultInfinity: true }),
      (codes, s) => {
        const n = codes.length;
        const bytes = packI2S(codes, s);
        assert.equal(bytes.length, n / 4 + 32);
        // byte j of a 128-block holds j, j+32, j+64, j+96 at bits 7-6, 5-4, 3-2, 1-0
        for (let i = 0; i < n; i++) {
          const blk = Math.floor(i / 128), j = i % 128;
          const field =
            (bytes[32 * blk + (j % 32)] >> (6 - 2 * Math.floor(j / 32))) & 3;
          assert.equal(field, codes[i] + 1);
        }
        assert.ok(
          Object.is(new DataView(bytes.buffer).getFloat32(n / 4, true), s),
        );
        assert.ok(bytes.subarray(n / 4 + 4).every((v) => v === 0));
        // read back from an unaligned view inside a larger buffer
        const big = new Uint8Array(bytes.length + 3);
        big.set(bytes, 3);
        const t = unpackI2S(big.subarray(3), n);
        assert.deepEqual(t.codes, codes);
        assert.ok(Object.is(t.scale, s));
      },
    ),
    { numRuns: 100 },
  );
  // weight 0 = +1 → bits 7-6 = 10: 0b10010101; weight 97 = −1 → byte 1 bits 1-0 = 00
  const b = packI2S(sparseCodes([[0, 1], [97, -1]]).subarray(0, 128), 0.5);
  assert.equal(b[0], 0x95);
  assert.equal(b[1], 0x54);
  assert.ok(b.subarray(2, 32).every((v) => v === 0x55));
  assert.deepEqual(Array.from(b.subarray(32, 36)), [0, 0, 0, 0x3f]);
});

Deno.test("I2_S: invalid input throws a RangeError naming it", () => {
  throwsRange(() => packI2S(new Int8Array(100), 1), /n = 100/);
  throwsRange(() => packI2S(new Int8Array(128), Infinity), /^scale/);
  throwsRange(() => packI2S(new Int8Array(128), 1e39), /^scale/);
  throwsRange(() => unpackI2S(new Uint8Array(35), 128), /bytes has 35/);
  const bytes = packI2S(new Int8Array(128), 1);
  bytes[4] = 0xff;
  throwsRange(() => unpackI2S(bytes, 128), /bytes\[4\]/);
});

Deno.test("quantizeRow: lroundf ties go away from zero, like ggml", () => {
  const x = new Float32Array(QK_K);
  // amax = 4, so x/d = 1, −0.5, 0.5, just under ±0.5, −1
  x.set([4, -2, 2, Math.fround(1.9999999), Math.fround(-1.9999999), -4]);
  const want = [1, -1, 1, 0, 0, -1];
  for (const L of layouts) {
    const t = L.decode(L.quantize(x), QK_K);
    assert.deepEqual(Array.from(t.codes.subarray(0, 6)), want, L.name);
    assert.ok(t.codes.subarray(6).every((q) => q === 0));
    assert.deepEqual(Array.from(t.blockScales), [4]);
  }
});

Deno.test("quantizeRow: x·(1/d) is rounded in f32 like ggml, not in f64", () => {
  // x = d/2 exactly; the f32 product lands on the other side of 0.5 than
  // the f64 one in both blocks (found by search; gcc lroundf gives 0 and 1).
  const x = new Float32Array(2 * QK_K);
  x.set([1.1015625, 0.55078125]); // f32: 0.49999997 → 0 (f64 would give 1)
  x.set([1.095703125, 0.5478515625], QK_K); // f32: 0.5 → 1 (f64 would give 0)
  for (const L of layouts) {
    const { codes } = L.decode(L.quantize(x), x.length);
    assert.deepEqual(Array.from(codes.subarray(0, 2)), [1, 0], L.name);
    assert.deepEqual(Array.from(codes.subarray(QK_K, QK_K + 2)), [1, 1]);
  }
});
