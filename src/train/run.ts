/**
 * A whole training run as one Effect program: dataset (prepared and cached on
 * first use), model and optimizer (fresh or resumed), the step loop with
 * progress, evaluation, checkpoints, Ctrl-C handling, and at the end the final
 * validation perplexity beside the unigram baseline, `metrics.jsonl` and
 * `loss.svg` in the run directory.
 *
 * @module
 */
import { Effect, type Scope } from "effect";
import type { Backend } from "../backend/backend.ts";
import type { ConfigError } from "../common/config_file.ts";
import { encodeConfigJson } from "../common/config_file.ts";
import { type OneBitLlmConfig, resolveBitMap } from "../common/config.ts";
import { prepareDataset } from "../common/dataset.ts";
import { openTokenFile } from "../common/token_file.ts";
import { tokenizerHash, tokenizerToJson } from "../common/tokenizer.ts";
import { DataError } from "../common/text_sources.ts";
import { type SamplerState, unigramPerplexity } from "../common/batches.ts";
import { OneBitLlm } from "../core/model.ts";
import { writeFileAtomic } from "../common/atomic_write.ts";
import {
  type CheckpointState,
  loadCheckpoint,
  resolveCheckpoint,
  saveCheckpoint,
} from "./checkpoint.ts";
import { AdamW } from "./optimizer.ts";
import { MetricsLog, ProgressPrinter, readMetrics } from "./report.ts";
import { lossCurveSvg } from "./svg_chart.ts";
import {
  type EvalResult,
  initTraining,
  Trainer,
  TrainError,
  type TrainSettings,
} from "./trainer.ts";

/** Options of {@link runTraining}. */
export interface RunOptions {
  /** The model; on resume, absent means the checkpoint's own config (given, it must match). */
  readonly config?: OneBitLlmConfig;
  /** The run's settings; required for a new run (a resume uses the saved ones). */
  readonly settings?: TrainSettings;
  /** Run directory (checkpoints, metrics, curves). */
  readonly out: string;
  /** Continue the checkpoint in `out`. */
  readonly resume: boolean;
  /** Training text; absent: the built-in Brown corpus. */
  readonly data?: string;
  /** Where prepared datasets are cached. */
  readonly cacheDir: string;
  /** Stop (with a checkpoint) after this many seconds of training in this process. */
  readonly timeBudgetSeconds?: number;
  /** Save a checkpoint every this many steps (0: at evaluations and the end). */
  readonly saveEvery: number;
  /** Lines for the person watching. */
  readonly log: (line: string) => void;
}

/** What a finished run (or one stopped by its time budget) reports. */
export interface RunResult {
  /** Steps done. */
  readonly steps: number;
  /** Training tokens consumed. */
  readonly tokens: number;
  /** Final validation result over the whole validation split. */
  readonly valid: EvalResult;
  /** Unigram perplexity of the validation tokens (training frequencies). */
  readonly unigramPpl: number;
  /** Training tokens per second in this process. */
  readonly tokensPerSecond: number;
  /** Whether the time budget stopped the run before its last step (a checkpoint was saved). */
  readonly stoppedEarly: boolean;
}

const hasCheckpoint = (dir: string): Effect.Effect<boolean> =>
  resolveCheckpoint(dir).pipe(
    Effect.map(() => true),
    Effect.catch(() => Effect.succeed(false)),
  );

/**
 * Runs (or resumes) a training run on `backend`. Fails with a
 * {@link TrainError} for a non-finite loss (the last checkpoint is kept), a
 * `DataError` / `ConfigError` naming the file for bad data or checkpoints.
 */
