/**
 * Errors the CLI reports to a person as one line, without a stack trace.
 *
 * @module
 */
import { type Cause, Data } from "effect";

/** The fields of a {@link UsageError}. */
export interface UsageErrorFields {
  /** What is wrong with the command line, naming the flag. */
  readonly message: string;
}

const UsageErrorBase: new (
  fields: UsageErrorFields,
) =>
  & Cause.YieldableError
  & { readonly _tag: "UsageError" }
  & UsageErrorFields = Data.TaggedError("UsageError");

/** A flag combination or value the command cannot use. */
export class UsageError extends UsageErrorBase {}

/** The fields of a {@link NotImplementedError}. */
export interface NotImplementedErrorFields {
  /** The task that is not built yet. */
  readonly task: string;
}

const NotImplementedErrorBase: new (
  fields: NotImplementedErrorFields,
) =>
  & Cause.YieldableError
  & { readonly _tag: "NotImplementedError" }
  & NotImplementedErrorFields = Data.TaggedError("NotImplementedError");

/** A task whose issue has not landed yet. */
export class NotImplementedError extends NotImplementedErrorBase {
  /** One line for the terminal. */
  override get message(): string {
    return `'${this.task}' is not implemented yet in this version of ternary-core`;
  }
}
