import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Schema } from "effect";
import { OneBitLlmConfig, resolveBitMap } from "../../src/common/config.ts";
import { QUANT_MODES } from "../../src/common/quant_mode.ts";
import { compressionStats } from "../../src/core/compression.ts";
import { assignmentsBySize } from "../../src/search/by_size.ts";
import { selectEvalWindows } from "../../src/search/evaluator.ts";
import {
  allAssignments,
  assignmentBytes,
  buildSpace,
  fromBitMap,
  mapKey,
  parsePins,
  SearchError,
  type SearchSpace,
  toBitMap,
} from "../../src/search/space.ts";

const decode = Schema.decodeSync(OneBitLlmConfig);
const base = {
  vocab_size: 50,
  hidden_size: 16,
  num_heads: 2,
  num_layers: 3,
  intermediate_size: 24,
  max_seq_len: 8,
};
const CONFIGS = [
  decode(base),
  decode({ ...base, tie_embeddings: false }),
  decode({
    ...base,
    use_swiglu: false,
    norm_type: "layer_norm",
    num_layers: 2,
  }),
  decode({ ...base, use_qk_norm: true, num_kv_heads: 1 }),
];

const spaces = fc.record({
  config: fc.constantFrom(...CONFIGS),
  granularity: fc.constantFrom("block" as const, "linear" as const),
  unpinEmbedding: fc.boolean(),
  modes: fc.subarray([...QUANT_MODES], { minLength: 1 }),
  pins: fc.constantFrom("", "0", "1.attn.q=eightbit", "0,1.mlp.up"),
}).map((o) =>
  buildSpace(o.config, resolveBitMap(o.config), {
    granularity: o.granularity,
    unpinEmbedding: o.unpinEmbedding,
    modes: o.modes,
    pins: parsePins(o.pins),
  })
);

const randomPoint = (space: SearchSpace, seed: number) =>
  space.units.map((u, i) => (seed * 31 + i * 7) % u.modes.length);

Deno.test("space: bytes of every point are exactly compressionStats' total", () => {
  fc.assert(
    fc.property(spaces, fc.nat(1000), (space, seed) => {
      const a = randomPoint(space, seed);
      const map = toBitMap(space, a);
      assert.equal(
        assignmentBytes(space, a),
        compressionStats(space.config, map).totalBytes,
      );
      assert.deepEqual(fromBitMap(space, map), a);
    }),
    { numRuns: 200 },
  );
});

Deno.test("space: pins hold their modes; the key names every slot's mode", () => {
  const config = CONFIGS[0];
  const space = buildSpace(config, resolveBitMap(config), {
    granularity: "linear",
    pins: parsePins("0, 2.mlp.down=eightbit"),
  });
  // 7 linears of block 1 and 6 of block 2; block 0 and the embedding pinned.
  assert.equal(space.units.length, 13);
  for (const a of [space.units.map(() => 0), space.units.map(() => 3)]) {
    const map = toBitMap(space, a);
    assert.equal(map.layer_modes[0], "ternary");
    assert.equal(map.embedding, "f16");
    assert.equal(
      map.overrides?.["2.mlp.down"] ?? map.layer_modes[2],
      "eightbit",
    );
  }
  // Two spellings of one assignment share a key.
  assert.equal(
    mapKey(config, {
      embedding: "f16",
      layer_modes: ["ternary", "binary", "binary"],
    }),
    mapKey(config, {
      embedding: "f16",
      layer_modes: ["ternary", "ternary", "binary"],
      overrides: Object.fromEntries(
        [
          "attn.q",
          "attn.k",
          "attn.v",
          "attn.o",
          "mlp.gate",
          "mlp.up",
          "mlp.down",
        ]
          .map((l) => [`1.${l}`, "binary"]),
      ),
    }),
  );
});

Deno.test("space: bad pins are refused naming --pin", () => {
  const config = CONFIGS[2]; // 2 blocks, no gate
  const map = resolveBitMap(config);
  const bad = [
    () => parsePins("x"),
    () => parsePins("1.attn.z"),
    () => parsePins("1=int4"),
    () => buildSpace(config, map, { pins: parsePins("2") }),
    () => buildSpace(config, map, { pins: parsePins("1.mlp.gate") }),
    () => buildSpace(config, map, { pins: parsePins("1=binary,1.attn.q=f16") }),
  ];
  for (const f of bad) {
    assert.throws(
      f,
      (e) => e instanceof SearchError && /--pin/.test(e.message),
    );
  }
});

Deno.test("by size: every point once, in nondecreasing size", () => {
  fc.assert(
    fc.property(spaces, (space) => {
      fc.pre(space.size <= 5000);
      const seen = new Set<string>();
      let last = -Infinity;
      for (const p of assignmentsBySize(space)) {
        assert.ok(p.bytes >= last);
        assert.equal(p.bytes, assignmentBytes(space, p.assignment));
        last = p.bytes;
        const key = p.assignment.join(",");
        assert.ok(!seen.has(key), `twice: ${key}`);
        seen.add(key);
      }
      assert.equal(seen.size, space.size);
      assert.equal([...allAssignments(space)].length, space.size);
    }),
    { numRuns: 60 },
  );
});

Deno.test("eval windows: seeded, distinct, inside the split, about evalTokens", () => {
  fc.assert(fc.property(
    fc.integer({ min: 2, max: 5000 }),
    fc.integer({ min: 1, max: 64 }),
    fc.integer({ min: 1, max: 6000 }),
    fc.nat(),
    (n, seqLen, evalTokens, seed) => {
      fc.pre(n - 1 >= seqLen);
      const o = { seqLen, evalTokens, seed };
      const w = selectEvalWindows(n, o);
      assert.deepEqual(w, selectEvalWindows(n, o));
      const grid = Math.floor((n - 1) / seqLen);
      assert.equal(
        w.starts.length,
        Math.min(grid, Math.ceil(evalTokens / seqLen)),
      );
      for (let i = 0; i < w.starts.length; i++) {
        assert.equal(w.starts[i] % seqLen, 0);
        assert.ok(w.starts[i] + seqLen + 1 <= n);
        if (i > 0) assert.ok(w.starts[i] > w.starts[i - 1]);
      }
    },
  ));
  assert.throws(
    () => selectEvalWindows(5, { seqLen: 8, evalTokens: 10, seed: 0 }),
    SearchError,
  );
});
