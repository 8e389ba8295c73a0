// rl.pairwiseRewardLoss (SEMANTICS.md §7): hand cases (no margin, scalar and per-pair margins,
// the centering term, margins of +-100), random cases against lib/reference/preference.ts,
// finite-difference gradient checks (reference in float64, op in float32), edge cases (N = 1,
// N = 0, NaN), bad input, thread-count bit-identity and the Async form.
import t from 'tap';

import * as rl from '../lib/index';
import { pairwiseRewardLossReference, PairwiseLossReferenceInputs, PairwiseLossReferenceOptions } from '../lib/reference/preference';
import {
  expectBitIdentical, expectClose, expectError, expectNear, f32, ft, randomFloats, rng, snapshot, T as TapT, withThreads,
} from './helpers/index';
import { expectAsyncRejection, expectCloseScaled, finiteDifferences, finiteDifferencesF32 } from './helpers/policy';

type Opts = NonNullable<Parameters<typeof rl.pairwiseRewardLoss>[1]>;
const statNames = ['accuracy', 'meanMargin', 'meanChosen', 'meanRejected'] as const;

interface Case {
  chosen: Float32Array;
  rejected: Float32Array;
  margin?: number | Float32Array;
}

function run(c: Case, opts: Opts = {}) {
  const N = c.chosen.length;
  const out = rl.pairwiseRewardLoss({
    chosen: ft(c.chosen, [N]), rejected: ft(c.rejected, [N]),
    margin: c.margin === undefined || typeof c.margin === 'number' ? c.margin : ft(c.margin, [N]),
  }, opts);
  return { loss: out.loss, gradChosen: snapshot(out.gradChosen), gradRejected: snapshot(out.gradRejected), stats: out.stats,
    shapes: [[...out.gradChosen.shape], [...out.gradRejected.shape]] };
}

function ref(c: Case, opts: PairwiseLossReferenceOptions = {}) {
  return pairwiseRewardLossReference(c as PairwiseLossReferenceInputs, opts);
}

function expectStats(t: TapT, got: object, want: object, tol: { rtol?: number; atol?: number }, msg: string) {
  for (const k of statNames) expectNear(t, (got as Record<string, number>)[k], (want as Record<string, number>)[k], tol, `${msg}: stats.${k}`);
}

function randomCase(seed: number, N: number, margin: 'none' | 'scalar' | 'array'): Case {
  const r = rng(seed);
  const chosen = randomFloats(r, N, 2, 0.5);
  const rejected = randomFloats(r, N, 2);
  return { chosen, rejected, margin: margin === 'none' ? undefined : margin === 'scalar' ? 0.75 : randomFloats(r, N, 1) };
}

// ---------------------------------------------------------------------------------------------
// (a) Hand cases (python3 + numpy, float64).

t.test('hand case: no margin, no centering', async (t) => {
  // delta = [1, -1]: loss = (softplus(-1) + softplus(1))/2; d/drc = (sig(delta) - 1)/2; d/drr = -d/drc
  const c = { chosen: f32([1, 0]), rejected: f32([0, 1]) };
  const out = run(c);
  expectNear(t, out.loss, 0.8132616875182228, { rtol: 1e-6 }, 'loss');
  expectClose(t, out.gradChosen, [-0.13447071068499755, -0.36552928931500245], { rtol: 1e-6 }, 'gradChosen');
  expectClose(t, out.gradRejected, [0.13447071068499755, 0.36552928931500245], { rtol: 1e-6 }, 'gradRejected');
  t.strictSame(out.shapes, [[2], [2]], 'gradients are [N]');
  expectStats(t, out.stats, { accuracy: 0.5, meanMargin: 0, meanChosen: 0.5, meanRejected: 0.5 }, { rtol: 1e-6, atol: 1e-12 }, 'stats');
  expectNear(t, ref(c).loss, 0.8132616875182228, { rtol: 1e-14 }, 'the reference agrees');
});

