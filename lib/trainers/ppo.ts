// PPO over vectorised environments (CleanRL's ppo.py, with its hyperparameters as defaults): an
// actor and a critic MLP, rollouts of numSteps x numEnvs, GAE that bootstraps through time-limit
// truncations, minibatch epochs of the clipped policy loss, the clipped value loss and an entropy
// bonus, global gradient clipping, Adam with a linearly annealed learning rate, and an optional
// targetKl early stop. Every piece of math is one of the package's ops.
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { rangeError, typeError } from '../errors';
import { VectorEnv, makeEnv } from '../envs';
import { Mlp, mlp } from '../nn/models';
import { Random, RandomState } from '../nn/random';
import { gae } from '../ops/advantages';
import { logprobsFromLogits, logprobsFromLogitsBackward, ppoPolicyLoss, valueLoss } from '../ops/policy';
import { AdamW, adamw, clipGradNorm } from '../optim';
import { tensor } from '../tensor';
import { keysOf, options } from '../validate';
import { readJsonState, writeJsonAtomic } from './checkpoint';
import { bool, finiteAtLeast, inUnitInterval, intAtLeast, pathOrNull, seedOf } from './config';

export interface PPOConfig {
  /** An environment name ('CartPole-v1', 'Acrobot-v1') or a VectorEnv. */
  env: string | VectorEnv;
  /** Parallel environments (when `env` is a name); default 4. */
  numEnvs?: number;
  /** Steps per environment per rollout; default 128. */
  numSteps?: number;
  /** Environment steps in all; default 500000. */
  totalTimesteps?: number;
  /** Default 2.5e-4, annealed linearly to 0 over the updates unless annealLr is false. */
  learningRate?: number;
  annealLr?: boolean;
  gamma?: number;
  gaeLambda?: number;
  numMinibatches?: number;
  updateEpochs?: number;
  /** Normalise each minibatch's advantages; default true. */
  normAdv?: boolean;
  clipCoef?: number;
  /** Clip the value loss around the rollout's values; default true. */
  clipVloss?: boolean;
  entCoef?: number;
  vfCoef?: number;
  maxGradNorm?: number;
  /** Stop an update's epochs once the approximate KL exceeds this; default null (never). */
  targetKl?: number | null;
  /** Hidden layers of the actor and of the critic; default [64, 64]. */
  hiddenSizes?: number[];
  seed?: number;
  /** Append one JSON line of metrics per update to this file. */
  logFile?: string;
}

const ppoConfigKeys = keysOf<PPOConfig>({
  env: true, numEnvs: true, numSteps: true, totalTimesteps: true, learningRate: true, annealLr: true, gamma: true,
  gaeLambda: true, numMinibatches: true, updateEpochs: true, normAdv: true, clipCoef: true, clipVloss: true,
  entCoef: true, vfCoef: true, maxGradNorm: true, targetKl: true, hiddenSizes: true, seed: true, logFile: true,
});

export interface PPOUpdateMetrics {
  update: number;
  globalStep: number;
  learningRate: number;
  policyLoss: number;
  valueLoss: number;
  entropy: number;
  approxKl: number;
  clipfrac: number;
  explainedVariance: number;
  /** Mean return of the last 20 finished episodes (NaN before the first). */
  meanReturn: number;
  episodes: number;
  stepsPerSecond: number;
}

export interface PPOResult {
  globalStep: number;
  episodes: number;
  meanReturnLast20: number;
  seconds: number;
  stepsPerSecond: number;
}

type Resolved = Required<Omit<PPOConfig, 'env' | 'logFile' | 'targetKl'>> & { targetKl: number | null; logFile: string | null };

const defaults: Omit<Resolved, 'seed'> = {
  numEnvs: 4, numSteps: 128, totalTimesteps: 500000, learningRate: 2.5e-4, annealLr: true, gamma: 0.99, gaeLambda: 0.95,
  numMinibatches: 4, updateEpochs: 4, normAdv: true, clipCoef: 0.2, clipVloss: true, entCoef: 0.01, vfCoef: 0.5,
  maxGradNorm: 0.5, targetKl: null, hiddenSizes: [64, 64], logFile: null,
};

