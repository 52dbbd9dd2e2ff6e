import { strict as assert } from "node:assert";
import fc from "fast-check";
import { f16BitsToF32Array } from "../../src/backend/f16.ts";
import {
  ACTIVE_WASM_VARIANT,
  MATMUL_TILES,
  packInt8Rows,
  packTernaryRows,
  RELAXED_SIMD_SUPPORTED,
  ternaryPaddedCols,
  ternaryRowBytes,
  unpackTernaryRows,
  WasmKernels,
  type WasmVariant,
} from "../../src/backend/wasm/wasm_kernels.ts";
import {
  GENERATED_PATH,
  renderKernelsModule,
} from "../../scripts/build_wasm.ts";

const VARIANTS: WasmVariant[] = RELAXED_SIMD_SUPPORTED
  ? ["relaxed", "portable"]
  : ["portable"];
const EPS32 = 2 ** -23;
const kernels = new Map<WasmVariant, WasmKernels>();
async function kernelsOf(v: WasmVariant): Promise<WasmKernels> {
  let k = kernels.get(v);
  if (!k) kernels.set(v, k = await WasmKernels.create({ variant: v }));
  return k;
}

/** Deterministic uniform values in [-1, 1) (xorshift32). */
function rng(seed: number): () => number {
  let s = (seed | 0) || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 31 - 1;
  };
}

/** Copies `data` into a fresh allocation and returns its pointer. */
function put(K: WasmKernels, data: Float32Array | Int8Array | Uint8Array) {
  const ptr = K.alloc(data.byteLength);
  K.u8(ptr, data.byteLength).set(
    new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  );
  return ptr;
}

Deno.test("generated kernels.wasm.ts matches a rebuild from source", async () => {
  const path = new URL(`../../${GENERATED_PATH}`, import.meta.url);
  assert.equal(await renderKernelsModule(), await Deno.readTextFile(path));
});

Deno.test("the active variant is relaxed exactly when the engine validates it", () => {
  assert.equal(
    ACTIVE_WASM_VARIANT,
    RELAXED_SIMD_SUPPORTED ? "relaxed" : "portable",
  );
});

Deno.test("arena: blocks are aligned, disjoint, and survive memory growth", async () => {
  const K = await WasmKernels.create({ variant: "portable" });
  const base = K.allocatedBytes;
  const first = K.alloc(1);
  K.free(first);
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.record({
            op: fc.constant("alloc" as const),
            bytes: fc.nat(300_000),
          }),
          fc.record({ op: fc.constant("free" as const), pick: fc.nat() }),
        ),
        { maxLength: 60 },
      ),
      (ops) => {
        const live: { ptr: number; bytes: number; tag: number }[] = [];
        let tag = 1;
        for (const o of ops) {
          if (o.op === "alloc") {
            const ptr = K.alloc(o.bytes);
            assert.ok(ptr > 0 && ptr % 64 === 0);
            K.u8(ptr, o.bytes).fill(tag & 255);
            live.push({ ptr, bytes: o.bytes, tag: tag++ & 255 });
          } else if (live.length > 0) {
            const [b] = live.splice(o.pick % live.length, 1);
            K.free(b.ptr);
          }
        }
        const sorted = [...live].sort((x, y) => x.ptr - y.ptr);
        for (let i = 1; i < sorted.length; i++) {
          const p = sorted[i - 1];
          assert.ok(p.ptr + Math.max(p.bytes, 1) <= sorted[i].ptr, "overlap");
        }
        for (const b of live) {
          assert.ok(
            K.u8(b.ptr, b.bytes).every((v) => v === b.tag),
            "clobbered",
          );
          K.free(b.ptr);
        }
        assert.equal(K.allocatedBytes, base);
        // Everything freed coalesces: the lowest block is handed out again.
        const again = K.alloc(1);
        assert.equal(again, first);
        K.free(again);
      },
    ),
    { numRuns: 40 },
  );
  assert.throws(() => K.free(12345), /ptr/);
  assert.throws(() => K.alloc(-1), /bytes/);
});

Deno.test("kernels also run on an unshared memory", async () => {
  for (const v of VARIANTS) {
    const K = await WasmKernels.create({ variant: v, sharedMemory: false });
    assert.ok(K.memory.buffer instanceof ArrayBuffer);
    checkMatmul(K, {
      m: 5,
      n: 21,
      k: 9,
      transA: false,
      transB: false,
      accumulate: true,
      padA: 0,
      padB: 0,
      padC: 1,
      seed: 3,
    });
  }
  const S = await WasmKernels.create({ sharedMemory: true });
  assert.ok(S.memory.buffer instanceof SharedArrayBuffer);
});

interface MatmulCase {
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  accumulate: boolean;
  padA: number;
  padB: number;
  padC: number;
  seed: number;
}

/**
 * Leaves NaN in the packing workspace (up to `n` columns, two K blocks), so
 * that padding the kernel fails to zero shows up in the next product.
 */
function poisonWorkspace(K: WasmKernels, n: number): void {
  const k = 300, nan = K.alloc(4 * k * n), c = K.alloc(4 * 2 * n);
  K.f32(nan, k * n).fill(NaN);
  K.matmul({ a: nan, b: nan, c, m: 2, n, k });
  K.free(nan);
  K.free(c);
}

