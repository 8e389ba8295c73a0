// rl.gae: time-major GAE over environment rollouts [T,N] (SEMANTICS.md §3). Hand-worked cases,
// random cases against lib/reference (float64), thread-count and CPU-path bit-identity, edge
// cases, bad input, and the Async form.
import t from 'tap';

import * as rl from '../lib/index';
import { gaeReference, GaeReferenceInputs } from '../lib/reference/advantages';
import {
  cpuPaths, referencePath, data, expectBitIdentical, expectClose, expectError, expectRejection, f32, ft, mt, randomFlags,
  randomFloats, rng, Rng, snapshot, u8, uniformFloats, withCpuPath, withThreads,
} from './helpers/index';

// ---------------------------------------------------------------------------------------------
// A case as plain arrays, run through the addon or the reference.

interface GaeCase {
  T: number;
  N: number;
  rewards: Float32Array;
  values: Float32Array;
  lastValues?: Float32Array;
  nextValues?: Float32Array;
  terminated?: Uint8Array;
  truncated?: Uint8Array;
  dones?: Uint8Array;
  nextDone?: Uint8Array;
  gamma: number | Float32Array;
  lambda: number | Float32Array;
  preset?: 'torchrl' | 'rlax' | 'cleanrl';
}

function tensorsOf(c: GaeCase): rl.GaeInputs {
  const tn = [c.T, c.N];
  return {
    rewards: ft(c.rewards, tn),
    values: ft(c.values, tn),
    lastValues: c.lastValues && ft(c.lastValues, [c.N]),
    nextValues: c.nextValues && ft(c.nextValues, tn),
    terminated: c.terminated && mt(c.terminated, tn),
    truncated: c.truncated && mt(c.truncated, tn),
    dones: c.dones && mt(c.dones, tn),
    nextDone: c.nextDone && mt(c.nextDone, [c.N]),
  };
}

function runGae(c: GaeCase): { adv: Float32Array; ret: Float32Array } {
  const out = rl.gae(tensorsOf(c), { gamma: c.gamma, lambda: c.lambda, preset: c.preset });
  return { adv: snapshot(out.advantages), ret: snapshot(out.returns) };
}

function refGae(c: GaeCase) {
  return gaeReference(c.T, c.N, c as GaeReferenceInputs, { gamma: c.gamma, lambda: c.lambda });
}

type RateKind = 'scalar' | 'step' | 'element';

interface RandomOpts {
  terminated?: number;
  truncated?: number;
  cleanrl?: number;
  gamma?: RateKind;
  lambda?: RateKind;
}

function rate(r: Rng, kind: RateKind, T: number, N: number, scalar: number): number | Float32Array {
  if (kind === 'scalar') return Math.fround(scalar);
  return uniformFloats(r, kind === 'step' ? T : T * N, 0.8, 1);
}

function randomCase(r: Rng, T: number, N: number, o: RandomOpts = {}): GaeCase {
  const c: GaeCase = {
    T, N,
    rewards: randomFloats(r, T * N),
    values: randomFloats(r, T * N, 2),
    lastValues: randomFloats(r, N, 2),
    gamma: rate(r, o.gamma ?? 'scalar', T, N, 0.99),
    lambda: rate(r, o.lambda ?? 'scalar', T, N, 0.95),
  };
  if (o.terminated !== undefined) c.terminated = randomFlags(r, T * N, o.terminated);
  if (o.truncated !== undefined) {
    c.truncated = randomFlags(r, T * N, o.truncated);
    c.nextValues = randomFloats(r, T * N, 2);
    // Where the episode goes on, the next state's value is the next row's value.
    for (let i = 0; i < (T - 1) * N; ++i) if (!c.truncated[i]) c.nextValues[i] = c.values[i + N];
  }
  if (o.cleanrl !== undefined) {
    c.dones = randomFlags(r, T * N, o.cleanrl);
    c.nextDone = randomFlags(r, N, o.cleanrl);
    c.preset = 'cleanrl';
  }
  return c;
}

const tol = { rtol: 1e-4 };

// ---------------------------------------------------------------------------------------------
// (a) Worked by hand. gamma = lambda = 0.5 keep every intermediate exact in float32.

t.test('hand case: T=3, one env, termination after step 1 stops both the bootstrap and the lambda chain', async (t) => {
  // rewards [1,2,3], values [0.5,1,1.5], lastValues [2], terminated [0,1,0], gamma = lambda = 0.5
  // t=2: V' = lastValues = 2:        delta = 3 + 0.5*2 - 1.5 = 2.5           A2 = 2.5
  // t=1: terminated, no bootstrap:   delta = 2 - 1 = 1, chain cut            A1 = 1
  // t=0: V' = values[1] = 1:         delta = 1 + 0.5*1 - 0.5 = 1             A0 = 1 + 0.25*1 = 1.25
  // returns = A + V = [1.75, 2, 4]
  const out = rl.gae({
    rewards: ft([1, 2, 3], [3, 1]), values: ft([0.5, 1, 1.5], [3, 1]), lastValues: ft([2]),
    terminated: mt([0, 1, 0], [3, 1]),
  }, { gamma: 0.5, lambda: 0.5 });
  t.strictSame([...data(out.advantages)], [1.25, 1, 2.5]);
  t.strictSame([...data(out.returns)], [1.75, 2, 4]);
  t.strictSame([...out.advantages.shape], [3, 1]);
});

