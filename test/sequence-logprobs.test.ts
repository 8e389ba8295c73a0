// rl.sequenceLogprobs and rl.sequenceLogprobsBackward (SEMANTICS.md §8): hand cases (masked sum
// and masked mean, empty rows), random cases against lib/reference/preference.ts, the backward
// as the exact vector-Jacobian product (finite differences in float64 on the reference and in
// float32 on the op), the chain token log-probs -> sequence log-probs -> DPO loss, edge cases
// (B = 0, T = 0, NaN under and outside the mask, -inf), bad input, thread-count bit-identity
// and the Async forms.
import t from 'tap';

import * as rl from '../lib/index';
import {
  dpoLossReference, sequenceLogprobsBackwardReference, sequenceLogprobsReference,
} from '../lib/reference/preference';
import {
  expectBitIdentical, expectClose, expectError, f32, ft, mt, randomFloats, responseMask, rng, snapshot, withThreads,
} from './helpers/index';
import { expectAsyncRejection, expectCloseScaled, finiteDifferences, finiteDifferencesF32 } from './helpers/policy';
import { dot } from './helpers/preference';

interface Case {
  B: number;
  T: number;
  lp: Float32Array;
  m: Uint8Array;
}

function fwd(c: Case, average?: boolean) {
  const out = rl.sequenceLogprobs(ft(c.lp, [c.B, c.T]), mt(c.m, [c.B, c.T]), average === undefined ? undefined : { average });
  return { values: snapshot(out), shape: [...out.shape] };
}

function bwd(c: Case, g: Float32Array, average?: boolean) {
  const out = rl.sequenceLogprobsBackward({ gradSequence: ft(g, [c.B]), mask: mt(c.m, [c.B, c.T]) }, average === undefined ? undefined : { average });
  return { values: snapshot(out), shape: [...out.shape] };
}

function randomCase(seed: number, B: number, T: number): Case {
  const r = rng(seed);
  const lp = randomFloats(r, B * T, 1.5, -2.5);
  const m = responseMask(r, B, T, 0.1);
  if (B > 3) m.fill(0, 3 * T, 4 * T); // one empty row
  return { B, T, lp, m };
}

// ---------------------------------------------------------------------------------------------
// (a) Hand cases.

const hand: Case = {
  B: 3, T: 3,
  lp: f32([-1, -2, -3, -0.5, -0.25, -4, -7, -8, -9]),
  m: Uint8Array.from([1, 1, 0, 0, 1, 1, 0, 0, 0]),
};

t.test('hand case: masked sum (default) and masked mean; an empty row gives 0', async (t) => {
  const sum = fwd(hand);
  t.strictSame([...sum.values], [-3, -4.25, 0], 'sum');
  t.strictSame(sum.shape, [3], 'shape [B]');
  t.strictSame([...fwd(hand, false).values], [-3, -4.25, 0], 'average false = sum');
  t.strictSame([...fwd(hand, true).values], [-1.5, -2.125, 0], 'average true: mean over valid tokens');
  t.strictSame([...sequenceLogprobsReference(3, 3, hand.lp, hand.m)], [-3, -4.25, 0], 'reference sum');
  t.strictSame([...sequenceLogprobsReference(3, 3, hand.lp, hand.m, { average: true })], [-1.5, -2.125, 0], 'reference mean');
});

t.test('hand case: the backward spreads g_b over the valid tokens (divided by n_b for the mean)', async (t) => {
  const g = f32([2, -1, 5]);
  const sum = bwd(hand, g);
  t.strictSame([...sum.values], [2, 2, 0, 0, -1, -1, 0, 0, 0], 'sum: m * g');
  t.strictSame(sum.shape, [3, 3], 'shape [B,T]');
  t.strictSame([...bwd(hand, g, true).values], [1, 1, 0, 0, -0.5, -0.5, 0, 0, 0], 'mean: m * g / n_b; the empty row 0');
  t.strictSame([...sequenceLogprobsBackwardReference(3, 3, g, hand.m, { average: true })], [1, 1, 0, 0, -0.5, -0.5, 0, 0, 0], 'reference');
});

// ---------------------------------------------------------------------------------------------
// (b) Random cases against the reference.

