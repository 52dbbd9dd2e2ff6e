/**
 * The bit-width search: the smallest model (total bytes, as
 * `compressionStats` counts them) whose perplexity stays within a limit.
 *
 * Phases, every evaluation end to end through the {@link Evaluator} and
 * cached by map:
 * 1. `reference`: the run's own map (the limit of `maxPplRatio` is relative to
 *    it) and `uniform`: every unit at one mode, for each candidate mode;
 * 2. `sensitivity`: from the reference point, each unit alone in each other
 *    mode — the loss change Δ(u, m) of that unit;
 * 3. `frontier`: an additive model (loss ≈ reference + Σ Δ) gives the
 *    size/loss Pareto frontier of the whole space (a multiple-choice knapsack,
 *    solved by a Pareto merge unit by unit); the walk along it evaluates the
 *    smallest point predicted within the limit and its neighbours on the
 *    frontier until the real limit is bracketed;
 * 4. `refine`: from the smallest feasible map, moves of one unit or a swap of
 *    two, ranked by the model re-centred on the incumbent, each verified; the
 *    first that helps is taken; stops when none helps;
 * 5. `certify`: when the budget allows, every unevaluated map no larger than
 *    the choice, smallest first: the first feasible one is the optimum, and
 *    if none is, the choice is. Otherwise the result says how much smaller
 *    than the choice an unevaluated map could be (the gap).
 *
 * @module
 */
import { Effect } from "effect";
import type { LayerBitMap } from "../common/layer_bit_map.ts";
import type { QuantMode } from "../common/quant_mode.ts";
import { compressionStats } from "../core/compression.ts";
import { assignmentsBySize } from "./by_size.ts";
import type { Evaluator, Score } from "./evaluator.ts";
import { type Candidate, paretoFrontier } from "./frontier.ts";
import {
  allAssignments,
  type Assignment,
  assignmentBytes,
  fromBitMap,
  mapKey,
  nearestAssignment,
  SearchError,
  type SearchSpace,
  toBitMap,
  uniformAssignment,
} from "./space.ts";

/** The phase that asked for an evaluation. */
export type Phase =
  | "reference"
  | "uniform"
  | "sensitivity"
  | "frontier"
  | "refine"
  | "certify"
  | "exhaustive";

/** One evaluated map. */
export interface Evaluation extends Score {
  /** 1-based order of the evaluation in this search. */
  readonly index: number;
  /** The map. */
  readonly map: LayerBitMap;
  /** Its point in the space; absent for a map outside it (a reference with other modes). */
  readonly assignment?: Assignment;
  /** Exact storage bytes (`compressionStats(config, map).totalBytes`). */
  readonly bytes: number;
  /** Who asked for it. */
  readonly phase: Phase;
  /** Seconds the evaluator took (0 when it came from `prior`). */
  readonly seconds: number;
  /** Whether it came from `prior` instead of the evaluator. */
  readonly cached: boolean;
  /** Within every limit. */
  readonly feasible: boolean;
}

/** A previous score of a map (from an interrupted search's record). */
export interface PriorScore {
  /** The map. */
  readonly map: LayerBitMap;
  /** Its score on the same windows. */
  readonly score: Score;
}

/** The limits a map must meet; one of `maxPpl` / `maxPplRatio` is required. */
export interface Constraint {
  /** Largest perplexity allowed. */
  readonly maxPpl?: number;
  /** Largest perplexity allowed, as a multiple of the reference map's. */
  readonly maxPplRatio?: number;
  /** Largest total bytes allowed. */
  readonly maxBytes?: number;
}

/** Where a search stands, after each evaluation. */
export interface Progress {
  /** Evaluations so far (the budget counts them). */
  readonly done: number;
  /** The budget. */
  readonly budget: number;
  /** Smallest feasible map so far. */
  readonly best?: Evaluation;
  /** Seconds since the search started. */
  readonly elapsedSeconds: number;
  /** Upper bound on the seconds left: the rest of the budget at the mean pace. */
  readonly etaSeconds: number;
}

