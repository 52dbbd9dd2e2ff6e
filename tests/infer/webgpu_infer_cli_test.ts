// `deno task infer --backend webgpu` on a tiny trained run: the same greedy
// tokens as `--backend cpu`, and `--backend auto` runs (on the CPU when the
// only adapter is a software one).
import { strict as assert } from "node:assert";
import { test } from "../backend/gpu_gate.ts";

const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;

async function run(
  args: string[],
  cwd?: string,
): Promise<{ code: number; out: string; err: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-q", "-A", MAIN, ...args],
    cwd,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    out: dec.decode(out.stdout),
    err: dec.decode(out.stderr),
  };
}

test.gpu("cli infer --backend webgpu: the CPU's greedy tokens", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const words = ["the cat", "a dog", "sat on", "looked at", "the mat"];
    let s = 11;
    const text = Array.from({ length: 200 }, () => {
      s = (s * 1103515245 + 12345) >>> 0;
      return `${words[s % 5]} ${words[(s >>> 8) % 5]}.`;
    }).join("\n\n");
    await Deno.writeTextFile(`${dir}/text.txt`, text);
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({
        vocab_size: 280,
        hidden_size: 32,
        num_heads: 4,
        num_layers: 2,
        intermediate_size: 48,
        max_seq_len: 24,
      }),
    );
    const trained = await run([
      "train",
      "--config",
      `${dir}/config.json`,
      "--data",
      `${dir}/text.txt`,
      "--steps",
      "3",
      "--batch",
      "4",
      "--backend",
      "cpu",
      "--out",
      `${dir}/run`,
    ], dir);
    assert.equal(trained.code, 0, trained.err);
    const infer = (backend: string) =>
      run([
        "infer",
        "--model",
        `${dir}/run`,
        "--prompt",
        "the cat sat",
        "--max-tokens",
        "12",
        "--temperature",
        "0",
        "--ignore-eos",
        "--json",
        "--backend",
        backend,
      ]);
    const tokens = async (backend: string) => {
      const r = await infer(backend);
      assert.equal(r.code, 0, r.err);
      return JSON.parse(r.out).tokens as number[];
    };
    const cpu = await tokens("cpu");
    assert.equal(cpu.length, 12);
    assert.deepEqual(await tokens("webgpu"), cpu);
    assert.deepEqual(await tokens("auto"), cpu);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
