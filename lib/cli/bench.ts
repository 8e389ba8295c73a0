// `rlhf bench`: every op x backend x shape, timed through the public API (so the Node-API
// crossing and validation are included), against the memory bandwidth measured in the same run
// (STREAM triad on the library's thread pool; for CUDA rows, the GPU's device-to-device copy), and
// the ops that only read also against a pass that only reads, measured likewise.
// Backends: 'cpu' (the addon), 'cuda' (the addon on a GPU, synchronised after each call), 'js'
// (the plain TypeScript loops of lib/reference).
import * as fs from 'node:fs';
import * as os from 'node:os';

import * as rl from '../index';
import { native } from '../native';
import { discountedReturnsReference, gaeReference, tokenGaeReference } from '../reference/advantages';
import {
  actorLossReference, klPenaltyReference, logprobsBackwardReference, logprobsReference, ppoPolicyLossReference,
  shapeRewardsReference, valueLossReference,
} from '../reference/policy';
import {
  dpoLossReference, groupAdvantagesReference, pairwiseRewardLossReference, sequenceLogprobsBackwardReference,
  sequenceLogprobsReference,
} from '../reference/preference';
import { matmulReference } from '../reference/nn';
import { maskedMeanReference, maskedWhitenReference } from '../reference/statistics';

export type Backend = 'cpu' | 'cuda' | 'js';

export interface BenchRow {
  op: string;
  shape: string;
  backend: Backend;
  medianUs: number;
  elementsPerS: number;
  gbPerS: number;
  /**
   * Share of the machine's bandwidth in percent: of `bandwidthGBs` where the row has it, else of
   * the report's STREAM triad.
   */
  pctOfBandwidth: number;
  /**
   * Memory-bound CPU and js rows: the median bandwidth of triads run between the op's runs. CUDA
   * rows: the GPU's device-to-device copy bandwidth measured in the same run. The figure the
   * row's share is taken of.
   */
  bandwidthGBs?: number;
  /**
   * Memory-bound CPU rows of ops that only read (their writes under 1% of their bytes): the median
   * bandwidth of passes that only read, run between the op's runs as the triads are, and the
   * row's share of it in percent. A core keeps only so many reads in flight, and a triad's
   * streamed stores do not count against them: on some machines such a pass runs well below the
   * triad, and it, not the triad, is what these ops can reach.
   */
  readBandwidthGBs?: number;
  pctOfReadBandwidth?: number;
  /** Compute-bound cases (matmul, a model step): floating-point operations per second, in G. */
  gflopPerS?: number;
}

export interface BenchReport {
  bandwidthGBs: number;
  /** The GPU's device-to-device copy bandwidth (bytes read and written), when CUDA rows ran. */
  cudaBandwidthGBs?: number;
  threads: number;
  simd: string;
  /** The CPU's model name, as the OS gives it: the figures differ from one machine to the next. */
  cpu: string;
  cudaDevices: number;
  rows: BenchRow[];
}

interface Case {
  op: string;
  shape: string;
  elements: number;
  /** Compulsory traffic: every input read once, every output written once (see README). */
  bytes: number;
  /** Floating-point operations of one call, for the compute-bound cases. */
  flops?: number;
  /** The backends it runs on, when not all. */
  backends?: Backend[];
  /** It only reads: its writes are under 1% of its bytes (see BenchRow.readBandwidthGBs). */
  readOnly?: boolean;
  /** Sets up the inputs on a backend and returns one call. */
  prepare(backend: Backend, device: string): () => void;
}

function filled(n: number, f: (i: number) => number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; ++i) a[i] = f(i);
  return a;
}

function flags(n: number, every: number): Uint8Array {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i += every) a[i] = 1;
  return a;
}

function responseMask(n: number): Uint8Array {
  const a = new Uint8Array(n).fill(1);
  for (let i = 0; i < n; i += 13) a[i] = 0;
  return a;
}

// Tensors on the device a backend runs on (the js backend reads the host arrays).
function on(device: string, a: Float32Array | Uint8Array | Int32Array, shape: number[]): rl.Tensor {
  return rl.tensor(a, shape, { device: device as rl.DeviceSpec });
}

function syncAfter(device: string, fn: () => void): () => void {
  if (device === 'cpu') return fn;
  const index = Number(device.split(':')[1] ?? 0);
  return () => {
    fn();
    native().synchronize(index);
  };
}