function checkMatmul(K: WasmKernels, t: MatmulCase): void {
  const { m, n, k, transA, transB, accumulate } = t;
  poisonWorkspace(K, Math.max(n, 64));
  const lda = (transA ? m : k) + t.padA;
  const ldb = (transB ? k : n) + t.padB;
  const ldc = n + t.padC;
  const r = rng(t.seed);
  const A = Float32Array.from({ length: (transA ? k : m) * lda }, r);
  const B = Float32Array.from({ length: (transB ? n : k) * ldb }, r);
  const C0 = Float32Array.from({ length: m * ldc }, r);
  const cInit = accumulate ? C0.slice() : C0.slice().fill(NaN);
  // Elements between rows (ldc > n) must stay untouched: mark them.
  for (let i = 0; i < m; i++) cInit.fill(-7, i * ldc + n, (i + 1) * ldc);
  const a = put(K, A), b = put(K, B), c = put(K, cInit);
  try {
    K.matmul({ a, b, c, m, n, k, transA, transB, accumulate, lda, ldb, ldc });
    const C = K.f32(c, m * ldc);
    const tol = (k + 2) * 4 * EPS32; // |A|, |B|, |C0| ≤ 1
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < ldc; j++) {
        const got = C[i * ldc + j];
        if (j >= n) {
          assert.equal(got, -7, `gap (${i},${j}) written`);
          continue;
        }
        let s = accumulate ? C0[i * ldc + j] : 0;
        for (let p = 0; p < k; p++) {
          const av = transA ? A[p * lda + i] : A[i * lda + p];
          const bv = transB ? B[j * ldb + p] : B[p * ldb + j];
          s += av * bv;
        }
        assert.ok(
          Math.abs(got - s) <= tol,
          `C[${i},${j}] = ${got}, want ${s} (${JSON.stringify(t)})`,
        );
      }
    }
  } finally {
    K.free(a);
    K.free(b);
    K.free(c);
  }
}

for (const v of VARIANTS) {
  Deno.test(`matmul (${v}): every tile remainder, all transposes, accumulate on/off`, async () => {
    const K = await kernelsOf(v);
    let seed = 1;
    // M mod 2, N mod 16 and K mod 4 all covered; K crosses a 256 block.
    for (const m of [1, 2, 3]) {
      for (let n = 1; n <= 33; n++) {
        for (const k of [0, 1, 2, 3, 4, 7, 258]) {
          const flags = seed++;
          checkMatmul(K, {
            m,
            n,
            k,
            transA: (flags & 1) === 1,
            transB: (flags & 2) === 2,
            accumulate: (flags & 4) === 4,
            padA: 0,
            padB: 0,
            padC: flags % 3,
            seed,
          });
        }
      }
    }
  });

  Deno.test(`matmul (${v}): random shapes across M, K blocks and leading dimensions`, async () => {
    const K = await kernelsOf(v);
    fc.assert(
      fc.property(
        fc.record({
          m: fc.integer({ min: 1, max: 140 }),
          n: fc.integer({ min: 1, max: 50 }),
          k: fc.integer({ min: 0, max: 600 }),
          transA: fc.boolean(),
          transB: fc.boolean(),
          accumulate: fc.boolean(),
          padA: fc.nat(5),
          padB: fc.nat(5),
          padC: fc.nat(5),
          seed: fc.integer(),
        }),
        (t) => checkMatmul(K, t),
      ),
      { numRuns: 40 },
    );
  });

  Deno.test(`matmul (${v}): every tile with random blockings, bit-identical to the default at the same kc`, async () => {
    // A fresh instance for the tuned tiles; the shared one keeps the default.
    const K = await WasmKernels.create({ variant: v });
    const D = await WasmKernels.create({ variant: v });
    fc.assert(
      fc.property(
        fc.record({
          tile: fc.constantFrom(...MATMUL_TILES),
          mcTiles: fc.integer({ min: 1, max: 5 }),
          kc: fc.constantFrom(4, 8, 20, 256),
          ncTiles: fc.integer({ min: 1, max: 4 }),
          m: fc.integer({ min: 1, max: 40 }),
          n: fc.integer({ min: 1, max: 70 }),
          k: fc.integer({ min: 0, max: 90 }),
          transA: fc.boolean(),
          transB: fc.boolean(),
          accumulate: fc.boolean(),
          seed: fc.integer(),
        }),
        (t) => {
          const [mr, nr] = t.tile.split("x").map(Number);
          K.matmulConfig = {
            tile: t.tile,
            mc: mr * t.mcTiles,
            kc: t.kc,
            nc: nr * t.ncTiles,
          };
          D.matmulConfig = { ...D.matmulConfig, kc: t.kc };
          const c = { ...t, padA: 1, padB: 0, padC: 2 };
          checkMatmul(K, c);
          // Same inputs through the default tile: the same sums in the same order.
          const { m, n, k } = t;
          const r = rng(t.seed);
          const A = Float32Array.from({ length: m * k }, r);
          const B = Float32Array.from({ length: k * n }, r);
          const C = Float32Array.from({ length: m * n }, r);
          const run = (X: WasmKernels) => {
            const a = put(X, A), b = put(X, B), cc = put(X, C);
            X.matmul({
              a,
              b,
              c: cc,
              m,
              n,
              k,
              transA: t.transA,
              transB: t.transB,
              accumulate: t.accumulate,
            });
            const out = X.f32(cc, m * n).slice();
            for (const p of [a, b, cc]) X.free(p);
            return out;
          };
          assert.deepEqual(run(K), run(D));
        },
      ),
      { numRuns: 60 },
    );
  });

  Deno.test(`matmul (${v}): N across the 2048-column block`, async () => {
    const K = await kernelsOf(v);
    checkMatmul(K, {
      m: 3,
      n: 2048 + 19,
      k: 5,
      transA: false,
      transB: true,
      accumulate: false,
      padA: 0,
      padB: 1,
      padC: 2,
      seed: 9,
    });
  });

  Deno.test(`matvec (${v}): y (+)= W·x for every row and K remainder`, async () => {
    const K = await kernelsOf(v);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 13 }),
        fc.integer({ min: 0, max: 70 }),
        fc.nat(3),
        fc.boolean(),
        fc.integer(),
        (n, k, pad, accumulate, seed) => {
          const ldw = k + pad;
          const r = rng(seed);
          const W = Float32Array.from({ length: n * ldw }, r);
          const x = Float32Array.from({ length: k }, r);
          const y0 = Float32Array.from({ length: n }, r);
          const w = put(K, W), xp = put(K, x);
          const y = put(K, accumulate ? y0 : y0.slice().fill(NaN));
          try {
            K.matvec({ w, x: xp, y, n, k, ldw, accumulate });
            const Y = K.f32(y, n);
            for (let i = 0; i < n; i++) {
              let s = accumulate ? y0[i] : 0;
              for (let j = 0; j < k; j++) s += W[i * ldw + j] * x[j];
              assert.ok(Math.abs(Y[i] - s) <= (k + 2) * 4 * EPS32, `y[${i}]`);
            }
          } finally {
            K.free(w);
            K.free(xp);
            K.free(y);
          }
        },
      ),
      { numRuns: 60 },
    );
  });
}

