/**
 * llama.cpp (through node-llama-cpp) runs our GGUF export as we do. Runs when
 * node-llama-cpp is installed in `$LLAMA_CPP_DIR` (default
 * `.scratch/llama-cpp`, where `bench/llama_cpp_bench.ts` installs it).
 */
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { PRESETS } from "../../src/common/presets.ts";
import { encodeGgufModel } from "../../src/infer/formats/gguf.ts";
import { InferenceModel } from "../../src/infer/runtime.ts";
import { tinyWeights } from "./formats_gen.ts";
import { tinyModel } from "./model_gen.ts";

const DIR = Deno.env.get("LLAMA_CPP_DIR") ??
  new URL("../../.scratch/llama-cpp", import.meta.url).pathname;
const installed = await Deno.stat(`${DIR}/node_modules/node-llama-cpp`).then(
  () => true,
  () => false,
);

const SCRIPT = `
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
const [path, promptJson, n] = process.argv.slice(2);
const prompt = JSON.parse(promptJson);
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: path });
const ctx = await model.createContext({ contextSize: 128, threads: 1 });
const seq = ctx.getSequence();
let probs = [];
for await (const o of seq.evaluateWithMetadata(prompt, { probabilities: true }, { temperature: 1, topK: 0, topP: 1, minP: 0 })) {
  probs = [...o.probabilities.entries()];
  break;
}
await seq.clearHistory();
const tokens = [];
for await (const t of seq.evaluate(prompt, { temperature: 0 })) {
  tokens.push(t);
  if (tokens.length >= Number(n)) break;
}
console.log(JSON.stringify({ probs, tokens }));
`;

Deno.test({
  name: "llama.cpp loads our GGUF export and predicts the next token as we do",
  ignore: !installed,
  fn: async () => {
    // ref-4m's block shape, two layers, random weights.
    const m = fc.sample(tinyModel, { numRuns: 1, seed: 3 })[0];
    const weights = tinyWeights({
      ...m,
      config: { ...PRESETS["ref-4m"], vocab_size: 400, num_layers: 2 },
      bitMap: { embedding: "f16", layer_modes: ["ternary", "ternary"] },
      std: 0.05,
    });
    const tmp = await Deno.makeTempDir();
    try {
      const gguf = `${tmp}/m.gguf`;
      await Deno.writeFile(gguf, encodeGgufModel(weights));
      await Deno.writeTextFile(`${DIR}/formats_test_peer.mjs`, SCRIPT);
      const prompt = [3, 141, 59, 265, 35, 89, 79, 323];
      const out = await new Deno.Command("node", {
        args: ["formats_test_peer.mjs", gguf, JSON.stringify(prompt), "8"],
        cwd: DIR,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout).trim();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      const peer = JSON.parse(text.split("\n").at(-1)!) as {
        probs: Array<[number, number]>;
        tokens: number[];
      };
      const model = await InferenceModel.create(weights);
      try {
        const session = model.session();
        const logits = session.prefill(prompt);
        const max = Math.max(...logits);
        const logZ = Math.log(
          logits.reduce((z, l) => z + Math.exp(l - max), 0),
        );
        let kl = 0;
        for (const [t, p] of peer.probs) {
          if (p > 0) kl += p * (Math.log(p) - (logits[t] - max - logZ));
        }
        assert.ok(kl < 1e-3, `KL(llama.cpp ‖ ours) = ${kl}`);
        const ours = logits.indexOf(max);
        const peerTop = peer.probs.reduce((b, x) => (x[1] > b[1] ? x : b));
        // The same greedy token unless the two best are within llama.cpp's rounding.
        const second = [...logits].sort((a, b) => b - a)[1];
        if (max - second > 0.01) assert.equal(peer.tokens[0], ours);
        assert.equal(peerTop[0], peer.tokens[0]);
        session.release();
      } finally {
        model.release();
      }
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
