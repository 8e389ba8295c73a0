// rl.maskedMean, rl.maskedVar and rl.maskedWhiten (SEMANTICS.md §2): hand cases, the presets
// against lib/reference, thread-count bit-identity, fast path vs scalar reference, edge cases,
// bad input and the Async forms.
import t from 'tap';

import * as rl from '../lib/index';
import { maskedMeanReference, maskedVarReference, maskedWhitenReference, WhitenPresetReference } from '../lib/reference/statistics';
import {
  cpuPaths, referencePath, data, expectBitIdentical, expectClose, expectError, expectNear, expectRejection, ft, mt, randomFlags,
  randomFloats, rng, snapshot, withCpuPath, withThreads,
} from './helpers/index';

const presets: readonly WhitenPresetReference[] = ['trl', 'verl', 'openrlhf', 'cleanrl'];
const momentTol = { rtol: 1e-9 };
const whitenTol = { rtol: 1e-5 };

function randomData(seed: number, n: number, pValid = 0.7, mean = 0, std = 1) {
  const r = rng(seed);
  return { x: randomFloats(r, n, std, mean), m: randomFlags(r, n, pValid) };
}

// ---------------------------------------------------------------------------------------------
// (a) Worked by hand on x = [1,2,3,4,100] with the last element masked out.
// mean = 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5; unbiased var 5/3, population 5/4.

const hx = () => ft([1, 2, 3, 4, 100]);
const hm = () => mt([1, 1, 1, 1, 0]);

t.test('hand case: maskedMean and maskedVar of [1,2,3,4] (100 masked out)', async (t) => {
  t.equal(rl.maskedMean(hx(), hm()), 2.5);
  expectNear(t, rl.maskedVar(hx(), hm()), 5 / 3, { rtol: 1e-15 }, 'unbiased variance 5/3 (default)');
  expectNear(t, rl.maskedVar(hx(), hm(), { unbiased: true }), 5 / 3, { rtol: 1e-15 }, 'unbiased: true');
  t.equal(rl.maskedVar(hx(), hm(), { unbiased: false }), 1.25, 'population variance 5/4');
  t.equal(rl.maskedMean(hx()), 22, 'no mask: mean of all five');
  t.equal(rl.maskedMean(hx(), mt([1, 1, 1, 1, 255])), 22, 'any nonzero mask byte counts as valid');
  t.equal(rl.maskedMean(Float32Array.from([1, 2, 3, 4, 100]), Uint8Array.from([1, 1, 1, 1, 0])), 2.5, 'plain TypedArrays');
});

t.test("hand case: 'trl' whitening of [1,2,3,4] is (x - 2.5)/sqrt(5/3 + 1e-8), masked elements whitened too", async (t) => {
  const s = Math.sqrt(5 / 3 + 1e-8);
  const out = rl.maskedWhiten(hx(), hm());
  expectClose(t, data(out), [1, 2, 3, 4, 100].map((v) => (v - 2.5) / s), { rtol: 1e-6 }, 'trl (default preset)');
  t.strictSame([...out.shape], [5]);
  const viaPreset = rl.maskedWhiten(hx(), hm(), { preset: 'trl' });
  expectBitIdentical(t, data(viaPreset), data(out), "preset 'trl' is the default");
  // shiftMean false adds the mean back: (x - 2.5)/s + 2.5
  const reward = rl.maskedWhiten(hx(), hm(), { shiftMean: false });
  expectClose(t, data(reward), [1, 2, 3, 4, 100].map((v) => (v - 2.5) / s + 2.5), { rtol: 1e-6 }, 'shiftMean: false');
});

