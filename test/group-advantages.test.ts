// rl.groupAdvantages (SEMANTICS.md §9): hand cases for every estimator and scale (python3 +
// numpy), eps, singleton groups, a group of equal rewards, NaN rewards (advantage 0, left out of
// their group's statistics, as TRL's nanmean / nanstd), group ids (non-contiguous, any int32
// labels) against consecutive groups, random cases against lib/reference/preference.ts, B = 0,
// bad input, thread-count bit-identity and the Async form.
import t from 'tap';

import * as rl from '../lib/index';
import { GroupAdvantagesReferenceOptions, groupAdvantagesReference } from '../lib/reference/preference';
import {
  expectBitIdentical, expectClose, expectError, f32, ft, randomFloats, rng, snapshot, withThreads,
} from './helpers/index';
import { expectAsyncRejection, expectCloseScaled, it32 } from './helpers/policy';
import { expectArgError } from './helpers/preference';

type Opts = NonNullable<Parameters<typeof rl.groupAdvantages>[1]>;
const estimators = ['grpo', 'rloo', 'reinforce-baseline'] as const;

function run(rewards: Float32Array, opts: Opts) {
  const out = rl.groupAdvantages(ft(rewards, [rewards.length]), opts);
  return { values: snapshot(out), shape: [...out.shape] };
}

function ref(rewards: ArrayLike<number>, opts: GroupAdvantagesReferenceOptions) {
  return groupAdvantagesReference(rewards, opts);
}

// ---------------------------------------------------------------------------------------------
// (a) Hand cases. Rewards [1, 2, 3, 4 | 5, 5, 5, 5], G = 4: group 1 mean 2.5, Bessel std sqrt(5/3);
// group 2 has equal rewards (std 0: numerator 0, advantage 0).

const r8 = f32([1, 2, 3, 4, 5, 5, 5, 5]);

t.test('hand case: grpo with scale group (default), batch and none; eps', async (t) => {
  const grpo = [-1.161805010833055, -0.3872683369443517, 0.3872683369443517, 1.161805010833055, 0, 0, 0, 0];
  for (const o of [{ groupSize: 4 }, { groupSize: 4, estimator: 'grpo' }, { groupSize: 4, scale: 'group' }, { groupSize: 4, eps: 1e-4 }] as Opts[]) {
    const out = run(r8, o);
    expectClose(t, out.values, grpo, { rtol: 1e-6, atol: 1e-7 }, `${JSON.stringify(o)}: (r - mean_g)/(std_g + 1e-4)`);
    t.strictSame(out.shape, [8], 'shape [B]');
  }
  expectClose(t, run(r8, { groupSize: 4, eps: 1e-6 }).values, [-1.1618941038629222, -0.3872980346209741, 0.3872980346209741, 1.1618941038629222, 0, 0, 0, 0],
    { rtol: 1e-6, atol: 1e-7 }, 'eps 1e-6 (verl)');
  // batch: the std of all 8 rewards, sqrt(2.5) = 1.5811388300841898; the mean stays the group's.
  expectClose(t, run(r8, { groupSize: 4, scale: 'batch' }).values, [-0.948623301845007, -0.316207767281669, 0.316207767281669, 0.948623301845007, 0, 0, 0, 0],
    { rtol: 1e-6, atol: 1e-7 }, 'scale batch');
  expectClose(t, run(r8, { groupSize: 4, scale: 'none' }).values, [-1.5, -0.5, 0.5, 1.5, 0, 0, 0, 0], { rtol: 1e-6, atol: 1e-7 }, 'scale none: r - mean_g');
  expectClose(t, ref(r8, { groupSize: 4 }), grpo, { rtol: 1e-12, atol: 1e-12 }, 'the reference agrees');
});

t.test('hand case: rloo and reinforce-baseline', async (t) => {
  // rloo: (G r - sum_g r)/(G - 1) = r - mean of the others: [-2, -2/3, 2/3, 2]; equal rewards 0.
  expectClose(t, run(r8, { groupSize: 4, estimator: 'rloo' }).values, [-2, -2 / 3, 2 / 3, 2, 0, 0, 0, 0], { rtol: 1e-6, atol: 1e-7 }, 'rloo');
  expectClose(t, run(r8, { groupSize: 4, estimator: 'reinforce-baseline' }).values, [-1.5, -0.5, 0.5, 1.5, 0, 0, 0, 0], { rtol: 1e-6, atol: 1e-7 },
    'reinforce-baseline: r - mean_g');
  // G = 2: rloo = r - other = 2 (r - mean) = [-1, 1]
  expectClose(t, run(f32([3, 4]), { groupSize: 2, estimator: 'rloo' }).values, [-1, 1], { rtol: 1e-6 }, 'rloo G = 2');
});

