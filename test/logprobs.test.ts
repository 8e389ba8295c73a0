// rl.logprobsFromLogits and rl.logprobsFromLogitsBackward (SEMANTICS.md §1): hand cases, random
// cases against lib/reference/policy.ts, finite-difference gradient checks (on the reference in
// float64 and on the op's own outputs in float32), edge cases (V = 1, -inf and huge logits, NaN,
// ignoreIndex, empty inputs), bad input, thread-count bit-identity, the Async forms and `out`.
import t from 'tap';

import * as rl from '../lib/index';
import { logprobsBackwardReference, logprobsReference } from '../lib/reference/policy';
import {
  cpuPaths, referencePath, data, expectBitIdentical, expectClose, expectError, ft, randomFloats, rng, snapshot, withCpuPath, withThreads,
} from './helpers/index';
import {
  expectAsyncRejection, expectCloseScaled, finiteDifferences, finiteDifferencesF32, it32, pick, randomLabels, randomLogits,
  sampleIndices,
} from './helpers/policy';

const LN2 = Math.log(2);
const lpTol = { rtol: 1e-5, atol: 1e-5 };

/** The objective sum(gLp*lp + gH*H) of the op's outputs, in float64. */
function opObjective(logits: Float32Array, shape: number[], labels: Int32Array, gLp: ArrayLike<number>, gH: ArrayLike<number>, temperature = 1): number {
  const out = rl.logprobsFromLogits(ft(logits, shape), it32(labels, shape.slice(0, -1)), { temperature, entropy: true });
  const lp = data(out.logprobs);
  const H = data(out.entropy as rl.Tensor);
  let s = 0;
  for (let i = 0; i < lp.length; ++i) s += gLp[i] * lp[i] + gH[i] * H[i];
  return s;
}

// ---------------------------------------------------------------------------------------------
// (a) Hand cases.

t.test('hand case: logits [0, ln2, ln3] are softmax [1/6, 1/3, 1/2]', async (t) => {
  // lp(label 2) = ln3 - ln6 = -ln2; lp(label 0) = -ln6; H = -(1/6 ln 1/6 + 1/3 ln 1/3 + 1/2 ln 1/2) = 1.01140426470735
  const row = [0, Math.log(2), Math.log(3)];
  const out = rl.logprobsFromLogits(ft([...row, ...row], [2, 3]), it32([2, 0]), { entropy: true });
  expectClose(t, data(out.logprobs), [-LN2, -Math.log(6)], { rtol: 1e-6 }, 'log-probs');
  expectClose(t, data(out.entropy as rl.Tensor), [1.0114042647073518, 1.0114042647073518], { rtol: 1e-6 }, 'entropy');
  t.strictSame([...out.logprobs.shape], [2]);
  t.equal(out.logprobs.dtype, 'float32');
  t.equal(rl.logprobsFromLogits(ft(row, [1, 3]), it32([1])).entropy, undefined, 'no entropy unless asked for');
});

t.test('hand case: uniform logits give lp = -ln V and H = ln V', async (t) => {
  const out = rl.logprobsFromLogits(ft([7, 7, 7, 7], [1, 4]), it32([3]), { entropy: true });
  expectClose(t, data(out.logprobs), [-Math.log(4)], { rtol: 1e-6 }, 'lp = -ln 4');
  expectClose(t, data(out.entropy as rl.Tensor), [Math.log(4)], { rtol: 1e-6 }, 'H = ln 4');
});

t.test('hand case: temperature 2 divides the logits: [2, 0] acts as [1, 0]', async (t) => {
  // lse = ln(1 + e) = 1.31326168751822; lp0 = 1 - lse; lp1 = -lse; H = lse - e/(1+e) = 0.582203108888218
  const out = rl.logprobsFromLogits(ft([2, 0, 2, 0], [2, 2]), it32([0, 1]), { temperature: 2, entropy: true });
  expectClose(t, data(out.logprobs), [-0.3132616875182228, -1.3132616875182228], { rtol: 1e-6 }, 'log-probs');
  expectClose(t, data(out.entropy as rl.Tensor), [0.5822031088882179, 0.5822031088882179], { rtol: 1e-6 }, 'entropy');
  // Backward, gLp = gH = 1, label 0: dz = (onehot - p)/tau - p (x - E)/tau = [0.0361647440642566, -0.0361647440642566]
  const g = rl.logprobsFromLogitsBackward({ logits: ft([2, 0], [1, 2]), labels: it32([0]), gradLogprobs: ft([1]), gradEntropy: ft([1]) },
    { temperature: 2 });
  expectClose(t, data(g), [0.03616474406425663, -0.03616474406425663], { rtol: 1e-6 }, 'backward with both gradients');
  t.strictSame([...g.shape], [1, 2]);
  // gLp only: (onehot - p)/2 = [0.1344707106849976, -0.1344707106849976]
  const g2 = rl.logprobsFromLogitsBackward({ logits: ft([2, 0], [1, 2]), labels: it32([0]), gradLogprobs: ft([1]) }, { temperature: 2 });
  expectClose(t, data(g2), [0.13447071068499755, -0.13447071068499755], { rtol: 1e-6 }, 'backward, no gradEntropy');
});

