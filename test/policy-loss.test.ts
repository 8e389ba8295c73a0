// rl.ppoPolicyLoss (SEMANTICS.md §5): hand cases (clipping, dual clip, asymmetric clip, far
// ratios, every aggregation, [B] advantages, sequence-level importance), random cases against
// lib/reference/policy.ts, finite-difference gradient checks (reference in float64, op in
// float32), edge cases, presets, bad input, thread-count bit-identity, Async and `out`.
import t from 'tap';

import * as rl from '../lib/index';
import {
  AggregationReference, aggregationsReference, PolicyLossReferenceOptions, ppoPolicyLossReference,
} from '../lib/reference/policy';
import {
  cpuPaths, referencePath, data, expectBitIdentical, expectClose, expectError, expectNear, f32, ft, mt, randomFloats, responseMask, rng, Rng,
  snapshot, T as TapT, withCpuPath, withThreads,
} from './helpers/index';
import {
  advantagesAwayFromZero, expectAsyncRejection, expectCloseScaled, finiteDifferences, finiteDifferencesF32, kinkFreeLogRatio,
} from './helpers/policy';

type Opts = NonNullable<Parameters<typeof rl.ppoPolicyLoss>[1]>;
const statNames = ['clipfrac', 'clipfracLower', 'approxKl', 'approxKlK3', 'ppoKl'] as const;
const ln = Math.log;

interface Case {
  B: number;
  T: number;
  lp: Float32Array;
  old: Float32Array;
  A: Float32Array;
  m: Uint8Array | null;
}

function run(c: Case, opts: Opts = {}, flat = false) {
  const shape = flat ? [c.B * c.T] : [c.B, c.T];
  const aShape = c.A.length === c.B * c.T ? shape : [c.B];
  const out = rl.ppoPolicyLoss({
    logprobs: ft(c.lp, shape), oldLogprobs: ft(c.old, shape), advantages: ft(c.A, aShape), mask: c.m ? mt(c.m, shape) : undefined,
  }, opts);
  return { loss: out.loss, grad: snapshot(out.grad), stats: out.stats, shape: [...out.grad.shape] };
}

function ref(c: Case, opts: PolicyLossReferenceOptions = {}) {
  return ppoPolicyLossReference(c.B, c.T, { logprobs: c.lp, oldLogprobs: c.old, advantages: c.A, mask: c.m }, opts);
}

/** A case from per-token log-ratios d (old = a random log-prob, lp = old + d). */
function caseFromD(B: number, T: number, d: number[] | Float32Array, A: number[] | Float32Array, m: number[] | Uint8Array | null = null, r?: Rng): Case {
  const old = new Float32Array(B * T);
  const lp = new Float32Array(B * T);
  for (let i = 0; i < B * T; ++i) {
    old[i] = r ? -0.5 - 3 * r() : 0;
    lp[i] = old[i] + d[i];
  }
  return { B, T, lp, old, A: Float32Array.from(A), m: m === null ? null : Uint8Array.from(m) };
}

function expectStats(t: TapT, got: object, want: object, tol: { rtol?: number; atol?: number }, msg: string) {
  for (const k of statNames) expectNear(t, (got as Record<string, number>)[k], (want as Record<string, number>)[k], tol, `${msg}: stats.${k}`);
}

function randomCase(seed: number, B: number, T: number, dStd = 0.4, perRow = false): Case {
  const r = rng(seed);
  const m = responseMask(r, B, T, 0.1);
  if (B > 5) for (let t = 0; t < T; ++t) m[5 * T + t] = 0; // one empty row
  const old = randomFloats(r, B * T, 1, -2);
  const d = randomFloats(r, B * T, dStd);
  const lp = new Float32Array(B * T);
  for (let i = 0; i < B * T; ++i) lp[i] = old[i] + d[i];
  return { B, T, lp, old, A: randomFloats(r, perRow ? B : B * T), m };
}

/** A kink-free case: per-token (or, for sequence importance, per-row) log-ratios in the bands of kinkFreeLogRatio. */
function kinkFreeCase(seed: number, B: number, T: number, sequence: boolean, far: boolean, withMask: boolean): Case {
  const r = rng(seed);
  const d = new Float32Array(B * T);
  for (let b = 0; b < B; ++b) {
    const target = kinkFreeLogRatio(r, far);
    for (let t = 0; t < T; ++t) d[b * T + t] = sequence ? target + 0.1 * (r() - 0.5) : kinkFreeLogRatio(r, far);
  }
  const m = withMask ? responseMask(r, B, T, 0.2) : null;
  if (m) for (let b = 0; b < B; ++b) m[b * T] = 1; // no empty rows: a row's tokens must be away from kinks too
  return caseFromD(B, T, d, advantagesAwayFromZero(r, B * T), m, r);
}

// ---------------------------------------------------------------------------------------------
// (a) Hand cases.

t.test('hand case: the four branches of the clipped loss (clip 0.2, token-mean)', async (t) => {
  // r = [1.5, 0.5, 1.5, 0.5], A = [1, 1, -1, -1]:
  //   A=1, r=1.5:  max(-1.5, -1.2) = -1.2  clipped, grad 0
  //   A=1, r=0.5:  max(-0.5, -0.8) = -0.5  grad -A r = -0.5
  //   A=-1, r=1.5: max(1.5, 1.2) = 1.5     grad 1.5
  //   A=-1, r=0.5: max(0.5, 0.8) = 0.8     clipped, grad 0
  // loss = (-1.2 - 0.5 + 1.5 + 0.8)/4 = 0.15; grad = [0, -0.5, 1.5, 0]/4; clipfrac 2/4
  const c = caseFromD(1, 4, [ln(1.5), ln(0.5), ln(1.5), ln(0.5)], [1, 1, -1, -1]);
  const out = run(c);
  expectNear(t, out.loss, 0.15, { rtol: 1e-6 }, 'loss');
  expectClose(t, out.grad, [0, -0.125, 0.375, 0], { rtol: 1e-6, atol: 1e-9 }, 'grad');
  t.strictSame(out.shape, [1, 4], 'grad has the input shape');
  expectStats(t, out.stats, { clipfrac: 0.5, clipfracLower: 0, approxKl: 0.16121374195284172, approxKlK3: 0.14384103622589045,
    ppoKl: 0.14384103622589045 }, { rtol: 1e-6 }, 'stats');
  t.equal(run(c, { clipfracMode: 'ratio' }).stats.clipfrac, 1, "clipfracMode 'ratio': |r - 1| > 0.2 on all four");
  expectNear(t, ref(c).loss, 0.15, { rtol: 1e-6 }, 'the reference agrees');
});

