/**
 * Causal attention and RoPE of the CPU backend on the WASM kernels: the score
 * and value products of each (sequence, head) are strided f32 matmuls over
 * the `[batch, seqLen, heads·headDim]` tensors in place (leading dimensions,
 * no copies), and the softmax runs as one causal row pass.
 *
 * @module
 */
import {
  type AttentionShape,
  checkAttentionShape,
  type RopeShape,
} from "../shapes.ts";
import type { WasmKernels } from "../wasm/wasm_kernels.ts";

/** Pointers (byte offsets) of the tensors of one attention call. */
export interface AttentionPtrs {
  /** Queries `[B, T, H·D]`. */
  readonly q: number;
  /** Keys `[B, T, Hkv·D]`. */
  readonly k: number;
  /** Values `[B, T, Hkv·D]`. */
  readonly v: number;
  /** Output `[B, T, H·D]`. */
  readonly out: number;
  /** Probabilities `[B, H, T, T]`. */
  readonly probs: number;
}

/** Pointers of one attention backward call (gradients are added into). */
export interface AttentionGradPtrs {
  /** Gradient of the output `[B, T, H·D]`. */
  readonly dout: number;
  /** Queries, keys, values and probabilities saved by the forward. */
  readonly q: number;
  /** Keys. */
  readonly k: number;
  /** Values. */
  readonly v: number;
  /** Probabilities `[B, H, T, T]`. */
  readonly probs: number;
  /** Gradient of the queries (accumulated). */
  readonly dq: number;
  /** Gradient of the keys (accumulated). */
  readonly dk: number;
  /** Gradient of the values (accumulated). */
  readonly dv: number;
}

/** Query rows per block: causal blocks skip the score columns past the block's last row. */
const BLOCK = 32;

/** The row blocks `[t0, t1)` of a sequence of `T` positions. */
function blocks(T: number): Array<readonly [number, number]> {
  const out: Array<readonly [number, number]> = [];
  for (let t0 = 0; t0 < T; t0 += BLOCK) out.push([t0, Math.min(T, t0 + BLOCK)]);
  return out;
}

/**
 * Forward, per sequence b and query head h (KV head g = ⌊h / group⌋), in
 * causal row blocks `[t0, t1)`: `S[t0:t1, :t1] = Q[t0:t1] · K[:t1]ᵀ` (strided
 * matmuls into `probs`), then `P = causal_softmax(S / √D)` over all rows at
 * once (it zeroes u > t, so columns never computed are cleared), then
 * `O[t0:t1] = P[t0:t1, :t1] · V[:t1]`.
 */
export function attentionForward(
  kern: WasmKernels,
  p: AttentionPtrs,
  shape: AttentionShape,
): void {
  const group = checkAttentionShape(shape);
  const { batch: B, seqLen: T, numHeads: H, numKvHeads: Hkv, headDim: D } =
    shape;
  const qRow = H * D, kRow = Hkv * D;
  const rowBlocks = blocks(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const qo = 4 * (b * T * qRow + h * D);
      const ko = 4 * (b * T * kRow + Math.floor(h / group) * D);
      const pp = p.probs + 4 * (b * H + h) * T * T;
      for (const [t0, t1] of rowBlocks) {
        kern.matmul({
          a: p.q + qo + 4 * t0 * qRow,
          b: p.k + ko,
          c: pp + 4 * t0 * T,
          m: t1 - t0,
          n: t1,
          k: D,
          transB: true,
          lda: qRow,
          ldb: kRow,
          ldc: T,
        });
      }
    }
  }
  kern.training.softmax_causal(p.probs, B * H * T, T, 1 / Math.sqrt(D));
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const qo = 4 * (b * T * qRow + h * D);
      const ko = 4 * (b * T * kRow + Math.floor(h / group) * D);
      const pp = p.probs + 4 * (b * H + h) * T * T;
      for (const [t0, t1] of rowBlocks) {
        kern.matmul({
          a: pp + 4 * t0 * T,
          b: p.v + ko,
          c: p.out + qo + 4 * t0 * qRow,
          m: t1 - t0,
          n: D,
          k: t1,
          lda: T,
          ldb: kRow,
          ldc: qRow,
        });
      }
    }
  }
}

/**
 * Backward, per (b, h) with a `[T, T]` scratch, in the same causal blocks:
 * `dP[t0:t1, :t1] = dO[t0:t1] · V[:t1]ᵀ`; `dS = P ⊙ (dP − rowsum(P ⊙ dP)) / √D`
 * for u ≤ t and 0 after (in place of dP); then per block
 * `dQ[t0:t1] += dS[t0:t1, :t1] · K[:t1]`, and per column block `[u0, u1)`
 * `dV[u0:u1] += P[u0:, u0:u1]ᵀ · dO[u0:]`, `dK[u0:u1] += dS[u0:, u0:u1]ᵀ · Q[u0:]`
 * — KV gradients summed over a group's heads.
 */
