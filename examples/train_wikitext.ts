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
import { CpuBackend } from "@ternary/core/backend";
import { preset } from "@ternary/core/common";
import {
  defaultSettings,
  measureStepSeconds,
  runTraining,
  stepsForBudget,
} from "@ternary/core/train";

const [data, minutes = "10"] = Deno.args;
if (data === undefined) {
  console.error(
    "usage: examples/train_wikitext.ts path/to/wiki.train.raw [minutes]",
  );
  Deno.exit(2);
}

const config = preset("ref-4m");
const backend = await CpuBackend.create();
const budget = Number(minutes) * 60;
const perStep = await measureStepSeconds(
  config,
  backend,
  defaultSettings(config, 1),
);
const steps = stepsForBudget(budget, perStep);

const result = await Effect.runPromise(Effect.scoped(runTraining(backend, {
  config,
  settings: defaultSettings(config, steps),
  out: "runs/wikitext",
  resume: false,
  data,
  cacheDir: ".cache/datasets",
  timeBudgetSeconds: budget,
  saveEvery: 0,
  log: (line) => console.error(line),
})));
console.log(JSON.stringify({
  steps: result.steps,
  tokens: result.tokens,
  validPpl: result.valid?.ppl,
  unigramPpl: result.unigramPpl,
}));