t.test('hand case: truncation bootstraps from nextValues but still cuts the lambda chain', async (t) => {
  // rewards [1,2,3], values [0.5,1,1.5], truncated [0,1,0], nextValues [1,4,2] (4 is the value of
  // the final observation of the truncated episode; values[2] = 1.5 belongs to the next one).
  // t=2: delta = 3 + 0.5*2 - 1.5 = 2.5                          A2 = 2.5
  // t=1: delta = 2 + 0.5*4 - 1 = 3 (bootstrapped), chain cut    A1 = 3
  // t=0: delta = 1 + 0.5*1 - 0.5 = 1                            A0 = 1 + 0.25*3 = 1.75
  const out = rl.gae({
    rewards: ft([1, 2, 3], [3, 1]), values: ft([0.5, 1, 1.5], [3, 1]),
    truncated: mt([0, 1, 0], [3, 1]), nextValues: ft([1, 4, 2], [3, 1]),
  }, { gamma: 0.5, lambda: 0.5 });
  t.strictSame([...data(out.advantages)], [1.75, 3, 2.5]);
  t.strictSame([...data(out.returns)], [2.25, 4, 4]);
});

t.test('hand case: no episode end with gamma = lambda = 1 gives reward-to-go + lastValue - V', async (t) => {
  // A_t = sum_{k>=t} r_k + lastValue - V_t: [1+2+3+2-0.5, 2+3+2-1, 3+2-1.5] = [7.5, 6, 3.5]
  const out = rl.gae({ rewards: ft([1, 2, 3], [3, 1]), values: ft([0.5, 1, 1.5], [3, 1]), lastValues: ft([2]) },
    { gamma: 1, lambda: 1 });
  t.strictSame([...data(out.advantages)], [7.5, 6, 3.5]);
  t.strictSame([...data(out.returns)], [8, 7, 5]);
});

t.test('hand case: CleanRL dones (flag stored before step t) reproduce the termination case', async (t) => {
  // The episode ends after step 1, so CleanRL stores done = 1 with step 2: dones [0,0,1],
  // nextDone [0]. Same numbers as the terminated case: A = [1.25, 1, 2.5].
  const base = { rewards: ft([1, 2, 3], [3, 1]), values: ft([0.5, 1, 1.5], [3, 1]), lastValues: ft([2]) };
  const out = rl.gae({ ...base, dones: mt([0, 0, 1], [3, 1]), nextDone: mt([0]) },
    { gamma: 0.5, lambda: 0.5, preset: 'cleanrl' });
  t.strictSame([...data(out.advantages)], [1.25, 1, 2.5]);
  t.strictSame([...data(out.returns)], [1.75, 2, 4]);

  // nextDone [1]: the last step is terminal.
  // t=2: delta = 3 - 1.5 = 1.5                               A2 = 1.5
  // t=1: delta = 2 + 0.5*1.5 - 1 = 1.75                      A1 = 1.75 + 0.25*1.5 = 2.125
  // t=0: delta = 1 + 0.5*1 - 0.5 = 1                         A0 = 1 + 0.25*2.125 = 1.53125
  const last = rl.gae({ ...base, dones: mt([0, 0, 0], [3, 1]), nextDone: mt([1]) },
    { gamma: 0.5, lambda: 0.5, preset: 'cleanrl' });
  t.strictSame([...data(last.advantages)], [1.53125, 2.125, 1.5]);

  // dones[0] = 1 belongs to the previous rollout and changes nothing:
  // t=2: A2 = 2.5; t=1: delta = 2 + 0.75 - 1 = 1.75, A1 = 1.75 + 0.25*2.5 = 2.375; t=0: A0 = 1 + 0.25*2.375
  const first = rl.gae({ ...base, dones: mt([1, 0, 0], [3, 1]), nextDone: mt([0]) },
    { gamma: 0.5, lambda: 0.5, preset: 'cleanrl' });
  t.strictSame([...data(first.advantages)], [1.59375, 2.375, 2.5]);
});

t.test('hand case: two environments are interleaved time-major (row t holds both envs)', async (t) => {
  // env 0 is the terminated case above; env 1: rewards [1,1,1], values [0,0,0], lastValues 4,
  // no flags: A2 = 1 + 0.5*4 = 3, A1 = 1 + 0.25*3 = 1.75, A0 = 1 + 0.25*1.75 = 1.4375
  const out = rl.gae({
    rewards: ft([1, 1, 2, 1, 3, 1], [3, 2]), values: ft([0.5, 0, 1, 0, 1.5, 0], [3, 2]), lastValues: ft([2, 4]),
    terminated: mt([0, 0, 1, 0, 0, 0], [3, 2]),
  }, { gamma: 0.5, lambda: 0.5 });
  t.strictSame([...data(out.advantages)], [1.25, 1.4375, 1, 1.75, 2.5, 3]);
  t.strictSame([...data(out.returns)], [1.75, 1.4375, 2, 1.75, 4, 3]);
});

t.test('hand case: per-step gamma array (rlax) is read at each step', async (t) => {
  // gamma = [1, 0.5, 0], lambda = 1, lastValues 2
  // t=2: gamma 0:   delta = 3 - 1.5 = 1.5                       A2 = 1.5
  // t=1: gamma 0.5: delta = 2 + 0.5*1.5 - 1 = 1.75              A1 = 1.75 + 0.5*1.5 = 2.5
  // t=0: gamma 1:   delta = 1 + 1 - 0.5 = 1.5                   A0 = 1.5 + 2.5 = 4
  const out = rl.gae({ rewards: ft([1, 2, 3], [3, 1]), values: ft([0.5, 1, 1.5], [3, 1]), lastValues: ft([2]) },
    { gamma: f32([1, 0.5, 0]), lambda: 1 });
  t.strictSame([...data(out.advantages)], [4, 2.5, 1.5]);
});