t.test('hand case: scalar and per-pair margins with centerCoef 0.01', async (t) => {
  const chosen = f32([2, -1, 0.5]);
  const rejected = f32([1, 1, 0.5]);
  // margin 0.5: delta = [0.5, -2.5, -0.5]; center mean((rc + rr)^2) = (9 + 0 + 1)/3
  const scalar = run({ chosen, rejected, margin: 0.5 }, { centerCoef: 0.01 });
  expectNear(t, scalar.loss, 1.3756812342175877, { rtol: 1e-6 }, 'scalar margin: loss');
  expectClose(t, scalar.gradChosen, [-0.10584688959938181, -0.30804727332625215, -0.20081977706728488], { rtol: 1e-6 }, 'scalar margin: gradChosen');
  expectClose(t, scalar.gradRejected, [0.1458468895993818, 0.30804727332625215, 0.21415311040061819], { rtol: 1e-6 }, 'scalar margin: gradRejected');
  // The stats do not include the margin: meanMargin = mean(rc - rr) = (1 - 2 + 0)/3; accuracy counts rc > rr strictly (0.5 = 0.5 is not).
  expectStats(t, scalar.stats, { accuracy: 1 / 3, meanMargin: -1 / 3, meanChosen: 0.5, meanRejected: 5 / 6 }, { rtol: 1e-6 }, 'stats');
  // per-pair margin [0.5, -1, 0.25]: delta = [0.5, -1, -0.25]
  const arr = run({ chosen, rejected, margin: f32([0.5, -1, 0.25]) }, { centerCoef: 0.01 });
  expectNear(t, arr.loss, 0.9044260305257243, { rtol: 1e-6 }, 'per-pair margin: loss');
  expectClose(t, arr.gradChosen, [-0.10584688959938181, -0.2436861928766683, -0.18072550029526604], { rtol: 1e-6 }, 'per-pair margin: gradChosen');
  expectClose(t, arr.gradRejected, [0.1458468895993818, 0.2436861928766683, 0.19405883362859935], { rtol: 1e-6 }, 'per-pair margin: gradRejected');
  expectStats(t, arr.stats, scalar.stats, { rtol: 1e-12 }, 'stats independent of the margin');
  // A plain Float32Array margin is the same as a Tensor.
  const plain = rl.pairwiseRewardLoss({ chosen, rejected, margin: f32([0.5, -1, 0.25]) }, { centerCoef: 0.01 });
  t.equal(plain.loss, arr.loss, 'Float32Array margin = Tensor margin');
  // centerCoef 0 drops the centering term: same as the default.
  const noCenter = run({ chosen, rejected, margin: 0.5 });
  expectNear(t, noCenter.loss, 1.3756812342175877 - 0.01 * 10 / 3, { rtol: 1e-6 }, 'default centerCoef 0');
  t.equal(run({ chosen, rejected, margin: 0.5 }, { centerCoef: 0 }).loss, noCenter.loss, 'centerCoef 0 = default');
  // The reference agrees with both.
  expectNear(t, ref({ chosen, rejected, margin: 0.5 }, { centerCoef: 0.01 }).loss, 1.3756812342175877, { rtol: 1e-14 }, 'reference, scalar');
  expectNear(t, ref({ chosen, rejected, margin: f32([0.5, -1, 0.25]) }, { centerCoef: 0.01 }).loss, 0.9044260305257243, { rtol: 1e-14 }, 'reference, array');
});

