// rl.envs: Gymnasium's CartPole-v1 and Acrobot-v1 as batched envs in plain TypeScript, so that an
// RL trainer can be checked end to end on the classic-control tasks without Python.
import { describe, rangeError, typeError } from '../errors';
import { acrobot } from './acrobot';
import { cartPole } from './cartpole';
import { ClassicVectorEnv, EnvDynamics, VectorEnv, checkSeed } from './vector';

export type { VectorEnv, VectorStep } from './vector';

export type EnvName = 'CartPole-v1' | 'Acrobot-v1' | 'cartpole' | 'acrobot';

export interface MakeEnvOptions {
  /** How many envs step together (default 1). */
  numEnvs?: number;
  /** Seeds the envs' streams until reset(seed) reseeds them (default 0). */
  seed?: number;
}

const registry: Record<EnvName, EnvDynamics> = {
  'CartPole-v1': cartPole,
  'Acrobot-v1': acrobot,
  cartpole: cartPole,
  acrobot,
};

const names = Object.keys(registry).map((n) => `'${n}'`).join(', ');

function dynamicsOf(op: string, name: unknown): EnvDynamics {
  if (typeof name !== 'string') throw typeError(op, 'name', 'an env name', name);
  if (!Object.prototype.hasOwnProperty.call(registry, name))
    throw rangeError(op, 'name', `must be one of ${names} but is ${describe(name)}`);
  return registry[name as EnvName];
}

function numEnvsOf(op: string, v: unknown): number {
  if (v === undefined) return 1;
  if (typeof v !== 'number') throw typeError(op, 'numEnvs', 'a positive integer', v);
  if (!Number.isInteger(v) || v < 1 || v > 2 ** 24) throw rangeError(op, 'numEnvs', `must be an integer in [1, 2^24] but is ${v}`);
  return v;
}

/** A batch of `numEnvs` copies of the named env; call reset() before the first step(). */
export function makeEnv(name: EnvName, opts: MakeEnvOptions = {}): VectorEnv {
  const op = 'envs.makeEnv';
  const dynamics = dynamicsOf(op, name);
  if (opts === null || typeof opts !== 'object') throw typeError(op, 'opts', 'an options object', opts);
  const seed = opts.seed === undefined ? 0 : checkSeed(op, opts.seed);
  return new ClassicVectorEnv(dynamics, numEnvsOf(op, opts.numEnvs), seed);
}