function resolve(op: string, config: PPOConfig): Resolved {
  const o = options<PPOConfig>(op, config, ppoConfigKeys, 'config', 'a PPOConfig object');
  const d = defaults;
  if (o.targetKl !== undefined && o.targetKl !== null && !(typeof o.targetKl === 'number' && o.targetKl > 0))
    throw rangeError(op, 'targetKl', `must be a number > 0 or null but is ${String(o.targetKl)}`);
  return {
    numEnvs: intAtLeast(op, 'numEnvs', o.numEnvs, 1, d.numEnvs),
    numSteps: intAtLeast(op, 'numSteps', o.numSteps, 1, d.numSteps),
    totalTimesteps: intAtLeast(op, 'totalTimesteps', o.totalTimesteps, 1, d.totalTimesteps),
    numMinibatches: intAtLeast(op, 'numMinibatches', o.numMinibatches, 1, d.numMinibatches),
    updateEpochs: intAtLeast(op, 'updateEpochs', o.updateEpochs, 1, d.updateEpochs),
    learningRate: finiteAtLeast(op, 'learningRate', o.learningRate, 0, d.learningRate),
    clipCoef: finiteAtLeast(op, 'clipCoef', o.clipCoef, 0, d.clipCoef),
    entCoef: finiteAtLeast(op, 'entCoef', o.entCoef, 0, d.entCoef),
    vfCoef: finiteAtLeast(op, 'vfCoef', o.vfCoef, 0, d.vfCoef),
    maxGradNorm: finiteAtLeast(op, 'maxGradNorm', o.maxGradNorm, 0, d.maxGradNorm),
    gamma: inUnitInterval(op, 'gamma', o.gamma, d.gamma),
    gaeLambda: inUnitInterval(op, 'gaeLambda', o.gaeLambda, d.gaeLambda),
    annealLr: bool(op, 'annealLr', o.annealLr, d.annealLr),
    normAdv: bool(op, 'normAdv', o.normAdv, d.normAdv),
    clipVloss: bool(op, 'clipVloss', o.clipVloss, d.clipVloss),
    targetKl: o.targetKl ?? null,
    hiddenSizes: o.hiddenSizes ?? d.hiddenSizes,
    seed: seedOf(op, o.seed, 1),
    logFile: pathOrNull(op, 'logFile', o.logFile),
  };
}

/** What trainer.json of a checkpoint holds beside the models and the optimizer state. */
interface TrainerState {
  format: typeof kStateFormat;
  config: Omit<Resolved, 'logFile'> & { env: string };
  globalStep: number;
  updates: number;
  episodes: number;
  returns: number[];
  rng: RandomState;
  observations: number[];
  env: unknown;
}

const kStateFormat = 'rlhf-node.ppoTrainer';

/** The rollout of one update, time-major [numSteps, numEnvs]. */
interface Rollout {
  obs: Float32Array;
  actions: Int32Array;
  logprobs: Float32Array;
  values: Float32Array;
  nextValues: Float32Array;
  rewards: Float32Array;
  terminated: Uint8Array;
  truncated: Uint8Array;
}

/** Index of a categorical draw from the softmax of logits[0..n). */
function sampleCategorical(logits: Float32Array, offset: number, n: number, rng: Random): number {
  let max = -Infinity;
  for (let k = 0; k < n; ++k) max = Math.max(max, logits[offset + k]);
  let sum = 0;
  for (let k = 0; k < n; ++k) sum += Math.exp(logits[offset + k] - max);
  let u = rng.uniform() * sum;
  for (let k = 0; k < n - 1; ++k) {
    u -= Math.exp(logits[offset + k] - max);
    if (u < 0) return k;
  }
  return n - 1;
}

function rows(src: Float32Array, width: number, index: Int32Array): Float32Array {
  const out = new Float32Array(index.length * width);
  for (let i = 0; i < index.length; ++i) out.set(src.subarray(index[i] * width, (index[i] + 1) * width), i * width);
  return out;
}

function pick<A extends Float32Array | Int32Array>(src: A, index: Int32Array, make: (n: number) => A): A {
  const out = make(index.length);
  for (let i = 0; i < index.length; ++i) out[i] = src[index[i]];
  return out;
}

