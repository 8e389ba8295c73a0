// rl.tokenGae: GAE over token sequences [B,T] with the three mask modes (SEMANTICS.md §3).
// Hand-worked cases, random cases against lib/reference, thread and CPU-path bit-identity, edge
// cases, presets, bad input, the Async form and a proof that the event loop turns during it.
import * as v8 from 'node:v8';
import * as vm from 'node:vm';

import t from 'tap';

import * as rl from '../lib/index';
import { MaskModeReference, tokenGaeReference } from '../lib/reference/advantages';
import {
  cpuPaths, referencePath, data, expectBitIdentical, expectClose, expectError, expectRejection, firstMismatch, ft, mt, randomFloats, responseMask,
  rng, Rng, snapshot, withCpuPath, withThreads,
} from './helpers/index';

interface TokenCase {
  B: number;
  T: number;
  rewards: Float32Array;
  values: Float32Array;
  mask?: Uint8Array;
  lastValues?: Float32Array;
}

function tensorsOf(c: TokenCase): rl.TokenGaeInputs {
  return {
    rewards: ft(c.rewards, [c.B, c.T]),
    values: ft(c.values, [c.B, c.T]),
    mask: c.mask && mt(c.mask, [c.B, c.T]),
    lastValues: c.lastValues && ft(c.lastValues, [c.B]),
  };
}

function randomCase(r: Rng, B: number, T: number, holes = 0, withLast = false): TokenCase {
  return {
    B, T,
    rewards: randomFloats(r, B * T, 0.5),
    values: randomFloats(r, B * T, 2),
    mask: responseMask(r, B, T, holes),
    lastValues: withLast ? randomFloats(r, B, 2) : undefined,
  };
}

function run(c: TokenCase, opts: rl.TokenGaeOptions) {
  const out = rl.tokenGae(tensorsOf(c), opts);
  return { adv: snapshot(out.advantages), ret: snapshot(out.returns) };
}

function ref(c: TokenCase, gamma: number, lambda: number, maskMode: MaskModeReference) {
  return tokenGaeReference(c.B, c.T, c, { gamma, lambda, maskMode });
}

const modes: readonly MaskModeReference[] = ['premask', 'skip', 'none'];
const G = Math.fround(0.99);
const L = Math.fround(0.95);
const tol = { rtol: 1e-4 };

// ---------------------------------------------------------------------------------------------
// (a) Worked by hand: B=1, T=4, rewards [1,9,2,3], values [0.5,7,1,2], mask [1,0,1,1],
// gamma 0.5, lambda 1 (exact in float32).

const hand = () => ({ rewards: ft([1, 9, 2, 3], [1, 4]), values: ft([0.5, 7, 1, 2], [1, 4]), mask: mt([1, 0, 1, 1], [1, 4]) });

t.test("hand case: 'skip' carries the advantage and the next value through an interior masked token", async (t) => {
  // GAE over the valid tokens alone: r [1,2,3], v [0.5,1,2], bootstrap 0.
  // t=3: delta = 3 + 0 - 2 = 1                           A = 1,   next value 2
  // t=2: delta = 2 + 0.5*2 - 1 = 2                       A = 2 + 0.5*1 = 2.5,  next value 1
  // t=1: masked: A carried (2.5), next value still 1;    return = 2.5 + 7 (raw value) = 9.5
  // t=0: delta = 1 + 0.5*1 - 0.5 = 1 (V' = 1 from t=2)   A = 1 + 0.5*2.5 = 2.25
  const out = rl.tokenGae(hand(), { gamma: 0.5, lambda: 1, maskMode: 'skip' });
  t.strictSame([...data(out.advantages)], [2.25, 2.5, 2.5, 1]);
  t.strictSame([...data(out.returns)], [2.75, 9.5, 3.5, 3]);
});

t.test("hand case: 'premask' zeroes the masked reward and value first", async (t) => {
  // r' = [1,0,2,3], v' = [0.5,0,1,2]
  // t=3: A = 3 - 2 = 1                                   return 3
  // t=2: delta = 2 + 0.5*2 - 1 = 2,     A = 2.5          return 3.5
  // t=1: delta = 0 + 0.5*1 - 0 = 0.5,   A = 0.5 + 0.5*2.5 = 1.75, return 1.75 + 0
  // t=0: delta = 1 + 0.5*0 - 0.5 = 0.5, A = 0.5 + 0.5*1.75 = 1.375, return 1.875
  const out = rl.tokenGae(hand(), { gamma: 0.5, lambda: 1, maskMode: 'premask' });
  t.strictSame([...data(out.advantages)], [1.375, 1.75, 2.5, 1]);
  t.strictSame([...data(out.returns)], [1.875, 1.75, 3.5, 3]);
});

