/**
 * `deno task infer`: generate text from a trained run directory or a
 * `packed` export, printing it as it comes, with a summary line of prompt and
 * generation speed; `--json` prints one object instead, `--chat` keeps a
 * conversation going over stdin lines until Ctrl-D.
 *
 * @module
 */
import { Console, Effect, Option, type Scope, Stream } from "effect";
import { Command, Flag } from "effect/cli";
import type { ConfigError } from "../common/config_file.ts";
import { loadBitMap } from "../common/config_file.ts";
import type { DataError } from "../common/text_sources.ts";
import { InferenceError } from "../infer/errors.ts";
import {
  type FinishReason,
  generate,
  type GenerateOptions,
  type GenerationEnd,
  type GenerationSession,
} from "../infer/generate.ts";
import { loadModelWeights } from "../infer/load.ts";
import { InferenceModel } from "../infer/runtime.ts";
import type { ModelWeights } from "../infer/weights.ts";
import { WebGpuInferenceModel } from "../infer/webgpu_runtime.ts";
import { acquireGpuDevice } from "../backend/webgpu/device.ts";
import { BufferPool } from "../backend/webgpu/buffer_pool.ts";
import { WebGpuKernels } from "../backend/webgpu/kernels.ts";
import { UsageError } from "./errors.ts";
import { checkThreads, runtimeKernels, threadsFlag } from "./threads.ts";

const int = (name: string, description: string) =>
  Flag.Int(name).pipe(Flag.optional, Flag.withDescription(description));
const num = (name: string, description: string) =>
  Flag.Finite(name).pipe(Flag.optional, Flag.withDescription(description));

/** The flags of `infer`. */
export const inferFlags = {
  model: Flag.String("model").pipe(
    Flag.withDescription("run directory of a trained model, or a packed file"),
  ),
  prompt: Flag.String("prompt").pipe(
    Flag.optional,
    Flag.withDescription(
      "text to continue (with --chat: the conversation's start)",
    ),
  ),
  maxTokens: int("max-tokens", "tokens to generate at most (default 128)"),
  temperature: num(
    "temperature",
    "softmax temperature, 0 = greedy (default 0.8)",
  ),
  topK: int("top-k", "keep the k most likely tokens, 0 = all (default 40)"),
  topP: num(
    "top-p",
    "keep the most likely tokens up to this mass (default 0.95)",
  ),
  minP: num(
    "min-p",
    "drop tokens below this fraction of the best (default 0.05)",
  ),
  repetitionPenalty: num(
    "repetition-penalty",
    "penalty ≥ 1 on the last 64 tokens (default 1: off)",
  ),
  presencePenalty: num(
    "presence-penalty",
    "subtracted from seen tokens' logits (default 0)",
  ),
  frequencyPenalty: num(
    "frequency-penalty",
    "subtracted per occurrence (default 0)",
  ),
  seed: int("seed", "seed of the sampler (default: random, printed)"),
  stop: Flag.String("stop").pipe(
    Flag.atLeast(0),
    Flag.withDescription("end the text at this string (repeatable)"),
  ),
  bitMap: Flag.String("bit-map").pipe(
    Flag.optional,
    Flag.withDescription("LayerBitMap JSON: quantize the run under this map"),
  ),
  context: int("context", "context length in tokens (default: max_seq_len)"),
  slidingWindow: Flag.Boolean("sliding-window").pipe(
    Flag.withDefault(false),
    Flag.withDescription(
      "at the context limit drop the oldest tokens instead of stopping",
    ),
  ),
  ignoreEos: Flag.Boolean("ignore-eos").pipe(
    Flag.withDefault(false),
    Flag.withDescription("keep generating past the end-of-text token"),
  ),
  json: Flag.Boolean("json").pipe(
    Flag.withDefault(false),
    Flag.withDescription("print one JSON object: text, token ids, timings"),
  ),
  chat: Flag.Boolean("chat").pipe(
    Flag.withDefault(false),
    Flag.withDescription(
      "interactive: each stdin line is a turn (Ctrl-D ends)",
    ),
  ),
  backend: Flag.Literals("backend", ["auto", "cpu", "webgpu"]).pipe(
    Flag.withDefault("auto"),
    Flag.withDescription(
      "compute backend: auto = webgpu on a real GPU, else cpu; webgpu also runs on a software adapter",
    ),
  ),
  threads: threadsFlag,
};

