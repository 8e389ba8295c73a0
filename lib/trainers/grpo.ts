// GRPO (TRL's GRPOTrainer, its config names and current defaults in camelCase): for each prompt a
// policy (rl.nn.TokenPolicy, or any SequencePolicy) samples numGenerations completions; a reward
// function scores them; rewards become group-relative advantages (rl.groupAdvantages); the
// clipped token loss, with an optional k3 KL to a frozen reference (beta > 0), comes from
// rl.actorLossFromLogits in one fused pass; its gradient goes back through the policy; AdamW steps.
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { rangeError, typeError } from '../errors';
import { SimpleTokenizer } from '../data/tokenizer';
import { tokenPolicy } from '../nn/models';
import { PassesState, Random, RandomState, ShuffledPasses } from '../nn/random';
import { Aggregation, actorLossFromLogits } from '../ops/policy';
import { groupAdvantages } from '../ops/preference';
import { AdamW, adamw, clipGradNorm, linearSchedule } from '../optim';
import { tensor } from '../tensor';
import { choice, keysOf, options } from '../validate';
import { loadModels, readJsonState, saveModels, writeJsonAtomic } from './checkpoint';
import { bool, finiteAtLeast, intAtLeast, pathOrNull, seedOf, throughput } from './config';
import { SequencePolicy, sequencePolicy } from './policy';
import { CompletionBatch, completionBatch, sampleCompletions, tokenLogprobs } from './sequences';

/** Scores one completion of a prompt (the texts as the tokenizer decodes them). */
export type RewardFunction = (prompt: string, completion: string) => number;

const kStateFormat = 'rlhf-node.grpoTrainer';

/** What trainer.json of a checkpoint holds beside the models and the optimizer state. */
interface GRPOState extends PassesState {
  format: string;
  step: number;
  rng: RandomState;
}

export type GRPOLossType = 'grpo' | 'bnpo' | 'dr_grpo' | 'dapo';
const lossTypes: readonly GRPOLossType[] = ['grpo', 'bnpo', 'dr_grpo', 'dapo'];

export interface GRPOConfig {
  prompts: string[];
  rewardFn: RewardFunction;
  /** Default: a word-level tokenizer of the prompts. */
  tokenizer?: SimpleTokenizer;
  /** Default: rl.nn.tokenPolicy over the tokenizer's vocabulary (contextSize 4, seed). */
  policy?: SequencePolicy;
  /** Completions per prompt; default 8. */
  numGenerations?: number;
  /** Default 256 tokens; a completion also ends at the end-of-sequence token. */
  maxCompletionLength?: number;
  temperature?: number;
  /** Weight of the k3 KL to the initial policy; default 0 (no reference, as TRL now). */
  beta?: number;
  /** Clip range of the ratio; default 0.2 (epsilonHigh defaults to it). */
  epsilon?: number;
  epsilonHigh?: number;
  /** How token losses are averaged: 'dapo' (TRL's default), 'grpo', 'bnpo', 'dr_grpo'. */
  lossType?: GRPOLossType;
  /** Divide advantages by the group's reward std; default true. */
  scaleRewards?: boolean;
  /** Default 1e-6 (TRL); toy policies want far more. */
  learningRate?: number;
  /** Prompts per step; default 8. */
  perDeviceTrainBatchSize?: number;
  /** Optimizer steps in all; default one pass over the prompts. */
  maxSteps?: number;
  maxGradNorm?: number;
  seed?: number;
  logFile?: string;
}

const grpoConfigKeys = keysOf<GRPOConfig>({
  prompts: true, rewardFn: true, tokenizer: true, policy: true, numGenerations: true, maxCompletionLength: true,
  temperature: true, beta: true, epsilon: true, epsilonHigh: true, lossType: true, scaleRewards: true,
  learningRate: true, perDeviceTrainBatchSize: true, maxSteps: true, maxGradNorm: true, seed: true, logFile: true,
});

export interface GRPOStepMetrics {
  step: number;
  loss: number;
  reward: number;
  rewardStd: number;
  completionLength: number;
  kl: number;
  clipfrac: number;
  entropy: number;
  learningRate: number;
  /** Completions and completion tokens per second over the whole step (generation included). */
  samplesPerSecond: number;
  tokensPerSecond: number;
}

export class GRPOTrainer extends EventEmitter {
  readonly tokenizer: SimpleTokenizer;
  readonly policy: SequencePolicy;
  readonly reference: SequencePolicy | null;
  readonly optimizer: AdamW;
  readonly #c: Required<Omit<GRPOConfig, 'tokenizer' | 'policy' | 'logFile' | 'epsilonHigh'>> & { epsilonHigh: number; logFile: string | null };
  readonly #prompts: Int32Array[];
  readonly #rng: Random;
  readonly #passes: ShuffledPasses;
  #step = 0;