t.test('hand case: per-element lambda [T,N] differs per environment', async (t) => {
  // Two identical envs (rewards 1, values 0, lastValues 0, gamma 1); lambda 1 for env 0 and 0 for env 1.
  // env 0: A = [3, 2, 1] (reward-to-go); env 1: A_t = delta_t = 1 + V_{t+1} - V_t = 1.
  const out = rl.gae({ rewards: ft([1, 1, 1, 1, 1, 1], [3, 2]), values: ft(new Float32Array(6), [3, 2]), lastValues: ft([0, 0]) },
    { gamma: 1, lambda: rl.tensor(f32([1, 0, 1, 0, 1, 0]), [3, 2]) });
  t.strictSame([...data(out.advantages)], [3, 1, 2, 1, 1, 1]);
});

t.test('hand case: gamma 0 gives A = r - V; lambda 0 gives the one-step TD error', async (t) => {
  const inputs = { rewards: ft([1, 2, 3], [3, 1]), values: ft([0.5, 1, 1.5], [3, 1]), lastValues: ft([2]) };
  t.strictSame([...data(rl.gae(inputs, { gamma: 0, lambda: 0.7 }).advantages)], [0.5, 1, 1.5]);
  // lambda 0, gamma 0.5: delta = [1 + 0.5 - 0.5, 2 + 0.75 - 1, 3 + 1 - 1.5]
  t.strictSame([...data(rl.gae(inputs, { gamma: 0.5, lambda: 0 }).advantages)], [1, 1.75, 2.5]);
});

t.test('lib/reference gaeReference reproduces the hand cases (it is the yardstick below and the bench js backend)', async (t) => {
  const base = { rewards: [1, 2, 3], values: [0.5, 1, 1.5] };
  const term = gaeReference(3, 1, { ...base, lastValues: [2], terminated: [0, 1, 0] }, { gamma: 0.5, lambda: 0.5 });
  t.strictSame([...term.advantages], [1.25, 1, 2.5]);
  t.strictSame([...term.returns], [1.75, 2, 4]);
  const trunc = gaeReference(3, 1, { ...base, truncated: [0, 1, 0], nextValues: [1, 4, 2] }, { gamma: 0.5, lambda: 0.5 });
  t.strictSame([...trunc.advantages], [1.75, 3, 2.5]);
  const clean = gaeReference(3, 1, { ...base, lastValues: [2], dones: [0, 0, 0], nextDone: [1] }, { gamma: 0.5, lambda: 0.5 });
  t.strictSame([...clean.advantages], [1.53125, 2.125, 1.5]);
  const perStep = gaeReference(3, 1, { ...base, lastValues: [2] }, { gamma: [1, 0.5, 0], lambda: 1 });
  t.strictSame([...perStep.advantages], [4, 2.5, 1.5]);
  const twoEnvs = gaeReference(3, 2, { rewards: [1, 1, 2, 1, 3, 1], values: [0.5, 0, 1, 0, 1.5, 0], lastValues: [2, 4], terminated: [0, 0, 1, 0, 0, 0] },
    { gamma: 0.5, lambda: 0.5 });
  t.strictSame([...twoEnvs.advantages], [1.25, 1.4375, 1, 1.75, 2.5, 3]);
  t.throws(() => gaeReference(3, 1, base, { gamma: 0.5, lambda: 0.5 }), RangeError, 'neither lastValues nor nextValues');
});

t.test('defaults are gamma 0.99 and lambda 0.95', async (t) => {
  const c = randomCase(rng(7), 20, 3);
  const out = rl.gae(tensorsOf(c));
  const ref = gaeReference(c.T, c.N, c, { gamma: Math.fround(0.99), lambda: Math.fround(0.95) });
  expectClose(t, data(out.advantages), ref.advantages, tol, 'advantages with default gamma/lambda');
});

// ---------------------------------------------------------------------------------------------
// (b) Random cases against the float64 reference.

t.test('random cases match the float64 reference', async (t) => {
  const r = rng(1);
  const configs: [string, number, number, RandomOpts][] = [
    ['no flags', 50, 8, {}],
    ['terminated', 200, 13, { terminated: 0.05 }],
    ['truncated + nextValues', 200, 13, { truncated: 0.05 }],
    ['terminated + truncated', 1000, 5, { terminated: 0.02, truncated: 0.02 }],
    ['per-step gamma, per-element lambda', 300, 7, { terminated: 0.03, gamma: 'step', lambda: 'element' }],
    ['per-element gamma, per-step lambda', 300, 33, { truncated: 0.03, gamma: 'element', lambda: 'step' }],
    ['cleanrl dones', 500, 9, { cleanrl: 0.02 }],
    ['cleanrl with per-element gamma', 64, 17, { cleanrl: 0.1, gamma: 'element' }],
    ['single env', 1000, 1, { terminated: 0.01 }],
    ['many envs, short', 3, 257, { terminated: 0.3, truncated: 0.3 }],
  ];
  for (const [name, T, N, o] of configs) {
    const c = randomCase(r, T, N, o);
    const got = runGae(c);
    const want = refGae(c);
    expectClose(t, got.adv, want.advantages, tol, `${name} [${T},${N}] advantages`);
    expectClose(t, got.ret, want.returns, tol, `${name} [${T},${N}] returns`);
  }
});