/** (a - mean) / (std + 1e-8) with the unbiased std, as CleanRL normalises a minibatch. */
function normalise(a: Float32Array): Float32Array {
  let mean = 0;
  for (const x of a) mean += x;
  mean /= a.length;
  let sq = 0;
  for (const x of a) sq += (x - mean) * (x - mean);
  const std = Math.sqrt(sq / Math.max(1, a.length - 1));
  return a.map((x) => (x - mean) / (std + 1e-8));
}

export class PPOTrainer extends EventEmitter {
  readonly config: Readonly<Resolved>;
  readonly env: VectorEnv;
  readonly actor: Mlp;
  readonly critic: Mlp;
  readonly optimizer: AdamW;
  readonly #rng: Random;
  readonly #returns: number[] = [];
  #globalStep = 0;
  #updates = 0;
  #episodes = 0;
  #obs: Float32Array;

  constructor(config: PPOConfig) {
    super();
    const op = 'PPOTrainer';
    const c = resolve(op, config);
    this.config = Object.freeze(c);
    const env = options<PPOConfig>(op, config, ppoConfigKeys, 'config', 'a PPOConfig object').env;
    if (typeof env === 'string') this.env = makeEnv(env as Parameters<typeof makeEnv>[0], { numEnvs: c.numEnvs, seed: c.seed });
    else if (env !== null && typeof env === 'object' && typeof (env as VectorEnv).step === 'function') this.env = env as VectorEnv;
    else throw typeError(op, 'env', "an environment name ('CartPole-v1', 'Acrobot-v1') or a VectorEnv", env);
    const { observationSize, numActions } = this.env;
    this.actor = mlp({ inputSize: observationSize, hiddenSizes: c.hiddenSizes, outputSize: numActions, outputGain: 0.01, seed: c.seed });
    this.critic = mlp({ inputSize: observationSize, hiddenSizes: c.hiddenSizes, outputSize: 1, outputGain: 1, seed: c.seed + 1 });
    const batch = this.env.numEnvs * c.numSteps;
    if (batch % c.numMinibatches !== 0) throw rangeError(op, 'numMinibatches', `must divide the batch of ${batch} (numEnvs x numSteps)`);
    const numUpdates = Math.max(1, Math.floor(c.totalTimesteps / batch));
    // CleanRL anneals once per update, frac = 1 - update / numUpdates, constant over its
    // minibatches however many a targetKl stop leaves: a function of the update, not of the step.
    const schedule = c.annealLr ? () => 1 - this.#updates / numUpdates : () => 1;
    this.optimizer = adamw([...this.actor.parameters(), ...this.critic.parameters()],
      { lr: c.learningRate, eps: 1e-5, weightDecay: 0, schedule });
    this.#rng = new Random(c.seed ^ 0x9e3779b9);
    this.#obs = this.env.reset(c.seed);
  }

  get globalStep(): number {
    return this.#globalStep;
  }

  /** Mean return of the last 20 finished episodes (NaN before the first). */
  get meanReturnLast20(): number {
    const last = this.#returns.slice(-20);
    return last.length === 0 ? NaN : last.reduce((a, b) => a + b, 0) / last.length;
  }

