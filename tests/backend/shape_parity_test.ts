// One table of good and bad shapes and settings, run against the reference ops,
// the CPU backend and the WebGPU backend: all three must accept the same inputs
// and reject the same ones with the same RangeError message (they share the
// validators of src/backend/shapes.ts). The one documented exception, WebGPU's
// head-dimension limit, is asserted as such.
import { strict as assert } from "node:assert";
import type { Backend, Tensor } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu/cpu_backend.ts";
import * as ref from "../../src/backend/reference/mod.ts";
import type {
  AdamWStep,
  AttentionShape,
  CrossEntropyShape,
  EmbeddingShape,
  FakeQuantOptions,
  MatmulOptions,
  NormShape,
  RopeShape,
  WeightQuantMode,
} from "../../src/backend/shapes.ts";
import { WebGpuBackend } from "../../src/backend/webgpu/webgpu_backend.ts";
import { test } from "./gpu_gate.ts";

/** One row of the table: the same call on the reference and on a backend. */
interface Case {
  readonly name: string;
  readonly ref: () => void;
  readonly backend: (b: Backend, t: Tensors) => void;
  /** A limit of the WebGPU backend only: the message it rejects the case with. */
  readonly webgpuOnly?: string;
}

/** Tensor makers of one backend, released after the case. */
interface Tensors {
  f32(n: number): Tensor;
  i32(values: readonly number[]): Tensor;
}

// Sizes computed from a bad shape may be fractional or negative; any size will do
// for those, since the shape is checked before the sizes.
const size = (n: number): number =>
  Number.isFinite(n) ? Math.max(0, Math.floor(n)) : 1;
const arr = (n: number): Float64Array => new Float64Array(size(n)).fill(0.25);

function normCases(label: string, shape: NormShape): Case[] {
  const { rows, dim } = shape;
  return [
    {
      name: `rmsnorm ${label}`,
      ref: () => ref.rmsnormForward(arr(rows * dim), arr(dim), shape),
      backend: (b, t) =>
        b.rmsnorm(
          t.f32(rows * dim),
          t.f32(dim),
          t.f32(rows * dim),
          t.f32(rows),
          shape,
        ),
    },
    {
      name: `layernorm ${label}`,
      ref: () =>
        ref.layernormForward(arr(rows * dim), arr(dim), arr(dim), shape),
      backend: (b, t) =>
        b.layernorm(
          t.f32(rows * dim),
          t.f32(dim),
          t.f32(dim),
          t.f32(rows * dim),
          t.f32(rows),
          t.f32(rows),
          shape,
        ),
    },
    {
      name: `rmsnormBackward ${label}`,
      ref: () =>
        ref.rmsnormBackward(
          arr(rows * dim),
          { x: arr(rows * dim), g: arr(dim), rstd: arr(rows) },
          { dx: arr(rows * dim), dg: arr(dim) },
          shape,
        ),
      backend: (b, t) =>
        b.rmsnormBackward(
          t.f32(rows * dim),
          t.f32(rows * dim),
          t.f32(dim),
          t.f32(rows),
          t.f32(rows * dim),
          t.f32(dim),
          shape,
        ),
    },
  ];
}

function attentionCase(
  label: string,
  shape: AttentionShape,
  webgpuOnly?: string,
): Case {
  const { batch: B, seqLen: T, numHeads: H, numKvHeads: Hkv, headDim: D } =
    shape;
  const nq = B * T * H * D, nk = B * T * Hkv * D;
  return {
    name: `attention ${label}`,
    ref: () => ref.attentionForward(arr(nq), arr(nk), arr(nk), shape),
    backend: (b, t) =>
      b.attention(
        t.f32(nq),
        t.f32(nk),
        t.f32(nk),
        t.f32(nq),
        t.f32(B * H * T * T),
        shape,
      ),
    webgpuOnly,
  };
}

function ropeCase(label: string, shape: RopeShape): Case {
  const n = shape.batch * shape.seqLen * shape.heads * shape.headDim;
  return {
    name: `rope ${label}`,
    ref: () => ref.ropeForward(arr(n), shape),
    backend: (b, t) => b.rope(t.f32(n), t.f32(n), shape),
  };
}

