/**
 * Hugging Face directories in transformers' BitNet layout, for continuing a
 * model in PyTorch (and importing one back):
 *
 * ```text
 * config.json             model_type "bitnet", BitNetForCausalLM, the sizes, hidden_act "silu",
 *                         rms_norm_eps, rope_theta, tie_word_embeddings, and
 *                         quantization_config {quant_method "bitnet", linear_class "autobitlinear",
 *                         quantization_mode "online"}; plus "ternary_core": {config, bit_map}
 * model.safetensors       the LATENT f32 weights under transformers' names
 * tokenizer.json          the byte-level BPE
 * tokenizer_config.json   PreTrainedTokenizerFast, bos/eos tokens
 * generation_config.json  bos/eos ids
 * ```
 *
 * Tensor names: `model.embed_tokens.weight`, `model.layers.N.input_layernorm.weight`,
 * `….self_attn.{q,k,v,o}_proj.weight`, `….self_attn.attn_sub_norm.weight`,
 * `….post_attention_layernorm.weight`, `….mlp.{gate,up,down}_proj.weight`,
 * `….mlp.ffn_sub_norm.weight`, `model.norm.weight`, and `lm_head.weight` when
 * the head is untied. transformers' online AutoBitLinear quantizes every block
 * linear with absmean ternary weights and per-token absmax int8 activations,
 * and keeps the embedding and head in full precision, so only models of that
 * shape are exported (others are refused naming the field).
 *
 * @module
 */
import { Effect, Schema } from "effect";
import {
  bitMapIssues,
  headDim,
  OneBitLlmConfig,
  type OneBitLlmConfig as Config,
} from "../../common/config.ts";
import { LayerBitMap, lmHeadMode } from "../../common/layer_bit_map.ts";
import { DataError } from "../../common/text_sources.ts";
import {
  END_OF_TEXT,
  loadTokenizer,
  type Tokenizer,
  tokenizerToJson,
} from "../../common/tokenizer.ts";
import { writeFileAtomic } from "../../common/atomic_write.ts";
import { pathExists } from "../../common/path_exists.ts";
import {
  readSafetensors,
  type SafetensorsTensor,
  writeSafetensors,
} from "../../common/safetensors.ts";
import { f16BitsToF32Array } from "../../core/f16.ts";
import { modelTensors, type TensorSpec } from "../../core/tensors.ts";
import { tensorMode } from "../from_latents.ts";
import { ExportError } from "./errors.ts";
import { tensorCount } from "./model_check.ts";
import { describeCause as describe } from "../../common/describe.ts";

/** A model as training holds it: config, bit map, tokenizer and latent weights. */
export interface HfModel {
  /** The architecture. */
  readonly config: Config;
  /** The mode of every linear, the embedding and the head. */
  readonly bitMap: LayerBitMap;
  /** The tokenizer; absent when the directory has no `tokenizer.json`. */
  readonly tokenizer: Tokenizer | undefined;
  /** Latent f32 weights by our tensor name (`modelTensors(config)`). */
  readonly params: ReadonlyMap<string, Float32Array>;
}

/** What {@link writeHfDirectory} takes: a trained model at quantization λ. */
export interface HfExportModel {
  /** The architecture. */
  readonly config: Config;
  /** The mode of every linear, the embedding and the head. */
  readonly bitMap: LayerBitMap;
  /** The tokenizer. */
  readonly tokenizer: Tokenizer;
  /** Latent f32 weights by tensor name. */
  readonly params: ReadonlyMap<string, Float32Array>;
  /** λ at the end of training: transformers' BitNet runs quantized, so it must be 1. */
  readonly lambda: number;
}

/** The files of an hf directory. */
export const HF_FILES: {
  readonly config: "config.json";
  readonly model: "model.safetensors";
  readonly tokenizer: "tokenizer.json";
  readonly tokenizerConfig: "tokenizer_config.json";
  readonly generationConfig: "generation_config.json";
} = {
  config: "config.json",
  model: "model.safetensors",
  tokenizer: "tokenizer.json",
  tokenizerConfig: "tokenizer_config.json",
  generationConfig: "generation_config.json",
};

