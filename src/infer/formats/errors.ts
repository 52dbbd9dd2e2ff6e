/**
 * The error of the exporters: a model that a format cannot represent, or
 * weights that do not fit their config. Readers fail with the common
 * `DataError` (naming the file) instead.
 *
 * @module
 */
import { type Cause, Data } from "effect";

/** The fields of an {@link ExportError}. */
export interface ExportErrorFields {
  /** What cannot be exported, naming the config field, bit-map entry or option. */
  readonly message: string;
}

/** The typed base of {@link ExportError} (explicit for JSR). */
export const ExportErrorBase: new (
  fields: ExportErrorFields,
) =>
  & Cause.YieldableError
  & { readonly _tag: "ExportError" }
  & ExportErrorFields = Data.TaggedError("ExportError");

/**
 * A model a format cannot hold (e.g. ReLU² in GGUF's `bitnet` architecture),
 * or weights that do not match their config and bit map.
 */
export class ExportError extends ExportErrorBase {}
