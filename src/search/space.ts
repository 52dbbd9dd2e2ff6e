/**
 * The search space of the bit-width search: which tensors move together (a
 * block, or one linear), the modes each may take, which are pinned, and the
 * exact storage size of every point of the space.
 *
 * A point is an {@link Assignment}: for each {@link SearchUnit}, the index of
 * its mode. Sizes are additive over units (each tensor is stored on its own),
 * so `bytes(point) = fixedBytes + Σ unit.bytes[mode]`, equal to
 * `compressionStats(config, toBitMap(point)).totalBytes`.
 *
 * @module
 */
import { Data } from "effect";
import type { Cause } from "effect";
import { bitMapIssues, type OneBitLlmConfig } from "../common/config.ts";
import {
  type LayerBitMap,
  LINEAR_NAMES,
  linearMode,
  type LinearName,
  lmHeadMode,
} from "../common/layer_bit_map.ts";
import { QUANT_MODES, type QuantMode } from "../common/quant_mode.ts";
import { compressionStats, storageBytes } from "../core/compression.ts";
import { modelTensors } from "../core/tensors.ts";

/** The fields of a {@link SearchError}. */
export interface SearchErrorFields {
  /** What is wrong, for a person (names the option, e.g. `--pin`). */
  readonly message: string;
}

/** The typed base of {@link SearchError} (explicit for JSR). */
export const SearchErrorBase: new (
  fields: SearchErrorFields,
) =>
  & Cause.YieldableError
  & { readonly _tag: "SearchError" }
  & SearchErrorFields = Data.TaggedError("SearchError");

/** Search options that cannot be used: a bad pin, an empty space, a bad limit. */
export class SearchError extends SearchErrorBase {}

/** A failure while scoring a map (a model that cannot load or run), as a {@link SearchError}. */
export function toSearchError(cause: unknown): SearchError {
  return cause instanceof SearchError ? cause : new SearchError({
    message: `cannot score the bit map: ${
      cause instanceof Error ? cause.message : String(cause)
    }`,
  });
}

/** Whether a unit is a whole block or a single linear. */
export type Granularity = "block" | "linear";

/**
 * A tensor whose mode the bit map sets: a block linear, the embedding (with a
 * tied LM head, the head too) or an untied LM head.
 */
export type Slot =
  | {
    readonly kind: "linear";
    readonly layer: number;
    readonly linear: LinearName;
  }
  | { readonly kind: "embedding" }
  | { readonly kind: "lm_head" };

/** The name of a slot: `3.mlp.down`, `embedding`, `lm_head`. */
export function slotName(slot: Slot): string {
  return slot.kind === "linear" ? `${slot.layer}.${slot.linear}` : slot.kind;
}

/** Tensors that always share one mode, and the modes they may take. */
export interface SearchUnit {
  /** `3` (a block), `3.mlp.down` (a linear), `embedding` or `lm_head`. */
  readonly name: string;
  /** The slots it sets. */
  readonly slots: ReadonlyArray<Slot>;
  /** Its candidate modes, smallest storage first. */
  readonly modes: ReadonlyArray<QuantMode>;
  /** Bytes of its tensors in each mode (parallel to `modes`). */
  readonly bytes: ReadonlyArray<number>;
}

/** A point of a {@link SearchSpace}: per unit, the index of its mode in `unit.modes`. */
export type Assignment = ReadonlyArray<number>;

/** One pin: a slot (or a whole block) held at a mode. */
export interface Pin {
  /** A block index, or a slot. */
  readonly target: number | Slot;
  /** The mode; absent: the reference map's mode. */
  readonly mode?: QuantMode;
}

/** Options of {@link buildSpace}. */
export interface SpaceOptions {
  /** Units are blocks (default) or single linears. */
  readonly granularity?: Granularity;
  /** Candidate modes (default all four). */
  readonly modes?: ReadonlyArray<QuantMode>;
  /** Search the embedding (and LM head) too; by default they keep the reference mode. */
  readonly unpinEmbedding?: boolean;
  /** More pins. */
  readonly pins?: ReadonlyArray<Pin>;
}

/** The units of a search over one model, and everything held fixed. */
export interface SearchSpace {
  /** The model. */
  readonly config: OneBitLlmConfig;
  /** The map the run was trained with; pins without a mode keep its modes. */
  readonly reference: LayerBitMap;
  /** How units were formed. */
  readonly granularity: Granularity;
  /** The searched units (pinned slots belong to none). */
  readonly units: ReadonlyArray<SearchUnit>;
  /** Every slot of the model, in `modelTensors` order. */
  readonly slots: ReadonlyArray<Slot>;
  /** The mode of every slot outside the units. */
  readonly fixed: ReadonlyMap<string, QuantMode>;
  /** Bytes of everything outside the units (norms and pinned tensors). */
  readonly fixedBytes: number;
  /** Number of points: the product of the units' mode counts. */
  readonly size: number;
}