const HF_LINEAR: Readonly<Record<string, string>> = {
  attn_q: "self_attn.q_proj",
  attn_k: "self_attn.k_proj",
  attn_v: "self_attn.v_proj",
  attn_output: "self_attn.o_proj",
  ffn_gate: "mlp.gate_proj",
  ffn_up: "mlp.up_proj",
  ffn_down: "mlp.down_proj",
  attn_norm: "input_layernorm",
  ffn_norm: "post_attention_layernorm",
  attn_sub_norm: "self_attn.attn_sub_norm",
  ffn_sub_norm: "mlp.ffn_sub_norm",
};

/** transformers' name of one of our tensors (`blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`). */
export function hfTensorName(name: string): string {
  if (name === "token_embd.weight") return "model.embed_tokens.weight";
  if (name === "output_norm.weight") return "model.norm.weight";
  if (name === "output.weight") return "lm_head.weight";
  const m = /^blk\.(\d+)\.([a-z_]+)\.weight$/.exec(name);
  const part = m === null ? undefined : HF_LINEAR[m[2]];
  if (m === null || part === undefined) {
    throw new ExportError({
      message: `tensor ${name} has no transformers name`,
    });
  }
  return `model.layers.${m[1]}.${part}.weight`;
}

/**
 * Why `model` cannot be a transformers BitNet directory (empty when it can),
 * each naming the config field or bit-map entry.
 */
export function hfIssues(
  model: Pick<HfExportModel, "config" | "bitMap" | "lambda">,
): ReadonlyArray<string> {
  const c = model.config;
  const arch = "transformers' BitNet";
  const out: string[] = [];
  if (c.use_relu2 || !c.use_swiglu) {
    out.push(
      `${arch} has a gated SiLU FFN here (config use_relu2 = ${c.use_relu2}, use_swiglu = ${c.use_swiglu})`,
    );
  }
  if (c.use_qk_norm) out.push(`${arch} has no QK-norm (config use_qk_norm)`);
  if (c.use_residual_scaling) {
    out.push(`${arch} has no residual scaling (config use_residual_scaling)`);
  }
  if (c.norm_type !== "rms_norm") {
    out.push(`${arch} uses RMSNorm (config norm_type = ${c.norm_type})`);
  }
  if (!c.use_subln) {
    out.push(`${arch} has SubLN norms (config use_subln = false)`);
  }
  if (!c.use_rope || c.rope_style !== "neox") {
    out.push(
      `${arch} applies rotate-half (NEOX) RoPE (config use_rope = ${c.use_rope}, rope_style = ${c.rope_style})`,
    );
  }
  if (c.use_dynamic_threshold) {
    out.push(
      `${arch} quantizes with absmean, not a dynamic threshold (config use_dynamic_threshold)`,
    );
  }
  if (model.lambda !== 1) {
    out.push(
      `${arch} runs every linear quantized, but the run ends at λ = ${model.lambda}`,
    );
  }
  const map = model.bitMap;
  if (map.embedding !== "f16") {
    out.push(
      `${arch} keeps the embedding in full precision (--bit-map embedding is ${map.embedding})`,
    );
  }
  if (!c.tie_embeddings && lmHeadMode(map) !== "f16") {
    out.push(
      `${arch} keeps lm_head in full precision (--bit-map lm_head is ${
        lmHeadMode(map)
      })`,
    );
  }
  if (bitMapIssues(c, map).length === 0) {
    for (const spec of modelTensors(c)) {
      if (spec.kind !== "linear") continue;
      const mode = tensorMode(spec, map);
      if (mode !== "ternary") {
        out.push(
          `${arch} quantizes every linear to ternary (--bit-map: ${spec.layer}.${spec.linear} is ${mode})`,
        );
      }
    }
  }
  return out;
}

const json = (value: unknown): string => JSON.stringify(value, null, 2) + "\n";

