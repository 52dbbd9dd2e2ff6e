/**
 * The command line's logger: messages on standard error as plain lines (the
 * minimum level is `--log-level`, info by default); warnings and worse are
 * prefixed with their level.
 *
 * @module
 */
import { type Layer, Logger, LogLevel } from "effect";

const text = (message: unknown): string =>
  (Array.isArray(message) ? message : [message]).map((part) =>
    typeof part === "string" ? part : JSON.stringify(part)
  ).join(" ");

/** Plain lines on standard error, replacing the default logger. */
export const cliLogger: Layer.Layer<never> = Logger.layer([
  Logger.make(({ message, logLevel }) => {
    const line = text(message);
    console.error(
      LogLevel.isGreaterThanOrEqualTo(logLevel, "Warn")
        ? `${logLevel.toLowerCase()}: ${line}`
        : line,
    );
  }),
]);