t.test('hand case: dual clip c = 3 caps the loss of negative advantages; clipfracLower counts it', async (t) => {
  // r = [5, 2, 5, 0.5], A = [-1, -1, 1, -2]:
  //   A=-1, r=5:   max(5, 1.2) = 5 -> min(5, 3) = 3   dual-clipped, grad 0
  //   A=-1, r=2:   max(2, 1.2) = 2                    grad 2
  //   A=1,  r=5:   max(-5, -1.2) = -1.2               clipped, grad 0
  //   A=-2, r=0.5: max(1, 1.6) = 1.6 (< 6)            clipped, grad 0
  // loss = (3 + 2 - 1.2 + 1.6)/4 = 1.35; without the dual clip (5 + 2 - 1.2 + 1.6)/4 = 1.85
  const c = caseFromD(1, 4, [ln(5), ln(2), ln(5), ln(0.5)], [-1, -1, 1, -2]);
  const dual = run(c, { dualClip: 3 });
  expectNear(t, dual.loss, 1.35, { rtol: 1e-6 }, 'loss with dual clip');
  expectClose(t, dual.grad, [0, 0.5, 0, 0], { rtol: 1e-6, atol: 1e-9 }, 'grad with dual clip');
  expectStats(t, dual.stats, { clipfrac: 0.5, clipfracLower: 0.25, approxKl: 0.767685851974609, approxKlK3: 1.3202810437829493,
    ppoKl: -0.80471895621705 }, { rtol: 1e-6 }, 'stats with dual clip');
  const plain = run(c);
  expectNear(t, plain.loss, 1.85, { rtol: 1e-6 }, 'loss without');
  expectClose(t, plain.grad, [1.25, 0.5, 0, 0], { rtol: 1e-6, atol: 1e-9 }, 'grad without');
  t.equal(plain.stats.clipfracLower, 0, 'clipfracLower 0 without the dual clip');
  t.strictSame(run(c, { dualClip: null }), plain, 'dualClip null is off');
  // c = 6 is above every token's loss: same as no dual clip.
  expectNear(t, run(c, { dualClip: 6 }).loss, 1.85, { rtol: 1e-6 }, 'c = 6 never binds here');
});

t.test('hand case: asymmetric clip (clipHigh, DAPO clip-higher; clipLow)', async (t) => {
  // r = [1.25, 0.75], A = [1, -1]. Symmetric 0.2: both clipped: [-1.2, 0.8], grad 0, loss -0.2.
  // clipLow 0.3, clipHigh 0.28: neither clipped: [-1.25, 0.75], grad [-1.25, 0.75]/2, loss -0.25.
  const c = caseFromD(1, 2, [ln(1.25), ln(0.75)], [1, -1]);
  const sym = run(c);
  expectNear(t, sym.loss, -0.2, { rtol: 1e-6 }, 'symmetric: loss');
  t.strictSame([...sym.grad].map(Math.abs), [0, 0], 'symmetric: both clipped');
  t.equal(sym.stats.clipfrac, 1);
  const asym = run(c, { clipLow: 0.3, clipHigh: 0.28 });
  expectNear(t, asym.loss, -0.25, { rtol: 1e-6 }, 'asymmetric: loss');
  expectClose(t, asym.grad, [-0.625, 0.375], { rtol: 1e-6 }, 'asymmetric: grad');
  t.equal(asym.stats.clipfrac, 0);
  // clipHigh defaults to clipLow: clipLow 0.3 alone also lets r = 1.25 through.
  expectNear(t, run(c, { clipLow: 0.3 }).loss, -0.25, { rtol: 1e-6 }, 'clipHigh defaults to clipLow');
  // clipHigh > 1 is allowed: r = 1.25 up to 2.5.
  expectNear(t, run(caseFromD(1, 1, [ln(2.25)], [1]), { clipHigh: 1.5 }).loss, -2.25, { rtol: 1e-6 }, 'clipHigh 1.5');
  // Ratio-mode clipfrac uses both bounds: r = 1.25 > 1.2 and r = 0.75 < 0.8 count; with 0.3/0.28 neither.
  t.equal(run(c, { clipfracMode: 'ratio' }).stats.clipfrac, 1);
  t.equal(run(c, { clipfracMode: 'ratio', clipLow: 0.3, clipHigh: 0.28 }).stats.clipfrac, 0);
});

