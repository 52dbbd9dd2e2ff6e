/**
 * Train the `ref-4m` ternary model on WikiText-2 (raw), when you have it:
 *
 *   deno run -A examples/train_wikitext.ts path/to/wikitext-2-raw/wiki.train.raw [minutes]
 *
 * `wiki.valid.raw` beside the training file is used for validation; `= Heading =`
 * lines start new articles. The run goes to `runs/wikitext` (resume it with the
 * CLI: `deno task train --resume --out runs/wikitext`).
 *
 * @module
 */
import { Effect } from "effect";
import { ComputeBackend } from "@ternary/core/backend";
import { preset } from "@ternary/core/common";
import {
  defaultSettings,
  ProgressPrinter,
  runTraining,
} from "@ternary/core/train";

const [data, minutes = "10"] = Deno.args;
if (data === undefined) {
  console.error(
    "usage: examples/train_wikitext.ts path/to/wiki.train.raw [minutes]",
  );
  Deno.exit(2);
}

const config = preset("ref-4m");
const seconds = Number(minutes) * 60;

// The steps are planned to fill the budget: from a probe of the step time,
// then again from the measured steps early in the run.
const result = await Effect.runPromise(
  Effect.scoped(runTraining({
    config,
    budget: { seconds, settingsFor: (steps) => defaultSettings(config, steps) },
    out: "runs/wikitext",
    resume: false,
    data,
    cacheDir: ".cache/datasets",
    saveEvery: 0,
    progress: new ProgressPrinter({ timeBudgetSeconds: seconds }),
  })).pipe(Effect.provide(ComputeBackend.cpu)),
);
console.log(JSON.stringify({
  steps: result.steps,
  trainSeconds: result.trainSeconds,
  tokens: result.tokens,
  validPpl: result.valid.ppl,
  unigramPpl: result.unigramPpl,
}));
