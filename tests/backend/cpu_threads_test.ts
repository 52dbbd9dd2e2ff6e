/**
 * The kernels' thread pool: f32 and ternary products, training's attention and
 * whole training runs are bit-identical for 1, 2 and 3 threads, and the workers stop with `close` (the test
 * sanitizers would report a leaked worker).
 */
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect } from "effect";
import { CpuBackend } from "../../src/backend/cpu/cpu_backend.ts";
import {
  MATMUL_TILES,
  ternaryPaddedCols,
  WasmKernels,
} from "../../src/backend/wasm/wasm_kernels.ts";
import {
  chunkRows,
  MATMUL_MIN_CHUNK_ROWS,
} from "../../src/backend/wasm/matmul_pool.ts";
import { ComputeBackend } from "../../src/backend/service.ts";
import { PRESETS } from "../../src/common/presets.ts";
import {
  defaultSettings,
  initTraining,
  Trainer,
} from "../../src/train/trainer.ts";

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

/** Runs `body` on kernels with 1, 2 and 3 threads, closing them after. */
async function onPools(body: (pools: WasmKernels[]) => void): Promise<void> {
  const pools = await Promise.all(
    [1, 2, 3].map((threads) => WasmKernels.create({ threads })),
  );
  try {
    body(pools);
  } finally {
    for (const K of pools) K.close();
  }
}

Deno.test("matmul on 1, 2 and 3 threads: bit-identical on random shapes, layouts and blockings", () =>
  onPools((pools) => {
    assert.deepEqual(pools.map((k) => k.threads), [1, 2, 3]);
    const initial = pools[0].matmulConfig;
    fc.assert(
      fc.property(
        fc.record({
          m: fc.integer({ min: 1, max: 600 }),
          n: fc.integer({ min: 1, max: 90 }),
          k: fc.integer({ min: 0, max: 400 }),
          transA: fc.boolean(),
          transB: fc.boolean(),
          accumulate: fc.boolean(),
          padC: fc.nat(3),
          // Small blocks: several column and depth blocks of the B that the
          // pool packs once for all chunks.
          tile: fc.option(fc.constantFrom(...MATMUL_TILES)),
          seed: fc.integer(),
        }),
        ({ m, n, k, transA, transB, accumulate, padC, tile, seed }) => {
          for (const K of pools) {
            const [mr, nr] = (tile ?? "1x1").split("x").map(Number);
            K.matmulConfig = tile === null
              ? initial
              : { tile, mc: 2 * mr, kc: 8, nc: 2 * nr };
          }
          const r = rng(seed);
          const A = Float32Array.from({ length: m * k }, r);
          const B = Float32Array.from({ length: k * n }, r);
          const ldc = n + padC;
          const C = Float32Array.from({ length: m * ldc }, r);
          const outs = pools.map((K) => {
            const a = K.alloc(4 * A.length), b = K.alloc(4 * B.length);
            const c = K.alloc(4 * C.length);
            K.f32(a, A.length).set(A);
            K.f32(b, B.length).set(B);
            K.f32(c, C.length).set(C);
            K.matmul({ a, b, c, m, n, k, transA, transB, accumulate, ldc });
            const out = K.f32(c, C.length).slice();
            for (const p of [a, b, c]) K.free(p);
            return out;
          });
          assert.deepEqual(outs[1], outs[0]);
          assert.deepEqual(outs[2], outs[0]);
        },
      ),
      { numRuns: 40 },
    );
    for (const K of pools) K.matmulConfig = initial;
  }));

Deno.test("ternaryMatmul on 1, 2 and 3 threads: bit-identical", () =>
  onPools((pools) => {
    fc.assert(
      fc.property(
        fc.record({
          tokens: fc.integer({ min: 1, max: 300 }),
          n: fc.integer({ min: 1, max: 200 }),
          k: fc.integer({ min: 1, max: 600 }),
          seed: fc.integer(),
        }),
        ({ tokens, n, k, seed }) => {
          const r = rng(seed);
          const X = Float32Array.from({ length: tokens * k }, r);
          const W = Float32Array.from({ length: n * k }, r);
          const kpad = ternaryPaddedCols(k);
          const outs = pools.map((K) => {
            const x = K.alloc(4 * X.length), w = K.alloc(4 * W.length);
            const codes = K.alloc(tokens * kpad), packed = K.alloc(n * kpad);
            const sums = K.alloc(4 * tokens), inv = K.alloc(4 * tokens);
            const out = K.alloc(4 * tokens * n);
            K.f32(x, X.length).set(X);
            K.f32(w, W.length).set(W);
            K.quantizeRows({
              x,
              rows: tokens,
              cols: k,
              out: codes,
              invScales: inv,
              sums,
            });
            K.packTernary({ w, rows: n, cols: k, invScale: 8, out: packed });
            K.ternaryMatmul({
              w: packed,
              n,
              k,
              x: codes,
              tokens,
              sums,
              invScales: inv,
              scale: 0.37,
              out,
            });
            const y = K.f32(out, tokens * n).slice();
            for (const p of [x, w, codes, packed, sums, inv, out]) K.free(p);
            return y;
          });
          assert.deepEqual(outs[1], outs[0]);
          assert.deepEqual(outs[2], outs[0]);
        },
      ),
      // The first example is large enough to be split (tokens·n·kpad ≥ 16M).
      { numRuns: 25, examples: [[{ tokens: 300, n: 200, k: 600, seed: 1 }]] },
    );
  }));