/** A random finite f16 bit pattern: normals, subnormals and ±0 alike. */
function randomHalf(r: () => number): number {
  const sign = r() < 0 ? 0x8000 : 0;
  const u = (r() + 1) / 2;
  // A quarter each: subnormal or zero exponent, else any finite exponent.
  const e = u < 0.25 ? 0 : Math.min(30, Math.floor(((u - 0.25) / 0.75) * 31));
  const m = Math.floor(((r() + 1) / 2) * 1024) & 0x3ff;
  return sign | (e << 10) | m;
}

for (const v of VARIANTS) {
  Deno.test(`matvecF16 (${v}): bit for bit matvec of the widened matrix, every row and K remainder`, async () => {
    const K = await kernelsOf(v);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 13 }),
        fc.integer({ min: 0, max: 70 }),
        fc.nat(3),
        fc.boolean(),
        fc.integer(),
        // Below 2^16 the kernel prescales x; from there on the weights.
        fc.constantFrom(8, 1e6),
        (n, k, pad, accumulate, seed, xScale) => {
          const ldw = k + pad;
          const r = rng(seed);
          const H = Uint16Array.from({ length: n * ldw }, () => randomHalf(r));
          const W = f16BitsToF32Array(H);
          const x = Float32Array.from({ length: k }, () => xScale * r());
          const y0 = Float32Array.from({ length: n }, r);
          const hp = K.alloc(Math.max(2, H.byteLength));
          K.u8(hp, H.byteLength).set(new Uint8Array(H.buffer));
          const w = put(K, W), xp = put(K, x);
          const y = put(K, accumulate ? y0 : y0.slice().fill(NaN));
          const yRef = put(K, y0);
          try {
            K.matvecF16({ w: hp, x: xp, y, n, k, ldw, accumulate });
            K.matvec({ w, x: xp, y: yRef, n, k, ldw, accumulate });
            assert.deepEqual(K.f32(y, n), K.f32(yRef, n));
            // And against a plain f64 sum, to f32 rounding.
            const Y = K.f32(y, n);
            for (let i = 0; i < n; i++) {
              let s = accumulate ? y0[i] : 0, mag = Math.abs(s);
              for (let j = 0; j < k; j++) {
                s += W[i * ldw + j] * x[j];
                mag += Math.abs(W[i * ldw + j] * x[j]);
              }
              assert.ok(
                Math.abs(Y[i] - s) <= (k + 2) * EPS32 * mag + 1e-30,
                `y[${i}] = ${Y[i]}, f64 ${s}`,
              );
            }
          } finally {
            for (const p of [hp, w, xp, y, yRef]) K.free(p);
          }
        },
      ),
      { numRuns: 80 },
    );
  });
}

