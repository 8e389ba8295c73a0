// CartPole-v1 as Gymnasium defines it (gymnasium/envs/classic_control/cartpole.py and the
// "Cart Pole" page of gymnasium.farama.org): Barto, Sutton & Anderson's pole on a cart, with the
// equations of motion of Florian's "Correct equations for the dynamics of the cart-pole system"
// (2007), stepped by explicit Euler. The state [x, x_dot, theta, theta_dot] is float64 as
// Gymnasium's Python floats; observations are its float32 copy.
import { Random } from '../nn/random';
import { EnvDynamics } from './vector';

// The constants of Gymnasium's CartPoleEnv.__init__.
const GRAVITY = 9.8;
const MASS_CART = 1.0;
const MASS_POLE = 0.1;
const TOTAL_MASS = MASS_POLE + MASS_CART;
const HALF_LENGTH = 0.5;  // `length` there: half the pole's length
const POLE_MASS_LENGTH = MASS_POLE * HALF_LENGTH;
const FORCE_MAG = 10.0;
const TAU = 0.02;  // seconds per step
const THETA_THRESHOLD = 12 * 2 * Math.PI / 360;  // 12 degrees, written as Gymnasium writes it
const X_THRESHOLD = 2.4;
const INIT_BOUND = 0.05;  // reset draws each state variable uniformly in [-0.05, 0.05]

/**
 * The products and sums are in Gymnasium's order (x**2 as x * x), so the float64 state follows
 * Python's to the last bit wherever V8's sin and cos round as the C library's do.
 */
function advance(s: Float64Array, at: number, action: number): boolean {
  const x = s[at], xDot = s[at + 1], theta = s[at + 2], thetaDot = s[at + 3];
  const force = action === 1 ? FORCE_MAG : -FORCE_MAG;  // action 1 pushes right
  const cos = Math.cos(theta), sin = Math.sin(theta);
  const temp = (force + POLE_MASS_LENGTH * (thetaDot * thetaDot) * sin) / TOTAL_MASS;
  const thetaAcc = (GRAVITY * sin - cos * temp) / (HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * (cos * cos) / TOTAL_MASS));
  const xAcc = temp - POLE_MASS_LENGTH * thetaAcc * cos / TOTAL_MASS;
  // Gymnasium's default 'euler' integrator: every update reads the state before the step.
  const x1 = x + TAU * xDot;
  const theta1 = theta + TAU * thetaDot;
  s[at] = x1;
  s[at + 1] = xDot + TAU * xAcc;
  s[at + 2] = theta1;
  s[at + 3] = thetaDot + TAU * thetaAcc;
  return x1 < -X_THRESHOLD || x1 > X_THRESHOLD || theta1 < -THETA_THRESHOLD || theta1 > THETA_THRESHOLD;
}

function initialize(s: Float64Array, at: number, rng: Random): void {
  for (let k = 0; k < 4; ++k) s[at + k] = -INIT_BOUND + 2 * INIT_BOUND * rng.uniform();
}

function observe(s: Float64Array, at: number, obs: Float32Array, to: number): void {
  for (let k = 0; k < 4; ++k) obs[to + k] = s[at + k];
}

/** Every step earns 1, the one that drops the pole included (Gymnasium's default reward). */
function reward(): number {
  return 1;
}

export const cartPole: EnvDynamics = {
  name: 'CartPole-v1',
  stateSize: 4,
  observationSize: 4,
  numActions: 2,
  maxEpisodeSteps: 500,  // the registration of CartPole-v1 (v0 had 200)
  initialize,
  advance,
  reward,
  observe,
};
