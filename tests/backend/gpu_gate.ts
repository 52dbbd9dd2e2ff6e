// Tests that need a WebGPU adapter are declared with `test.gpu(name, fn)` instead
// of `Deno.test(name, fn)` (same shape, so deno fmt lays them out alike). On a
// machine without an adapter they are ignored, and one line says why; with the
// `CI` environment variable set they run, and fail with GpuUnavailableError, so
// CI never passes without having run them.

/** Whether WebGPU offers an adapter; the probe's adapter is not kept. */
async function adapterFound(): Promise<boolean> {
  try {
    return (await navigator.gpu?.requestAdapter()) != null;
  } catch {
    return false;
  }
}

const ci = Deno.env.get("CI") ?? "";
const inCi = ci !== "" && ci !== "0" && ci !== "false";

/** True when the WebGPU tests are ignored: no adapter, and not under CI. */
export const gpuTestsIgnored: boolean = !inCi && !(await adapterFound());

// deno test runs each file in its own isolate, so this module runs once per
// file; the process environment, shared by all of them, keeps the line to one.
const SAID = "TERNARY_GPU_TESTS_IGNORED_SAID";
if (gpuTestsIgnored && Deno.env.get(SAID) === undefined) {
  Deno.env.set(SAID, "1");
  console.error(
    "webgpu tests ignored: no WebGPU adapter (install mesa-vulkan-drivers, or " +
      "check DENO_WEBGPU_BACKEND and VK_ICD_FILENAMES); with CI set they fail instead",
  );
}

/** Test registration for tests that need a WebGPU adapter. */
export const test: {
  /** `Deno.test(name, fn)`, ignored when {@link gpuTestsIgnored}. */
  readonly gpu: (
    name: string,
    fn: (t: Deno.TestContext) => void | Promise<void>,
  ) => void;
} = {
  gpu: (name, fn) => Deno.test(name, { ignore: gpuTestsIgnored }, fn),
};
