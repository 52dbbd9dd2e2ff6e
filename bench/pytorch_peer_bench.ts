/**
 * Training throughput of `ref-4m` (batch 16 × seq 128) here and in the
 * PyTorch reference (`../shared/peers/bitnet_ref.py --bench`), measured in one
 * run, like for like: both on one thread (ours `threads: 1`, the peer with
 * `OPENBLAS_NUM_THREADS=1`), then both on every core (ours with the matmul
 * thread pool, the peer with OpenBLAS free). Skips the peer, saying
 * so, when `/usr/bin/python3` has no torch (`apt-get install python3-torch
 * libopenblas0-pthread`). `PEER` overrides the script's path.
 *
 * Run: `deno run -A bench/pytorch_peer_bench.ts`.
 *
 * @module
 */
import { Effect } from "effect";
import { ComputeBackend } from "../src/backend/service.ts";
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

/** Our training tokens/s on ref-4m (forward + backward) with `threads` matmul threads (undefined: all cores). */
async function oursTokensPerSecond(threads?: number): Promise<number> {
  const config = preset("ref-4m");
  const settings = defaultSettings(config, 1);
  const seconds = await Effect.runPromise(
    measureStepSeconds(config, settings, 5).pipe(
      Effect.provide(
        threads === undefined
          ? ComputeBackend.cpu
          : ComputeBackend.cpuWith({ threads }),
      ),
    ),
  );
  return settings.batch * settings.seqLen / seconds;
}

/**
 * Ours and the peer's training tokens/s on ref-4m, one thread each and all
 * cores each, measured in that order (ours, peer, ours, peer), and the
 * like-for-like ratios.
 */
export async function run(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const pair = (
    label: string,
    ours: number,
    peer: number | undefined,
  ) => {
    results.push({
      name: `train_ref4m_tokens_per_s_ours_${label}`,
      value: ours,
      unit: "tokens/s",
    });
    if (peer === undefined) return;
    results.push(
      {
        name: `train_ref4m_tokens_per_s_pytorch_${label}`,
        value: peer,
        unit: "tokens/s",
      },
      {
        name: `train_ref4m_ours_vs_pytorch_${label}`,
        value: ours / peer,
        unit: "ratio",
      },
    );
  };
  pair("1thread", await oursTokensPerSecond(1), await peerTokensPerSecond("1"));
  pair(
    `all_${navigator.hardwareConcurrency}cores`,
    await oursTokensPerSecond(),
    await peerTokensPerSecond("all"),
  );
  return results;
}

if (import.meta.main) printResults(await run());
