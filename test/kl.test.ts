// rl.klPenalty, rl.shapeRewards and the KL controllers (SEMANTICS.md §4): hand cases for every
// estimator, clamp, straight-through and preset; random cases against lib/reference/policy.ts;
// the gradient against finite differences of the op's own output; edge cases (NaN, infinities,
// empty), bad input, thread-count bit-identity and the Async forms.
import t from 'tap';

import * as rl from '../lib/index';
import {
  adaptiveKlCoefReference, KlEstimatorReference, klPenaltyReference, KlReferenceOptions, shapeRewardsReference,
} from '../lib/reference/policy';
import {
  data, expectBitIdentical, expectClose, expectError, expectNear, ft, mt, randomFlags, randomFloats, responseMask, rng, snapshot, withThreads,
} from './helpers/index';
import { expectAsyncRejection, finiteDifferencesF32 } from './helpers/policy';

const estimators: readonly KlEstimatorReference[] = ['k1', 'k2', 'k3', 'abs'];
// k3 = exp(-d) + d - 1 cancels for small d; float32 may lose ~1e-7 absolute there.
const klTol = { rtol: 1e-5, atol: 2e-6 };

// d = lp - ref = [0.25, 1, -1, 0.5, 30, -30] (ref = 1, so the sign convention is tested too).
const handD = [0.25, 1, -1, 0.5, 30, -30];
const handLp = () => ft(handD.map((d) => d + 1));
const handRef = () => ft(handD.map(() => 1));
const E = Math.E;
const k3 = [0.02880078307140499, 0.36787944117144233, 0.7182818284590451, 0.10653065971263342, 29.000000000000092, 10686474581493.463];
const k3Grad = [0.22119921692859512, 0.6321205588285577, -1.718281828459045, 0.3934693402873666, 0.9999999999999064, -10686474581523.463];

function kl(opts: Parameters<typeof rl.klPenalty>[2]) {
  const out = rl.klPenalty(handLp(), handRef(), opts);
  return { kl: [...data(out.kl)], grad: [...data(out.grad)] };
}

// ---------------------------------------------------------------------------------------------
// (a) Hand cases.

t.test('hand case: the four estimators and their gradients, no clamps', async (t) => {
  const k1 = kl({ estimator: 'k1' });
  expectClose(t, k1.kl, handD, { rtol: 1e-6 }, 'k1 = d');
  t.strictSame(k1.grad, [1, 1, 1, 1, 1, 1], 'k1 gradient 1');
  const def = kl(undefined);
  t.strictSame(def, k1, "the default estimator is 'k1'");
  const k2 = kl({ estimator: 'k2' });
  expectClose(t, k2.kl, [0.03125, 0.5, 0.5, 0.125, 450, 450], { rtol: 1e-6 }, 'k2 = d^2/2');
  expectClose(t, k2.grad, handD, { rtol: 1e-6 }, 'k2 gradient d');
  const k3o = kl({ estimator: 'k3' });
  expectClose(t, k3o.kl, k3, { rtol: 1e-5, atol: 1e-7 }, 'k3 = exp(-d) + d - 1');
  expectClose(t, k3o.grad, k3Grad, { rtol: 1e-5, atol: 1e-7 }, 'k3 gradient 1 - exp(-d)');
  const abs = kl({ estimator: 'abs' });
  expectClose(t, abs.kl, handD.map(Math.abs), { rtol: 1e-6 }, 'abs = |d|');
  t.strictSame(abs.grad, [1, 1, -1, 1, 1, -1], 'abs gradient sign(d)');
  const out = rl.klPenalty(ft([1, 2, 3, 4, 5, 6], [2, 3]), ft([0, 0, 0, 0, 0, 0], [2, 3]));
  t.strictSame([...out.kl.shape], [2, 3], 'kl keeps the input shape');
  t.strictSame([...out.grad.shape], [2, 3], 'grad keeps the input shape');
});

