// rl.actorLossFromLogits (SEMANTICS.md §5, the fused actor loss): a hand case (policy loss,
// entropy bonus, KL to the reference), random cases against lib/reference/policy.ts and against
// the composition of the separate ops, finite-difference checks of gradLogits, ignoreIndex as a
// mask, edge cases, bad input, thread-count bit-identity and the Async form.
import t from 'tap';

import * as rl from '../lib/index';
import {
  actorLossReference, ActorLossReferenceOptions, aggregationsReference, KlReferenceOptions, logprobsReference,
} from '../lib/reference/policy';
import {
  cpuPaths, referencePath, data, expectBitIdentical, expectClose, expectError, expectNear, f32, ft, mt, randn, randomFloats, responseMask, rng, snapshot,
  T as TapT, withCpuPath, withThreads,
} from './helpers/index';
import {
  advantagesAwayFromZero, expectAsyncRejection, expectCloseScaled, finiteDifferences, finiteDifferencesF32, it32, kinkFreeLogRatio,
  randomLabels, randomLogits,
} from './helpers/policy';

type Opts = NonNullable<Parameters<typeof rl.actorLossFromLogits>[1]>;
const statNames = ['policyLoss', 'entropy', 'kl', 'clipfrac', 'clipfracLower', 'approxKl', 'approxKlK3', 'ppoKl'] as const;

interface Case {
  B: number;
  T: number;
  V: number;
  logits: Float32Array;
  labels: Int32Array;
  old: Float32Array;
  A: Float32Array;
  ref: Float32Array | null;
  m: Uint8Array | null;
}

function tensors(c: Case, flat = false) {
  const bt = flat ? [c.B * c.T] : [c.B, c.T];
  return {
    logits: ft(c.logits, [...bt, c.V]),
    labels: it32(c.labels, bt),
    oldLogprobs: ft(c.old, bt),
    advantages: ft(c.A, c.A.length === c.B * c.T ? bt : [c.B]),
    refLogprobs: c.ref ? ft(c.ref, bt) : undefined,
    mask: c.m ? mt(c.m, bt) : undefined,
  };
}

function run(c: Case, opts: Opts = {}, flat = false) {
  const out = rl.actorLossFromLogits(tensors(c, flat), opts);
  return {
    loss: out.loss,
    gradLogits: snapshot(out.gradLogits),
    logprobs: snapshot(out.logprobs),
    entropy: snapshot(out.entropy),
    stats: { ...out.stats } as Record<string, number>,
    shape: [...out.gradLogits.shape],
  };
}

function ref(c: Case, opts: ActorLossReferenceOptions = {}) {
  return actorLossReference(c.B, c.T, c.V, { logits: c.logits, labels: c.labels, oldLogprobs: c.old, advantages: c.A, refLogprobs: c.ref, mask: c.m },
    opts);
}

function expectStats(t: TapT, got: object, want: object, tol: { rtol?: number; atol?: number }, msg: string) {
  for (const k of statNames) expectNear(t, (got as Record<string, number>)[k], (want as Record<string, number>)[k], tol, `${msg}: stats.${k}`);
}

/**
 * Random logits and labels; oldLogprobs = lp - d with d from `dOf` (per token), so that the ratios
 * are where the caller wants them; refLogprobs = lp - N(0, 0.5).
 */
function randomCase(seed: number, B: number, T: number, V: number, o: { pIgnore?: number; mask?: boolean; tau?: number; kinkFree?: boolean;
  sequence?: boolean; perRow?: boolean } = {}): Case {
  const r = rng(seed);
  const n = B * T;
  const logits = randomLogits(r, n, V, 2);
  const labels = randomLabels(r, n, V, o.pIgnore ?? 0.1);
  const lp = logprobsReference(n, V, logits, labels, { temperature: o.tau ?? 1 }).logprobs;
  const old = new Float32Array(n);
  const refLp = new Float32Array(n);
  for (let b = 0; b < B; ++b) {
    const target = kinkFreeLogRatio(r, true);
    for (let t = 0; t < T; ++t) {
      const i = b * T + t;
      const d = o.kinkFree ? (o.sequence ? target + 0.1 * (r() - 0.5) : kinkFreeLogRatio(r, true)) : 0.4 * randn(r);
      old[i] = lp[i] - d;
      refLp[i] = lp[i] - 0.5 * randn(r);
    }
  }
  let m: Uint8Array | null = null;
  if (o.mask ?? true) {
    m = responseMask(r, B, T, 0.1);
    for (let b = 0; b < B; ++b) m[b * T] = 1;
  }
  const A = o.kinkFree ? advantagesAwayFromZero(r, o.perRow ? B : n) : randomFloats(r, o.perRow ? B : n);
  return { B, T, V, logits, labels, old, A, ref: refLp, m };
}

