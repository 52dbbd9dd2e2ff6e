/**
 * GGUF export for llama.cpp's `bitnet` architecture, and the reader back to
 * {@link ModelWeights}.
 *
 * Tensors (names as in `modelTensors`, dims innermost first):
 * - ternary block linears: TQ2_0 (or TQ1_0) with every block scale d = 1 and
 *   the exact f32 γ in a companion `<name minus .weight>.scale` tensor of one
 *   F32 value, which llama.cpp's `bitnet` graph multiplies into the linear's
 *   output (`wq_scale`, …, `ffn_down_scale`). So the codes and γ travel
 *   unrounded;
 * - f16-mode block linears: F16;
 * - `token_embd.weight` (the tied LM head): F16, or with `q8Embedding` Q8_0
 *   with one f16 scale per row (every block of a row shares it), which the
 *   bit map then records as an `eightbit` embedding;
 * - norms: F32.
 *
 * Metadata: `general.*` (architecture `bitnet`, alignment 32, file_type 37 for
 * TQ2_0 / 36 for TQ1_0), the `bitnet.*` hyperparameters, the tokenizer as
 * `tokenizer.ggml.*` (model `gpt2`, pre `gpt-2`: byte-level BPE with GPT-2's
 * split regex; special tokens as CONTROL), and ternary-core's own
 * `ternary_core.config` and `ternary_core.bit_map` (JSON strings) so our
 * reader restores the exact config (llama.cpp ignores unknown keys).
 *
 * What llama.cpp's `bitnet` graph cannot compute is refused with an
 * {@link ExportError} naming the config field, bit-map entry or option.
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
import { LayerBitMap, type LinearName } from "../../common/layer_bit_map.ts";
import type { QuantMode } from "../../common/quant_mode.ts";
import { DataError } from "../../common/text_sources.ts";
import { type SpecialToken, Tokenizer } from "../../common/tokenizer.ts";
import {
  f16BitsToF32,
  f16BitsToF32Array,
  f32ToF16Bits,
} from "../../core/f16.ts";
import {
  decodeRowTq1_0,
  decodeRowTq2_0,
  packTernaryRowTq1_0,
  packTernaryRowTq2_0,
} from "../../core/gguf_blocks.ts";
import { roundHalfEven } from "../../core/quantize.ts";
import { modelTensors, type TensorSpec } from "../../core/tensors.ts";
import { tensorMode } from "../from_latents.ts";
import type { ModelWeights, StoredTensor } from "../weights.ts";
import {
  f32Bytes,
  FormatViolation,
  readF32Array,
  readU16Array,
} from "./bytes.ts";
import { ExportError } from "./errors.ts";
import { readModelFile, writeModelFile } from "./model_file.ts";
import {
  decodeGgufFile,
  encodeGgufFile,
  GGML_TYPE,
  ggmlTypeName,
  type GgufFile,
  type GgufTensor,
  type GgufTensorInput,
  type GgufValue,
} from "./gguf_file.ts";
import { checkedTensors, f16Bits, tensorCount } from "./model_check.ts";
import { describeCause as describe } from "../../common/describe.ts";

/** Options of {@link encodeGgufModel}. */
export interface GgufOptions {
  /** Ternary linears as TQ1_0 (1.69 bits/weight) instead of TQ2_0 (2.06). */
  readonly tq1?: boolean;
  /**
   * The (f16-mode) embedding as Q8_0 with one f16 scale per row, instead of
   * F16; lossy (the file's bit map then says `eightbit` for it).
   */
  readonly q8Embedding?: boolean;
}

const ARCH = "bitnet";
const ALIGNMENT = 32;
/** ggml row blocks of the ternary types. */
const QK = 256;
const Q8_BLOCK = 32;
/** llama.cpp's token types. */
const TOKEN_NORMAL = 1;
const TOKEN_CONTROL = 3;
const TOKEN_USER_DEFINED = 4;

/**
 * Why `weights` cannot go to llama.cpp's `bitnet` architecture with
 * `options` (empty when it can): each a sentence naming the field or option.
 */