/** Options of {@link search}. */
export interface SearchOptions<E, R, E2 = never, R2 = never> {
  /** Units, modes and pins (see `buildSpace`). */
  readonly space: SearchSpace;
  /** Scores a map; deterministic. */
  readonly evaluator: Evaluator<E, R>;
  /** The limits. */
  readonly constraint: Constraint;
  /** Most evaluations (default {@link DEFAULT_BUDGET}). */
  readonly budget?: number;
  /** Evaluate every map of the space instead (the oracle of small spaces). */
  readonly exhaustive?: boolean;
  /** Check every smaller map when the budget allows (default true). */
  readonly certify?: boolean;
  /** Scores already known (resume); the budget still counts each map the search uses. */
  readonly prior?: ReadonlyArray<PriorScore>;
  /** Called after every evaluation (progress line, journal). */
  readonly onEvaluation?: (
    e: Evaluation,
    p: Progress,
  ) => Effect.Effect<void, E2, R2>;
}

/** How close to optimal the choice is known to be. */
export interface Optimality {
  /** Points in the space. */
  readonly spaceSize: number;
  /** Distinct points of the space evaluated. */
  readonly evaluatedPoints: number;
  /** Every map no larger than the choice (or, with no choice, every map within `maxBytes`) was evaluated. */
  readonly proven: boolean;
  /**
   * No map smaller than this is unevaluated: the optimum is at least this
   * large (the choice's bytes when proven).
   */
  readonly lowerBoundBytes: number;
  /** Unevaluated maps smaller than the choice (counted up to `countLimit`). */
  readonly unevaluatedSmaller: number;
  /** Whether `unevaluatedSmaller` stopped at its count limit. */
  readonly countCapped: boolean;
}

/** What a search found. */
export interface SearchResult {
  /** The reference (run's own) map's evaluation. */
  readonly reference: Evaluation;
  /** The perplexity limit in force. */
  readonly maxPpl: number;
  /** The size limit, if any. */
  readonly maxBytes?: number;
  /** The smallest feasible map found; absent when none is. */
  readonly choice?: Evaluation;
  /**
   * The lowest-perplexity map evaluated in the space, within the size limit
   * when any is (what an infeasible limit can reach).
   */
  readonly lowestPpl: Evaluation;
  /** Every evaluation, in order. */
  readonly evaluations: ReadonlyArray<Evaluation>;
  /** The uniform maps (every unit at one mode). */
  readonly uniform: ReadonlyArray<{ mode: QuantMode; evaluation: Evaluation }>;
  /** Evaluations no other beats on both size and perplexity, by size. */
  readonly frontier: ReadonlyArray<Evaluation>;
  /** How close to optimal the choice is known to be. */
  readonly optimality: Optimality;
  /** Why the search stopped: `converged`, `certified` or `budget`. */
  readonly stopped: "converged" | "certified" | "budget";
  /** Seconds per phase. */
  readonly phaseSeconds: Readonly<Partial<Record<Phase, number>>>;
  /** Seconds of the whole search. */
  readonly seconds: number;
}

/** The default evaluation budget. */
export const DEFAULT_BUDGET = 200;

/** Largest Pareto set kept by the knapsack merge (thinned evenly beyond it). */
const MAX_FRONTIER = 4096;

// An exhausted budget unwinds the current phase.
class BudgetSpent {}

/**
 * Whether `a` is a better incumbent than `b`: feasible beats infeasible;
 * among feasible, smaller (then lower perplexity); among infeasible, within
 * the size limit first, then lower perplexity (the way towards feasibility).
 */
const better = (
  a: Evaluation,
  b: Evaluation | undefined,
  maxBytes: number,
): boolean => {
  if (b === undefined) return true;
  if (a.feasible !== b.feasible) return a.feasible;
  if (a.feasible) {
    return a.bytes < b.bytes || (a.bytes === b.bytes && a.ppl < b.ppl);
  }
  const aFits = a.bytes <= maxBytes, bFits = b.bytes <= maxBytes;
  if (aFits !== bFits) return aFits;
  return a.ppl < b.ppl || (a.ppl === b.ppl && a.bytes < b.bytes);
};

