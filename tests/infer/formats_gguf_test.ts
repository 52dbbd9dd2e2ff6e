import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Effect, Exit, Schema } from "effect";
import { gguf } from "@huggingface/gguf";
import { OneBitLlmConfig } from "../../src/common/config.ts";
import type { LayerBitMap } from "../../src/common/layer_bit_map.ts";
import type { QuantMode } from "../../src/common/quant_mode.ts";
import { PRESETS } from "../../src/common/presets.ts";
import {
  decodeGgufModel,
  encodeGgufModel,
  readGgufModel,
  writeGgufModel,
} from "../../src/infer/formats/gguf.ts";
import {
  decodeGgufFile,
  encodeGgufFile,
  GGML_TYPE,
} from "../../src/infer/formats/gguf_file.ts";
import { ExportError } from "../../src/infer/formats/errors.ts";
import type { ModelWeights } from "../../src/infer/weights.ts";
import { assertSameWeights, tinyWeights } from "./formats_gen.ts";
import type { TinyModel } from "./model_gen.ts";

/** Random `bitnet`-architecture models GGUF can hold: rows of 256, ternary or f16 linears. */
const exportable: fc.Arbitrary<TinyModel> = fc.record({
  heads: fc.constantFrom(1, 2, 4),
  kvDiv: fc.constantFrom(1, 2),
  layers: fc.integer({ min: 1, max: 2 }),
  vocab: fc.integer({ min: 256, max: 270 }),
  layerModes: fc.array(fc.constantFrom<QuantMode>("ternary", "f16"), {
    minLength: 2,
    maxLength: 2,
  }),
  override: fc.option(
    fc.tuple(
      fc.constantFrom("attn.k", "mlp.down", "mlp.gate"),
      fc.constantFrom<QuantMode>("ternary", "f16"),
    ),
  ),
  dynamic: fc.boolean(),
  seed: fc.integer({ min: 0, max: 1e6 }),
}).map((r) => {
  const config = Schema.decodeSync(OneBitLlmConfig)({
    vocab_size: r.vocab,
    hidden_size: 256,
    num_heads: r.heads,
    num_kv_heads: r.heads % r.kvDiv === 0 ? r.heads / r.kvDiv : r.heads,
    num_layers: r.layers,
    intermediate_size: 256,
    max_seq_len: 32,
    use_dynamic_threshold: r.dynamic,
  });
  const bitMap: LayerBitMap = {
    embedding: "f16",
    layer_modes: r.layerModes.slice(0, r.layers),
    ...(r.override === null
      ? {}
      : { overrides: { [`0.${r.override[0]}`]: r.override[1] } }),
  };
  return { config, bitMap, seed: r.seed, std: 0.05 };
});

const decode = (bytes: Uint8Array) =>
  Effect.runSync(Effect.exit(decodeGgufModel(bytes, "m.gguf")));

const decoded = (bytes: Uint8Array): ModelWeights => {
  const exit = decode(bytes);
  if (Exit.isFailure(exit)) throw new Error(String(exit.cause));
  return exit.value;
};

Deno.test("gguf: read(write(w)) equals w (TQ2_0 and TQ1_0, ternary and f16 linears)", () => {
  fc.assert(
    fc.property(exportable, fc.boolean(), (m, tq1) => {
      const w = tinyWeights(m);
      const bytes = encodeGgufModel(w, { tq1 });
      assertSameWeights(decoded(bytes), w);
      assert.deepEqual(encodeGgufModel(w, { tq1 }), bytes);
    }),
    { numRuns: 12 },
  );
});

Deno.test("gguf: --q8-embedding stores int8 rows with f16 scales, within half a step", () => {
  const w = tinyWeights(fc.sample(exportable, { numRuns: 1, seed: 5 })[0]);
  const back = decoded(encodeGgufModel(w, { q8Embedding: true }));
  assert.equal(back.bitMap.embedding, "eightbit");
  const e = back.tensors.get("token_embd.weight")!;
  const orig = w.tensors.get("token_embd.weight")!;
  if (e.kind !== "int8" || orig.kind !== "dense") {
    throw new Error(`embedding read back as ${e.kind}`);
  }
  for (let r = 0; r < e.rows; r++) {
    const s: number = e.scales[r];
    for (let c = 0; c < e.cols; c++) {
      const i: number = r * e.cols + c;
      assert.ok(Math.abs(e.codes[i] * s - orig.data[i]) <= s / 2 + 1e-9);
    }
  }
});

/** Serves `bytes` to @huggingface/gguf's range-request reader. */
const fetchOf = (bytes: Uint8Array): typeof fetch => (_input, init) => {
  const range = new Headers(init?.headers).get("Range");
  const m = /bytes=(\d+)-(\d+)/.exec(range ?? "");
  const body = m === null
    ? bytes
    : bytes.slice(Number(m[1]), Math.min(bytes.length, Number(m[2]) + 1));
  return Promise.resolve(new Response(body.slice().buffer, { status: 200 }));
};

