// PPO over token sequences (RLHF, as TRL's PPO trainer and OpenRLHF run it): a policy with a
// value head samples completions of prompts; a reward model (or function) scores each one; the
// per-token KL to a frozen reference is subtracted from the rewards with the score on the last
// token (rl.klPenalty, rl.shapeRewards); token GAE gives advantages (whitened) and returns; then
// minibatch epochs of the fused clipped policy loss (rl.actorLossFromLogits) and the clipped value
// loss, both back through the policy, clipping and AdamW; a fixed or adaptive KL controller.
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { rangeError, typeError } from '../errors';
import { SimpleTokenizer } from '../data/tokenizer';
import { RewardModel, tokenPolicy } from '../nn/models';
import { PassesState, Random, RandomState, ShuffledPasses, shuffledIndices } from '../nn/random';
import { tokenGae } from '../ops/advantages';
import { AdaptiveKLController, FixedKLController, actorLossFromLogits, klPenalty, shapeRewards, valueLoss } from '../ops/policy';
import { maskedWhiten } from '../ops/statistics';
import { AdamW, adamw, clipGradNorm } from '../optim';
import { tensor } from '../tensor';
import { choice, keysOf, options } from '../validate';
import { loadModels, readJsonState, saveModels, writeJsonAtomic } from './checkpoint';
import { finiteAtLeast, inUnitInterval, intAtLeast, pathOrNull, seedOf, throughput } from './config';
import { SequencePolicy, sequencePolicy } from './policy';
import { CompletionBatch, completionBatch, sampleCompletions, tokenLogprobs } from './sequences';

export type SequenceReward = RewardModel | ((prompt: string, completion: string) => number);

export interface RLHFPPOConfig {
  prompts: string[];
  tokenizer: SimpleTokenizer;
  /** Scores a completion: a reward model (on the prompt and completion tokens) or a function of the texts. */
  reward: SequenceReward;
  /** Default: rl.nn.tokenPolicy({ vocabSize, valueHead: true, seed }); it needs a value head. */
  policy?: SequencePolicy;
  /** Default 8 tokens; a completion also ends at the end-of-sequence token. */
  maxCompletionLength?: number;
  temperature?: number;
  /** The KL coefficient (TRL's init_kl_coef 0.2), adapted towards `target` over `horizon` when a target is set. */
  initKlCoef?: number;
  target?: number | null;
  horizon?: number;
  /** Where the score goes: on the last completion token ('last-valid', TRL) or after it (rl.shapeRewards). */
  scorePlacement?: 'last-valid' | 'after-last';
  /** Subtracted from the score of a completion cut by the length limit (TRL's missing_eos_penalty); default null. */
  missingEosPenalty?: number | null;
  /** Default 1e-3 (TRL's 1e-5 is for large pretrained models). */
  learningRate?: number;
  /** Prompts per rollout; default 64. */
  batchSize?: number;
  miniBatchSize?: number;
  ppoEpochs?: number;
  gamma?: number;
  lam?: number;
  cliprange?: number;
  cliprangeValue?: number;
  vfCoef?: number;
  maxGradNorm?: number;
  seed?: number;
  logFile?: string;
}

const rlhfPpoConfigKeys = keysOf<RLHFPPOConfig>({
  prompts: true, tokenizer: true, reward: true, policy: true, maxCompletionLength: true, temperature: true,
  initKlCoef: true, target: true, horizon: true, scorePlacement: true, missingEosPenalty: true, learningRate: true,
  batchSize: true, miniBatchSize: true, ppoEpochs: true, gamma: true, lam: true, cliprange: true,
  cliprangeValue: true, vfCoef: true, maxGradNorm: true, seed: true, logFile: true,
});

