/**
 * The pool's row jobs (an f32 matmul split by columns, int8 × int8 matmul,
 * quantization, RMSNorm,
 * every element-wise kernel, row softmax, the scoring loss, whole-sequence attention) give
 * the same bits on 1, 2 and 3 threads, on random shapes including sizes that
 * divide neither the chunks nor the SIMD blocks; and the scoring loss and
 * attention equal, bit for bit, the one-thread computations they replace
 * (`softmax_row` per row, and per-head strided matmuls + `softmax_causal`),
 * and a plain f64 reference to float rounding.
 */
import { strict as assert } from "node:assert";
import fc from "fast-check";
import {
  MAP_KERNEL_NAMES,
  MAP_KERNELS,
  type MapKernel,
} from "../../src/backend/wasm/matmul_pool.ts";
import {
  packInt8Rows,
  ternaryPaddedCols,
  WasmKernels,
} from "../../src/backend/wasm/wasm_kernels.ts";

/** A uniform(−1, 1) generator from `seed` (mulberry32). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  };
}

/** The bytes of a typed array, for bit-for-bit comparison (NaN and −0 included). */
const bytes = (a: ArrayBufferView): Uint8Array =>
  new Uint8Array(a.buffer, a.byteOffset, a.byteLength).slice();

/** Runs `body` with kernels on 1, 2 and 3 threads, closed after. */
async function onThreads123(
  body: (pools: WasmKernels[]) => void,
): Promise<void> {
  const pools = await Promise.all(
    [1, 2, 3].map((threads) => WasmKernels.create({ threads })),
  );
  assert.deepEqual(pools.map((k) => k.threads), [1, 2, 3]);
  try {
    body(pools);
  } finally {
    for (const K of pools) K.close();
  }
}

/** Uploads `data` into fresh memory of `K`; returns the pointer. */
function put(
  K: WasmKernels,
  data: Float32Array | Int32Array | Int8Array,
): number {
  const p = K.alloc(data.byteLength);
  K.u8(p, data.byteLength).set(
    new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  );
  return p;
}

function assertSame(outs: Uint8Array[], what: string): void {
  for (let i = 1; i < outs.length; i++) {
    assert.ok(
      outs[i].length === outs[0].length &&
        outs[i].every((b, j) => b === outs[0][j]),
      `${what}: ${i + 1} threads differ from 1`,
    );
  }
}

Deno.test("a wide f32 matmul (split by columns) on 1, 2 and 3 threads: bit-identical", async () => {
  await onThreads123((pools) =>
    fc.assert(
      fc.property(
        fc.record({
          m: fc.integer({ min: 1, max: 200 }),
          wide: fc.integer({ min: 4, max: 12 }),
          k: fc.integer({ min: 1, max: 300 }),
          transA: fc.boolean(),
          transB: fc.boolean(),
          accumulate: fc.boolean(),
          pad: fc.integer({ min: 0, max: 5 }),
          seed: fc.integer(),
        }),
        ({ m, wide, k, transA, transB, accumulate, pad, seed }) => {
          const r = rng(seed);
          // n ≥ 4m: the column split (when m·n·k is large enough to split).
          const n = wide * m + 3;
          const lda = (transA ? m : k) + pad, ldb = (transB ? k : n) + pad;
          const ldc = n + pad;
          const A = Float32Array.from({ length: (transA ? k : m) * lda }, r);
          const B = Float32Array.from({ length: (transB ? n : k) * ldb }, r);
          const C = Float32Array.from({ length: m * ldc }, r);
          const outs = pools.map((K) => {
            const a = put(K, A), b = put(K, B), c = put(K, C);
            K.matmul({
              a,
              b,
              c,
              m,
              n,
              k,
              lda,
              ldb,
              ldc,
              transA,
              transB,
              accumulate,
            });
            const y = bytes(K.f32(c, C.length));
            for (const p of [a, b, c]) K.free(p);
            return y;
          });
          assertSame(outs, "matmul (columns)");
        },
      ),
      // Large enough to be split (m·n·k ≥ 2^22, m ≥ 2·mr).
      {
        numRuns: 25,
        examples: [[{
          m: 130,
          wide: 9,
          k: 300,
          transA: false,
          transB: true,
          accumulate: false,
          pad: 3,
          seed: 6,
        }], [{
          m: 64,
          wide: 12,
          k: 299,
          transA: true,
          transB: false,
          accumulate: true,
          pad: 0,
          seed: 7,
        }]],
      },
    )
  );
});

