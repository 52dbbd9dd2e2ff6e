/**
 * The two evaluators agree at the size of `ref-4m` (random weights, random
 * tokens): the inference runtime on weights quantized once per mode, and the
 * training forward on the CPU backend.
 */
import { strict as assert } from "node:assert";
import { Effect } from "effect";
import { ComputeBackend } from "../../src/backend/service.ts";
import { PRESETS } from "../../src/common/presets.ts";
import type { QuantMode } from "../../src/common/quant_mode.ts";
import { Rng } from "../../src/common/rng.ts";
import { trainBpe } from "../../src/common/bpe_train.ts";
import { modelTensors, tensorNumel } from "../../src/core/tensors.ts";
import {
  latentEvaluator,
  selectEvalWindows,
} from "../../src/search/evaluator.ts";
import { weightsEvaluator } from "../../src/search/weights_evaluator.ts";

for (
  const [name, config] of [
    ["tiny", PRESETS.tiny],
    ["ref-4m", PRESETS["ref-4m"]],
  ] as const
) {
  Deno.test(`evaluators agree on every mode (${name} size)`, async () => {
    const rng = new Rng(7);
    const params = new Map<string, Float32Array>();
    for (const spec of modelTensors(config)) {
      const v = new Float32Array(tensorNumel(spec));
      for (let i = 0; i < v.length; i++) {
        v[i] = spec.kind === "norm" ? 1 : 0.05 * (rng.nextFloat() - 0.5);
      }
      params.set(spec.name, v);
    }
    const tokens = Int32Array.from(
      { length: 4 * config.max_seq_len + 1 },
      () => rng.nextInt(config.vocab_size),
    );
    const windows = selectEvalWindows(tokens.length, {
      seqLen: config.max_seq_len,
      evalTokens: tokens.length,
      seed: 0,
    });
    const model = {
      config,
      params,
      lambda: 1,
      tokenizer: trainBpe(["a b"], { vocabSize: 257 }),
    };
    await Effect.runPromise(
      Effect.scoped(Effect.gen(function* () {
        const fast = yield* weightsEvaluator(model, tokens, windows, 2);
        const slow = latentEvaluator(model, tokens, windows, 2);
        for (
          const mode of ["binary", "ternary", "eightbit", "f16"] as QuantMode[]
        ) {
          const map = {
            embedding: "f16" as const,
            layer_modes: Array.from({ length: config.num_layers }, () => mode),
          };
          const f = yield* fast(map);
          const s = yield* slow(map);
          assert.ok(
            Math.abs(f.loss - s.loss) < 2e-3,
            `${mode}: runtime loss ${f.loss}, training forward ${s.loss}`,
          );
        }
      })).pipe(Effect.provide(ComputeBackend.cpu)),
    );
  });
}
