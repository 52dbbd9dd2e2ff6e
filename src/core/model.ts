/**
 * The `OneBitLlm` transformer: embedding → N pre-norm blocks (attention + FFN)
 * → final norm → LM head, every linear a BitLinear at the mode the
 * `LayerBitMap` gives it. The forward pass is recorded on a {@link Tape}, so
 * one call gives both the loss and, through `tape.backward`, every gradient.
 *
 * Block l (x is the residual stream, `n` the config's norm):
 * ```text
 * h = n(x)                     attn_norm
 * q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ  (q/k: per-head norm if use_qk_norm, then RoPE)
 * a = attention(q, k, v)       causal, grouped KV heads
 * x = x + s · n_sub(a)·Woᵀ     attn_sub_norm if use_subln; s = 1/√(2L) if use_residual_scaling, else 1
 * h = n(x)                     ffn_norm
 * f = silu(h·Wgᵀ) ⊙ h·Wuᵀ      SwiGLU; relu(h·Wuᵀ)² for use_relu2; silu(h·Wuᵀ) for neither
 * x = x + s · n_sub(f)·Wdᵀ     ffn_sub_norm if use_subln
 * ```
 * then `logits = n(x) · Eᵀ` (tied) or `n(x) · Woutᵀ`.
 *
 * @module
 */
import { headDim, type OneBitLlmConfig } from "../common/config.ts";
import {
  type LayerBitMap,
  linearMode,
  type LinearName,
  lmHeadMode,
} from "../common/layer_bit_map.ts";
import type { Backend, Tensor } from "../backend/backend.ts";
import type { Tape, Var } from "../backend/tape.ts";
import * as op from "../backend/ops.ts";
import { modelTensors, tensorNumel, type TensorSpec } from "./tensors.ts";
import { Rng } from "../common/rng.ts";

/** Standard deviation of the initial embedding and linear weights (as the PyTorch reference). */
export const INIT_STD = 0.02;

/** Settings of one forward pass. */
export interface ForwardOptions {
  /** Sequences in the batch. */
  readonly batch: number;
  /** Tokens per sequence (≤ `max_seq_len`). */
  readonly seqLen: number;
  /** STE λ of every quantizer: 0 is full precision, 1 hard quantization. */
  readonly lambda: number;
}

/** A model's parameters and their gradient buffers on one backend. */
export class OneBitLlm {
  /** The architecture. */
  readonly config: OneBitLlmConfig;
  /** The storage mode of every tensor. */
  readonly bitMap: LayerBitMap;
  /** The backend holding the tensors. */
  readonly backend: Backend;
  /** Every parameter, in `modelTensors` order. */
  readonly specs: ReadonlyArray<TensorSpec>;
  /** Latent (full-precision) parameter values by name. */
  readonly params: ReadonlyMap<string, Tensor>;
  /** Gradient buffers by name (zero them with {@link zeroGrads}). */
  readonly grads: ReadonlyMap<string, Tensor>;

  private constructor(
    config: OneBitLlmConfig,
    bitMap: LayerBitMap,
    backend: Backend,
    values: ReadonlyMap<string, Float32Array>,
  ) {
    this.config = config;
    this.bitMap = bitMap;
    this.backend = backend;
    this.specs = modelTensors(config);
    const params = new Map<string, Tensor>();
    const grads = new Map<string, Tensor>();
    for (const spec of this.specs) {
      const v = values.get(spec.name);
      if (v === undefined) throw new Error(`missing tensor ${spec.name}`);
      if (v.length !== tensorNumel(spec)) {
        throw new RangeError(
          `${spec.name} has ${v.length} values, expected ${
            tensorNumel(spec)
          } (shape [${spec.shape}])`,
        );
      }
      params.set(spec.name, backend.upload(v));
      grads.set(spec.name, backend.zeros(v.length));
    }
    this.params = params;
    this.grads = grads;
  }

  /**
   * A freshly initialized model: embedding and linears `N(0, 0.02²)`, norm
   * weights 1 and biases 0 (initial loss ≈ ln(vocab)). Deterministic in `seed`.
   */
  static init(
    config: OneBitLlmConfig,
    bitMap: LayerBitMap,
    backend: Backend,
    seed: number,
  ): OneBitLlm {
    const rng = new Rng(seed);
    const values = new Map<string, Float32Array>();
    for (const spec of modelTensors(config)) {
      const n = tensorNumel(spec);
      const v = new Float32Array(n);
      if (spec.kind === "norm") v.fill(spec.name.endsWith(".bias") ? 0 : 1);
      else for (let i = 0; i < n; i++) v[i] = INIT_STD * gaussian(rng);
      values.set(spec.name, v);
    }
    return new OneBitLlm(config, bitMap, backend, values);
  }

  /** A model holding the given parameter values (from a checkpoint). */
  static fromValues(
    config: OneBitLlmConfig,
    bitMap: LayerBitMap,
    backend: Backend,
    values: ReadonlyMap<string, Float32Array>,
  ): OneBitLlm {
    return new OneBitLlm(config, bitMap, backend, values);
  }

  /** Sets every gradient buffer to 0. */
  zeroGrads(): void {
    for (const g of this.grads.values()) this.backend.fill(g, 0);
  }

  /** Releases every tensor of the model. */
  release(): void {
    for (const t of [...this.params.values(), ...this.grads.values()]) {
      this.backend.release(t);
    }
  }

