// rl.envs: CartPole-v1 and Acrobot-v1 against float64 re-derivations written here from the
// physics (Florian's cart-pole equations; the acrobot's manipulator equations solved by Cramer's
// rule, with an RK4 of our own), hand-computed first steps, mirror symmetry and energy
// conservation; termination, truncation and autoreset; seeding; bad input.
import t from 'tap';

import * as rl from '../lib/index';
import { acrobot } from '../lib/envs/acrobot';
import { cartPole } from '../lib/envs/cartpole';
import { EnvDynamics, envSeed } from '../lib/envs/vector';
import { Random } from '../lib/nn/random';
import { expectBitIdentical, expectClose, expectError, rng } from './helpers/index';

const { makeEnv } = rl.envs;
type Step = rl.envs.VectorStep;

// --- CartPole reference ---------------------------------------------------------------------------

const CP = { g: 9.8, mc: 1.0, mp: 0.1, l: 0.5, force: 10.0, tau: 0.02, xMax: 2.4, thetaMax: (12 * Math.PI) / 180 };

/** Florian (2007), eqs. 23 and 22 with the friction terms dropped, then one explicit Euler step. */
function cartPoleReference(s: number[], action: number): { next: number[]; terminated: boolean } {
  const [x, xd, th, thd] = s;
  const F = action === 1 ? CP.force : -CP.force;
  const M = CP.mc + CP.mp, sin = Math.sin(th), cos = Math.cos(th);
  const thdd = (CP.g * sin + cos * ((-F - CP.mp * CP.l * thd * thd * sin) / M)) / (CP.l * (4 / 3 - (CP.mp * cos * cos) / M));
  const xdd = (F + CP.mp * CP.l * (thd * thd * sin - thdd * cos)) / M;
  const next = [x + CP.tau * xd, xd + CP.tau * xdd, th + CP.tau * thd, thd + CP.tau * thdd];
  const terminated = Math.abs(next[0]) > CP.xMax || Math.abs(next[2]) > CP.thetaMax;
  return { next, terminated };
}

function cartPoleStep(s: number[], action: number): number[] {
  const state = Float64Array.from(s);
  cartPole.advance(state, 0, action);
  return Array.from(state);
}

// --- Acrobot reference ----------------------------------------------------------------------------

const AB = { dt: 0.2, m1: 1, m2: 1, l1: 1, lc1: 0.5, lc2: 0.5, I1: 1, I2: 1, g: 9.8, maxV1: 4 * Math.PI, maxV2: 9 * Math.PI };

/**
 * The acrobot's equations M(q) q'' + h(q, q') + G(q) = [0, torque] (Spong's form, q1 from hanging
 * down, q2 relative to link 1), solved for q'' by Cramer's rule.
 */
function acrobotDerivatives(s: number[], torque: number): number[] {
  const [q1, q2, w1, w2] = s;
  const { m1, m2, l1, lc1, lc2, I1, I2, g } = AB;
  const c2 = Math.cos(q2), s2 = Math.sin(q2);
  const M11 = m1 * lc1 * lc1 + m2 * (l1 * l1 + lc2 * lc2 + 2 * l1 * lc2 * c2) + I1 + I2;
  const M12 = m2 * (lc2 * lc2 + l1 * lc2 * c2) + I2;
  const M22 = m2 * lc2 * lc2 + I2;
  const h1 = -m2 * l1 * lc2 * s2 * (w2 * w2 + 2 * w1 * w2);
  const h2 = m2 * l1 * lc2 * s2 * w1 * w1;
  const G1 = (m1 * lc1 + m2 * l1) * g * Math.sin(q1) + m2 * lc2 * g * Math.sin(q1 + q2);
  const G2 = m2 * lc2 * g * Math.sin(q1 + q2);
  const r1 = -h1 - G1, r2 = torque - h2 - G2;
  const det = M11 * M22 - M12 * M12;
  return [w1, w2, (r1 * M22 - M12 * r2) / det, (M11 * r2 - M12 * r1) / det];
}