t.test('hand case: margins of +-100 stay exact (softplus, not log(sigmoid))', async (t) => {
  // delta = -100: loss = softplus(100) = 100 (+3.7e-44); d/drc = sig(-100) - 1 = -1, d/drr = 1.
  const hard = run({ chosen: f32([0]), rejected: f32([0]), margin: 100 });
  t.equal(Math.fround(hard.loss), 100, 'delta -100: loss 100');
  t.equal(hard.gradChosen[0], -1, 'delta -100: gradChosen -1');
  t.equal(hard.gradRejected[0], 1, 'delta -100: gradRejected 1');
  // delta = +100: loss = softplus(-100) = 3.72e-44, gradient -sig(-100) = -3.72e-44 (or a flushed 0).
  const easy = run({ chosen: f32([0]), rejected: f32([0]), margin: -100 });
  t.ok(easy.loss >= 0 && easy.loss < 1e-40, `delta 100: loss ${easy.loss} in [0, 1e-40)`);
  t.ok(Math.abs(easy.gradChosen[0]) < 1e-40 && Math.abs(easy.gradRejected[0]) < 1e-40, 'delta 100: gradients ~0, not NaN');
  // The same through the rewards themselves: rc - rr = +-100.
  const viaRewards = run({ chosen: f32([50, -50]), rejected: f32([-50, 50]) });
  expectNear(t, viaRewards.loss, 50, { rtol: 1e-6 }, 'rewards +-50: loss (0 + 100)/2');
  expectClose(t, viaRewards.gradChosen, [0, -0.5], { rtol: 1e-6, atol: 1e-30 }, 'rewards +-50: gradChosen');
  expectClose(t, viaRewards.gradRejected, [0, 0.5], { rtol: 1e-6, atol: 1e-30 }, 'rewards +-50: gradRejected');
  // Far beyond: delta = -1e4 gives loss 1e4, gradient -1 (a naive log(sigmoid) is -inf here).
  const far = run({ chosen: f32([-5000]), rejected: f32([5000]) });
  expectNear(t, far.loss, 1e4, { rtol: 1e-6 }, 'delta -1e4: loss 1e4');
  t.equal(far.gradChosen[0], -1, 'delta -1e4: gradChosen -1');
});

t.test('rewards near the float32 limit: the centring term neither overflows without centerCoef nor is lost with it', async (t) => {
  // (rc + rr)^2 = 4e40 is beyond float32. Without centring it takes no part in the loss: ln 2.
  const c = { chosen: f32([1e20, 1]), rejected: f32([1e20, 1]) };
  const plain = run(c);
  expectNear(t, plain.loss, Math.LN2, { rtol: 1e-6 }, `loss ${plain.loss}`);
  t.same(Array.from(plain.gradChosen), [-0.25, -0.25], 'gradChosen (sig(0) - 1)/2');
  const ref = pairwiseRewardLossReference({ chosen: c.chosen, rejected: c.rejected }, { centerCoef: 0 });
  expectNear(t, plain.loss, ref.loss, { rtol: 1e-6 }, 'as the reference');
  // With centring the loss is huge, and not NaN.
  const centred = run(c, { centerCoef: 0.01 });
  t.ok(!Number.isNaN(centred.loss) && centred.loss > 1e38, `centred loss ${centred.loss}`);
});

// ---------------------------------------------------------------------------------------------
// (b) Random cases against the float64 reference.

t.test('random cases against the reference: margin none / scalar / per-pair x centerCoef 0 / 0.01', async (t) => {
  for (const margin of ['none', 'scalar', 'array'] as const) {
    const c = randomCase(margin === 'none' ? 3 : margin === 'scalar' ? 5 : 7, 1000, margin);
    for (const centerCoef of [0, 0.01]) {
      const got = run(c, { centerCoef });
      const want = ref(c, { centerCoef });
      const name = `margin ${margin}, centerCoef ${centerCoef}`;
      expectNear(t, got.loss, want.loss, { rtol: 1e-5 }, `${name}: loss`);
      expectCloseScaled(t, got.gradChosen, want.gradChosen, 1e-5, `${name}: gradChosen`);
      expectCloseScaled(t, got.gradRejected, want.gradRejected, 1e-5, `${name}: gradRejected`);
      expectStats(t, got.stats, want.stats, { rtol: 1e-5, atol: 1e-6 }, name);
    }
  }
  // A scalar margin is a per-pair margin with every entry equal.
  const c = randomCase(9, 100, 'none');
  const a = run({ ...c, margin: 0.25 }, { centerCoef: 0.01 });
  const b = run({ ...c, margin: new Float32Array(100).fill(0.25) }, { centerCoef: 0.01 });
  expectNear(t, a.loss, b.loss, { rtol: 1e-6 }, 'scalar margin = filled array margin: loss');
  expectCloseScaled(t, a.gradChosen, b.gradChosen, 1e-6, 'scalar margin = filled array margin: gradChosen');
});

