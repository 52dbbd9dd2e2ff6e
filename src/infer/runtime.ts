/**
 * The CPU inference runtime: a {@link ModelWeights} loaded once into the WASM
 * kernels' memory and run forward without an autograd tape.
 *
 * Each block linear runs by its stored form:
 * - ternary and binary codes: packed to 2 bits once at load, then the int8 ×
 *   ternary kernel (`ternaryMatmul`, one token: the decode matvec) on the
 *   per-token int8 activations, `y = Σ q·c · γ / s`;
 * - int8 codes (`eightbit`): laid out once as padded int8 rows, then the
 *   int8 × int8 kernel (`int8Matmul`) on the same per-token int8
 *   activations, `y = Σ q·c · scale_row / s`;
 * - dense (`f16`, and every tensor of a λ = 0 run): f32 on unquantized
 *   activations.
 * Activations are quantized exactly as the training model quantizes them
 * (`act_quant`, f64 rounding), and the int8 codes are read back from those
 * values, so the runtime computes the same function as `OneBitLlm.logits` at
 * λ = 1 up to float rounding of the sums. The embedding and the LM head are
 * dequantized to f32 once; the head sees unquantized activations, as in
 * training. When every head value is an f16 value (an f16-mode head, as the
 * GGUF export stores it), a one-row head runs the f16 matvec on an f16 copy:
 * the same sums bit for bit from half the bytes.
 *
 * Attention runs over a key/value store per sequence. Scoring
 * ({@link InferenceModel.nll}, {@link InferenceModel.logits}) attends whole
 * sequences in blocks of queries, as training does. A {@link KvSession} keeps
 * a cache preallocated to its context length (a ring when it slides), keys
 * head-major and values transposed, and attends one query at a time with two
 * matvecs per head; its prefill and decode agree bit for bit, and with scoring
 * to float rounding.
 *
 * On kernels with several threads (`WasmKernels.create({ threads })`), a
 * batched forward splits its kernels across them — the linears and the head
 * by tokens, quantization, norms, activations and the loss by rows,
 * attention by (sequence, head) — each part computed exactly as on one
 * thread, so scores are the same bits for any thread count; a decode step's
 * single token stays on the calling thread.
 *
 * A model runs one call at a time (its scratch buffers are shared by its
 * sessions and its evaluation).
 *
 * @module
 */
import { headDim, type OneBitLlmConfig } from "../common/config.ts";
import type { LayerBitMap, LinearName } from "../common/layer_bit_map.ts";
import type { QuantMode } from "../common/quant_mode.ts";
import type { Tokenizer } from "../common/tokenizer.ts";
import { modelTensors, type TensorSpec } from "../core/tensors.ts";
import { f16BitsToF32Array, f32ArrayToF16Bits } from "../backend/f16.ts";
import {
  packInt8Rows,
  packTernaryRows,
  ternaryPaddedCols,
  type TrainingKernels,
  WasmKernels,
} from "../backend/wasm/wasm_kernels.ts";
import { tensorMode } from "./from_latents.ts";
import { InferenceError } from "./errors.ts";
import type { ModelWeights, StoredTensor } from "./weights.ts";

/** Options of {@link InferenceModel.create}. */
export interface InferenceModelOptions {
  /**
   * Kernels (and memory) to load into; by default the model creates its own.
   * Several models may share one instance; each frees only what it allocated.
   */
  readonly kernels?: WasmKernels;
}

/** Milliseconds per part of the forward pass (see {@link InferenceModel.profile}). */
export interface RuntimeProfile {
  /** The block linears' kernels (int8 × ternary, f32 matmuls). */
  linears: number;
  /** Quantizing their inputs to int8 per token. */
  quantize: number;
  /** Attention over the keys and values (scores, softmax, value product). */
  attention: number;
  /** The LM head's product (the softmax cross-entropy of scoring not included). */
  head: number;
  /** The softmax cross-entropy of scoring ({@link InferenceModel.nll}). */
  loss: number;
}

/** A block linear as the runtime runs it. */
interface Linear {
  /** Tensor name (`blk.0.attn_q.weight`). */
  readonly name: string;
  /** Output features. */
  readonly out: number;
  /** Input features. */
  readonly in: number;
  /**
   * Packed 2-bit codes (`"coded"`), padded int8 rows with a scale per row
   * (`"int8"`) or f32 `[out, in]` weights (`"float"`).
   */
  readonly kind: "coded" | "int8" | "float";
  /** Whether the input is int8-quantized per token first. */
  readonly quantAct: boolean;
  /** Where the weights are. */
  readonly ptr: number;
  /** γ of coded weights (1 for the others). */
  readonly scale: number;
  /** Where the per-row scales of int8 weights are (0 for the others). */
  readonly scales: number;
}

/** A norm: its weight, its bias (LayerNorm; 0 for RMSNorm) and width. */
interface Norm {
  readonly w: number;
  readonly b: number;
  readonly dim: number;
  /** Host copies for the LayerNorm loop (empty for RMSNorm). */
  readonly wv: Float32Array;
  readonly bv: Float32Array;
}

/** The linears of one block, by bit-map name. */
type BlockLinears = Record<LinearName, Linear | undefined>;