t.test("hand case: 'none' ignores the mask", async (t) => {
  // t=3: A = 1; t=2: A = 2.5; t=1: delta = 9 + 0.5*1 - 7 = 2.5, A = 2.5 + 0.5*2.5 = 3.75
  // t=0: delta = 1 + 0.5*7 - 0.5 = 4, A = 4 + 0.5*3.75 = 5.875
  const out = rl.tokenGae(hand(), { gamma: 0.5, lambda: 1, maskMode: 'none' });
  t.strictSame([...data(out.advantages)], [5.875, 3.75, 2.5, 1]);
  t.strictSame([...data(out.returns)], [6.375, 10.75, 3.5, 3]);
  const noMask = rl.tokenGae({ rewards: hand().rewards, values: hand().values }, { gamma: 0.5, lambda: 1, maskMode: 'none' });
  t.strictSame([...data(noMask.advantages)], [5.875, 3.75, 2.5, 1], "'none' needs no mask");
});

t.test('hand case: lastValues bootstraps after the last column', async (t) => {
  // r [1,2], v [1,1], lastValues [4], gamma = lambda = 0.5
  // t=1: delta = 2 + 0.5*4 - 1 = 3, A = 3; t=0: delta = 1 + 0.5*1 - 1 = 0.5, A = 0.5 + 0.25*3 = 1.25
  const out = rl.tokenGae({ rewards: ft([1, 2], [1, 2]), values: ft([1, 1], [1, 2]), mask: mt([1, 1], [1, 2]), lastValues: ft([4]) },
    { gamma: 0.5, lambda: 0.5, maskMode: 'premask' });
  t.strictSame([...data(out.advantages)], [1.25, 3]);
  t.strictSame([...data(out.returns)], [2.25, 4]);
});

t.test('hand case: rows are independent (row-major [B,T])', async (t) => {
  // Row 0 is the hand case; row 1: rewards [0,0,0,1], values 0, all valid, gamma 0.5, lambda 1:
  // A = [0.125, 0.25, 0.5, 1].
  const out = rl.tokenGae({
    rewards: ft([1, 9, 2, 3, 0, 0, 0, 1], [2, 4]), values: ft([0.5, 7, 1, 2, 0, 0, 0, 0], [2, 4]),
    mask: mt([1, 0, 1, 1, 1, 1, 1, 1], [2, 4]),
  }, { gamma: 0.5, lambda: 1, maskMode: 'skip' });
  t.strictSame([...data(out.advantages)], [2.25, 2.5, 2.5, 1, 0.125, 0.25, 0.5, 1]);
});

t.test('lib/reference tokenGaeReference reproduces the hand cases in all three modes', async (t) => {
  const c = { rewards: [1, 9, 2, 3], values: [0.5, 7, 1, 2], mask: [1, 0, 1, 1] };
  const skip = tokenGaeReference(1, 4, c, { gamma: 0.5, lambda: 1, maskMode: 'skip' });
  t.strictSame([...skip.advantages], [2.25, 2.5, 2.5, 1]);
  t.strictSame([...skip.returns], [2.75, 9.5, 3.5, 3]);
  const pre = tokenGaeReference(1, 4, c, { gamma: 0.5, lambda: 1, maskMode: 'premask' });
  t.strictSame([...pre.advantages], [1.375, 1.75, 2.5, 1]);
  t.strictSame([...pre.returns], [1.875, 1.75, 3.5, 3]);
  const none = tokenGaeReference(1, 4, c, { gamma: 0.5, lambda: 1, maskMode: 'none' });
  t.strictSame([...none.advantages], [5.875, 3.75, 2.5, 1]);
  const lv = tokenGaeReference(1, 2, { rewards: [1, 2], values: [1, 1], mask: [1, 1], lastValues: [4] }, { gamma: 0.5, lambda: 0.5, maskMode: 'premask' });
  t.strictSame([...lv.advantages], [1.25, 3]);
  t.throws(() => tokenGaeReference(1, 4, { rewards: c.rewards, values: c.values }, { gamma: 1, lambda: 1, maskMode: 'skip' }), RangeError,
    'skip without a mask');
});

// ---------------------------------------------------------------------------------------------
// (b) Random cases against the float64 reference.