// ---------------------------------------------------------------------------------------------
// (a) Hand case.

t.test('hand case: policy loss + KL (k3) - entropy bonus, B=1, T=2, V=2', async (t) => {
  // Token 0: logits [0, 0], label 0: lp = -ln2, H = ln2. Token 1: logits [ln3, 0], label 0: p = [3/4, 1/4],
  // lp = ln(3/4) = -0.2876820724517808, H = 0.5623351446188081.
  // old = lp (r = 1), A = [1, 2]: pg = -1.5; gradient dpg/dlp = -A/2.
  const lp0 = -Math.log(2);
  const lp1 = Math.log(0.75);
  const c: Case = { B: 1, T: 2, V: 2, logits: f32([0, 0, Math.log(3), 0]), labels: Int32Array.from([0, 0]), old: f32([lp0, lp1]), A: f32([1, 2]),
    ref: null, m: null };
  const pg = run(c);
  expectNear(t, pg.loss, -1.5, { rtol: 1e-6 }, 'policy loss only: loss');
  expectClose(t, pg.gradLogits, [-0.25, 0.25, -0.25, 0.25], { rtol: 1e-6 }, 'policy loss only: dlogits = -A/2 (onehot - p)');
  expectClose(t, pg.logprobs, [lp0, lp1], { rtol: 1e-6 }, 'logprobs output');
  expectClose(t, pg.entropy, [Math.log(2), 0.5623351446188081], { rtol: 1e-6 }, 'entropy output');
  t.strictSame(pg.shape, [1, 2, 2], 'gradLogits has the logits\' shape');
  // + entropy bonus 0.1: loss -= 0.1 * mean(H) = 0.0627741162589377; the token-1 row of dlogits moves by
  // -0.05 * dH/dz = [0.0102994902062636, -0.0102994902062636].
  const ent = run(c, { entropyCoef: 0.1 });
  expectNear(t, ent.loss, -1.5627741162589377, { rtol: 1e-6 }, 'with entropy: loss');
  expectClose(t, ent.gradLogits, [-0.25, 0.25, -0.23970050979373636, 0.23970050979373647], { rtol: 1e-6 }, 'with entropy: dlogits');
  expectNear(t, ent.stats.entropy, 0.6277411625893767, { rtol: 1e-6 }, 'stats.entropy = mean(H)');
  expectNear(t, ent.stats.policyLoss, -1.5, { rtol: 1e-6 }, 'stats.policyLoss');
  // + KL to the reference, k3, klCoef 0.2, with d = lp - ref = [0.5, -0.5]:
  // agg(k3) = (e^-0.5 - 0.5 + e^0.5 - 1.5)/2 = 0.1276259652063808; loss = -1.5 + 0.2 * that - 0.0627741162589377
  const withRef = { ...c, ref: f32([lp0 - 0.5, lp1 + 0.5]) };
  const all = run(withRef, { entropyCoef: 0.1, klCoef: 0.2, kl: { estimator: 'k3' } });
  expectNear(t, all.loss, -1.5372489232176616, { rtol: 1e-6 }, 'with KL and entropy: loss');
  expectClose(t, all.gradLogits, [-0.23032653298563166, 0.23032653298563166, -0.25591854156123955, 0.25591854156123967], { rtol: 1e-6 },
    'with KL and entropy: dlogits');
  expectNear(t, all.stats.kl, 0.1276259652063808, { rtol: 1e-6 }, 'stats.kl = agg(k3)');
  expectNear(t, all.stats.entropy, 0.6277411625893767, { rtol: 1e-6 }, 'stats.entropy');
  expectNear(t, all.stats.policyLoss, -1.5, { rtol: 1e-6 }, 'stats.policyLoss');
  t.equal(all.stats.clipfrac, 0, 'stats.clipfrac');
  // The reference agrees.
  const r = ref(withRef, { entropyCoef: 0.1, klCoef: 0.2, kl: { estimator: 'k3' } });
  expectNear(t, r.loss, -1.5372489232176616, { rtol: 1e-6 }, 'reference loss');
  expectClose(t, r.gradLogits, [-0.23032653298563166, 0.23032653298563166, -0.25591854156123955, 0.25591854156123967], { rtol: 1e-6 },
    'reference dlogits');
  // No KL term with klCoef 0; klCoef > 0 without refLogprobs is an error, not a silent no-op.
  expectNear(t, run(withRef, { entropyCoef: 0.1 }).loss, -1.5627741162589377, { rtol: 1e-6 }, 'refLogprobs with klCoef 0: no KL term');
  expectError(t, () => run(c, { entropyCoef: 0.1, klCoef: 0.2 }), RangeError, /^actorLossFromLogits: `refLogprobs` is required/,
    undefined, 'klCoef > 0 without refLogprobs');
});