function gaeCase(T: number, N: number): Case {
  const n = T * N;
  const rewards = filled(n, (i) => (i % 7) * 0.1);
  const values = filled(n, (i) => (i % 5) * 0.2);
  const lastValues = filled(N, () => 0.5);
  const terminated = flags(n, 97);
  return {
    op: 'gae', shape: `[T=${T},N=${N}]`, elements: n, bytes: n * (4 + 4 + 1 + 4 + 4),
    prepare(backend, device) {
      if (backend === 'js') return () => { gaeReference(T, N, { rewards, values, lastValues, terminated }, { gamma: 0.99, lambda: 0.95 }); };
      const inputs = { rewards: on(device, rewards, [T, N]), values: on(device, values, [T, N]),
        lastValues: on(device, lastValues, [N]), terminated: on(device, terminated, [T, N]) };
      const out = rl.gae(inputs);
      return syncAfter(device, () => { rl.gae(inputs, { gamma: 0.99, lambda: 0.95, out }); });
    },
  };
}

// newOutputs: each call makes its outputs, as a loop that passes no `out` does; their pages are
// mapped in as the kernel first writes them, which the row shows against the one that reuses them.
function tokenGaeCase(B: number, T: number, maskMode: rl.MaskMode, newOutputs = false): Case {
  const n = B * T;
  const rewards = filled(n, (i) => (i % 7) * 0.1);
  const values = filled(n, (i) => (i % 5) * 0.2);
  const mask = responseMask(n);
  return {
    op: `tokenGae ${maskMode}`, shape: `[B=${B},T=${T}]${newOutputs ? ' new out' : ''}`, elements: n,
    bytes: n * (4 + 4 + 1 + 4 + 4),
    prepare(backend, device) {
      if (backend === 'js') return () => { tokenGaeReference(B, T, { rewards, values, mask }, { gamma: 1, lambda: 0.95, maskMode }); };
      const inputs = { rewards: on(device, rewards, [B, T]), values: on(device, values, [B, T]), mask: on(device, mask, [B, T]) };
      if (newOutputs) return syncAfter(device, () => { rl.tokenGae(inputs, { gamma: 1, lambda: 0.95, maskMode }); });
      const out = rl.tokenGae(inputs, { maskMode });
      return syncAfter(device, () => { rl.tokenGae(inputs, { gamma: 1, lambda: 0.95, maskMode, out }); });
    },
  };
}

function returnsCase(B: number, T: number): Case {
  const n = B * T;
  const rewards = filled(n, (i) => (i % 7) * 0.1);
  const mask = responseMask(n);
  return {
    op: 'discountedReturns', shape: `[B=${B},T=${T}]`, elements: n, bytes: n * (4 + 1 + 4),
    prepare(backend, device) {
      if (backend === 'js') return () => { discountedReturnsReference(B, T, { rewards, mask }, { gamma: 0.99 }); };
      const inputs = { rewards: on(device, rewards, [B, T]), mask: on(device, mask, [B, T]) };
      const out = rl.discountedReturns(inputs);
      return syncAfter(device, () => { rl.discountedReturns(inputs, { gamma: 0.99, out }); });
    },
  };
}

function whitenCase(n: number): Case {
  const x = filled(n, (i) => (i % 1000) * 0.001);
  const mask = responseMask(n);
  return {
    // The statistics must be known before the first output: x and mask are read for them, then
    // x again by the affine pass (which whitens every element, so it does not read the mask).
    op: 'maskedWhiten', shape: `[${n}]`, elements: n, bytes: n * (4 + 1 + 4 + 4),
    prepare(backend, device) {
      if (backend === 'js') return () => { maskedWhitenReference(x, mask); };
      const xs = on(device, x, [n]);
      const ms = on(device, mask, [n]);
      const out = rl.maskedWhiten(xs, ms);
      return syncAfter(device, () => { rl.maskedWhiten(xs, ms, { out }); });
    },
  };
}

function meanCase(n: number): Case {
  const x = filled(n, (i) => (i % 1000) * 0.001);
  const mask = responseMask(n);
  return {
    op: 'maskedMean', shape: `[${n}]`, elements: n, bytes: n * (4 + 1), readOnly: true,
    prepare(backend, device) {
      if (backend === 'js') return () => { maskedMeanReference(x, mask); };
      const xs = on(device, x, [n]);
      const ms = on(device, mask, [n]);
      return () => { rl.maskedMean(xs, ms); };
    },
  };
}

// Logits as a model produces them: a spread of a few units, labels drawn over the vocabulary.
function logitsOf(N: number, V: number): { logits: Float32Array; labels: Int32Array } {
  const logits = filled(N * V, (i) => ((i * 2654435761) % 1000) * 0.008 - 4);
  const labels = new Int32Array(N);
  for (let i = 0; i < N; ++i) labels[i] = (i * 7919) % V;
  return { logits, labels };
}

function logprobsCase(N: number, V: number): Case {
  const { logits, labels } = logitsOf(N, V);
  return {
    // The logits are read once; labels, log-probs and entropies are noise beside them.
    op: 'logprobsFromLogits', shape: `[N=${N},V=${V}]`, elements: N * V, bytes: N * V * 4 + N * (4 + 4 + 4), readOnly: true,
    prepare(backend, device) {
      if (backend === 'js') return () => { logprobsReference(N, V, logits, labels, { entropy: true }); };
      const z = on(device, logits, [N, V]);
      const y = on(device, labels, [N]);
      const out = rl.logprobsFromLogits(z, y, { entropy: true });
      return syncAfter(device, () => { rl.logprobsFromLogits(z, y, { entropy: true, out: out as { logprobs: rl.Tensor; entropy: rl.Tensor } }); });
    },
  };
}