for (const v of VARIANTS) {
  Deno.test(`attendSession (${v}): causal softmax attention over the cache ≈ f64 reference`, async () => {
    const K = await kernelsOf(v);
    fc.assert(
      fc.property(
        fc.record({
          T: fc.integer({ min: 1, max: 4 }),
          kvHeads: fc.integer({ min: 1, max: 3 }),
          group: fc.integer({ min: 1, max: 3 }),
          D: fc.integer({ min: 1, max: 19 }),
          ctx: fc.integer({ min: 1, max: 40 }),
          pos0: fc.integer({ min: 0, max: 60 }),
          pad: fc.nat(3),
          seed: fc.integer(),
        }),
        ({ T, kvHeads, group, D, ctx, pos0, pad, seed }) => {
          const H = kvHeads * group, qRow = H * D + pad, r = rng(seed);
          const Q = Float32Array.from({ length: T * qRow }, () => 3 * r());
          const Kc = Float32Array.from({ length: kvHeads * ctx * D }, r);
          const Vt = Float32Array.from({ length: kvHeads * D * ctx }, r);
          const scale = 1 / Math.sqrt(D);
          const q = put(K, Q), k = put(K, Kc), vt = put(K, Vt);
          const out = put(K, new Float32Array(T * qRow).fill(NaN));
          const scores = K.alloc(4 * ctx), stats = K.alloc(24);
          try {
            K.attendSession({
              q,
              k,
              vt,
              out,
              T,
              heads: H,
              kvHeads,
              headDim: D,
              ctx,
              pos0,
              qRow,
              scores,
              scale,
              stats,
            });
            const O = K.f32(out, T * qRow);
            for (let t = 0; t < T; t++) {
              const seen = Math.min(pos0 + t + 1, ctx);
              for (let h = 0; h < H; h++) {
                const g = Math.floor(h / group);
                const sc = Array.from({ length: seen }, (_, j) => {
                  let s = 0;
                  for (let d = 0; d < D; d++) {
                    s += Q[t * qRow + h * D + d] * Kc[(g * ctx + j) * D + d];
                  }
                  return s * scale;
                });
                const m = Math.max(...sc);
                const e = sc.map((x) => Math.exp(x - m));
                const z = e.reduce((a, b) => a + b, 0);
                for (let d = 0; d < D; d++) {
                  let o = 0;
                  for (let j = 0; j < seen; j++) {
                    o += (e[j] / z) * Vt[(g * D + d) * ctx + j];
                  }
                  const got = O[t * qRow + h * D + d];
                  assert.ok(
                    Math.abs(got - o) <= 1e-5,
                    `out[${t}][${h}][${d}] = ${got}, f64 ${o}`,
                  );
                }
              }
              for (let i = H * D; i < qRow; i++) {
                assert.ok(Number.isNaN(O[t * qRow + i]), "padding written");
              }
            }
          } finally {
            for (const p of [q, k, vt, out, scores, stats]) K.free(p);
          }
        },
      ),
      { numRuns: 60 },
    );
  });
}

/**
 * Checks `int8Matmul` against the plain reference `fround(fround(Σ c·x) ·
 * fround(scale · inv))` on random codes (`extreme`: every c = −127, x = −128).
 */
function checkInt8(
  K: WasmKernels,
  t: {
    n: number;
    k: number;
    tokens: number;
    padO: number;
    seed: number;
    extreme: boolean;
  },
): void {
  const { n, k, tokens, padO, seed, extreme } = t;
  const r = rng(seed);
  const kpad = ternaryPaddedCols(k), ldo = n + padO;
  const C = Int8Array.from(
    { length: n * k },
    () => extreme ? -127 : Math.round(r() * 127),
  );
  const X = new Int8Array(tokens * kpad);
  for (let i = 0; i < tokens; i++) {
    for (let j = 0; j < k; j++) {
      X[i * kpad + j] = extreme ? -128 : Math.max(-128, Math.round(r() * 128));
    }
  }
  const S = Float32Array.from({ length: n }, () => (r() + 1.5) * 1e-3);
  const I = Float32Array.from({ length: tokens }, () => (r() + 1.5) * 0.01);
  const w = put(K, packInt8Rows(C, n, k)), x = put(K, X);
  const s = put(K, S), inv = put(K, I);
  const out = K.alloc(4 * tokens * ldo);
  K.f32(out, tokens * ldo).fill(NaN);
  try {
    K.int8Matmul({
      w,
      scales: s,
      n,
      k,
      x,
      tokens,
      invScales: inv,
      out,
      ldo,
    });
    const O = K.f32(out, tokens * ldo);
    for (let i = 0; i < tokens; i++) {
      for (let j = 0; j < n; j++) {
        let sum = 0;
        for (let c = 0; c < k; c++) sum += C[j * k + c] * X[i * kpad + c];
        const want = Math.fround(
          Math.fround(sum) * Math.fround(S[j] * I[i]),
        );
        assert.equal(O[i * ldo + j], want, `out[${i}][${j}] (n ${n}, k ${k})`);
      }
      for (let j = n; j < ldo; j++) {
        assert.ok(Number.isNaN(O[i * ldo + j]), `out[${i}][${j}] written`);
      }
    }
  } finally {
    for (const p of [w, x, s, inv, out]) K.free(p);
  }
}