/**
 * Searches `options.space` for the smallest map within the constraint (see
 * the module doc for the phases). Fails with a {@link SearchError} for an
 * unusable constraint or budget, or with the evaluator's error. An
 * infeasible limit is not an error: `choice` is absent and `lowestPpl` says
 * what can be reached.
 */
export function search<E, R, E2 = never, R2 = never>(
  options: SearchOptions<E, R, E2, R2>,
): Effect.Effect<SearchResult, SearchError | E | E2, R | R2> {
  return Effect.gen(function* () {
    const { space, constraint } = options;
    const budget = options.budget ?? DEFAULT_BUDGET;
    yield* checkOptions(budget, constraint);
    const t0 = performance.now();
    const elapsed = () => (performance.now() - t0) / 1000;
    const prior = new Map<string, Score>();
    for (const p of options.prior ?? []) {
      prior.set(mapKey(space.config, p.map), p.score);
    }
    const seen = new Map<string, Evaluation>();
    const evaluations: Array<Evaluation> = [];
    const phaseSeconds: Partial<Record<Phase, number>> = {};
    let maxPpl = constraint.maxPpl ?? Infinity;
    const maxBytes = constraint.maxBytes ?? Infinity;
    let best: Evaluation | undefined; // best in-space point by `better`
    let evalSeconds = 0, fresh = 0;

    const evaluate = (
      map: LayerBitMap,
      assignment: Assignment | undefined,
      phase: Phase,
    ) =>
      Effect.gen(function* () {
        const key = mapKey(space.config, map);
        const known = seen.get(key);
        if (known !== undefined) return known;
        if (evaluations.length >= budget) {
          return yield* Effect.fail(new BudgetSpent());
        }
        const t = performance.now();
        const cachedScore = prior.get(key);
        const score = cachedScore ?? (yield* options.evaluator(map));
        const seconds = cachedScore ? 0 : (performance.now() - t) / 1000;
        if (!cachedScore) {
          evalSeconds += seconds;
          fresh++;
        }
        phaseSeconds[phase] = (phaseSeconds[phase] ?? 0) + seconds;
        if (phase === "reference" && constraint.maxPplRatio !== undefined) {
          maxPpl = Math.min(maxPpl, constraint.maxPplRatio * score.ppl);
        }
        const bytes = assignment
          ? assignmentBytes(space, assignment)
          : compressionStats(space.config, map).totalBytes;
        const e: Evaluation = {
          index: evaluations.length + 1,
          map,
          ...(assignment ? { assignment } : {}),
          bytes,
          loss: score.loss,
          ppl: score.ppl,
          tokens: score.tokens,
          phase,
          seconds,
          cached: cachedScore !== undefined,
          feasible: score.ppl <= maxPpl && bytes <= maxBytes,
        };
        seen.set(key, e);
        evaluations.push(e);
        if (assignment && better(e, best, maxBytes)) best = e;
        if (options.onEvaluation) {
          const pace = fresh > 0 ? evalSeconds / fresh : 0;
          yield* options.onEvaluation(e, {
            done: evaluations.length,
            budget,
            ...(best?.feasible ? { best } : {}),
            elapsedSeconds: elapsed(),
            etaSeconds: (budget - evaluations.length) * pace,
          });
        }
        return e;
      });
    const evalPoint = (a: Assignment, phase: Phase) =>
      evaluate(toBitMap(space, a), a, phase);

    // Runs a phase; an exhausted budget ends it (and every later one).
    let spent = false;
    const phase = <A>(body: Effect.Effect<A, BudgetSpent | E | E2, R | R2>) =>
      spent ? Effect.succeed(undefined) : body.pipe(
        Effect.catchIf(
          (e): e is BudgetSpent => e instanceof BudgetSpent,
          () =>
            Effect.sync(() => {
              spent = true;
              return undefined;
            }),
        ),
      );

    // 1. Reference and uniform maps.
    const refAssignment = fromBitMap(space, space.reference);
    const reference = yield* phase(
      evaluate(space.reference, refAssignment, "reference"),
    );
    if (reference === undefined) {
      return yield* new SearchError({
        message: "--budget: no evaluation allowed",
      });
    }
    const referenceEval = evaluations[0];
    const uniform: Array<{ mode: QuantMode; evaluation: Evaluation }> = [];
    const modes = [...new Set(space.units.flatMap((u) => u.modes))];
    yield* phase(Effect.gen(function* () {
      for (const mode of modes) {
        const a = uniformAssignment(space, mode);
        uniform.push({ mode, evaluation: yield* evalPoint(a, "uniform") });
      }
    }));

    if (options.exhaustive) {
      yield* phase(Effect.gen(function* () {
        for (const a of allAssignments(space)) {
          yield* evalPoint(a, "exhaustive");
        }
      }));
    }

    // 2. Sensitivity of each unit around the reference point.
    const base = refAssignment ?? nearestAssignment(space, space.reference);
    const delta: Array<Array<number>> = space.units.map((u) =>
      u.modes.map(() => 0)
    );
    const baseEval = yield* phase(evalPoint(base, "sensitivity"));
    yield* phase(Effect.gen(function* () {
      for (let u = 0; u < space.units.length; u++) {
        for (let k = 0; k < space.units[u].modes.length; k++) {
          if (k === base[u]) continue;
          const a = [...base];
          a[u] = k;
          const e = yield* evalPoint(a, "sensitivity");
          delta[u][k] = e.loss - baseEval!.loss;
        }
      }
    }));
    const limitLoss = Math.log(maxPpl);
    // The additive model, centred on an evaluated point.
    const predict = (a: Assignment, at: Evaluation) => {
      let loss = at.loss;
      for (let u = 0; u < a.length; u++) {
        loss += delta[u][a[u]] - delta[u][at.assignment![u]];
      }
      return loss;
    };

    // 3. The knapsack frontier of the additive model, walked around the limit.
    yield* phase(Effect.gen(function* () {
      if (baseEval === undefined) return;
      const front = modelFrontier(space, delta, baseEval.loss)
        .filter((p) => p.bytes <= maxBytes);
      if (front.length === 0) return;
      const ok = (e: Evaluation) => e.feasible;
      let i0 = front.findIndex((p) => p.loss <= limitLoss);
      if (i0 < 0) i0 = front.length - 1;
      const first = yield* evalPoint(front[i0].a, "frontier");
      if (ok(first)) {
        for (let i = i0 - 1; i >= 0; i--) {
          if (!ok(yield* evalPoint(front[i].a, "frontier"))) break;
        }
      } else {
        // Gallop up to a feasible point, then bisect back down.
        let lo = i0, hi = -1;
        for (let step = 1; lo + step < front.length; step *= 2) {
          if (ok(yield* evalPoint(front[lo + step].a, "frontier"))) {
            hi = lo + step;
            break;
          }
          lo += step;
        }
        if (hi < 0 && lo < front.length - 1) {
          if (ok(yield* evalPoint(front[front.length - 1].a, "frontier"))) {
            hi = front.length - 1;
          }
        }
        while (hi >= 0 && hi - lo > 1) {
          const mid = (lo + hi) >> 1;
          if (ok(yield* evalPoint(front[mid].a, "frontier"))) hi = mid;
          else lo = mid;
        }
      }
    }));

    // 4. Local refinement: verified single and pair moves.
    let stopped: SearchResult["stopped"] = "converged";
    yield* phase(Effect.gen(function* () {
      while (best !== undefined && best.assignment !== undefined) {
        const x = best;
        const moves = rankedMoves(space, x, predict, limitLoss, maxBytes);
        let improved = false;
        for (const y of moves) {
          const e = yield* evalPoint(y, "refine");
          if (better(e, x, maxBytes)) {
            improved = true;
            break;
          }
        }
        if (!improved) break;
      }
    }));

    // 5. Certification: every smaller unevaluated map, when the budget allows.
    const limitBytes = () =>
      best?.feasible
        ? best.bytes
        : Number.isFinite(maxBytes)
        ? maxBytes
        : Infinity;
    const countLimit = Math.max(0, budget - evaluations.length);
    const scanSmaller = (cap: number) => {
      const out: Array<{ assignment: Assignment; bytes: number }> = [];
      let capped = false;
      for (const p of assignmentsBySize(space)) {
        if (p.bytes > limitBytes()) break;
        if (seen.has(mapKey(space.config, toBitMap(space, p.assignment)))) {
          continue;
        }
        if (out.length >= cap) {
          capped = true;
          break;
        }
        out.push(p);
      }
      return { points: out, capped };
    };
    let proven = false;
    if (!spent && (options.certify ?? true)) {
      const todo = scanSmaller(countLimit);
      if (!todo.capped) {
        const t = performance.now();
        yield* phase(Effect.gen(function* () {
          let found: number | undefined;
          for (const p of todo.points) {
            if (found !== undefined && p.bytes > found) break;
            const e = yield* evalPoint(p.assignment, "certify");
            if (e.feasible && found === undefined) found = e.bytes;
          }
        }));
        phaseSeconds.certify = (performance.now() - t) / 1000;
        proven = !spent;
        if (proven) stopped = "certified";
      }
    }
    if (spent) stopped = "budget";

    const rest = scanSmaller(1000);
    // Every map no larger than the choice (or within the size limit) was
    // evaluated, whether by certification or along the way.
    if (rest.points.length === 0 && !rest.capped) proven = true;
    const strictlySmaller = rest.points.filter((p) =>
      !best?.feasible || p.bytes < best.bytes
    );
    const choice = best?.feasible ? best : undefined;
    const inSpace = evaluations.filter((e) => e.assignment !== undefined);
    const fitting = inSpace.filter((e) => e.bytes <= maxBytes);
    const pool = fitting.length > 0 ? fitting : inSpace;
    const lowestPpl = pool.reduce(
      (a, e) => (e.ppl < a.ppl ? e : a),
      pool[0] ?? referenceEval,
    );
    const lowerBound = proven ? (choice?.bytes ?? Infinity) : Math.min(
      choice?.bytes ?? Infinity,
      rest.points[0]?.bytes ?? Infinity,
    );
    return {
      reference: referenceEval,
      maxPpl,
      ...(Number.isFinite(maxBytes) ? { maxBytes } : {}),
      ...(choice ? { choice } : {}),
      lowestPpl,
      evaluations,
      uniform,
      frontier: paretoFrontier(evaluations.map(asCandidate)).map((c) => c.map),
      optimality: {
        spaceSize: space.size,
        evaluatedPoints: inSpace.length,
        proven,
        lowerBoundBytes: lowerBound,
        unevaluatedSmaller: strictlySmaller.length,
        countCapped: rest.capped,
      },
      stopped,
      phaseSeconds,
      seconds: elapsed(),
    };
  });
}

