// Embedding gather / atomics-free scatter-add and RoPE (NEOX and interleaved,
// forward and inverse) against f64 references; the host-side helpers
// (embeddingGradIndex, ropeTable) are checked on their own too.
import fc from "fast-check";
import { test } from "./gpu_gate.ts";
import { strict as assert } from "node:assert";
import {
  embeddingGradIndex,
  ropeTable,
} from "../../src/backend/webgpu/kernels.ts";
import {
  assertClose,
  type Check,
  type GpuContext,
  poisoned,
  randomArray,
  rng,
  runBatch,
  U,
  withGpu,
} from "./webgpu_harness.ts";

Deno.test("embeddingGradIndex groups every position under its id", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 50 }).chain((vocab) =>
        fc.tuple(
          fc.constant(vocab),
          fc.array(fc.integer({ min: 0, max: vocab - 1 }), { maxLength: 200 }),
        )
      ),
      ([vocab, ids]) => {
        const { data, unique, tokens } = embeddingGradIndex(ids, vocab);
        assert.equal(tokens, ids.length);
        assert.equal(unique, new Set(ids).size);
        assert.equal(data.length, 2 * unique + 1 + tokens);
        const seen: number[] = [];
        for (let u = 0; u < unique; u++) {
          if (u > 0) assert.ok(data[u] > data[u - 1], "distinct ids ascend");
          const [start, end] = [data[unique + u], data[unique + u + 1]];
          assert.ok(end > start, "every listed id has a position");
          for (let j = start; j < end; j++) {
            const t = data[2 * unique + 1 + j];
            assert.equal(ids[t], data[u]);
            seen.push(t);
          }
        }
        assert.deepEqual(seen.sort((a, b) => a - b), ids.map((_, t) => t));
      },
    ),
  );
  assert.throws(() => embeddingGradIndex([0, 3], 3), /ids\[1\] = 3/);
});

Deno.test("ropeTable holds cos and sin of p·base^(−2i/d)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 64 }),
      fc.integer({ min: 1, max: 16 }).map((h) => 2 * h),
      fc.constantFrom(10000, 500000),
      (maxPos, rot, base) => {
        const t = ropeTable(maxPos, rot, base);
        const half = rot / 2;
        assert.equal(t.length, 2 * maxPos * half);
        for (let p = 0; p < maxPos; p++) {
          for (let i = 0; i < half; i++) {
            const a = p * base ** (-2 * i / rot);
            assert.equal(t[p * half + i], Math.fround(Math.cos(a)));
            assert.equal(
              t[maxPos * half + p * half + i],
              Math.fround(Math.sin(a)),
            );
          }
        }
      },
    ),
  );
  assert.throws(() => ropeTable(4, 3, 10000), /rotaryDim must be even/);
});

interface EmbedCase {
  readonly tokens: number;
  readonly vocab: number;
  readonly dim: number;
  readonly seed: number;
}

const embedCase: fc.Arbitrary<EmbedCase> = fc.record({
  tokens: fc.integer({ min: 1, max: 80 }),
  vocab: fc.oneof(fc.constantFrom(1, 3, 17), fc.integer({ min: 1, max: 100 })),
  dim: fc.oneof(fc.constantFrom(1, 5, 31, 65), fc.integer({ min: 1, max: 70 })),
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
});