t.test("preset 'rlax' and the default 'torchrl' compute the same thing", async (t) => {
  const c = randomCase(rng(2), 40, 6, { terminated: 0.1, truncated: 0.1 });
  const a = rl.gae(tensorsOf(c), { gamma: c.gamma, lambda: c.lambda, preset: 'rlax' });
  const b = rl.gae(tensorsOf(c), { gamma: c.gamma, lambda: c.lambda, preset: 'torchrl' });
  expectBitIdentical(t, data(a.advantages), data(b.advantages), 'rlax vs torchrl advantages');
});

t.test('nextValues equal to the shifted values give the same result as lastValues alone', async (t) => {
  const c = randomCase(rng(3), 30, 4, { terminated: 0.1 });
  const nextValues = new Float32Array(c.T * c.N);
  for (let i = 0; i < (c.T - 1) * c.N; ++i) nextValues[i] = c.values[i + c.N];
  nextValues.set(c.lastValues as Float32Array, (c.T - 1) * c.N);
  const a = runGae(c);
  const b = runGae({ ...c, lastValues: undefined, nextValues });
  expectBitIdentical(t, b.adv, a.adv, 'advantages');
});

// ---------------------------------------------------------------------------------------------
// (c) Thread counts and (d) CPU paths.

t.test('results are bit-identical for 1 to 4 threads on [256,4096]', async (t) => {
  const c = randomCase(rng(4), 256, 4096, { terminated: 0.01, truncated: 0.01, lambda: 'step' });
  const runs = [1, 2, 3, 4].map((n) => withThreads(n, () => runGae(c)));
  for (let i = 1; i < runs.length; ++i) {
    expectBitIdentical(t, runs[i].adv, runs[0].adv, `advantages, ${i + 1} threads vs 1`);
    expectBitIdentical(t, runs[i].ret, runs[0].ret, `returns, ${i + 1} threads vs 1`);
  }
  // And the big case is right, not just repeatable (spot-check some columns against the reference).
  const want = refGae(c);
  expectClose(t, runs[0].adv, want.advantages, tol, 'the [256,4096] result matches the reference');
});

t.test('the fast CPU paths are bit-identical to the scalar reference path', async (t) => {
  const r = rng(5);
  const configs: [string, RandomOpts][] = [
    ['no flags', {}],
    ['terminated', { terminated: 0.05 }],
    ['truncated', { truncated: 0.05 }],
    ['both flags', { terminated: 0.05, truncated: 0.05 }],
    ['per-step gamma', { terminated: 0.05, gamma: 'step' }],
    ['per-element gamma and lambda', { truncated: 0.05, gamma: 'element', lambda: 'element' }],
    ['per-element lambda, per-step gamma', { terminated: 0.05, gamma: 'step', lambda: 'element' }],
    ['cleanrl', { cleanrl: 0.05 }],
  ];
  // N = 4099 is split over threads and leaves a ragged tail; N = 7 runs on one thread.
  for (const [T, N] of [[64, 7], [40, 4099]]) {
    for (const [name, o] of configs) {
      const c = randomCase(r, T, N, o);
      const runs = cpuPaths.map((p) => withCpuPath(p, () => runGae(c)));
      for (let i = 0; i < referencePath; ++i) {
        expectBitIdentical(t, runs[i].adv, runs[referencePath].adv, `${name} [${T},${N}]: ${cpuPaths[i]} vs reference advantages`);
        expectBitIdentical(t, runs[i].ret, runs[referencePath].ret, `${name} [${T},${N}]: ${cpuPaths[i]} vs reference returns`);
      }
    }
  }
});

// ---------------------------------------------------------------------------------------------
// (e) Edge cases.

t.test('T = 1: one step bootstraps from lastValues unless terminated', async (t) => {
  // A = r + gamma*(1-term)*lastValues - V: env 0: 1 + 0.5*4 - 1 = 2; env 1 (terminated): 2 - 1 = 1
  const out = rl.gae({ rewards: ft([1, 2], [1, 2]), values: ft([1, 1], [1, 2]), lastValues: ft([4, 4]), terminated: mt([0, 1], [1, 2]) },
    { gamma: 0.5, lambda: 0.9 });
  t.strictSame([...data(out.advantages)], [2, 1]);
  t.strictSame([...data(out.returns)], [3, 2]);
});

t.test('1-D inputs are one environment ([T] taken as [T,1]), TypedArrays or 1-D tensors', async (t) => {
  const c = randomCase(rng(6), 25, 1, { terminated: 0.2 });
  const ref = refGae(c);
  const viaArrays = rl.gae({ rewards: c.rewards, values: c.values, lastValues: c.lastValues, terminated: c.terminated },
    { gamma: c.gamma, lambda: c.lambda });
  t.strictSame([...viaArrays.advantages.shape], [25], 'output keeps the 1-D shape');
  expectClose(t, data(viaArrays.advantages), ref.advantages, tol, 'plain TypedArrays');
  const viaTensors = rl.gae({ rewards: ft(c.rewards), values: ft(c.values), lastValues: ft(c.lastValues as Float32Array), terminated: mt(c.terminated as Uint8Array) },
    { gamma: c.gamma, lambda: c.lambda });
  expectBitIdentical(t, data(viaTensors.advantages), data(viaArrays.advantages), '1-D tensors give the same');
  const as2d = runGae(c);
  expectBitIdentical(t, as2d.adv, data(viaArrays.advantages), 'same as the [T,1] layout');
});