export function ggufIssues(
  weights: Pick<ModelWeights, "config" | "bitMap" | "tokenizer">,
  options: GgufOptions = {},
): ReadonlyArray<string> {
  const c = weights.config;
  const out: string[] = [];
  const arch = "llama.cpp's bitnet architecture";
  if (c.use_relu2 || !c.use_swiglu) {
    out.push(
      `${arch} has a SwiGLU FFN only (config use_relu2 = ${c.use_relu2}, use_swiglu = ${c.use_swiglu})`,
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
    out.push(`${arch} needs the SubLN norms (config use_subln = false)`);
  }
  if (!c.use_rope || c.rope_style !== "neox") {
    out.push(
      `${arch} applies NEOX-style RoPE (config use_rope = ${c.use_rope}, rope_style = ${c.rope_style})`,
    );
  }
  if (!c.tie_embeddings) {
    out.push(
      `${arch} ties the LM head to token_embd (config tie_embeddings = false)`,
    );
  }
  if (weights.tokenizer.vocabSize !== c.vocab_size) {
    out.push(
      `the tokenizer has ${weights.tokenizer.vocabSize} tokens but config vocab_size is ${c.vocab_size}`,
    );
  }
  const map = weights.bitMap;
  switch (map.embedding) {
    case "f16":
      if (options.q8Embedding && c.hidden_size % Q8_BLOCK !== 0) {
        out.push(
          `--q8-embedding: hidden_size ${c.hidden_size} is not a multiple of ${Q8_BLOCK} (Q8_0 blocks)`,
        );
      }
      break;
    default:
      out.push(
        `the embedding is ${map.embedding} (--bit-map embedding): GGUF export takes an f16 embedding (F16, or Q8_0 with --q8-embedding)`,
      );
  }
  if (bitMapIssues(c, map).length > 0) return out;
  const byMode = new Map<QuantMode, string[]>();
  const shortRows = new Set<"hidden_size" | "intermediate_size">();
  for (const spec of modelTensors(c)) {
    if (spec.kind !== "linear") continue;
    const mode = tensorMode(spec, map);
    if (mode === "eightbit" || mode === "binary") {
      byMode.set(mode, [
        ...(byMode.get(mode) ?? []),
        `${spec.layer}.${spec.linear}`,
      ]);
    } else if (mode === "ternary" && spec.shape[1] % QK !== 0) {
      shortRows.add(
        spec.linear === "mlp.down" ? "intermediate_size" : "hidden_size",
      );
    }
  }
  for (const [mode, names] of byMode) {
    const shown = names.length > 4
      ? `${names.slice(0, 4).join(", ")} and ${names.length - 4} more`
      : names.join(", ");
    out.push(
      `llama.cpp has no ${mode} linear type (--bit-map: ${shown} ${
        names.length === 1 ? "is" : "are"
      } ${mode}; ternary → ${options.tq1 ? "TQ1_0" : "TQ2_0"}, f16 → F16)`,
    );
  }
  for (const field of shortRows) {
    out.push(
      `ternary rows must be whole ${QK}-weight TQ blocks: config ${field} = ${
        c[field]
      } is not a multiple of ${QK}`,
    );
  }
  return out;
}

/** The f16 step ≥ `v` (so that codes of |w| ≤ 127·step fit). */
function f16AtLeast(v: number): number {
  let bits = f32ToF16Bits(v);
  if (f16BitsToF32(bits) < v) bits += 1;
  return f16BitsToF32(bits);
}

/** Q8_0 bytes of a `[rows, cols]` matrix with one f16 scale per row. */
function q8RowsOf(data: Float32Array, rows: number, cols: number): {
  bytes: Uint8Array;
  codes: Int8Array;
  scales: Float32Array;
} {
  const blocks = cols / Q8_BLOCK;
  const bytes = new Uint8Array(rows * blocks * 34);
  const codes = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let amax = 0;
    for (let i = r * cols; i < (r + 1) * cols; i++) {
      amax = Math.max(amax, Math.abs(data[i]));
    }
    // A positive normal f16 step even for an all-zero row.
    const s = f16AtLeast(Math.max(amax / 127, 2 ** -14));
    if (!Number.isFinite(s)) {
      throw new ExportError({
        message:
          `--q8-embedding: row ${r} of the embedding (max |w| ${amax}) needs a scale beyond f16`,
      });
    }
    scales[r] = s;
    const bits = f32ToF16Bits(s);
    for (let b = 0; b < blocks; b++) {
      const o = (r * blocks + b) * 34;
      bytes[o] = bits & 0xff;
      bytes[o + 1] = bits >>> 8;
      for (let j = 0; j < Q8_BLOCK; j++) {
        const i = r * cols + b * Q8_BLOCK + j;
        const q = Math.max(-127, Math.min(127, roundHalfEven(data[i] / s)));
        codes[i] = q;
        bytes[o + 2 + j] = q & 0xff;
      }
    }
  }
  return { bytes, codes, scales };
}

