/**
 * The WebGPU inference runtime: the same {@link ModelWeights} as the CPU's
 * `InferenceModel`, run forward on the GPU with every intermediate tensor in
 * GPU memory. Each session call records one command encoder (embedding, every
 * block, the final norm and the head) and reads back only the logits: one
 * submit and one read-back per decoded token.
 *
 * Linears run by their stored form, as on the CPU:
 * - ternary and binary codes: packed to 2 bits once at load
 *   (`packTernaryRows`), then `quantizeActivations` (per-token absmax int8,
 *   rounded on the exact product like the CPU's f64 `act_quant`) and the int8
 *   × ternary kernel `ternaryLinear` (integer sums, `· γ / s`);
 * - int8 codes (`eightbit`): dequantized once to f32 and multiplied (f32) with
 *   the fake-quantized activations `q / s`;
 * - dense (`f16`): f32 on unquantized activations.
 * The embedding and the head are dequantized to f32; the head sees
 * unquantized activations. Attention runs over a KV cache per session,
 * preallocated to its context length (head-major, a ring when it slides), by
 * the `kvAttention` kernel.
 *
 * The logits equal the CPU runtime's to float rounding (sums run in another
 * order, and WGSL's division is within 2.5 ulp), so an int8 code may rarely
 * round the other way.
 *
 * This module imports no npm package (only types from the rest of the
 * library), so the GPU benchmark runs it on machines without network; its
 * errors are {@link WebGpuInferenceError}s, which the CLI reports like the
 * CPU runtime's.
 *
 * @module
 */
import type { OneBitLlmConfig } from "../common/config.ts";
import type { LinearName } from "../common/layer_bit_map.ts";
import type { Tokenizer } from "../common/tokenizer.ts";
import { packTernaryRows } from "../backend/wasm/wasm_kernels.ts";
import { ropeTable, type WebGpuKernels } from "../backend/webgpu/kernels.ts";
import type { ModelWeights, StoredTensor } from "./weights.ts";

/** A model, prompt or setting the WebGPU runtime cannot run, in one line. */
export class WebGpuInferenceError extends Error {
  /** An error saying `message`. */
  constructor(message: string) {
    super(message);
    this.name = "WebGpuInferenceError";
  }
}

const fail = (message: string): never => {
  throw new WebGpuInferenceError(message);
};

/** A block linear on the GPU. */
interface Linear {
  readonly name: string;
  readonly out: number;
  readonly in: number;
  /** Packed 2-bit codes, or f32 `[out, in]` weights. */
  readonly kind: "coded" | "dense";
  /** Whether a dense linear takes the fake-quantized activations (eightbit). */
  readonly quantAct: boolean;
  readonly w: GPUBuffer;
  /** γ of coded weights. */
  readonly scale: number;
}

interface Norm {
  readonly w: GPUBuffer;
  readonly b: GPUBuffer | undefined;
  readonly dim: number;
}

interface Block {
  readonly attnNorm: Norm;
  readonly qNorm?: Norm;
  readonly kNorm?: Norm;
  readonly attnSub?: Norm;
  readonly ffnNorm: Norm;
  readonly ffnSub?: Norm;
  readonly lin: Record<LinearName, Linear | undefined>;
}

/** The GGUF-style name of each bit-map linear. */
const LINEAR_TENSOR: Record<LinearName, string> = {
  "attn.q": "attn_q",
  "attn.k": "attn_k",
  "attn.v": "attn_v",
  "attn.o": "attn_output",
  "mlp.gate": "ffn_gate",
  "mlp.up": "ffn_up",
  "mlp.down": "ffn_down",
};

/** Tokens per forward chunk of a prefill (the scratch is sized for it). */
const CHUNK = 64;

