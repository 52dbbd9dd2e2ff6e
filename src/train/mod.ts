/**
 * Training: learning-rate and weight-decay schedules.
 *
 * @example The reference recipe: 100 warmup steps, cosine to 0
 * ```ts
 * import { lrAt } from "@ternary/core/train";
 *
 * const schedule = { kind: "cosine", peakLr: 1.5e-3, warmupSteps: 100, totalSteps: 300 } as const;
 * console.log(lrAt(schedule, 0).lr, lrAt(schedule, 100).lr, lrAt(schedule, 299).lr);
 * ```
 *
 * @module
 */
export * from "./lr_schedule.ts";
