// A seeded fuzzer of the public surface: every op (and the nn/optim entry points) called with one
// argument or option replaced by something hostile — wrong kinds and dtypes, wrong shapes,
// NaN/Inf, negative and huge numbers, disposed and detached tensors, empty and odd-length arrays,
// stray objects. Each call must either return or throw a TypeError, a RangeError or an RlhfError with a
// code; anything else (a plain Error, a crash of the process) fails the test. FUZZ_CALLS sets the
// budget (default 4000); the count tried is reported.
import t from 'tap';

import * as rl from '../lib/index';
import { Random } from '../lib/nn/random';

type Args = unknown[];

interface Target {
  name: string;
  valid: () => Args;
  call: (args: Args) => unknown;
}

const f32 = (n: number, v = 0.5) => new Float32Array(n).fill(v);
const ft = (n: number, shape: number[], v = 0.5) => rl.tensor(f32(n, v), shape);
const mask = (n: number) => rl.tensor(new Uint8Array(n).fill(1), [n], { dtype: 'uint8' });
const mask2 = (B: number, T: number) => rl.tensor(new Uint8Array(B * T).fill(1), [B, T], { dtype: 'uint8' });
const ids = (n: number, V: number) => rl.tensor(Int32Array.from({ length: n }, (_, i) => i % V), [n], { dtype: 'int32' });

