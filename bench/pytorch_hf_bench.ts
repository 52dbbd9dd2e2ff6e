/**
 * The `hf` export against the PyTorch reference, in one run:
 * 1. exports a trained run (`--model`) as a transformers BitNet directory;
 * 2. `bitnet_ref.py --load DIR VAL --skip 0 --seq T` scores it on the first
 *    `--tokens` validation tokens of the run (non-overlapping windows), and
 *    `--save` writes the reference's own copy of the model;
 * 3. our runtime scores the export read back by `readHfDirectory` (and
 *    quantized as the run is) on the same windows, and the reference's saved
 *    copy imported the same way;
 * and checks the perplexities agree to 1e-3 relative (exit status 1 if not).
 *
 * Usage: `deno run -A bench/pytorch_hf_bench.ts --model RUN_DIR [--tokens N] [--json]`.
 * Needs `/usr/bin/python3` with torch (`apt-get install python3-torch
 * python3-numpy libopenblas0-pthread`); `PEER` overrides the script's path.
 *
 * @module
 */
import { Effect } from "effect";
import { parseArgs } from "node:util";
import { readHfDirectory, writeHfDirectory } from "../src/infer/formats/hf.ts";
import { weightsFromTrainedRun } from "../src/infer/from_latents.ts";
import { evaluateWeights } from "../src/infer/evaluate.ts";
import {
  loadTrainedRun,
  runValidationTokens,
} from "../src/train/trained_model.ts";
import type { BenchResult } from "./result.ts";

const { values: opts } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string" },
    tokens: { type: "string", default: "32769" },
    json: { type: "boolean", default: false },
  },
});

const PEER = Deno.env.get("PEER") ??
  new URL("../../shared/peers/bitnet_ref.py", import.meta.url).pathname;
const TOLERANCE = 1e-3;

/** Runs the comparison; returns its figures. */
export async function run(): Promise<ReadonlyArray<BenchResult>> {
  if (opts.model === undefined) throw new Error("--model RUN_DIR is needed");
  const trained = await Effect.runPromise(loadTrainedRun(opts.model));
  const seq = trained.config.max_seq_len;
  const tokens = await Effect.runPromise(Effect.scoped(
    Effect.map(
      runValidationTokens(trained),
      (ids) =>
        Uint16Array.from(
          { length: Math.min(ids.length, Number(opts.tokens)) },
          (_, i) => ids[i],
        ),
    ),
  ));
  const tmp = await Deno.makeTempDir();
  try {
    const exportDir = `${tmp}/export`, savedDir = `${tmp}/saved`;
    await Effect.runPromise(writeHfDirectory(exportDir, trained));
    const valFile = `${tmp}/val.u16`;
    await Deno.writeFile(valFile, new Uint8Array(tokens.buffer));
    const t0 = performance.now();
    const out = await new Deno.Command("/usr/bin/python3", {
      args: [
        PEER,
        "--load",
        exportDir,
        valFile,
        "--skip",
        "0",
        "--seq",
        String(seq),
        "--save",
        savedDir,
      ],
      env: { OPENBLAS_NUM_THREADS: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    if (!out.success) {
      throw new Error(
        `${PEER} failed: ${new TextDecoder().decode(out.stderr)}${text}`,
      );
    }
    const peerSeconds = (performance.now() - t0) / 1000;
    const m = /RESULT .*tokens=(\d+) loss=([0-9.]+) ppl=([0-9.]+)/.exec(text);
    if (m === null) throw new Error(`no RESULT line from ${PEER}: ${text}`);
    const theirs = Number(m[3]);
    const ids = Int32Array.from(tokens);
    const score = async (dir: string) => {
      const hf = await Effect.runPromise(readHfDirectory(dir));
      return (await evaluateWeights(
        weightsFromTrainedRun({
          ...hf,
          tokenizer: trained.tokenizer,
          lambda: 1,
        }),
        ids,
        { seqLen: seq, batch: 16 },
      )).ppl;
    };
    const t1 = performance.now();
    const ours = await score(exportDir);
    const ourSeconds = (performance.now() - t1) / 1000;
    const imported = await score(savedDir);
    const rel = Math.abs(ours - theirs) / theirs;
    const relImported = Math.abs(imported - theirs) / theirs;
    if (!opts.json) {
      console.log(
        `${opts.model}: ${
          m[1]
        } tokens in windows of ${seq}; PyTorch ppl ${theirs} (${
          peerSeconds.toFixed(1)
        } s incl. start), ours ${ours.toFixed(4)} (${
          ourSeconds.toFixed(1)
        } s), relative difference ${rel.toExponential(2)}; ` +
          `the reference's --save imported: ${imported.toFixed(4)} (${
            relImported.toExponential(2)
          })`,
      );
    }
    if (rel > TOLERANCE || relImported > TOLERANCE) {
      console.error(`FAIL: disagreement over ${TOLERANCE}`);
      Deno.exitCode = 1;
    }
    return [
      { name: "pytorch_hf_ppl", value: theirs, unit: "ppl" },
      { name: "ours_hf_ppl", value: ours, unit: "ppl" },
      { name: "ours_hf_ppl_rel_diff", value: rel, unit: "ratio" },
      { name: "imported_hf_ppl_rel_diff", value: relImported, unit: "ratio" },
    ];
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main) {
  const results = await run();
  if (opts.json) console.log(JSON.stringify(results));
}
