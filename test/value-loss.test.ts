// rl.valueLoss (SEMANTICS.md §6): hand cases (clipped and unclipped, presets), random cases against
// lib/reference/policy.ts for every aggregation, finite-difference gradient checks, edge cases
// (all-masked, empty, NaN, constant returns), bad input, thread-count bit-identity, Async and `out`.
import t from 'tap';

import * as rl from '../lib/index';
import { aggregationsReference, valueLossReference, ValueLossReferenceOptions } from '../lib/reference/policy';
import {
  cpuPaths, referencePath, data, expectBitIdentical, expectClose, expectError, expectNear, f32, ft, mt, randomFloats, responseMask, rng, snapshot,
  withCpuPath, withThreads,
} from './helpers/index';
import { expectAsyncRejection, expectCloseScaled, finiteDifferences, finiteDifferencesF32 } from './helpers/policy';

type Opts = NonNullable<Parameters<typeof rl.valueLoss>[1]>;

interface Case {
  B: number;
  T: number;
  v: Float32Array;
  vOld: Float32Array | null;
  R: Float32Array;
  m: Uint8Array | null;
}

function run(c: Case, opts: Opts = {}) {
  const shape = [c.B, c.T];
  const out = rl.valueLoss({
    values: ft(c.v, shape), oldValues: c.vOld ? ft(c.vOld, shape) : undefined, returns: ft(c.R, shape), mask: c.m ? mt(c.m, shape) : undefined,
  }, opts);
  return { loss: out.loss, grad: snapshot(out.grad), stats: out.stats, shape: [...out.grad.shape] };
}

function ref(c: Case, opts: ValueLossReferenceOptions = {}) {
  return valueLossReference(c.B, c.T, { values: c.v, oldValues: c.vOld, returns: c.R, mask: c.m }, opts);
}

function randomCase(seed: number, B: number, T: number): Case {
  const r = rng(seed);
  const v = randomFloats(r, B * T);
  const vOld = new Float32Array(B * T);
  const dv = randomFloats(r, B * T, 0.4);
  for (let i = 0; i < B * T; ++i) vOld[i] = v[i] + dv[i];
  const m = responseMask(r, B, T, 0.1);
  if (B > 3) for (let t = 0; t < T; ++t) m[3 * T + t] = 0;
  return { B, T, v, vOld, R: randomFloats(r, B * T), m };
}

/**
 * Kink-free: |v - vOld| is either < 0.1 (inside a clip of 0.2) or > 0.4 (outside), and where it
 * is outside the clipped and unclipped terms differ by more than 0.3.
 */
function kinkFreeCase(seed: number, B: number, T: number): Case {
  const r = rng(seed);
  const n = B * T;
  const v = new Float32Array(n);
  const vOld = new Float32Array(n);
  const R = new Float32Array(n);
  for (let i = 0; i < n; ++i) {
    for (;;) {
      v[i] = 2 * r() - 1;
      const inside = r() < 0.5;
      const dv = (r() < 0.5 ? -1 : 1) * (inside ? 0.1 * r() : 0.4 + 0.6 * r());
      vOld[i] = v[i] - dv;
      R[i] = 3 * r() - 1.5;
      if (inside) break;
      const vc = Math.min(Math.max(v[i], vOld[i] - 0.2), vOld[i] + 0.2);
      if (Math.abs((v[i] - R[i]) ** 2 - (vc - R[i]) ** 2) > 0.3) break;
    }
  }
  const m = responseMask(r, B, T, 0.2);
  for (let b = 0; b < B; ++b) m[b * T] = 1;
  return { B, T, v, vOld, R, m };
}

// ---------------------------------------------------------------------------------------------
// (a) Hand cases.

