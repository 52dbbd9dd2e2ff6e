/**
 * The search's fast evaluator: the tape-free inference runtime (int8 ×
 * ternary kernels) on quantized weights. Every tensor is quantized once per
 * mode and kept; a candidate map swaps only the block linears whose mode
 * differs from the loaded model's (a different embedding or head reloads the
 * model from the kept tensors).
 *
 * @module
 */
import { Effect, type Scope } from "effect";
import type { TokenArray } from "../common/batches.ts";
import type { OneBitLlmConfig } from "../common/config.ts";
import type { LayerBitMap } from "../common/layer_bit_map.ts";
import type { QuantMode } from "../common/quant_mode.ts";
import type { Tokenizer } from "../common/tokenizer.ts";
import type { WasmKernels } from "../backend/wasm/wasm_kernels.ts";
import { modelTensors, type TensorSpec } from "../core/tensors.ts";
import { quantizeTensor, tensorMode } from "../infer/from_latents.ts";
import { InferenceModel } from "../infer/runtime.ts";
import type { ModelWeights, StoredTensor } from "../infer/weights.ts";
import {
  type Evaluator,
  type EvalWindows,
  type Score,
  windowBatch,
} from "./evaluator.ts";
import { type SearchError, toSearchError } from "./space.ts";

/** What {@link weightsEvaluator} needs of a trained model. */
export interface QuantizableModel {
  /** The architecture. */
  readonly config: OneBitLlmConfig;
  /** The tokenizer (carried by the weights, unused by scoring). */
  readonly tokenizer: Tokenizer;
  /** Latent weights by tensor name. */
  readonly params: ReadonlyMap<string, Float32Array>;
}

/**
 * Mean NLL of a loaded model on `windows` of `tokens`, `batch` windows per
 * forward pass, summed in window order: the one scoring both the search and
 * `deno task eval --eval-tokens` use, so their numbers agree exactly.
 */
export function scoreWindows(
  model: InferenceModel,
  tokens: TokenArray,
  windows: EvalWindows,
  batch: number,
): Score {
  const { seqLen, starts } = windows;
  let sum = 0, count = 0;
  for (let first = 0; first < starts.length; first += batch) {
    const rows = Math.min(batch, starts.length - first);
    const b = windowBatch(tokens, windows, first, rows);
    const part = model.nll(b.ids, b.targets, rows, seqLen);
    sum += part.sum;
    count += part.count;
  }
  const loss = sum / count;
  return { loss, ppl: Math.exp(loss), tokens: count };
}

/** Quantized tensors of one model, each computed once per mode. */
export class QuantizedTensorCache {
  readonly #model: QuantizableModel;
  readonly #specs: ReadonlyArray<TensorSpec>;
  readonly #kept = new Map<string, StoredTensor>();

  /** A cache over `model`'s latent weights. */
  constructor(model: QuantizableModel) {
    this.#model = model;
    this.#specs = modelTensors(model.config);
  }

  /** Tensor `spec` stored in `mode` (norms: as they are). */
  tensor(spec: TensorSpec, mode: QuantMode): StoredTensor {
    const key = `${spec.name}|${spec.kind === "norm" ? "norm" : mode}`;
    let t = this.#kept.get(key);
    if (t === undefined) {
      const latent = this.#model.params.get(spec.name);
      if (latent === undefined) throw new Error(`missing tensor ${spec.name}`);
      t = quantizeTensor(spec, latent, mode, this.#model.config);
      this.#kept.set(key, t);
    }
    return t;
  }

  /** The whole model's weights under `map`. */
  weights(map: LayerBitMap): ModelWeights {
    const tensors = new Map<string, StoredTensor>();
    for (const spec of this.#specs) {
      tensors.set(spec.name, this.tensor(spec, tensorMode(spec, map)));
    }
    return {
      config: this.#model.config,
      bitMap: map,
      tokenizer: this.#model.tokenizer,
      tensors,
    };
  }
}

/**
 * An evaluator of `model` quantized under each map, on `windows` of
 * `tokens`; the loaded runtime (on `kernels` when given, e.g. with threads)
 * is released when the scope closes.
 */
export function weightsEvaluator(
  model: QuantizableModel,
  tokens: TokenArray,
  windows: EvalWindows,
  batch: number,
  kernels?: WasmKernels,
): Effect.Effect<Evaluator<SearchError>, never, Scope.Scope> {
  return Effect.gen(function* () {
    const cache = new QuantizedTensorCache(model);
    const specs = modelTensors(model.config);
    const linears = specs.filter((s) => s.kind === "linear");
    const tables = specs.filter((s) =>
      s.kind === "embedding" || s.kind === "lm_head"
    );
    let loaded:
      | { model: InferenceModel; modes: Map<string, QuantMode> }
      | undefined;
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => loaded?.model.release())
    );

    const load = async (map: LayerBitMap) => {
      const modes = new Map(specs.map((s) => [s.name, tensorMode(s, map)]));
      if (
        loaded !== undefined &&
        tables.every((s) => loaded!.modes.get(s.name) === modes.get(s.name))
      ) {
        for (const s of linears) {
          const m = modes.get(s.name)!;
          if (loaded.modes.get(s.name) !== m) {
            loaded.model.setTensor(s.name, cache.tensor(s, m));
            loaded.modes.set(s.name, m);
          }
        }
        return loaded.model;
      }
      const next = await InferenceModel.create(
        cache.weights(map),
        { kernels: loaded?.model.kernels ?? kernels },
      );
      loaded?.model.release();
      loaded = { model: next, modes };
      return next;
    };
    return (map: LayerBitMap) =>
      Effect.tryPromise({
        try: async () => scoreWindows(await load(map), tokens, windows, batch),
        catch: toSearchError,
      });
  });
}

/**
 * The score of `model` quantized under `map` on `windows` of `tokens`,
 * loaded for the occasion (on `kernels` when given): the same numbers the
 * search's evaluator reports for `map` (same quantizers, runtime and
 * summation order).
 */
export async function scoreMap(
  model: QuantizableModel,
  map: LayerBitMap,
  tokens: TokenArray,
  windows: EvalWindows,
  batch: number,
  kernels?: WasmKernels,
): Promise<Score> {
  const runtime = await InferenceModel.create(
    new QuantizedTensorCache(model).weights(map),
    { kernels },
  );
  try {
    return scoreWindows(runtime, tokens, windows, batch);
  } finally {
    runtime.release();
  }
}