type Opt<A> = Option.Option<A>;

/** The parsed flags of `infer`. */
export interface InferFlags {
  readonly model: string;
  readonly prompt: Opt<string>;
  readonly maxTokens: Opt<number>;
  readonly temperature: Opt<number>;
  readonly topK: Opt<number>;
  readonly topP: Opt<number>;
  readonly minP: Opt<number>;
  readonly repetitionPenalty: Opt<number>;
  readonly presencePenalty: Opt<number>;
  readonly frequencyPenalty: Opt<number>;
  readonly seed: Opt<number>;
  readonly stop: ReadonlyArray<string>;
  readonly bitMap: Opt<string>;
  readonly context: Opt<number>;
  readonly slidingWindow: boolean;
  readonly ignoreEos: boolean;
  readonly json: boolean;
  readonly chat: boolean;
  readonly backend: "auto" | "cpu" | "webgpu";
  readonly threads: Opt<number>;
}

const usage = (message: string) => new UsageError({ message });

/** The generation options of the flags, each checked (errors name the flag). */
export function generateOptions(
  f: InferFlags,
): Effect.Effect<GenerateOptions & { readonly seed: number }, UsageError> {
  return Effect.gen(function* () {
    const get = <A>(o: Opt<A>, d: A) => Option.getOrElse(o, () => d);
    const maxTokens = get(f.maxTokens, 128);
    const temperature = get(f.temperature, 0.8);
    const topK = get(f.topK, 40);
    const topP = get(f.topP, 0.95);
    const minP = get(f.minP, 0.05);
    const repetitionPenalty = get(f.repetitionPenalty, 1);
    const presencePenalty = get(f.presencePenalty, 0);
    const frequencyPenalty = get(f.frequencyPenalty, 0);
    const seed = get(f.seed, Math.floor(Math.random() * 2 ** 31));
    const checks: Array<[boolean, string]> = [
      [maxTokens >= 0, `--max-tokens must be ≥ 0, got ${maxTokens}`],
      [temperature >= 0, `--temperature must be ≥ 0, got ${temperature}`],
      [topK >= 0, `--top-k must be ≥ 0, got ${topK}`],
      [topP > 0 && topP <= 1, `--top-p must be in (0, 1], got ${topP}`],
      [minP >= 0 && minP <= 1, `--min-p must be in [0, 1], got ${minP}`],
      [
        repetitionPenalty >= 1,
        `--repetition-penalty must be ≥ 1, got ${repetitionPenalty}`,
      ],
      [
        presencePenalty >= 0,
        `--presence-penalty must be ≥ 0, got ${presencePenalty}`,
      ],
      [
        frequencyPenalty >= 0,
        `--frequency-penalty must be ≥ 0, got ${frequencyPenalty}`,
      ],
      [
        Number.isSafeInteger(seed),
        `--seed must be a safe integer, got ${seed}`,
      ],
      [f.stop.every((s) => s.length > 0), "--stop must not be empty"],
    ];
    for (const [ok, message] of checks) {
      if (!ok) return yield* usage(message);
    }
    return {
      maxTokens,
      temperature,
      topK,
      topP,
      minP,
      repetitionPenalty,
      presencePenalty,
      frequencyPenalty,
      seed,
      stop: f.stop,
      ignoreEos: f.ignoreEos,
    };
  });
}

const encoder = new TextEncoder();
const write = (text: string) =>
  Effect.sync(() => {
    if (text.length > 0) Deno.stdout.writeSync(encoder.encode(text));
  });
const note = (text: string) =>
  Effect.sync(() => Deno.stderr.writeSync(encoder.encode(text)));

const perSecond = (n: number, s: number) => (s > 0 ? n / s : 0);