t.test('lib/reference logprobsReference reproduces the hand cases', async (t) => {
  const r = logprobsReference(1, 3, [0, Math.log(2), Math.log(3)], [2]);
  t.ok(Math.abs(r.logprobs[0] + LN2) < 1e-15, 'lp = -ln2');
  t.ok(Math.abs((r.entropy as Float64Array)[0] - 1.0114042647073518) < 1e-15, 'H');
  const b = logprobsBackwardReference(1, 2, { logits: [2, 0], labels: [0], gradLogprobs: [1], gradEntropy: [1] }, { temperature: 2 });
  t.ok(Math.abs(b[0] - 0.03616474406425663) < 1e-15 && Math.abs(b[1] + 0.03616474406425663) < 1e-15, 'backward');
  t.throws(() => logprobsReference(1, 3, [0, 0, 0], [3]), RangeError, 'label V is out of range');
  t.equal(logprobsReference(1, 3, [0, 0, 0], [-100]).logprobs[0], 0, 'ignoreIndex row: 0');
});

// ---------------------------------------------------------------------------------------------
// (b) Random cases against the float64 reference.

t.test('random [N,V] and [B,T,V] log-probs and entropy match the float64 reference', async (t) => {
  for (const [shape, tau, scale] of [[[37, 101], 1, 2], [[5, 3, 1000], 0.7, 3], [[64, 7], 1.3, 10], [[2, 2, 2, 32000], 1, 4]] as [number[], number, number][]) {
    const r = rng(shape.reduce((a, b) => a * b, 1));
    const V = shape[shape.length - 1];
    const N = shape.slice(0, -1).reduce((a, b) => a * b, 1);
    const logits = randomLogits(r, N, V, scale);
    const labels = randomLabels(r, N, V, 0.2);
    const ref = logprobsReference(N, V, logits, labels, { temperature: tau });
    const name = `[${shape.join(',')}] tau ${tau} scale ${scale}`;
    const out = rl.logprobsFromLogits(ft(logits, shape), it32(labels, shape.slice(0, -1)), { temperature: tau, entropy: true });
    t.strictSame([...out.logprobs.shape], shape.slice(0, -1), `${name}: logprobs have the labels' shape`);
    t.strictSame([...(out.entropy as rl.Tensor).shape], shape.slice(0, -1), `${name}: entropy has the labels' shape`);
    expectClose(t, data(out.logprobs), ref.logprobs, lpTol, `${name}: logprobs`);
    expectClose(t, data(out.entropy as rl.Tensor), ref.entropy as Float64Array, lpTol, `${name}: entropy`);
    const noH = rl.logprobsFromLogits(ft(logits, shape), it32(labels, shape.slice(0, -1)), { temperature: tau });
    expectBitIdentical(t, data(noH.logprobs), data(out.logprobs), `${name}: the same log-probs without entropy`);
  }
});

t.test('random backward matches the float64 reference, with and without gradEntropy', async (t) => {
  for (const [N, V, tau] of [[29, 53, 1], [8, 5000, 0.6], [300, 17, 2]]) {
    const r = rng(N * V + 7);
    const logits = randomLogits(r, N, V, 2);
    const labels = randomLabels(r, N, V, 0.15);
    const gLp = randomFloats(r, N);
    const gH = randomFloats(r, N);
    const name = `N=${N} V=${V} tau=${tau}`;
    const got = rl.logprobsFromLogitsBackward({ logits: ft(logits, [N, V]), labels: it32(labels), gradLogprobs: ft(gLp), gradEntropy: ft(gH) },
      { temperature: tau });
    t.strictSame([...got.shape], [N, V]);
    const want = logprobsBackwardReference(N, V, { logits, labels, gradLogprobs: gLp, gradEntropy: gH }, { temperature: tau });
    expectCloseScaled(t, data(got), want, 1e-5, `${name}: lp and entropy gradients`);
    const got2 = rl.logprobsFromLogitsBackward({ logits: ft(logits, [N, V]), labels: it32(labels), gradLogprobs: ft(gLp) }, { temperature: tau });
    const want2 = logprobsBackwardReference(N, V, { logits, labels, gradLogprobs: gLp }, { temperature: tau });
    expectCloseScaled(t, data(got2), want2, 1e-5, `${name}: lp gradient only`);
    // Each row of the lp-only gradient sums to 0 (softmax gradients are centred).
    const g = data(got2);
    let worst = 0;
    for (let i = 0; i < N; ++i) {
      let s = 0;
      for (let j = 0; j < V; ++j) s += g[i * V + j];
      worst = Math.max(worst, Math.abs(s));
    }
    t.ok(worst < 1e-5, `${name}: gradient rows sum to 0 (worst ${worst})`);
  }
});

t.test('a [B,T,V] backward equals the flattened [B*T,V] one', async (t) => {
  const r = rng(91);
  const logits = randomLogits(r, 12, 9);
  const labels = randomLabels(r, 12, 9, 0.2);
  const gLp = randomFloats(r, 12);
  const flat = snapshot(rl.logprobsFromLogitsBackward({ logits: ft(logits, [12, 9]), labels: it32(labels), gradLogprobs: ft(gLp) }, {}));
  const g3 = rl.logprobsFromLogitsBackward({ logits: ft(logits, [3, 4, 9]), labels: it32(labels, [3, 4]), gradLogprobs: ft(gLp, [3, 4]) }, {});
  t.strictSame([...g3.shape], [3, 4, 9]);
  expectBitIdentical(t, data(g3), flat, '[3,4,9] vs [12,9]');
});

// ---------------------------------------------------------------------------------------------
// (c) Finite differences.