Deno.test("int8Matmul on 1, 2 and 3 threads: bit-identical, and equal to the exact integer sums", async () => {
  await onThreads123((pools) =>
    fc.assert(
      fc.property(
        fc.record({
          tokens: fc.integer({ min: 1, max: 300 }),
          n: fc.integer({ min: 1, max: 200 }),
          k: fc.integer({ min: 1, max: 400 }),
          seed: fc.integer(),
        }),
        ({ tokens, n, k, seed }) => {
          const r = rng(seed);
          const kpad = ternaryPaddedCols(k);
          const W = Int8Array.from({ length: n * k }, () =>
            Math.round(127 * r()));
          const X = new Int8Array(tokens * kpad);
          for (let t = 0; t < tokens; t++) {
            for (let j = 0; j < k; j++) {
              X[t * kpad + j] = Math.round(127 * r());
            }
          }
          const S = Float32Array.from({ length: n }, () =>
            Math.abs(r()) / 64);
          const I = Float32Array.from({ length: tokens }, () => Math.abs(r()));
          const outs = pools.map((K) => {
            const w = put(K, packInt8Rows(W, n, k)), x = put(K, X);
            const scales = put(K, S), inv = put(K, I);
            const out = K.alloc(4 * tokens * n);
            K.int8Matmul({ w, scales, n, k, x, tokens, invScales: inv, out });
            const y = K.f32(out, tokens * n).slice();
            for (const p of [w, x, scales, inv, out]) K.free(p);
            return y;
          });
          assertSame(outs.map(bytes), "int8Matmul");
          for (let t = 0; t < tokens; t += 7) {
            for (let i = 0; i < n; i++) {
              let sum = 0;
              for (let j = 0; j < k; j++) sum += W[i * k + j] * X[t * kpad + j];
              const want = Math.fround(sum * Math.fround(S[i] * I[t]));
              assert.equal(outs[0][t * n + i], want, `out[${t}][${i}]`);
            }
          }
        },
      ),
      // Large enough to be split (tokens·n·kpad ≥ 2^24).
      { numRuns: 15, examples: [[{ tokens: 300, n: 200, k: 333, seed: 1 }]] },
    )
  );
});

Deno.test("quantizeRows, actQuant and rmsnorm on 1, 2 and 3 threads: bit-identical", async () => {
  await onThreads123((pools) =>
    fc.assert(
      fc.property(
        fc.record({
          rows: fc.integer({ min: 1, max: 700 }),
          cols: fc.integer({ min: 1, max: 300 }),
          seed: fc.integer(),
        }),
        ({ rows, cols, seed }) => {
          const r = rng(seed);
          const X = Float32Array.from({ length: rows * cols }, () => 3 * r());
          const G = Float32Array.from({ length: cols }, r);
          const kpad = ternaryPaddedCols(cols);
          const outs = pools.map((K) => {
            const x = put(K, X), g = put(K, G);
            const fq = K.alloc(4 * rows * cols), codes = K.alloc(rows * kpad);
            const inv = K.alloc(4 * rows), sums = K.alloc(4 * rows);
            const normed = K.alloc(4 * rows * cols), rstd = K.alloc(4 * rows);
            assert.ok(K.actQuant({ x, o: fq, rows, cols }));
            K.quantizeRows({
              x: fq,
              rows,
              cols,
              out: codes,
              invScales: inv,
              sums,
            });
            K.rmsnorm({ x, g, o: normed, rstd, rows, dim: cols, eps: 1e-6 });
            const got = [
              K.f32(fq, rows * cols),
              K.i8(codes, rows * kpad),
              K.f32(inv, rows),
              K.i32(sums, rows),
              K.f32(normed, rows * cols),
              K.f32(rstd, rows),
            ].map(bytes);
            for (const p of [x, g, fq, codes, inv, sums, normed, rstd]) {
              K.free(p);
            }
            return got;
          });
          const names = [
            "actQuant",
            "codes",
            "invScales",
            "sums",
            "rmsnorm",
            "rstd",
          ];
          names.forEach((name, i) => assertSame(outs.map((o) => o[i]), name));
        },
      ),
      // Large enough to be split (rows·cols ≥ 2^16).
      { numRuns: 20, examples: [[{ rows: 700, cols: 299, seed: 2 }]] },
    )
  );
});

