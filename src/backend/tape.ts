/**
 * Reverse-mode autograd as a tape of backward closures over a {@link Backend}.
 *
 * An op computes its output with the backend's forward kernels and records one
 * closure that adds the gradients of its inputs (the backend's `*Backward`
 * kernels accumulate). {@link Tape.backward} runs the closures newest first.
 * Adding an op is writing one function (see `docs/ENGINE.md`):
 *
 * ```ts ignore
 * function double(tape: Tape, x: Var): Var {
 *   const out = tape.output(x.size);
 *   tape.backend.fill(out.value, 0);
 *   tape.backend.addScaled(out.value, x.value, 2);
 *   tape.record([x], () => tape.backend.addScaled(tape.grad(x), tape.grad(out), 2));
 *   return out;
 * }
 * ```
 *
 * Every tensor an op allocates through the tape is released by
 * {@link Tape.reset}, so one training step allocates nothing that outlives it
 * (the backends pool released storage by size).
 *
 * @module
 */
import type { Backend, Tensor } from "./backend.ts";

/** A value on the tape: a tensor plus, when it needs one, its gradient. */
export interface Var {
  /** The value. */
  readonly value: Tensor;
  /** Number of elements. */
  readonly size: number;
  /** Whether gradients flow into this value. */
  readonly requiresGrad: boolean;
}

interface VarState extends Var {
  grad: Tensor | undefined;
}

/** A recorded forward pass, ready to be differentiated. */
export class Tape {
  /** The backend every op of this tape runs on. */
  readonly backend: Backend;
  readonly #steps: Array<() => void> = [];
  readonly #temps: Tensor[] = [];
  #seed = 1;

  /** A tape recording onto `backend`. */
  constructor(backend: Backend) {
    this.backend = backend;
  }

  /**
   * A trainable leaf: `value` and `grad` are owned by the caller (a model's
   * parameter and its gradient buffer), so {@link reset} keeps them.
   */
  param(value: Tensor, grad: Tensor): Var {
    const v: VarState = { value, size: value.size, requiresGrad: true, grad };
    return v;
  }

  /** An input that needs no gradient (ids, targets, data). */
  constant(value: Tensor): Var {
    return { value, size: value.size, requiresGrad: false };
  }

  /** A scratch tensor released by {@link reset}. */
  scratch(size: number, dtype: "f32" | "i32" = "f32"): Tensor {
    const t = this.backend.zeros(size, dtype);
    this.#temps.push(t);
    return t;
  }

  /** A new op output of `size` elements that takes gradients when any of `inputs` does. */
  output(size: number, inputs: ReadonlyArray<Var> = []): Var {
    const requiresGrad = inputs.length === 0 ||
      inputs.some((v) => v.requiresGrad);
    const v: VarState = {
      value: this.scratch(size),
      size,
      requiresGrad,
      grad: undefined,
    };
    return v;
  }

  /** Records `backward` if any of `inputs` takes gradients. */
  record(inputs: ReadonlyArray<Var>, backward: () => void): void {
    if (inputs.some((v) => v.requiresGrad)) this.#steps.push(backward);
  }

  /**
   * The gradient buffer of `v`, zero-filled on first use. Only for values that
   * take gradients.
   */
  grad(v: Var): Tensor {
    const s = v as VarState;
    if (!s.requiresGrad) {
      throw new Error("Tape.grad: this value does not take gradients");
    }
    if (s.grad === undefined) s.grad = this.scratch(v.size);
    return s.grad;
  }

  /** Whether `v` takes gradients (ops skip the backward of inputs that do not). */
  wants(v: Var): boolean {
    return v.requiresGrad;
  }

  /**
   * Runs every recorded backward, newest first, after seeding `d root = value`
   * (for a loss, the scale of this micro-batch, e.g. 1 / accumulation steps).
   */
  backward(root: Var, value = 1): void {
    this.#seed = value;
    this.backend.fill(this.grad(root), value);
    for (let i = this.#steps.length - 1; i >= 0; i--) this.#steps[i]();
  }

  /**
   * The seed of the running {@link backward}: a loss op at the root of the tape
   * scales its gradient by it without reading its own gradient back from the
   * device.
   */
  get seed(): number {
    return this.#seed;
  }

  /** Releases every scratch tensor and forgets the recording. */
  reset(): void {
    for (const t of this.#temps) this.backend.release(t);
    this.#temps.length = 0;
    this.#steps.length = 0;
  }
}
