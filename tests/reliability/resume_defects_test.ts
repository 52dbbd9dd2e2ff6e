/**
 * The defects of issue 11 §4 in the trainer's command line: run directories,
 * checkpoints that do not match their config, `state.json` values, NaN
 * gradients, flags on `--resume`, flag checks before any work, and the
 * messages of `eval` and Ctrl-C.
 */
import { strict as assert } from "node:assert";
import {
  assertOneErrorLine,
  childEnv,
  cli,
  QUICK,
  scratchDir,
} from "./cli_harness.ts";

const dir = await scratchDir();
const ROOT = new URL("../../", import.meta.url).pathname;

/** A fresh 2-step run in `runs/<name>` (one per test that edits it). */
async function trained(name: string, ...more: string[]): Promise<string> {
  const r = await cli(
    dir,
    "train",
    ...QUICK,
    "--steps",
    "2",
    "--out",
    `runs/${name}`,
    ...more,
  );
  assert.equal(r.code, 0, r.err);
  return `runs/${name}`;
}

const latest = async (run: string): Promise<string> =>
  `${run}/${(await Deno.readTextFile(`${dir}/${run}/latest`)).trim()}`;

async function editJson(
  file: string,
  edit: (json: Record<string, unknown>) => unknown,
): Promise<void> {
  const json = JSON.parse(await Deno.readTextFile(`${dir}/${file}`));
  await Deno.writeTextFile(
    `${dir}/${file}`,
    JSON.stringify(edit(json) ?? json),
  );
}

Deno.test('§4.1 --out "" is refused before any work', async () => {
  // Were it accepted, the run would go to /config.json, /latest, /ckpt-*.
  const r = await cli(dir, "train", ...QUICK, "--steps", "1", "--out", "");
  assertOneErrorLine(r, "--out");
  assert.ok(!r.err.includes("dataset:"), r.err);
});

Deno.test("§4.1 a non-empty directory that is not a run is refused, untouched", async () => {
  await Deno.mkdir(`${dir}/notes`, { recursive: true });
  await Deno.writeTextFile(`${dir}/notes/config.json`, "my own file");
  await Deno.writeTextFile(`${dir}/notes/todo.txt`, "x");
  const r = await cli(dir, "train", ...QUICK, "--steps", "1", "--out", "notes");
  assertOneErrorLine(r, "notes", "--out");
  assert.equal(
    await Deno.readTextFile(`${dir}/notes/config.json`),
    "my own file",
  );
  assert.deepEqual(
    [...Deno.readDirSync(`${dir}/notes`)].map((e) => e.name).sort(),
    ["config.json", "todo.txt"],
  );
});

Deno.test("§4.2 checkpoint tensors that do not fit the checkpoint's config: one error line", async (t) => {
  const cases: Array<[string, (c: Record<string, unknown>) => void]> = [
    ["num_layers 2: layer 1's tensors missing", (c) => {
      c.num_layers = 2;
    }],
    ["num_heads doubled", (c) => {
      c.num_heads = 4;
    }],
    ["hidden_size doubled", (c) => {
      c.hidden_size = 64;
    }],
  ];
  const run = await trained("mismatch");
  const ckpt = await latest(run);
  const original = await Deno.readTextFile(`${dir}/${ckpt}/config.json`);
  for (const [name, edit] of cases) {
    await t.step(name, async () => {
      await Deno.writeTextFile(`${dir}/${ckpt}/config.json`, original);
      await editJson(`${ckpt}/config.json`, (c) => {
        edit(c);
      });
      const files = [...Deno.readDirSync(`${dir}/${run}`)].map((e) => e.name);
      assertOneErrorLine(
        await cli(dir, "train", "--resume", "--out", run, "--backend", "cpu"),
        ckpt,
      );
      assertOneErrorLine(
        await cli(
          dir,
          "eval",
          "--model",
          run,
          "--text",
          "text.txt",
          "--backend",
          "cpu",
        ),
        ckpt,
      );
      // Nothing was saved over it.
      assert.deepEqual(
        [...Deno.readDirSync(`${dir}/${run}`)].map((e) => e.name).sort(),
        files.sort(),
      );
    });
  }
});

Deno.test("§4.2 a checkpoint config with fewer layers than its tensors: refused", async () => {
  // The user-found case: a 2-layer model whose config says 1 layer.
  await Deno.writeTextFile(
    `${dir}/cfg2.json`,
    JSON.stringify({
      vocab_size: 300,
      hidden_size: 32,
      num_heads: 2,
      num_layers: 2,
      intermediate_size: 64,
      max_seq_len: 16,
    }),
  );
  const t = await cli(
    dir,
    "train",
    ...QUICK.map((a) => a === "cfg.json" ? "cfg2.json" : a),
    "--steps",
    "2",
    "--out",
    "runs/two2",
  );
  assert.equal(t.code, 0, t.err);
  const ckpt = await latest("runs/two2");
  await editJson(`${ckpt}/config.json`, (c) => {
    c.num_layers = 1;
  });
  assertOneErrorLine(
    await cli(dir, "train", "--resume", "--out", "runs/two2", "--steps", "3"),
    ckpt,
    "blk.1",
  );
  assertOneErrorLine(
    await cli(dir, "eval", "--model", "runs/two2", "--text", "text.txt"),
    ckpt,
    "blk.1",
  );
  await Deno.stat(`${dir}/${ckpt}/model.safetensors`);
});

