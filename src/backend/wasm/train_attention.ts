/**
 * Training's causal attention on the raw kernel exports, one unit at a time,
 * so that the worker pool can split it: the forward of one (sequence, query
 * head), the backward of one (sequence, KV head) with its group's query heads
 * in order. Each unit writes only its own slices of the outputs (a KV head's
 * gradients come from its own group alone), and every product is computed
 * the same way on any thread, so any thread count gives the same bits.
 *
 * Tensors are `[B, T, heads·D]` row-major, used in place through leading
 * dimensions; the probabilities are `[B, H, T, T]`.
 *
 * @module
 */

/**
 * Query rows per block for a matmul tile of `mr` rows: ~32 (causal blocks
 * skip the score columns past the block's last row) rounded up to whole
 * tiles — 32 rows on a 6-row tile left a 2-row edge tile per block (36:
 * attention forward + backward 5% faster, 7 of 8 alternating rounds on one
 * thread). The products are the same bits for any block: a block only adds
 * zero terms (causal probabilities past the diagonal) to a sum.
 */
export function attentionBlock(mr: number): number {
  return mr * Math.ceil(32 / mr);
}

/** The kernel exports a unit calls. */
export type AttentionExports = Record<string, (...args: number[]) => unknown>;

/**
 * One attention job as the pool passes it (byte offsets, element counts): the
 * tensors, the shape, the score scale 1/√D and the f32 matmul's tile and
 * blocking (its workspace at the thread's workspace, the backward's `[T, T]`
 * scratch `scratch` bytes after it).
 */
export interface AttentionJob {
  /** Queries `[B, T, H·D]`. */
  readonly q: number;
  /** Keys `[B, T, Hkv·D]`. */
  readonly k: number;
  /** Values `[B, T, Hkv·D]`. */
  readonly v: number;
  /** Forward: the output; backward: its gradient (`[B, T, H·D]`). */
  readonly out: number;
  /** Probabilities `[B, H, T, T]` (written by the forward, read by the backward). */
  readonly probs: number;
  /** Backward: gradient of the queries (added into). */
  readonly dq: number;
  /** Backward: gradient of the keys (added into). */
  readonly dk: number;
  /** Backward: gradient of the values (added into). */
  readonly dv: number;
  /** Tokens per sequence. */
  readonly T: number;
  /** Query heads. */
  readonly H: number;
  /** Key/value heads (dividing H). */
  readonly Hkv: number;
  /** Head width. */
  readonly D: number;
  /** Multiplier of the scores before the softmax. */
  readonly scale: number;
  /** The matmul export, e.g. `matmul_6x8`. */
  readonly matmul: string;
  /** Rows of its tile. */
  readonly mr: number;
  /** Rows of A per packed block. */
  readonly mc: number;
  /** Depth per packed block. */
  readonly kc: number;
  /** Columns of B per packed block. */
  readonly nc: number;
  /** Bytes from the thread's workspace to the backward's `[T, T]` scratch. */
  readonly scratch: number;
}

/** The row blocks `[t0, t1)` of the job's sequences of `T` positions. */
function blocks(j: AttentionJob): Array<readonly [number, number]> {
  const out: Array<readonly [number, number]> = [];
  const block = attentionBlock(j.mr);
  for (let t0 = 0; t0 < j.T; t0 += block) {
    out.push([t0, Math.min(j.T, t0 + block)]);
  }
  return out;
}

/** `C (+)= op(A)·op(B)` through the job's matmul export; flags as the export's. */
function matmul(
  ex: AttentionExports,
  j: AttentionJob,
  work: number,
  o: {
    a: number;
    b: number;
    c: number;
    m: number;
    n: number;
    k: number;
    lda: number;
    ldb: number;
    ldc: number;
    transA?: boolean;
    transB?: boolean;
    accumulate?: boolean;
  },
): void {
  const flags = (o.transA ? 1 : 0) | (o.transB ? 2 : 0) |
    (o.accumulate ? 4 : 0);
  ex[j.matmul](
    o.a,
    o.b,
    o.c,
    o.m,
    o.n,
    o.k,
    o.lda,
    o.ldb,
    o.ldc,
    flags,
    work,
    j.mc,
    j.kc,
    j.nc,
  );
}

/**
 * Forward of unit `u` = (sequence b = ⌊u / H⌋, head h = u mod H, KV head
 * g = ⌊h / (H / Hkv)⌋), in causal row blocks `[t0, t1)`:
 * `S[t0:t1, :t1] = Q[t0:t1] · K[:t1]ᵀ` (into the probabilities), then
 * `P = causal_softmax(S · scale)` (it zeroes u > t, so columns never computed
 * are cleared), then `O[t0:t1] = P[t0:t1, :t1] · V[:t1]`.
 */