t.test("hand case: 'openrlhf' uses the population variance, clamped below at eps, and can only centre", async (t) => {
  expectClose(t, data(rl.maskedWhiten(hx(), hm(), { preset: 'openrlhf' })), [1, 2, 3, 4, 100].map((v) => (v - 2.5) / Math.sqrt(1.25)),
    { rtol: 1e-6 }, '(x - 2.5)/sqrt(5/4)');
  t.strictSame([...data(rl.maskedWhiten(hx(), hm(), { preset: 'openrlhf', scaleByStd: false }))], [-1.5, -0.5, 0.5, 1.5, 97.5],
    'scaleByStd: false only centres');
  // x = [1, 1.5]: population var 0.0625 < eps = 0.25, so the scale is 1/sqrt(0.25) = 2: out = [-0.5, 0.5]
  t.strictSame([...data(rl.maskedWhiten(ft([1, 1.5]), null, { preset: 'openrlhf', eps: 0.25 }))], [-0.5, 0.5], 'max(var, eps)');
  // One valid element is enough here: var 0 -> scale 1/sqrt(1e-8) = 1e4.
  expectClose(t, data(rl.maskedWhiten(ft([3, 3.5]), mt([1, 0]), { preset: 'openrlhf' })), [0, 5000], { rtol: 1e-6 }, 'one valid element');
});

t.test("hand case: 'cleanrl' divides by std + eps; 'verl' matches trl up to its 1e-8 count guard", async (t) => {
  const sd = Math.sqrt(5 / 3);
  expectClose(t, data(rl.maskedWhiten(hx(), hm(), { preset: 'cleanrl', eps: 0.5 })), [1, 2, 3, 4, 100].map((v) => (v - 2.5) / (sd + 0.5)),
    { rtol: 1e-6 }, 'cleanrl with eps 0.5: (x - 2.5)/(sqrt(5/3) + 0.5)');
  // verl: centre 10/(4 + 1e-8), variance from that centre over (4 + 1e-8), times 4/3. In float32
  // the guard is invisible at this size, so the trl numbers come out.
  expectClose(t, data(rl.maskedWhiten(hx(), hm(), { preset: 'verl' })), [1, 2, 3, 4, 100].map((v) => (v - 2.5) / Math.sqrt(5 / 3 + 1e-8)),
    { rtol: 1e-6 }, 'verl');
  // A large eps makes the presets' eps placement visible: trl sqrt(var + eps), cleanrl sqrt(var) + eps.
  expectClose(t, data(rl.maskedWhiten(hx(), hm(), { preset: 'trl', eps: 1 })), [1, 2, 3, 4, 100].map((v) => (v - 2.5) / Math.sqrt(5 / 3 + 1)),
    { rtol: 1e-6 }, 'trl with eps 1');
});

t.test('hand case: constant input whitens to zeros (var 0, scale 1/sqrt(eps))', async (t) => {
  t.strictSame([...data(rl.maskedWhiten(ft([3, 3, 3])))], [0, 0, 0]);
  t.strictSame([...data(rl.maskedWhiten(ft([3, 3, 3]), null, { shiftMean: false }))], [3, 3, 3]);
});

t.test('lib/reference statistics reproduce the hand cases, including verl\'s sum/(count + 1e-8)', async (t) => {
  const x = [1, 2, 3, 4, 100];
  const m = [1, 1, 1, 1, 0];
  t.equal(maskedMeanReference(x, m), 2.5);
  t.equal(maskedMeanReference([], []), 0, 'empty mean 0');
  t.equal(maskedMeanReference([5, 6], [0, 0]), 0, 'all-masked mean 0');
  expectNear(t, maskedVarReference(x, m), 5 / 3, { rtol: 1e-15 }, 'unbiased 5/3');
  t.equal(maskedVarReference(x, m, { unbiased: false }), 1.25);
  t.throws(() => maskedVarReference([1, 2], [1, 0]), RangeError, 'unbiased with one valid element');
  const s = Math.sqrt(5 / 3 + 1e-8);
  expectClose(t, maskedWhitenReference(x, m), x.map((v) => (v - 2.5) / s), { rtol: 1e-15 }, 'trl');
  expectClose(t, maskedWhitenReference(x, m, { preset: 'openrlhf', scaleByStd: false, shiftMean: false }), x, { rtol: 1e-15 },
    'openrlhf centre-only with the mean added back is the identity');
  // verl in float64: centre c = 10/(4 + 1e-8); var = sum (x - c)^2 / (4 + 1e-8) * 4/3.
  const c = 10 / (4 + 1e-8);
  const sq = [1, 2, 3, 4].reduce((a, v) => a + (v - c) * (v - c), 0) / (4 + 1e-8);
  const verlScale = 1 / Math.sqrt(sq * (4 / 3) + 1e-8);
  const verl = maskedWhitenReference(x, m, { preset: 'verl', shiftMean: false });
  expectClose(t, verl, x.map((v) => (v - c) * verlScale + c), { rtol: 1e-15 }, 'verl, exactly its formula');
  t.not(verl[0], maskedWhitenReference(x, m, { shiftMean: false })[0], 'and visibly not trl in float64');
  t.throws(() => maskedWhitenReference([1, 2], [1, 0]), RangeError, 'trl with one valid element');
  t.equal(maskedWhitenReference([], []).length, 0, 'empty in, empty out');
});