t.test('every step terminal: A = r - V and no value is bootstrapped', async (t) => {
  const r = rng(8);
  const c = randomCase(r, 9, 4);
  c.terminated = new Uint8Array(36).fill(1);
  const got = runGae(c);
  const want = new Float64Array(36);
  for (let i = 0; i < 36; ++i) want[i] = c.rewards[i] - c.values[i];
  expectClose(t, got.adv, want, { rtol: 1e-6 }, 'advantages are r - V');
  expectClose(t, got.ret, c.rewards, { rtol: 1e-6 }, 'returns are r');
});

t.test('every step truncated: A = r + gamma*V\' - V (one-step TD from nextValues)', async (t) => {
  const c = randomCase(rng(9), 6, 3, { truncated: 1 });
  const got = runGae(c);
  const want = new Float64Array(18);
  const g = c.gamma as number;
  for (let i = 0; i < 18; ++i) want[i] = c.rewards[i] + g * (c.nextValues as Float32Array)[i] - c.values[i];
  expectClose(t, got.adv, want, { rtol: 1e-6 }, 'advantages are one-step TD errors');
});

t.test('empty inputs (T = 0 or N = 0) give empty outputs of the same shape', async (t) => {
  const e0 = rl.gae({ rewards: ft([], [0, 3]), values: ft([], [0, 3]), lastValues: ft([0, 0, 0]) });
  t.strictSame([...e0.advantages.shape], [0, 3]);
  t.equal(e0.advantages.size, 0);
  t.equal(e0.returns.size, 0);
  const e1 = rl.gae({ rewards: ft([], [5, 0]), values: ft([], [5, 0]), lastValues: ft([]), terminated: mt([], [5, 0]) });
  t.strictSame([...e1.returns.shape], [5, 0]);
  const e2 = rl.gae({ rewards: new Float32Array(0), values: new Float32Array(0), lastValues: f32([1]) });
  t.strictSame([...e2.advantages.shape], [0]);
  const e3 = await rl.gaeAsync({ rewards: ft([], [0, 2]), values: ft([], [0, 2]), nextValues: ft([], [0, 2]), truncated: mt([], [0, 2]) });
  t.equal(e3.advantages.size, 0, 'async empty');
});

t.test('NaN in a reward propagates back through its episode and stays out of other envs and later steps', async (t) => {
  const c = randomCase(rng(10), 12, 3, {});
  c.terminated = new Uint8Array(36);
  c.terminated[4 * 3 + 1] = 1;  // env 1's episode ends after step 4
  c.rewards[8 * 3 + 1] = NaN;   // env 1, step 8 (second episode)
  const got = runGae(c);
  for (let tt = 0; tt < 12; ++tt) {
    t.ok(Number.isFinite(got.adv[tt * 3]) && Number.isFinite(got.adv[tt * 3 + 2]), `envs 0 and 2 finite at step ${tt}`);
  }
  for (let tt = 5; tt <= 8; ++tt) t.ok(Number.isNaN(got.adv[tt * 3 + 1]), `env 1 step ${tt} (same episode, not after the NaN) is NaN`);
  for (let tt = 9; tt < 12; ++tt) t.ok(Number.isFinite(got.adv[tt * 3 + 1]), `env 1 step ${tt} (after the NaN) is finite`);
  t.ok(Number.isNaN(got.ret[8 * 3 + 1]), 'the return at the NaN is NaN');
  // Everything, NaN pattern included, as the reference computes it.
  expectClose(t, got.adv, refGae(c).advantages, tol, 'NaN pattern matches the reference');
});

t.test('NaN in lastValues reaches only its own env; NaN in a value at t reaches steps <= t of that env', async (t) => {
  const c = randomCase(rng(11), 5, 2);
  (c.lastValues as Float32Array)[0] = NaN;
  const got = runGae(c);
  for (let tt = 0; tt < 5; ++tt) {
    t.ok(Number.isNaN(got.adv[tt * 2]), `env 0 step ${tt} NaN`);
    t.ok(Number.isFinite(got.adv[tt * 2 + 1]), `env 1 step ${tt} finite`);
  }
  const d = randomCase(rng(12), 5, 1);
  d.values[2] = NaN;
  const got2 = runGae(d);
  t.strictSame([...got2.adv].map(Number.isNaN), [true, true, true, false, false]);
});

t.test('checkFinite: a RangeError naming the op, the argument and the first bad index', async (t) => {
  const c = randomCase(rng(13), 4, 2, { truncated: 0.5 });
  const withBad = (field: 'rewards' | 'values' | 'nextValues' | 'lastValues', index: number, v: number) => {
    const cc = { ...c, [field]: Float32Array.from(c[field] as Float32Array) };
    (cc[field] as Float32Array)[index] = v;
    return tensorsOf(cc);
  };
  expectError(t, () => rl.gae(withBad('rewards', 5, NaN), { checkFinite: true }), RangeError,
    /^gae: `rewards` has a non-finite value at index 5 \(checkFinite\)$/);
  expectError(t, () => rl.gae(withBad('values', 3, Infinity), { checkFinite: true }), RangeError,
    /gae: `values` has a non-finite value at index 3/);
  expectError(t, () => rl.gae(withBad('nextValues', 7, -Infinity), { checkFinite: true }), RangeError,
    /gae: `nextValues` has a non-finite value at index 7/);
  const lv = { ...tensorsOf({ ...c, truncated: undefined, nextValues: undefined }), lastValues: ft([1, NaN]) };
  expectError(t, () => rl.gae(lv, { checkFinite: true }), RangeError, /gae: `lastValues` has a non-finite value at index 1/);
  const ok = rl.gae(withBad('rewards', 5, NaN), { checkFinite: false });
  t.ok(Number.isNaN(data(ok.advantages)[5]), 'without checkFinite the NaN goes through');
  await expectRejection(t, () => rl.gaeAsync(withBad('rewards', 2, NaN), { checkFinite: true }), RangeError,
    /gaeAsync: `rewards` has a non-finite value at index 2/);
});