/** The summary line of one generation. */
function summary(end: GenerationEnd, seed: number): string {
  const why: Record<FinishReason, string> = {
    eos: "end of text",
    stop: "stop string",
    length: "--max-tokens",
    context: "context full",
  };
  return `prompt: ${end.promptTokens} tokens, ${
    perSecond(end.promptTokens, end.promptSeconds).toFixed(1)
  } tokens/s | generated: ${end.generatedTokens} tokens, ${
    perSecond(end.generatedTokens, end.generateSeconds).toFixed(1)
  } tokens/s | stopped: ${why[end.reason]} | seed ${seed}`;
}

/** One generation: streams (or collects, for `--json`) and reports. */
function runOnce(
  session: GenerationSession,
  prompt: ArrayLike<number>,
  options: GenerateOptions & { readonly seed: number },
  json: boolean,
): Effect.Effect<{ text: string; end: GenerationEnd }, InferenceError> {
  return Effect.gen(function* () {
    let text = "";
    const ids: number[] = [];
    let end: GenerationEnd | undefined;
    yield* generate(session, prompt, options).pipe(
      Stream.runForEach((e) => {
        if (e._tag === "Token") ids.push(e.id);
        else end = e;
        text += e.text;
        return json ? Effect.void : write(e.text);
      }),
    );
    const done = end!;
    if (json) {
      yield* Console.log(JSON.stringify({
        text,
        prompt_tokens: Array.from(prompt),
        tokens: ids,
        finish_reason: done.reason,
        seed: options.seed,
        timings: {
          prompt_tokens: done.promptTokens,
          prompt_seconds: done.promptSeconds,
          prompt_tokens_per_second: perSecond(
            done.promptTokens,
            done.promptSeconds,
          ),
          generated_tokens: done.generatedTokens,
          generate_seconds: done.generateSeconds,
          generated_tokens_per_second: perSecond(
            done.generatedTokens,
            done.generateSeconds,
          ),
        },
      }));
    } else {
      yield* note(`\n${summary(done, options.seed)}\n`);
      if (done.reason === "context") {
        yield* note(
          `the context of ${session.contextLength} tokens is full; --sliding-window keeps going\n`,
        );
      }
    }
    return { text, end: done };
  });
}

/** Lines of stdin, one per pull (undefined at end of input). */
function stdinLines(): () => Promise<string | undefined> {
  const reader = Deno.stdin.readable.pipeThrough(new TextDecoderStream())
    .getReader();
  let buf = "";
  let eof = false;
  return async () => {
    for (;;) {
      const nl = buf.indexOf("\n");
      if (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        return line;
      }
      if (eof) {
        if (buf.length === 0) return undefined;
        const line = buf;
        buf = "";
        return line;
      }
      const r = await reader.read();
      if (r.done) eof = true;
      else buf += r.value;
    }
  };
}

/**
 * The model on the backend `--backend` asks for: `webgpu` on any adapter
 * (a software one too), `auto` on a real GPU only, else the CPU runtime on
 * `threads` threads (default: every core).
 */
function acquireModel(
  weights: ModelWeights,
  backend: "auto" | "cpu" | "webgpu",
  threads: number | undefined,
): Effect.Effect<
  InferenceModel | WebGpuInferenceModel,
  UsageError | InferenceError,
  Scope.Scope
> {
  const asInference = (e: unknown) =>
    e instanceof InferenceError ? e : new InferenceError({
      message: e instanceof Error ? e.message : String(e),
    });
  const cpu = Effect.gen(function* () {
    const kernels = yield* runtimeKernels(threads);
    return yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => InferenceModel.create(weights, { kernels }),
        catch: asInference,
      }),
      (m) => Effect.sync(() => m.release()),
    );
  });
  if (backend === "cpu") return cpu;
  return Effect.gen(function* () {
    const device = acquireGpuDevice({ allowFallback: backend === "webgpu" });
    const gpu = backend === "webgpu"
      ? yield* device.pipe(
        Effect.mapError((e) => usage(`--backend webgpu: ${e.message}`)),
      )
      : yield* device.pipe(Effect.option, Effect.map(Option.getOrUndefined));
    if (gpu === undefined) return yield* cpu;
    const pool = yield* Effect.acquireRelease(
      Effect.sync(() => new BufferPool(gpu.device)),
      (p) => Effect.sync(() => p.destroy()),
    );
    return yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          WebGpuInferenceModel.create(weights, new WebGpuKernels(gpu, pool)),
        catch: asInference,
      }),
      (m) => Effect.sync(() => m.release()),
    );
  });
}

