/**
 * Validation perplexity of a trained run on exactly the windows the PyTorch
 * reference (`../shared/peers/bitnet_ref.py`) scores at the end of its run:
 * 64 windows of 128 tokens starting at `arange(0, N − 129, (N − 129) // 64)`,
 * so the two numbers compare like for like.
 *
 * Run: `deno run -A bench/peer_eval.ts runs/name path/to/valid.tok`.
 *
 * @module
 */
import { Effect } from "effect";
import { CpuBackend } from "../src/backend/cpu/cpu_backend.ts";
import { resolveBitMap } from "../src/common/config.ts";
import { openTokenFile } from "../src/common/token_file.ts";
import { tokenizerHash } from "../src/common/tokenizer.ts";
import { lambdaAt } from "../src/core/schedule.ts";
import { OneBitLlm } from "../src/core/model.ts";
import { Tape } from "../src/backend/tape.ts";
import { loadCheckpoint } from "../src/train/checkpoint.ts";
import type { TrainSettings } from "../src/train/trainer.ts";

const [runDir, validPath] = Deno.args;
if (!runDir || !validPath) {
  console.error("usage: bench/peer_eval.ts RUN_DIR VALID_TOK");
  Deno.exit(2);
}

const ppl = await Effect.runPromise(Effect.scoped(Effect.gen(function* () {
  const ckpt = yield* loadCheckpoint(runDir);
  const valid = yield* openTokenFile(validPath, {
    expectedHash: tokenizerHash(ckpt.tokenizer),
  });
  const backend = yield* Effect.promise(() => CpuBackend.create());
  const model = OneBitLlm.fromValues(
    ckpt.config,
    resolveBitMap(ckpt.config),
    backend,
    ckpt.params,
  );
  const settings = ckpt.state.schedule as TrainSettings;
  const lambda = lambdaAt(settings.lambda, ckpt.state.step - 1);
  const seq = 128, n = 64, batch = 16;
  const span = valid.ids.length - seq - 1;
  const stride = Math.floor(span / n);
  const starts = Array.from({ length: n }, (_, i) => i * stride);
  let nll = 0;
  for (let b0 = 0; b0 < n; b0 += batch) {
    const ids = new Int32Array(batch * seq),
      targets = new Int32Array(batch * seq);
    for (let r = 0; r < batch; r++) {
      for (let t = 0; t < seq; t++) {
        ids[r * seq + t] = valid.ids[starts[b0 + r] + t];
        targets[r * seq + t] = valid.ids[starts[b0 + r] + t + 1];
      }
    }
    const idsT = backend.upload(ids), targetsT = backend.upload(targets);
    const tape = new Tape(backend);
    const loss = model.loss(tape, idsT, targetsT, {
      batch,
      seqLen: seq,
      lambda,
    });
    nll += (yield* Effect.promise(() => backend.read(loss.value)))[1] * batch *
      seq;
    tape.reset();
    backend.release(idsT);
    backend.release(targetsT);
  }
  return Math.exp(nll / (n * seq));
})));
console.log(JSON.stringify({ run: runDir, peerWindowsPpl: ppl }));
