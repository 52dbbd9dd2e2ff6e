import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect, Schema } from "effect";
import {
  bitMapIssues,
  type DefaultedField,
  headDim,
  OneBitLlmConfig,
  type OneBitLlmConfigEncoded,
  resolveBitMap,
} from "../../src/common/config.ts";
import {
  LayerBitMap,
  LINEAR_NAMES,
  linearMode,
  type LinearName,
  lmHeadMode,
} from "../../src/common/layer_bit_map.ts";
import {
  decodeConfigJson,
  encodeConfigJson,
} from "../../src/common/config_file.ts";
import { preset, PRESETS } from "../../src/common/presets.ts";
import { QUANT_MODES } from "../../src/common/quant_mode.ts";

const decode = Schema.decodeUnknownSync(OneBitLlmConfig);
const encode = Schema.encodeSync(OneBitLlmConfig);

const DEFAULTED: ReadonlyArray<DefaultedField> = [
  "num_kv_heads",
  "layer_norm_eps",
  "rope_theta",
  "rope_style",
  "norm_type",
  "tie_embeddings",
  "use_ternary",
  "use_relu2",
  "use_swiglu",
  "use_subln",
  "use_rope",
  "use_qk_norm",
  "use_residual_scaling",
  "use_dynamic_threshold",
  "latent_clamp_max",
  "latent_clip_max_training",
];

const DEFAULTS = {
  layer_norm_eps: 1e-5,
  rope_theta: 10000,
  rope_style: "neox",
  norm_type: "rms_norm",
  tie_embeddings: true,
  use_ternary: true,
  use_relu2: false,
  use_swiglu: true,
  use_subln: true,
  use_rope: true,
  use_qk_norm: false,
  use_residual_scaling: false,
  use_dynamic_threshold: false,
  latent_clamp_max: 1,
  latent_clip_max_training: 1,
} as const;

const modeArb = fc.constantFrom(...QUANT_MODES);
const positive = fc.double({
  min: 1e-12,
  max: 1e9,
  noNaN: true,
  noDefaultInfinity: true,
});

function bitMapArb(
  numLayers: number,
  useSwiglu: boolean,
  tied: boolean,
): fc.Arbitrary<LayerBitMap> {
  const linears = LINEAR_NAMES.filter((n) => useSwiglu || n !== "mlp.gate");
  const key = fc.tuple(
    fc.integer({ min: 0, max: numLayers - 1 }),
    fc.constantFrom(...linears),
  ).map(([l, n]) => `${l}.${n}`);
  return fc.record({
    embedding: modeArb,
    layer_modes: fc.array(modeArb, {
      minLength: numLayers,
      maxLength: numLayers,
    }),
    lm_head: modeArb,
    overrides: fc.dictionary(key, modeArb, { maxKeys: 4 }),
  }, { requiredKeys: ["embedding", "layer_modes"] }).map((m) =>
    // A tied head shares the embedding's storage, so it cannot differ.
    tied && m.lm_head !== undefined ? { ...m, lm_head: m.embedding } : m
  );
}

/**
 * Valid JSON configs: sizes built so every cross-field rule holds, each
 * defaulted field present or omitted at random.
 */