Deno.test("actQuant reports a non-finite row on any thread count", async () => {
  await onThreads123((pools) => {
    for (const K of pools) {
      const rows = 600, cols = 200;
      const X = new Float32Array(rows * cols).fill(0.5);
      X[517 * cols + 3] = NaN;
      const x = put(K, X), o = K.alloc(4 * X.length);
      assert.equal(K.actQuant({ x, o, rows, cols }), false);
      K.free(x);
      K.free(o);
    }
  });
});

/** Scalars of each element-wise kernel for the tests (a flag 1 accumulates). */
const MAP_SCALAR_VALUES: Record<MapKernel, number[]> = {
  fill_f32: [0.5],
  clamp_f32: [0.3],
  mul_f32: [],
  mul_acc_f32: [1],
  axmb_f32: [0.7, 0.01, 1],
  silu_f32: [],
  relu2_f32: [],
  silu_bwd_f32: [1],
  relu2_bwd_f32: [0],
  adamw_f64: [0.9, 1, 0.999, 0.9, 0.1, 0.95, 0.05, 1e-3, 0.5, 1e-8],
};

Deno.test("map (every element-wise kernel) on 1, 2 and 3 threads: bit-identical", async () => {
  await onThreads123((pools) =>
    fc.assert(
      fc.property(
        fc.record({
          n: fc.integer({ min: 1, max: 200_000 }),
          seed: fc.integer(),
        }),
        ({ n, seed }) => {
          const r = rng(seed);
          // Non-negative inputs: AdamW's second moment (its fourth array).
          const inputs = [0, 1, 2, 3].map((i) =>
            Float32Array.from({ length: n }, () =>
              i === 3 ? Math.abs(r()) : 20 * r())
          );
          for (const kernel of MAP_KERNEL_NAMES) {
            const [na] = MAP_KERNELS[kernel];
            const outs = pools.map((K) => {
              const arrays = inputs.slice(0, na).map((a) =>
                put(K, a)
              );
              K.map({ kernel, arrays, scalars: MAP_SCALAR_VALUES[kernel], n });
              // Every array: outputs, and inputs updated in place (AdamW's).
              const y = bytes(
                Float32Array.from(arrays.flatMap((p) => [...K.f32(p, n)])),
              );
              for (const p of arrays) K.free(p);
              return y;
            });
            assertSame(outs, kernel);
          }
        },
      ),
      { numRuns: 10, examples: [[{ n: 150_001, seed: 3 }]] },
    )
  );
});

Deno.test("map names the kernel whose arrays or scalars are miscounted", async () => {
  const K = await WasmKernels.create();
  try {
    const p = K.alloc(64);
    assert.throws(
      () => K.map({ kernel: "axmb_f32", arrays: [p, p], scalars: [1], n: 4 }),
      /axmb_f32: takes 2 arrays and 3 scalars, got 2 and 1/,
    );
    assert.throws(
      () => K.map({ kernel: "mul_f32", arrays: [p], n: 4 }),
      /mul_f32: takes 3 arrays and 0 scalars, got 1 and 0/,
    );
  } finally {
    K.close();
  }
});

