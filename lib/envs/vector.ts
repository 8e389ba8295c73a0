// A batch of independent classic-control envs stepped together, with Gymnasium's autoreset
// (an env whose episode ended starts the next one in the same step) and per-env seeded streams.
import { rangeError, typeError } from '../errors';
import { Random, RandomState } from '../nn/random';

export interface VectorEnv {
  readonly name: string;            // 'CartPole-v1' | 'Acrobot-v1'
  readonly numEnvs: number;
  readonly observationSize: number; // 4 | 6
  readonly numActions: number;      // 2 | 3
  readonly maxEpisodeSteps: number; // 500 | 500
  /** Resets every env (seeded: env i uses a stream derived from seed and i); returns [numEnvs * observationSize] float32 observations. */
  reset(seed?: number): Float32Array;
  /** One step of every env with actions [numEnvs] int32 in [0, numActions). Envs whose episode ended are reset at once (autoreset),
   *  so `observations` holds the first observation of the new episode for them and `finalObservations` the last one of the old. */
  step(actions: Int32Array): VectorStep;
  /** Everything a later step depends on, as plain JSON data (for checkpoints); optional for other envs. */
  getState?(): unknown;
  /** Continues from what getState() returned. */
  setState?(state: unknown): void;
}

/** The state of a ClassicVectorEnv, as getState() gives it. */
export interface ClassicEnvState {
  name: string;
  state: number[];
  lengths: number[];
  returns: number[];
  rngs: RandomState[];
  started: boolean;
}

export interface VectorStep {
  observations: Float32Array;       // [numEnvs * obs]
  rewards: Float32Array;            // [numEnvs]
  terminated: Uint8Array;           // [numEnvs] 1 when the MDP ended (pole fell / goal reached)
  truncated: Uint8Array;            // [numEnvs] 1 when the time limit cut it (and not terminated)
  finalObservations: Float32Array;  // [numEnvs * obs]; rows of envs that did not end hold their current observation
  /** Episodes that ended this step: env index, return (sum of rewards) and length. */
  episodes: { env: number; return: number; length: number }[];
}

/**
 * One env's dynamics over a float64 state kept by the caller at state[at, at + stateSize): the
 * vector env owns all the states in one array so that a step touches no objects per env.
 */
export interface EnvDynamics {
  readonly name: 'CartPole-v1' | 'Acrobot-v1';
  readonly stateSize: number;
  readonly observationSize: number;
  readonly numActions: number;
  readonly maxEpisodeSteps: number;
  /** Draws an initial state into state[at, at + stateSize). */
  initialize(state: Float64Array, at: number, rng: Random): void;
  /** Advances the state at `at` by one step under `action`; true when the MDP terminated. */
  advance(state: Float64Array, at: number, action: number): boolean;
  /** The reward of a step, which depends only on whether it terminated for these envs. */
  reward(terminated: boolean): number;
  /** Writes the observation of the state at `at` into obs[to, to + observationSize). */
  observe(state: Float64Array, at: number, obs: Float32Array, to: number): void;
}

/** murmur3's 32-bit finalizer: nearby inputs give unrelated outputs. */
function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The seed of env i's stream. Hashed rather than seed + i because mulberry32 streams whose seeds
 * differ by a multiple of its increment are the same stream shifted, so adjacent envs would
 * replay each other's draws.
 */
export function envSeed(seed: number, i: number): number {
  return mix32(mix32(seed) ^ Math.imul(i + 1, 0x9e3779b9));
}

/** A seed argument: an integer in [0, 2^32), as nn's model seeds. */
export function checkSeed(op: string, v: unknown): number {
  if (typeof v !== 'number') throw typeError(op, 'seed', 'an integer in [0, 2^32)', v);
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw rangeError(op, 'seed', `must be an integer in [0, 2^32) but is ${v}`);
  return v;
}

function streams(seed: number, numEnvs: number): Random[] {
  return Array.from({ length: numEnvs }, (_, i) => new Random(envSeed(seed, i)));
}

/** Checks every action before any env moves, so a bad batch leaves all envs as they were. */
function checkActions(op: string, actions: unknown, numEnvs: number, numActions: number): asserts actions is Int32Array {
  if (!(actions instanceof Int32Array)) throw typeError(op, 'actions', 'an Int32Array', actions);
  if (actions.length !== numEnvs)
    throw rangeError(op, 'actions', `must hold ${numEnvs} actions (one per env) but holds ${actions.length}`);
  for (let i = 0; i < numEnvs; ++i) {
    const a = actions[i];
    if (a < 0 || a >= numActions) throw rangeError(op, 'actions', `holds ${a} at index ${i}, outside [0, ${numActions})`);
  }
}

/**
 * `numEnvs` copies of one env. reset(seed) reseeds every env's stream from `seed`; reset() with
 * no seed continues the streams, which start from the constructor's seed. Every reset() and
 * step() returns fresh arrays that the caller may keep; a step allocates nothing else but the
 * records of the episodes that ended.
 */