function ternaryBytes(
  t: { codes: Int8Array; rows: number; cols: number },
  tq1: boolean,
): Uint8Array {
  const rowBytes = (t.cols / QK) * (tq1 ? 54 : 66);
  const out = new Uint8Array(t.rows * rowBytes);
  for (let r = 0; r < t.rows; r++) {
    const row = t.codes.subarray(r * t.cols, (r + 1) * t.cols);
    out.set(
      tq1 ? packTernaryRowTq1_0(row, 1) : packTernaryRowTq2_0(row, 1),
      r * rowBytes,
    );
  }
  return out;
}

const f16Bytes = (name: string, data: Float32Array): Uint8Array =>
  new Uint8Array(f16Bits(name, data).buffer);

const dims = (shape: readonly number[]): number[] => [...shape].reverse();

/** The `.scale` companion of a linear's `.weight` tensor. */
const scaleName = (name: string): string => name.replace(/\.weight$/, ".scale");

/** GGUF tokenizer metadata of a byte-level BPE. */
function tokenizerMetadata(
  tokenizer: Tokenizer,
): Array<readonly [string, GgufValue]> {
  const special = new Set(tokenizer.specialTokens.map((s) => s.id));
  const out: Array<readonly [string, GgufValue]> = [
    ["tokenizer.ggml.model", { type: "string", value: "gpt2" }],
    ["tokenizer.ggml.pre", { type: "string", value: "gpt-2" }],
    ["tokenizer.ggml.tokens", {
      type: "array",
      itemType: "string",
      value: tokenizer.tokens,
    }],
    ["tokenizer.ggml.token_type", {
      type: "array",
      itemType: "i32",
      value: tokenizer.tokens.map((_, id) =>
        special.has(id) ? TOKEN_CONTROL : TOKEN_NORMAL
      ),
    }],
    ["tokenizer.ggml.merges", {
      type: "array",
      itemType: "string",
      value: tokenizer.merges.map(([l, r]) => `${l} ${r}`),
    }],
  ];
  const eot = tokenizer.specialTokens[0];
  if (eot !== undefined) {
    out.push(
      ["tokenizer.ggml.bos_token_id", { type: "u32", value: eot.id }],
      ["tokenizer.ggml.eos_token_id", { type: "u32", value: eot.id }],
    );
  }
  out.push(
    ["tokenizer.ggml.add_bos_token", { type: "bool", value: false }],
    ["tokenizer.ggml.add_eos_token", { type: "bool", value: false }],
  );
  return out;
}

/**
 * The bytes of a GGUF v3 file of `weights` for llama.cpp's `bitnet`
 * architecture (see the module docs), deterministic.
 *
 * @throws {ExportError} listing every reason llama.cpp could not run it
 * ({@link ggufIssues}), or when the weights do not match their config.
 */
