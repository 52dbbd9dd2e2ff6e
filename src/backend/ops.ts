/**
 * Differentiable ops on a {@link Tape}: each computes its forward with the
 * backend's kernels and records the backward that adds into its inputs'
 * gradients (skipping inputs that take none). These are the building blocks of
 * the `OneBitLlm` model; their math is documented on the reference ops in
 * `./reference/`.
 *
 * @module
 */
import type {
  AttentionShape,
  EmbeddingShape,
  NormShape,
  RopeShape,
  WeightQuantMode,
} from "./reference/mod.ts";
import type { Activation } from "./backend.ts";
import type { Tape, Var } from "./tape.ts";

/** Shape and quantization of a BitLinear `y = Q_a(x) · Q_w(W)ᵀ`. */
export interface BitLinearOptions {
  /** Tokens (rows of x). */
  readonly rows: number;
  /** Input features. */
  readonly inFeatures: number;
  /** Output features (rows of W). */
  readonly outFeatures: number;
  /** Weight mode; `"f16"` with both λ = 0 is a plain linear layer. */
  readonly mode: WeightQuantMode;
  /** λ of the activation quantizer (per-token int8); 0 disables it. */
  readonly lambdaA: number;
  /** λ of the weight quantizer; 0 disables it. */
  readonly lambdaW: number;
  /** Ternary only: dynamic-threshold quantizer instead of absmean. */
  readonly dynamicThreshold?: boolean;
}

/**
 * BitLinear with the straight-through estimator: `x̃ = x + λ_a(Q_a(x) − x)`,
 * `W̃ = W + λ_w(Q_w(W) − W)`, `y = x̃ · W̃ᵀ`; backward passes straight through
 * the quantizers: `dx += dy · W̃`, `dW += dyᵀ · x̃`. At λ_a = λ_w = 1 with
 * ternary or binary weights the forward product runs in integers where the
 * backend offers `ternaryLinear`: exact sums of the codes, rescaled per
 * token, which equal `x̃ · W̃ᵀ` to float rounding (and the f32 product of the
 * codes, rescaled the same way, bit for bit); backward stays in f32.
 */
export function bitLinear(
  tape: Tape,
  x: Var,
  w: Var,
  o: BitLinearOptions,
): Var {
  const b = tape.backend;
  const { rows, inFeatures: k, outFeatures: n } = o;
  let xq = x.value;
  if (o.lambdaA > 0) {
    xq = tape.scratch(rows * k);
    b.fakeQuantActivations(x.value, xq, { rows, cols: k, lambda: o.lambdaA });
  }
  let wq = w.value;
  if (o.lambdaW > 0 && o.mode !== "f16") {
    wq = tape.scratch(n * k);
    b.fakeQuantWeights(w.value, wq, o.mode, {
      rows: n,
      cols: k,
      lambda: o.lambdaW,
      dynamicThreshold: o.dynamicThreshold,
    });
  }
  const y = tape.output(rows * n, [x, w]);
  if (
    b.ternaryLinear !== undefined && o.lambdaA === 1 && o.lambdaW === 1 &&
    (o.mode === "ternary" || o.mode === "binary")
  ) {
    // Hard quantization: the product is int8 × ternary, exactly.
    b.ternaryLinear(xq, wq, y.value, { rows, k, n });
  } else b.matmul(xq, wq, y.value, { m: rows, n, k, transB: true });
  tape.record([x, w], () => {
    const dy = tape.grad(y);
    if (x.requiresGrad) {
      b.matmul(dy, wq, tape.grad(x), { m: rows, n: k, k: n, accumulate: true });
    }
    if (w.requiresGrad) {
      b.matmul(dy, xq, tape.grad(w), {
        m: n,
        n: k,
        k: rows,
        transA: true,
        accumulate: true,
      });
    }
  });
  return y;
}

/** Weight quantization of a table: its mode and STE λ. */
export interface TableQuant {
  /** Storage mode of the table. */
  readonly mode: WeightQuantMode;
  /** λ of the weight quantizer. */
  readonly lambda: number;
}

/**
 * Rows of `table` gathered by `ids`; backward scatter-adds into the table's
 * gradient. With `quant`, rows are gathered from the fake-quantized table
 * `W + λ(Q(W) − W)` (per-row scales for `eightbit`) and the gradient passes
 * straight through to the latent table.
 */
export function embedding(
  tape: Tape,
  table: Var,
  ids: Var,
  shape: EmbeddingShape,
  quant?: TableQuant,
): Var {
  const b = tape.backend;
  let source = table.value;
  if (quant !== undefined && quant.mode !== "f16" && quant.lambda > 0) {
    source = tape.scratch(table.size);
    b.fakeQuantWeights(table.value, source, quant.mode, {
      rows: shape.vocab,
      cols: shape.dim,
      lambda: quant.lambda,
    });
  }
  const out = tape.output(ids.size * shape.dim, [table]);
  b.embedding(source, ids.value, out.value, shape);
  tape.record([table], () => {
    b.embeddingBackward(tape.grad(out), ids.value, tape.grad(table), shape);
  });
  return out;
}

