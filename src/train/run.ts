/**
 * A whole training run as one Effect program: dataset (prepared and cached on
 * first use), model and optimizer (fresh or resumed), the step loop with
 * progress, evaluation, checkpoints, Ctrl-C handling, and at the end the final
 * validation perplexity beside the unigram baseline, `metrics.jsonl` and
 * `loss.svg` in the run directory. A run with a time budget plans its steps
 * from a probe and re-plans them from its measured steps.
 *
 * @module
 */
import { Effect, type Scope } from "effect";
import { ComputeBackend } from "../backend/service.ts";
import type { ConfigError } from "../common/config_file.ts";
import { encodeConfigJson, loadConfig } from "../common/config_file.ts";
import type { OneBitLlmConfig } from "../common/config.ts";
import { prepareDataset } from "../common/dataset.ts";
import { openTokenFile } from "../common/token_file.ts";
import {
  type Tokenizer,
  tokenizerHash,
  tokenizerToJson,
} from "../common/tokenizer.ts";
import { DataError } from "../common/text_sources.ts";
import { unigramPerplexity } from "../common/batches.ts";
import { writeFileAtomic } from "../common/atomic_write.ts";
import { modelTensors, tensorNumel } from "../core/tensors.ts";
import { readHfForTraining } from "../infer/formats/hf.ts";
import { BUDGET_OVERRUN, BudgetPlanner } from "./budget.ts";
import {
  CHECKPOINT_FILES,
  type CheckpointState,
  loadCheckpoint,
  resolveCheckpoint,
  saveCheckpoint,
} from "./checkpoint.ts";
import {
  type EvalMetrics,
  MetricsLog,
  readMetrics,
  type StepMetrics,
} from "./report.ts";
import { decodeRunState, type RunState } from "./run_state.ts";
import type { TrainSettings } from "./settings.ts";
import { lossCurveSvg } from "./svg_chart.ts";
import { checkTrainingMemory } from "./memory_check.ts";
import {
  acquireTraining,
  type EvalResult,
  measureStepSeconds,
  Trainer,
  TrainError,
} from "./trainer.ts";

/**
 * Where step and evaluation lines go (a `ProgressPrinter` is one). The run
 * calls `finish` before each log message, so an open terminal line ends first.
 */
export interface ProgressSink {
  /** After each step. */
  step(m: StepMetrics): void;
  /** After each evaluation. */
  printEval(e: EvalMetrics): void;
  /** Ends an open line. */
  finish(): void;
}

/** A new run whose step count a time budget decides. */
export interface TimeBudget {
  /** Seconds of training: steps, periodic evaluations and checkpoints. */
  readonly seconds: number;
  /**
   * The run's settings at a step count. A re-plan takes the step count, LR
   * schedule and evaluation period from it, and keeps the first plan's warmup.
   */
  readonly settingsFor: (steps: number) => TrainSettings;
}

/** Options of {@link runTraining}. */
export interface RunOptions {
  /** The model; on resume, absent means the checkpoint's own config (given, it must match). */
  readonly config?: OneBitLlmConfig;
  /** The settings of a new run of a fixed number of steps. */
  readonly settings?: TrainSettings;
  /** A new run planned to fill a time budget (instead of `settings`). */
  readonly budget?: TimeBudget;
  /** Run directory (checkpoints, metrics, curves). */
  readonly out: string;
  /** Continue the checkpoint in `out`, with its saved settings. */
  readonly resume: boolean;
  /**
   * On resume: the run's new total of steps (at least the steps done), its LR
   * schedule stretched or shortened to end there. Absent: the saved total.
   */
  readonly resumeSteps?: number;
  /**
   * A new run starting from these latent weights, with fresh optimizer
   * moments: a transformers BitNet directory (an `hf` export, or one PyTorch
   * wrote; `config` must be its model, see `readHfConfig`), or weights already
   * loaded (e.g. a run's, see `trainFromRun`), whose tokenizer must be the
   * data's.
   */
  readonly init?: string | InitialWeights;
  /** Training text; absent: the built-in Brown corpus (on resume: the run's own). */
  readonly data?: string;
  /** Where prepared datasets are cached. */
  readonly cacheDir: string;
  /**
   * Stop (with a checkpoint) after this many seconds of training in this
   * process (default: for a budgeted run, the budget plus 5% to finish its
   * planned steps; else none).
   */
  readonly timeBudgetSeconds?: number;
  /** Save a checkpoint every this many steps (0: at evaluations and the end). */
  readonly saveEvery: number;
  /** Step and evaluation lines (default: none; messages go to the logger). */
  readonly progress?: ProgressSink;
}

