import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Schema } from "effect";
import { OneBitLlmConfig } from "../../src/common/config.ts";
import type { LayerBitMap } from "../../src/common/layer_bit_map.ts";
import { preset, PRESETS } from "../../src/common/presets.ts";
import { QUANT_MODES, type QuantMode } from "../../src/common/quant_mode.ts";
import { compressionStats, storageBytes } from "../../src/core/compression.ts";
import { modelTensors, tensorNumel } from "../../src/core/tensors.ts";

const decode = Schema.decodeUnknownSync(OneBitLlmConfig);

/** Small valid configs covering every structural flag. */
const configArb: fc.Arbitrary<OneBitLlmConfig> = fc.record({
  kv: fc.integer({ min: 1, max: 4 }),
  group: fc.integer({ min: 1, max: 3 }),
  halfHead: fc.integer({ min: 1, max: 8 }),
  vocab_size: fc.integer({ min: 1, max: 300 }),
  num_layers: fc.integer({ min: 1, max: 4 }),
  intermediate_size: fc.integer({ min: 1, max: 100 }),
  ffn: fc.constantFrom("swiglu", "relu2", "plain"),
  norm_type: fc.constantFrom("rms_norm", "layer_norm"),
  tie_embeddings: fc.boolean(),
  use_subln: fc.boolean(),
  use_qk_norm: fc.boolean(),
  use_ternary: fc.boolean(),
}).map((s) =>
  decode({
    vocab_size: s.vocab_size,
    num_heads: s.kv * s.group,
    num_kv_heads: s.kv,
    hidden_size: s.kv * s.group * 2 * s.halfHead,
    num_layers: s.num_layers,
    intermediate_size: s.intermediate_size,
    max_seq_len: 16,
    use_swiglu: s.ffn === "swiglu",
    use_relu2: s.ffn === "relu2",
    norm_type: s.norm_type,
    tie_embeddings: s.tie_embeddings,
    use_subln: s.use_subln,
    use_qk_norm: s.use_qk_norm,
    use_ternary: s.use_ternary,
  })
);

const modeArb = fc.constantFrom(...QUANT_MODES);

/** A config with a bit map that fits it. */
const configWithMapArb: fc.Arbitrary<[OneBitLlmConfig, LayerBitMap]> = configArb
  .chain((c) =>
    fc.record({
      embedding: modeArb,
      layer_modes: fc.array(modeArb, {
        minLength: c.num_layers,
        maxLength: c.num_layers,
      }),
      lm_head: modeArb,
    }).map((m): [OneBitLlmConfig, LayerBitMap] => [
      c,
      c.tie_embeddings ? { ...m, lm_head: m.embedding } : m,
    ])
  );

const uniform = (c: OneBitLlmConfig, mode: QuantMode): LayerBitMap => ({
  embedding: "f16",
  layer_modes: Array(c.num_layers).fill(mode),
});

const sum = (xs: ReadonlyArray<number>) => xs.reduce((a, b) => a + b, 0);

Deno.test("storageBytes follows the documented storage model", () => {
  assert.equal(storageBytes("f32", [5]), 20);
  assert.equal(storageBytes("f16", [3, 10]), 60);
  assert.equal(storageBytes("eightbit", [3, 10]), 30 + 3 * 4);
  assert.equal(storageBytes("ternary", [1, 11]), 3 + 4);
  assert.equal(storageBytes("ternary", [2, 5]), 2 + 4);
  assert.equal(storageBytes("binary", [1, 9]), 2 + 4);
  assert.equal(storageBytes("binary", [2, 4]), 1 + 4);
  assert.throws(
    () => storageBytes("int4" as QuantMode, [4]),
    /unknown mode "int4"/,
  );
});

Deno.test("tiny: hand-computed totals", () => {
  // tiny: vocab 512, hidden 64, 2 layers, FFN 128, SwiGLU, SubLN, tied, ternary.
  // token_embd 512·64 = 32768 weights, f16: 65536 B.
  // Per block: q,k,v,o 4096 weights each, ternary ceil(4096/5)+4 = 824 B;
  // gate, up, down 8192 each, ceil(8192/5)+4 = 1643 B; norms 64+64+64+128 = 320
  // weights, f32: 1280 B. Block: 41280 weights, 4·824 + 3·1643 + 1280 = 9505 B.
  // output_norm 64 weights: 256 B.
  const s = compressionStats(preset("tiny"));
  assert.equal(s.totalParams, 32768 + 2 * 41280 + 64);
  assert.equal(s.totalBytes, 65536 + 2 * 9505 + 256);
  assert.deepStrictEqual(
    s.layers.map((l) => [l.layer, l.params, l.bytes]),
    [[0, 41280, 9505], [1, 41280, 9505]],
  );
  // All f16: 2 B per linear and embedding weight, norms still f32.
  const f16 = 2 * (32768 + 2 * 40960) + 4 * (2 * 320 + 64);
  assert.equal(s.f16Bytes, f16);
  assert.equal(s.ratio, f16 / (65536 + 2 * 9505 + 256));
  assert.equal(s.bitsPerParam, 8 * s.totalBytes / s.totalParams);
  const q = s.tensors.find((t) => t.name === "blk.1.attn_q.weight")!;
  assert.deepStrictEqual(q, {
    name: "blk.1.attn_q.weight",
    params: 4096,
    mode: "ternary",
    bytes: 824,
    bitsPerParam: 8 * 824 / 4096,
  });
  const norm = s.tensors.find((t) => t.name === "blk.0.ffn_sub_norm.weight")!;
  assert.deepStrictEqual([norm.mode, norm.params, norm.bytes], [
    "f32",
    128,
    512,
  ]);
});

