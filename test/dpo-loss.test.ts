// rl.dpoLoss (SEMANTICS.md §8): a hand case for every loss type (python3 + numpy, float64), the
// defaults, stats, large margins (|beta h| = 100), random cases against
// lib/reference/preference.ts for every type x beta x label smoothing x lengths, finite-difference
// gradient checks (reference in float64, op in float32; bco_pair with its batch shift held
// fixed, as it is detached), edge cases (N = 1, N = 0, NaN), bad input for every argument,
// thread-count bit-identity and the Async form.
//
// The per-pair formulas are TRL's DPOTrainer loss types (sigmoid with OpenRLHF's / TRL <= 0.28's
// cDPO label smoothing; ipo summed as OpenRLHF, or per-token as TRL when lengths are given;
// sigmoid_norm as TRL 1.x); bco_pair is stateless: its shift is the mean of the batch's 2N
// implicit rewards beta*x, beta*y, detached (TRL's running mean after its first update).
import t from 'tap';

import * as rl from '../lib/index';
import {
  DpoLossReferenceOptions, dpoLossReference, dpoLossTypesReference, DpoLossTypeReference, dpoPairLoss,
} from '../lib/reference/preference';
import {
  expectBitIdentical, expectClose, expectError, expectNear, f32, ft, randn, rng, snapshot, T as TapT, withThreads,
} from './helpers/index';
import { expectAsyncRejection, expectCloseScaled, finiteDifferences, finiteDifferencesF32, it32 } from './helpers/policy';
import { expectArgError } from './helpers/preference';

type Opts = NonNullable<Parameters<typeof rl.dpoLoss>[1]>;
const statNames = ['rewardsChosen', 'rewardsRejected', 'accuracy', 'margin'] as const;
const needsLengths = new Set<string>(['sigmoid_norm']);
const usesSmoothing = new Set<string>(['sigmoid', 'robust', 'exo_pair']);

interface Case {
  pc: Float32Array;
  pr: Float32Array;
  rc: Float32Array;
  rr: Float32Array;
  nc: Int32Array | null;
  nr: Int32Array | null;
}

function inputs(c: Case) {
  const N = c.pc.length;
  return {
    policyChosen: ft(c.pc, [N]), policyRejected: ft(c.pr, [N]), refChosen: ft(c.rc, [N]), refRejected: ft(c.rr, [N]),
    chosenLengths: c.nc ? it32(c.nc, [N]) : undefined, rejectedLengths: c.nr ? it32(c.nr, [N]) : undefined,
  };
}

function run(c: Case, opts: Opts = {}) {
  const out = rl.dpoLoss(inputs(c), opts);
  return { loss: out.loss, gradChosen: snapshot(out.gradChosen), gradRejected: snapshot(out.gradRejected), stats: out.stats,
    shapes: [[...out.gradChosen.shape], [...out.gradRejected.shape]] };
}

function ref(c: Case, opts: DpoLossReferenceOptions = {}) {
  return dpoLossReference({ policyChosen: c.pc, policyRejected: c.pr, refChosen: c.rc, refRejected: c.rr, chosenLengths: c.nc,
    rejectedLengths: c.nr }, opts);
}

function expectStats(t: TapT, got: object, want: object, tol: { rtol?: number; atol?: number }, msg: string) {
  for (const k of statNames) expectNear(t, (got as Record<string, number>)[k], (want as Record<string, number>)[k], tol, `${msg}: stats.${k}`);
}

/** Valid options for a type: label smoothing only where it is used (exo_pair needs it > 0). */
function optsFor(lossType: DpoLossTypeReference, beta: number, eps: number): Opts & DpoLossReferenceOptions {
  return { lossType, beta, labelSmoothing: usesSmoothing.has(lossType) ? (lossType === 'exo_pair' && eps === 0 ? 0.05 : eps) : 0 } as Opts & DpoLossReferenceOptions;
}

/** Sequence log-probs around -20 (policy = ref + d, d ~ N(0, dStd)); lengths in [1, 40]. */
function randomCase(seed: number, N: number, dStd = 3, withLengths = true): Case {
  const r = rng(seed);
  const c: Case = { pc: new Float32Array(N), pr: new Float32Array(N), rc: new Float32Array(N), rr: new Float32Array(N),
    nc: withLengths ? new Int32Array(N) : null, nr: withLengths ? new Int32Array(N) : null };
  for (let i = 0; i < N; ++i) {
    c.rc[i] = -20 + 5 * randn(r);
    c.rr[i] = -20 + 5 * randn(r);
    c.pc[i] = c.rc[i] + dStd * randn(r);
    c.pr[i] = c.rr[i] + dStd * randn(r);
    if (c.nc && c.nr) {
      c.nc[i] = 1 + Math.floor(40 * r());
      c.nr[i] = 1 + Math.floor(40 * r());
    }
  }
  return c;
}

