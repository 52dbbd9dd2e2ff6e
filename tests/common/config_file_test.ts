import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Cause, Effect, Exit, Schema } from "effect";
import {
  ConfigError,
  decodeBitMapJson,
  decodeConfigJson,
  encodeBitMapJson,
  encodeConfigJson,
  loadBitMap,
  loadConfig,
} from "../../src/common/config_file.ts";
import { OneBitLlmConfig } from "../../src/common/config.ts";
import { PRESETS } from "../../src/common/presets.ts";

const FILE = "config.json";
const base = Schema.encodeSync(OneBitLlmConfig)(PRESETS.tiny) as Record<
  string,
  unknown
>;
const FIELDS = Object.keys(base);

/** The ConfigError of a decode that must fail; fails the test on success or a defect. */
function failure<A>(effect: Effect.Effect<A, ConfigError>): ConfigError {
  const exit = Effect.runSyncExit(effect);
  if (Exit.isSuccess(exit)) {
    assert.fail(`expected a ConfigError, got ${JSON.stringify(exit.value)}`);
  }
  const err = Cause.findErrorOption(exit.cause);
  assert.ok(err._tag === "Some", `not a typed failure: ${exit.cause}`);
  assert.ok(err.value instanceof ConfigError);
  assert.equal(err.value._tag, "ConfigError");
  return err.value;
}

function configError(json: unknown): string {
  const e = failure(decodeConfigJson(JSON.stringify(json), FILE));
  assert.equal(e.file, FILE);
  return e.message;
}

/** A readable message: a few lines, each `<file>: ...`, no stack trace. */
function assertReadable(message: string, file = FILE): void {
  const lines = message.split("\n");
  assert.ok(lines.length <= 6, message);
  for (const line of lines) {
    assert.ok(line.startsWith(`${file}: `), line);
    assert.ok(line.length <= 240, line);
    assert.ok(!/\n\s+at /.test(line) && !line.includes("file://"), line);
  }
}

Deno.test("arbitrary JSON values give a ConfigError naming a field, never a throw", () => {
  fc.assert(
    fc.property(fc.jsonValue(), (json) => {
      const message = configError(json);
      assertReadable(message);
      const isObject = typeof json === "object" && json !== null &&
        !Array.isArray(json);
      if (isObject) {
        // Missing required fields or unknown keys: a field path on every line.
        for (const line of message.split("\n").slice(0, 5)) {
          assert.match(line, /^config\.json: at (\w+|\[".*"\]): /);
        }
      } else {
        assert.match(message, /^config\.json: expected object, got /);
      }
    }),
    { numRuns: 300 },
  );
});

/** Whether `text` parses as a JSON object (not an array or null). */
function isJsonObject(text: string): boolean {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === "object" && v !== null && !Array.isArray(v);
  } catch {
    return false;
  }
}

Deno.test("arbitrary text gives a ConfigError: not valid JSON or a field", () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 40 }), (text) => {
      const e = failure(decodeConfigJson(text, FILE));
      assertReadable(e.message);
      assert.match(
        e.message,
        // Text that is a JSON object ("{}", seeds -460777668 and 677664686)
        // is a config missing its fields instead.
        isJsonObject(text)
          ? /^config\.json: at (\w+|\[".*"\]): /
          : /^config\.json: (not valid JSON: |expected object, got )/,
      );
    }),
    { numRuns: 300 },
  );
});

const BAD_VALUES: ReadonlyArray<unknown> = [
  "x",
  null,
  [],
  {},
  -1,
  0,
  1.5,
  true,
];