// ---------------------------------------------------------------------------------------------
// (c) Finite differences.

t.test('finite differences (float64): the reference gradients are d loss / d chosen and d loss / d rejected', async (t) => {
  const c = randomCase(11, 6, 'array');
  for (const centerCoef of [0, 0.05]) {
    const fc = (x: Float64Array) => pairwiseRewardLossReference({ ...c, chosen: x }, { centerCoef }).loss;
    const fr = (x: Float64Array) => pairwiseRewardLossReference({ ...c, rejected: x }, { centerCoef }).loss;
    const want = ref(c, { centerCoef });
    expectClose(t, want.gradChosen, finiteDifferences(fc, c.chosen), { rtol: 1e-6, atol: 1e-9 }, `centerCoef ${centerCoef}: gradChosen`);
    expectClose(t, want.gradRejected, finiteDifferences(fr, c.rejected), { rtol: 1e-6, atol: 1e-9 }, `centerCoef ${centerCoef}: gradRejected`);
  }
});

t.test("finite differences (float32): the op's gradients are the gradients of the op's own loss", async (t) => {
  const c = randomCase(13, 5, 'array');
  const idx = [0, 1, 2, 3, 4];
  for (const centerCoef of [0, 0.05]) {
    const out = run(c, { centerCoef });
    const fdc = finiteDifferencesF32((x) => run({ ...c, chosen: x }, { centerCoef }).loss, c.chosen, 1e-2, idx);
    const fdr = finiteDifferencesF32((x) => run({ ...c, rejected: x }, { centerCoef }).loss, c.rejected, 1e-2, idx);
    expectClose(t, out.gradChosen, fdc, { rtol: 2e-3, atol: 2e-4 }, `centerCoef ${centerCoef}: gradChosen vs central differences`);
    expectClose(t, out.gradRejected, fdr, { rtol: 2e-3, atol: 2e-4 }, `centerCoef ${centerCoef}: gradRejected vs central differences`);
  }
});

// ---------------------------------------------------------------------------------------------
// (d) Edge cases.

t.test('N = 1 and N = 0', async (t) => {
  // N = 1: delta = 0.5 - (-0.25) - 0 = 0.75; center (0.25)^2
  const one = run({ chosen: f32([0.5]), rejected: f32([-0.25]) }, { centerCoef: 0.1 });
  const want = ref({ chosen: f32([0.5]), rejected: f32([-0.25]) }, { centerCoef: 0.1 });
  expectNear(t, one.loss, want.loss, { rtol: 1e-6 }, 'N = 1: loss');
  expectClose(t, one.gradChosen, want.gradChosen, { rtol: 1e-6 }, 'N = 1: gradChosen');
  expectClose(t, one.gradRejected, want.gradRejected, { rtol: 1e-6 }, 'N = 1: gradRejected');
  t.equal(one.stats.accuracy, 1, 'N = 1: accuracy 1');
  // N = 0: loss 0, empty gradients, stats 0.
  for (const margin of [undefined, 1]) {
    const e = rl.pairwiseRewardLoss({ chosen: ft([], [0]), rejected: ft([], [0]), margin }, { centerCoef: 0.01 });
    t.equal(e.loss, 0, `N = 0 (margin ${margin}): loss 0`);
    t.strictSame([[...e.gradChosen.shape], [...e.gradRejected.shape]], [[0], [0]], 'N = 0: empty gradients');
    for (const k of statNames) t.equal(e.stats[k], 0, `N = 0: stats.${k} 0`);
  }
});