// The hand case: x = pc - rc = [1, -0.5], y = pr - rr = [-1, 1], h = [2, -1.5], lengths n_c = [4, 2],
// n_r = [5, 3], beta 0.4 (beta h = [0.8, -0.6], away from the hinge kink), label smoothing 0.1.
const hand: Case = {
  pc: f32([-10, -12]), rc: f32([-11, -11.5]), pr: f32([-14, -9]), rr: f32([-13, -10]), nc: Int32Array.from([4, 2]), nr: Int32Array.from([5, 3]),
};
const handNoLengths: Case = { ...hand, nc: null, nr: null };

// [type (ipo_len: ipo with lengths), loss, gradChosen, gradRejected] (python3 + numpy, float64)
const handTable: [string, number, number[], number[]][] = [
  ['sigmoid', 0.7142943082168316, [-0.042005103774477505, -0.10913126124515911], [0.042005103774477505, 0.10913126124515911]],
  ['robust', 0.6917943082168316, [-0.08700510377447751, -0.15413126124515908], [0.08700510377447751, 0.15413126124515908]],
  ['hinge', 0.9, [-0.2, -0.2], [0.2, 0.2]],
  ['ipo', 4.0625, [0.75, -2.75], [-0.75, 2.75]],
  ['ipo_len', 2.0005555555555556, [-0.2, -0.9166666666666666], [0.16, 0.611111111111111]],
  ['sigmoid_norm', 0.7118978724498816, [-0.022756055381321, -0.055807010587395324], [0.0182048443050568, 0.037204673724930214]],
  ['exo_pair', 0.5206766888694091, [-0.05977597706173748, -0.12799218006251226], [0.05977597706173748, 0.12799218006251226]],
  ['nca_pair', 1.3898732175361346, [-0.020393701966264402, -0.06495019919374334], [0.0401312339887548, 0.0598687660112452]],
  ['bco_pair', 1.3679763383569263, [-0.08267648421653401, -0.11243530017715962], [0.07787215321015561, 0.11732351578346603]],
  ['sppo_hard', 4.125, [-0.25, -1.75], [0.25, 2.25]],
  ['apo_zero', 0.9755731686000129, [-0.048052149148305835, -0.049503314542372], [0.048052149148305835, 0.048052149148305835]],
  ['apo_down', 1.0022677439490786, [0.005270209844246948, 0.003746466451040542], [0.04278193930405889, 0.04575684809133146]],
  ['discopop', 0.7434108633543065, [-0.08986575447440426, -0.12911342340607615], [0.08986575447440426, 0.12911342340607615]],
];

// ---------------------------------------------------------------------------------------------
// (a) Hand cases.

t.test('hand case: every loss type (beta 0.4, label smoothing 0.1 where used)', async (t) => {
  t.equal(handTable.length, dpoLossTypesReference.length + 1, 'the table covers every type (ipo twice)');
  for (const [name, loss, gc, gr] of handTable) {
    const lossType = (name === 'ipo_len' ? 'ipo' : name) as DpoLossTypeReference;
    const c = name === 'ipo' ? handNoLengths : hand;
    const o = { lossType, beta: 0.4, labelSmoothing: usesSmoothing.has(lossType) ? 0.1 : 0 } as Opts;
    const out = run(c, o);
    expectNear(t, out.loss, loss, { rtol: 1e-6 }, `${name}: loss`);
    expectClose(t, out.gradChosen, gc, { rtol: 1e-5, atol: 1e-7 }, `${name}: gradChosen`);
    expectClose(t, out.gradRejected, gr, { rtol: 1e-5, atol: 1e-7 }, `${name}: gradRejected`);
    t.strictSame(out.shapes, [[2], [2]], `${name}: gradients are [N]`);
    // stats: beta x = [0.4, -0.2], beta y = [-0.4, 0.4]; the same for every type
    expectStats(t, out.stats, { rewardsChosen: 0.1, rewardsRejected: 0, accuracy: 0.5, margin: 0.1 }, { rtol: 1e-6, atol: 1e-7 }, name);
    const r = ref(c, o as DpoLossReferenceOptions);
    expectNear(t, r.loss, loss, { rtol: 1e-12 }, `${name}: reference loss`);
    expectClose(t, r.gradChosen, gc, { rtol: 1e-10, atol: 1e-14 }, `${name}: reference gradChosen`);
    expectClose(t, r.gradRejected, gr, { rtol: 1e-10, atol: 1e-14 }, `${name}: reference gradRejected`);
  }
});