for (const v of VARIANTS) {
  Deno.test(`int8Matmul (${v}): exact for every row/token/K remainder`, async () => {
    const K = await kernelsOf(v);
    fc.assert(
      fc.property(
        fc.record({
          n: fc.integer({ min: 1, max: 140 }),
          k: fc.integer({ min: 0, max: 700 }),
          tokens: fc.integer({ min: 1, max: 7 }),
          padO: fc.nat(3),
          seed: fc.integer(),
          extreme: fc.constant(false),
        }),
        (t) => checkInt8(K, t),
      ),
      { numRuns: 60 },
    );
    // Every tile shape: rows mod 4, tokens mod 2, and row blocks of 64.
    for (let n = 1; n <= 9; n++) {
      for (let tokens = 1; tokens <= 5; tokens++) {
        checkInt8(K, {
          n,
          k: 70,
          tokens,
          padO: 1,
          seed: n * 7 + tokens,
          extreme: false,
        });
      }
    }
    checkInt8(K, {
      n: 131,
      k: 17,
      tokens: 3,
      padO: 0,
      seed: 3,
      extreme: false,
    });
  });

  Deno.test(`int8Matmul (${v}): no overflow at the extremes (c = −127, x = −128)`, async () => {
    const K = await kernelsOf(v);
    checkInt8(K, {
      n: 5,
      k: 4096 + 64,
      tokens: 3,
      padO: 0,
      seed: 1,
      extreme: true,
    });
  });

  Deno.test(`int8Matmul (${v}) after quantizeRows ≈ f64 product of the dequantized operands`, async () => {
    const K = await kernelsOf(v);
    const n = 37, k = 300, r = rng(9);
    const C = Int8Array.from({ length: n * k }, () => Math.round(r() * 127));
    const S = Float32Array.from({ length: n }, () => (r() + 2) * 1e-2);
    const X = Float32Array.from({ length: k }, r);
    const kpad = ternaryPaddedCols(k);
    const w = put(K, packInt8Rows(C, n, k)), s = put(K, S), x = put(K, X);
    const q = K.alloc(kpad), inv = K.alloc(4), sums = K.alloc(4);
    const out = K.alloc(4 * n);
    try {
      K.quantizeRows({ x, rows: 1, cols: k, out: q, invScales: inv, sums });
      K.int8Matmul({
        w,
        scales: s,
        n,
        k,
        x: q,
        tokens: 1,
        invScales: inv,
        out,
      });
      const O = K.f32(out, n);
      const maxX = X.reduce((a, b) => Math.max(a, Math.abs(b)), 0);
      for (let i = 0; i < n; i++) {
        let sum = 0, mag = 0;
        for (let j = 0; j < k; j++) {
          sum += C[i * k + j] * S[i] * X[j];
          mag += Math.abs(C[i * k + j] * S[i]);
        }
        // each x_j is off by at most maxX/254 after quantization
        assert.ok(Math.abs(O[i] - sum) <= mag * maxX / 254 + 1e-5, `out[${i}]`);
      }
    } finally {
      for (const p of [w, s, x, q, inv, sums, out]) K.free(p);
    }
  });
}

/** Reference int8 quantization, in the kernel's f32 arithmetic. */
function quantizeRef(x: Float32Array, eps: number) {
  let m = 0;
  for (const v of x) m = Math.max(m, Math.abs(v));
  m = Math.fround(Math.max(m, Math.fround(eps)));
  const s = Math.fround(127 / m);
  const q = new Int8Array(x.length);
  let sum = 0;
  for (let i = 0; i < x.length; i++) {
    q[i] = Math.max(-128, Math.min(127, roundEven(Math.fround(x[i] * s))));
    sum += q[i];
  }
  return { q, sum, inv: Math.fround(m / 127), s };
}

for (const v of VARIANTS) {
  Deno.test(`quantizeRows (${v}): matches the f32 reference, zero padding, sums`, async () => {
    const K = await kernelsOf(v);
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 200 }),
        fc.nat(3),
        fc.integer(),
        fc.constantFrom(1, 1e-3, 100),
        (rows, cols, pad, seed, amp) => {
          const ldx = cols + pad;
          const r = rng(seed);
          const X = Float32Array.from({ length: rows * ldx }, () => r() * amp);
          if (seed % 5 === 0) X.fill(0, 0, cols); // an all-zero row hits eps
          if (seed % 7 === 0) X[0] = 2.5 / 127 * amp; // exact ties
          const kpad = ternaryPaddedCols(cols);
          const x = put(K, X);
          const out = K.alloc(rows * kpad), inv = K.alloc(4 * rows);
          const sums = K.alloc(4 * rows);
          K.u8(out, rows * kpad).fill(0xaa);
          K.f32(inv, rows).fill(NaN);
          K.i32(sums, rows).fill(-999999);
          try {
            K.quantizeRows({ x, rows, cols, ldx, out, invScales: inv, sums });
            for (let i = 0; i < rows; i++) {
              const ref = quantizeRef(
                X.subarray(i * ldx, i * ldx + cols),
                1e-5,
              );
              const q = K.i8(out + i * kpad, kpad);
              assert.deepEqual(
                Array.from(q.subarray(0, cols)),
                Array.from(ref.q),
              );
              assert.ok(q.subarray(cols).every((b) => b === 0), "padding");
              assert.equal(K.f32(inv, rows)[i], ref.inv);
              assert.equal(K.i32(sums, rows)[i], ref.sum);
              for (let j = 0; j < cols; j++) {
                // |q/s − x| ≤ 1/(2s) up to f32 rounding of x·s
                const err = Math.abs(ref.q[j] / ref.s - X[i * ldx + j]);
                assert.ok(err <= (0.5 + 1e-4) / ref.s);
              }
            }
          } finally {
            for (const p of [x, out, inv, sums]) K.free(p);
          }
        },
      ),
      { numRuns: 60 },
    );
  });
}