t.test('random cases match the float64 reference in every mask mode', async (t) => {
  const r = rng(31);
  const shapes: [number, number, number, boolean][] = [[3, 17, 0, false], [16, 200, 0.1, true], [5, 1000, 0.05, false], [33, 64, 0.3, true]];
  for (const [B, T, holes, withLast] of shapes) {
    const c = randomCase(r, B, T, holes, withLast);
    for (const mode of modes) {
      for (const [g, l] of [[G, L], [1, 1], [Math.fround(0.9), 0]]) {
        const got = run(c, { gamma: g, lambda: l, maskMode: mode });
        const want = ref(c, g, l, mode);
        const name = `${mode} [${B},${T}] holes ${holes}${withLast ? ' lastValues' : ''} gamma ${g} lambda ${l}`;
        expectClose(t, got.adv, want.advantages, tol, `${name} advantages`);
        expectClose(t, got.ret, want.returns, tol, `${name} returns`);
      }
    }
  }
});

t.test("'skip' equals GAE over the valid tokens alone", async (t) => {
  const r = rng(32);
  const c = randomCase(r, 6, 50, 0.3);
  const got = run(c, { gamma: G, lambda: L, maskMode: 'skip' });
  for (let b = 0; b < c.B; ++b) {
    const idx: number[] = [];
    for (let tt = 0; tt < c.T; ++tt) if ((c.mask as Uint8Array)[b * c.T + tt]) idx.push(b * c.T + tt);
    const compact = tokenGaeReference(1, idx.length, {
      rewards: idx.map((i) => c.rewards[i]), values: idx.map((i) => c.values[i]),
    }, { gamma: G, lambda: L, maskMode: 'none' });
    expectClose(t, idx.map((i) => got.adv[i]), compact.advantages, tol, `row ${b}: valid tokens (${idx.length}) match GAE over them alone`);
  }
});

t.test("with trailing padding only, 'premask' and 'skip' agree on advantages (and on returns at valid tokens)", async (t) => {
  const r = rng(33);
  const c = randomCase(r, 8, 40, 0);
  const p = run(c, { gamma: G, lambda: L, maskMode: 'premask' });
  const s = run(c, { gamma: G, lambda: L, maskMode: 'skip' });
  const m = c.mask as Uint8Array;
  // Leading (prompt) padding differs by design: premask bootstraps from a zeroed value there.
  // Compare from the first valid token of each row onwards.
  const pv: number[] = [];
  const sv: number[] = [];
  const pr: number[] = [];
  const sr: number[] = [];
  for (let b = 0; b < c.B; ++b) {
    let first = 0;
    while (first < c.T && !m[b * c.T + first]) ++first;
    for (let tt = first; tt < c.T; ++tt) {
      const i = b * c.T + tt;
      pv.push(p.adv[i]);
      sv.push(s.adv[i]);
      if (m[i]) {
        pr.push(p.ret[i]);
        sr.push(s.ret[i]);
      }
    }
  }
  expectClose(t, pv, sv, { rtol: 1e-6 }, 'advantages agree');
  expectClose(t, pr, sr, { rtol: 1e-6 }, 'returns agree at valid tokens');
});

// ---------------------------------------------------------------------------------------------
// Presets and defaults.

t.test("presets: 'verl' is skip with gamma = lambda = 1, 'trl' is none with lambda 0.95, default is 'openrlhf' (premask)", async (t) => {
  const c = randomCase(rng(34), 4, 30, 0.2, true);
  const cases: [rl.TokenGaeOptions, number, number, MaskModeReference][] = [
    [{ preset: 'verl' }, 1, 1, 'skip'],
    [{ preset: 'trl' }, 1, L, 'none'],
    [{ preset: 'trl-0.9' }, 1, L, 'premask'],
    [{ preset: 'openrlhf' }, 1, L, 'premask'],
    [{}, 1, L, 'premask'],
    [{ preset: 'verl', maskMode: 'premask' }, 1, 1, 'premask'],
    [{ preset: 'trl', gamma: 0.5, lambda: 0.5 }, 0.5, 0.5, 'none'],
  ];
  for (const [opts, g, l, mode] of cases) {
    const got = run(c, opts);
    const want = ref(c, g, l, mode);
    expectClose(t, got.adv, want.advantages, tol, `${JSON.stringify(opts)} = ${mode}, gamma ${g}, lambda ${l}`);
    expectClose(t, got.ret, want.returns, tol, `${JSON.stringify(opts)} returns`);
  }
  // The modes really differ on this input, so the checks above tell them apart.
  t.ok(firstMismatch(ref(c, 1, 1, 'skip').advantages, ref(c, 1, 1, 'premask').advantages, { rtol: 1e-3 }) >= 0, 'skip and premask differ here');
  t.ok(firstMismatch(ref(c, 1, L, 'none').advantages, ref(c, 1, L, 'premask').advantages, { rtol: 1e-3 }) >= 0, 'none and premask differ here');
});