const asCandidate = (e: Evaluation): Candidate<Evaluation> => ({
  bytes: e.bytes,
  ppl: e.ppl,
  map: e,
});

function checkOptions(
  budget: number,
  c: Constraint,
): Effect.Effect<void, SearchError> {
  const fail = (message: string) => Effect.fail(new SearchError({ message }));
  if (!Number.isInteger(budget) || budget < 1) {
    return fail(`--budget: expected an integer ≥ 1, got ${budget}`);
  }
  if (c.maxPpl === undefined && c.maxPplRatio === undefined) {
    return fail("give a perplexity limit: --max-ppl or --max-ppl-ratio");
  }
  if (c.maxPpl !== undefined && !(c.maxPpl > 0 && Number.isFinite(c.maxPpl))) {
    return fail(`--max-ppl: expected a positive number, got ${c.maxPpl}`);
  }
  if (
    c.maxPplRatio !== undefined &&
    !(c.maxPplRatio > 0 && Number.isFinite(c.maxPplRatio))
  ) {
    return fail(
      `--max-ppl-ratio: expected a positive number, got ${c.maxPplRatio}`,
    );
  }
  if (c.maxBytes !== undefined && !(c.maxBytes > 0)) {
    return fail(
      `--max-size-mb: expected a positive size, got ${c.maxBytes} bytes`,
    );
  }
  return Effect.void;
}

