/**
 * Decoding the fields of the run's JSON files through schemas, with messages
 * a person can read: one line per problem, `<file>: at <field>: <problem>`,
 * each line and the number of lines capped, so a huge or deeply nested bad
 * value still gives a short message.
 *
 * @module
 */
import { Effect, Schema, SchemaIssue } from "effect";
import { DataError } from "../common/text_sources.ts";

/** Problems listed in one message; more are counted in a last line. */
export const MAX_ISSUE_LINES = 5;
/** Characters of one message line; longer lines end in "…". */
export const MAX_ISSUE_LINE_CHARS = 240;

const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1({
  leafHook: (issue) => {
    switch (issue._tag) {
      case "MissingKey":
        return "missing required field";
      case "UnexpectedKey":
        return "unknown field";
      default:
        return SchemaIssue.defaultLeafHook(issue);
    }
  },
});

const clip = (line: string): string =>
  line.length > MAX_ISSUE_LINE_CHARS
    ? `${line.slice(0, MAX_ISSUE_LINE_CHARS - 1)}…`
    : line;

/**
 * The message lines of a schema issue about `file`, the field paths prefixed
 * with `at` (a dotted path, or "" for the top level).
 */
export function issueMessage(
  file: string,
  at: string,
  issue: SchemaIssue.Issue,
): string {
  const entries = formatIssues(issue).issues;
  const lines = entries.slice(0, MAX_ISSUE_LINES).map(({ path, message }) => {
    const where = [
      at,
      ...(path ?? []).map((p) => String(typeof p === "object" ? p.key : p)),
    ].filter((s) => s !== "").join(".");
    return clip(`${file}: ${where === "" ? "" : `at ${where}: `}${message}`);
  });
  if (entries.length > MAX_ISSUE_LINES) {
    lines.push(
      `${file}: and ${entries.length - MAX_ISSUE_LINES} more problems`,
    );
  }
  return lines.join("\n");
}

/**
 * Decodes `value` (the field `at` of the JSON file `file`; "" for the whole
 * file) with `schema`, rejecting unknown fields. Fails with a
 * {@link DataError} on `file` (see {@link issueMessage}).
 */
export function decodeField<A>(
  schema: Schema.Codec<A>,
  value: unknown,
  file: string,
  at: string,
): Effect.Effect<A, DataError> {
  return Schema.decodeUnknownEffect(schema, {
    errors: "all",
    onExcessProperty: "error",
    reportInput: true,
  })(value).pipe(
    Effect.mapError((e) =>
      new DataError({ file, message: issueMessage(file, at, e.issue) })
    ),
  );
}
