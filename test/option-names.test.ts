// Names an op does not take: a misspelt option, input or output (`clip_low`, `masks`) is a
// RangeError naming it and listing the names the object takes, never a call that runs with the
// option at its default or the input left out. Every op, its Async form, the nested options
// (`out`, the actor loss's `kl`), the KL controller, the optimiser and the models.
import t from 'tap';

import * as rl from '../lib/index';
import { expectError, f32, ft, mt } from './helpers/index';

const ints = (values: number[], shape?: number[]) => rl.tensor(Int32Array.from(values), shape ?? [values.length]);

// Each op as a call taking extra inputs and extra options, with small valid arguments besides.
type Extra = Record<string, unknown>;
interface OpCase {
  name: string;
  call(inputs: Extra, opts: Extra): unknown;
  /** The op takes an object of inputs (the others take positional arrays). */
  inputs: boolean;
}

const row = () => ft([0.5, -0.25], [1, 2]);
const cases: OpCase[] = [
  { name: 'gae', inputs: true, call: (i, o) => rl.gae({ rewards: f32([1, 0]), values: f32([0.5, 0.2]), lastValues: f32([0]), ...i }, o) },
  { name: 'tokenGae', inputs: true, call: (i, o) => rl.tokenGae({ rewards: row(), values: row(), ...i }, { maskMode: 'none', ...o }) },
  { name: 'discountedReturns', inputs: true, call: (i, o) => rl.discountedReturns({ rewards: row(), ...i }, o) },
  { name: 'maskedVar', inputs: false, call: (_i, o) => rl.maskedVar(f32([1, 2, 4]), null, o) },
  { name: 'maskedWhiten', inputs: false, call: (_i, o) => rl.maskedWhiten(f32([1, 2, 4]), null, o) },
  { name: 'logprobsFromLogits', inputs: false, call: (_i, o) => rl.logprobsFromLogits(ft([1, 2, 3], [1, 3]), ints([2]), o) },
  {
    name: 'logprobsFromLogitsBackward', inputs: true,
    call: (i, o) => rl.logprobsFromLogitsBackward({ logits: ft([1, 2, 3], [1, 3]), labels: ints([2]), gradLogprobs: f32([1]), ...i }, o),
  },
  { name: 'klPenalty', inputs: false, call: (_i, o) => rl.klPenalty(f32([-1, -2]), f32([-1.5, -2]), o) },
  {
    name: 'shapeRewards', inputs: true,
    call: (i, o) => rl.shapeRewards({ scores: f32([1]), kl: row(), mask: mt([1, 1], [1, 2]), ...i }, o),
  },
  { name: 'ppoPolicyLoss', inputs: true, call: (i, o) => rl.ppoPolicyLoss({ logprobs: row(), oldLogprobs: row(), advantages: row(), ...i }, o) },
  { name: 'valueLoss', inputs: true, call: (i, o) => rl.valueLoss({ values: row(), oldValues: row(), returns: row(), ...i }, o) },
  {
    name: 'actorLossFromLogits', inputs: true,
    call: (i, o) => rl.actorLossFromLogits({ logits: ft([1, 2, 3, 3, 2, 1], [1, 2, 3]), labels: ints([0, 1], [1, 2]),
      oldLogprobs: row(), advantages: row(), ...i }, o),
  },
  { name: 'pairwiseRewardLoss', inputs: true, call: (i, o) => rl.pairwiseRewardLoss({ chosen: f32([1, 2]), rejected: f32([0, 3]), ...i }, o) },
  {
    name: 'dpoLoss', inputs: true,
    call: (i, o) => rl.dpoLoss({ policyChosen: f32([-1]), policyRejected: f32([-2]), refChosen: f32([-1.5]), refRejected: f32([-1.5]), ...i }, o),
  },
  { name: 'sequenceLogprobs', inputs: false, call: (_i, o) => rl.sequenceLogprobs(row(), null, o) },
  {
    name: 'sequenceLogprobsBackward', inputs: true,
    call: (i, o) => rl.sequenceLogprobsBackward({ gradSequence: f32([1]), mask: mt([1, 0], [1, 2]), ...i }, o),
  },
  { name: 'groupAdvantages', inputs: false, call: (_i, o) => rl.groupAdvantages(f32([1, 2, 3, 5]), { groupSize: 2, ...o }) },
  { name: 'matmul', inputs: false, call: (_i, o) => rl.matmul(ft([1, 2], [1, 2]), ft([3, 4], [2, 1]), o) },
];

t.test('every op runs with its own names and names a misspelt option or input', async (t) => {
  for (const c of cases) {
    t.doesNotThrow(() => c.call({}, {}), `${c.name}: the small case itself is valid`);
    expectError(t, () => c.call({}, { clip_low: 0.1 }), RangeError,
      new RegExp(`^${c.name}: \`clip_low\` is not an option \\(they are: \\w+`), undefined, `${c.name}: a misspelt option`);
    if (c.inputs)
      expectError(t, () => c.call({ masks: mt([1, 1], [1, 2]) }, {}), RangeError,
        new RegExp(`^${c.name}: \`masks\` is not an input \\(they are: \\w+`), undefined, `${c.name}: a misspelt input`);
  }
});

t.test('the names a message lists are the names the object takes', async (t) => {
  expectError(t, () => rl.ppoPolicyLoss({ logprobs: row(), oldLogprobs: row(), advantages: row() }, { cliplow: 0.1 } as never), RangeError,
    /^ppoPolicyLoss: `cliplow` is not an option \(they are: aggregation, normalizer, clipLow, clipHigh, dualClip, clampLogRatio, importanceLevel, clipfracMode, preset, checkFinite, out\)$/);
  expectError(t, () => rl.pairwiseRewardLoss({ chosen: f32([1]), rejected: f32([0]), margins: f32([1]) } as never), RangeError,
    /^pairwiseRewardLoss: `margins` is not an input \(they are: chosen, rejected, margin\)$/);
});