export function encodeGgufModel(
  weights: ModelWeights,
  options: GgufOptions = {},
): Uint8Array {
  const issues = ggufIssues(weights, options);
  if (issues.length > 0) {
    throw new ExportError({
      message: `cannot export to GGUF: ${issues.join("; ")}`,
    });
  }
  const tq1 = options.tq1 === true;
  const c = weights.config;
  let bitMap = weights.bitMap;
  const tensors: GgufTensorInput[] = [];
  let ternary = 0;
  for (const [spec, t] of checkedTensors(weights)) {
    const d = dims(spec.shape);
    if (t.kind === "ternary") {
      ternary++;
      tensors.push({
        name: spec.name,
        dims: d,
        type: tq1 ? GGML_TYPE.TQ1_0 : GGML_TYPE.TQ2_0,
        data: ternaryBytes(t, tq1),
      });
      tensors.push({
        name: scaleName(spec.name),
        dims: [1],
        type: GGML_TYPE.F32,
        data: f32Bytes(new Float32Array([t.scale])),
      });
    } else if (t.kind !== "dense") {
      throw new ExportError({ message: `${spec.name}: ${t.kind} in GGUF` });
    } else if (spec.kind === "norm") {
      tensors.push({
        name: spec.name,
        dims: d,
        type: GGML_TYPE.F32,
        data: f32Bytes(t.data),
      });
    } else if (spec.kind === "embedding" && options.q8Embedding) {
      const q = q8RowsOf(t.data, spec.shape[0], spec.shape[1]);
      tensors.push({
        name: spec.name,
        dims: d,
        type: GGML_TYPE.Q8_0,
        data: q.bytes,
      });
      bitMap = { ...bitMap, embedding: "eightbit", lm_head: "eightbit" };
    } else {
      tensors.push({
        name: spec.name,
        dims: d,
        type: GGML_TYPE.F16,
        data: f16Bytes(spec.name, t.data),
      });
    }
  }
  const u32 = (value: number): GgufValue => ({ type: "u32", value });
  const f32 = (value: number): GgufValue => ({ type: "f32", value });
  const str = (value: string): GgufValue => ({ type: "string", value });
  const metadata: Array<readonly [string, GgufValue]> = [
    ["general.architecture", str(ARCH)],
    ["general.name", str("ternary-core model")],
    ["general.alignment", u32(ALIGNMENT)],
    // 36 MOSTLY_TQ1_0, 37 MOSTLY_TQ2_0, 1 MOSTLY_F16.
    ["general.file_type", u32(ternary === 0 ? 1 : tq1 ? 36 : 37)],
    ["general.quantization_version", u32(2)],
    [`${ARCH}.vocab_size`, u32(c.vocab_size)],
    [`${ARCH}.context_length`, u32(c.max_seq_len)],
    [`${ARCH}.embedding_length`, u32(c.hidden_size)],
    [`${ARCH}.block_count`, u32(c.num_layers)],
    [`${ARCH}.feed_forward_length`, u32(c.intermediate_size)],
    [`${ARCH}.attention.head_count`, u32(c.num_heads)],
    [`${ARCH}.attention.head_count_kv`, u32(c.num_kv_heads)],
    [`${ARCH}.attention.layer_norm_rms_epsilon`, f32(c.layer_norm_eps)],
    [`${ARCH}.rope.freq_base`, f32(c.rope_theta)],
    [`${ARCH}.rope.dimension_count`, u32(headDim(c))],
    ...tokenizerMetadata(weights.tokenizer),
    [
      "ternary_core.config",
      str(JSON.stringify(Schema.encodeSync(OneBitLlmConfig)(c))),
    ],
    [
      "ternary_core.bit_map",
      str(JSON.stringify(Schema.encodeSync(LayerBitMap)(bitMap))),
    ],
  ];
  return encodeGgufFile(metadata, tensors);
}

// ---------------------------------------------------------------- reading

/** Metadata accessors that throw a {@link FormatViolation} naming the key. */
class Meta {
  constructor(private readonly m: ReadonlyMap<string, GgufValue>) {}

  has(key: string): boolean {
    return this.m.has(key);
  }