Deno.test("packTernaryRows: layout of REFERENCE §5 and round trip", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 200 }),
      fc.integer(),
      (rows, cols, seed) => {
        const r = rng(seed);
        const w = Int8Array.from(
          { length: rows * cols },
          () => Math.floor((r() + 1) * 1.5) - 1,
        );
        const p = packTernaryRows(w, rows, cols);
        const rb = ternaryRowBytes(cols);
        assert.equal(p.length, rows * rb);
        assert.deepEqual(unpackTernaryRows(p, rows, cols), w);
        for (let i = 0; i < rows; i++) {
          for (let k = 0; k < rb * 4; k++) {
            const byte = p[i * rb + Math.floor(k / 64) * 16 + (k % 16)];
            const code = (byte >> (2 * Math.floor((k % 64) / 16))) & 3;
            assert.equal(code, k < cols ? w[i * cols + k] + 1 : 1);
          }
        }
      },
    ),
    { numRuns: 50 },
  );
  assert.throws(() => packTernaryRows(Int8Array.of(2), 1, 1), /weights/);
  assert.throws(() => packTernaryRows(Int8Array.of(0, 1), 1, 1), /weights/);
  assert.throws(() => unpackTernaryRows(Uint8Array.of(255), 1, 1), /packed/);
});

Deno.test("ternaryScale: the one magnitude of ternary × scale weights, undefined otherwise", async () => {
  for (const v of VARIANTS) {
    const K = await kernelsOf(v);
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 700 }),
        fc.float({
          min: Math.fround(1e-30),
          max: Math.fround(1e30),
          noNaN: true,
        }),
        fc.integer(),
        fc.constantFrom("ternary", "zeros", "other", "nan", "inf"),
        (n, a, seed, kind) => {
          const r = rng(seed);
          const w = Float32Array.from(
            { length: n },
            () => (Math.floor((r() + 1) * 1.5) - 1) * a,
          );
          if (kind === "zeros") w.fill(0);
          const at = Math.floor(Math.abs(r()) * n);
          if (kind === "other") w[at] = Math.fround(a * 1.5) * Math.sign(r());
          if (kind === "nan") w[at] = NaN;
          if (kind === "inf") w[at] = -Infinity;
          const mags = new Set([...w].map(Math.abs).filter((m) => m !== 0));
          const want = mags.size === 0
            ? 0
            : mags.size === 1 && !mags.has(NaN)
            ? [...mags][0]
            : undefined;
          const p = put(K, w);
          const got = K.ternaryScale(p, n);
          K.free(p);
          assert.equal(got, want, `${kind} n=${n} at=${at}`);
        },
      ),
      { numRuns: 300 },
    );
  }
});

/** Round half to even of an f32 value (as f32x4.nearest). */
function roundEven(y: number): number {
  const r = Math.round(y);
  return r - y === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

for (const v of VARIANTS) {
  Deno.test(`packTernary (${v}): same bytes as packTernaryRows of the f32 reference`, async () => {
    const K = await kernelsOf(v);
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 0, max: 300 }),
        fc.nat(3),
        fc.integer(),
        (rows, cols, pad, seed) => {
          const ldw = cols + pad, r = rng(seed);
          const inv = 1 / (0.2 + Math.abs(r()));
          // Weights on the rounding ties ±0.5/inv, ±1.5/inv now and then.
          const W = Float32Array.from(
            { length: rows * ldw },
            () => seed % 3 === 0 ? (Math.floor(r() * 4) + 0.5) / inv : 2 * r(),
          );
          const want = new Int8Array(rows * cols);
          for (let i = 0; i < rows; i++) {
            for (let j = 0; j < cols; j++) {
              const q = roundEven(
                Math.fround(W[i * ldw + j] * Math.fround(inv)),
              );
              want[i * cols + j] = Math.max(-1, Math.min(1, q));
            }
          }
          const rb = ternaryRowBytes(cols);
          const w = put(K, W), out = K.alloc(rows * rb);
          K.u8(out, rows * rb).fill(0xff);
          try {
            K.packTernary({ w, rows, cols, ldw, invScale: inv, out });
            assert.deepEqual(
              K.u8(out, rows * rb).slice(),
              packTernaryRows(want, rows, cols),
            );
          } finally {
            K.free(w);
            K.free(out);
          }
        },
      ),
      { numRuns: 60 },
    );
  });
}

interface TernaryCase {
  n: number;
  k: number;
  tokens: number;
  padO: number;
  seed: number;
  extreme: boolean;
}

