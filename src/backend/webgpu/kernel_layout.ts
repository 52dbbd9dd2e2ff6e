/**
 * The binding layout of a WGSL kernel module, read from its declarations: the
 * storage buffers (`@group(0) @binding(N) var<storage, read|read_write> name:
 * array<T>`), the uniform struct (`var<uniform> params: Params` with u32, i32
 * and f32 fields), and which bindings each `@compute` entry point reaches.
 *
 * `scripts/build_kernels.ts` parses each file of `kernels/` with
 * {@link parseKernelLayout}, stores the layout in the generated
 * `kernels.wgsl.ts` and the source without its declarations; at load,
 * {@link kernelSource} renders the declarations back from the layout. The
 * wrappers of `kernels.ts` then bind buffers and pack uniforms by WGSL name,
 * so a binding number or a field order is written once: in the WGSL file.
 *
 * @module
 */

/** A scalar type of a uniform field. */
export type UniformType = "u32" | "i32" | "f32";

/** One storage binding: variable name, binding number, access, element type. */
export type StorageBinding = readonly [
  name: string,
  binding: number,
  access: "read" | "read_write",
  element: string,
];

/** The layout of one kernel module (bindings of group 0). */
export interface KernelLayout {
  /** Storage bindings, in declaration order. */
  readonly storage: readonly StorageBinding[];
  /** The uniform: variable name, binding number, struct name and its fields in order. */
  readonly uniform: readonly [
    name: string,
    binding: number,
    struct: string,
    fields: readonly (readonly [string, UniformType])[],
  ];
  /** Per entry point, the bindings (storage and uniform) it uses, in binding order. */
  readonly entries: Readonly<Record<string, readonly string[]>>;
}

/** A kernel module as embedded: its source without the declarations, and its layout. */
export interface KernelModule extends KernelLayout {
  /** WGSL without the uniform struct and binding declarations (preludes included). */
  readonly code: string;
}

const BINDING =
  /^@group\((\d+)\)\s*@binding\((\d+)\)\s*var<(storage|uniform)(?:,\s*(read|read_write))?>\s*([A-Za-z_]\w*)\s*:\s*(?:array<\s*([A-Za-z_]\w*)\s*>|([A-Za-z_]\w*))\s*;[^\n]*\n?/gm;

// Comments removed (they may mention names and braces), line structure kept.
function stripComments(code: string): string {
  return code.replace(/\/\/[^\n]*/g, "");
}

// The body of each `fn name(…) … { … }`: from its opening brace to the matching one.
function functionBodies(code: string): Map<string, string> {
  const bodies = new Map<string, string>();
  for (const m of code.matchAll(/\bfn\s+([A-Za-z_]\w*)\s*\(/g)) {
    const open = code.indexOf("{", m.index);
    let depth = 0;
    let i = open;
    for (; i < code.length; i++) {
      if (code[i] === "{") depth++;
      else if (code[i] === "}" && --depth === 0) break;
    }
    bodies.set(m[1], code.slice(open, i + 1));
  }
  return bodies;
}

function structPattern(name: string): RegExp {
  return new RegExp(`^struct\\s+${name}\\s*\\{([^}]*)\\}[^\\n]*\\n?`, "m");
}

/**
 * Reads the layout of `kernels/<name>.wgsl`: its group-0 storage bindings
 * (arrays), its one uniform binding and that struct's u32/i32/f32 fields, and
 * per `@compute` entry point the bindings it reaches through its body and the
 * functions it calls (a member access such as `gid.x` is not a use of `x`):
 * the bindings of the pipeline's automatic layout. Throws an `Error` naming the
 * file for anything else.
 */
export function parseKernelLayout(name: string, wgsl: string): KernelLayout {
  const code = stripComments(wgsl);
  const fail = (what: string): never => {
    throw new Error(`kernels/${name}.wgsl: ${what}`);
  };
  const storage: StorageBinding[] = [];
  let uniform: KernelLayout["uniform"] | undefined;
  for (const m of code.matchAll(BINDING)) {
    const [, group, num, kind, access, variable, element, type] = m;
    if (group !== "0") fail(`${variable} is in group ${group}, not 0`);
    if (kind === "storage") {
      if (element === undefined) fail(`storage ${variable} is not an array`);
      storage.push([variable, Number(num), access as "read", element]);
      continue;
    }
    if (uniform !== undefined) fail("more than one uniform binding");
    const struct = code.match(structPattern(type ?? "")) ??
      fail(`uniform struct ${type} not found`);
    const fields = struct[1].split(",").map((f) => f.trim())
      .filter((f) => f !== "").map((f) => {
        const field = f.match(/^([A-Za-z_]\w*)\s*:\s*(u32|i32|f32)$/) ??
          fail(`uniform field "${f}" is not a u32, i32 or f32`);
        return [field[1], field[2] as UniformType] as const;
      });
    uniform = [variable, Number(num), type!, fields];
  }
  if (uniform === undefined) return fail("no var<uniform> binding");
  const numbers = new Map<string, number>([[uniform[0], uniform[1]]]);
  for (const [variable, n] of storage) numbers.set(variable, n);
  const bodies = functionBodies(code);
  const entries: Record<string, readonly string[]> = {};
  for (const m of code.matchAll(/@compute[^;{]*?\bfn\s+([A-Za-z_]\w*)\s*\(/g)) {
    const used = new Set<string>();
    const seen = new Set<string>();
    const visit = (fn: string): void => {
      if (seen.has(fn)) return;
      seen.add(fn);
      for (
        const [word] of bodies.get(fn)!.matchAll(/(?<![.\w])[A-Za-z_]\w*/g)
      ) {
        if (numbers.has(word)) used.add(word);
        else if (bodies.has(word)) visit(word);
      }
    };
    visit(m[1]);
    entries[m[1]] = [...used].sort((a, b) => numbers.get(a)! - numbers.get(b)!);
  }
  if (Object.keys(entries).length === 0) fail("no @compute entry point");
  return { storage, uniform, entries };
}

/**
 * `wgsl` without the declarations {@link parseKernelLayout} reads (the binding
 * lines and the uniform struct), which {@link kernelSource} renders back.
 */
export function stripDeclarations(wgsl: string, layout: KernelLayout): string {
  return wgsl.replace(BINDING, "")
    .replace(structPattern(layout.uniform[2]), "")
    .replace(/\n{3,}/g, "\n\n");
}

/** The declarations of a layout, in the form {@link parseKernelLayout} reads. */
export function renderDeclarations(layout: KernelLayout): string {
  const [uniform, binding, struct, fields] = layout.uniform;
  const lines = [
    `struct ${struct} {`,
    ...fields.map(([f, t]) => `  ${f}: ${t},`),
    "}",
    "",
    ...layout.storage.map(([name, n, access, element]) =>
      `@group(0) @binding(${n}) var<storage, ${access}> ${name}: array<${element}>;`
    ),
    `@group(0) @binding(${binding}) var<uniform> ${uniform}: ${struct};`,
    "",
  ];
  return lines.join("\n");
}

/** The full WGSL of an embedded module: its declarations, then its code. */
export function kernelSource(module: KernelModule): string {
  return renderDeclarations(module) + module.code;
}
