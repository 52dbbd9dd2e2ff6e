/**
 * A/B of this checkout against another one (`--against DIR`, e.g. a
 * `git archive` of an older commit with `node_modules` linked in), the two
 * alternating in one process so that the machine's drifts hit both alike:
 *
 * - `step` (default): training step tokens/s of `ref-4m` (`measureStepSeconds`,
 *   forward + backward, 3 timed steps) on `--threads N` threads (default 1);
 * - `scoring`: forward-only scoring tokens/s of a random `ref-4m`
 *   (`InferenceModel.nll`, batch 16 × seq 128) on `--threads N` threads, each
 *   checkout with its own runtime kernels and tuned blocking;
 * - `matmul`: one-thread f32 matmul GFLOP/s on every shape of a `ref-4m`
 *   training step, each checkout with its own kernels and the blocking it
 *   tunes (or `--config '{"tile":"6x8","mc":48,"kc":256,"nc":1024}'` for both).
 *
 * Prints every round and, per figure, the rounds this checkout won and the
 * median ratio this/other (and the best-rate ratio for matmul shapes).
 *
 * Run: `deno run -A bench/ab_bench.ts --against DIR [step|scoring|matmul]
 * [--threads N] [--rounds R] [--config JSON]`.
 *
 * @module
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { median, positiveCount } from "./result.ts";

const args = Deno.args;
const flag = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] ?? "" : undefined;
};
const against = flag("--against");
if (against === undefined || against === "") {
  throw new RangeError("--against: the other checkout's directory is needed");
}
const what = args.includes("matmul")
  ? "matmul"
  : args.includes("scoring")
  ? "scoring"
  : "step";
const threads = positiveCount("--threads", flag("--threads"), 1);
const rounds = positiveCount(
  "--rounds",
  flag("--rounds"),
  what === "matmul" ? 10 : 6,
);
const here = new URL("..", import.meta.url);
const there = pathToFileURL(resolve(against) + "/");
// deno-lint-ignore no-explicit-any
const load = (root: URL, path: string): Promise<any> =>
  import(new URL(path, root).href);

/** Rounds won by `a` over `b` and the median of the ratios a/b. */
function summary(a: number[], b: number[]): string {
  const wins = a.filter((x, i) => x > b[i]).length;
  return `this faster in ${wins} of ${a.length}, median ratio ${
    median(a.map((x, i) => x / b[i])).toFixed(3)
  }`;
}

/** Alternates `a` and `b` (order flipped each round), printing each round's tokens/s. */
async function alternate(
  what: string,
  a: () => Promise<number>,
  b: () => Promise<number>,
): Promise<void> {
  const ra: number[] = [], rb: number[] = [];
  for (let r = 0; r < rounds; r++) {
    if (r % 2) {
      rb.push(await b());
      ra.push(await a());
    } else {
      ra.push(await a());
      rb.push(await b());
    }
    console.log(
      `round ${r + 1}: this ${ra[r].toFixed(0)}, other ${
        rb[r].toFixed(0)
      } tokens/s (${threads} threads)`,
    );
  }
  console.log(`${what}: ${summary(ra, rb)}`);
}

/**
 * Scoring of a random `ref-4m` with `root`'s runtime: `time` scores one
 * batch and returns tokens/s; `close` ends its workers (else the process
 * would not exit).
 */
async function scorer(
  root: URL,
): Promise<{ time: () => Promise<number>; close: () => void }> {
  const [W, Tu, C, P, R, Tok, Ten, F, I] = await Promise.all([
    load(root, "src/backend/wasm/wasm_kernels.ts"),
    load(root, "src/backend/cpu/matmul_tuning.ts"),
    load(root, "src/common/config.ts"),
    load(root, "src/common/presets.ts"),
    load(root, "src/common/rng.ts"),
    load(root, "src/common/tokenizer.ts"),
    load(root, "src/core/tensors.ts"),
    load(root, "src/infer/from_latents.ts"),
    load(root, "src/infer/runtime.ts"),
  ]);
  const config = P.preset("ref-4m");
  const kernels = await W.WasmKernels.create({ sharedMemory: true, threads });
  kernels.matmulConfig = Tu.tunedMatmulConfig(kernels);
  const rng = new R.Rng(1);
  const params = new Map<string, Float32Array>();
  for (const s of Ten.modelTensors(config)) {
    const v = new Float32Array(Ten.tensorNumel(s));
    for (let i = 0; i < v.length; i++) {
      v[i] = s.kind === "norm" ? 1 : 0.035 * (2 * rng.nextFloat() - 1);
    }
    params.set(s.name, v);
  }
  const model = await I.InferenceModel.create(
    F.weightsFromTrainedRun({
      config,
      bitMap: C.resolveBitMap(config),
      tokenizer: new Tok.Tokenizer([...Tok.BYTE_TO_CHAR], [], []),
      params,
      lambda: 1,
    }),
    { kernels },
  );
  const batch = 16, seqLen = 128, n = batch * seqLen;
  const tokens = Int32Array.from(
    { length: n + 1 },
    () => rng.nextInt(config.vocab_size),
  );
  const ids = tokens.subarray(0, n), targets = tokens.subarray(1);
  model.nll(ids, targets, batch, seqLen);
  return {
    time: () => {
      const t0 = performance.now();
      model.nll(ids, targets, batch, seqLen);
      return Promise.resolve(n / ((performance.now() - t0) / 1000));
    },
    close: () => {
      model.release();
      kernels.close();
    },
  };
}