t.test('hand case: the defaults are beta 0.1, sigmoid, no label smoothing', async (t) => {
  // z = 0.1 h = [0.2, -0.15]: loss = mean(softplus(-z)), gradChosen = -0.1 sig(-z)/2
  const want = { loss: 0.6845479585855619, gc: [-0.022508300134376102, -0.02687149226718748] };
  for (const o of [{}, { beta: 0.1 }, { lossType: 'sigmoid' }, { labelSmoothing: 0 }, { beta: 0.1, lossType: 'sigmoid', labelSmoothing: 0 }] as Opts[]) {
    const out = run(handNoLengths, o);
    expectNear(t, out.loss, want.loss, { rtol: 1e-6 }, `${JSON.stringify(o)}: loss`);
    expectClose(t, out.gradChosen, want.gc, { rtol: 1e-5 }, `${JSON.stringify(o)}: gradChosen`);
    expectClose(t, out.gradRejected, want.gc.map((g) => -g), { rtol: 1e-5 }, `${JSON.stringify(o)}: gradRejected = -gradChosen`);
    expectStats(t, out.stats, { rewardsChosen: 0.025, rewardsRejected: 0, accuracy: 0.5, margin: 0.025 }, { rtol: 1e-6, atol: 1e-8 }, JSON.stringify(o));
  }
});

t.test('hand case: label smoothing mixes the flipped label in (sigmoid) and corrects for it (robust)', async (t) => {
  // One pair with beta h = 0: sigmoid loss = log 2 whatever e; gradient (e - 1/2) beta.
  // robust: [-(1-e) + e] logsig(0) / (1-2e) = log 2; gradient beta (1/2 - (1-e)/(1-2e)).
  const c: Case = { pc: f32([-5]), rc: f32([-5]), pr: f32([-7]), rr: f32([-7]), nc: null, nr: null };
  for (const e of [0, 0.1, 0.3]) {
    const s = run(c, { beta: 2, labelSmoothing: e });
    expectNear(t, s.loss, Math.LN2, { rtol: 1e-6 }, `sigmoid e ${e}: loss log 2`);
    expectNear(t, s.gradChosen[0], 2 * (e - 0.5), { rtol: 1e-6 }, `sigmoid e ${e}: gradChosen`);
    const r = run(c, { beta: 2, labelSmoothing: e, lossType: 'robust' });
    expectNear(t, r.loss, Math.LN2, { rtol: 1e-6 }, `robust e ${e}: loss log 2`);
    expectNear(t, r.gradChosen[0], 2 * (0.5 - (1 - e) / (1 - 2 * e)), { rtol: 1e-6 }, `robust e ${e}: gradChosen`);
  }
  // e = 0: robust = sigmoid everywhere.
  const rc = randomCase(3, 50, 3, false);
  const a = run(rc, { lossType: 'robust', beta: 0.5 });
  const b = run(rc, { lossType: 'sigmoid', beta: 0.5 });
  expectNear(t, a.loss, b.loss, { rtol: 1e-6 }, 'e = 0: robust = sigmoid (loss)');
  expectCloseScaled(t, a.gradChosen, b.gradChosen, 1e-6, 'e = 0: robust = sigmoid (gradChosen)');
});

t.test('hand case: ipo is summed without lengths (OpenRLHF) and per-token with them (TRL); unit lengths = summed', async (t) => {
  const summed = run(handNoLengths, { lossType: 'ipo', beta: 0.4 });
  const ones: Case = { ...hand, nc: Int32Array.from([1, 1]), nr: Int32Array.from([1, 1]) };
  const unit = run(ones, { lossType: 'ipo', beta: 0.4 });
  expectNear(t, unit.loss, summed.loss, { rtol: 1e-6 }, 'lengths 1: loss = summed');
  expectClose(t, unit.gradChosen, summed.gradChosen, { rtol: 1e-6 }, 'lengths 1: gradChosen = summed');
  const normalised = run(hand, { lossType: 'ipo', beta: 0.4 });
  t.not(normalised.loss, summed.loss, 'lengths change the ipo loss');
});

t.test('lengths given to a type that does not use them are validated but change nothing', async (t) => {
  for (const lossType of dpoLossTypesReference.filter((x) => x !== 'ipo' && !needsLengths.has(x))) {
    const o = optsFor(lossType, 0.4, 0.1);
    const a = run(hand, o);
    const b = run(handNoLengths, o);
    t.equal(a.loss, b.loss, `${lossType}: loss with lengths = without`);
    expectBitIdentical(t, a.gradChosen, b.gradChosen, `${lossType}: gradChosen`);
  }
});

