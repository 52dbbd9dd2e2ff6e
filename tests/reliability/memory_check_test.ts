/**
 * The up-front memory check of training (issue 11 §4.5): the estimate agrees
 * with what a real training step keeps alive on the backend, and a run that
 * cannot fit fails with one line naming what needs the memory.
 */
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect, Exit } from "effect";
import type { Backend, Tensor } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu/cpu_backend.ts";
import { OneBitLlm } from "../../src/core/model.ts";
import type { OneBitLlmConfig } from "../../src/common/config.ts";
import { resolveBitMap } from "../../src/common/config.ts";
import { PRESETS } from "../../src/common/presets.ts";
import { AdamW } from "../../src/train/optimizer.ts";
import { defaultSettings, Trainer } from "../../src/train/trainer.ts";
import {
  availableMemoryBytes,
  checkTrainingMemory,
  trainingMemory,
} from "../../src/train/memory_check.ts";

const cpu = await CpuBackend.create();

/** `inner` with the bytes of its live tensors counted (and their peak). */
function counting(inner: Backend): { backend: Backend; peak: () => number } {
  let live = 0, peak = 0;
  const add = (bytes: number) => {
    live += bytes;
    peak = Math.max(peak, live);
  };
  const backend = new Proxy(inner, {
    get(target, prop) {
      if (prop === "zeros") {
        return (size: number, dtype?: "f32" | "i32") => {
          add(4 * size);
          return target.zeros(size, dtype);
        };
      }
      if (prop === "upload") {
        return (data: Float32Array | Int32Array) => {
          add(4 * data.length);
          return target.upload(data);
        };
      }
      if (prop === "release") {
        return (t: Tensor) => {
          live -= 4 * t.size;
          target.release(t);
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { backend, peak: () => peak };
}

const smallConfig = fc.record({
  heads: fc.integer({ min: 1, max: 3 }),
  headDim: fc.integer({ min: 1, max: 4 }).map((h) => 2 * h),
  kvGroups: fc.constantFrom(1, 0), // 0: num_kv_heads = 1
  layers: fc.integer({ min: 1, max: 3 }),
  ffn: fc.integer({ min: 1, max: 40 }),
  vocab: fc.integer({ min: 8, max: 300 }),
  seq: fc.integer({ min: 1, max: 12 }),
  batch: fc.integer({ min: 1, max: 4 }),
  norm: fc.constantFrom("rms_norm" as const, "layer_norm" as const),
  flags: fc.record({
    tie_embeddings: fc.boolean(),
    use_swiglu: fc.boolean(),
    use_subln: fc.boolean(),
    use_rope: fc.boolean(),
    use_qk_norm: fc.boolean(),
    use_ternary: fc.boolean(),
  }),
}).map((c): [OneBitLlmConfig, number, number] => [
  {
    ...PRESETS.tiny,
    ...c.flags,
    vocab_size: c.vocab,
    hidden_size: c.heads * c.headDim,
    num_heads: c.heads,
    num_kv_heads: c.kvGroups === 1 ? c.heads : 1,
    num_layers: c.layers,
    intermediate_size: c.ffn,
    max_seq_len: c.seq,
    norm_type: c.norm,
  },
  c.batch,
  c.seq,
]);

Deno.test("trainingMemory is what a training step keeps alive on the backend (±10%)", async () => {
  await fc.assert(
    fc.asyncProperty(smallConfig, async ([config, batch, seqLen]) => {
      const settings = defaultSettings(config, 1, { batch, seqLen });
      const { backend, peak } = counting(cpu);
      const model = OneBitLlm.init(config, resolveBitMap(config), backend, 1);
      const optimizer = new AdamW(model);
      const ids = Int32Array.from(
        { length: batch * (seqLen + 1) + 5 },
        (_, i) => (i * 7) % config.vocab_size,
      );
      try {
        await Effect.runPromise(
          new Trainer(model, optimizer, ids, settings).runStep(),
        );
      } finally {
        optimizer.release();
        model.release();
      }
      const want = trainingMemory(config, settings).totalBytes;
      const ratio = want / peak();
      assert.ok(
        ratio >= 0.9 && ratio <= 1.1,
        `estimate ${want} B, step peak ${peak()} B (${ratio.toFixed(3)}×)`,
      );
    }),
    { numRuns: 60 },
  );
});

const failureOf = (
  config: OneBitLlmConfig,
  batch: number,
  seqLen: number,
  available: number,
): string => {
  const e = Effect.runSync(
    Effect.flip(checkTrainingMemory(config, { batch, seqLen }, available)),
  );
  assert.equal(e._tag, "TrainError");
  assert.ok(!e.message.includes("\n"), e.message);
  return e.message;
};

Deno.test("checkTrainingMemory names what needs the memory", () => {
  const tiny = PRESETS.tiny;
  const GiB = 2 ** 30;
  // A batch too large: activations dominate.
  const batch = failureOf(tiny, 100_000, 64, 8 * GiB);
  assert.match(
    batch,
    /^--batch 100000 × --seq 64 \(the config's max_seq_len\): training needs about [\d,.]+ GiB of memory, more than the 8 GiB available/,
  );
  assert.match(batch, /lower --batch/);
  // A model too large: parameters dominate, the fields are named.
  const wide = { ...tiny, hidden_size: 65_536, intermediate_size: 262_144 };
  const model = failureOf(wide, 1, 64, 8 * GiB);
  for (const field of ["hidden_size 65,536", "intermediate_size 262,144"]) {
    assert.ok(model.includes(field), model);
  }
  assert.match(model, /choose a smaller model/);
  // A long sequence: the attention probabilities dominate.
  const long = { ...tiny, max_seq_len: 2 ** 20 };
  const seq = failureOf(long, 16, 2 ** 20, 8 * GiB);
  assert.match(seq, /^--seq 1048576 \(the config's max_seq_len\): /);
  assert.match(seq, /attention probabilities/);
  // Enough memory, or none known: no failure.
  for (const available of [1e15, undefined]) {
    assert.ok(Exit.isSuccess(
      Effect.runSyncExit(
        checkTrainingMemory(tiny, { batch: 16, seqLen: 64 }, available),
      ),
    ));
  }
});

Deno.test("availableMemoryBytes: a positive number no larger than the machine's memory", () => {
  const n = availableMemoryBytes();
  assert.ok(n !== undefined && n > 0, String(n));
  assert.ok(n <= Deno.systemMemoryInfo().total, String(n));
});
