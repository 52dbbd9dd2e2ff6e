/**
 * Bit-width search: the size/perplexity frontier of evaluated candidates and
 * the smallest one within a perplexity limit.
 *
 * @example
 * ```ts
 * import { paretoFrontier, smallestWithin } from "@ternary/core/search";
 *
 * const tried = [
 *   { bytes: 900, ppl: 40, map: "all f16" },
 *   { bytes: 300, ppl: 46, map: "all ternary" },
 *   { bytes: 500, ppl: 47, map: "dominated" },
 * ];
 * console.log(paretoFrontier(tried).map((c) => c.map)); // ["all ternary", "all f16"]
 * console.log(smallestWithin(tried, 45)?.map); // "all f16"
 * ```
 *
 * @module
 */
export * from "./frontier.ts";