/** Every slot of `config`: the embedding, each block's linears, an untied head. */
export function modelSlots(config: OneBitLlmConfig): ReadonlyArray<Slot> {
  const slots: Array<Slot> = [{ kind: "embedding" }];
  for (let layer = 0; layer < config.num_layers; layer++) {
    for (const linear of LINEAR_NAMES) {
      if (linear === "mlp.gate" && !config.use_swiglu) continue;
      slots.push({ kind: "linear", layer, linear });
    }
  }
  if (!config.tie_embeddings) slots.push({ kind: "lm_head" });
  return slots;
}

/** The mode `map` gives `slot`. */
export function slotMode(map: LayerBitMap, slot: Slot): QuantMode {
  switch (slot.kind) {
    case "embedding":
      return map.embedding;
    case "lm_head":
      return lmHeadMode(map);
    case "linear":
      return linearMode(map, slot.layer, slot.linear);
  }
}

/** The shapes of a slot's tensors (the embedding of a tied model also stores the head). */
function slotShapes(
  config: OneBitLlmConfig,
): Map<string, ReadonlyArray<ReadonlyArray<number>>> {
  const out = new Map<string, Array<ReadonlyArray<number>>>();
  for (const spec of modelTensors(config)) {
    const name = spec.kind === "linear"
      ? `${spec.layer}.${spec.linear}`
      : spec.kind === "norm"
      ? undefined
      : spec.kind;
    if (name === undefined) continue;
    out.set(name, [...(out.get(name) ?? []), spec.shape]);
  }
  return out;
}

/**
 * A key naming the mode of every slot of `map` (the same for every spelling
 * of one assignment: `layer_modes` plus overrides, or overrides only).
 */
export function mapKey(config: OneBitLlmConfig, map: LayerBitMap): string {
  return modelSlots(config).map((s) => MODE_LETTER[slotMode(map, s)]).join("");
}

const MODE_LETTER: Readonly<Record<QuantMode, string>> = {
  binary: "b",
  ternary: "t",
  eightbit: "8",
  f16: "h",
};

/**
 * Parses `--pin` text: comma-separated items, each a block (`3`), a linear
 * (`3.mlp.down`), `embedding` or `lm_head`, optionally `=<mode>`
 * (`3.mlp.down=eightbit`). Throws a {@link SearchError} naming the bad item.
 */
export function parsePins(text: string): ReadonlyArray<Pin> {
  const pins: Array<Pin> = [];
  for (const raw of text.split(",")) {
    const item = raw.trim();
    if (item === "") continue;
    const [target, mode, ...rest] = item.split("=");
    const bad = (why: string) =>
      new SearchError({ message: `--pin: ${JSON.stringify(item)}: ${why}` });
    if (rest.length > 0) throw bad("more than one '='");
    if (
      mode !== undefined && !(QUANT_MODES as readonly string[]).includes(mode)
    ) {
      throw bad(
        `unknown mode ${JSON.stringify(mode)} (${QUANT_MODES.join(", ")})`,
      );
    }
    const m = /^(0|[1-9][0-9]*)(?:\.(.+))?$/.exec(target);
    let slot: number | Slot;
    if (target === "embedding" || target === "lm_head") slot = { kind: target };
    else if (m === null) {
      throw bad("expected <block>, <block>.<linear>, embedding or lm_head");
    } else if (m[2] === undefined) slot = Number(m[1]);
    else if ((LINEAR_NAMES as readonly string[]).includes(m[2])) {
      slot = {
        kind: "linear",
        layer: Number(m[1]),
        linear: m[2] as LinearName,
      };
    } else {throw bad(
        `unknown linear ${JSON.stringify(m[2])} (${LINEAR_NAMES.join(", ")})`,
      );}
    pins.push(
      mode === undefined
        ? { target: slot }
        : { target: slot, mode: mode as QuantMode },
    );
  }
  return pins;
}

/**
 * The search space of `config` around its `reference` map. Throws a
 * {@link SearchError} for a pin outside the model, conflicting pins, or an
 * empty mode list.
 */