export interface RLHFStepMetrics {
  step: number;
  /** Mean score of the step's completions. */
  score: number;
  /** Mean KL to the reference per completion (summed over its tokens). */
  kl: number;
  klCoef: number;
  policyLoss: number;
  valueLoss: number;
  entropy: number;
  clipfrac: number;
  /** Of the value head on the returns (1 - Var(R - V) / Var(R)), from the last minibatch. */
  explainedVariance: number;
  completionLength: number;
  /** Completions and completion tokens per second over the whole step (generation included). */
  samplesPerSecond: number;
  tokensPerSecond: number;
  completions: { prompt: string; completion: string }[];
}

const kStateFormat = 'rlhf-node.rlhfPpoTrainer';

/** What trainer.json of a checkpoint holds beside the models and the optimizer state. */
interface RLHFState extends PassesState {
  format: string;
  step: number;
  rng: RandomState;
  klCoef: number;
}

type Resolved = Required<Omit<RLHFPPOConfig, 'policy' | 'logFile' | 'target' | 'missingEosPenalty'>> &
  { target: number | null; missingEosPenalty: number | null; logFile: string | null };

function resolve(op: string, config: RLHFPPOConfig): Resolved {
  const c = options<RLHFPPOConfig>(op, config, rlhfPpoConfigKeys, 'config', 'an RLHFPPOConfig object');
  if (!Array.isArray(c.prompts) || c.prompts.some((p) => typeof p !== 'string')) throw typeError(op, 'prompts', 'an array of strings', c.prompts);
  if (c.prompts.length === 0) throw rangeError(op, 'prompts', 'holds no prompts');
  if (!(c.tokenizer instanceof SimpleTokenizer)) throw typeError(op, 'tokenizer', 'a SimpleTokenizer', c.tokenizer);
  if (!(c.reward instanceof RewardModel) && typeof c.reward !== 'function')
    throw typeError(op, 'reward', 'a RewardModel or a function (prompt, completion) => number', c.reward);
  if (c.target !== undefined && c.target !== null && !(typeof c.target === 'number' && c.target > 0))
    throw rangeError(op, 'target', `must be a number > 0 or null but is ${String(c.target)}`);
  const batchSize = intAtLeast(op, 'batchSize', c.batchSize, 1, 64);
  const miniBatchSize = intAtLeast(op, 'miniBatchSize', c.miniBatchSize, 1, Math.min(16, batchSize));
  if (batchSize % miniBatchSize !== 0) throw rangeError(op, 'miniBatchSize', `must divide batchSize ${batchSize}`);
  return {
    prompts: c.prompts, tokenizer: c.tokenizer, reward: c.reward,
    maxCompletionLength: intAtLeast(op, 'maxCompletionLength', c.maxCompletionLength, 1, 8),
    temperature: finiteAtLeast(op, 'temperature', c.temperature, Number.MIN_VALUE, 1),
    initKlCoef: finiteAtLeast(op, 'initKlCoef', c.initKlCoef, 0, 0.2),
    target: c.target ?? null,
    horizon: finiteAtLeast(op, 'horizon', c.horizon, 1, 10000),
    scorePlacement: choice(op, 'scorePlacement', c.scorePlacement, ['last-valid', 'after-last'] as const, 'last-valid'),
    missingEosPenalty: c.missingEosPenalty === undefined || c.missingEosPenalty === null ? null
      : finiteAtLeast(op, 'missingEosPenalty', c.missingEosPenalty, 0, 0),
    learningRate: finiteAtLeast(op, 'learningRate', c.learningRate, 0, 1e-3),
    batchSize, miniBatchSize,
    ppoEpochs: intAtLeast(op, 'ppoEpochs', c.ppoEpochs, 1, 4),
    gamma: inUnitInterval(op, 'gamma', c.gamma, 1),
    lam: inUnitInterval(op, 'lam', c.lam, 0.95),
    cliprange: finiteAtLeast(op, 'cliprange', c.cliprange, 0, 0.2),
    cliprangeValue: finiteAtLeast(op, 'cliprangeValue', c.cliprangeValue, 0, 0.2),
    vfCoef: finiteAtLeast(op, 'vfCoef', c.vfCoef, 0, 0.1),
    maxGradNorm: finiteAtLeast(op, 'maxGradNorm', c.maxGradNorm, 0, 1),
    seed: seedOf(op, c.seed, 0),
    logFile: pathOrNull(op, 'logFile', c.logFile),
  };
}

