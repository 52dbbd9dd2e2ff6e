/**
 * The model configuration (`OneBitLlmConfig`), its JSON schema and helpers.
 *
 * The JSON form uses snake_case keys like the original `ternary-core`; fields
 * with a default may be omitted and are always written back when encoding.
 *
 * @module
 */
import { Effect, Schema, SchemaTransformation } from "effect";
import { LayerBitMap, OVERRIDE_KEY_PATTERN } from "./layer_bit_map.ts";

/** Position encoding layout of RoPE: rotate halves (`neox`) or adjacent pairs. */
export type RopeStyle = "neox" | "interleaved";

/** Normalization layer: RMSNorm (weight only) or LayerNorm (weight and bias). */
export type NormType = "rms_norm" | "layer_norm";

/** A decoded, validated model configuration. */
export interface OneBitLlmConfig {
  /** Number of tokens in the vocabulary. */
  readonly vocab_size: number;
  /** Model width d. */
  readonly hidden_size: number;
  /** Number of query heads; head_dim = hidden_size / num_heads. */
  readonly num_heads: number;
  /** Number of key/value heads (grouped-query attention); defaults to num_heads. */
  readonly num_kv_heads: number;
  /** Number of transformer blocks. */
  readonly num_layers: number;
  /** FFN width. */
  readonly intermediate_size: number;
  /** Longest sequence the model is trained and run on. */
  readonly max_seq_len: number;
  /** ε of the norms: x / sqrt(mean(x²) + ε) (default 1e-5). */
  readonly layer_norm_eps: number;
  /** RoPE base θ: frequency of pair i is θ^(−2i / head_dim) (default 10000). */
  readonly rope_theta: number;
  /** RoPE layout (default `"neox"`, as llama.cpp's `bitnet` architecture). */
  readonly rope_style: RopeStyle;
  /** Norm kind (default `"rms_norm"`). */
  readonly norm_type: NormType;
  /** LM head shares the embedding matrix (default true). */
  readonly tie_embeddings: boolean;
  /** Quantize the block linears to ternary when no layer_bit_map is given (default true). */
  readonly use_ternary: boolean;
  /** FFN activation ReLU²: down(relu(up x)²) (default false). */
  readonly use_relu2: boolean;
  /** Gated FFN: down(silu(gate x) · up x) (default true). Neither flag: ungated FFN. */
  readonly use_swiglu: boolean;
  /** SubLN: a norm before attn_output and before ffn_down (default true). */
  readonly use_subln: boolean;
  /** Rotary position embedding on q and k (default true). */
  readonly use_rope: boolean;
  /** Per-head norm of q and k before RoPE (default false). */
  readonly use_qk_norm: boolean;
  /** Scale the residual branches down with depth (default false). */
  readonly use_residual_scaling: boolean;
  /** Ternary zero threshold adapted during training instead of round(W/γ)'s fixed γ/2 (default false). */
  readonly use_dynamic_threshold: boolean;
  /**
   * The model clamps latent weights of quantized linears to
   * [−latent_clamp_max, latent_clamp_max] before quantizing them (default 1.0).
   */
  readonly latent_clamp_max: number;
  /**
   * After each optimizer step the trainer clips the latent weights of quantized
   * linears only (not embeddings or norms) to [−latent_clip_max_training,
   * latent_clip_max_training] (default 1.0).
   */
  readonly latent_clip_max_training: number;
  /** Explicit per-layer modes; absent means {@link resolveBitMap}'s default. */
  readonly layer_bit_map?: LayerBitMap;
}

/** The config fields that may be omitted from the JSON form (they have defaults). */
export type DefaultedField =
  | "num_kv_heads"
  | "layer_norm_eps"
  | "rope_theta"
  | "rope_style"
  | "norm_type"
  | "tie_embeddings"
  | "use_ternary"
  | "use_relu2"
  | "use_swiglu"
  | "use_subln"
  | "use_rope"
  | "use_qk_norm"
  | "use_residual_scaling"
  | "use_dynamic_threshold"
  | "latent_clamp_max"
  | "latent_clip_max_training";

/** The JSON form of a {@link OneBitLlmConfig}: fields with a default are optional. */
export type OneBitLlmConfigEncoded =
  & Omit<OneBitLlmConfig, DefaultedField>
  & Partial<Pick<OneBitLlmConfig, DefaultedField>>;

const PositiveFinite = Schema.Number.check(
  Schema.makeFilter((n: number) => Number.isFinite(n) && n > 0, {
    expected: "a positive number",
  }),
);
const RopeStyleSchema = Schema.Literals(["neox", "interleaved"]);
const NormTypeSchema = Schema.Literals(["rms_norm", "layer_norm"]);