// ---------------------------------------------------------------------------------------------
// (b) Random against the reference and against the separate ops.

t.test('random cases against the reference: every aggregation and importance level, KL and entropy terms', async (t) => {
  const c = randomCase(301, 4, 9, 50, { tau: 0.8 });
  for (const aggregation of aggregationsReference) {
    for (const importanceLevel of ['token', 'sequence'] as const) {
      const o = { aggregation, importanceLevel, normalizer: aggregation === 'dapo' ? 40 : undefined, temperature: 0.8, dualClip: 3,
        clipHigh: 0.28, entropyCoef: 0.01, klCoef: 0.1, kl: { estimator: 'k3' as const } };
      const got = run(c, o as Opts);
      const want = ref(c, o);
      const name = `${aggregation} ${importanceLevel}`;
      expectNear(t, got.loss, want.loss, { rtol: 1e-5, atol: 1e-7 }, `${name}: loss`);
      expectCloseScaled(t, got.gradLogits, want.gradLogits, 2e-5, `${name}: gradLogits`);
      expectClose(t, got.logprobs, want.logprobs, { rtol: 1e-5, atol: 1e-5 }, `${name}: logprobs`);
      expectClose(t, got.entropy, want.entropy, { rtol: 1e-5, atol: 1e-5 }, `${name}: entropy`);
      expectStats(t, got.stats, want.stats, { rtol: 1e-5, atol: 1e-7 }, name);
    }
  }
});

t.test('random cases against the reference: every KL estimator, clamp and straight-through; presets; [B] advantages', async (t) => {
  const c = randomCase(303, 3, 11, 40);
  for (const estimator of ['k1', 'k2', 'k3', 'abs'] as const) {
    for (const extra of [{}, { clampLogRatio: 0.3, clampOutput: 0.2 }, { straightThrough: true }] as KlReferenceOptions[]) {
      const kl = { estimator, ...extra };
      const o = { klCoef: 0.3, entropyCoef: 0.02, kl };
      const got = run(c, o as Opts);
      const want = ref(c, o);
      const name = JSON.stringify(kl);
      expectNear(t, got.loss, want.loss, { rtol: 1e-5, atol: 1e-7 }, `${name}: loss`);
      expectCloseScaled(t, got.gradLogits, want.gradLogits, 2e-5, `${name}: gradLogits`);
      expectNear(t, got.stats.kl, want.stats.kl, { rtol: 1e-5, atol: 1e-7 }, `${name}: stats.kl`);
    }
  }
  // Presets act on the policy-loss options exactly as in ppoPolicyLoss.
  const wide = randomCase(305, 3, 11, 40);
  for (let i = 0; i < wide.old.length; i += 3) wide.old[i] -= 1.5; // r > 3 for some tokens: the dual clip binds
  const verl = run(wide, { preset: 'verl' });
  const explicit = run(wide, { dualClip: 3, clampLogRatio: 20 });
  t.equal(verl.loss, explicit.loss, "preset 'verl' = dualClip 3 + clampLogRatio 20: loss");
  expectBitIdentical(t, verl.gradLogits, explicit.gradLogits, "preset 'verl': gradLogits");
  t.not(verl.loss, run(wide).loss, "preset 'verl' differs from the defaults here");
  t.equal(run(wide, { preset: 'cleanrl' }).stats.clipfrac, run(wide, { clipfracMode: 'ratio' }).stats.clipfrac, "preset 'cleanrl' = clipfracMode 'ratio'");
  expectNear(t, verl.loss, ref(wide, { dualClip: 3, clampLogRatio: 20 }).loss, { rtol: 1e-5, atol: 1e-7 }, 'verl against the reference');
  // [B] advantages: the same as the expanded [B,T] ones.
  const pr = randomCase(307, 3, 7, 20, { perRow: true });
  const expanded = { ...pr, A: new Float32Array(21) };
  for (let i = 0; i < 21; ++i) expanded.A[i] = pr.A[Math.floor(i / 7)];
  for (const importanceLevel of ['token', 'sequence'] as const) {
    const a = run(pr, { importanceLevel });
    const b = run(expanded, { importanceLevel });
    expectNear(t, a.loss, b.loss, { rtol: 1e-6, atol: 1e-9 }, `${importanceLevel}: [B] vs [B,T] advantages: loss`);
    expectCloseScaled(t, a.gradLogits, b.gradLogits, 1e-6, `${importanceLevel}: [B] vs [B,T] advantages: gradLogits`);
    expectNear(t, a.loss, ref(pr, { importanceLevel }).loss, { rtol: 1e-5, atol: 1e-7 }, `${importanceLevel}: [B] advantages against the reference`);
  }
});