// ---------------------------------------------------------------------------------------------
// (c) Thread counts and (d) CPU paths.

t.test('results are bit-identical for 1 to 4 threads on [512,1024]', async (t) => {
  const c = randomCase(rng(35), 512, 1024, 0.05, true);
  for (const mode of modes) {
    const runs = [1, 2, 3, 4].map((n) => withThreads(n, () => run(c, { gamma: G, lambda: L, maskMode: mode })));
    for (let i = 1; i < 4; ++i) {
      expectBitIdentical(t, runs[i].adv, runs[0].adv, `${mode}: advantages, ${i + 1} threads vs 1`);
      expectBitIdentical(t, runs[i].ret, runs[0].ret, `${mode}: returns, ${i + 1} threads vs 1`);
    }
  }
});

t.test('the fast CPU paths are bit-identical to the scalar reference path', async (t) => {
  const r = rng(36);
  // B = 7 leaves a ragged group of rows; [600,300] is split over threads.
  for (const [B, T] of [[7, 33], [600, 300], [1, 1]]) {
    for (const withLast of [false, true]) {
      const c = randomCase(r, B, T, 0.1, withLast);
      for (const mode of modes) {
        const runs = cpuPaths.map((p) => withCpuPath(p, () => run(c, { gamma: G, lambda: L, maskMode: mode })));
        for (let i = 0; i < referencePath; ++i) {
          const name = `${mode} [${B},${T}]${withLast ? ' lastValues' : ''}: ${cpuPaths[i]} vs reference`;
          expectBitIdentical(t, runs[i].adv, runs[referencePath].adv, `${name} advantages`);
          expectBitIdentical(t, runs[i].ret, runs[referencePath].ret, `${name} returns`);
        }
      }
    }
  }
});

// ---------------------------------------------------------------------------------------------
// (e) Edge cases.

t.test('T = 1 and B = 1', async (t) => {
  // A = r + gamma*lastValue - v = 1 + 0.5*2 - 0.5 = 1.5 (premask, valid)
  const one = rl.tokenGae({ rewards: ft([1], [1, 1]), values: ft([0.5], [1, 1]), mask: mt([1], [1, 1]), lastValues: ft([2]) },
    { gamma: 0.5, lambda: 0.5, maskMode: 'premask' });
  t.strictSame([...data(one.advantages)], [1.5]);
  t.strictSame([...data(one.returns)], [2]);
  // A masked single token: premask sees r = v = 0: A = 0.5*2 = 1, return 1; skip carries 0: A = 0, return = raw v.
  const masked = { rewards: ft([1], [1, 1]), values: ft([0.5], [1, 1]), mask: mt([0], [1, 1]), lastValues: ft([2]) };
  t.strictSame([...data(rl.tokenGae(masked, { gamma: 0.5, lambda: 0.5, maskMode: 'premask' }).advantages)], [1]);
  const skip = rl.tokenGae(masked, { gamma: 0.5, lambda: 0.5, maskMode: 'skip' });
  t.strictSame([...data(skip.advantages)], [0]);
  t.strictSame([...data(skip.returns)], [0.5]);
});

t.test('1-D inputs are one row ([T] taken as [1,T])', async (t) => {
  const c = randomCase(rng(37), 1, 30, 0.2);
  const out = rl.tokenGae({ rewards: c.rewards, values: c.values, mask: c.mask }, { gamma: G, lambda: L, maskMode: 'skip' });
  t.strictSame([...out.advantages.shape], [30]);
  expectBitIdentical(t, data(out.advantages), run(c, { gamma: G, lambda: L, maskMode: 'skip' }).adv, 'same as [1,T]');
  const lv = rl.tokenGae({ rewards: c.rewards, values: c.values, mask: c.mask, lastValues: new Float32Array([3]) }, { maskMode: 'none' });
  expectClose(t, data(lv.advantages), ref({ ...c, lastValues: new Float32Array([3]) }, 1, L, 'none').advantages, tol, 'lastValues [1] for a 1-D input');
});