/** A point of the additive model's frontier. */
interface ModelPoint {
  readonly bytes: number;
  readonly loss: number;
  readonly a: Assignment;
}

/**
 * The size/loss Pareto frontier of the additive model `loss = base + Σ
 * delta[u][a_u]` over the whole space, smallest first: merged unit by unit,
 * dropping dominated partial sums (kept to {@link MAX_FRONTIER} points).
 */
function modelFrontier(
  space: SearchSpace,
  delta: ReadonlyArray<ReadonlyArray<number>>,
  baseLoss: number,
): Array<ModelPoint> {
  let front: Array<ModelPoint> = [{
    bytes: space.fixedBytes,
    loss: baseLoss,
    a: [],
  }];
  space.units.forEach((unit, u) => {
    const next: Array<ModelPoint> = [];
    for (const p of front) {
      unit.modes.forEach((_, k) => {
        next.push({
          bytes: p.bytes + unit.bytes[k],
          loss: p.loss + delta[u][k],
          a: [...p.a, k],
        });
      });
    }
    next.sort((x, y) => x.bytes - y.bytes || x.loss - y.loss);
    let kept: Array<ModelPoint> = [];
    for (const p of next) {
      if (kept.length === 0 || p.loss < kept[kept.length - 1].loss) {
        kept.push(p);
      }
    }
    if (kept.length > MAX_FRONTIER) {
      const stride = kept.length / MAX_FRONTIER;
      kept = Array.from(
        { length: MAX_FRONTIER },
        (_, i) => kept[Math.min(kept.length - 1, Math.round(i * stride))],
      );
    }
    front = kept;
  });
  return front;
}