/** Latent weights a new run starts from (a `TrainedRun` is one). */
export interface InitialWeights {
  /** Where they come from (named in messages). */
  readonly dir: string;
  /** The tokenizer they were trained with: it must be the training data's. */
  readonly tokenizer: Tokenizer;
  /** Every tensor of `modelTensors(config)`, by name. */
  readonly params: ReadonlyMap<string, Float32Array>;
}

/** What a finished run (or one stopped by its time budget) reports. */
export interface RunResult {
  /** Steps done. */
  readonly steps: number;
  /** Steps the run's schedule has (as planned, for a budgeted run). */
  readonly plannedSteps: number;
  /** Training tokens consumed. */
  readonly tokens: number;
  /** Final validation result over the whole validation split. */
  readonly valid: EvalResult;
  /** Unigram perplexity of the validation tokens (training frequencies). */
  readonly unigramPpl: number;
  /** Training tokens per second in this process. */
  readonly tokensPerSecond: number;
  /**
   * Seconds of training (steps, periodic evaluations, checkpoints) in this
   * process, up to the last checkpoint; the final evaluation is not included.
   */
  readonly trainSeconds: number;
  /** Whether the time budget stopped the run before its last step (a checkpoint was saved). */
  readonly stoppedEarly: boolean;
}

/** `settings` ending at `steps` (unchanged when undefined). */
const withSteps = (
  settings: TrainSettings,
  steps: number | undefined,
): TrainSettings =>
  steps === undefined || steps === settings.steps ? settings : {
    ...settings,
    steps,
    lr: { ...settings.lr, totalSteps: steps },
  };

/** Names a run writes into its directory (anything else is the user's). */
const RUN_ENTRY =
  /^(config\.json|metrics\.jsonl|loss\.svg|latest(\.tmp-.*)?|ckpt-\d+-[0-9a-f]+|search)$/;

/**
 * Fails unless `dir` may hold a new run: a non-empty path that is missing, an
 * empty directory, or one holding only a run's own files (e.g. a run stopped
 * before its first checkpoint). Anything else would be overwritten
 * (`config.json`, `metrics.jsonl`, `loss.svg`) or mixed with the run's files.
 * Messages name `flag`, the option that gave `dir`.
 */
export const checkNewRunDir = (
  dir: string,
  flag: string = "--out",
): Effect.Effect<void, TrainError> =>
  Effect.gen(function* () {
    if (dir.trim() === "") {
      return yield* new TrainError({
        message: `${flag}: empty path; give the run a directory`,
      });
    }
    const foreign = yield* Effect.promise(async () => {
      try {
        const names: string[] = [];
        for await (const e of Deno.readDir(dir)) {
          if (!RUN_ENTRY.test(e.name)) names.push(e.name);
        }
        return names.sort();
      } catch (e) {
        return e instanceof Deno.errors.NotFound ? [] : [String(e)];
      }
    });
    if (foreign.length > 0) {
      return yield* new TrainError({
        message: `${flag}: ${dir} is not a run directory (it holds ${
          foreign.slice(0, 3).join(", ")
        }${
          foreign.length > 3 ? ` and ${foreign.length - 3} more` : ""
        }); give a new or empty directory`,
      });
    }
  });

/** The tensor shapes of the model that `dir`'s current checkpoint config describes. */
const savedShapes = (
  dir: string,
): Effect.Effect<Map<string, readonly number[]>, DataError | ConfigError> =>
  Effect.gen(function* () {
    const path = yield* resolveCheckpoint(dir);
    const config = yield* loadConfig(`${path}/${CHECKPOINT_FILES.config}`);
    return new Map(modelTensors(config).map((s) => [s.name, s.shape]));
  });

