// The ComputeBackend layers: cpu, webgpu (scoped: the device is destroyed when
// the layer's scope closes) and auto (WebGPU only on a real, non-fallback
// adapter). On a machine whose only adapter is a software one (Mesa llvmpipe
// here) auto picks the CPU and logs why. Without an adapter the WebGPU tests are
// ignored, except under CI (gpu_gate.ts).
import { strict as assert } from "node:assert";
import { test } from "./gpu_gate.ts";
import fc from "fast-check";
import { Cause, Effect, Exit, Layer, Logger, Option } from "effect";
import { ComputeBackend } from "../../src/backend/service.ts";
import type { Backend } from "../../src/backend/backend.ts";
import { WebGpuBackend } from "../../src/backend/webgpu/webgpu_backend.ts";
import { GpuUnavailableError } from "../../src/backend/webgpu/device.ts";

/** Whether the adapter WebGPU offers by default is a software fallback. */
async function onlyFallbackAdapter(): Promise<boolean> {
  const adapter = await navigator.gpu.requestAdapter({
    powerPreference: "high-performance",
  });
  assert.ok(adapter !== null, "no WebGPU adapter at all");
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  return info.isFallbackAdapter ?? false;
}

/** Uploads `data`, doubles it on the backend, reads it back. */
async function double(b: Backend, data: Float32Array): Promise<Float32Array> {
  const t = b.upload(data);
  const out = b.zeros(data.length);
  b.add(t, t, out);
  const got = await b.read(out);
  b.release(t);
  b.release(out);
  return got;
}

const useBackend = Effect.gen(function* () {
  const backend = yield* ComputeBackend;
  const data = Float32Array.of(1, -2.5, 3e-3);
  const doubled = yield* Effect.promise(() => double(backend, data));
  return { backend, doubled: [...doubled] };
});

Deno.test("ComputeBackend.cpu provides the cpu backend", async () => {
  const { backend, doubled } = await Effect.runPromise(
    useBackend.pipe(Effect.provide(ComputeBackend.cpu)),
  );
  assert.equal(backend.kind, "cpu");
  assert.match(backend.description, /^cpu/);
  assert.deepEqual(doubled, [2, -5, Math.fround(3e-3) * 2]);
});

test.gpu("ComputeBackend.webgpu provides a scoped webgpu backend", async () => {
  const { backend, doubled } = await Effect.runPromise(
    useBackend.pipe(
      Effect.provide(ComputeBackend.webgpu({ allowFallback: true })),
    ),
  );
  assert.equal(backend.kind, "webgpu");
  assert.ok(backend instanceof WebGpuBackend);
  assert.deepEqual(doubled, [2, -5, Math.fround(3e-3) * 2]);
  if (await onlyFallbackAdapter()) {
    assert.match(backend.description, /fallback adapter/);
  }
  // The scope closed when the program ended: the device is destroyed.
  const lost = await backend.gpu.device.lost;
  assert.equal(lost.reason, "destroyed");
});

test.gpu("ComputeBackend.webgpu fails with GpuUnavailableError when only a fallback adapter exists", async () => {
  const fallback = await onlyFallbackAdapter();
  const exit = await Effect.runPromiseExit(
    useBackend.pipe(Effect.provide(ComputeBackend.webgpu())),
  );
  if (fallback) {
    assert.ok(Exit.isFailure(exit));
    const error = Option.getOrUndefined(Cause.findErrorOption(exit.cause));
    assert.ok(error instanceof GpuUnavailableError);
    assert.equal(error.reason, "fallback-rejected");
    assert.match(error.message, /allowFallback/);
  } else {
    assert.ok(Exit.isSuccess(exit));
  }
});

test.gpu("ComputeBackend.auto uses WebGPU only on a real adapter, else the cpu and says why", async () => {
  const fallback = await onlyFallbackAdapter();
  const logs: string[] = [];
  const collect = Logger.make((o) => logs.push(String(o.message)));
  const { backend, doubled } = await Effect.runPromise(
    useBackend.pipe(
      Effect.provide(
        ComputeBackend.auto.pipe(Layer.provide(Logger.layer([collect]))),
      ),
    ),
  );
  assert.deepEqual(doubled, [2, -5, Math.fround(3e-3) * 2]);
  if (fallback) {
    assert.equal(backend.kind, "cpu");
    assert.equal(logs.length, 1);
    assert.match(logs[0], /using the cpu backend.*fallback-rejected/);
  } else {
    assert.equal(backend.kind, "webgpu");
    assert.deepEqual(logs, []);
  }
});

test.gpu("the backends of all layers agree on random data", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.float({ noNaN: true, noDefaultInfinity: true }), {
        minLength: 1,
        maxLength: 50,
      }),
      async (values) => {
        // GPUs may flush f32 subnormals to zero: keep normal numbers and zeros.
        const data = Float32Array.from(
          values,
          (v) => Math.abs(v) < 2 ** -100 ? 0 : v,
        );
        const want = [...data].map((v) => Math.fround(v * 2));
        for (
          const layer of [
            ComputeBackend.cpu,
            ComputeBackend.webgpu({ allowFallback: true }),
            ComputeBackend.auto.pipe(Layer.provide(Logger.layer([]))),
          ]
        ) {
          const got = await Effect.runPromise(
            Effect.gen(function* () {
              const b = yield* ComputeBackend;
              return yield* Effect.promise(() => double(b, data));
            }).pipe(Effect.provide(layer)),
          );
          assert.deepEqual([...got], want);
        }
      },
    ),
    { numRuns: 2 },
  );
});
