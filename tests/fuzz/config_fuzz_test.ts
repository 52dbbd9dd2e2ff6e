/**
 * Fuzzing the model config and LayerBitMap JSON readers: every input is
 * rejected with a ConfigError naming the file, or decodes to a value whose
 * JSON keeps every key and value of the input and re-encodes to itself.
 */
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect } from "effect";
import {
  decodeBitMapJson,
  decodeConfigJson,
  encodeBitMapJson,
  encodeConfigJson,
} from "../../src/common/config_file.ts";
import { PRESETS } from "../../src/common/presets.ts";
import { resolveBitMap } from "../../src/common/config.ts";
import type { LayerBitMap } from "../../src/common/layer_bit_map.ts";
import {
  decodeOnce,
  fuzzParameters,
  FuzzStats,
  jsonInputs,
  keptIn,
} from "./harness.ts";

const FILE = "fuzz/config.json";
const MAP_FILE = "fuzz/bit_map.json";

const mixedMap: LayerBitMap = {
  embedding: "f16",
  layer_modes: ["ternary", "eightbit", "ternary", "binary"],
  lm_head: "eightbit",
  overrides: { "3.mlp.down": "eightbit", "0.attn.q": "f16" },
};

const validConfigs: unknown[] = [
  ...Object.values(PRESETS).map((c) => JSON.parse(encodeConfigJson(c))),
  {
    ...JSON.parse(encodeConfigJson(PRESETS["ref-4m"])),
    layer_bit_map: mixedMap,
  },
  // The minimal form: only the fields without defaults.
  {
    vocab_size: 256,
    hidden_size: 64,
    num_heads: 4,
    num_layers: 2,
    intermediate_size: 128,
    max_seq_len: 64,
  },
];

const validMaps: unknown[] = [
  mixedMap,
  resolveBitMap(PRESETS["ref-4m"]),
  { embedding: "f16", layer_modes: [] },
];

Deno.test("fuzz: model config JSON", () => {
  const stats = new FuzzStats("config.json");
  fc.assert(
    fc.property(
      jsonInputs(validConfigs, ["layer_bit_map", "hidden_size"]),
      ([kind, text]) => {
        stats.count(kind);
        const r = decodeOnce(stats, () => decodeConfigJson(text, FILE), FILE, [
          "ConfigError",
        ]);
        if (!r.ok) return;
        const again = encodeConfigJson(r.value);
        assert.ok(keptIn(JSON.parse(text), JSON.parse(again)), again);
        const back = Effect.runSync(decodeConfigJson(again, FILE));
        assert.deepEqual(back, r.value);
        assert.equal(encodeConfigJson(back), again);
      },
    ),
    fuzzParameters(),
  );
  console.log(stats.summary());
});

Deno.test("fuzz: LayerBitMap JSON", () => {
  const stats = new FuzzStats("bit map JSON");
  fc.assert(
    fc.property(
      jsonInputs(validMaps, ["overrides", "lm_head", "1.mlp.up"]),
      ([kind, text]) => {
        stats.count(kind);
        const r = decodeOnce(
          stats,
          () => decodeBitMapJson(text, MAP_FILE),
          MAP_FILE,
          [
            "ConfigError",
          ],
        );
        if (!r.ok) return;
        const again = encodeBitMapJson(r.value);
        assert.ok(keptIn(JSON.parse(text), JSON.parse(again)), again);
        const back = Effect.runSync(decodeBitMapJson(again, MAP_FILE));
        assert.deepEqual(back, r.value);
        assert.equal(encodeBitMapJson(back), again);
      },
    ),
    fuzzParameters(),
  );
  console.log(stats.summary());
});

Deno.test("config and bit map files written by the encoders decode to the same bytes", () => {
  for (const config of Object.values(PRESETS)) {
    const text = encodeConfigJson(config);
    assert.equal(
      encodeConfigJson(Effect.runSync(decodeConfigJson(text, FILE))),
      text,
    );
  }
  const text = encodeBitMapJson(mixedMap);
  assert.equal(
    encodeBitMapJson(Effect.runSync(decodeBitMapJson(text, MAP_FILE))),
    text,
  );
});