Deno.test("§4.3 state.json schedule values that are not settings: one error line naming state.json", async (t) => {
  const run = await trained("state");
  const ckpt = await latest(run);
  const state = `${ckpt}/state.json`;
  const original = await Deno.readTextFile(`${dir}/${state}`);
  const cases: Array<[string, (s: Record<string, unknown>) => unknown]> = [
    ['seqLen "x"', (s) => {
      (s.schedule as Record<string, unknown>).seqLen = "x";
    }],
    ['steps "many"', (s) => {
      (s.schedule as Record<string, unknown>).steps = "many";
    }],
    ["schedule {}", (s) => {
      s.schedule = {};
    }],
    ["schedule null", (s) => {
      s.schedule = null;
    }],
    ["unknown λ kind", (s) => {
      (s.schedule as Record<string, unknown>).lambda = { kind: "wobbly" };
    }],
  ];
  for (const [name, edit] of cases) {
    await t.step(name, async () => {
      await Deno.writeTextFile(`${dir}/${state}`, original);
      await editJson(state, edit);
      assertOneErrorLine(
        await cli(dir, "train", "--resume", "--out", run, "--backend", "cpu"),
        "state.json",
      );
      assertOneErrorLine(
        await cli(
          dir,
          "eval",
          "--model",
          run,
          "--text",
          "text.txt",
          "--backend",
          "cpu",
        ),
        "state.json",
      );
    });
  }
});

Deno.test("§4.4 a NaN gradient stops the run before it is committed; the good checkpoint stays", async () => {
  const r = await cli(
    dir,
    "train",
    ...QUICK,
    "--steps",
    "4",
    "--save-every",
    "1",
    "--warmup",
    "0",
    "--lr",
    "1e30",
    "--out",
    "runs/nan",
  );
  assertOneErrorLine(r);
  const ckpt = await latest("runs/nan");
  const step = JSON.parse(await Deno.readTextFile(`${dir}/${ckpt}/state.json`))
    .step;
  assert.ok(step >= 1 && step < 4, `checkpoint at step ${step}`);
  // Its weights are finite and it resumes (to fail again the same way).
  const bytes = await Deno.readFile(`${dir}/${ckpt}/model.safetensors`);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const data = bytes.slice(8 + n);
  const f = new Float32Array(data.buffer, 0, data.length >> 2);
  assert.ok(f.every(Number.isFinite), "non-finite weights in the checkpoint");
});

Deno.test("§4.5 bad token files, a short validation split, --batch 100000: one error line", async (t) => {
  const run = await trained("tok");
  void run;
  const cache =
    [...Deno.readDirSync(`${dir}/.cache/datasets`)].find((e) =>
      e.name.startsWith("text.txt-") && e.name.endsWith("-v300")
    )!.name;
  const tok = (f: string) => `${dir}/.cache/datasets/${cache}/${f}`;
  const original = {
    train: await Deno.readFile(tok("train.tok")),
    valid: await Deno.readFile(tok("valid.tok")),
  };
  const restore = async () => {
    await Deno.writeFile(tok("train.tok"), original.train);
    await Deno.writeFile(tok("valid.tok"), original.valid);
  };
  await t.step("a token id ≥ vocab", async () => {
    const b = original.train.slice();
    new DataView(b.buffer).setUint16(64 + 100, 400, true);
    await Deno.writeFile(tok("train.tok"), b);
    try {
      assertOneErrorLine(
        await cli(dir, "train", ...QUICK, "--steps", "1", "--out", "runs/t1"),
        "train.tok",
        "400",
      );
    } finally {
      await restore();
    }
  });
  await t.step("a validation token file with count 0", async () => {
    const b = original.valid.slice(0, 64);
    new DataView(b.buffer).setBigUint64(12, 0n, true);
    await Deno.writeFile(tok("valid.tok"), b);
    try {
      assertOneErrorLine(
        await cli(dir, "train", ...QUICK, "--steps", "1", "--out", "runs/t2"),
        "valid.tok",
      );
    } finally {
      await restore();
    }
  });
  await t.step("a validation split shorter than one window", async () => {
    const paragraphs = (await Deno.readTextFile(`${dir}/text.txt`)).split(
      "\n\n",
    );
    await Deno.writeTextFile(
      `${dir}/shortvalid.txt`,
      // 3 validation documents of 2 tokens: 6 tokens, a window is 17.
      paragraphs.slice(0, 30).map((p, i) => i % 10 === 9 ? "x" : p).join(
        "\n\n",
      ),
    );
    assertOneErrorLine(
      await cli(
        dir,
        "train",
        ...QUICK.map((a) => a === "text.txt" ? "shortvalid.txt" : a),
        "--steps",
        "1",
        "--out",
        "runs/t3",
      ),
      "valid",
      "window",
    );
  });
  await t.step("--batch 100000 on the tiny preset", async () => {
    await linkBrownCache();
    const r = await cli(
      dir,
      "train",
      "--preset",
      "tiny",
      "--steps",
      "1",
      "--batch",
      "100000",
      "--backend",
      "cpu",
      "--out",
      "runs/t4",
    );
    assertOneErrorLine(r, "--batch");
  });
});