const validEncodedArb: fc.Arbitrary<OneBitLlmConfigEncoded> = fc.record({
  kv: fc.integer({ min: 1, max: 6 }),
  group: fc.integer({ min: 1, max: 4 }),
  halfHead: fc.integer({ min: 1, max: 40 }),
  oddHead: fc.boolean(),
  use_rope: fc.boolean(),
  ffn: fc.constantFrom("swiglu", "relu2", "plain"),
  num_layers: fc.integer({ min: 1, max: 8 }),
  tie_embeddings: fc.boolean(),
  withMap: fc.boolean(),
}).chain((s) => {
  const num_heads = s.kv * s.group;
  const head = 2 * s.halfHead - (!s.use_rope && s.oddHead ? 1 : 0);
  const use_swiglu = s.ffn === "swiglu";
  return fc.record({
    full: fc.record({
      vocab_size: fc.integer({ min: 1, max: 100_000 }),
      hidden_size: fc.constant(num_heads * head),
      num_heads: fc.constant(num_heads),
      num_kv_heads: fc.constant(s.kv),
      num_layers: fc.constant(s.num_layers),
      intermediate_size: fc.integer({ min: 1, max: 10_000 }),
      max_seq_len: fc.integer({ min: 1, max: 8192 }),
      layer_norm_eps: positive,
      rope_theta: positive,
      rope_style: fc.constantFrom("neox", "interleaved"),
      norm_type: fc.constantFrom("rms_norm", "layer_norm"),
      tie_embeddings: fc.constant(s.tie_embeddings),
      use_ternary: fc.boolean(),
      use_relu2: fc.constant(s.ffn === "relu2"),
      use_swiglu: fc.constant(use_swiglu),
      use_subln: fc.boolean(),
      use_rope: fc.constant(s.use_rope),
      use_qk_norm: fc.boolean(),
      use_residual_scaling: fc.boolean(),
      use_dynamic_threshold: fc.boolean(),
      latent_clamp_max: positive,
      latent_clip_max_training: positive,
      layer_bit_map: s.withMap
        ? bitMapArb(s.num_layers, use_swiglu, s.tie_embeddings)
        : fc.constant(undefined),
    }),
    omit: fc.subarray([...DEFAULTED]),
  }).map(({ full, omit }) => {
    const out: Record<string, unknown> = { ...full };
    if (full.layer_bit_map === undefined) delete out.layer_bit_map;
    // Omitting a flag that differs from its default would change the model
    // (e.g. use_relu2 with use_swiglu defaulting to true); omit only defaults.
    for (const k of omit) {
      if (
        k === "num_kv_heads"
          ? full.num_kv_heads === full.num_heads
          : full[k] === DEFAULTS[k]
      ) delete out[k];
    }
    // Plain JSON objects, as read from a file (fast-check builds some records
    // with a null prototype).
    return JSON.parse(JSON.stringify(out)) as OneBitLlmConfigEncoded;
  });
});