Deno.test("softmaxRows on 1, 2 and 3 threads: bit-identical, rows summing to 1 with their stats", async () => {
  await onThreads123((pools) =>
    fc.assert(
      fc.property(
        fc.record({
          rows: fc.integer({ min: 1, max: 60 }),
          cols: fc.integer({ min: 1, max: 3000 }),
          seed: fc.integer(),
        }),
        ({ rows, cols, seed }) => {
          const r = rng(seed);
          const X = Float32Array.from({ length: rows * cols }, () => 8 * r());
          const outs = pools.map((K) => {
            const x = put(K, X), p = K.alloc(4 * X.length);
            const stats = K.alloc(24 * rows);
            K.softmaxRows({ x, p, rows, cols, stats });
            const P = K.f32(p, X.length).slice();
            const S = new Float64Array(K.memory.buffer, stats, 3 * rows)
              .slice();
            for (const q of [x, p, stats]) K.free(q);
            return { P, S };
          });
          assertSame(outs.map((o) => bytes(o.P)), "probabilities");
          assertSame(outs.map((o) => bytes(o.S)), "stats");
          const { P, S } = outs[0];
          for (let i = 0; i < rows; i++) {
            const row = X.subarray(i * cols, (i + 1) * cols);
            assert.equal(S[3 * i], Math.max(...row));
            const sum = P.subarray(i * cols, (i + 1) * cols)
              .reduce((a, b) => a + b, 0);
            assert.ok(Math.abs(sum - 1) < 1e-5, `row ${i} sums to ${sum}`);
          }
        },
      ),
      { numRuns: 15 },
    )
  );
});

Deno.test("rope on 1, 2 and 3 threads: bit-identical, positions kept across the split", async () => {
  await onThreads123((pools) =>
    fc.assert(
      fc.property(
        fc.record({
          seqs: fc.integer({ min: 1, max: 40 }),
          T: fc.integer({ min: 1, max: 130 }),
          heads: fc.integer({ min: 1, max: 4 }),
          half: fc.integer({ min: 1, max: 40 }),
          neox: fc.boolean(),
          accumulate: fc.boolean(),
          seed: fc.integer(),
        }),
        ({ seqs, T, heads, half, neox, accumulate, seed }) => {
          const r = rng(seed), hd = 2 * half, rows = seqs * T;
          const X = Float32Array.from({ length: rows * heads * hd }, r);
          const O = Float32Array.from({ length: X.length }, r);
          const C = Float32Array.from({ length: T * hd }, r);
          const S = Float32Array.from({ length: T * hd }, r);
          const outs = pools.map((K) => {
            const [x, o, cos, sin] = [X, O, C, S].map((a) => put(K, a));
            K.rope({
              x,
              o,
              rows,
              T,
              heads,
              headDim: hd,
              cos,
              sin,
              neox,
              accumulate,
            });
            const y = bytes(K.f32(o, X.length));
            for (const p of [x, o, cos, sin]) K.free(p);
            return y;
          });
          assertSame(outs, "rope");
          // Row r at position r mod T: sequence 1 rotated as sequence 0.
          if (seqs > 1 && !accumulate) {
            const K = pools[2], w = T * heads * hd;
            const x = put(K, X.slice(w, 2 * w)), o = K.alloc(4 * w);
            const cos = put(K, C), sin = put(K, S);
            K.rope({ x, o, rows: T, T, heads, headDim: hd, cos, sin, neox });
            const alone = bytes(K.f32(o, w));
            for (const p of [x, o, cos, sin]) K.free(p);
            assertSame([alone, outs[2].slice(4 * w, 8 * w)], "sequence 1");
          }
        },
      ),
      {
        numRuns: 15,
        examples: [[{
          seqs: 40,
          T: 128,
          heads: 4,
          half: 32,
          neox: true,
          accumulate: false,
          seed: 1,
        }]],
      },
    )
  );
});

