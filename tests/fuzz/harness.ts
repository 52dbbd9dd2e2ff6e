/**
 * The shared machinery of the parser fuzz tests (`deno task fuzz`, and a short
 * pass of the same properties in `deno task test`).
 *
 * Each parser gets one fast-check property over a mix of inputs: random bytes,
 * mutations of valid files (truncations, bit flips, inserted, deleted and
 * overwritten bytes, huge 32- and 64-bit integers written over header fields),
 * and valid JSON with wrong types, missing or unknown keys, huge or negative
 * numbers and deep nesting. {@link decodeOnce} runs the parser on one input and
 * fails the property on anything but a value or the expected typed error whose
 * message names the file: a thrown exception, a defect, an error of another
 * kind, or a run longer than {@link MAX_MS_PER_INPUT}.
 *
 * `FUZZ_RUNS` sets the inputs per parser (default 200; `deno task fuzz` sets
 * `FUZZ_FULL=1`, 10,000); `FUZZ_SEED` replays a failure that fast-check
 * reported.
 *
 * @module
 */
import process from "node:process";
import fc from "fast-check";
import { Effect } from "effect";

const envNumber = (name: string): number | undefined => {
  let text: string | undefined;
  try {
    text = Deno.env.get(name);
  } catch {
    return undefined; // no env permission: the defaults
  }
  if (text === undefined || text === "") return undefined;
  const n = Number(text);
  if (!Number.isSafeInteger(n)) {
    throw new Error(`${name} must be an integer, got ${JSON.stringify(text)}`);
  }
  return n;
};

/** Inputs per parser in `deno task fuzz`, which sets `FUZZ_FULL=1`. */
export const FULL_RUNS = 10_000;

/** Inputs per parser: `FUZZ_RUNS` if set, else 10,000 under `FUZZ_FULL=1`, else 200. */
export const FUZZ_RUNS: number = envNumber("FUZZ_RUNS") ??
  (envNumber("FUZZ_FULL") === 1 ? FULL_RUNS : 200);

const FUZZ_SEED: number | undefined = envNumber("FUZZ_SEED");

/**
 * A parser that takes more CPU time than this on one input counts as hanging
 * (CPU time, so that other jobs on the machine do not trip it). The inputs are
 * at most a few megabytes; the slowest took a few hundred milliseconds (a
 * 200,000-deep array or a 1,000,000-character string in a field).
 */
export const MAX_MS_PER_INPUT = 5000;

/** An error message is a few short lines however large the input. */
export const MAX_MESSAGE_LINES = 6;
/** The longest line of an error message (a quoted value is cut). */
export const MAX_LINE_CHARS = 500;

/**
 * fast-check parameters of a fuzz property: {@link FUZZ_RUNS} inputs, times
 * `share` for a reader whose inputs are costly (at least 1).
 */
export const fuzzParameters = (share = 1): fc.Parameters<unknown> => ({
  numRuns: Math.max(1, Math.round(FUZZ_RUNS * share)),
  ...(FUZZ_SEED === undefined ? {} : { seed: FUZZ_SEED }),
});

/** The typed error a parser may fail with. */
export interface TypedError {
  readonly _tag: string;
  readonly file: string;
  readonly message: string;
}

/** What one input gave: a value, or the parser's typed error. */
export type Outcome<A> =
  | { readonly ok: true; readonly value: A }
  | { readonly ok: false; readonly error: TypedError };

/** Counts per parser, printed at the end of each property. */
export class FuzzStats {
  inputs = 0;
  decoded = 0;
  rejected = 0;
  maxMs = 0;
  maxCpuMs = 0;
  totalMs = 0;
  readonly kinds: Map<string, number> = new Map();

  constructor(readonly parser: string) {}

  /** Counts one input of kind `kind` (the generator that made it). */
  count(kind: string): void {
    this.kinds.set(kind, (this.kinds.get(kind) ?? 0) + 1);
  }

  /** One line: inputs, how they ended, time per input, inputs by kind. */
  summary(): string {
    const kinds = [...this.kinds].sort(([a], [b]) => a.localeCompare(b))
      .map(([k, n]) => `${k} ${n}`).join(", ");
    return `fuzz ${this.parser}: ${this.inputs} inputs, ${this.decoded} decoded, ${this.rejected} rejected with a typed error; ${
      (this.totalMs / Math.max(1, this.inputs)).toFixed(2)
    } ms mean, ${this.maxMs.toFixed(1)} ms max per input (${
      this.maxCpuMs.toFixed(0)
    } ms CPU); process RSS ${
      (Deno.memoryUsage().rss / 2 ** 20).toFixed(0)
    } MiB (${kinds})`;
  }
}

