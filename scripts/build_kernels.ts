/**
 * Generates `src/backend/webgpu/kernels.wgsl.ts` from `kernels/*.wgsl`: per
 * kernel file its binding layout, read from the WGSL declarations by
 * `parseKernelLayout` (storage bindings, uniform fields, the bindings of each
 * entry point), and its source without those declarations (rendered back from
 * the layout at load), preceded by the preludes it includes from
 * `kernels/prelude/`. Embedding the sources keeps the kernels loadable when the
 * package is imported from JSR (where reading files next to the module is not
 * possible).
 *
 * A kernel includes a prelude with a comment line
 * `// #include prelude/<name>.wgsl`; the prelude's text is stored once and
 * prepended (WGSL declarations may come in any order).
 *
 * Run: `deno run --allow-read --allow-write scripts/build_kernels.ts`
 *
 * @module
 */
import {
  type KernelLayout,
  parseKernelLayout,
  renderDeclarations,
  stripDeclarations,
} from "../src/backend/webgpu/kernel_layout.ts";

/** One WGSL source file: its base name without `.wgsl`, and its text. */
export interface KernelSource {
  /** File name without `.wgsl`, e.g. `matmul_register`. */
  readonly name: string;
  /** The WGSL text. */
  readonly code: string;
}

/** The kernel files of `kernels/` and the preludes they may include. */
export interface KernelSources {
  /** `kernels/*.wgsl`, sorted by name. */
  readonly kernels: readonly KernelSource[];
  /** `kernels/prelude/*.wgsl`, sorted by name. */
  readonly preludes: readonly KernelSource[];
}

/** Directory holding the WGSL sources. */
export const KERNELS_DIR: URL = new URL("../kernels/", import.meta.url);

/** Path of the generated TypeScript module. */
export const GENERATED_MODULE: URL = new URL(
  "../src/backend/webgpu/kernels.wgsl.ts",
  import.meta.url,
);

const INCLUDE = /^\/\/ #include prelude\/(\w+)\.wgsl$/gm;

/** Constant name for a prelude file: `workgroup_reduce` → `WORKGROUP_REDUCE_WGSL`. */
export function constantName(name: string): string {
  if (!/^[a-z][a-z0-9_]*$/.test(name)) {
    throw new Error(
      `kernel file name "${name}.wgsl" must be lower snake case ([a-z][a-z0-9_]*)`,
    );
  }
  return `${name.toUpperCase()}_WGSL`;
}

async function readDir(dir: URL): Promise<KernelSource[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && entry.name.endsWith(".wgsl")) names.push(entry.name);
  }
  names.sort();
  return await Promise.all(names.map(async (file) => ({
    name: file.slice(0, -".wgsl".length),
    code: await Deno.readTextFile(new URL(file, dir)),
  })));
}

/** Reads every `*.wgsl` file of `dir` and of its `prelude/` folder. */
export async function readKernelSources(
  dir: URL = KERNELS_DIR,
): Promise<KernelSources> {
  return {
    kernels: await readDir(dir),
    preludes: await readDir(new URL("prelude/", dir)),
  };
}

// The first comment line of a file says what it computes; it becomes the JSDoc.
function summary(code: string): string {
  const first = code.split("\n").find((line) => line.startsWith("//"));
  if (first === undefined) return "";
  return ": " +
    first.replace(/^\/\/\s*/, "").replace(/:$/, "").replaceAll("*/", "* /");
}

// Template literals keep the WGSL readable in the generated file; only `\`, `` ` ``
// and `${` need escaping.
function templateLiteral(code: string): string {
  return "`" +
    code.replaceAll("\\", "\\\\").replaceAll("`", "\\`").replaceAll(
      "${",
      "\\${",
    ) +
    "`";
}

// A layout value as a one-line TypeScript literal (object keys are WGSL identifiers).
function literal(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(literal).join(", ")}]`;
  if (typeof value === "object" && value !== null) {
    const fields = Object.entries(value).map(([k, v]) => `${k}: ${literal(v)}`);
    return `{ ${fields.join(", ")} }`;
  }
  return JSON.stringify(value);
}

// The layout of a kernel and its code without declarations, checked to round-trip:
// the declarations rendered at load describe the same bindings as the file's.
function embed(
  name: string,
  code: string,
  includes: readonly KernelSource[],
): { layout: KernelLayout; stripped: string } {
  const full = [...includes.map((p) => p.code), code].join("\n");
  const layout = parseKernelLayout(name, full);
  const stripped = stripDeclarations(code, layout);
  const again = parseKernelLayout(
    name,
    renderDeclarations(layout) +
      [...includes.map((p) => p.code), stripped].join("\n"),
  );
  if (literal(again) !== literal(layout)) {
    throw new Error(
      `kernels/${name}.wgsl: declarations must be plain lines the layout can render back`,
    );
  }
  return { layout, stripped };
}

/** Renders the generated module (its layout lines are left as written: `deno fmt` skips the file). */
export function renderKernelsModule(sources: KernelSources): string {
  const preludes = new Map(sources.preludes.map((p) => [p.name, p]));
  const used = new Set<string>();
  const modules = sources.kernels.map(({ name, code }) => {
    constantName(name);
    const includes = [...code.matchAll(INCLUDE)].map(([, p]) => {
      const prelude = preludes.get(p);
      if (prelude === undefined) {
        throw new Error(
          `kernels/${name}.wgsl includes missing prelude/${p}.wgsl`,
        );
      }
      used.add(p);
      return prelude;
    });
    const { layout, stripped } = embed(name, code, includes);
    const source = [
      ...includes.map((p) => constantName(p.name)),
      templateLiteral(stripped),
    ];
    return `  /** \`kernels/${name}.wgsl\`${summary(code)} */\n` +
      `  ${name}: {\n` +
      `    storage: ${literal(layout.storage)},\n` +
      `    uniform: ${literal(layout.uniform)},\n` +
      `    entries: ${literal(layout.entries)},\n` +
      `    code: ${source.join(" + ")},\n` +
      `  },\n`;
  });
  const parts = [
    "// deno-fmt-ignore-file\n",
    "// Generated by scripts/build_kernels.ts from kernels/*.wgsl. Do not edit.\n",
    "/**\n * The WGSL kernels, one entry per file of `kernels/`: binding layout and source\n" +
    " * without declarations (see `./kernel_layout.ts`).\n *\n * @module\n */\n",
    'import type { KernelModule } from "./kernel_layout.ts";\n',
  ];
  for (const { name, code } of sources.preludes) {
    if (!used.has(name)) continue;
    parts.push(
      `\n/** WGSL prelude \`kernels/prelude/${name}.wgsl\`${
        summary(code)
      } */\n` +
        `const ${constantName(name)}: string = ${templateLiteral(code)};\n`,
    );
  }
  const names = sources.kernels.map((k) => JSON.stringify(k.name));
  parts.push(
    `\n/** The name of a kernel module: its file name in \`kernels/\`. */\n` +
      `export type KernelName =\n  | ${names.join("\n  | ")};\n`,
    `\n/** Every kernel module, by name. */\n` +
      `export const KERNEL_MODULES: Readonly<Record<KernelName, KernelModule>> = {\n` +
      modules.join("") + `};\n`,
  );
  return parts.join("");
}

if (import.meta.main) {
  await Deno.writeTextFile(
    GENERATED_MODULE,
    renderKernelsModule(await readKernelSources()),
  );
  console.log(`wrote ${GENERATED_MODULE.pathname}`);
}
