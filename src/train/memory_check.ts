/**
 * The memory a training run will need, checked before anything is allocated:
 * a model or a batch too large for the machine fails at once with one line
 * naming the flag or config field, instead of a stack trace or an
 * out-of-memory kill minutes into the run.
 *
 * The estimate mirrors what a training step keeps alive on the backend (see
 * `OneBitLlm.logits` and `backend/ops.ts`): the latent parameters, their
 * gradients, AdamW's two moments and the quantized copies of the weights; and
 * per micro-batch every op output of the tape with its gradient, the quantized
 * inputs of the BitLinears, the norms' saved statistics, the attention
 * probabilities and the cross-entropy's probabilities. Checkpoint writes and
 * the runtime itself come on top, so the estimate is a floor, not a bound.
 *
 * @module
 */
import { Effect } from "effect";
import {
  headDim,
  type OneBitLlmConfig,
  resolveBitMap,
} from "../common/config.ts";
import {
  linearMode,
  type LinearName,
  lmHeadMode,
} from "../common/layer_bit_map.ts";
import { modelTensors, tensorNumel } from "../core/tensors.ts";
import type { TrainSettings } from "./settings.ts";
import { TrainError } from "./trainer.ts";

/** Bytes a training step needs, by what needs them. */
export interface TrainingMemory {
  /** Parameters of the model. */
  readonly parameters: number;
  /** Latent weights, gradients, AdamW moments and quantized weight copies. */
  readonly parameterBytes: number;
  /** Op outputs, their gradients and quantized inputs of one micro-batch. */
  readonly activationBytes: number;
  /** Attention probabilities of one micro-batch (batch × heads × seq² per layer). */
  readonly attentionBytes: number;
  /** The sum of the three. */
  readonly totalBytes: number;
}

const F32 = 4;

/**
 * The bytes a training step of `config` at `settings` (batch, seqLen) keeps
 * alive on its backend, with STE λ > 0 (quantized copies present), as
 * described in the module doc.
 */
export function trainingMemory(
  config: OneBitLlmConfig,
  settings: Pick<TrainSettings, "batch" | "seqLen">,
): TrainingMemory {
  const bitMap = resolveBitMap(config);
  const d = config.hidden_size, f = config.intermediate_size;
  const V = config.vocab_size, L = config.num_layers;
  const kv = config.num_kv_heads * headDim(config);
  const quantized = (mode: string) => mode !== "f16";

  // Parameters: value, gradient, AdamW m and v; a quantized copy of each
  // quantized table and linear weight (the tied LM head quantizes its own).
  let parameters = 0, weightCopies = 0;
  for (const spec of modelTensors(config)) {
    const n = tensorNumel(spec);
    parameters += n;
    const mode = spec.kind === "linear"
      ? linearMode(bitMap, spec.layer, spec.linear)
      : spec.kind === "embedding"
      ? bitMap.embedding
      : spec.kind === "lm_head"
      ? lmHeadMode(bitMap)
      : "f16";
    if (quantized(mode)) weightCopies += n;
  }
  if (config.tie_embeddings && quantized(lmHeadMode(bitMap))) {
    weightCopies += V * d;
  }

  // Floats per token: each op output and its gradient (2×), a BitLinear's
  // quantized input (1× its input width, when the linear is quantized), a
  // norm's saved statistics (1 or 2 per row).
  const stats = config.norm_type === "layer_norm" ? 2 : 1;
  const norm = (width: number, rowsPerToken = 1) =>
    2 * width + stats * rowsPerToken;
  const linearInput = (
    layer: number,
    name: LinearName,
    inF: number,
  ) => quantized(linearMode(bitMap, layer, name)) ? inF : 0;
  let perToken = 2 * d; // embedding
  for (let l = 0; l < L; l++) {
    perToken += norm(d); // attn_norm
    perToken += linearInput(l, "attn.q", d) + linearInput(l, "attn.k", d) +
      linearInput(l, "attn.v", d) + 2 * (d + 2 * kv);
    if (config.use_qk_norm) {
      perToken += norm(d, config.num_heads) + norm(kv, config.num_kv_heads);
    }
    if (config.use_rope) perToken += 2 * (d + kv);
    perToken += 2 * d; // attention output
    if (config.use_subln) perToken += norm(d);
    perToken += linearInput(l, "attn.o", d) + 2 * d + 2 * d; // o, residual
    perToken += norm(d); // ffn_norm
    perToken += linearInput(l, "mlp.up", d) + 2 * f + 2 * f; // up, activation
    if (config.use_swiglu) {
      perToken += linearInput(l, "mlp.gate", d) + 2 * f + 2 * f; // gate, product
    }
    if (config.use_subln) perToken += norm(f);
    perToken += linearInput(l, "mlp.down", f) + 2 * d + 2 * d; // down, residual
  }
  perToken += norm(d) + 3 * V; // output_norm; logits, their gradient, probabilities

  const tokens = settings.batch * settings.seqLen;
  const parameterBytes = F32 * (4 * parameters + weightCopies);
  const activationBytes = F32 * tokens * perToken;
  const attentionBytes = F32 * L * settings.batch * config.num_heads *
    settings.seqLen * settings.seqLen;
  return {
    parameters,
    parameterBytes,
    activationBytes,
    attentionBytes,
    totalBytes: parameterBytes + activationBytes + attentionBytes,
  };
}

