// Causal attention forward and backward (with grouped-query heads) against an f64
// reference, on ragged head dims and sequence lengths, plus one sequence longer
// than several of the kernel's 256-key chunks, so the online softmax crosses chunks.
import fc from "fast-check";
import { test } from "./gpu_gate.ts";
import { strict as assert } from "node:assert";
import {
  assertClose,
  type Check,
  type GpuContext,
  poisoned,
  randomArray,
  rng,
  runBatch,
  U,
  uploadPadded,
  withGpu,
} from "./webgpu_harness.ts";

interface AttnCase {
  readonly batch: number;
  readonly seqLen: number;
  readonly kvHeads: number;
  readonly group: number;
  readonly headDim: number;
  readonly seed: number;
}

const attnCase: fc.Arbitrary<AttnCase> = fc.record({
  batch: fc.integer({ min: 1, max: 2 }),
  seqLen: fc.oneof(fc.constantFrom(1, 2, 17), fc.integer({ min: 1, max: 40 })),
  kvHeads: fc.integer({ min: 1, max: 2 }),
  group: fc.integer({ min: 1, max: 3 }),
  headDim: fc.oneof(fc.constantFrom(1, 8, 65), fc.integer({ min: 1, max: 70 })),
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
});

// f64 reference; every output also gets the sum of its terms' magnitudes (`*Mag`)
// and the largest |score| of its row feeds the tolerance.
function reference(
  c: AttnCase,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  dOut: Float32Array,
) {
  const heads = c.kvHeads * c.group;
  const D = c.headDim;
  const tokens = c.batch * c.seqLen;
  const scale = Math.fround(1 / Math.sqrt(D));
  const qi = (t: number, h: number) => (t * heads + h) * D;
  const ki = (t: number, h: number) =>
    (t * c.kvHeads + Math.floor(h / c.group)) * D;
  const out = new Float64Array(tokens * heads * D);
  const outMag = new Float64Array(out.length);
  const lse = new Float64Array(tokens * heads);
  const dq = new Float64Array(out.length);
  const dqMag = new Float64Array(out.length);
  const dk = new Float64Array(tokens * c.kvHeads * D);
  const dkMag = new Float64Array(dk.length);
  const dv = new Float64Array(dk.length);
  const dvMag = new Float64Array(dk.length);
  let scoreMag = 0;
  for (let t = 0; t < tokens; t++) {
    const pos = t % c.seqLen;
    const seq0 = t - pos;
    for (let h = 0; h < heads; h++) {
      const r = t * heads + h;
      const s: number[] = [];
      for (let j = 0; j <= pos; j++) {
        let dot = 0;
        let mag = 0;
        for (let d = 0; d < D; d++) {
          dot += q[qi(t, h) + d] * k[ki(seq0 + j, h) + d];
          mag += Math.abs(q[qi(t, h) + d] * k[ki(seq0 + j, h) + d]);
        }
        s.push(scale * dot);
        scoreMag = Math.max(scoreMag, scale * mag);
      }
      const m = Math.max(...s);
      lse[r] = m + Math.log(s.reduce((a, x) => a + Math.exp(x - m), 0));
      const p = s.map((x) => Math.exp(x - lse[r]));
      for (let d = 0; d < D; d++) {
        for (let j = 0; j <= pos; j++) {
          out[qi(t, h) + d] += p[j] * v[ki(seq0 + j, h) + d];
          outMag[qi(t, h) + d] += p[j] * Math.abs(v[ki(seq0 + j, h) + d]);
        }
      }
      let delta = 0;
      for (let d = 0; d < D; d++) {
        delta += dOut[qi(t, h) + d] * out[qi(t, h) + d];
      }
      for (let j = 0; j <= pos; j++) {
        let dp = 0;
        let dpMag = 0;
        for (let d = 0; d < D; d++) {
          dp += dOut[qi(t, h) + d] * v[ki(seq0 + j, h) + d];
          dpMag += Math.abs(dOut[qi(t, h) + d] * v[ki(seq0 + j, h) + d]);
        }
        const ds = p[j] * (dp - delta);
        const dsMag = p[j] * (dpMag + Math.abs(delta));
        for (let d = 0; d < D; d++) {
          dq[qi(t, h) + d] += scale * ds * k[ki(seq0 + j, h) + d];
          dqMag[qi(t, h) + d] += scale * dsMag *
            Math.abs(k[ki(seq0 + j, h) + d]);
          dk[ki(seq0 + j, h) + d] += scale * ds * q[qi(t, h) + d];
          dkMag[ki(seq0 + j, h) + d] += scale * dsMag *
            Math.abs(q[qi(t, h) + d]);
          dv[ki(seq0 + j, h) + d] += p[j] * dOut[qi(t, h) + d];
          dvMag[ki(seq0 + j, h) + d] += p[j] * Math.abs(dOut[qi(t, h) + d]);
        }
      }
    }
  }
  return { out, outMag, lse, dq, dqMag, dk, dkMag, dv, dvMag, scoreMag };
}

