// rl.discountedReturns: REINFORCE returns, the reverse discounted cumsum of masked rewards per
// row (SEMANTICS.md §3). Hand cases, reference, threads, CPU paths, edges, bad input, Async.
import t from 'tap';

import * as rl from '../lib/index';
import { discountedReturnsReference } from '../lib/reference/advantages';
import {
  cpuPaths, referencePath, data, expectBitIdentical, expectClose, expectError, expectRejection, ft, mt, randomFloats, responseMask,
  rng, snapshot, withCpuPath, withThreads,
} from './helpers/index';

const tol = { rtol: 1e-4 };

function randomCase(seed: number, B: number, T: number, holes = 0) {
  const r = rng(seed);
  return { B, T, rewards: randomFloats(r, B * T), mask: responseMask(r, B, T, holes) };
}

type Case = ReturnType<typeof randomCase>;

function run(c: Case, gamma: number, withMask = true): Float32Array {
  return snapshot(rl.discountedReturns({ rewards: ft(c.rewards, [c.B, c.T]), mask: withMask ? mt(c.mask, [c.B, c.T]) : undefined }, { gamma }));
}

t.test('hand case: masked rewards count as 0, gamma 0.5', async (t) => {
  // rewards [1,2,3,4], mask [1,1,0,1]: G3 = 4, G2 = 0 + 0.5*4 = 2, G1 = 2 + 0.5*2 = 3, G0 = 1 + 0.5*3 = 2.5
  const out = rl.discountedReturns({ rewards: ft([1, 2, 3, 4], [1, 4]), mask: mt([1, 1, 0, 1], [1, 4]) }, { gamma: 0.5 });
  t.strictSame([...data(out)], [2.5, 3, 2, 4]);
  t.strictSame([...out.shape], [1, 4]);
});

t.test('hand case: default gamma is 1 (reward-to-go) and the mask is optional', async (t) => {
  const out = rl.discountedReturns({ rewards: ft([1, 2, 3, 4, 1, 1, 1, 1], [2, 4]) });
  t.strictSame([...data(out)], [10, 9, 7, 4, 4, 3, 2, 1]);
  const masked = rl.discountedReturns({ rewards: ft([1, 2, 3, 4], [1, 4]), mask: mt([1, 1, 0, 1], [1, 4]) });
  t.strictSame([...data(masked)], [7, 6, 4, 4]);
});

t.test('hand case: gamma 0 gives the masked rewards themselves', async (t) => {
  const out = rl.discountedReturns({ rewards: ft([1, 2, 3], [3]), mask: mt([1, 0, 1]) }, { gamma: 0 });
  t.strictSame([...data(out)], [1, 0, 3]);
});

t.test('lib/reference discountedReturnsReference reproduces the hand cases', async (t) => {
  t.strictSame([...discountedReturnsReference(1, 4, { rewards: [1, 2, 3, 4], mask: [1, 1, 0, 1] }, { gamma: 0.5 })], [2.5, 3, 2, 4]);
  t.strictSame([...discountedReturnsReference(2, 4, { rewards: [1, 2, 3, 4, 1, 1, 1, 1] }, { gamma: 1 })], [10, 9, 7, 4, 4, 3, 2, 1]);
});

t.test('random cases match the float64 reference', async (t) => {
  for (const [B, T, holes] of [[4, 50, 0], [17, 300, 0.1], [3, 1000, 0.02], [64, 7, 0.5]]) {
    const c = randomCase(B * 1000 + T, B, T, holes);
    for (const gamma of [1, Math.fround(0.99), Math.fround(0.5)]) {
      expectClose(t, run(c, gamma), discountedReturnsReference(B, T, c, { gamma }), tol, `[${B},${T}] gamma ${gamma} masked`);
      expectClose(t, run(c, gamma, false), discountedReturnsReference(B, T, { rewards: c.rewards }, { gamma }), tol,
        `[${B},${T}] gamma ${gamma} no mask`);
    }
  }
});

t.test('results are bit-identical for 1 to 4 threads on [512,1024]', async (t) => {
  const c = randomCase(51, 512, 1024, 0.05);
  for (const withMask of [true, false]) {
    const runs = [1, 2, 3, 4].map((n) => withThreads(n, () => run(c, Math.fround(0.99), withMask)));
    for (let i = 1; i < 4; ++i) expectBitIdentical(t, runs[i], runs[0], `${withMask ? 'masked' : 'no mask'}: ${i + 1} threads vs 1`);
  }
});

t.test('the fast CPU paths are bit-identical to the scalar reference path', async (t) => {
  for (const [B, T] of [[7, 33], [600, 300]]) {
    const c = randomCase(B + T, B, T, 0.1);
    for (const withMask of [true, false]) {
      const runs = cpuPaths.map((p) => withCpuPath(p, () => run(c, Math.fround(0.97), withMask)));
      for (let i = 0; i < referencePath; ++i)
        expectBitIdentical(t, runs[i], runs[referencePath], `[${B},${T}] ${withMask ? 'masked' : 'no mask'}: ${cpuPaths[i]} vs reference`);
    }
  }
});