t.test('finite differences: the reference backward is the gradient of sum(gLp*lp + gH*H) (float64)', async (t) => {
  const N = 4;
  const V = 6;
  const r = rng(5);
  const logits = Float64Array.from(randomLogits(r, N, V, 1.5));
  logits[7] = -Infinity; // a banned token: its gradient must be exactly 0
  const labels = Int32Array.from([1, 3, -100, 5]);
  const gLp = Float64Array.from(randomFloats(r, N));
  const gH = Float64Array.from(randomFloats(r, N));
  for (const tau of [1, 0.8]) {
    const f = (z: Float64Array) => {
      const o = logprobsReference(N, V, z, labels, { temperature: tau });
      let s = 0;
      for (let i = 0; i < N; ++i) s += gLp[i] * o.logprobs[i] + gH[i] * (o.entropy as Float64Array)[i];
      return s;
    };
    const finite = [...logits.keys()].filter((i) => Number.isFinite(logits[i]));
    const fd = finiteDifferences(f, logits, 1e-6, finite);
    const an = logprobsBackwardReference(N, V, { logits, labels, gradLogprobs: gLp, gradEntropy: gH }, { temperature: tau });
    expectClose(t, pick(an, finite), pick(fd, finite), { rtol: 1e-6, atol: 1e-8 }, `tau ${tau}: analytic vs central differences`);
    t.equal(an[7], 0, `tau ${tau}: the -inf logit gets gradient 0`);
  }
});

t.test('finite differences: the op\'s backward is the gradient of the op\'s own lp and H (float32)', async (t) => {
  const N = 3;
  const V = 5;
  const r = rng(6);
  const logits = randomLogits(r, N, V, 1);
  const labels = Int32Array.from([4, 0, 2]);
  const gLp = randomFloats(r, N);
  const gH = randomFloats(r, N);
  for (const tau of [1, 1.5]) {
    const all = [...Array(N * V).keys()];
    const fd = finiteDifferencesF32((z) => opObjective(z, [N, V], labels, gLp, gH, tau), logits, 3e-3, all);
    const an = rl.logprobsFromLogitsBackward({ logits: ft(logits, [N, V]), labels: it32(labels), gradLogprobs: ft(gLp), gradEntropy: ft(gH) },
      { temperature: tau });
    expectClose(t, data(an), fd, { rtol: 2e-3, atol: 5e-4 }, `tau ${tau}: op backward vs central differences of the op`);
    const fwd = rl.logprobsFromLogits(ft(logits, [N, V]), it32(labels), { temperature: tau, entropy: true });
    const given = rl.logprobsFromLogitsBackward({ logits: ft(logits, [N, V]), labels: it32(labels), gradLogprobs: ft(gLp), gradEntropy: ft(gH),
      logprobs: fwd.logprobs, entropy: fwd.entropy }, { temperature: tau });
    expectClose(t, data(given), fd, { rtol: 2e-3, atol: 5e-4 }, `tau ${tau}: backward given lp and H vs central differences of the op`);
  }
});

// ---------------------------------------------------------------------------------------------
// (d) Edge cases.

t.test('V = 1: lp = 0, H = 0 and a zero gradient', async (t) => {
  const out = rl.logprobsFromLogits(ft([3, -5, 100], [3, 1]), it32([0, 0, 0]), { entropy: true });
  t.strictSame([...data(out.logprobs)].map(Math.abs), [0, 0, 0], 'lp');
  t.strictSame([...data(out.entropy as rl.Tensor)].map(Math.abs), [0, 0, 0], 'H');
  const g = rl.logprobsFromLogitsBackward({ logits: ft([3, -5, 100], [3, 1]), labels: it32([0, 0, 0]), gradLogprobs: ft([1, 2, 3]),
    gradEntropy: ft([1, 1, 1]) }, {});
  t.strictSame([...data(g)].map(Math.abs), [0, 0, 0], 'gradient');
});

t.test('-inf logits (banned tokens): finite lp, finite H, zero gradient on the banned entries', async (t) => {
  // Row [0, -inf, 0]: lp(0) = -ln2, H = ln2. Row [-inf, 5, -inf, -inf] label 1: lp = 0, H = 0.
  const logits = ft([0, -Infinity, 0, 0, -Infinity, 5, -Infinity, -Infinity], [2, 4]);
  // (the first row has V = 4: [0, -inf, 0, 0] -> three equal logits)
  const out = rl.logprobsFromLogits(logits, it32([0, 1]), { entropy: true });
  expectClose(t, data(out.logprobs), [-Math.log(3), 0], { rtol: 1e-6, atol: 1e-7 }, 'lp');
  expectClose(t, data(out.entropy as rl.Tensor), [Math.log(3), 0], { rtol: 1e-6, atol: 1e-7 }, 'H finite (0 * -inf counts as 0)');
  const g = data(rl.logprobsFromLogitsBackward({ logits, labels: it32([0, 1]), gradLogprobs: ft([1, 1]), gradEntropy: ft([1, 1]) }, {}));
  t.ok(g.every(Number.isFinite), `every gradient entry finite: [${[...g].join(', ')}]`);
  t.equal(g[1], 0, 'the banned entry of row 0 gets 0');
  t.strictSame([g[4], g[6], g[7]], [0, 0, 0], 'the banned entries of row 1 get 0');
  const want = logprobsBackwardReference(2, 4, { logits: data(logits), labels: [0, 1], gradLogprobs: [1, 1], gradEntropy: [1, 1] }, {});
  expectClose(t, g, want, { rtol: 1e-6, atol: 1e-7 }, 'the reference gradient');
  // Labelling a banned token gives lp = -inf (not NaN): the model gives it probability 0.
  const banned = rl.logprobsFromLogits(logits, it32([1, 1]));
  t.equal(data(banned.logprobs)[0], -Infinity, 'lp of a banned label is -inf');
});