interface Block {
  readonly attnNorm: Norm;
  readonly qNorm?: Norm;
  readonly kNorm?: Norm;
  readonly attnSub?: Norm;
  readonly ffnNorm: Norm;
  readonly ffnSub?: Norm;
  readonly lin: BlockLinears;
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

/** The stored kind each mode must have. */
const KIND_OF_MODE: Record<QuantMode, StoredTensor["kind"]> = {
  f16: "dense",
  eightbit: "int8",
  ternary: "ternary",
  binary: "binary",
};

/** The mode a stored kind stands for. */
const MODE_OF_KIND: Record<StoredTensor["kind"], QuantMode> = {
  dense: "f16",
  int8: "eightbit",
  ternary: "ternary",
  binary: "binary",
};

/**
 * Logits held at once when scoring: 2M floats (8 MB), so that the head's
 * matmul packs its `[vocab, d]` weights once per few hundred rows.
 */
const LOGITS_FLOATS = 1 << 21;
/** Rows of logits a session's prefill returns per chunk (`allLogits`). */
const PREFILL_LOGIT_ROWS = 64;

/** Where one forward call reads and writes keys and values. */
export interface KvPlace {
  /**
   * Per layer: sequence 0's keys, stored as rows (`[ctx, Hkv·D]`, scoring)
   * or head-major (`[Hkv, ctx, D]`, sessions).
   */
  readonly k: ReadonlyArray<number>;
  /**
   * Per layer: sequence 0's values, stored as rows (`[ctx, Hkv·D]`, scoring)
   * or transposed (`[Hkv·D, ctx]`, sessions).
   */
  readonly v: ReadonlyArray<number>;
  /**
   * `"rows"`: whole sequences from position 0 (scoring), attended in blocks
   * of queries; `"session"`: new tokens after a cache, one query at a time.
   */
  readonly kind: "rows" | "session";
  /** Rows in one sequence's store (its context length). */
  readonly ctx: number;
  /** Bytes from one sequence's store to the next. */
  readonly seqStride: number;
  /** Absolute position of the first new token. */
  readonly pos0: number;
  /** Store row of the first new token (new rows are contiguous). */
  readonly slot0: number;
}

/**
 * A model loaded for inference on the CPU. Create with
 * {@link InferenceModel.create}; release with {@link release}.
 */
export class InferenceModel {
  /** The architecture. */
  readonly config: OneBitLlmConfig;
  /** The tokenizer of the weights. */
  readonly tokenizer: Tokenizer;
  /** The kernels (and memory) the model lives in. */
  readonly kernels: WasmKernels;
  readonly #t: TrainingKernels;
  readonly #allocs: Set<number>;
  #bitMap: LayerBitMap;
  readonly #blocks: Block[];
  readonly #outNorm: Norm;
  /** Dequantized embedding table `[vocab, d]`. */
  readonly #embed: number;
  /** LM head `[vocab, d]` (the embedding's pointer when tied). */
  readonly #head: number;
  /** The head's f16 bits `[vocab, d]` when its values are all f16 values, else 0. */
  readonly #headF16: number;
  readonly #d: number;
  readonly #hd: number;
  readonly #kv: number;
  readonly #ffn: number;
  readonly #vocab: number;
  readonly #residual: number;
  readonly #attnScale: number;
  // Scratch, sized for #rows tokens (grown on demand).
  #rows = 0;
  #x = 0;
  #h = 0;
  #q0 = 0;
  #q = 0;
  #k0 = 0;
  #att = 0;
  #ga = 0;
  #up = 0;
  #y = 0;
  #fq = 0;
  #i8 = 0;
  #invs = 0;
  #sums = 0;
  #rstd = 0;
  #ids = 0;
  #idsView: Int32Array<ArrayBufferLike> = new Int32Array(0);
  #ropeScratch = 0;
  // Scores, sized for #sRows × #sCols.
  #s = 0;
  #sSize = 0;
  // KV stores of a batched forward (evaluation), sized for #rows.
  #kBuf = 0;
  #vBuf = 0;
  // Logits of #headRows rows at a time (also the decode row).
  #logits = 0;
  #logitsView: Float32Array<ArrayBufferLike> = new Float32Array(0);
  // RoPE tables [#ropeLen, hd].
  #ropeLen = 0;
  #cos = 0;
  #sin = 0;
  readonly #stats: number;
  // Targets (i32) and per-row losses (f64) of a head chunk when scoring.
  #targets = 0;
  #losses = 0;
  #prof: RuntimeProfile | undefined;
  #headChunk = 0;
  #released = false;
  #memView: Float32Array<ArrayBufferLike> = new Float32Array(0);
  #v0 = 0;
  #k1 = 0;