Deno.test("causal attention forward and backward on 1, 2 and 3 threads: bit-identical", () =>
  onPools((pools) => {
    fc.assert(
      fc.property(
        fc.record({
          batch: fc.integer({ min: 1, max: 4 }),
          T: fc.integer({ min: 1, max: 100 }),
          kvHeads: fc.integer({ min: 1, max: 3 }),
          group: fc.integer({ min: 1, max: 3 }),
          headDim: fc.integer({ min: 1, max: 40 }),
          seed: fc.integer(),
        }),
        ({ batch, T, kvHeads, group, headDim, seed }) => {
          const heads = kvHeads * group;
          const nq = batch * T * heads * headDim;
          const nk = batch * T * kvHeads * headDim;
          const r = rng(seed);
          const data = [nq, nk, nk, nq, nq, nk, nk].map((n) =>
            Float32Array.from({ length: n }, r)
          );
          const outs = pools.map((K) => {
            const [q, k, v, dout, dq, dk, dv] = data.map((d) => {
              const p = K.alloc(4 * d.length);
              K.f32(p, d.length).set(d);
              return p;
            });
            const out = K.alloc(4 * nq);
            const probs = K.alloc(4 * batch * heads * T * T);
            const shape = { batch, T, heads, kvHeads, headDim };
            K.causalAttention({ q, k, v, out, probs, ...shape });
            K.causalAttentionBackward({
              out: dout,
              q,
              k,
              v,
              probs,
              dq,
              dk,
              dv,
              ...shape,
            });
            const got = [[out, nq], [dq, nq], [dk, nk], [dv, nk]].map((
              [p, n],
            ) => K.f32(p, n).slice());
            for (const p of [q, k, v, dout, dq, dk, dv, out, probs]) K.free(p);
            return got;
          });
          assert.deepEqual(outs[1], outs[0]);
          assert.deepEqual(outs[2], outs[0]);
        },
      ),
      // The first example is split across the threads (several units, enough work).
      {
        numRuns: 25,
        examples: [[{
          batch: 3,
          T: 70,
          kvHeads: 2,
          group: 2,
          headDim: 24,
          seed: 1,
        }]],
      },
    );
  }));

Deno.test("training on 1, 2 and 3 threads: the same losses bit for bit", async () => {
  const config = {
    ...PRESETS.tiny,
    vocab_size: 300,
    hidden_size: 64,
    num_layers: 2,
    intermediate_size: 96,
    max_seq_len: 32,
  };
  // 256 tokens a step: the LM head products (256×64×300) are large enough to split.
  const settings = defaultSettings(config, 6, {
    batch: 8,
    seqLen: 32,
    evalEvery: 0,
  });
  const r = rng(3);
  const tokens = Int32Array.from(
    { length: 20_000 },
    () => Math.floor((r() + 0.5) * 300),
  );
  const losses = async (threads: number): Promise<number[]> => {
    const backend = await CpuBackend.create({ threads });
    const { model, optimizer } = initTraining(config, backend, settings);
    const trainer = new Trainer(model, optimizer, tokens, settings);
    try {
      assert.equal(backend.kernels.threads, threads);
      const out: number[] = [];
      for (let i = 0; i < 6; i++) {
        out.push((await Effect.runPromise(trainer.runStep())).loss);
      }
      return out;
    } finally {
      optimizer.release();
      model.release();
      backend.close();
    }
  };
  const one = await losses(1);
  assert.deepEqual(await losses(2), one);
  assert.deepEqual(await losses(3), one);
});

Deno.test("the cpu layer's workers stop when its scope closes", async () => {
  const threads = await Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const backend = yield* ComputeBackend;
        return (backend as CpuBackend).kernels.threads;
      }).pipe(Effect.provide(ComputeBackend.cpuWith({ threads: 2 }))),
    ),
  );
  assert.equal(threads, 2);
});

Deno.test("threads: a count out of range is a RangeError naming the option", async () => {
  await assert.rejects(() => WasmKernels.create({ threads: 0 }), /threads:/);
  await assert.rejects(() => WasmKernels.create({ threads: 1.5 }), /threads:/);
});

Deno.test("chunkRows: whole tiles, ≤ 255 chunks, every thread a chunk, at least minRows when m allows", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 20_000 }),
      fc.integer({ min: 1, max: 8 }),
      fc.integer({ min: 1, max: 16 }),
      fc.constantFrom(0, MATMUL_MIN_CHUNK_ROWS),
      (m, mr, threads, minRows) => {
        const chunk = chunkRows(m, mr, threads, minRows);
        const chunks = Math.ceil(m / chunk);
        assert.equal(chunk % mr, 0);
        assert.ok(chunks <= 255, `${chunks} chunks`);
        // Every thread gets a chunk while there are tiles enough for all.
        if (m >= threads * mr * 256) assert.ok(chunks >= threads);
        if (m / threads >= minRows + mr && m <= 255 * minRows) {
          assert.ok(chunk >= minRows, `chunk ${chunk} < ${minRows}`);
        }
      },
    ),
  );
  // The short dW product of a linear: two chunks of 128 rows on 2 threads.
  assert.equal(chunkRows(256, 8, 2, MATMUL_MIN_CHUNK_ROWS), 128);
  assert.equal(chunkRows(256, 8, 2), 32);
});
