/**
 * The CPU {@link Backend}: tensors live in the WebAssembly kernels' memory and
 * every kernel runs there — matmuls on packed panels, attention as strided
 * matmuls per (sequence, head), and the element-wise and per-row work (norms,
 * RoPE, activations, softmax cross-entropy, quantizers, AdamW) as SIMD passes
 * over the tensors in place. With the `threads` option the matmuls, the
 * integer linears, attention, RMSNorm's forward, activation quantization and
 * the element-wise activations and products are split across a pool of
 * threads (the same bits for any count); the rest runs on the calling thread.
 * Nothing allocates per call but RoPE's cached tables.
 *
 * Zeros are written lazily: {@link CpuBackend.zeros} only marks a tensor, and
 * the zeros are stored when something reads it (a kernel input, an
 * accumulation, the `data` view). A kernel that overwrites it skips them, and
 * one that would add into it overwrites instead, so most outputs and many
 * gradients of a step are never zero-filled (~700 MB per ref-4m step before).
 *
 * Numerics: the quantizers, AdamW and the sums of squares compute in f64 and
 * match the TypeScript reference bit for bit; the smooth ops compute in f32
 * (a few ulp from the f64 reference), with `e^x` from a ≈ 1 ulp polynomial.
 *
 * The memory is shared (a growable `SharedArrayBuffer`), so views made before
 * the memory grows stay valid.
 *
 * @module
 */
import type { Backend, Tensor } from "../backend.ts";
import {
  type Activation,
  type AdamWStep,
  type AttentionShape,
  checkActivation,
  checkAdamWStep,
  checkAttentionShape,
  checkClampLimit,
  checkCrossEntropy,
  checkEmbedding,
  checkFakeQuant,
  checkFinite,
  checkLinearShape,
  checkMatmul,
  checkNormShape,
  checkRopeShape,
  type CrossEntropyShape,
  type EmbeddingShape,
  type FakeQuantOptions,
  type LinearShape,
  type MatmulOptions,
  type NormShape,
  type RopeShape,
  type WeightQuantMode,
} from "../shapes.ts";
import {
  channelCode,
  channelStep,
  fakeQuantizeWeights,
  QUANT_EPS,
} from "../numeric.ts";
import {
  INT8_MAX_K,
  type MatmulConfig,
  ternaryPaddedCols,
  type TrainingKernels,
  WasmKernels,
  type WasmVariant,
} from "../wasm/wasm_kernels.ts";
import { tunedMatmulConfig } from "./matmul_tuning.ts";
import { RopeTableCache } from "./rope_tables.ts";

/** A tensor of the CPU backend: a block of the WASM memory and a view of it. */
export interface CpuTensor extends Tensor {
  /** Byte offset in the kernels' memory. */
  readonly ptr: number;
  /** View of the elements (f32 values, or i32 ids); reading it stores pending zeros. */
  readonly data: Float32Array | Int32Array;
}

/** A tensor whose zeros may still be pending (see the module documentation). */
class Block implements CpuTensor {
  readonly dtype: "f32" | "i32";
  readonly size: number;
  readonly ptr: number;
  /** The zeros promised by `zeros` are not yet in memory. */
  lazyZero: boolean;
  readonly #view: Float32Array | Int32Array;
  readonly #zero: (ptr: number, bytes: number) => void;

  constructor(
    dtype: "f32" | "i32",
    size: number,
    ptr: number,
    view: Float32Array | Int32Array,
    lazyZero: boolean,
    zero: (ptr: number, bytes: number) => void,
  ) {
    this.dtype = dtype;
    this.size = size;
    this.ptr = ptr;
    this.#view = view;
    this.lazyZero = lazyZero;
    this.#zero = zero;
  }

  get data(): Float32Array | Int32Array {
    this.settle();
    return this.#view;
  }

  /** Stores pending zeros, before anything reads the memory. */
  settle(): void {
    if (this.lazyZero) {
      this.#zero(this.ptr, 4 * this.size);
      this.lazyZero = false;
    }
  }
}

function cpu(t: Tensor): Block {
  if (!(t instanceof Block)) {
    throw new TypeError("tensor belongs to another backend");
  }
  return t;
}