t.test('all-masked rows: skip gives zero advantages and raw values as returns; premask gives zeros', async (t) => {
  const c = randomCase(rng(38), 3, 10, 0);
  const m = c.mask as Uint8Array;
  m.fill(0, 10, 20);  // row 1 all masked
  const s = run(c, { gamma: G, lambda: L, maskMode: 'skip' });
  const p = run(c, { gamma: G, lambda: L, maskMode: 'premask' });
  t.strictSame([...s.adv.subarray(10, 20)], new Array(10).fill(0), 'skip: advantages 0');
  t.strictSame([...s.ret.subarray(10, 20)], [...c.values.subarray(10, 20)], 'skip: returns = values');
  t.strictSame([...p.adv.subarray(10, 20)], new Array(10).fill(0), 'premask: advantages 0');
  t.strictSame([...p.ret.subarray(10, 20)], new Array(10).fill(0), 'premask: returns 0');
  expectClose(t, s.adv, ref(c, G, L, 'skip').advantages, tol, 'other rows unaffected (skip)');
  // With lastValues the all-masked row still gets nothing under skip (no valid token uses it).
  const withLast = run({ ...c, lastValues: Float32Array.from([1, 5, 1]) }, { gamma: G, lambda: L, maskMode: 'skip' });
  t.strictSame([...withLast.adv.subarray(10, 20)], new Array(10).fill(0), 'skip with lastValues: advantages 0');
});

t.test('empty inputs (B = 0 or T = 0) give empty outputs of the same shape', async (t) => {
  for (const [B, T] of [[0, 5], [4, 0], [0, 0]]) {
    const out = rl.tokenGae({ rewards: ft([], [B, T]), values: ft([], [B, T]), mask: mt([], [B, T]), lastValues: ft(new Float32Array(B)) },
      { maskMode: 'skip' });
    t.strictSame([...out.advantages.shape], [B, T], `[${B},${T}] advantages shape`);
    t.equal(out.returns.size, 0);
  }
  const a = await rl.tokenGaeAsync({ rewards: new Float32Array(0), values: new Float32Array(0), mask: new Uint8Array(0) });
  t.equal(a.advantages.size, 0, 'async 1-D empty');
});

t.test('NaN at a masked position does not leak into premask or skip advantages', async (t) => {
  const c = randomCase(rng(39), 2, 12, 0);
  const m = c.mask as Uint8Array;
  m.fill(1);
  m[5] = 0;
  c.rewards[5] = NaN;
  c.values[5] = NaN;
  const p = run(c, { gamma: G, lambda: L, maskMode: 'premask' });
  t.ok(p.adv.every(Number.isFinite), 'premask: every advantage finite');
  t.ok(p.ret.every(Number.isFinite), 'premask: every return finite (the masked value counts as 0)');
  const s = run(c, { gamma: G, lambda: L, maskMode: 'skip' });
  t.ok(s.adv.every(Number.isFinite), 'skip: every advantage finite');
  t.ok(Number.isNaN(s.ret[5]), 'skip: the return at the masked NaN value is A + NaN');
  t.equal(s.ret.filter(Number.isNaN).length, 1, 'skip: and no other return');
  expectClose(t, s.adv, ref(c, G, L, 'skip').advantages, tol, 'skip matches the reference');
});

t.test('NaN at a valid position reaches that row at and before it, and nothing else', async (t) => {
  const c = randomCase(rng(40), 3, 10, 0);
  (c.mask as Uint8Array).fill(1);
  c.rewards[10 + 6] = NaN;  // row 1, t = 6
  for (const mode of modes) {
    const got = run(c, { gamma: G, lambda: L, maskMode: mode });
    const nan = [...got.adv].map(Number.isNaN);
    const want = new Array(30).fill(false);
    for (let tt = 0; tt <= 6; ++tt) want[10 + tt] = true;
    t.strictSame(nan, want, `${mode}: NaN at row 1, t <= 6 only`);
  }
  const d = randomCase(rng(41), 2, 5, 0);
  (d.mask as Uint8Array).fill(1);
  d.values[2] = NaN;
  t.strictSame([...run(d, { gamma: G, lambda: L, maskMode: 'none' }).adv].map(Number.isNaN),
    [true, true, true, false, false, false, false, false, false, false], "a NaN value reaches t <= its step ('none')");
  // In 'none' the mask is not read, so a NaN under a 0 mask propagates like any other.
  const e = randomCase(rng(42), 1, 4, 0);
  e.mask = Uint8Array.from([1, 1, 0, 1]);
  e.rewards[2] = NaN;
  t.strictSame([...run(e, { maskMode: 'none' }).adv].map(Number.isNaN), [true, true, true, false]);
});

