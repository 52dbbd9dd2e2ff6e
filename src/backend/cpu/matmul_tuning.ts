/**
 * Per-machine choice of the f32 matmul's register tile and cache blocking.
 *
 * The best tile and block sizes depend on the CPU (FMA latency × pipes decides
 * how many independent accumulators a tile needs; L1/L2 sizes bound the packed
 * panels), so instead of one setting tuned on one machine, {@link tuneMatmul}
 * times a few candidates on shapes of a training step and keeps the fastest;
 * {@link tunedMatmulConfig} does that once per machine and caches the result
 * in `.cache/matmul-tuning.json`, keyed by the CPU model and flags, the WASM
 * variant and the kernel module.
 *
 * The depth `kc` is not tuned (it stays {@link DEFAULT_MATMUL_CONFIG}'s): the
 * tile and the `mc`/`nc` blocks do not change the order of any sum, so a
 * tuned matmul gives bit-identical results to the default one and training
 * runs stay reproducible across machines and re-tunings.
 *
 * @module
 */
import {
  checkMatmulConfig,
  DEFAULT_MATMUL_CONFIG,
  MATMUL_TILES,
  type MatmulConfig,
  wasmKernelBytes,
  type WasmKernels,
} from "../wasm/wasm_kernels.ts";

/** Where the tuned configurations are cached (relative to the working directory). */
export const MATMUL_TUNING_CACHE = ".cache/matmul-tuning.json";

/** A candidate's time on the tuning shapes, and the candidate. */
export interface TuningResult {
  /** The configuration timed. */
  readonly config: MatmulConfig;
  /** Best seconds over the rounds for one pass over the tuning shapes. */
  readonly seconds: number;
}

/** Shapes timed per candidate: a BitLinear's forward, dX and dW at 256 tokens. */
const SHAPES = [
  { m: 256, n: 768, k: 256, transA: false, transB: true },
  { m: 256, n: 256, k: 768, transA: false, transB: false },
  { m: 768, n: 256, k: 256, transA: true, transB: false },
] as const;

/**
 * The candidates: every tile with A blocks of ~24, ~48 and ~96 rows (96 KiB
 * to 384 KiB packed at `kc` 256, A being splatted to 16 bytes an element) and
 * B blocks of ~1024 columns.
 */
export function matmulCandidates(): MatmulConfig[] {
  return MATMUL_TILES.flatMap((tile) => {
    const [mr, nr] = tile.split("x").map(Number);
    return [24, 48, 96].map((rows) => ({
      tile,
      mc: Math.round(rows / mr) * mr,
      kc: DEFAULT_MATMUL_CONFIG.kc,
      nc: Math.round(1024 / nr) * nr,
    }));
  });
}

/**
 * Milliseconds of CPU time of this process where the engine reports it
 * (Deno, Node: other load on the machine disturbs it less than wall time),
 * else wall time.
 */
function clockMs(): number {
  const proc = (globalThis as {
    process?: { cpuUsage?: () => { user: number; system: number } };
  }).process;
  if (proc?.cpuUsage === undefined) return performance.now();
  const u = proc.cpuUsage();
  return (u.user + u.system) / 1000;
}

/**
 * Times every candidate on `kernels` in CPU time where available
 * (interleaved over `rounds` rounds, the best time of each kept, so that
 * other load on the machine disturbs the ranking less) and returns the
 * results fastest first. Leaves the kernels' configuration as it found it.
 */
export function tuneMatmul(
  kernels: WasmKernels,
  candidates: readonly MatmulConfig[] = matmulCandidates(),
  rounds = 6,
): TuningResult[] {
  if (candidates.length === 0) throw new RangeError("candidates: empty");
  for (const c of candidates) checkMatmulConfig(c);
  const before = kernels.matmulConfig;
  const bufs = SHAPES.map((s) => {
    const a = kernels.alloc(4 * s.m * s.k), b = kernels.alloc(4 * s.k * s.n);
    const c = kernels.alloc(4 * s.m * s.n);
    kernels.f32(a, s.m * s.k).fill(0.5);
    kernels.f32(b, s.k * s.n).fill(0.25);
    return { ...s, a, b, c };
  });
  const pass = () => {
    for (const s of bufs) kernels.matmul(s);
  };
  const best = candidates.map(() => Infinity);
  try {
    // Warm-up: V8 runs a kernel's first calls in its baseline tier.
    for (const c of candidates) {
      kernels.matmulConfig = c;
      pass();
      pass();
    }
    for (let r = 0; r < rounds; r++) {
      candidates.forEach((c, i) => {
        kernels.matmulConfig = c;
        const t0 = clockMs();
        pass();
        best[i] = Math.min(best[i], (clockMs() - t0) / 1000);
      });
    }
  } finally {
    kernels.matmulConfig = before;
    for (const s of bufs) for (const p of [s.a, s.b, s.c]) kernels.free(p);
  }
  return candidates
    .map((config, i) => ({ config, seconds: best[i] }))
    .sort((x, y) => x.seconds - y.seconds);
}