// `given`: the backward also takes the forward's log-probs and entropies, as the trainers pass
// them; the CPU then reads each row of logits once instead of three times. newOutputs: each call
// makes its gradient, as tokenGae's `new out` row.
function logprobsBackwardCase(N: number, V: number, given: boolean, newOutputs = false): Case {
  const { logits, labels } = logitsOf(N, V);
  const gradLogprobs = filled(N, (i) => 1 / (1 + (i % 3)));
  const gradEntropy = filled(N, () => -0.01);
  return {
    // The logits read once, their gradient written once.
    op: 'logprobsFromLogitsBackward', shape: `[N=${N},V=${V}]${given ? ' +lp,H' : ''}${newOutputs ? ' new out' : ''}`,
    elements: N * V, bytes: N * V * (4 + 4) + N * (given ? 20 : 12),
    // The reference takes no forward outputs, and makes its gradient each call: its given and new
    // rows would repeat the plain one.
    ...(given || newOutputs ? { backends: ['cpu', 'cuda'] as Backend[] } : {}),
    prepare(backend, device) {
      if (backend === 'js') return () => { logprobsBackwardReference(N, V, { logits, labels, gradLogprobs, gradEntropy }); };
      const z = on(device, logits, [N, V]);
      const y = on(device, labels, [N]);
      const forward = given ? rl.logprobsFromLogits(z, y, { entropy: true }) : {};
      const inputs = { logits: z, labels: y, gradLogprobs: on(device, gradLogprobs, [N]), gradEntropy: on(device, gradEntropy, [N]),
        ...forward };
      if (newOutputs) return syncAfter(device, () => { rl.logprobsFromLogitsBackward(inputs); });
      const out = rl.logprobsFromLogitsBackward(inputs);
      return syncAfter(device, () => { rl.logprobsFromLogitsBackward(inputs, { out }); });
    },
  };
}

function klCase(n: number): Case {
  const lp = filled(n, (i) => -1 - (i % 97) * 0.01);
  const ref = filled(n, (i) => -1 - (i % 89) * 0.01);
  return {
    op: 'klPenalty k3', shape: `[${n}]`, elements: n, bytes: n * 4 * 4,
    prepare(backend, device) {
      if (backend === 'js') return () => { klPenaltyReference(lp, ref, { estimator: 'k3' }); };
      const a = on(device, lp, [n]);
      const b = on(device, ref, [n]);
      const out = rl.klPenalty(a, b, { estimator: 'k3' });
      return syncAfter(device, () => { rl.klPenalty(a, b, { estimator: 'k3', out }); });
    },
  };
}

// Token rewards from the KL and each row's score, as the PPO trainers shape them.
function shapeRewardsCase(B: number, T: number): Case {
  const n = B * T;
  const kl = filled(n, (i) => ((i % 17) - 8) * 0.01);
  const scores = filled(B, (b) => (b % 9) * 0.3 - 1);
  const mask = responseMask(n);
  return {
    op: 'shapeRewards', shape: `[B=${B},T=${T}]`, elements: n, bytes: n * (4 + 1 + 4) + B * 4,
    prepare(backend, device) {
      if (backend === 'js') return () => { shapeRewardsReference(B, T, { scores, kl, mask }); };
      const inputs = { scores: on(device, scores, [B]), kl: on(device, kl, [B, T]), mask: on(device, mask, [B, T]) };
      const out = rl.shapeRewards(inputs);
      return syncAfter(device, () => { rl.shapeRewards(inputs, { out }); });
    },
  };
}

// The PPO step's two losses over the same tokens, as a trainer calls them.
function ppoValueCase(B: number, T: number): Case {
  const n = B * T;
  const lp = filled(n, (i) => -1 - (i % 97) * 0.01);
  const old = filled(n, (i) => -1 - (i % 89) * 0.01);
  const adv = filled(n, (i) => ((i % 11) - 5) * 0.2);
  const values = filled(n, (i) => (i % 13) * 0.1);
  const oldValues = filled(n, (i) => (i % 17) * 0.1);
  const returns = filled(n, (i) => (i % 19) * 0.1);
  const mask = responseMask(n);
  return {
    // Policy: lp, old, A, mask read, grad written; value: v, old, R, mask read, grad written.
    op: 'ppoPolicyLoss+valueLoss', shape: `[B=${B},T=${T}]`, elements: n, bytes: n * (4 * 4 + 1) * 2,
    prepare(backend, device) {
      if (backend === 'js') return () => {
        ppoPolicyLossReference(B, T, { logprobs: lp, oldLogprobs: old, advantages: adv, mask });
        valueLossReference(B, T, { values, oldValues, returns, mask });
      };
      const p = { logprobs: on(device, lp, [B, T]), oldLogprobs: on(device, old, [B, T]),
        advantages: on(device, adv, [B, T]), mask: on(device, mask, [B, T]) };
      const v = { values: on(device, values, [B, T]), oldValues: on(device, oldValues, [B, T]),
        returns: on(device, returns, [B, T]), mask: p.mask };
      const gp = rl.ppoPolicyLoss(p).grad;
      const gv = rl.valueLoss(v).grad;
      return syncAfter(device, () => { rl.ppoPolicyLoss(p, { out: gp }); rl.valueLoss(v, { out: gv }); });
    },
  };
}