Deno.test("per-tensor and per-layer figures add up to the totals", () => {
  fc.assert(
    fc.property(configWithMapArb, ([c, map]) => {
      const s = compressionStats(c, map);
      const specs = modelTensors(c);
      assert.equal(s.tensors.length, specs.length);
      assert.equal(sum(s.tensors.map((t) => t.bytes)), s.totalBytes);
      assert.equal(sum(s.tensors.map((t) => t.params)), s.totalParams);
      assert.equal(s.totalParams, sum(specs.map(tensorNumel)));
      // Blocks hold everything but the embedding, output_norm and the head.
      const outside = s.tensors.filter((_, i) => specs[i].layer === undefined);
      assert.equal(
        sum(s.layers.map((l) => l.bytes)) + sum(outside.map((t) => t.bytes)),
        s.totalBytes,
      );
      assert.equal(s.layers.length, c.num_layers);
      for (const t of s.tensors) {
        assert.equal(t.bitsPerParam, 8 * t.bytes / t.params);
      }
      // The head, when stored, is at its own mode; a tied one is not stored.
      const head = s.tensors.find((t) => t.name === "output.weight");
      if (c.tie_embeddings) assert.equal(head, undefined);
      else assert.equal(head?.mode, map.lm_head);
    }),
    { numRuns: 200 },
  );
});

Deno.test("an all-f16 map has ratio 1; ternary < eightbit < f16 and binary < ternary", () => {
  // eightbit costs rows·(cols + 4) bytes against f16's 2·rows·cols: smaller
  // only when every linear has more than 4 inputs.
  const wide = configArb.filter((c) =>
    c.hidden_size > 4 && c.intermediate_size > 4
  );
  fc.assert(
    fc.property(wide, (c) => {
      const bytes = (m: QuantMode) => compressionStats(c, uniform(c, m));
      const f16 = bytes("f16");
      assert.equal(f16.ratio, 1);
      assert.equal(f16.totalBytes, f16.f16Bytes);
      const eight = bytes("eightbit");
      const tern = bytes("ternary");
      const bin = bytes("binary");
      assert.ok(eight.totalBytes < f16.totalBytes);
      assert.ok(tern.totalBytes < eight.totalBytes);
      assert.ok(bin.totalBytes <= tern.totalBytes);
      assert.ok(tern.ratio > eight.ratio && eight.ratio > 1);
      assert.equal(tern.f16Bytes, f16.totalBytes);
    }),
    { numRuns: 100 },
  );
  // Strictly smaller once a tensor holds more than a handful of weights.
  const c = preset("tiny");
  assert.ok(
    compressionStats(c, uniform(c, "binary")).totalBytes <
      compressionStats(c, uniform(c, "ternary")).totalBytes,
  );
});

Deno.test("a big ternary linear costs about 1.6 bits per weight", () => {
  const s = compressionStats(PRESETS["bitnet-100m"]);
  const down = s.tensors.find((t) => t.name === "blk.11.ffn_down.weight")!;
  assert.equal(down.params, 768 * 2048);
  assert.equal(down.bytes, Math.ceil(768 * 2048 / 5) + 4);
  assert.ok(Math.abs(down.bitsPerParam - 1.6) < 1e-4, `${down.bitsPerParam}`);
  // The blocks alone come close to 1.6 bits as well (norms are tiny).
  for (const l of s.layers) assert.ok(l.bitsPerParam < 1.62);
});

Deno.test("overrides and the LM head change exactly their tensors", () => {
  const c = decode({
    ...Schema.encodeSync(OneBitLlmConfig)(PRESETS.tiny),
    tie_embeddings: false,
  });
  const map: LayerBitMap = {
    embedding: "f16",
    layer_modes: ["ternary", "ternary"],
    lm_head: "eightbit",
    overrides: { "1.mlp.down": "binary" },
  };
  const s = compressionStats(c, map);
  const base = compressionStats(c, { ...map, overrides: {} });
  const changed = s.tensors.filter((t, i) => t.bytes !== base.tensors[i].bytes);
  assert.deepStrictEqual(changed.map((t) => [t.name, t.mode]), [
    ["blk.1.ffn_down.weight", "binary"],
  ]);
  const head = s.tensors.find((t) => t.name === "output.weight")!;
  // eightbit: one byte per weight plus an f32 scale per output row.
  assert.equal(head.bytes, 512 * 64 + 4 * 512);
  // lm_head absent: the embedding's mode.
  const fallback = compressionStats(c, { ...map, lm_head: undefined });
  assert.equal(
    fallback.tensors.find((t) => t.name === "output.weight")!.mode,
    "f16",
  );
});

