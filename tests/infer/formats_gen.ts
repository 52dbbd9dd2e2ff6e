/**
 * Models for the format tests: random tiny ones (over every switch and mode,
 * from the runtime tests' generator) with a tokenizer of exactly the vocab
 * size, and comparisons of {@link ModelWeights}.
 *
 * @module
 */
import { strict as assert } from "node:assert";
import {
  BYTE_TO_CHAR,
  END_OF_TEXT,
  Tokenizer,
} from "../../src/common/tokenizer.ts";
import { roundToF16 } from "../../src/core/f16.ts";
import { modelTensors } from "../../src/core/tensors.ts";
import { weightsFromTrainedRun } from "../../src/infer/from_latents.ts";
import type { ModelWeights } from "../../src/infer/weights.ts";
import { InferenceModel } from "../../src/infer/runtime.ts";
import { latentParams, type TinyModel } from "./model_gen.ts";

/**
 * A byte-level BPE of exactly `size` tokens (≥ 256): the 256 bytes, merges of
 * printable byte pairs, and (when size > 256) `<|endoftext|>` last.
 */
export function tokenizerOfSize(size: number): Tokenizer {
  const tokens = [...BYTE_TO_CHAR];
  if (size === 256) return new Tokenizer(tokens, [], []);
  const merges: [string, string][] = [];
  for (let i = 0; tokens.length < size - 1; i++) {
    const l = BYTE_TO_CHAR[33 + (i % 90)],
      r = BYTE_TO_CHAR[33 + ((i / 90) | 0)];
    merges.push([l, r]);
    tokens.push(l + r);
  }
  tokens.push(END_OF_TEXT);
  return new Tokenizer(tokens, merges, [{
    id: size - 1,
    content: END_OF_TEXT,
  }]);
}

/** The inference weights of a random tiny model at quantization λ (0 or 1). */
export function tinyWeights(m: TinyModel, lambda = 1): ModelWeights {
  return weightsFromTrainedRun({
    config: m.config,
    bitMap: m.bitMap,
    tokenizer: tokenizerOfSize(m.config.vocab_size),
    params: latentParams(m),
    lambda,
  });
}

/** Asserts two tokenizers have the same tokens, merges and special tokens. */
export function assertSameTokenizer(a: Tokenizer, b: Tokenizer): void {
  assert.deepEqual(a.tokens, b.tokens);
  assert.deepEqual(a.merges, b.merges);
  assert.deepEqual(a.specialTokens, b.specialTokens);
}

/**
 * Asserts `got` holds `want` exactly, except that dense non-norm tensors are
 * compared after f16 rounding when `f16Dense` (formats store them as f16).
 */
export function assertSameWeights(
  got: ModelWeights,
  want: ModelWeights,
  f16Dense = true,
): void {
  assert.deepEqual(got.config, want.config);
  assert.deepEqual(got.bitMap, want.bitMap);
  assertSameTokenizer(got.tokenizer, want.tokenizer);
  assert.deepEqual(
    [...got.tensors.keys()].sort(),
    [...want.tensors.keys()].sort(),
  );
  for (const spec of modelTensors(want.config)) {
    const g = got.tensors.get(spec.name)!, w = want.tensors.get(spec.name)!;
    if (w.kind === "dense" && spec.kind !== "norm" && f16Dense) {
      assert.equal(g.kind, "dense", spec.name);
      assert.deepEqual(
        g.kind === "dense" ? g.data : undefined,
        w.data.map(roundToF16),
        spec.name,
      );
    } else {
      assert.deepEqual(g, w, spec.name);
    }
  }
}

/** The first `n` greedy tokens after `prompt`, from the inference runtime (prefill, then decode). */
export async function greedyTokens(
  weights: ModelWeights,
  prompt: readonly number[],
  n: number,
): Promise<number[]> {
  const model = await InferenceModel.create(weights);
  try {
    const session = model.session();
    const argmax = (l: Float32Array) =>
      l.reduce((b, v, i) => (v > l[b] ? i : b), 0);
    const out = [argmax(session.prefill(prompt))];
    while (out.length < n) {
      out.push(argmax(session.decode(out[out.length - 1])));
    }
    session.release();
    return out;
  } finally {
    model.release();
  }
}
