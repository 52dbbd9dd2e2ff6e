/**
 * The CPU {@link Backend}: tensors live in the WebAssembly kernels' memory, so
 * the matmuls run there with no copies, and the cheap element-wise and per-row
 * work runs in TypeScript on views of the same memory (the reference ops).
 *
 * The memory is shared (a growable `SharedArrayBuffer`), so views made before
 * the memory grows stay valid.
 *
 * @module
 */
import type {
  Activation,
  AdamWStep,
  Backend,
  FakeQuantOptions,
  MatmulOptions,
  Tensor,
} from "../backend.ts";
import {
  adamwStep,
  attentionBackward,
  attentionForward,
  type AttentionShape,
  crossEntropyBackward,
  crossEntropyForward,
  type CrossEntropyShape,
  embeddingBackward,
  layernormBackward,
  layernormForward,
  type EmbeddingShape,
  mulBackward,
  type NormShape,
  relu2Backward,
  relu2Forward,
  rmsnormBackward,
  rmsnormForward,
  ropeBackward,
  ropeForward,
  type RopeShape,
  siluBackward,
  siluForward,
  type WeightQuantMode,
} from "../reference/mod.ts";
import {
  fakeQuantizeActivations,
  fakeQuantizeWeights,
} from "../../core/quantize.ts";
import { steBlend } from "../../core/ste.ts";
import { WasmKernels } from "../wasm/wasm_kernels.ts";

/** A tensor of the CPU backend: a block of the WASM memory and a view of it. */
export interface CpuTensor extends Tensor {
  /** Byte offset in the kernels' memory. */
  readonly ptr: number;
  /** View of the elements (f32 values, or i32 ids). */
  readonly data: Float32Array | Int32Array;
}

function cpu(t: Tensor): CpuTensor {
  if (!("ptr" in t)) {
    throw new TypeError("tensor belongs to another backend");
  }
  return t as CpuTensor;
}

function f32(t: Tensor): Float32Array {
  const d = cpu(t).data;
  if (!(d instanceof Float32Array)) {
    throw new TypeError("expected an f32 tensor, got i32");
  }
  return d;
}

function i32(t: Tensor): Int32Array {
  const d = cpu(t).data;
  if (!(d instanceof Int32Array)) {
    throw new TypeError("expected an i32 tensor, got f32");
  }
  return d;
}

function sameSize(name: string, a: Tensor, b: Tensor): void {
  if (a.size !== b.size) {
    throw new RangeError(`${name}: sizes differ (${a.size} vs ${b.size})`);
  }
}

/** The CPU backend over one {@link WasmKernels} instance. */
export class CpuBackend implements Backend {
  /** Always `"cpu"`. */
  readonly kind = "cpu" as const;
  /** The kernels' WASM variant. */
  readonly description: string;
  /** The WASM kernels (and the memory every tensor lives in). */
  readonly kernels: WasmKernels;

  private constructor(kernels: WasmKernels) {
    this.kernels = kernels;
    this.description = `cpu (wasm ${kernels.variant} simd)`;
  }

  /** Instantiates the WASM kernels and returns a backend over them. */
  static async create(): Promise<CpuBackend> {
    return new CpuBackend(await WasmKernels.create({ sharedMemory: true }));
  }

  zeros(size: number, dtype: "f32" | "i32" = "f32"): CpuTensor {
    if (!Number.isInteger(size) || size < 0) {
      throw new RangeError(`size must be an integer ≥ 0, got ${size}`);
    }
    const ptr = this.kernels.alloc(size * 4);
    const buf = this.kernels.memory.buffer;
    const data = dtype === "f32"
      ? new Float32Array(buf, ptr, size)
      : new Int32Array(buf, ptr, size);
    data.fill(0);
    return { dtype, size, ptr, data };
  }

  upload(data: Float32Array | Int32Array): CpuTensor {
    const t = this.zeros(
      data.length,
      data instanceof Int32Array ? "i32" : "f32",
    );
    t.data.set(data);
    return t;
  }