/** RMSNorm `x / sqrt(mean(x²) + ε) · g` per row. */
export function rmsnorm(tape: Tape, x: Var, g: Var, shape: NormShape): Var {
  const b = tape.backend;
  const out = tape.output(x.size, [x, g]);
  const rstd = tape.scratch(shape.rows);
  b.rmsnorm(x.value, g.value, out.value, rstd, shape);
  tape.record([x, g], () => {
    // The kernel adds into both gradients; one that nobody reads goes to scratch.
    const dx = x.requiresGrad ? tape.grad(x) : tape.scratch(x.size);
    const dg = g.requiresGrad ? tape.grad(g) : tape.scratch(g.size);
    b.rmsnormBackward(tape.grad(out), x.value, g.value, rstd, dx, dg, shape);
  });
  return out;
}

/** LayerNorm `(x − mean) / sqrt(var + ε) · w + b` per row. */
export function layernorm(
  tape: Tape,
  x: Var,
  w: Var,
  bias: Var,
  shape: NormShape,
): Var {
  const b = tape.backend;
  const out = tape.output(x.size, [x, w, bias]);
  const mean = tape.scratch(shape.rows);
  const rstd = tape.scratch(shape.rows);
  b.layernorm(x.value, w.value, bias.value, out.value, mean, rstd, shape);
  tape.record([x, w, bias], () => {
    const g = (v: Var) => v.requiresGrad ? tape.grad(v) : tape.scratch(v.size);
    b.layernormBackward(
      tape.grad(out),
      x.value,
      w.value,
      mean,
      rstd,
      g(x),
      g(w),
      g(bias),
      shape,
    );
  });
  return out;
}

/** Rotary position embedding. */
export function rope(tape: Tape, x: Var, shape: RopeShape): Var {
  const b = tape.backend;
  const out = tape.output(x.size, [x]);
  b.rope(x.value, out.value, shape);
  tape.record([x], () => b.ropeBackward(tape.grad(out), tape.grad(x), shape));
  return out;
}

/** Causal softmax attention with grouped KV heads. */
export function attention(
  tape: Tape,
  q: Var,
  k: Var,
  v: Var,
  shape: AttentionShape,
): Var {
  const b = tape.backend;
  const out = tape.output(q.size, [q, k, v]);
  const probs = tape.scratch(
    shape.batch * shape.numHeads * shape.seqLen * shape.seqLen,
  );
  b.attention(q.value, k.value, v.value, out.value, probs, shape);
  tape.record([q, k, v], () => {
    const g = (x: Var) => x.requiresGrad ? tape.grad(x) : tape.scratch(x.size);
    b.attentionBackward(
      tape.grad(out),
      q.value,
      k.value,
      v.value,
      probs,
      g(q),
      g(k),
      g(v),
      shape,
    );
  });
  return out;
}

/** Element-wise activation (SiLU or ReLU²). */
export function activation(tape: Tape, kind: Activation, x: Var): Var {
  const b = tape.backend;
  const out = tape.output(x.size, [x]);
  b.activation(kind, x.value, out.value);
  tape.record(
    [x],
    () => b.activationBackward(kind, tape.grad(out), x.value, tape.grad(x)),
  );
  return out;
}

/** Element-wise product `a ⊙ b` (the gate of SwiGLU). */
export function mul(tape: Tape, a: Var, c: Var): Var {
  const b = tape.backend;
  const out = tape.output(a.size, [a, c]);
  b.mul(a.value, c.value, out.value);
  tape.record([a, c], () => {
    b.mulBackward(
      tape.grad(out),
      a.value,
      c.value,
      a.requiresGrad ? tape.grad(a) : undefined,
      c.requiresGrad ? tape.grad(c) : undefined,
    );
  });
  return out;
}

/** `a + s · c` (a residual connection; `s` scales the branch). */
export function addScaled(tape: Tape, a: Var, c: Var, s = 1): Var {
  const b = tape.backend;
  const out = tape.output(a.size, [a, c]);
  b.fill(out.value, 0);
  b.addScaled(out.value, a.value, 1);
  b.addScaled(out.value, c.value, s);
  tape.record([a, c], () => {
    const d = tape.grad(out);
    if (a.requiresGrad) b.addScaled(tape.grad(a), d, 1);
    if (c.requiresGrad) b.addScaled(tape.grad(c), d, s);
  });
  return out;
}

/** Settings of {@link crossEntropy}. */
export interface CrossEntropyOptions {
  /** Tokens. */
  readonly rows: number;
  /** Classes. */
  readonly vocab: number;
  /** Label smoothing ε (default 0). */
  readonly labelSmoothing?: number;
}

/**
 * Mean softmax cross-entropy of `logits` against `targets` (−1 = ignored).
 * Returns a 2-element value: `[smoothed loss, unsmoothed NLL]`; differentiate
 * it as the root of the tape (`tape.backward(loss, scale)`): its backward reads
 * the seed scale instead of a device-side gradient.
 */
export function crossEntropy(
  tape: Tape,
  logits: Var,
  targets: Var,
  o: CrossEntropyOptions,
): Var {
  const b = tape.backend;
  const shape = {
    rows: o.rows,
    vocab: o.vocab,
    labelSmoothing: o.labelSmoothing ?? 0,
  };
  const probs = tape.scratch(o.rows * o.vocab);
  const loss = tape.output(2, [logits]);
  b.crossEntropy(logits.value, targets.value, probs, loss.value, shape);
  tape.record([logits], () => {
    b.crossEntropyBackward(
      probs,
      targets.value,
      tape.grad(logits),
      tape.seed,
      shape,
    );
  });
  return loss;
}
