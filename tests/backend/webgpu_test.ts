// The WebGPU plumbing: the generated kernel module is current, the GpuDevice layer
// acquires and releases a device (and fails with GpuUnavailableError when there is
// no adapter), and the buffer pool reuses, reads back and validates.
import { Effect, Exit, Layer } from "effect";
import { test } from "./gpu_gate.ts";
import fc from "fast-check";
import { strict as assert } from "node:assert";
import {
  GENERATED_MODULE,
  readKernelSources,
  renderKernelsModule,
} from "../../scripts/build_kernels.ts";
import {
  kernelSource,
  parseKernelLayout,
  renderDeclarations,
  stripDeclarations,
} from "../../src/backend/webgpu/kernel_layout.ts";
import {
  KERNEL_MODULES,
  type KernelName,
} from "../../src/backend/webgpu/kernels.wgsl.ts";
import { BufferPool, sizeClass } from "../../src/backend/webgpu/buffer_pool.ts";
import {
  acquireGpuDevice,
  GpuDevice,
  GpuKernels,
  GpuUnavailableError,
} from "../../src/backend/webgpu/device.ts";
import { withGpu } from "./webgpu_harness.ts";

Deno.test("kernels.wgsl.ts is up to date with kernels/*.wgsl", async () => {
  const sources = await readKernelSources();
  assert.ok(
    sources.kernels.length >= 13,
    `only ${sources.kernels.length} kernel files found`,
  );
  assert.equal(
    await Deno.readTextFile(GENERATED_MODULE),
    renderKernelsModule(sources),
    "run: deno run --allow-read --allow-write scripts/build_kernels.ts",
  );
});

Deno.test("embedded kernels render back to their files' layouts (no file reads)", async () => {
  const sources = await readKernelSources();
  const prelude = sources.preludes.find((p) => p.name === "workgroup_reduce");
  assert.ok(prelude, "kernels/prelude/workgroup_reduce.wgsl");
  for (const { name, code } of sources.kernels) {
    const module = KERNEL_MODULES[name as KernelName];
    assert.ok(module, `${name} is in KERNEL_MODULES`);
    const includes = code.includes("// #include prelude/workgroup_reduce.wgsl");
    // A kernel that calls a shared reduction must include the prelude.
    assert.equal(/workgroup_(sum|max|reduce)/.test(code), includes, name);
    assert.equal(module.code.startsWith(prelude.code), includes, name);
    assert.deepEqual(
      parseKernelLayout(name, kernelSource(module)),
      parseKernelLayout(name, (includes ? prelude.code : "") + code),
      name,
    );
  }
});

const SAMPLE = `// A sample: y = f(x).
struct Params {
  n: u32,
  shift: i32,
  alpha: f32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> unused: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

fn helper(i: u32) -> f32 { // reads x { in a comment }
  return x[i] * params.alpha;
}

@compute @workgroup_size(64)
fn through_helper(@builtin(global_invocation_id) gid: vec3u) {
  y[gid.x] = helper(gid.x);
}

@compute @workgroup_size(64)
fn direct(@builtin(global_invocation_id) gid: vec3u) {
  // x and params are named only in this comment
  y[gid.x] = 0.0;
}
`;

Deno.test("parseKernelLayout reads bindings, uniform fields and each entry's bindings", () => {
  const layout = parseKernelLayout("sample", SAMPLE);
  assert.deepEqual(layout.storage, [
    ["x", 0, "read", "f32"],
    ["unused", 1, "read", "f32"],
    ["y", 3, "read_write", "f32"],
  ]);
  assert.deepEqual(layout.uniform, [
    "params",
    2,
    "Params",
    [["n", "u32"], ["shift", "i32"], ["alpha", "f32"]],
  ]);
  // Reached through a called function; comments and member accesses (gid.x) do
  // not count; in binding order.
  assert.deepEqual(layout.entries, {
    through_helper: ["x", "params", "y"],
    direct: ["y"],
  });
  // The declarations come out and render back to the same layout.
  const stripped = stripDeclarations(SAMPLE, layout);
  assert.ok(!/@binding|struct Params/.test(stripped), stripped);
  assert.deepEqual(
    parseKernelLayout("sample", renderDeclarations(layout) + stripped),
    layout,
  );
  assert.throws(
    () => parseKernelLayout("bad", SAMPLE.replace("shift: i32", "v: vec2f")),
    /kernels\/bad\.wgsl: uniform field "v: vec2f"/,
  );
  assert.throws(
    () => parseKernelLayout("bad", SAMPLE.replaceAll("@compute", "")),
    /no @compute entry point/,
  );
});