/* eslint-disable @typescript-eslint/no-explicit-any */
const targets: Target[] = [
  { name: 'gae', valid: () => [{ rewards: ft(12, [4, 3]), values: ft(12, [4, 3]), lastValues: ft(3, [3]) }, { gamma: 0.99, lambda: 0.95 }],
    call: (a) => rl.gae(a[0] as any, a[1] as any) },
  { name: 'tokenGae', valid: () => [{ rewards: ft(12, [3, 4]), values: ft(12, [3, 4]), mask: mask2(3, 4) }, { gamma: 1, lambda: 0.95 }],
    call: (a) => rl.tokenGae(a[0] as any, a[1] as any) },
  { name: 'discountedReturns', valid: () => [{ rewards: ft(12, [3, 4]), mask: mask2(3, 4) }, { gamma: 0.9 }],
    call: (a) => rl.discountedReturns(a[0] as any, a[1] as any) },
  { name: 'maskedWhiten', valid: () => [ft(8, [8]), mask(8), { shiftMean: true }], call: (a) => rl.maskedWhiten(a[0] as any, a[1] as any, a[2] as any) },
  { name: 'maskedVar', valid: () => [ft(8, [8]), mask(8), { unbiased: true }], call: (a) => rl.maskedVar(a[0] as any, a[1] as any, a[2] as any) },
  { name: 'maskedMean', valid: () => [ft(8, [8]), mask(8)], call: (a) => rl.maskedMean(a[0] as any, a[1] as any) },
  { name: 'logprobsFromLogits', valid: () => [ft(20, [4, 5]), ids(4, 5), { entropy: true, temperature: 1 }],
    call: (a) => rl.logprobsFromLogits(a[0] as any, a[1] as any, a[2] as any) },
  { name: 'logprobsFromLogitsBackward', valid: () => [{ logits: ft(20, [4, 5]), labels: ids(4, 5), gradLogprobs: ft(4, [4]),
    gradEntropy: ft(4, [4]), logprobs: ft(4, [4], -Math.log(5)), entropy: ft(4, [4], Math.log(5)) }, {}],
    call: (a) => rl.logprobsFromLogitsBackward(a[0] as any, a[1] as any) },
  { name: 'klPenalty', valid: () => [ft(6, [6], -1), ft(6, [6], -1.2), { estimator: 'k3' }], call: (a) => rl.klPenalty(a[0] as any, a[1] as any, a[2] as any) },
  { name: 'shapeRewards', valid: () => [{ scores: ft(2, [2]), kl: ft(6, [2, 3]), mask: mask2(2, 3) }, { klCoef: 0.1 }],
    call: (a) => rl.shapeRewards(a[0] as any, a[1] as any) },
  { name: 'ppoPolicyLoss', valid: () => [{ logprobs: ft(6, [2, 3], -1), oldLogprobs: ft(6, [2, 3], -1.1), advantages: ft(6, [2, 3]), mask: mask2(2, 3) },
    { clipLow: 0.2, clipHigh: 0.2 }], call: (a) => rl.ppoPolicyLoss(a[0] as any, a[1] as any) },
  { name: 'valueLoss', valid: () => [{ values: ft(6, [2, 3]), oldValues: ft(6, [2, 3]), returns: ft(6, [2, 3], 1), mask: mask2(2, 3) }, { clip: 0.2 }],
    call: (a) => rl.valueLoss(a[0] as any, a[1] as any) },
  { name: 'actorLossFromLogits', valid: () => [{ logits: ft(30, [2, 3, 5]), labels: rl.tensor(Int32Array.from([0, 1, 2, 3, 4, 0]), [2, 3], { dtype: 'int32' }),
    oldLogprobs: ft(6, [2, 3], -1.6), advantages: ft(2, [2]), mask: mask2(2, 3) }, { clipLow: 0.2, clipHigh: 0.2 }],
  call: (a) => rl.actorLossFromLogits(a[0] as any, a[1] as any) },
  { name: 'pairwiseRewardLoss', valid: () => [{ chosen: ft(4, [4], 1), rejected: ft(4, [4]) }, { centerCoef: 0.01 }],
    call: (a) => rl.pairwiseRewardLoss(a[0] as any, a[1] as any) },
  { name: 'dpoLoss', valid: () => [{ policyChosen: ft(3, [3], -1), policyRejected: ft(3, [3], -2), refChosen: ft(3, [3], -1.5), refRejected: ft(3, [3], -1.5) },
    { beta: 0.1 }], call: (a) => rl.dpoLoss(a[0] as any, a[1] as any) },
  { name: 'sequenceLogprobs', valid: () => [ft(6, [2, 3], -1), mask2(2, 3), { average: true }],
    call: (a) => rl.sequenceLogprobs(a[0] as any, a[1] as any, a[2] as any) },
  { name: 'sequenceLogprobsBackward', valid: () => [{ gradSequence: ft(2, [2]), mask: mask2(2, 3) }, { average: true }],
    call: (a) => rl.sequenceLogprobsBackward(a[0] as any, a[1] as any) },
  { name: 'groupAdvantages', valid: () => [ft(6, [6]), { groupSize: 3 }], call: (a) => rl.groupAdvantages(a[0] as any, a[1] as any) },
  { name: 'matmul', valid: () => [ft(6, [2, 3]), ft(12, [3, 4]), { transA: false }], call: (a) => rl.matmul(a[0] as any, a[1] as any, a[2] as any) },
  { name: 'mlp.forward', valid: () => [{ inputSize: 3, hiddenSizes: [4], outputSize: 2, seed: 1 }, ft(6, [2, 3])],
    call: (a) => rl.nn.mlp(a[0] as any).forward(a[1] as any) },
  { name: 'tokenPolicy.forward', valid: () => [{ vocabSize: 7, contextSize: 2, seed: 1 }, rl.tensor(new Int32Array([1, 2, 3, 4]), [2, 2], { dtype: 'int32' })],
    call: (a) => rl.nn.tokenPolicy(a[0] as any).forward(a[1] as any) },
  { name: 'rewardModel.forward', valid: () => [{ vocabSize: 7, seed: 1 }, rl.tensor(new Int32Array([1, 2, 3, 4]), [2, 2], { dtype: 'int32' }), mask2(2, 2)],
    call: (a) => rl.nn.rewardModel(a[0] as any).forward(a[1] as any, a[2] as any) },
  { name: 'clipGradNorm', valid: () => [rl.nn.mlp({ inputSize: 2, outputSize: 1, hiddenSizes: [3] }).parameters(), 1.0],
    call: (a) => rl.clipGradNorm(a[0] as any, a[1] as any) },
  { name: 'optim.adamw', valid: () => [rl.nn.mlp({ inputSize: 2, outputSize: 1, hiddenSizes: [3] }).parameters(), { lr: 1e-3 }],
    call: (a) => rl.optim.adamw(a[0] as any, a[1] as any).step() },
  { name: 'tensor', valid: () => [f32(6), [2, 3], { dtype: 'float32' }], call: (a) => rl.tensor(a[0] as any, a[1] as any, a[2] as any) },
];
/* eslint-enable @typescript-eslint/no-explicit-any */