/** Rows [r0, r1) of a [B, T] array. */
function rowsOf<A extends Float32Array | Int32Array | Uint8Array>(a: A, T: number, r0: number, r1: number): A {
  return a.slice(r0 * T, r1 * T) as A;
}

export class RLHFPPOTrainer extends EventEmitter {
  readonly config: Readonly<Resolved>;
  readonly tokenizer: SimpleTokenizer;
  readonly policy: SequencePolicy;
  readonly reference: SequencePolicy;
  readonly optimizer: AdamW;
  readonly klController: AdaptiveKLController | FixedKLController;
  readonly #prompts: Int32Array[];
  readonly #rng: Random;
  readonly #passes: ShuffledPasses;
  #step = 0;

  constructor(config: RLHFPPOConfig) {
    super();
    const op = 'RLHFPPOTrainer';
    const c = resolve(op, config);
    this.config = Object.freeze(c);
    this.tokenizer = c.tokenizer;
    this.policy = config.policy !== undefined ? sequencePolicy(op, config.policy) : tokenPolicy({ vocabSize: c.tokenizer.vocabSize, valueHead: true, seed: c.seed });
    if (!this.policy.config.valueHead) throw rangeError(op, 'policy', 'needs a value head (tokenPolicy({ valueHead: true }))');
    if (this.policy.config.vocabSize < c.tokenizer.vocabSize)
      throw rangeError(op, 'policy', `has a vocabulary of ${this.policy.config.vocabSize} but the tokenizer's is ${c.tokenizer.vocabSize}`);
    this.reference = this.policy.clone();
    this.optimizer = adamw(this.policy.parameters(), { lr: c.learningRate, weightDecay: 0 });
    this.klController = c.target === null ? new FixedKLController(c.initKlCoef)
      : new AdaptiveKLController({ initKlCoef: c.initKlCoef, target: c.target, horizon: c.horizon });
    this.#prompts = c.prompts.map((p) => c.tokenizer.encode(p));
    this.#rng = new Random(c.seed ^ 0x27d4eb2f);
    this.#passes = new ShuffledPasses(c.prompts.length, c.seed);
  }

  get stepCount(): number {
    return this.#step;
  }

