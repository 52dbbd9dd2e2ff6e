/**
 * Training throughput of `ref-4m` (batch 16 × seq 128) here and in the
 * PyTorch reference (`../shared/peers/bitnet_ref.py --bench`), measured in one
 * run, like for like: both on one thread (ours `threads: 1`, the peer with
 * `OPENBLAS_NUM_THREADS=1`), then both on every core (ours with the worker
 * pool, the peer in its fastest setting, OpenBLAS free), the two alternating
 * over rounds (see {@link run}). Ours times forward and backward;
 * the peer's step also runs AdamW and gradient clipping (~1–2% of our step).
 * Skips the peer, saying so, when `/usr/bin/python3` has no torch (`apt-get
 * install python3-torch libopenblas0-pthread`). `PEER` overrides the
 * script's path.
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
import { type BenchResult, median, positiveCount } from "./result.ts";

const PEER = Deno.env.get("PEER") ??
  new URL("../../shared/peers/bitnet_ref.py", import.meta.url).pathname;

/** Rounds of the alternating measurement (`PYTORCH_BENCH_ROUNDS` overrides). */
const ROUNDS = positiveCount(
  "PYTORCH_BENCH_ROUNDS",
  Deno.env.get("PYTORCH_BENCH_ROUNDS"),
  3,
);

/**
 * The peer's tokens/s on one thread (torch's intra-op threads 1, OpenBLAS 1)
 * or on every core. For every core it keeps torch's intra-op threads at 1 and
 * lets OpenBLAS use the cores: its fastest setting on our 2-vCPU machines
 * (measured 2026-12-03, tokens/s: OpenBLAS free 1,425–1,518; `--threads 2`
 * with OpenBLAS 1 1,354–1,377; both at 2 992–1,005, oversubscribed; one
 * thread 1,122–1,174).
 */
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
 * cores each. The machine's speed drifts by tens of percent over a minute, so
 * the two alternate over `ROUNDS` rounds (ours first in even rounds, the peer
 * first in odd ones); each figure is the median over the rounds and the ratio
 * the median of the rounds' ratios.
 */
export async function run(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const cores = navigator.hardwareConcurrency;
  const settings = [
    { label: "1thread", ours: 1 as number | undefined, peer: "1" as const },
    { label: `all_${cores}cores`, ours: undefined, peer: "all" as const },
  ];
  for (const set of settings) {
    const ours: number[] = [], peer: number[] = [], ratios: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      let o: number, p: number | undefined;
      if (r % 2 === 0) {
        o = await oursTokensPerSecond(set.ours);
        p = await peerTokensPerSecond(set.peer);
      } else {
        p = await peerTokensPerSecond(set.peer);
        o = await oursTokensPerSecond(set.ours);
      }
      ours.push(o);
      if (p !== undefined) {
        peer.push(p);
        ratios.push(o / p);
      }
      console.error(
        `pytorch bench ${set.label} round ${r + 1}/${ROUNDS}: ours ${
          o.toFixed(0)
        } tokens/s, pytorch ${p?.toFixed(0) ?? "skipped"}`,
      );
    }
    results.push({
      name: `train_ref4m_tokens_per_s_ours_${set.label}`,
      value: median(ours),
      unit: "tokens/s",
    });
    if (peer.length === 0) continue;
    results.push(
      {
        name: `train_ref4m_tokens_per_s_pytorch_${set.label}`,
        value: median(peer),
        unit: "tokens/s",
      },
      {
        name: `train_ref4m_ours_vs_pytorch_${set.label}`,
        value: median(ratios),
        unit: "ratio",
      },
    );
  }
  return results;
}

if (import.meta.main) printResults(await run());