/**
 * Runs `decode` on one input. Returns its value or its typed error (tag in
 * `tags`, `file` equal to `file`, message naming `file`); throws — failing
 * the property — on a thrown exception, a defect, another error, or a run
 * over {@link MAX_MS_PER_INPUT}.
 */
export function decodeOnce<A, E extends TypedError>(
  stats: FuzzStats,
  decode: () => Effect.Effect<A, E>,
  file: string,
  tags: readonly string[],
): Outcome<A> {
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const outcome = Effect.runSync(
    Effect.suspend(decode).pipe(
      Effect.match({
        onSuccess: (value): Outcome<A> => ({ ok: true, value }),
        onFailure: (error): Outcome<A> => ({ ok: false, error }),
      }),
    ),
  );
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  stats.inputs++;
  stats.totalMs += ms;
  stats.maxMs = Math.max(stats.maxMs, ms);
  stats.maxCpuMs = Math.max(stats.maxCpuMs, cpuMs);
  if (cpuMs > MAX_MS_PER_INPUT) {
    throw new Error(
      `${stats.parser}: one input took ${cpuMs.toFixed(0)} ms of CPU time`,
    );
  }
  if (outcome.ok) {
    stats.decoded++;
    return outcome;
  }
  stats.rejected++;
  const e = outcome.error;
  if (!tags.includes(e._tag)) {
    throw new Error(`${stats.parser}: failed with ${e._tag}: ${e.message}`);
  }
  if (e.file !== file || !e.message.includes(file)) {
    throw new Error(
      `${stats.parser}: the error does not name ${file}: ${e.message}`,
    );
  }
  const lines = e.message.split("\n");
  if (
    e.message.trim() === "" || lines.length > MAX_MESSAGE_LINES ||
    lines.some((l) => l.length > MAX_LINE_CHARS)
  ) {
    throw new Error(
      `${stats.parser}: unreadable message (${lines.length} lines, ${e.message.length} chars): ${
        e.message.slice(0, 300)
      }`,
    );
  }
  return outcome;
}

// ---------------------------------------------------------------- bytes

/** Integers worth writing over a length or offset field. */
const HUGE: readonly bigint[] = [
  0n,
  1n,
  7n,
  0x7fn,
  0xffn,
  0x7fffn,
  0xffffn,
  0x7fffffffn,
  0xffffffffn,
  2n ** 32n,
  2n ** 53n - 1n,
  2n ** 53n,
  2n ** 53n + 1n,
  2n ** 60n,
  2n ** 63n - 1n,
  2n ** 63n,
  2n ** 64n - 1n,
];

const put = (
  bytes: Uint8Array,
  at: number,
  value: bigint,
  width: 4 | 8,
): Uint8Array => {
  const out = bytes.slice();
  for (let i = 0; i < width && at + i < out.length; i++) {
    out[at + i] = Number((value >> BigInt(8 * i)) & 0xffn);
  }
  return out;
};

/**
 * Mutations of a valid file's bytes, each tagged with its kind: truncation,
 * bit flips, byte overwrites, insertion, deletion, a duplicated span, and a
 * u32/u64 from {@link HUGE} written at a random offset or one of `fields`
 * (offsets of length or count fields).
 */