function rk4Reference(s: number[], torque: number, h: number): number[] {
  const add = (a: number[], k: number[], c: number) => a.map((v, i) => v + c * k[i]);
  const k1 = acrobotDerivatives(s, torque);
  const k2 = acrobotDerivatives(add(s, k1, h / 2), torque);
  const k3 = acrobotDerivatives(add(s, k2, h / 2), torque);
  const k4 = acrobotDerivatives(add(s, k3, h), torque);
  return s.map((v, i) => v + (h / 6) * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]));
}

/** Angle into [-pi, pi] by whole turns. */
function wrapAngle(a: number): number {
  return a - 2 * Math.PI * Math.round(a / (2 * Math.PI));
}

function acrobotReference(s: number[], action: number): { next: number[]; terminated: boolean } {
  const y = rk4Reference(s, action - 1, AB.dt);
  const clip = (v: number, b: number) => Math.min(b, Math.max(-b, v));
  const next = [wrapAngle(y[0]), wrapAngle(y[1]), clip(y[2], AB.maxV1), clip(y[3], AB.maxV2)];
  return { next, terminated: -Math.cos(next[0]) - Math.cos(next[0] + next[1]) > 1 };
}

/** Kinetic energy 1/2 q'^T M q' plus the links' potential energy (pivot at height 0). */
function acrobotEnergy(s: number[]): number {
  const [q1, q2, w1, w2] = s;
  const { m1, m2, l1, lc1, lc2, I1, I2, g } = AB;
  const c2 = Math.cos(q2);
  const M11 = m1 * lc1 * lc1 + m2 * (l1 * l1 + lc2 * lc2 + 2 * l1 * lc2 * c2) + I1 + I2;
  const M12 = m2 * (lc2 * lc2 + l1 * lc2 * c2) + I2;
  const M22 = m2 * lc2 * lc2 + I2;
  const kinetic = 0.5 * (M11 * w1 * w1 + 2 * M12 * w1 * w2 + M22 * w2 * w2);
  const potential = -m1 * g * lc1 * Math.cos(q1) - m2 * g * (l1 * Math.cos(q1) + lc2 * Math.cos(q1 + q2));
  return kinetic + potential;
}

function acrobotStep(s: number[], action: number): number[] {
  const state = Float64Array.from(s);
  acrobot.advance(state, 0, action);
  return Array.from(state);
}

function acrobotObservation(s: number[]): Float32Array {
  return Float32Array.from([Math.cos(s[0]), Math.sin(s[0]), Math.cos(s[1]), Math.sin(s[1]), s[2], s[3]]);
}

// --- vector-env replicas ------------------------------------------------------------------------------

/**
 * One env stepped alone by its dynamics (checked against the references above), with the reset
 * draws the docs promise: uniform in [-0.05, 0.05] (CartPole) or [-0.1, 0.1] rounded to float32
 * (Acrobot), in state order, from env i's stream. Acrobot is chaotic, so the float64 references
 * drift apart from any other rounding order within a few hundred steps: a replica of the batch
 * has to round as the env does.
 */
interface Replica {
  dynamics: EnvDynamics;
  initial(r: Random): number[];
  /** Actions that end episodes often enough to exercise autoreset. */
  act(s: number[], r: () => number): number;
}

const replicas: Replica[] = [
  {
    dynamics: cartPole,
    initial: (r) => [0, 1, 2, 3].map(() => -0.05 + 0.1 * r.uniform()),
    act: (_, r) => (r() < 0.5 ? 0 : 1),
  },
  {
    dynamics: acrobot,
    initial: (r) => [0, 1, 2, 3].map(() => Math.fround(-0.1 + 0.2 * r.uniform())),
    // Random play rarely reaches the goal; torque along the second joint's motion, with noise, does.
    act: (s, r) => (r() < 0.2 ? Math.floor(r() * 3) : s[3] > 0 ? 2 : 0),
  },
];

function replicaStep(d: EnvDynamics, s: number[], action: number): { next: number[]; terminated: boolean } {
  const state = Float64Array.from(s);
  const terminated = d.advance(state, 0, action);
  return { next: Array.from(state), terminated };
}