  private get(key: string, types: readonly string[]): GgufValue {
    const v = this.m.get(key);
    if (v === undefined) throw new FormatViolation(`missing metadata ${key}`);
    if (!types.includes(v.type)) {
      throw new FormatViolation(
        `metadata ${key} is a ${v.type}, expected ${types.join(" or ")}`,
      );
    }
    return v;
  }

  string(key: string): string {
    return this.get(key, ["string"]).value as string;
  }

  count(key: string): number {
    const v = this.get(key, ["u8", "u16", "u32", "i32", "u64", "i64"])
      .value as number;
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new FormatViolation(`metadata ${key} = ${v} is not a count`);
    }
    return v;
  }

  number(key: string): number {
    return this.get(key, ["f32", "f64"]).value as number;
  }

  array(key: string, itemType: string): ReadonlyArray<unknown> {
    const v = this.get(key, ["array"]);
    if (v.type !== "array" || v.itemType !== itemType) {
      throw new FormatViolation(
        `metadata ${key} is not an array of ${itemType}`,
      );
    }
    return v.value;
  }
}

function decodeJsonWith<T>(
  schema: Schema.Codec<T, unknown>,
  text: string,
  key: string,
): T {
  try {
    return Schema.decodeUnknownSync(schema)(JSON.parse(text));
  } catch (e) {
    throw new FormatViolation(`metadata ${key}: ${describe(e)}`);
  }
}

/** The config the `bitnet.*` keys describe (llama.cpp's fixed architecture). */
function configFromKeys(meta: Meta, vocab: number): Config {
  const p = `${ARCH}.`;
  const heads = meta.count(`${p}attention.head_count`);
  const encoded = {
    vocab_size: vocab,
    hidden_size: meta.count(`${p}embedding_length`),
    num_layers: meta.count(`${p}block_count`),
    intermediate_size: meta.count(`${p}feed_forward_length`),
    num_heads: heads,
    num_kv_heads: meta.has(`${p}attention.head_count_kv`)
      ? meta.count(`${p}attention.head_count_kv`)
      : heads,
    max_seq_len: meta.count(`${p}context_length`),
    layer_norm_eps: meta.number(`${p}attention.layer_norm_rms_epsilon`),
    rope_theta: meta.has(`${p}rope.freq_base`)
      ? meta.number(`${p}rope.freq_base`)
      : 10000,
    norm_type: "rms_norm",
    rope_style: "neox",
    use_rope: true,
    use_swiglu: true,
    use_relu2: false,
    use_subln: true,
    use_qk_norm: false,
    use_residual_scaling: false,
    tie_embeddings: true,
  };
  try {
    return Schema.decodeUnknownSync(OneBitLlmConfig)(encoded);
  } catch (e) {
    throw new FormatViolation(`bitnet hyperparameters: ${describe(e)}`);
  }
}

/** Throws unless the `bitnet.*` keys agree with the stored config. */
function checkKeysAgree(stored: Config, fromKeys: Config): void {
  const fields = [
    "vocab_size",
    "hidden_size",
    "num_layers",
    "intermediate_size",
    "num_heads",
    "num_kv_heads",
    "max_seq_len",
  ] as const;
  for (const f of fields) {
    if (stored[f] !== fromKeys[f]) {
      throw new FormatViolation(
        `ternary_core.config ${f} = ${
          stored[f]
        } disagrees with the bitnet metadata (${fromKeys[f]})`,
      );
    }
  }
  for (const f of ["layer_norm_eps", "rope_theta"] as const) {
    if (Math.fround(stored[f]) !== fromKeys[f]) {
      throw new FormatViolation(
        `ternary_core.config ${f} = ${
          stored[f]
        } disagrees with the bitnet metadata (${fromKeys[f]})`,
      );
    }
  }
}