t.test('NaN reaches the loss and that pair\'s gradients only', async (t) => {
  const c = randomCase(17, 6, 'none');
  for (const where of ['chosen', 'rejected', 'margin'] as const) {
    const d: Case = { chosen: Float32Array.from(c.chosen), rejected: Float32Array.from(c.rejected), margin: new Float32Array(6) };
    (d[where] as Float32Array)[2] = NaN;
    const out = run(d);
    t.ok(Number.isNaN(out.loss), `NaN in ${where}: loss NaN`);
    t.ok(Number.isNaN(out.gradChosen[2]) && Number.isNaN(out.gradRejected[2]), `NaN in ${where}: pair 2's gradients NaN`);
    t.ok([0, 1, 3, 4, 5].every((i) => Number.isFinite(out.gradChosen[i]) && Number.isFinite(out.gradRejected[i])),
      `NaN in ${where}: other pairs' gradients finite`);
  }
  const d = { chosen: Float32Array.from(c.chosen), rejected: c.rejected };
  d.chosen[4] = NaN;
  t.ok(Number.isNaN(run(d).stats.meanChosen), 'NaN chosen: meanChosen NaN');
  t.ok(Number.isNaN(run(d).stats.meanMargin), 'NaN chosen: meanMargin NaN');
});

t.test('inputs of the same shape beyond 1-D are pairs element by element; the gradients keep the shape', async (t) => {
  const c = randomCase(21, 6, 'array');
  const flat = run(c, { centerCoef: 0.01 });
  const two = rl.pairwiseRewardLoss({ chosen: ft(c.chosen, [2, 3]), rejected: ft(c.rejected, [2, 3]), margin: ft(c.margin as Float32Array, [2, 3]) },
    { centerCoef: 0.01 });
  t.equal(two.loss, flat.loss, '[2,3] loss = [6] loss');
  t.strictSame([[...two.gradChosen.shape], [...two.gradRejected.shape]], [[2, 3], [2, 3]], 'gradients [2,3]');
  expectBitIdentical(t, snapshot(two.gradChosen), flat.gradChosen, 'gradChosen');
  expectBitIdentical(t, snapshot(two.gradRejected), flat.gradRejected, 'gradRejected');
});

// ---------------------------------------------------------------------------------------------
// (e) Bad input.

t.test('bad input: kinds, dtypes, shapes and option values name the argument', async (t) => {
  const good = () => ({ chosen: ft(new Float32Array(4), [4]), rejected: ft(new Float32Array(4), [4]) });
  const op = (inputs: object, o: object = {}) => () => rl.pairwiseRewardLoss(inputs as never, o as Opts);
  expectError(t, op({ ...good(), chosen: rl.tensor(new Int32Array(4), [4]) }), TypeError, /^pairwiseRewardLoss: .*`chosen`.*int32/);
  expectError(t, op({ ...good(), chosen: [0, 0, 0, 0] }), TypeError, /^pairwiseRewardLoss: .*`chosen` but received an Array/);
  expectError(t, op({ ...good(), rejected: undefined }), TypeError, /^pairwiseRewardLoss: .*`rejected`/);
  expectError(t, op({ ...good(), rejected: ft(new Float32Array(5), [5]) }), RangeError, /^pairwiseRewardLoss: `rejected`/, undefined, 'rejected [5] vs chosen [4]');
  expectError(t, op({ chosen: ft(new Float32Array(6), [2, 3]), rejected: ft(new Float32Array(6), [3, 2]) }), RangeError,
    /^pairwiseRewardLoss: `rejected`/, undefined, 'rejected [3,2] vs chosen [2,3]');
  expectError(t, op({ ...good(), margin: ft(new Float32Array(3), [3]) }), RangeError, /^pairwiseRewardLoss: `margin`/, undefined, 'margin [3] for N = 4');
  expectError(t, op({ ...good(), margin: '1' }), TypeError, /^pairwiseRewardLoss: .*`margin`/, undefined, "margin '1'");
  expectError(t, op({ ...good(), margin: rl.tensor(new Int32Array(4), [4]) }), TypeError, /^pairwiseRewardLoss: .*`margin`/, undefined, 'int32 margin');
  expectError(t, op(null as never), TypeError, /^pairwiseRewardLoss: /);
  expectError(t, op(good(), { centerCoef: '0.01' }), TypeError, /^pairwiseRewardLoss: .*`centerCoef`/, undefined, "centerCoef '0.01'");
  for (const v of [NaN, Infinity, -0.01]) expectError(t, op(good(), { centerCoef: v }), RangeError, /^pairwiseRewardLoss: `centerCoef`/, undefined, `centerCoef ${v}`);
  await expectAsyncRejection(t, 'pairwiseRewardLossAsync', () => rl.pairwiseRewardLossAsync({ ...good(), rejected: ft(new Float32Array(5), [5]) }),
    RangeError, /^pairwiseRewardLossAsync: `rejected`/);
  await expectAsyncRejection(t, 'pairwiseRewardLossAsync', () => rl.pairwiseRewardLossAsync(good(), { centerCoef: NaN }),
    RangeError, /^pairwiseRewardLossAsync: `centerCoef`/);
});