t.test('huge logits do not overflow: the logsumexp is shifted by the row maximum', async (t) => {
  const big = 3e38;
  const out = rl.logprobsFromLogits(ft([big, big, 1e30, 0, -1e30, 0], [2, 3]), it32([1, 1]), { entropy: true });
  const lp = data(out.logprobs);
  const H = data(out.entropy as rl.Tensor);
  // Row 0 [3e38, 3e38, 1e30]: two equal maxima, the third exp(-3e38) = 0: lp = -ln2, H = ln2.
  expectClose(t, [lp[0], H[0]], [-LN2, LN2], { rtol: 1e-6 }, 'row at the float32 maximum');
  // Row 1 [0, -1e30, 0] label 1: lp = -1e30 - ln2.
  expectClose(t, [lp[1], H[1]], [-1e30, LN2], { rtol: 1e-6 }, 'row with -1e30');
  const g = data(rl.logprobsFromLogitsBackward({ logits: ft([big, big, 1e30, 0, -1e30, 0], [2, 3]), labels: it32([0, 0]),
    gradLogprobs: ft([1, 1]), gradEntropy: ft([1, 1]) }, {}));
  expectClose(t, g, [0.5, -0.5, 0, 0.5, 0, -0.5], { rtol: 1e-6, atol: 1e-7 }, 'gradient finite and right');
});

t.test('ignoreIndex rows: lp = 0, H = 0, zero gradient; a custom ignoreIndex is honoured', async (t) => {
  const logits = ft([1, 2, 3, 4, 5, 6, 7, 8, 9], [3, 3]);
  const out = rl.logprobsFromLogits(logits, it32([0, -100, 2]), { entropy: true });
  const lp = data(out.logprobs);
  const H = data(out.entropy as rl.Tensor);
  t.equal(lp[1], 0, 'lp of the ignored row');
  t.equal(H[1], 0, 'H of the ignored row');
  t.ok(lp[0] < 0 && lp[2] < 0 && H[0] > 0, 'the other rows are computed');
  const g = data(rl.logprobsFromLogitsBackward({ logits, labels: it32([0, -100, 2]), gradLogprobs: ft([1, 5, 1]), gradEntropy: ft([1, 5, 1]) }, {}));
  t.strictSame([g[3], g[4], g[5]].map(Math.abs), [0, 0, 0], 'zero gradient on the ignored row');
  // ignoreIndex -1: -1 is ignored, -100 is now out of range.
  const custom = rl.logprobsFromLogits(logits, it32([0, -1, 2]), { ignoreIndex: -1 });
  t.equal(data(custom.logprobs)[1], 0, 'ignoreIndex -1');
  expectError(t, () => rl.logprobsFromLogits(logits, it32([0, -100, 2]), { ignoreIndex: -1 }), RangeError,
    /^logprobsFromLogits: .*`labels`.*-100/, undefined, '-100 is an error once ignoreIndex is -1');
  // An ignoreIndex inside [0, V): labels equal to it are ignored.
  const inside = rl.logprobsFromLogits(logits, it32([2, 1, 2]), { ignoreIndex: 2 });
  t.strictSame([data(inside.logprobs)[0], data(inside.logprobs)[2]], [0, 0], 'ignoreIndex 2 in [0, V)');
  t.ok(data(inside.logprobs)[1] < 0, 'label 1 computed');
  const allIgnored = rl.logprobsFromLogits(logits, it32([-100, -100, -100]), { entropy: true });
  t.strictSame([...data(allIgnored.logprobs)].map(Math.abs), [0, 0, 0], 'all rows ignored');
});

t.test('NaN in a row makes that row NaN and leaves the others alone', async (t) => {
  const logits = ft([1, NaN, 3, 4, 5, 6], [2, 3]);
  const out = rl.logprobsFromLogits(logits, it32([0, 2]), { entropy: true });
  const lp = data(out.logprobs);
  const H = data(out.entropy as rl.Tensor);
  t.ok(Number.isNaN(lp[0]) && Number.isNaN(H[0]), 'row 0 NaN (the NaN is not the label\'s logit but poisons the normaliser)');
  expectClose(t, [lp[1]], logprobsReference(1, 3, [4, 5, 6], [2]).logprobs, { rtol: 1e-6 }, 'row 1 unaffected');
  const g = data(rl.logprobsFromLogitsBackward({ logits, labels: it32([0, 2]), gradLogprobs: ft([1, 1]) }, {}));
  t.ok([g[0], g[1], g[2]].every(Number.isNaN), 'gradient of row 0 NaN');
  t.ok([g[3], g[4], g[5]].every(Number.isFinite), 'gradient of row 1 finite');
  const gNaN = data(rl.logprobsFromLogitsBackward({ logits: ft([1, 2, 3, 4, 5, 6], [2, 3]), labels: it32([0, 2]), gradLogprobs: ft([NaN, 1]) }, {}));
  t.ok([gNaN[0], gNaN[1], gNaN[2]].every(Number.isNaN), 'a NaN upstream gradient propagates to its row');
  expectError(t, () => rl.logprobsFromLogits(logits, it32([0, 2]), { checkFinite: true }), RangeError,
    /^logprobsFromLogits: `logits` has a non-finite value at index 1/);
});