t.test('singleton groups (groupSize 1, or a lone group id) give advantage 0 for every estimator', async (t) => {
  const r = f32([0.3, -2, 7.5, 1e3]);
  for (const estimator of estimators) {
    for (const scale of estimator === 'grpo' ? ['group', 'batch', 'none'] as const : [undefined]) {
      const out = run(r, { groupSize: 1, estimator, scale } as Opts);
      t.strictSame([...out.values].map(Math.abs), [0, 0, 0, 0], `${estimator}${scale ? ` ${scale}` : ''}: groupSize 1 -> 0`);
    }
    // ids [7, 1, 1, 1]: row 0 is alone.
    const ids = run(f32([5, 1, 2, 3]), { groupIds: it32([7, 1, 1, 1]), estimator });
    t.equal(Math.abs(ids.values[0]), 0, `${estimator}: a lone group id -> 0`);
    expectClose(t, ids.values.subarray(1), run(f32([1, 2, 3]), { groupSize: 3, estimator }).values, { rtol: 1e-6, atol: 1e-7 },
      `${estimator}: the other group as if alone`);
  }
});

t.test('a group of equal rewards gives 0, not 0/0 (grpo divides by std + eps)', async (t) => {
  for (const v of [0, 0.1, -3.7, 1e6]) {
    const r = new Float32Array(6).fill(v);
    for (const estimator of estimators) {
      const out = run(r, { groupSize: 6, estimator });
      t.ok(out.values.every((a) => Math.abs(a) < 1e-2), `${estimator}, rewards all ${v}: advantages ~0 (${[...out.values]})`);
    }
  }
  // scale none + equal rewards: exactly r - mean = 0 for values whose mean is exact.
  t.strictSame([...run(f32([2, 2, 2, 2]), { groupSize: 4, scale: 'none' }).values].map(Math.abs), [0, 0, 0, 0], 'scale none: 0');
});

t.test('NaN rewards get advantage 0 and are left out of their group\'s statistics', async (t) => {
  // Group [1, NaN, 3, 4 | 2, 6, 2, 6]: the first group's statistics are over {1, 3, 4}.
  const r = f32([1, NaN, 3, 4, 2, 6, 2, 6]);
  const second = { grpo: run(f32([2, 6, 2, 6]), { groupSize: 4 }).values, rloo: run(f32([2, 6, 2, 6]), { groupSize: 4, estimator: 'rloo' }).values,
    'reinforce-baseline': run(f32([2, 6, 2, 6]), { groupSize: 4, estimator: 'reinforce-baseline' }).values };
  const want = {
    grpo: [-1.0910180272843248, 0, 0.2182036054568651, 0.87281442182746],
    rloo: [-2.5, 0, 0.5, 2], // G counts the 3 valid rewards: (3 r - 8)/2
    'reinforce-baseline': [-1.6666666666666665, 0, 0.3333333333333335, 1.3333333333333335],
  };
  for (const estimator of estimators) {
    const out = run(r, { groupSize: 4, estimator });
    expectClose(t, out.values.subarray(0, 4), want[estimator], { rtol: 1e-6, atol: 1e-7 }, `${estimator}: the NaN row 0, the others over the valid rewards`);
    t.equal(out.values[1], 0, `${estimator}: exactly 0 at the NaN reward`);
    expectClose(t, out.values.subarray(4), second[estimator], { rtol: 1e-6, atol: 1e-7 }, `${estimator}: the other group untouched`);
    expectClose(t, ref(r, { groupSize: 4, estimator }), out.values, { rtol: 1e-6, atol: 1e-7 }, `${estimator}: the reference agrees`);
  }
  // A group where every reward is NaN: all 0; a group with one valid reward: that one 0 too.
  const allNan = run(f32([NaN, NaN, 1, 2]), { groupSize: 2 });
  t.strictSame([...allNan.values].map(Math.abs).slice(0, 2), [0, 0], 'all-NaN group: 0');
  const oneValid = run(f32([NaN, 5, 1, 2]), { groupSize: 2, estimator: 'rloo' });
  t.strictSame([Math.abs(oneValid.values[0]), Math.abs(oneValid.values[1])], [0, 0], 'rloo with one valid reward: 0');
  // scale batch: the batch std leaves NaNs out too.
  const batch = run(r, { groupSize: 4, scale: 'batch' });
  expectClose(t, batch.values, ref(r, { groupSize: 4, scale: 'batch' }), { rtol: 1e-6, atol: 1e-7 }, 'scale batch with a NaN reward');
  t.ok(batch.values.every(Number.isFinite), 'scale batch: all finite');
});