Deno.test("compressionStats rejects a bit map that does not fit", () => {
  const c = preset("tiny");
  assert.throws(
    () => compressionStats(c, { embedding: "f16", layer_modes: ["f16"] }),
    /bitMap does not fit.*layer_modes has 1 entry but num_layers is 2/,
  );
  assert.throws(
    () =>
      compressionStats(c, {
        embedding: "f16",
        layer_modes: ["f16", "f16"],
        lm_head: "ternary",
      }),
    /tie_embeddings/,
  );
});

Deno.test("modelTensors: ref-4m has 4,462,848 weights in llama.cpp bitnet names", () => {
  const c = preset("ref-4m");
  const ts = modelTensors(c);
  assert.equal(sum(ts.map(tensorNumel)), 4_462_848);
  assert.deepStrictEqual(
    ts.filter((t) => t.layer === 0 || t.layer === undefined).map((t) => [
      t.name,
      t.shape,
      t.kind,
    ]),
    [
      ["token_embd.weight", [4096, 256], "embedding"],
      ["blk.0.attn_norm.weight", [256], "norm"],
      ["blk.0.attn_q.weight", [256, 256], "linear"],
      ["blk.0.attn_k.weight", [256, 256], "linear"],
      ["blk.0.attn_v.weight", [256, 256], "linear"],
      ["blk.0.attn_sub_norm.weight", [256], "norm"],
      ["blk.0.attn_output.weight", [256, 256], "linear"],
      ["blk.0.ffn_norm.weight", [256], "norm"],
      ["blk.0.ffn_gate.weight", [768, 256], "linear"],
      ["blk.0.ffn_up.weight", [768, 256], "linear"],
      ["blk.0.ffn_sub_norm.weight", [768], "norm"],
      ["blk.0.ffn_down.weight", [256, 768], "linear"],
      ["output_norm.weight", [256], "norm"],
    ],
  );
  assert.deepStrictEqual(
    ts.filter((t) => t.kind === "linear" && t.layer === 3).map((t) => t.linear),
    ["attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down"],
  );
});

Deno.test("modelTensors follows the structural flags", () => {
  fc.assert(
    fc.property(configArb, (c) => {
      const ts = modelTensors(c);
      const names = ts.map((t) => t.name);
      assert.equal(new Set(names).size, names.length, "names are unique");
      const hd = c.hidden_size / c.num_heads;
      const norms = 2 + (c.use_subln ? 2 : 0) + (c.use_qk_norm ? 2 : 0);
      const linears = c.use_swiglu ? 7 : 6;
      const perNorm = c.norm_type === "layer_norm" ? 2 : 1;
      assert.equal(
        ts.length,
        1 + c.num_layers * (linears + norms * perNorm) + perNorm +
          (c.tie_embeddings ? 0 : 1),
      );
      const get = (n: string) => ts.find((t) => t.name === n);
      const last = c.num_layers - 1;
      assert.deepStrictEqual(get(`blk.${last}.attn_k.weight`)?.shape, [
        c.num_kv_heads * hd,
        c.hidden_size,
      ]);
      assert.deepStrictEqual(get(`blk.${last}.attn_v.weight`)?.shape, [
        c.num_kv_heads * hd,
        c.hidden_size,
      ]);
      assert.equal(get("blk.0.ffn_gate.weight") !== undefined, c.use_swiglu);
      assert.deepStrictEqual(
        get("blk.0.attn_q_norm.weight")?.shape,
        c.use_qk_norm ? [hd] : undefined,
      );
      assert.deepStrictEqual(
        get("blk.0.ffn_sub_norm.weight")?.shape,
        c.use_subln ? [c.intermediate_size] : undefined,
      );
      assert.deepStrictEqual(
        get("output_norm.bias")?.shape,
        c.norm_type === "layer_norm" ? [c.hidden_size] : undefined,
      );
      assert.deepStrictEqual(
        get("output.weight"),
        c.tie_embeddings ? undefined : {
          name: "output.weight",
          shape: [c.vocab_size, c.hidden_size],
          kind: "lm_head",
        },
      );
      for (const t of ts) {
        assert.equal(t.kind === "linear", t.linear !== undefined, t.name);
        if (t.name.startsWith("blk.")) {
          assert.equal(t.layer, Number(t.name.split(".")[1]), t.name);
        } else assert.equal(t.layer, undefined, t.name);
      }
    }),
    { numRuns: 200 },
  );
});
