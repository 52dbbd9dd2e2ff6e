// The WebGPU plumbing: the generated kernel module is current, the GpuDevice layer
// acquires and releases a device (and fails with GpuUnavailableError, never a skip,
// when there is no adapter), and the buffer pool reuses, reads back and validates.
import { Effect, Exit, Layer } from "effect";
import fc from "fast-check";
import { strict as assert } from "node:assert";
import {
  GENERATED_MODULE,
  readKernelSources,
  renderKernelsModule,
} from "../../scripts/build_kernels.ts";
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
  assert.ok(sources.length >= 13, `only ${sources.length} kernel files found`);
  const current = await Deno.readTextFile(GENERATED_MODULE);
  assert.equal(
    current,
    renderKernelsModule(sources),
    "run: deno run --allow-read --allow-write scripts/build_kernels.ts",
  );
});

Deno.test("renderKernelsModule escapes template-literal syntax", async () => {
  const text = renderKernelsModule([{
    name: "odd",
    code: "// a `b` ${c} \\d\n",
  }]);
  const url = `data:application/typescript,${encodeURIComponent(text)}`;
  const mod = await import(url);
  assert.equal(mod.ODD_WGSL, "// a `b` ${c} \\d\n");
  assert.throws(
    () => renderKernelsModule([{ name: "Bad-Name", code: "" }]),
    /lower snake case/,
  );
});

Deno.test("GpuDevice layer provides adapter info and limits, and destroys the device", async () => {
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

Deno.test("BufferPool reuses by size class, reads back regions, and validates", () =>
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

Deno.test("kernel wrappers reject aliased outputs and undersized buffers by name", () =>
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

Deno.test("the GPU bench imports only local modules and reports checked GFLOP/s", async () => {
  const bench = new URL("../../bench/webgpu_bench.ts", import.meta.url);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", bench.pathname],
    stdout: "piped",
  }).output();
  const graph = JSON.parse(new TextDecoder().decode(out.stdout));
  const specifiers: string[] = graph.modules.map((m: { specifier: string }) =>
    m.specifier
  );
  assert.ok(specifiers.length >= 4);
  for (const s of specifiers) {
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
});

Deno.test("GpuKernels layer destroys its pooled buffers when the scope closes", async () => {
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