// ---------------------------------------------------------------------------------------------
// (f) Threads, Async.

t.test('bit-identical loss, gradients and stats for 1 and 2 threads', async (t) => {
  for (const margin of ['none', 'array'] as const) {
    const c = randomCase(19, 200003, margin);
    const [one, two] = [1, 2].map((n) => withThreads(n, () => run(c, { centerCoef: 0.01 })));
    t.equal(two.loss, one.loss, `margin ${margin}: loss`);
    expectBitIdentical(t, two.gradChosen, one.gradChosen, `margin ${margin}: gradChosen`);
    expectBitIdentical(t, two.gradRejected, one.gradRejected, `margin ${margin}: gradRejected`);
    for (const k of statNames) t.equal(two.stats[k], one.stats[k], `margin ${margin}: stats.${k}`);
    const again = withThreads(2, () => run(c, { centerCoef: 0.01 }));
    t.equal(again.loss, two.loss, `margin ${margin}: run to run`);
  }
});

t.test('pairwiseRewardLossAsync gives the same result', async (t) => {
  const c = randomCase(23, 5000, 'array');
  const sync = run(c, { centerCoef: 0.01 });
  const a = await rl.pairwiseRewardLossAsync({ chosen: ft(c.chosen), rejected: ft(c.rejected), margin: ft(c.margin as Float32Array) }, { centerCoef: 0.01 });
  t.equal(a.loss, sync.loss, 'loss');
  expectBitIdentical(t, snapshot(a.gradChosen), sync.gradChosen, 'gradChosen');
  expectBitIdentical(t, snapshot(a.gradRejected), sync.gradRejected, 'gradRejected');
  for (const k of statNames) t.equal(a.stats[k], sync.stats[k], `stats.${k}`);
});

t.test('out: the given tensors are filled, returned, and fully overwritten on reuse', async (t) => {
  const c = randomCase(29, 40, 'array');
  const outC = ft(new Float32Array(40).fill(NaN), [40]);
  const outR = ft(new Float32Array(40).fill(NaN), [40]);
  const inputs = { chosen: ft(c.chosen), rejected: ft(c.rejected), margin: ft(c.margin as Float32Array) };
  const res = rl.pairwiseRewardLoss(inputs, { out: { gradChosen: outC, gradRejected: outR } });
  t.equal(res.gradChosen, outC, 'gradChosen is the out tensor');
  t.equal(res.gradRejected, outR, 'gradRejected is the out tensor');
  const want = ref(c);
  expectCloseScaled(t, snapshot(outC), want.gradChosen, 1e-5, 'gradChosen filled');
  expectCloseScaled(t, snapshot(outR), want.gradRejected, 1e-5, 'gradRejected filled');
  const res2 = await rl.pairwiseRewardLossAsync(inputs, { centerCoef: 0.5, out: { gradChosen: outC } });
  t.equal(res2.gradChosen, outC, 'async: gradChosen is the out tensor');
  t.not(res2.gradRejected, outR, 'async: gradRejected not given: a fresh tensor');
  expectCloseScaled(t, snapshot(outC), ref(c, { centerCoef: 0.5 }).gradChosen, 1e-5, 'gradChosen refilled');
  expectError(t, () => rl.pairwiseRewardLoss(inputs, { out: { gradChosen: ft(new Float32Array(39)) } }), RangeError,
    /^pairwiseRewardLoss: `out.gradChosen`|^pairwiseRewardLoss: `out`/, undefined, 'out of the wrong size');
});