t.test('hand case: ratios far outside the clip range (overflowing exp) give the clipped value and a zero gradient, not NaN', async (t) => {
  // d = 100: r = e^100 overflows float32. A = 1: max(-inf, -1.2) = -1.2, gradient 0.
  const up = run(caseFromD(1, 1, [100], [1]));
  t.equal(Math.fround(up.loss), Math.fround(-1.2), 'A > 0, r = e^100: loss -1.2');
  t.equal(up.grad[0], 0, 'and gradient 0 (not 0 * inf = NaN)');
  // A = -1 with the dual clip: min(inf, 3) = 3, gradient 0.
  const dual = run(caseFromD(1, 1, [100], [-1]), { dualClip: 3 });
  t.equal(Math.fround(dual.loss), 3, 'A < 0, r = e^100, dual clip 3: loss 3');
  t.equal(dual.grad[0], 0, 'gradient 0');
  // A = -1 without the dual clip: the loss really is unbounded.
  const inf = run(caseFromD(1, 1, [100], [-1]));
  t.equal(inf.loss, Infinity, 'A < 0, r = e^100, no dual clip: loss +inf');
  // clampLogRatio 20: r = e^20, loss e^20 = 4.85e8, gradient 0 (the clamp is active).
  const clamped = run(caseFromD(1, 1, [100], [-1]), { clampLogRatio: 20 });
  expectNear(t, clamped.loss, Math.exp(20), { rtol: 1e-6 }, 'clampLogRatio 20: loss e^20');
  t.equal(clamped.grad[0], 0, 'clampLogRatio 20: gradient 0 where it clamps');
  expectNear(t, clamped.stats.approxKl, 200, { rtol: 1e-6 }, 'stats use the clamped d: approxKl = 20^2/2');
  expectNear(t, clamped.stats.ppoKl, -20, { rtol: 1e-6 }, 'ppoKl = -20');
  // d = 50 (r = 5.18e21, finite): A = -1 unclipped, loss r and gradient r.
  const big = run(caseFromD(1, 1, [50], [-1]));
  expectNear(t, big.loss, Math.exp(50), { rtol: 1e-5 }, 'd = 50: loss e^50');
  expectNear(t, big.grad[0], Math.exp(50), { rtol: 1e-5 }, 'd = 50: gradient e^50');
  // d = -100: r = 0. A = -1: max(0, 0.8) = 0.8 clipped; A = 1: max(-0, -0.8) = 0, gradient -r = 0.
  const down = run(caseFromD(1, 2, [-100, -100], [-1, 1]));
  expectNear(t, down.loss, 0.4, { rtol: 1e-6 }, 'd = -100: loss (0.8 + 0)/2');
  t.ok(down.grad.every((g) => Math.abs(g) < 1e-30), 'd = -100: gradients 0');
  t.equal(down.stats.clipfrac, 0.5, 'd = -100: one clipped');
});

t.test('hand case: every aggregation mode (B=3, T=3, r = 1 so l = -A)', async (t) => {
  // mask [[1,1,0],[1,0,0],[0,0,0]], A = [[1,2,.],[3,.,.],[.,.,.]]: row sums -3, -3; n = [2, 1, 0]
  const c = caseFromD(3, 3, new Array(9).fill(0), [1, 2, 9, 3, 9, 9, 9, 9, 9], [1, 1, 0, 1, 0, 0, 0, 0, 0]);
  const cases: [AggregationReference, number | undefined, number, number[]][] = [
    ['token-mean', undefined, -2, [-1 / 3, -2 / 3, 0, -1, 0, 0, 0, 0, 0]],
    ['seq-mean-token-mean', undefined, -2.25, [-0.25, -0.5, 0, -1.5, 0, 0, 0, 0, 0]],
    ['seq-mean-token-sum', undefined, -3, [-0.5, -1, 0, -1.5, 0, 0, 0, 0, 0]],
    ['seq-mean-token-sum-norm', undefined, -2, [-1 / 3, -2 / 3, 0, -1, 0, 0, 0, 0, 0]],
    ['seq-mean-token-sum-norm', 4, -1.5, [-0.25, -0.5, 0, -0.75, 0, 0, 0, 0, 0]],
    ['grpo', undefined, -1.5, [-1 / 6, -1 / 3, 0, -1, 0, 0, 0, 0, 0]],
    ['bnpo', undefined, -2, [-1 / 3, -2 / 3, 0, -1, 0, 0, 0, 0, 0]],
    ['dr_grpo', undefined, -6 / 9, [-1 / 9, -2 / 9, 0, -1 / 3, 0, 0, 0, 0, 0]],
    ['dr_grpo', 2, -3, [-0.5, -1, 0, -1.5, 0, 0, 0, 0, 0]],
    ['dapo', 12, -0.5, [-1 / 12, -2 / 12, 0, -0.25, 0, 0, 0, 0, 0]],
  ];
  for (const [aggregation, normalizer, loss, grad] of cases) {
    const name = `${aggregation}${normalizer === undefined ? '' : ` normalizer ${normalizer}`}`;
    const o = { aggregation, normalizer } as Opts;
    const out = run(c, o);
    expectNear(t, out.loss, loss, { rtol: 1e-6 }, `${name}: loss`);
    expectClose(t, out.grad, grad, { rtol: 1e-6, atol: 1e-9 }, `${name}: grad`);
    t.equal(out.stats.clipfrac, 0, `${name}: clipfrac 0`);
    const r = ref(c, o);
    expectNear(t, r.loss, loss, { rtol: 1e-12 }, `${name}: reference loss`);
    expectClose(t, r.grad, grad, { rtol: 1e-12, atol: 1e-15 }, `${name}: reference grad`);
  }
  // bnpo and grpo clamp their denominators at 1: one valid token of advantage 2 -> loss -2 for bnpo,
  // -2/B for grpo (B = 2, the empty row counted).
  const one = caseFromD(2, 2, [0, 0, 0, 0], [2, 0, 0, 0], [1, 0, 0, 0]);
  expectNear(t, run(one, { aggregation: 'bnpo' }).loss, -2, { rtol: 1e-6 }, 'bnpo, one valid token');
  expectNear(t, run(one, { aggregation: 'grpo' }).loss, -1, { rtol: 1e-6 }, 'grpo, empty row counted in B');
  expectNear(t, run(one, { aggregation: 'seq-mean-token-mean' }).loss, -2, { rtol: 1e-6 }, 'seq-mean-token-mean skips the empty row');
});