export class ClassicVectorEnv implements VectorEnv {
  readonly name: string;
  readonly numEnvs: number;
  readonly observationSize: number;
  readonly numActions: number;
  readonly maxEpisodeSteps: number;
  readonly #dynamics: EnvDynamics;
  readonly #state: Float64Array;
  readonly #lengths: Int32Array;    // steps taken in each env's current episode
  readonly #returns: Float64Array;  // rewards summed over each env's current episode
  #rngs: Random[];
  #started = false;

  constructor(dynamics: EnvDynamics, numEnvs: number, seed: number) {
    this.#dynamics = dynamics;
    this.name = dynamics.name;
    this.numEnvs = numEnvs;
    this.observationSize = dynamics.observationSize;
    this.numActions = dynamics.numActions;
    this.maxEpisodeSteps = dynamics.maxEpisodeSteps;
    this.#state = new Float64Array(numEnvs * dynamics.stateSize);
    this.#lengths = new Int32Array(numEnvs);
    this.#returns = new Float64Array(numEnvs);
    this.#rngs = streams(seed, numEnvs);
  }

  reset(seed?: number): Float32Array {
    if (seed !== undefined) this.#rngs = streams(checkSeed(`${this.name}.reset`, seed), this.numEnvs);
    const observations = new Float32Array(this.numEnvs * this.observationSize);
    for (let i = 0; i < this.numEnvs; ++i) {
      this.#startEpisode(i);
      this.#dynamics.observe(this.#state, i * this.#dynamics.stateSize, observations, i * this.observationSize);
    }
    this.#started = true;
    return observations;
  }

  step(actions: Int32Array): VectorStep {
    const op = `${this.name}.step`;
    // A call-order mistake, which no ErrorCode names: a plain Error, as DenseStack's backward before forward.
    if (!this.#started) throw new Error(`${op}: call reset() before the first step`);
    checkActions(op, actions, this.numEnvs, this.numActions);
    const n = this.numEnvs, obs = this.observationSize, size = this.#dynamics.stateSize;
    const dynamics = this.#dynamics, state = this.#state;
    const out: VectorStep = {
      observations: new Float32Array(n * obs),
      rewards: new Float32Array(n),
      terminated: new Uint8Array(n),
      truncated: new Uint8Array(n),
      finalObservations: new Float32Array(n * obs),
      episodes: [],
    };
    for (let i = 0; i < n; ++i) {
      const at = i * size, to = i * obs;
      const terminated = dynamics.advance(state, at, actions[i]);
      const reward = dynamics.reward(terminated);
      out.rewards[i] = reward;
      this.#returns[i] += reward;
      this.#lengths[i] += 1;
      dynamics.observe(state, at, out.finalObservations, to);
      // Gymnasium's TimeLimit reports truncated on a terminal last step too; here a step is one or the other.
      const truncated = !terminated && this.#lengths[i] >= this.maxEpisodeSteps;
      out.terminated[i] = terminated ? 1 : 0;
      out.truncated[i] = truncated ? 1 : 0;
      if (terminated || truncated) {
        out.episodes.push({ env: i, return: this.#returns[i], length: this.#lengths[i] });
        this.#startEpisode(i);
        dynamics.observe(state, at, out.observations, to);
      } else {
        for (let k = 0; k < obs; ++k) out.observations[to + k] = out.finalObservations[to + k];
      }
    }
    return out;
  }

  getState(): ClassicEnvState {
    return { name: this.name, state: Array.from(this.#state), lengths: Array.from(this.#lengths), returns: Array.from(this.#returns),
      rngs: this.#rngs.map((r) => r.snapshot()), started: this.#started };
  }

  setState(s: unknown): void {
    const op = `${this.name}.setState`;
    const v = s as ClassicEnvState;
    if (v === null || typeof v !== 'object' || v.name !== this.name || !Array.isArray(v.state) || v.state.length !== this.#state.length ||
        !Array.isArray(v.lengths) || v.lengths.length !== this.numEnvs || !Array.isArray(v.returns) || v.returns.length !== this.numEnvs ||
        !Array.isArray(v.rngs) || v.rngs.length !== this.numEnvs)
      throw rangeError(op, 'state', `must be the getState() of a ${this.name} with ${this.numEnvs} envs`);
    this.#state.set(v.state);
    this.#lengths.set(v.lengths);
    this.#returns.set(v.returns);
    this.#rngs = v.rngs.map((r) => {
      const g = new Random(0);
      g.restore(r);
      return g;
    });
    this.#started = v.started === true;
  }

  #startEpisode(i: number): void {
    this.#dynamics.initialize(this.#state, i * this.#dynamics.stateSize, this.#rngs[i]);
    this.#lengths[i] = 0;
    this.#returns[i] = 0;
  }
}
