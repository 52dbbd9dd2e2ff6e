/**
 * The WebGPU {@link Backend}: tensors are pooled storage buffers and every
 * kernel of a step is recorded into one open `GPUCommandEncoder`, submitted
 * only by {@link WebGpuBackend.read} (which appends the copy, submits, and maps
 * the result) or {@link WebGpuBackend.flush}. A training step is therefore one
 * submit (each costs ~11 ms on Mesa llvmpipe).
 *
 * Ordering. `queue.writeBuffer` runs at queue time, before the commands of the
 * still-open encoder, so:
 * - {@link WebGpuBackend.write} stages the data in a fresh buffer and records a
 *   copy into the encoder (in order with the recorded kernels); with nothing
 *   recorded since the last submit it writes the tensor directly;
 * - {@link WebGpuBackend.upload} writes a fresh buffer, which no recorded
 *   command can reference;
 * - {@link WebGpuBackend.release} of a buffer while commands are recorded
 *   defers its return to the pool until the next submit. Until then only
 *   {@link WebGpuBackend.zeros} and internal scratch reuse it: they write it with
 *   commands recorded after the pending ones, never with `writeBuffer`.
 *
 * Host copies. i32 tensors (token ids, targets) are only ever written from the
 * host, so the backend keeps a copy of each: the embedding gradient groups
 * positions by id from it, and the cross-entropy validates targets and counts
 * the ones not ignored without a read-back.
 *
 * Differences from the CPU backend (`src/backend/cpu/cpu_backend.ts`):
 * - arithmetic is f32 (the CPU quantizers and AdamW compute in f64), and sums are
 *   tree-ordered, so results agree to a few f32 ulp, and a quantizer code can
 *   differ where its input lies within rounding of a threshold;
 * - non-finite values are not detected (that would need a read-back): NaN
 *   propagates to the loss, where the trainer stops; f16 fake-quant gives ±inf
 *   from |w| ≥ 65520 where the CPU throws;
 * - `attention` saves the per-row log-sum-exp in `probs` (its first
 *   batch·seqLen·numHeads elements) and keeps a copy of `out`, freed with
 *   `probs`, instead of the probabilities: the backward recomputes them (the
 *   flash-attention scheme). Head dimensions are limited to 256.
 * GPU validation and out-of-memory errors are caught in error scopes and make
 * the next {@link WebGpuBackend.read} reject.
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
  checkMatmul,
  checkNormShape,
  checkRopeShape,
  type CrossEntropySettings,
  type CrossEntropyShape,
  type EmbeddingShape,
  type FakeQuantOptions,
  type MatmulOptions,
  type NormShape,
  type RopeShape,
  type WeightQuantMode,
} from "../shapes.ts";
import {
  type GpuDeviceOptions,
  type GpuDeviceShape,
  requestGpuDevice,
} from "./adapter.ts";
import { BufferPool, sizeClass } from "./buffer_pool.ts";
import {
  embeddingGradIndex,
  ropeTable,
  WebGpuKernels,
  type WebGpuKernelsOptions,
} from "./kernels.ts";

/** A tensor of the WebGPU backend: a pooled storage buffer (possibly larger than the tensor). */
export interface WebGpuTensor extends Tensor {
  /** The storage buffer; the tensor is its first `size` 4-byte elements. */
  readonly buffer: GPUBuffer;
}

/** Options of {@link WebGpuBackend.create}: adapter choice and kernel variants. */
export interface WebGpuBackendOptions
  extends GpuDeviceOptions, WebGpuKernelsOptions {}

// Internal scratch slots (distinct buffers that live as long as the backend).
const ACC = 0; // the overwriting kernels' output, added to the gradient after
const DK = 1;
const DV = 2;
const DELTA = 3;
const ALIAS = 4; // 4, 5, 6: copies of inputs that alias an output

function sameSize(name: string, a: Tensor, b: Tensor): void {
  if (a.size !== b.size) {
    throw new RangeError(`${name}: sizes differ (${a.size} vs ${b.size})`);
  }
}