// v = [1, 2, 0.5, 3], vOld = [1.1, 1.5, 0.5, 2], R = [2, 2.5, 0, 2.5], clip 0.2:
//   t0: clip(1, 0.9, 1.3) = 1:    u = 1,    c = 1     -> l = 1,    dl/dv = 2(v-R) = -2
//   t1: clip(2, 1.3, 1.7) = 1.7:  u = 0.25, c = 0.64  -> l = 0.64 (clipped), dl/dv = 0
//   t2: clip(0.5, 0.3, 0.7) = 0.5: u = 0.25, c = 0.25 -> l = 0.25, dl/dv = 1
//   t3: clip(3, 1.8, 2.2) = 2.2:  u = 0.25, c = 0.09  -> l = 0.25, dl/dv = 1
// loss = 0.5 * mean(l) = 0.5 * 2.14/4 = 0.2675; grad = 0.5 * dl/dv / 4 = [-0.25, 0, 0.125, 0.125]
// vfClipfrac 1/4; explainedVariance: Var(R - v) = 0.421875, Var(R) = 1.0625 -> 1 - 27/68 = 41/68
const hand = (): Case => ({ B: 1, T: 4, v: f32([1, 2, 0.5, 3]), vOld: f32([1.1, 1.5, 0.5, 2]), R: f32([2, 2.5, 0, 2.5]), m: null });

t.test('hand case: clipped value loss (clip 0.2, the default)', async (t) => {
  const out = run(hand(), { clip: 0.2 });
  expectNear(t, out.loss, 0.2675, { rtol: 1e-6 }, 'loss');
  expectClose(t, out.grad, [-0.25, 0, 0.125, 0.125], { rtol: 1e-6, atol: 1e-9 }, 'grad');
  t.strictSame(out.shape, [1, 4]);
  t.equal(out.stats.vfClipfrac, 0.25, 'vfClipfrac');
  expectNear(t, out.stats.explainedVariance, 41 / 68, { rtol: 1e-6 }, 'explainedVariance');
  t.strictSame(run(hand()), out, 'clip 0.2 is the default');
  t.strictSame(run(hand(), { preset: 'trl' }), out, "preset 'trl': 0.2");
  t.strictSame(run(hand(), { preset: 'cleanrl' }), out, "preset 'cleanrl': 0.2");
  expectNear(t, ref(hand()).loss, 0.2675, { rtol: 1e-6 }, 'the reference agrees');
});

t.test('hand case: unclipped (clip null) needs no oldValues; clip 0.5 (verl, OpenRLHF presets)', async (t) => {
  // Unclipped: l = (v-R)^2 = [1, 0.25, 0.25, 0.25]: loss 0.5 * 1.75/4 = 0.21875; grad (v-R)/4 = [-0.25, -0.125, 0.125, 0.125]
  const noOld = { ...hand(), vOld: null };
  const un = run(noOld, { clip: null });
  expectNear(t, un.loss, 0.21875, { rtol: 1e-6 }, 'unclipped loss');
  expectClose(t, un.grad, [-0.25, -0.125, 0.125, 0.125], { rtol: 1e-6 }, 'unclipped grad');
  t.equal(un.stats.vfClipfrac, 0, 'unclipped: vfClipfrac 0');
  t.strictSame(run(hand(), { clip: null }), un, 'oldValues ignored when unclipped');
  // clip 0.5: t1 clip(2, 1, 2) = 2 -> unclipped; t3 clip(3, 1.5, 2.5) = 2.5 -> c = 0 < u. Nothing clipped:
  // same as unclipped.
  const half = run(hand(), { clip: 0.5 });
  expectNear(t, half.loss, 0.21875, { rtol: 1e-6 }, 'clip 0.5: loss');
  expectClose(t, half.grad, [-0.25, -0.125, 0.125, 0.125], { rtol: 1e-6 }, 'clip 0.5: grad');
  t.strictSame(run(hand(), { preset: 'verl' }), half, "preset 'verl': 0.5");
  t.strictSame(run(hand(), { preset: 'openrlhf' }), half, "preset 'openrlhf': 0.5");
  t.strictSame(run(hand(), { preset: 'verl', clip: 0.2 }), run(hand()), 'explicit clip overrides the preset');
  t.strictSame(run(noOld, { preset: 'verl', clip: null }), un, 'explicit clip null overrides the preset');
  // A value far on the other side: v = -3, vOld = 0, R = 1, clip 0.2: u = 16, c = (-0.2 - 1)^2 = 1.44 -> unclipped, grad v - R.
  // v = 0.9, vOld = 0, R = -1: u = 3.61, c = (0.2 + 1)^2 = 1.44 -> unclipped. v = 0.9, vOld = 0, R = 2: u = 1.21, c = 3.24 -> clipped.
  const far = run({ B: 1, T: 3, v: f32([-3, 0.9, 0.9]), vOld: f32([0, 0, 0]), R: f32([1, -1, 2]), m: null });
  expectNear(t, far.loss, 0.5 * (16 + 3.61 + 3.24) / 3, { rtol: 1e-6 }, 'far: loss');
  expectClose(t, far.grad, [-4 / 3, 1.9 / 3, 0], { rtol: 1e-6 }, 'far: grad');
  expectNear(t, far.stats.vfClipfrac, 1 / 3, { rtol: 1e-12 }, 'far: vfClipfrac');
});

