// A policy from outside rl.nn plugged into the trainers through the SequencePolicy interface: a
// bigram model (next-token logits = a row of a table picked by the last context token, plus a
// bias) written in plain TypeScript, as a model from another JS framework would be. Its weights
// live in its own Float32Arrays; rl.tensor views them without a copy, so rl.optim's AdamW updates
// them in place. Run: npx ts-node examples/custom-policy.ts (or through test/custom-policy.test.ts).
import * as rl from '../lib/index';

export class BigramPolicy implements rl.SequencePolicy {
  readonly config: { vocabSize: number; contextSize: number; valueHead: boolean };
  readonly #table: Float32Array;  // [V, V]
  readonly #bias: Float32Array;   // [V]
  readonly #gradTable: Float32Array | null;
  readonly #gradBias: Float32Array | null;
  #lastTokens: Int32Array | null = null;

  constructor(vocabSize: number, frozen = false, table?: Float32Array, bias?: Float32Array) {
    this.config = { vocabSize, contextSize: 1, valueHead: false };
    this.#table = table ?? new Float32Array(vocabSize * vocabSize);
    this.#bias = bias ?? new Float32Array(vocabSize);
    this.#gradTable = frozen ? null : new Float32Array(vocabSize * vocabSize);
    this.#gradBias = frozen ? null : new Float32Array(vocabSize);
  }

  forward(contexts: rl.Tensor): { logits: rl.Tensor; values: null } {
    const V = this.config.vocabSize;
    const last = Int32Array.from(contexts.dataSync() as Int32Array);
    const logits = new Float32Array(last.length * V);
    last.forEach((token, n) => {
      for (let k = 0; k < V; ++k) logits[n * V + k] = this.#table[token * V + k] + this.#bias[k];
    });
    this.#lastTokens = last;
    return { logits: rl.tensor(logits, [last.length, V]), values: null };
  }

  backward(grads: { gradLogits?: rl.Tensor }): void {
    if (this.#gradTable === null || this.#gradBias === null) throw new Error('BigramPolicy: this copy is frozen');
    if (this.#lastTokens === null || grads.gradLogits === undefined) return;
    const V = this.config.vocabSize;
    const g = grads.gradLogits.dataSync() as Float32Array;
    this.#lastTokens.forEach((token, n) => {
      for (let k = 0; k < V; ++k) {
        this.#gradTable![token * V + k] += g[n * V + k];
        this.#gradBias![k] += g[n * V + k];
      }
    });
  }

  parameters(): rl.nn.Parameter[] {
    const V = this.config.vocabSize;
    const grad = (a: Float32Array | null, shape: number[]) => (a === null ? null : rl.tensor(a, shape));
    return [
      { name: 'table', value: rl.tensor(this.#table, [V, V]), grad: grad(this.#gradTable, [V, V]) },
      { name: 'bias', value: rl.tensor(this.#bias, [V]), grad: grad(this.#gradBias, [V]) },
    ];
  }

  clone(): BigramPolicy {
    return new BigramPolicy(this.config.vocabSize, true, Float32Array.from(this.#table), Float32Array.from(this.#bias));
  }
}

/** DPO on pairs whose chosen completion ends 'good' after a random word; returns the held-out accuracy. */
export function trainBigramWithDpo(seed = 1): { before: number; after: number } {
  const words = ['the', 'cat', 'dog', 'sat', 'ran', 'mat'];
  const rng = new rl.nn.Random(seed);
  const pick = () => words[Math.floor(rng.uniform() * words.length)];
  const pairs = (n: number) => Array.from({ length: n }, () => {
    const w = pick();
    return { prompt: pick(), chosen: `${w} good`, rejected: `${w} bad` };
  });
  const tokenizer = rl.data.SimpleTokenizer.fromTexts([...words, 'good', 'bad']);
  const trainer = new rl.DPOTrainer({ trainData: pairs(200), evalData: pairs(50), tokenizer,
    policy: new BigramPolicy(tokenizer.vocabSize), learningRate: 5e-2, numTrainEpochs: 3, perDeviceTrainBatchSize: 16, seed });
  const before = trainer.evaluate().accuracy;
  return { before, after: trainer.train().evalAccuracy ?? NaN };
}

if (require.main === module) console.log(trainBigramWithDpo());