t.test('out: the given tensors are returned, filled, and refilled by the next call', async (t) => {
  const c = randomCase(rng(14), 10, 3, { terminated: 0.2 });
  const advantages = rl.tensor(new Float32Array(30).fill(-7), [10, 3]);
  const returns = rl.tensor(new Float32Array(30).fill(-7), [10, 3]);
  const res = rl.gae(tensorsOf(c), { gamma: c.gamma, lambda: c.lambda, out: { advantages, returns } });
  t.equal(res.advantages, advantages, 'advantages is the out tensor');
  t.equal(res.returns, returns, 'returns is the out tensor');
  const want = refGae(c);
  expectClose(t, data(advantages), want.advantages, tol, 'out.advantages filled');
  expectClose(t, data(returns), want.returns, tol, 'out.returns filled');
  const c2 = randomCase(rng(15), 10, 3);
  rl.gae(tensorsOf(c2), { gamma: c2.gamma, lambda: c2.lambda, out: { advantages, returns } });
  expectClose(t, data(advantages), refGae(c2).advantages, tol, 'a second call overwrites');
  // Only one of the two given: the other is new.
  const half = rl.gae(tensorsOf(c2), { gamma: c2.gamma, lambda: c2.lambda, out: { returns } });
  t.equal(half.returns, returns);
  t.not(half.advantages, advantages);
  expectError(t, () => rl.gae(tensorsOf(c2), { out: { advantages: ft(new Float32Array(30), [30]) } }), RangeError,
    /gae: `out.advantages` must have shape \[10, 3\] but has \[30\]/);
  expectError(t, () => rl.gae(tensorsOf(c2), { out: { returns: new Float32Array(30) as never } }), TypeError,
    /gae: expected a float32 Tensor for `out.returns`/);
  expectError(t, () => rl.gae(tensorsOf(c2), { out: { returns: mt(new Uint8Array(30), [10, 3]) as never } }), TypeError,
    /gae: expected a float32 Tensor or a Float32Array for `out.returns` but received an? uint8 Tensor$/);
});

// ---------------------------------------------------------------------------------------------
// (f) Bad input: the right class, a message naming the op and the argument, never a crash.

t.test('bad input: wrong kinds and dtypes are TypeErrors naming the argument', async (t) => {
  const c = randomCase(rng(16), 3, 2);
  const good = tensorsOf(c);
  expectError(t, () => rl.gae({ ...good, rewards: [1, 2, 3, 4, 5, 6] as never }), TypeError,
    /^gae: expected a float32 Tensor or a Float32Array for `rewards` but received an Array$/);
  expectError(t, () => rl.gae({ ...good, rewards: new Int32Array(6) as never }), TypeError,
    /gae: expected a float32 Tensor or a Float32Array for `rewards` but received Int32Array/);
  expectError(t, () => rl.gae({ ...good, values: rl.tensor(new Int32Array(6), [3, 2]) as never }), TypeError,
    /gae: expected a float32 Tensor or a Float32Array for `values` but received an? int32 Tensor$/);
  expectError(t, () => rl.gae({ ...good, terminated: ft(new Float32Array(6), [3, 2]) as never }), TypeError,
    /gae: expected a uint8 Tensor or a Uint8Array for `terminated` but received a float32 Tensor$/);
  expectError(t, () => rl.gae({ ...good, lastValues: 3 as never }), TypeError,
    /gae: expected a float32 Tensor or a Float32Array for `lastValues` but received 3/);
  expectError(t, () => rl.gae(null as never), TypeError, /gae: expected an object of tensors for `inputs` but received null/);
  expectError(t, () => rl.gae(good, 5 as never), TypeError, /gae: expected an options object for `options` but received 5/);
  expectError(t, () => rl.gae(good, [] as never), TypeError, /gae: expected an options object for `options` but received an Array/);
  expectError(t, () => rl.gae(good, { gamma: '0.9' as never }), TypeError, /gae: expected a number, a Float32Array or a float32 Tensor for `gamma` but received '0.9'/);
  expectError(t, () => rl.gae(good, { lambda: [0.9, 0.9, 0.9] as never }), TypeError,
    /gae: expected a number, a Float32Array or a float32 Tensor for `lambda` but received an Array/);
  expectError(t, () => rl.gae(good, { checkFinite: 1 as never }), TypeError, /gae: expected a boolean for `checkFinite` but received 1/);
  // `out` must be named as `out`, not as the whole `options` object.
  expectError(t, () => rl.gae(good, { out: 3 as never }), TypeError, /gae: expected an object .*for `out` but received 3/);
});

