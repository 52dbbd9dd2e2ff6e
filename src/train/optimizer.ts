/**
 * AdamW over a model's parameters, on the model's backend: global-norm
 * gradient clipping without a read-back, decoupled weight decay on the
 * quantized linears' matrices only (not norms or embeddings unless asked), and
 * latent clipping of quantized linear weights after each step.
 *
 * @module
 */
import type { Tensor } from "../backend/backend.ts";
import type { OneBitLlm } from "../core/model.ts";
import { linearMode } from "../common/layer_bit_map.ts";
import type { TensorSpec } from "../core/tensors.ts";

/** Settings of {@link AdamW}. */
export interface AdamWOptions {
  /** First-moment decay β1 (default 0.9). */
  readonly beta1?: number;
  /** Second-moment decay β2 (default 0.95, the BitNet recipe). */
  readonly beta2?: number;
  /** Denominator ε (default 1e-8). */
  readonly eps?: number;
  /** Global gradient-norm limit (default 1.0; `Infinity` disables clipping). */
  readonly maxGradNorm?: number;
  /** Also decay the embedding and an untied LM head (default false). */
  readonly decayEmbeddings?: boolean;
}

/** The optimizer's state of one parameter. */
export interface Moments {
  /** First moment. */
  readonly m: Tensor;
  /** Second moment. */
  readonly v: Tensor;
}

/** AdamW with its moments, bound to one model. */
export class AdamW {
  /** The model being optimized. */
  readonly model: OneBitLlm;
  /** Moments by parameter name. */
  readonly moments: ReadonlyMap<string, Moments>;
  readonly #beta1: number;
  readonly #beta2: number;
  readonly #eps: number;
  readonly #maxNorm: number;
  readonly #decayEmbeddings: boolean;
  readonly #sumSq: Tensor;

  /** Zero moments for every parameter of `model`. */
  constructor(model: OneBitLlm, options: AdamWOptions = {}) {
    this.model = model;
    this.#beta1 = options.beta1 ?? 0.9;
    this.#beta2 = options.beta2 ?? 0.95;
    this.#eps = options.eps ?? 1e-8;
    this.#maxNorm = options.maxGradNorm ?? 1;
    this.#decayEmbeddings = options.decayEmbeddings ?? false;
    const b = model.backend;
    const moments = new Map<string, Moments>();
    for (const [name, p] of model.params) {
      moments.set(name, { m: b.zeros(p.size), v: b.zeros(p.size) });
    }
    this.moments = moments;
    this.#sumSq = b.zeros(1);
  }

  /** Whether weight decay applies to `spec`: matrices of linears, and tables when asked. */
  decays(spec: TensorSpec): boolean {
    if (spec.kind === "linear") return true;
    if (spec.kind === "norm") return false;
    return this.#decayEmbeddings;
  }

  /**
   * Whether the latent weights of `spec` are clipped: quantized linears only —
   * never embeddings or norms (the Rust original clipped those too).
   */
  clipsLatents(spec: TensorSpec): boolean {
    return spec.kind === "linear" &&
      linearMode(this.model.bitMap, spec.layer, spec.linear) !== "f16";
  }

  /**
   * One update of every parameter (step ≥ 1): the gradients are clipped to the
   * global norm, then `p ← p·(1 − lr·wd) − lr·m̂/(√v̂ + ε)` (PyTorch order),
   * then quantized latents are clamped to ±`latentClip`.
   */
  step(
    hyper: {
      readonly lr: number;
      readonly weightDecay: number;
      readonly step: number;
    },
    latentClip: number,
  ): void {
    const model = this.model;
    const b = model.backend;
    b.sumSquares([...model.grads.values()], this.#sumSq);
    for (const spec of model.specs) {
      const { m, v } = this.moments.get(spec.name)!;
      b.adamw(
        model.params.get(spec.name)!,
        model.grads.get(spec.name)!,
        m,
        v,
        {
          lr: hyper.lr,
          beta1: this.#beta1,
          beta2: this.#beta2,
          eps: this.#eps,
          weightDecay: this.decays(spec) ? hyper.weightDecay : 0,
          step: hyper.step,
        },
        this.#sumSq,
        this.#maxNorm,
      );
      if (this.clipsLatents(spec)) {
        b.clamp(model.params.get(spec.name)!, latentClip);
      }
    }
  }

  /** The global gradient norm of the last {@link step} (a read-back: call at the end of a step). */
  async gradNorm(): Promise<number> {
    return Math.sqrt((await this.model.backend.read(this.#sumSq))[0]);
  }

  /** Releases the moments. */
  release(): void {
    const b = this.model.backend;
    for (const { m, v } of this.moments.values()) {
      b.release(m);
      b.release(v);
    }
    b.release(this.#sumSq);
  }
}
