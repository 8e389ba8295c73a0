// A reward model from preference pairs (TRL's RewardTrainer, with RewardConfig's defaults where
// they apply): each pair's prompt + chosen and prompt + rejected texts are scored by one
// rl.nn.rewardModel, the Bradley-Terry loss of SEMANTICS §7 (with TRL's per-pair margins and
// optional reward centring) is minimised by AdamW under a linear schedule with warm-up, and the
// trainer saves checkpoints that resume bit for bit.
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { PreferencePair, pairFrom, readPreferences } from '../data/jsonl';
import { SimpleTokenizer } from '../data/tokenizer';
import { RlhfError, rangeError, typeError } from '../errors';
import { loadSafetensors } from '../io/safetensors';
import { loadModel } from '../nn/index';
import { RewardModel, rewardModel } from '../nn/models';
import { Random } from '../nn/random';
import { pairwiseRewardLoss } from '../ops/preference';
import { AdamW, adamw, clipGradNorm, linearSchedule } from '../optim';
import { DeviceSpec, tensor } from '../tensor';
import { keysOf, numberIn, options } from '../validate';
import { readJsonState, writeJsonAtomic } from './checkpoint';

export interface RewardConfig {
  /** Default: rl.nn.rewardModel({ vocabSize: tokenizer.vocabSize, seed }). */
  model?: RewardModel;
  /** Default: a word-level SimpleTokenizer of the training texts (at most the model's vocabSize ids). */
  tokenizer?: SimpleTokenizer;
  /** Pairs, or the path of a JSONL file of them (rl.data.readPreferences). */
  trainData: PreferencePair[] | string;
  /** Held-out pairs, evaluated after every epoch. */
  evalData?: PreferencePair[] | string;
  /** Default 1e-4 (TRL's RewardConfig; transformers' own default is 5e-5). */
  learningRate?: number;
  /** Pairs per step; default 8. */
  perDeviceTrainBatchSize?: number;
  /** Pairs per forward in evaluate(); default 8. */
  perDeviceEvalBatchSize?: number;
  /** Default 1 (transformers' default is 3). */
  numTrainEpochs?: number;
  /** Tokens kept of each sequence (prompt, completion, end-of-sequence), cut from the end; default 1024; null keeps all. */
  maxLength?: number | null;
  /** TRL's center_rewards_coefficient (pairwiseRewardLoss's centerCoef); default null (off), 0.01 recommended. */
  centerRewardsCoefficient?: number | null;
  /** Global gradient-norm clip; default 1.0; 0 turns clipping off. */
  maxGradNorm?: number;
  /** AdamW's decoupled weight decay; default 0. */
  weightDecay?: number;
  /** The fraction of all steps spent warming the learning rate up from 0; default 0. */
  warmupRatio?: number;
  /** Of the default model and of the shuffling; default 0. */
  seed?: number;
  /** Append one JSON line per step and per evaluation to this file. */
  logFile?: string;
}

const rewardConfigKeys = keysOf<RewardConfig>({
  model: true, tokenizer: true, trainData: true, evalData: true, learningRate: true, perDeviceTrainBatchSize: true,
  perDeviceEvalBatchSize: true, numTrainEpochs: true, maxLength: true, centerRewardsCoefficient: true,
  maxGradNorm: true, weightDecay: true, warmupRatio: true, seed: true, logFile: true,
});

/** The hyperparameters, resolved: what a checkpoint stores and resume() reuses. */
export interface RewardSettings {
  learningRate: number;
  perDeviceTrainBatchSize: number;
  perDeviceEvalBatchSize: number;
  numTrainEpochs: number;
  maxLength: number | null;
  centerRewardsCoefficient: number | null;
  maxGradNorm: number;
  weightDecay: number;
  warmupRatio: number;
  seed: number;
}

export interface RewardStepMetrics {
  step: number;
  /** Epochs done, fractional (as TRL logs it). */
  epoch: number;
  loss: number;
  accuracy: number;
  /** Mean of rc - rr over the batch. */
  meanMargin: number;
  /** The learning rate this step used. */
  learningRate: number;
  /** Pairs per second of the step. */
  samplesPerSecond: number;
}