t.test('hand case: advantages [B] are broadcast over each row', async (t) => {
  // r = 1, A per row [1, -1]: l = [-1, -1, 1, 1]; token-mean 0; grad [-1, -1, 1, 1]/4
  const c: Case = { B: 2, T: 2, lp: f32([-1, -2, -0.5, -3]), old: f32([-1, -2, -0.5, -3]), A: f32([1, -1]), m: null };
  const out = run(c);
  expectNear(t, out.loss, 0, { atol: 1e-12 }, 'loss');
  expectClose(t, out.grad, [-0.25, -0.25, 0.25, 0.25], { rtol: 1e-6 }, 'grad');
  // Random: [B] equals the expanded [B,T].
  const rc = randomCase(7, 6, 11, 0.4, true);
  const expanded = { ...rc, A: new Float32Array(6 * 11) };
  for (let i = 0; i < 66; ++i) expanded.A[i] = rc.A[Math.floor(i / 11)];
  for (const importanceLevel of ['token', 'sequence'] as const) {
    for (const aggregation of ['token-mean', 'grpo'] as const) {
      const a = run(rc, { importanceLevel, aggregation, dualClip: 3 });
      const b = run(expanded, { importanceLevel, aggregation, dualClip: 3 });
      expectNear(t, a.loss, b.loss, { rtol: 1e-6, atol: 1e-9 }, `${importanceLevel} ${aggregation}: [B] vs [B,T] loss`);
      expectCloseScaled(t, a.grad, b.grad, 1e-6, `${importanceLevel} ${aggregation}: [B] vs [B,T] grad`);
      expectStats(t, a.stats, b.stats, { rtol: 1e-6, atol: 1e-9 }, `${importanceLevel} ${aggregation}: [B] vs [B,T]`);
      expectNear(t, a.loss, ref(rc, { importanceLevel, aggregation, dualClip: 3 }).loss, { rtol: 1e-5, atol: 1e-7 }, 'and the reference');
    }
  }
});

t.test("hand case: importanceLevel 'sequence' (GSPO) uses one ratio per row, exp(masked mean of d)", async (t) => {
  // d = [0.2, 0.4] (one row): d_b = 0.3, r = e^0.3 = 1.3498588075760032 for both tokens.
  // A = [-1, -1]: l = r each (unclipped); loss r; grad_t = (1/n) r sum_t' w g = (1/2) r (1/2 + 1/2) = r/2.
  const c = caseFromD(1, 2, [0.2, 0.4], [-1, -1]);
  const seq = run(c, { importanceLevel: 'sequence' });
  expectNear(t, seq.loss, 1.3498588075760032, { rtol: 1e-6 }, 'loss');
  expectClose(t, seq.grad, [0.6749294037880016, 0.6749294037880016], { rtol: 1e-6 }, 'grad');
  const tok = run(c);
  expectNear(t, tok.loss, 1.35661372790072, { rtol: 1e-6 }, 'token level for comparison: mean(e^0.2, e^0.4)');
  expectClose(t, tok.grad, [0.6107013790800849, 0.7459123488206352], { rtol: 1e-6 }, 'token level grad');
  // A = [1, -1]: token 0 clipped (-1.2, g = 0), token 1 unclipped (r, g = 1): loss (r - 1.2)/2;
  // both tokens share the row's gradient (1/2) r (1/2 * 0 + 1/2 * 1) = r/4. (A per-token-gradient
  // scheme would give [0, r/2]: the test tells them apart.)
  const mixed = run(caseFromD(1, 2, [0.2, 0.4], [1, -1]), { importanceLevel: 'sequence' });
  expectNear(t, mixed.loss, 0.07492940378800161, { rtol: 1e-6 }, 'mixed advantages: loss');
  expectClose(t, mixed.grad, [0.3374647018940008, 0.3374647018940008], { rtol: 1e-6 }, 'mixed advantages: the exact gradient');
  // Stats use the token-level d; clipfrac the row's ratio.
  expectStats(t, mixed.stats, { clipfrac: 0.5, clipfracLower: 0, approxKl: 0.05,
    approxKlK3: (Math.exp(0.2) - 1.2 + Math.exp(0.4) - 1.4) / 2, ppoKl: -0.3 }, { rtol: 1e-6 }, 'mixed advantages');
  // Masked tokens do not enter d_b: row 0 [0.2, 0.4, (5)], row 1 all masked.
  const masked = run(caseFromD(2, 3, [0.2, 0.4, 5, 1, 2, 3], [-1, -1, -1, -1, -1, -1], [1, 1, 0, 0, 0, 0]), { importanceLevel: 'sequence' });
  expectNear(t, masked.loss, 1.3498588075760032, { rtol: 1e-6 }, 'masked tokens left out of d_b');
  expectClose(t, masked.grad, [0.6749294037880016, 0.6749294037880016, 0, 0, 0, 0], { rtol: 1e-6 }, 'masked tokens get 0');
  // clampLogRatio applies at the sequence level too: every d = 25 -> d_b = 25 -> clamped to 20, gradient 0.
  const cl = run(caseFromD(1, 2, [25, 25], [-1, -1]), { importanceLevel: 'sequence', clampLogRatio: 20 });
  expectNear(t, cl.loss, Math.exp(20), { rtol: 1e-5 }, 'clamped sequence log-ratio: loss e^20');
  t.strictSame([...cl.grad].map(Math.abs), [0, 0], 'clamped: gradient 0');
  const uncl = run(caseFromD(1, 2, [25, 25], [-1, -1]), { importanceLevel: 'sequence' });
  expectClose(t, uncl.grad, [Math.exp(25) / 2, Math.exp(25) / 2], { rtol: 1e-5 }, 'unclamped d_b = 25: gradient e^25/2');
  // The clamp acts on the row's log-ratio d_b (the one exponentiated), which is the mean of the raw
  // token d; the stats still use the clamped token d. d = [30, 15], clamp 20: d_b = 22.5 -> 20, gradient 0;
  // approxKl = (20^2 + 15^2)/4 = 156.25, ppoKl = -(20 + 15)/2.
  const rowClamped = run(caseFromD(1, 2, [30, 15], [-1, -1]), { importanceLevel: 'sequence', clampLogRatio: 20 });
  expectNear(t, rowClamped.loss, Math.exp(20), { rtol: 1e-5 }, 'd = [30, 15]: d_b = 22.5 clamped to 20');
  t.strictSame([...rowClamped.grad].map(Math.abs), [0, 0], 'd = [30, 15]: gradient 0');
  expectNear(t, rowClamped.stats.approxKl, 156.25, { rtol: 1e-6 }, 'd = [30, 15]: approxKl from the clamped token d');
  expectNear(t, rowClamped.stats.ppoKl, -17.5, { rtol: 1e-6 }, 'd = [30, 15]: ppoKl from the clamped token d');
  // d = [30, 5], clamp 20: d_b = 17.5 (not 12.5: the token clamp does not enter d_b) and not clamped,
  // so both tokens get (1/2) e^17.5 (1/2 + 1/2).
  const rowFree = run(caseFromD(1, 2, [30, 5], [-1, -1]), { importanceLevel: 'sequence', clampLogRatio: 20 });
  expectNear(t, rowFree.loss, Math.exp(17.5), { rtol: 1e-5 }, 'd = [30, 5]: d_b = 17.5 from the raw token d');
  expectClose(t, rowFree.grad, [Math.exp(17.5) / 2, Math.exp(17.5) / 2], { rtol: 1e-5 }, 'd = [30, 5]: gradient e^17.5/2 on both tokens');
});