export function attentionBackward(
  kern: WasmKernels,
  p: AttentionGradPtrs,
  shape: AttentionShape,
): void {
  const group = checkAttentionShape(shape);
  const { batch: B, seqLen: T, numHeads: H, numKvHeads: Hkv, headDim: D } =
    shape;
  const qRow = H * D, kRow = Hkv * D;
  const rowBlocks = blocks(T);
  const dp = kern.alloc(4 * T * T);
  try {
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        const qo = 4 * (b * T * qRow + h * D);
        const ko = 4 * (b * T * kRow + Math.floor(h / group) * D);
        const pp = p.probs + 4 * (b * H + h) * T * T;
        for (const [t0, t1] of rowBlocks) {
          kern.matmul({
            a: p.dout + qo + 4 * t0 * qRow,
            b: p.v + ko,
            c: dp + 4 * t0 * T,
            m: t1 - t0,
            n: t1,
            k: D,
            transB: true,
            lda: qRow,
            ldb: kRow,
            ldc: T,
          });
        }
        kern.training.softmax_bwd(pp, dp, T, T, 1 / Math.sqrt(D));
        for (const [t0, t1] of rowBlocks) {
          // Rows t0..t1 of dQ, then columns u0 = t0 .. u1 = t1 of dV and dK.
          kern.matmul({
            a: dp + 4 * t0 * T,
            b: p.k + ko,
            c: p.dq + qo + 4 * t0 * qRow,
            m: t1 - t0,
            n: D,
            k: t1,
            accumulate: true,
            lda: T,
            ldb: kRow,
            ldc: qRow,
          });
          for (
            const [src, dst, from] of [[pp, p.dv, p.dout], [dp, p.dk, p.q]]
          ) {
            kern.matmul({
              a: src + 4 * (t0 * T + t0),
              b: from + qo + 4 * t0 * qRow,
              c: dst + ko + 4 * t0 * kRow,
              m: t1 - t0,
              n: D,
              k: T - t0,
              transA: true,
              accumulate: true,
              lda: T,
              ldb: qRow,
              ldc: kRow,
            });
          }
        }
      }
    }
  } finally {
    kern.free(dp);
  }
}

/** Per-position rotation tables in WASM memory, `[seqLen, headDim]` f32 each. */
export interface RopeTables {
  /** `C_j`: the cosine of the angle of element j's pair. */
  readonly cos: number;
  /** `S_j`: −sin for the first element of a pair, +sin for the second. */
  readonly sin: number;
  /** `−S_j`, for the inverse rotation of the backward. */
  readonly sinNeg: number;
}

/** How many table sets {@link RopeTableCache} keeps (positions offsets vary in decoding). */
const ROPE_CACHE_SIZE = 16;

/**
 * RoPE tables by shape, least recently used dropped first. Angles as the
 * reference: `θ_i = base^(−2i/headDim)`, angle `(posOffset + t)·θ_i`, cos and
 * sin in f64 rounded to f32.
 */
export class RopeTableCache {
  readonly #kern: WasmKernels;
  readonly #tables = new Map<string, RopeTables>();

  /** A cache allocating from `kern`'s memory. */
  constructor(kern: WasmKernels) {
    this.#kern = kern;
  }

  /** The tables of `shape` (checked by the caller). */
  get(shape: RopeShape): RopeTables {
    const { seqLen: T, headDim: hd, base, style } = shape;
    const off = shape.posOffset ?? 0;
    const key = `${T},${hd},${base},${style},${off}`;
    const hit = this.#tables.get(key);
    if (hit !== undefined) {
      this.#tables.delete(key);
      this.#tables.set(key, hit);
      return hit;
    }
    if (this.#tables.size >= ROPE_CACHE_SIZE) {
      const [oldest, t] = this.#tables.entries().next().value!;
      this.#tables.delete(oldest);
      for (const p of [t.cos, t.sin, t.sinNeg]) this.#kern.free(p);
    }
    const n = T * hd;
    const ptrs = [0, 1, 2].map(() => this.#kern.alloc(4 * n));
    const [c, s, sn] = ptrs.map((p) => this.#kern.f32(p, n));
    const half = hd / 2;
    for (let t = 0; t < T; t++) {
      const pos = off + t;
      for (let i = 0; i < half; i++) {
        const angle = pos * Math.pow(base, (-2 * i) / hd);
        const cos = Math.cos(angle), sin = Math.sin(angle);
        const [a, b] = style === "neox" ? [i, i + half] : [2 * i, 2 * i + 1];
        c[t * hd + a] = cos;
        c[t * hd + b] = cos;
        s[t * hd + a] = -sin;
        s[t * hd + b] = sin;
        sn[t * hd + a] = sin;
        sn[t * hd + b] = -sin;
      }
    }
    const tables = { cos: ptrs[0], sin: ptrs[1], sinNeg: ptrs[2] };
    this.#tables.set(key, tables);
    return tables;
  }
}