t.test('large margins: |beta h| = 100 gives finite, exact values for every type', async (t) => {
  // x = +-1000, y = 0, beta 0.1: beta x = beta h = +-100. Lengths 1 keep ipo / sigmoid_norm at the same scale.
  const c: Case = { pc: f32([1000, -1000, 0, 0]), rc: f32([0, 0, 0, 0]), pr: f32([0, 0, 1000, -1000]), rr: f32([0, 0, 0, 0]),
    nc: Int32Array.from([1, 1, 1, 1]), nr: Int32Array.from([1, 1, 1, 1]) };
  for (const lossType of dpoLossTypesReference) {
    const o = optsFor(lossType, 0.1, 0.1);
    const got = run(c, o);
    const want = ref(c, o);
    t.ok(Number.isFinite(got.loss), `${lossType}: loss finite (${got.loss})`);
    t.ok(got.gradChosen.every(Number.isFinite) && got.gradRejected.every(Number.isFinite), `${lossType}: gradients finite`);
    expectNear(t, got.loss, want.loss, { rtol: 1e-5 }, `${lossType}: loss = reference`);
    expectCloseScaled(t, got.gradChosen, want.gradChosen, 1e-5, `${lossType}: gradChosen = reference`);
    expectCloseScaled(t, got.gradRejected, want.gradRejected, 1e-5, `${lossType}: gradRejected = reference`);
  }
  // sigmoid: the pair with beta h = -100 has loss 100 and gradient -beta/N.
  const one: Case = { pc: f32([-1000]), rc: f32([0]), pr: f32([0]), rr: f32([0]), nc: null, nr: null };
  const s = run(one, { beta: 0.1 });
  expectNear(t, s.loss, 100, { rtol: 1e-6 }, 'sigmoid, beta h = -100: loss 100');
  expectNear(t, s.gradChosen[0], -0.1, { rtol: 1e-6 }, 'sigmoid, beta h = -100: gradChosen -beta');
  // discopop there: the exp branch is switched off by sig(z/tau) = e^-2000, not inf * 0 = NaN.
  const d = run(one, { beta: 0.1, lossType: 'discopop' });
  expectNear(t, d.loss, 100, { rtol: 1e-6 }, 'discopop, beta h = -100: loss 100 (logistic branch)');
  expectNear(t, d.gradChosen[0], -0.1, { rtol: 1e-6 }, 'discopop, beta h = -100: gradChosen -beta');
});

// ---------------------------------------------------------------------------------------------
// (b) Random cases against the float64 reference.

t.test('random cases against the reference: every type x beta x label smoothing x lengths', async (t) => {
  let n = 0;
  for (const withLengths of [false, true]) {
    const c = randomCase(withLengths ? 5 : 7, 257, 3, withLengths);
    for (const lossType of dpoLossTypesReference) {
      if (needsLengths.has(lossType) && !withLengths) continue;
      for (const beta of [0.1, 1]) {
        for (const eps of usesSmoothing.has(lossType) ? [0, 0.2] : [0]) {
          const o = optsFor(lossType, beta, eps);
          const got = run(c, o);
          const want = ref(c, o);
          const name = `${JSON.stringify(o)}${withLengths ? ' with lengths' : ''}`;
          expectNear(t, got.loss, want.loss, { rtol: 1e-5, atol: 1e-7 }, `${name}: loss`);
          expectCloseScaled(t, got.gradChosen, want.gradChosen, 1e-5, `${name}: gradChosen`);
          expectCloseScaled(t, got.gradRejected, want.gradRejected, 1e-5, `${name}: gradRejected`);
          expectStats(t, got.stats, want.stats, { rtol: 1e-5, atol: 1e-6 }, name);
          ++n;
        }
      }
    }
  }
  // without lengths: 11 types, with: 12; x 2 betas; x 2 label smoothings for sigmoid, robust, exo_pair
  t.equal(n, 2 * (8 + 3 * 2) + 2 * (9 + 3 * 2), 'combinations');
  // A non-default discopop tau (TRL DPOConfig.discopop_tau) changes the loss as the reference does.
  const c = randomCase(8, 64, 2, false);
  const got = run(c, { lossType: 'discopop', beta: 0.5, discopopTau: 0.5 } as Opts);
  const want = ref(c, { lossType: 'discopop', beta: 0.5, discopopTau: 0.5 });
  expectNear(t, got.loss, want.loss, { rtol: 1e-5 }, 'discopop tau 0.5: loss');
  expectCloseScaled(t, got.gradChosen, want.gradChosen, 1e-5, 'discopop tau 0.5: gradChosen');
  t.not(want.loss, ref(c, { lossType: 'discopop', beta: 0.5 }).loss, 'tau 0.5 differs from the default 0.05 here');
});