Deno.test("softmaxNll: the one-thread softmax_row loop's losses bit for bit on 1, 2 and 3 threads", async () => {
  await onThreads123((pools) =>
    fc.assert(
      fc.property(
        fc.record({
          rows: fc.integer({ min: 1, max: 60 }),
          vocab: fc.integer({ min: 1, max: 3000 }),
          seed: fc.integer(),
        }),
        ({ rows, vocab, seed }) => {
          const r = rng(seed);
          const L = Float32Array.from({ length: rows * vocab }, () => 8 * r());
          const Y = Int32Array.from(
            { length: rows },
            () => r() < -0.8 ? -1 : Math.floor(Math.abs(r()) * vocab) % vocab,
          );
          const outs = pools.map((K) => {
            const logits = put(K, L), targets = put(K, Y);
            const losses = K.alloc(8 * rows);
            K.softmaxNll({ logits, vocab, rows, targets, losses });
            const got = new Float64Array(K.memory.buffer, losses, rows).slice();
            for (const p of [logits, targets, losses]) K.free(p);
            return got;
          });
          assertSame(outs.map(bytes), "softmaxNll");
          // The loop it replaces, and the definition in f64.
          const K = pools[0];
          const row = K.alloc(4 * vocab), stats = K.alloc(24);
          for (let i = 0; i < rows; i++) {
            const y = Y[i];
            if (y === -1) {
              assert.equal(outs[0][i], 0);
              continue;
            }
            const x = L.subarray(i * vocab, (i + 1) * vocab);
            K.f32(row, vocab).set(x);
            K.training.softmax_row(row, row, vocab, stats);
            const st = new Float64Array(K.memory.buffer, stats, 3);
            assert.equal(outs[0][i], st[0] + Math.log(st[1]) - x[y]);
            const m = Math.max(...x);
            let z = 0;
            for (const v of x) z += Math.exp(v - m);
            const want = m + Math.log(z) - x[y];
            assert.ok(
              Math.abs(outs[0][i] - want) <= 1e-5 * (1 + Math.abs(want)),
            );
          }
          K.free(row);
          K.free(stats);
        },
      ),
      // Large enough to be split (rows·vocab ≥ 2^16).
      { numRuns: 15, examples: [[{ rows: 60, vocab: 2999, seed: 4 }]] },
    )
  );
});

/** Plain causal attention of one sequence and head (f64), for a float-rounding check. */
function attendRef(
  Q: Float32Array,
  K: Float32Array,
  V: Float32Array,
  o: {
    T: number;
    qRow: number;
    kvRow: number;
    D: number;
    h: number;
    g: number;
  },
): Float64Array {
  const { T, qRow, kvRow, D, h, g } = o;
  const out = new Float64Array(T * D);
  for (let t = 0; t < T; t++) {
    const s: number[] = [];
    for (let u = 0; u <= t; u++) {
      let dot = 0;
      for (let j = 0; j < D; j++) {
        dot += Q[t * qRow + h * D + j] * K[u * kvRow + g * D + j];
      }
      s.push(dot / Math.sqrt(D));
    }
    const m = Math.max(...s);
    const e = s.map((v) => Math.exp(v - m));
    const z = e.reduce((a, b) => a + b, 0);
    for (let u = 0; u <= t; u++) {
      for (let j = 0; j < D; j++) {
        out[t * D + j] += (e[u] / z) * V[u * kvRow + g * D + j];
      }
    }
  }
  return out;
}

