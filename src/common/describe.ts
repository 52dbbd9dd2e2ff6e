/**
 * The text of a caught value for an error message: an `Error`'s message,
 * anything else as a string.
 *
 * @module
 */

/** `cause.message` for an `Error`, `String(cause)` otherwise. */
export const describeCause = (cause: unknown): string =>
  cause instanceof Error ? cause.message : String(cause);