t.test('the fused op equals the composition of the separate ops (logprobs -> ppoPolicyLoss -> backward)', async (t) => {
  const c = randomCase(309, 5, 13, 30, { pIgnore: 0 });
  for (const o of [{}, { importanceLevel: 'sequence', aggregation: 'seq-mean-token-mean' }, { aggregation: 'grpo', dualClip: 3 }] as Opts[]) {
    const fused = run(c, o);
    const lp = rl.logprobsFromLogits(ft(c.logits, [5, 13, 30]), it32(c.labels, [5, 13]));
    const pg = rl.ppoPolicyLoss({ logprobs: lp.logprobs, oldLogprobs: ft(c.old, [5, 13]), advantages: ft(c.A, [5, 13]),
      mask: mt(c.m as Uint8Array, [5, 13]) }, o as never);
    const g = rl.logprobsFromLogitsBackward({ logits: ft(c.logits, [5, 13, 30]), labels: it32(c.labels, [5, 13]), gradLogprobs: pg.grad }, {});
    const name = JSON.stringify(o);
    expectNear(t, fused.loss, pg.loss, { rtol: 1e-5, atol: 1e-7 }, `${name}: loss`);
    expectCloseScaled(t, fused.gradLogits, data(g), 2e-5, `${name}: gradLogits`);
    for (const k of ['clipfrac', 'clipfracLower', 'approxKl', 'approxKlK3', 'ppoKl'] as const)
      expectNear(t, fused.stats[k], pg.stats[k], { rtol: 1e-5, atol: 1e-7 }, `${name}: stats.${k}`);
    const valid = (c.m as Uint8Array).reduce((a: number[], m, i) => (m ? [...a, i] : a), []);
    expectClose(t, valid.map((i) => fused.logprobs[i]), valid.map((i) => data(lp.logprobs)[i]), { rtol: 1e-6, atol: 1e-6 },
      `${name}: logprobs of the valid tokens`);
  }
});

// ---------------------------------------------------------------------------------------------
// (c) Finite differences.

t.test('finite differences (float64): the reference gradLogits is d loss / d logits', async (t) => {
  for (const importanceLevel of ['token', 'sequence'] as const) {
    const c = randomCase(importanceLevel === 'token' ? 311 : 313, 2, 3, 4, { kinkFree: true, sequence: importanceLevel === 'sequence' });
    for (const aggregation of ['token-mean', 'seq-mean-token-mean', 'grpo'] as const) {
      const o: ActorLossReferenceOptions = { aggregation, importanceLevel, dualClip: 3, temperature: 0.9, entropyCoef: 0.05, klCoef: 0.2,
        kl: { estimator: 'k3' } };
      const f = (z: Float64Array) => actorLossReference(c.B, c.T, c.V, { logits: z, labels: c.labels, oldLogprobs: c.old, advantages: c.A,
        refLogprobs: c.ref, mask: c.m }, o).loss;
      const fd = finiteDifferences(f, c.logits, 1e-6);
      expectClose(t, ref(c, o).gradLogits, fd, { rtol: 1e-6, atol: 1e-8 }, `${importanceLevel} ${aggregation}: reference vs central differences`);
    }
  }
});

