/**
 * A custom training pipeline composed from ternary-core's pieces: your own
 * documents as an effect Stream, your own tokenizer size, a sigmoid soft→hard
 * quantization schedule and a linear LR decay, on the CPU backend.
 *
 * Run: deno run -A examples/custom_pipeline.ts
 *
 * @module
 */
import { Effect, Stream } from "effect";
import { ComputeBackend } from "@ternary/core/backend";
import { PRESETS, trainBpe } from "@ternary/core/common";
import { quantPhases } from "@ternary/core/core";
import { acquireTraining, defaultSettings, Trainer } from "@ternary/core/train";

// 1. Data: any Stream of documents (here generated; a file, an HTTP body or a
//    database cursor works the same way).
const documents = Stream.range(0, 400).pipe(
  Stream.map((i) =>
    `Document ${i}: the ${["red", "green", "blue"][i % 3]} ${
      ["fox", "owl", "cat", "elk"][i % 4]
    } ${["jumps over", "looks at", "runs past"][i % 3]} the ${
      ["lazy dog", "old fence", "quiet river"][i % 3]
    }.`
  ),
);

const program = Effect.gen(function* () {
  const docs = yield* Stream.runCollect(documents);

  // 2. Tokenizer: a byte-level BPE trained on the documents.
  const tokenizer = trainBpe(docs, { vocabSize: 320 });
  const tokens = tokenizer.encodeDocuments(docs);

  // 3. Model: the tiny preset with this vocabulary.
  const config = {
    ...PRESETS.tiny,
    vocab_size: tokenizer.vocabSize,
    max_seq_len: 32,
  };

  // 4. Schedules: 20 full-precision steps, then a sigmoid λ ramp over 40 steps,
  //    with linear LR decay after a short warmup.
  const steps = 100;
  const settings = defaultSettings(config, steps, {
    batch: 8,
    seqLen: 32,
    lambda: quantPhases({
      fpSteps: 20,
      softSteps: 40,
      shape: { kind: "sigmoid", sharpness: 8 },
    }),
    lr: { kind: "linear", peakLr: 3e-3, warmupSteps: 10, totalSteps: steps },
  });

  // 5. Train on the compute backend provided below; the model and optimizer
  //    tensors are released when the scope closes.
  const { model, optimizer } = yield* acquireTraining(config, settings);
  const trainer = new Trainer(model, optimizer, tokens, settings);
  for (let i = 0; i < steps; i++) {
    const r = yield* trainer.runStep();
    if (r.step % 20 === 0) {
      console.log(
        `step ${r.step}  loss ${r.loss.toFixed(3)}  λ ${
          r.lambda.toFixed(2)
        }  lr ${r.lr.toExponential(2)}`,
      );
    }
  }
  const { ppl } = yield* trainer.evaluate(tokens, 16);
  console.log(`perplexity on the training documents: ${ppl.toFixed(2)}`);
});

// The CPU backend (WebAssembly SIMD); `ComputeBackend.auto` picks a GPU when there is one.
Effect.runPromise(
  program.pipe(Effect.scoped, Effect.provide(ComputeBackend.cpu)),
);
