/**
 * Runs the `ternary` command line as a user would, in a scratch directory of
 * its own (so its dataset cache and runs stay there), for the reliability
 * tests.
 *
 * @module
 */
import { strict as assert } from "node:assert";

const ROOT = new URL("../../", import.meta.url).pathname;
const MAIN = `${ROOT}src/cli/main.ts`;
const CONFIG = `${ROOT}deno.json`;

/** What a finished command printed and its exit status. */
export interface CliResult {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/** The environment of the child: ours without XDG_RUNTIME_DIR, no colours. */
export function childEnv(): Record<string, string> {
  const env = Deno.env.toObject();
  delete env.XDG_RUNTIME_DIR;
  return { ...env, NO_COLOR: "1" };
}

/** `deno run -q -A src/cli/main.ts ...args` in `cwd`. */
export async function cli(cwd: string, ...args: string[]): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-q", "-A", "--config", CONFIG, MAIN, ...args],
    cwd,
    env: childEnv(),
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    out: dec.decode(out.stdout),
    err: dec.decode(out.stderr),
  };
}

/**
 * Exit status 1 and exactly one line on stderr, `error: …`, holding every one
 * of `words`; no stack trace on either stream.
 */
export function assertOneErrorLine(r: CliResult, ...words: string[]): void {
  const all = `${r.out}\n${r.err}`;
  assert.equal(r.code, 1, `exit ${r.code}; stderr:\n${r.err}`);
  assert.ok(!/\bat .*\.(ts|js):\d+/.test(all), `stack trace in:\n${all}`);
  const errors = r.err.split("\n").filter((l) => l.startsWith("error"));
  assert.equal(errors.length, 1, `expected one error line in:\n${r.err}`);
  for (const w of words) {
    assert.ok(errors[0].includes(w), `expected ${w} in: ${errors[0]}`);
  }
}

/** A seeded word salad: `paragraphs` paragraphs of 20–60 words. */
export function wordSalad(paragraphs: number, seed = 1): string[] {
  const words = ("the of and to a in that is was he for it with as his on " +
    "be at by had are but from or have an they which one you were her all " +
    "she there would their we him been has when who will more no if out so " +
    "said what up its about into than them can only other new some could " +
    "time these two may then do first any my now such like our over man " +
    "me even most made after also did many before must through back years")
    .split(" ");
  let s = seed;
  const next = () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 2 ** 32;
  };
  return Array.from({ length: paragraphs }, () => {
    const n = 20 + Math.floor(next() * 41);
    return Array.from(
      { length: n },
      () => words[Math.floor(next() * words.length)],
    ).join(" ") + ".";
  });
}

/** A model small enough to train in a second (vocab 300, one layer, width 32). */
export const SMALL_CONFIG = {
  vocab_size: 300,
  hidden_size: 32,
  num_heads: 2,
  num_layers: 1,
  intermediate_size: 64,
  max_seq_len: 16,
};

/** Flags of a quick CPU run on {@link SMALL_CONFIG} and `text.txt`. */
export const QUICK = [
  "--config",
  "cfg.json",
  "--data",
  "text.txt",
  "--backend",
  "cpu",
  "--batch",
  "4",
];

/** A scratch directory with `text.txt` (60 paragraphs) and `cfg.json`. */
export async function scratchDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "ternary-rel-" });
  await Deno.writeTextFile(`${dir}/text.txt`, wordSalad(60).join("\n\n"));
  await Deno.writeTextFile(`${dir}/cfg.json`, JSON.stringify(SMALL_CONFIG));
  return dir;
}