t.test('bad input: shape and length mismatches are RangeErrors naming the argument', async (t) => {
  const c = randomCase(rng(17), 3, 2);
  const good = tensorsOf(c);
  expectError(t, () => rl.gae({ ...good, values: ft(c.values, [2, 3]) }), RangeError,
    /^gae: `values` must have the shape of `rewards` \[3, 2\] but has \[2, 3\]$/);
  expectError(t, () => rl.gae({ ...good, values: c.values }), RangeError, /gae: `values` must have the shape of `rewards`/);
  expectError(t, () => rl.gae({ ...good, lastValues: ft([1, 2, 3]) }), RangeError,
    /gae: `lastValues` must hold 2 values \(one per environment\) but holds 3 elements/);
  expectError(t, () => rl.gae({ ...good, terminated: mt(new Uint8Array(6), [6, 1]) }), RangeError,
    /gae: `terminated` must have the shape of `rewards`/);
  expectError(t, () => rl.gae({ ...good, nextValues: ft(new Float32Array(4), [2, 2]) }), RangeError,
    /gae: `nextValues` must have the shape of `rewards`/);
  expectError(t, () => rl.gae({ ...good, rewards: ft(c.rewards, [3, 2, 1]) }), RangeError,
    /gae: `rewards` must be 1-D or 2-D but has shape \[3, 2, 1\]/);
  expectError(t, () => rl.gae(good, { gamma: f32([0.9, 0.9]) }), RangeError,
    /gae: `gamma` must be a number or hold 3 \(per step\) or 6 \(per element\) values, but holds 2/);
  expectError(t, () => rl.gae(good, { lambda: f32([0.9, 1.5, 0.9]) }), RangeError,
    /gae: `lambda` must hold values in \[0, 1\] but holds 1.5 at index 1/);
  expectError(t, () => rl.gae(good, { gamma: f32([0.9, NaN, 0.9]) }), RangeError, /gae: `gamma` must hold values in \[0, 1\] but holds NaN/);
});

t.test('bad input: gamma and lambda outside [0, 1] (NaN, Infinity, -0.1, 1.5) are RangeErrors', async (t) => {
  const good = tensorsOf(randomCase(rng(18), 3, 2));
  for (const name of ['gamma', 'lambda'] as const) {
    for (const v of [NaN, Infinity, -Infinity, -0.1, 1.5]) {
      expectError(t, () => rl.gae(good, { [name]: v }), RangeError,
        new RegExp(`^gae: \`${name}\` must be in \\[0, 1\\] but is ${String(v).replace('+', '\\+')}$`), undefined, `${name} = ${v}`);
    }
  }
});