/** Scratch buffers, sized for {@link CHUNK} tokens. */
interface Scratch {
  readonly ids: GPUBuffer;
  readonly x: GPUBuffer;
  readonly h: GPUBuffer;
  readonly h2: GPUBuffer;
  readonly q0: GPUBuffer;
  readonly q1: GPUBuffer;
  readonly q: GPUBuffer;
  readonly k0: GPUBuffer;
  readonly k1: GPUBuffer;
  readonly k: GPUBuffer;
  readonly v: GPUBuffer;
  readonly att: GPUBuffer;
  readonly ga: GPUBuffer;
  readonly up: GPUBuffer;
  readonly act: GPUBuffer;
  readonly act2: GPUBuffer;
  readonly y: GPUBuffer;
  readonly fq: GPUBuffer;
  readonly xq: GPUBuffer;
  readonly stats: GPUBuffer;
  readonly mean: GPUBuffer;
  readonly rstd: GPUBuffer;
  readonly last: GPUBuffer;
  readonly logits: GPUBuffer;
}

/**
 * A model loaded for inference on a WebGPU device. Create with
 * {@link WebGpuInferenceModel.create} on the kernels of a device; release
 * with {@link release} (before the device goes). A model runs one call at a
 * time (its scratch buffers are shared by its sessions).
 */
export class WebGpuInferenceModel {
  /** The architecture. */
  readonly config: OneBitLlmConfig;
  /** The tokenizer of the weights. */
  readonly tokenizer: Tokenizer;
  /** The kernels (and device) the model lives on. */
  readonly kernels: WebGpuKernels;
  readonly #owned = new Set<GPUBuffer>();
  readonly #blocks: Block[] = [];
  readonly #outNorm: Norm;
  readonly #embed: GPUBuffer;
  readonly #head: GPUBuffer;
  readonly #s: Scratch;
  readonly #d: number;
  readonly #hd: number;
  readonly #kv: number;
  readonly #ffn: number;
  readonly #vocab: number;
  readonly #residual: number;
  #rope: GPUBuffer | undefined;
  #ropeLen = 0;
  #busy = false;
  #released = false;

