/**
 * Training: the trainer and its step loop, AdamW, learning-rate and
 * weight-decay schedules, checkpoints with exact resume, progress, metrics
 * and SVG curves; new runs from a trained run's weights (`trainFromRun`).
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
export * from "./report.ts";
export * from "./svg_chart.ts";
export * from "./checkpoint.ts";
export * from "./optimizer.ts";
export * from "./settings.ts";
export * from "./decode.ts";
export * from "./budget.ts";
export * from "./run_state.ts";
export * from "./trainer.ts";
export * from "./trained_model.ts";
export * from "./run.ts";
export * from "./init_from.ts";