t.test('bad input: missing or conflicting episode information is a RangeError', async (t) => {
  const c = randomCase(rng(19), 3, 2, { truncated: 0.5 });
  const good = tensorsOf(c);
  expectError(t, () => rl.gae({ ...good, nextValues: undefined }), RangeError,
    /gae: `nextValues` is required when `truncated` is given/);
  expectError(t, () => rl.gae({ rewards: good.rewards, values: good.values }), RangeError,
    /gae: `lastValues` is required unless `nextValues` is given/);
  const plain = tensorsOf(randomCase(rng(20), 3, 2));
  expectError(t, () => rl.gae({ ...plain, dones: mt(new Uint8Array(6), [3, 2]), nextDone: mt([0, 0]) }), RangeError,
    /gae: `dones` is CleanRL's convention: pass \{ preset: 'cleanrl' \}/);
  expectError(t, () => rl.gae({ ...plain, nextDone: mt([0, 0]) }), RangeError, /gae: `nextDone` is CleanRL's convention/);
  expectError(t, () => rl.gae(plain, { preset: 'cleanrl' }), RangeError, /gae: `dones` is required with preset 'cleanrl'/);
  expectError(t, () => rl.gae({ ...plain, dones: mt(new Uint8Array(6), [3, 2]) }, { preset: 'cleanrl' }), RangeError,
    /gae: `nextDone` is required with preset 'cleanrl'/);
  expectError(t, () => rl.gae({ ...plain, terminated: mt(new Uint8Array(6), [3, 2]), dones: mt(new Uint8Array(6), [3, 2]), nextDone: mt([0, 0]) },
    { preset: 'cleanrl' }), RangeError, /gae: `terminated` is not used with preset 'cleanrl'/);
  expectError(t, () => rl.gae({ ...plain, dones: mt(new Uint8Array(6), [3, 2]), nextDone: mt([0, 0, 0]) }, { preset: 'cleanrl' }), RangeError,
    /gae: `nextDone` must hold 2 flags/);
  expectError(t, () => rl.gae(plain, { preset: 'trl' as never }), RangeError,
    /gae: `preset` must be one of 'torchrl', 'rlax', 'cleanrl', not 'trl'/);
});

t.test('bad input: a disposed input or output is E_DISPOSED naming it', async (t) => {
  const good = tensorsOf(randomCase(rng(21), 3, 2));
  const values = ft(new Float32Array(6), [3, 2]);
  values.dispose();
  expectError(t, () => rl.gae({ ...good, values }), Error, /^gae: `values` has been disposed$/, 'E_DISPOSED');
  const advantages = ft(new Float32Array(6), [3, 2]);
  advantages.dispose();
  expectError(t, () => rl.gae(good, { out: { advantages } }), Error, /gae: `out.advantages` has been disposed/, 'E_DISPOSED');
  const gamma = ft(f32([0.9, 0.9, 0.9]));
  gamma.dispose();
  expectError(t, () => rl.gae(good, { gamma }), Error, /gae: `gamma` has been disposed/, 'E_DISPOSED');
});

t.test('the native entry point re-checks its arguments and throws instead of crashing', async (t) => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { native } = require('../lib/native') as typeof import('../lib/native');
  const n = native();
  const f = (k: number) => new Float32Array(k);
  expectError(t, () => n.gae(3, 2, f(5), f(6), null, f(2), null, null, null, null, 0.9, 0.9, f(6), f(6), false), RangeError,
    /gae: expected `rewards` to hold 6 elements/);
  expectError(t, () => n.gae(3, 2, f(6), f(6), null, null, null, null, null, null, 0.9, 0.9, f(6), f(6), false), RangeError,
    /gae: `lastValues` is required/);
  expectError(t, () => n.gae(3, 2, f(6), f(6), null, f(2), null, new Uint8Array(6), null, null, 0.9, 0.9, f(6), f(6), false), RangeError,
    /gae: `nextValues` is required when `truncated`/);
  expectError(t, () => n.gae(3, 2, f(6), f(6), null, f(2), null, null, null, null, 2, 0.9, f(6), f(6), false), RangeError,
    /gae: expected `gamma` in \[0, 1\]/);
  expectError(t, () => n.gae(3, 2, f(6), f(6), null, f(2), null, null, null, null, 0.9, f(4), f(6), f(6), false), RangeError,
    /gae: expected `lambda` to be a number or to hold 3 \(per step\) or 6/);
  expectError(t, () => n.gae(3, 2, f(6), new Int32Array(6) as never, null, f(2), null, null, null, null, 0.9, 0.9, f(6), f(6), false), TypeError,
    /gae: expected a Float32Array for `values` but received Int32Array/);
  expectError(t, () => n.gae(-1, 2, f(6), f(6), null, f(2), null, null, null, null, 0.9, 0.9, f(6), f(6), false), RangeError,
    /gae: expected a non-negative integer for `T`/);
  expectError(t, () => n.gae(3, 2, f(6), f(6), null, f(2), null, null, new Uint8Array(6), null, 0.9, 0.9, f(6), f(6), false), RangeError,
    /gae: `dones` and `nextDone` .* go together/);
});

// ---------------------------------------------------------------------------------------------
// (g) Async.

t.test('gaeAsync gives bit-identical results to gae', async (t) => {
  for (const o of [{ terminated: 0.05, truncated: 0.05 }, { cleanrl: 0.05, gamma: 'element' as const }]) {
    const c = randomCase(rng(22), 128, 300, o);
    const sync = runGae(c);
    const res = await rl.gaeAsync(tensorsOf(c), { gamma: c.gamma, lambda: c.lambda, preset: c.preset });
    expectBitIdentical(t, data(res.advantages), sync.adv, `async advantages (${Object.keys(o).join(', ')})`);
    expectBitIdentical(t, data(res.returns), sync.ret, `async returns (${Object.keys(o).join(', ')})`);
  }
});

t.test('concurrent gaeAsync and maskedWhitenAsync calls each give their sync result', async (t) => {
  const cases = [0, 1, 2, 3].map((k) => randomCase(rng(100 + k), 200, 500, { terminated: 0.02, truncated: 0.02 }));
  const sync = cases.map(runGae);
  const whitenSync = cases.map((c) => snapshot(rl.maskedWhiten(c.rewards)));
  const [gaes, whitens] = await Promise.all([
    Promise.all(cases.map((c) => rl.gaeAsync(tensorsOf(c), { gamma: c.gamma, lambda: c.lambda }))),
    Promise.all(cases.map((c) => rl.maskedWhitenAsync(c.rewards))),
  ]);
  for (let k = 0; k < cases.length; ++k) {
    expectBitIdentical(t, data(gaes[k].advantages), sync[k].adv, `case ${k}: concurrent gaeAsync advantages`);
    expectBitIdentical(t, data(gaes[k].returns), sync[k].ret, `case ${k}: concurrent gaeAsync returns`);
    expectBitIdentical(t, data(whitens[k]), whitenSync[k], `case ${k}: concurrent maskedWhitenAsync`);
  }
});

t.test('gaeAsync reports bad input as a rejection naming gaeAsync, never a synchronous throw', async (t) => {
  const good = tensorsOf(randomCase(rng(23), 3, 2));
  let p: unknown;
  t.doesNotThrow(() => { p = rl.gaeAsync({ ...good, rewards: [1] as never }); }, 'no synchronous throw');
  t.ok(p instanceof Promise, 'a Promise is returned');
  await expectRejection(t, () => p as Promise<unknown>, TypeError, /gaeAsync: expected a float32 Tensor or a Float32Array for `rewards`/);
  await expectRejection(t, () => rl.gaeAsync(good, { lambda: 2 }), RangeError, /gaeAsync: `lambda` must be in \[0, 1\]/);
});

t.test('a flag byte of 255 counts as set, like 1', async (t) => {
  // A flag byte of 255 means "terminated" as much as 1 does.
  const a = rl.gae({ rewards: ft([1, 2, 3], [3, 1]), values: ft([0.5, 1, 1.5], [3, 1]), lastValues: ft([2]), terminated: mt(u8([0, 255, 0]), [3, 1]) },
    { gamma: 0.5, lambda: 0.5 });
  t.strictSame([...data(a.advantages)], [1.25, 1, 2.5]);
});