// `sequence`: sequence-level importance (one ratio per sequence), whose statistics must all be
// known before any gradient: two passes over the logits where the token level interleaves them
// row by row.
function actorCase(B: number, T: number, V: number, sequence: boolean): Case {
  const n = B * T;
  const { logits, labels } = logitsOf(n, V);
  const old = filled(n, () => -Math.log(V));
  const adv = filled(n, (i) => ((i % 11) - 5) * 0.2);
  const ref = filled(n, () => -Math.log(V) - 0.1);
  const mask = responseMask(n);
  return {
    // The logits read once and their gradient written once: the fused op's whole point.
    op: 'actorLossFromLogits', shape: `[B=${B},T=${T},V=${V}]${sequence ? ' seq' : ''}`, elements: n * V,
    bytes: n * V * (4 + 4) + n * 25,
    prepare(backend, device) {
      const opts = { entropyCoef: 0.01, klCoef: 0.05, kl: { estimator: 'k3' as const },
        importanceLevel: sequence ? 'sequence' as const : 'token' as const };
      if (backend === 'js') return () => {
        actorLossReference(B, T, V, { logits, labels, oldLogprobs: old, advantages: adv, refLogprobs: ref, mask }, opts);
      };
      const inputs = { logits: on(device, logits, [B, T, V]), labels: on(device, labels, [B, T]),
        oldLogprobs: on(device, old, [B, T]), advantages: on(device, adv, [B, T]), refLogprobs: on(device, ref, [B, T]),
        mask: on(device, mask, [B, T]) };
      const r = rl.actorLossFromLogits(inputs, opts);
      const out = { gradLogits: r.gradLogits, logprobs: r.logprobs, entropy: r.entropy };
      return syncAfter(device, () => { rl.actorLossFromLogits(inputs, { ...opts, out }); });
    },
  };
}

function pairwiseCase(n: number): Case {
  const chosen = filled(n, (i) => (i % 97) * 0.05);
  const rejected = filled(n, (i) => (i % 89) * 0.05);
  return {
    op: 'pairwiseRewardLoss', shape: `[${n}]`, elements: n, bytes: n * (4 + 4 + 4 + 4),
    prepare(backend, device) {
      if (backend === 'js') return () => { pairwiseRewardLossReference({ chosen, rejected }); };
      const inputs = { chosen: on(device, chosen, [n]), rejected: on(device, rejected, [n]) };
      const r = rl.pairwiseRewardLoss(inputs);
      const out = { gradChosen: r.gradChosen, gradRejected: r.gradRejected };
      return syncAfter(device, () => { rl.pairwiseRewardLoss(inputs, { out }); });
    },
  };
}

function dpoCase(n: number, lossType: rl.DpoLossType): Case {
  const pc = filled(n, (i) => -20 - (i % 97) * 0.1);
  const pr = filled(n, (i) => -20 - (i % 89) * 0.1);
  const rc = filled(n, (i) => -20 - (i % 83) * 0.1);
  const rr = filled(n, (i) => -20 - (i % 79) * 0.1);
  return {
    op: `dpoLoss ${lossType}`, shape: `[${n}]`, elements: n, bytes: n * (4 * 4 + 4 + 4),
    prepare(backend, device) {
      if (backend === 'js') return () => { dpoLossReference({ policyChosen: pc, policyRejected: pr, refChosen: rc, refRejected: rr }, { lossType }); };
      const inputs = { policyChosen: on(device, pc, [n]), policyRejected: on(device, pr, [n]), refChosen: on(device, rc, [n]),
        refRejected: on(device, rr, [n]) };
      const r = rl.dpoLoss(inputs, { lossType });
      const out = { gradChosen: r.gradChosen, gradRejected: r.gradRejected };
      return syncAfter(device, () => { rl.dpoLoss(inputs, { lossType, out }); });
    },
  };
}