export function runTraining(
  backend: Backend,
  options: RunOptions,
): Effect.Effect<RunResult, TrainError | DataError | ConfigError, Scope.Scope> {
  const { log, out } = options;
  return Effect.gen(function* () {
    const exists = yield* hasCheckpoint(out);
    if (exists && !options.resume) {
      return yield* new TrainError({
        message:
          `${out} already holds a checkpoint; pass --resume to continue it, or --out for a new run`,
      });
    }
    const checkpoint = options.resume
      ? yield* loadCheckpoint(out, { expectedConfig: options.config })
      : undefined;
    const config = checkpoint?.config ?? options.config;
    if (config === undefined) {
      return yield* new TrainError({ message: "no model config given" });
    }
    const settings = checkpoint
      ? checkpoint.state.schedule as TrainSettings
      : options.settings;
    if (settings === undefined) {
      return yield* new TrainError({ message: "no training settings given" });
    }

    const { files, tokenizer } = yield* prepareDataset({
      data: options.data,
      vocabSize: config.vocab_size,
      cacheDir: options.cacheDir,
      log,
    });
    if (
      checkpoint &&
      tokenizerToJson(checkpoint.tokenizer) !== tokenizerToJson(tokenizer)
    ) {
      return yield* new DataError({
        file: `${checkpoint.path}/tokenizer.json`,
        message:
          `${checkpoint.path}/tokenizer.json differs from the dataset's tokenizer ${files.tokenizer}: resume with the same --data`,
      });
    }
    const hash = tokenizerHash(tokenizer);
    const train = yield* openTokenFile(files.train, { expectedHash: hash });
    const valid = yield* openTokenFile(files.valid, { expectedHash: hash });
    const unigramPpl = unigramPerplexity(
      train.ids,
      valid.ids,
      config.vocab_size,
    );

    let model: OneBitLlm;
    let optimizer: AdamW;
    if (checkpoint) {
      model = OneBitLlm.fromValues(
        config,
        resolveBitMap(config),
        backend,
        checkpoint.params,
      );
      optimizer = new AdamW(model, {
        beta2: settings.beta2,
        maxGradNorm: settings.maxGradNorm,
      });
      for (const [name, { m, v }] of optimizer.moments) {
        const saved = checkpoint.moments.get(name)!;
        backend.write(m, saved.m);
        backend.write(v, saved.v);
      }
    } else {
      ({ model, optimizer } = initTraining(config, backend, settings));
    }
    const state = checkpoint?.state;
    const trainer = new Trainer(
      model,
      optimizer,
      train.ids,
      settings,
      state && {
        step: state.step,
        tokens: state.tokens_seen,
        sampler: state.sampler as SamplerState,
        elapsedSeconds: state.elapsed_seconds ?? 0,
      },
    );
    const elapsedBefore = state?.elapsed_seconds ?? 0;
    const metrics = yield* MetricsLog.open(out, {
      resumeStep: state?.step,
    });
    yield* writeFileAtomic(`${out}/config.json`, encodeConfigJson(config));

    log(
      `model: ${
        [...model.params.values()].reduce((a, t) => a + t.size, 0)
          .toLocaleString("en-US")
      } parameters on ${backend.description}; ${settings.steps} steps of ${settings.batch}×${settings.seqLen} tokens${
        settings.accumulation > 1
          ? ` ×${settings.accumulation} accumulated`
          : ""
      }`,
    );
    log(
      `data: ${train.ids.length.toLocaleString("en-US")} training tokens (${
        train.mapped ? "mmap" : "read"
      }), ${
        valid.ids.length.toLocaleString("en-US")
      } validation tokens; unigram perplexity ${unigramPpl.toFixed(1)}`,
    );
    if (state) log(`resumed at step ${state.step} from ${checkpoint!.path}`);

    const save = (elapsed: number) =>
      Effect.gen(function* () {
        const params = new Map<string, Float32Array>();
        const shapes = new Map<string, readonly number[]>();
        const moments = new Map<string, { m: Float32Array; v: Float32Array }>();
        for (const spec of model.specs) {
          params.set(
            spec.name,
            yield* read(backend, model.params.get(spec.name)!),
          );
          shapes.set(spec.name, spec.shape);
          const mv = optimizer.moments.get(spec.name)!;
          moments.set(spec.name, {
            m: yield* read(backend, mv.m),
            v: yield* read(backend, mv.v),
          });
        }
        const st = trainer.state(elapsed);
        const saved: CheckpointState = {
          format_version: 1,
          step: st.step,
          tokens_seen: st.tokens,
          sampler: st.sampler,
          schedule: settings,
          // The sampler carries the only RNG of a run.
          rng: [...st.sampler.rng],
          elapsed_seconds: elapsed,
        };
        yield* saveCheckpoint(out, {
          config,
          tokenizerJson: tokenizerToJson(tokenizer),
          params,
          shapes,
          moments,
          state: saved,
        });
      });

    const printer = new ProgressPrinter({
      timeBudgetSeconds: options.timeBudgetSeconds,
    });
    const t0 = performance.now();
    const seconds = () => (performance.now() - t0) / 1000;
    let stoppedEarly = false;
    let lastSaved = trainer.step;

    // One step with its reporting, evaluation and checkpoint: never cut in the middle.
    const iteration = Effect.gen(function* () {
      const report = yield* Effect.tryPromise({
        try: () => trainer.runStep(),
        catch: (e) =>
          e instanceof TrainError ? e : new TrainError({ message: String(e) }),
      });
      const elapsed = seconds();
      const m = {
        step: report.step,
        totalSteps: settings.steps,
        loss: report.loss,
        lr: report.lr,
        lambda: report.lambda,
        tokensPerSecond: (trainer.tokens - (state?.tokens_seen ?? 0)) / elapsed,
        elapsedSeconds: elapsedBefore + elapsed,
        tokens: trainer.tokens,
        gradNorm: report.gradNorm,
      };
      printer.step(m);
      yield* metrics.train(m);
      const evalNow = settings.evalEvery > 0 &&
        report.step % settings.evalEvery === 0 && report.step < settings.steps;
      if (evalNow) {
        const ev = yield* Effect.promise(() =>
          trainer.evaluate(valid.ids, settings.evalWindows)
        );
        const e = {
          step: report.step,
          valLoss: ev.loss,
          valPpl: ev.ppl,
          tokens: trainer.tokens,
        };
        printer.printEval(e);
        yield* metrics.eval(e);
      }
      if (
        evalNow ||
        (options.saveEvery > 0 && report.step % options.saveEvery === 0)
      ) {
        yield* save(elapsedBefore + seconds());
        lastSaved = report.step;
      }
    });

    // Interruption (Ctrl-C under the CLI) lands between steps and saves a checkpoint.
    const onInterrupt = Effect.gen(function* () {
      printer.finish();
      if (trainer.step !== lastSaved) yield* save(elapsedBefore + seconds());
      log(
        `interrupted at step ${trainer.step}; checkpoint in ${out}: continue with --resume --out ${out}`,
      );
    }).pipe(
      Effect.catch((e) =>
        Effect.sync(() =>
          log(`interrupted; the checkpoint could not be saved: ${e.message}`)
        )
      ),
    );

    yield* Effect.gen(function* () {
      while (trainer.step < settings.steps) {
        if (
          options.timeBudgetSeconds !== undefined &&
          seconds() >= options.timeBudgetSeconds
        ) {
          stoppedEarly = true;
          break;
        }
        yield* Effect.uninterruptible(iteration);
        // A macrotask turn, so a signal's handler runs between steps.
        yield* Effect.sleep(0);
      }
    }).pipe(Effect.onInterrupt(() => onInterrupt));
    printer.finish();
    const elapsed = seconds();
    if (trainer.step !== lastSaved || stoppedEarly) {
      yield* save(elapsedBefore + elapsed);
      log(`checkpoint: ${out} (step ${trainer.step})`);
    }
    if (stoppedEarly) {
      log(
        `time budget reached at step ${trainer.step} of ${settings.steps}; continue with --resume --out ${out}`,
      );
    }
    log("evaluating on the whole validation split …");
    const final = yield* Effect.promise(() => trainer.evaluate(valid.ids));
    const finalEval = {
      step: trainer.step,
      valLoss: final.loss,
      valPpl: final.ppl,
      tokens: trainer.tokens,
    };
    printer.printEval(finalEval);
    yield* metrics.eval(finalEval);
    log(
      `validation perplexity ${final.ppl.toFixed(2)} vs unigram ${
        unigramPpl.toFixed(2)
      } (ratio ${(final.ppl / unigramPpl).toFixed(3)}) over ${
        final.tokens.toLocaleString("en-US")
      } tokens`,
    );
    const history = yield* readMetrics(`${out}/metrics.jsonl`);
    yield* writeFileAtomic(
      `${out}/loss.svg`,
      lossCurveSvg(history, { title: `Loss — ${out}` }),
    );
    return {
      steps: trainer.step,
      tokens: trainer.tokens,
      valid: final,
      unigramPpl,
      tokensPerSecond: (trainer.tokens - (state?.tokens_seen ?? 0)) / elapsed,
      stoppedEarly,
    };
  });
}

function read(
  backend: Backend,
  t: Parameters<Backend["read"]>[0],
): Effect.Effect<Float32Array> {
  return Effect.promise(() => backend.read(t));
}