  #valuesOf(obs: Float32Array): Float32Array {
    return this.critic.forward(obs).dataSync() as Float32Array;
  }

  #collect(): Rollout {
    const { numSteps: T } = this.config;
    const { numEnvs: N, observationSize: O, numActions: A } = this.env;
    const r: Rollout = {
      obs: new Float32Array(T * N * O), actions: new Int32Array(T * N), logprobs: new Float32Array(T * N),
      values: new Float32Array(T * N), nextValues: new Float32Array(T * N), rewards: new Float32Array(T * N),
      terminated: new Uint8Array(T * N), truncated: new Uint8Array(T * N),
    };
    for (let t = 0; t < T; ++t) {
      r.obs.set(this.#obs, t * N * O);
      const logits = this.actor.forward(this.#obs);
      const logitsHost = logits.dataSync() as Float32Array;
      const actions = new Int32Array(N);
      for (let n = 0; n < N; ++n) actions[n] = sampleCategorical(logitsHost, n * A, A, this.#rng);
      const lp = logprobsFromLogits(logits, actions).logprobs.dataSync() as Float32Array;
      r.actions.set(actions, t * N);
      r.logprobs.set(lp, t * N);
      r.values.set(this.#valuesOf(this.#obs), t * N);
      const s = this.env.step(actions);
      r.rewards.set(s.rewards, t * N);
      r.terminated.set(s.terminated, t * N);
      r.truncated.set(s.truncated, t * N);
      // V of the state each step led to: the final observation where an episode ended (a
      // truncated one bootstraps from it), else the next observation itself.
      r.nextValues.set(this.#valuesOf(s.finalObservations), t * N);
      for (const e of s.episodes) {
        this.#returns.push(e.return);
        this.#episodes += 1;
        this.emit('episode', { ...e, globalStep: this.#globalStep + (t + 1) * N });
      }
      this.#obs = s.observations;
    }
    this.#globalStep += T * N;
    return r;
  }

  /** One minibatch: the losses' gradients through both networks, clipping, one Adam step. */
  #minibatch(r: Rollout, advantages: Float32Array, returns: Float32Array, index: Int32Array) {
    const c = this.config;
    const O = this.env.observationSize;
    const B = index.length;
    const obs = tensor(rows(r.obs, O, index), [B, O]);
    const actions = pick(r.actions, index, (n) => new Int32Array(n));
    const adv = pick(advantages, index, (n) => new Float32Array(n));
    this.optimizer.zeroGrad();
    const logits = this.actor.forward(obs);
    const { logprobs, entropy } = logprobsFromLogits(logits, actions, { entropy: true });
    const pg = ppoPolicyLoss({ logprobs, oldLogprobs: pick(r.logprobs, index, (n) => new Float32Array(n)),
      advantages: c.normAdv ? normalise(adv) : adv }, { clipLow: c.clipCoef, clipHigh: c.clipCoef, preset: 'cleanrl' });
    const gradEntropy = new Float32Array(B).fill(-c.entCoef / B);
    const gradLogits = logprobsFromLogitsBackward({ logits, labels: actions, gradLogprobs: pg.grad,
      gradEntropy: tensor(gradEntropy), logprobs, entropy });
    this.actor.backward(gradLogits, { inputGrad: false });
    const values = this.critic.forward(obs);
    const v = valueLoss({ values: tensor(values.dataSync() as Float32Array, [B]),
      oldValues: pick(r.values, index, (n) => new Float32Array(n)), returns: pick(returns, index, (n) => new Float32Array(n)) },
    { clip: c.clipVloss ? c.clipCoef : null });
    const gradValues = (v.grad.dataSync() as Float32Array).map((g) => g * c.vfCoef);
    this.critic.backward(gradValues, { inputGrad: false });
    clipGradNorm([...this.actor.parameters(), ...this.critic.parameters()], c.maxGradNorm);
    this.optimizer.step();
    let ent = 0;
    for (const h of entropy?.dataSync() as Float32Array) ent += h;
    return { policyLoss: pg.loss, valueLoss: v.loss, entropy: ent / B, approxKl: pg.stats.approxKlK3, clipfrac: pg.stats.clipfrac,
      explainedVariance: v.stats.explainedVariance };
  }

  /** One rollout and its minibatch epochs. */
  update(): PPOUpdateMetrics {
    const c = this.config;
    const start = process.hrtime.bigint();
    const learningRate = this.optimizer.lr;
    const r = this.#collect();
    const { numSteps: T } = c;
    const N = this.env.numEnvs;
    const g = gae({ rewards: tensor(r.rewards, [T, N]), values: tensor(r.values, [T, N]), terminated: tensor(r.terminated, [T, N], { dtype: 'uint8' }),
      truncated: tensor(r.truncated, [T, N], { dtype: 'uint8' }), nextValues: tensor(r.nextValues, [T, N]) },
    { gamma: c.gamma, lambda: c.gaeLambda });
    const advantages = g.advantages.dataSync() as Float32Array;
    const returns = g.returns.dataSync() as Float32Array;
    const batch = T * N;
    const size = batch / c.numMinibatches;
    const order = Int32Array.from({ length: batch }, (_, i) => i);
    let last = { policyLoss: 0, valueLoss: 0, entropy: 0, approxKl: 0, clipfrac: 0, explainedVariance: 0 };
    let clipfracs = 0, minibatches = 0;
    epochs: for (let epoch = 0; epoch < c.updateEpochs; ++epoch) {
      for (let i = batch - 1; i > 0; --i) {
        const j = Math.floor(this.#rng.uniform() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
      for (let m = 0; m < c.numMinibatches; ++m) {
        last = this.#minibatch(r, advantages, returns, order.subarray(m * size, (m + 1) * size));
        clipfracs += last.clipfrac;
        minibatches += 1;
      }
      if (c.targetKl !== null && last.approxKl > c.targetKl) break epochs;
    }
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    this.#updates += 1;
    const metrics: PPOUpdateMetrics = {
      update: this.#updates, globalStep: this.#globalStep, learningRate,
      policyLoss: last.policyLoss, valueLoss: last.valueLoss, entropy: last.entropy, approxKl: last.approxKl,
      clipfrac: clipfracs / minibatches, explainedVariance: last.explainedVariance, meanReturn: this.meanReturnLast20,
      episodes: this.#episodes, stepsPerSecond: batch / seconds,
    };
    if (c.logFile !== null) fs.appendFileSync(c.logFile, JSON.stringify(metrics) + '\n');
    this.emit('update', metrics);
    return metrics;
  }

  /**
   * Writes a checkpoint into `dir`: actor.safetensors, critic.safetensors, optimizer.safetensors
   * and trainer.json (counters, the sampling generator, the environments' states and
   * observations). PPOTrainer.resume(dir) continues from it exactly as this trainer would.
   */
  save(dir: string): void {
    const env = this.env;
    if (typeof env.getState !== 'function')
      throw rangeError('PPOTrainer.save', 'env', 'has no getState(): only environments that can save their state can be resumed');
    fs.mkdirSync(dir, { recursive: true });
    this.actor.save(path.join(dir, 'actor.safetensors'));
    this.critic.save(path.join(dir, 'critic.safetensors'));
    this.optimizer.saveState(path.join(dir, 'optimizer.safetensors'));
    const { logFile: _log, ...config } = this.config;
    const state: TrainerState = {
      format: kStateFormat, config: { ...config, env: env.name }, globalStep: this.#globalStep, updates: this.#updates,
      episodes: this.#episodes, returns: this.#returns.slice(-20), rng: this.#rng.snapshot(), observations: Array.from(this.#obs),
      env: env.getState(),
    };
    writeJsonAtomic('PPOTrainer.save', path.join(dir, 'trainer.json'), state);
  }

  /** A trainer continuing from a checkpoint written by save(); `overrides` may set logFile and totalTimesteps. */
  static resume(dir: string, overrides: { logFile?: string; totalTimesteps?: number } = {}): PPOTrainer {
    const op = 'PPOTrainer.resume';
    const state = readJsonState<TrainerState>(op, path.join(dir, 'trainer.json'), kStateFormat);
    const trainer = new PPOTrainer({ ...state.config, ...overrides });
    trainer.actor.load(path.join(dir, 'actor.safetensors'));
    trainer.critic.load(path.join(dir, 'critic.safetensors'));
    trainer.optimizer.loadState(path.join(dir, 'optimizer.safetensors'));
    trainer.env.setState?.(state.env);
    trainer.#globalStep = state.globalStep;
    trainer.#updates = state.updates;
    trainer.#episodes = state.episodes;
    trainer.#returns.push(...state.returns);
    trainer.#rng.restore(state.rng);
    trainer.#obs = Float32Array.from(state.observations);
    return trainer;
  }

  /** Updates until totalTimesteps environment steps have been taken. */
  train(): PPOResult {
    const start = process.hrtime.bigint();
    const batch = this.config.numSteps * this.env.numEnvs;
    const numUpdates = Math.max(1, Math.floor(this.config.totalTimesteps / batch));
    while (this.#globalStep < numUpdates * batch) this.update();
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    return { globalStep: this.#globalStep, episodes: this.#episodes, meanReturnLast20: this.meanReturnLast20, seconds,
      stepsPerSecond: this.#globalStep / seconds };
  }
}