/** The contents of each file of the directory, and the tensors of the safetensors file. */
function hfFiles(model: HfExportModel): {
  texts: ReadonlyArray<readonly [string, string]>;
  tensors: Record<string, SafetensorsTensor>;
} {
  const issues = hfIssues(model);
  if (issues.length > 0) {
    throw new ExportError({
      message: `cannot export to a transformers BitNet directory: ${
        issues.join("; ")
      }`,
    });
  }
  const c = model.config;
  const tensors: Record<string, SafetensorsTensor> = {};
  for (const spec of modelTensors(c)) {
    const v = model.params.get(spec.name);
    const n = spec.shape.reduce((a, b) => a * b, 1);
    if (v === undefined || v.length !== n) {
      throw new ExportError({
        message: v === undefined
          ? `missing tensor ${spec.name}`
          : `${spec.name} has ${v.length} values, expected ${n}`,
      });
    }
    tensors[hfTensorName(spec.name)] = {
      dtype: "F32",
      shape: spec.shape,
      data: spec.kind === "linear" ? clamped(v, c.latent_clamp_max) : v,
    };
  }
  const eot =
    model.tokenizer.specialTokens.find((s) => s.content === END_OF_TEXT) ??
      model.tokenizer.specialTokens[0];
  const ids = eot === undefined
    ? {}
    : { bos_token_id: eot.id, eos_token_id: eot.id };
  const config = {
    architectures: ["BitNetForCausalLM"],
    model_type: "bitnet",
    vocab_size: c.vocab_size,
    hidden_size: c.hidden_size,
    intermediate_size: c.intermediate_size,
    num_hidden_layers: c.num_layers,
    num_attention_heads: c.num_heads,
    num_key_value_heads: c.num_kv_heads,
    head_dim: headDim(c),
    hidden_act: "silu",
    max_position_embeddings: c.max_seq_len,
    rms_norm_eps: c.layer_norm_eps,
    rope_theta: c.rope_theta,
    rope_scaling: null,
    tie_word_embeddings: c.tie_embeddings,
    attention_bias: false,
    attention_dropout: 0,
    initializer_range: 0.02,
    use_cache: true,
    torch_dtype: "float32",
    ...ids,
    quantization_config: {
      quant_method: "bitnet",
      linear_class: "autobitlinear",
      quantization_mode: "online",
    },
    ternary_core: {
      config: Schema.encodeSync(OneBitLlmConfig)(c),
      bit_map: Schema.encodeSync(LayerBitMap)(model.bitMap),
    },
  };
  const tokenizerConfig = {
    tokenizer_class: "PreTrainedTokenizerFast",
    model_max_length: c.max_seq_len,
    add_bos_token: false,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    ...(eot === undefined
      ? {}
      : { bos_token: eot.content, eos_token: eot.content }),
  };
  return {
    texts: [
      [HF_FILES.config, json(config)],
      [HF_FILES.tokenizer, tokenizerToJson(model.tokenizer)],
      [HF_FILES.tokenizerConfig, json(tokenizerConfig)],
      [HF_FILES.generationConfig, json({ _from_model_config: true, ...ids })],
    ],
    tensors,
  };
}

/**
 * The latent weights as the model quantizes them: clamped to ±max (a no-op
 * for trained weights, which the trainer clips to the same range), so that
 * transformers' quantizer sees what ours does.
 */
function clamped(v: Float32Array, max: number): Float32Array {
  let inside = true;
  for (let i = 0; i < v.length && inside; i++) inside = Math.abs(v[i]) <= max;
  return inside ? v : v.map((x) => Math.max(-max, Math.min(max, x)));
}

/**
 * Writes `model` as a transformers BitNet directory `dir` (created if
 * needed; the five files replaced atomically). Returns the bytes written.
 *
 * Fails with an {@link ExportError} listing every reason the model is not a
 * transformers BitNet ({@link hfIssues}), or a DataError naming a file that
 * could not be written.
 */
