// DPO (TRL's DPOTrainer, its config names in camelCase): a policy (rl.nn.TokenPolicy, or any
// SequencePolicy) trained on preference pairs against a frozen copy of itself, whose
// log-probabilities of every pair are computed once at the start. Each step scores the chosen and
// the rejected completions of a minibatch in one forward, takes rl.dpoLoss (any of its loss
// types) and its gradients back through the policy, clips the gradient norm and steps AdamW.
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { rangeError, typeError } from '../errors';
import { PreferencePair, readPreferences } from '../data/jsonl';
import { SimpleTokenizer } from '../data/tokenizer';
import { tokenPolicy } from '../nn/models';
import { Random, shuffledIndices } from '../nn/random';
import { DpoLossType, dpoLoss } from '../ops/preference';
import { AdamW, adamw, clipGradNorm, linearSchedule } from '../optim';
import { choice, keysOf, options } from '../validate';
import { loadModels, readJsonState, saveModels, writeJsonAtomic } from './checkpoint';
import { finiteAtLeast, intAtLeast, pathOrNull, seedOf, throughput } from './config';
import { sequencePolicy, SequencePolicy } from './policy';
import { completionBatch, completionLogprobs } from './sequences';

export interface DPOConfig {
  /** Pairs, or a JSONL file of them in TRL's layout (prompt / chosen / rejected). */
  trainData: PreferencePair[] | string;
  /** Held-out pairs for evaluate() after each epoch. */
  evalData?: PreferencePair[] | string;
  /** Default: a word-level tokenizer of the training texts. */
  tokenizer?: SimpleTokenizer;
  /** Default: rl.nn.tokenPolicy over the tokenizer's vocabulary (contextSize 4, seed). */
  policy?: SequencePolicy;
  /** Default 0.1. */
  beta?: number;
  /** Any loss type of rl.dpoLoss; default 'sigmoid'. */
  lossType?: DpoLossType;
  labelSmoothing?: number;
  /** Default 1e-6 (TRL's DPOConfig); toy policies want far more. */
  learningRate?: number;
  /** Pairs per step; default 8. */
  perDeviceTrainBatchSize?: number;
  numTrainEpochs?: number;
  /** Default 1.0 (transformers' TrainingArguments). */
  maxGradNorm?: number;
  weightDecay?: number;
  /** Share of the steps spent warming the learning rate up, then linear decay; default 0. */
  warmupRatio?: number;
  seed?: number;
  logFile?: string;
}

const dpoConfigKeys = keysOf<DPOConfig>({
  trainData: true, evalData: true, tokenizer: true, policy: true, beta: true, lossType: true, labelSmoothing: true,
  learningRate: true, perDeviceTrainBatchSize: true, numTrainEpochs: true, maxGradNorm: true, weightDecay: true,
  warmupRatio: true, seed: true, logFile: true,
});

export interface DPOStepMetrics {
  step: number;
  epoch: number;
  loss: number;
  rewardsChosen: number;
  rewardsRejected: number;
  accuracy: number;
  margin: number;
  learningRate: number;
  /** Pairs and completion tokens per second of the step. */
  samplesPerSecond: number;
  tokensPerSecond: number;
}

export interface DPOEvaluation {
  loss: number;
  accuracy: number;
  margin: number;
}

export interface DPOSummary {
  steps: number;
  trainLoss: number;
  trainAccuracy: number;
  evalAccuracy: number | null;
  seconds: number;
}

const kStateFormat = 'rlhf-node.dpoTrainer';

const lossTypes: readonly DpoLossType[] = [
  'sigmoid', 'robust', 'hinge', 'ipo', 'sigmoid_norm', 'exo_pair', 'nca_pair', 'bco_pair', 'sppo_hard', 'apo_zero', 'apo_down',
  'discopop',
];

/** A pair as token ids; completions end with the end-of-sequence token, so none is empty. */
interface EncodedPair {
  prompt: Int32Array;
  chosen: Int32Array;
  rejected: Int32Array;
}