Deno.test("attendRows: the per-head one-thread attention bit for bit on 1, 2 and 3 threads", async () => {
  await onThreads123((pools) =>
    fc.assert(
      fc.property(
        fc.record({
          seqs: fc.integer({ min: 1, max: 4 }),
          T: fc.integer({ min: 1, max: 100 }),
          kvHeads: fc.integer({ min: 1, max: 3 }),
          group: fc.integer({ min: 1, max: 2 }),
          D: fc.integer({ min: 1, max: 40 }),
          seed: fc.integer(),
        }),
        ({ seqs, T, kvHeads, group, D, seed }) => {
          const r = rng(seed);
          const heads = kvHeads * group, qRow = heads * D, kvRow = kvHeads * D;
          const scale = 1 / Math.sqrt(D);
          const Q = Float32Array.from({ length: seqs * T * qRow }, r);
          const Kx = Float32Array.from({ length: seqs * T * kvRow }, r);
          const Vx = Float32Array.from({ length: seqs * T * kvRow }, r);
          const outs = pools.map((K) => {
            const q = put(K, Q), k = put(K, Kx), v = put(K, Vx);
            const out = K.alloc(4 * Q.length);
            K.attendRows({
              q,
              k,
              v,
              out,
              seqs,
              T,
              heads,
              kvHeads,
              headDim: D,
              scale,
            });
            const y = K.f32(out, Q.length).slice();
            for (const p of [q, k, v, out]) K.free(p);
            return y;
          });
          assertSame(outs.map(bytes), "attendRows");
          // The runtime's former one-thread attention: per sequence and head,
          // strided matmuls in blocks of 32 query rows and softmax_causal.
          const K = pools[0];
          const q = put(K, Q), k = put(K, Kx), v = put(K, Vx);
          const out = K.alloc(4 * Q.length), S = K.alloc(4 * T * T);
          for (let s = 0; s < seqs; s++) {
            const qs = q + 4 * s * T * qRow, ks = k + 4 * s * T * kvRow;
            const vs = v + 4 * s * T * kvRow, os = out + 4 * s * T * qRow;
            for (let h = 0; h < heads; h++) {
              const g = Math.floor(h / group);
              for (let t0 = 0; t0 < T; t0 += 32) {
                const t1 = Math.min(T, t0 + 32);
                K.matmul({
                  a: qs + 4 * (t0 * qRow + h * D),
                  b: ks + 4 * g * D,
                  c: S + 4 * t0 * T,
                  m: t1 - t0,
                  n: t1,
                  k: D,
                  transB: true,
                  lda: qRow,
                  ldb: kvRow,
                  ldc: T,
                });
              }
              K.training.softmax_causal(S, T, T, scale);
              for (let t0 = 0; t0 < T; t0 += 32) {
                const t1 = Math.min(T, t0 + 32);
                K.matmul({
                  a: S + 4 * t0 * T,
                  b: vs + 4 * g * D,
                  c: os + 4 * (t0 * qRow + h * D),
                  m: t1 - t0,
                  n: D,
                  k: t1,
                  lda: T,
                  ldb: kvRow,
                  ldc: qRow,
                });
              }
            }
          }
          const before = K.f32(out, Q.length).slice();
          for (const p of [q, k, v, out, S]) K.free(p);
          assertSame([bytes(before), bytes(outs[0])], "attendRows vs per-head");
          // And the definition, to float rounding (sequence 0, every head).
          for (let h = 0; h < heads; h++) {
            const g = Math.floor(h / group);
            const want = attendRef(Q, Kx, Vx, { T, qRow, kvRow, D, h, g });
            for (let t = 0; t < T; t++) {
              for (let j = 0; j < D; j++) {
                const got = outs[0][t * qRow + h * D + j];
                assert.ok(Math.abs(got - want[t * D + j]) <= 1e-4);
              }
            }
          }
        },
      ),
      // Large enough to be split (seqs·heads·T²·D ≥ 2^16), T not a multiple of 32.
      {
        numRuns: 15,
        examples: [[{ seqs: 3, T: 77, kvHeads: 2, group: 2, D: 24, seed: 5 }]],
      },
    )
  );
});