  /** `count` completions (decoded text) of each prompt from the current policy. */
  generate(prompts: string[], count = 1): string[] {
    const ids = prompts.flatMap((p) => Array.from({ length: count }, () => this.tokenizer.encode(p)));
    return sampleCompletions(this.policy, ids, this.config.maxCompletionLength, this.config.temperature, this.#rng)
      .map((c) => this.#text(c));
  }

  #text(completion: Int32Array): string {
    return this.tokenizer.decode(completion.filter((x) => x !== SimpleTokenizer.EOS));
  }

  /** The next batchSize prompts, a batch running on into the next pass when one ends. */
  #nextPrompts(): number[] {
    const out: number[] = [];
    while (out.length < this.config.batchSize) out.push(...this.#passes.take(this.config.batchSize - out.length));
    return out;
  }


  /** Scores of the completions: the reward model on the prompt and completion tokens, or the function on texts. */
  #scores(index: number[], completions: Int32Array[]): Float32Array {
    const reward = this.config.reward;
    if (!(reward instanceof RewardModel)) {
      return Float32Array.from(completions, (c, r) => {
        const v = reward(this.config.prompts[index[r]], this.#text(c));
        if (typeof v !== 'number' || !Number.isFinite(v)) throw rangeError('RLHFPPOTrainer', 'reward', `returned ${String(v)}: scores must be finite numbers`);
        return v;
      });
    }
    // As RewardTrainer encodes a pair's texts: the prompt's tokens, the completion's, one end-of-sequence token.
    const seqs = completions.map((c, r) => [...this.#prompts[index[r]], ...c.filter((x) => x !== SimpleTokenizer.EOS), SimpleTokenizer.EOS]);
    const L = Math.max(1, ...seqs.map((s) => s.length));
    const tokens = new Int32Array(seqs.length * L), mask = new Uint8Array(seqs.length * L);
    seqs.forEach((s, r) => {
      tokens.set(s, r * L);
      mask.fill(1, r * L, r * L + s.length);
    });
    return Float32Array.from(reward.forward(tensor(tokens, [seqs.length, L], { dtype: 'int32' }), tensor(mask, [seqs.length, L], { dtype: 'uint8' })).dataSync() as Float32Array);
  }

  /** Values [B*T] of the policy's value head at every completion position of a batch. */
  #values(batch: CompletionBatch): Float32Array {
    const { values } = this.policy.forward(tensor(batch.contexts, [batch.B * batch.T, batch.contextSize], { dtype: 'int32' }));
    return Float32Array.from((values as NonNullable<typeof values>).dataSync() as Float32Array);
  }

  /** One rollout of batchSize prompts and its PPO epochs. */
  step(): RLHFStepMetrics {
    const start = process.hrtime.bigint();
    const c = this.config;
    const index = this.#nextPrompts();
    const prompts = index.map((i) => this.#prompts[i]);
    const completions = sampleCompletions(this.policy, prompts, c.maxCompletionLength, c.temperature, this.#rng);
    const batch = completionBatch(prompts, completions, this.policy.config.contextSize);
    const { B, T } = batch;
    const mask = tensor(batch.mask, [B, T], { dtype: 'uint8' });
    const oldLogprobs = tokenLogprobs(this.policy, batch, c.temperature);
    const oldValues = this.#values(batch);
    const refLogprobs = tokenLogprobs(this.reference, batch, c.temperature);
    const scores = this.#scores(index, completions);
    const kl = klPenalty(tensor(oldLogprobs, [B, T]), tensor(refLogprobs, [B, T])).kl;
    const klCoef = this.klController.value;
    const hasEos = Uint8Array.from(completions, (comp) => (comp[comp.length - 1] === SimpleTokenizer.EOS ? 1 : 0));
    const rewards = shapeRewards({ scores, kl, mask, hasEos }, { klCoef, scorePlacement: c.scorePlacement,
      missingEosPenalty: c.missingEosPenalty });
    const values = tensor(oldValues, [B, T]);
    const g = tokenGae({ rewards, values, mask }, { gamma: c.gamma, lambda: c.lam, maskMode: 'premask' });
    const advantages = Float32Array.from(maskedWhiten(g.advantages, mask).dataSync() as Float32Array);
    const returns = Float32Array.from(g.returns.dataSync() as Float32Array);
    let last = { policyLoss: 0, valueLoss: 0, entropy: 0, clipfrac: 0, explainedVariance: 0 };
    for (let epoch = 0; epoch < c.ppoEpochs; ++epoch) {
      const order = shuffledIndices(B, this.#rng);
      for (let m = 0; m < B; m += c.miniBatchSize) {
        const rows = order.slice(m, m + c.miniBatchSize).sort((a, b) => a - b);
        last = this.#minibatch(batch, rows, { oldLogprobs, oldValues, advantages, returns });
      }
    }
    const klPerSequence = (kl.dataSync() as Float32Array).reduce((a, b, i) => a + (batch.mask[i] ? b : 0), 0) / B;
    this.klController.update(klPerSequence, B);
    this.#step += 1;
    const metrics: RLHFStepMetrics = {
      step: this.#step, score: scores.reduce((a, b) => a + b, 0) / B, kl: klPerSequence, klCoef, ...last,
      completionLength: batch.lengths.reduce((a, b) => a + b, 0) / B, ...throughput(start, B, batch.lengths),
      completions: completions.map((comp, r) => ({ prompt: c.prompts[index[r]], completion: this.#text(comp) })),
    };
    if (c.logFile !== null) {
      const { completions: _omitted, ...logged } = metrics;
      fs.appendFileSync(c.logFile, JSON.stringify(logged) + '\n');
    }
    this.emit('step', metrics);
    return metrics;
  }

  /** The losses of the rows `rows` of the rollout, back through the policy, one optimizer step. */
  #minibatch(batch: CompletionBatch, rows: number[], r: { oldLogprobs: Float32Array; oldValues: Float32Array; advantages: Float32Array; returns: Float32Array }) {
    const c = this.config;
    const { T, contextSize: C } = batch;
    const V = this.policy.config.vocabSize;
    const b = rows.length;
    const pickRows = <A extends Float32Array | Int32Array | Uint8Array>(a: A, width: number, make: (n: number) => A): A => {
      const out = make(b * width);
      rows.forEach((row, k) => out.set(rowsOf(a, width, row, row + 1), k * width));
      return out;
    };
    const contexts = pickRows(batch.contexts, T * C, (n) => new Int32Array(n));
    const labels = pickRows(batch.labels, T, (n) => new Int32Array(n));
    const mask = tensor(pickRows(batch.mask, T, (n) => new Uint8Array(n)), [b, T], { dtype: 'uint8' });
    this.optimizer.zeroGrad();
    const { logits, values } = this.policy.forward(tensor(contexts, [b * T, C], { dtype: 'int32' }));
    const actor = actorLossFromLogits({
      logits: tensor(logits.dataSync() as Float32Array, [b, T, V]), labels: tensor(labels, [b, T], { dtype: 'int32' }),
      oldLogprobs: tensor(pickRows(r.oldLogprobs, T, (n) => new Float32Array(n)), [b, T]),
      advantages: tensor(pickRows(r.advantages, T, (n) => new Float32Array(n)), [b, T]), mask,
    }, { temperature: c.temperature, clipLow: c.cliprange, clipHigh: c.cliprange });
    const v = valueLoss({
      values: tensor((values as NonNullable<typeof values>).dataSync() as Float32Array, [b, T]),
      oldValues: tensor(pickRows(r.oldValues, T, (n) => new Float32Array(n)), [b, T]),
      returns: tensor(pickRows(r.returns, T, (n) => new Float32Array(n)), [b, T]), mask,
    }, { clip: c.cliprangeValue });
    const gradValues = (v.grad.dataSync() as Float32Array).map((x) => x * c.vfCoef);
    this.policy.backward({ gradLogits: tensor(actor.gradLogits.dataSync() as Float32Array, [b * T, V]), gradValues });
    clipGradNorm(this.policy.parameters(), c.maxGradNorm);
    this.optimizer.step();
    return { policyLoss: actor.stats.policyLoss, valueLoss: v.loss, entropy: actor.stats.entropy, clipfrac: actor.stats.clipfrac,
      explainedVariance: v.stats.explainedVariance };
  }

  /** policy.safetensors, reference.safetensors, optimizer.safetensors and trainer.json in `dir`. */
  save(dir: string): void {
    const op = 'RLHFPPOTrainer.save';
    saveModels(op, dir, this.policy, this.reference, this.optimizer);
    const state: RLHFState = { format: kStateFormat, step: this.#step, ...this.#passes.snapshot(), rng: this.#rng.snapshot(),
      klCoef: this.klController.value };
    writeJsonAtomic(op, path.join(dir, 'trainer.json'), state);
  }

  /** A trainer made from `config` (prompts, tokenizer, reward and settings again) continuing the checkpoint in `dir`. */
  static resume(dir: string, config: RLHFPPOConfig): RLHFPPOTrainer {
    const op = 'RLHFPPOTrainer.resume';
    const state = readJsonState<RLHFState>(op, path.join(dir, 'trainer.json'), kStateFormat);
    const trainer = new RLHFPPOTrainer(config);
    loadModels(op, dir, trainer.policy, trainer.reference, trainer.optimizer);
    trainer.#step = state.step;
    trainer.#passes.restore(state);
    trainer.#rng.restore(state.rng);
    trainer.klController.value = state.klCoef;
    return trainer;
  }
}