function sequenceCase(B: number, T: number): Case {
  const n = B * T;
  const lp = filled(n, (i) => -1 - (i % 97) * 0.01);
  const mask = responseMask(n);
  return {
    op: 'sequenceLogprobs', shape: `[B=${B},T=${T}]`, elements: n, bytes: n * (4 + 1) + B * 4, readOnly: true,
    prepare(backend, device) {
      if (backend === 'js') return () => { sequenceLogprobsReference(B, T, lp, mask); };
      const x = on(device, lp, [B, T]);
      const m = on(device, mask, [B, T]);
      const out = rl.sequenceLogprobs(x, m);
      return syncAfter(device, () => { rl.sequenceLogprobs(x, m, { out }); });
    },
  };
}

function sequenceBackwardCase(B: number, T: number): Case {
  const n = B * T;
  const grad = filled(B, (b) => (b % 7) * 0.1 - 0.3);
  const mask = responseMask(n);
  return {
    op: 'sequenceLogprobsBackward', shape: `[B=${B},T=${T}] average`, elements: n, bytes: n * (1 + 4) + B * 4,
    prepare(backend, device) {
      if (backend === 'js') return () => { sequenceLogprobsBackwardReference(B, T, grad, mask, { average: true }); };
      const inputs = { gradSequence: on(device, grad, [B]), mask: on(device, mask, [B, T]) };
      const out = rl.sequenceLogprobsBackward(inputs, { average: true });
      return syncAfter(device, () => { rl.sequenceLogprobsBackward(inputs, { average: true, out }); });
    },
  };
}

// GRPO's advantages: groups of 16 completions a prompt.
function groupAdvantagesCase(B: number): Case {
  const rewards = filled(B, (i) => ((i * 37) % 101) * 0.01);
  return {
    op: 'groupAdvantages grpo', shape: `[${B}] groups of 16`, elements: B, bytes: B * 8,
    prepare(backend, device) {
      if (backend === 'js') return () => { groupAdvantagesReference(rewards, { groupSize: 16 }); };
      const r = on(device, rewards, [B]);
      const out = rl.groupAdvantages(r, { groupSize: 16 });
      return syncAfter(device, () => { rl.groupAdvantages(r, { groupSize: 16, out }); });
    },
  };
}

function matmulCase(M: number, N: number, K: number, transA: boolean, transB: boolean): Case {
  const a = filled(M * K, (i) => ((i * 7) % 13) * 0.1 - 0.6);
  const b = filled(K * N, (i) => ((i * 5) % 11) * 0.1 - 0.5);
  const t = `${transA ? 'T' : 'N'}${transB ? 'T' : 'N'}`;
  return {
    op: `matmul ${t}`, shape: `[${M}x${N}x${K}]`, elements: M * N, bytes: 4 * (M * K + K * N + M * N), flops: 2 * M * N * K,
    prepare(backend, device) {
      if (backend === 'js') return () => { matmulReference(a, b, M, N, K, transA, transB); };
      const A = on(device, a, transA ? [K, M] : [M, K]);
      const B = on(device, b, transB ? [N, K] : [K, N]);
      const out = rl.matmul(A, B, { transA, transB });
      return syncAfter(device, () => { rl.matmul(A, B, { transA, transB, out }); });
    },
  };
}

// One PPO minibatch step of a [obs -> 64 -> 64 -> act] tanh MLP: forward, backward (no input
// gradient) and AdamW, as classic-control training runs it.
function mlpStepCase(B: number, obs: number, act: number): Case {
  const widths = [obs, 64, 64, act];
  let macs = 0;
  for (let k = 0; k + 1 < widths.length; ++k) macs += B * widths[k] * widths[k + 1] * (k === 0 ? 2 : 3);
  const x = filled(B * obs, (i) => Math.sin(i));
  const g = filled(B * act, (i) => Math.cos(i) * 0.01);
  return {
    op: 'mlp step', shape: `[${B}x${obs}->64->64->${act}]`, elements: B, bytes: 4 * (B * obs + B * act), flops: 2 * macs,
    backends: ['cpu', 'cuda'],
    prepare(_backend, device) {
      const model = rl.nn.mlp({ inputSize: obs, hiddenSizes: [64, 64], outputSize: act, seed: 1, device: device as rl.DeviceSpec });
      const opt = rl.optim.adamw(model.parameters(), { lr: 3e-4 });
      const input = on(device, x, [B, obs]);
      const grad = on(device, g, [B, act]);
      return syncAfter(device, () => {
        model.zeroGrad();
        model.forward(input);
        model.backward(grad, { inputGrad: false });
        opt.step();
      });
    },
  };
}