if (what === "scoring") {
  const a = await scorer(here), b = await scorer(there);
  try {
    await alternate("scoring", a.time, b.time);
  } finally {
    a.close();
    b.close();
  }
} else if (what === "step") {
  const tps = async (root: URL): Promise<number> => {
    const [{ Effect }, T, S, P] = await Promise.all([
      import("effect"),
      load(root, "src/train/trainer.ts"),
      load(root, "src/backend/service.ts"),
      load(root, "src/common/presets.ts"),
    ]);
    const config = P.preset("ref-4m");
    const settings = T.defaultSettings(config, 1);
    const sec: number = await Effect.runPromise(
      T.measureStepSeconds(config, settings, 3).pipe(
        Effect.provide(S.ComputeBackend.cpuWith({ threads })),
      ),
    );
    return settings.batch * settings.seqLen / sec;
  };
  await alternate("training step", () => tps(here), () => tps(there));
} else {
  const T = 2048;
  const shapes = [
    ["attn_fwd", T, 256, 256, false, true],
    ["attn_dx", T, 256, 256, false, false],
    ["attn_dw", 256, 256, T, true, false],
    ["up_fwd", T, 768, 256, false, true],
    ["up_dx", T, 256, 768, false, false],
    ["up_dw", 768, 256, T, true, false],
    ["down_fwd", T, 256, 768, false, true],
    ["down_dx", T, 768, 256, false, false],
    ["down_dw", 256, 768, T, true, false],
    ["head_fwd", T, 4096, 256, false, true],
    ["head_dx", T, 256, 4096, false, false],
    ["head_dw", 4096, 256, T, true, false],
  ] as const;
  const forced = flag("--config");
  const side = async (root: URL) => {
    const { WasmKernels } = await load(
      root,
      "src/backend/wasm/wasm_kernels.ts",
    );
    const { tunedMatmulConfig } = await load(
      root,
      "src/backend/cpu/matmul_tuning.ts",
    );
    const K = await WasmKernels.create();
    K.matmulConfig = forced === undefined
      ? tunedMatmulConfig(K)
      : JSON.parse(forced);
    const calls = shapes.map(([, m, n, k, transA, transB]) => {
      const a = K.alloc(4 * m * k), b = K.alloc(4 * k * n);
      const c = K.alloc(4 * m * n);
      K.f32(a, m * k).fill(0.5);
      K.f32(b, k * n).fill(0.25);
      const call = () => K.matmul({ a, b, c, m, n, k, transA, transB });
      call();
      return () => {
        const t0 = performance.now();
        call();
        return 2 * m * n * k / (performance.now() - t0) / 1e6;
      };
    });
    console.log(`${root.pathname}: blocking ${JSON.stringify(K.matmulConfig)}`);
    return calls;
  };
  const a = await side(here), b = await side(there);
  const ra = shapes.map((): number[] => []),
    rb = shapes.map((): number[] => []);
  for (let r = 0; r < rounds; r++) {
    shapes.forEach((_, i) => {
      if (r % 2) {
        rb[i].push(b[i]());
        ra[i].push(a[i]());
      } else {
        ra[i].push(a[i]());
        rb[i].push(b[i]());
      }
    });
  }
  let logSum = 0;
  shapes.forEach(([name], i) => {
    const best = Math.max(...ra[i]) / Math.max(...rb[i]);
    logSum += Math.log(best);
    console.log(
      `${name.padEnd(9)} best this ${Math.max(...ra[i]).toFixed(1)}, other ${
        Math.max(...rb[i]).toFixed(1)
      } GFLOP/s (${best.toFixed(3)}); ${summary(ra[i], rb[i])}`,
    );
  });
  console.log(
    `geometric mean of the best-rate ratios: ${
      Math.exp(logSum / shapes.length).toFixed(3)
    }`,
  );
}