// The key may be omitted from JSON: decoding fills in the default, and
// encoding always writes the value.
const withDefault = <S extends Schema.Top>(
  schema: S,
  value: S["Encoded"],
) => schema.pipe(Schema.withDecodingDefaultKey(Effect.succeed(value)));

/**
 * Upper bounds of the size fields: far above any model this project can train
 * or run (the largest open models have vocab ~256k, width ~16k, ~128 layers,
 * FFN ~53k, contexts ~128k–1M), yet small enough that a typo such as 1e9 is
 * refused while decoding rather than found by an allocation failure, a
 * quadratic loop or an out-of-memory crash.
 */
export const CONFIG_SIZE_LIMITS: {
  readonly vocab_size: number;
  readonly hidden_size: number;
  readonly num_heads: number;
  readonly num_kv_heads: number;
  readonly num_layers: number;
  readonly intermediate_size: number;
  readonly max_seq_len: number;
} = {
  vocab_size: 2 ** 20,
  hidden_size: 65_536,
  num_heads: 1024,
  num_kv_heads: 1024,
  num_layers: 1024,
  intermediate_size: 262_144,
  max_seq_len: 2 ** 20,
};

const SizeInt = (max: number) =>
  Schema.Number.check(
    Schema.makeFilter(
      (n: number) => Number.isInteger(n) && n > 0 && n <= max,
      { expected: `an integer in [1, ${max.toLocaleString("en-US")}]` },
    ),
  );

const sharedFields = {
  vocab_size: SizeInt(CONFIG_SIZE_LIMITS.vocab_size),
  hidden_size: SizeInt(CONFIG_SIZE_LIMITS.hidden_size),
  num_heads: SizeInt(CONFIG_SIZE_LIMITS.num_heads),
  num_layers: SizeInt(CONFIG_SIZE_LIMITS.num_layers),
  intermediate_size: SizeInt(CONFIG_SIZE_LIMITS.intermediate_size),
  max_seq_len: SizeInt(CONFIG_SIZE_LIMITS.max_seq_len),
};

const EncodedStruct = Schema.Struct({
  ...sharedFields,
  num_kv_heads: Schema.optionalKey(SizeInt(CONFIG_SIZE_LIMITS.num_kv_heads)),
  layer_norm_eps: withDefault(PositiveFinite, 1e-5),
  rope_theta: withDefault(PositiveFinite, 10000),
  rope_style: withDefault(RopeStyleSchema, "neox"),
  norm_type: withDefault(NormTypeSchema, "rms_norm"),
  tie_embeddings: withDefault(Schema.Boolean, true),
  use_ternary: withDefault(Schema.Boolean, true),
  use_relu2: withDefault(Schema.Boolean, false),
  use_swiglu: withDefault(Schema.Boolean, true),
  use_subln: withDefault(Schema.Boolean, true),
  use_rope: withDefault(Schema.Boolean, true),
  use_qk_norm: withDefault(Schema.Boolean, false),
  use_residual_scaling: withDefault(Schema.Boolean, false),
  use_dynamic_threshold: withDefault(Schema.Boolean, false),
  latent_clamp_max: withDefault(PositiveFinite, 1),
  latent_clip_max_training: withDefault(PositiveFinite, 1),
  layer_bit_map: Schema.optionalKey(LayerBitMap),
});

/** The fields of a config that a bit map has to agree with. */
export type BitMapShape = Pick<
  OneBitLlmConfig,
  "num_layers" | "use_swiglu" | "tie_embeddings"
>;

/**
 * Why `map` does not fit a model shaped like `config` (empty when it fits):
 * `layer_modes.length == num_layers`, override layer indices < num_layers,
 * `mlp.gate` overrides only with SwiGLU, and a tied LM head with the same mode
 * as the embedding.
 */