function checkTernary(K: WasmKernels, t: TernaryCase): void {
  const { n, k, tokens } = t;
  const kpad = ternaryPaddedCols(k);
  const ldo = n + t.padO;
  const r = rng(t.seed);
  const W = Int8Array.from(
    { length: n * k },
    () => t.extreme ? 1 : Math.floor((r() + 1) * 1.5) - 1,
  );
  // Extreme: x = −128 everywhere (largest |Σ c·x| the i16 lanes must hold).
  const X = new Int8Array(tokens * kpad);
  for (let i = 0; i < tokens; i++) {
    for (let j = 0; j < k; j++) {
      X[i * kpad + j] = t.extreme
        ? (i % 2 ? 127 : -128)
        : Math.floor(r() * 128);
    }
  }
  const sums = new Int32Array(tokens);
  for (let i = 0; i < tokens; i++) {
    for (let j = 0; j < kpad; j++) sums[i] += X[i * kpad + j];
  }
  const inv = Float32Array.from({ length: tokens }, () => Math.abs(r()) + 0.01);
  const scale = 0.37;
  const w = put(K, packTernaryRows(W, n, k)), x = put(K, X);
  const s = put(K, new Uint8Array(sums.buffer)), iv = put(K, inv);
  const outLen = tokens * ldo;
  const out = K.alloc(4 * outLen);
  K.f32(out, outLen).fill(NaN);
  for (let i = 0; i < tokens; i++) {
    K.f32(out, outLen).fill(-7, i * ldo + n, (i + 1) * ldo);
  }
  try {
    K.ternaryMatmul({
      w,
      n,
      k,
      x,
      tokens,
      sums: s,
      invScales: iv,
      scale,
      out,
      ldo,
    });
    const O = K.f32(out, outLen);
    for (let i = 0; i < tokens; i++) {
      for (let j = 0; j < ldo; j++) {
        if (j >= n) {
          assert.equal(O[i * ldo + j], -7, "gap written");
          continue;
        }
        let d = 0;
        for (let p = 0; p < k; p++) d += W[j * k + p] * X[i * kpad + p];
        const want = Math.fround(
          Math.fround(d) * Math.fround(Math.fround(scale) * inv[i]),
        );
        assert.equal(
          O[i * ldo + j],
          want,
          `out[${i},${j}] (${JSON.stringify(t)})`,
        );
      }
    }
  } finally {
    for (const p of [w, x, s, iv, out]) K.free(p);
  }
}

for (const v of VARIANTS) {
  Deno.test(`ternaryMatmul (${v}): exact for every row/token/K remainder`, async () => {
    const K = await kernelsOf(v);
    fc.assert(
      fc.property(
        fc.record({
          n: fc.integer({ min: 1, max: 140 }),
          k: fc.integer({ min: 0, max: 1200 }),
          tokens: fc.integer({ min: 1, max: 9 }),
          padO: fc.nat(3),
          seed: fc.integer(),
          extreme: fc.constant(false),
        }),
        (t) => checkTernary(K, t),
      ),
      { numRuns: 60 },
    );
    // Every tile shape: rows mod 4, tokens mod 4.
    for (let n = 1; n <= 9; n++) {
      for (let tokens = 1; tokens <= 5; tokens++) {
        checkTernary(K, {
          n,
          k: 70,
          tokens,
          padO: 1,
          seed: n * 7 + tokens,
          extreme: false,
        });
      }
    }
    // The model's shapes (k = 256, 768): many row tiles per tile call, a
    // 64-row block boundary, and token counts that leave a partial group.
    for (
      const [n, k, tokens] of [[768, 256, 67], [256, 768, 30], [70, 256, 13]]
    ) {
      checkTernary(K, { n, k, tokens, padO: 2, seed: n + k, extreme: false });
    }
  });

  Deno.test(`ternaryMatmul (${v}): no i16 overflow at the extremes (all +1, x = −128/127)`, async () => {
    const K = await kernelsOf(v);
    checkTernary(K, {
      n: 5,
      k: 4096 + 64,
      tokens: 5,
      padO: 0,
      seed: 1,
      extreme: true,
    });
  });

  Deno.test(`ternaryMatvec (${v}) after quantizeRows ≈ f64 product`, async () => {
    const K = await kernelsOf(v);
    const n = 37, k = 300, r = rng(5);
    const W = Int8Array.from(
      { length: n * k },
      () => Math.floor((r() + 1) * 1.5) - 1,
    );
    const X = Float32Array.from({ length: k }, r);
    const kpad = ternaryPaddedCols(k);
    const w = put(K, packTernaryRows(W, n, k)), x = put(K, X);
    const q = K.alloc(kpad),
      inv = K.alloc(4),
      sums = K.alloc(4),
      out = K.alloc(4 * n);
    K.f32(out, n).fill(NaN);
    K.quantizeRows({ x, rows: 1, cols: k, out: q, invScales: inv, sums });
    K.ternaryMatvec({ w, n, k, x: q, sums, invScales: inv, scale: 0.5, out });
    const O = K.f32(out, n);
    const maxX = X.reduce((a, b) => Math.max(a, Math.abs(b)), 0);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < k; j++) s += W[i * k + j] * X[j] * 0.5;
      // each x_j is off by at most maxX/254 after quantization
      assert.ok(Math.abs(O[i] - s) <= 0.5 * k * maxX / 254 + 1e-5, `out[${i}]`);
    }
    for (const p of [w, x, q, inv, sums, out]) K.free(p);
  });
}

