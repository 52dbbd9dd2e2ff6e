/**
 * Finite-difference gradient checking and seeded random tensors for the tests of
 * the reference ops.
 *
 * @module
 */

/** A seeded uniform generator on [0, 1) (mulberry32). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` samples of `N(0, scale²)` (Box–Muller) drawn from `rand`. */
export function randn(
  rand: () => number,
  n: number,
  scale = 1,
): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const u = 1 - rand();
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) *
      Math.cos(2 * Math.PI * rand());
  }
  return out;
}

/** `n` integers uniform in `[lo, hi)` drawn from `rand`. */
export function randInts(
  rand: () => number,
  n: number,
  lo: number,
  hi: number,
): Int32Array {
  return Int32Array.from(
    { length: n },
    () => lo + Math.floor(rand() * (hi - lo)),
  );
}

/** `Σ a_i·b_i`: the scalar loss `L = Σ y·w` whose upstream gradient `∂L/∂y` is `w`. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) {
    throw new RangeError(`dot: lengths ${a.length} and ${b.length} differ`);
  }
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/**
 * A gradient buffer pre-filled with random values, so a check of `delta` also checks
 * that backward accumulates (`+=`) instead of overwriting.
 */
export class GradBuf {
  /** The buffer handed to backward. */
  readonly buf: Float64Array;
  readonly #base: Float64Array;

  /** `n` elements of noise from `rand`. */
  constructor(rand: () => number, n: number) {
    this.#base = randn(rand, n);
    this.buf = this.#base.slice();
  }

  /** What backward added: `buf − initial`. */
  get delta(): Float64Array {
    return this.buf.map((v, i) => v - this.#base[i]);
  }
}

/**
 * Central differences `∂f/∂x_i ≈ (f(x + h·e_i) − f(x − h·e_i)) / 2h` for every i,
 * perturbing `x` in place (restored afterwards).
 */
export function numericGrad(
  f: () => number,
  x: Float64Array,
  h = 1e-6,
): Float64Array {
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const x0 = x[i];
    x[i] = x0 + h;
    const fp = f();
    x[i] = x0 - h;
    const fm = f();
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

/** Tolerances of {@link expectGrads}. */
export interface GradTolerance {
  /** Relative tolerance per element; default 1e-6. */
  readonly rtol?: number;
  /** Absolute floor, relative to the largest numeric entry (at least 1); default 1e-8. */
  readonly atol?: number;
}

/**
 * The worst element of `|a − n| / (atol·max(1, ‖n‖∞) + rtol·max(|a|, |n|))`: ≤ 1
 * passes.
 */
export function gradErrorRatio(
  analytic: ArrayLike<number>,
  numeric: ArrayLike<number>,
  tol: GradTolerance = {},
): { ratio: number; index: number } {
  const rtol = tol.rtol ?? 1e-6;
  let scale = 1;
  for (let i = 0; i < numeric.length; i++) {
    scale = Math.max(scale, Math.abs(numeric[i]));
  }
  const atol = (tol.atol ?? 1e-8) * scale;
  let worst = { ratio: 0, index: -1 };
  for (let i = 0; i < numeric.length; i++) {
    const a = analytic[i];
    const n = numeric[i];
    const ratio = Math.abs(a - n) /
      (atol + rtol * Math.max(Math.abs(a), Math.abs(n)));
    if (!(ratio <= worst.ratio)) worst = { ratio, index: i };
  }
  return worst;
}

/**
 * Checks analytic gradients against central differences of `loss` for each
 * `[name, x, analytic]`; throws naming the first tensor and element that fails.
 */
export function expectGrads(
  loss: () => number,
  params: ReadonlyArray<readonly [string, Float64Array, ArrayLike<number>]>,
  tol: GradTolerance = {},
): void {
  for (const [name, x, analytic] of params) {
    if (analytic.length !== x.length) {
      throw new Error(
        `${name}: gradient has ${analytic.length} elements, tensor ${x.length}`,
      );
    }
    const numeric = numericGrad(loss, x);
    const { ratio, index } = gradErrorRatio(analytic, numeric, tol);
    if (ratio > 1) {
      throw new Error(
        `${name}[${index}]: analytic ${analytic[index]} vs numeric ${
          numeric[index]
        } (error ${ratio.toFixed(2)}× tolerance)`,
      );
    }
  }
}