/** The WebGPU backend over one device; see the module documentation. */
export class WebGpuBackend implements Backend {
  /** Always `"webgpu"`. */
  readonly kind = "webgpu" as const;
  /** Adapter, whether it is a software fallback, and the matmul variant. */
  readonly description: string;
  /** The device and what is known about it. */
  readonly gpu: GpuDeviceShape;
  /** Storage buffers of every tensor. */
  readonly pool: BufferPool;
  /** The compiled kernels. */
  readonly kernels: WebGpuKernels;
  #ownsDevice = false;
  #encoder: GPUCommandEncoder;
  // Whether the open encoder holds commands (then released buffers must wait).
  #recorded = false;
  // Buffers released since the last submit, by size class: reusable only by writers
  // that record commands; returned to the pool on submit.
  readonly #pending = new Map<number, GPUBuffer[]>();
  readonly #owned = new WeakSet<Tensor>();
  readonly #dead = new WeakSet<Tensor>();
  readonly #ids = new WeakMap<Tensor, Int32Array<ArrayBuffer>>();
  // Attention: probs buffer → copy of the forward output (for the backward's dout·out).
  readonly #savedOut = new Map<GPUBuffer, GPUBuffer>();
  readonly #ropeTables = new Map<
    string,
    { buffer: GPUBuffer; maxPositions: number }
  >();
  readonly #scratch: (GPUBuffer | undefined)[] = [];
  // Error scopes of the submits since the last read.
  #errors: Promise<GPUError | null>[] = [];
  #destroyed = false;

  /**
   * A backend on `gpu`'s device with its own buffer pool and kernels. The caller
   * keeps owning the device; {@link WebGpuBackend.destroy} frees the buffers.
   */
  constructor(gpu: GpuDeviceShape, options: WebGpuKernelsOptions = {}) {
    this.gpu = gpu;
    this.pool = new BufferPool(gpu.device);
    this.kernels = new WebGpuKernels(gpu, this.pool, options);
    const { info } = gpu;
    const name = info.description || info.device || `vendor ${info.vendor}`;
    this.description = `webgpu (${name}${
      info.isFallback ? ", fallback adapter" : ""
    }; ${this.kernels.matmulVariant} matmul)`;
    this.#encoder = gpu.device.createCommandEncoder();
  }

  /**
   * Requests an adapter and a device (see `requestGpuDevice`; rejects with a
   * `GpuRequestError` saying what to install when none is usable) and returns a
   * backend that owns them: {@link WebGpuBackend.destroy} destroys the device.
   */
  static async create(
    options: WebGpuBackendOptions = {},
  ): Promise<WebGpuBackend> {
    const gpu = await requestGpuDevice(options);
    const backend = new WebGpuBackend(gpu, options);
    backend.#ownsDevice = true;
    return backend;
  }

  /** Submits the commands recorded so far (no-op when there are none). */
  flush(): void {
    if (!this.#recorded) return;
    const encoder = this.#take();
    this.#submit(() => this.pool.submit(encoder));
  }

  /**
   * Frees every buffer of the backend (and the device, when {@link
   * WebGpuBackend.create} made it). Unsubmitted commands are dropped; the
   * backend is unusable afterwards.
   */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.pool.destroy(); // every tensor, scratch, saved output and RoPE table
    this.#ropeTables.clear();
    this.#savedOut.clear();
    this.#pending.clear();
    if (this.#ownsDevice) this.gpu.device.destroy();
  }

  // --- storage --------------------------------------------------------------

  zeros(size: number, dtype: "f32" | "i32" = "f32"): WebGpuTensor {
    checkSize(size);
    const t = this.#tensor(size, dtype, this.#acquireRecorded(size * 4));
    if (size > 0) this.#enc().clearBuffer(t.buffer, 0, size * 4);
    if (dtype === "i32") this.#ids.set(t, new Int32Array(size));
    return t;
  }

  upload(data: Float32Array | Int32Array): WebGpuTensor {
    const dtype = data instanceof Int32Array ? "i32" : "f32";
    const host = dtype === "i32"
      ? Int32Array.from(data)
      : Float32Array.from(data);
    // A buffer from the pool is referenced by no unsubmitted command.
    const t = this.#tensor(
      data.length,
      dtype,
      this.pool.acquire(data.length * 4),
    );
    if (data.length > 0) this.gpu.device.queue.writeBuffer(t.buffer, 0, host);
    if (host instanceof Int32Array) this.#ids.set(t, host);
    return t;
  }

  write(t: Tensor, data: Float32Array | Int32Array): void {
    const w = this.#get("t", t);
    if (data.length !== t.size) {
      throw new RangeError(
        `write: ${data.length} values for a tensor of ${t.size}`,
      );
    }
    const host = t.dtype === "i32"
      ? Int32Array.from(data)
      : Float32Array.from(data);
    if (host instanceof Int32Array) this.#ids.set(t, host);
    this.#writeHost(w.buffer, host);
  }