Deno.test("renderKernelsModule escapes template-literal syntax and checks names", async () => {
  const code = SAMPLE + "// a `b` ${c} \\d\n";
  const text = renderKernelsModule({
    kernels: [{ name: "odd", code }],
    preludes: [],
  }).replace(
    "./kernel_layout.ts",
    new URL("../../src/backend/webgpu/kernel_layout.ts", import.meta.url).href,
  );
  const url = `data:application/typescript,${encodeURIComponent(text)}`;
  const mod = await import(url);
  assert.ok(mod.KERNEL_MODULES.odd.code.endsWith("// a `b` ${c} \\d\n"));
  assert.deepEqual(
    parseKernelLayout("odd", kernelSource(mod.KERNEL_MODULES.odd)),
    parseKernelLayout("odd", code),
  );
  assert.throws(
    () =>
      renderKernelsModule({
        kernels: [{ name: "Bad-Name", code: SAMPLE }],
        preludes: [],
      }),
    /lower snake case/,
  );
  assert.throws(
    () =>
      renderKernelsModule({
        kernels: [{ name: "odd", code: "// #include prelude/none.wgsl\n" }],
        preludes: [],
      }),
    /includes missing prelude\/none\.wgsl/,
  );
});

test.gpu("GpuDevice layer provides adapter info and limits, and destroys the device", async () => {
  let lost: Promise<GPUDeviceLostInfo> | undefined;
  const info = await Effect.runPromise(
    Effect.gen(function* () {
      const gpu = yield* GpuDevice;
      lost = gpu.device.lost;
      assert.ok(gpu.limits.maxStorageBufferBindingSize >= 128 * 2 ** 20);
      assert.ok(gpu.limits.maxComputeWorkgroupsPerDimension >= 65535);
      assert.ok(gpu.limits.maxComputeWorkgroupStorageSize >= 16384);
      return gpu.info;
    }).pipe(Effect.provide(GpuDevice.layer({ allowFallback: true }))),
  );
  assert.ok(info.description.length > 0, "adapter description");
  assert.equal(typeof info.isFallback, "boolean");
  // Closing the layer's scope destroyed the device.
  const reason = await Promise.race([
    lost!.then((l) => l.reason),
    new Promise<string>((resolve) =>
      setTimeout(() => resolve("still alive"), 2000)
    ),
  ]);
  assert.equal(reason, "destroyed");

  // A fallback adapter is refused unless allowed.
  const exit = await Effect.runPromiseExit(Effect.scoped(acquireGpuDevice()));
  if (info.isFallback) {
    assert.ok(Exit.isFailure(exit));
    const error = await Effect.runPromise(
      Effect.flip(Effect.scoped(acquireGpuDevice())),
    );
    assert.ok(error instanceof GpuUnavailableError);
    assert.equal(error._tag, "GpuUnavailableError");
    assert.equal(error.reason, "fallback-rejected");
    assert.match(error.message, /allowFallback/);
  } else {
    assert.ok(Exit.isSuccess(exit));
  }
});