function attnChecks(
  ctx: GpuContext,
  encoder: GPUCommandEncoder,
  release: GPUBuffer[],
  c: AttnCase,
): Check[] {
  const { pool, kernels } = ctx;
  const next = rng(c.seed);
  const heads = c.kvHeads * c.group;
  const tokens = c.batch * c.seqLen;
  const qn = tokens * heads * c.headDim;
  const kn = tokens * c.kvHeads * c.headDim;
  const q = randomArray(next, qn, 2);
  const k = randomArray(next, kn, 2);
  const v = randomArray(next, kn);
  const dOut = randomArray(next, qn);
  const b = {
    q: uploadPadded(pool, q),
    k: uploadPadded(pool, k),
    v: uploadPadded(pool, v),
    dOut: uploadPadded(pool, dOut),
    out: poisoned(pool, qn),
    lse: poisoned(pool, tokens * heads),
    delta: poisoned(pool, tokens * heads),
    dq: poisoned(pool, qn),
    dk: poisoned(pool, kn),
    dv: poisoned(pool, kn),
  };
  release.push(...Object.values(b));
  const shape = {
    tokens,
    seqLen: c.seqLen,
    heads,
    kvHeads: c.kvHeads,
    headDim: c.headDim,
  };
  kernels.attentionForward(encoder, { ...shape, ...b });
  kernels.attentionBackward(encoder, { ...shape, ...b });
  const ref = reference(c, q, k, v, dOut);
  // Scores err by ≤ (headDim + 2)·u·Σ|q·k|·scale, which perturbs each weight
  // exp(s − lse) by twice that relatively; exp itself may err by 3 + 2|s − lse| ULP,
  // and the sums over keys add (seqLen + 4)·u. Backward terms go through two such
  // chains.
  const rel = (4 * (c.headDim + 2) * ref.scoreMag + 2 * (c.seqLen + 8) + 64) *
    U;
  const label = `attention ${JSON.stringify(c)}`;
  return [
    {
      buffer: b.out,
      length: qn,
      check: (got) =>
        assertClose(
          `${label} out`,
          got,
          ref.out,
          (i) => rel * ref.outMag[i] + 1e-30,
        ),
    },
    {
      buffer: b.lse,
      length: tokens * heads,
      check: (got) =>
        assertClose(
          `${label} lse`,
          got,
          ref.lse,
          (i) => rel * (1 + Math.abs(ref.lse[i])),
        ),
    },
    {
      buffer: b.dq,
      length: qn,
      check: (got) =>
        assertClose(
          `${label} dq`,
          got,
          ref.dq,
          (i) => 2 * rel * ref.dqMag[i] + 1e-30,
        ),
    },
    {
      buffer: b.dk,
      length: kn,
      check: (got) =>
        assertClose(
          `${label} dk`,
          got,
          ref.dk,
          (i) => 2 * rel * ref.dkMag[i] + 1e-30,
        ),
    },
    {
      buffer: b.dv,
      length: kn,
      check: (got) =>
        assertClose(
          `${label} dv`,
          got,
          ref.dv,
          (i) => 2 * rel * ref.dvMag[i] + 1e-30,
        ),
    },
  ];
}

test.gpu("webgpu causal attention forward and backward match the f64 reference", () =>
  withGpu(async (ctx) => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(attnCase, { minLength: 6, maxLength: 6 }),
        (cases) =>
          runBatch(
            ctx,
            (encoder, release) =>
              cases.flatMap((c) => attnChecks(ctx, encoder, release, c)),
          ),
      ),
      {
        numRuns: 3,
        examples: [[[
          { batch: 1, seqLen: 1, kvHeads: 1, group: 1, headDim: 1, seed: 1 },
          { batch: 2, seqLen: 17, kvHeads: 2, group: 3, headDim: 65, seed: 2 },
        ]]],
      },
    );
  }));

test.gpu("webgpu attention crosses 256-key chunks and rejects bad shapes", () =>
  withGpu(async (ctx) => {
    const c = {
      batch: 1,
      seqLen: 1100,
      kvHeads: 1,
      group: 1,
      headDim: 3,
      seed: 5,
    };
    await runBatch(
      ctx,
      (encoder, release) => attnChecks(ctx, encoder, release, c),
    );
    const x = ctx.pool.acquire(1024);
    const encoder = ctx.gpu.device.createCommandEncoder();
    const base = {
      q: x,
      k: x,
      v: x,
      out: x,
      lse: x,
      tokens: 4,
      seqLen: 2,
      heads: 2,
      headDim: 4,
    };
    assert.throws(
      () => ctx.kernels.attentionForward(encoder, { ...base, seqLen: 3 }),
      /multiple of seqLen/,
    );
    assert.throws(
      () => ctx.kernels.attentionForward(encoder, { ...base, kvHeads: 3 }),
      /kvHeads = 3 must divide/,
    );
    assert.throws(
      () => ctx.kernels.attentionForward(encoder, { ...base, headDim: 257 }),
      /headDim must be ≤ 256/,
    );
    ctx.pool.release(x);
  }));
