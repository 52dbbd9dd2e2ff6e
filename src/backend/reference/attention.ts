/**
 * Causal scaled dot-product attention with grouped KV heads (GQA / MQA / MHA).
 *
 * @module
 */
import { alloc, type Arr, checkGrad, checkLen } from "./arr.ts";
import { type AttentionShape, checkAttentionShape } from "../shapes.ts";

export type { AttentionShape };

interface Dims {
  readonly B: number;
  readonly T: number;
  readonly H: number;
  readonly Hkv: number;
  readonly D: number;
  /** Query heads per KV head. */
  readonly group: number;
  readonly scale: number;
  /** Flat offset of `q[b, t, h, 0]` (also of out). */
  readonly qi: (b: number, t: number, h: number) => number;
  /** Flat offset of `k[b, t, kvh, 0]` (also of v). */
  readonly ki: (b: number, t: number, kvh: number) => number;
  /** Flat offset of `probs[b, h, t, 0]`. */
  readonly pi: (b: number, h: number, t: number) => number;
}

function dims(shape: AttentionShape): Dims {
  const { batch: B, seqLen: T, numHeads: H, numKvHeads: Hkv, headDim: D } =
    shape;
  const group = checkAttentionShape(shape);
  return {
    B,
    T,
    H,
    Hkv,
    D,
    group,
    scale: 1 / Math.sqrt(D),
    qi: (b, t, h) => ((b * T + t) * H + h) * D,
    ki: (b, t, kvh) => ((b * T + t) * Hkv + kvh) * D,
    pi: (b, h, t) => ((b * H + h) * T + t) * T,
  };
}

/** Output of {@link attentionForward}. */
export interface AttentionForward<T extends Arr> {
  /** Attention output, `[batch, seqLen, numHeads·headDim]`. */
  readonly out: T;
  /** Softmax weights `P[b, h, t, u]`, `[batch, numHeads, seqLen, seqLen]`, 0 for u > t. */
  readonly probs: T;
}

/**
 * Forward, per sequence b, query head h (KV head `g = ⌊h / (H/Hkv)⌋`) and position t:
 * `s_u = (q_t · k_u) / sqrt(headDim)` for `u ≤ t`, `P_tu = softmax_u(s)`,
 * `out_t = Σ_{u≤t} P_tu · v_u`.
 */
export function attentionForward<T extends Arr>(
  q: T,
  k: Arr,
  v: Arr,
  shape: AttentionShape,
): AttentionForward<T> {
  const { B, T, H, Hkv, D, group, scale, qi, ki, pi } = dims(shape);
  checkLen("q", q, B * T * H * D);
  checkLen("k", k, B * T * Hkv * D);
  checkLen("v", v, B * T * Hkv * D);
  const out = alloc(q, B * T * H * D);
  const probs = alloc(q, B * H * T * T);
  const s = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / group);
      for (let t = 0; t < T; t++) {
        const qo = qi(b, t, h);
        let max = -Infinity;
        for (let u = 0; u <= t; u++) {
          const ko = ki(b, u, g);
          let dot = 0;
          for (let i = 0; i < D; i++) dot += q[qo + i] * k[ko + i];
          s[u] = dot * scale;
          max = Math.max(max, s[u]);
        }
        let sum = 0;
        for (let u = 0; u <= t; u++) {
          s[u] = Math.exp(s[u] - max);
          sum += s[u];
        }
        const po = pi(b, h, t);
        for (let u = 0; u <= t; u++) probs[po + u] = s[u] / sum;
        for (let i = 0; i < D; i++) {
          let acc = 0;
          for (let u = 0; u <= t; u++) acc += (s[u] / sum) * v[ki(b, u, g) + i];
          out[qo + i] = acc;
        }
      }
    }
  }
  return { out, probs };
}

/**
 * Backward of {@link attentionForward}; with `dP_tu = dout_t · v_u` and
 * `dS_tu = P_tu · (dP_tu − Σ_u' P_tu' · dP_tu')` it accumulates
 * `dv_u += Σ_t P_tu · dout_t`, `dq_t += scale · Σ_u dS_tu · k_u`,
 * `dk_u += scale · Σ_t dS_tu · q_t` (KV grads summed over the heads of a group).
 */
export function attentionBackward(
  dout: Arr,
  saved: {
    readonly q: Arr;
    readonly k: Arr;
    readonly v: Arr;
    readonly probs: Arr;
  },
  grads: { readonly dq?: Arr; readonly dk?: Arr; readonly dv?: Arr },
  shape: AttentionShape,
): void {
  const { B, T, H, Hkv, D, group, scale, qi, ki, pi } = dims(shape);
  const { q, k, v, probs } = saved;
  const { dq, dk, dv } = grads;
  checkLen("dout", dout, B * T * H * D);
  checkLen("saved.q", q, B * T * H * D);
  checkLen("saved.k", k, B * T * Hkv * D);
  checkLen("saved.v", v, B * T * Hkv * D);
  checkLen("saved.probs", probs, B * H * T * T);
  checkGrad("grads.dq", dq, B * T * H * D);
  checkGrad("grads.dk", dk, B * T * Hkv * D);
  checkGrad("grads.dv", dv, B * T * Hkv * D);
  const dS = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / group);
      for (let t = 0; t < T; t++) {
        const qo = qi(b, t, h);
        const po = pi(b, h, t);
        let pdp = 0;
        for (let u = 0; u <= t; u++) {
          const vo = ki(b, u, g);
          let dp = 0;
          for (let i = 0; i < D; i++) dp += dout[qo + i] * v[vo + i];
          dS[u] = dp;
          pdp += probs[po + u] * dp;
          if (dv) {
            for (let i = 0; i < D; i++) {
              dv[vo + i] += probs[po + u] * dout[qo + i];
            }
          }
        }
        for (let u = 0; u <= t; u++) {
          const ds = probs[po + u] * (dS[u] - pdp) * scale;
          const ko = ki(b, u, g);
          for (let i = 0; i < D; i++) {
            if (dq) dq[qo + i] += ds * k[ko + i];
            if (dk) dk[ko + i] += ds * q[qo + i];
          }
        }
      }
    }
  }
}