Deno.test("kernels reject bad arguments with the argument's name", async () => {
  const K = await kernelsOf(VARIANTS[0]);
  const p = K.alloc(64);
  const cap = K.memory.buffer.byteLength;
  assert.throws(() => K.matmul({ a: p, b: p, c: p, m: 1.5, n: 1, k: 1 }), /m:/);
  assert.throws(
    () => K.matmul({ a: p, b: p, c: p, m: 2, n: 2, k: 2, lda: 1 }),
    /lda/,
  );
  assert.throws(() => K.matmul({ a: cap, b: p, c: p, m: 1, n: 1, k: 1 }), /a:/);
  assert.throws(
    () => K.matmul({ a: p + 1, b: p, c: p, m: 1, n: 1, k: 1 }),
    /a:/,
  );
  assert.throws(() => K.matvec({ w: p, x: p, y: cap, n: 1, k: 1 }), /y:/);
  assert.throws(
    () =>
      K.quantizeRows({
        x: p,
        rows: 1,
        cols: 4,
        out: p,
        invScales: p,
        sums: p,
        eps: 0,
      }),
    /eps/,
  );
  assert.throws(
    () =>
      K.ternaryMatmul({
        w: p,
        n: 1,
        k: 64,
        x: p,
        tokens: 1,
        sums: p,
        invScales: p,
        scale: NaN,
        out: p,
      }),
    /scale/,
  );
  const end = K.memory.buffer.byteLength;
  assert.throws(
    () => K.matvecF16({ w: end - 2, x: p, y: p, n: 1, k: 2 }),
    /w: .* run past the memory/,
  );
  assert.throws(
    () =>
      K.int8Matmul({
        w: p,
        scales: p,
        n: 1,
        k: (1 << 17) + 1,
        x: p,
        tokens: 1,
        invScales: p,
        out: p,
      }),
    /k: 131073 exceeds 131072/,
  );
  assert.throws(
    () =>
      K.attendSession({
        q: p,
        k: p,
        vt: p,
        out: p,
        T: 1,
        heads: 3,
        kvHeads: 2,
        headDim: 4,
        ctx: 4,
        pos0: 0,
        qRow: 12,
        scores: p,
        scale: 1,
        stats: p,
      }),
    /kvHeads: 2 does not divide heads 3/,
  );
  assert.ok(Number.isFinite(K.fmaProbe(10)));
  K.free(p);
});

// ------------------------------------------------ training kernels (raw)

for (const v of VARIANTS) {
  Deno.test(`training (${v}): e^x of softmax_row within 1e-6 of f64, 0 below −87.34, NaN kept`, async () => {
    const K = await kernelsOf(v);
    const T = K.training;
    const x = K.alloc(8), p = K.alloc(8), st = K.alloc(24);
    const xs = K.f32(x, 2), ps = K.f32(p, 2);
    const stats = new Float64Array(K.memory.buffer, st, 3);
    // Rows [x, 0]: p0 = e^x / (1 + e^x), through the tail path (2 elements).
    for (let i = 0; i <= 4000; i++) {
      const e = Math.fround(-87.3 * i / 4000);
      xs.set([e, 0]);
      T.softmax_row(x, p, 2, st);
      const want = Math.exp(e) / (1 + Math.exp(e));
      assert.ok(
        Math.abs(ps[0] - want) <= 1e-6 * want + 1e-45,
        `x = ${e}: ${ps[0]} vs ${want}`,
      );
      assert.ok(stats[0] === 0 && stats[2] === e, "max and Σ x");
      assert.ok(Math.abs(stats[1] - (1 + Math.exp(e))) <= 1e-6);
    }
    xs.set([-88, 0]);
    T.softmax_row(x, p, 2, st);
    assert.deepEqual([...ps], [0, 1]);
    xs.set([NaN, 0]);
    T.softmax_row(x, p, 2, st);
    assert.ok(Number.isNaN(ps[0]) && Number.isNaN(ps[1]));
    for (const q of [x, p, st]) K.free(q);
  });

  Deno.test(`training (${v}): act_quant flags NaN and ±∞ at every position`, async () => {
    const K = await kernelsOf(v);
    const cols = 7; // a vector of 4 and a scalar tail of 3
    const x = K.alloc(4 * 2 * cols), o = K.alloc(4 * 2 * cols);
    const xs = K.f32(x, 2 * cols);
    for (const bad of [NaN, Infinity, -Infinity]) {
      for (let i = 0; i < 2 * cols; i++) {
        xs.fill(0.5);
        xs[i] = bad;
        assert.equal(K.training.act_quant(x, o, 2, cols), 1, `${bad} at ${i}`);
      }
    }
    const big = Math.fround(-3.4e38); // finite, near the f32 limit
    xs.fill(big);
    assert.equal(K.training.act_quant(x, o, 2, cols), 0);
    assert.ok(K.f32(o, 2 * cols).every((q) => Math.abs(q / big - 1) < 1e-7));
    K.free(x);
    K.free(o);
  });

  Deno.test(`training (${v}): fill and zero leave the neighbours intact`, async () => {
    const K = await kernelsOf(v);
    fc.assert(fc.property(fc.nat(40), fc.nat(3), (n, off) => {
      const p = K.alloc(4 * (n + 8));
      const all = K.f32(p, n + 8);
      all.fill(7);
      K.training.fill_f32(p + 4 * off, -1.5, n);
      for (let i = 0; i < n + 8; i++) {
        assert.equal(all[i], i >= off && i < off + n ? -1.5 : 7);
      }
      K.training.zero_bytes(p + 4 * off, 4 * n);
      for (let i = 0; i < n + 8; i++) {
        assert.equal(all[i], i >= off && i < off + n ? 0 : 7);
      }
      K.free(p);
    }));
  });
}
