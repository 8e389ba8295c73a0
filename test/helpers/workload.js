// One call of every op (and the nn entry points), on inputs big enough to be split over threads,
// for the determinism and concurrency tests. Plain JavaScript over an `rl` passed in, so that the
// tap files (which load lib/ through TypeScript) and worker_threads (which load dist/) run the
// very same calls. Each case has a sync and an Async form; digest() reduces a result to a SHA-256
// of every output bit, so two runs agree only if every float is bit-identical.
'use strict';
const crypto = require('node:crypto');

/** Deterministic floats from a 32-bit LCG: the same inputs in every thread and process. */
function floats(n, seed, scale = 1, offset = 0) {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; ++i) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = offset + scale * ((s / 4294967296) * 2 - 1);
  }
  return a;
}

function ints(n, seed, below) {
  const a = new Int32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; ++i) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s % below;
  }
  return a;
}

/** A [B,T] mask: row b valid for its first T - (b % 7) steps, with a hole every 11th step. */
function maskOf(B, T) {
  const m = new Uint8Array(B * T);
  for (let b = 0; b < B; ++b)
    for (let t = 0; t < T - (b % 7); ++t) m[b * T + t] = t % 11 === 5 ? 0 : 1;
  return m;
}

/**
 * The inputs, made once per `rl` (tensors are views, so every call reads the same memory); with
 * a CUDA `device` every tensor is copied there.
 */
function inputs(rl, device = 'cpu') {
  const f = (n, shape, seed, scale, offset) => rl.tensor(floats(n, seed, scale, offset), shape);
  const B = 64, T = 1000, V = 1000, N = B * T;
  const P = 16384;  // preference pairs
  const mask = rl.tensor(maskOf(B, T), [B, T], { dtype: 'uint8' });
  const d = {
    B, T, V, N, mask,
    rewards: f(N, [B, T], 1, 1), values: f(N, [B, T], 2, 1), lastValues: f(B, [B], 3, 1),
    rewardsTB: f(N, [T, B], 4, 1), valuesTB: f(N, [T, B], 5, 1),
    doneTB: rl.tensor(maskOf(T, B).map((v) => 1 - v), [T, B], { dtype: 'uint8' }),
    x: f(N, [N], 6, 3, 1), flatMask: rl.tensor(maskOf(B, T), [N], { dtype: 'uint8' }),
    logprobs: f(N, [B, T], 7, 0.5, -2), oldLogprobs: f(N, [B, T], 8, 0.5, -2), refLogprobs: f(N, [B, T], 9, 0.5, -2),
    advantages: f(N, [B, T], 10, 1),
    logits: f(128 * V, [128, V], 11, 4), labels: rl.tensor(ints(128, 12, V), [128], { dtype: 'int32' }),
    gradLogprobs: f(128, [128], 13, 1),
    actorLogits: f(8 * 40 * V, [8, 40, V], 14, 4), actorLabels: rl.tensor(ints(320, 15, V), [8, 40], { dtype: 'int32' }),
    actorOld: f(320, [8, 40], 16, 0.5, -6), actorAdv: f(8, [8], 17, 1),
    actorMask: rl.tensor(maskOf(8, 40), [8, 40], { dtype: 'uint8' }),
    scores: f(B, [B], 18, 1),
    chosen: f(P, [P], 19, 2, 0.5), rejected: f(P, [P], 20, 2),
    pc: f(P, [P], 21, 5, -40), pr: f(P, [P], 22, 5, -42),
    rc: f(P, [P], 23, 5, -40), rr: f(P, [P], 24, 5, -41),
    groupRewards: f(P, [P], 25, 1),
    ma: f(192 * 256, [192, 256], 26, 1), mb: f(256 * 320, [256, 320], 27, 1), mbT: f(320 * 256, [320, 256], 28, 1),
    mlpIn: f(256 * 32, [256, 32], 29, 1), mlpGrad: f(256 * 8, [256, 8], 30, 1),
    tokens: rl.tensor(ints(64 * 24, 31, 50), [64, 24], { dtype: 'int32' }), tokenMask: rl.tensor(maskOf(64, 24), [64, 24], { dtype: 'uint8' }),
    rewardGrad: f(64, [64], 32, 1),
  };
  if (device === 'cpu') return { ...d, device };
  const moved = { device };
  for (const [k, v] of Object.entries(d)) moved[k] = v instanceof rl.Tensor ? v.to(device) : v;
  return moved;
}