function pairsOf(op: string, name: string, v: unknown): PreferencePair[] {
  const pairs = typeof v === 'string' ? readPreferences(v) : v;
  if (!Array.isArray(pairs)) throw typeError(op, name, 'an array of preference pairs or a JSONL path', v);
  if (pairs.length === 0) throw rangeError(op, name, 'holds no pairs');
  return pairs as PreferencePair[];
}

export class DPOTrainer extends EventEmitter {
  readonly tokenizer: SimpleTokenizer;
  readonly policy: SequencePolicy;
  readonly reference: SequencePolicy;
  readonly optimizer: AdamW;
  readonly beta: number;
  readonly lossType: DpoLossType;
  readonly labelSmoothing: number;
  readonly batchSize: number;
  readonly epochs: number;
  readonly maxGradNorm: number;
  readonly seed: number;
  readonly #logFile: string | null;
  readonly #train: EncodedPair[];
  readonly #eval: EncodedPair[] | null;
  #refTrain: { chosen: Float32Array; rejected: Float32Array };
  #step = 0;

  constructor(config: DPOConfig) {
    super();
    const op = 'DPOTrainer';
    const c = options<DPOConfig>(op, config, dpoConfigKeys, 'config', 'a DPOConfig object');
    const train = pairsOf(op, 'trainData', c.trainData);
    const evalPairs = c.evalData === undefined ? null : pairsOf(op, 'evalData', c.evalData);
    this.seed = seedOf(op, c.seed, 0);
    this.beta = finiteAtLeast(op, 'beta', c.beta, 0, 0.1);
    if (this.beta === 0) throw rangeError(op, 'beta', 'must be a finite number > 0 but is 0');
    this.lossType = choice(op, 'lossType', c.lossType, lossTypes, 'sigmoid');
    this.labelSmoothing = finiteAtLeast(op, 'labelSmoothing', c.labelSmoothing, 0, 0);
    this.batchSize = intAtLeast(op, 'perDeviceTrainBatchSize', c.perDeviceTrainBatchSize, 1, 8);
    this.epochs = intAtLeast(op, 'numTrainEpochs', c.numTrainEpochs, 1, 1);
    this.maxGradNorm = finiteAtLeast(op, 'maxGradNorm', c.maxGradNorm, 0, 1);
    this.#logFile = pathOrNull(op, 'logFile', c.logFile);
    if (c.tokenizer !== undefined && !(c.tokenizer instanceof SimpleTokenizer)) throw typeError(op, 'tokenizer', 'a SimpleTokenizer', c.tokenizer);
    this.tokenizer = c.tokenizer ?? SimpleTokenizer.fromTexts(train.flatMap((p) => [p.prompt, p.chosen, p.rejected]));
    this.policy = c.policy !== undefined ? sequencePolicy(op, c.policy) : tokenPolicy({ vocabSize: this.tokenizer.vocabSize, seed: this.seed });
    if (this.policy.config.vocabSize < this.tokenizer.vocabSize)
      throw rangeError(op, 'policy', `has a vocabulary of ${this.policy.config.vocabSize} but the tokenizer's is ${this.tokenizer.vocabSize}`);
    this.reference = this.policy.clone();
    const stepsPerEpoch = Math.ceil(train.length / this.batchSize);
    const total = stepsPerEpoch * this.epochs;
    const warmupRatio = finiteAtLeast(op, 'warmupRatio', c.warmupRatio, 0, 0);
    if (warmupRatio > 1) throw rangeError(op, 'warmupRatio', `must be in [0, 1] but is ${warmupRatio}`);
    this.optimizer = adamw(this.policy.parameters(), {
      lr: finiteAtLeast(op, 'learningRate', c.learningRate, 0, 1e-6),
      weightDecay: finiteAtLeast(op, 'weightDecay', c.weightDecay, 0, 0),
      schedule: linearSchedule({ totalSteps: total, warmupSteps: Math.floor(warmupRatio * total) }),
    });
    this.#train = train.map((p) => this.#encode(p));
    this.#eval = evalPairs?.map((p) => this.#encode(p)) ?? null;
    this.#refTrain = this.#referenceLogprobs(this.#train);
  }