function embeddingCase(
  label: string,
  shape: EmbeddingShape,
  ids: number[],
): Case {
  const { vocab, dim } = shape;
  return {
    name: `embedding ${label}`,
    ref: () => ref.embeddingForward(arr(vocab * dim), ids, shape),
    backend: (b, t) =>
      b.embedding(
        t.f32(vocab * dim),
        t.i32(ids),
        t.f32(ids.length * dim),
        shape,
      ),
  };
}

function crossEntropyCase(
  label: string,
  shape: CrossEntropyShape,
  targets: number[],
): Case {
  const n = shape.rows * shape.vocab;
  return {
    name: `crossEntropy ${label}`,
    ref: () => ref.crossEntropyForward(arr(n), targets, shape),
    backend: (b, t) =>
      b.crossEntropy(t.f32(n), t.i32(targets), t.f32(n), t.f32(2), shape),
  };
}

function matmulCase(label: string, o: MatmulOptions): Case {
  return {
    name: `matmul ${label}`,
    ref: () => ref.matmulForward(arr(o.m * o.k), arr(o.k * o.n), o),
    backend: (b, t) =>
      b.matmul(t.f32(o.m * o.k), t.f32(o.k * o.n), t.f32(o.m * o.n), o),
  };
}

function weightQuantCase(
  label: string,
  mode: WeightQuantMode,
  o: FakeQuantOptions,
): Case {
  const n = o.rows * o.cols;
  return {
    name: `fakeQuantWeights ${label}`,
    ref: () =>
      ref.weightFakeQuant(
        new Float32Array(size(n)).fill(0.25),
        o.rows,
        o.cols,
        mode,
        o.lambda,
      ),
    backend: (b, t) => b.fakeQuantWeights(t.f32(n), t.f32(n), mode, o),
  };
}

function actQuantCase(label: string, o: FakeQuantOptions): Case {
  const n = o.rows * o.cols;
  return {
    name: `fakeQuantActivations ${label}`,
    ref: () =>
      ref.actFakeQuant(
        new Float32Array(size(n)).fill(0.25),
        o.rows,
        o.cols,
        o.lambda,
      ),
    backend: (b, t) => b.fakeQuantActivations(t.f32(n), t.f32(n), o),
  };
}

function adamwCase(label: string, hyper: AdamWStep, maxNorm: number): Case {
  const n = 5;
  return {
    name: `adamw ${label}`,
    ref: () => {
      const g = arr(n);
      ref.clipGradNorm([g], maxNorm);
      ref.adamwStep(arr(n), g, arr(n), arr(n), hyper.step, hyper);
    },
    backend: (b, t) => {
      const g = t.f32(n), sumSq = t.f32(1);
      b.sumSquares([g], sumSq);
      b.adamw(t.f32(n), g, t.f32(n), t.f32(n), hyper, sumSq, maxNorm);
    },
  };
}

function backendOnly(
  name: string,
  message: string,
  backend: Case["backend"],
): Case {
  return {
    name,
    ref: () => {
      throw new RangeError(message);
    },
    backend,
  };
}

const rope: RopeShape = {
  batch: 2,
  seqLen: 3,
  heads: 2,
  headDim: 4,
  base: 10000,
  style: "neox",
};
const attention: AttentionShape = {
  batch: 2,
  seqLen: 3,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 8,
};
const hyper: AdamWStep = {
  lr: 1e-3,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  weightDecay: 0.1,
  step: 1,
};