Deno.test("no adapter fails with GpuUnavailableError naming the driver to install", async () => {
  // DENO_WEBGPU_BACKEND=metal selects a backend Linux does not have: no adapter.
  const device =
    new URL("../../src/backend/webgpu/device.ts", import.meta.url).href;
  const code = `
    import { Effect } from "effect";
    import { acquireGpuDevice } from "${device}";
    const e = await Effect.runPromise(Effect.flip(Effect.scoped(acquireGpuDevice({ allowFallback: true }))));
    console.log(JSON.stringify({ tag: e._tag, reason: e.reason, message: e.message }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { DENO_WEBGPU_BACKEND: Deno.build.os === "darwin" ? "dx12" : "metal" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const error = JSON.parse(stdout.trim().split("\n").at(-1)!);
  assert.equal(error.tag, "GpuUnavailableError");
  assert.equal(error.reason, "no-adapter");
  assert.match(error.message, /mesa-vulkan-drivers/);
});

Deno.test("sizeClass: 2^k or 1.5·2^k, ≥ 256 bytes, wasting under a third", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 31 }), (bytes) => {
      const size = sizeClass(bytes);
      assert.ok(size >= bytes && size >= 256);
      const k = Math.floor(Math.log2(size));
      assert.ok(
        size === 2 ** k || size === 3 * 2 ** (k - 1),
        `${size} is not a class`,
      );
      if (size > 256) assert.ok(size - bytes < size / 3, `${bytes} → ${size}`);
    }),
  );
  assert.equal(sizeClass(256), 256);
  assert.equal(sizeClass(257), 384);
  assert.equal(sizeClass(385), 512);
  assert.throws(() => sizeClass(-1), /byteLength/);
});

test.gpu("BufferPool reuses by size class, reads back regions, and validates", () =>
  withGpu(async ({ gpu }) => {
    const pool = new BufferPool(gpu.device);
    try {
      const a = pool.acquire(1000);
      assert.equal(a.size, 1024);
      assert.deepEqual(pool.stats(), { inUse: 1, free: 0, bytes: 1024 });
      pool.release(a);
      assert.equal(pool.acquire(900), a, "same class reuses the freed buffer");
      assert.notEqual(
        pool.acquire(900),
        a,
        "an in-use buffer is not handed out twice",
      );
      assert.throws(
        () => pool.release(gpu.device.createBuffer({ size: 256, usage: 0x80 })),
        /not acquired/,
      );
      pool.release(a);
      assert.throws(() => pool.release(a), /already released/);

      const data = Float32Array.from({ length: 300 }, (_, i) => i * 0.5 - 7);
      const b = pool.upload(data);
      const c = pool.upload(new Float32Array([1, 2, 3]));
      const [whole, middle, none, small] = await pool.readBack(
        gpu.device.createCommandEncoder(),
        [
          { buffer: b, length: 300 },
          { buffer: b, length: 5, offset: 100 },
          { buffer: c, length: 0 },
          { buffer: c, length: 3 },
        ],
      );
      assert.deepEqual(whole, data);
      assert.deepEqual(middle, data.slice(100, 105));
      assert.equal(none.length, 0);
      assert.deepEqual(small, new Float32Array([1, 2, 3]));
      // A second read-back reuses the staging buffer and sees new data.
      gpu.device.queue.writeBuffer(c, 0, new Float32Array([9]));
      const [again] = await pool.readBack(gpu.device.createCommandEncoder(), [{
        buffer: c,
        length: 1,
      }]);
      assert.deepEqual(again, new Float32Array([9]));
      await assert.rejects(
        pool.readBack(gpu.device.createCommandEncoder(), [{
          buffer: c,
          length: 65,
        }]),
        /requests\[0\] reads elements \[0, 65\)/,
      );
    } finally {
      pool.destroy();
    }
    assert.deepEqual(pool.stats(), { inUse: 0, free: 0, bytes: 0 });
  }));

test.gpu("kernel wrappers reject aliased outputs and undersized buffers by name", () =>
  withGpu(({ kernels, pool, gpu }) => {
    const a = pool.acquire(64 * 4);
    const b = pool.acquire(64 * 4);
    const encoder = gpu.device.createCommandEncoder();
    assert.throws(
      () => kernels.add(encoder, { a, b, out: a, n: 64 }),
      /out must not be the same buffer as a/,
    );
    assert.throws(
      () => kernels.add(encoder, { a, b, out: b, n: 65 }),
      /a holds 64 4-byte elements but 65/,
    );
    assert.throws(
      () => kernels.add(encoder, { a, b, out: b, n: 0 }),
      /n must be an integer/,
    );
    assert.throws(
      () =>
        kernels.matmul(encoder, {
          a,
          b,
          c: b,
          m: 2,
          n: 2,
          k: 2,
          variant: "tiled" as "shared",
        }),
      /variant must be/,
    );
    pool.release(a);
    pool.release(b);
    return Promise.resolve();
  }));

test.gpu("the GPU bench loads only local modules and reports checked GFLOP/s and decode tokens/s", async () => {
  const bench = new URL("../../bench/webgpu_bench.ts", import.meta.url);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", bench.pathname],
    stdout: "piped",
  }).output();
  // The modules it loads when run: code imports only (`import type` is
  // erased, so types may come from modules that use npm packages).
  const graph: {
    roots: string[];
    redirects?: Record<string, string>;
    modules: {
      specifier: string;
      dependencies?: { code?: { specifier: string } }[];
    }[];
  } = JSON.parse(new TextDecoder().decode(out.stdout));
  const bySpecifier = new Map(graph.modules.map((m) => [m.specifier, m]));
  const loaded = new Set<string>();
  const visit = (spec: string): void => {
    const s = graph.redirects?.[spec] ?? spec;
    if (loaded.has(s)) return;
    loaded.add(s);
    for (const d of bySpecifier.get(s)?.dependencies ?? []) {
      if (d.code !== undefined) visit(d.code.specifier);
    }
  };
  graph.roots.forEach(visit);
  assert.ok(loaded.size >= 4);
  for (const s of loaded) {
    assert.ok(s.startsWith("file://"), `bench depends on ${s}`);
  }

  const { runWebGpuBench } = await import(bench.href);
  const results = await runWebGpuBench({
    shapes: [[33, 17, 65]],
    targetSeconds: 0.01,
  });
  assert.equal(results.length, 2);
  for (const r of results) {
    assert.equal(r.unit, "GFLOP/s");
    assert.ok(r.value > 0 && Number.isFinite(r.value), `${r.name}: ${r.value}`);
  }
  const { TINY_DECODE_SHAPE } = await import(bench.href);
  const [decode] = await runWebGpuBench({
    decodeOnly: true,
    decodeShapes: [TINY_DECODE_SHAPE],
    decodeTokens: 4,
  });
  assert.equal(decode.unit, "tokens/s");
  assert.ok(decode.value > 0 && Number.isFinite(decode.value), decode.name);
});

test.gpu("GpuKernels layer destroys its pooled buffers when the scope closes", async () => {
  let pool: BufferPool | undefined;
  await Effect.runPromise(
    Effect.gen(function* () {
      const kernels = yield* GpuKernels;
      pool = kernels.pool;
      kernels.pool.acquire(4096);
      assert.equal(kernels.pool.stats().inUse, 2, "scratch + one buffer");
    }).pipe(
      Effect.provide(
        GpuKernels.layer().pipe(
          Layer.provideMerge(GpuDevice.layer({ allowFallback: true })),
        ),
      ),
    ),
  );
  assert.deepEqual(pool!.stats(), { inUse: 0, free: 0, bytes: 0 });
});
