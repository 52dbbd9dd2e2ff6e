// The inference kernels (qlinear.wgsl, kv_attention.wgsl) against plain
// references on random shapes, including sizes that divide neither the 64-wide
// code blocks, the 8-feature × 4-token workgroups, nor the 256-key chunks:
// int8 activation codes exactly (f64 rounding of the exact product, as the
// CPU's act_quant), the int8 × ternary product exactly up to the final f32
// scaling (1/s within WGSL's division error), and the WASM kernels' ternary
// product to that error.
import fc from "fast-check";
import { strict as assert } from "node:assert";
import { test } from "./gpu_gate.ts";
import {
  assertClose,
  type Check,
  poisoned,
  randomArray,
  relTol,
  rng,
  roundHalfEven,
  runBatch,
  U,
  uploadPadded,
  withGpu,
} from "./webgpu_harness.ts";
import {
  packTernaryRows,
  ternaryPaddedCols,
  WasmKernels,
} from "../../src/backend/wasm/wasm_kernels.ts";

const RUNS = 12;

interface LinearCase {
  readonly rows: number;
  readonly n: number;
  readonly k: number;
  readonly binary: boolean;
  readonly seed: number;
}

const linearCase: fc.Arbitrary<LinearCase> = fc.record({
  rows: fc.oneof(fc.constantFrom(1, 4, 5), fc.integer({ min: 1, max: 11 })),
  n: fc.oneof(fc.constantFrom(1, 8, 9), fc.integer({ min: 1, max: 40 })),
  k: fc.oneof(
    fc.constantFrom(1, 63, 64, 65, 300),
    fc.integer({ min: 1, max: 200 }),
  ),
  binary: fc.boolean(),
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
});

/** Per-row int8 codes as the CPU computes them (f64 product, half to even). */
function quantizeReference(x: Float32Array, rows: number, k: number) {
  const codes = new Int32Array(rows * k);
  const inv = new Float32Array(rows);
  const sums = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let j = 0; j < k; j++) m = Math.max(m, Math.abs(x[r * k + j]));
    const s = Math.fround(127 / Math.max(m, Math.fround(1e-5)));
    let qmax = 0;
    for (let j = 0; j < k; j++) {
      const q = Math.min(127, Math.max(-128, roundHalfEven(x[r * k + j] * s)));
      codes[r * k + j] = q;
      sums[r] += q;
      qmax = Math.max(qmax, Math.abs(q));
    }
    const mp = Math.max(Math.fround(qmax / s), Math.fround(1e-5));
    inv[r] = Math.fround(mp / 127);
  }
  return { codes, inv, sums };
}

function randomCodes(next: () => number, n: number, binary: boolean) {
  const c = new Int8Array(n);
  for (let i = 0; i < n; i++) {
    c[i] = binary ? (next() < 0.5 ? -1 : 1) : Math.floor(next() * 3) - 1;
  }
  return c;
}

/** Bytes as a Float32Array (for upload), zero-padded to whole words. */
function asWords(bytes: Uint8Array): Float32Array<ArrayBuffer> {
  const out = new Uint8Array(Math.ceil(bytes.length / 4) * 4);
  out.set(bytes);
  return new Float32Array(out.buffer);
}