export const writeHfDirectory = (
  dir: string,
  model: HfExportModel,
): Effect.Effect<number, ExportError | DataError> =>
  Effect.gen(function* () {
    const files = yield* Effect.try({
      try: () => hfFiles(model),
      catch: (e) =>
        e instanceof ExportError
          ? e
          : new ExportError({ message: describe(e) }),
    });
    yield* Effect.tryPromise({
      try: () => Deno.mkdir(dir, { recursive: true }),
      catch: (e) =>
        new DataError({
          file: dir,
          message: `cannot create ${dir}: ${describe(e)}`,
        }),
    });
    let bytes = 0;
    for (const [name, text] of files.texts) {
      yield* writeFileAtomic(`${dir}/${name}`, text);
      bytes += new TextEncoder().encode(text).length;
    }
    const modelPath = `${dir}/${HF_FILES.model}`;
    yield* writeSafetensors(modelPath, files.tensors, { format: "pt" });
    bytes += yield* Effect.promise(() =>
      Deno.stat(modelPath).then((s) => s.size)
    );
    return bytes;
  });

// ---------------------------------------------------------------- reading

const Int = Schema.Number.check(
  Schema.makeFilter((n: number) => Number.isSafeInteger(n) && n > 0, {
    expected: "a positive integer",
  }),
);
const Positive = Schema.Number.check(
  Schema.makeFilter((n: number) => Number.isFinite(n) && n > 0, {
    expected: "a positive number",
  }),
);

/** The keys of a transformers BitNet config.json that we read. */
const HfConfigJson = Schema.Struct({
  model_type: Schema.Literal("bitnet"),
  vocab_size: Int,
  hidden_size: Int,
  intermediate_size: Int,
  num_hidden_layers: Int,
  num_attention_heads: Int,
  num_key_value_heads: Schema.optional(Int),
  head_dim: Schema.optional(Int),
  hidden_act: Schema.optional(Schema.String),
  max_position_embeddings: Schema.optional(Int),
  rms_norm_eps: Schema.optional(Positive),
  rope_theta: Schema.optional(Positive),
  rope_scaling: Schema.optional(Schema.Null),
  tie_word_embeddings: Schema.optional(Schema.Boolean),
  attention_bias: Schema.optional(Schema.Literal(false)),
  quantization_config: Schema.optional(Schema.Struct({
    quant_method: Schema.Literal("bitnet"),
    quantization_mode: Schema.optional(Schema.Literal("online")),
  })),
  ternary_core: Schema.optional(Schema.Struct({
    config: Schema.Unknown,
    bit_map: Schema.Unknown,
  })),
});

/**
 * The config a transformers BitNet config.json describes. Keys it omits take
 * transformers' `BitNetConfig` defaults (max_position_embeddings 2048,
 * rms_norm_eps 1e-5, rope_theta 500000, untied head, hidden_act relu2 — the
 * last refused).
 */
function configFromHf(
  hf: typeof HfConfigJson.Type,
): Config | string {
  const act = hf.hidden_act ?? "relu2";
  if (act !== "silu") {
    return `hidden_act ${
      JSON.stringify(act)
    } is not supported (ternary-core's BitNet FFN is gated SiLU)`;
  }
  const heads = hf.num_attention_heads;
  if (hf.head_dim !== undefined && hf.head_dim * heads !== hf.hidden_size) {
    return `head_dim ${hf.head_dim} × num_attention_heads ${heads} is not hidden_size ${hf.hidden_size}`;
  }
  try {
    return Schema.decodeUnknownSync(OneBitLlmConfig)({
      vocab_size: hf.vocab_size,
      hidden_size: hf.hidden_size,
      intermediate_size: hf.intermediate_size,
      num_layers: hf.num_hidden_layers,
      num_heads: heads,
      num_kv_heads: hf.num_key_value_heads ?? heads,
      max_seq_len: hf.max_position_embeddings ?? 2048,
      layer_norm_eps: hf.rms_norm_eps ?? 1e-5,
      rope_theta: hf.rope_theta ?? 500000,
      tie_embeddings: hf.tie_word_embeddings ?? false,
      norm_type: "rms_norm",
      rope_style: "neox",
      use_rope: true,
      use_swiglu: true,
      use_relu2: false,
      use_subln: true,
      use_qk_norm: false,
      use_residual_scaling: false,
    });
  } catch (e) {
    return describe(e);
  }
}

