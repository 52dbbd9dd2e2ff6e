/**
 * Element-wise ops: SiLU, SwiGLU, ReLU², product, residual add and scaling.
 *
 * @module
 */
import { alloc, type Arr, checkGrad, checkLen } from "./arr.ts";

/** Logistic sigmoid `σ(x) = 1 / (1 + e^(−x))`, evaluated without overflow. */
export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/** `silu(x) = x·σ(x)`. */
function silu(x: number): number {
  return x * sigmoid(x);
}

/** `silu'(x) = σ(x)·(1 + x·(1 − σ(x)))`. */
function siluGrad(x: number): number {
  const s = sigmoid(x);
  return s * (1 + x * (1 - s));
}

/** Forward: `y = silu(x) = x·σ(x)`. */
export function siluForward<T extends Arr>(x: T): T {
  const y = alloc(x, x.length);
  for (let i = 0; i < x.length; i++) y[i] = silu(x[i]);
  return y;
}

/** Backward of {@link siluForward}; accumulates `dx += dy·σ(x)·(1 + x·(1 − σ(x)))`. */
export function siluBackward(
  dout: Arr,
  saved: { readonly x: Arr },
  grads: { readonly dx?: Arr },
): void {
  const { x } = saved;
  const { dx } = grads;
  checkLen("dout", dout, x.length);
  checkGrad("grads.dx", dx, x.length);
  if (!dx) return;
  for (let i = 0; i < x.length; i++) dx[i] += dout[i] * siluGrad(x[i]);
}

/** Forward: `y = silu(gate)·up` (the SwiGLU FFN activation). */
export function swigluForward<T extends Arr>(gate: T, up: Arr): T {
  checkLen("up", up, gate.length);
  const y = alloc(gate, gate.length);
  for (let i = 0; i < gate.length; i++) y[i] = silu(gate[i]) * up[i];
  return y;
}

/**
 * Backward of {@link swigluForward}; accumulates `dgate += dy·up·silu'(gate)` and
 * `dup += dy·silu(gate)`.
 */
export function swigluBackward(
  dout: Arr,
  saved: { readonly gate: Arr; readonly up: Arr },
  grads: { readonly dgate?: Arr; readonly dup?: Arr },
): void {
  const { gate, up } = saved;
  const { dgate, dup } = grads;
  const n = gate.length;
  checkLen("saved.up", up, n);
  checkLen("dout", dout, n);
  checkGrad("grads.dgate", dgate, n);
  checkGrad("grads.dup", dup, n);
  for (let i = 0; i < n; i++) {
    if (dgate) dgate[i] += dout[i] * up[i] * siluGrad(gate[i]);
    if (dup) dup[i] += dout[i] * silu(gate[i]);
  }
}

/** Forward: `y = relu(x)² = max(x, 0)²`. */
export function relu2Forward<T extends Arr>(x: T): T {
  const y = alloc(x, x.length);
  for (let i = 0; i < x.length; i++) {
    const r = Math.max(x[i], 0);
    y[i] = r * r;
  }
  return y;
}

/** Backward of {@link relu2Forward}; accumulates `dx += dy·2·max(x, 0)`. */
export function relu2Backward(
  dout: Arr,
  saved: { readonly x: Arr },
  grads: { readonly dx?: Arr },
): void {
  const { x } = saved;
  const { dx } = grads;
  checkLen("dout", dout, x.length);
  checkGrad("grads.dx", dx, x.length);
  if (!dx) return;
  for (let i = 0; i < x.length; i++) dx[i] += dout[i] * 2 * Math.max(x[i], 0);
}

/** Forward: element-wise product `y = a·b` (e.g. a gated FFN with another activation). */
export function mulForward<T extends Arr>(a: T, b: Arr): T {
  checkLen("b", b, a.length);
  const y = alloc(a, a.length);
  for (let i = 0; i < a.length; i++) y[i] = a[i] * b[i];
  return y;
}

/** Backward of {@link mulForward}; accumulates `da += dy·b` and `db += dy·a`. */
export function mulBackward(
  dout: Arr,
  saved: { readonly a: Arr; readonly b: Arr },
  grads: { readonly da?: Arr; readonly db?: Arr },
): void {
  const { a, b } = saved;
  const { da, db } = grads;
  const n = a.length;
  checkLen("saved.b", b, n);
  checkLen("dout", dout, n);
  checkGrad("grads.da", da, n);
  checkGrad("grads.db", db, n);
  for (let i = 0; i < n; i++) {
    if (da) da[i] += dout[i] * b[i];
    if (db) db[i] += dout[i] * a[i];
  }
}

/** Forward: residual add `y = a + b`. */
export function addForward<T extends Arr>(a: T, b: Arr): T {
  checkLen("b", b, a.length);
  const y = alloc(a, a.length);
  for (let i = 0; i < a.length; i++) y[i] = a[i] + b[i];
  return y;
}

/** Backward of {@link addForward}; accumulates `da += dy` and `db += dy`. */
export function addBackward(
  dout: Arr,
  grads: { readonly da?: Arr; readonly db?: Arr },
): void {
  const { da, db } = grads;
  checkGrad("grads.da", da, dout.length);
  checkGrad("grads.db", db, dout.length);
  for (let i = 0; i < dout.length; i++) {
    if (da) da[i] += dout[i];
    if (db) db[i] += dout[i];
  }
}

/** Forward: scaling by a constant `y = c·x` (residual scaling). */
export function scaleForward<T extends Arr>(x: T, c: number): T {
  const y = alloc(x, x.length);
  for (let i = 0; i < x.length; i++) y[i] = c * x[i];
  return y;
}

/** Backward of {@link scaleForward}; accumulates `dx += c·dy`. */
export function scaleBackward(
  dout: Arr,
  grads: { readonly dx?: Arr },
  c: number,
): void {
  const { dx } = grads;
  checkGrad("grads.dx", dx, dout.length);
  if (!dx) return;
  for (let i = 0; i < dout.length; i++) dx[i] += c * dout[i];
}
