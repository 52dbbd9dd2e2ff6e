/**
 * Text generation as an effect `Stream`: the prompt is prefilled into a
 * {@link KvSession}, then each step samples a token, decodes it into the
 * cache and emits it with the text it completes; the stream ends with one
 * {@link GenerationEnd} that says why and how fast.
 *
 * @example
 * ```ts ignore
 * import { Effect, Stream } from "effect";
 * const session = model.session();
 * const prompt = model.tokenizer.encode("Once upon a time");
 * await Effect.runPromise(
 *   generate(session, prompt, { temperature: 0.8, topK: 40, maxTokens: 64, seed: 1 }).pipe(
 *     Stream.runForEach((e) => Effect.sync(() => e._tag === "Token" && console.log(e.text))),
 *   ),
 * );
 * ```
 *
 * @module
 */
import { Effect, Stream } from "effect";
import { END_OF_TEXT, type Tokenizer } from "../common/tokenizer.ts";
import { InferenceError } from "./errors.ts";
import { type SamplerOptions, TokenSampler } from "./sampling.ts";
import { TextStreamer } from "./text_stream.ts";

/**
 * What {@link generate} needs of a session: the CPU's `KvSession`, or the
 * WebGPU runtime's `WebGpuSession` (whose logits arrive asynchronously).
 */
export interface GenerationSession {
  /** The model, for its tokenizer. */
  readonly model: { readonly tokenizer: Tokenizer };
  /** Tokens the cache holds at most. */
  readonly contextLength: number;
  /** Whether a full cache drops its oldest token. */
  readonly slidingWindow: boolean;
  /** Tokens seen so far. */
  readonly position: number;
  /** Runs the prompt; the logits of its last token. */
  prefill(ids: ArrayLike<number>): Float32Array | Promise<Float32Array>;
  /** Appends one token; its logits. */
  decode(id: number): Float32Array | Promise<Float32Array>;
}

/** Options of {@link generate}: sampling, penalties, seed and when to stop. */
export interface GenerateOptions extends SamplerOptions {
  /** Tokens to generate at most (default 128). */
  readonly maxTokens?: number;
  /** Strings that end the text (the text stops before them). */
  readonly stop?: readonly string[];
  /** Keep going past the end-of-text token (default false: it ends the text). */
  readonly ignoreEos?: boolean;
}

/** One generated token and the text it completes ("" while a character is unfinished). */
export interface GeneratedToken {
  /** Discriminates the events. */
  readonly _tag: "Token";
  /** The token id. */
  readonly id: number;
  /** Text that became final with this token. */
  readonly text: string;
}

/** Why generation stopped. */
export type FinishReason = "eos" | "stop" | "length" | "context";

/** The last event of a generation. */
export interface GenerationEnd {
  /** Discriminates the events. */
  readonly _tag: "End";
  /**
   * `eos`: the end-of-text token; `stop`: a stop string; `length`:
   * `maxTokens`; `context`: the context is full (no sliding window).
   */
  readonly reason: FinishReason;
  /** Text held back until the end (after the last token's text). */
  readonly text: string;
  /** Tokens of the prompt. */
  readonly promptTokens: number;
  /** Seconds of the prompt's prefill. */
  readonly promptSeconds: number;
  /** Tokens generated (emitted as `Token` events). */
  readonly generatedTokens: number;
  /** Seconds from the end of the prefill to the last token. */
  readonly generateSeconds: number;
}

/** An event of {@link generate}. */
export type GenerationEvent = GeneratedToken | GenerationEnd;

interface State {
  logits: Float32Array | undefined;
  generated: number;
  promptSeconds: number;
  t0: number;
  /** The end event to emit next. */
  end: GenerationEnd | undefined;
  done: boolean;
}

/**
 * Generates after `prompt` (appended to whatever `session` already holds):
 * `Token` events as tokens are chosen, then one `End`. Fails with an
 * {@link InferenceError} when the prompt does not fit the context or an
 * option is out of range.
 */
export function generate(
  session: GenerationSession,
  prompt: ArrayLike<number>,
  options: GenerateOptions,
): Stream.Stream<GenerationEvent, InferenceError> {
  return Stream.unwrap(Effect.try({
    try: () => {
      const maxTokens = options.maxTokens ?? 128;
      if (!Number.isInteger(maxTokens) || maxTokens < 0) {
        throw new InferenceError({
          message: `maxTokens must be an integer ≥ 0, got ${maxTokens}`,
        });
      }
      if (prompt.length === 0) {
        throw new InferenceError({ message: "the prompt has no tokens" });
      }
      const sampler = new TokenSampler(options);
      const tokenizer = session.model.tokenizer;
      const streamer = new TextStreamer(tokenizer, options.stop ?? []);
      const eos = options.ignoreEos
        ? undefined
        : tokenizer.tokenId(END_OF_TEXT);
      const history = Array.from(prompt);
      const state: State = {
        logits: undefined,
        generated: 0,
        promptSeconds: 0,
        t0: 0,
        end: undefined,
        done: false,
      };
      const end = (reason: FinishReason): GenerationEnd => ({
        _tag: "End",
        reason,
        text: streamer.finish(),
        promptTokens: prompt.length,
        promptSeconds: state.promptSeconds,
        generatedTokens: state.generated,
        generateSeconds: (performance.now() - state.t0) / 1000,
      });
      const step = async (): Promise<GenerationEvent | undefined> => {
        if (state.done) return undefined;
        if (state.end !== undefined) {
          state.done = true;
          return state.end;
        }
        if (state.logits === undefined) {
          const t = performance.now();
          state.logits = await session.prefill(prompt);
          state.t0 = performance.now();
          state.promptSeconds = (state.t0 - t) / 1000;
        }
        if (state.generated >= maxTokens) {
          state.done = true;
          return end("length");
        }
        const id = sampler.next(state.logits, history);
        if (id === eos) {
          state.done = true;
          return end("eos");
        }
        state.generated++;
        history.push(id);
        const text = streamer.push(id);
        // The token goes into the cache while there is room, so a
        // conversation can continue after it.
        const room = session.slidingWindow ||
          session.position < session.contextLength;
        if (room) state.logits = await session.decode(id);
        if (streamer.stopped) state.end = end("stop");
        else if (!room) state.end = end("context");
        return { _tag: "Token", id, text };
      };
      return Stream.unfold(undefined, () =>
        Effect.tryPromise({
          try: async () => {
            const e = await step();
            return e === undefined ? undefined : [e, undefined] as const;
          },
          catch: asInferenceError,
        }));
    },
    catch: asInferenceError,
  }));
}

function asInferenceError(cause: unknown): InferenceError {
  return cause instanceof InferenceError ? cause : new InferenceError({
    message: cause instanceof Error ? cause.message : String(cause),
  });
}