// ---------------------------------------------------------------------------------------------
// (b) Random cases against the float64 reference.

t.test('random maskedMean and maskedVar match the float64 reference', async (t) => {
  for (const [n, p, mean, std] of [[10, 0.5, 0, 1], [4097, 0.7, 0, 1], [100000, 0.3, 5, 2], [50000, 0.9, 1e4, 1], [8191, 1, -3, 0.01]]) {
    const { x, m } = randomData(n, n, p, mean, std);
    const name = `n=${n} valid=${p} mean=${mean} std=${std}`;
    expectNear(t, rl.maskedMean(x, m), maskedMeanReference(x, m), momentTol, `${name}: mean`);
    expectNear(t, rl.maskedMean(x), maskedMeanReference(x), momentTol, `${name}: mean, no mask`);
    // Relative to the variance itself: a large offset (mean 1e4) must not cost accuracy.
    const v = maskedVarReference(x, m);
    expectNear(t, rl.maskedVar(x, m) / v, 1, momentTol, `${name}: unbiased variance`);
    expectNear(t, rl.maskedVar(x, m, { unbiased: false }) / maskedVarReference(x, m, { unbiased: false }), 1, momentTol,
      `${name}: population variance`);
  }
});

t.test('random maskedWhiten matches the float64 reference for every preset and option', async (t) => {
  const { x, m } = randomData(61, 20000, 0.6, 0.5, 3);
  const xt = ft(x, [100, 200]);
  const mtt = mt(m, [100, 200]);
  for (const preset of presets) {
    for (const shiftMean of [true, false]) {
      for (const eps of [1e-8, 0.1]) {
        const got = rl.maskedWhiten(xt, mtt, { preset, shiftMean, eps });
        t.strictSame([...got.shape], [100, 200], 'output has the input shape');
        expectClose(t, data(got), maskedWhitenReference(x, m, { preset, shiftMean, eps }), whitenTol,
          `${preset} shiftMean ${shiftMean} eps ${eps}`);
      }
    }
  }
  expectClose(t, data(rl.maskedWhiten(xt, mtt, { preset: 'openrlhf', scaleByStd: false })),
    maskedWhitenReference(x, m, { preset: 'openrlhf', scaleByStd: false }), whitenTol, 'openrlhf scaleByStd false');
  expectClose(t, data(rl.maskedWhiten(xt, null, { preset: 'cleanrl' })), maskedWhitenReference(x, null, { preset: 'cleanrl' }), whitenTol,
    'cleanrl, no mask');
});

t.test('whitened valid elements have mean 0 and the preset\'s unit variance', async (t) => {
  const { x, m } = randomData(62, 5000, 0.5, 7, 4);
  const trl = data(rl.maskedWhiten(x, m));
  expectNear(t, maskedMeanReference(trl, m), 0, { atol: 1e-5, rtol: 0 }, 'trl: mean 0');
  expectNear(t, maskedVarReference(trl, m), 1, { rtol: 1e-5 }, 'trl: unbiased variance 1');
  const orl = data(rl.maskedWhiten(x, m, { preset: 'openrlhf' }));
  expectNear(t, maskedVarReference(orl, m, { unbiased: false }), 1, { rtol: 1e-5 }, 'openrlhf: population variance 1');
});