// ---------------------------------------------------------------------------------------------
// (b) Random cases against the float64 reference.

t.test('random cases against the reference: every aggregation x importance level x dual clip x log-ratio clamp x clipfrac mode', async (t) => {
  const c = randomCase(11, 8, 37);
  let n = 0;
  for (const aggregation of aggregationsReference) {
    const normalizer = aggregation === 'dapo' ? 123 : aggregation === 'dr_grpo' ? 50 : undefined;
    for (const importanceLevel of ['token', 'sequence'] as const) {
      for (const dualClip of [null, 3]) {
        // 0.5 clamps some tokens' d; at the sequence level 0.1 clamps some rows' mean d_b.
        for (const clampLogRatio of [null, importanceLevel === 'token' ? 0.5 : 0.1]) {
          for (const clipfracMode of ['branch', 'ratio'] as const) {
            const o = { aggregation, normalizer, importanceLevel, dualClip, clampLogRatio, clipfracMode, clipLow: 0.2, clipHigh: 0.27 };
            const got = run(c, o as Opts);
            const want = ref(c, o);
            const name = JSON.stringify(o);
            expectNear(t, got.loss, want.loss, { rtol: 1e-5, atol: 1e-7 }, `${name}: loss`);
            expectCloseScaled(t, got.grad, want.grad, 1e-5, `${name}: grad`);
            expectStats(t, got.stats, want.stats, { rtol: 1e-5, atol: 1e-7 }, name);
            ++n;
          }
        }
      }
    }
  }
  t.equal(n, 128, 'combinations');
  for (const importanceLevel of ['token', 'sequence'] as const)
    t.not(ref(c, { importanceLevel, clampLogRatio: importanceLevel === 'token' ? 0.5 : 0.1 }).loss, ref(c, { importanceLevel }).loss,
      `the log-ratio clamp bites in this case at the ${importanceLevel} level`);
});

t.test('a flat [N] input is one row', async (t) => {
  const c = randomCase(13, 1, 50);
  for (const o of [{}, { importanceLevel: 'sequence' }, { aggregation: 'grpo' }] as Opts[]) {
    const flat = run(c, o, true);
    const rows = run(c, o);
    t.strictSame(flat.shape, [50], 'grad is [N]');
    t.equal(flat.loss, rows.loss, `${JSON.stringify(o)}: [N] loss = [1,N] loss`);
    expectBitIdentical(t, flat.grad, rows.grad, `${JSON.stringify(o)}: grad`);
  }
  // Plain Float32Arrays are 1-D inputs.
  const out = rl.ppoPolicyLoss({ logprobs: c.lp, oldLogprobs: c.old, advantages: c.A, mask: c.m ?? undefined }, {});
  expectNear(t, out.loss, ref(c).loss, { rtol: 1e-5, atol: 1e-7 }, 'TypedArray inputs');
});

// ---------------------------------------------------------------------------------------------
// (c) Finite differences.

t.test('finite differences (float64): the reference gradient is d loss / d logprobs for every mode', async (t) => {
  for (const importanceLevel of ['token', 'sequence'] as const) {
    const c = kinkFreeCase(importanceLevel === 'token' ? 17 : 19, 3, 5, importanceLevel === 'sequence', true, true);
    for (const aggregation of aggregationsReference) {
      for (const dualClip of [null, 3]) {
        const o: PolicyLossReferenceOptions = { aggregation, importanceLevel, dualClip, normalizer: aggregation === 'dapo' ? 7 : undefined };
        const f = (lp: Float64Array) => ppoPolicyLossReference(c.B, c.T, { logprobs: lp, oldLogprobs: c.old, advantages: c.A, mask: c.m }, o).loss;
        const fd = finiteDifferences(f, c.lp, 1e-6);
        expectClose(t, ref(c, o).grad, fd, { rtol: 1e-6, atol: 1e-9 }, `${JSON.stringify(o)}: reference grad vs central differences`);
      }
    }
  }
});