t.test('hand case: clampLogRatio clamps d first (gradient 0 there), clampOutput clamps the estimate (gradient 0 there)', async (t) => {
  // k1, clampLogRatio 2: d' = [0.25, 1, -1, 0.5, 2, -2]; gradient 0 at the clamped +-30.
  const a = kl({ estimator: 'k1', clampLogRatio: 2 });
  expectClose(t, a.kl, [0.25, 1, -1, 0.5, 2, -2], { rtol: 1e-6 }, 'k1 clampLogRatio 2');
  t.strictSame(a.grad, [1, 1, 1, 1, 0, 0], 'k1 gradient 0 where d is clamped');
  // k2, clampOutput 0.4: [0.03125, 0.4, 0.4, 0.125, 0.4, 0.4]; gradient d where not clamped.
  const b = kl({ estimator: 'k2', clampOutput: 0.4 });
  expectClose(t, b.kl, [0.03125, 0.4, 0.4, 0.125, 0.4, 0.4], { rtol: 1e-6 }, 'k2 clampOutput 0.4');
  t.strictSame(b.grad.map(Math.abs), [0.25, 0, 0, 0.5, 0, 0], 'k2 gradient 0 where the estimate is clamped');
  // k3, clampLogRatio 20 and clampOutput 10 (verl low_var_kl): +-30 -> +-20 -> k3 19.000000002 and 4.85e8 -> 10.
  const c = kl({ estimator: 'k3', clampLogRatio: 20, clampOutput: 10 });
  expectClose(t, c.kl, [k3[0], k3[1], k3[2], k3[3], 10, 10], { rtol: 1e-5, atol: 1e-7 }, 'k3 with both clamps');
  expectClose(t, c.grad, [k3Grad[0], k3Grad[1], k3Grad[2], k3Grad[3], 0, 0], { rtol: 1e-5, atol: 1e-7 }, 'k3 gradient 0 at both clamps');
  // k3 with only clampLogRatio 20: the clamped values show.
  const d = kl({ estimator: 'k3', clampLogRatio: 20 });
  expectClose(t, d.kl.slice(4), [19.000000002061153, 485165174.4097903], { rtol: 1e-6 }, 'k3 of d clamped to +-20');
  t.strictSame(d.grad.slice(4), [0, 0], 'gradient 0 where d is clamped');
  // abs with clampOutput 0.75: 1 -> 0.75; negative side too.
  const e = kl({ estimator: 'abs', clampOutput: 0.75 });
  expectClose(t, e.kl, [0.25, 0.75, 0.75, 0.5, 0.75, 0.75], { rtol: 1e-6 }, 'abs clampOutput');
  t.strictSame(e.grad, [1, 0, 0, 1, 0, 0], 'abs gradient 0 where clamped');
  // k1 with clampOutput 0.75: negative estimates are clamped at -0.75.
  const f = kl({ estimator: 'k1', clampOutput: 0.75 });
  expectClose(t, f.kl, [0.25, 0.75, -0.75, 0.5, 0.75, -0.75], { rtol: 1e-6 }, 'k1 clampOutput is symmetric');
  // null clamps are "no clamp".
  t.strictSame(kl({ estimator: 'k2', clampLogRatio: null, clampOutput: null }), kl({ estimator: 'k2' }), 'null clamps');
});

t.test('hand case: straightThrough keeps the forward value and uses the k2 gradient d (raw d, even where clamped)', async (t) => {
  for (const estimator of estimators) {
    const st = kl({ estimator, straightThrough: true });
    t.strictSame(st.kl, kl({ estimator }).kl, `${estimator}+: forward value unchanged`);
    expectClose(t, st.grad, handD, { rtol: 1e-6 }, `${estimator}+: gradient d`);
  }
  const verlK3Plus = kl({ estimator: 'k3', clampLogRatio: 20, clampOutput: 10, straightThrough: true });
  expectClose(t, verlK3Plus.kl.slice(4), [10, 10], { rtol: 1e-6 }, 'k3+ with clamps: clamped forward');
  expectClose(t, verlK3Plus.grad, handD, { rtol: 1e-6 }, 'k3+ with clamps: gradient the raw d');
});

t.test("presets: 'verl' clamps k3 at 20/10 only, 'openrlhf' clamps every estimator's output at 10, 'trl' none; explicit options win", async (t) => {
  t.strictSame(kl({ estimator: 'k3', preset: 'verl' }), kl({ estimator: 'k3', clampLogRatio: 20, clampOutput: 10 }), 'verl k3');
  t.strictSame(kl({ estimator: 'k1', preset: 'verl' }), kl({ estimator: 'k1' }), 'verl k1: no clamps');
  t.strictSame(kl({ estimator: 'k1', preset: 'verl' }).kl.slice(4), [30, -30], 'verl k1 lets 30 through');
  for (const estimator of estimators)
    t.strictSame(kl({ estimator, preset: 'openrlhf' }), kl({ estimator, clampOutput: 10 }), `openrlhf ${estimator}: clampOutput 10`);
  expectClose(t, kl({ estimator: 'k1', preset: 'openrlhf' }).kl, [0.25, 1, -1, 0.5, 10, -10], { rtol: 1e-6 }, 'openrlhf k1 values');
  for (const estimator of estimators) t.strictSame(kl({ estimator, preset: 'trl' }), kl({ estimator }), `trl ${estimator}: no clamps`);
  // Explicit options override the preset.
  const over = kl({ estimator: 'k3', preset: 'verl', clampOutput: null });
  expectClose(t, over.kl.slice(4), [19.000000002061153, 485165174.4097903], { rtol: 1e-6 }, 'verl k3 with clampOutput: null');
  t.strictSame(kl({ estimator: 'k3', preset: 'verl', clampLogRatio: 5 }), kl({ estimator: 'k3', clampLogRatio: 5, clampOutput: 10 }),
    'verl k3 with clampLogRatio 5');
  t.strictSame(kl({ estimator: 'k2', preset: 'openrlhf', clampOutput: 100 }).kl.slice(4), [100, 100], 'openrlhf with clampOutput 100');
});