/** The fields the transformers keys and `ternary_core.config` must agree on. */
function disagreement(stored: Config, hf: Config): string | undefined {
  const fields = [
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "max_seq_len",
    "layer_norm_eps",
    "rope_theta",
    "tie_embeddings",
  ] as const;
  const f = fields.find((k) => stored[k] !== hf[k]);
  return f === undefined
    ? undefined
    : `ternary_core.config ${f} = ${
      stored[f]
    } disagrees with the transformers keys (${hf[f]})`;
}

const readJson = (path: string): Effect.Effect<unknown, DataError> =>
  Effect.tryPromise({
    try: async () => JSON.parse(await Deno.readTextFile(path)) as unknown,
    catch: (e) =>
      new DataError({
        file: path,
        message: e instanceof Deno.errors.NotFound
          ? `${path}: file not found`
          : `${path}: ${describe(e)}`,
      }),
  });

/** f32 values of a safetensors tensor (F32, F16 or BF16). */
function floatValues(t: SafetensorsTensor): Float32Array | undefined {
  switch (t.dtype) {
    case "F32":
      return (t.data as Float32Array).slice();
    case "F16":
      return f16BitsToF32Array(t.data as Uint16Array);
    case "BF16": {
      const src = t.data as Uint16Array;
      const out = new Uint32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
      return new Float32Array(out.buffer);
    }
    default:
      return undefined;
  }
}

/**
 * The config (and, from ours, the bit map) of a transformers BitNet directory,
 * from its config.json alone (see {@link readHfDirectory}).
 */
export const readHfConfig = (
  dir: string,
): Effect.Effect<
  { readonly config: Config; readonly bitMap: LayerBitMap | undefined },
  DataError
> =>
  Effect.gen(function* () {
    const configPath = `${dir}/${HF_FILES.config}`;
    const fail = (message: string) =>
      Effect.fail(
        new DataError({
          file: configPath,
          message: `${configPath}: ${message}`,
        }),
      );
    const raw = yield* readJson(configPath);
    const hf = yield* Schema.decodeUnknownEffect(HfConfigJson)(raw).pipe(
      Effect.mapError((e) =>
        new DataError({
          file: configPath,
          message:
            `${configPath}: not a transformers BitNet config with online quantization: ${e.message}`,
        })
      ),
    );
    const fromKeys = configFromHf(hf);
    if (typeof fromKeys === "string") return yield* fail(fromKeys);
    if (hf.ternary_core === undefined) {
      return { config: fromKeys, bitMap: undefined };
    }
    const decoded = yield* Effect.try({
      try: () => ({
        config: Schema.decodeUnknownSync(OneBitLlmConfig)(
          hf.ternary_core!.config,
        ),
        bitMap: Schema.decodeUnknownSync(LayerBitMap)(
          hf.ternary_core!.bit_map,
        ),
      }),
      catch: (e) =>
        new DataError({
          file: configPath,
          message: `${configPath}: ternary_core: ${describe(e)}`,
        }),
    });
    const differs = disagreement(decoded.config, fromKeys);
    if (differs !== undefined) return yield* fail(differs);
    const issues = bitMapIssues(decoded.config, decoded.bitMap);
    if (issues.length > 0) {
      return yield* fail(`ternary_core.bit_map: ${issues.join("; ")}`);
    }
    return decoded;
  });

/**
 * Reads a transformers BitNet directory (ours, or one written by PyTorch,
 * e.g. `bitnet_ref.py --save`) back to a config, bit map, tokenizer and latent
 * f32 weights under our tensor names. `ternary_core.config`/`bit_map` in
 * config.json, when present, restore ours exactly (and must agree with the
 * transformers keys); otherwise the config is built from the transformers keys
 * and every linear is ternary (transformers' online quantization). A missing
 * `tokenizer.json` gives `tokenizer: undefined`.
 *
 * Fails with a DataError naming the file: not model_type bitnet, offline
 * (packed) quantization, an unsupported hidden_act, a missing or extra tensor,
 * a wrong shape or dtype, or a tokenizer that does not parse.
 */