/** The tiny preset's Brown dataset of the project's cache, linked into ours. */
async function linkBrownCache(): Promise<void> {
  const target = `${dir}/.cache/datasets/brown-v512`;
  await Deno.mkdir(`${dir}/.cache/datasets`, { recursive: true });
  const source = `${ROOT}.cache/datasets/brown-v512`;
  if (await Deno.stat(target).then(() => true, () => false)) return;
  if (await Deno.stat(source).then(() => true, () => false)) {
    await Deno.symlink(source, target);
  }
}

Deno.test("§4.6 --resume applies more --steps and refuses flags it cannot apply", async (t) => {
  const run = await trained("more");
  await t.step("--steps 4 continues to step 4", async () => {
    const r = await cli(
      dir,
      "train",
      "--resume",
      "--out",
      run,
      "--steps",
      "4",
      "--backend",
      "cpu",
    );
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /step 4\/4/);
    assert.match(r.err, /resumed at step 2/);
    assert.match(r.err, /done: 4 steps/);
  });
  const refused: Array<[string, string[]]> = [
    ["--batch", ["--batch", "8"]],
    ["--lr", ["--lr", "0.01"]],
    ["--preset", ["--preset", "tiny"]],
    ["--steps", ["--steps", "1"]],
  ];
  for (const [flag, args] of refused) {
    await t.step(`${args.join(" ")} is refused naming ${flag}`, async () => {
      const r = await cli(dir, "train", "--resume", "--out", run, ...args);
      assertOneErrorLine(r, flag);
    });
  }
  await t.step(
    "--bit-map is checked against the checkpoint's config",
    async () => {
      await Deno.writeTextFile(
        `${dir}/map1.json`,
        JSON.stringify({ embedding: "f16", layer_modes: ["eightbit"] }),
      );
      const r = await cli(
        dir,
        "train",
        "--resume",
        "--out",
        run,
        "--bit-map",
        "map1.json",
      );
      // A 1-layer map fits the 1-layer checkpoint; it differs from the run's
      // map, which a resume cannot change.
      assertOneErrorLine(r, "--bit-map");
      assert.ok(!r.err.includes("num_layers is 4"), r.err);
    },
  );
});

Deno.test("§4.8 bad flag values fail before any work, naming the flag", async (t) => {
  const cases: Array<[string[], string]> = [
    [["--lr", "-1"], "--lr"],
    [["--lr", "0"], "--lr"],
    [["--weight-decay", "-5"], "--weight-decay"],
    [["--label-smoothing", "2"], "--label-smoothing"],
  ];
  for (const [i, [args, flag]] of cases.entries()) {
    await t.step(args.join(" "), async () => {
      // A run directory each: a case that trained (on code without the check)
      // must not make the next one fail for "already holds a checkpoint".
      const r = await cli(
        dir,
        "train",
        ...QUICK,
        "--steps",
        "1",
        "--out",
        `runs/flags-${i}`,
        ...args,
      );
      assertOneErrorLine(r, flag);
      assert.ok(!r.err.includes("dataset:"), `work done first:\n${r.err}`);
      assert.ok(!/hyper\.|weightDecay|labelSmoothing/.test(r.err), r.err);
    });
  }
});

Deno.test("§4.9 eval --model missing names the model, not a resume", async () => {
  const r = await cli(dir, "eval", "--model", "missing", "--text", "text.txt");
  assertOneErrorLine(r, "missing");
  assert.ok(!r.err.includes("resume"), r.err);
});

Deno.test("§4.9 Ctrl-C during the final evaluation: a message, and loss.svg", async () => {
  await linkBrownCache();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-q",
      "-A",
      "--config",
      `${ROOT}deno.json`,
      `${ROOT}src/cli/main.ts`,
      "train",
      "--preset",
      "tiny",
      "--steps",
      "1",
      "--backend",
      "cpu",
      "--out",
      "runs/ctrlc",
    ],
    cwd: dir,
    env: childEnv(),
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let err = "";
  const dec = new TextDecoder();
  const reader = child.stderr.getReader();
  let sent = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    err += dec.decode(value);
    if (!sent && err.includes("evaluating on the whole validation split")) {
      child.kill("SIGINT");
      sent = true;
    }
  }
  await child.stdout.cancel();
  const status = await child.status;
  assert.ok(sent, err);
  assert.notEqual(status.code, 0, err);
  assert.match(err, /interrupted/, err);
  await Deno.stat(`${dir}/runs/ctrlc/loss.svg`);
});