export function mutatedBytes(
  valid: Uint8Array,
  fields: readonly number[] = [],
): fc.Arbitrary<[string, Uint8Array]> {
  const n = valid.length;
  const pos = fc.nat({ max: Math.max(0, n - 1) });
  const tag = (kind: string) => (b: Uint8Array): [string, Uint8Array] => [
    kind,
    b,
  ];
  const arbs: fc.Arbitrary<[string, Uint8Array]>[] = [
    fc.nat({ max: n }).map((k) => valid.slice(0, k)).map(tag("truncated")),
    fc.array(fc.nat({ max: Math.max(0, n * 8 - 1) }), {
      minLength: 1,
      maxLength: 6,
    }).map((bits) => {
      const out = valid.slice();
      for (const b of bits) if (b >> 3 < n) out[b >> 3] ^= 1 << (b & 7);
      return out;
    }).map(tag("bit flips")),
    fc.array(
      fc.tuple(
        pos,
        fc.oneof(
          fc.constantFrom(0, 0x20, 0x22, 0x2c, 0x2d, 0x30, 0x39, 0x5b, 0x5d),
          fc.constantFrom(0x7b, 0x7d, 0x3a, 0x5c, 0x7f, 0x80, 0xc0, 0xff),
          fc.nat({ max: 255 }),
        ),
      ),
      { minLength: 1, maxLength: 6 },
    ).map((sets) => {
      const out = valid.slice();
      for (const [at, v] of sets) if (at < n) out[at] = v;
      return out;
    }).map(tag("bytes overwritten")),
    fc.tuple(pos, fc.uint8Array({ minLength: 1, maxLength: 32 })).map((
      [at, extra],
    ) => {
      const out = new Uint8Array(n + extra.length);
      out.set(valid.subarray(0, at));
      out.set(extra, at);
      out.set(valid.subarray(at), at + extra.length);
      return out;
    }).map(tag("bytes inserted")),
    fc.tuple(pos, fc.nat({ max: 64 })).map(([at, len]) => {
      const out = new Uint8Array(n - Math.min(len, n - at));
      out.set(valid.subarray(0, at));
      out.set(valid.subarray(at + len), at);
      return out;
    }).map(tag("bytes deleted")),
    fc.tuple(pos, pos, fc.nat({ max: 64 })).map(([from, to, len]) => {
      const span = valid.subarray(from, from + len);
      const out = new Uint8Array(n + span.length);
      out.set(valid.subarray(0, to));
      out.set(span, to);
      out.set(valid.subarray(to), to + span.length);
      return out;
    }).map(tag("span duplicated")),
    fc.tuple(
      fields.length > 0 ? fc.oneof(fc.constantFrom(...fields), pos) : pos,
      fc.constantFrom(...HUGE),
      fc.constantFrom(4 as const, 8 as const),
    ).map(([at, v, w]) => put(valid, at, v, w)).map(tag("huge integer")),
  ];
  return fc.oneof(...arbs);
}

/** Random bytes, up to `max` of them. */
export const randomBytes = (max = 512): fc.Arbitrary<[string, Uint8Array]> =>
  fc.uint8Array({ maxLength: max }).map((b): [string, Uint8Array] => [
    "random bytes",
    b,
  ]);

// ---------------------------------------------------------------- JSON

/** Marks where a deeply nested or very long JSON value goes (see {@link jsonText}). */
const DEEP = "\u0000deep:";
const LONG = "\u0000long:";

/** JSON values that break naive readers: wrong types, edge numbers, deep nesting. */
export const weirdJson: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.constantFrom<unknown>(
      -1,
      -0,
      0,
      0.5,
      -0.5,
      1,
      3,
      1e9,
      2 ** 31,
      2 ** 32,
      2 ** 53,
      2 ** 53 + 2,
      2 ** 60,
      2 ** 64,
      1e308,
      -1e308,
      5e-324,
      "",
      "0",
      "1",
      "NaN",
      "Infinity",
      "-1",
      "ternary",
      "__proto__",
      null,
      true,
      false,
      [],
      {},
      [1],
      JSON.parse('{"__proto__": 1}'),
    ),
  },
  { weight: 4, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 3, arbitrary: fc.string({ maxLength: 12 }) },
  // Rarer: each costs the readers up to a few hundred milliseconds.
  {
    weight: 1,
    arbitrary: fc.integer({ min: 1, max: 200_000 }).map((d) => `${DEEP}${d}`),
  },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 1, max: 1_000_000 }).map((d) => `${LONG}${d}`),
  },
);

type Path = readonly (string | number)[];

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** Every path into a JSON value, the root (`[]`) included. */
export function jsonPaths(value: unknown, limit = 5000): Path[] {
  const out: Path[] = [];
  const walk = (v: unknown, path: Path) => {
    if (out.length >= limit) return;
    out.push(path);
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...path, i]));
    else if (isObject(v)) {
      for (const k of Object.keys(v)) walk(v[k], [...path, k]);
    }
  };
  walk(value, []);
  return out;
}

/** A deep copy of plain JSON with own keys kept (even `__proto__`). */
const clone = (v: unknown): unknown => {
  if (Array.isArray(v)) return v.map(clone);
  if (isObject(v)) {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v)) setOwn(out, k, clone(v[k]));
    return out;
  }
  return v;
};

const setOwn = (o: Record<string, unknown>, k: string, v: unknown) =>
  Object.defineProperty(o, k, {
    value: v,
    enumerable: true,
    writable: true,
    configurable: true,
  });

/** One edit of a JSON value. */
type Edit =
  | { readonly op: "replace"; readonly path: Path; readonly value: unknown }
  | { readonly op: "delete"; readonly path: Path }
  | {
    readonly op: "add";
    readonly path: Path;
    readonly key: string;
    readonly value: unknown;
  };

