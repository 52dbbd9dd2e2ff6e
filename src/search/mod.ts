/**
 * Bit-width search: the smallest `LayerBitMap` of a trained model whose
 * perplexity stays within a limit, with the embedding and LM head pinned.
 *
 * - {@link buildSpace}: the units (blocks or single linears), their candidate
 *   modes, pins, and the exact size of every point;
 * - {@link Evaluator}: scores a map; {@link weightsEvaluator} runs the
 *   inference runtime on weights quantized once per mode,
 *   {@link latentEvaluator} the training forward; both on
 *   {@link selectEvalWindows}'s seeded windows;
 * - {@link search}: sensitivity, the knapsack frontier of an additive model,
 *   verified refinement moves and, when the budget allows, a check of every
 *   smaller map that proves the choice optimal;
 * - {@link searchRecordJson} / {@link readPriorScores}: the resumable
 *   `search.json`; {@link frontierSvg}: `frontier.svg`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect";
 * import { preset, resolveBitMap } from "@ternary/core";
 * import { buildSpace, search } from "@ternary/core/search";
 *
 * const config = preset("tiny");
 * const space = buildSpace(config, resolveBitMap(config));
 * // A stand-in evaluator: perplexity falls as the blocks get more bits.
 * const bits = { binary: 1, ternary: 1.6, eightbit: 8, f16: 16 };
 * const result = await Effect.runPromise(search({
 *   space,
 *   evaluator: (map) => {
 *     const ppl = 100 + map.layer_modes.reduce((s, m) => s + 8 / bits[m], 0);
 *     return Effect.succeed({ loss: Math.log(ppl), ppl, tokens: 1 });
 *   },
 *   constraint: { maxPplRatio: 1.02 },
 * }));
 * console.log(result.choice?.map, result.optimality.proven);
 * ```
 *
 * @module
 */
export * from "./frontier.ts";
export * from "./space.ts";
export * from "./by_size.ts";
export * from "./evaluator.ts";
export * from "./weights_evaluator.ts";
export * from "./run_evaluator.ts";
export * from "./search.ts";
export * from "./record.ts";
export * from "./chart.ts";