test.gpu("quantizeActivations and ternaryLinear match the CPU's int8 × ternary product", async () => {
  const wasm = await WasmKernels.create();
  await withGpu(async (ctx) => {
    const cases = fc.sample(linearCase, { numRuns: RUNS, seed: 7 });
    await runBatch(ctx, (encoder, release) => {
      const checks: Check[] = [];
      for (const c of cases) {
        const next = rng(c.seed);
        const x = randomArray(next, c.rows * c.k, 3);
        // Exact ties (s = 1): half to even, 2.5 → 2 and −3.5 → −4.
        if (c.k >= 3) x.set([127, 2.5, -3.5]);
        const codes = randomCodes(next, c.n * c.k, c.binary);
        const gamma = Math.fround(0.01 + next());
        const kpad = ternaryPaddedCols(c.k);
        const xb = uploadPadded(ctx.pool, x);
        const q = poisoned(ctx.pool, c.rows * kpad / 4);
        const stats = poisoned(ctx.pool, 2 * c.rows);
        const w = ctx.pool.upload(asWords(packTernaryRows(codes, c.n, c.k)));
        const out = poisoned(ctx.pool, c.rows * c.n);
        release.push(xb, q, stats, w, out);
        ctx.kernels.quantizeActivations(encoder, {
          x: xb,
          q,
          stats,
          rows: c.rows,
          cols: c.k,
        });
        ctx.kernels.ternaryLinear(encoder, {
          q,
          stats,
          w,
          out,
          rows: c.rows,
          n: c.n,
          k: c.k,
          scale: gamma,
        });
        const ref = quantizeReference(x, c.rows, c.k);
        const label = JSON.stringify(c);
        checks.push({
          buffer: q,
          length: c.rows * kpad / 4,
          check: (got) => {
            const bytes = new Int8Array(got.buffer);
            for (let r = 0; r < c.rows; r++) {
              for (let j = 0; j < kpad; j++) {
                const want = j < c.k ? ref.codes[r * c.k + j] : 0;
                assert.equal(
                  bytes[r * kpad + j],
                  want,
                  `${label} q[${r},${j}]`,
                );
              }
            }
          },
        });
        checks.push({
          buffer: stats,
          length: 2 * c.rows,
          check: (got) => {
            for (let r = 0; r < c.rows; r++) {
              // Three WGSL divisions, each within 2.5 ulp (llvmpipe's are exact).
              assert.ok(
                Math.abs(got[2 * r] - ref.inv[r]) <= 8 * U * ref.inv[r],
                `${label} 1/s[${r}]: ${got[2 * r]} vs ${ref.inv[r]}`,
              );
              assert.equal(got[2 * r + 1], ref.sums[r], `${label} Σq[${r}]`);
            }
          },
        });
        // The WASM kernel on the same codes: bit for bit.
        const want = new Float32Array(c.rows * c.n);
        const xp = wasm.alloc(c.rows * kpad);
        const sp = wasm.alloc(4 * c.rows), ip = wasm.alloc(4 * c.rows);
        const packed = packTernaryRows(codes, c.n, c.k);
        const wp = wasm.alloc(packed.length), op = wasm.alloc(4 * want.length);
        const xi8 = new Int8Array(wasm.memory.buffer, xp, c.rows * kpad);
        xi8.fill(0);
        for (let r = 0; r < c.rows; r++) {
          for (let j = 0; j < c.k; j++) {
            xi8[r * kpad + j] = ref.codes[r * c.k + j];
          }
        }
        new Int32Array(wasm.memory.buffer, sp, c.rows).set(ref.sums);
        wasm.f32(ip, c.rows).set(ref.inv);
        wasm.u8(wp, packed.length).set(packed);
        wasm.ternaryMatmul({
          w: wp,
          n: c.n,
          k: c.k,
          x: xp,
          tokens: c.rows,
          sums: sp,
          invScales: ip,
          scale: gamma,
          out: op,
        });
        want.set(wasm.f32(op, want.length));
        for (const p of [xp, sp, ip, wp, op]) wasm.free(p);
        checks.push({
          buffer: out,
          length: want.length,
          check: (got) =>
            assertClose(`${label} out`, got, want, relTol(want, 8 * U, 0)),
        });
      }
      return checks;
    });
  });
});

test.gpu("denseLinear matches an f64 product", async () => {
  await withGpu(async (ctx) => {
    const cases = fc.sample(linearCase, { numRuns: RUNS, seed: 11 });
    await runBatch(ctx, (encoder, release) =>
      cases.map((c) => {
        const next = rng(c.seed);
        const x = randomArray(next, c.rows * c.k);
        const w = randomArray(next, c.n * c.k);
        const want = new Float64Array(c.rows * c.n);
        const mag = new Float64Array(want.length);
        for (let t = 0; t < c.rows; t++) {
          for (let r = 0; r < c.n; r++) {
            for (let j = 0; j < c.k; j++) {
              want[t * c.n + r] += x[t * c.k + j] * w[r * c.k + j];
              mag[t * c.n + r] += Math.abs(x[t * c.k + j] * w[r * c.k + j]);
            }
          }
        }
        const xb = uploadPadded(ctx.pool, x);
        const wb = uploadPadded(ctx.pool, w);
        const out = poisoned(ctx.pool, want.length);
        release.push(xb, wb, out);
        ctx.kernels.denseLinear(encoder, {
          x: xb,
          w: wb,
          out,
          rows: c.rows,
          n: c.n,
          k: c.k,
        });
        return {
          buffer: out,
          length: want.length,
          check: (got: Float32Array) =>
            assertClose(
              JSON.stringify(c),
              got,
              want,
              (i) => 2 * (c.k + 2) * U * mag[i],
            ),
        };
      }));
  });
});

interface KvCase {
  readonly tokens: number;
  readonly kvHeads: number;
  readonly group: number;
  readonly headDim: number;
  readonly ctx: number;
  readonly pos0: number;
  readonly seed: number;
}