function embedChecks(
  ctx: GpuContext,
  encoder: GPUCommandEncoder,
  release: GPUBuffer[],
  { tokens, vocab, dim, seed }: EmbedCase,
): Check[] {
  const { pool, kernels } = ctx;
  const next = rng(seed);
  const table = randomArray(next, vocab * dim);
  // Few distinct ids so that many positions share a row.
  const distinct = 1 + Math.floor(next() * Math.min(vocab, 8));
  const ids = Uint32Array.from(
    { length: tokens },
    () => Math.floor(next() * distinct),
  );
  const dOut = randomArray(next, tokens * dim);
  const dTable0 = randomArray(next, vocab * dim);
  const index = embeddingGradIndex(ids, vocab);
  // One id past the vocabulary in the gather: its row must come out as zeros.
  const gatherIds = Uint32Array.from(ids);
  gatherIds[tokens - 1] = vocab;
  const bufs = {
    table: pool.upload(table),
    ids: pool.upload(gatherIds),
    out: poisoned(pool, tokens * dim),
    dOut: pool.upload(dOut),
    index: pool.upload(index.data),
    dTable: pool.upload(dTable0),
  };
  release.push(...Object.values(bufs));
  kernels.embeddingForward(encoder, {
    table: bufs.table,
    ids: bufs.ids,
    out: bufs.out,
    tokens,
    dim,
    vocab,
  });
  kernels.embeddingBackward(encoder, {
    dOut: bufs.dOut,
    index,
    indexBuffer: bufs.index,
    dTable: bufs.dTable,
    dim,
    vocab,
  });
  const gathered = new Float64Array(tokens * dim);
  for (let t = 0; t < tokens; t++) {
    for (let c = 0; c < dim; c++) {
      gathered[t * dim + c] = gatherIds[t] < vocab
        ? table[gatherIds[t] * dim + c]
        : 0;
    }
  }
  const dTable = Float64Array.from(dTable0);
  const mag = Float64Array.from(dTable0, Math.abs);
  const count = new Float64Array(vocab);
  for (let t = 0; t < tokens; t++) {
    count[ids[t]]++;
    for (let c = 0; c < dim; c++) {
      dTable[ids[t] * dim + c] += dOut[t * dim + c];
      mag[ids[t] * dim + c] += Math.abs(dOut[t * dim + c]);
    }
  }
  const label =
    `embedding tokens=${tokens} vocab=${vocab} dim=${dim} seed=${seed}`;
  return [
    {
      buffer: bufs.out,
      length: tokens * dim,
      check: (got) => assertClose(`${label} gather`, got, gathered, () => 0),
    },
    {
      buffer: bufs.dTable,
      length: vocab * dim,
      // Sequential sum of count + 1 terms.
      check: (got) =>
        assertClose(
          `${label} scatter`,
          got,
          dTable,
          (i) => (count[Math.floor(i / dim)] + 2) * U * mag[i],
        ),
    },
  ];
}

test.gpu("webgpu embedding gather and scatter-add match the reference", () =>
  withGpu(async (ctx) => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(embedCase, { minLength: 10, maxLength: 10 }),
        (cases) =>
          runBatch(
            ctx,
            (encoder, release) =>
              cases.flatMap((c) => embedChecks(ctx, encoder, release, c)),
          ),
      ),
      {
        numRuns: 3,
        examples: [[[{ tokens: 1, vocab: 1, dim: 1, seed: 1 }, {
          tokens: 80,
          vocab: 17,
          dim: 65,
          seed: 2,
        }]]],
      },
    );
  }));

interface RopeCase {
  readonly seqLen: number;
  readonly batch: number;
  readonly heads: number;
  readonly headDim: number;
  readonly rotaryDim: number;
  readonly posOffset: number;
  readonly style: "neox" | "interleaved";
  readonly seed: number;
}

const ropeCase: fc.Arbitrary<RopeCase> = fc
  .record({
    seqLen: fc.integer({ min: 1, max: 40 }),
    batch: fc.integer({ min: 1, max: 3 }),
    heads: fc.integer({ min: 1, max: 5 }),
    headHalf: fc.integer({ min: 1, max: 24 }),
    extra: fc.integer({ min: 0, max: 5 }),
    rotFraction: fc.constantFrom(1, 0.5, 0.25),
    posOffset: fc.integer({ min: 0, max: 20 }),
    style: fc.constantFrom("neox" as const, "interleaved" as const),
    seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  })
  .map((r) => ({
    seqLen: r.seqLen,
    batch: r.batch,
    heads: r.heads,
    headDim: 2 * r.headHalf + r.extra,
    rotaryDim: 2 * Math.max(1, Math.round(r.headHalf * r.rotFraction)),
    posOffset: r.posOffset,
    style: r.style,
    seed: r.seed,
  }));