function replicaObservation(d: EnvDynamics, s: number[]): Float32Array {
  const obs = new Float32Array(d.observationSize);
  d.observe(Float64Array.from(s), 0, obs, 0);
  return obs;
}

function randomActions(r: () => number, n: number, numActions: number): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; ++i) a[i] = Math.floor(r() * numActions);
  return a;
}

function row(a: Float32Array, i: number, size: number): Float32Array {
  return a.slice(i * size, (i + 1) * size);
}

/** Runs `steps` steps of random actions and returns every step's output. */
function rollout(env: rl.envs.VectorEnv, seed: number, steps: number, actionSeed = 7): { first: Float32Array; steps: Step[] } {
  const first = env.reset(seed);
  const r = rng(actionSeed);
  const out: Step[] = [];
  for (let k = 0; k < steps; ++k) out.push(env.step(randomActions(r, env.numEnvs, env.numActions)));
  return { first, steps: out };
}

// --- CartPole -------------------------------------------------------------------------------------

t.test('CartPole: hand-computed first step, the reference, mirror symmetry', async (t) => {
  // From rest upright, F = +10: temp = F/M = 100/11, thetaacc = -temp / (l (4/3 - mp/M)) = -600/41,
  // xacc = temp - mp l thetaacc / M = 400/41; Euler moves only the velocities.
  expectClose(t, cartPoleStep([0, 0, 0, 0], 1), [0, 0.02 * 400 / 41, 0, -0.02 * 600 / 41], { rtol: 1e-15 }, 'push right from rest');
  expectClose(t, cartPoleStep([0, 0, 0, 0], 0), [0, -0.02 * 400 / 41, 0, 0.02 * 600 / 41], { rtol: 1e-15 }, 'push left from rest');
  // Euler: positions move by the old velocities, velocities by the accelerations of the old state.
  const moved = cartPoleStep([0.1, 0.5, 0.02, -0.3], 1);
  t.equal(moved[0], 0.1 + 0.02 * 0.5, 'x += tau * x_dot (the old x_dot)');
  t.equal(moved[2], 0.02 + 0.02 * -0.3, 'theta += tau * theta_dot (the old theta_dot)');

  const r = rng(11);
  for (let k = 0; k < 200; ++k) {
    const s = [(r() - 0.5) * 4, (r() - 0.5) * 6, (r() - 0.5) * 0.5, (r() - 0.5) * 8];
    const a = r() < 0.5 ? 0 : 1;
    const want = cartPoleReference(s, a);
    const state = Float64Array.from(s);
    const done = cartPole.advance(state, 0, a);
    if (!expectClose(t, state, want.next, { rtol: 1e-13, atol: 1e-15 }, `random state ${k}`) || done !== want.terminated) {
      t.fail(`state ${k}: terminated ${done}, want ${want.terminated}`);
      break;
    }
  }
  // A mirrored state under the mirrored push follows the mirrored path, bit for bit (sin is odd,
  // cos even, and IEEE rounding is symmetric in sign).
  let s = [0.01, -0.02, 0.03, 0.04];
  let m = s.map((v) => -v);
  let symmetric = true;
  for (let k = 0; k < 50; ++k) {
    const a = k % 3 === 0 ? 1 : 0;
    s = cartPoleStep(s, a);
    m = cartPoleStep(m, 1 - a);
    if (s.some((v, i) => v !== -m[i])) symmetric = false;
  }
  t.ok(symmetric, 'mirror symmetry over 50 steps');
});