t.test('random cases against the reference, sum and mean', async (t) => {
  for (const [B, T] of [[16, 300], [5, 1], [1, 4097], [33, 64]]) {
    const c = randomCase(B * 7 + T, B, T);
    const g = randomFloats(rng(B + T), B);
    for (const average of [false, true]) {
      const name = `[${B},${T}] average ${average}`;
      expectClose(t, fwd(c, average).values, sequenceLogprobsReference(B, T, c.lp, c.m, { average }), { rtol: 1e-5, atol: 1e-5 }, `${name}: forward`);
      expectClose(t, bwd(c, g, average).values, sequenceLogprobsBackwardReference(B, T, g, c.m, { average }), { rtol: 1e-6, atol: 0 }, `${name}: backward`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// (c) The backward is the vector-Jacobian product of the forward.

t.test('finite differences (float64): the reference backward is d <g, seq(lp)> / d lp', async (t) => {
  const c = randomCase(3, 4, 6);
  const g = randomFloats(rng(4), 4);
  for (const average of [false, true]) {
    const f = (lp: Float64Array) => dot(g, sequenceLogprobsReference(4, 6, lp, c.m, { average }));
    expectClose(t, sequenceLogprobsBackwardReference(4, 6, g, c.m, { average }), finiteDifferences(f, c.lp), { rtol: 1e-6, atol: 1e-9 },
      `average ${average}`);
  }
});

t.test("finite differences (float32): the op's backward is the gradient of the op's forward", async (t) => {
  const c = randomCase(5, 4, 6);
  const g = randomFloats(rng(6), 4);
  const idx = [...Array(24).keys()];
  for (const average of [false, true]) {
    const f = (lp: Float32Array) => dot(g, fwd({ ...c, lp }, average).values);
    const fd = finiteDifferencesF32(f, c.lp, 1e-2, idx);
    expectClose(t, bwd(c, g, average).values, fd, { rtol: 1e-3, atol: 1e-4 }, `average ${average}`);
  }
});

t.test('the chain token log-probs -> sequence log-probs -> dpoLoss gives the gradient with respect to the token log-probs', async (t) => {
  // Chosen and rejected token log-probs [N,T]; the references fixed. d loss / d tokenLp = backward(gradChosen).
  const N = 3;
  const T = 5;
  const r = rng(9);
  const chosen: Case = { B: N, T, lp: randomFloats(r, N * T, 1, -2), m: responseMask(r, N, T) };
  const rejected: Case = { B: N, T, lp: randomFloats(r, N * T, 1, -2), m: responseMask(r, N, T) };
  chosen.m[0] = 1; // no empty rows
  for (let b = 0; b < N; ++b) rejected.m[b * T + 1] = 1;
  const refC = randomFloats(r, N, 1, -5);
  const refR = randomFloats(r, N, 1, -5);
  for (const average of [false, true]) {
    const seqC = rl.sequenceLogprobs(ft(chosen.lp, [N, T]), mt(chosen.m, [N, T]), { average });
    const seqR = rl.sequenceLogprobs(ft(rejected.lp, [N, T]), mt(rejected.m, [N, T]), { average });
    const out = rl.dpoLoss({ policyChosen: seqC, policyRejected: seqR, refChosen: ft(refC), refRejected: ft(refR) }, { beta: 0.5 });
    const gTok = rl.sequenceLogprobsBackward({ gradSequence: out.gradChosen, mask: mt(chosen.m, [N, T]) }, { average });
    // float64 chain on the references
    const loss = (lp: ArrayLike<number>) => dpoLossReference({
      policyChosen: sequenceLogprobsReference(N, T, lp, chosen.m, { average }), policyRejected: sequenceLogprobsReference(N, T, rejected.lp, rejected.m, { average }),
      refChosen: refC, refRejected: refR }, { beta: 0.5 }).loss;
    expectCloseScaled(t, snapshot(gTok), finiteDifferences(loss, chosen.lp), 1e-5, `average ${average}: chained gradient vs central differences`);
  }
});

// ---------------------------------------------------------------------------------------------
// (d) Edge cases.

t.test('B = 0 and T = 0', async (t) => {
  for (const average of [false, true]) {
    const e = rl.sequenceLogprobs(ft([], [0, 5]), mt([], [0, 5]), { average });
    t.strictSame([...e.shape], [0], `[0,5] average ${average}: forward [0]`);
    const eb = rl.sequenceLogprobsBackward({ gradSequence: ft([], [0]), mask: mt([], [0, 5]) }, { average });
    t.strictSame([...eb.shape], [0, 5], `[0,5] average ${average}: backward [0,5]`);
    const z = rl.sequenceLogprobs(ft([], [3, 0]), mt([], [3, 0]), { average });
    t.strictSame([...z.shape], [3], `[3,0] average ${average}: forward [3]`);
    t.strictSame([...snapshot(z)], [0, 0, 0], `[3,0] average ${average}: zeros (empty rows)`);
    const zb = rl.sequenceLogprobsBackward({ gradSequence: ft([1, 2, 3]), mask: mt([], [3, 0]) }, { average });
    t.strictSame([...zb.shape], [3, 0], `[3,0] average ${average}: backward [3,0]`);
  }
});

t.test('NaN: a masked NaN does not leak; a valid NaN reaches its row only; -inf sums to -inf', async (t) => {
  const c = { ...hand, lp: Float32Array.from(hand.lp) };
  c.lp[2] = NaN; // masked
  c.lp[6] = NaN; // row 2 is all masked
  for (const average of [false, true]) {
    t.strictSame([...fwd(c, average).values], average ? [-1.5, -2.125, 0] : [-3, -4.25, 0], `average ${average}: masked NaNs leave the result alone`);
  }
  c.lp[4] = NaN; // valid, row 1
  for (const average of [false, true]) {
    const v = fwd(c, average).values;
    t.ok(Number.isNaN(v[1]) && v[0] === (average ? -1.5 : -3) && v[2] === 0, `average ${average}: valid NaN reaches row 1 only`);
  }
  const g = f32([1, NaN, 1]);
  const b = bwd(hand, g).values;
  t.ok(Number.isNaN(b[4]) && Number.isNaN(b[5]), 'backward: a NaN gradient reaches its row\'s valid tokens');
  t.ok(b[3] === 0 && b[0] === 1, 'backward: masked tokens stay 0, other rows untouched');
  const inf = { ...hand, lp: Float32Array.from(hand.lp) };
  inf.lp[0] = -Infinity;
  t.equal(fwd(inf).values[0], -Infinity, '-inf log-prob: row sum -inf');
  t.equal(fwd(inf, true).values[0], -Infinity, '-inf log-prob: row mean -inf');
});

// ---------------------------------------------------------------------------------------------
// (e) Bad input.

t.test('bad input: kinds, dtypes, shapes and option values name the argument', async (t) => {
  const lp = ft(new Float32Array(6), [2, 3]);
  const m = mt(new Uint8Array(6).fill(1), [2, 3]);
  expectError(t, () => rl.sequenceLogprobs(rl.tensor(new Int32Array(6), [2, 3]), m), TypeError, /^sequenceLogprobs: .*`tokenLogprobs`.*int32/);
  expectError(t, () => rl.sequenceLogprobs([0, 0, 0] as never, m), TypeError, /^sequenceLogprobs: .*`tokenLogprobs` but received an Array/);
  expectError(t, () => rl.sequenceLogprobs(lp, ft(new Float32Array(6), [2, 3]) as never), TypeError, /^sequenceLogprobs: .*`mask`.*float32/);
  expectError(t, () => rl.sequenceLogprobs(lp, mt(new Uint8Array(6), [3, 2])), RangeError, /^sequenceLogprobs: `mask`/, undefined, 'mask [3,2] vs [2,3]');
  expectError(t, () => rl.sequenceLogprobs(ft(new Float32Array(8), [2, 2, 2]), mt(new Uint8Array(8), [2, 2, 2])), RangeError,
    /^sequenceLogprobs: `tokenLogprobs`/, undefined, '3-D tokenLogprobs');
  expectError(t, () => rl.sequenceLogprobs(lp, m, { average: 'yes' } as never), TypeError, /^sequenceLogprobs: .*`average`/);
  expectError(t, () => rl.sequenceLogprobs(lp, m, 'mean' as never), TypeError, /^sequenceLogprobs: expected an options object/);
  const bw = (inputs: object, o?: object) => () => rl.sequenceLogprobsBackward(inputs as never, o as never);
  expectError(t, bw({ gradSequence: ft([1, 2, 3]), mask: m }), RangeError, /^sequenceLogprobsBackward: `gradSequence`/, undefined, 'gradSequence [3] for B = 2');
  expectError(t, bw({ gradSequence: rl.tensor(Int32Array.from([1, 2])), mask: m }), TypeError, /^sequenceLogprobsBackward: .*`gradSequence`.*int32/);
  expectError(t, bw({ gradSequence: ft([1, 2]), mask: ft(new Float32Array(6), [2, 3]) }), TypeError, /^sequenceLogprobsBackward: .*`mask`.*float32/);
  expectError(t, bw({ gradSequence: ft([1, 2]), mask: m }, { average: 1 }), TypeError, /^sequenceLogprobsBackward: .*`average`/);
  await expectAsyncRejection(t, 'sequenceLogprobsAsync', () => rl.sequenceLogprobsAsync(lp, mt(new Uint8Array(6), [3, 2])), RangeError,
    /^sequenceLogprobsAsync: `mask`/);
  await expectAsyncRejection(t, 'sequenceLogprobsBackwardAsync', () => rl.sequenceLogprobsBackwardAsync({ gradSequence: ft([1, 2, 3]), mask: m }),
    RangeError, /^sequenceLogprobsBackwardAsync: `gradSequence`/);
});

// ---------------------------------------------------------------------------------------------
// (f) Threads, Async.

t.test('bit-identical results for 1 and 2 threads', async (t) => {
  for (const [B, T] of [[64, 4096], [2, 200000]]) {
    const c = randomCase(B + T, B, T);
    const g = randomFloats(rng(B), B);
    for (const average of [false, true]) {
      const [one, two] = [1, 2].map((n) => withThreads(n, () => [fwd(c, average).values, bwd(c, g, average).values]));
      expectBitIdentical(t, two[0], one[0], `[${B},${T}] average ${average}: forward`);
      expectBitIdentical(t, two[1], one[1], `[${B},${T}] average ${average}: backward`);
    }
  }
});

t.test('the Async forms give the same bits', async (t) => {
  const c = randomCase(31, 16, 500);
  const g = randomFloats(rng(32), 16);
  for (const average of [false, true]) {
    const a = await rl.sequenceLogprobsAsync(ft(c.lp, [16, 500]), mt(c.m, [16, 500]), { average });
    expectBitIdentical(t, snapshot(a), fwd(c, average).values, `average ${average}: forward`);
    const b = await rl.sequenceLogprobsBackwardAsync({ gradSequence: ft(g), mask: mt(c.m, [16, 500]) }, { average });
    expectBitIdentical(t, snapshot(b), bwd(c, g, average).values, `average ${average}: backward`);
  }
});

t.test('mask null or absent: every token is valid', async (t) => {
  const c = randomCase(37, 5, 9);
  const all = { ...c, m: new Uint8Array(45).fill(1) };
  for (const average of [false, true]) {
    const want = fwd(all, average).values;
    expectBitIdentical(t, snapshot(rl.sequenceLogprobs(ft(c.lp, [5, 9]), null, { average })), want, `average ${average}: mask null`);
    expectBitIdentical(t, snapshot(rl.sequenceLogprobs(ft(c.lp, [5, 9]), undefined, { average })), want, `average ${average}: mask undefined`);
  }
});

t.test('out: the given tensor is filled, returned, and fully overwritten on reuse', async (t) => {
  const c = randomCase(41, 6, 20);
  const g = randomFloats(rng(42), 6);
  const out = ft(new Float32Array(6).fill(NaN));
  t.equal(rl.sequenceLogprobs(ft(c.lp, [6, 20]), mt(c.m, [6, 20]), { out }), out, 'forward returns out');
  expectClose(t, snapshot(out), sequenceLogprobsReference(6, 20, c.lp, c.m), { rtol: 1e-5, atol: 1e-5 }, 'forward filled (the empty row 0)');
  t.equal(await rl.sequenceLogprobsAsync(ft(c.lp, [6, 20]), mt(c.m, [6, 20]), { out, average: true }), out, 'async forward returns out');
  expectClose(t, snapshot(out), sequenceLogprobsReference(6, 20, c.lp, c.m, { average: true }), { rtol: 1e-5, atol: 1e-5 }, 'forward refilled');
  const outB = ft(new Float32Array(120).fill(NaN), [6, 20]);
  t.equal(rl.sequenceLogprobsBackward({ gradSequence: ft(g), mask: mt(c.m, [6, 20]) }, { out: outB }), outB, 'backward returns out');
  expectClose(t, snapshot(outB), sequenceLogprobsBackwardReference(6, 20, g, c.m), { rtol: 1e-6 }, 'backward filled (masked tokens 0)');
  expectError(t, () => rl.sequenceLogprobs(ft(c.lp, [6, 20]), mt(c.m, [6, 20]), { out: ft(new Float32Array(5)) }), RangeError,
    /^sequenceLogprobs: `out`/, undefined, 'out of the wrong shape');
  expectError(t, () => rl.sequenceLogprobsBackward({ gradSequence: ft(g), mask: mt(c.m, [6, 20]) }, { out: ft(new Float32Array(120)) }), RangeError,
    /^sequenceLogprobsBackward: `out`/, undefined, 'backward out [120] for [6,20]');
});