t.test('hand case: aggregations weigh rows as the policy loss does', async (t) => {
  // Unclipped, v = 0, mask [[1,1,0],[1,0,0],[0,0,0]], R = [[1,2,.],[3,.,.],[.,.,.]]: l = R^2 = 1, 4, 9.
  const c: Case = { B: 3, T: 3, v: new Float32Array(9), vOld: null, R: f32([1, 2, 7, 3, 7, 7, 7, 7, 7]), m: Uint8Array.from([1, 1, 0, 1, 0, 0, 0, 0, 0]) };
  const cases: [string, number | undefined, number][] = [
    ['token-mean', undefined, 0.5 * 14 / 3],
    ['seq-mean-token-mean', undefined, 0.5 * (2.5 + 9) / 2],
    ['seq-mean-token-sum', undefined, 0.5 * (5 + 9) / 2],
    ['seq-mean-token-sum-norm', undefined, 0.5 * 14 / 3],
    ['grpo', undefined, 0.5 * (2.5 + 9) / 3],
    ['bnpo', undefined, 0.5 * 14 / 3],
    ['dr_grpo', undefined, 0.5 * 14 / 9],
    ['dapo', 7, 0.5 * 2],
  ];
  for (const [aggregation, normalizer, loss] of cases) {
    const o = { clip: null, aggregation, normalizer } as Opts;
    const out = run(c, o);
    expectNear(t, out.loss, loss, { rtol: 1e-6 }, `${aggregation}: loss`);
    expectNear(t, ref(c, o as ValueLossReferenceOptions).loss, loss, { rtol: 1e-12 }, `${aggregation}: reference loss`);
    expectCloseScaled(t, out.grad, ref(c, o as ValueLossReferenceOptions).grad, 1e-6, `${aggregation}: grad`);
  }
});

// ---------------------------------------------------------------------------------------------
// (b) Random against the reference, (c) finite differences.

t.test('random cases against the reference: every aggregation, clipped and not', async (t) => {
  const c = randomCase(201, 8, 41);
  for (const aggregation of aggregationsReference) {
    for (const clip of [0.2, 0.5, null]) {
      const normalizer = aggregation === 'dapo' ? 77 : undefined;
      const o = { clip, aggregation, normalizer };
      const got = run(c, o as Opts);
      const want = ref(c, o);
      const name = JSON.stringify(o);
      expectNear(t, got.loss, want.loss, { rtol: 1e-5, atol: 1e-8 }, `${name}: loss`);
      expectCloseScaled(t, got.grad, want.grad, 1e-5, `${name}: grad`);
      expectNear(t, got.stats.vfClipfrac, want.stats.vfClipfrac, { rtol: 1e-12 }, `${name}: vfClipfrac`);
      expectNear(t, got.stats.explainedVariance, want.stats.explainedVariance, { rtol: 1e-5, atol: 1e-7 }, `${name}: explainedVariance`);
    }
  }
});