Deno.test("gguf: @huggingface/gguf reads our metadata and tensor infos", async () => {
  const m = fc.sample(exportable, { numRuns: 1, seed: 9 })[0];
  const w = tinyWeights(m);
  const bytes = encodeGgufModel(w);
  const { metadata, tensorInfos } = await gguf("https://x/m.gguf", {
    fetch: fetchOf(bytes),
  });
  const md = metadata as Record<string, unknown>;
  assert.equal(md["version"], 3);
  assert.equal(md["general.architecture"], "bitnet");
  assert.equal(md["bitnet.embedding_length"], 256);
  assert.equal(md["bitnet.block_count"], m.config.num_layers);
  assert.equal(md["bitnet.attention.head_count_kv"], m.config.num_kv_heads);
  assert.equal(md["tokenizer.ggml.model"], "gpt2");
  assert.deepEqual(md["tokenizer.ggml.tokens"], w.tokenizer.tokens);
  const file = decodeGgufFile(bytes);
  assert.deepEqual(
    tensorInfos.map((
      t,
    ) => [t.name, t.shape.map(Number), t.dtype, Number(t.offset)]),
    file.tensors.map((t) => [t.name, t.dims, t.type, t.offset]),
  );
  const q = tensorInfos.find((t) => t.name === "blk.0.attn_q.weight")!;
  assert.equal(
    q.dtype,
    m.bitMap.layer_modes[0] === "ternary" ? GGML_TYPE.TQ2_0 : GGML_TYPE.F16,
  );
});

const refusal = (w: ModelWeights, pattern: RegExp, options = {}): void => {
  assert.throws(
    () => encodeGgufModel(w, options),
    (e) => e instanceof ExportError && pattern.test(e.message),
    String(pattern),
  );
};

Deno.test("gguf: what llama.cpp's bitnet cannot run is refused, naming the field or option", () => {
  const base = fc.sample(exportable, { numRuns: 1, seed: 1 })[0];
  const withConfig = (patch: object, bitMap?: LayerBitMap): ModelWeights =>
    tinyWeights({
      ...base,
      config: Schema.decodeSync(OneBitLlmConfig)({
        ...Schema.encodeSync(OneBitLlmConfig)(base.config),
        ...patch,
      }),
      bitMap: bitMap ?? base.bitMap,
    });
  refusal(
    withConfig({ use_relu2: true, use_swiglu: false }, {
      embedding: "f16",
      layer_modes: base.bitMap.layer_modes,
    }),
    /use_relu2 = true/,
  );
  refusal(withConfig({ use_qk_norm: true }), /use_qk_norm/);
  refusal(withConfig({ use_residual_scaling: true }), /use_residual_scaling/);
  refusal(withConfig({ norm_type: "layer_norm" }), /norm_type = layer_norm/);
  refusal(withConfig({ use_subln: false }), /use_subln = false/);
  refusal(
    withConfig({ rope_style: "interleaved" }),
    /rope_style = interleaved/,
  );
  refusal(withConfig({ tie_embeddings: false }), /tie_embeddings = false/);
  refusal(
    withConfig({ intermediate_size: 200 }, {
      embedding: "f16",
      layer_modes: base.bitMap.layer_modes.map(() => "ternary"),
    }),
    /intermediate_size = 200 is not a multiple of 256/,
  );
  refusal(
    withConfig({}, {
      embedding: "f16",
      layer_modes: base.bitMap.layer_modes.map(() => "eightbit"),
    }),
    /no eightbit linear type \(--bit-map: 0\.attn\.q, 0\.attn\.k/,
  );
  refusal(
    withConfig({}, {
      embedding: "f16",
      layer_modes: base.bitMap.layer_modes,
      overrides: { "0.mlp.up": "binary" },
    }),
    /--bit-map: 0\.mlp\.up is binary/,
  );
  refusal(
    withConfig({}, {
      embedding: "ternary",
      layer_modes: base.bitMap.layer_modes,
    }),
    /embedding is ternary/,
  );
  // The tiny preset's rows (hidden 64) are not whole TQ blocks.
  refusal(
    tinyWeights({
      config: PRESETS.tiny,
      bitMap: { embedding: "f16", layer_modes: ["ternary", "ternary"] },
      seed: 1,
      std: 0.05,
    }),
    /hidden_size = 64 is not a multiple of 256/,
  );
});

// ------------------------------------------------------------ mutations

const good = encodeGgufModel(
  tinyWeights(fc.sample(exportable, { numRuns: 1, seed: 2 })[0]),
);

const failsAsDataError = (bytes: Uint8Array): void => {
  const exit = decode(bytes);
  if (Exit.isSuccess(exit)) return; // padding, or a benign change
  const text = String(exit.cause);
  assert.ok(text.includes("DataError") && text.includes("m.gguf"), text);
};

Deno.test("gguf reader: truncations and bit flips fail as a DataError naming the file", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: good.length - 1 }), (n) => {
      const exit = decode(good.subarray(0, n));
      assert.ok(Exit.isFailure(exit), `truncated to ${n}`);
      failsAsDataError(good.subarray(0, n));
    }),
    { numRuns: 60 },
  );
  const headerEnd = 24 + 4000;
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(
          fc.integer({ min: 0, max: headerEnd }),
          fc.integer({ min: 0, max: 7 }),
        ),
        {
          minLength: 1,
          maxLength: 4,
        },
      ),
      (flips) => {
        const b = good.slice();
        for (const [at, bit] of flips) b[at] ^= 1 << bit;
        failsAsDataError(b);
      },
    ),
    { numRuns: 300 },
  );
  fc.assert(
    fc.property(fc.nat(), fc.integer({ min: 0, max: 7 }), (at, bit) => {
      const b = good.slice();
      b[at % b.length] ^= 1 << bit;
      failsAsDataError(b);
    }),
    { numRuns: 100 },
  );
});