function readTokenizer(meta: Meta): Tokenizer {
  const model = meta.string("tokenizer.ggml.model");
  if (model !== "gpt2") {
    throw new FormatViolation(
      `tokenizer.ggml.model is ${
        JSON.stringify(model)
      }; only "gpt2" (byte-level BPE) is supported`,
    );
  }
  const tokens = meta.array("tokenizer.ggml.tokens", "string") as string[];
  const types = meta.has("tokenizer.ggml.token_type")
    ? meta.array("tokenizer.ggml.token_type", "i32") as number[]
    : [];
  if (types.length !== 0 && types.length !== tokens.length) {
    throw new FormatViolation(
      `tokenizer.ggml.token_type has ${types.length} entries for ${tokens.length} tokens`,
    );
  }
  const merges: Array<[string, string]> = [];
  const rawMerges = meta.has("tokenizer.ggml.merges")
    ? meta.array("tokenizer.ggml.merges", "string") as string[]
    : [];
  rawMerges.forEach((m, i) => {
    const at = m.indexOf(" ", 1);
    if (at < 0) {
      throw new FormatViolation(
        `tokenizer.ggml.merges[${i}] = ${JSON.stringify(m)} is not "a b"`,
      );
    }
    merges.push([m.slice(0, at), m.slice(at + 1)]);
  });
  const specials: SpecialToken[] = [];
  types.forEach((t, id) => {
    if (t === TOKEN_CONTROL || t === TOKEN_USER_DEFINED) {
      specials.push({ id, content: tokens[id] });
    }
  });
  try {
    return new Tokenizer(tokens, merges, specials);
  } catch (e) {
    throw new FormatViolation(`tokenizer: ${describe(e)}`);
  }
}

/** The mode a block linear's ggml type stores. */
function linearModeOf(t: GgufTensor): QuantMode {
  switch (t.type) {
    case GGML_TYPE.TQ1_0:
    case GGML_TYPE.TQ2_0:
      return "ternary";
    case GGML_TYPE.F16:
    case GGML_TYPE.F32:
      return "f16";
    default:
      throw new FormatViolation(
        `tensor ${t.name} is ${
          ggmlTypeName(t.type)
        }; block linears must be TQ1_0, TQ2_0, F16 or F32`,
      );
  }
}

/** The bit map a foreign file's tensor types describe. */
function bitMapFromTypes(
  config: Config,
  byName: ReadonlyMap<string, GgufTensor>,
): LayerBitMap {
  const specs = modelTensors(config);
  const emb = byName.get("token_embd.weight");
  const embedding: QuantMode = emb?.type === GGML_TYPE.Q8_0
    ? "eightbit"
    : "f16";
  const layerModes: QuantMode[] = [];
  const overrides: Record<string, QuantMode> = {};
  for (let l = 0; l < config.num_layers; l++) {
    const linears = specs.filter((s) => s.kind === "linear" && s.layer === l);
    const modes = linears.map((s) => {
      const t = byName.get(s.name);
      if (t === undefined) {
        throw new FormatViolation(`missing tensor ${s.name}`);
      }
      return linearModeOf(t);
    });
    layerModes.push(modes[0]);
    linears.forEach((s, i) => {
      if (modes[i] !== modes[0] && s.kind === "linear") {
        overrides[`${l}.${s.linear satisfies LinearName}`] = modes[i];
      }
    });
  }
  return Object.keys(overrides).length === 0
    ? { embedding, layer_modes: layerModes }
    : { embedding, layer_modes: layerModes, overrides };
}