function checked(name: string, t: Tensor, dtype: "f32" | "i32", n?: number) {
  const b = cpu(t);
  if (b.dtype !== dtype) {
    throw new TypeError(`${name}: expected an ${dtype} tensor, got ${b.dtype}`);
  }
  if (n !== undefined && b.size !== n) {
    throw new RangeError(`${name} must have ${n} elements, got ${b.size}`);
  }
  return b;
}

/** The pointer of an f32 input of `n` elements (its pending zeros stored). */
function rd(name: string, t: Tensor, n: number): number {
  const b = checked(name, t, "f32", n);
  b.settle();
  return b.ptr;
}

/**
 * The pointer of an f32 output of `n` elements that the kernel overwrites
 * entirely (pending zeros dropped). Call after the inputs' {@link rd}: an
 * output that is also an input must be settled first.
 */
function wr(name: string, t: Tensor, n: number): number {
  const b = checked(name, t, "f32", n);
  b.lazyZero = false;
  return b.ptr;
}

/**
 * The accumulate flag for an f32 output of `n` elements that the kernel adds
 * into everywhere: 0 (overwrite; its zeros were never stored) or 1.
 */
function acc(name: string, t: Tensor, n: number): number {
  const b = checked(name, t, "f32", n);
  const lazy = b.lazyZero;
  b.lazyZero = false;
  return lazy ? 0 : 1;
}

/** The settled view of an f32 tensor. */
function f32(name: string, t: Tensor): Float32Array {
  return checked(name, t, "f32").data as Float32Array;
}

/**
 * Throws the error of weights that are not ternary × one scale, naming the
 * first two magnitudes that differ (or the NaN).
 */
function notOneScale(w: Float32Array): never {
  const a = Math.abs(w.find((x) => x !== 0 && !Number.isNaN(x)) ?? NaN);
  const b = Math.abs(w.find((x) => x !== 0 && Math.abs(x) !== a) ?? NaN);
  throw new RangeError(
    `ternaryLinear: wq holds ${a} and ${b} in magnitude, not one scale`,
  );
}

/** The settled view of an i32 tensor. */
function i32(name: string, t: Tensor): Int32Array {
  return checked(name, t, "i32").data as Int32Array;
}

function sameSize(name: string, a: Tensor, b: Tensor): void {
  if (a.size !== b.size) {
    throw new RangeError(`${name}: sizes differ (${a.size} vs ${b.size})`);
  }
}

const NON_FINITE = "holds a non-finite value (NaN or ±Infinity)";

/** The CPU backend over one {@link WasmKernels} instance. */
export class CpuBackend implements Backend {
  /** Always `"cpu"`. */
  readonly kind = "cpu" as const;
  /** The kernels' WASM variant. */
  readonly description: string;
  /** The WASM kernels (and the memory every tensor lives in). */
  readonly kernels: WasmKernels;
  readonly #k: TrainingKernels;
  readonly #rope: RopeTableCache;
  readonly #zero: (ptr: number, bytes: number) => void;
  #live = 0;

  private constructor(kernels: WasmKernels) {
    this.kernels = kernels;
    this.description = `cpu (wasm ${kernels.variant} simd)`;
    const k = kernels.training;
    this.#k = k;
    this.#zero = (ptr, bytes) => k.zero_bytes(ptr, bytes);
    this.#rope = new RopeTableCache(kernels);
  }

  /**
   * Instantiates the WASM kernels (`variant` defaults to the best this engine
   * runs) and returns a backend over them. `matmul` sets the f32 matmul's tile
   * and blocking: `"tuned"` (default) measures the fastest on this machine
   * once and caches it (see `matmul_tuning.ts`), `"default"` keeps the
   * built-in one; both give bit-identical products. `threads` (default 1)
   * runs the matmuls on that many threads over the shared memory, with
   * bit-identical results for any count; call {@link close} to stop them
   * (the `ComputeBackend.cpu` layer does, when its scope closes).
   */
  static async create(
    options: {
      readonly variant?: WasmVariant;
      readonly matmul?: MatmulConfig | "tuned" | "default";
      readonly threads?: number;
    } = {},
  ): Promise<CpuBackend> {
    const kernels = await WasmKernels.create({
      variant: options.variant,
      sharedMemory: true,
      threads: options.threads,
    });
    const matmul = options.matmul ?? "tuned";
    if (matmul === "tuned") kernels.matmulConfig = tunedMatmulConfig(kernels);
    else if (matmul !== "default") kernels.matmulConfig = matmul;
    return new CpuBackend(kernels);
  }