/** Byte offsets of every u64 field in the header of `bytes` (counts, lengths, dims, offsets). */
function u64Fields(bytes: Uint8Array): number[] {
  const file = decodeGgufFile(bytes);
  const out = [8, 16];
  // Walk the metadata and tensor infos again, noting where the u64s are.
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  let at = 24;
  const str = () => {
    out.push(at);
    at += 8 + Number(view.getBigUint64(at, true));
  };
  const sizes: Record<number, number> = {
    0: 1,
    1: 1,
    2: 2,
    3: 2,
    4: 4,
    5: 4,
    6: 4,
    7: 1,
    10: 8,
    11: 8,
    12: 8,
  };
  for (let i = 0; i < file.metadata.size; i++) {
    str();
    const type = view.getUint32(at, true);
    at += 4;
    if (type === 8) str();
    else if (type === 9) {
      const item = view.getUint32(at, true);
      at += 4;
      out.push(at);
      const n = Number(view.getBigUint64(at, true));
      at += 8;
      for (let j = 0; j < n; j++) {
        if (item === 8) str();
        else at += sizes[item];
      }
    } else at += sizes[type];
  }
  for (let i = 0; i < file.tensors.length; i++) {
    str();
    const nd = view.getUint32(at, true);
    at += 4;
    for (let d = 0; d < nd; d++) {
      out.push(at);
      at += 8;
    }
    at += 4;
    out.push(at);
    at += 8;
  }
  return out;
}

Deno.test("gguf reader: huge counts, lengths, dims and offsets (2^60, 2^64−1) are refused without allocating", () => {
  const fields = u64Fields(good);
  assert.ok(fields.length > 50);
  for (const at of fields) {
    for (const v of [2n ** 60n, 2n ** 64n - 1n, 2n ** 32n]) {
      const b = good.slice();
      new DataView(b.buffer).setBigUint64(at, v, true);
      const exit = decode(b);
      assert.ok(Exit.isFailure(exit), `u64 at ${at} = ${v}`);
      failsAsDataError(b);
    }
  }
});

Deno.test("gguf reader: wrong magic or version, another architecture, foreign bytes", () => {
  const check = (bytes: Uint8Array, text: string) => {
    const exit = decode(bytes);
    assert.ok(Exit.isFailure(exit), text);
    assert.ok(String(exit.cause).includes(text), `${text}: ${exit.cause}`);
  };
  const magic = good.slice();
  magic[0] = 0x47 ^ 1;
  check(magic, "not a GGUF file");
  const version = good.slice();
  new DataView(version.buffer).setUint32(4, 2, true);
  check(version, "GGUF version 2");
  const file = decodeGgufFile(good);
  const llama = encodeGgufFile(
    [...file.metadata].map(([k, v]) =>
      k === "general.architecture"
        ? [k, { type: "string", value: "llama" }] as const
        : [k, v] as const
    ),
    file.tensors,
  );
  check(llama, 'architecture "llama" is not supported');
  const noTokens = encodeGgufFile(
    [...file.metadata].filter(([k]) => k !== "tokenizer.ggml.tokens"),
    file.tensors,
  );
  check(noTokens, "missing metadata tokenizer.ggml.tokens");
  check(new Uint8Array(0), "truncated");
  failsAsDataError(crypto.getRandomValues(new Uint8Array(2048)));
});

Deno.test("gguf: writeGgufModel and readGgufModel round trip through a file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const w = tinyWeights(fc.sample(exportable, { numRuns: 1, seed: 4 })[0]);
    const path = `${dir}/m.gguf`;
    const size = await Effect.runPromise(
      writeGgufModel(path, w, { tq1: true }),
    );
    assert.equal((await Deno.stat(path)).size, size);
    assertSameWeights(await Effect.runPromise(readGgufModel(path)), w);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
