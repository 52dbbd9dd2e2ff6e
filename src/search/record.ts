/**
 * `search.json`: the journal of a search, rewritten after every evaluation so
 * an interrupted search resumes without re-evaluating a map. It names its
 * source (model, checkpoint, evaluation windows); a journal of another source
 * is refused rather than mixed in.
 *
 * @module
 */
import { Effect, Schema } from "effect";
import { LayerBitMap } from "../common/layer_bit_map.ts";
import { DataError } from "../common/text_sources.ts";
import type { Evaluation, PriorScore, SearchResult } from "./search.ts";
import { SearchError } from "./space.ts";

/** The `format` field of a journal. */
export const SEARCH_RECORD_FORMAT = "ternary-search/1";

/** What a journal says besides its evaluations. */
export interface RecordHeader {
  /** What the scores depend on (model, checkpoint, windows); must match to resume. */
  readonly source: Readonly<Record<string, unknown>>;
  /** The searched units and their modes, for the reader. */
  readonly space: unknown;
  /** The limits asked for. */
  readonly constraint: unknown;
}

const Scored = Schema.Struct({
  map: LayerBitMap,
  loss: Schema.Number,
  ppl: Schema.Number,
  tokens: Schema.Number,
});
const Journal = Schema.Struct({
  format: Schema.Literal(SEARCH_RECORD_FORMAT),
  source: Schema.Unknown,
  evaluations: Schema.Array(Scored),
});

const evaluationJson = (e: Evaluation) => ({
  index: e.index,
  phase: e.phase,
  bytes: e.bytes,
  ppl: e.ppl,
  loss: e.loss,
  tokens: e.tokens,
  feasible: e.feasible,
  seconds: e.seconds,
  cached: e.cached,
  map: e.map,
});

/**
 * The journal's JSON: the header, every evaluation so far and, once the
 * search is over, its result (choice, limit, optimality, timings).
 */
export function searchRecordJson(
  header: RecordHeader,
  evaluations: ReadonlyArray<Evaluation>,
  result?: SearchResult,
): string {
  const done = result === undefined ? {} : {
    complete: true,
    maxPpl: result.maxPpl,
    ...(result.maxBytes !== undefined ? { maxBytes: result.maxBytes } : {}),
    reference: evaluationJson(result.reference),
    choice: result.choice ? evaluationJson(result.choice) : null,
    lowestPpl: evaluationJson(result.lowestPpl),
    uniform: result.uniform.map((u) => ({
      mode: u.mode,
      ...evaluationJson(u.evaluation),
    })),
    frontier: result.frontier.map((e) => e.index),
    optimality: result.optimality,
    stopped: result.stopped,
    timings: {
      seconds: result.seconds,
      phaseSeconds: result.phaseSeconds,
      evaluations: result.evaluations.length,
      evaluatorCalls: result.evaluations.filter((e) => !e.cached).length,
    },
  };
  return JSON.stringify(
    {
      format: SEARCH_RECORD_FORMAT,
      ...header,
      complete: false,
      ...done,
      evaluations: evaluations.map(evaluationJson),
    },
    null,
    1,
  ) + "\n";
}

/**
 * The scores in the journal at `path` (none when it does not exist). Fails
 * with a `DataError` naming the file when it cannot be read or parsed, and a
 * {@link SearchError} when it belongs to another source.
 */
export function readPriorScores(
  path: string,
  source: RecordHeader["source"],
): Effect.Effect<ReadonlyArray<PriorScore>, DataError | SearchError> {
  return Effect.gen(function* () {
    const text = yield* Effect.tryPromise({
      try: () => Deno.readTextFile(path),
      catch: (e) => e,
    }).pipe(
      Effect.catch((e) =>
        e instanceof Deno.errors.NotFound
          ? Effect.succeed(undefined)
          : Effect.fail(new DataError({ file: path, message: `${path}: ${e}` }))
      ),
    );
    if (text === undefined) return [];
    const journal = yield* Effect.try({
      try: () => Schema.decodeUnknownSync(Journal)(JSON.parse(text)),
      catch: (e) =>
        new DataError({
          file: path,
          message: `${path}: not a search journal (${
            String(e instanceof Error ? e.message : e).split("\n")[0]
          })`,
        }),
    });
    if (JSON.stringify(journal.source) !== JSON.stringify(source)) {
      return yield* new SearchError({
        message:
          `${path} was written for another model or other evaluation windows (${
            JSON.stringify(journal.source)
          }); pass another --out, or delete it`,
      });
    }
    return journal.evaluations.map((e) => ({
      map: e.map,
      score: { loss: e.loss, ppl: e.ppl, tokens: e.tokens },
    }));
  });
}