  constructor(config: GRPOConfig) {
    super();
    const op = 'GRPOTrainer';
    const c = options<GRPOConfig>(op, config, grpoConfigKeys, 'config', 'a GRPOConfig object');
    if (!Array.isArray(c.prompts) || c.prompts.some((p) => typeof p !== 'string')) throw typeError(op, 'prompts', 'an array of strings', c.prompts);
    if (c.prompts.length === 0) throw rangeError(op, 'prompts', 'holds no prompts');
    if (typeof c.rewardFn !== 'function') throw typeError(op, 'rewardFn', 'a function (prompt, completion) => number', c.rewardFn);
    const batch = intAtLeast(op, 'perDeviceTrainBatchSize', c.perDeviceTrainBatchSize, 1, 8);
    const epsilon = finiteAtLeast(op, 'epsilon', c.epsilon, 0, 0.2);
    this.#c = {
      prompts: c.prompts, rewardFn: c.rewardFn,
      numGenerations: intAtLeast(op, 'numGenerations', c.numGenerations, 2, 8),
      maxCompletionLength: intAtLeast(op, 'maxCompletionLength', c.maxCompletionLength, 1, 256),
      temperature: finiteAtLeast(op, 'temperature', c.temperature, Number.MIN_VALUE, 1),
      beta: finiteAtLeast(op, 'beta', c.beta, 0, 0),
      epsilon, epsilonHigh: finiteAtLeast(op, 'epsilonHigh', c.epsilonHigh, 0, epsilon),
      lossType: choice(op, 'lossType', c.lossType, lossTypes, 'dapo'),
      scaleRewards: bool(op, 'scaleRewards', c.scaleRewards, true),
      learningRate: finiteAtLeast(op, 'learningRate', c.learningRate, 0, 1e-6),
      perDeviceTrainBatchSize: batch,
      maxSteps: intAtLeast(op, 'maxSteps', c.maxSteps, 1, Math.ceil(c.prompts.length / batch)),
      maxGradNorm: finiteAtLeast(op, 'maxGradNorm', c.maxGradNorm, 0, 1),
      seed: seedOf(op, c.seed, 0),
      logFile: pathOrNull(op, 'logFile', c.logFile),
    };
    if (c.tokenizer !== undefined && !(c.tokenizer instanceof SimpleTokenizer)) throw typeError(op, 'tokenizer', 'a SimpleTokenizer', c.tokenizer);
    this.tokenizer = c.tokenizer ?? SimpleTokenizer.fromTexts(c.prompts);
    this.policy = c.policy !== undefined ? sequencePolicy(op, c.policy) : tokenPolicy({ vocabSize: this.tokenizer.vocabSize, seed: this.#c.seed });
    this.reference = this.#c.beta > 0 ? this.policy.clone() : null;
    this.optimizer = adamw(this.policy.parameters(), { lr: this.#c.learningRate, weightDecay: 0,
      schedule: linearSchedule({ totalSteps: this.#c.maxSteps }) });
    this.#prompts = c.prompts.map((p) => this.tokenizer.encode(p));
    this.#rng = new Random(this.#c.seed ^ 0x5bd1e995);
    this.#passes = new ShuffledPasses(c.prompts.length, this.#c.seed);
  }

  get stepCount(): number {
    return this.#step;
  }

  /** numGenerations completions of each prompt, sampled until EOS or the length limit. */
  generate(prompts: readonly Int32Array[]): Int32Array[] {
    const repeated = prompts.flatMap((p) => Array.from({ length: this.#c.numGenerations }, () => p));
    return sampleCompletions(this.policy, repeated, this.#c.maxCompletionLength, this.#c.temperature, this.#rng);
  }

  /** The divisor of the token losses as TRL forms it: the batch's tokens ('dapo'), or B times
   * the length limit ('dr_grpo'); the other types need none. */
  #normalizer(batch: CompletionBatch): number | undefined {
    if (this.#c.lossType === 'dapo') return Math.max(1, batch.lengths.reduce((a, b) => a + b, 0));
    if (this.#c.lossType === 'dr_grpo') return batch.B * this.#c.maxCompletionLength;
    return undefined;
  }

  /** Generation, rewards, advantages and one optimizer step on the prompts at `index`. */
  #trainStep(index: number[]): GRPOStepMetrics {
    const start = process.hrtime.bigint();
    const c = this.#c;
    const G = c.numGenerations;
    const prompts = index.map((i) => this.#prompts[i]);
    const completions = this.generate(prompts);
    const promptsPerRow = prompts.flatMap((p) => Array.from({ length: G }, () => p));
    const rewards = new Float32Array(completions.length);
    completions.forEach((comp, r) => {
      const text = this.tokenizer.decode(comp.filter((x) => x !== SimpleTokenizer.EOS));
      const v = c.rewardFn(c.prompts[index[Math.floor(r / G)]], text);
      if (typeof v !== 'number' || !Number.isFinite(v)) throw rangeError('GRPOTrainer', 'rewardFn', `returned ${String(v)} for completion ${r}: rewards must be finite numbers`);
      rewards[r] = v;
    });
    const advantages = groupAdvantages(rewards, { groupSize: G, scale: c.scaleRewards ? 'group' : 'none' });
    const batch = completionBatch(promptsPerRow, completions, this.policy.config.contextSize);
    const { B, T } = batch;
    const V = this.policy.config.vocabSize;
    const old = tokenLogprobs(this.policy, batch, c.temperature);
    const ref = this.reference !== null ? tokenLogprobs(this.reference, batch, c.temperature) : null;
    const learningRate = this.optimizer.lr;
    this.optimizer.zeroGrad();
    const { logits } = this.policy.forward(tensor(batch.contexts, [B * T, batch.contextSize], { dtype: 'int32' }));
    const r = actorLossFromLogits({
      logits: tensor(logits.dataSync() as Float32Array, [B, T, V]), labels: tensor(batch.labels, [B, T], { dtype: 'int32' }),
      oldLogprobs: tensor(old, [B, T]), advantages, refLogprobs: ref === null ? undefined : tensor(ref, [B, T]),
      mask: tensor(batch.mask, [B, T], { dtype: 'uint8' }),
    }, { temperature: c.temperature, clipLow: c.epsilon, clipHigh: c.epsilonHigh, aggregation: c.lossType as Aggregation,
      normalizer: this.#normalizer(batch), klCoef: c.beta, kl: { estimator: 'k3' } });
    this.policy.backward({ gradLogits: tensor(r.gradLogits.dataSync() as Float32Array, [B * T, V]) });
    clipGradNorm(this.policy.parameters(), c.maxGradNorm);
    this.optimizer.step();
    this.#step += 1;
    let mean = 0;
    for (const x of rewards) mean += x;
    mean /= rewards.length;
    let sq = 0;
    for (const x of rewards) sq += (x - mean) ** 2;
    const m: GRPOStepMetrics = {
      step: this.#step, loss: r.loss, reward: mean, rewardStd: Math.sqrt(sq / Math.max(1, rewards.length - 1)),
      completionLength: batch.lengths.reduce((a, b) => a + b, 0) / B, kl: r.stats.kl, clipfrac: r.stats.clipfrac,
      entropy: r.stats.entropy, learningRate, ...throughput(start, B, batch.lengths),
    };
    if (c.logFile !== null) fs.appendFileSync(c.logFile, JSON.stringify(m) + '\n');
    this.emit('step', m);
    return m;
  }

  /** One step: generation, rewards, advantages, the update. */
  step(): GRPOStepMetrics {
    return this.#trainStep(this.#passes.take(this.#c.perDeviceTrainBatchSize));
  }

  /** Steps until maxSteps (from wherever a resumed trainer stands). */
  train(): GRPOStepMetrics[] {
    const out: GRPOStepMetrics[] = [];
    while (this.#step < this.#c.maxSteps) out.push(this.step());
    return out;
  }

  /** policy.safetensors (and reference.safetensors), optimizer.safetensors and trainer.json in `dir`. */
  save(dir: string): void {
    const op = 'GRPOTrainer.save';
    saveModels(op, dir, this.policy, this.reference, this.optimizer);
    const state: GRPOState = { format: kStateFormat, step: this.#step, ...this.#passes.snapshot(), rng: this.#rng.snapshot() };
    writeJsonAtomic(op, path.join(dir, 'trainer.json'), state);
  }

  /** A trainer made from `config` (the prompts, reward function and settings again) continuing the checkpoint in `dir`. */
  static resume(dir: string, config: GRPOConfig): GRPOTrainer {
    const op = 'GRPOTrainer.resume';
    const state = readJsonState<GRPOState>(op, path.join(dir, 'trainer.json'), kStateFormat);
    const trainer = new GRPOTrainer(config);
    loadModels(op, dir, trainer.policy, trainer.reference, trainer.optimizer);
    trainer.#step = state.step;
    trainer.#passes.restore(state);
    trainer.#rng.restore(state.rng);
    return trainer;
  }
}