export interface RewardEvalMetrics {
  step: number;
  epoch: number;
  loss: number;
  accuracy: number;
}

export interface RewardTrainSummary {
  /** Steps taken since the start (a resumed run counts those before the checkpoint). */
  steps: number;
  /** Means over all those steps. */
  trainLoss: number;
  trainAccuracy: number;
  /** Of the last evaluation, when there is evalData. */
  evalAccuracy?: number;
  evalLoss?: number;
  /** Of this call. */
  seconds: number;
}

const defaults: RewardSettings = {
  learningRate: 1e-4, perDeviceTrainBatchSize: 8, perDeviceEvalBatchSize: 8, numTrainEpochs: 1, maxLength: 1024,
  centerRewardsCoefficient: null, maxGradNorm: 1.0, weightDecay: 0, warmupRatio: 0, seed: 0,
};

// --- config ----------------------------------------------------------------------------------------------

function positiveInt(op: string, name: string, v: unknown): number {
  if (typeof v !== 'number') throw typeError(op, name, 'an integer >= 1', v);
  if (!Number.isInteger(v) || v < 1) throw rangeError(op, name, `must be an integer >= 1 but is ${v}`);
  return v;
}

function nonNegative(op: string, name: string, v: unknown): number {
  if (typeof v !== 'number') throw typeError(op, name, 'a finite number >= 0', v);
  if (!(v >= 0 && Number.isFinite(v))) throw rangeError(op, name, `must be a finite number >= 0 but is ${v}`);
  return v;
}

function resolveSettings(op: string, o: Partial<RewardConfig>): RewardSettings {
  const s = { ...defaults };
  for (const k of ['perDeviceTrainBatchSize', 'perDeviceEvalBatchSize', 'numTrainEpochs'] as const)
    if (o[k] !== undefined) s[k] = positiveInt(op, k, o[k]);
  for (const k of ['learningRate', 'maxGradNorm', 'weightDecay'] as const)
    if (o[k] !== undefined) s[k] = nonNegative(op, k, o[k]);
  if (o.maxLength !== undefined) s.maxLength = o.maxLength === null ? null : positiveInt(op, 'maxLength', o.maxLength);
  if (o.centerRewardsCoefficient !== undefined)
    s.centerRewardsCoefficient = o.centerRewardsCoefficient === null ? null : nonNegative(op, 'centerRewardsCoefficient', o.centerRewardsCoefficient);
  s.warmupRatio = numberIn(op, 'warmupRatio', o.warmupRatio, 0, 1, 0);
  if (o.seed !== undefined) {
    if (typeof o.seed !== 'number') throw typeError(op, 'seed', 'an integer in [0, 2^32)', o.seed);
    if (!Number.isInteger(o.seed) || o.seed < 0 || o.seed > 0xffffffff) throw rangeError(op, 'seed', `must be an integer in [0, 2^32) but is ${o.seed}`);
    s.seed = o.seed;
  }
  return s;
}

/** In-memory pairs checked as the JSONL reader checks a line, or a file's pairs; never empty. */
function pairsOf(op: string, name: string, v: unknown): PreferencePair[] {
  let pairs: PreferencePair[];
  if (typeof v === 'string') {
    pairs = readPreferences(v);
  } else if (Array.isArray(v)) {
    pairs = v.map((row, i) => {
      const pair = pairFrom(row);
      if (typeof pair === 'string') throw new TypeError(`${op}: \`${name}[${i}]\` ${pair}`);
      return pair;
    });
  } else {
    throw typeError(op, name, 'an array of preference pairs or a JSONL path', v);
  }
  if (pairs.length === 0) throw rangeError(op, name, `holds no preference pairs${typeof v === 'string' ? ` ('${v}')` : ''}`);
  return pairs;
}

function modelOf(op: string, v: unknown): RewardModel | undefined {
  if (v === undefined) return undefined;
  if (!(v instanceof RewardModel)) throw typeError(op, 'model', 'a RewardModel (rl.nn.rewardModel)', v);
  if (v.frozen) throw rangeError(op, 'model', 'is frozen; clone({ frozen: false }) gives a trainable copy');
  return v;
}