/**
 * Moves from the incumbent `x`, most promising first. Feasible `x`: every
 * single-unit change that makes the model smaller (within `maxBytes`),
 * then pairs (one unit down, one up, smaller in total) that the model
 * predicts within the limit — ordered by predicted feasibility, then size.
 * Infeasible `x`: single and pair changes the model predicts lower in loss,
 * lowest first.
 */
function rankedMoves(
  space: SearchSpace,
  x: Evaluation,
  predict: (a: Assignment, at: Evaluation) => number,
  limitLoss: number,
  maxBytes: number,
): Array<Assignment> {
  const xa = x.assignment!;
  const n = space.units.length;
  const singles: Array<{ a: Assignment; bytes: number; loss: number }> = [];
  const pairs: Array<{ a: Assignment; bytes: number; loss: number }> = [];
  const consider = (
    a: Array<number>,
    into: Array<{ a: Assignment; bytes: number; loss: number }>,
  ) => {
    const bytes = assignmentBytes(space, a);
    if (bytes > maxBytes) return;
    into.push({ a, bytes, loss: predict(a, x) });
  };
  for (let u = 0; u < n; u++) {
    for (let k = 0; k < space.units[u].modes.length; k++) {
      if (k === xa[u]) continue;
      const a = [...xa];
      a[u] = k;
      consider(a, singles);
      for (let v = u + 1; v < n; v++) {
        for (let j = 0; j < space.units[v].modes.length; j++) {
          if (j === xa[v]) continue;
          const b = [...a];
          b[v] = j;
          consider(b, pairs);
        }
      }
    }
  }
  if (x.feasible) {
    const smaller = (m: { bytes: number }) => m.bytes < x.bytes;
    const order = (
      p: { bytes: number; loss: number },
      q: { bytes: number; loss: number },
    ) =>
      Number(p.loss > limitLoss) - Number(q.loss > limitLoss) ||
      p.bytes - q.bytes || p.loss - q.loss;
    const s = singles.filter(smaller).sort(order);
    const pr = pairs.filter((m) => smaller(m) && m.loss <= limitLoss).sort(
      order,
    )
      .slice(0, 2 * n);
    return [...s, ...pr].map((m) => m.a);
  }
  return [...singles, ...pairs]
    .filter((m) => x.bytes > maxBytes || m.loss < x.loss)
    .sort((p, q) => p.loss - q.loss || p.bytes - q.bytes)
    .slice(0, 3 * n)
    .map((m) => m.a);
}
