/**
 * The training run's view of a checkpoint's `state.json`: its opaque fields
 * (settings, sampler position, budget plan) decoded through schemas, so a bad
 * value is a `DataError` naming `state.json` and the field, never a cast.
 *
 * @module
 */
import { Effect } from "effect";
import type { SamplerState } from "../common/batches.ts";
import type { DataError } from "../common/text_sources.ts";
import type { CheckpointState } from "./checkpoint.ts";
import { BudgetPlan } from "./budget.ts";
import { decodeField } from "./decode.ts";
import { SamplerStateSchema, TrainSettings } from "./settings.ts";

/** A decoded `state.json`: where a run stands and how it was set up. */
export interface RunState {
  /** Optimizer steps taken. */
  readonly step: number;
  /** Training tokens consumed. */
  readonly tokens: number;
  /** The run's settings (the plan in effect, for a budgeted run). */
  readonly settings: TrainSettings;
  /** The batch sampler's position. */
  readonly sampler: SamplerState;
  /** Seconds spent training before this state, across resumes. */
  readonly elapsedSeconds: number;
  /** The `--data` source (undefined: the built-in corpus). */
  readonly data: string | undefined;
  /** How a time budget planned the steps, when one did. */
  readonly budget: BudgetPlan | undefined;
}

/** Decodes the fields of `state` (read from `file`) that the checkpoint keeps opaque. */
export function decodeRunState(
  state: CheckpointState,
  file: string,
): Effect.Effect<RunState, DataError> {
  return Effect.gen(function* () {
    const settings = yield* decodeField(
      TrainSettings,
      state.schedule,
      file,
      "schedule",
    );
    const sampler = yield* decodeField(
      SamplerStateSchema,
      state.sampler,
      file,
      "sampler",
    );
    const budget = state.budget === undefined
      ? undefined
      : yield* decodeField(BudgetPlan, state.budget, file, "budget");
    return {
      step: state.step,
      tokens: state.tokens_seen,
      settings,
      sampler,
      elapsedSeconds: state.elapsed_seconds ?? 0,
      data: state.data,
      budget,
    };
  });
}