Deno.test("a bad value in any field gives a message naming that field", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...FIELDS),
      fc.constantFrom(...BAD_VALUES),
      (field, value) => {
        const json = { ...base, [field]: value };
        const exit = Effect.runSyncExit(
          decodeConfigJson(JSON.stringify(json), FILE),
        );
        // Some values are valid for some fields (1.5 for rope_theta, true for flags).
        if (Exit.isSuccess(exit)) return;
        const message = configError(json);
        assertReadable(message);
        assert.ok(message.includes(field), `${field}: ${message}`);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("specific errors name the field", () => {
  assert.equal(
    configError({ ...base, hidden_size: -3 }),
    "config.json: at hidden_size: expected an integer in [1, 65,536], got -3",
  );
  assert.equal(
    configError({ ...base, num_layers: "2" }),
    'config.json: at num_layers: expected number, got "2"',
  );
  const { vocab_size: _, ...missing } = base;
  assert.equal(
    configError(missing),
    "config.json: at vocab_size: missing required field",
  );
  assert.equal(
    configError({ ...base, hidden_size: 250 }),
    "config.json: hidden_size (250) must be divisible by num_heads (4)",
  );
  assert.equal(
    configError({ ...base, num_kv_heads: 3 }),
    "config.json: num_heads (4) must be divisible by num_kv_heads (3)",
  );
  assert.match(
    configError({ ...base, hidden_size: 12 }),
    /^config\.json: head_dim = hidden_size \/ num_heads = 3 must be even when use_rope/,
  );
  assert.equal(
    configError({ ...base, use_relu2: true }),
    "config.json: use_relu2 and use_swiglu cannot both be true",
  );
  assert.equal(
    configError({
      ...base,
      layer_bit_map: { embedding: "f16", layer_modes: ["ternary"] },
    }),
    "config.json: layer_bit_map.layer_modes has 1 entry but num_layers is 2",
  );
  assert.match(
    configError({
      ...base,
      layer_bit_map: {
        embedding: "f16",
        layer_modes: ["ternary", "ternary"],
        overrides: { "1.mlp.dwn": "f16" },
      },
    }),
    /^config\.json: at layer_bit_map\.overrides\["1\.mlp\.dwn"\]: expected a key "<layer>\.<linear>" with <linear> one of attn\.q, /,
  );
  assert.equal(
    configError({
      ...base,
      layer_bit_map: {
        embedding: "f16",
        layer_modes: ["ternary", "ternary"],
        overrides: { "2.mlp.down": "f16" },
      },
    }),
    'config.json: layer_bit_map.overrides key "2.mlp.down": layer 2 is out of range (num_layers is 2)',
  );
  assert.equal(
    configError({
      ...base,
      use_swiglu: false,
      layer_bit_map: {
        embedding: "f16",
        layer_modes: ["ternary", "ternary"],
        overrides: { "0.mlp.gate": "f16" },
      },
    }),
    'config.json: layer_bit_map.overrides key "0.mlp.gate": mlp.gate exists only when use_swiglu is true',
  );
  assert.equal(
    configError({
      ...base,
      layer_bit_map: { embedding: "f16", layer_modes: ["ternary", "tern"] },
    }),
    'config.json: at layer_bit_map.layer_modes[1]: expected "f16" | "eightbit" | "ternary" | "binary", got "tern"',
  );
  assert.equal(
    configError({ ...base, rope_style: "gptj" }),
    'config.json: at rope_style: expected "neox" | "interleaved", got "gptj"',
  );
  assert.equal(
    configError({ ...base, hiden_size: 64 }),
    "config.json: at hiden_size: unknown field",
  );
  assert.match(
    failure(decodeConfigJson('{"vocab_size": 3,', FILE)).message,
    /^config\.json: not valid JSON: /,
  );
});

Deno.test("many problems are capped at a few lines", () => {
  const message = configError({});
  const lines = message.split("\n");
  assert.equal(lines.length, 6);
  assert.equal(lines[5], "config.json: and 1 more problems");
});

Deno.test("bit-map JSON decodes, encodes and reports errors", () => {
  const text = '{"embedding": "f16", "layer_modes": ["ternary", "eightbit"]}';
  const map = Effect.runSync(decodeBitMapJson(text, "map.json"));
  assert.deepStrictEqual(map, {
    embedding: "f16",
    layer_modes: ["ternary", "eightbit"],
  });
  assert.deepStrictEqual(JSON.parse(encodeBitMapJson(map)), JSON.parse(text));
  const e = failure(decodeBitMapJson('{"embedding": "f8"}', "map.json"));
  assert.equal(e.file, "map.json");
  assertReadable(e.message, "map.json");
  assert.match(e.message, /at embedding: /);
  assert.match(e.message, /at layer_modes: missing required field/);
});

Deno.test("encodeConfigJson writes every field, pretty-printed", () => {
  const text = encodeConfigJson(PRESETS["ref-4m"]);
  assert.ok(text.includes('\n  "num_kv_heads": 4,'));
  assert.deepStrictEqual(
    JSON.parse(text),
    Schema.encodeSync(OneBitLlmConfig)(PRESETS["ref-4m"]),
  );
  assert.deepStrictEqual(
    Effect.runSync(decodeConfigJson(text, FILE)),
    PRESETS["ref-4m"],
  );
});

Deno.test("loadConfig and loadBitMap read files; a missing file is a ConfigError", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cfgPath = `${dir}/config.json`;
    await Deno.writeTextFile(cfgPath, encodeConfigJson(PRESETS.tiny));
    assert.deepStrictEqual(
      await Effect.runPromise(loadConfig(cfgPath)),
      PRESETS.tiny,
    );
    const mapPath = `${dir}/map.json`;
    await Deno.writeTextFile(
      mapPath,
      '{"embedding": "f16", "layer_modes": ["binary"], "lm_head": "eightbit"}',
    );
    assert.deepStrictEqual(await Effect.runPromise(loadBitMap(mapPath)), {
      embedding: "f16",
      layer_modes: ["binary"],
      lm_head: "eightbit",
    });
    await Deno.writeTextFile(cfgPath, '{"vocab_size": 0}');
    const bad = await Effect.runPromise(Effect.flip(loadConfig(cfgPath)));
    assert.match(bad.message, new RegExp(`^${cfgPath}: at vocab_size: `));
    const missing = `${dir}/nope.json`;
    const loads: ReadonlyArray<Effect.Effect<unknown, ConfigError>> = [
      loadConfig(missing),
      loadBitMap(missing),
    ];
    for (const load of loads) {
      const e = await Effect.runPromise(Effect.flip(load));
      assert.ok(e instanceof ConfigError);
      assert.equal(e.file, missing);
      assert.equal(e.message, `${missing}: file not found`);
    }
    // The tag lets callers recover with catchTag.
    const recovered = await Effect.runPromise(
      loadConfig(missing).pipe(
        Effect.catchTag("ConfigError", () => Effect.succeed(PRESETS.tiny)),
      ),
    );
    assert.equal(recovered, PRESETS.tiny);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