const kvCase: fc.Arbitrary<KvCase> = fc.record({
  tokens: fc.integer({ min: 1, max: 5 }),
  kvHeads: fc.integer({ min: 1, max: 2 }),
  group: fc.integer({ min: 1, max: 3 }),
  headDim: fc.oneof(fc.constantFrom(1, 8, 65), fc.integer({ min: 1, max: 70 })),
  ctx: fc.oneof(fc.constantFrom(1, 7, 300), fc.integer({ min: 1, max: 40 })),
  pos0: fc.integer({ min: 0, max: 400 }),
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
}).map((c) => {
  // New tokens fit the cache without wrapping unless they come one at a time
  // (a full ring), as sessions run them.
  if (c.tokens === 1) return c;
  const tokens = Math.min(c.tokens, c.ctx);
  return { ...c, tokens, pos0: Math.min(c.pos0, c.ctx - tokens) };
});

test.gpu("kvStore and kvAttention match an f64 reference over the cache", async () => {
  await withGpu(async (ctx) => {
    const cases = fc.sample(kvCase, { numRuns: RUNS, seed: 5 });
    cases.push({
      tokens: 3,
      kvHeads: 2,
      group: 2,
      headDim: 33,
      ctx: 600,
      pos0: 520,
      seed: 1,
    });
    await runBatch(ctx, (encoder, release) => {
      const checks: Check[] = [];
      for (const c of cases) {
        const next = rng(c.seed);
        const H = c.kvHeads * c.group, D = c.headDim, T = c.tokens;
        const cacheN = c.kvHeads * c.ctx * D;
        const k0 = randomArray(next, cacheN), v0 = randomArray(next, cacheN);
        const kNew = randomArray(next, T * c.kvHeads * D);
        const vNew = randomArray(next, T * c.kvHeads * D);
        const q = randomArray(next, T * H * D);
        // The reference cache after the store.
        const slot0 = c.pos0 % c.ctx;
        const kRef = k0.slice(), vRef = v0.slice();
        for (let t = 0; t < T; t++) {
          const slot = (slot0 + t) % c.ctx;
          for (let g = 0; g < c.kvHeads; g++) {
            for (let d = 0; d < D; d++) {
              kRef[(g * c.ctx + slot) * D + d] =
                kNew[(t * c.kvHeads + g) * D + d];
              vRef[(g * c.ctx + slot) * D + d] =
                vNew[(t * c.kvHeads + g) * D + d];
            }
          }
        }
        const scale = 1 / Math.sqrt(D);
        const want = new Float64Array(T * H * D);
        for (let t = 0; t < T; t++) {
          const seen = Math.min(c.pos0 + t + 1, c.ctx);
          for (let h = 0; h < H; h++) {
            const base = Math.floor(h / c.group) * c.ctx * D;
            const s = new Float64Array(seen);
            let mx = -Infinity;
            for (let j = 0; j < seen; j++) {
              for (let d = 0; d < D; d++) {
                s[j] += q[(t * H + h) * D + d] * kRef[base + j * D + d];
              }
              s[j] *= scale;
              mx = Math.max(mx, s[j]);
            }
            let l = 0;
            for (let j = 0; j < seen; j++) l += s[j] = Math.exp(s[j] - mx);
            for (let j = 0; j < seen; j++) {
              for (let d = 0; d < D; d++) {
                want[(t * H + h) * D + d] += (s[j] / l) *
                  vRef[base + j * D + d];
              }
            }
          }
        }
        const kb = ctx.pool.upload(k0), vb = ctx.pool.upload(v0);
        const kn = uploadPadded(ctx.pool, kNew),
          vn = uploadPadded(ctx.pool, vNew);
        const qb = uploadPadded(ctx.pool, q);
        const out = poisoned(ctx.pool, want.length);
        release.push(kb, vb, kn, vn, qb, out);
        const shape = { tokens: T, kvHeads: c.kvHeads, headDim: D, ctx: c.ctx };
        ctx.kernels.kvStore(encoder, { ...shape, src: kn, cache: kb, slot0 });
        ctx.kernels.kvStore(encoder, { ...shape, src: vn, cache: vb, slot0 });
        ctx.kernels.kvAttention(encoder, {
          ...shape,
          heads: H,
          q: qb,
          k: kb,
          v: vb,
          out,
          pos0: c.pos0,
        });
        const label = JSON.stringify(c);
        checks.push({
          buffer: kb,
          length: cacheN,
          check: (got) => assertClose(`${label} k cache`, got, kRef, () => 0),
        });
        checks.push({
          buffer: vb,
          length: cacheN,
          check: (got) => assertClose(`${label} v cache`, got, vRef, () => 0),
        });
        checks.push({
          buffer: out,
          length: want.length,
          check: (got) =>
            assertClose(`${label} out`, got, want, relTol(want, 1e-4, 1e-5)),
        });
      }
      return checks;
    });
  });
});