t.test('CartPole: always pushing right terminates early; reward 1 on the terminal step; autoreset', async (t) => {
  const env = makeEnv('CartPole-v1', { numEnvs: 4, seed: 3 });
  env.reset();
  const ended = new Set<number>();
  for (let k = 1; k <= 40 && ended.size < 4; ++k) {
    const out = env.step(new Int32Array(4).fill(1));
    t.same(Array.from(out.rewards), [1, 1, 1, 1], `step ${k}: every reward is 1`);
    for (const e of out.episodes) {
      ended.add(e.env);
      t.ok(k >= 5 && k <= 30, `env ${e.env} fell at step ${k}`);
      t.same([out.terminated[e.env], out.truncated[e.env]], [1, 0], 'terminated, not truncated');
      t.same([e.length, e.return], [k, k], 'length and return count the terminal step');
      const last = row(out.finalObservations, e.env, 4);
      t.ok(Math.abs(last[0]) > 2.4 || Math.abs(last[2]) > CP.thetaMax, 'the final observation is past a threshold');
      t.ok(row(out.observations, e.env, 4).every((v) => Math.abs(v) <= 0.05), 'the next observation starts a new episode');
    }
    for (let i = 0; i < 4; ++i)
      if (!out.terminated[i]) t.same(row(out.finalObservations, i, 4), row(out.observations, i, 4), 'unended rows are equal');
  }
  t.equal(ended.size, 4, 'every env fell');
});

t.test('CartPole: a balancing controller is truncated at exactly 500 steps', async (t) => {
  const env = makeEnv('cartpole', { numEnvs: 3, seed: 1 });
  let obs = env.reset();
  const policy = (o: Float32Array) => {
    const a = new Int32Array(3);
    for (let i = 0; i < 3; ++i) a[i] = o[i * 4 + 2] + 0.5 * o[i * 4 + 3] > 0 ? 1 : 0;
    return a;
  };
  let early = 0;
  let out: Step | undefined;
  for (let k = 1; k <= 500; ++k) {
    out = env.step(policy(obs));
    obs = out.observations;
    if (k < 500) early += out.episodes.length;
  }
  t.equal(early, 0, 'no episode ends before step 500');
  const last = out as Step;
  t.same(Array.from(last.truncated), [1, 1, 1], 'truncated at 500');
  t.same(Array.from(last.terminated), [0, 0, 0], 'not terminated');
  t.same(last.episodes, [0, 1, 2].map((env) => ({ env, return: 500, length: 500 })), 'three episodes of 500');
  t.ok(last.observations.every((v) => Math.abs(v) <= 0.05), 'all restarted');
  t.equal(env.step(policy(obs)).episodes.length, 0, 'and their step counts restarted');
});

// --- Acrobot --------------------------------------------------------------------------------------

t.test('Acrobot: the reference, hand-checked; RK4 steps against it; energy', async (t) => {
  // At rest hanging down with torque +1: M = [[4.5, 1.75], [1.75, 1.25]], so q'' = M^-1 [0, 1] = [-28/41, 72/41].
  expectClose(t, acrobotDerivatives([0, 0, 0, 0], 1), [0, 0, -28 / 41, 72 / 41], { rtol: 1e-14 }, 'reference derivative at rest');
  // The reference is a conservative system: its energy holds under fine RK4 steps with no torque.
  let s = [1.2, -0.7, 0.5, -1.0];
  const e0 = acrobotEnergy(s);
  for (let k = 0; k < 2000; ++k) s = rk4Reference(s, 0, 0.001);
  t.ok(Math.abs(acrobotEnergy(s) - e0) < 1e-9, 'the reference conserves energy');

  const states = [[0, 0, 0, 0], [0.05, -0.08, 0.02, 0.09], [1.2, -0.7, 0.5, -1.0], [-2.9, 2.5, -3, 7], [3.0, 0.1, 12.3, -27]];
  for (const [i, st] of states.entries())
    for (const a of [0, 1, 2]) {
      const want = acrobotReference(st, a);
      expectClose(t, acrobotStep(st, a), want.next, { rtol: 1e-12, atol: 1e-13 }, `state ${i}, action ${a}`);
    }
  for (const st of states)
    expectBitIdentical(t, replicaObservation(acrobot, st), acrobotObservation(st), 'observation [cos t1, sin t1, cos t2, sin t2, dt1, dt2]');
  const fast = acrobotStep([3.0, 0.1, 12.3, -27], 1);
  t.ok(fast[0] >= -Math.PI && fast[0] <= Math.PI && fast[1] >= -Math.PI && fast[1] <= Math.PI, 'angles wrapped');
  t.ok(Math.abs(fast[2]) <= AB.maxV1 && Math.abs(fast[3]) <= AB.maxV2, 'velocities bounded');

  // 100 steps of the env with no torque follow the reference and lose little energy at dt = 0.2.
  let mine = [0.1, -0.1, 0.05, 0.02];
  let ref = mine;
  for (let k = 0; k < 100; ++k) {
    mine = acrobotStep(mine, 1);
    ref = acrobotReference(ref, 1).next;
  }
  expectClose(t, mine, ref, { rtol: 1e-9, atol: 1e-10 }, '100 free steps follow the reference');
  const swing = acrobotEnergy([0.1, -0.1, 0.05, 0.02]) - acrobotEnergy([0, 0, 0, 0]);
  t.ok(Math.abs(acrobotEnergy(mine) - acrobotEnergy([0.1, -0.1, 0.05, 0.02])) < 0.05 * swing, 'energy within 5% of the swing');
});