// --- batches ----------------------------------------------------------------------------------------------

/** A pair as token ids, each sequence ending in EOS and cut to maxLength. */
interface EncodedPair {
  chosen: Int32Array;
  rejected: Int32Array;
  margin: number | undefined;
}

function encodeSequence(tok: SimpleTokenizer, prompt: string, completion: string, maxLength: number | null): Int32Array {
  const ids = tok.encode(prompt === '' ? completion : `${prompt} ${completion}`);
  const out = new Int32Array(ids.length + 1);
  out.set(ids);
  out[ids.length] = SimpleTokenizer.EOS;
  return maxLength === null || out.length <= maxLength ? out : out.slice(0, maxLength);
}

function encodePairs(tok: SimpleTokenizer, pairs: PreferencePair[], maxLength: number | null): EncodedPair[] {
  return pairs.map((p) => ({ chosen: encodeSequence(tok, p.prompt, p.chosen, maxLength),
    rejected: encodeSequence(tok, p.prompt, p.rejected, maxLength), margin: p.margin }));
}

/** The rows right-padded with PAD to the longest, with a mask of the real tokens. */
function collate(rows: Int32Array[]): { tokens: Int32Array; mask: Uint8Array; T: number } {
  const T = rows.reduce((m, r) => Math.max(m, r.length), 1);
  const tokens = new Int32Array(rows.length * T);
  const mask = new Uint8Array(rows.length * T);
  rows.forEach((r, i) => {
    tokens.set(r, i * T);
    mask.fill(1, i * T, i * T + r.length);
  });
  return { tokens, mask, T };
}

/** Per-pair margins, or undefined when no pair of the batch has one (the loss then takes 0). */
function marginsOf(batch: EncodedPair[]): Float32Array | undefined {
  if (batch.every((p) => p.margin === undefined)) return undefined;
  return Float32Array.from(batch, (p) => p.margin ?? 0);
}

/** The shuffling seed of an epoch: its own stream, apart from the model's initialisation seed. */
function epochSeed(seed: number, epoch: number): number {
  return (Math.imul(seed, 0x9e3779b1) + epoch + 1) >>> 0;
}

