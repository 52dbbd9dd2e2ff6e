/**
 * A tokenized dataset on disk: `tokenizer.json`, `train.tok` and `valid.tok`
 * in one directory. {@link prepareDataset} builds it from the built-in Brown
 * corpus or a user's text and caches it, keyed by the source and vocab size,
 * so later runs only open the token files.
 *
 * @module
 */
import { Effect } from "effect";
import { loadBrown } from "./corpus.ts";
import { pathExists } from "./path_exists.ts";
import { DataError, loadTextSplit, type TextSplit } from "./text_sources.ts";
import {
  loadTokenizer,
  saveTokenizer,
  type Tokenizer,
  tokenizerHash,
} from "./tokenizer.ts";
import { trainBpe } from "./bpe_train.ts";
import { writeTokenFile } from "./token_file.ts";

/** Where a prepared dataset lives and what it was made from. */
export interface DatasetFiles {
  /** The dataset directory. */
  readonly dir: string;
  /** `<dir>/tokenizer.json`. */
  readonly tokenizer: string;
  /** `<dir>/train.tok`. */
  readonly train: string;
  /** `<dir>/valid.tok`. */
  readonly valid: string;
}

/** Options of {@link prepareDataset}. */
export interface PrepareOptions {
  /** Text to train on (file, directory, JSONL or WikiText); absent: the Brown corpus. */
  readonly data?: string;
  /** BPE vocabulary size. */
  readonly vocabSize: number;
  /** Directory holding prepared datasets (e.g. `.cache/datasets`). */
  readonly cacheDir: string;
  /** Use an existing `tokenizer.json` instead of training one. */
  readonly tokenizer?: string;
  /** Called with progress lines. */
  readonly log?: (line: string) => void;
}

/** The files of the dataset `name` under `cacheDir`. */
export function datasetFiles(cacheDir: string, name: string): DatasetFiles {
  const dir = `${cacheDir}/${name}`;
  return {
    dir,
    tokenizer: `${dir}/tokenizer.json`,
    train: `${dir}/train.tok`,
    valid: `${dir}/valid.tok`,
  };
}

/**
 * The cache name of a source: `brown-v4096`, or the file's base name with a
 * digest of its absolute path, size and modification time, so edited data is
 * tokenized again.
 */
function sourceName(
  options: PrepareOptions,
): Effect.Effect<string, DataError> {
  const suffix = `v${options.vocabSize}${options.tokenizer ? "-tok" : ""}`;
  const data = options.data;
  if (data === undefined) return Effect.succeed(`brown-${suffix}`);
  return Effect.tryPromise({
    try: async () => {
      const real = await Deno.realPath(data);
      const stat = await Deno.stat(real);
      const key = `${real}|${stat.size}|${stat.mtime?.getTime() ?? 0}|${
        options.tokenizer ?? ""
      }`;
      const digest = new Uint8Array(
        await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key)),
      );
      const hex = [...digest.slice(0, 6)].map((b) =>
        b.toString(16).padStart(2, "0")
      ).join("");
      const base = real.split("/").pop()!.replace(/[^A-Za-z0-9._-]/g, "_");
      return `${base}-${hex}-${suffix}`;
    },
    catch: () =>
      new DataError({
        file: data,
        message: `${data}: no such file or directory (--data)`,
      }),
  });
}

/**
 * The prepared dataset of `options`: reused from the cache when its files
 * exist and agree, otherwise built — text read and split (Brown: fixed
 * document split), BPE trained (or `options.tokenizer` loaded), both splits
 * encoded (documents separated by `<|endoftext|>`) and written atomically.
 */
export function prepareDataset(
  options: PrepareOptions,
): Effect.Effect<{ files: DatasetFiles; tokenizer: Tokenizer }, DataError> {
  const log = options.log ?? (() => {});
  return Effect.gen(function* () {
    const name = yield* sourceName(options);
    const files = datasetFiles(options.cacheDir, name);
    const cached = (yield* pathExists(files.tokenizer)) &&
      (yield* pathExists(files.train)) && (yield* pathExists(files.valid));
    if (cached) {
      // The token files are checked against this tokenizer when opened.
      const tokenizer = yield* loadTokenizer(files.tokenizer);
      log(`dataset: using ${files.dir}`);
      return { files, tokenizer };
    }
    log(`dataset: preparing ${files.dir}`);
    const split: TextSplit = options.data === undefined
      ? yield* loadBrown()
      : yield* loadTextSplit(options.data);
    const t0 = performance.now();
    const tokenizer = options.tokenizer === undefined
      ? yield* Effect.try({
        try: () => trainBpe(split.train, { vocabSize: options.vocabSize }),
        catch: (e) =>
          new DataError({
            file: options.data ?? "brown",
            message: `${
              options.data ?? "brown corpus"
            }: cannot train a ${options.vocabSize}-token BPE: ${
              e instanceof Error ? e.message : e
            }`,
          }),
      })
      : yield* loadTokenizer(options.tokenizer);
    if (tokenizer.vocabSize !== options.vocabSize) {
      return yield* new DataError({
        file: options.tokenizer ?? files.tokenizer,
        message: `${
          options.tokenizer ?? files.tokenizer
        }: the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${options.vocabSize}`,
      });
    }
    log(
      `dataset: tokenizer with ${tokenizer.vocabSize} tokens in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      }s`,
    );
    yield* Effect.tryPromise({
      try: () => Deno.mkdir(files.dir, { recursive: true }),
      catch: (e) =>
        new DataError({ file: files.dir, message: `${files.dir}: ${e}` }),
    });
    const hash = tokenizerHash(tokenizer);
    const train = tokenizer.encodeDocuments(split.train);
    const valid = tokenizer.encodeDocuments(split.valid);
    yield* writeTokenFile(files.train, train, tokenizer.vocabSize, hash);
    yield* writeTokenFile(files.valid, valid, tokenizer.vocabSize, hash);
    // The tokenizer is written last: it marks the dataset complete.
    yield* saveTokenizer(files.tokenizer, tokenizer);
    log(
      `dataset: ${train.length.toLocaleString("en-US")} training and ${
        valid.length.toLocaleString("en-US")
      } validation tokens`,
    );
    return { files, tokenizer };
  });
}