// Each case under the first word of its op's name, built only when that is wanted: the inputs of
// all of them together take tens of seconds to fill and gigabytes to hold.
export function benchCases(quick: boolean): Array<[string, () => Case]> {
  const big = quick ? 1 << 18 : 1 << 22;
  const T = 1024;
  return [
    ['gae', () => gaeCase(T, big / T)],
    ['gae', () => gaeCase(128, 1)],
    ['tokenGae', () => tokenGaeCase(big / T, T, 'premask')],
    ['tokenGae', () => tokenGaeCase(big / T, T, 'skip')],
    ['tokenGae', () => tokenGaeCase(big / T, T, 'premask', true)],
    ['tokenGae', () => tokenGaeCase(1, quick ? 8192 : 131072, 'premask')],
    ['discountedReturns', () => returnsCase(big / T, T)],
    ['maskedWhiten', () => whitenCase(quick ? 1 << 20 : 1 << 24)],
    ['maskedMean', () => meanCase(quick ? 1 << 20 : 1 << 24)],
    ['logprobsFromLogits', () => logprobsCase(quick ? 64 : 4096, 32000)],
    ['logprobsFromLogits', () => logprobsCase(quick ? 16 : 1024, 128256)],
    ['logprobsFromLogitsBackward', () => logprobsBackwardCase(quick ? 64 : 4096, 32000, false)],
    ['logprobsFromLogitsBackward', () => logprobsBackwardCase(quick ? 16 : 1024, 128256, false)],
    ['logprobsFromLogitsBackward', () => logprobsBackwardCase(quick ? 64 : 4096, 32000, true)],
    ['logprobsFromLogitsBackward', () => logprobsBackwardCase(quick ? 16 : 1024, 128256, true)],
    ['logprobsFromLogitsBackward', () => logprobsBackwardCase(quick ? 64 : 4096, 32000, false, true)],
    ['actorLossFromLogits', () => actorCase(quick ? 4 : 16, quick ? 16 : 256, 32000, false)],
    ['actorLossFromLogits', () => actorCase(quick ? 4 : 16, quick ? 16 : 256, 32000, true)],
    ['klPenalty', () => klCase(quick ? 1 << 20 : 1 << 24)],
    ['shapeRewards', () => shapeRewardsCase(big / T, T)],
    ['ppoPolicyLoss+valueLoss', () => ppoValueCase(quick ? 256 : 16384, 1024)],
    ['pairwiseRewardLoss', () => pairwiseCase(quick ? 1 << 16 : 1 << 20)],
    ['dpoLoss', () => dpoCase(quick ? 1 << 16 : 1 << 20, 'sigmoid')],
    ['dpoLoss', () => dpoCase(quick ? 1 << 16 : 1 << 20, 'ipo')],
    ['sequenceLogprobs', () => sequenceCase(quick ? 256 : 4096, quick ? 1024 : 4096)],
    ['sequenceLogprobsBackward', () => sequenceBackwardCase(quick ? 256 : 4096, quick ? 1024 : 4096)],
    ['groupAdvantages', () => groupAdvantagesCase(quick ? 1 << 12 : 1 << 16)],
    ['matmul', () => matmulCase(512, 512, 512, false, false)],
    ['matmul', () => matmulCase(512, 512, 512, true, false)],
    ['matmul', () => matmulCase(512, 512, 512, false, true)],
    ['matmul', () => matmulCase(128, 64, 64, false, true)],
    ['matmul', () => matmulCase(64, 64, 128, true, false)],
    ['mlp', () => mlpStepCase(128, 4, 2)],
  ];
}

/** The names `--op` takes: each case's first word (an op family), as benchCases lists them. */
export function benchOpNames(): string[] {
  return [...new Set(benchCases(true).map(([family]) => family))];
}

/** A RangeError naming the first of `ops` that picks no case (a family, or a family and a variant). */
export function checkBenchOps(ops: readonly string[]): void {
  const names = benchOpNames();
  for (const o of ops)
    if (!names.some((n) => o === n || o.startsWith(`${n} `)))
      throw new RangeError(`rlhf bench: unknown op '${o}'; expected one of ${names.join(', ')}`);
}

