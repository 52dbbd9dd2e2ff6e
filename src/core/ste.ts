/**
 * Straight-through estimators: the λ-blended STE of the soft→hard
 * ("warmup quantization") recipe, and a tanh soft ternary quantizer with its
 * true derivative.
 *
 * @module
 */

/**
 * Forward value of the λ-blended straight-through estimator,
 * `x + λ · stopgrad(q − x)`, where `q = Q(x)` is the hard-quantized (fake
 * quantized) tensor: computed as `(1 − λ) · x_i + λ · q_i`, which is the same
 * value but exact at both ends: λ = 0 gives `x` and λ = 1 gives `q`, bit for bit.
 *
 * Backward rule (not a function here, since it is the identity): the whole
 * `λ · (q − x)` term is under stop-gradient, so `∂L/∂x = ∂L/∂out` unchanged for
 * every λ, including λ = 1 (the plain BitNet STE).
 *
 * @throws {RangeError} if `lambda` is not in [0, 1] or the lengths differ.
 */
export function steBlend(
  x: Float32Array,
  q: Float32Array,
  lambda: number,
  out?: Float32Array,
): Float32Array {
  if (!(lambda >= 0 && lambda <= 1)) {
    throw new RangeError(`steBlend: lambda must be in [0, 1], got ${lambda}`);
  }
  if (q.length !== x.length) {
    throw new RangeError(
      `steBlend: q.length (${q.length}) must equal x.length (${x.length})`,
    );
  }
  const o = outFor("steBlend", out, x.length);
  const keep = 1 - lambda;
  for (let i = 0; i < x.length; i++) o[i] = keep * x[i] + lambda * q[i];
  return o;
}

/**
 * Soft ternary quantizer: a smooth staircase through {−γ, 0, +γ},
 * `f(w) = γ · (tanh(α(w/γ − ½)) + tanh(α(w/γ + ½))) / 2`, in f64.
 *
 * As α → ∞ it tends to `γ · clamp(round(w/γ), −1, 1)`, the hard ternary
 * quantizer with thresholds ±γ/2 (`absmeanTernary` uses ±(γ + ε)/2, ε/2 apart);
 * at a threshold itself it gives ±γ/2. For every α,
 * `|f(w) − γ · staircase(w/γ)| ≤ 2γ · exp(−2α · dist(w/γ, {−½, +½}))`.
 * A single `γ · tanh(α w / γ)` would tend to the binary sign quantizer instead.
 *
 * With γ = 0 (all-zero weights) f is the zero map, its limit as γ → 0⁺.
 * NaN in w propagates; ±∞ maps to ±γ.
 *
 * @throws {RangeError} if α is not finite and > 0, or γ not finite and ≥ 0.
 */
export function tanhSoftTernaryAt(
  w: number,
  alpha: number,
  gamma: number,
): number {
  checkParams("tanhSoftTernaryAt", alpha, gamma);
  return soft(w, alpha, gamma);
}

/**
 * Derivative of {@link tanhSoftTernaryAt} with respect to w (α and γ held
 * constant, as the scale is under stop-gradient):
 * `f'(w) = (α/2) · (sech²(α(w/γ − ½)) + sech²(α(w/γ + ½)))`, in f64; γ cancels.
 * It lies in [0, α]; for α ≳ 2 it peaks near the thresholds ±γ/2 and decays like
 * `2α · e^{−2α·dist}` away from them, `dist` measured in units of γ.
 *
 * With γ = 0 it is the pointwise limit as γ → 0⁺: `α · sech²(α/2)` at w = 0
 * and 0 elsewhere, so all-zero weights still receive a gradient.
 *
 * @throws {RangeError} if α is not finite and > 0, or γ not finite and ≥ 0.
 */
export function tanhSoftTernaryGradAt(
  w: number,
  alpha: number,
  gamma: number,
): number {
  checkParams("tanhSoftTernaryGradAt", alpha, gamma);
  return softGrad(w, alpha, gamma);
}

/**
 * Elementwise {@link tanhSoftTernaryAt}: `out_i = f(w_i)` rounded to f32.
 *
 * @throws {RangeError} on bad α, γ or `out` length.
 */
export function tanhSoftTernary(
  w: Float32Array,
  alpha: number,
  gamma: number,
  out?: Float32Array,
): Float32Array {
  checkParams("tanhSoftTernary", alpha, gamma);
  const o = outFor("tanhSoftTernary", out, w.length);
  for (let i = 0; i < w.length; i++) o[i] = soft(w[i], alpha, gamma);
  return o;
}

/**
 * Backward of {@link tanhSoftTernary} (a vector-Jacobian product):
 * `out_i = gradOut_i · f'(w_i)` with f' from {@link tanhSoftTernaryGradAt},
 * rounded to f32. This replaces the identity of the plain STE.
 *
 * @throws {RangeError} on bad α, γ, or lengths.
 */
export function tanhSoftTernaryGrad(
  w: Float32Array,
  gradOut: Float32Array,
  alpha: number,
  gamma: number,
  out?: Float32Array,
): Float32Array {
  checkParams("tanhSoftTernaryGrad", alpha, gamma);
  if (gradOut.length !== w.length) {
    throw new RangeError(
      `tanhSoftTernaryGrad: gradOut.length (${gradOut.length}) must equal w.length (${w.length})`,
    );
  }
  const o = outFor("tanhSoftTernaryGrad", out, w.length);
  for (let i = 0; i < w.length; i++) {
    o[i] = gradOut[i] * softGrad(w[i], alpha, gamma);
  }
  return o;
}

function soft(w: number, alpha: number, gamma: number): number {
  if (gamma === 0) return 0;
  const u = w / gamma;
  return gamma * (Math.tanh(alpha * (u - 0.5)) + Math.tanh(alpha * (u + 0.5))) /
    2;
}

function softGrad(w: number, alpha: number, gamma: number): number {
  if (gamma === 0) return w === 0 ? alpha * sech2(alpha / 2) : 0;
  const u = w / gamma;
  return (alpha / 2) * (sech2(alpha * (u - 0.5)) + sech2(alpha * (u + 0.5)));
}

/** sech²(z) = 1 / cosh²(z); cosh² overflows to ∞ for |z| ≳ 355, giving the right 0. */
function sech2(z: number): number {
  const c = Math.cosh(z);
  return 1 / (c * c);
}

function checkParams(fn: string, alpha: number, gamma: number): void {
  if (!(Number.isFinite(alpha) && alpha > 0)) {
    throw new RangeError(`${fn}: alpha must be finite and > 0, got ${alpha}`);
  }
  if (!(Number.isFinite(gamma) && gamma >= 0)) {
    throw new RangeError(`${fn}: gamma must be finite and ≥ 0, got ${gamma}`);
  }
}

function outFor(
  fn: string,
  out: Float32Array | undefined,
  n: number,
): Float32Array {
  if (out === undefined) return new Float32Array(n);
  if (out.length !== n) {
    throw new RangeError(`${fn}: out.length must be ${n}, got ${out.length}`);
  }
  return out;
}