Deno.test("valid configs decode, and decode∘encode is the identity", () => {
  fc.assert(
    fc.property(validEncodedArb, (e) => {
      const c = decode(e);
      const encoded = encode(c);
      // Every defaulted field is written back.
      for (const k of DEFAULTED) assert.ok(k in encoded, `missing ${k}`);
      assert.deepStrictEqual(decode(encoded), c);
      // Decoding keeps every given field.
      for (const [k, v] of Object.entries(e)) {
        assert.deepStrictEqual((c as unknown as Record<string, unknown>)[k], v);
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("the JSON text round trip is the identity on decoded configs", () => {
  fc.assert(
    fc.property(validEncodedArb, (e) => {
      const c = decode(e);
      const again = Effect.runSync(
        decodeConfigJson(encodeConfigJson(c), "c.json"),
      );
      assert.deepStrictEqual(again, c);
    }),
    { numRuns: 150 },
  );
});

Deno.test("omitted fields get their documented defaults", () => {
  const c = decode({
    vocab_size: 100,
    hidden_size: 48,
    num_heads: 6,
    num_layers: 3,
    intermediate_size: 96,
    max_seq_len: 32,
  });
  assert.equal(c.num_kv_heads, 6);
  for (const [k, v] of Object.entries(DEFAULTS)) {
    assert.equal((c as unknown as Record<string, unknown>)[k], v, k);
  }
  assert.equal(c.layer_bit_map, undefined);
  assert.equal(headDim(c), 8);
});

Deno.test("decode defaults num_kv_heads before checking divisibility", () => {
  // num_heads 6 with no num_kv_heads: default 6, which divides 6.
  const c = decode({
    vocab_size: 10,
    hidden_size: 12,
    num_heads: 6,
    num_layers: 1,
    intermediate_size: 8,
    max_seq_len: 4,
  });
  assert.equal(c.num_kv_heads, 6);
  assert.throws(
    () => decode({ ...encode(c), num_kv_heads: 4 }),
    /num_kv_heads/,
  );
});

Deno.test("resolveBitMap: explicit map, else ternary or f16 blocks with an f16 embedding", () => {
  fc.assert(
    fc.property(validEncodedArb, (e) => {
      const c = decode(e);
      const map = resolveBitMap(c);
      if (c.layer_bit_map !== undefined) {
        assert.equal(map, c.layer_bit_map);
      } else {
        assert.equal(map.embedding, "f16");
        assert.equal(lmHeadMode(map), "f16");
        assert.deepStrictEqual(
          map.layer_modes,
          Array(c.num_layers).fill(c.use_ternary ? "ternary" : "f16"),
        );
      }
      assert.deepStrictEqual(bitMapIssues(c, map), []);
    }),
    { numRuns: 100 },
  );
});

Deno.test("linearMode: the override, else the layer's mode", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 6 }).chain((n) =>
        fc.tuple(
          bitMapArb(n, true, false),
          fc.integer({ min: 0, max: n - 1 }),
          fc.constantFrom(...LINEAR_NAMES),
        )
      ),
      ([map, layer, linear]) => {
        const key = `${layer}.${linear}`;
        const expected = map.overrides?.[key] ?? map.layer_modes[layer];
        assert.equal(linearMode(map, layer, linear as LinearName), expected);
      },
    ),
  );
  const map: LayerBitMap = {
    embedding: "f16",
    layer_modes: ["ternary", "binary"],
    overrides: { "1.mlp.down": "eightbit" },
  };
  assert.equal(linearMode(map, 1, "mlp.down"), "eightbit");
  assert.equal(linearMode(map, 1, "mlp.up"), "binary");
  assert.equal(linearMode(map, 0, "mlp.down"), "ternary");
  assert.throws(() => linearMode(map, 2, "attn.q"), /layer 2 is out of range/);
  assert.throws(() => linearMode(map, -1, "attn.q"), /layer -1/);
});

Deno.test("lmHeadMode falls back to the embedding's mode", () => {
  assert.equal(
    lmHeadMode({ embedding: "eightbit", layer_modes: [] }),
    "eightbit",
  );
  assert.equal(
    lmHeadMode({ embedding: "f16", layer_modes: [], lm_head: "ternary" }),
    "ternary",
  );
});

Deno.test("LayerBitMap JSON is the original's shape and round-trips", () => {
  const json = {
    embedding: "f16",
    layer_modes: ["ternary", "eightbit"],
    lm_head: "f16",
  };
  const map = Schema.decodeUnknownSync(LayerBitMap)(json);
  assert.deepStrictEqual(Schema.encodeSync(LayerBitMap)(map), json);
  for (
    const bad of [
      "1.mlp",
      "01.attn.q",
      "-1.attn.q",
      "1.attn.x",
      "a.attn.q",
      "1.attn.q ",
    ]
  ) {
    assert.throws(
      () =>
        Schema.decodeUnknownSync(LayerBitMap)({
          ...json,
          overrides: { [bad]: "f16" },
        }),
      /<layer>\.<linear>/,
      bad,
    );
  }
});

Deno.test("presets decode, validate and have the documented shapes", () => {
  for (const [name, c] of Object.entries(PRESETS)) {
    assert.deepStrictEqual(decode(encode(c)), c, name);
    assert.equal(preset(name), c);
    // llama.cpp `bitnet` architecture.
    assert.equal(c.use_swiglu, true, name);
    assert.equal(c.use_relu2, false, name);
    assert.equal(c.use_subln, true, name);
    assert.equal(c.use_rope, true, name);
    assert.equal(c.rope_style, "neox", name);
    assert.equal(c.norm_type, "rms_norm", name);
    assert.equal(c.tie_embeddings, true, name);
    assert.equal(c.use_qk_norm, false, name);
    assert.equal(c.use_residual_scaling, false, name);
  }
  const sizes = (c: OneBitLlmConfig) => [
    c.vocab_size,
    c.hidden_size,
    c.num_layers,
    c.num_heads,
    c.intermediate_size,
    c.max_seq_len,
  ];
  assert.deepStrictEqual(sizes(preset("tiny")), [512, 64, 2, 4, 128, 64]);
  assert.deepStrictEqual(sizes(preset("ref-4m")), [4096, 256, 4, 4, 768, 128]);
  assert.deepStrictEqual(sizes(preset("bitnet-100m")), [
    4096,
    768,
    12,
    12,
    2048,
    512,
  ]);
  assert.throws(
    () => preset("huge"),
    (e: Error) =>
      e.message.includes('"huge"') && e.message.includes("tiny") &&
      e.message.includes("ref-4m") && e.message.includes("bitnet-100m"),
  );
  assert.throws(() => preset("toString"), /unknown preset/);
});

Deno.test("bitMapIssues names each misfit", () => {
  const shape = { num_layers: 2, use_swiglu: false, tie_embeddings: true };
  assert.deepStrictEqual(
    bitMapIssues(shape, { embedding: "f16", layer_modes: ["f16", "f16"] }),
    [],
  );
  const issues = bitMapIssues(shape, {
    embedding: "f16",
    lm_head: "ternary",
    layer_modes: ["f16"],
    overrides: { "2.attn.q": "f16", "0.mlp.gate": "f16" },
  });
  assert.equal(issues.length, 4);
  assert.match(issues[0], /layer_modes has 1 entry but num_layers is 2/);
  assert.match(issues[1], /"2\.attn\.q": layer 2 is out of range/);
  assert.match(
    issues[2],
    /"0\.mlp\.gate": mlp\.gate exists only when use_swiglu/,
  );
  assert.match(
    issues[3],
    /lm_head \(ternary\) must equal layer_bit_map\.embedding/,
  );
});