t.test('Acrobot: random play is truncated at 500 with return -500; observation invariants', async (t) => {
  const env = makeEnv('acrobot', { numEnvs: 4, seed: 2 });
  const { first, steps } = rollout(env, 2, 1000, 5);
  t.ok(first.slice(4, 6).every((v) => Math.abs(v) <= 0.1), 'reset velocities in [-0.1, 0.1]');
  let worstNorm = 0, inBounds = true, truncations = 0, wrongRewards = 0;
  for (const out of steps) {
    for (const obs of [out.observations, out.finalObservations])
      for (let i = 0; i < 4; ++i) {
        const o = row(obs, i, 6);
        worstNorm = Math.max(worstNorm, Math.abs(o[0] * o[0] + o[1] * o[1] - 1), Math.abs(o[2] * o[2] + o[3] * o[3] - 1));
        if (Math.abs(o[4]) > Math.fround(AB.maxV1) || Math.abs(o[5]) > Math.fround(AB.maxV2)) inBounds = false;
      }
    for (let i = 0; i < 4; ++i) if (!out.terminated[i] && out.rewards[i] !== -1) ++wrongRewards;
    for (const e of out.episodes) {
      if (out.truncated[e.env]) {
        ++truncations;
        t.same([e.length, e.return, out.terminated[e.env]], [500, -500, 0], 'truncated at 500 with return -500');
      } else {
        t.same([out.rewards[e.env], e.return], [0, -(e.length - 1)], 'a goal: 0 on its step');
      }
    }
  }
  t.ok(worstNorm < 1e-6, `cos^2 + sin^2 = 1 (worst ${worstNorm})`);
  t.ok(inBounds, 'velocities within 4 pi and 9 pi');
  t.equal(wrongRewards, 0, 'reward -1 on every step short of the goal');
  t.ok(truncations >= 4, `${truncations} truncations`);
});

t.test('Acrobot: pumping the second joint reaches the goal, with reward 0 on that step', async (t) => {
  const env = makeEnv('Acrobot-v1', { numEnvs: 4, seed: 3 });
  let obs = env.reset();
  const goals: number[] = [];
  for (let k = 0; k < 500 && goals.length < 4; ++k) {
    const a = new Int32Array(4);
    for (let i = 0; i < 4; ++i) a[i] = obs[i * 6 + 5] > 0 ? 2 : 0;
    const out = env.step(a);
    obs = out.observations;
    for (const e of out.episodes) {
      goals.push(e.length);
      t.same([out.terminated[e.env], out.truncated[e.env], out.rewards[e.env]], [1, 0, 0], 'terminated with reward 0');
      t.equal(e.return, -(e.length - 1), 'return -(length - 1)');
      const [c1, s1, c2, s2] = row(out.finalObservations, e.env, 6);
      t.ok(-c1 - (c1 * c2 - s1 * s2) > 1 - 1e-5, 'the final observation has the tip above the line');
    }
  }
  t.equal(goals.length, 4, `goals at steps ${goals.join(', ')}`);
  t.ok(goals.every((n) => n < 500), 'all before the time limit');
});