/**
 * Fails with a DataError naming the token file when it holds fewer than
 * `minTokens` ids (validation needs one window of seqLen + 1) or an id
 * outside [0, vocabSize), which the embedding lookup would read out of bounds.
 */
const checkTokens = (
  file: { readonly path: string; readonly ids: ArrayLike<number> },
  vocabSize: number,
  minTokens: number,
): Effect.Effect<void, DataError> =>
  Effect.suspend(() => {
    const { path, ids } = file;
    if (ids.length < minTokens) {
      return Effect.fail(
        new DataError({
          file: path,
          message:
            `${path}: ${ids.length} tokens, fewer than one window of ${minTokens}${
              minTokens > 1
                ? " (give more validation text, or a smaller --seq)"
                : ""
            }`,
        }),
      );
    }
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] >= vocabSize) {
        return Effect.fail(
          new DataError({
            file: path,
            message: `${path}: token ${i} is ${
              ids[i]
            }, outside the vocabulary [0, ${vocabSize}); rebuild the dataset (delete its directory)`,
          }),
        );
      }
    }
    return Effect.void;
  });

const hasCheckpoint = (dir: string): Effect.Effect<boolean> =>
  resolveCheckpoint(dir).pipe(
    Effect.map(() => true),
    Effect.catch(() => Effect.succeed(false)),
  );

/**
 * Runs (or resumes) a training run on the `ComputeBackend`. Messages go to
 * the logger (info level), step lines to `options.progress`. Fails with a
 * {@link TrainError} for a non-finite loss (the last checkpoint is kept) or a
 * failing computation, a `DataError` / `ConfigError` naming the file for bad
 * data or checkpoints.
 */
export function runTraining(
  options: RunOptions,
): Effect.Effect<
  RunResult,
  TrainError | DataError | ConfigError,
  ComputeBackend | Scope.Scope
