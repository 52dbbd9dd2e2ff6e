// The WebGPU runtime against the CPU runtime on random tiny configs (every
// switch and mode of model_gen.ts): prefill + decode logits to float rounding
// (or a rare int8 rounding flip), and identical greedy tokens.
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { test } from "../backend/gpu_gate.ts";
import { withGpu } from "../backend/webgpu_harness.ts";
import { weightsFromTrainedRun } from "../../src/infer/from_latents.ts";
import { InferenceModel } from "../../src/infer/runtime.ts";
import {
  WebGpuInferenceError,
  WebGpuInferenceModel,
} from "../../src/infer/webgpu_runtime.ts";
import {
  BYTE_TOKENIZER,
  latentParams,
  randomIds,
  tinyModel,
} from "./model_gen.ts";

/** Worst row of `|a − b|max / (|b|max + 1e-3)` over `[rows, vocab]` logits. */
function worstRowError(
  a: Float32Array,
  b: Float32Array,
  vocab: number,
): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let r = 0; r * vocab < a.length; r++) {
    let d = 0, m = 0;
    for (let i = r * vocab; i < (r + 1) * vocab; i++) {
      d = Math.max(d, Math.abs(a[i] - b[i]));
      m = Math.max(m, Math.abs(b[i]));
    }
    worst = Math.max(worst, d / (m + 1e-3));
  }
  return worst;
}

function argmax(v: Float32Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

test.gpu("WebGPU prefill + decode logits = the CPU runtime's, to float rounding or a rare int8 flip", async () => {
  await withGpu(async ({ kernels }) => {
    let tight = 0, runs = 0;
    await fc.assert(
      fc.asyncProperty(
        tinyModel,
        fc.integer({ min: 1, max: 11 }),
        async (m, split) => {
          const weights = weightsFromTrainedRun({
            ...m,
            tokenizer: BYTE_TOKENIZER,
            params: latentParams(m),
            lambda: 1,
          });
          const T = 12, V = m.config.vocab_size;
          const ids = randomIds(T, V, m.seed + 3);
          const cpu = await InferenceModel.create(weights);
          const gpu = WebGpuInferenceModel.create(weights, kernels);
          try {
            const cs = cpu.session(), gs = gpu.session();
            const want = new Float32Array(T * V), got = new Float32Array(T * V);
            want.set(cs.prefill(ids.subarray(0, split), { allLogits: true }));
            got.set(
              await gs.prefill(ids.subarray(0, split), { allLogits: true }),
            );
            for (let t = split; t < T; t++) {
              want.set(cs.decode(ids[t]), t * V);
              got.set(await gs.decode(ids[t]), t * V);
            }
            const err = worstRowError(got, want, V);
            runs++;
            if (err < 1e-5) tight++;
            assert.ok(err < 0.1, `relative error ${err}`);
            assert.equal(gs.position, T);
          } finally {
            cpu.release();
            gpu.release();
          }
        },
      ),
      { numRuns: 16, seed: 20261203 },
    );
    assert.ok(tight >= 0.8 * runs, `${tight} of ${runs} cases within 1e-5`);
  });
});

test.gpu("WebGPU greedy tokens = the CPU runtime's for a short generation", async () => {
  await withGpu(async ({ kernels }) => {
    const models = fc.sample(tinyModel, { numRuns: 4, seed: 99 });
    for (const m of models) {
      const weights = weightsFromTrainedRun({
        ...m,
        tokenizer: BYTE_TOKENIZER,
        params: latentParams(m),
        lambda: 1,
      });
      const cpu = await InferenceModel.create(weights);
      const gpu = WebGpuInferenceModel.create(weights, kernels);
      try {
        const prompt = randomIds(5, m.config.vocab_size, m.seed);
        const cs = cpu.session(), gs = gpu.session();
        let cl = cs.prefill(prompt), gl = await gs.prefill(prompt);
        const a: number[] = [], b: number[] = [];
        for (let i = 0; i < 10; i++) {
          a.push(argmax(cl));
          b.push(argmax(gl));
          cl = cs.decode(a[i]);
          gl = await gs.decode(b[i]);
        }
        assert.deepEqual(b, a);
      } finally {
        cpu.release();
        gpu.release();
      }
    }
  });
});

test.gpu("WebGPU sessions refuse a full context and bad ids; a sliding window keeps going", async () => {
  await withGpu(async ({ kernels }) => {
    const [m] = fc.sample(tinyModel, { numRuns: 1, seed: 3 });
    const weights = weightsFromTrainedRun({
      ...m,
      tokenizer: BYTE_TOKENIZER,
      params: latentParams(m),
      lambda: 1,
    });
    const gpu = WebGpuInferenceModel.create(weights, kernels);
    try {
      const s = gpu.session({ contextLength: 4 });
      await assert.rejects(s.prefill([1, 2, 3, 4, 5]), WebGpuInferenceError);
      await s.prefill([1, 2, 3, 4]);
      await assert.rejects(s.decode(5), /context is full/);
      await assert.rejects(
        gpu.session().prefill([m.config.vocab_size]),
        /not in \[0/,
      );
      const w = gpu.session({ contextLength: 3, slidingWindow: true });
      const l = await w.prefill([1, 2, 3, 4, 5, 6, 7]);
      assert.equal(l.length, m.config.vocab_size);
      assert.equal(w.position, 7);
    } finally {
      gpu.release();
    }
  });
});