/** FNV-1a of the kernel module's bytes: a retuning key when the kernels change. */
function kernelsHash(kernels: WasmKernels): string {
  let h = 0x811c9dc5;
  for (const byte of wasmKernelBytes(kernels.variant)) {
    h = Math.imul(h ^ byte, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

/**
 * The CPU model and feature flags (Linux `/proc/cpuinfo`; elsewhere the OS,
 * architecture and core count), which together key the tuning cache.
 */
export function cpuDescription(): { model: string; flags: string } {
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    const field = (name: string) =>
      info.match(new RegExp(`^${name}\\s*:\\s*(.*)$`, "m"))?.[1]?.trim() ?? "";
    // Virtual machines often name only the vendor ("AMD EPYC"): the family,
    // model and stepping tell CPU generations apart (25/1 is Zen 3 Milan).
    const generation = ["cpu family", "model", "stepping"]
      .map((f) => [f.replace("cpu ", ""), field(f)])
      .filter(([, v]) => v !== "")
      .map(([f, v]) => `${f} ${v}`)
      .join(" ");
    const name = field("model name") || field("Processor") || "unknown";
    return {
      model: generation === "" ? name : `${name} (${generation})`,
      flags: field("flags") || field("Features"),
    };
  } catch {
    const os = typeof Deno === "undefined" ? "web" : Deno.build.os;
    const arch = typeof Deno === "undefined" ? "" : Deno.build.arch;
    return {
      model: `${os} ${arch} ${navigator.hardwareConcurrency} cores`,
      flags: "",
    };
  }
}

function cacheKey(kernels: WasmKernels): string {
  const { model, flags } = cpuDescription();
  return `${model} | ${flags} | ${kernels.variant} | ${kernelsHash(kernels)}`;
}

type CacheFile = Record<string, MatmulConfig>;

function readCache(): CacheFile {
  try {
    const parsed: unknown = JSON.parse(
      Deno.readTextFileSync(MATMUL_TUNING_CACHE),
    );
    return typeof parsed === "object" && parsed !== null
      ? parsed as CacheFile
      : {};
  } catch {
    return {};
  }
}

/** In-process results per cache key (several backends in one process tune once). */
const memo = new Map<string, MatmulConfig>();

/**
 * The tuned configuration for this machine: from the in-process memo, else
 * from `.cache/matmul-tuning.json` (an entry that fails validation is
 * re-tuned), else measured with {@link tuneMatmul} and written there. Where
 * the file system is not available (a browser, no permission), it tunes once
 * per process and keeps the result in memory only.
 */
export function tunedMatmulConfig(kernels: WasmKernels): MatmulConfig {
  const key = cacheKey(kernels);
  const known = memo.get(key);
  if (known !== undefined) return known;
  const cached = readCache()[key];
  if (cached !== undefined) {
    try {
      checkMatmulConfig(cached);
      if (cached.kc === DEFAULT_MATMUL_CONFIG.kc) {
        memo.set(key, cached);
        return cached;
      }
    } catch {
      // A stale or hand-edited entry: tune again below.
    }
  }
  const config = tuneMatmul(kernels)[0].config;
  memo.set(key, config);
  try {
    Deno.mkdirSync(".cache", { recursive: true });
    const all = readCache();
    all[key] = config;
    Deno.writeTextFileSync(
      MATMUL_TUNING_CACHE,
      JSON.stringify(all, null, 2) + "\n",
    );
  } catch {
    // No file system access: the in-process memo still serves this process.
  }
  return config;
}
