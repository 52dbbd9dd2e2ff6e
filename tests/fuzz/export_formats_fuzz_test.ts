/**
 * Fuzzing the readers of the export formats, `packed` and GGUF: every input
 * is rejected with a DataError naming the file, or decodes to weights that
 * re-encode to a file that decodes and re-encodes to the same bytes (the
 * input's own bytes when the encoder wrote it).
 */
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect, Schema } from "effect";
import { OneBitLlmConfig } from "../../src/common/config.ts";
import type { LayerBitMap } from "../../src/common/layer_bit_map.ts";
import { decodePacked, encodePacked } from "../../src/infer/formats/packed.ts";
import {
  decodeGgufModel,
  encodeGgufModel,
} from "../../src/infer/formats/gguf.ts";
import type { ModelWeights } from "../../src/infer/weights.ts";
import { tinyWeights } from "../infer/formats_gen.ts";
import { type TinyModel, tinyModel } from "../infer/model_gen.ts";
import {
  decodeOnce,
  fuzzParameters,
  FuzzStats,
  mutatedBytes,
  randomBytes,
} from "./harness.ts";

const PACKED_FILE = "fuzz/model.packed";
const GGUF_FILE = "fuzz/model.gguf";

/** A valid file and the option it was encoded with (base3 or tq1). */
type Valid = readonly [Uint8Array, boolean];

const packedValids: Valid[] = fc.sample(tinyModel, { numRuns: 3, seed: 11 })
  .flatMap((m) => {
    const w = tinyWeights(m);
    return [false, true].map((base3): Valid => [
      encodePacked(w, { base3 }),
      base3,
    ]);
  });

/**
 * The smallest models llama.cpp's `bitnet` architecture can hold: rows of 256
 * (TQ blocks) and a byte-level vocabulary of 256, one KV head of 128 (k and v
 * are 128 × 256). One is all ternary, one has an f16 linear (`attn.k`, as an
 * override). About 230 KB each, against 1 MB for an all-f16 layer, so that
 * 10,000 inputs fit `deno task fuzz`.
 */
const ggufModel = (bitMap: LayerBitMap): TinyModel => ({
  config: Schema.decodeSync(OneBitLlmConfig)({
    vocab_size: 256,
    hidden_size: 256,
    num_heads: 2,
    num_kv_heads: 1,
    num_layers: 1,
    intermediate_size: 256,
    max_seq_len: 32,
  }),
  bitMap,
  seed: 5,
  std: 0.05,
});

const ggufValids: Valid[] = [
  { embedding: "f16", layer_modes: ["ternary"] },
  {
    embedding: "f16",
    layer_modes: ["ternary"],
    overrides: { "0.attn.k": "f16" },
  },
].flatMap((bitMap) => {
  const w = tinyWeights(ggufModel(bitMap as LayerBitMap));
  return [false, true].map((tq1): Valid => [encodeGgufModel(w, { tq1 }), tq1]);
});

/** Inputs: a valid file, a mutation of one, or random bytes; with the valid file's option. */
const inputs = (
  valids: readonly Valid[],
  fields: readonly number[],
): fc.Arbitrary<[string, Uint8Array, boolean]> =>
  fc.constantFrom(...valids).chain(([bytes, option]) =>
    fc.oneof(
      {
        weight: 1,
        arbitrary: fc.constant<[string, Uint8Array]>(["valid", bytes]),
      },
      { weight: 8, arbitrary: mutatedBytes(bytes, fields) },
      { weight: 1, arbitrary: randomBytes() },
    ).map(([kind, b]): [string, Uint8Array, boolean] => [kind, b, option])
  );

const roundTrip = (
  stats: FuzzStats,
  decode: (bytes: Uint8Array) => Effect.Effect<ModelWeights, unknown>,
  encode: (w: ModelWeights, option: boolean) => Uint8Array,
  file: string,
) =>
([kind, bytes, option]: [string, Uint8Array, boolean]) => {
  stats.count(kind);
  const r = decodeOnce(
    stats,
    () => decode(bytes) as Effect.Effect<ModelWeights, never>,
    file,
    ["DataError"],
  );
  if (!r.ok) return;
  const again = encode(r.value, option);
  if (kind === "valid") assert.ok(sameBytes(again, bytes));
  // Encoding is deterministic, so equal bytes mean equal weights.
  const back = Effect.runSync(decode(again));
  assert.ok(sameBytes(encode(back, option), again));
};

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && a.every((x, i) => x === b[i]);

Deno.test("fuzz: packed export", () => {
  const stats = new FuzzStats("packed");
  fc.assert(
    fc.property(
      // The header-length field, and the first bytes of the JSON header.
      inputs(packedValids, [8, 12, 16]),
      roundTrip(
        stats,
        (b) => decodePacked(b, PACKED_FILE),
        (w, base3) => encodePacked(w, { base3 }),
        PACKED_FILE,
      ),
    ),
    fuzzParameters(),
  );
  console.log(stats.summary());
});

Deno.test("fuzz: GGUF export", () => {
  const stats = new FuzzStats("gguf");
  fc.assert(
    fc.property(
      // Version, tensor count and key-value count.
      inputs(ggufValids, [4, 8, 16, 24]),
      roundTrip(
        stats,
        (b) => decodeGgufModel(b, GGUF_FILE),
        (w, tq1) => encodeGgufModel(w, { tq1 }),
        GGUF_FILE,
      ),
    ),
    fuzzParameters(),
  );
  console.log(stats.summary());
});