// ---------------------------------------------------------------------------------------------
// (c) Thread counts and (d) CPU paths.

t.test('results are bit-identical for 1 to 4 threads over 2M elements', async (t) => {
  const { x, m } = randomData(63, 1 << 21, 0.8, 1, 2);
  for (const withMask of [true, false]) {
    const mask = withMask ? m : null;
    const runs = [1, 2, 3, 4].map((n) => withThreads(n, () => ({
      mean: rl.maskedMean(x, mask),
      v: rl.maskedVar(x, mask),
      w: snapshot(rl.maskedWhiten(x, mask, { preset: 'verl' })),
    })));
    for (let i = 1; i < 4; ++i) {
      const label = `${withMask ? 'masked' : 'no mask'}, ${i + 1} threads vs 1`;
      t.equal(runs[i].mean, runs[0].mean, `${label}: mean`);
      t.equal(runs[i].v, runs[0].v, `${label}: variance`);
      expectBitIdentical(t, runs[i].w, runs[0].w, `${label}: whitened`);
    }
  }
});

t.test('the fast CPU paths agree with the scalar reference path within 1e-6', async (t) => {
  // Sizes around the 4096-element block and the 8-lane tail.
  for (const n of [1, 7, 4095, 4096, 4097, 100003]) {
    const { x, m } = randomData(64 + n, n, 0.6, 3, 2);
    m[0] = 1;
    if (n > 1) m[n - 1] = 1;
    const runs = cpuPaths.map((p) => withCpuPath(p, () => ({
      mean: rl.maskedMean(x, m),
      pop: rl.maskedVar(x, m, { unbiased: false }),
      w: n > 1 ? snapshot(rl.maskedWhiten(x, m)) : new Float32Array(0),
      o: snapshot(rl.maskedWhiten(x, m, { preset: 'openrlhf' })),
    })));
    for (let i = 0; i < referencePath; ++i) {
      const label = `n=${n}: ${cpuPaths[i]} vs reference`;
      expectNear(t, runs[i].mean, runs[referencePath].mean, { rtol: 1e-6 }, `${label}: mean`);
      expectNear(t, runs[i].pop / (runs[referencePath].pop || 1), runs[referencePath].pop === 0 ? 0 : 1, { rtol: 1e-6 }, `${label}: variance`);
      expectClose(t, runs[i].w, runs[referencePath].w, { rtol: 1e-6 }, `${label}: trl whitened`);
      expectClose(t, runs[i].o, runs[referencePath].o, { rtol: 1e-6 }, `${label}: openrlhf whitened`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// (e) Edge cases.

t.test('empty and all-masked inputs: mean 0, population variance 0, unbiased variance a RangeError', async (t) => {
  const empty = ft([]);
  t.equal(rl.maskedMean(empty), 0, 'mean of an empty input');
  t.equal(rl.maskedMean(empty, mt([])), 0, 'mean of an empty input with an empty mask');
  t.equal(rl.maskedMean(ft([1, 2]), mt([0, 0])), 0, 'mean of an all-masked input');
  t.equal(rl.maskedVar(ft([1, 2]), mt([0, 0]), { unbiased: false }), 0, 'population variance of nothing');
  t.equal(rl.maskedVar(empty, null, { unbiased: false }), 0, 'population variance of an empty input');
  expectError(t, () => rl.maskedVar(ft([1, 2]), mt([0, 0])), RangeError,
    /^maskedVar: `mask` must select at least 2 element\(s\) for this variance, but selects 0$/);
  expectError(t, () => rl.maskedVar(ft([1, 2]), mt([0, 1])), RangeError, /maskedVar: `mask` must select at least 2 .* selects 1/);
  expectError(t, () => rl.maskedVar(empty), RangeError, /maskedVar: `mask` must select at least 2/);
  t.equal(rl.maskedVar(ft([1, 2]), mt([0, 1]), { unbiased: false }), 0, 'population variance of one element');
  t.equal(rl.maskedMean(ft([], [0, 4])), 0, 'an empty 2-D input');
});

t.test('maskedWhiten of an empty input is an empty tensor; too few valid elements is a RangeError', async (t) => {
  for (const preset of presets) {
    const e = rl.maskedWhiten(ft([], [0, 3]), mt([], [0, 3]), { preset });
    t.strictSame([...e.shape], [0, 3], `${preset}: empty in, empty out`);
  }
  for (const preset of ['trl', 'verl', 'cleanrl'] as const) {
    expectError(t, () => rl.maskedWhiten(ft([1, 2, 3]), mt([0, 1, 0]), { preset }), RangeError,
      /^maskedWhiten: `mask` must select at least 2 element\(s\) for this variance, but selects 1$/, undefined, `${preset} with 1 valid`);
  }
  expectError(t, () => rl.maskedWhiten(ft([1, 2, 3]), mt([0, 0, 0]), { preset: 'openrlhf' }), RangeError,
    /maskedWhiten: `mask` must select at least 1 element\(s\)/, undefined, 'openrlhf with 0 valid');
  await expectRejection(t, () => rl.maskedWhitenAsync(ft([1, 2, 3]), mt([0, 0, 0])), RangeError,
    /maskedWhiten.*: `mask` must select at least 2/, undefined, 'async: the same error as a rejection');
});

t.test('NaN: a valid NaN makes every output NaN; a masked NaN stays where it is', async (t) => {
  const x = ft([1, NaN, 3, 4]);
  t.ok(Number.isNaN(rl.maskedMean(x)), 'mean NaN');
  t.ok(Number.isNaN(rl.maskedVar(x)), 'variance NaN');
  for (const preset of presets)
    t.ok(data(rl.maskedWhiten(x, null, { preset })).every(Number.isNaN), `${preset}: every whitened value NaN`);
  const m = mt([1, 0, 1, 1]);
  expectNear(t, rl.maskedMean(x, m), 8 / 3, { rtol: 1e-15 }, 'masked NaN: mean of [1,3,4]');
  expectNear(t, rl.maskedVar(x, m), 7 / 3, { rtol: 1e-15 }, 'masked NaN: variance of [1,3,4]');
  for (const preset of presets) {
    const w = [...data(rl.maskedWhiten(x, m, { preset }))];
    t.strictSame(w.map(Number.isNaN), [false, true, false, false], `${preset}: only the masked NaN's own output is NaN`);
  }
  // Infinity among the valid elements: the variance is not a number either.
  t.ok(Number.isNaN(rl.maskedVar(ft([1, Infinity, 3]))), 'a valid Infinity gives a NaN variance');
});

t.test('checkFinite on maskedWhiten names `x` and the first bad index, even when masked', async (t) => {
  expectError(t, () => rl.maskedWhiten(ft([1, 2, 3, Infinity, NaN]), mt([1, 1, 1, 0, 0]), { checkFinite: true }), RangeError,
    /^maskedWhiten: `x` has a non-finite value at index 3 \(checkFinite\)$/);
  await expectRejection(t, () => rl.maskedWhitenAsync(ft([NaN, 1]), null, { checkFinite: true }), RangeError,
    /maskedWhitenAsync: `x` has a non-finite value at index 0/);
});

t.test('out: the given tensor is returned and filled; a 1-D TypedArray input gives a 1-D tensor', async (t) => {
  const { x, m } = randomData(65, 300);
  const out = ft(new Float32Array(300).fill(5), [20, 15]);
  const res = rl.maskedWhiten(ft(x, [20, 15]), mt(m, [20, 15]), { out });
  t.equal(res, out);
  expectClose(t, data(out), maskedWhitenReference(x, m), whitenTol, 'filled');
  const res2 = await rl.maskedWhitenAsync(ft(x, [20, 15]), mt(m, [20, 15]), { preset: 'cleanrl', out });
  t.equal(res2, out, 'async returns the out tensor');
  expectClose(t, data(out), maskedWhitenReference(x, m, { preset: 'cleanrl' }), whitenTol, 'refilled');
  const flat = rl.maskedWhiten(x, m);
  t.strictSame([...flat.shape], [300]);
  t.equal(flat.dtype, 'float32');
  expectError(t, () => rl.maskedWhiten(ft(x, [20, 15]), mt(m, [20, 15]), { out: ft(new Float32Array(300)) }), RangeError,
    /maskedWhiten: `out` must have shape \[20, 15\] but has \[300\]/);
  expectError(t, () => rl.maskedWhiten(x, m, { out: new Float32Array(300) as never }), TypeError,
    /maskedWhiten: expected a float32 Tensor for `out`/);
});

// ---------------------------------------------------------------------------------------------
// (f) Bad input.

t.test('bad input: wrong kinds and dtypes are TypeErrors naming the op and argument', async (t) => {
  expectError(t, () => rl.maskedMean([1, 2] as never), TypeError,
    /^maskedMean: expected a float32 Tensor or a Float32Array for `x` but received an Array$/);
  expectError(t, () => rl.maskedMean(new Int32Array(2) as never), TypeError, /maskedMean: .*`x` but received Int32Array/);
  expectError(t, () => rl.maskedVar(ft([1, 2]), ft([1, 1]) as never), TypeError,
    /maskedVar: expected a uint8 Tensor or a Uint8Array for `mask` but received a float32 Tensor$/);
  expectError(t, () => rl.maskedWhiten(ft([1, 2]), new Float32Array(2) as never), TypeError,
    /maskedWhiten: expected a uint8 Tensor or a Uint8Array for `mask` but received Float32Array/);
  expectError(t, () => rl.maskedVar(ft([1, 2]), null, { unbiased: 'yes' as never }), TypeError,
    /maskedVar: expected a boolean for `unbiased` but received 'yes'/);
  expectError(t, () => rl.maskedVar(ft([1, 2]), null, 3 as never), TypeError, /maskedVar: expected an options object for `options`/);
  expectError(t, () => rl.maskedWhiten(ft([1, 2]), null, 'trl' as never), TypeError, /maskedWhiten: expected an options object for `options`/);
  expectError(t, () => rl.maskedWhiten(ft([1, 2]), null, { shiftMean: 0 as never }), TypeError, /maskedWhiten: expected a boolean for `shiftMean`/);
  expectError(t, () => rl.maskedWhiten(ft([1, 2]), null, { scaleByStd: null as never }), TypeError,
    /maskedWhiten: expected a boolean for `scaleByStd`/);
  expectError(t, () => rl.maskedWhiten(ft([1, 2]), null, { eps: '1e-8' as never }), TypeError, /maskedWhiten: .*`eps` but received '1e-8'/);
});

t.test('bad input: shapes and values are RangeErrors naming the op and argument', async (t) => {
  expectError(t, () => rl.maskedMean(ft([1, 2, 3, 4], [2, 2]), mt([1, 1, 1, 1])), RangeError,
    /^maskedMean: `mask` must have the shape of `x` \[2, 2\] but has \[4\]$/);
  expectError(t, () => rl.maskedVar(ft([1, 2, 3]), mt([1, 1])), RangeError, /maskedVar: `mask` must have the shape of `x`/);
  expectError(t, () => rl.maskedWhiten(ft([1, 2, 3]), null, { preset: 'torchrl' as never }), RangeError,
    /^maskedWhiten: `preset` must be one of 'trl', 'verl', 'openrlhf', 'cleanrl', not 'torchrl'$/);
  for (const eps of [-1e-8, NaN, Infinity, 2])
    expectError(t, () => rl.maskedWhiten(ft([1, 2, 3]), null, { eps }), RangeError,
      new RegExp(`^maskedWhiten: \`eps\` must be in \\[0, 1\\] but is ${eps}$`), undefined, `eps = ${eps}`);
});

t.test('bad input: disposed tensors are E_DISPOSED naming the argument', async (t) => {
  const x = ft([1, 2, 3]);
  x.dispose();
  expectError(t, () => rl.maskedVar(x), Error, /^maskedVar: `x` has been disposed$/, 'E_DISPOSED');
  const out = ft([0, 0]);
  out.dispose();
  expectError(t, () => rl.maskedWhiten(ft([1, 2]), null, { out }), Error, /maskedWhiten: `out` has been disposed/, 'E_DISPOSED');
});

t.test('the native entry points re-check their arguments and throw instead of crashing', async (t) => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { native } = require('../lib/native') as typeof import('../lib/native');
  const n = native();
  expectError(t, () => n.maskedMean(new Float32Array(3), new Uint8Array(2), false), RangeError,
    /maskedMean: expected `mask` to hold .*\b3\b.* but it holds 2/);
  expectError(t, () => n.maskedVar(new Float32Array(3), null, 1 as never, false), TypeError, /maskedVar: expected a boolean for `unbiased`/);
  expectError(t, () => n.maskedWhiten(new Float32Array(3), null, 4, true, true, 1e-8, new Float32Array(3), false), RangeError,
    /maskedWhiten: unknown `preset` 4/);
  expectError(t, () => n.maskedWhiten(new Float32Array(3), null, 0, true, true, -1, new Float32Array(3), false), RangeError,
    /maskedWhiten: expected a finite `eps` >= 0/);
  expectError(t, () => n.maskedWhiten(new Float32Array(3), null, 0, true, true, 1e-8, new Float32Array(2), false), RangeError,
    /maskedWhiten: expected `out` to hold .*\b3\b.* but it holds 2/);
  expectError(t, () => n.maskedMean([1, 2, 3] as never, null, false), TypeError, /maskedMean: expected a Float32Array .*for `x` but received an Array/);
});

// ---------------------------------------------------------------------------------------------
// (g) Async.

t.test('the Async forms give the same results as the sync forms', async (t) => {
  const { x, m } = randomData(66, 300000, 0.7, 2, 3);
  t.equal(await rl.maskedMeanAsync(x, m), rl.maskedMean(x, m), 'maskedMeanAsync');
  t.equal(await rl.maskedVarAsync(x, m), rl.maskedVar(x, m), 'maskedVarAsync');
  t.equal(await rl.maskedVarAsync(x, m, { unbiased: false }), rl.maskedVar(x, m, { unbiased: false }), 'maskedVarAsync population');
  for (const preset of presets) {
    const sync = snapshot(rl.maskedWhiten(x, m, { preset, shiftMean: false }));
    expectBitIdentical(t, data(await rl.maskedWhitenAsync(x, m, { preset, shiftMean: false })), sync, `maskedWhitenAsync ${preset}`);
  }
  await expectRejection(t, () => rl.maskedVarAsync(ft([1, 2]), mt([1, 0])), RangeError, /maskedVar.*: `mask` must select at least 2/,
    undefined, 'maskedVarAsync with one valid element rejects');
});

t.test('the Async forms report bad arguments as rejections, not synchronous throws', async (t) => {
  // A caller writing `maskedMeanAsync(x).catch(handle)` must see every failure in `handle`.
  type Cls = typeof TypeError | typeof RangeError;
  const calls: [string, () => Promise<unknown>, Cls, RegExp][] = [
    ['maskedMeanAsync', () => rl.maskedMeanAsync([1] as never), TypeError, /^maskedMeanAsync: .*`x` but received an Array$/],
    ['maskedVarAsync', () => rl.maskedVarAsync(ft([1, 2]), mt([1])), RangeError, /^maskedVarAsync: `mask` must have the shape of `x`/],
    ['maskedWhitenAsync', () => rl.maskedWhitenAsync(ft([1, 2]), null, { preset: 'x' as never }), RangeError, /^maskedWhitenAsync: `preset` must be one of/],
  ];
  for (const [name, call, cls, message] of calls) {
    let p: unknown = null;
    let thrown: unknown = null;
    try {
      p = call();
    } catch (e) {
      thrown = e;
    }
    if (thrown !== null) {
      t.fail(`${name}: threw synchronously (${(thrown as Error).constructor.name}: ${(thrown as Error).message}) instead of returning a rejected Promise`);
      continue;
    }
    t.ok(p instanceof Promise, `${name}: returned a Promise`);
    await expectRejection(t, () => p as Promise<unknown>, cls, message, undefined, `${name}: rejects`);
  }
});