t.test('lib/reference klPenaltyReference reproduces the hand cases', async (t) => {
  const ref = handD.map(() => 1);
  const lp = handD.map((d) => d + 1);
  const c = klPenaltyReference(lp, ref, { estimator: 'k3', clampLogRatio: 20, clampOutput: 10 });
  expectClose(t, c.kl, [k3[0], k3[1], k3[2], k3[3], 10, 10], { rtol: 1e-12 }, 'k3 clamped');
  t.strictSame([...c.grad].slice(4), [0, 0]);
  t.strictSame([...klPenaltyReference(lp, ref, { estimator: 'abs', straightThrough: true }).grad], handD);
  t.equal(E, Math.exp(1));
});

// ---------------------------------------------------------------------------------------------
// (b) Random against the reference, (c) gradients against finite differences.

t.test('random [B,T] against the float64 reference: every estimator, clamp and straight-through', async (t) => {
  const r = rng(101);
  const B = 16;
  const T = 33;
  const lp = randomFloats(r, B * T, 3, -2);
  const ref = randomFloats(r, B * T, 3, -2);
  for (const estimator of estimators) {
    for (const [clampLogRatio, clampOutput] of [[null, null], [2, null], [null, 1.5], [4, 3]] as [number | null, number | null][]) {
      for (const straightThrough of [false, true]) {
        const o: KlReferenceOptions = { estimator, clampLogRatio, clampOutput, straightThrough };
        const got = rl.klPenalty(ft(lp, [B, T]), ft(ref, [B, T]), o);
        const want = klPenaltyReference(lp, ref, o);
        const name = `${estimator} clampLogRatio ${clampLogRatio} clampOutput ${clampOutput}${straightThrough ? ' straightThrough' : ''}`;
        expectClose(t, data(got.kl), want.kl, klTol, `${name}: kl`);
        expectClose(t, data(got.grad), want.grad, klTol, `${name}: grad`);
      }
    }
  }
});