const CASES: readonly Case[] = [
  ...normCases("good", { rows: 2, dim: 3, eps: 1e-5 }),
  ...normCases("eps = 0", { rows: 1, dim: 1, eps: 0 }),
  ...normCases("eps = Infinity", { rows: 2, dim: 3, eps: Infinity }),
  ...normCases("eps = NaN", { rows: 2, dim: 3, eps: NaN }),
  ...normCases("eps < 0", { rows: 2, dim: 3, eps: -1e-5 }),
  ...normCases("rows = 0", { rows: 0, dim: 3, eps: 1e-5 }),
  ...normCases("dim = 1.5", { rows: 2, dim: 1.5, eps: 1e-5 }),

  attentionCase("good (GQA)", attention),
  attentionCase("MHA, one token", { ...attention, seqLen: 1, numKvHeads: 4 }),
  attentionCase("numKvHeads ∤ numHeads", { ...attention, numKvHeads: 3 }),
  attentionCase("headDim = 0", { ...attention, headDim: 0 }),
  attentionCase("batch = -1", { ...attention, batch: -1 }),
  attentionCase(
    "headDim = 260",
    { ...attention, seqLen: 1, headDim: 260 },
    "shape.headDim must be ≤ 256 on the webgpu backend, got 260",
  ),

  ropeCase("neox", rope),
  ropeCase("interleaved, posOffset 5", {
    ...rope,
    style: "interleaved",
    posOffset: 5,
  }),
  ropeCase("base = 0.5", { ...rope, base: 0.5 }),
  ropeCase("headDim odd", { ...rope, headDim: 3 }),
  ropeCase("base = 0", { ...rope, base: 0 }),
  ropeCase("base = Infinity", { ...rope, base: Infinity }),
  ropeCase("base = NaN", { ...rope, base: NaN }),
  ropeCase("unknown style", { ...rope, style: "gptj" as RopeShape["style"] }),
  ropeCase("posOffset = -1", { ...rope, posOffset: -1 }),
  ropeCase("posOffset = 0.5", { ...rope, posOffset: 0.5 }),

  embeddingCase("good", { vocab: 5, dim: 3 }, [0, 4, 4, 1]),
  embeddingCase("no ids", { vocab: 5, dim: 3 }, []),
  embeddingCase("id = vocab", { vocab: 5, dim: 3 }, [0, 5]),
  embeddingCase("id = -1", { vocab: 5, dim: 3 }, [-1]),
  embeddingCase("vocab = 0", { vocab: 0, dim: 3 }, [0]),

  crossEntropyCase("good", { rows: 3, vocab: 4, labelSmoothing: 0.1 }, [
    0,
    -1,
    3,
  ]),
  crossEntropyCase("all ignored", { rows: 2, vocab: 4, ignoreIndex: -100 }, [
    -100,
    -100,
  ]),
  crossEntropyCase("target = vocab", { rows: 2, vocab: 4 }, [0, 4]),
  crossEntropyCase("labelSmoothing = 2", {
    rows: 2,
    vocab: 4,
    labelSmoothing: 2,
  }, [0, 1]),
  crossEntropyCase(
    "ignoreIndex = 0.5",
    { rows: 2, vocab: 4, ignoreIndex: 0.5 },
    [0, 1],
  ),
  crossEntropyCase("targets too short", { rows: 3, vocab: 4 }, [0, 1]),

  matmulCase("good", { m: 2, n: 3, k: 4 }),
  matmulCase("transposed", { m: 3, n: 2, k: 5, transA: true, transB: true }),
  matmulCase("m = 0", { m: 0, n: 3, k: 4 }),
  matmulCase("k = 1.5", { m: 2, n: 3, k: 1.5 }),

  ...(["ternary", "binary", "eightbit", "f16"] as const).map((mode) =>
    weightQuantCase(mode, mode, { rows: 3, cols: 4, lambda: 0.5 })
  ),
  weightQuantCase("rows = 0", "ternary", { rows: 0, cols: 4, lambda: 1 }),
  weightQuantCase("λ = 2", "ternary", { rows: 3, cols: 4, lambda: 2 }),
  weightQuantCase("λ = NaN", "binary", { rows: 3, cols: 4, lambda: NaN }),
  weightQuantCase("mode int4", "int4" as WeightQuantMode, {
    rows: 3,
    cols: 4,
    lambda: 1,
  }),
  weightQuantCase("rows = -1", "eightbit", { rows: -1, cols: 4, lambda: 1 }),
  actQuantCase("good", { rows: 3, cols: 4, lambda: 1 }),
  actQuantCase("λ < 0", { rows: 3, cols: 4, lambda: -0.1 }),
  actQuantCase("cols = 2.5", { rows: 3, cols: 2.5, lambda: 1 }),

  adamwCase("good", hyper, 1),
  adamwCase("no clipping", { ...hyper, step: 7 }, Infinity),
  adamwCase("beta1 = 1", { ...hyper, beta1: 1 }, 1),
  adamwCase("step = 0", { ...hyper, step: 0 }, 1),
  adamwCase("eps = Infinity", { ...hyper, eps: Infinity }, 1),
  adamwCase("lr < 0", { ...hyper, lr: -1 }, 1),
  adamwCase("maxNorm = 0", hyper, 0),

  // Backend-only settings (the reference has no such argument): same message.
  backendOnly(
    "activation gelu",
    'kind must be "silu" or "relu2", got gelu',
    (b, t) => b.activation("gelu" as "silu", t.f32(3), t.f32(3)),
  ),
  backendOnly(
    "clamp NaN",
    "limit must not be NaN",
    (b, t) => b.clamp(t.f32(3), NaN),
  ),
  backendOnly(
    "addScaled by Infinity",
    "s must be finite, got Infinity",
    (b, t) => b.addScaled(t.f32(3), t.f32(3), Infinity),
  ),
  backendOnly(
    "crossEntropyBackward by NaN",
    "scale must be finite, got NaN",
    (b, t) =>
      b.crossEntropyBackward(t.f32(4), t.i32([1, 0]), t.f32(4), NaN, {
        rows: 2,
        vocab: 2,
      }),
  ),
];