/** One tensor of the model from its GGUF tensor (and `.scale` companion). */
function readModelTensor(
  spec: TensorSpec,
  mode: QuantMode,
  t: GgufTensor,
  scaleTensor: GgufTensor | undefined,
): StoredTensor {
  const what = `tensor ${spec.name}`;
  const want = dims(spec.shape);
  if (t.dims.length !== want.length || t.dims.some((d, i) => d !== want[i])) {
    throw new FormatViolation(
      `${what} has dims [${t.dims}], the config expects [${want}]`,
    );
  }
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const [rows, cols] = spec.shape;
  const finite = (data: Float32Array) => {
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i])) {
        throw new FormatViolation(`${what}: value ${i} is ${data[i]}`);
      }
    }
    return data;
  };
  const typeError = (expected: string) =>
    new FormatViolation(
      `${what} is ${ggmlTypeName(t.type)}; its mode ${
        spec.kind === "norm" ? "(a norm)" : mode
      } needs ${expected}`,
    );
  if (spec.kind === "norm" || mode === "f16") {
    if (t.type === GGML_TYPE.F32) {
      return {
        kind: "dense",
        shape: spec.shape,
        data: finite(readF32Array(t.data, n)),
      };
    }
    if (t.type === GGML_TYPE.F16 && spec.kind !== "norm") {
      return {
        kind: "dense",
        shape: spec.shape,
        data: finite(f16BitsToF32Array(readU16Array(t.data, n))),
      };
    }
    throw typeError(spec.kind === "norm" ? "F32" : "F16 or F32");
  }
  if (mode === "ternary") {
    if (t.type !== GGML_TYPE.TQ1_0 && t.type !== GGML_TYPE.TQ2_0) {
      throw typeError("TQ1_0 or TQ2_0");
    }
    const tq1 = t.type === GGML_TYPE.TQ1_0;
    const rowBytes = (cols / QK) * (tq1 ? 54 : 66);
    const codes = new Int8Array(n);
    let d: number | undefined;
    for (let r = 0; r < rows; r++) {
      const row = t.data.subarray(r * rowBytes, (r + 1) * rowBytes);
      let decoded;
      try {
        decoded = tq1 ? decodeRowTq1_0(row, cols) : decodeRowTq2_0(row, cols);
      } catch (e) {
        throw new FormatViolation(`${what} row ${r}: ${describe(e)}`);
      }
      codes.set(decoded.codes, r * cols);
      for (const s of decoded.blockScales) {
        d ??= s;
        if (s !== d) {
          throw new FormatViolation(
            `${what}: its blocks have different scales (${d}, ${s}); one γ per tensor is supported`,
          );
        }
      }
    }
    let scale = d ?? 0;
    if (scaleTensor !== undefined) {
      if (
        scaleTensor.type !== GGML_TYPE.F32 || scaleTensor.dims.length !== 1 ||
        scaleTensor.dims[0] !== 1
      ) {
        throw new FormatViolation(
          `tensor ${scaleTensor.name} must be one F32 value`,
        );
      }
      scale = Math.fround(scale * readF32Array(scaleTensor.data, 1)[0]);
    }
    if (!Number.isFinite(scale) || scale < 0) {
      throw new FormatViolation(
        `${what}: scale ${scale} is not a finite γ ≥ 0`,
      );
    }
    return { kind: "ternary", rows, cols, codes, scale };
  }
  if (mode === "eightbit" && spec.kind === "embedding") {
    if (t.type !== GGML_TYPE.Q8_0) throw typeError("Q8_0");
    const blocks = cols / Q8_BLOCK;
    const codes = new Int8Array(n);
    const scales = new Float32Array(rows);
    for (let r = 0; r < rows; r++) {
      for (let b = 0; b < blocks; b++) {
        const o = (r * blocks + b) * 34;
        const s = f16BitsToF32(t.data[o] | (t.data[o + 1] << 8));
        if (b === 0) scales[r] = s;
        else if (s !== scales[r]) {
          throw new FormatViolation(
            `${what}: row ${r} has Q8_0 blocks with different scales; one scale per row is supported`,
          );
        }
        for (let j = 0; j < Q8_BLOCK; j++) {
          const q = (t.data[o + 2 + j] << 24) >> 24;
          if (q === -128) {
            throw new FormatViolation(`${what}: code -128 (outside ±127)`);
          }
          codes[r * cols + b * Q8_BLOCK + j] = q;
        }
      }
      if (!Number.isFinite(scales[r]) || scales[r] <= 0) {
        throw new FormatViolation(`${what}: row ${r} scale ${scales[r]}`);
      }
    }
    return { kind: "int8", rows, cols, codes, scales };
  }
  throw new FormatViolation(`${what}: mode ${mode} has no GGUF form here`);
}