t.test('finite differences: grad is d kl / d logprobs of the op\'s own output (away from 0 and the clamps)', async (t) => {
  const r = rng(103);
  const n = 40;
  // d in +-[0.2, 1.8] (abs has a kink at 0); the clamps sit at 2.5 (d) and 0.9 (estimate) and the
  // FD step is 1e-2, so no step crosses a clamp except where it is clamped on both sides.
  const ref = randomFloats(r, n, 1, -3);
  const lp = new Float32Array(n);
  for (let i = 0; i < n; ++i) lp[i] = ref[i] + (r() < 0.5 ? -1 : 1) * (0.2 + 1.6 * r());
  const idx = [...Array(n).keys()];
  for (const estimator of estimators) {
    for (const o of [{}, { clampLogRatio: 1.3 }, { clampOutput: 0.9 }] as KlReferenceOptions[]) {
      const opts = { ...o, estimator };
      // Keep away from the clamp boundaries: skip elements within 0.05 of them.
      const want = klPenaltyReference(lp, ref, opts);
      const safe = idx.filter((i) => {
        const d = lp[i] - ref[i];
        if (o.clampLogRatio && Math.abs(Math.abs(d) - o.clampLogRatio) < 0.05) return false;
        if (o.clampOutput && Math.abs(Math.abs(want.kl[i]) - o.clampOutput) < 0.05) return false;
        return true;
      });
      const got = rl.klPenalty(ft(lp), ft(ref), opts);
      const grad = snapshot(got.grad);
      // The op's kl is elementwise, so one perturbed element at a time differentiates kl[i].
      const fd = finiteDifferencesF32((x) => data(rl.klPenalty(ft(x), ft(ref), opts).kl).reduce((a, b) => a + b, 0), lp, 1e-2, safe);
      expectClose(t, safe.map((i) => grad[i]), fd, { rtol: 2e-3, atol: 2e-3 }, `${estimator} ${JSON.stringify(o)}: grad vs central differences`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// (d) Edge cases.

t.test('NaN propagates through every estimator and both clamps; infinities are clamped', async (t) => {
  for (const estimator of estimators) {
    for (const o of [{}, { clampLogRatio: 20, clampOutput: 10 }, { straightThrough: true }] as KlReferenceOptions[]) {
      const out = rl.klPenalty(ft([NaN, 0.5, 1]), ft([0, NaN, 0.5]), { ...o, estimator });
      const k = data(out.kl);
      const g = data(out.grad);
      const name = `${estimator} ${JSON.stringify(o)}`;
      t.ok(Number.isNaN(k[0]) && Number.isNaN(k[1]), `${name}: NaN in lp or ref gives a NaN kl (a clamp does not hide it)`);
      // The gradient depends on d for k2, k3 and straight-through (d); k1's is the constant 1 and
      // abs's a sign, so a number there is not a NaN turned into a number.
      if (estimator === 'k2' || estimator === 'k3' || o.straightThrough)
        t.ok(Number.isNaN(g[0]) && Number.isNaN(g[1]), `${name}: and a NaN gradient`);
      t.ok(Number.isFinite(k[2]) && Number.isFinite(g[2]), `${name}: the other element is untouched`);
    }
  }
  // lp = -inf (a token the policy cannot produce), clamped: k1 -> -20, k3 -> exp(20) - 21 -> 10.
  const inf = rl.klPenalty(ft([-Infinity, Infinity]), ft([0, 0]), { estimator: 'k1', clampLogRatio: 20 });
  t.strictSame([...data(inf.kl)], [-20, 20], 'k1 of +-inf with clampLogRatio 20');
  t.strictSame([...data(inf.grad)], [0, 0], 'gradient 0 there');
  const inf3 = rl.klPenalty(ft([-Infinity, Infinity]), ft([0, 0]), { estimator: 'k3', preset: 'verl' });
  t.strictSame([...data(inf3.kl)], [10, 10], 'k3 of +-inf with the verl clamps');
  t.strictSame([...data(inf3.grad)], [0, 0]);
  t.strictSame([...data(rl.klPenalty(ft([-Infinity]), ft([0]), { estimator: 'k1' }).kl)], [-Infinity], 'unclamped k1 of -inf is -inf');
});

t.test('empty inputs give empty outputs', async (t) => {
  const out = rl.klPenalty(ft([], [0]), ft([], [0]), { estimator: 'k3' });
  t.strictSame([...out.kl.shape], [0]);
  t.strictSame([...out.grad.shape], [0]);
  const out2 = rl.klPenalty(ft([], [3, 0]), ft([], [3, 0]));
  t.strictSame([...out2.kl.shape], [3, 0]);
});

t.test('plain Float32Arrays are accepted (1-D)', async (t) => {
  const out = rl.klPenalty(Float32Array.from(handD), new Float32Array(6), { estimator: 'k2' });
  expectClose(t, data(out.kl), [0.03125, 0.5, 0.5, 0.125, 450, 450], { rtol: 1e-6 }, 'k2');
});

// ---------------------------------------------------------------------------------------------
// (e) Bad input.

t.test('bad input: kinds, shapes, option values', async (t) => {
  const a = ft([1, 2, 3, 4, 5, 6], [2, 3]);
  const b = ft([1, 2, 3, 4, 5, 6], [2, 3]);
  expectError(t, () => rl.klPenalty(Int32Array.from([1, 2]) as never, ft([1, 2])), TypeError,
    /^klPenalty: expected a float32 .*`logprobs` but received Int32Array/);
  expectError(t, () => rl.klPenalty(ft([1, 2]), mt([1, 2]) as never), TypeError, /^klPenalty: expected a float32 .*`refLogprobs` but received a uint8 Tensor/);
  expectError(t, () => rl.klPenalty(a, ft([1, 2, 3, 4, 5, 6], [3, 2])), RangeError, /^klPenalty: `refLogprobs` must have the shape of `logprobs`/);
  expectError(t, () => rl.klPenalty(a, ft([1, 2, 3])), RangeError, /^klPenalty: `refLogprobs`/);
  expectError(t, () => rl.klPenalty(a, b, { estimator: 'k4' as never }), RangeError,
    /^klPenalty: `estimator` must be one of 'k1', 'k2', 'k3', 'abs', not 'k4'/);
  expectError(t, () => rl.klPenalty(a, b, { estimator: 'low_var_kl' as never }), RangeError, /^klPenalty: `estimator`/);
  expectError(t, () => rl.klPenalty(a, b, { preset: 'cleanrl' as never }), RangeError, /^klPenalty: `preset`/);
  for (const v of [0, -1, NaN])
    expectError(t, () => rl.klPenalty(a, b, { clampLogRatio: v }), RangeError, /^klPenalty: `clampLogRatio`/, undefined, `clampLogRatio ${v}`);
  for (const v of [0, -10, NaN])
    expectError(t, () => rl.klPenalty(a, b, { clampOutput: v }), RangeError, /^klPenalty: `clampOutput`/, undefined, `clampOutput ${v}`);
  expectError(t, () => rl.klPenalty(a, b, { clampOutput: '10' as never }), TypeError, /^klPenalty: .*`clampOutput`/);
  expectError(t, () => rl.klPenalty(a, b, { straightThrough: 1 as never }), TypeError, /^klPenalty: expected a boolean for `straightThrough`/);
  expectError(t, () => rl.klPenalty(a, b, 'k3' as never), TypeError, /^klPenalty: expected an options object/);
});

// ---------------------------------------------------------------------------------------------
// (f) Threads, Async.

t.test('bit-identical for 1 and 2 threads', async (t) => {
  const r = rng(107);
  const n = 1 << 20;
  const lp = randomFloats(r, n, 2);
  const ref = randomFloats(r, n, 2);
  for (const estimator of estimators) {
    const runs = [1, 2].map((k) => withThreads(k, () => {
      const o = rl.klPenalty(ft(lp), ft(ref), { estimator, preset: 'verl' });
      return { kl: snapshot(o.kl), grad: snapshot(o.grad) };
    }));
    expectBitIdentical(t, runs[1].kl, runs[0].kl, `${estimator}: kl`);
    expectBitIdentical(t, runs[1].grad, runs[0].grad, `${estimator}: grad`);
  }
});

t.test('klPenalty out: the given tensors are filled, returned and fully overwritten', async (t) => {
  const out = { kl: ft(new Float32Array(6).fill(NaN), [2, 3]), grad: ft(new Float32Array(6).fill(NaN), [2, 3]) };
  const lp = ft(handD.map((d) => d + 1), [2, 3]);
  const refLp = ft(handD.map(() => 1), [2, 3]);
  const res = rl.klPenalty(lp, refLp, { estimator: 'k2', clampOutput: 0.4, out });
  t.equal(res.kl, out.kl, 'kl is out.kl');
  t.equal(res.grad, out.grad, 'grad is out.grad');
  expectClose(t, data(out.kl), [0.03125, 0.4, 0.4, 0.125, 0.4, 0.4], { rtol: 1e-6 }, 'kl filled');
  expectClose(t, data(out.grad), [0.25, 0, 0, 0.5, 0, 0], { rtol: 1e-6 }, 'grad filled, zeros included');
  const res2 = await rl.klPenaltyAsync(lp, refLp, { estimator: 'k1', out });
  t.equal(res2.kl, out.kl, 'async: kl is out.kl');
  expectClose(t, data(out.kl), handD, { rtol: 1e-6 }, 'refilled');
  t.strictSame([...data(out.grad)], [1, 1, 1, 1, 1, 1], 'grad refilled');
  expectError(t, () => rl.klPenalty(lp, refLp, { out: { kl: ft(new Float32Array(6)) } }), RangeError, /^klPenalty: `out\.kl` must have shape \[2, 3\]/);
});

t.test('klPenaltyAsync gives the same bits and rejects bad input', async (t) => {
  const r = rng(109);
  const lp = randomFloats(r, 5000, 2);
  const ref = randomFloats(r, 5000, 2);
  const sync = rl.klPenalty(ft(lp), ft(ref), { estimator: 'k3' });
  const k = snapshot(sync.kl);
  const g = snapshot(sync.grad);
  const asy = await rl.klPenaltyAsync(ft(lp), ft(ref), { estimator: 'k3' });
  expectBitIdentical(t, data(asy.kl), k, 'kl');
  expectBitIdentical(t, data(asy.grad), g, 'grad');
  await expectAsyncRejection(t, 'klPenaltyAsync', () => rl.klPenaltyAsync(ft(lp), ft(ref), { estimator: 'k9' as never }), RangeError,
    /^klPenaltyAsync: `estimator`/);
});

// =============================================================================================
// shapeRewards

// kl rows [0.1..0.4], [1,1,1,1], [2,2,2,2]; mask rows [1,1,1,0], [0,1,1,1], [0,0,0,0]; scores [1, 2, 3].
const sKl = [0.1, 0.2, 0.3, 0.4, 1, 1, 1, 1, 2, 2, 2, 2];
const sMask = [1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0];
const sInputs = (hasEos?: number[]) => ({
  scores: ft([1, 2, 3]), kl: ft(sKl, [3, 4]), mask: mt(sMask, [3, 4]), hasEos: hasEos ? mt(hasEos) : undefined,
});

t.test("hand case: 'last-valid' puts the score on the last valid token; a row with none gets no score", async (t) => {
  const out = rl.shapeRewards(sInputs(), { klCoef: 0.5 });
  t.strictSame([...out.shape], [3, 4]);
  expectClose(t, data(out), [-0.05, -0.1, 0.85, 0, 0, -0.5, -0.5, 1.5, 0, 0, 0, 0], { rtol: 1e-6, atol: 1e-7 }, 'rewards');
  const def = rl.shapeRewards(sInputs(), {});
  expectClose(t, data(def), [-0.005, -0.01, 0.985, 0, 0, -0.05, -0.05, 1.95, 0, 0, 0, 0], { rtol: 1e-6, atol: 1e-7 },
    "default klCoef 0.05, default placement 'last-valid'");
  expectClose(t, data(rl.shapeRewards(sInputs(), { klCoef: 0 })), [0, 0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0], { rtol: 0, atol: 0 }, 'klCoef 0');
});

t.test("hand case: 'after-last' puts it on the first padding slot, or the last valid token when there is none; an empty row at t = 0", async (t) => {
  const out = rl.shapeRewards(sInputs(), { klCoef: 0.5, scorePlacement: 'after-last' });
  expectClose(t, data(out), [-0.05, -0.1, -0.15, 1, 0, -0.5, -0.5, 1.5, 3, 0, 0, 0], { rtol: 1e-6, atol: 1e-7 }, 'rewards');
  // Interior holes: the last valid token is what counts. mask [1,0,1,0] -> last-valid t=2, after-last t=3.
  const holes = { scores: ft([5]), kl: ft([1, 1, 1, 1], [1, 4]), mask: mt([1, 0, 1, 0], [1, 4]) };
  expectClose(t, data(rl.shapeRewards(holes, { klCoef: 1 })), [-1, 0, 4, 0], { rtol: 1e-6 }, 'last-valid with a hole');
  expectClose(t, data(rl.shapeRewards(holes, { klCoef: 1, scorePlacement: 'after-last' })), [-1, 0, -1, 5], { rtol: 1e-6 }, 'after-last with a hole');
});

t.test('hand case: missingEosPenalty is subtracted before scoreClip clamps', async (t) => {
  // hasEos [1,0,0], penalty 1.5: scores [1, 0.5, 1.5]; scoreClip 1: [1, 0.5, 1] (clipping first would give [1, -0.5, -0.5]).
  const pen = rl.shapeRewards(sInputs([1, 0, 0]), { klCoef: 0, missingEosPenalty: 1.5, scorePlacement: 'after-last' });
  expectClose(t, data(pen), [0, 0, 0, 1, 0, 0, 0, 0.5, 1.5, 0, 0, 0], { rtol: 1e-6 }, 'penalty');
  const both = rl.shapeRewards(sInputs([1, 0, 0]), { klCoef: 0, missingEosPenalty: 1.5, scoreClip: 1, scorePlacement: 'after-last' });
  expectClose(t, data(both), [0, 0, 0, 1, 0, 0, 0, 0.5, 1, 0, 0, 0], { rtol: 1e-6 }, 'penalty then clip');
  const clipOnly = rl.shapeRewards({ ...sInputs(), scores: ft([-7, 0.25, 7]) }, { klCoef: 0, scoreClip: 2, scorePlacement: 'after-last' });
  expectClose(t, data(clipOnly), [0, 0, 0, -2, 0, 0, 0, 0.25, 2, 0, 0, 0], { rtol: 1e-6 }, 'scoreClip is symmetric');
  // hasEos without a penalty changes nothing.
  expectClose(t, data(rl.shapeRewards(sInputs([0, 0, 0]), { klCoef: 0.5 })), data(rl.shapeRewards(sInputs(), { klCoef: 0.5 })), { rtol: 0 },
    'hasEos alone changes nothing');
  expectClose(t, data(rl.shapeRewards(sInputs([1, 0, 0]), { klCoef: 0.5, missingEosPenalty: null })), data(rl.shapeRewards(sInputs(), { klCoef: 0.5 })),
    { rtol: 0 }, 'missingEosPenalty null is no penalty');
});

t.test('lib/reference shapeRewardsReference reproduces the hand cases', async (t) => {
  const inputs = { scores: [1, 2, 3], kl: sKl, mask: sMask, hasEos: [1, 0, 0] };
  expectClose(t, shapeRewardsReference(3, 4, inputs, { klCoef: 0.5 }), [-0.05, -0.1, 0.85, 0, 0, -0.5, -0.5, 1.5, 0, 0, 0, 0], { rtol: 1e-12 }, 'last-valid');
  expectClose(t, shapeRewardsReference(3, 4, inputs, { klCoef: 0, missingEosPenalty: 1.5, scoreClip: 1, scorePlacement: 'after-last' }),
    [0, 0, 0, 1, 0, 0, 0, 0.5, 1, 0, 0, 0], { rtol: 1e-12 }, 'after-last, penalty, clip');
});

t.test('random shapeRewards against the reference (both placements, penalty, clip)', async (t) => {
  const r = rng(113);
  const B = 24;
  const T = 40;
  const scores = randomFloats(r, B, 3);
  const klv = randomFloats(r, B * T, 0.5);
  const mask = responseMask(r, B, T, 0.1);
  for (let tt = 0; tt < T; ++tt) mask[3 * T + tt] = 0; // an empty row
  for (let tt = 0; tt < T; ++tt) mask[4 * T + tt] = 1; // a full row
  const eos = randomFlags(r, B, 0.5);
  for (const scorePlacement of ['last-valid', 'after-last'] as const) {
    for (const o of [{}, { missingEosPenalty: 1 }, { scoreClip: 1.5 }, { missingEosPenalty: 2, scoreClip: 2.5 }]) {
      const opts = { klCoef: 0.1, scorePlacement, ...o };
      const got = rl.shapeRewards({ scores: ft(scores), kl: ft(klv, [B, T]), mask: mt(mask, [B, T]), hasEos: mt(eos) }, opts);
      const want = shapeRewardsReference(B, T, { scores, kl: klv, mask, hasEos: eos }, opts);
      expectClose(t, data(got), want, { rtol: 1e-6, atol: 1e-7 }, `${scorePlacement} ${JSON.stringify(o)}`);
    }
  }
});

t.test('shapeRewards edge cases: NaN score reaches only its slot, empty batch, T = 0', async (t) => {
  const out = data(rl.shapeRewards({ ...sInputs(), scores: ft([NaN, 2, 3]) }, { klCoef: 0.5 }));
  t.ok(Number.isNaN(out[2]), 'NaN at the score slot of row 0');
  t.ok([0, 1, 3, 4, 5, 6, 7].every((i) => Number.isFinite(out[i])), 'the rest finite');
  const e = rl.shapeRewards({ scores: ft([], [0]), kl: ft([], [0, 4]), mask: mt([], [0, 4]) }, {});
  t.strictSame([...e.shape], [0, 4]);
  const e2 = rl.shapeRewards({ scores: ft([1, 2]), kl: ft([], [2, 0]), mask: mt([], [2, 0]) }, { scorePlacement: 'after-last' });
  t.strictSame([...e2.shape], [2, 0], 'T = 0: no slot for the score');
});

t.test('shapeRewards bad input', async (t) => {
  const good = sInputs();
  expectError(t, () => rl.shapeRewards(good, { missingEosPenalty: 1 }), RangeError, /^shapeRewards: .*`(hasEos|missingEosPenalty)`/,
    undefined, 'missingEosPenalty without hasEos');
  expectError(t, () => rl.shapeRewards({ ...good, scores: ft([1, 2]) }, {}), RangeError, /^shapeRewards: `scores`/);
  expectError(t, () => rl.shapeRewards({ ...good, mask: mt(sMask, [4, 3]) }, {}), RangeError, /^shapeRewards: `mask` must have the shape of `kl`/);
  expectError(t, () => rl.shapeRewards({ ...good, mask: mt(sMask.slice(0, 8), [2, 4]) }, {}), RangeError, /^shapeRewards: `mask`/);
  expectError(t, () => rl.shapeRewards({ ...good, hasEos: mt([1, 1]) }, {}), RangeError, /^shapeRewards: `hasEos`/);
  expectError(t, () => rl.shapeRewards({ ...good, mask: ft(sMask, [3, 4]) as never }, {}), TypeError,
    /^shapeRewards: expected a uint8 .*`mask` but received a float32 Tensor/);
  expectError(t, () => rl.shapeRewards({ ...good, hasEos: ft([1, 1, 1]) as never }, {}), TypeError, /^shapeRewards: expected a uint8 .*`hasEos`/);
  expectError(t, () => rl.shapeRewards({ ...good, scores: mt([1, 1, 1]) as never }, {}), TypeError, /^shapeRewards: expected a float32 .*`scores`/);
  for (const klCoef of [-0.1, NaN, Infinity])
    expectError(t, () => rl.shapeRewards(good, { klCoef }), RangeError, /^shapeRewards: `klCoef`/, undefined, `klCoef ${klCoef}`);
  for (const scoreClip of [0, -1, NaN])
    expectError(t, () => rl.shapeRewards(good, { scoreClip }), RangeError, /^shapeRewards: `scoreClip`/, undefined, `scoreClip ${scoreClip}`);
  expectError(t, () => rl.shapeRewards(good, { scorePlacement: 'first' as never }), RangeError,
    /^shapeRewards: `scorePlacement` must be one of 'last-valid', 'after-last', not 'first'/);
  expectError(t, () => rl.shapeRewards(null as never, {}), TypeError, /^shapeRewards: /);
  await expectAsyncRejection(t, 'shapeRewardsAsync', () => rl.shapeRewardsAsync(good, { klCoef: -1 }), RangeError, /^shapeRewardsAsync: `klCoef`/);
});

t.test('shapeRewards out: the given tensor is filled, returned and fully overwritten', async (t) => {
  const out = ft(new Float32Array(12).fill(NaN), [3, 4]);
  const res = rl.shapeRewards(sInputs(), { klCoef: 0.5, out });
  t.equal(res, out, 'returns the out tensor');
  expectClose(t, data(out), [-0.05, -0.1, 0.85, 0, 0, -0.5, -0.5, 1.5, 0, 0, 0, 0], { rtol: 1e-6, atol: 1e-7 }, 'filled, zeros included');
  const res2 = await rl.shapeRewardsAsync(sInputs(), { klCoef: 0.5, scorePlacement: 'after-last', out });
  t.equal(res2, out, 'async returns the out tensor');
  expectClose(t, data(out), [-0.05, -0.1, -0.15, 1, 0, -0.5, -0.5, 1.5, 3, 0, 0, 0], { rtol: 1e-6, atol: 1e-7 }, 'refilled');
  expectError(t, () => rl.shapeRewards(sInputs(), { out: ft(new Float32Array(12)) }), RangeError, /^shapeRewards: `out` must have shape \[3, 4\]/);
});

t.test('shapeRewardsAsync gives the same bits; 1 and 2 threads agree bit for bit', async (t) => {
  const r = rng(127);
  const B = 256;
  const T = 512;
  const inputs = { scores: ft(randomFloats(r, B)), kl: ft(randomFloats(r, B * T), [B, T]), mask: mt(responseMask(r, B, T), [B, T]) };
  const sync = snapshot(rl.shapeRewards(inputs, { klCoef: 0.1, scorePlacement: 'after-last' }));
  expectBitIdentical(t, data(await rl.shapeRewardsAsync(inputs, { klCoef: 0.1, scorePlacement: 'after-last' })), sync, 'async');
  const one = withThreads(1, () => snapshot(rl.shapeRewards(inputs, { klCoef: 0.1 })));
  const two = withThreads(2, () => snapshot(rl.shapeRewards(inputs, { klCoef: 0.1 })));
  expectBitIdentical(t, two, one, '2 threads vs 1');
});

// =============================================================================================
// KL controllers

t.test('FixedKLController: value is the coefficient and update changes nothing', async (t) => {
  const c = new rl.FixedKLController(0.05);
  t.equal(c.value, 0.05);
  c.update(100, 256);
  t.equal(c.value, 0.05);
  c.update(0, 256);
  t.equal(c.value, 0.05);
});

t.test('AdaptiveKLController: coef *= 1 + clip(kl/target - 1, -0.2, 0.2) * nSteps/horizon', async (t) => {
  const c = new rl.AdaptiveKLController({ initKlCoef: 0.1, target: 6, horizon: 10000 });
  t.equal(c.value, 0.1, 'starts at initKlCoef');
  c.update(9, 256); // err = 0.5 -> 0.2: 0.1 * (1 + 0.2 * 0.0256) = 0.100512
  expectNear(t, c.value, 0.100512, { rtol: 1e-12 }, 'above target: clipped at +0.2');
  c.update(6.6, 100); // err = 0.1: * (1 + 0.1 * 0.01) = * 1.001
  expectNear(t, c.value, 0.100512 * 1.001, { rtol: 1e-12 }, 'small error: not clipped');
  c.update(0, 1000); // err = -1 -> -0.2: * (1 - 0.02)
  expectNear(t, c.value, 0.100512 * 1.001 * 0.98, { rtol: 1e-12 }, 'below target: clipped at -0.2');
  c.update(6, 5000); // err = 0: unchanged
  expectNear(t, c.value, 0.100512 * 1.001 * 0.98, { rtol: 1e-12 }, 'on target: unchanged');
  // Against the reference update over a run of steps.
  const d = new rl.AdaptiveKLController({ initKlCoef: 0.2, target: 0.1, horizon: 500 });
  let want = 0.2;
  const r = rng(131);
  for (let i = 0; i < 50; ++i) {
    const k = 0.2 * r();
    d.update(k, 16);
    want = adaptiveKlCoefReference(want, k, 16, 0.1, 500);
  }
  expectNear(t, d.value, want, { rtol: 1e-12 }, '50 updates against adaptiveKlCoefReference');
});

t.test('KL controllers: bad arguments', async (t) => {
  expectError(t, () => new rl.FixedKLController(-1), RangeError, /FixedKLController: /);
  expectError(t, () => new rl.FixedKLController(NaN), RangeError, /FixedKLController: /);
  expectError(t, () => new rl.FixedKLController('0.1' as never), TypeError, /FixedKLController: /);
  const ok = { initKlCoef: 0.1, target: 6, horizon: 10000 };
  expectError(t, () => new rl.AdaptiveKLController({ ...ok, target: 0 }), RangeError, /AdaptiveKLController: `target`/);
  expectError(t, () => new rl.AdaptiveKLController({ ...ok, horizon: 0 }), RangeError, /AdaptiveKLController: `horizon`/);
  expectError(t, () => new rl.AdaptiveKLController({ ...ok, initKlCoef: -0.1 }), RangeError, /AdaptiveKLController: `initKlCoef`/);
  expectError(t, () => new rl.AdaptiveKLController({ ...ok, target: undefined as never }), TypeError, /AdaptiveKLController: .*`target`/);
});
