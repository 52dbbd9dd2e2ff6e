/**
 * {@link DataError}: the typed error of every reader of user data, naming the
 * file or directory it is about.
 *
 * @module
 */
import { type Cause, Data } from "effect";

/** The fields of a {@link DataError}. */
export interface DataErrorFields {
  /** The file or directory the error is about. */
  readonly file: string;
  /** What is wrong with it. */
  readonly message: string;
}

/** The base class of {@link DataError}: `Data.TaggedError("DataError")`. */
export const DataErrorBase: new (
  args: DataErrorFields,
) => Cause.YieldableError & { readonly _tag: "DataError" } & DataErrorFields =
  Data.TaggedError("DataError");

/** A data file or directory is missing, unreadable or malformed. */
export class DataError extends DataErrorBase {}