export function buildSpace(
  config: OneBitLlmConfig,
  reference: LayerBitMap,
  options: SpaceOptions = {},
): SearchSpace {
  const issues = bitMapIssues(config, reference);
  if (issues.length > 0) {
    throw new SearchError({
      message: `reference bit map: ${issues.join("; ")}`,
    });
  }
  const granularity = options.granularity ?? "block";
  const modes = options.modes ?? QUANT_MODES;
  if (modes.length === 0) {
    throw new SearchError({ message: "--modes: no mode given" });
  }
  const slots = modelSlots(config);
  const names = new Set(slots.map(slotName));
  const fixed = new Map<string, QuantMode>();
  const pin = (slot: Slot, mode: QuantMode | undefined, item: string) => {
    const name = slotName(slot);
    if (!names.has(name)) {
      throw new SearchError({
        message:
          `--pin: ${item}: the model has no ${name} (${config.num_layers} blocks${
            config.use_swiglu ? "" : ", no mlp.gate"
          }${config.tie_embeddings ? ", LM head tied to the embedding" : ""})`,
      });
    }
    const m = mode ?? slotMode(reference, slot);
    const before = fixed.get(name);
    if (before !== undefined && before !== m) {
      throw new SearchError({
        message: `--pin: ${item}: ${name} is pinned to both ${before} and ${m}`,
      });
    }
    fixed.set(name, m);
  };
  if (!options.unpinEmbedding) {
    pin({ kind: "embedding" }, undefined, "embedding");
    if (!config.tie_embeddings) pin({ kind: "lm_head" }, undefined, "lm_head");
  }
  for (const p of options.pins ?? []) {
    const item = typeof p.target === "number"
      ? `${p.target}`
      : slotName(p.target);
    const text = p.mode ? `${item}=${p.mode}` : item;
    if (typeof p.target === "number") {
      if (
        !Number.isInteger(p.target) || p.target < 0 ||
        p.target >= config.num_layers
      ) {
        throw new SearchError({
          message:
            `--pin: ${text}: block ${p.target} is out of range (the model has ${config.num_layers} blocks)`,
        });
      }
      for (const s of slots) {
        if (s.kind === "linear" && s.layer === p.target) pin(s, p.mode, text);
      }
    } else pin(p.target, p.mode, text);
  }

  const shapes = slotShapes(config);
  const slotBytes = (slot: Slot, mode: QuantMode) =>
    (shapes.get(slotName(slot)) ?? []).reduce(
      (sum, shape) => sum + storageBytes(mode, shape),
      0,
    );
  const groups = new Map<string, Array<Slot>>();
  for (const s of slots) {
    if (fixed.has(slotName(s))) continue;
    const unit = s.kind === "linear" && granularity === "block"
      ? `${s.layer}`
      : slotName(s);
    groups.set(unit, [...(groups.get(unit) ?? []), s]);
  }
  const units: Array<SearchUnit> = [...groups].map(([name, unitSlots]) => {
    const options = modes.map((mode) => ({
      mode,
      bytes: unitSlots.reduce((sum, s) => sum + slotBytes(s, mode), 0),
    })).sort((a, b) => a.bytes - b.bytes);
    return {
      name,
      slots: unitSlots,
      modes: options.map((o) => o.mode),
      bytes: options.map((o) => o.bytes),
    };
  });
  const space: SearchSpace = {
    config,
    reference,
    granularity,
    units,
    slots,
    fixed,
    fixedBytes: 0,
    size: units.reduce((n, u) => n * u.modes.length, 1),
  };
  const zero = units.map(() => 0);
  const fixedBytes =
    compressionStats(config, toBitMap(space, zero)).totalBytes -
    units.reduce((sum, u) => sum + u.bytes[0], 0);
  return { ...space, fixedBytes };
}

/** Exact storage bytes of a point (as `compressionStats` counts them). */
export function assignmentBytes(space: SearchSpace, a: Assignment): number {
  let bytes = space.fixedBytes;
  for (let u = 0; u < space.units.length; u++) {
    bytes += space.units[u].bytes[a[u]];
  }
  return bytes;
}

/** The mode of every slot at point `a`, by slot name. */
function slotModes(space: SearchSpace, a: Assignment): Map<string, QuantMode> {
  const modes = new Map(space.fixed);
  space.units.forEach((unit, u) => {
    for (const s of unit.slots) modes.set(slotName(s), unit.modes[a[u]]);
  });
  return modes;
}

/**
 * The bit map of point `a`: each block's `layer_modes` entry is the mode most
 * of its linears have (ties: the reference's mode, else the smaller one),
 * the others are `overrides`; `lm_head` only where it differs from the
 * embedding.
 */