/** [name, run(rl, d, async)] for every case: `async` picks the ...Async form. */
const cases = [
  ['gae', (rl, d, a) => (a ? rl.gaeAsync : rl.gae)({ rewards: d.rewardsTB, values: d.valuesTB, lastValues: d.lastValues }, { gamma: 0.99, lambda: 0.95 })],
  ['gae terminated', (rl, d, a) => (a ? rl.gaeAsync : rl.gae)({ rewards: d.rewardsTB, values: d.valuesTB, lastValues: d.lastValues, terminated: d.doneTB },
    { gamma: 0.99, lambda: 0.95 })],
  ['tokenGae', (rl, d, a) => (a ? rl.tokenGaeAsync : rl.tokenGae)({ rewards: d.rewards, values: d.values, mask: d.mask }, { gamma: 1, lambda: 0.95 })],
  ['discountedReturns', (rl, d, a) => (a ? rl.discountedReturnsAsync : rl.discountedReturns)({ rewards: d.rewards, mask: d.mask }, { gamma: 0.9 })],
  ['maskedMean', (rl, d, a) => (a ? rl.maskedMeanAsync : rl.maskedMean)(d.x, d.flatMask)],
  ['maskedVar', (rl, d, a) => (a ? rl.maskedVarAsync : rl.maskedVar)(d.x, d.flatMask, { unbiased: true })],
  ['maskedWhiten', (rl, d, a) => (a ? rl.maskedWhitenAsync : rl.maskedWhiten)(d.x, d.flatMask, { shiftMean: true })],
  ['logprobsFromLogits', (rl, d, a) => (a ? rl.logprobsFromLogitsAsync : rl.logprobsFromLogits)(d.logits, d.labels, { entropy: true, temperature: 0.7 })],
  ['logprobsFromLogitsBackward', (rl, d, a) => (a ? rl.logprobsFromLogitsBackwardAsync : rl.logprobsFromLogitsBackward)(
    { logits: d.logits, labels: d.labels, gradLogprobs: d.gradLogprobs }, {})],
  ['klPenalty', (rl, d, a) => (a ? rl.klPenaltyAsync : rl.klPenalty)(d.logprobs, d.refLogprobs, { estimator: 'k3' })],
  ['shapeRewards', (rl, d, a) => (a ? rl.shapeRewardsAsync : rl.shapeRewards)({ scores: d.scores, kl: d.refLogprobs, mask: d.mask }, { klCoef: 0.05 })],
  ['ppoPolicyLoss token-mean', (rl, d, a) => (a ? rl.ppoPolicyLossAsync : rl.ppoPolicyLoss)(
    { logprobs: d.logprobs, oldLogprobs: d.oldLogprobs, advantages: d.advantages, mask: d.mask }, { clipLow: 0.2, clipHigh: 0.28, dualClip: 3 })],
  ['ppoPolicyLoss seq-mean-token-mean', (rl, d, a) => (a ? rl.ppoPolicyLossAsync : rl.ppoPolicyLoss)(
    { logprobs: d.logprobs, oldLogprobs: d.oldLogprobs, advantages: d.advantages, mask: d.mask }, { aggregation: 'seq-mean-token-mean' })],
  ['valueLoss', (rl, d, a) => (a ? rl.valueLossAsync : rl.valueLoss)(
    { values: d.values, oldValues: d.rewards, returns: d.advantages, mask: d.mask }, { clip: 0.2 })],
  ['actorLossFromLogits', (rl, d, a) => (a ? rl.actorLossFromLogitsAsync : rl.actorLossFromLogits)(
    { logits: d.actorLogits, labels: d.actorLabels, oldLogprobs: d.actorOld, advantages: d.actorAdv, mask: d.actorMask }, { clipLow: 0.2 })],
  ['pairwiseRewardLoss', (rl, d, a) => (a ? rl.pairwiseRewardLossAsync : rl.pairwiseRewardLoss)({ chosen: d.chosen, rejected: d.rejected }, { centerCoef: 0.01 })],
  ['dpoLoss', (rl, d, a) => (a ? rl.dpoLossAsync : rl.dpoLoss)(
    { policyChosen: d.pc, policyRejected: d.pr, refChosen: d.rc, refRejected: d.rr }, { beta: 0.1, labelSmoothing: 0.1 })],
  ['sequenceLogprobs', (rl, d, a) => (a ? rl.sequenceLogprobsAsync : rl.sequenceLogprobs)(d.logprobs, d.mask, { average: true })],
  ['sequenceLogprobsBackward', (rl, d, a) => (a ? rl.sequenceLogprobsBackwardAsync : rl.sequenceLogprobsBackward)(
    { gradSequence: d.scores, mask: d.mask }, { average: true })],
  ['groupAdvantages', (rl, d, a) => (a ? rl.groupAdvantagesAsync : rl.groupAdvantages)(d.groupRewards, { groupSize: 16 })],
  ['matmul', (rl, d, a) => (a ? rl.matmulAsync : rl.matmul)(d.ma, d.mb)],
  ['matmul transB', (rl, d, a) => (a ? rl.matmulAsync : rl.matmul)(d.ma, d.mbT, { transB: true })],
];