function shuffled(n: number, seed: number): Int32Array {
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const rng = new Random(seed);
  for (let i = n - 1; i > 0; --i) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

// --- checkpoints -------------------------------------------------------------------------------------------

const kTokenizerKey = 'rlhf-node.tokenizer';
const kStepKey = 'rlhf-node.step';
const kStateFormat = 'rlhf-node.rewardTrainer';

/** What trainer.json holds. */
interface TrainerState {
  format: typeof kStateFormat;
  step: number;
  epoch: number;
  trainPairs: number;
  lossSum: number;
  accuracySum: number;
  lastEval: { loss: number; accuracy: number } | null;
  settings: RewardSettings;
}

function readState(op: string, file: string): TrainerState {
  const state = readJsonState<TrainerState>(op, file, kStateFormat);
  if (!Number.isInteger(state.step) || typeof state.settings !== 'object')
    throw new RlhfError('E_FORMAT', `${op}: '${file}' is not a reward-trainer state saved by rlhf-node`);
  return state;
}

// --- the trainer --------------------------------------------------------------------------------------------

export class RewardTrainer extends EventEmitter {
  readonly settings: Readonly<RewardSettings>;
  readonly model: RewardModel;
  readonly tokenizer: SimpleTokenizer;
  readonly optimizer: AdamW;
  readonly trainData: readonly PreferencePair[];
  readonly evalData: readonly PreferencePair[] | null;
  readonly logFile: string | null;
  /** Optimizer steps per epoch (the last batch of an epoch may be short) and in all. */
  readonly stepsPerEpoch: number;
  readonly totalSteps: number;
  readonly #train: EncodedPair[];
  readonly #eval: EncodedPair[] | null;
  #step = 0;
  #order: { epoch: number; order: Int32Array } | null = null;
  #lossSum = 0;
  #accuracySum = 0;
  #lastEval: { loss: number; accuracy: number } | null = null;

  constructor(config: RewardConfig) {
    super();
    const op = 'RewardTrainer';
    const o = options<RewardConfig>(op, config, rewardConfigKeys, 'config', 'a RewardConfig object');
    const s = resolveSettings(op, o);
    this.settings = Object.freeze(s);
    if (o.logFile !== undefined && typeof o.logFile !== 'string') throw typeError(op, 'logFile', 'a path', o.logFile);
    this.logFile = o.logFile ?? null;
    const model = modelOf(op, o.model);
    if (o.tokenizer !== undefined && !(o.tokenizer instanceof SimpleTokenizer))
      throw typeError(op, 'tokenizer', 'a SimpleTokenizer (rl.data.SimpleTokenizer)', o.tokenizer);
    this.trainData = pairsOf(op, 'trainData', o.trainData);
    this.evalData = o.evalData === undefined ? null : pairsOf(op, 'evalData', o.evalData);
    this.tokenizer = o.tokenizer ?? SimpleTokenizer.fromTexts(this.trainData.flatMap((p) => [p.prompt, p.chosen, p.rejected]),
      { maxVocab: model?.config.vocabSize });
    this.model = model ?? rewardModel({ vocabSize: this.tokenizer.vocabSize, seed: s.seed });
    if (this.model.config.vocabSize < this.tokenizer.vocabSize)
      throw rangeError(op, 'tokenizer', `has ${this.tokenizer.vocabSize} ids but the model's vocabSize is ${this.model.config.vocabSize}`);
    this.#train = encodePairs(this.tokenizer, this.trainData as PreferencePair[], s.maxLength);
    this.#eval = this.evalData === null ? null : encodePairs(this.tokenizer, this.evalData as PreferencePair[], s.maxLength);
    this.stepsPerEpoch = Math.ceil(this.#train.length / s.perDeviceTrainBatchSize);
    this.totalSteps = this.stepsPerEpoch * s.numTrainEpochs;
    // transformers: warm-up steps = ceil(warmup_ratio * total), then linear decay to 0; AdamW
    // with betas (0.9, 0.999) and eps 1e-8 (rl.optim.adamw's defaults).
    const schedule = linearSchedule({ totalSteps: this.totalSteps, warmupSteps: Math.ceil(s.warmupRatio * this.totalSteps) });
    this.optimizer = adamw(this.model.parameters(), { lr: s.learningRate, weightDecay: s.weightDecay, schedule });
  }

  /** Optimizer steps taken since the start. */
  get stepCount(): number {
    return this.#step;
  }

  get done(): boolean {
    return this.#step >= this.totalSteps;
  }

  /** The pairs of the next step: epoch e is shuffled by its own seed, so a resumed run sees the same order. */
  #nextBatch(): EncodedPair[] {
    const epoch = Math.floor(this.#step / this.stepsPerEpoch);
    if (this.#order === null || this.#order.epoch !== epoch)
      this.#order = { epoch, order: shuffled(this.#train.length, epochSeed(this.settings.seed, epoch)) };
    const B = this.settings.perDeviceTrainBatchSize;
    const start = (this.#step % this.stepsPerEpoch) * B;
    return Array.from(this.#order.order.subarray(start, start + B), (i) => this.#train[i]);
  }

  /**
   * The rewards of a batch's chosen and rejected sequences. Both go through ONE forward of 2B
   * rows (chosen first): the model keeps only its last forward for backward, so one backward
   * of the concatenated gradient then serves both halves.
   */
  #rewards(batch: EncodedPair[]): { chosen: Float32Array; rejected: Float32Array } {
    const B = batch.length;
    const { tokens, mask, T } = collate([...batch.map((p) => p.chosen), ...batch.map((p) => p.rejected)]);
    const device = this.model.device as DeviceSpec;
    const rewards = this.model.forward(tensor(tokens, [2 * B, T], { dtype: 'int32', device }),
      tensor(mask, [2 * B, T], { dtype: 'uint8', device })).dataSync() as Float32Array;
    return { chosen: rewards.slice(0, B), rejected: rewards.slice(B) };
  }

  #loss(batch: EncodedPair[], chosen: Float32Array, rejected: Float32Array) {
    return pairwiseRewardLoss({ chosen, rejected, margin: marginsOf(batch) },
      { centerCoef: this.settings.centerRewardsCoefficient ?? 0 });
  }

  #log(line: object): void {
    if (this.logFile !== null) fs.appendFileSync(this.logFile, JSON.stringify(line) + '\n');
  }

  /** One optimizer step on the next batch; after an epoch's last step, the evaluation of evalData. */
  step(): RewardStepMetrics {
    if (this.done) throw rangeError('RewardTrainer.step', 'step', `is past the end: all ${this.totalSteps} steps are taken`);
    const start = process.hrtime.bigint();
    const batch = this.#nextBatch();
    const learningRate = this.optimizer.lr;
    const { chosen, rejected } = this.#rewards(batch);
    const r = this.#loss(batch, chosen, rejected);
    const grad = new Float32Array(2 * batch.length);
    grad.set(r.gradChosen.dataSync() as Float32Array);
    grad.set(r.gradRejected.dataSync() as Float32Array, batch.length);
    // Zeroed here rather than after the step, so gradients a caller left on its model never leak in.
    this.optimizer.zeroGrad();
    this.model.backward(grad);
    if (this.settings.maxGradNorm > 0) clipGradNorm(this.model.parameters(), this.settings.maxGradNorm);
    this.optimizer.step();
    this.#step += 1;
    this.#lossSum += r.loss;
    this.#accuracySum += r.stats.accuracy;
    const metrics: RewardStepMetrics = { step: this.#step, epoch: this.#step / this.stepsPerEpoch, loss: r.loss,
      accuracy: r.stats.accuracy, meanMargin: r.stats.meanMargin, learningRate,
      samplesPerSecond: batch.length / (Number(process.hrtime.bigint() - start) / 1e9) };
    this.#log(metrics);
    this.emit('step', metrics);
    if (this.#step % this.stepsPerEpoch === 0 && this.#eval !== null) this.#evaluateEpoch();
    return metrics;
  }

  #evaluateEpoch(): void {
    this.#lastEval = this.#evaluateEncoded(this.#eval as EncodedPair[]);
    const metrics: RewardEvalMetrics = { step: this.#step, epoch: this.#step / this.stepsPerEpoch, ...this.#lastEval };
    this.#log({ step: metrics.step, epoch: metrics.epoch, evalLoss: metrics.loss, evalAccuracy: metrics.accuracy });
    this.emit('evaluate', metrics);
  }

  #evaluateEncoded(pairs: EncodedPair[]): { loss: number; accuracy: number } {
    const chosen = new Float32Array(pairs.length);
    const rejected = new Float32Array(pairs.length);
    const B = this.settings.perDeviceEvalBatchSize;
    for (let start = 0; start < pairs.length; start += B) {
      const r = this.#rewards(pairs.slice(start, start + B));
      chosen.set(r.chosen, start);
      rejected.set(r.rejected, start);
    }
    const r = this.#loss(pairs, chosen, rejected);
    return { loss: r.loss, accuracy: r.stats.accuracy };
  }

  /** The loss and accuracy (mean of rc > rr) over held-out pairs (default evalData); forward only. */
  evaluate(data?: PreferencePair[] | string): { loss: number; accuracy: number } {
    const op = 'RewardTrainer.evaluate';
    if (data === undefined) {
      if (this.#eval === null) throw rangeError(op, 'data', 'is needed: the trainer has no evalData');
      return this.#evaluateEncoded(this.#eval);
    }
    return this.#evaluateEncoded(encodePairs(this.tokenizer, pairsOf(op, 'data', data), this.settings.maxLength));
  }

  /** Steps until numTrainEpochs epochs are done (from wherever a resumed trainer stands). */
  train(): RewardTrainSummary {
    const start = process.hrtime.bigint();
    while (!this.done) this.step();
    const summary: RewardTrainSummary = { steps: this.#step, trainLoss: this.#lossSum / this.#step,
      trainAccuracy: this.#accuracySum / this.#step, seconds: 0 };
    if (this.#lastEval !== null) {
      summary.evalAccuracy = this.#lastEval.accuracy;
      summary.evalLoss = this.#lastEval.loss;
    }
    summary.seconds = Number(process.hrtime.bigint() - start) / 1e9;
    return summary;
  }

  /**
   * A checkpoint in `dir`: model.safetensors (with the tokenizer in its metadata),
   * optimizer.safetensors and trainer.json, each written to a temporary file and renamed.
   * trainer.json goes last, and all three record the step, so resume() can tell a checkpoint
   * cut short by a crash from a whole one.
   */
  save(dir: string): void {
    const op = 'RewardTrainer.save';
    if (typeof dir !== 'string') throw typeError(op, 'dir', 'a directory path', dir);
    try {
      fs.mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw new RlhfError('E_IO', `${op}: cannot create '${dir}': ${(e as Error).message}`);
    }
    this.model.save(path.join(dir, 'model.safetensors'),
      { [kTokenizerKey]: JSON.stringify(this.tokenizer.toJSON()), [kStepKey]: String(this.#step) });
    this.optimizer.saveState(path.join(dir, 'optimizer.safetensors'));
    const state: TrainerState = { format: kStateFormat, step: this.#step, epoch: this.#step / this.stepsPerEpoch,
      trainPairs: this.#train.length, lossSum: this.#lossSum, accuracySum: this.#accuracySum, lastEval: this.#lastEval,
      settings: { ...this.settings } };
    writeJsonAtomic(op, path.join(dir, 'trainer.json'), state);
  }

  /**
   * A trainer that continues a checkpoint of save() exactly as the saved run would have gone
   * on. `config` gives the data again (it is not saved) and may override saved settings; the
   * checkpoint's tokenizer is used, and its parameters are loaded into `config.model` when
   * given, else into a model made from the saved config.
   */
  static resume(dir: string, config: RewardConfig): RewardTrainer {
    const op = 'RewardTrainer.resume';
    if (typeof dir !== 'string') throw typeError(op, 'dir', 'a directory path', dir);
    const state = readState(op, path.join(dir, 'trainer.json'));
    const modelPath = path.join(dir, 'model.safetensors');
    const { metadata } = loadSafetensors(modelPath);
    if (metadata[kTokenizerKey] === undefined)
      throw new RlhfError('E_FORMAT', `${op}: '${modelPath}' has no tokenizer (it was not saved by a RewardTrainer)`);
    if (metadata[kStepKey] !== String(state.step))
      throw new RlhfError('E_FORMAT', `${op}: '${dir}' is an incomplete checkpoint: the model is of step ${metadata[kStepKey]}, ` +
        `trainer.json of step ${state.step}`);
    const tokenizer = SimpleTokenizer.fromJSON(metadata[kTokenizerKey]);
    const o = options<RewardConfig>(op, config, rewardConfigKeys, 'config', 'a RewardConfig object');
    let model = modelOf(op, o.model);
    if (model === undefined) {
      const loaded = loadModel(modelPath);
      if (!(loaded instanceof RewardModel)) throw new RlhfError('E_FORMAT', `${op}: '${modelPath}' holds a ${loaded.kind}, not a rewardModel`);
      model = loaded;
    } else {
      model.load(modelPath);
    }
    const trainer = new RewardTrainer({ ...state.settings, ...o, model, tokenizer } as RewardConfig);
    if (trainer.#train.length !== state.trainPairs)
      throw rangeError(op, 'trainData', `holds ${trainer.#train.length} pairs but the checkpoint trained on ${state.trainPairs}`);
    const optimizerPath = path.join(dir, 'optimizer.safetensors');
    trainer.optimizer.loadState(optimizerPath);
    if (trainer.optimizer.stepCount !== state.step)
      throw new RlhfError('E_FORMAT', `${op}: '${dir}' is an incomplete checkpoint: the optimizer is of step ` +
        `${trainer.optimizer.stepCount}, trainer.json of step ${state.step}`);
    trainer.#step = state.step;
    trainer.#lossSum = state.lossSum;
    trainer.#accuracySum = state.accuracySum;
    trainer.#lastEval = state.lastEval;
    return trainer;
  }
}
