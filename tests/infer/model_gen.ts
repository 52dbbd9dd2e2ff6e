/**
 * Random tiny models for the runtime's tests: configs covering every switch,
 * bit maps covering every mode, latent weights, and the training model's
 * logits of them on the CPU backend.
 *
 * @module
 */
import fc from "fast-check";
import { OneBitLlmConfig } from "../../src/common/config.ts";
import type { LayerBitMap } from "../../src/common/layer_bit_map.ts";
import type { QuantMode } from "../../src/common/quant_mode.ts";
import { BYTE_TO_CHAR, Tokenizer } from "../../src/common/tokenizer.ts";
import { Rng } from "../../src/common/rng.ts";
import { Schema } from "effect";
import { modelTensors, tensorNumel } from "../../src/core/tensors.ts";
import { fakeQuantizeWeights } from "../../src/core/quantize.ts";
import { OneBitLlm } from "../../src/core/model.ts";
import { Tape } from "../../src/backend/tape.ts";
import type { CpuBackend } from "../../src/backend/cpu/cpu_backend.ts";
import { tensorMode } from "../../src/infer/from_latents.ts";

/** A byte-level tokenizer with no merges (256 tokens). */
export const BYTE_TOKENIZER: Tokenizer = new Tokenizer(
  [...BYTE_TO_CHAR],
  [],
  [],
);

const MODES: readonly QuantMode[] = ["f16", "eightbit", "ternary", "binary"];
const mode = fc.constantFrom(...MODES);

/** A random small model: config, bit map and a weight seed. */
export interface TinyModel {
  readonly config: OneBitLlmConfig;
  readonly bitMap: LayerBitMap;
  readonly seed: number;
  readonly std: number;
}

/** Configs over every switch, with bit maps over every mode. */
export const tinyModel: fc.Arbitrary<TinyModel> = fc.record({
  heads: fc.constantFrom(1, 2, 4),
  kvDiv: fc.constantFrom(1, 2, 4),
  hd: fc.constantFrom(2, 4, 6, 8),
  ffn: fc.integer({ min: 3, max: 40 }),
  layers: fc.integer({ min: 1, max: 3 }),
  vocab: fc.integer({ min: 256, max: 300 }),
  norm: fc.constantFrom("rms_norm" as const, "layer_norm" as const),
  rope: fc.constantFrom("neox" as const, "interleaved" as const),
  useRope: fc.boolean(),
  ffnKind: fc.constantFrom("swiglu", "relu2", "silu"),
  subln: fc.boolean(),
  qkNorm: fc.boolean(),
  residual: fc.boolean(),
  tie: fc.boolean(),
  dynamic: fc.boolean(),
  embedding: mode,
  head: mode,
  layerModes: fc.array(mode, { minLength: 3, maxLength: 3 }),
  overrides: fc.array(
    fc.tuple(
      fc.integer({ min: 0, max: 2 }),
      fc.constantFrom(
        "attn.q",
        "attn.k",
        "attn.v",
        "attn.o",
        "mlp.up",
        "mlp.down",
        "mlp.gate",
      ),
      mode,
    ),
    { maxLength: 4 },
  ),
  seed: fc.integer({ min: 0, max: 1e6 }),
  std: fc.constantFrom(0.02, 0.1, 0.5),
}).map((r) => {
  const kv = r.heads % r.kvDiv === 0 ? r.heads / r.kvDiv : r.heads;
  const config = Schema.decodeSync(OneBitLlmConfig)({
    vocab_size: r.vocab,
    hidden_size: r.heads * r.hd,
    num_heads: r.heads,
    num_kv_heads: kv,
    num_layers: r.layers,
    intermediate_size: r.ffn,
    max_seq_len: 16,
    norm_type: r.norm,
    rope_style: r.rope,
    use_rope: r.useRope,
    use_swiglu: r.ffnKind === "swiglu",
    use_relu2: r.ffnKind === "relu2",
    use_subln: r.subln,
    use_qk_norm: r.qkNorm,
    use_residual_scaling: r.residual,
    tie_embeddings: r.tie,
    use_dynamic_threshold: r.dynamic,
  });
  const overrides: Record<string, QuantMode> = {};
  for (const [l, lin, m] of r.overrides) {
    if (l < r.layers && (lin !== "mlp.gate" || config.use_swiglu)) {
      overrides[`${l}.${lin}`] = m;
    }
  }
  const bitMap: LayerBitMap = {
    embedding: r.embedding,
    layer_modes: r.layerModes.slice(0, r.layers),
    lm_head: r.tie ? r.embedding : r.head,
    overrides,
  };
  return { config, bitMap, seed: r.seed, std: r.std };
});

/**
 * Latent weights of `m`: normal(0, std) matrices, norm weights near 1 and
 * biases near 0; f16-mode tensors already on f16 values (the training model
 * runs them unrounded, inference from their f16 form).
 */
export function latentParams(m: TinyModel): Map<string, Float32Array> {
  const rng = new Rng(m.seed);
  const normal = () =>
    Math.sqrt(-2 * Math.log(1 - rng.nextFloat())) *
    Math.cos(2 * Math.PI * rng.nextFloat());
  const out = new Map<string, Float32Array>();
  for (const spec of modelTensors(m.config)) {
    const n = tensorNumel(spec);
    let v: Float32Array = new Float32Array(n);
    if (spec.kind === "norm") {
      const bias = spec.name.endsWith(".bias");
      for (let i = 0; i < n; i++) v[i] = (bias ? 0 : 1) + 0.1 * normal();
    } else {
      for (let i = 0; i < n; i++) v[i] = m.std * normal();
      if (tensorMode(spec, m.bitMap) === "f16") {
        v = fakeQuantizeWeights("f16", v, spec.shape[0], spec.shape[1]);
      }
    }
    out.set(spec.name, v);
  }
  return out;
}

/** Logits `[batch·seqLen, vocab]` of the training model (tape, CPU backend). */
export async function tapeLogits(
  backend: CpuBackend,
  m: TinyModel,
  params: ReadonlyMap<string, Float32Array>,
  ids: Int32Array,
  batch: number,
  seqLen: number,
  lambda: number,
): Promise<Float32Array> {
  const model = OneBitLlm.fromValues(m.config, m.bitMap, backend, params);
  const tape = new Tape(backend);
  const idsT = backend.upload(ids);
  try {
    const out = model.logits(tape, idsT, { batch, seqLen, lambda });
    return await backend.read(out.value);
  } finally {
    tape.reset();
    backend.release(idsT);
    model.release();
  }
}

/** Random token ids in `[0, vocab)`. */
export function randomIds(n: number, vocab: number, seed: number): Int32Array {
  const rng = new Rng(seed);
  return Int32Array.from({ length: n }, () => rng.nextInt(vocab));
}