/** The `infer` command's program. */
export function inferProgram(
  flags: InferFlags,
): Effect.Effect<void, UsageError | DataError | ConfigError> {
  return Effect.scoped(Effect.gen(function* () {
    const options = yield* generateOptions(flags);
    const threads = yield* checkThreads(flags.threads, flags.backend);
    const prompt = Option.getOrUndefined(flags.prompt);
    if (prompt === undefined && !flags.chat) {
      return yield* usage("--prompt is required (or use --chat)");
    }
    if (prompt === "") return yield* usage("--prompt is empty");
    if (flags.chat && flags.json) {
      return yield* usage("--json and --chat cannot be combined");
    }
    const bitMapFile = Option.getOrUndefined(flags.bitMap);
    const bitMap = bitMapFile === undefined
      ? undefined
      : yield* loadBitMap(bitMapFile);
    const weights = yield* loadModelWeights(flags.model, {
      bitMap,
      bitMapSource: bitMapFile,
    });
    const model = yield* acquireModel(weights, flags.backend, threads);
    const ctx = Option.getOrElse(flags.context, () => model.config.max_seq_len);
    if (!(ctx >= 1)) return yield* usage(`--context must be ≥ 1, got ${ctx}`);
    const session = yield* Effect.try({
      try: () =>
        model.session({
          contextLength: ctx,
          slidingWindow: flags.slidingWindow,
        }),
      catch: (e) => usage(`--context: ${e instanceof Error ? e.message : e}`),
    });
    const tokenizer = model.tokenizer;
    const checkFits = (ids: ArrayLike<number>, what: string) =>
      !flags.slidingWindow && session.position + ids.length > ctx
        ? Effect.fail(usage(
          `${what} is ${ids.length} tokens${
            session.position > 0 ? ` after ${session.position} in context` : ""
          }, longer than the context of ${ctx} tokens (--context, or --sliding-window)`,
        ))
        : Effect.void;
    if (!flags.chat) {
      const ids = tokenizer.encode(prompt!);
      yield* checkFits(ids, "--prompt");
      if (!flags.json) yield* write(prompt!);
      yield* runOnce(session, ids, options, flags.json);
      return;
    }
    // Chat: the conversation lives in the session's cache; each turn adds
    // the user's line and the model's continuation up to a newline.
    const nextLine = stdinLines();
    const turnOptions = { ...options, stop: [...(options.stop ?? []), "\n"] };
    let pending = prompt === undefined ? "" : `${prompt}\n`;
    yield* note("chat: type a line and press Enter; Ctrl-D ends\n");
    for (let turn = 0;; turn++) {
      yield* note("> ");
      const line = yield* Effect.promise(() => nextLine());
      if (line === undefined) break;
      const ids = tokenizer.encode(`${pending}${line}\n`);
      pending = "";
      if (ids.length === 0) continue;
      yield* checkFits(ids, "the conversation");
      const { end } = yield* runOnce(
        session,
        ids,
        { ...turnOptions, seed: options.seed + turn },
        false,
      );
      if (end.reason === "context") break;
    }
    yield* note("\n");
  })).pipe(
    Effect.catchTag("InferenceError", (e) => Effect.fail(usage(e.message))),
  );
}

/** The `infer` command. */
export const inferCommand: Command.Command<
  "infer",
  InferFlags,
  // deno-lint-ignore ban-types
  {},
  UsageError | DataError | ConfigError
> = Command.make("infer", inferFlags, inferProgram).pipe(
  Command.withDescription(
    "generate text from a trained run or a packed export, streaming it",
  ),
);