/**
 * Sync-only: one training step of an MLP and of the reward model (forward, backward, gradient
 * clipping, AdamW), from fresh seeded models, returning the updated parameters.
 */
const trainingCases = [
  ['mlp training step', (rl, d) => {
    const m = rl.nn.mlp({ inputSize: 32, hiddenSizes: [128, 128], outputSize: 8, seed: 7, device: d.device });
    const opt = rl.optim.adamw(m.parameters(), { lr: 1e-3, weightDecay: 0.01 });
    const y = m.forward(d.mlpIn);
    m.backward(d.mlpGrad);
    const norm = rl.clipGradNorm(m.parameters(), 0.5);
    opt.step();
    return { y, norm, params: m.parameters().map((p) => p.value) };
  }],
  ['reward model training step', (rl, d) => {
    const m = rl.nn.rewardModel({ vocabSize: 50, embedSize: 32, hiddenSizes: [64], seed: 3, device: d.device });
    const opt = rl.optim.adamw(m.parameters(), { lr: 1e-3 });
    const r = m.forward(d.tokens, d.tokenMask);
    m.backward(d.rewardGrad);
    opt.step();
    return { r, params: m.parameters().map((p) => p.value) };
  }],
];

/** SHA-256 over every number and tensor of a result, walked in key order. */
function digest(result) {
  const h = crypto.createHash('sha256');
  const walk = (v) => {
    if (typeof v === 'number') {
      h.update(Buffer.from(new Float64Array([v]).buffer));
    } else if (v !== null && typeof v === 'object' && typeof v.dataSync === 'function') {
      const a = v.dataSync();
      h.update(`${v.dtype}[${v.shape.join(',')}]`);
      h.update(Buffer.from(a.buffer, a.byteOffset, a.byteLength));
    } else if (v !== null && typeof v === 'object') {
      for (const k of Object.keys(v).sort()) {
        h.update(k);
        walk(v[k]);
      }
    } else {
      h.update(String(v));
    }
  };
  walk(result);
  return h.digest('hex');
}

/** Every case (and the training steps) run synchronously: { name: digest }. */
function runSync(rl, d = inputs(rl)) {
  const out = {};
  for (const [name, run] of cases) out[name] = digest(run(rl, d, false));
  for (const [name, run] of trainingCases) out[name] = digest(run(rl, d));
  return out;
}

/** Every case `copies` times as Async calls all in flight at once: { name: [digest per copy] }. */
async function runAsyncAllAtOnce(rl, copies, d = inputs(rl)) {
  const pending = [];
  for (let c = 0; c < copies; ++c) for (const [name, run] of cases) pending.push(run(rl, d, true).then((r) => [name, digest(r)]));
  const out = {};
  for (const [name, h] of await Promise.all(pending)) (out[name] ??= []).push(h);
  return out;
}

/** The names whose digest in `other` differs from `first`'s. */
function differing(first, other) {
  return Object.keys(first).filter((k) => first[k] !== other[k]);
}

/** The cases of an Async run whose copies are not all the sequential digest. */
function mismatches(sync, async) {
  return Object.keys(async).filter((k) => async[k].some((h) => h !== sync[k]));
}

module.exports = { cases, trainingCases, inputs, differing, mismatches, digest, runSync, runAsyncAllAtOnce };