  /** Stops the matmul worker threads, if any (idempotent); the backend stays usable on one thread. */
  close(): void {
    this.kernels.close();
  }

  #alloc(size: number, dtype: "f32" | "i32", lazyZero: boolean): Block {
    if (!Number.isInteger(size) || size < 0) {
      throw new RangeError(`size must be an integer ≥ 0, got ${size}`);
    }
    if (dtype !== "f32" && dtype !== "i32") {
      throw new RangeError(`dtype must be "f32" or "i32", got ${dtype}`);
    }
    const ptr = this.kernels.alloc(size * 4);
    const buf = this.kernels.memory.buffer;
    const view = dtype === "f32"
      ? new Float32Array(buf, ptr, size)
      : new Int32Array(buf, ptr, size);
    this.#live++;
    return new Block(dtype, size, ptr, view, lazyZero, this.#zero);
  }

  /** Tensors allocated and not yet released (for leak checks). */
  get liveTensors(): number {
    return this.#live;
  }

  zeros(size: number, dtype: "f32" | "i32" = "f32"): CpuTensor {
    return this.#alloc(size, dtype, true);
  }

  upload(data: Float32Array | Int32Array): CpuTensor {
    const t = this.#alloc(
      data.length,
      data instanceof Int32Array ? "i32" : "f32",
      false,
    );
    t.data.set(data);
    return t;
  }

  write(t: Tensor, data: Float32Array | Int32Array): void {
    const b = cpu(t);
    if (data.length !== b.size) {
      throw new RangeError(
        `write: ${data.length} values for a tensor of ${b.size}`,
      );
    }
    b.lazyZero = false;
    b.data.set(data);
  }

  read(t: Tensor): Promise<Float32Array> {
    const out = new Float32Array(t.size);
    out.set(cpu(t).data);
    return Promise.resolve(out);
  }

  release(t: Tensor): void {
    this.kernels.free(cpu(t).ptr);
    this.#live--;
  }

  fill(t: Tensor, value: number): void {
    const b = cpu(t);
    b.lazyZero = false;
    if (b.dtype === "i32") b.data.fill(value);
    else {
      this.kernels.map({
        kernel: "fill_f32",
        arrays: [b.ptr],
        scalars: [value],
        n: b.size,
      });
    }
  }

  clamp(t: Tensor, limit: number): void {
    checkClampLimit(limit);
    // Clamping to fround(limit) in f32 equals comparing with the f64 limit.
    this.kernels.map({
      kernel: "clamp_f32",
      arrays: [rd("t", t, t.size)],
      scalars: [limit],
      n: t.size,
    });
  }

  add(a: Tensor, b: Tensor, out: Tensor): void {
    sameSize("add", a, b);
    sameSize("add", a, out);
    const n = a.size;
    const pa = rd("a", a, n), pb = rd("b", b, n);
    this.#k.add_f32(pa, pb, wr("out", out, n), n);
  }

  addScaled(out: Tensor, a: Tensor, s: number): void {
    sameSize("addScaled", a, out);
    checkFinite("s", s);
    const n = a.size;
    const pa = rd("a", a, n);
    this.kernels.map({
      kernel: "axmb_f32",
      arrays: [pa, cpu(out).ptr],
      scalars: [s, 0, acc("out", out, n)],
      n,
    });
  }

  mul(a: Tensor, b: Tensor, out: Tensor): void {
    sameSize("mul", a, b);
    sameSize("mul", a, out);
    const n = a.size;
    const pa = rd("a", a, n), pb = rd("b", b, n);
    this.kernels.map({
      kernel: "mul_f32",
      arrays: [pa, pb, wr("out", out, n)],
      n,
    });
  }

  mulBackward(
    dout: Tensor,
    a: Tensor,
    b: Tensor,
    da?: Tensor,
    db?: Tensor,
  ): void {
    const n = a.size;
    const pd = rd("dout", dout, n);
    const pa = rd("a", a, n), pb = rd("b", b, n);
    const K = this.kernels;
    for (const [d, other, name] of [[da, pb, "da"], [db, pa, "db"]] as const) {
      if (d === undefined) continue;
      K.map({
        kernel: "mul_acc_f32",
        arrays: [pd, other, cpu(d).ptr],
        scalars: [acc(name, d, n)],
        n,
      });
    }
  }

  matmul(a: Tensor, b: Tensor, c: Tensor, o: MatmulOptions): void {
    checkMatmul(o);
    const need = (name: string, t: Tensor, n: number) => {
      if (t.size < n) {
        throw new RangeError(
          `matmul: ${name} has ${t.size} elements, needs ${n}`,
        );
      }
      return checked(name, t, "f32");
    };
    const ta = need("a", a, o.m * o.k), tb = need("b", b, o.k * o.n);
    const tc = need("c", c, o.m * o.n);
    ta.settle();
    tb.settle();
    // C += A·B into pending zeros is C = A·B (when it covers all of C).
    let accumulate = o.accumulate ?? false;
    if (tc.lazyZero && tc.size === o.m * o.n) {
      tc.lazyZero = false;
      accumulate = false;
    } else tc.settle();
    this.kernels.matmul({
      a: ta.ptr,
      b: tb.ptr,
      c: tc.ptr,
      m: o.m,
      n: o.n,
      k: o.k,
      transA: o.transA,
      transB: o.transB,
      accumulate,
    });
  }

  /**
   * `y ← xq · wqᵀ` in integers (see `Backend.ternaryLinear`): the int8 codes
   * of `xq` are recovered exactly by re-quantizing it (its row absmax is
   * 127/s, so the codes come back unchanged), `wq`'s codes are `wq / a`
   * packed two bits each, and the ternary × int8 kernel rescales the exact
   * integer sums by `a` and the per-token `1/s`.
   */
  ternaryLinear(
    xq: Tensor,
    wq: Tensor,
    y: Tensor,
    shape: LinearShape,
  ): void {
    const { rows, k, n } = checkLinearShape("ternaryLinear", shape);
    const px = rd("xq", xq, rows * k), pw = rd("wq", wq, n * k);
    const py = wr("y", y, rows * n);
    const K = this.kernels;
    const a = K.ternaryScale(pw, n * k) ?? notOneScale(f32("wq", wq));
    const kpad = ternaryPaddedCols(k);
    const codes = K.alloc(rows * kpad), inv = K.alloc(4 * rows);
    const sums = K.alloc(4 * rows), packed = K.alloc(n * (kpad / 4));
    try {
      K.quantizeRows({
        x: px,
        rows,
        cols: k,
        out: codes,
        invScales: inv,
        sums,
      });
      K.packTernary({
        w: pw,
        rows: n,
        cols: k,
        invScale: a === 0 ? 0 : 1 / a,
        out: packed,
      });
      K.ternaryMatmul({
        w: packed,
        n,
        k,
        x: codes,
        tokens: rows,
        sums,
        invScales: inv,
        scale: a,
        out: py,
      });
    } finally {
      for (const p of [codes, inv, sums, packed]) K.free(p);
    }
  }

  /**
   * `y ← xq · Q(w)ᵀ` in integers (see `Backend.int8Linear`): the int8 codes
   * of `xq` are recovered exactly by re-quantizing it, `w`'s codes and row
   * steps are those of `fakeQuantWeights(w, "eightbit")` (the same
   * `channelStep`/`channelCode`), and the int8 × int8 kernel rescales the
   * exact integer sums by the row step and the per-token `1/s`.
   */
  int8Linear(
    xq: Tensor,
    w: Tensor,
    y: Tensor,
    shape: LinearShape,
  ): void {
    const { rows, k, n } = checkLinearShape("int8Linear", shape);
    if (k > INT8_MAX_K) {
      throw new RangeError(`int8Linear: k = ${k} exceeds ${INT8_MAX_K}`);
    }
    const px = rd("xq", xq, rows * k);
    rd("w", w, n * k);
    const py = wr("y", y, rows * n);
    const K = this.kernels;
    const kpad = ternaryPaddedCols(k);
    const codes = K.alloc(rows * kpad), inv = K.alloc(4 * rows);
    const sums = K.alloc(4 * rows), wc = K.alloc(n * kpad);
    const steps = K.alloc(4 * n);
    try {
      const wv = f32("w", w), cv = K.i8(wc, n * kpad).fill(0);
      const sv = K.f32(steps, n);
      for (let r = 0, off = 0; r < n; r++, off += k) {
        const s = channelStep("int8Linear", wv, off, k);
        sv[r] = s;
        for (let i = 0; i < k; i++) {
          cv[r * kpad + i] = channelCode(wv[off + i] / s);
        }
      }
      K.quantizeRows({
        x: px,
        rows,
        cols: k,
        out: codes,
        invScales: inv,
        sums,
      });
      K.int8Matmul({
        w: wc,
        scales: steps,
        n,
        k,
        x: codes,
        tokens: rows,
        invScales: inv,
        out: py,
      });
    } finally {
      for (const p of [codes, inv, sums, wc, steps]) K.free(p);
    }
  }

  /**
   * `out = w + λ(Q(w) − w)` as `(1 − λ)·w + λ·Q(w)` (`steBlend`). The
   * absmean ternary path (BitNet's) runs in WASM: `γ = fround(mean|w|)` from
   * an f64 sum, codes from the f64 quotient `w / (γ + ε)`; the other modes use
   * `fakeQuantizeWeights` of `../numeric.ts`.
   */
  fakeQuantWeights(
    w: Tensor,
    out: Tensor,
    mode: WeightQuantMode,
    o: FakeQuantOptions,
  ): void {
    const n = checkFakeQuant(o, mode);
    if (o.lambda < 1 && cpu(w).ptr === cpu(out).ptr) {
      // The blend reads w after Q(w) is written: quantize a copy instead.
      return this.#viaCopy(
        w,
        n,
        (tmp) => this.fakeQuantWeights(tmp, w, mode, o),
      );
    }
    const pw = rd("w", w, n), po = wr("out", out, n);
    if (mode === "ternary" && !o.dynamicThreshold) {
      const sum = this.#k.abs_sum_f64(pw, n);
      if (!Number.isFinite(sum)) {
        throw new RangeError(`fakeQuantizeWeights: w ${NON_FINITE}`);
      }
      const gamma = n === 0 ? 0 : Math.fround(sum / n);
      this.#k.ternary_fq(pw, po, gamma, gamma + QUANT_EPS, n);
    } else {
      fakeQuantizeWeights(mode, f32("w", w), o.rows, o.cols, {
        dynamicThreshold: o.dynamicThreshold,
      }, f32("out", out));
    }
    // λ = 1 leaves Q(w) as is: (1 − λ)·w + λ·q is q exactly for finite w.
    if (o.lambda < 1) this.#k.blend_f64(pw, po, 1 - o.lambda, o.lambda, n);
  }

  /**
   * Per-token int8 fake quantization (`fakeQuantizeActivations` of
   * `../numeric.ts`, bit for bit) blended by λ as `steBlend`.
   */
  fakeQuantActivations(x: Tensor, out: Tensor, o: FakeQuantOptions): void {
    const n = checkFakeQuant(o);
    if (o.lambda < 1 && cpu(x).ptr === cpu(out).ptr) {
      return this.#viaCopy(x, n, (tmp) => this.fakeQuantActivations(tmp, x, o));
    }
    const px = rd("x", x, n), po = wr("out", out, n);
    if (!this.kernels.actQuant({ x: px, o: po, rows: o.rows, cols: o.cols })) {
      throw new RangeError(`fakeQuantizeActivations: x ${NON_FINITE}`);
    }
    if (o.lambda < 1) this.#k.blend_f64(px, po, 1 - o.lambda, o.lambda, n);
  }

  /** Runs `f` on a copy of the `n` values of `t` (for in-place kernels that read their input late). */
  #viaCopy(t: Tensor, n: number, f: (copy: Tensor) => void): void {
    const copy = this.zeros(n);
    try {
      (copy as CpuTensor).data.set(f32("t", t).subarray(0, n));
      f(copy);
    } finally {
      this.release(copy);
    }
  }

  embedding(
    table: Tensor,
    ids: Tensor,
    out: Tensor,
    shape: EmbeddingShape,
  ): void {
    const { vocab, dim } = shape;
    const id = i32("ids", ids);
    checkEmbedding(shape, id);
    const pt = rd("table", table, vocab * dim);
    this.#k.gather_rows(
      pt,
      cpu(ids).ptr,
      wr("out", out, id.length * dim),
      id.length,
      dim,
    );
  }

  embeddingBackward(
    dout: Tensor,
    ids: Tensor,
    dtable: Tensor,
    shape: EmbeddingShape,
  ): void {
    const { vocab, dim } = shape;
    const id = i32("ids", ids);
    checkEmbedding(shape, id);
    const pd = rd("dout", dout, id.length * dim);
    this.#k.scatter_add_rows(
      pd,
      cpu(ids).ptr,
      rd("dtable", dtable, vocab * dim),
      id.length,
      dim,
    );
  }

  rmsnorm(
    x: Tensor,
    g: Tensor,
    out: Tensor,
    rstd: Tensor,
    shape: NormShape,
  ): void {
    checkNormShape(shape);
    const { rows, dim } = shape;
    const px = rd("x", x, rows * dim), pg = rd("g", g, dim);
    this.kernels.rmsnorm({
      x: px,
      g: pg,
      o: wr("out", out, rows * dim),
      rstd: wr("rstd", rstd, rows),
      rows,
      dim,
      eps: shape.eps,
    });
  }

  rmsnormBackward(
    dout: Tensor,
    x: Tensor,
    g: Tensor,
    rstd: Tensor,
    dx: Tensor,
    dg: Tensor,
    shape: NormShape,
  ): void {
    checkNormShape(shape);
    const { rows, dim } = shape;
    const pd = rd("dout", dout, rows * dim), px = rd("x", x, rows * dim);
    const pg = rd("g", g, dim), pr = rd("rstd", rstd, rows);
    const pdg = rd("dg", dg, dim);
    this.#k.rmsnorm_bwd(
      pd,
      px,
      pg,
      pr,
      cpu(dx).ptr,
      pdg,
      rows,
      dim,
      acc("dx", dx, rows * dim),
    );
  }

  /** LayerNorm in TypeScript over the views (off the hot path of the presets). */
  layernorm(
    x: Tensor,
    w: Tensor,
    bias: Tensor,
    out: Tensor,
    mean: Tensor,
    rstd: Tensor,
    shape: NormShape,
  ): void {
    checkNormShape(shape);
    const { rows, dim, eps } = shape;
    rd("x", x, rows * dim);
    rd("w", w, dim);
    rd("bias", bias, dim);
    wr("out", out, rows * dim);
    wr("mean", mean, rows);
    wr("rstd", rstd, rows);
    const xs = f32("x", x), ws = f32("w", w), bs = f32("bias", bias);
    const os = f32("out", out), ms = f32("mean", mean), rs = f32("rstd", rstd);
    for (let r = 0; r < rows; r++) {
      const row = r * dim;
      let sum = 0;
      for (let i = 0; i < dim; i++) sum += xs[row + i];
      const mu = sum / dim;
      let ss = 0;
      for (let i = 0; i < dim; i++) ss += (xs[row + i] - mu) ** 2;
      const r1 = 1 / Math.sqrt(ss / dim + eps);
      for (let i = 0; i < dim; i++) {
        os[row + i] = (xs[row + i] - mu) * r1 * ws[i] + bs[i];
      }
      ms[r] = mu;
      rs[r] = r1;
    }
  }

  layernormBackward(
    dout: Tensor,
    x: Tensor,
    w: Tensor,
    mean: Tensor,
    rstd: Tensor,
    dx: Tensor,
    dw: Tensor,
    dbias: Tensor,
    shape: NormShape,
  ): void {
    checkNormShape(shape);
    const { rows, dim } = shape;
    for (
      const [name, t, n] of [
        ["dout", dout, rows * dim],
        ["x", x, rows * dim],
        ["w", w, dim],
        ["mean", mean, rows],
        ["rstd", rstd, rows],
        ["dx", dx, rows * dim],
        ["dw", dw, dim],
        ["dbias", dbias, dim],
      ] as const
    ) rd(name, t, n);
    const dy = f32("dout", dout), xs = f32("x", x), ws = f32("w", w);
    const ms = f32("mean", mean), rs = f32("rstd", rstd), dxs = f32("dx", dx);
    const dws = f32("dw", dw), dbs = f32("dbias", dbias);
    for (let r = 0; r < rows; r++) {
      const row = r * dim, mu = ms[r], r1 = rs[r];
      let meanD = 0, meanDX = 0;
      for (let i = 0; i < dim; i++) {
        const xhat = (xs[row + i] - mu) * r1;
        const d = dy[row + i] * ws[i];
        dws[i] += dy[row + i] * xhat;
        dbs[i] += dy[row + i];
        meanD += d;
        meanDX += d * xhat;
      }
      meanD /= dim;
      meanDX /= dim;
      for (let i = 0; i < dim; i++) {
        const xhat = (xs[row + i] - mu) * r1;
        dxs[row + i] += r1 * (dy[row + i] * ws[i] - meanD - xhat * meanDX);
      }
    }
  }

  rope(x: Tensor, out: Tensor, shape: RopeShape): void {
    this.#rotate(x, out, shape, false);
  }

  ropeBackward(dout: Tensor, dx: Tensor, shape: RopeShape): void {
    this.#rotate(dout, dx, shape, true);
  }

  /** `out ← R x` (forward) or `out += R⁻¹ x` (backward: −S, accumulate). */
  #rotate(x: Tensor, out: Tensor, shape: RopeShape, inverse: boolean): void {
    checkRopeShape(shape);
    const { batch, seqLen, heads, headDim } = shape;
    const n = batch * seqLen * heads * headDim;
    const px = rd(inverse ? "dout" : "x", x, n);
    const name = inverse ? "dx" : "out";
    const accumulate = inverse ? acc(name, out, n) : (wr(name, out, n), 0);
    const t = this.#rope.get(shape);
    this.kernels.rope({
      x: px,
      o: cpu(out).ptr,
      rows: batch * seqLen,
      T: seqLen,
      heads,
      headDim,
      cos: t.cos,
      sin: inverse ? t.sinNeg : t.sin,
      neox: shape.style === "neox",
      accumulate: accumulate === 1,
    });
  }

  attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    probs: Tensor,
    shape: AttentionShape,
  ): void {
    checkAttentionShape(shape);
    const { batch: B, seqLen: T, numHeads: H, numKvHeads: Hkv, headDim: D } =
      shape;
    const nq = B * T * H * D, nk = B * T * Hkv * D;
    const pq = rd("q", q, nq), pk = rd("k", k, nk), pv = rd("v", v, nk);
    this.kernels.causalAttention({
      q: pq,
      k: pk,
      v: pv,
      out: wr("out", out, nq),
      probs: wr("probs", probs, B * H * T * T),
      batch: B,
      T,
      heads: H,
      kvHeads: Hkv,
      headDim: D,
    });
  }

  attentionBackward(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    probs: Tensor,
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    shape: AttentionShape,
  ): void {
    checkAttentionShape(shape);
    const { batch: B, seqLen: T, numHeads: H, numKvHeads: Hkv, headDim: D } =
      shape;
    const nq = B * T * H * D, nk = B * T * Hkv * D;
    this.kernels.causalAttentionBackward({
      out: rd("dout", dout, nq),
      q: rd("q", q, nq),
      k: rd("k", k, nk),
      v: rd("v", v, nk),
      probs: rd("probs", probs, B * H * T * T),
      dq: rd("dq", dq, nq),
      dk: rd("dk", dk, nk),
      dv: rd("dv", dv, nk),
      batch: B,
      T,
      heads: H,
      kvHeads: Hkv,
      headDim: D,
    });
  }

  activation(kind: Activation, x: Tensor, out: Tensor): void {
    sameSize("activation", x, out);
    const n = x.size;
    checkActivation(kind);
    const px = rd("x", x, n);
    this.kernels.map({
      kernel: kind === "silu" ? "silu_f32" : "relu2_f32",
      arrays: [px, wr("out", out, n)],
      n,
    });
  }

  activationBackward(
    kind: Activation,
    dout: Tensor,
    x: Tensor,
    dx: Tensor,
  ): void {
    checkActivation(kind);
    const n = x.size;
    const pd = rd("dout", dout, n), px = rd("x", x, n);
    this.kernels.map({
      kernel: kind === "silu" ? "silu_bwd_f32" : "relu2_bwd_f32",
      arrays: [pd, px, cpu(dx).ptr],
      scalars: [acc("dx", dx, n)],
      n,
    });
  }

  /**
   * Per counted row one fused pass (max, then `e^(x − max)` into `probs` with
   * an f64 sum, then the scaling); the loss in f64 from `lse = max + log Σ`:
   * `(1 − ε)(lse − x_y) + ε(lse − mean(x))`, averaged over counted rows.
   */
  crossEntropy(
    logits: Tensor,
    targets: Tensor,
    probs: Tensor,
    losses: Tensor,
    shape: CrossEntropyShape,
  ): void {
    const t = i32("targets", targets);
    const { eps, ignore, count } = checkCrossEntropy(shape, t);
    const { rows, vocab: V } = shape;
    const pl = rd("logits", logits, rows * V);
    const pp = wr("probs", probs, rows * V);
    const l = f32("losses", losses);
    if (l.length < 2) {
      throw new RangeError(`losses must have 2 elements, got ${l.length}`);
    }
    const K = this.kernels, stats = K.alloc(24 * rows);
    let lossSum = 0, nllSum = 0;
    try {
      K.softmaxRows({ x: pl, p: pp, rows, cols: V, stats });
      const lg = f32("logits", logits);
      const st = new Float64Array(K.memory.buffer, stats, 3 * rows);
      for (let r = 0; r < rows; r++) {
        const y = t[r];
        if (y === ignore) {
          this.#k.zero_bytes(pp + 4 * r * V, 4 * V);
          continue;
        }
        const lse = st[3 * r] + Math.log(st[3 * r + 1]);
        const nll = lse - lg[r * V + y];
        nllSum += nll;
        lossSum += (1 - eps) * nll + eps * (lse - st[3 * r + 2] / V);
      }
    } finally {
      K.free(stats);
    }
    l[0] = count ? lossSum / count : 0;
    l[1] = count ? nllSum / count : 0;
  }

  crossEntropyBackward(
    probs: Tensor,
    targets: Tensor,
    dlogits: Tensor,
    scale: number,
    shape: CrossEntropyShape,
  ): void {
    const t = i32("targets", targets);
    const { eps, ignore, count } = checkCrossEntropy(shape, t);
    const { rows, vocab: V } = shape;
    const pp = rd("probs", probs, rows * V);
    checkFinite("scale", scale);
    if (count === 0) {
      rd("dlogits", dlogits, rows * V);
      return;
    }
    const pd = cpu(dlogits).ptr;
    const accumulate = acc("dlogits", dlogits, rows * V);
    const k = scale / count;
    if (count === rows) {
      // No ignored row: one pooled pass over all rows, as row by row.
      this.kernels.map({
        kernel: "axmb_f32",
        arrays: [pp, pd],
        scalars: [k, eps / V, accumulate],
        n: rows * V,
      });
    }
    const dl = f32("dlogits", dlogits);
    for (let r = 0; r < rows; r++) {
      const y = t[r];
      if (y === ignore) {
        if (!accumulate) this.#k.zero_bytes(pd + 4 * r * V, 4 * V);
        continue;
      }
      // dlogits (+)= k·(p − ε/V), then the target's extra −k·(1 − ε).
      if (count < rows) {
        this.#k.axmb_f32(
          pp + 4 * r * V,
          pd + 4 * r * V,
          k,
          eps / V,
          accumulate,
          V,
        );
      }
      dl[r * V + y] -= k * (1 - eps);
    }
  }

  sumSquares(ts: ReadonlyArray<Tensor>, out: Tensor): void {
    let s = 0;
    for (const t of ts) s += this.#k.sum_sq_f64(rd("t", t, t.size), t.size);
    f32("out", out)[0] = s;
  }

  /** AdamW as `adamwStep` of the reference (bit for bit), after global-norm clipping. */
  adamw(
    p: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
    hyper: AdamWStep,
    sumSq: Tensor,
    maxNorm: number,
  ): void {
    checkAdamWStep(hyper, maxNorm);
    const { lr, beta1, beta2, eps, weightDecay, step } = hyper;
    const n = p.size;
    const norm = Math.sqrt(f32("sumSq", sumSq)[0]);
    const clip = Math.min(1, maxNorm / (norm + 1e-6));
    this.kernels.map({
      kernel: "adamw_f64",
      arrays: [rd("p", p, n), rd("g", g, n), rd("m", m, n), rd("v", v, n)],
      scalars: [
        clip,
        clip < 1 ? 1 : 0,
        1 - lr * weightDecay,
        beta1,
        1 - beta1,
        beta2,
        1 - beta2,
        lr / (1 - beta1 ** step),
        Math.sqrt(1 - beta2 ** step),
        eps,
      ],
      n,
    });
  }
}