t.test('edge cases: T = 1, 1-D input, empty inputs, all-masked rows', async (t) => {
  t.strictSame([...data(rl.discountedReturns({ rewards: ft([2, -3], [2, 1]) }, { gamma: 0.5 }))], [2, -3], 'T = 1');
  const oneD = rl.discountedReturns({ rewards: Float32Array.from([1, 1, 1]) }, { gamma: 0.5 });
  t.strictSame([...oneD.shape], [3], '1-D keeps its shape');
  t.strictSame([...data(oneD)], [1.75, 1.5, 1], '1-D is one row');
  for (const [B, T] of [[0, 4], [3, 0]]) {
    const e = rl.discountedReturns({ rewards: ft([], [B, T]), mask: mt([], [B, T]) });
    t.strictSame([...e.shape], [B, T], `[${B},${T}] is empty`);
  }
  const all = rl.discountedReturns({ rewards: ft([5, 6, 7, 8], [2, 2]), mask: mt([0, 0, 1, 1], [2, 2]) });
  t.strictSame([...data(all)], [0, 0, 15, 8], 'an all-masked row returns zeros');
});

t.test('NaN: a valid NaN reaches its row at and before it; a masked NaN reaches nothing', async (t) => {
  const rewards = ft([1, NaN, 1, 1, 1, 1, 1, 1], [2, 4]);
  const valid = rl.discountedReturns({ rewards, mask: mt([1, 1, 1, 1, 1, 1, 1, 1], [2, 4]) }, { gamma: 0.9 });
  t.strictSame([...data(valid)].map(Number.isNaN), [true, true, false, false, false, false, false, false]);
  const masked = rl.discountedReturns({ rewards, mask: mt([1, 0, 1, 1, 1, 1, 1, 1], [2, 4]) }, { gamma: 0.5 });
  t.strictSame([...data(masked)], [1.375, 0.75, 1.5, 1, 1.875, 1.75, 1.5, 1]);
});

t.test('checkFinite names `rewards` and the first bad index, masked or not', async (t) => {
  expectError(t, () => rl.discountedReturns({ rewards: ft([1, 2, Infinity, NaN], [2, 2]), mask: mt([1, 1, 0, 0], [2, 2]) }, { checkFinite: true }),
    RangeError, /^discountedReturns: `rewards` has a non-finite value at index 2 \(checkFinite\)$/);
});

t.test('out: the given tensor is returned and filled', async (t) => {
  const c = randomCase(52, 3, 8, 0.2);
  const out = ft(new Float32Array(24).fill(9), [3, 8]);
  const res = rl.discountedReturns({ rewards: ft(c.rewards, [3, 8]), mask: mt(c.mask, [3, 8]) }, { gamma: 0.5, out });
  t.equal(res, out);
  expectClose(t, data(out), discountedReturnsReference(3, 8, c, { gamma: 0.5 }), tol, 'filled');
  expectError(t, () => rl.discountedReturns({ rewards: ft(c.rewards, [3, 8]) }, { out: ft(new Float32Array(24), [24]) }), RangeError,
    /discountedReturns: `out` must have shape \[3, 8\] but has \[24\]/);
});

t.test('bad input: the right class and a message naming op and argument', async (t) => {
  const rewards = ft(new Float32Array(6), [2, 3]);
  expectError(t, () => rl.discountedReturns({ rewards: [1, 2] as never }), TypeError,
    /^discountedReturns: expected a float32 Tensor or a Float32Array for `rewards` but received an Array$/);
  expectError(t, () => rl.discountedReturns({ rewards: new Int32Array(3) as never }), TypeError, /discountedReturns: .*`rewards` but received Int32Array/);
  expectError(t, () => rl.discountedReturns({ rewards, mask: new Float32Array(6) as never }), TypeError,
    /discountedReturns: expected a uint8 Tensor or a Uint8Array for `mask` but received Float32Array/);
  expectError(t, () => rl.discountedReturns({ rewards, mask: mt(new Uint8Array(6), [3, 2]) }), RangeError,
    /discountedReturns: `mask` must have the shape of `rewards` \[2, 3\] but has \[3, 2\]/);
  for (const gamma of [NaN, Infinity, -0.1, 1.5])
    expectError(t, () => rl.discountedReturns({ rewards }, { gamma }), RangeError,
      new RegExp(`^discountedReturns: \`gamma\` must be in \\[0, 1\\] but is ${gamma}$`), undefined, `gamma = ${gamma}`);
  expectError(t, () => rl.discountedReturns({ rewards }, { gamma: '1' as never }), TypeError, /discountedReturns: .*`gamma` but received '1'/);
  expectError(t, () => rl.discountedReturns({ rewards }, 1 as never), TypeError, /discountedReturns: expected an options object for `options`/);
  expectError(t, () => rl.discountedReturns(null as never), TypeError, /discountedReturns: expected an object of tensors for `inputs`/);
  const gone = ft(new Float32Array(6), [2, 3]);
  gone.dispose();
  expectError(t, () => rl.discountedReturns({ rewards: gone }), Error, /^discountedReturns: `rewards` has been disposed$/, 'E_DISPOSED');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { native } = require('../lib/native') as typeof import('../lib/native');
  expectError(t, () => native().discountedReturns(2, 3, new Float32Array(6), null, 1, new Float32Array(5), false), RangeError,
    /discountedReturns: expected `returns` to hold 6 elements/, undefined, 'native re-check of the output length');
});

t.test('discountedReturnsAsync matches the sync form and rejects bad input', async (t) => {
  const c = randomCase(53, 256, 500, 0.1);
  const sync = run(c, Math.fround(0.99));
  const res = await rl.discountedReturnsAsync({ rewards: ft(c.rewards, [c.B, c.T]), mask: mt(c.mask, [c.B, c.T]) }, { gamma: Math.fround(0.99) });
  expectBitIdentical(t, data(res), sync, 'async result');
  await expectRejection(t, () => rl.discountedReturnsAsync({ rewards: ft(c.rewards, [c.B, c.T]) }, { gamma: 2 }), RangeError,
    /discountedReturnsAsync: `gamma` must be in \[0, 1\]/);
});