  /**
   * Appends a copy of `t` to the open encoder, submits it and resolves with the
   * values (i32 tensors converted to f32, as the CPU backend does). Rejects if
   * WebGPU reported a validation or out-of-memory error since the last read.
   */
  async read(t: Tensor): Promise<Float32Array> {
    const w = this.#get("t", t);
    const encoder = this.#take();
    // readBack records the copy and submits before its first await.
    const values = this.#submit(() =>
      this.pool.readBack(encoder, [{ buffer: w.buffer, length: t.size }])
    );
    const errors = this.#errors;
    this.#errors = [];
    const [raw] = await values;
    for (const error of await Promise.all(errors)) {
      if (error !== null) {
        throw new Error(`WebGPU reported an error: ${error.message}`);
      }
    }
    if (t.dtype === "f32") return raw;
    return Float32Array.from(
      new Int32Array(raw.buffer, raw.byteOffset, raw.length),
    );
  }

  release(t: Tensor): void {
    const w = this.#get("t", t);
    this.#dead.add(t);
    this.#ids.delete(t);
    const saved = this.#savedOut.get(w.buffer);
    if (saved !== undefined) {
      this.#savedOut.delete(w.buffer);
      this.#releaseBuffer(saved);
    }
    this.#releaseBuffer(w.buffer);
  }

  // --- element-wise -----------------------------------------------------------

  fill(t: Tensor, value: number): void {
    const w = this.#get("t", t);
    if (t.size === 0) return;
    if (t.dtype === "i32") {
      const host = new Int32Array(t.size).fill(value);
      this.#ids.set(t, host);
      this.#writeHost(w.buffer, host);
    } else if (Object.is(value, 0)) {
      this.#enc().clearBuffer(w.buffer, 0, t.size * 4);
    } else if (Number.isFinite(value)) {
      this.kernels.fill(this.#enc(), { out: w.buffer, n: t.size, value });
    } else {
      this.#writeHost(w.buffer, new Float32Array(t.size).fill(value));
    }
  }

  clamp(t: Tensor, limit: number): void {
    const x = this.#f32("t", t, t.size);
    checkClampLimit(limit);
    if (t.size === 0 || limit === Infinity) return;
    this.kernels.clampAbs(this.#enc(), { x, n: t.size, limit });
  }

  add(a: Tensor, b: Tensor, out: Tensor): void {
    sameSize("add", a, b);
    sameSize("add", a, out);
    const n = a.size;
    const o = this.#f32("out", out, n);
    const [ga, gb] = this.#inputs([["a", a], ["b", b]], n, [o]);
    if (n > 0) this.kernels.add(this.#enc(), { a: ga, b: gb, out: o, n });
  }

  addScaled(out: Tensor, a: Tensor, s: number): void {
    sameSize("addScaled", a, out);
    const n = a.size;
    const y = this.#f32("out", out, n);
    const [x] = this.#inputs([["a", a]], n, [y]);
    checkFinite("s", s);
    if (n > 0) this.kernels.axpy(this.#enc(), { x, y, n, alpha: s });
  }

  mul(a: Tensor, b: Tensor, out: Tensor): void {
    sameSize("mul", a, b);
    sameSize("mul", a, out);
    const n = a.size;
    const o = this.#f32("out", out, n);
    const [ga, gb] = this.#inputs([["a", a], ["b", b]], n, [o]);
    if (n > 0) this.kernels.mul(this.#enc(), { a: ga, b: gb, out: o, n });
  }

  mulBackward(
    dout: Tensor,
    a: Tensor,
    b: Tensor,
    da?: Tensor,
    db?: Tensor,
  ): void {
    const n = a.size;
    const outs = [
      da && this.#f32("da", da, n),
      db && this.#f32("db", db, n),
    ];
    const [gd, ga, gb] = this.#inputs(
      [["dout", dout], ["a", a], ["b", b]],
      n,
      outs.filter((o) => o !== undefined),
    );
    if (n === 0) return;
    if (outs[0]) {
      this.kernels.mulAccumulate(this.#enc(), {
        a: gd,
        b: gb,
        out: outs[0],
        n,
      });
    }
    if (outs[1]) {
      this.kernels.mulAccumulate(this.#enc(), {
        a: gd,
        b: ga,
        out: outs[1],
        n,
      });
    }
  }

  matmul(a: Tensor, b: Tensor, c: Tensor, o: MatmulOptions): void {
    checkMatmul(o);
    const need = (name: string, t: Tensor, n: number) => {
      this.#f32(name, t, t.size);
      if (t.size < n) {
        throw new RangeError(
          `matmul: ${name} has ${t.size} elements, needs ${n}`,
        );
      }
    };
    need("a", a, o.m * o.k);
    need("b", b, o.k * o.n);
    need("c", c, o.m * o.n);
    const gc = this.#get("c", c).buffer;
    const [ga, gb] = this.#inputs([["a", a], ["b", b]], -1, [gc]);
    this.kernels.matmul(this.#enc(), {
      a: ga,
      b: gb,
      c: gc,
      m: o.m,
      n: o.n,
      k: o.k,
      transA: o.transA,
      transB: o.transB,
      accumulate: o.accumulate,
    });
  }

  // --- quantizers -------------------------------------------------------------

  /**
   * `out = (1 − λ)·w + λ·Q(w)` (`steBlend`) with `Q` of `fakeQuantizeWeights`
   * (`src/core/quantize.ts`): ternary absmean `clamp(round(w/(γ + ε)), −1, 1)·γ`
   * or dynamic threshold, binary `±γ`, eightbit per row, f16; γ = mean|w| is
   * reduced on the GPU.
   */
  fakeQuantWeights(
    w: Tensor,
    out: Tensor,
    mode: WeightQuantMode,
    o: FakeQuantOptions,
  ): void {
    const n = checkFakeQuant(o, mode);
    const go = this.#f32("out", out, n);
    const [gw] = this.#inputs([["w", w]], n, [go]);
    if (n === 0) return;
    this.kernels.weightFakeQuant(this.#enc(), {
      w: gw,
      out: go,
      rows: o.rows,
      cols: o.cols,
      mode,
      lambda: o.lambda,
      dynamicThreshold: o.dynamicThreshold,
    });
  }

  /**
   * Per-token int8: `s = 127 / max(max|x_row|, ε)`,
   * `out = (1 − λ)·x + λ·clamp(round(x·s), −128, 127) / s`.
   */
  fakeQuantActivations(x: Tensor, out: Tensor, o: FakeQuantOptions): void {
    const n = checkFakeQuant(o);
    const go = this.#f32("out", out, n);
    const [gx] = this.#inputs([["x", x]], n, [go]);
    if (n === 0) return;
    this.kernels.activationFakeQuant(this.#enc(), {
      x: gx,
      out: go,
      rows: o.rows,
      dim: o.cols,
      lambda: o.lambda,
    });
  }

  // --- embedding, norms, RoPE, attention ---------------------------------------

  embedding(
    table: Tensor,
    ids: Tensor,
    out: Tensor,
    shape: EmbeddingShape,
  ): void {
    const { vocab, dim } = shape;
    const id = this.#hostIds(ids, shape);
    const go = this.#f32("out", out, id.length * dim);
    const [gt] = this.#inputs([["table", table]], vocab * dim, [go]);
    if (id.length === 0) return;
    this.kernels.embeddingForward(this.#enc(), {
      table: gt,
      ids: this.#get("ids", ids).buffer,
      out: go,
      tokens: id.length,
      dim,
      vocab,
    });
  }

  embeddingBackward(
    dout: Tensor,
    ids: Tensor,
    dtable: Tensor,
    shape: EmbeddingShape,
  ): void {
    const { vocab, dim } = shape;
    const id = this.#hostIds(ids, shape);
    const gt = this.#f32("dtable", dtable, vocab * dim);
    const [gd] = this.#inputs([["dout", dout]], id.length * dim, [gt]);
    if (id.length === 0) return;
    const index = embeddingGradIndex(id, vocab);
    const indexBuffer = this.pool.upload(index.data);
    this.kernels.embeddingBackward(this.#enc(), {
      dOut: gd,
      index,
      indexBuffer,
      dTable: gt,
      dim,
      vocab,
    });
    this.#releaseBuffer(indexBuffer);
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
    const outs = [
      this.#f32("out", out, rows * dim),
      this.#f32("rstd", rstd, rows),
    ];
    const [gx] = this.#inputs([["x", x]], rows * dim, outs);
    const [gg] = this.#inputs([["g", g]], dim, outs, 1);
    this.kernels.rmsNormForward(this.#enc(), {
      x: gx,
      weight: gg,
      out: outs[0],
      invRms: outs[1],
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
    const gdx = this.#f32("dx", dx, rows * dim);
    const gdg = this.#f32("dg", dg, dim);
    const [gd, gx] = this.#inputs(
      [["dout", dout], ["x", x]],
      rows * dim,
      [gdg],
    );
    const [gg] = this.#inputs([["g", g]], dim, [gdg], 2);
    const [gr] = this.#inputs([["rstd", rstd]], rows, [gdg], 3);
    // The kernel overwrites dx: it goes to scratch and is added after.
    const acc = this.#temp(ACC, rows * dim);
    const enc = this.#enc();
    this.kernels.rmsNormBackward(enc, {
      x: gx,
      weight: gg,
      dy: gd,
      invRms: gr,
      dx: acc,
      dWeight: gdg,
      rows,
      dim,
      accumulateWeight: true,
    });
    this.kernels.axpy(enc, { x: acc, y: gdx, n: rows * dim, alpha: 1 });
  }

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
    const { rows, dim } = shape;
    const outs = [
      this.#f32("out", out, rows * dim),
      this.#f32("mean", mean, rows),
      this.#f32("rstd", rstd, rows),
    ];
    const [gx] = this.#inputs([["x", x]], rows * dim, outs);
    const [gw, gb] = this.#inputs([["w", w], ["bias", bias]], dim, outs, 1);
    this.kernels.layerNormForward(this.#enc(), {
      x: gx,
      weight: gw,
      bias: gb,
      out: outs[0],
      mean: outs[1],
      rstd: outs[2],
      rows,
      dim,
      eps: shape.eps,
    });
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
    const outs = [
      this.#f32("dx", dx, rows * dim),
      this.#f32("dw", dw, dim),
      this.#f32("dbias", dbias, dim),
    ];
    const [gd, gx] = this.#inputs(
      [["dout", dout], ["x", x]],
      rows * dim,
      outs,
    );
    const [gw] = this.#inputs([["w", w]], dim, outs, 2);
    // mean and rstd alias no output of a sane call; checked by the kernel wrapper.
    this.kernels.layerNormBackward(this.#enc(), {
      x: gx,
      weight: gw,
      dy: gd,
      mean: this.#f32("mean", mean, rows),
      rstd: this.#f32("rstd", rstd, rows),
      dx: outs[0],
      dWeight: outs[1],
      dBias: outs[2],
      rows,
      dim,
    });
  }

  rope(x: Tensor, out: Tensor, shape: RopeShape): void {
    const n = checkRopeShape(shape);
    const go = this.#f32("out", out, n);
    const [gx] = this.#inputs([["x", x]], n, [go]);
    this.#rotate(gx, go, shape, false);
  }

  ropeBackward(dout: Tensor, dx: Tensor, shape: RopeShape): void {
    const n = checkRopeShape(shape);
    const gdx = this.#f32("dx", dx, n);
    const gd = this.#f32("dout", dout, n);
    const acc = this.#temp(ACC, n);
    this.#rotate(gd, acc, shape, true);
    this.kernels.axpy(this.#enc(), { x: acc, y: gdx, n, alpha: 1 });
  }

  #rotate(
    x: GPUBuffer,
    out: GPUBuffer,
    shape: RopeShape,
    inverse: boolean,
  ): void {
    const { batch, seqLen, heads, headDim } = shape;
    const posOffset = shape.posOffset ?? 0;
    const table = this.#ropeTable(posOffset + seqLen, headDim, shape.base);
    this.kernels.rope(this.#enc(), {
      x,
      out,
      table: table.buffer,
      tokens: batch * seqLen,
      heads,
      headDim,
      rotaryDim: headDim,
      seqLen,
      maxPositions: table.maxPositions,
      style: shape.style,
      posOffset,
      inverse,
    });
  }

  /**
   * Causal attention (flash-style, online softmax). `probs` receives the
   * per-row log-sum-exp of the scores in its first `batch·seqLen·numHeads`
   * elements, not the probabilities; a copy of `out` is kept with it for the
   * backward pass and freed when `probs` is released.
   */
  attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    probs: Tensor,
    shape: AttentionShape,
  ): void {
    const { B, T, H, Hkv, D } = attentionDims(shape);
    const nq = B * T * H * D, nk = B * T * Hkv * D;
    const outs = [
      this.#f32("out", out, nq),
      this.#f32("probs", probs, B * H * T * T),
    ];
    const [gq] = this.#inputs([["q", q]], nq, outs);
    const [gk, gv] = this.#inputs([["k", k], ["v", v]], nk, outs, 1);
    const enc = this.#enc();
    this.kernels.attentionForward(enc, {
      q: gq,
      k: gk,
      v: gv,
      out: outs[0],
      lse: outs[1],
      tokens: B * T,
      seqLen: T,
      heads: H,
      kvHeads: Hkv,
      headDim: D,
    });
    let saved = this.#savedOut.get(outs[1]);
    if (saved === undefined || saved.size < nq * 4) {
      if (saved !== undefined) this.#releaseBuffer(saved);
      saved = this.#acquireRecorded(nq * 4);
      this.#savedOut.set(outs[1], saved);
    }
    enc.copyBufferToBuffer(outs[0], 0, saved, 0, nq * 4);
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
    const { B, T, H, Hkv, D } = attentionDims(shape);
    const nq = B * T * H * D, nk = B * T * Hkv * D;
    const lse = this.#f32("probs", probs, B * H * T * T);
    const saved = this.#savedOut.get(lse);
    if (saved === undefined) {
      throw new Error(
        "attentionBackward: probs was not written by attention() of this backend",
      );
    }
    const gdq = this.#f32("dq", dq, nq);
    const gdk = this.#f32("dk", dk, nk);
    const gdv = this.#f32("dv", dv, nk);
    const gd = this.#f32("dout", dout, nq);
    const gq = this.#f32("q", q, nq);
    const gk = this.#f32("k", k, nk);
    const gv = this.#f32("v", v, nk);
    // The kernels overwrite their gradients: scratch, then added.
    const tq = this.#temp(ACC, nq);
    const tk = this.#temp(DK, nk);
    const tv = this.#temp(DV, nk);
    const enc = this.#enc();
    this.kernels.attentionBackward(enc, {
      q: gq,
      k: gk,
      v: gv,
      out: saved,
      lse,
      dOut: gd,
      delta: this.#temp(DELTA, B * T * H),
      dq: tq,
      dk: tk,
      dv: tv,
      tokens: B * T,
      seqLen: T,
      heads: H,
      kvHeads: Hkv,
      headDim: D,
    });
    this.kernels.axpy(enc, { x: tq, y: gdq, n: nq, alpha: 1 });
    this.kernels.axpy(enc, { x: tk, y: gdk, n: nk, alpha: 1 });
    this.kernels.axpy(enc, { x: tv, y: gdv, n: nk, alpha: 1 });
  }

  activation(kind: Activation, x: Tensor, out: Tensor): void {
    checkActivation(kind);
    sameSize("activation", x, out);
    const n = x.size;
    const go = this.#f32("out", out, n);
    const [gx] = this.#inputs([["x", x]], n, [go]);
    if (n === 0) return;
    const args = { x: gx, out: go, n };
    if (kind === "silu") this.kernels.siluForward(this.#enc(), args);
    else this.kernels.relu2Forward(this.#enc(), args);
  }

  activationBackward(
    kind: Activation,
    dout: Tensor,
    x: Tensor,
    dx: Tensor,
  ): void {
    checkActivation(kind);
    const n = x.size;
    const gdx = this.#f32("dx", dx, n);
    const gd = this.#f32("dout", dout, n);
    const gx = this.#f32("x", x, n);
    if (n === 0) return;
    const acc = this.#temp(ACC, n);
    const enc = this.#enc();
    const args = { x: gx, dy: gd, dx: acc, n };
    if (kind === "silu") this.kernels.siluBackward(enc, args);
    else this.kernels.relu2Backward(enc, args);
    this.kernels.axpy(enc, { x: acc, y: gdx, n, alpha: 1 });
  }

  // --- loss and optimizer --------------------------------------------------------

  /**
   * Per counted row `lse = max + log Σ e^(x − max)`, `probs = e^(x − lse)`,
   * loss `(1 − ε)(lse − x_y) + ε(lse − mean(x))`; `losses = [mean loss, mean
   * NLL]` over the rows whose target is not ignored (counted from the host copy
   * of `targets`).
   */
  crossEntropy(
    logits: Tensor,
    targets: Tensor,
    probs: Tensor,
    losses: Tensor,
    shape: CrossEntropyShape,
  ): void {
    const t = this.#targets(targets, shape);
    const { rows, vocab } = shape;
    const outs = [
      this.#f32("probs", probs, rows * vocab),
      this.#f32("losses", losses, losses.size),
    ];
    if (losses.size < 2) {
      throw new RangeError(`losses must have 2 elements, got ${losses.size}`);
    }
    const [gl] = this.#inputs([["logits", logits]], rows * vocab, outs);
    this.kernels.softmaxCrossEntropyForward(this.#enc(), {
      logits: gl,
      targets: this.#get("targets", targets).buffer,
      probs: outs[0],
      rowStats: this.#temp(ACC, 2 * rows),
      losses: outs[1],
      rows,
      vocab,
      ignore: t.ignore,
      smoothing: t.eps,
      count: t.count,
    });
  }

  crossEntropyBackward(
    probs: Tensor,
    targets: Tensor,
    dlogits: Tensor,
    scale: number,
    shape: CrossEntropyShape,
  ): void {
    const t = this.#targets(targets, shape);
    const { rows, vocab } = shape;
    const gdl = this.#f32("dlogits", dlogits, rows * vocab);
    const [gp] = this.#inputs([["probs", probs]], rows * vocab, [gdl]);
    checkFinite("scale", scale);
    this.kernels.softmaxCrossEntropyBackward(this.#enc(), {
      probs: gp,
      targets: this.#get("targets", targets).buffer,
      dLogits: gdl,
      rows,
      vocab,
      ignore: t.ignore,
      smoothing: t.eps,
      count: t.count,
      scale,
    });
  }

  sumSquares(ts: ReadonlyArray<Tensor>, out: Tensor): void {
    const go = this.#f32("out", out, out.size);
    if (out.size < 1) throw new RangeError("out must have at least 1 element");
    const bufs = ts.map((t, i) => this.#f32(`ts[${i}]`, t, t.size));
    // An output that is also an input is written only after every sum is read.
    const target = bufs.includes(go) ? this.#temp(ALIAS, 1) : go;
    const enc = this.#enc();
    let first = true;
    ts.forEach((t, i) => {
      if (t.size === 0) return;
      this.kernels.sumSquares(enc, {
        x: bufs[i],
        n: t.size,
        out: target,
        accumulate: !first,
      });
      first = false;
    });
    if (first) this.kernels.fill(enc, { out: target, n: 1, value: 0 });
    if (target !== go) enc.copyBufferToBuffer(target, 0, go, 0, 4);
  }

  /**
   * AdamW (`adamwStep` of the reference, PyTorch order) in f32 after
   * global-norm clipping by `min(1, maxNorm / (sqrt(sumSq[0]) + 1e-6))`,
   * computed on the GPU; `maxNorm` must be > 0 or `Infinity` (no clipping).
   */
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
    const param = this.#f32("p", p, n);
    const grad = this.#f32("g", g, n);
    const gm = this.#f32("m", m, n);
    const gv = this.#f32("v", v, n);
    const ss = this.#f32("sumSq", sumSq, sumSq.size);
    if (sumSq.size < 1) {
      throw new RangeError("sumSq must have at least 1 element");
    }
    if (n === 0) return;
    const scale = this.#temp(ALIAS, 2);
    const enc = this.#enc();
    // grad_clip.wgsl treats maxNorm ≤ 0 as "no clipping" (scale 1).
    this.kernels.gradClipScale(enc, {
      sumSquares: ss,
      scale,
      maxNorm: maxNorm === Infinity ? 0 : maxNorm,
    });
    this.kernels.adamw(enc, {
      param,
      grad,
      m: gm,
      v: gv,
      gradScale: scale,
      n,
      step,
      lr,
      beta1,
      beta2,
      eps,
      weightDecay,
    });
  }

  // --- internals ------------------------------------------------------------------

  /** The open encoder, marked as holding commands. */
  #enc(): GPUCommandEncoder {
    if (this.#destroyed) throw new Error("the WebGPU backend was destroyed");
    this.#recorded = true;
    return this.#encoder;
  }

  /** Swaps in a fresh encoder and returns the old one, to be submitted now. */
  #take(): GPUCommandEncoder {
    const encoder = this.#enc();
    this.#encoder = this.gpu.device.createCommandEncoder();
    return encoder;
  }

  /**
   * Runs `submit` (which finishes and submits the taken encoder) inside error
   * scopes, then returns the released buffers to the pool. An invalid command
   * (bad bind group, pipeline, copy) invalidates the encoder, which `finish`
   * reports: the scopes catch it without interfering with the caller's own
   * scopes, as nothing else runs between the push and the pop.
   */
  #submit<T>(submit: () => T): T {
    const device = this.gpu.device;
    device.pushErrorScope("out-of-memory");
    device.pushErrorScope("validation");
    try {
      return submit();
    } finally {
      const validation = device.popErrorScope().catch(() => null);
      const oom = device.popErrorScope().catch(() => null);
      this.#errors.push(validation, oom);
      // Many flushes without a read: fold the scopes into one first-error promise.
      if (this.#errors.length > 64) {
        const all = Promise.all(this.#errors);
        this.#errors = [all.then((es) => es.find((e) => e !== null) ?? null)];
      }
      this.#afterSubmit();
    }
  }

  #afterSubmit(): void {
    this.#recorded = false;
    for (const list of this.#pending.values()) {
      for (const buffer of list) this.pool.release(buffer);
    }
    this.#pending.clear();
  }

  #tensor(
    size: number,
    dtype: "f32" | "i32",
    buffer: GPUBuffer,
  ): WebGpuTensor {
    const t: WebGpuTensor = { dtype, size, buffer };
    this.#owned.add(t);
    return t;
  }

  /** A buffer that only recorded commands will write: a pending one if any fits. */
  #acquireRecorded(bytes: number): GPUBuffer {
    const reused = this.#pending.get(sizeClass(bytes))?.pop();
    return reused ?? this.pool.acquire(bytes);
  }

  #releaseBuffer(buffer: GPUBuffer): void {
    if (!this.#recorded) {
      this.pool.release(buffer);
      return;
    }
    const list = this.#pending.get(buffer.size);
    if (list === undefined) this.#pending.set(buffer.size, [buffer]);
    else list.push(buffer);
  }

  /** Writes host data into `buffer` in order with the recorded commands. */
  #writeHost(
    buffer: GPUBuffer,
    data: Float32Array<ArrayBuffer> | Int32Array<ArrayBuffer>,
  ): void {
    if (data.length === 0) return;
    if (!this.#recorded) {
      this.gpu.device.queue.writeBuffer(buffer, 0, data);
      return;
    }
    const staging = this.pool.upload(data);
    this.#enc().copyBufferToBuffer(staging, 0, buffer, 0, data.byteLength);
    this.#releaseBuffer(staging);
  }

  /** Internal scratch of at least `elements` f32 values in slot `slot`. */
  #temp(slot: number, elements: number): GPUBuffer {
    const bytes = Math.max(elements, 1) * 4;
    const have = this.#scratch[slot];
    if (have !== undefined && have.size >= bytes) return have;
    if (have !== undefined) this.#releaseBuffer(have);
    const buffer = this.#acquireRecorded(bytes);
    this.#scratch[slot] = buffer;
    return buffer;
  }

  /** The tensor's storage, after checking it is a live tensor of this backend. */
  #get(name: string, t: Tensor): WebGpuTensor {
    if (!this.#owned.has(t)) {
      throw new TypeError(`${name}: tensor belongs to another backend`);
    }
    if (this.#dead.has(t)) {
      throw new Error(`${name}: tensor was released`);
    }
    return t as WebGpuTensor;
  }

  /** The buffer of an f32 tensor of exactly `n` elements. */
  #f32(name: string, t: Tensor, n: number): GPUBuffer {
    const w = this.#get(name, t);
    if (t.dtype !== "f32") {
      throw new TypeError(`${name}: expected an f32 tensor, got i32`);
    }
    if (t.size !== n) {
      throw new RangeError(`${name} must have ${n} elements, got ${t.size}`);
    }
    return w.buffer;
  }

  /**
   * Buffers of f32 inputs of `n` elements each (`n` < 0: any size), copied to
   * scratch (slots from ALIAS + `first`) where one is also an output: WebGPU
   * forbids binding a buffer both read-only and read-write in one dispatch.
   */
  #inputs(
    inputs: ReadonlyArray<readonly [string, Tensor]>,
    n: number,
    outputs: ReadonlyArray<GPUBuffer>,
    first = 0,
  ): GPUBuffer[] {
    const copies = new Map<GPUBuffer, GPUBuffer>();
    return inputs.map(([name, t], i) => {
      const buffer = this.#f32(name, t, n < 0 ? t.size : n);
      if (!outputs.includes(buffer)) return buffer;
      let copy = copies.get(buffer);
      if (copy === undefined && t.size > 0) {
        copy = this.#temp(ALIAS + first + i, t.size);
        this.#enc().copyBufferToBuffer(buffer, 0, copy, 0, t.size * 4);
        copies.set(buffer, copy);
      }
      return copy ?? buffer;
    });
  }

  /** The host copy of an i32 tensor of token ids, checked against `shape`. */
  #hostIds(t: Tensor, shape: EmbeddingShape): Int32Array {
    const ids = this.#host("ids", t);
    checkEmbedding(shape, ids);
    return ids;
  }

  /** The cross-entropy settings, from the host copy of the targets. */
  #targets(
    targets: Tensor,
    shape: CrossEntropyShape,
  ): CrossEntropySettings {
    return checkCrossEntropy(shape, this.#host("targets", targets));
  }

  /** The host copy of an i32 tensor. */
  #host(name: string, t: Tensor): Int32Array {
    this.#get(name, t);
    const host = this.#ids.get(t);
    if (t.dtype !== "i32" || host === undefined) {
      throw new TypeError(`${name}: expected an i32 tensor, got f32`);
    }
    return host;
  }

  /** The cos/sin table for positions [0, positions) (grown as needed, kept). */
  #ropeTable(
    positions: number,
    headDim: number,
    base: number,
  ): { buffer: GPUBuffer; maxPositions: number } {
    const key = `${headDim}:${base}`;
    const have = this.#ropeTables.get(key);
    if (have !== undefined && have.maxPositions >= positions) return have;
    if (have !== undefined) this.#releaseBuffer(have.buffer);
    // Powers of two, so a growing KV cache rebuilds the table O(log n) times.
    const maxPositions = 2 ** Math.ceil(Math.log2(positions));
    const table = {
      buffer: this.pool.upload(ropeTable(maxPositions, headDim, base)),
      maxPositions,
    };
    this.#ropeTables.set(key, table);
    return table;
  }
}

function checkSize(size: number): void {
  if (!Number.isInteger(size) || size < 0) {
    throw new RangeError(`size must be an integer ≥ 0, got ${size}`);
  }
}

// WGSL attention keeps a query row's head in registers.
const MAX_HEAD_DIM = { backend: "webgpu", max: 256 } as const;

function attentionDims(
  shape: AttentionShape,
): { B: number; T: number; H: number; Hkv: number; D: number } {
  checkAttentionShape(shape, MAX_HEAD_DIM);
  const { batch: B, seqLen: T, numHeads: H, numKvHeads: Hkv, headDim: D } =
    shape;
  return { B, T, H, Hkv, D };
}