  private constructor(weights: ModelWeights, kernels: WebGpuKernels) {
    const c = weights.config;
    this.config = c;
    this.tokenizer = weights.tokenizer;
    this.kernels = kernels;
    const d = c.hidden_size, H = c.num_heads, Hkv = c.num_kv_heads;
    const hd = d / H;
    if (!Number.isInteger(hd) || H % Hkv !== 0) {
      fail(
        `hidden_size ${d}, num_heads ${H}, num_kv_heads ${Hkv} do not divide`,
      );
    }
    if (hd > 256) fail(`WebGPU attention needs head_dim ≤ 256, got ${hd}`);
    this.#d = d;
    this.#hd = hd;
    this.#kv = Hkv * hd;
    this.#ffn = c.intermediate_size;
    this.#vocab = c.vocab_size;
    this.#residual = c.use_residual_scaling
      ? 1 / Math.sqrt(2 * c.num_layers)
      : 1;
    if (weights.tokenizer.vocabSize > c.vocab_size) {
      fail(
        `the tokenizer has ${weights.tokenizer.vocabSize} tokens but the model's vocab_size is ${c.vocab_size}`,
      );
    }
    const used = new Set<string>();
    const get = (name: string): StoredTensor => {
      const t = weights.tensors.get(name);
      if (t === undefined) fail(`missing tensor ${name}`);
      used.add(name);
      return t!;
    };
    const dense = (name: string, n: number): Float32Array => {
      const t = get(name);
      if (t.kind !== "dense" || t.data.length !== n) {
        fail(`${name}: expected ${n} dense values`);
      }
      return (t as { data: Float32Array }).data;
    };
    const norm = (base: string, dim: number): Norm => ({
      w: this.#upload(dense(`${base}.weight`, dim)),
      b: c.norm_type === "layer_norm"
        ? this.#upload(dense(`${base}.bias`, dim))
        : undefined,
      dim,
    });
    const matrix = (name: string, rows: number, cols: number): Float32Array =>
      dequantize(name, get(name), rows, cols);
    this.#embed = this.#upload(matrix("token_embd.weight", c.vocab_size, d));
    this.#head = c.tie_embeddings
      ? this.#embed
      : this.#upload(matrix("output.weight", c.vocab_size, d));
    const shapes: Record<LinearName, [number, number]> = {
      "attn.q": [d, d],
      "attn.k": [this.#kv, d],
      "attn.v": [this.#kv, d],
      "attn.o": [d, d],
      "mlp.gate": [this.#ffn, d],
      "mlp.up": [this.#ffn, d],
      "mlp.down": [d, this.#ffn],
    };
    for (let l = 0; l < c.num_layers; l++) {
      const blk = `blk.${l}`;
      const lin = {} as Record<LinearName, Linear | undefined>;
      for (const name of Object.keys(LINEAR_TENSOR) as LinearName[]) {
        if (name === "mlp.gate" && !c.use_swiglu) continue;
        const tensor = `${blk}.${LINEAR_TENSOR[name]}.weight`;
        const [out, inF] = shapes[name];
        lin[name] = this.#linear(tensor, get(tensor), out, inF);
      }
      this.#blocks.push({
        attnNorm: norm(`${blk}.attn_norm`, d),
        qNorm: c.use_qk_norm ? norm(`${blk}.attn_q_norm`, hd) : undefined,
        kNorm: c.use_qk_norm ? norm(`${blk}.attn_k_norm`, hd) : undefined,
        attnSub: c.use_subln ? norm(`${blk}.attn_sub_norm`, d) : undefined,
        ffnNorm: norm(`${blk}.ffn_norm`, d),
        ffnSub: c.use_subln
          ? norm(`${blk}.ffn_sub_norm`, this.#ffn)
          : undefined,
        lin,
      });
    }
    this.#outNorm = norm("output_norm", d);
    for (const name of weights.tensors.keys()) {
      if (!used.has(name)) {
        fail(`tensor ${name} is not part of this model's config`);
      }
    }
    const wide = Math.max(d, this.#ffn);
    const f = (n: number) => this.#buffer(4 * CHUNK * n);
    this.#s = {
      ids: f(1),
      x: f(d),
      h: f(d),
      h2: f(d),
      q0: f(d),
      q1: f(d),
      q: f(d),
      k0: f(this.#kv),
      k1: f(this.#kv),
      k: f(this.#kv),
      v: f(this.#kv),
      att: f(d),
      ga: f(this.#ffn),
      up: f(this.#ffn),
      act: f(this.#ffn),
      act2: f(this.#ffn),
      y: f(d),
      fq: f(wide),
      xq: this.#buffer(CHUNK * (Math.ceil(wide / 64) * 64)),
      stats: f(2),
      mean: f(Math.max(H, 1)),
      rstd: f(Math.max(H, 1)),
      last: this.#buffer(4 * d),
      logits: f(this.#vocab),
    };
    this.#ensureRope(c.max_seq_len);
  }

  /**
   * Loads `weights` onto the device of `kernels`: coded linears packed to 2
   * bits, everything else as f32.
   *
   * @throws {WebGpuInferenceError} naming a tensor that is missing, extra or
   * does not fit the config.
   */
  static create(
    weights: ModelWeights,
    kernels: WebGpuKernels,
  ): WebGpuInferenceModel {
    const model = new WebGpuInferenceModel(weights, kernels);
    return model;
  }

  /**
   * A generation session with its own KV cache of `contextLength` tokens
   * (default `max_seq_len`), allocated now on the GPU. With `slidingWindow`, a
   * full cache drops its oldest token for each new one; without, it refuses more.
   */
  session(
    options: {
      readonly contextLength?: number;
      readonly slidingWindow?: boolean;
    } = {},
  ): WebGpuSession {
    this.#live();
    const ctx = options.contextLength ?? this.config.max_seq_len;
    if (!Number.isInteger(ctx) || ctx < 1) {
      fail(`contextLength must be a positive integer, got ${ctx}`);
    }
    const bytes = 4 * ctx * this.#kv;
    const L = this.config.num_layers;
    const k = Array.from({ length: L }, () => this.#buffer(bytes));
    const v = Array.from({ length: L }, () => this.#buffer(bytes));
    return new WebGpuSession(this, ctx, options.slidingWindow ?? false, {
      forward: (ids, place, rows) => this.#forward(ids, place, rows),
      release: () => {
        for (const b of [...k, ...v]) this.#drop(b);
      },
      k,
      v,
    });
  }

  /** Frees every buffer of the model and its sessions. */
  release(): void {
    for (const b of this.#owned) this.kernels.pool.release(b);
    this.#owned.clear();
    this.#released = true;
  }

  #live(): void {
    if (this.#released) fail("the model was released");
  }

  #buffer(bytes: number): GPUBuffer {
    const b = this.kernels.pool.acquire(Math.max(bytes, 4));
    this.#owned.add(b);
    return b;
  }

  #drop(b: GPUBuffer): void {
    if (this.#owned.delete(b)) this.kernels.pool.release(b);
  }

  #upload(data: Float32Array): GPUBuffer {
    const b = this.#buffer(data.byteLength);
    this.kernels.device.queue.writeBuffer(
      b,
      0,
      data as Float32Array<ArrayBuffer>,
    );
    return b;
  }

  #linear(name: string, t: StoredTensor, out: number, inF: number): Linear {
    if (t.kind === "ternary" || t.kind === "binary") {
      if (t.rows !== out || t.cols !== inF || t.codes.length !== out * inF) {
        fail(
          `${name}: shape [${t.rows},${t.cols}] does not match [${out},${inF}]`,
        );
      }
      if (!Number.isFinite(t.scale)) fail(`${name}: scale is ${t.scale}`);
      let packed: Uint8Array;
      try {
        packed = packTernaryRows(t.codes, out, inF);
      } catch (e) {
        return fail(`${name}: ${e instanceof Error ? e.message : e}`);
      }
      const b = this.#buffer(packed.length);
      this.kernels.device.queue.writeBuffer(
        b,
        0,
        packed as Uint8Array<ArrayBuffer>,
      );
      return {
        name,
        out,
        in: inF,
        kind: "coded",
        quantAct: true,
        w: b,
        scale: t.scale,
      };
    }
    return {
      name,
      out,
      in: inF,
      kind: "dense",
      quantAct: t.kind === "int8",
      w: this.#upload(dequantize(name, t, out, inF)),
      scale: 1,
    };
  }

  /** RoPE tables covering positions `[0, len)` (doubled when outgrown). */
  #ensureRope(len: number): void {
    if (!this.config.use_rope || len <= this.#ropeLen) return;
    const n = Math.max(len, 2 * this.#ropeLen);
    if (this.#rope !== undefined) this.#drop(this.#rope);
    this.#rope = this.#upload(ropeTable(n, this.#hd, this.config.rope_theta));
    this.#ropeLen = n;
  }

  /**
   * One chunk of one session: `ids` at absolute positions `pos0 …` into cache
   * rows `slot0 …`; resolves with the logits of the last `logitsRows` tokens.
   */
  async #forward(
    ids: ArrayLike<number>,
    place: GpuKvPlace,
    logitsRows: number,
  ): Promise<Float32Array> {
    this.#live();
    if (this.#busy) fail("the model is running another call (one at a time)");
    const T = ids.length, V = this.#vocab;
    const idv = new Uint32Array(T);
    for (let i = 0; i < T; i++) {
      const id = ids[i];
      if (!(Number.isInteger(id) && id >= 0 && id < V)) {
        fail(`token id ${id} (at ${i}) is not in [0, ${V})`);
      }
      idv[i] = id;
    }
    this.#busy = true;
    try {
      this.#ensureRope(place.pos0 + T);
      const k = this.kernels, s = this.#s, d = this.#d;
      const device = k.device;
      device.queue.writeBuffer(s.ids, 0, idv);
      const e = device.createCommandEncoder();
      k.embeddingForward(e, {
        table: this.#embed,
        ids: s.ids,
        out: s.x,
        tokens: T,
        dim: d,
        vocab: V,
      });
      for (let l = 0; l < this.#blocks.length; l++) {
        this.#block(e, this.#blocks[l], T, place, place.k[l], place.v[l]);
      }
      let h = s.h, rows = T;
      if (logitsRows === 1 && T > 1) {
        e.copyBufferToBuffer(s.x, 4 * (T - 1) * d, s.last, 0, 4 * d);
        this.#norm(e, this.#outNorm, s.last, s.h, 1);
        rows = 1;
      } else {
        this.#norm(e, this.#outNorm, s.x, s.h, T);
        h = s.h;
      }
      k.denseLinear(e, {
        x: h,
        w: this.#head,
        out: s.logits,
        rows,
        n: V,
        k: d,
      });
      const [logits] = await k.pool.readBack(e, [{
        buffer: s.logits,
        length: rows * V,
      }]);
      for (let i = 0; i < logits.length; i++) {
        if (!Number.isFinite(logits[i])) {
          fail(
            "non-finite logits (the weights hold NaN/Infinity or the values overflowed)",
          );
        }
      }
      return logits;
    } finally {
      this.#busy = false;
    }
  }

  /** One block for `T` tokens; the residual stream is in `x`. */
  #block(
    e: GPUCommandEncoder,
    b: Block,
    T: number,
    place: GpuKvPlace,
    kCache: GPUBuffer,
    vCache: GPUBuffer,
  ): void {
    const k = this.kernels, s = this.#s, c = this.config, d = this.#d;
    const H = c.num_heads, Hkv = c.num_kv_heads, hd = this.#hd;
    const lin = b.lin;
    this.#norm(e, b.attnNorm, s.x, s.h, T);
    this.#prepare(e, s.h, T, d, [
      lin["attn.q"]!,
      lin["attn.k"]!,
      lin["attn.v"]!,
    ]);
    this.#apply(e, lin["attn.q"]!, s.h, T, s.q0);
    this.#apply(e, lin["attn.k"]!, s.h, T, s.k0);
    this.#apply(e, lin["attn.v"]!, s.h, T, s.v);
    let q = s.q0, kr = s.k0;
    if (b.qNorm !== undefined) {
      this.#norm(e, b.qNorm, s.q0, s.q1, T * H);
      q = s.q1;
    }
    if (b.kNorm !== undefined) {
      this.#norm(e, b.kNorm, s.k0, s.k1, T * Hkv);
      kr = s.k1;
    }
    if (c.use_rope) {
      const rope = {
        table: this.#rope!,
        tokens: T,
        headDim: hd,
        rotaryDim: hd,
        seqLen: T,
        maxPositions: this.#ropeLen,
        style: c.rope_style === "neox"
          ? "neox" as const
          : "interleaved" as const,
        posOffset: place.pos0,
      };
      k.rope(e, { ...rope, x: q, out: s.q, heads: H });
      k.rope(e, { ...rope, x: kr, out: s.k, heads: Hkv });
      q = s.q;
      kr = s.k;
    }
    const shape = { tokens: T, kvHeads: Hkv, headDim: hd, ctx: place.ctx };
    k.kvStore(e, { ...shape, src: kr, cache: kCache, slot0: place.slot0 });
    k.kvStore(e, { ...shape, src: s.v, cache: vCache, slot0: place.slot0 });
    k.kvAttention(e, {
      ...shape,
      heads: H,
      q,
      k: kCache,
      v: vCache,
      out: s.att,
      pos0: place.pos0,
    });
    let a = s.att;
    if (b.attnSub !== undefined) {
      this.#norm(e, b.attnSub, s.att, s.h2, T);
      a = s.h2;
    }
    this.#prepare(e, a, T, d, [lin["attn.o"]!]);
    this.#apply(e, lin["attn.o"]!, a, T, s.y);
    k.axpy(e, { x: s.y, y: s.x, alpha: this.#residual, n: T * d });
    // Feed-forward.
    const ffn = this.#ffn;
    this.#norm(e, b.ffnNorm, s.x, s.h, T);
    const up = lin["mlp.up"]!, gate = lin["mlp.gate"];
    if (gate !== undefined) {
      this.#prepare(e, s.h, T, d, [gate, up]);
      this.#apply(e, gate, s.h, T, s.ga);
      this.#apply(e, up, s.h, T, s.up);
      k.swigluForward(e, { gate: s.ga, up: s.up, out: s.act, n: T * ffn });
    } else {
      this.#prepare(e, s.h, T, d, [up]);
      this.#apply(e, up, s.h, T, s.up);
      if (c.use_relu2) k.relu2Forward(e, { x: s.up, out: s.act, n: T * ffn });
      else k.siluForward(e, { x: s.up, out: s.act, n: T * ffn });
    }
    let f = s.act;
    if (b.ffnSub !== undefined) {
      this.#norm(e, b.ffnSub, s.act, s.act2, T);
      f = s.act2;
    }
    this.#prepare(e, f, T, ffn, [lin["mlp.down"]!]);
    this.#apply(e, lin["mlp.down"]!, f, T, s.y);
    k.axpy(e, { x: s.y, y: s.x, alpha: this.#residual, n: T * d });
  }

  /** Quantizes `x` as its consumers need: int8 codes for coded ones, `q / s` for eightbit ones. */
  #prepare(
    e: GPUCommandEncoder,
    x: GPUBuffer,
    rows: number,
    cols: number,
    consumers: readonly Linear[],
  ): void {
    const s = this.#s;
    if (consumers.some((L) => L.kind === "coded")) {
      this.kernels.quantizeActivations(e, {
        x,
        q: s.xq,
        stats: s.stats,
        rows,
        cols,
      });
    }
    if (consumers.some((L) => L.kind === "dense" && L.quantAct)) {
      this.kernels.activationFakeQuant(e, {
        x,
        out: s.fq,
        rows,
        dim: cols,
        lambda: 1,
      });
    }
  }

  #apply(
    e: GPUCommandEncoder,
    L: Linear,
    x: GPUBuffer,
    rows: number,
    out: GPUBuffer,
  ): void {
    if (L.kind === "coded") {
      this.kernels.ternaryLinear(e, {
        q: this.#s.xq,
        stats: this.#s.stats,
        w: L.w,
        out,
        rows,
        n: L.out,
        k: L.in,
        scale: L.scale,
      });
      return;
    }
    this.kernels.denseLinear(e, {
      x: L.quantAct ? this.#s.fq : x,
      w: L.w,
      out,
      rows,
      n: L.out,
      k: L.in,
    });
  }

  /** A norm of `rows` rows of its width from `x` into `out` (distinct buffers). */
  #norm(
    e: GPUCommandEncoder,
    n: Norm,
    x: GPUBuffer,
    out: GPUBuffer,
    rows: number,
  ): void {
    const eps = this.config.layer_norm_eps, s = this.#s;
    if (n.b === undefined) {
      this.kernels.rmsNormForward(e, {
        x,
        weight: n.w,
        out,
        invRms: s.rstd,
        rows,
        dim: n.dim,
        eps,
      });
      return;
    }
    this.kernels.layerNormForward(e, {
      x,
      weight: n.w,
      bias: n.b,
      out,
      mean: s.mean,
      rstd: s.rstd,
      rows,
      dim: n.dim,
      eps,
    });
  }
}

/** Where one session call reads and writes its cache (internal). */
export interface GpuKvPlace {
  /** Per layer: the head-major key cache `[Hkv, ctx, D]`. */
  readonly k: readonly GPUBuffer[];
  /** Per layer: the head-major value cache. */
  readonly v: readonly GPUBuffer[];
  /** Rows per kv head (the context length). */
  readonly ctx: number;
  /** Absolute position of the first new token. */
  readonly pos0: number;
  /** Cache row of the first new token. */
  readonly slot0: number;
}

/** What a {@link WebGpuSession} needs of its model (internal to the runtime). */
export interface GpuSessionHost {
  /** Runs one chunk, resolving with the logits of its last `rows` tokens. */
  forward(
    ids: ArrayLike<number>,
    place: GpuKvPlace,
    rows: number,
  ): Promise<Float32Array>;
  /** Frees the cache. */
  release(): void;
  /** The key caches, per layer. */
  readonly k: readonly GPUBuffer[];
  /** The value caches, per layer. */
  readonly v: readonly GPUBuffer[];
}

/**
 * One generation context of a {@link WebGpuInferenceModel}, with the API of
 * the CPU's `KvSession` except that {@link prefill} and {@link decode}
 * resolve asynchronously (the logits are read back from the GPU). The
 * returned logits are fresh arrays.
 */
export class WebGpuSession {
  /** The model. */
  readonly model: WebGpuInferenceModel;
  /** Tokens the cache holds at most. */
  readonly contextLength: number;
  /** Whether a full cache drops its oldest token (else it refuses more). */
  readonly slidingWindow: boolean;
  readonly #host: GpuSessionHost;
  #pos = 0;
  #released = false;

  /** Use {@link WebGpuInferenceModel.session}. */
  constructor(
    model: WebGpuInferenceModel,
    contextLength: number,
    slidingWindow: boolean,
    host: GpuSessionHost,
  ) {
    this.model = model;
    this.contextLength = contextLength;
    this.slidingWindow = slidingWindow;
    this.#host = host;
  }

  /** Tokens seen so far (the absolute position of the next token). */
  get position(): number {
    return this.#pos;
  }

  /** Tokens the cache holds now. */
  get length(): number {
    return Math.min(this.#pos, this.contextLength);
  }

  /** Forgets every token (the cache is reused). */
  reset(): void {
    this.#pos = 0;
  }

  /**
   * Runs `ids` after the tokens already seen and resolves with the logits of
   * the last one (or, with `allLogits`, of every one: `[ids.length, vocab]`).
   * Batched in chunks of up to 64 tokens while the cache has room; past a
   * full cache (sliding window only) one token at a time.
   */
  async prefill(
    ids: ArrayLike<number>,
    options: { readonly allLogits?: boolean } = {},
  ): Promise<Float32Array> {
    this.#live();
    const n = ids.length;
    if (n === 0) fail("prefill: no tokens");
    const ctx = this.contextLength;
    if (!this.slidingWindow && this.#pos + n > ctx) {
      fail(
        `${n} tokens after ${this.#pos} already in context exceed the context length ${ctx}` +
          " (shorten the prompt, or use a sliding window)",
      );
    }
    const V = this.model.config.vocab_size;
    const all = options.allLogits ? new Float32Array(n * V) : undefined;
    let last: Float32Array = new Float32Array(0);
    let i = 0;
    while (i < n) {
      const room = this.#pos < ctx ? ctx - this.#pos : 1;
      const m = Math.min(n - i, room, CHUNK);
      const part = Array.from({ length: m }, (_, j) => ids[i + j]);
      last = await this.#step(part, all !== undefined ? m : 1);
      all?.set(last, i * V);
      i += m;
    }
    return all ?? last;
  }

  /** Appends one token and resolves with its logits. */
  async decode(id: number): Promise<Float32Array> {
    this.#live();
    if (!this.slidingWindow && this.#pos >= this.contextLength) {
      fail(`the context is full (${this.contextLength} tokens)`);
    }
    return await this.#step([id], 1);
  }

  /** Frees the cache. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#host.release();
  }

  #live(): void {
    if (this.#released) fail("the session was released");
  }

  async #step(ids: ArrayLike<number>, rows: number): Promise<Float32Array> {
    const logits = await this.#host.forward(ids, {
      k: this.#host.k,
      v: this.#host.v,
      ctx: this.contextLength,
      pos0: this.#pos,
      slot0: this.#pos % this.contextLength,
    }, rows);
    this.#pos += ids.length;
    return logits;
  }
}

/** The f32 values of a stored `rows × cols` matrix (codes times their scales). */
function dequantize(
  name: string,
  t: StoredTensor,
  rows: number,
  cols: number,
): Float32Array {
  const n = rows * cols;
  switch (t.kind) {
    case "dense":
      if (t.data.length !== n) {
        fail(`${name}: ${t.data.length} values, expected ${n}`);
      }
      return t.data;
    case "ternary":
    case "binary": {
      if (t.codes.length !== n) {
        fail(`${name}: ${t.codes.length} codes, expected ${n}`);
      }
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = t.codes[i] * t.scale;
      return out;
    }
    case "int8": {
      if (t.codes.length !== n || t.scales.length !== rows) {
        fail(
          `${name}: ${t.codes.length} codes and ${t.scales.length} scales, expected ${n} and ${rows}`,
        );
      }
      const out = new Float32Array(n);
      for (let r = 0, o = 0; r < rows; r++, o += cols) {
        const s = t.scales[r];
        for (let i = o; i < o + cols; i++) out[i] = t.codes[i] * s;
      }
      return out;
    }
  }
}