t.test('empty inputs: N = 0 and T = 0 give empty outputs', async (t) => {
  const out = rl.logprobsFromLogits(ft([], [0, 5]), it32([], [0]), { entropy: true });
  t.strictSame([...out.logprobs.shape], [0]);
  t.strictSame([...(out.entropy as rl.Tensor).shape], [0]);
  const out3 = rl.logprobsFromLogits(ft([], [2, 0, 7]), it32([], [2, 0]));
  t.strictSame([...out3.logprobs.shape], [2, 0]);
  const g = rl.logprobsFromLogitsBackward({ logits: ft([], [0, 5]), labels: it32([], [0]), gradLogprobs: ft([], [0]) }, {});
  t.strictSame([...g.shape], [0, 5]);
});

t.test('labels as a plain Int32Array with 2-D logits', async (t) => {
  const r = rng(17);
  const logits = randomLogits(r, 6, 4);
  const labels = randomLabels(r, 6, 4);
  const a = rl.logprobsFromLogits(ft(logits, [6, 4]), labels, { entropy: true });
  const b = rl.logprobsFromLogits(ft(logits, [6, 4]), it32(labels), { entropy: true });
  expectBitIdentical(t, data(a.logprobs), data(b.logprobs), 'Int32Array vs int32 Tensor');
});

// ---------------------------------------------------------------------------------------------
// (e) Bad input.

t.test('bad input: labels outside [0, V) are a RangeError naming `labels` and the index', async (t) => {
  const logits = ft(new Float32Array(20), [4, 5]);
  expectError(t, () => rl.logprobsFromLogits(logits, it32([0, 1, 2, 5])), RangeError, /^logprobsFromLogits: .*`labels`.*\b3\b/,
    undefined, 'label V at index 3');
  expectError(t, () => rl.logprobsFromLogits(logits, it32([0, -1, 2, 3])), RangeError, /^logprobsFromLogits: .*`labels`.*\b1\b/,
    undefined, 'label -1 at index 1');
  expectError(t, () => rl.logprobsFromLogitsBackward({ logits, labels: it32([0, 1, 99, 3]), gradLogprobs: ft([1, 1, 1, 1]) }, {}), RangeError,
    /^logprobsFromLogitsBackward: .*`labels`.*\b2\b/, undefined, 'backward: label 99 at index 2');
  await expectAsyncRejection(t, 'logprobsFromLogitsAsync', () => rl.logprobsFromLogitsAsync(logits, it32([0, 1, 2, 5])), RangeError,
    /^logprobsFromLogits(Async)?: .*`labels`.*\b3\b/);
});

t.test('bad input: kinds, dtypes and shapes', async (t) => {
  const logits = ft(new Float32Array(20), [4, 5]);
  const labels = it32([0, 1, 2, 3]);
  expectError(t, () => rl.logprobsFromLogits(it32(new Int32Array(20), [4, 5]) as never, labels), TypeError,
    /^logprobsFromLogits: expected a float32 .*`logits` but received an int32 Tensor/);
  expectError(t, () => rl.logprobsFromLogits([1, 2] as never, labels), TypeError, /^logprobsFromLogits: .*`logits`/);
  expectError(t, () => rl.logprobsFromLogits(logits, ft([0, 1, 2, 3]) as never), TypeError,
    /^logprobsFromLogits: expected an int32 .*`labels` but received a float32 Tensor/);
  expectError(t, () => rl.logprobsFromLogits(logits, it32([0, 1, 2])), RangeError, /^logprobsFromLogits: `labels`/, undefined, '3 labels for 4 rows');
  expectError(t, () => rl.logprobsFromLogits(ft(new Float32Array(24), [2, 3, 4]), it32([0, 1, 2, 3, 0, 1])), RangeError,
    /^logprobsFromLogits: `labels`/, undefined, '[6] labels for [2,3,4] logits');
  expectError(t, () => rl.logprobsFromLogits(ft(new Float32Array(24), [2, 3, 4]), it32([0, 1, 2, 3, 0, 1], [3, 2])), RangeError,
    /^logprobsFromLogits: `labels`/, undefined, '[3,2] labels for [2,3,4] logits');
  expectError(t, () => rl.logprobsFromLogits(ft(new Float32Array(24), [2, 3, 4]), Int32Array.from([0, 1, 2, 3, 0, 1])), RangeError,
    /^logprobsFromLogits: `labels`/, undefined, 'a plain Int32Array is 1-D: not labels for [2,3,4] logits');
  expectError(t, () => rl.logprobsFromLogits(ft(new Float32Array(4), [4]), it32([0])), RangeError, /^logprobsFromLogits: `logits`/,
    undefined, '1-D logits');
  expectError(t, () => rl.logprobsFromLogits(logits, labels, 'x' as never), TypeError, /^logprobsFromLogits: expected an options object/);
  for (const temperature of [0, -1, NaN, Infinity])
    expectError(t, () => rl.logprobsFromLogits(logits, labels, { temperature }), RangeError, /^logprobsFromLogits: `temperature`/,
      undefined, `temperature ${temperature}`);
  expectError(t, () => rl.logprobsFromLogits(logits, labels, { temperature: '1' as never }), TypeError, /^logprobsFromLogits: .*`temperature`/);
  expectError(t, () => rl.logprobsFromLogits(logits, labels, { ignoreIndex: 1.5 }), RangeError, /^logprobsFromLogits: `ignoreIndex`/);
  expectError(t, () => rl.logprobsFromLogits(logits, labels, { entropy: 1 as never }), TypeError, /^logprobsFromLogits: expected a boolean for `entropy`/);
  const bw = { logits, labels, gradLogprobs: ft([1, 1, 1, 1]) };
  expectError(t, () => rl.logprobsFromLogitsBackward({ ...bw, gradLogprobs: ft([1, 1, 1]) }, {}), RangeError,
    /^logprobsFromLogitsBackward: `gradLogprobs`/);
  expectError(t, () => rl.logprobsFromLogitsBackward({ ...bw, gradEntropy: it32([1, 1, 1, 1]) as never }, {}), TypeError,
    /^logprobsFromLogitsBackward: .*`gradEntropy`/);
  expectError(t, () => rl.logprobsFromLogitsBackward({ ...bw, gradEntropy: ft([1, 1]) }, {}), RangeError,
    /^logprobsFromLogitsBackward: `gradEntropy`/);
  expectError(t, () => rl.logprobsFromLogitsBackward({ ...bw, gradLogprobs: undefined as never }, {}), TypeError,
    /^logprobsFromLogitsBackward: .*`gradLogprobs`/);
  expectError(t, () => rl.logprobsFromLogitsBackward({ ...bw }, { temperature: 0 }), RangeError, /^logprobsFromLogitsBackward: `temperature`/);
});