> {
  const { out } = options;
  const progress = options.progress;
  const say = (line: string) =>
    Effect.sync(() => progress?.finish()).pipe(
      Effect.andThen(Effect.logInfo(line)),
    );
  return Effect.gen(function* () {
    const backend = yield* ComputeBackend;
    const exists = yield* hasCheckpoint(out);
    if (exists && !options.resume) {
      return yield* new TrainError({
        message:
          `${out} already holds a checkpoint; pass --resume to continue it, or --out for a new run`,
      });
    }
    if (!options.resume) yield* checkNewRunDir(out);
    const checkpoint = options.resume
      ? yield* loadCheckpoint(out, {
        expectedConfig: options.config,
        // The tensors must be the model of the checkpoint's own config.
        expectedShapes: yield* savedShapes(out),
      })
      : undefined;
    const resumed: RunState | undefined = checkpoint &&
      (yield* decodeRunState(
        checkpoint.state,
        `${checkpoint.path}/${CHECKPOINT_FILES.state}`,
      ));
    const config = checkpoint?.config ?? options.config;
    if (config === undefined) {
      return yield* new TrainError({ message: "no model config given" });
    }
    // A resume reads the run's own text unless told otherwise.
    const data = options.data ?? resumed?.data;
    const budget = resumed ? undefined : options.budget;
    if (
      resumed && options.resumeSteps !== undefined &&
      options.resumeSteps < resumed.step
    ) {
      return yield* new TrainError({
        message:
          `--steps: the run in ${out} is at step ${resumed.step} already; give --steps ${resumed.step} or more`,
      });
    }
    const given =
      (resumed && withSteps(resumed.settings, options.resumeSteps)) ??
        options.settings ?? budget?.settingsFor(1);
    if (given === undefined) {
      return yield* new TrainError({ message: "no training settings given" });
    }
    // Before any data or tensor: a model or batch that cannot fit fails here.
    yield* checkTrainingMemory(config, given);

    // The services of this fiber (logger, log level) for callbacks.
    const context = yield* Effect.context<never>();
    const { files, tokenizer } = yield* prepareDataset({
      data,
      vocabSize: config.vocab_size,
      cacheDir: options.cacheDir,
      log: (line) => Effect.runSyncWith(context)(say(line)),
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
    const init = options.init;
    const imported = init === undefined || checkpoint
      ? undefined
      : typeof init === "string"
      ? yield* readHfForTraining(init, tokenizer)
      : init;
    if (imported !== undefined) {
      const source = typeof init === "string" ? init : init!.dir;
      if (tokenizerToJson(imported.tokenizer) !== tokenizerToJson(tokenizer)) {
        return yield* new DataError({
          file: source,
          message:
            `${source}: its tokenizer differs from the training data's ${files.tokenizer} (train on the data the model was trained on)`,
        });
      }
      for (const spec of modelTensors(config)) {
        if (imported.params.get(spec.name)?.length !== tensorNumel(spec)) {
          return yield* new DataError({
            file: source,
            message:
              `${source}: its model does not match the config (tensor ${spec.name})`,
          });
        }
      }
      yield* say(`initialized from ${source}`);
    }
    const hash = tokenizerHash(tokenizer);
    const train = yield* openTokenFile(files.train, { expectedHash: hash });
    const valid = yield* openTokenFile(files.valid, { expectedHash: hash });
    yield* checkTokens(train, config.vocab_size, 1);
    yield* checkTokens(valid, config.vocab_size, given.seqLen + 1);
    const unigramPpl = unigramPerplexity(
      train.ids,
      valid.ids,
      config.vocab_size,
    );

    // A budgeted run: the first plan from a probe of the step time.
    let settings = given;
    let planner: BudgetPlanner | undefined;
    let t0 = performance.now();
    const seconds = () => (performance.now() - t0) / 1000;
    if (budget !== undefined) {
      const probe = yield* measureStepSeconds(config, given);
      planner = new BudgetPlanner({
        budgetSeconds: budget.seconds,
        probeStepSeconds: probe,
        // A forward pass is about a third of forward and backward.
        evalSecondsEstimate: probe * given.evalWindows / given.batch /
          given.accumulation / 3,
        evalEvery: (n) => budget.settingsFor(n).evalEvery,
        saveEvery: options.saveEvery,
        // The clock restarts when training does, after the set-up below.
        clock: seconds,
      });
      settings = budget.settingsFor(planner.plan.steps);
      yield* say(
        `time budget ${budget.seconds}s at ~${
          probe.toFixed(3)
        }s a step (probe) → ${planner.plan.steps} steps, re-planned from the measured steps`,
      );
    }

    const { model, optimizer } = yield* acquireTraining(
      config,
      settings,
      checkpoint ?? (imported && {
        params: imported.params,
        moments: new Map(
          [...imported.params].map(([name, v]) => [name, {
            m: new Float32Array(v.length),
            v: new Float32Array(v.length),
          }]),
        ),
      }),
    );
    const trainer = yield* Effect.try({
      try: () =>
        new Trainer(
          model,
          optimizer,
          train.ids,
          settings,
          resumed && {
            step: resumed.step,
            tokens: resumed.tokens,
            sampler: resumed.sampler,
            elapsedSeconds: resumed.elapsedSeconds,
          },
        ),
      catch: (e) => {
        const file = checkpoint
          ? `${checkpoint.path}/${CHECKPOINT_FILES.state}`
          : files.train;
        return new DataError({
          file,
          message: `${file}: sampler ${
            e instanceof Error ? e.message : String(e)
          } (${
            checkpoint
              ? "resume with the same --data"
              : "lower --batch or --seq, or give more text"
          })`,
        });
      },
    });
    const elapsedBefore = resumed?.elapsedSeconds ?? 0;
    const tokensBefore = resumed?.tokens ?? 0;
    const metrics = yield* MetricsLog.open(out, { resumeStep: resumed?.step });
    yield* writeFileAtomic(`${out}/config.json`, encodeConfigJson(config));

    yield* say(
      `model: ${
        [...model.params.values()].reduce((a, t) => a + t.size, 0)
          .toLocaleString("en-US")
      } parameters on ${backend.description}; ${settings.steps} steps of ${settings.batch}×${settings.seqLen} tokens${
        settings.accumulation > 1
          ? ` ×${settings.accumulation} accumulated`
          : ""
      }`,
    );
    yield* say(
      `data: ${train.ids.length.toLocaleString("en-US")} training tokens (${
        train.mapped ? "mmap" : "read"
      }), ${
        valid.ids.length.toLocaleString("en-US")
      } validation tokens; unigram perplexity ${unigramPpl.toFixed(1)}`,
    );
    if (resumed) {
      yield* say(`resumed at step ${resumed.step} from ${checkpoint!.path}`);
    }

    const readParam = (name: string, t: Parameters<typeof backend.read>[0]) =>
      Effect.tryPromise({
        try: () => backend.read(t),
        catch: (e) =>
          new TrainError({
            message: `cannot read ${name} back for the checkpoint: ${
              e instanceof Error ? e.message : String(e)
            }`,
          }),
      });
    /** The budget plan in effect (carried over on resume). */
    const plan = () => planner?.plan ?? resumed?.budget;
    const save = (elapsed: number) =>
      Effect.gen(function* () {
        const params = new Map<string, Float32Array>();
        const shapes = new Map<string, readonly number[]>();
        const moments = new Map<string, { m: Float32Array; v: Float32Array }>();
        for (const spec of model.specs) {
          params.set(
            spec.name,
            yield* readParam(spec.name, model.params.get(spec.name)!),
          );
          shapes.set(spec.name, spec.shape);
          const mv = optimizer.moments.get(spec.name)!;
          moments.set(spec.name, {
            m: yield* readParam(`${spec.name}.m`, mv.m),
            v: yield* readParam(`${spec.name}.v`, mv.v),
          });
        }
        const st = trainer.state(elapsed);
        const saved: CheckpointState = {
          format_version: 1,
          step: st.step,
          tokens_seen: st.tokens,
          sampler: st.sampler,
          schedule: trainer.settings,
          // The sampler carries the only RNG of a run.
          rng: [...st.sampler.rng],
          elapsed_seconds: elapsed,
          ...(data === undefined ? {} : { data }),
          ...(plan() === undefined ? {} : { budget: plan() }),
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

    t0 = performance.now();
    // A planned run may finish its last steps a little past the budget.
    const stopAfter = options.timeBudgetSeconds ??
      (budget && budget.seconds * BUDGET_OVERRUN);
    let stoppedEarly = false;
    let lastSaved = trainer.step;

    /** A new plan from the costs measured so far, in effect from the next step. */
    const replan = (step: number, evaluated: boolean) =>
      Effect.gen(function* () {
        const steps = planner?.afterStep(
          step,
          evaluated,
          trainer.settings.lr.warmupSteps,
        );
        if (planner === undefined || steps === undefined) return;
        const next = budget!.settingsFor(steps);
        // Steps taken used the first plan's warmup: it stays.
        trainer.replan({
          ...next,
          lr: { ...next.lr, warmupSteps: trainer.settings.lr.warmupSteps },
        });
        const c = planner.costs;
        yield* Effect.logDebug(
          `re-planned after step ${step}: ${
            c.stepSeconds.toFixed(3)
          }s a step, evaluation ${c.evalSeconds.toFixed(2)}s, checkpoint ${
            c.saveSeconds.toFixed(2)
          }s → ${steps} steps`,
        );
      });

    // One step with its reporting, evaluation and checkpoint: never cut in the middle.
    const iteration = Effect.gen(function* () {
      const s0 = performance.now();
      const report = yield* trainer.runStep();
      planner?.recordStep((performance.now() - s0) / 1000);
      const elapsed = seconds();
      const s = trainer.settings;
      const m = {
        step: report.step,
        totalSteps: s.steps,
        loss: report.loss,
        lr: report.lr,
        lambda: report.lambda,
        tokensPerSecond: (trainer.tokens - tokensBefore) / elapsed,
        elapsedSeconds: elapsedBefore + elapsed,
        tokens: trainer.tokens,
        gradNorm: report.gradNorm,
      };
      progress?.step(m);
      yield* metrics.train(m);
      const evalNow = s.evalEvery > 0 &&
        report.step % s.evalEvery === 0 && report.step < s.steps;
      if (evalNow) {
        const e0 = performance.now();
        const ev = yield* trainer.evaluate(valid.ids, s.evalWindows);
        planner?.recordEval((performance.now() - e0) / 1000);
        const e = {
          step: report.step,
          valLoss: ev.loss,
          valPpl: ev.ppl,
          tokens: trainer.tokens,
        };
        progress?.printEval(e);
        yield* metrics.eval(e);
      }
      yield* replan(report.step, evalNow);
      if (
        evalNow ||
        (options.saveEvery > 0 && report.step % options.saveEvery === 0)
      ) {
        const c0 = performance.now();
        yield* save(elapsedBefore + seconds());
        planner?.recordSave((performance.now() - c0) / 1000);
        lastSaved = report.step;
      }
    });

    // Interruption (Ctrl-C under the CLI) lands between steps and saves a checkpoint.
    const onInterrupt = Effect.gen(function* () {
      if (trainer.step !== lastSaved) yield* save(elapsedBefore + seconds());
      yield* say(
        `interrupted at step ${trainer.step}; checkpoint in ${out}: continue with --resume --out ${out}`,
      );
    }).pipe(
      Effect.catch((e) =>
        say(`interrupted; the checkpoint could not be saved: ${e.message}`)
      ),
    );

    yield* Effect.gen(function* () {
      while (trainer.step < trainer.settings.steps) {
        if (stopAfter !== undefined && seconds() >= stopAfter) {
          stoppedEarly = true;
          break;
        }
        yield* Effect.uninterruptible(iteration);
        // A macrotask turn, so a signal's handler runs between steps.
        yield* Effect.sleep(0);
      }
    }).pipe(Effect.onInterrupt(() => onInterrupt));
    progress?.finish();
    if (trainer.step !== lastSaved || stoppedEarly) {
      yield* save(elapsedBefore + seconds());
      yield* say(`checkpoint: ${out} (step ${trainer.step})`);
    }
    const savedAt = seconds();
    if (stoppedEarly) {
      yield* say(
        `time budget reached at step ${trainer.step} of ${trainer.settings.steps}; continue with --resume --out ${out}`,
      );
    }
    const writeCurve = Effect.gen(function* () {
      const history = yield* readMetrics(`${out}/metrics.jsonl`);
      yield* writeFileAtomic(
        `${out}/loss.svg`,
        lossCurveSvg(history, { title: `Loss — ${out}` }),
      );
    });
    yield* say("evaluating on the whole validation split …");
    // Ctrl-C here loses only the final figure: the training is saved.
    const final = yield* trainer.evaluate(valid.ids).pipe(
      Effect.onInterrupt(() =>
        writeCurve.pipe(
          Effect.andThen(say(
            `interrupted during the final evaluation: the run's ${trainer.step} steps are saved in ${out} (loss.svg without the final validation); score it with \`eval --model ${out}\``,
          )),
          Effect.catch((e) =>
            say(`interrupted during the final evaluation: ${e.message}`)
          ),
        )
      ),
    );
    const finalEval = {
      step: trainer.step,
      valLoss: final.loss,
      valPpl: final.ppl,
      tokens: trainer.tokens,
    };
    progress?.printEval(finalEval);
    yield* metrics.eval(finalEval);
    yield* say(
      `validation perplexity ${final.ppl.toFixed(2)} vs unigram ${
        unigramPpl.toFixed(2)
      } (ratio ${(final.ppl / unigramPpl).toFixed(3)}) over ${
        final.tokens.toLocaleString("en-US")
      } tokens`,
    );
    yield* writeCurve;
    return {
      steps: trainer.step,
      plannedSteps: trainer.settings.steps,
      tokens: trainer.tokens,
      valid: final,
      unigramPpl,
      tokensPerSecond: (trainer.tokens - tokensBefore) / savedAt,
      trainSeconds: savedAt,
      stoppedEarly,
    };
  });
}