t.test('finite differences (float32): the op\'s grad is the gradient of the op\'s own loss', async (t) => {
  for (const importanceLevel of ['token', 'sequence'] as const) {
    for (const withMask of [false, true]) {
      const c = kinkFreeCase(importanceLevel === 'token' ? 23 : 29, 2, 5, importanceLevel === 'sequence', true, withMask);
      for (const aggregation of ['token-mean', 'seq-mean-token-mean', 'grpo', 'dapo'] as const) {
        const o = { aggregation, importanceLevel, dualClip: 3, normalizer: aggregation === 'dapo' ? 4 : undefined } as Opts;
        const f = (lp: Float32Array) => run({ ...c, lp }, o).loss;
        const idx = [...Array(c.B * c.T).keys()];
        const fd = finiteDifferencesF32(f, c.lp, 1e-2, idx);
        expectClose(t, run(c, o).grad, fd, { rtol: 2e-3, atol: 2e-3 * Math.max(...[...fd].map(Math.abs)) },
          `${importanceLevel} ${aggregation}${withMask ? ' masked' : ''}: op grad vs central differences of the op's loss`);
      }
    }
  }
});

// ---------------------------------------------------------------------------------------------
// (d) Edge cases.

t.test('all-masked and empty inputs: loss 0, zero gradient, stats 0, for every aggregation', async (t) => {
  const c = randomCase(31, 3, 4);
  c.m = new Uint8Array(12);
  for (const aggregation of aggregationsReference) {
    for (const importanceLevel of ['token', 'sequence'] as const) {
      const o = { aggregation, importanceLevel, normalizer: aggregation === 'dapo' ? 5 : undefined } as Opts;
      const name = `${aggregation} ${importanceLevel}`;
      const out = run(c, o);
      t.equal(out.loss, 0, `${name}: all masked: loss 0`);
      t.ok(out.grad.every((g) => g === 0), `${name}: all masked: zero gradient`);
      for (const k of statNames) t.equal(out.stats[k], 0, `${name}: all masked: stats.${k} 0`);
      for (const shape of [[0, 4], [3, 0], [0]]) {
        const e = rl.ppoPolicyLoss({ logprobs: ft([], shape), oldLogprobs: ft([], shape), advantages: ft([], shape) }, o);
        t.equal(e.loss, 0, `${name}: empty [${shape}]: loss 0`);
        t.strictSame([...e.grad.shape], shape, `${name}: empty [${shape}]: grad shape`);
        for (const k of statNames) t.equal(e.stats[k], 0, `${name}: empty [${shape}]: stats.${k} 0`);
      }
    }
  }
});

t.test('NaN: a valid NaN reaches the loss and its own gradient; a masked NaN does not leak', async (t) => {
  const c = randomCase(37, 3, 5);
  c.m = new Uint8Array(15).fill(1);
  c.lp[6] = NaN; // row 1
  const tok = run(c);
  t.ok(Number.isNaN(tok.loss), 'token level: loss NaN');
  t.ok(Number.isNaN(tok.grad[6]), 'token level: its gradient NaN');
  t.ok(tok.grad.every((g, i) => i === 6 || Number.isFinite(g)), 'token level: the other gradients finite');
  t.ok(Number.isNaN(tok.stats.approxKl) && Number.isNaN(tok.stats.ppoKl), 'stats NaN');
  const seq = run(c, { importanceLevel: 'sequence' });
  t.ok(Number.isNaN(seq.loss), 'sequence level: loss NaN');
  t.ok([5, 6, 7, 8, 9].every((i) => Number.isNaN(seq.grad[i])), 'sequence level: the whole row\'s gradient NaN');
  t.ok([0, 1, 2, 3, 4, 10, 11, 12, 13, 14].every((i) => Number.isFinite(seq.grad[i])), 'sequence level: other rows finite');
  const d = randomCase(41, 3, 5);
  d.m = Uint8Array.from([1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1]);
  const clean = run(d);
  const dirty = { ...d, lp: Float32Array.from(d.lp), A: Float32Array.from(d.A), old: Float32Array.from(d.old) };
  dirty.lp[3] = NaN;
  dirty.A[4] = NaN;
  dirty.old[10] = NaN;
  for (const o of [{}, { importanceLevel: 'sequence' }, { aggregation: 'seq-mean-token-mean' }] as Opts[]) {
    const a = run(d, o);
    const b = run(dirty, o);
    t.equal(b.loss, a.loss, `${JSON.stringify(o)}: masked NaNs leave the loss alone`);
    expectBitIdentical(t, f32([...b.grad]), f32([...a.grad]), `${JSON.stringify(o)}: and the gradient (0 on masked tokens)`);
    for (const k of statNames) t.equal(b.stats[k], a.stats[k], `${JSON.stringify(o)}: stats.${k}`);
  }
  t.equal(clean.grad[3], 0, 'masked token gradient 0');
  expectError(t, () => run({ ...d, lp: dirty.lp }, { checkFinite: true }), RangeError,
    /^ppoPolicyLoss: `logprobs` has a non-finite value at index 3/, undefined, 'checkFinite names a masked NaN too');
  t.ok(Number.isFinite(run({ ...d, lp: dirty.lp }, { checkFinite: false }).loss), 'checkFinite false: no error');
  const onlyOld = { ...d, old: Float32Array.from(d.old) };
  onlyOld.old[5] = Infinity;
  expectError(t, () => run(onlyOld, { checkFinite: true }), RangeError, /^ppoPolicyLoss: `oldLogprobs` has a non-finite value at index 5/);
});

// ---------------------------------------------------------------------------------------------
// (e) Presets.