t.test('plain TypedArrays are accepted as the 1-D inputs', async (t) => {
  const c = randomCase(9, 20);
  const out = rl.dpoLoss({ policyChosen: c.pc, policyRejected: c.pr, refChosen: c.rc, refRejected: c.rr,
    chosenLengths: c.nc as Int32Array, rejectedLengths: c.nr as Int32Array }, { lossType: 'sigmoid_norm', beta: 0.3 });
  expectNear(t, out.loss, ref(c, { lossType: 'sigmoid_norm', beta: 0.3 }).loss, { rtol: 1e-5 }, 'TypedArray inputs');
});

// ---------------------------------------------------------------------------------------------
// (c) Finite differences.

t.test('finite differences (float64): the reference gradients are d loss / d policyChosen, d policyRejected', async (t) => {
  const c = randomCase(11, 5, 3, true);
  for (const lossType of dpoLossTypesReference) {
    for (const withLengths of lossType === 'ipo' ? [false, true] : [true]) {
      const cc: Case = withLengths ? c : { ...c, nc: null, nr: null };
      const o = optsFor(lossType, 0.3, 0.1);
      const want = ref(cc, o);
      // bco_pair's shift is detached: differentiate with it held at its value.
      const lossOf = (pc: ArrayLike<number>, pr: ArrayLike<number>) => {
        if (lossType !== 'bco_pair') return dpoLossReference({ policyChosen: pc, policyRejected: pr, refChosen: cc.rc, refRejected: cc.rr,
          chosenLengths: cc.nc, rejectedLengths: cc.nr }, o).loss;
        let s = 0;
        for (let i = 0; i < pc.length; ++i) {
          s += dpoPairLoss('bco_pair', pc[i] - cc.rc[i], pr[i] - cc.rr[i], NaN, NaN, { beta: 0.3, eps: 0, tau: 0.05, delta: want.bcoDelta })[0];
        }
        return s / pc.length;
      };
      const name = `${lossType}${lossType === 'ipo' ? (withLengths ? ' with lengths' : ' summed') : ''}`;
      if (lossType === 'hinge') {
        // The finite differences need beta h away from the hinge's kink at 1.
        for (let i = 0; i < 5; ++i) t.ok(Math.abs(0.3 * ((c.pc[i] - c.rc[i]) - (c.pr[i] - c.rr[i])) - 1) > 1e-3, `hinge: pair ${i} away from the kink`);
      }
      expectClose(t, want.gradChosen, finiteDifferences((x) => lossOf(x, cc.pr), cc.pc), { rtol: 1e-6, atol: 1e-9 }, `${name}: gradChosen`);
      expectClose(t, want.gradRejected, finiteDifferences((x) => lossOf(cc.pc, x), cc.pr), { rtol: 1e-6, atol: 1e-9 }, `${name}: gradRejected`);
    }
  }
});

t.test("finite differences (float32): the op's gradients are the gradients of the op's own loss (bco_pair: its shift is detached)", async (t) => {
  // Log-ratios of a few units, beta 0.1: every loss is smooth on the scale of the step.
  const c = randomCase(13, 4, 4, true);
  const idx = [0, 1, 2, 3];
  for (const lossType of dpoLossTypesReference) {
    const o = optsFor(lossType, 0.1, 0.1);
    const out = run(c, o);
    const fdc = finiteDifferencesF32((x) => run({ ...c, pc: x }, o).loss, c.pc, 1e-2, idx);
    const fdr = finiteDifferencesF32((x) => run({ ...c, pr: x }, o).loss, c.pr, 1e-2, idx);
    const tol = (fd: Float64Array) => ({ rtol: 2e-3, atol: 2e-3 * Math.max(...[...fd].map(Math.abs)) });
    if (lossType === 'bco_pair') {
      // The full derivative of the returned loss includes the shift's own dependence on the inputs;
      // the gradient does not (TRL detaches it): they differ by the same amount on every element.
      const want = ref(c, o);
      expectCloseScaled(t, out.gradChosen, want.gradChosen, 1e-5, 'bco_pair: gradChosen = detached reference');
      const shiftC = [...fdc].map((g, i) => g - out.gradChosen[i]);
      const shiftR = [...fdr].map((g, i) => g - out.gradRejected[i]);
      expectClose(t, [...shiftC, ...shiftR], new Array(8).fill(shiftC[0]), { rtol: 5e-3, atol: 5e-5 }, 'bco_pair: FD - grad is one constant (the shift term)');
      continue;
    }
    expectClose(t, out.gradChosen, fdc, tol(fdc), `${lossType}: gradChosen vs central differences`);
    expectClose(t, out.gradRejected, fdr, tol(fdr), `${lossType}: gradRejected vs central differences`);
  }
});