const applyEdit = (root: unknown, edit: Edit): unknown => {
  const out = clone(root);
  if (edit.path.length === 0) {
    if (edit.op === "replace") return edit.value;
    if (edit.op === "delete") return undefined;
  }
  let parent: unknown = out;
  const steps = edit.op === "add" ? edit.path : edit.path.slice(0, -1);
  for (const step of steps) {
    parent = (parent as Record<string | number, unknown>)[step];
  }
  if (edit.op === "add") {
    if (Array.isArray(parent)) parent.push(edit.value);
    else if (isObject(parent)) setOwn(parent, edit.key, edit.value);
    return out;
  }
  const last = edit.path[edit.path.length - 1];
  if (Array.isArray(parent)) {
    if (edit.op === "replace") parent[last as number] = edit.value;
    else parent.splice(last as number, 1);
  } else if (isObject(parent)) {
    if (edit.op === "replace") setOwn(parent, String(last), edit.value);
    else delete parent[String(last)];
  }
  return out;
};

/**
 * Valid JSON that is wrong: 1–3 edits of `valid` — a value replaced by
 * {@link weirdJson}, a key or element deleted, or a key added (an unknown
 * name, `__proto__`, or one of `keys`).
 */
export function editedJson(
  valid: unknown,
  keys: readonly string[] = [],
): fc.Arbitrary<unknown> {
  const paths = jsonPaths(valid);
  const path = fc.constantFrom(...paths);
  const key = fc.oneof(
    fc.constantFrom("__proto__", "constructor", "extra", ...keys),
    fc.string({ maxLength: 8 }),
  );
  const edit: fc.Arbitrary<Edit> = fc.oneof(
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant("replace" as const),
        path,
        value: weirdJson,
      }),
    },
    fc.record({ op: fc.constant("delete" as const), path }),
    fc.record({
      op: fc.constant("add" as const),
      path,
      key,
      value: weirdJson,
    }),
  );
  return fc.array(edit, { minLength: 1, maxLength: 3 }).map((edits) =>
    edits.reduce<unknown>((v, e) => {
      try {
        return applyEdit(v, e);
      } catch {
        return v; // an earlier edit removed the path
      }
    }, valid)
  );
}

/**
 * The text of a JSON value, indented by 0–2 spaces, with the markers of
 * {@link weirdJson} expanded: `deep:N` to N nested arrays, `long:N` to a
 * string of N characters.
 */
export const jsonText = (value: unknown, indent: number): string =>
  (JSON.stringify(value, null, indent) ?? "")
    .replace(/"\\u0000deep:(\d+)"/g, (_, d) => "[".repeat(+d) + "]".repeat(+d))
    .replace(/"\\u0000long:(\d+)"/g, (_, d) => `"${"é".repeat(+d)}"`);

/**
 * Text inputs for a JSON reader, tagged with their kind: JSON edits of one of
 * `valids`, byte mutations of its text (decoded as UTF-8, invalid bytes
 * replaced, as a text read does), random text and random JSON.
 */
export function jsonInputs(
  valids: readonly unknown[],
  keys: readonly string[] = [],
): fc.Arbitrary<[string, string]> {
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  const texts = valids.map((v) => encoder.encode(JSON.stringify(v, null, 2)));
  return fc.oneof(
    {
      weight: 4,
      arbitrary: fc.constantFrom(...valids.keys()).chain((i) =>
        fc.tuple(editedJson(valids[i], keys), fc.nat({ max: 2 }))
      ).map(([v, indent]): [string, string] => [
        "JSON edits",
        jsonText(v, indent),
      ]),
    },
    {
      weight: 3,
      arbitrary: fc.constantFrom(...texts.keys()).chain((i) =>
        mutatedBytes(texts[i])
      ).map(([kind, b]): [string, string] => [
        `text ${kind}`,
        decoder.decode(b),
      ]),
    },
    {
      weight: 1,
      arbitrary: fc.string({ unit: "binary", maxLength: 200 }).map((
        s,
      ): [string, string] => ["random text", s]),
    },
    {
      weight: 1,
      arbitrary: fc.json({ maxDepth: 3 }).map((s): [string, string] => [
        "random JSON",
        s,
      ]),
    },
  );
}

/**
 * Whether every key and value of `input` is in `output` (which may hold more
 * keys, e.g. defaults): the decoder dropped or changed nothing silently.
 */
export function keptIn(input: unknown, output: unknown): boolean {
  if (Array.isArray(input)) {
    return Array.isArray(output) && input.length === output.length &&
      input.every((x, i) => keptIn(x, output[i]));
  }
  if (isObject(input)) {
    return isObject(output) &&
      Object.keys(input).every((k) =>
        Object.hasOwn(output, k) && keptIn(input[k], output[k])
      );
  }
  return input === output || (Number.isNaN(input) && Number.isNaN(output));
}
