/**
 * A custom bit-width search: the smallest bit map of a trained run whose
 * perplexity on YOUR text (not the run's validation split) stays within 5%
 * of the run's own map, searched per linear with block 0 kept as trained.
 *
 * Run: deno run -A examples/search_pipeline.ts <run dir> <text file> [ratio]
 * (train a run first, e.g. `deno task train --preset tiny --steps 200 --out runs/tiny`).
 *
 * The evaluator is any function from a `LayerBitMap` to an Effect of
 * `{ loss, ppl, tokens }`; here the inference runtime on the text's windows.
 * Swap in `latentEvaluator` (the training forward, which needs a
 * `ComputeBackend`) or your own metric; `search` only needs it to be
 * deterministic.
 *
 * @module
 */
import { Effect } from "effect";
import { readText } from "@ternary/core/common";
import { loadTrainedRun } from "@ternary/core/train";
import {
  buildSpace,
  frontierSvg,
  parsePins,
  search,
  selectEvalWindows,
  weightsEvaluator,
} from "@ternary/core/search";

const [dir, textFile, ratio = "1.05"] = Deno.args;
if (dir === undefined || textFile === undefined) {
  console.error(
    "usage: deno run -A examples/search_pipeline.ts <run dir> <text file> [ratio]",
  );
  Deno.exit(2);
}

const program = Effect.scoped(Effect.gen(function* () {
  // 1. The trained run (latent weights, tokenizer, settings) and the text.
  const run = yield* loadTrainedRun(dir);
  const tokens = run.tokenizer.encode(yield* readText(textFile));

  // 2. A fixed, seeded sample of the text's windows, and the evaluator on it:
  //    every tensor quantized once per mode, linears swapped per candidate.
  const windows = selectEvalWindows(tokens.length, {
    seqLen: run.settings.seqLen,
    evalTokens: 4096,
    seed: 1,
  });
  const evaluator = yield* weightsEvaluator(run, tokens, windows, 8);

  // 3. The space: every linear of blocks 1.. on its own; block 0, the
  //    embedding and the head as trained.
  const space = buildSpace(run.config, run.bitMap, {
    granularity: "linear",
    pins: parsePins("0"),
  });

  // 4. The search, with a progress line of our own.
  const result = yield* search({
    space,
    evaluator,
    constraint: { maxPplRatio: Number(ratio) },
    budget: 120,
    onEvaluation: (e, p) =>
      Effect.sync(() =>
        console.error(
          `${p.done}/${p.budget} ${e.phase}: ${e.bytes} bytes, ppl ${
            e.ppl.toFixed(3)
          }`,
        )
      ),
  });
  yield* Effect.promise(() =>
    Deno.writeTextFile("frontier.svg", frontierSvg(result))
  );
  if (result.choice === undefined) {
    console.log(
      `no map within ppl ${result.maxPpl.toFixed(2)}; lowest reached ${
        result.lowestPpl.ppl.toFixed(2)
      }`,
    );
    return;
  }
  const o = result.optimality;
  console.log(JSON.stringify(result.choice.map));
  console.log(
    `${result.choice.bytes} bytes (run's map ${result.reference.bytes}), ppl ${
      result.choice.ppl.toFixed(3)
    } ≤ ${result.maxPpl.toFixed(3)}; ${
      o.proven
        ? "proven optimal"
        : `optimum ≥ ${o.lowerBoundBytes} bytes (${o.evaluatedPoints} of ${o.spaceSize} maps evaluated)`
    }`,
  );
}));

await Effect.runPromise(program);