  #encode(p: PreferencePair): EncodedPair {
    const withEos = (text: string) => {
      const ids = this.tokenizer.encode(text);
      const out = new Int32Array(ids.length + 1);
      out.set(ids);
      out[ids.length] = SimpleTokenizer.EOS;
      return out;
    };
    return { prompt: this.tokenizer.encode(p.prompt), chosen: withEos(p.chosen), rejected: withEos(p.rejected) };
  }

  /** Chosen rows, then rejected rows, of the pairs at `index`: one forward scores both. */
  #batch(pairs: readonly EncodedPair[], index: readonly number[]) {
    const sel = index.map((i) => pairs[i]);
    const prompts = [...sel, ...sel].map((p) => p.prompt);
    const completions = [...sel.map((p) => p.chosen), ...sel.map((p) => p.rejected)];
    return completionBatch(prompts, completions, this.policy.config.contextSize);
  }

  #referenceLogprobs(pairs: readonly EncodedPair[]): { chosen: Float32Array; rejected: Float32Array } {
    const chosen = new Float32Array(pairs.length), rejected = new Float32Array(pairs.length);
    for (let i = 0; i < pairs.length; i += this.batchSize) {
      const index = Array.from({ length: Math.min(this.batchSize, pairs.length - i) }, (_, k) => i + k);
      const lp = completionLogprobs(this.reference, this.#batch(pairs, index)).logprobs;
      chosen.set(lp.subarray(0, index.length), i);
      rejected.set(lp.subarray(index.length), i);
    }
    return { chosen, rejected };
  }

  #loss(lp: Float32Array, n: number, ref: { chosen: Float32Array; rejected: Float32Array }, lengths: Int32Array) {
    return dpoLoss({
      policyChosen: lp.subarray(0, n), policyRejected: lp.subarray(n), refChosen: ref.chosen, refRejected: ref.rejected,
      chosenLengths: lengths.subarray(0, n), rejectedLengths: lengths.subarray(n),
    }, { beta: this.beta, lossType: this.lossType, labelSmoothing: this.labelSmoothing });
  }

  get stepCount(): number {
    return this.#step;
  }

  /** One optimizer step on the pairs at `index` of the training data. */
  #trainStep(index: number[], epoch: number): DPOStepMetrics {
    const start = process.hrtime.bigint();
    const n = index.length;
    const batch = this.#batch(this.#train, index);
    const learningRate = this.optimizer.lr;
    this.optimizer.zeroGrad();
    const { logprobs, backward } = completionLogprobs(this.policy, batch);
    const ref = { chosen: Float32Array.from(index, (i) => this.#refTrain.chosen[i]), rejected: Float32Array.from(index, (i) => this.#refTrain.rejected[i]) };
    const r = this.#loss(logprobs, n, ref, batch.lengths);
    const grad = new Float32Array(2 * n);
    grad.set(r.gradChosen.dataSync() as Float32Array);
    grad.set(r.gradRejected.dataSync() as Float32Array, n);
    backward(grad);
    clipGradNorm(this.policy.parameters(), this.maxGradNorm);
    this.optimizer.step();
    this.#step += 1;
    const m: DPOStepMetrics = { step: this.#step, epoch, loss: r.loss, rewardsChosen: r.stats.rewardsChosen,
      rewardsRejected: r.stats.rewardsRejected, accuracy: r.stats.accuracy, margin: r.stats.margin, learningRate,
      ...throughput(start, n, batch.lengths) };
    if (this.#logFile !== null) fs.appendFileSync(this.#logFile, JSON.stringify(m) + '\n');
    this.emit('step', m);
    return m;
  }

  /** The DPO loss and the implicit reward's accuracy and margin on held-out pairs (no update). */
  evaluate(data?: PreferencePair[] | string): DPOEvaluation {
    const pairs = data === undefined ? this.#eval : pairsOf('DPOTrainer.evaluate', 'data', data).map((p) => this.#encode(p));
    if (pairs === null) throw rangeError('DPOTrainer.evaluate', 'data', 'is needed: the trainer has no evalData');
    const ref = this.#referenceLogprobs(pairs);
    let loss = 0, accuracy = 0, margin = 0;
    for (let i = 0; i < pairs.length; i += this.batchSize) {
      const index = Array.from({ length: Math.min(this.batchSize, pairs.length - i) }, (_, k) => i + k);
      const batch = this.#batch(pairs, index);
      const lp = completionLogprobs(this.policy, batch).logprobs;
      const r = this.#loss(lp, index.length, { chosen: ref.chosen.subarray(i, i + index.length), rejected: ref.rejected.subarray(i, i + index.length) },
        batch.lengths);
      loss += r.loss * index.length;
      accuracy += r.stats.accuracy * index.length;
      margin += r.stats.margin * index.length;
    }
    return { loss: loss / pairs.length, accuracy: accuracy / pairs.length, margin: margin / pairs.length };
  }

  get #stepsPerEpoch(): number {
    return Math.ceil(this.#train.length / this.batchSize);
  }

  /** The order of epoch e's pairs: shuffled by seed + e, so a resumed run sees the same. */
  #epochOrder(epoch: number): number[] {
    return shuffledIndices(this.#train.length, new Random(this.seed + epoch));
  }

  /**
   * The remaining steps of every epoch over the shuffled training pairs (all of them for a new
   * trainer, the rest for a resumed one); evaluates after each epoch when there is evalData.
   */
  train(): DPOSummary {
    const start = process.hrtime.bigint();
    let lossSum = 0, accuracySum = 0, steps = 0;
    let evalAccuracy: number | null = null;
    const perEpoch = this.#stepsPerEpoch;
    for (let epoch = Math.floor(this.#step / perEpoch); epoch < this.epochs; ++epoch) {
      const order = this.#epochOrder(epoch);
      for (let k = this.#step - epoch * perEpoch; k < perEpoch; ++k) {
        const m = this.#trainStep(order.slice(k * this.batchSize, (k + 1) * this.batchSize), epoch);
        lossSum += m.loss;
        accuracySum += m.accuracy;
        steps += 1;
      }
      if (this.#eval !== null) {
        const e = this.evaluate();
        evalAccuracy = e.accuracy;
        this.emit('evaluate', { step: this.#step, epoch, ...e });
      }
    }
    return { steps, trainLoss: steps > 0 ? lossSum / steps : NaN, trainAccuracy: steps > 0 ? accuracySum / steps : NaN, evalAccuracy,
      seconds: Number(process.hrtime.bigint() - start) / 1e9 };
  }

  /** Runs `n` more steps (at most to the end of the last epoch); for interrupting a run. */
  steps(n: number): DPOStepMetrics[] {
    const out: DPOStepMetrics[] = [];
    const perEpoch = this.#stepsPerEpoch;
    while (out.length < n && this.#step < perEpoch * this.epochs) {
      const epoch = Math.floor(this.#step / perEpoch), k = this.#step - epoch * perEpoch;
      out.push(this.#trainStep(this.#epochOrder(epoch).slice(k * this.batchSize, (k + 1) * this.batchSize), epoch));
    }
    return out;
  }

  /** policy.safetensors, reference.safetensors, optimizer.safetensors and trainer.json in `dir`. */
  save(dir: string): void {
    const op = 'DPOTrainer.save';
    saveModels(op, dir, this.policy, this.reference, this.optimizer);
    writeJsonAtomic(op, path.join(dir, 'trainer.json'), { format: kStateFormat, step: this.#step });
  }

  /** A trainer made from `config` (the data and settings again) continuing the checkpoint in `dir`. */
  static resume(dir: string, config: DPOConfig): DPOTrainer {
    const op = 'DPOTrainer.resume';
    const state = readJsonState<{ format: string; step: number }>(op, path.join(dir, 'trainer.json'), kStateFormat);
    const trainer = new DPOTrainer(config);
    loadModels(op, dir, trainer.policy, trainer.reference, trainer.optimizer);
    trainer.#refTrain = trainer.#referenceLogprobs(trainer.#train);
    trainer.#step = state.step;
    return trainer;
  }
}