function median(times: number[]): number {
  const sorted = [...times].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

// What a CUDA row's share is taken of: a device-to-device copy on GPU 0 (as rlhf_cuda_bench
// measures it), counting the bytes read and written. Each copy synchronises, so it is 1 GiB, for
// the synchronisation to cost about 2%; where 2 GiB of device memory is not free, 128 MiB.
function cudaCopyBandwidthGBs(quick: boolean): number {
  const sizes = quick ? [1 << 24] : [1 << 30, 1 << 27];
  for (let k = 0; ; ++k) {
    try {
      return copyBandwidthGBs(sizes[k]);
    } catch (e) {
      if ((e as { code?: string }).code !== 'E_OOM' || k + 1 === sizes.length) throw e;
    }
  }
}

function copyBandwidthGBs(bytes: number): number {
  const src = new (native().DeviceBuffer)(bytes, 0);
  try {
    const dst = new (native().DeviceBuffer)(bytes, 0);
    try {
      return (2 * bytes) / medianSeconds(() => dst.copyFromDevice(src), 0.2, 5) / 1e9;
    } finally {
      dst.dispose();
    }
  } finally {
    src.dispose();
  }
}

// Calls fn for `seconds` or 2000 calls, whichever ends first, before a row is timed: V8 has then
// compiled the library's JavaScript for the call, as it has in a training loop that runs for
// minutes. A row of a thousand calls or so would otherwise time the interpreter, which costs a
// call made with cold caches much more: pairwiseRewardLoss [1M] took 410-421 us interpreted
// against 320-377 us compiled (three runs each way, in turns).
function warmUp(fn: () => void, seconds: number): void {
  const start = process.hrtime.bigint();
  for (let i = 0; i < 2000 && Number(process.hrtime.bigint() - start) / 1e9 < seconds; ++i) fn();
}

function medianSeconds(fn: () => void, minSeconds: number, minRuns: number): number {
  fn();
  const times: number[] = [];
  const start = process.hrtime.bigint();
  // Tiny calls are timed in batches so that the clock's own cost does not dominate.
  let batch = 1;
  for (;;) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; ++i) fn();
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    if (dt < 1e-4 && times.length === 0 && batch < 1 << 20) {
      batch *= 10;
      continue;
    }
    times.push(dt / batch);
    const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    if (times.length >= minRuns && elapsed >= minSeconds) break;
    if (times.length >= 10000) break;
  }
  return median(times);
}

// Rows whose traffic is at least this much are about memory throughput: their share is taken of
// triads run between their own runs.
const kPairedBytes = 8 * 1024 * 1024;

// A triad over arrays together twice the last-level cache (memoryTriadElements), run between the
// runs of a memory-bound op. This machine's bandwidth swings by a third within minutes as other
// tenants load it; one figure from the start of the run would credit or blame each op for those
// swings. Run in turns, the op and the triad see the same moments, and their medians are compared
// like with like. The triad also leaves none of the op's data in the cache, so both are timed from
// memory: a host's last-level cache can hold an op's whole working set (300 MB on the 2-core
// machine's host), and a triad within it measured the cache in quiet moments and memory in busy
// ones (a 192 MB triad ran at 33-59 GB/s there while one of 768 MB or more gave 36-41).
class PairedTriad {
  private readonly a: Float32Array;
  private readonly b: Float32Array;
  private readonly c: Float32Array;
  readonly bytes: number;
  constructor(elements: number) {
    this.a = new Float32Array(elements);
    this.b = new Float32Array(elements).fill(1);
    this.c = new Float32Array(elements).fill(2);
    this.bytes = 12 * elements;
  }
  seconds(): number {
    return native().triadSeconds(this.a, this.b, this.c);
  }
}

// A pass that only reads, over as many bytes as the triad moves, run between the runs of an op
// that only reads, as the triad is: that op's roofline where it is below the triad's.
class PairedRead {
  private readonly x: Float32Array;
  readonly bytes: number;
  constructor(triadElements: number) {
    this.x = new Float32Array(3 * triadElements).fill(1);
    this.bytes = 12 * triadElements;
  }
  seconds(): number {
    return native().readSeconds(this.x);
  }
}

// The median seconds of fn, of the triad and (when given) of the read pass, run in turns (each
// once first, to warm up) for at least minSeconds and minRuns.
function pairedMedians(fn: () => void, triad: PairedTriad, read: PairedRead | undefined, minSeconds: number,
                       minRuns: number): { op: number; triad: number; read?: number } {
  fn();
  read?.seconds();
  triad.seconds();
  const times: number[] = [];
  const triads: number[] = [];
  const reads: number[] = [];
  const start = process.hrtime.bigint();
  for (;;) {
    const t0 = process.hrtime.bigint();
    fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
    // The read pass first, so that every op's run follows a triad, as the rows without one do.
    if (read) reads.push(read.seconds());
    triads.push(triad.seconds());
    const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    if ((times.length >= minRuns && elapsed >= minSeconds) || times.length >= 10000) break;
  }
  return { op: median(times), triad: median(triads), ...(read ? { read: median(reads) } : {}) };
}

export interface BenchOptions {
  ops?: string[];
  backends?: Backend[];
  quick?: boolean;
  threads?: number;
  minSeconds?: number;
}

