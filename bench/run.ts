/**
 * `deno task bench`: runs every benchmark of `bench/` and prints one table, or with
 * `--json` one JSON object `{ machine: { model, flags }, name: { value, unit }… }`
 * for other tools to read. The CPU model and flags are printed beside the
 * figures, since they depend on the machine the run got.
 *
 * @module
 */
import { cpuDescription } from "../src/backend/cpu/matmul_tuning.ts";
import type { BenchResult } from "./result.ts";

/** A benchmark module: a named function returning its measured results. */
interface BenchModule {
  readonly name: string;
  readonly run: () => Promise<ReadonlyArray<BenchResult>>;
}

const modules: ReadonlyArray<BenchModule> = [
  { name: "peak", run: async () => (await import("./peak_bench.ts")).run() },
  {
    name: "matmul",
    run: async () => (await import("./matmul_bench.ts")).run(),
  },
  {
    name: "ternary",
    run: async () => (await import("./ternary_bench.ts")).run(),
  },
  {
    name: "bitlinear",
    run: async () => (await import("./bitlinear_bench.ts")).run(),
  },
  {
    name: "pytorch",
    run: async () => (await import("./pytorch_peer_bench.ts")).run(),
  },
];

const args = new Set(Deno.args);
const json = args.has("--json");
const only = Deno.args.filter((a) => !a.startsWith("--"));

const results: BenchResult[] = [];
for (const m of modules) {
  if (only.length > 0 && !only.includes(m.name)) continue;
  if (!json) console.error(`running ${m.name} …`);
  results.push(...await m.run());
}

const machine = cpuDescription();
if (json) {
  const out: Record<string, { value: number; unit: string }> = {};
  for (const r of results) out[r.name] = { value: r.value, unit: r.unit };
  console.log(JSON.stringify({ machine, ...out }, null, 2));
} else {
  console.log(
    `cpu: ${machine.model}, ${navigator.hardwareConcurrency} threads`,
  );
  console.log(`flags: ${machine.flags}`);
  const w = Math.max(...results.map((r) => r.name.length), 4);
  console.log(`${"name".padEnd(w)}  ${"value".padStart(10)}  unit`);
  for (const r of results) {
    console.log(
      `${r.name.padEnd(w)}  ${r.value.toFixed(2).padStart(10)}  ${r.unit}`,
    );
  }
}