t.test('checkFinite names the argument and the first bad index', async (t) => {
  const c = randomCase(31, 8, 'array');
  for (const [arg, key] of [['chosen', 'chosen'], ['rejected', 'rejected'], ['margin', 'margin']] as const) {
    const d: Case = { chosen: Float32Array.from(c.chosen), rejected: Float32Array.from(c.rejected), margin: Float32Array.from(c.margin as Float32Array) };
    (d[key] as Float32Array)[5] = Infinity;
    (d[key] as Float32Array)[6] = NaN;
    expectError(t, () => run(d, { checkFinite: true }), RangeError, new RegExp(`^pairwiseRewardLoss: \`${arg}\` has a non-finite value at index 5`));
    t.doesNotThrow(() => run(d, { checkFinite: false }), `${arg}: checkFinite false: no error`);
  }
  expectError(t, () => run({ ...c, margin: Infinity }, { checkFinite: true }), RangeError, /^pairwiseRewardLoss: `margin`/, undefined, 'an infinite scalar margin');
});

t.test('stats belong to their call: sync results stay put, concurrent Async calls each get their own', async (t) => {
  const a = randomCase(37, 300, 'scalar');
  const b = randomCase(41, 500, 'array');
  const first = run(a);
  const firstStats = { loss: first.loss, ...first.stats };
  run(b);
  t.same({ loss: first.loss, ...first.stats }, firstStats, 'a later call leaves an earlier result as it was');
  const [ra, rb] = await Promise.all([
    rl.pairwiseRewardLossAsync({ chosen: ft(a.chosen), rejected: ft(a.rejected), margin: a.margin }),
    rl.pairwiseRewardLossAsync({ chosen: ft(b.chosen), rejected: ft(b.rejected), margin: ft(b.margin as Float32Array) }),
  ]);
  t.equal(ra.loss, first.loss, 'Async call 1: its own loss');
  expectStats(t, ra.stats, first.stats, { rtol: 0 }, 'Async call 1');
  const wantB = ref(b);
  expectNear(t, rb.loss, wantB.loss, { rtol: 1e-5 }, 'Async call 2: its own loss');
  expectStats(t, rb.stats, wantB.stats, { rtol: 1e-5, atol: 1e-6 }, 'Async call 2');
});

t.test('the addon re-checks the array its stats go into', async (t) => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { native } = require('../lib/native') as typeof import('../lib/native');
  const chosen = f32([1, 0, 1, 0]);
  const rejected = new Float32Array(4);
  const call = (stats: unknown) => () => native().pairwiseRewardLoss(chosen, rejected, null, 0, 0, new Float32Array(4),
    new Float32Array(4), stats as Float64Array, false);
  expectError(t, call(new Float32Array(8)), TypeError,
    /^pairwiseRewardLoss: expected a Float64Array of at least 5 numbers for `stats` but received Float32Array$/);
  expectError(t, call(new Float64Array(4)), TypeError, /at least 5 numbers for `stats` but received Float64Array$/);
  expectError(t, call(null), TypeError, /for `stats` but received null$/);
  const stats = new Float64Array(5).fill(NaN);
  call(stats)();
  t.same(Array.from(stats.subarray(1)), [0.5, 0.5, 0.5, 0], 'accuracy, meanMargin, meanChosen, meanRejected in their slots');
  expectNear(t, stats[0], 0.5 * (Math.log1p(Math.exp(-1)) + Math.LN2), { rtol: 1e-6 }, 'the loss in slot 0');
});