// ---------------------------------------------------------------------------------------------
// (f) Threads, CPU paths, Async, out.

t.test('bit-identical results for 1 and 2 threads', async (t) => {
  const r = rng(23);
  const N = 1500;
  const V = 777;
  const logits = randomLogits(r, N, V, 3);
  const labels = randomLabels(r, N, V, 0.1);
  const gLp = randomFloats(r, N);
  const gH = randomFloats(r, N);
  const runs = [1, 2].map((n) => withThreads(n, () => {
    const o = rl.logprobsFromLogits(ft(logits, [N, V]), it32(labels), { entropy: true, temperature: 0.9 });
    const g = rl.logprobsFromLogitsBackward({ logits: ft(logits, [N, V]), labels: it32(labels), gradLogprobs: ft(gLp), gradEntropy: ft(gH) },
      { temperature: 0.9 });
    return { lp: snapshot(o.logprobs), H: snapshot(o.entropy as rl.Tensor), g: snapshot(g) };
  }));
  expectBitIdentical(t, runs[1].lp, runs[0].lp, 'logprobs');
  expectBitIdentical(t, runs[1].H, runs[0].H, 'entropy');
  expectBitIdentical(t, runs[1].g, runs[0].g, 'backward');
});

t.test('the fast CPU paths agree with the scalar reference path', async (t) => {
  const r = rng(29);
  for (const [N, V] of [[3, 1], [7, 9], [33, 4099]]) {
    const logits = randomLogits(r, N, V, 2);
    const labels = randomLabels(r, N, V, 0.1);
    const gLp = randomFloats(r, N);
    const gH = randomFloats(r, N);
    const runs = cpuPaths.map((p) => withCpuPath(p, () => ({
      lp: snapshot(rl.logprobsFromLogits(ft(logits, [N, V]), labels, { entropy: true }).logprobs),
      g: snapshot(rl.logprobsFromLogitsBackward({ logits: ft(logits, [N, V]), labels, gradLogprobs: gLp, gradEntropy: gH }, {})),
    })));
    for (let i = 0; i < referencePath; ++i) {
      expectClose(t, runs[i].lp, runs[referencePath].lp, lpTol, `N=${N} V=${V}: ${cpuPaths[i]} vs reference path, logprobs`);
      expectCloseScaled(t, runs[i].g, runs[referencePath].g, 1e-5, `N=${N} V=${V}: ${cpuPaths[i]} vs reference path, backward`);
    }
  }
});

t.test('the Async forms give the same bits and reject bad input', async (t) => {
  const r = rng(31);
  const logits = randomLogits(r, 40, 300);
  const labels = randomLabels(r, 40, 300, 0.1);
  const gLp = randomFloats(r, 40);
  const sync = rl.logprobsFromLogits(ft(logits, [40, 300]), it32(labels), { entropy: true });
  const lp = snapshot(sync.logprobs);
  const H = snapshot(sync.entropy as rl.Tensor);
  const asy = await rl.logprobsFromLogitsAsync(ft(logits, [40, 300]), it32(labels), { entropy: true });
  expectBitIdentical(t, data(asy.logprobs), lp, 'logprobsFromLogitsAsync logprobs');
  expectBitIdentical(t, data(asy.entropy as rl.Tensor), H, 'logprobsFromLogitsAsync entropy');
  const bwIn = { logits: ft(logits, [40, 300]), labels: it32(labels), gradLogprobs: ft(gLp) };
  const g = snapshot(rl.logprobsFromLogitsBackward(bwIn, {}));
  expectBitIdentical(t, data(await rl.logprobsFromLogitsBackwardAsync(bwIn, {})), g, 'logprobsFromLogitsBackwardAsync');
  await expectAsyncRejection(t, 'logprobsFromLogitsAsync', () => rl.logprobsFromLogitsAsync(ft(logits, [40, 300]), ft(Float32Array.from(labels)) as never), TypeError,
    /^logprobsFromLogitsAsync: .*`labels`/);
  await expectAsyncRejection(t, 'logprobsFromLogitsBackwardAsync', () => rl.logprobsFromLogitsBackwardAsync({ ...bwIn, gradLogprobs: ft([1]) }, {}),
    RangeError, /^logprobsFromLogitsBackwardAsync: `gradLogprobs`/);
});