export function toBitMap(space: SearchSpace, a: Assignment): LayerBitMap {
  const modes = slotModes(space, a);
  const { config } = space;
  const layerModes: Array<QuantMode> = [];
  const overrides: Record<string, QuantMode> = {};
  for (let layer = 0; layer < config.num_layers; layer++) {
    const linears = space.slots.filter((s) =>
      s.kind === "linear" && s.layer === layer
    ).map((s) => [slotName(s), modes.get(slotName(s))!] as const);
    const count = new Map<QuantMode, number>();
    for (const [, m] of linears) count.set(m, (count.get(m) ?? 0) + 1);
    const top = Math.max(...count.values());
    const ref = space.reference.layer_modes[layer];
    const layerMode = count.get(ref) === top
      ? ref
      : QUANT_MODES.slice().reverse().find((m) => count.get(m) === top)!;
    layerModes.push(layerMode);
    for (const [name, m] of linears) if (m !== layerMode) overrides[name] = m;
  }
  const embedding = modes.get("embedding")!;
  const head = config.tie_embeddings ? embedding : modes.get("lm_head")!;
  return {
    embedding,
    layer_modes: layerModes,
    ...(head !== embedding ? { lm_head: head } : {}),
    ...(Object.keys(overrides).length > 0 ? { overrides } : {}),
  };
}

/**
 * The point of the space that gives every slot the mode `map` gives it, or
 * `undefined` when `map` is not in the space (a pinned slot differs, a unit's
 * slots differ, or a mode is not a candidate).
 */
export function fromBitMap(
  space: SearchSpace,
  map: LayerBitMap,
): Assignment | undefined {
  for (const [name, mode] of space.fixed) {
    const slot = space.slots.find((s) => slotName(s) === name)!;
    if (slotMode(map, slot) !== mode) return undefined;
  }
  const a: Array<number> = [];
  for (const unit of space.units) {
    const modes = new Set(unit.slots.map((s) => slotMode(map, s)));
    if (modes.size !== 1) return undefined;
    const i = unit.modes.indexOf([...modes][0]);
    if (i < 0) return undefined;
    a.push(i);
  }
  return a;
}

/**
 * The point nearest `map`: per unit, the mode most of its slots have in
 * `map` (ties: the larger), or the candidate of nearest size when that mode
 * is not a candidate.
 */
export function nearestAssignment(
  space: SearchSpace,
  map: LayerBitMap,
): Assignment {
  return space.units.map((unit) => {
    const count = new Map<QuantMode, number>();
    for (const s of unit.slots) {
      const m = slotMode(map, s);
      count.set(m, (count.get(m) ?? 0) + 1);
    }
    const top = Math.max(...count.values());
    const mode = QUANT_MODES.find((m) => count.get(m) === top)!;
    const i = unit.modes.indexOf(mode);
    if (i >= 0) return i;
    const target = unit.slots.length * BITS[mode];
    let best = 0;
    unit.modes.forEach((m, j) => {
      const d = Math.abs(unit.slots.length * BITS[m] - target);
      if (d < Math.abs(unit.slots.length * BITS[unit.modes[best]] - target)) {
        best = j;
      }
    });
    return best;
  });
}

const BITS: Readonly<Record<QuantMode, number>> = {
  binary: 1,
  ternary: 1.6,
  eightbit: 8,
  f16: 16,
};

/** The point with every unit at `mode` (units without that candidate: their nearest one). */
export function uniformAssignment(
  space: SearchSpace,
  mode: QuantMode,
): Assignment {
  return nearestAssignment(space, {
    embedding: mode,
    layer_modes: space.config.num_layers > 0
      ? Array.from({ length: space.config.num_layers }, () => mode)
      : [],
  });
}

/** Every point of the space, in mixed-radix order (the last unit fastest). */
export function* allAssignments(space: SearchSpace): Generator<Assignment> {
  const a = space.units.map(() => 0);
  while (true) {
    yield [...a];
    let u = a.length - 1;
    while (u >= 0 && a[u] === space.units[u].modes.length - 1) a[u--] = 0;
    if (u < 0) return;
    a[u]++;
  }
}

/** A short text of a point: `0:ternary 1:binary …` (unit name, mode). */
export function describeAssignment(space: SearchSpace, a: Assignment): string {
  return space.units.map((unit, u) => `${unit.name}:${unit.modes[a[u]]}`).join(
    " ",
  );
}