  private constructor(
    weights: ModelWeights,
    kernels: WasmKernels,
    allocs: Set<number>,
  ) {
    const c = weights.config;
    this.config = c;
    this.tokenizer = weights.tokenizer;
    this.kernels = kernels;
    this.#t = kernels.training;
    this.#allocs = allocs;
    this.#bitMap = weights.bitMap;
    this.#d = c.hidden_size;
    this.#hd = headDim(c);
    this.#kv = c.num_kv_heads * this.#hd;
    this.#ffn = c.intermediate_size;
    this.#vocab = c.vocab_size;
    this.#residual = c.use_residual_scaling
      ? 1 / Math.sqrt(2 * c.num_layers)
      : 1;
    this.#attnScale = 1 / Math.sqrt(this.#hd);
    this.#stats = this.#alloc(24);
    if (weights.tokenizer.vocabSize > c.vocab_size) {
      throw new InferenceError({
        message:
          `the tokenizer has ${weights.tokenizer.vocabSize} tokens but the model's vocab_size is ${c.vocab_size}`,
      });
    }

    const specs = new Map(modelTensors(c).map((s) => [s.name, s]));
    for (const name of weights.tensors.keys()) {
      if (!specs.has(name)) {
        throw new InferenceError({
          message: `tensor ${name} is not part of this model's config`,
        });
      }
    }
    const get = (name: string): [TensorSpec, StoredTensor] => {
      const spec = specs.get(name)!;
      const t = weights.tensors.get(name);
      if (t === undefined) {
        throw new InferenceError({ message: `missing tensor ${name}` });
      }
      checkTensor(spec, t, tensorMode(spec, weights.bitMap));
      return [spec, t];
    };
    const norm = (base: string): Norm => {
      const w = get(`${base}.weight`)[1] as { data: Float32Array };
      const layer = c.norm_type === "layer_norm";
      const b = layer
        ? (get(`${base}.bias`)[1] as { data: Float32Array }).data
        : new Float32Array(0);
      return {
        w: this.#upload(w.data),
        b: layer ? this.#upload(b) : 0,
        dim: w.data.length,
        wv: layer ? w.data : new Float32Array(0),
        bv: b,
      };
    };
    this.#embed = this.#upload(dequantize(get("token_embd.weight")[1]));
    const head = c.tie_embeddings
      ? get("token_embd.weight")[1]
      : get("output.weight")[1];
    this.#head = c.tie_embeddings
      ? this.#embed
      : this.#upload(dequantize(head));
    const headBits = head.kind === "dense"
      ? exactF16Bits(head.data)
      : undefined;
    this.#headF16 = headBits === undefined ? 0 : this.#uploadBytes(headBits);
    this.#blocks = [];
    for (let l = 0; l < c.num_layers; l++) {
      const blk = `blk.${l}`;
      const lin = {} as BlockLinears;
      for (const name of Object.keys(LINEAR_TENSOR) as LinearName[]) {
        if (name === "mlp.gate" && !c.use_swiglu) continue;
        const [spec, t] = get(`${blk}.${LINEAR_TENSOR[name]}.weight`);
        lin[name] = this.#load(spec, t);
      }
      this.#blocks.push({
        attnNorm: norm(`${blk}.attn_norm`),
        qNorm: c.use_qk_norm ? norm(`${blk}.attn_q_norm`) : undefined,
        kNorm: c.use_qk_norm ? norm(`${blk}.attn_k_norm`) : undefined,
        attnSub: c.use_subln ? norm(`${blk}.attn_sub_norm`) : undefined,
        ffnNorm: norm(`${blk}.ffn_norm`),
        ffnSub: c.use_subln ? norm(`${blk}.ffn_sub_norm`) : undefined,
        lin,
      });
    }
    this.#outNorm = norm("output_norm");
    this.#ensureRope(c.max_seq_len);
    this.#headChunk = Math.max(
      PREFILL_LOGIT_ROWS,
      Math.floor(LOGITS_FLOATS / this.#vocab),
    );
    this.#logits = this.#alloc(4 * this.#headChunk * this.#vocab);
    this.#targets = this.#alloc(4 * this.#headChunk);
    this.#losses = this.#alloc(8 * this.#headChunk);
    this.#logitsView = kernels.f32(
      this.#logits,
      this.#headChunk * this.#vocab,
    );
    this.#ensureRows(1);
  }

  /**
   * Loads `weights` (checked against their config and bit map: every tensor
   * present, shaped and stored as its mode says) into WASM memory.
   *
   * @throws {InferenceError} naming the tensor that does not fit.
   */
  static async create(
    weights: ModelWeights,
    options: InferenceModelOptions = {},
  ): Promise<InferenceModel> {
    const kernels = options.kernels ??
      await WasmKernels.create({ sharedMemory: true });
    if (!(kernels.memory.buffer instanceof SharedArrayBuffer)) {
      throw new InferenceError({
        message:
          "InferenceModel needs kernels with shared (growable) memory: WasmKernels.create({ sharedMemory: true })",
      });
    }
    const allocs = new Set<number>();
    try {
      return new InferenceModel(weights, kernels, allocs);
    } catch (e) {
      for (const p of allocs) kernels.free(p);
      throw e;
    }
  }

  /**
   * Milliseconds spent per part of the forward pass since profiling was
   * switched on with {@link profile} (undefined while it is off).
   */
  get profileTimes(): RuntimeProfile | undefined {
    return this.#prof === undefined ? undefined : { ...this.#prof };
  }

  /**
   * Switches timing of the forward's parts on (from zero) or off. Timing
   * costs a clock read around each kernel call: for benchmarks, not for use.
   */
  profile(on: boolean): void {
    this.#prof = on
      ? { linears: 0, quantize: 0, attention: 0, head: 0, loss: 0 }
      : undefined;
  }

  /** Runs `part` of the forward, adding its time to the profile when profiling. */
  #timed(part: keyof RuntimeProfile, run: () => void): void {
    const p = this.#prof;
    if (p === undefined) return run();
    const t0 = performance.now();
    run();
    p[part] += performance.now() - t0;
  }

  /** The bit map of the weights now loaded (after any {@link setTensor}). */
  get bitMap(): LayerBitMap {
    return this.#bitMap;
  }

  /** Bytes of WASM memory this model holds (weights, scratch, not sessions). */
  get allocatedBytes(): number {
    return this.kernels.allocatedBytes;
  }

  /**
   * Replaces one block linear (`blk.N.<linear>.weight`) by `tensor`, stored
   * in any mode: the bit map gets the matching override. For searches that
   * try one linear at a time without reloading the rest.
   *
   * @throws {InferenceError} if `name` is not a block linear of the model or
   * the tensor's shape does not fit.
   */
  setTensor(name: string, tensor: StoredTensor): void {
    this.#live();
    const m = /^blk\.(\d+)\.([a-z_]+)\.weight$/.exec(name);
    const linear = m === null
      ? undefined
      : (Object.keys(LINEAR_TENSOR) as LinearName[]).find((k) =>
        LINEAR_TENSOR[k] === m[2]
      );
    const layer = m === null ? -1 : Number(m[1]);
    const block = this.#blocks[layer];
    const old = linear === undefined ? undefined : block?.lin[linear];
    if (linear === undefined || old === undefined) {
      throw new InferenceError({
        message: `setTensor: ${name} is not a block linear of this model`,
      });
    }
    const spec = modelTensors(this.config).find((s) => s.name === name)!;
    const mode = MODE_OF_KIND[tensor.kind];
    checkTensor(spec, tensor, mode);
    const loaded = this.#load(spec, tensor);
    this.#free(old.ptr);
    this.#free(old.scales);
    block.lin[linear] = loaded;
    this.#bitMap = {
      ...this.#bitMap,
      overrides: { ...this.#bitMap.overrides, [`${layer}.${linear}`]: mode },
    };
  }

  /**
   * Logits `[batch·seqLen, vocab]` of `ids` `[batch, seqLen]` (a fresh array),
   * every sequence attending causally to itself from position 0.
   */
  logits(ids: ArrayLike<number>, batch: number, seqLen: number): Float32Array {
    this.#checkBatch(ids, batch, seqLen);
    const rows = batch * seqLen;
    this.#forwardBatch(ids, batch, seqLen);
    const out = new Float32Array(rows * this.#vocab);
    for (let r0 = 0; r0 < rows; r0 += this.#headChunk) {
      const n = Math.min(this.#headChunk, rows - r0);
      this.#headRows(this.#h + 4 * r0 * this.#d, n);
      out.set(this.#logitsView.subarray(0, n * this.#vocab), r0 * this.#vocab);
    }
    return out;
  }

  /**
   * Σ −log p(target) over `targets` (−1 = not counted) of `ids`
   * `[batch, seqLen]`, and the number counted: the forward of
   * {@link logits} with the softmax cross-entropy fused into the head, a
   * chunk of rows at a time.
   */
  nll(
    ids: ArrayLike<number>,
    targets: ArrayLike<number>,
    batch: number,
    seqLen: number,
  ): { readonly sum: number; readonly count: number } {
    this.#checkBatch(ids, batch, seqLen);
    const rows = batch * seqLen;
    if (targets.length !== rows) {
      throw new InferenceError({
        message: `targets has ${targets.length} tokens, expected ${rows}`,
      });
    }
    for (let i = 0; i < rows; i++) {
      const y = targets[i];
      if (y !== -1 && !(Number.isInteger(y) && y >= 0 && y < this.#vocab)) {
        throw new InferenceError({
          message:
            `targets[${i}] = ${y} is not a token id in [0, ${this.#vocab})`,
        });
      }
    }
    this.#forwardBatch(ids, batch, seqLen);
    let sum = 0, count = 0;
    for (let r0 = 0; r0 < rows; r0 += this.#headChunk) {
      const n = Math.min(this.#headChunk, rows - r0);
      this.#headRows(this.#h + 4 * r0 * this.#d, n);
      const y = this.kernels.i32(this.#targets, n);
      for (let r = 0; r < n; r++) y[r] = targets[r0 + r];
      this.#timed("loss", () =>
        this.kernels.softmaxNll({
          logits: this.#logits,
          vocab: this.#vocab,
          rows: n,
          targets: this.#targets,
          losses: this.#losses,
        }));
      // Summed here in row order: the same sum for any thread count.
      const loss = new Float64Array(
        this.kernels.memory.buffer,
        this.#losses,
        n,
      );
      for (let r = 0; r < n; r++) {
        if (targets[r0 + r] === -1) continue;
        sum += loss[r];
        count++;
      }
    }
    return { sum, count };
  }

  /**
   * A generation session with its own KV cache of `contextLength` tokens
   * (default `max_seq_len`), allocated now. With `slidingWindow`, a full
   * cache drops its oldest token for each new one; without, it refuses more.
   */
  session(
    options: {
      readonly contextLength?: number;
      readonly slidingWindow?: boolean;
    } = {},
  ): KvSession {
    this.#live();
    const ctx = options.contextLength ?? this.config.max_seq_len;
    if (!Number.isInteger(ctx) || ctx < 1) {
      throw new InferenceError({
        message: `contextLength must be a positive integer, got ${ctx}`,
      });
    }
    this.#ensureRope(ctx);
    return new KvSession(this, ctx, options.slidingWindow ?? false, {
      alloc: (bytes) => this.#alloc(bytes),
      free: (ptr) => this.#free(ptr),
      forward: (ids, place, logitsRows) =>
        this.#forwardSession(ids, place, logitsRows),
      logitsView: () => this.#logitsView,
      maxChunk: () => Math.max(this.#rows, 64),
    });
  }

  /** Frees everything the model and its sessions allocated. */
  release(): void {
    for (const p of this.#allocs) this.kernels.free(p);
    this.#allocs.clear();
    this.#released = true;
  }

  #live(): void {
    if (this.#released) {
      throw new InferenceError({ message: "the model was released" });
    }
  }

  // ------------------------------------------------------------ loading

  #alloc(bytes: number): number {
    const p = this.kernels.alloc(bytes);
    this.#allocs.add(p);
    return p;
  }

  #free(ptr: number): void {
    if (ptr !== 0 && this.#allocs.delete(ptr)) this.kernels.free(ptr);
  }

  #upload(data: Float32Array): number {
    const p = this.#alloc(4 * data.length);
    this.kernels.f32(p, data.length).set(data);
    return p;
  }

  #uploadBytes(data: Int8Array | Uint8Array | Uint16Array): number {
    const p = this.#alloc(data.byteLength);
    this.kernels.u8(p, data.byteLength).set(
      new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    );
    return p;
  }

  #load(spec: TensorSpec, t: StoredTensor): Linear {
    const [out, inF] = spec.shape;
    if (t.kind === "ternary" || t.kind === "binary") {
      return {
        name: spec.name,
        out,
        in: inF,
        kind: "coded",
        quantAct: true,
        ptr: this.#uploadBytes(packTernaryRows(t.codes, out, inF)),
        scale: t.scale,
        scales: 0,
      };
    }
    if (t.kind === "int8") {
      return {
        name: spec.name,
        out,
        in: inF,
        kind: "int8",
        quantAct: true,
        ptr: this.#uploadBytes(packInt8Rows(t.codes, out, inF)),
        scale: 1,
        scales: this.#upload(t.scales),
      };
    }
    return {
      name: spec.name,
      out,
      in: inF,
      kind: "float",
      quantAct: false,
      ptr: this.#upload(dequantize(t)),
      scale: 1,
      scales: 0,
    };
  }

  /** Scratch for `rows` tokens. */
  #ensureRows(rows: number): void {
    if (rows <= this.#rows) return;
    for (
      const p of [
        this.#x,
        this.#h,
        this.#q0,
        this.#q,
        this.#k0,
        this.#att,
        this.#ga,
        this.#up,
        this.#y,
        this.#fq,
        this.#i8,
        this.#invs,
        this.#sums,
        this.#rstd,
        this.#ids,
        this.#ropeScratch,
        this.#v0,
        this.#k1,
        this.#kBuf,
        this.#vBuf,
      ]
    ) this.#free(p);
    const c = this.config, d = this.#d, ffn = this.#ffn, kv = this.#kv;
    const wide = Math.max(d, ffn);
    const f = (n: number) => this.#alloc(4 * rows * n);
    this.#x = f(d);
    this.#h = f(d);
    this.#q0 = f(d);
    this.#q = f(d);
    this.#k0 = f(kv);
    this.#k1 = f(kv);
    this.#v0 = f(kv);
    this.#att = f(d);
    this.#ga = f(ffn);
    this.#up = f(ffn);
    this.#y = f(wide);
    this.#fq = f(wide);
    this.#i8 = this.#alloc(rows * ternaryPaddedCols(wide));
    this.#invs = f(1);
    this.#sums = f(1);
    this.#rstd = f(Math.max(c.num_heads, 1));
    this.#ids = f(1);
    this.#ropeScratch = f(2 * this.#hd);
    this.#kBuf = f(kv);
    this.#vBuf = f(kv);
    this.#idsView = this.kernels.i32(this.#ids, rows);
    this.#rows = rows;
  }

  /** Scores for `rows × cols`. */
  #ensureScores(rows: number, cols: number): void {
    const n = rows * cols;
    if (n <= this.#sSize) return;
    this.#free(this.#s);
    this.#s = this.#alloc(4 * n);
    this.#sSize = n;
  }

  /** RoPE tables covering positions `[0, len)`, as training's `RopeTableCache` computes them. */
  #ensureRope(len: number): void {
    if (!this.config.use_rope || len <= this.#ropeLen) return;
    this.#free(this.#cos);
    this.#free(this.#sin);
    const hd = this.#hd;
    this.#cos = this.#alloc(4 * len * hd);
    this.#sin = this.#alloc(4 * len * hd);
    const cos = this.kernels.f32(this.#cos, len * hd);
    const sin = this.kernels.f32(this.#sin, len * hd);
    for (let t = 0; t < len; t++) {
      ropeRow(this.config, t, cos.subarray(t * hd), sin.subarray(t * hd));
    }
    this.#ropeLen = len;
  }

  // ------------------------------------------------------------ forward

  #checkBatch(ids: ArrayLike<number>, batch: number, seqLen: number): void {
    this.#live();
    for (const [name, v] of [["batch", batch], ["seqLen", seqLen]] as const) {
      if (!Number.isInteger(v) || v < 1) {
        throw new InferenceError({
          message: `${name} must be a positive integer, got ${v}`,
        });
      }
    }
    if (seqLen > this.config.max_seq_len) {
      throw new InferenceError({
        message:
          `seqLen ${seqLen} exceeds the model's max_seq_len ${this.config.max_seq_len}`,
      });
    }
    if (ids.length !== batch * seqLen) {
      throw new InferenceError({
        message: `ids has ${ids.length} tokens, expected ${batch * seqLen}`,
      });
    }
  }

  /** Writes the token ids to WASM memory, checking each. */
  #putIds(ids: ArrayLike<number>): void {
    const v = this.#idsView, V = this.#vocab;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!(Number.isInteger(id) && id >= 0 && id < V)) {
        throw new InferenceError({
          message: `token id ${id} (at ${i}) is not in [0, ${V})`,
        });
      }
      v[i] = id;
    }
  }

  /** The batched forward of evaluation: leaves the final-normed rows in #h. */
  #forwardBatch(ids: ArrayLike<number>, batch: number, seqLen: number): void {
    const rows = batch * seqLen;
    this.#ensureRows(rows);
    this.#putIds(ids);
    const L = this.config.num_layers;
    const place: KvPlace = {
      k: Array.from({ length: L }, () => this.#kBuf),
      v: Array.from({ length: L }, () => this.#vBuf),
      kind: "rows",
      ctx: seqLen,
      seqStride: 4 * seqLen * this.#kv,
      pos0: 0,
      slot0: 0,
    };
    this.#trunk(rows, batch, seqLen, place);
    this.#norm(this.#outNorm, this.#x, this.#h, rows);
  }

  /**
   * The forward of a session's chunk of `ids` (one sequence) at `place`;
   * leaves logits of the last `logitsRows` tokens in the logits buffer.
   */
  #forwardSession(
    ids: ArrayLike<number>,
    place: KvPlace,
    logitsRows: number,
  ): void {
    this.#live();
    const T = ids.length;
    this.#ensureRows(T);
    this.#ensureScores(1, place.ctx);
    this.#putIds(ids);
    this.#trunk(T, 1, T, place);
    const first = T - logitsRows;
    const x = this.#x + 4 * first * this.#d;
    const h = this.#h + 4 * first * this.#d;
    this.#norm(this.#outNorm, x, h, logitsRows);
    this.#headRows(h, logitsRows);
  }

  /** Logits of `n ≤ #headChunk` rows at `h` into the logits buffer. */
  #headRows(h: number, n: number): void {
    this.#timed("head", () => this.#headRowsNow(h, n));
  }

  #headRowsNow(h: number, n: number): void {
    if (n === 1 && this.#headF16 !== 0) {
      this.kernels.matvecF16({
        w: this.#headF16,
        x: h,
        y: this.#logits,
        n: this.#vocab,
        k: this.#d,
      });
    } else if (n === 1) {
      this.kernels.matvec({
        w: this.#head,
        x: h,
        y: this.#logits,
        n: this.#vocab,
        k: this.#d,
      });
    } else {
      this.kernels.matmul({
        a: h,
        b: this.#head,
        c: this.#logits,
        m: n,
        n: this.#vocab,
        k: this.#d,
        transB: true,
      });
    }
  }

  /** Embedding and every block, for `nSeq` sequences of `T` new tokens; the residual ends in #x. */
  #trunk(rows: number, nSeq: number, T: number, place: KvPlace): void {
    const t = this.#t, d = this.#d, kv = this.#kv, ffn = this.#ffn;
    const c = this.config, H = c.num_heads, Hkv = c.num_kv_heads;
    const hd = this.#hd;
    t.gather_rows(this.#embed, this.#ids, this.#x, rows, d);
    const rope = this.#ropeAt(place.pos0, T);
    for (let l = 0; l < this.#blocks.length; l++) {
      const b = this.#blocks[l], lin = b.lin;
      // Scoring keeps keys as rows where they are made; a session's store is
      // head-major ([Hkv, ctx, D]): the rows are made in #k1, then placed.
      const rowsKind = place.kind === "rows";
      const kDest = rowsKind ? place.k[l] + 4 * place.slot0 * kv : this.#k1;
      // Attention.
      this.#norm(b.attnNorm, this.#x, this.#h, rows);
      this.#prepare(
        this.#h,
        rows,
        d,
        lin["attn.q"]!,
        lin["attn.k"]!,
        lin["attn.v"]!,
      );
      // Without RoPE the keys go straight to kDest.
      const k0 = rope === undefined ? kDest : this.#k0;
      this.#apply(lin["attn.q"]!, this.#h, rows, this.#q0);
      this.#apply(lin["attn.k"]!, this.#h, rows, k0);
      if (place.kind === "rows") {
        this.#apply(lin["attn.v"]!, this.#h, rows, place.v[l]);
      } else {
        this.#apply(lin["attn.v"]!, this.#h, rows, this.#v0);
        this.#storeValues(this.#v0, rows, place, place.v[l]);
      }
      if (b.qNorm !== undefined) {
        this.#norm(b.qNorm, this.#q0, this.#q0, rows * H);
      }
      if (b.kNorm !== undefined) this.#norm(b.kNorm, k0, k0, rows * Hkv);
      let q = this.#q0;
      if (rope !== undefined) {
        const table = {
          rows,
          T,
          headDim: hd,
          cos: rope.cos,
          sin: rope.sin,
          neox: rope.neox,
        };
        this.kernels.rope({ ...table, x: this.#q0, o: this.#q, heads: H });
        this.kernels.rope({ ...table, x: k0, o: kDest, heads: Hkv });
        q = this.#q;
      }
      if (!rowsKind) this.#storeKeys(kDest, rows, place, place.k[l]);
      this.#attend(q, place.k[l], place.v[l], this.#att, nSeq, T, place);
      let a = this.#att;
      if (b.attnSub !== undefined) {
        this.#norm(b.attnSub, this.#att, this.#h, rows);
        a = this.#h;
      }
      this.#prepare(a, rows, d, lin["attn.o"]!);
      this.#apply(lin["attn.o"]!, a, rows, this.#y);
      this.#addResidual(rows);
      // Feed-forward.
      this.#norm(b.ffnNorm, this.#x, this.#h, rows);
      const up = lin["mlp.up"]!, gate = lin["mlp.gate"];
      if (gate !== undefined) {
        this.#prepare(this.#h, rows, d, gate, up);
        this.#apply(gate, this.#h, rows, this.#ga);
        this.#apply(up, this.#h, rows, this.#up);
        const n = rows * ffn, k = this.kernels;
        k.map({ kernel: "silu_f32", arrays: [this.#ga, this.#ga], n });
        k.map({
          kernel: "mul_f32",
          arrays: [this.#ga, this.#up, this.#ga],
          n,
        });
      } else {
        this.#prepare(this.#h, rows, d, up);
        this.#apply(up, this.#h, rows, this.#up);
        this.kernels.map({
          kernel: c.use_relu2 ? "relu2_f32" : "silu_f32",
          arrays: [this.#up, this.#ga],
          n: rows * ffn,
        });
      }
      let f = this.#ga;
      if (b.ffnSub !== undefined) {
        this.#norm(b.ffnSub, this.#ga, this.#up, rows);
        f = this.#up;
      }
      this.#prepare(f, rows, ffn, lin["mlp.down"]!);
      this.#apply(lin["mlp.down"]!, f, rows, this.#y);
      this.#addResidual(rows);
    }
  }

  /**
   * Quantizes the input `x` `[rows, cols]` as its consumers need it: `q / s`
   * into #fq (`act_quant`, the training model's quantizer) for any quantized
   * consumer, and the int8 codes read back from it (exact: `|q| ≤ 127`) with
   * their per-row scales and sums, which the integer kernels (ternary, binary
   * and int8 codes) multiply.
   */
  #prepare(
    x: number,
    rows: number,
    cols: number,
    a: Linear,
    b?: Linear,
    c?: Linear,
  ): void {
    this.#timed("quantize", () => this.#prepareNow(x, rows, cols, a, b, c));
  }

  #prepareNow(
    x: number,
    rows: number,
    cols: number,
    a: Linear,
    b?: Linear,
    c?: Linear,
  ): void {
    if (!(a.quantAct || (b?.quantAct ?? false) || (c?.quantAct ?? false))) {
      return;
    }
    if (!this.kernels.actQuant({ x, o: this.#fq, rows, cols })) {
      throw new InferenceError({
        message:
          `non-finite activations entering ${a.name} (the weights hold NaN/Infinity or the values overflowed)`,
      });
    }
    this.kernels.quantizeRows({
      x: this.#fq,
      rows,
      cols,
      out: this.#i8,
      invScales: this.#invs,
      sums: this.#sums,
    });
  }

  /** `out[rows, L.out] = input · Wᵀ` (input as prepared by {@link #prepare}). */
  #apply(L: Linear, x: number, rows: number, out: number): void {
    this.#timed("linears", () => this.#applyNow(L, x, rows, out));
  }

  #applyNow(L: Linear, x: number, rows: number, out: number): void {
    if (L.kind === "coded") {
      this.kernels.ternaryMatmul({
        w: L.ptr,
        n: L.out,
        k: L.in,
        x: this.#i8,
        tokens: rows,
        sums: this.#sums,
        invScales: this.#invs,
        scale: L.scale,
        out,
      });
      return;
    }
    if (L.kind === "int8") {
      this.kernels.int8Matmul({
        w: L.ptr,
        scales: L.scales,
        n: L.out,
        k: L.in,
        x: this.#i8,
        tokens: rows,
        invScales: this.#invs,
        out,
      });
      return;
    }
    // A matmul even for one token (not the faster matvec): a token decoded
    // alone then gets the bits it gets in a batch, so no int8 code downstream
    // can round differently.
    this.kernels.matmul({
      a: x,
      b: L.ptr,
      c: out,
      m: rows,
      n: L.out,
      k: L.in,
      transB: true,
    });
  }

  /** A norm of `rows` rows of its width from `x` into `out` (may alias). */
  #norm(n: Norm, x: number, out: number, rows: number): void {
    const eps = this.config.layer_norm_eps;
    if (n.b === 0) {
      this.kernels.rmsnorm({
        x,
        g: n.w,
        o: out,
        rstd: this.#rstd,
        rows,
        dim: n.dim,
        eps,
      });
      return;
    }
    // LayerNorm as the CPU backend computes it (TypeScript, f64 statistics).
    const dim = n.dim;
    const xs = this.kernels.f32(x, rows * dim);
    const os = this.kernels.f32(out, rows * dim);
    const w = n.wv, bias = n.bv;
    for (let r = 0; r < rows; r++) {
      const row = r * dim;
      let sum = 0;
      for (let i = 0; i < dim; i++) sum += xs[row + i];
      const mu = sum / dim;
      let ss = 0;
      for (let i = 0; i < dim; i++) ss += (xs[row + i] - mu) ** 2;
      const r1 = 1 / Math.sqrt(ss / dim + eps);
      for (let i = 0; i < dim; i++) {
        os[row + i] = (xs[row + i] - mu) * r1 * w[i] + bias[i];
      }
    }
  }

  /** `x += residual · y` over `rows` rows (split across the pool). */
  #addResidual(rows: number): void {
    this.kernels.map({
      kernel: "axmb_f32",
      arrays: [this.#y, this.#x],
      scalars: [this.#residual, 0, 1],
      n: rows * this.#d,
    });
  }

  /** RoPE tables for positions `[pos0, pos0 + T)`, or undefined without RoPE. */
  #ropeAt(
    pos0: number,
    T: number,
  ): { cos: number; sin: number; neox: boolean } | undefined {
    if (!this.config.use_rope) return undefined;
    const hd = this.#hd, neox = this.config.rope_style === "neox";
    if (pos0 + T <= this.#ropeLen) {
      return {
        cos: this.#cos + 4 * pos0 * hd,
        sin: this.#sin + 4 * pos0 * hd,
        neox,
      };
    }
    // Past the tables (a sliding window): one token at a time, computed here.
    if (T !== 1) {
      throw new InferenceError({
        message: `internal: a chunk of ${T} tokens past the RoPE tables`,
      });
    }
    const cos = this.kernels.f32(this.#ropeScratch, hd);
    const sin = this.kernels.f32(this.#ropeScratch + 4 * hd, hd);
    ropeRow(this.config, pos0, cos, sin);
    return { cos: this.#ropeScratch, sin: this.#ropeScratch + 4 * hd, neox };
  }

  /**
   * Causal attention of `nSeq` sequences of `T` new queries at `q`
   * (`[T, H·D]` each) over their stores of keys and values (`[ctx, Hkv·D]`):
   * query t sees store rows `[0, min(pos0 + t + 1, ctx))` — its predecessors
   * and itself; in a full ring, the whole store. Scoring's whole sequences
   * attend as training does (the kernels' `attendRows`: score matmuls in
   * blocks of query rows, a causal softmax, the value product, the
   * (sequence, head) pairs across the threads); a session's one at a time.
   */
  #attend(
    q: number,
    k: number,
    v: number,
    out: number,
    nSeq: number,
    T: number,
    place: KvPlace,
  ): void {
    this.#timed("attention", () => {
      if (place.kind === "session") {
        this.#attendSession(q, k, v, out, T, place);
        return;
      }
      const c = this.config;
      this.kernels.attendRows({
        q,
        k,
        v,
        out,
        seqs: nSeq,
        T,
        heads: c.num_heads,
        kvHeads: c.num_kv_heads,
        headDim: this.#hd,
        qRow: this.#d,
        kvRow: this.#kv,
        seqBytes: place.seqStride,
        scale: this.#attnScale,
      });
    });
  }

  /**
   * New tokens of a session, one query at a time over the cache (keys
   * head-major, values transposed): query t sees store rows
   * `[0, min(pos0 + t + 1, ctx))` — its predecessors and itself; in a full
   * ring, the whole store. Per head the scores are one matvec over the keys,
   * scaled and softmaxed, and the output one matvec over the transposed
   * values: no packing, no copies, and one kernel call for all heads.
   */
  #attendSession(
    q: number,
    k: number,
    vt: number,
    out: number,
    T: number,
    place: KvPlace,
  ): void {
    const c = this.config;
    this.kernels.attendSession({
      q,
      k,
      vt,
      out,
      T,
      heads: c.num_heads,
      kvHeads: c.num_kv_heads,
      headDim: this.#hd,
      ctx: place.ctx,
      pos0: place.pos0,
      qRow: this.#d,
      scores: this.#s,
      scale: this.#attnScale,
      stats: this.#stats,
    });
  }

  /**
   * Copies `rows` new key rows (`[rows, Hkv·D]` at `k`) of one session into
   * its head-major store (`[Hkv, ctx, D]`) at rows `slot0 …`.
   */
  #storeKeys(k: number, rows: number, place: KvPlace, store: number): void {
    const m = this.#mem(), D = this.#hd, kv = this.#kv, ctx = place.ctx;
    const Hkv = this.config.num_kv_heads;
    for (let r = 0; r < rows; r++) {
      for (let g = 0; g < Hkv; g++) {
        const src = k / 4 + r * kv + g * D;
        m.copyWithin(store / 4 + (g * ctx + place.slot0 + r) * D, src, src + D);
      }
    }
  }

  /**
   * Copies `rows` new value rows (`[rows, Hkv·D]` at `v`) of one session into
   * its transposed store (`[Hkv·D, ctx]`) at columns `slot0 …`.
   */
  #storeValues(v: number, rows: number, place: KvPlace, vt: number): void {
    const m = this.#mem(), kv = this.#kv, ctx = place.ctx;
    for (let r = 0; r < rows; r++) {
      const src = v / 4 + r * kv;
      const dst = vt / 4 + place.slot0 + r;
      for (let j = 0; j < kv; j++) m[dst + j * ctx] = m[src + j];
    }
  }

  /** A view of the whole WASM memory (re-made after the memory grows). */
  #mem(): Float32Array {
    const buf = this.kernels.memory.buffer;
    if (this.#memView.length * 4 !== buf.byteLength) {
      this.#memView = new Float32Array(buf);
    }
    return this.#memView;
  }
}

