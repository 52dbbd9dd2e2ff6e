/**
 * The error of the inference runtime: a model, prompt or setting it cannot
 * run, described in one line for a person.
 *
 * @module
 */
import { type Cause, Data } from "effect";

/** The fields of an {@link InferenceError}. */
export interface InferenceErrorFields {
  /** What went wrong, naming the tensor, setting or limit. */
  readonly message: string;
}

/** The typed base of {@link InferenceError} (explicit for JSR). */
export const InferenceErrorBase: new (
  fields: InferenceErrorFields,
) =>
  & Cause.YieldableError
  & { readonly _tag: "InferenceError" }
  & InferenceErrorFields = Data.TaggedError("InferenceError");

/**
 * Weights that do not fit their config, a λ strictly between 0 and 1, a
 * prompt longer than the context, non-finite activations. Thrown by the
 * synchronous runtime and failed with by its Effect programs.
 */
export class InferenceError extends InferenceErrorBase {}