// ---------------------------------------------------------------------------------------------
// (d) Edge cases.

t.test('N = 1 and N = 0 for every type', async (t) => {
  const one = randomCase(17, 1, 2, true);
  for (const lossType of dpoLossTypesReference) {
    const o = optsFor(lossType, 0.2, 0.1);
    const got = run(one, o);
    const want = ref(one, o);
    expectNear(t, got.loss, want.loss, { rtol: 1e-5, atol: 1e-7 }, `${lossType}, N = 1: loss`);
    expectCloseScaled(t, got.gradChosen, want.gradChosen, 1e-5, `${lossType}, N = 1: gradChosen`);
    expectCloseScaled(t, got.gradRejected, want.gradRejected, 1e-5, `${lossType}, N = 1: gradRejected`);
    const empty: Case = { pc: f32([]), pr: f32([]), rc: f32([]), rr: f32([]), nc: new Int32Array(0), nr: new Int32Array(0) };
    const e = run(empty, o);
    t.equal(e.loss, 0, `${lossType}, N = 0: loss 0`);
    t.strictSame(e.shapes, [[0], [0]], `${lossType}, N = 0: empty gradients`);
    for (const k of statNames) t.equal(e.stats[k], 0, `${lossType}, N = 0: stats.${k} 0`);
  }
});

