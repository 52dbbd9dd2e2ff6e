/**
 * Matrix product with optional transposes, and the PyTorch-style linear layer.
 *
 * @module
 */
import { alloc, type Arr, checkGrad, checkLen } from "./arr.ts";
import { checkMatmul } from "../shapes.ts";

/**
 * Shape of `C = op(A)·op(B)` with `C` of `[m, n]` and inner dimension `k`.
 * `A` is stored `[m, k]`, or `[k, m]` when `transA`; `B` is stored `[k, n]`, or
 * `[n, k]` when `transB`.
 */
export interface MatmulShape {
  /** Rows of `C` and of `op(A)`. */
  readonly m: number;
  /** Columns of `C` and of `op(B)`. */
  readonly n: number;
  /** Inner dimension. */
  readonly k: number;
  /** Use `Aᵀ` (A stored `[k, m]`). */
  readonly transA?: boolean;
  /** Use `Bᵀ` (B stored `[n, k]`). */
  readonly transB?: boolean;
}

interface Layout {
  readonly m: number;
  readonly n: number;
  readonly k: number;
  /** Flat index of `op(A)[i, p]` in A's storage. */
  readonly ia: (i: number, p: number) => number;
  /** Flat index of `op(B)[p, j]` in B's storage. */
  readonly ib: (p: number, j: number) => number;
}

function layout(shape: MatmulShape): Layout {
  const { m, n, k } = shape;
  checkMatmul(shape);
  return {
    m,
    n,
    k,
    ia: shape.transA ? (i, p) => p * m + i : (i, p) => i * k + p,
    ib: shape.transB ? (p, j) => j * k + p : (p, j) => p * n + j,
  };
}

/**
 * Forward: `C[i, j] = Σ_p op(A)[i, p] · op(B)[p, j]`. Returns `C` (`[m, n]`) in the
 * element type of `a`.
 */
export function matmulForward<T extends Arr>(
  a: T,
  b: Arr,
  shape: MatmulShape,
): T {
  const { m, n, k, ia, ib } = layout(shape);
  checkLen("a", a, m * k);
  checkLen("b", b, k * n);
  const c = alloc(a, m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) sum += a[ia(i, p)] * b[ib(p, j)];
      c[i * n + j] = sum;
    }
  }
  return c;
}

/**
 * Backward of {@link matmulForward}; accumulates, each in its operand's stored layout:
 * `∂L/∂op(A)[i, p] += Σ_j dC[i, j] · op(B)[p, j]` (dA = dC·op(B)ᵀ) and
 * `∂L/∂op(B)[p, j] += Σ_i op(A)[i, p] · dC[i, j]` (dB = op(A)ᵀ·dC).
 */
export function matmulBackward(
  dc: Arr,
  saved: { readonly a: Arr; readonly b: Arr },
  grads: { readonly da?: Arr; readonly db?: Arr },
  shape: MatmulShape,
): void {
  const { m, n, k, ia, ib } = layout(shape);
  const { a, b } = saved;
  const { da, db } = grads;
  checkLen("dc", dc, m * n);
  checkLen("saved.a", a, m * k);
  checkLen("saved.b", b, k * n);
  checkGrad("grads.da", da, m * k);
  checkGrad("grads.db", db, k * n);
  if (da) {
    for (let i = 0; i < m; i++) {
      for (let p = 0; p < k; p++) {
        let sum = 0;
        for (let j = 0; j < n; j++) sum += dc[i * n + j] * b[ib(p, j)];
        da[ia(i, p)] += sum;
      }
    }
  }
  if (db) {
    for (let p = 0; p < k; p++) {
      for (let j = 0; j < n; j++) {
        let sum = 0;
        for (let i = 0; i < m; i++) sum += a[ia(i, p)] * dc[i * n + j];
        db[ib(p, j)] += sum;
      }
    }
  }
}

/** Shape of a linear layer applied to `rows` vectors: x `[rows, inFeatures]`, W `[outFeatures, inFeatures]`. */
export interface LinearShape {
  /** Number of input vectors (tokens). */
  readonly rows: number;
  /** Input width. */
  readonly inFeatures: number;
  /** Output width. */
  readonly outFeatures: number;
}

function linearMatmul(shape: LinearShape): MatmulShape {
  return {
    m: shape.rows,
    n: shape.outFeatures,
    k: shape.inFeatures,
    transB: true,
  };
}

/**
 * Forward: `y = x·Wᵀ + b`, i.e. `y[r, o] = Σ_i x[r, i] · W[o, i] + b[o]` (W stored
 * `[out, in]` as in PyTorch; `bias` optional). Returns y `[rows, outFeatures]`.
 */
export function linearForward<T extends Arr>(
  x: T,
  w: Arr,
  bias: Arr | undefined,
  shape: LinearShape,
): T {
  const y = matmulForward(x, w, linearMatmul(shape));
  if (bias) {
    const { rows, outFeatures } = shape;
    checkLen("bias", bias, outFeatures);
    for (let r = 0; r < rows; r++) {
      for (let o = 0; o < outFeatures; o++) y[r * outFeatures + o] += bias[o];
    }
  }
  return y;
}

/**
 * Backward of {@link linearForward}; accumulates `dx += dy·W`, `dw += dyᵀ·x` and
 * `db[o] += Σ_r dy[r, o]`.
 */
export function linearBackward(
  dy: Arr,
  saved: { readonly x: Arr; readonly w: Arr },
  grads: { readonly dx?: Arr; readonly dw?: Arr; readonly db?: Arr },
  shape: LinearShape,
): void {
  matmulBackward(dy, { a: saved.x, b: saved.w }, {
    da: grads.dx,
    db: grads.dw,
  }, linearMatmul(shape));
  const { db } = grads;
  if (db) {
    const { rows, outFeatures } = shape;
    checkLen("grads.db", db, outFeatures);
    for (let r = 0; r < rows; r++) {
      for (let o = 0; o < outFeatures; o++) db[o] += dy[r * outFeatures + o];
    }
  }
}