export const readHfDirectory = (
  dir: string,
): Effect.Effect<HfModel, DataError> =>
  Effect.gen(function* () {
    const fail = (file: string, message: string) =>
      Effect.fail(new DataError({ file, message: `${file}: ${message}` }));
    const { config, bitMap: stored } = yield* readHfConfig(dir);
    let bitMap = stored;
    const modelPath = `${dir}/${HF_FILES.model}`;
    const st = yield* readSafetensors(modelPath);
    // Checked before modelTensors(config) builds a list from the config's sizes.
    if (st.tensors.size !== tensorCount(config)) {
      return yield* fail(
        modelPath,
        `${st.tensors.size} tensors, but config.json describes a model of ${
          tensorCount(config)
        }`,
      );
    }
    // transformers' online quantization: every linear ternary.
    bitMap ??= {
      embedding: "f16",
      layer_modes: Array.from({ length: config.num_layers }, () => "ternary"),
    };
    const specs: ReadonlyArray<TensorSpec> = modelTensors(config);
    const wanted = new Map(specs.map((s) => [hfTensorName(s.name), s]));
    for (const name of st.tensors.keys()) {
      if (!wanted.has(name)) {
        return yield* fail(
          modelPath,
          `unexpected tensor ${name} (not part of this config's model${
            name === "lm_head.weight" ? ": tie_word_embeddings is true" : ""
          })`,
        );
      }
    }
    const params = new Map<string, Float32Array>();
    for (const [hfName, spec] of wanted) {
      const t = st.tensors.get(hfName);
      if (t === undefined) {
        return yield* fail(modelPath, `missing tensor ${hfName}`);
      }
      if (
        t.shape.length !== spec.shape.length ||
        t.shape.some((d, i) => d !== spec.shape[i])
      ) {
        return yield* fail(
          modelPath,
          `${hfName} has shape [${t.shape}], config.json expects [${spec.shape}]`,
        );
      }
      const values = floatValues(t);
      if (values === undefined) {
        return yield* fail(
          modelPath,
          `${hfName} is ${t.dtype}; latent weights must be F32, F16 or BF16`,
        );
      }
      params.set(spec.name, values);
    }
    const tokenizerPath = `${dir}/${HF_FILES.tokenizer}`;
    const tokenizer = (yield* pathExists(tokenizerPath))
      ? yield* loadTokenizer(tokenizerPath)
      : undefined;
    if (tokenizer !== undefined && tokenizer.vocabSize > config.vocab_size) {
      return yield* fail(
        tokenizerPath,
        `${tokenizer.vocabSize} tokens, more than vocab_size ${config.vocab_size}`,
      );
    }
    return { config, bitMap, tokenizer, params };
  });

/**
 * An hf directory as the start of a training run (`deno task train --init
 * DIR`): {@link readHfDirectory}, checked against `tokenizer`, the one the
 * run's data is encoded with. The directory's own `tokenizer.json`, if any,
 * must be that tokenizer; without one (e.g. `bitnet_ref.py --save`), its
 * vocab_size must be the tokenizer's size.
 */
export const readHfForTraining = (
  dir: string,
  tokenizer: Tokenizer,
): Effect.Effect<HfModel & { readonly tokenizer: Tokenizer }, DataError> =>
  Effect.gen(function* () {
    const hf = yield* readHfDirectory(dir);
    if (hf.tokenizer !== undefined) {
      if (tokenizerToJson(hf.tokenizer) !== tokenizerToJson(tokenizer)) {
        const file = `${dir}/${HF_FILES.tokenizer}`;
        return yield* new DataError({
          file,
          message:
            `${file} differs from the tokenizer of the training data (train on the data the model was trained on)`,
        });
      }
    } else if (hf.config.vocab_size !== tokenizer.vocabSize) {
      const file = `${dir}/${HF_FILES.config}`;
      return yield* new DataError({
        file,
        message:
          `${file}: vocab_size ${hf.config.vocab_size} is not the training data's tokenizer size ${tokenizer.vocabSize}`,
      });
    }
    return { ...hf, tokenizer };
  });