export function bitMapIssues(
  config: BitMapShape,
  map: LayerBitMap,
): ReadonlyArray<string> {
  const issues: Array<string> = [];
  if (map.layer_modes.length !== config.num_layers) {
    issues.push(
      `layer_bit_map.layer_modes has ${map.layer_modes.length} ${
        map.layer_modes.length === 1 ? "entry" : "entries"
      } but num_layers is ${config.num_layers}`,
    );
  }
  for (const key of Object.keys(map.overrides ?? {})) {
    const m = OVERRIDE_KEY_PATTERN.exec(key);
    if (m === null) {
      issues.push(
        `layer_bit_map.overrides key "${key}" is not "<layer>.<linear>"`,
      );
      continue;
    }
    const layer = Number(m[1]);
    const linear = m[2];
    if (layer >= config.num_layers) {
      issues.push(
        `layer_bit_map.overrides key "${key}": layer ${layer} is out of range (num_layers is ${config.num_layers})`,
      );
    }
    if (linear === "mlp.gate" && !config.use_swiglu) {
      issues.push(
        `layer_bit_map.overrides key "${key}": mlp.gate exists only when use_swiglu is true`,
      );
    }
  }
  if (
    config.tie_embeddings && map.lm_head !== undefined &&
    map.lm_head !== map.embedding
  ) {
    issues.push(
      `layer_bit_map.lm_head (${map.lm_head}) must equal layer_bit_map.embedding (${map.embedding}) when tie_embeddings is true`,
    );
  }
  return issues;
}

/** Every cross-field rule a decoded config must satisfy, as messages naming the fields. */
function configIssues(c: OneBitLlmConfig): ReadonlyArray<string> {
  const issues: Array<string> = [];
  if (c.hidden_size % c.num_heads !== 0) {
    issues.push(
      `hidden_size (${c.hidden_size}) must be divisible by num_heads (${c.num_heads})`,
    );
  } else if (c.use_rope && (c.hidden_size / c.num_heads) % 2 !== 0) {
    issues.push(
      `head_dim = hidden_size / num_heads = ${
        c.hidden_size / c.num_heads
      } must be even when use_rope is true`,
    );
  }
  if (c.num_heads % c.num_kv_heads !== 0) {
    issues.push(
      `num_heads (${c.num_heads}) must be divisible by num_kv_heads (${c.num_kv_heads})`,
    );
  }
  if (c.use_relu2 && c.use_swiglu) {
    issues.push("use_relu2 and use_swiglu cannot both be true");
  }
  if (c.layer_bit_map !== undefined) {
    issues.push(...bitMapIssues(c, c.layer_bit_map));
  }
  return issues;
}

const TypeStruct = Schema.Struct({
  ...sharedFields,
  num_kv_heads: SizeInt(CONFIG_SIZE_LIMITS.num_kv_heads),
  layer_norm_eps: PositiveFinite,
  rope_theta: PositiveFinite,
  rope_style: RopeStyleSchema,
  norm_type: NormTypeSchema,
  tie_embeddings: Schema.Boolean,
  use_ternary: Schema.Boolean,
  use_relu2: Schema.Boolean,
  use_swiglu: Schema.Boolean,
  use_subln: Schema.Boolean,
  use_rope: Schema.Boolean,
  use_qk_norm: Schema.Boolean,
  use_residual_scaling: Schema.Boolean,
  use_dynamic_threshold: Schema.Boolean,
  latent_clamp_max: PositiveFinite,
  latent_clip_max_training: PositiveFinite,
  layer_bit_map: Schema.optionalKey(LayerBitMap),
}).check(Schema.makeFilter(configIssues));

/**
 * Schema of a {@link OneBitLlmConfig}. Decoding fills in defaults
 * (`num_kv_heads` defaults to `num_heads`), then checks every field (sizes
 * within {@link CONFIG_SIZE_LIMITS}) and the cross-field rules: hidden_size % num_heads == 0, num_heads % num_kv_heads == 0,
 * head_dim even with RoPE, not both ReLU² and SwiGLU, and a layer_bit_map that
 * fits (see {@link bitMapIssues}). Encoding writes every field.
 */
export const OneBitLlmConfig: Schema.Codec<
  OneBitLlmConfig,
  OneBitLlmConfigEncoded
> = EncodedStruct.pipe(
  Schema.decodeTo(
    TypeStruct,
    SchemaTransformation.transform({
      decode: (e) => ({ ...e, num_kv_heads: e.num_kv_heads ?? e.num_heads }),
      encode: (c) => c,
    }),
  ),
);

/** head_dim = hidden_size / num_heads. */
export function headDim(config: OneBitLlmConfig): number {
  return config.hidden_size / config.num_heads;
}

/**
 * The bit map the model uses: `config.layer_bit_map` if given, else every
 * block `"ternary"` (if `use_ternary`) or `"f16"`, with an `"f16"` embedding
 * and LM head.
 */
export function resolveBitMap(config: OneBitLlmConfig): LayerBitMap {
  if (config.layer_bit_map !== undefined) return config.layer_bit_map;
  const mode = config.use_ternary ? "ternary" : "f16";
  return {
    embedding: "f16",
    layer_modes: Array.from({ length: config.num_layers }, () => mode),
  };
}