/** What a {@link KvSession} needs of its model (internal to the runtime). */
export interface SessionHost {
  /** Allocates model-owned WASM memory. */
  alloc(bytes: number): number;
  /** Frees what {@link alloc} gave. */
  free(ptr: number): void;
  /** Runs one chunk of one sequence at `place`, leaving the last `logitsRows` logits. */
  forward(ids: ArrayLike<number>, place: KvPlace, logitsRows: number): void;
  /** The model's logits buffer. */
  logitsView(): Float32Array;
  /** The largest chunk worth running at once. */
  maxChunk(): number;
}

/**
 * One generation context of an {@link InferenceModel}: a KV cache of
 * `contextLength` tokens per layer, allocated when the session is made.
 * {@link prefill} runs a prompt batched; {@link decode} appends one token in
 * O(1) (no copy, no re-run of the prompt). The returned logits view the
 * model's buffer and are valid until its next call.
 */
export class KvSession {
  /** The model. */
  readonly model: InferenceModel;
  /** Tokens the cache holds at most. */
  readonly contextLength: number;
  /** Whether a full cache drops its oldest token (else it refuses more). */
  readonly slidingWindow: boolean;
  readonly #host: SessionHost;
  readonly #k: number[];
  readonly #v: number[];
  #pos = 0;
  #released = false;