t.test('out: given tensors are filled and returned', async (t) => {
  const r = rng(37);
  const logits = randomLogits(r, 6, 5);
  const labels = randomLabels(r, 6, 5, 0.2);
  const ref = logprobsReference(6, 5, logits, labels);
  const outLp = ft(new Float32Array(6).fill(42), [2, 3]);
  const outH = ft(new Float32Array(6).fill(42), [2, 3]);
  const res = rl.logprobsFromLogits(ft(logits, [2, 3, 5]), it32(labels, [2, 3]), { entropy: true, out: { logprobs: outLp, entropy: outH } });
  t.equal(res.logprobs, outLp, 'the logprobs out tensor is returned');
  t.equal(res.entropy, outH, 'the entropy out tensor is returned');
  expectClose(t, data(outLp), ref.logprobs, lpTol, 'logprobs filled (ignored rows overwritten with 0)');
  expectClose(t, data(outH), ref.entropy as Float64Array, lpTol, 'entropy filled');
  // Reuse with other inputs: every element overwritten.
  const logits2 = randomLogits(r, 6, 5);
  rl.logprobsFromLogits(ft(logits2, [2, 3, 5]), it32(labels, [2, 3]), { entropy: true, out: { logprobs: outLp, entropy: outH } });
  expectClose(t, data(outLp), logprobsReference(6, 5, logits2, labels).logprobs, lpTol, 'reused out refilled');
  const outG = ft(new Float32Array(30).fill(42), [2, 3, 5]);
  const gLp = randomFloats(r, 6);
  const g = rl.logprobsFromLogitsBackward({ logits: ft(logits, [2, 3, 5]), labels: it32(labels, [2, 3]), gradLogprobs: ft(gLp, [2, 3]) },
    { out: outG });
  t.equal(g, outG, 'backward returns its out tensor');
  expectCloseScaled(t, data(outG), logprobsBackwardReference(6, 5, { logits, labels, gradLogprobs: gLp }, {}), 1e-5,
    'backward out filled (ignored rows overwritten with 0)');
  expectError(t, () => rl.logprobsFromLogits(ft(logits, [2, 3, 5]), it32(labels, [2, 3]), { out: { logprobs: ft(new Float32Array(6)) } }),
    RangeError, /^logprobsFromLogits: `out\.logprobs`|^logprobsFromLogits: `logprobs`/, undefined, 'out.logprobs of the wrong shape');
  expectError(t, () => rl.logprobsFromLogitsBackward({ logits: ft(logits, [6, 5]), labels: it32(labels), gradLogprobs: ft(gLp) },
    { out: ft(new Float32Array(30)) }), RangeError, /^logprobsFromLogitsBackward: `out`/, undefined, 'backward out of the wrong shape');
});

// ---------------------------------------------------------------------------------------------
// (g) The backward given the forward's outputs (one pass over each row on the CPU).

/** The forward's lp and H, and the backward with and without them, on one CPU path. */
function givenRuns(logits: Float32Array, N: number, V: number, labels: Int32Array, gLp: Float32Array, gH: Float32Array | null,
  opts: { temperature?: number; ignoreIndex?: number }) {
  const z = ft(logits, [N, V]);
  const fwd = rl.logprobsFromLogits(z, it32(labels), { ...opts, entropy: true });
  const base = { logits: z, labels: it32(labels), gradLogprobs: ft(gLp), ...(gH ? { gradEntropy: ft(gH) } : {}) };
  return {
    lp: snapshot(fwd.logprobs),
    H: snapshot(fwd.entropy as rl.Tensor),
    plain: snapshot(rl.logprobsFromLogitsBackward(base, opts)),
    given: snapshot(rl.logprobsFromLogitsBackward({ ...base, logprobs: fwd.logprobs, entropy: fwd.entropy }, opts)),
  };
}

t.test('given the forward\'s lp and H, every CPU path matches the reference backward', async (t) => {
  const r = rng(41);
  // V = 1 and 9 leave no full vector; 4099 a ragged tail; [64, 65600] writes 16.8 MB (streaming stores).
  for (const [N, V, tau] of [[3, 1, 1], [7, 9, 1], [33, 4099, 1], [33, 4099, 0.7], [64, 65600, 1]]) {
    const logits = randomLogits(r, N, V, 2);
    for (let j = 0; j < V; j += 7) logits[V + j] = -Infinity;  // banned tokens in row 1
    const labels = randomLabels(r, N, V, 0.1);
    if (labels[1] >= 0 && labels[1] % 7 === 0) labels[1] = (labels[1] + 1) % V;
    const gLp = randomFloats(r, N);
    const gH = randomFloats(r, N);
    const want = logprobsBackwardReference(N, V, { logits, labels, gradLogprobs: gLp, gradEntropy: gH }, { temperature: tau });
    const wantLp = logprobsBackwardReference(N, V, { logits, labels, gradLogprobs: gLp }, { temperature: tau });
    for (const path of cpuPaths) {
      const name = `N=${N} V=${V} tau=${tau} [${path}]`;
      const withH = withCpuPath(path, () => givenRuns(logits, N, V, labels, gLp, gH, { temperature: tau }));
      expectCloseScaled(t, withH.given, want, 1e-5, `${name}: lp and entropy gradients`);
      // The one pass ran: its rounding differs from the plain backward's somewhere in a row of 4099.
      if (path !== 'reference' && V > 1000)
        t.ok(withH.given.some((g, i) => g !== withH.plain[i]), `${name}: the one pass ran`);
      const lpOnly = withCpuPath(path, () => givenRuns(logits, N, V, labels, gLp, null, { temperature: tau }));
      expectCloseScaled(t, lpOnly.given, wantLp, 1e-5, `${name}: lp gradient only`);
    }
  }
});