// --- the vector env ---------------------------------------------------------------------------------

t.test('autoreset: every env against a replica stepped alone from its own stream', async (t) => {
  for (const { dynamics: d, initial, act } of replicas) {
    const n = 3, seed = 9, size = d.observationSize;
    const env = makeEnv(d.name, { numEnvs: n, seed });
    const streams = Array.from({ length: n }, (_, i) => new Random(envSeed(seed, i)));
    const states = streams.map(initial);
    const lengths = [0, 0, 0], returns = [0, 0, 0];
    expectBitIdentical(t, env.reset(), concat(states.map((s) => replicaObservation(d, s))), `${d.name}: reset`);
    const r = rng(4);
    let episodes = 0, terminations = 0, mismatch = '';
    for (let k = 0; k < 700 && !mismatch; ++k) {
      const actions = Int32Array.from(states, (s) => act(s, r));
      const out = env.step(actions);
      for (let i = 0; i < n; ++i) {
        const { next, terminated } = replicaStep(d, states[i], actions[i]);
        const reward = d.reward(terminated);
        lengths[i] += 1;
        returns[i] += reward;
        const truncated = !terminated && lengths[i] === 500;
        if (out.terminated[i] !== +terminated || out.truncated[i] !== +truncated || out.rewards[i] !== reward)
          mismatch = `step ${k}, env ${i}: flags or reward`;
        else if (!same(row(out.finalObservations, i, size), replicaObservation(d, next))) mismatch = `step ${k}, env ${i}: final observation`;
        states[i] = next;
        const e = out.episodes.find((x) => x.env === i);
        if (terminated || truncated) {
          ++episodes;
          if (terminated) ++terminations;
          if (!e || e.length !== lengths[i] || e.return !== returns[i]) mismatch = `step ${k}, env ${i}: episode record`;
          states[i] = initial(streams[i]);
          lengths[i] = 0;
          returns[i] = 0;
        } else if (e) mismatch = `step ${k}, env ${i}: an episode record for a running episode`;
        if (!same(row(out.observations, i, size), replicaObservation(d, states[i]))) mismatch = `step ${k}, env ${i}: observation`;
      }
    }
    t.equal(mismatch, '', `${d.name}: 700 steps match the replicas bit for bit`);
    t.ok(terminations >= 3, `${d.name}: ${episodes} episodes ended (${terminations} terminated), each restarted from its env's stream`);
  }
});

function concat(rows: Float32Array[]): Float32Array {
  const out = new Float32Array(rows.reduce((n, r) => n + r.length, 0));
  let at = 0;
  for (const r of rows) {
    out.set(r, at);
    at += r.length;
  }
  return out;
}

function same(a: Float32Array, b: Float32Array): boolean {
  return a.every((v, i) => Object.is(v, b[i]));
}

t.test('seeding: same seed, same trajectory; streams per env', async (t) => {
  for (const name of ['CartPole-v1', 'Acrobot-v1'] as const) {
    const a = rollout(makeEnv(name, { numEnvs: 4 }), 5, 300);
    const b = rollout(makeEnv(name, { numEnvs: 4, seed: 123 }), 5, 300);
    expectBitIdentical(t, concat(b.steps.map((s) => s.observations)), concat(a.steps.map((s) => s.observations)), `${name}: reset(5) fixes the run`);
    t.same(b.steps.map((s) => s.episodes), a.steps.map((s) => s.episodes), `${name}: same episodes`);
    const c = rollout(makeEnv(name, { numEnvs: 4 }), 6, 1);
    t.notSame(Array.from(c.first), Array.from(a.first), `${name}: another seed, other starts`);

    const fromOpts = makeEnv(name, { numEnvs: 4, seed: 5 });
    const firstReset = fromOpts.reset();
    expectBitIdentical(t, firstReset, a.first, `${name}: the constructor's seed serves the first reset()`);
    t.notSame(Array.from(fromOpts.reset()), Array.from(firstReset), `${name}: a later reset() continues the streams`);

    const size = a.first.length / 4;
    expectBitIdentical(t, makeEnv(name).reset(5), row(a.first, 0, size), `${name}: env 0 starts alike in batches of 1 and 4`);
    const starts = [0, 1, 2, 3].map((i) => Array.from(row(a.first, i, size)));
    t.equal(new Set(starts.map((s) => s.join())).size, 4, `${name}: the four envs start apart`);
  }
  const seeds = new Set<number>();
  for (const s of [0, 1, 2]) for (let i = 0; i < 1000; ++i) seeds.add(envSeed(s, i));
  t.equal(seeds.size, 3000, 'env stream seeds are distinct across seeds and envs');
});

