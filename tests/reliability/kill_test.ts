/**
 * `kill -9` a real training process at random moments (issue 11 §3): before
 * the first step, between steps and inside checkpoint writes (the run saves
 * after every step). After each kill the run directory's `latest` must name a
 * complete checkpoint whose step never goes back; each restart continues it
 * with `--resume`; and the run, finished, must end with the same final
 * validation loss and bit-for-bit the same weights as an uninterrupted run.
 *
 * The default run kills 20 times; `RELIABILITY_KILLS=N` sets the count (the
 * figures in docs/RELIABILITY.md used 60). The process is `deno run` of the
 * CLI, as `deno task train` runs it, in its own process group (setsid) so the
 * whole group is killed.
 */
import { strict as assert } from "node:assert";
import { childEnv, cli, QUICK, scratchDir } from "./cli_harness.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const KILLS = Number(Deno.env.get("RELIABILITY_KILLS") ?? "20");
const STEPS = 600;
const dir = await scratchDir();
const TRAIN = [...QUICK, "--steps", String(STEPS)];

let seed = 20261203;
const random = () => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed / 2 ** 32;
};

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

/** Step of the checkpoint `latest` names, after checking it is complete. */
async function checkpointStep(out: string): Promise<number | undefined> {
  if (!(await exists(`${out}/latest`))) return undefined;
  const name = (await Deno.readTextFile(`${out}/latest`)).trim();
  for (
    const f of [
      "config.json",
      "tokenizer.json",
      "model.safetensors",
      "optimizer.safetensors",
      "state.json",
    ]
  ) {
    assert.ok(await exists(`${out}/${name}/${f}`), `${name}/${f} missing`);
  }
  const model = await Deno.readFile(`${out}/${name}/model.safetensors`);
  const n = Number(new DataView(model.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(model.subarray(8, 8 + n)));
  const end = Math.max(
    ...Object.entries(header).filter(([k]) => k !== "__metadata__").map((
      [, t],
    ) => (t as { data_offsets: [number, number] }).data_offsets[1]),
  );
  assert.equal(model.length, 8 + n + end, `${name}/model.safetensors size`);
  return JSON.parse(await Deno.readTextFile(`${out}/${name}/state.json`)).step;
}

/** Starts the run (or resumes it) in its own process group. */
function start(out: string, resume: boolean): Deno.ChildProcess {
  const args = resume
    ? ["train", "--resume", "--out", out, "--backend", "cpu"]
    : ["train", ...TRAIN, "--out", out];
  return new Deno.Command("setsid", {
    args: [
      Deno.execPath(),
      "run",
      "-q",
      "-A",
      "--config",
      `${ROOT}deno.json`,
      `${ROOT}src/cli/main.ts`,
      ...args,
      "--save-every",
      "1",
    ],
    cwd: dir,
    env: childEnv(),
    clearEnv: true,
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

async function finalValidation(out: string): Promise<number> {
  const lines = (await Deno.readTextFile(`${dir}/${out}/metrics.jsonl`)).trim()
    .split("\n").map((l) => JSON.parse(l));
  const last = lines.filter((r) => r.kind === "eval").at(-1);
  assert.equal(last.step, STEPS);
  return last.valLoss;
}

async function weights(out: string): Promise<Uint8Array> {
  const name = (await Deno.readTextFile(`${dir}/${out}/latest`)).trim();
  return await Deno.readFile(`${dir}/${out}/${name}/model.safetensors`);
}

Deno.test(`kill -9 at ${KILLS} random moments, then --resume: same final loss and weights`, async () => {
  const ref = await cli(
    dir,
    "train",
    ...TRAIN,
    "--save-every",
    "1",
    "--out",
    "runs/ref",
  );
  assert.equal(ref.code, 0, ref.err);

  const out = "runs/killed";
  let kills = 0, duringTraining = 0, lastStep = 0;
  while (kills < KILLS) {
    const resume = await exists(`${dir}/${out}/latest`);
    const child = start(out, resume);
    // Half the kills at a random time after the start (often before the
    // first step), half a random 0–200 ms after a step line.
    const afterStep = random() < 0.5;
    const delay = afterStep ? random() * 200 : 200 + random() * 1500;
    let err = "";
    let timer: ReturnType<typeof setTimeout> | undefined;
    let killed = false;
    const kill = () => {
      if (killed) return;
      killed = true;
      try {
        Deno.kill(-child.pid, "SIGKILL");
      } catch { /* already gone */ }
    };
    if (!afterStep) timer = setTimeout(kill, delay);
    const dec = new TextDecoder();
    for await (const chunk of child.stderr) {
      err += dec.decode(chunk);
      if (afterStep && timer === undefined && /\bstep \d+\//.test(err)) {
        timer = setTimeout(kill, delay);
      }
    }
    clearTimeout(timer);
    const status = await child.status;
    assert.ok(!/^error/m.test(err), `a restart failed:\n${err}`);
    if (status.success) {
      // It finished before the kill: start over would lose nothing; go on.
      assert.ok(!killed, err);
      break;
    }
    assert.equal(status.signal, "SIGKILL", err);
    kills++;
    if (/\bstep \d+\//.test(err)) duringTraining++;
    const step = await checkpointStep(`${dir}/${out}`);
    if (step !== undefined) {
      assert.ok(step >= lastStep, `checkpoint went back ${lastStep} → ${step}`);
      lastStep = step;
    }
  }
  assert.ok(kills >= Math.min(KILLS, 20) || lastStep === STEPS, `${kills}`);
  // Finish the run.
  if (!(await exists(`${dir}/${out}/latest`)) || lastStep < STEPS) {
    const resume = await exists(`${dir}/${out}/latest`);
    const done = await start(out, resume).output();
    assert.ok(done.success, new TextDecoder().decode(done.stderr));
  }
  console.log(
    `${kills} kills (${duringTraining} after training started), last checkpoint before the end at step ${lastStep}`,
  );
  assert.equal(await finalValidation(out), await finalValidation("runs/ref"));
  assert.deepEqual(await weights(out), await weights("runs/ref"));
});
