// Minimal WebGPU lifecycle with no project code, for the "corrupted size vs.
// prev_size" abort at exit (docs/RELIABILITY.md, "Heap corruption at exit"):
// adapter, device, buffers, compute pipelines, a dispatch and a read-back, then
// everything destroyed. `deno test` runs each test file in its own isolate (its
// own WebGPU instance) in one process; `--isolates N` does the same with N
// workers in sequence, `--devices K` makes K devices per isolate.
// Run many times: see docs/RELIABILITY.md for the commands.
const flag = (name: string, fallback: number): number => {
  const i = Deno.args.indexOf(name);
  return i < 0 ? fallback : Number(Deno.args[i + 1]);
};

/** One device's life: 8 pipelines, one dispatch each, one read-back. */
async function lifecycle(): Promise<void> {
  const adapter = await navigator.gpu.requestAdapter();
  if (adapter === null) throw new Error("no WebGPU adapter");
  const device = await adapter.requestDevice();
  const n = 4096;
  const input = device.createBuffer({
    size: n * 4,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
  });
  const output = device.createBuffer({
    size: n * 4,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
  });
  const staging = device.createBuffer({
    size: n * 4,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(
    input,
    0,
    Float32Array.from({ length: n }, (_, i) => i),
  );
  const encoder = device.createCommandEncoder();
  for (let k = 1; k <= 8; k++) {
    const module = device.createShaderModule({
      code: `
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3u) {
  if (id.x < arrayLength(&a)) { b[id.x] = ${k}.0 * a[id.x]; }
}`,
    });
    const pipeline = device.createComputePipeline({
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(
      0,
      device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: input } },
          { binding: 1, resource: { buffer: output } },
        ],
      }),
    );
    pass.dispatchWorkgroups(n / 64);
    pass.end();
  }
  encoder.copyBufferToBuffer(output, 0, staging, 0, n * 4);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const last = new Float32Array(staging.getMappedRange())[n - 1];
  staging.unmap();
  if (last !== 8 * (n - 1)) throw new Error(`wrong result ${last}`);
  for (const b of [input, output, staging]) b.destroy();
  device.destroy();
}

/** K lifecycles in this isolate. */
async function isolateWork(devices: number): Promise<void> {
  for (let d = 0; d < devices; d++) await lifecycle();
}

const WORKER = "?worker";
if (new URL(import.meta.url).search === WORKER) {
  // A worker: do the work the main isolate asks for, then say so.
  const scope = globalThis as unknown as {
    onmessage: (e: MessageEvent<number>) => void;
    postMessage: (m: string) => void;
  };
  scope.onmessage = async (e) => {
    await isolateWork(e.data);
    scope.postMessage("done");
  };
} else {
  const devices = flag("--devices", 1);
  for (let w = 0; w < flag("--isolates", 0); w++) {
    const worker = new Worker(new URL(WORKER, import.meta.url), {
      type: "module",
    });
    await new Promise<void>((resolve, reject) => {
      worker.onmessage = () => resolve();
      worker.onerror = (e) => reject(e.error ?? new Error(e.message));
      worker.postMessage(devices);
    });
    worker.terminate();
  }
  await isolateWork(devices);
  console.log("ok");
}