t.test('groupIds: non-contiguous groups and arbitrary int32 labels equal consecutive groups', async (t) => {
  const r = randomFloats(rng(3), 12, 2);
  // interleave three groups of 4: ids [a, b, c, a, b, c, ...] with labels far apart and negative
  const labels = [-5, 1_000_000_007 % 2147483647, 0];
  const ids = Int32Array.from({ length: 12 }, (_, i) => labels[i % 3]);
  const perm = [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11];
  const contiguous = Float32Array.from(perm.map((i) => r[i]));
  for (const estimator of estimators) {
    for (const scale of estimator === 'grpo' ? ['group', 'batch', 'none'] as const : [undefined]) {
      const o = { estimator, scale } as Opts;
      const byIds = run(r, { ...o, groupIds: it32(ids) });
      const bySize = run(contiguous, { ...o, groupSize: 4 });
      expectClose(t, perm.map((i) => byIds.values[i]), bySize.values, { rtol: 1e-6, atol: 1e-7 }, `${estimator}${scale ? ` ${scale}` : ''}: ids = consecutive after permuting`);
      // A plain Int32Array is accepted too.
      expectBitIdentical(t, run(r, { ...o, groupIds: ids }).values, byIds.values, `${estimator}: Int32Array ids = int32 Tensor ids`);
    }
  }
  // groupIds of consecutive blocks = groupSize.
  const blocks = Int32Array.from({ length: 12 }, (_, i) => Math.floor(i / 4));
  expectClose(t, run(r, { groupIds: blocks }).values, run(r, { groupSize: 4 }).values, { rtol: 1e-6, atol: 1e-7 }, 'consecutive ids = groupSize');
  // Groups of different sizes.
  const uneven = Int32Array.from([0, 0, 1, 1, 1, 2, 0, 2, 2, 2, 2, 1]);
  for (const estimator of estimators) {
    expectClose(t, run(r, { groupIds: uneven, estimator }).values, ref(r, { groupIds: uneven, estimator }), { rtol: 1e-5, atol: 1e-6 },
      `${estimator}: groups of sizes 3, 4, 5`);
  }
});

// ---------------------------------------------------------------------------------------------
// (b) Random cases against the reference.

t.test('random cases against the reference: every estimator x scale x grouping, with NaNs', async (t) => {
  const B = 1024;
  const r = randomFloats(rng(5), B, 1.5, 0.5);
  for (let i = 0; i < B; i += 37) r[i] = NaN;
  for (let i = 64; i < 72; ++i) r[i] = 0.25; // one group of equal rewards (G = 8)
  const ids = Int32Array.from({ length: B }, () => 0);
  const ri = rng(6);
  for (let i = 0; i < B; ++i) ids[i] = Math.floor(ri() * 100) - 50;
  for (const estimator of estimators) {
    for (const scale of estimator === 'grpo' ? ['group', 'batch', 'none'] as const : [undefined]) {
      for (const eps of estimator === 'grpo' && scale !== 'none' ? [1e-4, 1e-6] : [undefined]) {
        for (const grouping of [{ groupSize: 8 }, { groupSize: 1 }, { groupSize: B }, { groupIds: ids }]) {
          const o = { estimator, scale, eps, ...grouping } as Opts;
          const name = JSON.stringify({ estimator, scale, eps, grouping: 'groupSize' in grouping ? grouping.groupSize : 'ids' });
          expectCloseScaled(t, run(r, o).values, ref(r, o as GroupAdvantagesReferenceOptions), 1e-5, name);
        }
      }
    }
  }
});

t.test('B = 0 gives an empty tensor', async (t) => {
  for (const estimator of estimators) {
    t.strictSame(run(f32([]), { groupSize: 4, estimator }).shape, [0], `${estimator}: groupSize 4, B = 0`);
    t.strictSame(run(f32([]), { groupIds: it32([]), estimator }).shape, [0], `${estimator}: groupIds [], B = 0`);
  }
});

// ---------------------------------------------------------------------------------------------
// (c) Bad input.

