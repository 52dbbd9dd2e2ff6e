/**
 * RoPE's rotation tables for the CPU backend, kept in the WASM kernels'
 * memory per shape.
 *
 * @module
 */
import type { RopeShape } from "../shapes.ts";
import type { WasmKernels } from "../wasm/wasm_kernels.ts";

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