export function attentionForwardUnit(
  ex: AttentionExports,
  j: AttentionJob,
  u: number,
  work: number,
): void {
  const { T, H, Hkv, D } = j;
  const qRow = H * D, kRow = Hkv * D;
  const b = Math.floor(u / H), h = u % H;
  const qo = 4 * (b * T * qRow + h * D);
  const ko = 4 * (b * T * kRow + Math.floor(h / (H / Hkv)) * D);
  const pp = j.probs + 4 * u * T * T;
  scoreBlocks(ex, j, work, j.q + qo, j.k + ko, pp);
  ex.softmax_causal(pp, T, T, j.scale);
  for (const [t0, t1] of blocks(j)) {
    mixBlock(ex, j, work, pp, j.v + ko, j.out + qo, t0, t1, false);
  }
}

/**
 * `S[t0:t1, :t1] = X[t0:t1] · Y[:t1]ᵀ` for every causal row block: X one
 * head's `[T, D]` slice of a `[T, H·D]` tensor at `x`, Y a KV head's slice at
 * `y`, S `[T, T]` at `s` (columns past t1 untouched).
 */
function scoreBlocks(
  ex: AttentionExports,
  j: AttentionJob,
  work: number,
  x: number,
  y: number,
  s: number,
): void {
  const { T, D } = j;
  for (const [t0, t1] of blocks(j)) {
    matmul(ex, j, work, {
      a: x + 4 * t0 * j.H * D,
      b: y,
      c: s + 4 * t0 * T,
      m: t1 - t0,
      n: t1,
      k: D,
      transB: true,
      lda: j.H * D,
      ldb: j.Hkv * D,
      ldc: T,
    });
  }
}

/**
 * Rows `[t0, t1)` of `Z (+)= W[t0:t1, :t1] · Y[:t1]`: W `[T, T]` at `w`
 * (probabilities or score gradients), Y a KV head's slice at `y`, Z a head's
 * slice of a `[T, H·D]` tensor at `z`.
 */
function mixBlock(
  ex: AttentionExports,
  j: AttentionJob,
  work: number,
  w: number,
  y: number,
  z: number,
  t0: number,
  t1: number,
  accumulate: boolean,
): void {
  const { T, D } = j;
  matmul(ex, j, work, {
    a: w + 4 * t0 * T,
    b: y,
    c: z + 4 * t0 * j.H * D,
    m: t1 - t0,
    n: D,
    k: t1,
    accumulate,
    lda: T,
    ldb: j.Hkv * D,
    ldc: j.H * D,
  });
}

/**
 * Backward of unit `u` = (sequence b = ⌊u / Hkv⌋, KV head g = u mod Hkv), for
 * each query head h of the group in order, with the `[T, T]` scratch dP, in
 * the forward's blocks: `dP[t0:t1, :t1] = dO[t0:t1] · V[:t1]ᵀ`;
 * `dS = P ⊙ (dP − rowsum(P ⊙ dP)) · scale` for u ≤ t and 0 after (in place of
 * dP); then per block `dQ[t0:t1] += dS[t0:t1, :t1] · K[:t1]`, and per column
 * block `[u0, u1)` `dV[u0:u1] += P[u0:, u0:u1]ᵀ · dO[u0:]`,
 * `dK[u0:u1] += dS[u0:, u0:u1]ᵀ · Q[u0:]`.
 */
export function attentionBackwardUnit(
  ex: AttentionExports,
  j: AttentionJob,
  u: number,
  work: number,
): void {
  const { T, H, Hkv, D } = j;
  const qRow = H * D, kRow = Hkv * D, group = H / Hkv;
  const b = Math.floor(u / Hkv), g = u % Hkv;
  const ko = 4 * (b * T * kRow + g * D);
  const dp = work + j.scratch;
  for (let h = g * group; h < (g + 1) * group; h++) {
    const qo = 4 * (b * T * qRow + h * D);
    const pp = j.probs + 4 * (b * H + h) * T * T;
    scoreBlocks(ex, j, work, j.out + qo, j.v + ko, dp);
    ex.softmax_bwd(pp, dp, T, T, j.scale);
    for (const [t0, t1] of blocks(j)) {
      // Rows t0..t1 of dQ, then columns u0 = t0 .. u1 = t1 of dV and dK.
      mixBlock(ex, j, work, dp, j.k + ko, j.dq + qo, t0, t1, true);
      for (const [src, dst, from] of [[pp, j.dv, j.out], [dp, j.dk, j.q]]) {
        matmul(ex, j, work, {
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
