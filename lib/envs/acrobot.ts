// Acrobot-v1 as Gymnasium defines it (gymnasium/envs/classic_control/acrobot.py and the "Acrobot"
// page of gymnasium.farama.org): Sutton's two-link acrobot (Sutton 1996; Sutton & Barto, sec.
// 11.3 of the first edition) with the "book" equations of motion, Gymnasium's default, integrated
// by one fourth-order Runge-Kutta step per dt with the torque held fixed. theta1 is the first link's
// angle from hanging straight down, theta2 the second link's angle relative to the first.
import { Random } from '../nn/random';
import { EnvDynamics } from './vector';

// The class attributes of Gymnasium's AcrobotEnv.
const DT = 0.2;
const LINK_LENGTH_1 = 1.0;
const LINK_MASS_1 = 1.0;
const LINK_MASS_2 = 1.0;
const LINK_COM_POS_1 = 0.5;  // centre of mass of link 1, from its pivot
const LINK_COM_POS_2 = 0.5;
const LINK_MOI = 1.0;  // moment of inertia of either link
const MAX_VEL_1 = 4 * Math.PI;
const MAX_VEL_2 = 9 * Math.PI;
const TORQUES = [-1.0, 0.0, 1.0];  // AVAIL_TORQUE, indexed by action; torque_noise_max is 0
// Set inside _dsdt rather than on the class.
const GRAVITY = 9.8;
// reset's default bounds: each state variable uniform in [-0.1, 0.1].
const INIT_BOUND = 0.1;

// RK4's stages, reused: one step runs on one thread and holds no reference to them afterwards.
const k1 = new Float64Array(4), k2 = new Float64Array(4), k3 = new Float64Array(4), k4 = new Float64Array(4);
const stage = new Float64Array(4);

/**
 * d/dt [theta1, theta2, dtheta1, dtheta2] under `torque` on the joint between the links, as
 * Gymnasium's _dsdt with book_or_nips = 'book'. Its terms are kept as written there (cos(theta1 -
 * pi/2) rather than sin(theta1), x**2 as x * x) so the float64 arithmetic matches.
 */
function derivatives(s: Float64Array, torque: number, out: Float64Array): void {
  const m1 = LINK_MASS_1, m2 = LINK_MASS_2, l1 = LINK_LENGTH_1, lc1 = LINK_COM_POS_1, lc2 = LINK_COM_POS_2;
  const i1 = LINK_MOI, i2 = LINK_MOI, g = GRAVITY;
  const theta1 = s[0], theta2 = s[1], dtheta1 = s[2], dtheta2 = s[3];
  const d1 = m1 * (lc1 * lc1) + m2 * (l1 * l1 + lc2 * lc2 + 2 * l1 * lc2 * Math.cos(theta2)) + i1 + i2;
  const d2 = m2 * (lc2 * lc2 + l1 * lc2 * Math.cos(theta2)) + i2;
  const phi2 = m2 * lc2 * g * Math.cos(theta1 + theta2 - Math.PI / 2.0);
  const phi1 = -m2 * l1 * lc2 * (dtheta2 * dtheta2) * Math.sin(theta2)
    - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * Math.sin(theta2)
    + (m1 * lc1 + m2 * l1) * g * Math.cos(theta1 - Math.PI / 2)
    + phi2;
  // The book's (and RLPy's Java) form, with the centripetal term the NIPS paper left out.
  const ddtheta2 = (torque + d2 / d1 * phi1 - m2 * l1 * lc2 * (dtheta1 * dtheta1) * Math.sin(theta2) - phi2)
    / (m2 * (lc2 * lc2) + i2 - (d2 * d2) / d1);
  const ddtheta1 = -(d2 * ddtheta2 + phi1) / d1;
  out[0] = dtheta1;
  out[1] = dtheta2;
  out[2] = ddtheta1;
  out[3] = ddtheta2;
}

/** stage := y + h * k. */
function stagePoint(y: Float64Array, h: number, k: Float64Array): Float64Array {
  for (let j = 0; j < 4; ++j) stage[j] = y[j] + h * k[j];
  return stage;
}

/** One classical RK4 step of length DT from y, in place (Gymnasium's rk4 over t = [0, dt]). */
function rk4(y: Float64Array, torque: number): void {
  const h2 = DT / 2.0;
  derivatives(y, torque, k1);
  derivatives(stagePoint(y, h2, k1), torque, k2);
  derivatives(stagePoint(y, h2, k2), torque, k3);
  derivatives(stagePoint(y, DT, k3), torque, k4);
  const w = DT / 6.0;
  for (let j = 0; j < 4; ++j) y[j] = y[j] + w * (k1[j] + 2 * k2[j] + 2 * k3[j] + k4[j]);
}

/** Gymnasium's wrap(): shifts by whole turns into [lo, hi], leaving hi itself as it is. */
function wrap(x: number, lo: number, hi: number): number {
  const turn = hi - lo;
  while (x > hi) x -= turn;
  while (x < lo) x += turn;
  return x;
}

function clip(x: number, bound: number): number {
  return Math.min(Math.max(x, -bound), bound);
}

const current = new Float64Array(4);

function advance(s: Float64Array, at: number, action: number): boolean {
  for (let j = 0; j < 4; ++j) current[j] = s[at + j];
  rk4(current, TORQUES[action]);
  const theta1 = wrap(current[0], -Math.PI, Math.PI);
  const theta2 = wrap(current[1], -Math.PI, Math.PI);
  s[at] = theta1;
  s[at + 1] = theta2;
  s[at + 2] = clip(current[2], MAX_VEL_1);
  s[at + 3] = clip(current[3], MAX_VEL_2);
  // The free end is more than one link length above the pivot.
  return -Math.cos(theta1) - Math.cos(theta2 + theta1) > 1.0;
}

/** Gymnasium draws the reset state in float64 and keeps it as float32 (`.astype(np.float32)`). */
function initialize(s: Float64Array, at: number, rng: Random): void {
  for (let k = 0; k < 4; ++k) s[at + k] = Math.fround(-INIT_BOUND + 2 * INIT_BOUND * rng.uniform());
}

function observe(s: Float64Array, at: number, obs: Float32Array, to: number): void {
  const theta1 = s[at], theta2 = s[at + 1];
  obs[to] = Math.cos(theta1);
  obs[to + 1] = Math.sin(theta1);
  obs[to + 2] = Math.cos(theta2);
  obs[to + 3] = Math.sin(theta2);
  obs[to + 4] = s[at + 2];
  obs[to + 5] = s[at + 3];
}

/** -1 per step until the goal, 0 on the step that reaches it. */
function reward(terminated: boolean): number {
  return terminated ? 0 : -1;
}

export const acrobot: EnvDynamics = {
  name: 'Acrobot-v1',
  stateSize: 4,
  observationSize: 6,
  numActions: 3,
  maxEpisodeSteps: 500,  // the registration of Acrobot-v1
  initialize,
  advance,
  reward,
  observe,
};