t.test('the env descriptions', async (t) => {
  const cp = makeEnv('cartpole', { numEnvs: 2 });
  t.same([cp.name, cp.numEnvs, cp.observationSize, cp.numActions, cp.maxEpisodeSteps], ['CartPole-v1', 2, 4, 2, 500]);
  const ab = makeEnv('Acrobot-v1');
  t.same([ab.name, ab.numEnvs, ab.observationSize, ab.numActions, ab.maxEpisodeSteps], ['Acrobot-v1', 1, 6, 3, 500]);
  t.equal(ab.reset().length, 6, 'reset returns [numEnvs * observationSize]');
  t.equal(cp.reset().length, 8);
  const out = cp.step(new Int32Array([0, 1]));
  t.same([out.observations.length, out.finalObservations.length, out.rewards.length, out.terminated.length, out.truncated.length],
    [8, 8, 2, 2, 2], 'step output sizes');
});

t.test('bad input', async (t) => {
  const env = makeEnv('CartPole-v1', { numEnvs: 2 });
  expectError(t, () => env.step(new Int32Array(2)), Error, /CartPole-v1\.step: call reset\(\) before the first step/);
  env.reset(1);
  expectError(t, () => env.step([0, 1] as unknown as Int32Array), TypeError, /expected an Int32Array for `actions` but received an Array/);
  expectError(t, () => env.step(new Float32Array(2) as unknown as Int32Array), TypeError, /`actions` but received Float32Array/);
  expectError(t, () => env.step(new Int32Array(3)), RangeError, /`actions` must hold 2 actions \(one per env\) but holds 3/);
  expectError(t, () => env.step(new Int32Array([0, 2])), RangeError, /`actions` holds 2 at index 1, outside \[0, 2\)/);
  expectError(t, () => env.step(new Int32Array([-1, 0])), RangeError, /`actions` holds -1 at index 0/);
  const after = env.step(new Int32Array([1, 1]));
  const fresh = makeEnv('CartPole-v1', { numEnvs: 2 });
  fresh.reset(1);
  expectBitIdentical(t, after.observations, fresh.step(new Int32Array([1, 1])).observations, 'rejected actions moved no env');

  expectError(t, () => makeEnv('Pendulum-v1' as rl.envs.EnvName), RangeError, /envs\.makeEnv: `name` must be one of 'CartPole-v1', 'Acrobot-v1', 'cartpole', 'acrobot' but is 'Pendulum-v1'/);
  expectError(t, () => makeEnv(undefined as unknown as rl.envs.EnvName), TypeError, /expected an env name for `name`/);
  for (const bad of [0, -2, 1.5, NaN])
    expectError(t, () => makeEnv('acrobot', { numEnvs: bad }), RangeError, /`numEnvs` must be an integer in \[1, 2\^24\]/);
  expectError(t, () => makeEnv('acrobot', { numEnvs: '4' as unknown as number }), TypeError, /expected a positive integer for `numEnvs` but received '4'/);
  expectError(t, () => makeEnv('acrobot', { seed: -1 }), RangeError, /`seed` must be an integer in \[0, 2\^32\)/);
  expectError(t, () => env.reset(0.5), RangeError, /CartPole-v1\.reset: `seed` must be an integer/);
  expectError(t, () => env.reset('1' as unknown as number), TypeError, /`seed` but received '1'/);
});