/** The error `f` throws (undefined when it returns). */
function thrown(f: () => void): Error | undefined {
  try {
    f();
    return undefined;
  } catch (e) {
    return e as Error;
  }
}

function runOn(b: Backend, c: Case): Error | undefined {
  const made: Tensor[] = [];
  const t: Tensors = {
    f32: (n) => {
      const x = b.upload(new Float32Array(size(n)).fill(0.25));
      made.push(x);
      return x;
    },
    i32: (values) => {
      const x = b.upload(Int32Array.from(values));
      made.push(x);
      return x;
    },
  };
  try {
    return thrown(() => c.backend(b, t));
  } finally {
    for (const x of made) b.release(x);
  }
}

const describe = (e: Error | undefined): string =>
  e === undefined ? "accepted" : `${e.name}: ${e.message}`;

/**
 * Runs every case on the reference and on `b`: the same outcome, and for a
 * rejection the same RangeError message (or, for a WebGPU limit, its own).
 */
function assertParity(b: Backend): void {
  let rejected = 0;
  for (const c of CASES) {
    const want = thrown(c.ref);
    const got = runOn(b, c);
    if (want !== undefined) {
      rejected++;
      assert.ok(
        want instanceof RangeError,
        `${c.name}: reference threw ${describe(want)}`,
      );
    }
    if (c.webgpuOnly !== undefined && b.kind === "webgpu") {
      assert.equal(want, undefined, `${c.name}: the reference accepts it`);
      assert.equal(describe(got), `RangeError: ${c.webgpuOnly}`, c.name);
    } else {
      assert.equal(describe(got), describe(want), `${c.name}: ${b.kind}`);
    }
  }
  // The table is not all one kind: both outcomes occur.
  assert.ok(
    rejected >= CASES.length / 3 && rejected < CASES.length,
    `${rejected} of ${CASES.length} rejected`,
  );
}

Deno.test("shape parity: the CPU backend accepts and rejects what the reference does", async () => {
  assertParity(await CpuBackend.create());
});

test.gpu("shape parity: the WebGPU backend accepts and rejects what the reference does", async () => {
  const gpu = await WebGpuBackend.create({ allowFallback: true });
  try {
    assertParity(gpu);
    // The accepted calls recorded valid commands.
    await gpu.read(gpu.zeros(1));
  } finally {
    gpu.destroy();
  }
});