t.test('checkFinite: a RangeError naming the op, the argument and the first bad index', async (t) => {
  const c = randomCase(rng(43), 2, 4, 0, true);
  const bad = (field: 'rewards' | 'values' | 'lastValues', i: number, v: number) => {
    const cc = { ...c, [field]: Float32Array.from(c[field] as Float32Array) };
    (cc[field] as Float32Array)[i] = v;
    return tensorsOf(cc);
  };
  expectError(t, () => rl.tokenGae(bad('rewards', 6, NaN), { checkFinite: true }), RangeError,
    /^tokenGae: `rewards` has a non-finite value at index 6 \(checkFinite\)$/);
  expectError(t, () => rl.tokenGae(bad('values', 0, -Infinity), { checkFinite: true }), RangeError,
    /tokenGae: `values` has a non-finite value at index 0/);
  expectError(t, () => rl.tokenGae(bad('lastValues', 1, NaN), { checkFinite: true }), RangeError,
    /tokenGae: `lastValues` has a non-finite value at index 1/);
  // checkFinite looks at every element, masked or not (the caller asked for finite inputs).
  expectError(t, () => rl.tokenGae(bad('rewards', 7, Infinity), { checkFinite: true, maskMode: 'skip' }), RangeError,
    /tokenGae: `rewards` has a non-finite value at index 7/);
  t.doesNotThrow(() => rl.tokenGae(tensorsOf(c), { checkFinite: true }), 'finite inputs pass');
});

t.test('out: the given tensors are returned and filled', async (t) => {
  const c = randomCase(rng(44), 3, 9, 0.2);
  const advantages = ft(new Float32Array(27).fill(-1), [3, 9]);
  const returns = ft(new Float32Array(27).fill(-1), [3, 9]);
  const res = rl.tokenGae(tensorsOf(c), { gamma: G, lambda: L, maskMode: 'skip', out: { advantages, returns } });
  t.equal(res.advantages, advantages);
  t.equal(res.returns, returns);
  const want = ref(c, G, L, 'skip');
  expectClose(t, data(advantages), want.advantages, tol, 'out.advantages filled');
  expectClose(t, data(returns), want.returns, tol, 'out.returns filled');
  const c2 = randomCase(rng(45), 3, 9, 0.2);
  const res2 = await rl.tokenGaeAsync(tensorsOf(c2), { gamma: G, lambda: L, maskMode: 'premask', out: { advantages, returns } });
  t.equal(res2.advantages, advantages, 'async returns the out tensor too');
  expectClose(t, data(advantages), ref(c2, G, L, 'premask').advantages, tol, 'refilled by the async call');
  expectError(t, () => rl.tokenGae(tensorsOf(c2), { out: { returns: ft(new Float32Array(27), [9, 3]) } }), RangeError,
    /tokenGae: `out.returns` must have shape \[3, 9\] but has \[9, 3\]/);
});

// ---------------------------------------------------------------------------------------------
// (f) Bad input.

t.test('bad input: wrong kinds and dtypes are TypeErrors naming the argument', async (t) => {
  const good = tensorsOf(randomCase(rng(46), 2, 3));
  expectError(t, () => rl.tokenGae({ ...good, rewards: [1, 2, 3, 4, 5, 6] as never }), TypeError,
    /^tokenGae: expected a float32 Tensor or a Float32Array for `rewards` but received an Array$/);
  expectError(t, () => rl.tokenGae({ ...good, rewards: new Int32Array(6) as never }), TypeError,
    /tokenGae: expected a float32 Tensor or a Float32Array for `rewards` but received Int32Array/);
  expectError(t, () => rl.tokenGae({ ...good, mask: ft(new Float32Array(6), [2, 3]) as never }), TypeError,
    /^tokenGae: expected a uint8 Tensor or a Uint8Array for `mask` but received a float32 Tensor$/);
  expectError(t, () => rl.tokenGae({ ...good, mask: new Float32Array(6) as never }), TypeError,
    /tokenGae: expected a uint8 Tensor or a Uint8Array for `mask` but received Float32Array/);
  expectError(t, () => rl.tokenGae({ ...good, values: 'v' as never }), TypeError, /tokenGae: .* for `values` but received 'v'/);
  expectError(t, () => rl.tokenGae(undefined as never), TypeError, /tokenGae: expected an object of tensors for `inputs`/);
  expectError(t, () => rl.tokenGae(good, 'skip' as never), TypeError, /tokenGae: expected an options object for `options` but received 'skip'/);
  expectError(t, () => rl.tokenGae(good, { gamma: new Float32Array(3) as never }), TypeError,
    /tokenGae: expected a number in \[0, 1\] for `gamma` but received Float32Array/);
  expectError(t, () => rl.tokenGae(good, { checkFinite: 'yes' as never }), TypeError, /tokenGae: expected a boolean for `checkFinite`/);
});