t.test('nested objects: out, the actor loss\'s kl, a model\'s gradients', async (t) => {
  const pair = { chosen: f32([1, 2]), rejected: f32([0, 3]) };
  const grads = rl.pairwiseRewardLoss(pair);
  expectError(t, () => rl.pairwiseRewardLoss(pair, { out: { gradChosen: grads.gradChosen, gradRejectd: grads.gradRejected } } as never),
    RangeError, /^pairwiseRewardLoss: `out.gradRejectd` is not an output \(they are: gradChosen, gradRejected\)$/);
  const gae = rl.tokenGae({ rewards: row(), values: row() }, { maskMode: 'none' });
  expectError(t, () => rl.tokenGae({ rewards: row(), values: row() }, { maskMode: 'none', out: { advantage: gae.advantages } } as never),
    RangeError, /^tokenGae: `out.advantage` is not an output \(they are: advantages, returns\)$/);
  const actor = { logits: ft([1, 2, 3, 3, 2, 1], [1, 2, 3]), labels: ints([0, 1], [1, 2]), oldLogprobs: row(), advantages: row(), refLogprobs: row() };
  t.doesNotThrow(() => rl.actorLossFromLogits(actor, { klCoef: 0.1, kl: { estimator: 'k3', clampLogRatio: 20 } }), 'kl options by their names');
  expectError(t, () => rl.actorLossFromLogits(actor, { klCoef: 0.1, kl: { estimator: 'k3', clamp: 20 } as never }), RangeError,
    /^actorLossFromLogits: `kl.clamp` is not an option \(they are: estimator, clampLogRatio, clampOutput, straightThrough, preset\)$/);
  const policy = rl.nn.tokenPolicy({ vocabSize: 5, contextSize: 2, embedSize: 4, hiddenSizes: [8], seed: 1 });
  const fwd = policy.forward(ints([1, 2, 3, 4], [2, 2]));
  expectError(t, () => policy.backward({ gradLogit: fwd.logits } as never), RangeError,
    /^tokenPolicy.backward: `grads.gradLogit` is not an option \(they are: gradLogits, gradValues\)$/);
});

t.test('the Async forms, the KL controller, the optimiser and the models check their names too', async (t) => {
  await t.rejects(rl.pairwiseRewardLossAsync({ chosen: f32([1]), rejected: f32([0]) }, { centreCoef: 0.01 } as never),
    { name: 'RangeError', message: /^pairwiseRewardLossAsync: `centreCoef` is not an option/ });
  expectError(t, () => new rl.AdaptiveKLController({ initKlCoef: 0.2, target: 6, horizon: 10000, init: 0.1 } as never), RangeError,
    /^AdaptiveKLController: `init` is not an option \(they are: initKlCoef, target, horizon\)$/);
  expectError(t, () => rl.nn.mlp({ inputSize: 2, hiddenSizes: [4], outputSize: 1, activaton: 'relu' } as never), RangeError,
    /`activaton` is not an option/);
  const mlp = rl.nn.mlp({ inputSize: 2, hiddenSizes: [4], outputSize: 1, seed: 1 });
  expectError(t, () => new rl.optim.AdamW(mlp.parameters(), { lr: 1e-3, weight_decay: 0.01 } as never), RangeError,
    /`weight_decay` is not an option \(they are: lr, betas, eps, weightDecay, schedule\)$/);
});

// The ops that took no checkFinite before, each with a NaN at index 1 of the argument named.
t.test('checkFinite on every op with options: a RangeError naming the argument and the first bad index', async (t) => {
  const bad = (n: number) => { const a = new Float32Array(n).fill(0.5); a[1] = NaN; a[2] = Infinity; return a; };
  const badRow = () => rl.tensor(bad(2), [1, 2]);
  const checks: [string, string, (o: { checkFinite: boolean }) => unknown][] = [
    ['maskedMean', 'x', (o) => rl.maskedMean(bad(3), null, o)],
    ['maskedVar', 'x', (o) => rl.maskedVar(bad(3), null, o)],
    ['logprobsFromLogitsBackward', 'gradLogprobs',
      (o) => rl.logprobsFromLogitsBackward({ logits: ft([1, 2, 3, 4, 5, 6], [2, 3]), labels: ints([2, 0]), gradLogprobs: bad(2) }, o)],
    ['klPenalty', 'refLogprobs', (o) => rl.klPenalty(f32([-1, -2]), bad(2), o)],
    ['shapeRewards', 'kl', (o) => rl.shapeRewards({ scores: f32([1]), kl: badRow(), mask: mt([1, 1], [1, 2]) }, o)],
    ['sequenceLogprobs', 'tokenLogprobs', (o) => rl.sequenceLogprobs(badRow(), null, o)],
    ['sequenceLogprobsBackward', 'gradSequence', (o) => rl.sequenceLogprobsBackward({ gradSequence: bad(2), mask: mt([1, 0, 1, 1], [2, 2]) }, o)],
    ['groupAdvantages', 'rewards', (o) => rl.groupAdvantages(bad(4), { groupSize: 2, ...o })],
    ['matmul', 'b', (o) => rl.matmul(ft([1, 2], [1, 2]), rl.tensor(bad(2), [2, 1]), o)],
  ];
  for (const [op, arg, call] of checks) {
    expectError(t, () => call({ checkFinite: true }), RangeError, new RegExp(`^${op}: \`${arg}\` has a non-finite value at index 1`),
      undefined, `${op}: checkFinite names ${arg}`);
    t.doesNotThrow(() => call({ checkFinite: false }), `${op}: without checkFinite the NaN goes through`);
  }
});