t.test("presets: 'verl' = dualClip 3 + clampLogRatio 20, 'cleanrl' = clipfracMode 'ratio', 'trl'/'openrlhf' = defaults; explicit options win", async (t) => {
  const c = randomCase(43, 6, 20, 1.2); // wide ratios: the dual clip and the ratio clipfrac both matter
  for (let i = 0; i < 10; ++i) c.lp[i] = c.old[i] + 25; // beyond clampLogRatio 20
  const same = (a: ReturnType<typeof run>, b: ReturnType<typeof run>, msg: string) => {
    t.equal(a.loss, b.loss, `${msg}: loss`);
    expectBitIdentical(t, f32([...a.grad]), f32([...b.grad]), `${msg}: grad`);
    for (const k of statNames) t.equal(a.stats[k], b.stats[k], `${msg}: stats.${k}`);
  };
  same(run(c, { preset: 'verl' }), run(c, { dualClip: 3, clampLogRatio: 20 }), 'verl');
  same(run(c, { preset: 'verl', dualClip: null }), run(c, { clampLogRatio: 20 }), 'verl with dualClip null');
  same(run(c, { preset: 'verl', clampLogRatio: null }), run(c, { dualClip: 3 }), 'verl with clampLogRatio null');
  same(run(c, { preset: 'verl', dualClip: 5 }), run(c, { dualClip: 5, clampLogRatio: 20 }), 'verl with dualClip 5');
  same(run(c, { preset: 'cleanrl' }), run(c, { clipfracMode: 'ratio' }), 'cleanrl');
  same(run(c, { preset: 'cleanrl', clipfracMode: 'branch' }), run(c), 'cleanrl with clipfracMode branch');
  same(run(c, { preset: 'trl' }), run(c), 'trl');
  same(run(c, { preset: 'openrlhf' }), run(c), 'openrlhf');
  t.not(run(c, { preset: 'verl' }).loss, run(c).loss, 'verl visibly differs from the defaults here');
  t.not(run(c, { preset: 'cleanrl' }).stats.clipfrac, run(c).stats.clipfrac, 'cleanrl visibly differs from the defaults here');
});

// ---------------------------------------------------------------------------------------------
// (f) Bad input.

t.test('bad input: kinds, dtypes and shapes are TypeErrors / RangeErrors naming the argument', async (t) => {
  const B = 2;
  const T = 3;
  const good = () => ({ logprobs: ft(new Float32Array(6), [B, T]), oldLogprobs: ft(new Float32Array(6), [B, T]),
    advantages: ft(new Float32Array(6), [B, T]), mask: mt(new Uint8Array(6).fill(1), [B, T]) });
  const op = (inputs: object, o: Opts = {}) => () => rl.ppoPolicyLoss(inputs as never, o);
  expectError(t, op({ ...good(), logprobs: rl.tensor(new Int32Array(6), [B, T]) }), TypeError,
    /^ppoPolicyLoss: expected a float32 .*`logprobs` but received an int32 Tensor/);
  expectError(t, op({ ...good(), oldLogprobs: [0, 0, 0, 0, 0, 0] }), TypeError, /^ppoPolicyLoss: .*`oldLogprobs` but received an Array/);
  expectError(t, op({ ...good(), advantages: undefined }), TypeError, /^ppoPolicyLoss: .*`advantages`/);
  expectError(t, op({ ...good(), mask: ft(new Float32Array(6), [B, T]) }), TypeError,
    /^ppoPolicyLoss: expected a uint8 .*`mask` but received a float32 Tensor/);
  expectError(t, op({ ...good(), oldLogprobs: ft(new Float32Array(6), [T, B]) }), RangeError, /^ppoPolicyLoss: `oldLogprobs`/);
  expectError(t, op({ ...good(), advantages: ft(new Float32Array(3)) }), RangeError, /^ppoPolicyLoss: `advantages`/, undefined, 'advantages [3] for B = 2');
  expectError(t, op({ ...good(), advantages: ft(new Float32Array(8), [B, 4]) }), RangeError, /^ppoPolicyLoss: `advantages`/);
  expectError(t, op({ ...good(), mask: mt(new Uint8Array(6)) }), RangeError, /^ppoPolicyLoss: `mask`/);
  expectError(t, op({ logprobs: ft(new Float32Array(8), [2, 2, 2]), oldLogprobs: ft(new Float32Array(8), [2, 2, 2]),
    advantages: ft(new Float32Array(8), [2, 2, 2]) }), RangeError, /^ppoPolicyLoss: `logprobs`/, undefined, '3-D input');
  expectError(t, op(null as never), TypeError, /^ppoPolicyLoss: /);
  expectError(t, () => rl.ppoPolicyLoss(good(), 'verl' as never), TypeError, /^ppoPolicyLoss: expected an options object/);
});