t.test('bad input: shapes, lengths and values are RangeErrors naming the argument', async (t) => {
  const c = randomCase(rng(47), 2, 3);
  const good = tensorsOf(c);
  expectError(t, () => rl.tokenGae({ ...good, values: ft(c.values, [3, 2]) }), RangeError,
    /^tokenGae: `values` must have the shape of `rewards` \[2, 3\] but has \[3, 2\]$/);
  expectError(t, () => rl.tokenGae({ ...good, mask: mt(c.mask as Uint8Array, [6]) }), RangeError,
    /tokenGae: `mask` must have the shape of `rewards`/);
  expectError(t, () => rl.tokenGae({ ...good, lastValues: ft([1, 2, 3]) }), RangeError,
    /tokenGae: `lastValues` must hold 2 values \(one per row\) but holds 3 elements/);
  expectError(t, () => rl.tokenGae({ ...good, mask: undefined }, { maskMode: 'premask' }), RangeError,
    /tokenGae: `mask` is required with maskMode 'premask'/);
  expectError(t, () => rl.tokenGae({ ...good, mask: undefined }, { preset: 'verl' }), RangeError,
    /tokenGae: `mask` is required with maskMode 'skip'/);
  expectError(t, () => rl.tokenGae(good, { maskMode: 'mask' as never }), RangeError,
    /^tokenGae: `maskMode` must be one of 'premask', 'skip', 'none', not 'mask'$/);
  expectError(t, () => rl.tokenGae(good, { preset: 'cleanrl' as never }), RangeError,
    /tokenGae: `preset` must be one of 'trl', 'trl-0.9', 'openrlhf', 'verl', not 'cleanrl'/);
  for (const name of ['gamma', 'lambda'] as const) {
    for (const v of [NaN, Infinity, -0.1, 1.5]) {
      expectError(t, () => rl.tokenGae(good, { [name]: v }), RangeError,
        new RegExp(`^tokenGae: \`${name}\` must be in \\[0, 1\\] but is ${v}$`), undefined, `${name} = ${v}`);
    }
  }
});

t.test('bad input: a disposed tensor is E_DISPOSED naming it', async (t) => {
  const good = tensorsOf(randomCase(rng(48), 2, 3));
  const mask = mt(new Uint8Array(6), [2, 3]);
  mask.dispose();
  expectError(t, () => rl.tokenGae({ ...good, mask }), Error, /^tokenGae: `mask` has been disposed$/, 'E_DISPOSED');
  await expectRejection(t, () => rl.tokenGaeAsync({ ...good, mask }), Error, /tokenGaeAsync: `mask` has been disposed/, 'E_DISPOSED');
});

t.test('the native entry point re-checks its arguments and throws instead of crashing', async (t) => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { native } = require('../lib/native') as typeof import('../lib/native');
  const n = native();
  const f = (k: number) => new Float32Array(k);
  const m = new Uint8Array(6);
  expectError(t, () => n.tokenGae(2, 3, f(6), f(6), m, null, 1, 1, 3, f(6), f(6), false), RangeError, /tokenGae: unknown `maskMode` 3/);
  expectError(t, () => n.tokenGae(2, 3, f(6), f(6), null, null, 1, 1, 1, f(6), f(6), false), RangeError,
    /tokenGae: `mask` is required unless maskMode is 'none'/);
  expectError(t, () => n.tokenGae(2, 3, f(6), f(6), new Uint8Array(5), null, 1, 1, 0, f(6), f(6), false), RangeError,
    /tokenGae: expected `mask` to hold 6 elements/);
  expectError(t, () => n.tokenGae(2, 3, f(6), f(6), m, f(3), 1, 1, 0, f(6), f(6), false), RangeError,
    /tokenGae: expected `lastValues` to hold 2 elements/);
  expectError(t, () => n.tokenGae(2, 3, f(6), f(6), m, null, 1, NaN, 0, f(6), f(6), false), RangeError,
    /tokenGae: expected `lambda` in \[0, 1\]/);
  expectError(t, () => n.tokenGae(2, 3, f(6), f(6), m, null, 1, 1, 0, f(5), f(6), false), RangeError,
    /tokenGae: expected `advantages` to hold 6 elements/);
  expectError(t, () => n.tokenGae(2, 3, f(6), f(6), m, null, 1, 1, 0, f(6), f(6), 'no' as never), TypeError,
    /tokenGae: expected a boolean for `async`/);
});