t.test('finite differences: reference (float64) and op (float32) gradients are d loss / d values', async (t) => {
  const c = kinkFreeCase(203, 3, 6);
  for (const aggregation of aggregationsReference) {
    for (const clip of [0.2, null]) {
      const o = { clip, aggregation, normalizer: aggregation === 'dapo' ? 9 : undefined };
      const name = JSON.stringify(o);
      const f64 = (v: Float64Array) => valueLossReference(c.B, c.T, { values: v, oldValues: c.vOld, returns: c.R, mask: c.m }, o).loss;
      expectClose(t, ref(c, o).grad, finiteDifferences(f64, c.v, 1e-6), { rtol: 1e-6, atol: 1e-9 }, `${name}: reference vs central differences`);
      const idx = [...Array(c.B * c.T).keys()];
      // The loss is piecewise quadratic: central differences are exact up to rounding.
      const fd = finiteDifferencesF32((v) => run({ ...c, v }, o as Opts).loss, c.v, 1e-2, idx);
      expectClose(t, run(c, o as Opts).grad, fd, { rtol: 1e-3, atol: 1e-3 * Math.max(...[...fd].map(Math.abs)) },
        `${name}: op grad vs central differences of the op's loss`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// (d) Edge cases.

t.test('all-masked and empty: loss 0, zero gradient, vfClipfrac 0, explainedVariance NaN', async (t) => {
  const c = randomCase(205, 2, 5);
  c.m = new Uint8Array(10);
  for (const aggregation of aggregationsReference) {
    const o = { aggregation, normalizer: aggregation === 'dapo' ? 3 : undefined } as Opts;
    const out = run(c, o);
    t.equal(out.loss, 0, `${aggregation}: all masked: loss 0`);
    t.ok(out.grad.every((g) => g === 0), `${aggregation}: all masked: zero gradient`);
    t.equal(out.stats.vfClipfrac, 0, `${aggregation}: vfClipfrac 0`);
    t.ok(Number.isNaN(out.stats.explainedVariance), `${aggregation}: explainedVariance NaN`);
    for (const shape of [[0, 3], [2, 0]]) {
      const e = rl.valueLoss({ values: ft([], shape), oldValues: ft([], shape), returns: ft([], shape) }, o);
      t.equal(e.loss, 0, `${aggregation}: empty [${shape}]: loss 0`);
      t.strictSame([...e.grad.shape], shape);
      t.ok(Number.isNaN(e.stats.explainedVariance), `${aggregation}: empty [${shape}]: explainedVariance NaN`);
    }
  }
});

t.test('explainedVariance: NaN for constant returns, 1 for a perfect fit, over valid tokens only', async (t) => {
  const constR = run({ B: 1, T: 3, v: f32([1, 2, 3]), vOld: null, R: f32([2, 2, 2]), m: null }, { clip: null });
  t.ok(Number.isNaN(constR.stats.explainedVariance), 'Var(R) = 0: NaN');
  const perfect = run({ B: 1, T: 3, v: f32([1, 2, 3]), vOld: null, R: f32([1, 2, 3]), m: null }, { clip: null });
  t.equal(perfect.stats.explainedVariance, 1, 'v = R: 1');
  t.equal(perfect.loss, 0);
  // Shifted by a constant: Var(R - v) = 0 -> 1 even though the loss is not 0.
  expectNear(t, run({ B: 1, T: 3, v: f32([0, 1, 2]), vOld: null, R: f32([1, 2, 3]), m: null }, { clip: null }).stats.explainedVariance, 1,
    { rtol: 1e-12 }, 'v = R - 1: 1');
  // The masked token (R = 100) is left out: R = [1, 2, 3], v = 0 -> 1 - Var(R)/Var(R) = 0.
  const masked = run({ B: 1, T: 4, v: f32([0, 0, 0, 0]), vOld: null, R: f32([1, 2, 3, 100]), m: Uint8Array.from([1, 1, 1, 0]) }, { clip: null });
  expectNear(t, masked.stats.explainedVariance, 0, { atol: 1e-12 }, 'v = 0: 0, masked token left out');
});

t.test('NaN: a valid NaN reaches the loss and its own gradient; a masked NaN does not leak', async (t) => {
  const c = randomCase(207, 2, 4);
  c.m = new Uint8Array(8).fill(1);
  for (const [name, field] of [['values', 'v'], ['returns', 'R'], ['oldValues', 'vOld']] as const) {
    const d = { ...c, v: Float32Array.from(c.v), R: Float32Array.from(c.R), vOld: Float32Array.from(c.vOld as Float32Array) };
    (d[field] as Float32Array)[5] = NaN;
    const out = run(d);
    t.ok(Number.isNaN(out.loss), `NaN in ${name}: loss NaN`);
    t.ok(Number.isNaN(out.grad[5]), `NaN in ${name}: its gradient NaN`);
    t.ok(out.grad.every((g, i) => i === 5 || Number.isFinite(g)), `NaN in ${name}: the others finite`);
  }
  const e = randomCase(209, 2, 4);
  e.m = Uint8Array.from([1, 1, 0, 1, 1, 0, 1, 1]);
  const clean = run(e);
  const dirty = { ...e, v: Float32Array.from(e.v), R: Float32Array.from(e.R), vOld: Float32Array.from(e.vOld as Float32Array) };
  dirty.v[2] = NaN;
  dirty.R[5] = NaN;
  (dirty.vOld as Float32Array)[2] = NaN;
  const got = run(dirty);
  t.equal(got.loss, clean.loss, 'masked NaNs leave the loss alone');
  expectBitIdentical(t, f32([...got.grad]), f32([...clean.grad]), 'and the gradient');
  t.equal(got.stats.explainedVariance, clean.stats.explainedVariance, 'and explainedVariance');
  expectError(t, () => run({ ...e, R: dirty.R }, { checkFinite: true }), RangeError, /^valueLoss: `returns` has a non-finite value at index 5/);
});

// ---------------------------------------------------------------------------------------------
// (e) Bad input.

t.test('bad input', async (t) => {
  const s = [2, 3];
  const good = () => ({ values: ft(new Float32Array(6), s), oldValues: ft(new Float32Array(6), s), returns: ft(new Float32Array(6), s),
    mask: mt(new Uint8Array(6).fill(1), s) });
  const op = (inputs: object, o: Opts = {}) => () => rl.valueLoss(inputs as never, o);
  expectError(t, op({ ...good(), oldValues: undefined }), RangeError, /^valueLoss: `oldValues`/, undefined, 'no oldValues with the default clip');
  expectError(t, op({ ...good(), oldValues: undefined }, { clip: 0.5 }), RangeError, /^valueLoss: `oldValues`/, undefined, 'no oldValues with clip 0.5');
  expectError(t, op({ ...good(), oldValues: undefined }, { preset: 'verl' }), RangeError, /^valueLoss: `oldValues`/, undefined, 'no oldValues with verl');
  expectError(t, op({ ...good(), values: rl.tensor(new Int32Array(6), s) }), TypeError, /^valueLoss: expected a float32 .*`values` but received an int32 Tensor/);
  expectError(t, op({ ...good(), returns: [0, 0, 0, 0, 0, 0] }), TypeError, /^valueLoss: .*`returns` but received an Array/);
  expectError(t, op({ ...good(), mask: ft(new Float32Array(6), s) }), TypeError, /^valueLoss: expected a uint8 .*`mask`/);
  expectError(t, op({ ...good(), returns: ft(new Float32Array(6), [3, 2]) }), RangeError, /^valueLoss: `returns`/);
  expectError(t, op({ ...good(), oldValues: ft(new Float32Array(5)) }), RangeError, /^valueLoss: `oldValues`/);
  expectError(t, op({ ...good(), mask: mt(new Uint8Array(6)) }), RangeError, /^valueLoss: `mask`/);
  for (const clip of [0, -0.2, NaN])
    expectError(t, op(good(), { clip }), RangeError, /^valueLoss: `clip`/, undefined, `clip ${clip}`);
  expectError(t, op(good(), { clip: '0.2' as never }), TypeError, /^valueLoss: .*`clip`/);
  expectError(t, op(good(), { aggregation: 'sum' as never }), RangeError, /^valueLoss: `aggregation`/);
  expectError(t, op(good(), { aggregation: 'dapo' }), RangeError, /^valueLoss: `normalizer`/, undefined, 'dapo without a normalizer');
  expectError(t, op(good(), { aggregation: 'token-mean', normalizer: 5 }), RangeError, /^valueLoss: `normalizer`/, undefined, 'normalizer with token-mean');
  expectError(t, op(good(), { aggregation: 'dapo', normalizer: 0 }), RangeError, /^valueLoss: `normalizer`/, undefined, 'normalizer 0');
  expectError(t, op(good(), { preset: 'torchrl' as never }), RangeError, /^valueLoss: `preset`/);
  expectError(t, op(good(), { out: ft(new Float32Array(6)) }), RangeError, /^valueLoss: `out` must have shape \[2, 3\]/);
  expectError(t, op(null as never), TypeError, /^valueLoss: /);
  await expectAsyncRejection(t, 'valueLossAsync', () => rl.valueLossAsync({ ...good(), oldValues: undefined }), RangeError, /^valueLossAsync: `oldValues`/);
});

// ---------------------------------------------------------------------------------------------
// (f) Threads, CPU paths, Async, out.

t.test('bit-identical for 1 and 2 threads', async (t) => {
  const c = randomCase(211, 64, 1024);
  for (const aggregation of aggregationsReference) {
    const o = { aggregation, normalizer: aggregation === 'dapo' ? 30000 : undefined } as Opts;
    const [one, two] = [1, 2].map((n) => withThreads(n, () => run(c, o)));
    t.equal(two.loss, one.loss, `${aggregation}: loss`);
    expectBitIdentical(t, f32([...two.grad]), f32([...one.grad]), `${aggregation}: grad`);
    t.equal(two.stats.vfClipfrac, one.stats.vfClipfrac, `${aggregation}: vfClipfrac`);
    t.equal(two.stats.explainedVariance, one.stats.explainedVariance, `${aggregation}: explainedVariance`);
  }
});

t.test('the fast CPU paths agree with the scalar reference path', async (t) => {
  const c = randomCase(213, 7, 333);
  const runs = cpuPaths.map((p) => withCpuPath(p, () => run(c, { aggregation: 'seq-mean-token-mean' })));
  for (let i = 0; i < referencePath; ++i) {
    expectNear(t, runs[i].loss, runs[referencePath].loss, { rtol: 1e-6, atol: 1e-9 }, `${cpuPaths[i]}: loss`);
    expectCloseScaled(t, runs[i].grad, runs[referencePath].grad, 1e-6, `${cpuPaths[i]}: grad`);
    expectNear(t, runs[i].stats.explainedVariance, runs[referencePath].stats.explainedVariance, { rtol: 1e-6 }, `${cpuPaths[i]}: explainedVariance`);
  }
});

t.test('valueLossAsync gives the same result; out is filled and reused', async (t) => {
  const c = randomCase(215, 5, 30);
  const sync = run(c, { aggregation: 'grpo' });
  const s = [5, 30];
  const inputs = { values: ft(c.v, s), oldValues: ft(c.vOld as Float32Array, s), returns: ft(c.R, s), mask: mt(c.m as Uint8Array, s) };
  const a = await rl.valueLossAsync(inputs, { aggregation: 'grpo' });
  t.equal(a.loss, sync.loss, 'loss');
  expectBitIdentical(t, snapshot(a.grad), f32([...sync.grad]), 'grad');
  t.equal(a.stats.vfClipfrac, sync.stats.vfClipfrac);
  t.equal(a.stats.explainedVariance, sync.stats.explainedVariance);
  const out = ft(new Float32Array(150).fill(NaN), s);
  const res = rl.valueLoss(inputs, { out });
  t.equal(res.grad, out, 'grad is the out tensor');
  expectCloseScaled(t, data(out), ref(c).grad, 1e-5, 'filled (masked tokens overwritten with 0)');
  const res2 = await rl.valueLossAsync(inputs, { out, clip: null });
  t.equal(res2.grad, out, 'async with out');
  expectCloseScaled(t, data(out), ref(c, { clip: null }).grad, 1e-5, 'refilled');
});