t.test('NaN reaches the loss and the gradients it touches, as in the reference', async (t) => {
  for (const where of ['pc', 'rr'] as const) {
    const c = randomCase(19, 5, 3, true);
    c[where][3] = NaN;
    for (const lossType of dpoLossTypesReference) {
      const o = optsFor(lossType, 0.3, 0.1);
      const got = run(c, o);
      const want = ref(c, o);
      t.ok(Number.isNaN(got.loss), `${lossType}, NaN in ${where}: loss NaN (got ${got.loss})`);
      // expectClose matches NaN with NaN only: the NaN pattern of the gradients is the reference's
      // (the pair's own gradients; every pair's for bco_pair, whose shift is a batch mean).
      expectCloseScaled(t, got.gradChosen, want.gradChosen, 1e-5, `${lossType}, NaN in ${where}: gradChosen`);
      expectCloseScaled(t, got.gradRejected, want.gradRejected, 1e-5, `${lossType}, NaN in ${where}: gradRejected`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// (e) Bad input.

t.test('bad input: kinds, dtypes and shapes of every array argument', async (t) => {
  const N = 3;
  const good = () => ({ policyChosen: ft(new Float32Array(N)), policyRejected: ft(new Float32Array(N)), refChosen: ft(new Float32Array(N)),
    refRejected: ft(new Float32Array(N)), chosenLengths: it32([1, 2, 3]), rejectedLengths: it32([3, 2, 1]) });
  const op = (inputs: object, o: object = {}) => () => rl.dpoLoss(inputs as never, o as Opts);
  for (const arg of ['policyChosen', 'policyRejected', 'refChosen', 'refRejected'] as const) {
    expectError(t, op({ ...good(), [arg]: rl.tensor(new Int32Array(N)) }), TypeError, new RegExp(`^dpoLoss: .*\`${arg}\`.*int32`), undefined, `${arg} int32`);
    expectError(t, op({ ...good(), [arg]: [0, 0, 0] }), TypeError, new RegExp(`^dpoLoss: .*\`${arg}\` but received an Array`), undefined, `${arg} Array`);
    expectError(t, op({ ...good(), [arg]: undefined }), TypeError, new RegExp(`^dpoLoss: .*\`${arg}\``), undefined, `${arg} missing`);
    if (arg !== 'policyChosen') {
      expectError(t, op({ ...good(), [arg]: ft(new Float32Array(N + 1)) }), RangeError, new RegExp(`^dpoLoss: \`${arg}\``), undefined, `${arg} [N+1]`);
    }
    // Same-size inputs of any shape are pairs element by element (as pairwiseRewardLoss); a shape of
    // another size is an error naming the argument that disagrees with policyChosen.
    if (arg !== 'policyChosen') {
      expectError(t, op({ ...good(), [arg]: ft(new Float32Array(2 * N), [N, 2]) }), RangeError, new RegExp(`^dpoLoss: \`${arg}\``), undefined, `${arg} [N,2]`);
    }
  }
  for (const arg of ['chosenLengths', 'rejectedLengths'] as const) {
    expectError(t, op({ ...good(), [arg]: ft([1, 2, 3]) }), TypeError, new RegExp(`^dpoLoss: .*\`${arg}\`.*float32`), undefined, `${arg} float32`);
    expectError(t, op({ ...good(), [arg]: it32([1, 2]) }), RangeError, new RegExp(`^dpoLoss: \`${arg}\``), undefined, `${arg} [N-1]`);
    for (const bad of [0, -2]) {
      const v = [1, 2, 3];
      v[1] = bad;
      for (const lossType of ['sigmoid_norm', 'ipo', 'sigmoid'] as const) {
        expectError(t, op({ ...good(), [arg]: it32(v) }, { lossType }), RangeError, new RegExp(`^dpoLoss: \`${arg}\``), undefined,
          `${lossType}: ${arg} holding ${bad}`);
      }
    }
  }
  expectError(t, op(null as never), TypeError, /^dpoLoss: /);
  expectError(t, () => rl.dpoLoss(good(), 'sigmoid' as never), TypeError, /^dpoLoss: expected an options object/);
});

t.test('bad input: option values', async (t) => {
  const N = 3;
  const base = { policyChosen: ft(new Float32Array(N)), policyRejected: ft(new Float32Array(N)), refChosen: ft(new Float32Array(N)),
    refRejected: ft(new Float32Array(N)) };
  const withLengths = { ...base, chosenLengths: it32([1, 2, 3]), rejectedLengths: it32([3, 2, 1]) };
  const bad = (o: object, cls: typeof RangeError | typeof TypeError, re: RegExp, what: string, inputs: object = withLengths) =>
    expectError(t, () => rl.dpoLoss(inputs as never, o as Opts), cls, re, undefined, what);
  bad({ lossType: 'kto_pair' }, RangeError, /^dpoLoss: `lossType` must be one of .*'sigmoid'.*'discopop'.*not 'kto_pair'/, 'unknown lossType');
  bad({ lossType: 'aot' }, RangeError, /^dpoLoss: `lossType`/, 'lossType aot (not in this family)');
  expectArgError(t, () => rl.dpoLoss(withLengths, { lossType: 3 } as never), 'dpoLoss', /`lossType`/, 'lossType a number');
  for (const v of [0, -0.1, NaN, Infinity]) bad({ beta: v }, RangeError, /^dpoLoss: `beta`/, `beta ${v}`);
  bad({ beta: '0.1' }, TypeError, /^dpoLoss: .*`beta`/, "beta '0.1'");
  for (const lossType of ['sigmoid', 'robust', 'exo_pair', 'ipo']) {
    for (const v of [-0.1, 0.5, 0.7, 1, NaN]) bad({ lossType, labelSmoothing: v }, RangeError, /^dpoLoss: `labelSmoothing`/, `${lossType}: labelSmoothing ${v}`);
  }
  bad({ labelSmoothing: '0.1' }, TypeError, /^dpoLoss: .*`labelSmoothing`/, "labelSmoothing '0.1'");
  bad({ lossType: 'exo_pair' }, RangeError, /^dpoLoss: `labelSmoothing`/, 'exo_pair with the default labelSmoothing 0');
  bad({ lossType: 'exo_pair', labelSmoothing: 0 }, RangeError, /^dpoLoss: `labelSmoothing`/, 'exo_pair with labelSmoothing 0');
  bad({ lossType: 'sigmoid_norm' }, RangeError, /^dpoLoss: `(chosenLengths|rejectedLengths)`/, 'sigmoid_norm without lengths', base);
  bad({ lossType: 'sigmoid_norm' }, RangeError, /^dpoLoss: `rejectedLengths`/, 'sigmoid_norm with chosenLengths only',
    { ...base, chosenLengths: it32([1, 2, 3]) });
  bad({ lossType: 'sigmoid_norm' }, RangeError, /^dpoLoss: `chosenLengths`/, 'sigmoid_norm with rejectedLengths only',
    { ...base, rejectedLengths: it32([1, 2, 3]) });
  // Valid edge values do not throw.
  t.doesNotThrow(() => rl.dpoLoss(base, { labelSmoothing: 0.499 }), 'labelSmoothing 0.499 is valid');
  t.doesNotThrow(() => rl.dpoLoss(base, { lossType: 'robust', labelSmoothing: 0.49 }), 'robust 0.49 is valid');
  t.doesNotThrow(() => rl.dpoLoss(base, { lossType: 'ipo' }), 'ipo without lengths is valid');
  await expectAsyncRejection(t, 'dpoLossAsync', () => rl.dpoLossAsync(base, { lossType: 'sigmoid_norm' }), RangeError,
    /^dpoLossAsync: `(chosenLengths|rejectedLengths)`/);
  await expectAsyncRejection(t, 'dpoLossAsync', () => rl.dpoLossAsync(base, { lossType: 'nope' as never }), RangeError, /^dpoLossAsync: `lossType`/);
  expectArgError(t, () => rl.dpoLoss(base, { lossType: 'exo_pair', labelSmoothing: 0 }), 'dpoLoss', /labelSmoothing/, 'exo_pair message names labelSmoothing');
});

// ---------------------------------------------------------------------------------------------
// (f) Threads, Async.

t.test('bit-identical loss, gradients and stats for 1 and 2 threads, every type', async (t) => {
  const c = randomCase(23, 100003, 3, true);
  for (const lossType of dpoLossTypesReference) {
    const o = optsFor(lossType, 0.2, 0.1);
    const [one, two] = [1, 2].map((n) => withThreads(n, () => run(c, o)));
    t.equal(two.loss, one.loss, `${lossType}: loss`);
    expectBitIdentical(t, two.gradChosen, one.gradChosen, `${lossType}: gradChosen`);
    expectBitIdentical(t, two.gradRejected, one.gradRejected, `${lossType}: gradRejected`);
    for (const k of statNames) t.equal(two.stats[k], one.stats[k], `${lossType}: stats.${k}`);
  }
});

t.test('dpoLossAsync gives the same result', async (t) => {
  const c = randomCase(29, 3000, 3, true);
  for (const lossType of ['sigmoid', 'ipo', 'bco_pair', 'discopop'] as const) {
    const o = optsFor(lossType, 0.2, 0.1);
    const sync = run(c, o);
    const a = await rl.dpoLossAsync(inputs(c), o);
    t.equal(a.loss, sync.loss, `${lossType}: loss`);
    expectBitIdentical(t, snapshot(a.gradChosen), sync.gradChosen, `${lossType}: gradChosen`);
    expectBitIdentical(t, snapshot(a.gradRejected), sync.gradRejected, `${lossType}: gradRejected`);
    for (const k of statNames) t.equal(a.stats[k], sync.stats[k], `${lossType}: stats.${k}`);
  }
});

t.test('out: the given tensors are filled, returned, and fully overwritten on reuse', async (t) => {
  const c = randomCase(31, 50, 3, true);
  const outC = ft(new Float32Array(50).fill(NaN));
  const outR = ft(new Float32Array(50).fill(NaN));
  const res = rl.dpoLoss(inputs(c), { lossType: 'ipo', beta: 0.2, out: { gradChosen: outC, gradRejected: outR } });
  t.equal(res.gradChosen, outC, 'gradChosen is the out tensor');
  t.equal(res.gradRejected, outR, 'gradRejected is the out tensor');
  expectCloseScaled(t, snapshot(outC), ref(c, { lossType: 'ipo', beta: 0.2 }).gradChosen, 1e-5, 'gradChosen filled');
  expectCloseScaled(t, snapshot(outR), ref(c, { lossType: 'ipo', beta: 0.2 }).gradRejected, 1e-5, 'gradRejected filled');
  const res2 = await rl.dpoLossAsync(inputs(c), { lossType: 'nca_pair', out: { gradChosen: outC, gradRejected: outR } });
  t.equal(res2.gradRejected, outR, 'async: gradRejected is the out tensor');
  expectCloseScaled(t, snapshot(outC), ref(c, { lossType: 'nca_pair' }).gradChosen, 1e-5, 'gradChosen refilled');
  expectCloseScaled(t, snapshot(outR), ref(c, { lossType: 'nca_pair' }).gradRejected, 1e-5, 'gradRejected refilled');
  expectError(t, () => rl.dpoLoss(inputs(c), { out: { gradRejected: ft(new Float32Array(49)) } }), RangeError,
    /^dpoLoss: `out(\.gradRejected)?`/, undefined, 'out of the wrong size');
});

t.test('checkFinite names the argument and the first bad index', async (t) => {
  const c = randomCase(37, 8, 3, false);
  for (const [arg, key] of [['policyChosen', 'pc'], ['policyRejected', 'pr'], ['refChosen', 'rc'], ['refRejected', 'rr']] as const) {
    const d: Case = { ...c, [key]: Float32Array.from(c[key]) };
    d[key][4] = -Infinity;
    d[key][7] = NaN;
    expectError(t, () => run(d, { checkFinite: true }), RangeError, new RegExp(`^dpoLoss: \`${arg}\` has a non-finite value at index 4`));
    t.doesNotThrow(() => run(d, { checkFinite: false }), `${arg}: checkFinite false: no error`);
  }
});