// ---------------------------------------------------------------------------------------------
// (g) Async.

t.test('tokenGaeAsync gives bit-identical results to tokenGae in every mode', async (t) => {
  const c = randomCase(rng(49), 64, 500, 0.1, true);
  for (const mode of modes) {
    const sync = run(c, { gamma: G, lambda: L, maskMode: mode });
    const res = await rl.tokenGaeAsync(tensorsOf(c), { gamma: G, lambda: L, maskMode: mode });
    expectBitIdentical(t, data(res.advantages), sync.adv, `${mode}: async advantages`);
    expectBitIdentical(t, data(res.returns), sync.ret, `${mode}: async returns`);
  }
});

t.test('tokenGaeAsync reports bad input as a rejection naming tokenGaeAsync', async (t) => {
  const good = tensorsOf(randomCase(rng(50), 2, 3));
  let p: unknown;
  t.doesNotThrow(() => { p = rl.tokenGaeAsync(good, { maskMode: 'x' as never }); }, 'no synchronous throw');
  await expectRejection(t, () => p as Promise<unknown>, RangeError, /tokenGaeAsync: `maskMode` must be one of/);
});

// Cheap deterministic data for the big case (a random generator would dominate the test's time).
function bigRow(b: number, T: number, rewards: Float32Array, values: Float32Array, mask: Uint8Array, off: number): void {
  const end = T - (b % 97);
  for (let tt = 0; tt < T; ++tt) {
    rewards[off + tt] = ((b * 31 + tt * 17) % 101) / 100 - 0.5;
    values[off + tt] = ((b * 7 + tt * 13) % 89) / 44 - 1;
    mask[off + tt] = tt < end && (tt + b) % 53 !== 0 ? 1 : 0;
  }
}

function exposeGc(): (() => void) | null {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return g;
  try {
    v8.setFlagsFromString('--expose-gc');
    return vm.runInNewContext('gc') as () => void;
  } catch {
    return null;
  }
}

t.test('the event loop keeps turning during a long tokenGaeAsync, and the caller may drop its inputs', async (t) => {
  const B = 8192;
  const T = 4096;
  const before = rl.getNumThreads();
  rl.setNumThreads(1);
  t.teardown(() => rl.setNumThreads(before));
  const gc = exposeGc();

  const make = () => {
    const rewards = new Float32Array(B * T);
    const values = new Float32Array(B * T);
    const mask = new Uint8Array(B * T);
    for (let b = 0; b < B; ++b) bigRow(b, T, rewards, values, mask, b * T);
    return { rewards: ft(rewards, [B, T]), values: ft(values, [B, T]), mask: mt(mask, [B, T]) };
  };
  let ticks = 0;
  let settled = false;
  // Inputs are created inline: nothing in this scope holds them while the op runs.
  const started = Date.now();
  const p = rl.tokenGaeAsync(make(), { gamma: G, lambda: L, maskMode: 'skip' }).finally(() => { settled = true; });
  await new Promise<void>((resolve) => {
    const tick = () => {
      if (settled) return resolve();
      ++ticks;
      if (gc !== null && ticks % 50 === 1) gc();
      setImmediate(tick);
    };
    setImmediate(tick);
  });
  const res = await p;
  const ms = Date.now() - started;
  t.ok(ticks > 0, `${ticks} event-loop ticks ran while tokenGaeAsync worked for ${ms} ms (gc ${gc ? 'forced' : 'not available'})`);
  t.strictSame([...res.advantages.shape], [B, T]);
  // Rows regenerated from the same formula: the result is right although the inputs were dropped.
  const adv = data(res.advantages);
  const ret = data(res.returns);
  for (const b of [0, 1, 96, 4095, B - 1]) {
    const r = new Float32Array(T);
    const v = new Float32Array(T);
    const m = new Uint8Array(T);
    bigRow(b, T, r, v, m, 0);
    const want = tokenGaeReference(1, T, { rewards: r, values: v, mask: m }, { gamma: G, lambda: L, maskMode: 'skip' });
    expectClose(t, adv.subarray(b * T, (b + 1) * T), want.advantages, tol, `row ${b} advantages`);
    expectClose(t, ret.subarray(b * T, (b + 1) * T), want.returns, tol, `row ${b} returns`);
  }
});