function weightsFromFile(file: GgufFile): ModelWeights {
  const meta = new Meta(file.metadata);
  const arch = meta.string("general.architecture");
  if (arch !== ARCH) {
    throw new FormatViolation(
      `architecture ${JSON.stringify(arch)} is not supported (only "${ARCH}")`,
    );
  }
  const tokenizer = readTokenizer(meta);
  const fromKeys = configFromKeys(meta, tokenizer.vocabSize);
  const config = meta.has("ternary_core.config")
    ? decodeJsonWith(
      OneBitLlmConfig,
      meta.string("ternary_core.config"),
      "ternary_core.config",
    )
    : fromKeys;
  checkKeysAgree(config, fromKeys);
  const byName = new Map(file.tensors.map((t) => [t.name, t]));
  // Checked before modelTensors(config) builds a list from the config's sizes.
  const scaleCount = file.tensors.filter((t) => t.name.endsWith(".scale"))
    .length;
  if (file.tensors.length - scaleCount !== tensorCount(config)) {
    throw new FormatViolation(
      `the file has ${
        file.tensors.length - scaleCount
      } weight tensors, the config has ${tensorCount(config)}`,
    );
  }
  const bitMap = meta.has("ternary_core.bit_map")
    ? decodeJsonWith(
      LayerBitMap,
      meta.string("ternary_core.bit_map"),
      "ternary_core.bit_map",
    )
    : bitMapFromTypes(config, byName);
  const issues = bitMapIssues(config, bitMap);
  if (issues.length > 0) {
    throw new FormatViolation(`ternary_core.bit_map: ${issues.join("; ")}`);
  }
  const tensors = new Map<string, StoredTensor>();
  const used = new Set<string>();
  for (const spec of modelTensors(config)) {
    const t = byName.get(spec.name);
    if (t === undefined) {
      throw new FormatViolation(`missing tensor ${spec.name}`);
    }
    used.add(spec.name);
    const mode = tensorMode(spec, bitMap);
    let scaleTensor: GgufTensor | undefined;
    if (spec.kind === "linear") {
      scaleTensor = byName.get(scaleName(spec.name));
      if (scaleTensor !== undefined) used.add(scaleTensor.name);
    }
    tensors.set(spec.name, readModelTensor(spec, mode, t, scaleTensor));
  }
  for (const t of file.tensors) {
    if (!used.has(t.name)) {
      throw new FormatViolation(`unexpected tensor ${t.name}`);
    }
  }
  return { config, bitMap, tokenizer, tensors };
}

/**
 * Reads a GGUF file of llama.cpp's `bitnet` architecture back to
 * {@link ModelWeights}; `file` names it in messages. Files written by
 * {@link encodeGgufModel} come back exactly (f16-mode tensors as their f16
 * values; with `q8Embedding`, the embedding as int8 rows). Foreign `bitnet`
 * files load when every ternary tensor has one scale (TQ blocks all with the
 * same d, times its `.scale` tensor if any); the config then takes llama.cpp's
 * fixed `bitnet` switches.
 *
 * Fails with a {@link DataError} (never throws, never allocates beyond what
 * the file's size allows) on anything malformed, truncated or unsupported:
 * another architecture or tokenizer model, a missing or extra tensor, wrong
 * dims or types, out-of-range codes or scales.
 */
export const decodeGgufModel = (
  bytes: Uint8Array,
  file: string,
): Effect.Effect<ModelWeights, DataError> =>
  Effect.try({
    try: () => weightsFromFile(decodeGgufFile(bytes)),
    catch: (e) => new DataError({ file, message: `${file}: ${describe(e)}` }),
  });

/** Writes {@link encodeGgufModel}'s bytes to `path` atomically; returns the size. */
export const writeGgufModel = (
  path: string,
  weights: ModelWeights,
  options: GgufOptions = {},
): Effect.Effect<number, ExportError | DataError> =>
  writeModelFile(path, () => encodeGgufModel(weights, options));

/** Reads and decodes a GGUF model file (see {@link decodeGgufModel}). */
export const readGgufModel = (
  path: string,
): Effect.Effect<ModelWeights, DataError> =>
  readModelFile(path, decodeGgufModel);