  /** Use {@link InferenceModel.session}. */
  constructor(
    model: InferenceModel,
    contextLength: number,
    slidingWindow: boolean,
    host: SessionHost,
  ) {
    this.model = model;
    this.contextLength = contextLength;
    this.slidingWindow = slidingWindow;
    this.#host = host;
    const c = model.config;
    const bytes = 4 * contextLength * c.num_kv_heads * headDim(c);
    this.#k = Array.from({ length: c.num_layers }, () => host.alloc(bytes));
    this.#v = Array.from({ length: c.num_layers }, () => host.alloc(bytes));
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
   * Runs `ids` after the tokens already seen and returns the logits of the
   * last one (or, with `allLogits`, of every one: `[ids.length, vocab]`, a
   * fresh array). Batched in chunks while the cache has room; past a full
   * cache (sliding window only) one token at a time.
   *
   * @throws {InferenceError} if the tokens do not fit the context and the
   * session does not slide.
   */
  prefill(
    ids: ArrayLike<number>,
    options: { readonly allLogits?: boolean } = {},
  ): Float32Array {
    this.#live();
    const n = ids.length;
    if (n === 0) throw new InferenceError({ message: "prefill: no tokens" });
    const ctx = this.contextLength;
    if (!this.slidingWindow && this.#pos + n > ctx) {
      throw new InferenceError({
        message:
          `${n} tokens after ${this.#pos} already in context exceed the context length ${ctx}` +
          " (shorten the prompt, or use a sliding window)",
      });
    }
    const V = this.model.config.vocab_size;
    const all = options.allLogits ? new Float32Array(n * V) : undefined;
    const chunk = Math.max(1, this.#host.maxChunk());
    let i = 0;
    while (i < n) {
      const room = this.#pos < ctx ? ctx - this.#pos : 1;
      const m = Math.min(
        n - i,
        room,
        all !== undefined ? PREFILL_LOGIT_ROWS : chunk,
      );
      this.#step(sub(ids, i, i + m), all !== undefined ? m : 1);
      if (all !== undefined) {
        all.set(this.#host.logitsView().subarray(0, m * V), i * V);
      }
      i += m;
    }
    return all ?? this.#host.logitsView().subarray(0, V);
  }

  /**
   * Appends one token and returns its logits (a view, valid until the next
   * call on the model).
   *
   * @throws {InferenceError} when the cache is full and the session does not slide.
   */
  decode(id: number): Float32Array {
    this.#live();
    if (!this.slidingWindow && this.#pos >= this.contextLength) {
      throw new InferenceError({
        message: `the context is full (${this.contextLength} tokens)`,
      });
    }
    this.#one[0] = id;
    this.#step(this.#one, 1);
    return this.#host.logitsView().subarray(0, this.model.config.vocab_size);
  }

  /** Frees the cache. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    for (const p of [...this.#k, ...this.#v]) this.#host.free(p);
  }

  readonly #one = new Int32Array(1);

  #live(): void {
    if (this.#released) {
      throw new InferenceError({ message: "the session was released" });
    }
  }

  /**
   * One forward chunk (not wrapping the ring unless it is one token). With a
   * sliding window the RoPE position keeps growing: attention sees relative
   * positions only, so the window reads as if it started at 0.
   */
  #step(ids: ArrayLike<number>, logitsRows: number): void {
    const ctx = this.contextLength;
    const place: KvPlace = {
      k: this.#k,
      v: this.#v,
      kind: "session",
      ctx,
      seqStride: 0,
      pos0: this.#pos,
      slot0: this.#pos % ctx,
    };
    this.#host.forward(ids, place, logitsRows);
    this.#pos += ids.length;
  }
}

/** `ids[from, to)` without copying typed arrays. */
function sub(
  ids: ArrayLike<number>,
  from: number,
  to: number,
): ArrayLike<number> {
  if (from === 0 && to === ids.length) return ids;
  if (ArrayBuffer.isView(ids)) {
    return (ids as unknown as Int32Array).subarray(from, to);
  }
  return Array.prototype.slice.call(ids, from, to) as number[];
}

/**
 * The RoPE table row of position `pos` (as training's `RopeTableCache`):
 * `θ_i = base^(−2i/hd)`, `C_j = cos(pos·θ_i)` for both elements of pair i,
 * `S = −sin` on its first element and `+sin` on its second.
 */
function ropeRow(
  config: OneBitLlmConfig,
  pos: number,
  cos: Float32Array,
  sin: Float32Array,
): void {
  const hd = headDim(config), half = hd / 2, base = config.rope_theta;
  const neox = config.rope_style === "neox";
  for (let i = 0; i < half; i++) {
    const angle = pos * Math.pow(base, (-2 * i) / hd);
    const c = Math.cos(angle), s = Math.sin(angle);
    const a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    cos[a] = c;
    cos[b] = c;
    sin[a] = -s;
    sin[b] = s;
  }
}

/** The f32 values of a stored matrix: codes times their scale, or the dense data. */
export function dequantize(t: StoredTensor): Float32Array {
  switch (t.kind) {
    case "dense":
      return t.data;
    case "ternary":
    case "binary": {
      const out = new Float32Array(t.codes.length);
      for (let i = 0; i < out.length; i++) out[i] = t.codes[i] * t.scale;
      return out;
    }
    case "int8": {
      const out = new Float32Array(t.codes.length);
      for (let r = 0, o = 0; r < t.rows; r++, o += t.cols) {
        const s = t.scales[r];
        for (let i = o; i < o + t.cols; i++) out[i] = t.codes[i] * s;
      }
      return out;
    }
  }
}

/**
 * The f16 bit patterns of `data` when every value is a finite f16 value
 * (widening them back gives `data` exactly), else undefined.
 */
function exactF16Bits(data: Float32Array): Uint16Array | undefined {
  const bits = f32ArrayToF16Bits(data);
  for (let i = 0; i < bits.length; i++) {
    if ((bits[i] & 0x7c00) === 0x7c00) return undefined;
  }
  const back = f16BitsToF32Array(bits);
  for (let i = 0; i < data.length; i++) {
    if (!Object.is(back[i], data[i])) return undefined;
  }
  return bits;
}

/** Checks a stored tensor against its spec and the kind its mode requires. */
function checkTensor(spec: TensorSpec, t: StoredTensor, mode: QuantMode): void {
  const want = KIND_OF_MODE[mode];
  const fail = (what: string): never => {
    throw new InferenceError({ message: `${spec.name}: ${what}` });
  };
  if (t.kind !== want) {
    fail(`stored as ${t.kind}, but its mode is ${mode} (expected ${want})`);
  }
  if (t.kind === "dense") {
    const same = t.shape.length === spec.shape.length &&
      t.shape.every((v, i) => v === spec.shape[i]);
    if (!same) fail(`shape [${t.shape}] does not match [${spec.shape}]`);
    const n = spec.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== n) fail(`${t.data.length} values, expected ${n}`);
    return;
  }
  const [rows, cols] = spec.shape;
  if (t.rows !== rows || t.cols !== cols) {
    fail(`shape [${t.rows},${t.cols}] does not match [${spec.shape}]`);
  }
  if (t.codes.length !== rows * cols) {
    fail(`${t.codes.length} codes, expected ${rows * cols}`);
  }
  if (t.kind === "int8") {
    if (t.scales.length !== rows) {
      fail(`${t.scales.length} row scales, expected ${rows}`);
    }
    for (let r = 0; r < rows; r++) {
      if (!Number.isFinite(t.scales[r])) {
        fail(`row ${r} has scale ${t.scales[r]}`);
      }
    }
    return;
  }
  if (!Number.isFinite(t.scale)) fail(`scale is ${t.scale}`);
  for (let i = 0; i < t.codes.length; i++) {
    const v = t.codes[i];
    if (v < -1 || v > 1 || (t.kind === "binary" && v === 0)) {
      fail(`code ${v} at ${i} is not a ${t.kind} code`);
    }
  }
}
