/**
 * Training throughput of `ref-4m` (batch 16 × seq 128) here and in the
 * PyTorch reference (`../shared/peers/bitnet_ref.py --bench`), measured in one
 * run, like for like: both single-threaded (`OPENBLAS_NUM_THREADS=1`), and
 * PyTorch again with OpenBLAS free to use every core. Skips the peer, saying
 * so, when `/usr/bin/python3` has no torch (`apt-get install python3-torch
 * libopenblas0-pthread`). `PEER` overrides the script's path.
 *
 * Run: `deno run -A bench/pytorch_peer_bench.ts`.
 *
 * @module
 */
import { CpuBackend } from "../src/backend/cpu/cpu_backend.ts";
import { preset } from "../src/common/presets.ts";
import { defaultSettings, measureStepSeconds } from "../src/train/trainer.ts";
import { printResults } from "./peak_bench.ts";
import type { BenchResult } from "./result.ts";

const PEER = Deno.env.get("PEER") ??
  new URL("../../shared/peers/bitnet_ref.py", import.meta.url).pathname;

async function peerTokensPerSecond(
  threads: "1" | "all",
): Promise<number | undefined> {
  const env: Record<string, string> = {};
  if (threads === "1") env.OPENBLAS_NUM_THREADS = "1";
  const out = await new Deno.Command("/usr/bin/python3", {
    args: [PEER, "--bench", "--steps", "6"],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output().catch(() => undefined);
  if (out === undefined || out.code !== 0) {
    console.error(
      `pytorch peer skipped: ${PEER} did not run (${
        out
          ? new TextDecoder().decode(out.stderr).trim().split("\n").pop()
          : "no /usr/bin/python3"
      })`,
    );
    return undefined;
  }
  const m = /tok_per_s=(\d+)/.exec(new TextDecoder().decode(out.stdout));
  return m ? Number(m[1]) : undefined;
}

/** Ours and the peer's training tokens/s on ref-4m, and the ratios. */
export async function run(): Promise<BenchResult[]> {
  const config = preset("ref-4m");
  const settings = defaultSettings(config, 1);
  const backend = await CpuBackend.create();
  const seconds = await measureStepSeconds(config, backend, settings, 5);
  const ours = settings.batch * settings.seqLen / seconds;
  const results: BenchResult[] = [
    {
      name: "train_ref4m_tokens_per_s_ours_1thread",
      value: ours,
      unit: "tokens/s",
    },
  ];
  const single = await peerTokensPerSecond("1");
  const all = await peerTokensPerSecond("all");
  if (single !== undefined) {
    results.push(
      {
        name: "train_ref4m_tokens_per_s_pytorch_1thread",
        value: single,
        unit: "tokens/s",
      },
      {
        name: "train_ref4m_ours_vs_pytorch_1thread",
        value: ours / single,
        unit: "ratio",
      },
    );
  }
  if (all !== undefined) {
    results.push(
      {
        name: "train_ref4m_tokens_per_s_pytorch_openblas_all",
        value: all,
        unit: "tokens/s",
      },
      {
        name: "train_ref4m_ours_vs_pytorch_openblas_all",
        value: ours / all,
        unit: "ratio",
      },
    );
  }
  return results;
}

if (import.meta.main) printResults(await run());