function ropeChecks(
  ctx: GpuContext,
  encoder: GPUCommandEncoder,
  release: GPUBuffer[],
  c: RopeCase,
): Check[] {
  const { pool, kernels } = ctx;
  const next = rng(c.seed);
  const tokens = c.batch * c.seqLen;
  const { heads, headDim, rotaryDim } = c;
  const rows = tokens * heads;
  const maxPositions = c.posOffset + c.seqLen + 3;
  const table = ropeTable(maxPositions, rotaryDim, 10000);
  const x = randomArray(next, rows * headDim);
  const args = {
    tokens,
    heads,
    headDim,
    rotaryDim,
    seqLen: c.seqLen,
    maxPositions,
    style: c.style,
    posOffset: c.posOffset,
  };
  const bufs = {
    x: pool.upload(x),
    table: pool.upload(table),
    fwd: poisoned(pool, rows * headDim),
    inv: poisoned(pool, rows * headDim),
  };
  release.push(...Object.values(bufs));
  kernels.rope(encoder, {
    ...args,
    x: bufs.x,
    out: bufs.fwd,
    table: bufs.table,
  });
  kernels.rope(encoder, {
    ...args,
    x: bufs.x,
    out: bufs.inv,
    table: bufs.table,
    inverse: true,
  });

  const half = rotaryDim / 2;
  const fwd = new Float64Array(rows * headDim);
  const inv = new Float64Array(rows * headDim);
  const mag = new Float64Array(rows * headDim);
  for (let r = 0; r < rows; r++) {
    const pos = c.posOffset + (Math.floor(r / heads) % c.seqLen);
    const base = r * headDim;
    for (let j = 0; j < headDim; j++) {
      fwd[base + j] = inv[base + j] = x[base + j];
      mag[base + j] = Math.abs(x[base + j]);
    }
    for (let i = 0; i < half; i++) {
      const [ja, jb] = c.style === "neox" ? [i, i + half] : [2 * i, 2 * i + 1];
      const cs = table[pos * half + i];
      const sn = table[maxPositions * half + pos * half + i];
      const [a, b] = [x[base + ja], x[base + jb]];
      fwd[base + ja] = a * cs - b * sn;
      fwd[base + jb] = a * sn + b * cs;
      inv[base + ja] = a * cs + b * sn;
      inv[base + jb] = -a * sn + b * cs;
      mag[base + ja] = mag[base + jb] = Math.abs(a) + Math.abs(b);
    }
  }
  const label = `rope ${JSON.stringify(c)}`;
  // Two products and one sum: ≤ 2u of the terms' magnitudes (3u for safety).
  const tol = (i: number) => 3 * U * mag[i];
  return [
    {
      buffer: bufs.fwd,
      length: fwd.length,
      check: (got) => assertClose(`${label} fwd`, got, fwd, tol),
    },
    {
      buffer: bufs.inv,
      length: inv.length,
      check: (got) => assertClose(`${label} inv`, got, inv, tol),
    },
  ];
}

test.gpu("webgpu RoPE (NEOX and interleaved, forward and inverse) matches the reference", () =>
  withGpu(async (ctx) => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(ropeCase, { minLength: 10, maxLength: 10 }),
        (cases) =>
          runBatch(
            ctx,
            (encoder, release) =>
              cases.flatMap((c) => ropeChecks(ctx, encoder, release, c)),
          ),
      ),
      { numRuns: 3 },
    );
    const table = ctx.pool.upload(ropeTable(4, 4, 10000));
    const x = ctx.pool.acquire(64 * 4);
    const encoder = ctx.gpu.device.createCommandEncoder();
    const base = {
      x,
      out: x,
      table,
      tokens: 2,
      heads: 1,
      headDim: 4,
      seqLen: 2,
      maxPositions: 4,
    };
    assert.throws(
      () =>
        ctx.kernels.rope(encoder, {
          ...base,
          rotaryDim: 4,
          style: "neox",
          posOffset: 3,
        }),
      /maxPositions/,
    );
    assert.throws(
      () => ctx.kernels.rope(encoder, { ...base, rotaryDim: 6, style: "neox" }),
      /rotaryDim/,
    );
    ctx.pool.release(table);
    ctx.pool.release(x);
  }));
