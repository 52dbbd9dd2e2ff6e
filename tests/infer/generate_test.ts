import { strict as assert } from "node:assert";
import { Effect, Stream } from "effect";
import fc from "fast-check";
import { weightsFromTrainedRun } from "../../src/infer/from_latents.ts";
import { InferenceModel } from "../../src/infer/runtime.ts";
import {
  generate,
  type GenerateOptions,
  type GenerationEvent,
} from "../../src/infer/generate.ts";
import { argmax } from "../../src/infer/sampling.ts";
import { BYTE_TOKENIZER, latentParams, tinyModel } from "./model_gen.ts";

const m = fc.sample(tinyModel, { numRuns: 1, seed: 11 })[0];
const weights = weightsFromTrainedRun({
  ...m,
  config: { ...m.config, max_seq_len: 16 },
  tokenizer: BYTE_TOKENIZER,
  params: latentParams(m),
  lambda: 1,
});

const run = (
  model: InferenceModel,
  prompt: number[],
  o: GenerateOptions,
  contextLength?: number,
): Promise<GenerationEvent[]> => {
  const s = model.session({ contextLength });
  return Effect.runPromise(Stream.runCollect(generate(s, prompt, o))).finally(
    () => s.release(),
  );
};

Deno.test("generate: greedy continues with the argmax of the full forward; ends at maxTokens", async () => {
  const model = await InferenceModel.create(weights);
  try {
    const prompt = [72, 105, 33];
    const events = await run(model, prompt, { temperature: 0, maxTokens: 5 });
    const tokens = events.flatMap((e) => (e._tag === "Token" ? [e.id] : []));
    assert.equal(tokens.length, 5);
    const end = events.at(-1)!;
    assert.ok(end._tag === "End" && end.reason === "length");
    assert.equal(end.generatedTokens, 5);
    const seq = [...prompt];
    for (const t of tokens) {
      const V = model.config.vocab_size;
      const l = model.logits(seq, 1, seq.length);
      assert.equal(t, argmax(l.subarray((seq.length - 1) * V)));
      seq.push(t);
    }
  } finally {
    model.release();
  }
});

Deno.test("generate: the same seed gives the same text; the context limit ends it with a reason", async () => {
  const model = await InferenceModel.create(weights);
  try {
    const o = { temperature: 1.5, topK: 50, seed: 7, maxTokens: 8 };
    const a = await run(model, [65, 66], o);
    const b = await run(model, [65, 66], o);
    assert.deepEqual(
      a,
      b.map((e, i) =>
        e._tag === "End" && a[i]._tag === "End"
          ? {
            ...e,
            promptSeconds: a[i].promptSeconds,
            generateSeconds: a[i].generateSeconds,
          }
          : e
      ),
    );
    const full = await run(
      model,
      [65, 66],
      { temperature: 0, maxTokens: 50 },
      6,
    );
    const end = full.at(-1)!;
    assert.ok(end._tag === "End" && end.reason === "context");
    assert.equal(end.generatedTokens, 5); // 2 prompt tokens + 4 decoded + 1 last
  } finally {
    model.release();
  }
});

Deno.test("generate: a prompt longer than the context and bad options fail with InferenceError", async () => {
  const model = await InferenceModel.create(weights);
  try {
    const s = model.session({ contextLength: 4 });
    const exit = await Effect.runPromiseExit(
      Stream.runDrain(generate(s, [1, 2, 3, 4, 5], { temperature: 0 })),
    );
    assert.ok(exit._tag === "Failure");
    assert.match(String(exit.cause), /context length 4/);
    const bad = await Effect.runPromiseExit(
      Stream.runDrain(generate(s, [1], { temperature: 1, topP: 2 })),
    );
    assert.match(String(bad._tag === "Failure" && bad.cause), /topP/);
  } finally {
    model.release();
  }
});