/** Something hostile to put where an argument or option goes. */
/** A CUDA tensor where there is a GPU (mixed with the CPU templates), else a device string. */
function cudaTensorOrName(): unknown {
  try {
    return rl.tensor(f32(6), [2, 3], { device: 'cuda' });
  } catch {
    return 'cuda:0';
  }
}

function hostile(rng: Random): unknown {
  const disposed = ft(4, [4]);
  disposed.dispose();
  const detach = <A extends Float32Array>(a: A): A => {
    structuredClone(a.buffer, { transfer: [a.buffer] });
    return a;
  };
  const pool: (() => unknown)[] = [
    () => undefined, () => null, () => NaN, () => Infinity, () => -Infinity, () => -1, () => 0, () => 0.5, () => 2 ** 53, () => 1e308,
    () => -(2 ** 31), () => 'cuda', () => 'nonsense', () => true, () => ({}), () => [], () => [1, 2, 3], () => (): void => undefined,
    () => new Float32Array(0), () => f32(5, NaN), () => f32(1 + Math.floor(rng.uniform() * 40), Infinity), () => new Float64Array(4),
    () => new Int32Array([-5, 99999, 2 ** 31 - 1, -(2 ** 31)]), () => new Uint8Array(7).fill(255), () => new Uint16Array(4),
    () => ft(4, [4]), () => ft(6, [3, 2]), () => ft(6, [1, 2, 3]), () => rl.tensor(new Float32Array(0), [0, 0]), () => disposed,
    () => rl.tensor(new Int32Array(6), [2, 3], { dtype: 'int32' }), () => rl.tensor(new Uint8Array(6), [2, 3], { dtype: 'uint8' }),
    () => ({ gradLogits: 3 }), () => detach(f32(6)),
    () => { const x = ft(6, [2, 3]); detach(x.dataSync() as Float32Array); return x; }, cudaTensorOrName, () => ({ valueOf: () => { throw new Error('valueOf must never be called'); } }),
  ];
  return pool[Math.floor(rng.uniform() * pool.length)]();
}

/** The valid arguments with one value replaced: a top-level argument, or a field of an object argument. */
function mutate(args: Args, rng: Random): Args {
  const out = args.slice();
  const i = Math.floor(rng.uniform() * out.length);
  const target = out[i];
  if (target !== null && typeof target === 'object' && !ArrayBuffer.isView(target) && !(target instanceof rl.Tensor) && !Array.isArray(target) &&
      rng.uniform() < 0.7) {
    const keys = [...Object.keys(target as object), 'out', 'preset', 'checkFinite', 'device', 'extra'];
    out[i] = { ...(target as object), [keys[Math.floor(rng.uniform() * keys.length)]]: hostile(rng) };
  } else {
    out[i] = hostile(rng);
  }
  return out;
}

function acceptable(e: unknown): boolean {
  if (e instanceof TypeError || e instanceof RangeError) return true;
  return e instanceof Error && typeof (e as { code?: unknown }).code === 'string' && (e as { code: string }).code.startsWith('E_');
}

t.test('every entry point returns or throws a named error under hostile arguments', async (t) => {
  const budget = Number(process.env.FUZZ_CALLS ?? 4000);
  const rng = new Random(Number(process.env.FUZZ_SEED ?? 20261128));
  for (const target of targets) {
    try {
      target.call(target.valid());
    } catch (e) {
      t.fail(`${target.name}: the valid template itself throws: ${(e as Error).message}`);
    }
  }
  let returned = 0, rejected = 0;
  const bad: string[] = [];
  for (let k = 0; k < budget; ++k) {
    const target = targets[k % targets.length];
    const args = mutate(target.valid(), rng);
    try {
      target.call(args);
      returned += 1;
    } catch (e) {
      if (acceptable(e)) rejected += 1;
      else if (bad.length < 10) bad.push(`${target.name}: ${(e as Error)?.constructor?.name} ${(e as Error)?.message}`);
    }
  }
  t.same(bad, [], `${budget} calls over ${targets.length} entry points: ${returned} returned, ${rejected} threw a named error`);
});