t.test('finite differences (float32): the op\'s gradLogits is the gradient of the op\'s own loss', async (t) => {
  for (const importanceLevel of ['token', 'sequence'] as const) {
    const c = randomCase(importanceLevel === 'token' ? 317 : 319, 2, 3, 5, { kinkFree: true, sequence: importanceLevel === 'sequence' });
    for (const aggregation of ['token-mean', 'grpo'] as const) {
      const o = { aggregation, importanceLevel, dualClip: 3, temperature: 0.9, entropyCoef: 0.05, klCoef: 0.2, kl: { estimator: 'k2' } } as Opts;
      const idx = [...Array(c.B * c.T * c.V).keys()];
      const fd = finiteDifferencesF32((z) => run({ ...c, logits: z }, o).loss, c.logits, 1e-2, idx);
      expectClose(t, run(c, o).gradLogits, fd, { rtol: 2e-3, atol: 2e-3 * Math.max(...[...fd].map(Math.abs)) },
        `${importanceLevel} ${aggregation}: op gradLogits vs central differences of the op's loss`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// (d) Edge cases.

t.test('labels == ignoreIndex count as masked tokens', async (t) => {
  const c = randomCase(321, 3, 6, 8, { pIgnore: 0, mask: false });
  const ignored = [1, 7, 8, 17];
  const withIgnore = { ...c, labels: Int32Array.from(c.labels) };
  for (const i of ignored) withIgnore.labels[i] = -100;
  const withMask = { ...c, m: new Uint8Array(18).fill(1) };
  for (const i of ignored) withMask.m[i] = 0;
  for (const o of [{ entropyCoef: 0.1, klCoef: 0.1 }, { importanceLevel: 'sequence', aggregation: 'seq-mean-token-mean' }] as Opts[]) {
    const a = run(withIgnore, o);
    const b = run(withMask, o);
    const name = JSON.stringify(o);
    expectNear(t, a.loss, b.loss, { rtol: 1e-7, atol: 1e-12 }, `${name}: same loss`);
    expectCloseScaled(t, a.gradLogits, b.gradLogits, 1e-7, `${name}: same gradLogits`);
    expectStats(t, a.stats, b.stats, { rtol: 1e-7, atol: 1e-12 }, `${name}: same stats`);
    for (const i of ignored) {
      t.ok(a.gradLogits.slice(i * 8, i * 8 + 8).every((g) => g === 0), `${name}: ignored token ${i}: zero gradLogits`);
      t.ok(b.gradLogits.slice(i * 8, i * 8 + 8).every((g) => g === 0), `${name}: masked token ${i}: zero gradLogits`);
      t.equal(a.logprobs[i], 0, `${name}: ignored token ${i}: logprobs 0`);
      // The fused op skips the rows of masked tokens too: their lp and H outputs are 0 like ignored ones.
      t.ok(b.logprobs[i] === 0 && b.entropy[i] === 0, `${name}: masked token ${i}: logprobs and entropy outputs 0`);
    }
  }
  // A custom ignoreIndex.
  const custom = { ...withIgnore, labels: withIgnore.labels.map((l) => (l === -100 ? -1 : l)) };
  expectNear(t, run(custom, { ignoreIndex: -1 }).loss, run(withIgnore).loss, { rtol: 1e-7 }, 'ignoreIndex -1');
  expectError(t, () => run(custom), RangeError, /^actorLossFromLogits: .*`labels`/, undefined, 'then -1 is an out-of-range label by default');
});

t.test('all tokens ignored or masked, and empty batches: loss 0, zero gradLogits, stats 0', async (t) => {
  const c = randomCase(323, 2, 3, 5);
  for (const [name, cc] of [['all ignored', { ...c, labels: new Int32Array(6).fill(-100) }], ['all masked', { ...c, m: new Uint8Array(6) }]] as [string, Case][]) {
    for (const aggregation of aggregationsReference) {
      const o = { aggregation, normalizer: aggregation === 'dapo' ? 4 : undefined, entropyCoef: 0.1, klCoef: 0.1 } as Opts;
      const out = run(cc, o);
      t.equal(out.loss, 0, `${name} ${aggregation}: loss 0`);
      t.ok(out.gradLogits.every((g) => g === 0), `${name} ${aggregation}: zero gradLogits`);
      for (const k of statNames) t.equal(out.stats[k], 0, `${name} ${aggregation}: stats.${k} 0`);
    }
  }
  for (const [B, T] of [[0, 4], [3, 0]]) {
    const e = rl.actorLossFromLogits({ logits: ft([], [B, T, 6]), labels: it32([], [B, T]), oldLogprobs: ft([], [B, T]), advantages: ft([], [B, T]) },
      { entropyCoef: 0.1 });
    t.equal(e.loss, 0, `empty [${B},${T},6]: loss 0`);
    t.strictSame([...e.gradLogits.shape], [B, T, 6], `empty [${B},${T},6]: gradLogits shape`);
  }
});

t.test('V = 1, -inf logits, huge logits, NaN', async (t) => {
  // V = 1: lp = 0, H = 0; old = 0 -> r = 1, loss = -mean(A); no gradient can flow through a 1-way softmax.
  const v1: Case = { B: 1, T: 3, V: 1, logits: f32([5, -5, 0]), labels: Int32Array.from([0, 0, 0]), old: f32([0, 0, 0]), A: f32([1, 2, 3]), ref: null, m: null };
  const o1 = run(v1, { entropyCoef: 0.5 });
  expectNear(t, o1.loss, -2, { rtol: 1e-6 }, 'V = 1: loss -mean(A)');
  t.ok(o1.gradLogits.every((g) => g === 0), 'V = 1: zero gradLogits');
  // -inf logits (banned tokens): everything finite, zero gradient on the banned entries.
  const c = randomCase(325, 2, 4, 6);
  const banned = [2, 9, 20, 33];
  for (const i of banned) if (c.labels[Math.floor(i / 6)] !== i % 6) c.logits[i] = -Infinity;
  const inf = run(c, { entropyCoef: 0.1, klCoef: 0.1 });
  t.ok(Number.isFinite(inf.loss), '-inf logits: finite loss');
  t.ok(inf.gradLogits.every(Number.isFinite), '-inf logits: finite gradLogits');
  for (const i of banned) if (c.logits[i] === -Infinity) t.equal(inf.gradLogits[i], 0, `-inf logit ${i}: gradient 0`);
  expectNear(t, inf.loss, ref(c, { entropyCoef: 0.1, klCoef: 0.1 }).loss, { rtol: 1e-5, atol: 1e-7 }, '-inf logits: the reference loss');
  // Huge logits: a shift by 1e4 changes nothing (log-softmax is shift-invariant) but must not overflow.
  const shifted = { ...c, logits: c.logits.map((z) => z + 1e4) };
  const hs = run(shifted, { entropyCoef: 0.1 });
  t.ok(Number.isFinite(hs.loss) && hs.gradLogits.every(Number.isFinite), 'logits + 1e4: finite');
  expectNear(t, hs.loss, run(c, { entropyCoef: 0.1 }).loss, { rtol: 2e-3, atol: 2e-3 }, 'logits + 1e4: about the same loss (float32 spacing at 1e4 is 1e-3)');
  // NaN in a valid token's logits: loss NaN. In a masked token's logits: no effect.
  const valid = randomCase(327, 2, 4, 6, { mask: false, pIgnore: 0 });
  const nanValid = { ...valid, logits: Float32Array.from(valid.logits) };
  nanValid.logits[6 * 5 + 1] = NaN;
  t.ok(Number.isNaN(run(nanValid).loss), 'NaN in a valid token\'s logits: loss NaN');
  const masked = { ...valid, m: Uint8Array.from([1, 1, 1, 1, 1, 0, 1, 1]) };
  const nanMasked = { ...masked, logits: nanValid.logits };
  const a = run(masked, { entropyCoef: 0.1 });
  const b = run(nanMasked, { entropyCoef: 0.1 });
  t.equal(b.loss, a.loss, 'NaN in a masked token\'s logits: loss unchanged');
  t.ok(b.gradLogits.slice(30, 36).every((g) => g === 0), 'and zero gradLogits there');
  expectError(t, () => run(nanMasked, { checkFinite: true }), RangeError, /^actorLossFromLogits: `logits` has a non-finite value at index 31/);
});

t.test('[N,V] logits are one row, the same as [1,N,V]', async (t) => {
  const c = randomCase(329, 1, 12, 9);
  const o = { entropyCoef: 0.05, klCoef: 0.1, importanceLevel: 'sequence' } as Opts;
  const flat = run(c, o, true);
  const rows = run(c, o);
  t.strictSame(flat.shape, [12, 9], 'gradLogits [N,V]');
  t.equal(flat.loss, rows.loss, 'loss');
  expectBitIdentical(t, flat.gradLogits, rows.gradLogits, 'gradLogits');
});

// ---------------------------------------------------------------------------------------------
// (e) Bad input.

t.test('bad input', async (t) => {
  const c = randomCase(331, 2, 3, 4);
  const good = () => tensors(c);
  const op = (inputs: object, o: Opts = {}) => () => rl.actorLossFromLogits(inputs as never, o);
  expectError(t, op({ ...good(), logits: rl.tensor(new Int32Array(24), [2, 3, 4]) }), TypeError,
    /^actorLossFromLogits: expected a float32 .*`logits` but received an int32 Tensor/);
  expectError(t, op({ ...good(), labels: ft(new Float32Array(6), [2, 3]) }), TypeError, /^actorLossFromLogits: expected an int32 .*`labels`/);
  expectError(t, op({ ...good(), mask: ft(new Float32Array(6), [2, 3]) }), TypeError, /^actorLossFromLogits: expected a uint8 .*`mask`/);
  expectError(t, op({ ...good(), oldLogprobs: undefined }), TypeError, /^actorLossFromLogits: .*`oldLogprobs`/);
  expectError(t, op({ ...good(), labels: it32(new Int32Array(6), [3, 2]) }), RangeError, /^actorLossFromLogits: `labels`/);
  expectError(t, op({ ...good(), oldLogprobs: ft(new Float32Array(5)) }), RangeError, /^actorLossFromLogits: `oldLogprobs`/);
  expectError(t, op({ ...good(), advantages: ft(new Float32Array(4)) }), RangeError, /^actorLossFromLogits: `advantages`/);
  expectError(t, op({ ...good(), refLogprobs: ft(new Float32Array(5)) }), RangeError, /^actorLossFromLogits: `refLogprobs`/);
  expectError(t, op({ ...good(), mask: mt(new Uint8Array(7)) }), RangeError, /^actorLossFromLogits: `mask`/);
  const badLabels = Int32Array.from(c.labels);
  badLabels[4] = 4;
  expectError(t, op({ ...good(), labels: it32(badLabels, [2, 3]) }), RangeError, /^actorLossFromLogits: .*`labels`.*\b4\b/, undefined, 'label V');
  const bad = (o: object, cls: typeof RangeError | typeof TypeError, re: RegExp, what: string) => expectError(t, op(good(), o as Opts), cls, re, undefined, what);
  for (const v of [0, -1, NaN]) bad({ temperature: v }, RangeError, /^actorLossFromLogits: `temperature`/, `temperature ${v}`);
  for (const v of [NaN, Infinity]) bad({ entropyCoef: v }, RangeError, /^actorLossFromLogits: `entropyCoef`/, `entropyCoef ${v}`);
  for (const v of [-0.1, NaN, Infinity]) bad({ klCoef: v }, RangeError, /^actorLossFromLogits: `klCoef`/, `klCoef ${v}`);
  bad({ klCoef: '0.1' }, TypeError, /^actorLossFromLogits: .*`klCoef`/, "klCoef '0.1'");
  bad({ kl: { estimator: 'k5' } }, RangeError, /^actorLossFromLogits: `(kl\.)?estimator`/, 'unknown KL estimator');
  bad({ clipLow: 1 }, RangeError, /^actorLossFromLogits: `clipLow`/, 'clipLow 1');
  bad({ dualClip: 1 }, RangeError, /^actorLossFromLogits: `dualClip`/, 'dualClip 1');
  bad({ aggregation: 'mean' }, RangeError, /^actorLossFromLogits: `aggregation`/, 'unknown aggregation');
  bad({ aggregation: 'dapo' }, RangeError, /^actorLossFromLogits: `normalizer`/, 'dapo without a normalizer');
  bad({ importanceLevel: 'group' }, RangeError, /^actorLossFromLogits: `importanceLevel`/, 'unknown importanceLevel');
  bad({ preset: 'torchrl' }, RangeError, /^actorLossFromLogits: `preset`/, 'unknown preset');
  bad({ ignoreIndex: 0.5 }, RangeError, /^actorLossFromLogits: `ignoreIndex`/, 'ignoreIndex 0.5');
  await expectAsyncRejection(t, 'actorLossFromLogitsAsync', () => rl.actorLossFromLogitsAsync(good(), { temperature: 0 }), RangeError,
    /^actorLossFromLogitsAsync: `temperature`/);
  await expectAsyncRejection(t, 'actorLossFromLogitsAsync', () => rl.actorLossFromLogitsAsync({ ...good(), labels: it32(badLabels, [2, 3]) }),
    RangeError, /^actorLossFromLogits(Async)?: .*`labels`/);
});

// ---------------------------------------------------------------------------------------------
// (f) Threads, CPU paths, Async.

t.test('bit-identical for 1 and 2 threads', async (t) => {
  const c = randomCase(333, 8, 64, 1000);
  for (const o of [{ entropyCoef: 0.01, klCoef: 0.05 }, { importanceLevel: 'sequence', aggregation: 'seq-mean-token-mean', kl: { estimator: 'k3' },
    klCoef: 0.1 }] as Opts[]) {
    const [one, two] = [1, 2].map((n) => withThreads(n, () => run(c, o)));
    const name = JSON.stringify(o);
    t.equal(two.loss, one.loss, `${name}: loss`);
    expectBitIdentical(t, two.gradLogits, one.gradLogits, `${name}: gradLogits`);
    expectBitIdentical(t, two.logprobs, one.logprobs, `${name}: logprobs`);
    expectBitIdentical(t, two.entropy, one.entropy, `${name}: entropy`);
    for (const k of statNames) t.equal(two.stats[k], one.stats[k], `${name}: stats.${k}`);
  }
});

t.test('the fast CPU paths agree with the scalar reference path', async (t) => {
  const c = randomCase(335, 3, 17, 301);
  const o = { entropyCoef: 0.01, klCoef: 0.05, kl: { estimator: 'k3' } } as Opts;
  const runs = cpuPaths.map((p) => withCpuPath(p, () => run(c, o)));
  for (let i = 0; i < referencePath; ++i) {
    expectNear(t, runs[i].loss, runs[referencePath].loss, { rtol: 1e-6, atol: 1e-9 }, `${cpuPaths[i]}: loss`);
    expectCloseScaled(t, runs[i].gradLogits, runs[referencePath].gradLogits, 1e-5, `${cpuPaths[i]}: gradLogits`);
  }
});

t.test('actorLossFromLogitsAsync gives the same result', async (t) => {
  const c = randomCase(337, 4, 20, 64);
  const o = { entropyCoef: 0.01, klCoef: 0.05, preset: 'verl' } as Opts;
  const sync = run(c, o);
  const a = await rl.actorLossFromLogitsAsync(tensors(c), o);
  t.equal(a.loss, sync.loss, 'loss');
  expectBitIdentical(t, snapshot(a.gradLogits), sync.gradLogits, 'gradLogits');
  expectBitIdentical(t, snapshot(a.logprobs), sync.logprobs, 'logprobs');
  for (const k of statNames) t.equal(a.stats[k], sync.stats[k], `stats.${k}`);
});

t.test('out: gradLogits, logprobs and entropy tensors are filled, returned and fully overwritten on reuse', async (t) => {
  const c = randomCase(339, 2, 5, 7);
  const o = { entropyCoef: 0.05, klCoef: 0.1 } as Opts;
  const out = {
    gradLogits: ft(new Float32Array(70).fill(NaN), [2, 5, 7]),
    logprobs: ft(new Float32Array(10).fill(NaN), [2, 5]),
    entropy: ft(new Float32Array(10).fill(NaN), [2, 5]),
  };
  const res = rl.actorLossFromLogits(tensors(c), { ...o, out });
  t.equal(res.gradLogits, out.gradLogits, 'gradLogits is out.gradLogits');
  t.equal(res.logprobs, out.logprobs, 'logprobs is out.logprobs');
  t.equal(res.entropy, out.entropy, 'entropy is out.entropy');
  const want = ref(c, o);
  expectCloseScaled(t, data(out.gradLogits), want.gradLogits, 2e-5, 'gradLogits filled (masked and ignored rows overwritten with 0)');
  expectClose(t, data(out.logprobs), want.logprobs, { rtol: 1e-5, atol: 1e-5 }, 'logprobs filled');
  expectClose(t, data(out.entropy), want.entropy, { rtol: 1e-5, atol: 1e-5 }, 'entropy filled');
  const c2 = randomCase(341, 2, 5, 7);
  const res2 = await rl.actorLossFromLogitsAsync(tensors(c2), { ...o, out });
  t.equal(res2.gradLogits, out.gradLogits, 'async: gradLogits is out.gradLogits');
  expectCloseScaled(t, data(out.gradLogits), ref(c2, o).gradLogits, 2e-5, 'refilled');
  expectError(t, () => rl.actorLossFromLogits(tensors(c), { out: { gradLogits: ft(new Float32Array(70), [10, 7]) } }), RangeError,
    /^actorLossFromLogits: `out\.gradLogits` must have shape \[2, 5, 7\]/);
});