  /** Records the forward pass of `ids` `[batch, seqLen]` and returns the logits `[batch·seqLen, vocab]`. */
  logits(tape: Tape, ids: Tensor, o: ForwardOptions): Var {
    const c = this.config;
    const rows = o.batch * o.seqLen;
    if (o.seqLen > c.max_seq_len) {
      throw new RangeError(
        `seqLen ${o.seqLen} exceeds max_seq_len ${c.max_seq_len}`,
      );
    }
    if (ids.size !== rows) {
      throw new RangeError(`ids has ${ids.size} tokens, expected ${rows}`);
    }
    const P = (name: string) =>
      tape.param(this.params.get(name)!, this.grads.get(name)!);
    const d = c.hidden_size, hd = headDim(c), ffn = c.intermediate_size;
    const embMode = this.bitMap.embedding;
    const norm = (x: Var, base: string, n: number, width: number) =>
      c.norm_type === "layer_norm"
        ? op.layernorm(tape, x, P(`${base}.weight`), P(`${base}.bias`), {
          rows: n,
          dim: width,
          eps: c.layer_norm_eps,
        })
        : op.rmsnorm(tape, x, P(`${base}.weight`), {
          rows: n,
          dim: width,
          eps: c.layer_norm_eps,
        });
    const lin = (
      x: Var,
      layer: number,
      name: string,
      linear: LinearName,
      inF: number,
      outF: number,
    ) => {
      const mode = linearMode(this.bitMap, layer, linear);
      const lambda = mode === "f16" ? 0 : o.lambda;
      return op.bitLinear(tape, x, P(`blk.${layer}.${name}.weight`), {
        rows,
        inFeatures: inF,
        outFeatures: outF,
        mode,
        lambdaA: lambda,
        lambdaW: lambda,
        dynamicThreshold: c.use_dynamic_threshold,
      });
    };
    const residual = c.use_residual_scaling
      ? 1 / Math.sqrt(2 * c.num_layers)
      : 1;
    const rope = (x: Var, heads: number) =>
      c.use_rope
        ? op.rope(tape, x, {
          batch: o.batch,
          seqLen: o.seqLen,
          heads,
          headDim: hd,
          base: c.rope_theta,
          style: c.rope_style,
        })
        : x;

    let x = op.embedding(
      tape,
      P("token_embd.weight"),
      tape.constant(ids),
      { vocab: c.vocab_size, dim: d },
      { mode: embMode, lambda: o.lambda },
    );
    for (let l = 0; l < c.num_layers; l++) {
      const blk = `blk.${l}`;
      let h = norm(x, `${blk}.attn_norm`, rows, d);
      let q = lin(h, l, "attn_q", "attn.q", d, d);
      let k = lin(h, l, "attn_k", "attn.k", d, c.num_kv_heads * hd);
      const v = lin(h, l, "attn_v", "attn.v", d, c.num_kv_heads * hd);
      if (c.use_qk_norm) {
        q = norm(q, `${blk}.attn_q_norm`, rows * c.num_heads, hd);
        k = norm(k, `${blk}.attn_k_norm`, rows * c.num_kv_heads, hd);
      }
      q = rope(q, c.num_heads);
      k = rope(k, c.num_kv_heads);
      let a = op.attention(tape, q, k, v, {
        batch: o.batch,
        seqLen: o.seqLen,
        numHeads: c.num_heads,
        numKvHeads: c.num_kv_heads,
        headDim: hd,
      });
      if (c.use_subln) a = norm(a, `${blk}.attn_sub_norm`, rows, d);
      x = op.addScaled(
        tape,
        x,
        lin(a, l, "attn_output", "attn.o", d, d),
        residual,
      );

      h = norm(x, `${blk}.ffn_norm`, rows, d);
      const up = lin(h, l, "ffn_up", "mlp.up", d, ffn);
      let f: Var;
      if (c.use_swiglu) {
        const gate = lin(h, l, "ffn_gate", "mlp.gate", d, ffn);
        f = op.mul(tape, op.activation(tape, "silu", gate), up);
      } else {
        f = op.activation(tape, c.use_relu2 ? "relu2" : "silu", up);
      }
      if (c.use_subln) f = norm(f, `${blk}.ffn_sub_norm`, rows, ffn);
      x = op.addScaled(
        tape,
        x,
        lin(f, l, "ffn_down", "mlp.down", ffn, d),
        residual,
      );
    }
    const h = norm(x, "output_norm", rows, d);
    const headName = c.tie_embeddings ? "token_embd.weight" : "output.weight";
    const headMode = lmHeadMode(this.bitMap);
    return op.bitLinear(tape, h, P(headName), {
      rows,
      inFeatures: d,
      outFeatures: c.vocab_size,
      mode: headMode,
      lambdaA: 0,
      lambdaW: headMode === "f16" ? 0 : o.lambda,
    });
  }

  /**
   * Records the forward pass and the mean cross-entropy of predicting
   * `targets` (−1 = ignored); returns `[smoothed loss, NLL]` (see `op.crossEntropy`).
   */
  loss(
    tape: Tape,
    ids: Tensor,
    targets: Tensor,
    o: ForwardOptions & { readonly labelSmoothing?: number },
  ): Var {
    const logits = this.logits(tape, ids, o);
    return op.crossEntropy(tape, logits, tape.constant(targets), {
      rows: o.batch * o.seqLen,
      vocab: this.config.vocab_size,
      labelSmoothing: o.labelSmoothing,
    });
  }
}

/** A standard normal draw (Box–Muller on the seeded generator). */
function gaussian(rng: Rng): number {
  const u = 1 - rng.nextFloat(); // (0, 1], keeps log finite
  const v = rng.nextFloat();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}