t.test('given outputs that do not fit their rows, the backward is the plain one, bit for bit', async (t) => {
  const r = rng(43);
  const [N, V] = [12, 3001];
  const logits = randomLogits(r, N, V, 2);
  const labels = randomLabels(r, N, V, 0);
  const gLp = randomFloats(r, N);
  const gH = randomFloats(r, N);
  const z = ft(logits, [N, V]);
  for (const path of cpuPaths) {
    withCpuPath(path, () => {
      const fwd = rl.logprobsFromLogits(z, it32(labels), { entropy: true });
      const lp = snapshot(fwd.logprobs);
      const H = snapshot(fwd.entropy as rl.Tensor);
      // Stale by more than 2^-16 (a step of training), NaN, infinite, another row's; H off by 1e-3.
      const badLp = Float32Array.from(lp, (v, i) => [v + 1e-3, NaN, Infinity, -Infinity, lp[(i + 1) % N], v][i % 6]);
      const badH = Float32Array.from(H, (v, i) => (i % 6 === 5 ? v + 1e-3 * Math.max(1, v) : v));
      const base = { logits: z, labels: it32(labels), gradLogprobs: ft(gLp), gradEntropy: ft(gH) };
      const plain = snapshot(rl.logprobsFromLogitsBackward(base, {}));
      const given = snapshot(rl.logprobsFromLogitsBackward({ ...base, logprobs: ft(badLp), entropy: ft(badH) }, {}));
      expectBitIdentical(t, given, plain, `[${path}] every row recomputed from its logits`);
      // gradEntropy without the forward's entropy: lp alone cannot give the entropy's gradient.
      const noH = snapshot(rl.logprobsFromLogitsBackward({ ...base, logprobs: fwd.logprobs }, {}));
      expectBitIdentical(t, noH, plain, `[${path}] gradEntropy without entropy: the plain backward`);
    });
  }
});

t.test('given outputs: ignored rows, -inf labels and huge logits', async (t) => {
  // Row 0 ignored; row 1 labels a banned token (lp = -inf); row 2 at the float32 maximum.
  const big = 3e38;
  const logits = ft([1, 2, 3, 0, -Infinity, 5, big, big, 1e30], [3, 3]);
  const labels = it32([-100, 1, 0]);
  const fwd = rl.logprobsFromLogits(logits, labels, { entropy: true });
  const base = { logits, labels, gradLogprobs: ft([1, 1, 1]), gradEntropy: ft([1, 1, 1]) };
  const plain = snapshot(rl.logprobsFromLogitsBackward(base, {}));
  const given = snapshot(rl.logprobsFromLogitsBackward({ ...base, logprobs: fwd.logprobs, entropy: fwd.entropy }, {}));
  t.strictSame([given[0], given[1], given[2]].map(Math.abs), [0, 0, 0], 'ignored row: zero gradient');
  expectBitIdentical(t, given.subarray(3, 6), plain.subarray(3, 6), 'banned label: the plain backward');
  expectClose(t, given.subarray(6), [0.5, -0.5, 0], { rtol: 1e-6, atol: 1e-7 }, 'huge logits: finite and right');
});

t.test('given outputs: thread counts, the Async form, and bad input', async (t) => {
  const r = rng(47);
  const [N, V] = [1500, 777];
  const logits = randomLogits(r, N, V, 3);
  const labels = randomLabels(r, N, V, 0.1);
  const gLp = randomFloats(r, N);
  const gH = randomFloats(r, N);
  const [one, two] = [1, 2].map((n) => withThreads(n, () => givenRuns(logits, N, V, labels, gLp, gH, { temperature: 0.9 })));
  expectBitIdentical(t, two.given, one.given, 'bit-identical for 1 and 2 threads');
  const inputs = { logits: ft(logits, [N, V]), labels: it32(labels), gradLogprobs: ft(gLp), gradEntropy: ft(gH),
    logprobs: ft(one.lp), entropy: ft(one.H) };
  expectBitIdentical(t, data(await rl.logprobsFromLogitsBackwardAsync(inputs, { temperature: 0.9 })), one.given, 'Async');
  expectError(t, () => rl.logprobsFromLogitsBackward({ ...inputs, logprobs: undefined }, {}), RangeError,
    /^logprobsFromLogitsBackward: `entropy` goes with logprobs/, undefined, 'entropy without logprobs');
  expectError(t, () => rl.logprobsFromLogitsBackward({ ...inputs, logprobs: ft(one.lp.subarray(1)) }, {}), RangeError,
    /^logprobsFromLogitsBackward: `logprobs` must hold 1500 values/);
  expectError(t, () => rl.logprobsFromLogitsBackward({ ...inputs, entropy: ft(one.H.subarray(1)) }, {}), RangeError,
    /^logprobsFromLogitsBackward: `entropy` must hold 1500 values/);
  expectError(t, () => rl.logprobsFromLogitsBackward({ ...inputs, logprobs: it32(new Int32Array(N)) as never }, {}), TypeError,
    /^logprobsFromLogitsBackward: .*`logprobs`/);
});