t.test('bad input: rewards, groupSize, groupIds, estimator, scale and eps name the argument', async (t) => {
  const r = ft(new Float32Array(6));
  const op = (o: object, rewards: unknown = r) => () => rl.groupAdvantages(rewards as never, o as Opts);
  expectError(t, op({ groupSize: 2 }, rl.tensor(new Int32Array(6))), TypeError, /^groupAdvantages: .*`rewards`.*int32/);
  expectError(t, op({ groupSize: 2 }, [1, 2]), TypeError, /^groupAdvantages: .*`rewards` but received an Array/);
  expectError(t, op({ groupSize: 2 }, ft(new Float32Array(6), [2, 3])), RangeError, /^groupAdvantages: `rewards`/, undefined, '2-D rewards');
  for (const v of [4, 0, -2, 1.5, NaN]) expectError(t, op({ groupSize: v }), RangeError, /^groupAdvantages: `groupSize`/, undefined, `groupSize ${v} for B = 6`);
  expectError(t, op({ groupSize: '2' }), TypeError, /^groupAdvantages: .*`groupSize`/, undefined, "groupSize '2'");
  expectArgError(t, op({}), 'groupAdvantages', /groupSize|groupIds/, 'neither groupSize nor groupIds');
  expectArgError(t, op({ groupSize: 2, groupIds: it32([0, 0, 1, 1, 2, 2]) }), 'groupAdvantages', /groupSize|groupIds/, 'both groupSize and groupIds');
  expectError(t, op({ groupIds: ft(new Float32Array(6)) }), TypeError, /^groupAdvantages: .*`groupIds`.*float32/);
  expectError(t, op({ groupIds: [0, 0, 1, 1, 2, 2] }), TypeError, /^groupAdvantages: .*`groupIds` but received an Array/);
  expectError(t, op({ groupIds: it32([0, 0, 1, 1]) }), RangeError, /^groupAdvantages: `groupIds`/, undefined, 'groupIds [4] for B = 6');
  expectError(t, op({ groupSize: 2, estimator: 'ppo' }), RangeError, /^groupAdvantages: `estimator` must be one of .*'grpo'.*'rloo'.*'reinforce-baseline'/);
  expectError(t, op({ groupSize: 2, scale: 'row' }), RangeError, /^groupAdvantages: `scale` must be one of .*'group'.*'batch'.*'none'/);
  for (const v of [-1e-4, NaN, Infinity]) expectError(t, op({ groupSize: 2, eps: v }), RangeError, /^groupAdvantages: `eps`/, undefined, `eps ${v}`);
  expectError(t, op({ groupSize: 2, eps: '1e-4' }), TypeError, /^groupAdvantages: .*`eps`/, undefined, "eps '1e-4'");
  expectError(t, () => rl.groupAdvantages(r, 'grpo' as never), TypeError, /^groupAdvantages: expected an options object/);
  await expectAsyncRejection(t, 'groupAdvantagesAsync', () => rl.groupAdvantagesAsync(r, { groupSize: 4 }), RangeError, /^groupAdvantagesAsync: `groupSize`/);
  await expectAsyncRejection(t, 'groupAdvantagesAsync', () => rl.groupAdvantagesAsync(r, { groupSize: 2, estimator: 'x' as never }), RangeError,
    /^groupAdvantagesAsync: `estimator`/);
});

// ---------------------------------------------------------------------------------------------
// (d) Threads, Async.

t.test('bit-identical advantages for 1 and 2 threads', async (t) => {
  const B = 1 << 17;
  const r = randomFloats(rng(7), B, 2);
  for (let i = 0; i < B; i += 101) r[i] = NaN;
  const ids = Int32Array.from({ length: B }, (_, i) => (i * 7919) % 4099);
  for (const estimator of estimators) {
    for (const grouping of [{ groupSize: 16 }, { groupIds: ids }, { groupSize: B }] as Opts[]) {
      for (const scale of estimator === 'grpo' ? ['group', 'batch'] as const : [undefined]) {
        const o = { ...grouping, estimator, scale } as Opts;
        const [one, two] = [1, 2].map((n) => withThreads(n, () => run(r, o).values));
        expectBitIdentical(t, two, one, `${estimator} ${scale ?? ''} ${'groupSize' in grouping ? `G ${grouping.groupSize}` : 'ids'}`);
      }
    }
  }
});

t.test('groupAdvantagesAsync gives the same bits', async (t) => {
  const r = randomFloats(rng(9), 4096, 2);
  for (const estimator of estimators) {
    const a = await rl.groupAdvantagesAsync(ft(r), { groupSize: 8, estimator });
    expectBitIdentical(t, snapshot(a), run(r, { groupSize: 8, estimator }).values, estimator);
  }
});

t.test('out: the given tensor is filled, returned, and fully overwritten on reuse', async (t) => {
  const r = randomFloats(rng(11), 24, 2);
  const out = ft(new Float32Array(24).fill(NaN));
  t.equal(rl.groupAdvantages(ft(r), { groupSize: 6, out }), out, 'returns out');
  expectCloseScaled(t, snapshot(out), ref(r, { groupSize: 6 }), 1e-5, 'filled');
  t.equal(await rl.groupAdvantagesAsync(ft(r), { groupSize: 3, estimator: 'rloo', out }), out, 'async returns out');
  expectCloseScaled(t, snapshot(out), ref(r, { groupSize: 3, estimator: 'rloo' }), 1e-5, 'refilled');
  expectError(t, () => rl.groupAdvantages(ft(r), { groupSize: 6, out: ft(new Float32Array(23)) }), RangeError, /^groupAdvantages: `out`/);
});