  write(t: Tensor, data: Float32Array | Int32Array): void {
    if (data.length !== t.size) {
      throw new RangeError(
        `write: ${data.length} values for a tensor of ${t.size}`,
      );
    }
    cpu(t).data.set(data);
  }

  read(t: Tensor): Promise<Float32Array> {
    return Promise.resolve(Float32Array.from(cpu(t).data));
  }

  release(t: Tensor): void {
    this.kernels.free(cpu(t).ptr);
  }

  fill(t: Tensor, value: number): void {
    cpu(t).data.fill(value);
  }

  clamp(t: Tensor, limit: number): void {
    const d = f32(t);
    for (let i = 0; i < d.length; i++) {
      d[i] = d[i] > limit ? limit : d[i] < -limit ? -limit : d[i];
    }
  }

  add(a: Tensor, b: Tensor, out: Tensor): void {
    sameSize("add", a, b);
    sameSize("add", a, out);
    const x = f32(a), y = f32(b), o = f32(out);
    for (let i = 0; i < o.length; i++) o[i] = x[i] + y[i];
  }

  addScaled(out: Tensor, a: Tensor, s: number): void {
    sameSize("addScaled", a, out);
    const x = f32(a), o = f32(out);
    for (let i = 0; i < o.length; i++) o[i] += s * x[i];
  }

  mul(a: Tensor, b: Tensor, out: Tensor): void {
    sameSize("mul", a, b);
    sameSize("mul", a, out);
    const x = f32(a), y = f32(b), o = f32(out);
    for (let i = 0; i < o.length; i++) o[i] = x[i] * y[i];
  }

  mulBackward(
    dout: Tensor,
    a: Tensor,
    b: Tensor,
    da?: Tensor,
    db?: Tensor,
  ): void {
    mulBackward(f32(dout), { a: f32(a), b: f32(b) }, {
      da: da && f32(da),
      db: db && f32(db),
    });
  }

  matmul(a: Tensor, b: Tensor, c: Tensor, o: MatmulOptions): void {
    const need = (name: string, t: Tensor, n: number) => {
      if (t.size < n) {
        throw new RangeError(
          `matmul: ${name} has ${t.size} elements, needs ${n}`,
        );
      }
    };
    need("a", a, o.m * o.k);
    need("b", b, o.k * o.n);
    need("c", c, o.m * o.n);
    this.kernels.matmul({
      a: cpu(a).ptr,
      b: cpu(b).ptr,
      c: cpu(c).ptr,
      m: o.m,
      n: o.n,
      k: o.k,
      transA: o.transA,
      transB: o.transB,
      accumulate: o.accumulate,
    });
  }

  fakeQuantWeights(
    w: Tensor,
    out: Tensor,
    mode: WeightQuantMode,
    o: FakeQuantOptions,
  ): void {
    const q = fakeQuantizeWeights(mode, f32(w), o.rows, o.cols, {
      dynamicThreshold: o.dynamicThreshold,
    }, f32(out));
    steBlend(f32(w), q, o.lambda, q);
  }

  fakeQuantActivations(x: Tensor, out: Tensor, o: FakeQuantOptions): void {
    const q = fakeQuantizeActivations(f32(x), o.rows, o.cols, f32(out));
    steBlend(f32(x), q, o.lambda, q);
  }

  embedding(
    table: Tensor,
    ids: Tensor,
    out: Tensor,
    shape: EmbeddingShape,
  ): void {
    const t = f32(table), id = i32(ids), o = f32(out);
    const { vocab, dim } = shape;
    for (let i = 0; i < id.length; i++) {
      const row = id[i];
      if (!(row >= 0 && row < vocab)) {
        throw new RangeError(`ids[${i}] = ${row} is not in [0, ${vocab})`);
      }
      o.set(t.subarray(row * dim, row * dim + dim), i * dim);
    }
  }

  embeddingBackward(
    dout: Tensor,
    ids: Tensor,
    dtable: Tensor,
    shape: EmbeddingShape,
  ): void {
    embeddingBackward(
      f32(dout),
      { ids: i32(ids) },
      { dtable: f32(dtable) },
      shape,
    );
  }