export function runBench(opts: BenchOptions = {}, log: (line: string) => void = () => {}): BenchReport {
  if (opts.threads !== undefined) rl.setNumThreads(opts.threads);
  const cudaDevices = rl.backends().cuda.devices;
  const wanted = opts.backends ?? (['cpu', 'cuda', 'js'] as Backend[]);
  const backends = wanted.filter((b) => b !== 'cuda' || cudaDevices > 0);
  const triadElements = opts.quick ? 1 << 22 : native().memoryTriadElements();
  const bandwidthGBs = native().measureBandwidth(triadElements, opts.quick ? 3 : 10, false) as number;
  const report: BenchReport = {
    bandwidthGBs, threads: rl.getNumThreads(), simd: rl.buildInfo().simd, cpu: os.cpus()[0]?.model.trim() ?? 'unknown', cudaDevices, rows: [],
  };
  if (backends.includes('cuda')) report.cudaBandwidthGBs = cudaCopyBandwidthGBs(opts.quick ?? false);
  log(`${report.cpu}, threads ${report.threads}, SIMD ${report.simd}, STREAM triad ${bandwidthGBs.toFixed(2)} GB/s` +
      (cudaDevices > 0 ? `, ${cudaDevices} CUDA device(s)` : ', no CUDA device') +
      (report.cudaBandwidthGBs !== undefined ? `, CUDA copy ${report.cudaBandwidthGBs.toFixed(0)} GB/s` : ''));
  log(header());
  let triad: PairedTriad | undefined;
  let read: PairedRead | undefined;
  const named = (op: string) => !opts.ops || opts.ops.some((o) => op === o || op.startsWith(`${o} `));
  for (const [family, make] of benchCases(opts.quick ?? false)) {
    if (!named(family) && !opts.ops?.some((o) => o.startsWith(`${family} `))) continue;
    const c = make();
    if (!named(c.op)) continue;
    for (const backend of backends) {
      if (c.backends !== undefined && !c.backends.includes(backend)) continue;
      const fn = c.prepare(backend, backend === 'cuda' ? 'cuda:0' : 'cpu');
      warmUp(fn, opts.quick ? 0.02 : 0.2);
      const minSeconds = opts.minSeconds ?? (backend === 'js' ? 0.5 : 0.3);
      const minRuns = backend === 'js' ? 3 : 5;
      let s: number;
      let rowBandwidth: number | undefined;
      let readBandwidth: number | undefined;
      if (backend !== 'cuda' && c.flops === undefined && c.bytes >= kPairedBytes) {
        triad ??= new PairedTriad(triadElements);
        const readPass = c.readOnly && backend === 'cpu' ? (read ??= new PairedRead(triadElements)) : undefined;
        const m = pairedMedians(fn, triad, readPass, minSeconds, minRuns);
        s = m.op;
        rowBandwidth = triad.bytes / m.triad / 1e9;
        if (readPass && m.read !== undefined) readBandwidth = readPass.bytes / m.read / 1e9;
      } else {
        s = medianSeconds(fn, minSeconds, minRuns);
        if (backend === 'cuda') rowBandwidth = report.cudaBandwidthGBs;
      }
      const gbPerS = c.bytes / s / 1e9;
      const row: BenchRow = { op: c.op, shape: c.shape, backend, medianUs: s * 1e6, elementsPerS: c.elements / s, gbPerS,
        pctOfBandwidth: (100 * gbPerS) / (rowBandwidth ?? bandwidthGBs) };
      if (rowBandwidth !== undefined) row.bandwidthGBs = rowBandwidth;
      if (readBandwidth !== undefined) {
        row.readBandwidthGBs = readBandwidth;
        row.pctOfReadBandwidth = (100 * gbPerS) / readBandwidth;
      }
      if (c.flops !== undefined) row.gflopPerS = c.flops / s / 1e9;
      report.rows.push(row);
      log(format(row));
    }
  }
  return report;
}

function header(): string {
  return `${'op'.padEnd(26)} ${'shape'.padEnd(23)} ${'backend'.padEnd(7)} ${'median us'.padStart(11)} ` +
    `${'Melem/s'.padStart(9)} ${'GB/s'.padStart(7)} ${'of bw'.padStart(7)} ${'bw GB/s'.padStart(8)} ${'GFLOP/s'.padStart(8)} ` +
    `${'of read'.padStart(8)} ${'read GB/s'.padStart(9)}`;
}

function format(r: BenchRow): string {
  return `${r.op.padEnd(26)} ${r.shape.padEnd(23)} ${r.backend.padEnd(7)} ${r.medianUs.toFixed(1).padStart(11)} ` +
    `${(r.elementsPerS / 1e6).toFixed(0).padStart(9)} ${r.gbPerS.toFixed(2).padStart(7)} ${(r.pctOfBandwidth.toFixed(1) + '%').padStart(7)} ` +
    `${(r.bandwidthGBs === undefined ? '' : r.bandwidthGBs.toFixed(2)).padStart(8)} ` +
    `${(r.gflopPerS === undefined ? '' : r.gflopPerS.toFixed(1)).padStart(8)} ` +
    `${(r.pctOfReadBandwidth === undefined ? '' : r.pctOfReadBandwidth.toFixed(1) + '%').padStart(8)} ` +
    `${(r.readBandwidthGBs === undefined ? '' : r.readBandwidthGBs.toFixed(2)).padStart(9)}`;
}

export function writeJson(file: string, report: BenchReport): void {
  fs.writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
}