t.test('bad input: option values', async (t) => {
  const inputs = { logprobs: ft(new Float32Array(6), [2, 3]), oldLogprobs: ft(new Float32Array(6), [2, 3]), advantages: ft(new Float32Array(6), [2, 3]) };
  const bad = (o: object, cls: typeof RangeError | typeof TypeError, re: RegExp, what: string) =>
    expectError(t, () => rl.ppoPolicyLoss(inputs, o as Opts), cls, re, undefined, what);
  for (const v of [0, 1, -0.1, 1.5, NaN]) bad({ clipLow: v }, RangeError, /^ppoPolicyLoss: `clipLow`/, `clipLow ${v}`);
  bad({ clipLow: '0.2' }, TypeError, /^ppoPolicyLoss: .*`clipLow`/, "clipLow '0.2'");
  for (const v of [0, -0.2, 10.5, NaN, Infinity]) bad({ clipHigh: v }, RangeError, /^ppoPolicyLoss: `clipHigh`/, `clipHigh ${v}`);
  for (const v of [1, 0.5, -3, NaN, 0]) bad({ dualClip: v }, RangeError, /^ppoPolicyLoss: `dualClip`/, `dualClip ${v}`);
  bad({ dualClip: '3' }, TypeError, /^ppoPolicyLoss: .*`dualClip`/, "dualClip '3'");
  for (const v of [0, -1, NaN]) bad({ clampLogRatio: v }, RangeError, /^ppoPolicyLoss: `clampLogRatio`/, `clampLogRatio ${v}`);
  bad({ aggregation: 'mean' }, RangeError, /^ppoPolicyLoss: `aggregation` must be one of .*'token-mean'.*'dapo'.*not 'mean'/, 'unknown aggregation');
  bad({ aggregation: 'dapo' }, RangeError, /^ppoPolicyLoss: `normalizer`/, 'dapo without a normalizer');
  bad({ aggregation: 'token-mean', normalizer: 10 }, RangeError, /^ppoPolicyLoss: `normalizer`/, 'a normalizer with token-mean');
  bad({ aggregation: 'grpo', normalizer: 10 }, RangeError, /^ppoPolicyLoss: `normalizer`/, 'a normalizer with grpo');
  for (const v of [0, -4, NaN, Infinity]) bad({ aggregation: 'dapo', normalizer: v }, RangeError, /^ppoPolicyLoss: `normalizer`/, `normalizer ${v}`);
  bad({ aggregation: 'dr_grpo', normalizer: '4' }, TypeError, /^ppoPolicyLoss: .*`normalizer`/, "normalizer '4'");
  bad({ importanceLevel: 'group' }, RangeError, /^ppoPolicyLoss: `importanceLevel` must be one of 'token', 'sequence'/, 'unknown importanceLevel');
  bad({ clipfracMode: 'both' }, RangeError, /^ppoPolicyLoss: `clipfracMode`/, 'unknown clipfracMode');
  bad({ preset: 'torchrl' }, RangeError, /^ppoPolicyLoss: `preset`/, 'unknown preset');
  bad({ checkFinite: 'yes' }, TypeError, /^ppoPolicyLoss: expected a boolean for `checkFinite`/, 'checkFinite not a boolean');
  bad({ out: ft(new Float32Array(6)) }, RangeError, /^ppoPolicyLoss: `out` must have shape \[2, 3\]/, 'out of the wrong shape');
  bad({ out: new Float32Array(6) }, TypeError, /^ppoPolicyLoss: expected a float32 Tensor for `out`/, 'out a Float32Array');
  await expectAsyncRejection(t, 'ppoPolicyLossAsync', () => rl.ppoPolicyLossAsync(inputs, { aggregation: 'dapo' }), RangeError,
    /^ppoPolicyLossAsync: `normalizer`/);
  await expectAsyncRejection(t, 'ppoPolicyLossAsync', () => rl.ppoPolicyLossAsync({ ...inputs, mask: ft(new Float32Array(6), [2, 3]) } as never),
    TypeError, /^ppoPolicyLossAsync: .*`mask`/);
});

// ---------------------------------------------------------------------------------------------
// (g) Threads, CPU paths, Async, out.

t.test('bit-identical loss, grad and stats for 1 and 2 threads', async (t) => {
  const c = randomCase(47, 64, 1024, 0.5);
  for (const aggregation of aggregationsReference) {
    for (const importanceLevel of ['token', 'sequence'] as const) {
      const o = { aggregation, importanceLevel, dualClip: 3, normalizer: aggregation === 'dapo' ? 30000 : undefined } as Opts;
      const [one, two] = [1, 2].map((n) => withThreads(n, () => run(c, o)));
      const name = `${aggregation} ${importanceLevel}`;
      t.equal(two.loss, one.loss, `${name}: loss`);
      expectBitIdentical(t, f32([...two.grad]), f32([...one.grad]), `${name}: grad`);
      for (const k of statNames) t.equal(two.stats[k], one.stats[k], `${name}: stats.${k}`);
    }
  }
});

t.test('the fast CPU paths agree with the scalar reference path', async (t) => {
  const c = randomCase(53, 9, 301, 0.5);
  for (const importanceLevel of ['token', 'sequence'] as const) {
    const o = { importanceLevel, dualClip: 3, aggregation: 'seq-mean-token-mean' } as Opts;
    const runs = cpuPaths.map((p) => withCpuPath(p, () => run(c, o)));
    for (let i = 0; i < referencePath; ++i) {
      const name = `${importanceLevel}: ${cpuPaths[i]} vs reference path`;
      expectNear(t, runs[i].loss, runs[referencePath].loss, { rtol: 1e-6, atol: 1e-9 }, `${name}: loss`);
      expectCloseScaled(t, runs[i].grad, runs[referencePath].grad, 1e-6, `${name}: grad`);
      expectStats(t, runs[i].stats, runs[referencePath].stats, { rtol: 1e-6, atol: 1e-9 }, name);
    }
  }
});

t.test('ppoPolicyLossAsync gives the same result', async (t) => {
  const c = randomCase(59, 16, 200);
  for (const o of [{}, { importanceLevel: 'sequence', aggregation: 'grpo', preset: 'verl' }] as Opts[]) {
    const sync = run(c, o);
    const a = await rl.ppoPolicyLossAsync({ logprobs: ft(c.lp, [16, 200]), oldLogprobs: ft(c.old, [16, 200]), advantages: ft(c.A, [16, 200]),
      mask: mt(c.m as Uint8Array, [16, 200]) }, o);
    t.equal(a.loss, sync.loss, `${JSON.stringify(o)}: loss`);
    expectBitIdentical(t, snapshot(a.grad), f32([...sync.grad]), `${JSON.stringify(o)}: grad`);
    for (const k of statNames) t.equal(a.stats[k], sync.stats[k], `${JSON.stringify(o)}: stats.${k}`);
  }
});

t.test('out: the given tensor is filled, returned as grad, and fully overwritten on reuse', async (t) => {
  const c = randomCase(61, 4, 9);
  const out = ft(new Float32Array(36).fill(NaN), [4, 9]);
  const inputs = { logprobs: ft(c.lp, [4, 9]), oldLogprobs: ft(c.old, [4, 9]), advantages: ft(c.A, [4, 9]), mask: mt(c.m as Uint8Array, [4, 9]) };
  const res = rl.ppoPolicyLoss(inputs, { out });
  t.equal(res.grad, out, 'grad is the out tensor');
  expectCloseScaled(t, data(out), ref(c).grad, 1e-5, 'filled (masked tokens overwritten with 0)');
  const res2 = await rl.ppoPolicyLossAsync(inputs, { out, aggregation: 'grpo' });
  t.equal(res2.grad, out, 'async: grad is the out tensor');
  expectCloseScaled(t, data(out), ref(c, { aggregation: 'grpo' }).grad, 1e-5, 'refilled');
});
