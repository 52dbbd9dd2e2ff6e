/**
 * `deno doc --lint` on the public entry points, tolerating exactly one kind of
 * finding: `private-type-ref` to a type that lives in an npm dependency (such
 * as effect's `Effect` or `Schema.Codec`). Deno 2.9.6 reports those although
 * the type is public in its package (denoland/deno#27364). Every other finding,
 * and any private reference to a type declared in this repository, fails.
 *
 * @module
 */
const entries = Deno.args.length > 0 ? Deno.args : ["mod.ts"];
const out = await new Deno.Command(Deno.execPath(), {
  args: ["doc", "--lint", ...entries],
  env: { NO_COLOR: "1" },
  stdout: "piped",
  stderr: "piped",
}).output();
const text = new TextDecoder().decode(out.stderr) +
  new TextDecoder().decode(out.stdout);

async function declaredHere(name: string): Promise<boolean> {
  const decl = new RegExp(
    `^\\s*(export\\s+)?(declare\\s+)?(abstract\\s+)?(interface|type|class|function|const|let|enum)\\s+${name}\\b`,
    "m",
  );
  for await (const file of walk("src")) {
    if (decl.test(await Deno.readTextFile(file))) return true;
  }
  return false;
}

async function* walk(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) yield* walk(p);
    else if (p.endsWith(".ts")) yield p;
  }
}

const findings = [...text.matchAll(/^error\[([a-z-]+)\]: (.*)$/gm)];
const fatal: string[] = [];
let tolerated = 0;
for (const [, kind, message] of findings) {
  const ref = /references private type '([^']+)'/.exec(message);
  if (kind === "private-type-ref" && ref && !(await declaredHere(ref[1]))) {
    tolerated++;
  } else fatal.push(`error[${kind}]: ${message}`);
}
if (out.code !== 0 && findings.length === 0) {
  console.error(text);
  Deno.exit(1);
}
for (const f of fatal) console.error(f);
console.log(
  `doc lint: ${fatal.length} problem(s); ${tolerated} reference(s) to npm dependency types tolerated`,
);
if (fatal.length > 0) Deno.exit(1);