/**
 * Bytes of memory available to a new allocation (`Deno.systemMemoryInfo()`),
 * or `undefined` without the `sys` permission for it (nothing is prompted
 * for; the `cli` permission set of `deno.json` grants it). Deno lets only
 * `--allow-all` read `/proc/meminfo`, so there is no other source.
 */
export function availableMemoryBytes(): number | undefined {
  try {
    const status = Deno.permissions.querySync({
      name: "sys",
      kind: "systemMemoryInfo",
    });
    return status.state === "granted"
      ? Deno.systemMemoryInfo().available
      : undefined;
  } catch {
    return undefined; // a runtime without Deno's permission API
  }
}

/** `n` bytes as GiB (or MiB below 1 GiB) for a message. */
export function formatBytes(n: number): string {
  const gib = n / 2 ** 30;
  if (gib >= 1) {
    return `${gib.toLocaleString("en-US", { maximumFractionDigits: 1 })} GiB`;
  }
  return `${Math.ceil(n / 2 ** 20).toLocaleString("en-US")} MiB`;
}

/**
 * Fails with a one-line {@link TrainError} when a training step of `config` at
 * `settings` needs more than `available` bytes ({@link trainingMemory}),
 * naming what needs the most: the model (its config fields), the batch
 * (`--batch`, `--seq`) or the attention (`--seq`). Succeeds when the memory
 * available is unknown.
 */
export function checkTrainingMemory(
  config: OneBitLlmConfig,
  settings: Pick<TrainSettings, "batch" | "seqLen">,
  available: number | undefined = availableMemoryBytes(),
): Effect.Effect<void, TrainError> {
  return Effect.suspend(() => {
    const need = trainingMemory(config, settings);
    if (available === undefined || need.totalBytes <= available) {
      return Effect.void;
    }
    const { batch, seqLen } = settings;
    const needs = `training needs about ${
      formatBytes(need.totalBytes)
    } of memory, more than the ${formatBytes(available)} available`;
    const seq = `--seq ${seqLen}${
      seqLen === config.max_seq_len ? " (the config's max_seq_len)" : ""
    }`;
    const biggest = Math.max(
      need.parameterBytes,
      need.activationBytes,
      need.attentionBytes,
    );
    const count = (n: number) => n.toLocaleString("en-US");
    const message = biggest === need.parameterBytes
      ? `the model (config vocab_size ${
        count(config.vocab_size)
      }, hidden_size ${count(config.hidden_size)}, intermediate_size ${
        count(config.intermediate_size)
      }, num_layers ${count(config.num_layers)}): ${needs}; its ${
        count(need.parameters)
      } parameters take ${
        formatBytes(need.parameterBytes)
      } with their gradients, AdamW moments and quantized copies; choose a smaller model`
      : biggest === need.activationBytes
      ? `--batch ${batch} × ${seq}: ${needs}; the activations of ${
        count(batch * seqLen)
      } tokens take ${
        formatBytes(need.activationBytes)
      }; lower --batch (--accum keeps the tokens per step) or --seq`
      : `${seq}: ${needs}; the attention probabilities (--batch ${batch} × ${
        count(config.num_heads)
      } heads × ${count(seqLen)}² per layer) take ${
        formatBytes(need.attentionBytes)
      }; lower --seq or --batch`;
    return Effect.fail(new TrainError({ message }));
  });
}