  rmsnorm(
    x: Tensor,
    g: Tensor,
    out: Tensor,
    rstd: Tensor,
    shape: NormShape,
  ): void {
    const r = rmsnormForward(f32(x), f32(g), shape);
    f32(out).set(r.out);
    f32(rstd).set(r.rstd);
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
    rmsnormBackward(
      f32(dout),
      { x: f32(x), g: f32(g), rstd: f32(rstd) },
      { dx: f32(dx), dg: f32(dg) },
      shape,
    );
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
    const r = layernormForward(f32(x), f32(w), f32(bias), shape);
    f32(out).set(r.out);
    f32(mean).set(r.mean);
    f32(rstd).set(r.rstd);
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
    layernormBackward(
      f32(dout),
      { x: f32(x), weight: f32(w), mean: f32(mean), rstd: f32(rstd) },
      { dx: f32(dx), dweight: f32(dw), dbias: f32(dbias) },
      shape,
    );
  }

  rope(x: Tensor, out: Tensor, shape: RopeShape): void {
    f32(out).set(ropeForward(f32(x), shape));
  }

  ropeBackward(dout: Tensor, dx: Tensor, shape: RopeShape): void {
    ropeBackward(f32(dout), { dx: f32(dx) }, shape);
  }

  attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    probs: Tensor,
    shape: AttentionShape,
  ): void {
    const r = attentionForward(f32(q), f32(k), f32(v), shape);
    f32(out).set(r.out);
    f32(probs).set(r.probs);
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
    attentionBackward(
      f32(dout),
      { q: f32(q), k: f32(k), v: f32(v), probs: f32(probs) },
      { dq: f32(dq), dk: f32(dk), dv: f32(dv) },
      shape,
    );
  }

  activation(kind: Activation, x: Tensor, out: Tensor): void {
    f32(out).set(kind === "silu" ? siluForward(f32(x)) : relu2Forward(f32(x)));
  }

  activationBackward(
    kind: Activation,
    dout: Tensor,
    x: Tensor,
    dx: Tensor,
  ): void {
    (kind === "silu" ? siluBackward : relu2Backward)(
      f32(dout),
      { x: f32(x) },
      { dx: f32(dx) },
    );
  }

  crossEntropy(
    logits: Tensor,
    targets: Tensor,
    probs: Tensor,
    losses: Tensor,
    shape: CrossEntropyShape,
  ): void {
    const r = crossEntropyForward(f32(logits), i32(targets), shape);
    f32(probs).set(r.probs);
    f32(losses).set([r.loss, r.nll]);
  }

  crossEntropyBackward(
    probs: Tensor,
    targets: Tensor,
    dlogits: Tensor,
    scale: number,
    shape: CrossEntropyShape,
  ): void {
    const t = i32(targets);
    const ignore = shape.ignoreIndex ?? -1;
    let count = 0;
    for (let i = 0; i < t.length; i++) if (t[i] !== ignore) count++;
    crossEntropyBackward(
      scale,
      { probs: f32(probs), targets: t, count },
      { dlogits: f32(dlogits) },
      shape,
    );
  }

  sumSquares(ts: ReadonlyArray<Tensor>, out: Tensor): void {
    let s = 0;
    for (const t of ts) {
      const d = f32(t);
      for (let i = 0; i < d.length; i++) s += d[i] * d[i];
    }
    f32(out)[0] = s;
  }

  adamw(
    p: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
    hyper: AdamWStep,
    sumSq: Tensor,
    maxNorm: number,
  ): void {
    const grad = f32(g);
    const norm = Math.sqrt(f32(sumSq)[0]);
    const clip = Math.min(1, maxNorm / (norm + 1e-6));
    if (clip < 1) { for (let i = 0; i < grad.length; i++) grad[i] *= clip; }
    adamwStep(f32(p), grad, f32(m), f32(v), hyper.step, hyper);
  }
}
