// Plain TypeScript references for the preference ops (SEMANTICS.md §7-9): the pairwise
// reward-model loss, the DPO family (every loss type) with gradients with respect to the two
// policy inputs, sequence log-probs from token log-probs and their backward, and group-relative
// advantages (GRPO, RLOO, REINFORCE with a group baseline). float64 loops over number[] or
// TypedArray inputs, written from the semantics and the reference libraries (TRL's DPOTrainer,
// OpenRLHF's DPOLoss, TRL's GRPO/RLOO advantages), not from the C++. The tests judge the addon
// against them and the benchmark can run them as its "js" backend.
//
// log-sigmoid is always -softplus(-u), never log(sigmoid(u)), so margins of +-100 stay exact.
// NaN in an input reaches the outputs it touches (the loss, and that pair's gradients); masked
// tokens are skipped, not multiplied by 0, so a NaN under the mask does not leak.

import type { NumberArray } from './advantages';

/** softplus(u) = log(1 + e^u), exact for large |u|. */
export function softplus(u: number): number {
  return u > 0 ? u + Math.log1p(Math.exp(-u)) : Math.log1p(Math.exp(u));
}

/** log(sigmoid(u)) = -softplus(-u). */
export function logSigmoid(u: number): number {
  return -softplus(-u);
}

/** The logistic function, without overflow for large |u|. */
export function sigmoid(u: number): number {
  if (u >= 0) return 1 / (1 + Math.exp(-u));
  const e = Math.exp(u);
  return e / (1 + e);
}

function mean(sum: number, n: number): number {
  return n === 0 ? 0 : sum / n;
}

// --- §7 pairwise reward-model loss ------------------------------------------------------------

export interface PairwiseLossReferenceInputs {
  chosen: NumberArray;
  rejected: NumberArray;
  /** A scalar margin or one per pair; default 0. */
  margin?: number | NumberArray | null;
}

export interface PairwiseLossReferenceOptions {
  /** TRL center_rewards_coefficient; default 0. */
  centerCoef?: number;
}

export interface PairwiseLossReference {
  loss: number;
  gradChosen: Float64Array;
  gradRejected: Float64Array;
  stats: { accuracy: number; meanMargin: number; meanChosen: number; meanRejected: number };
}

/**
 * loss = mean(-logsig(rc - rr - margin)) + c * mean((rc + rr)^2);
 * d/drc = (sig(delta) - 1)/N + 2c(rc + rr)/N, d/drr = (1 - sig(delta))/N + 2c(rc + rr)/N.
 * Stats: accuracy mean(rc > rr), meanMargin mean(rc - rr) (without the margin input), meanChosen, meanRejected.
 * N = 0: loss 0, empty gradients, stats 0.
 */
export function pairwiseRewardLossReference(inputs: PairwiseLossReferenceInputs, opts: PairwiseLossReferenceOptions = {}): PairwiseLossReference {
  const { chosen, rejected } = inputs;
  const margin = inputs.margin ?? 0;
  const c = opts.centerCoef ?? 0;
  const N = chosen.length;
  const gradChosen = new Float64Array(N);
  const gradRejected = new Float64Array(N);
  let lossSum = 0;
  let centerSum = 0;
  let correct = 0;
  let marginSum = 0;
  let chosenSum = 0;
  let rejectedSum = 0;
  for (let i = 0; i < N; ++i) {
    const rc = chosen[i];
    const rr = rejected[i];
    const m = typeof margin === 'number' ? margin : margin[i];
    const delta = rc - rr - m;
    lossSum += softplus(-delta);
    const s = rc + rr;
    centerSum += s * s;
    // sig(delta) - 1 = -sig(-delta): exact when delta is large.
    const g = -sigmoid(-delta) / N;
    const gc = (2 * c * s) / N;
    gradChosen[i] = g + gc;
    gradRejected[i] = -g + gc;
    if (rc > rr) ++correct;
    marginSum += rc - rr;
    chosenSum += rc;
    rejectedSum += rr;
  }
  const loss = N === 0 ? 0 : lossSum / N + (c === 0 ? 0 : c * centerSum / N);
  return {
    loss, gradChosen, gradRejected,
    stats: { accuracy: mean(correct, N), meanMargin: mean(marginSum, N), meanChosen: mean(chosenSum, N), meanRejected: mean(rejectedSum, N) },
  };
}

// --- §8 DPO family ----------------------------------------------------------------------------

export const dpoLossTypesReference = [
  'sigmoid', 'robust', 'hinge', 'ipo', 'sigmoid_norm', 'exo_pair', 'nca_pair', 'bco_pair', 'sppo_hard', 'apo_zero', 'apo_down', 'discopop',
] as const;

export type DpoLossTypeReference = typeof dpoLossTypesReference[number];

export interface DpoPairParams {
  beta: number;
  /** Label smoothing e (sigmoid, robust, exo_pair). */
  eps: number;
  /** DiscoPOP temperature. */
  tau: number;
  /** bco_pair's reward shift (detached). */
  delta: number;
}

/**
 * The loss of one pair and its derivatives with respect to x = policyChosen - refChosen and
 * y = policyRejected - refRejected (equal to the derivatives with respect to policyChosen and
 * policyRejected). nc, nr: the lengths (NaN when not given; only ipo and sigmoid_norm use them).
 * Formulas: /tmp/dpo_formulas.md, from TRL DPOTrainer and OpenRLHF DPOLoss.
 */
export function dpoPairLoss(type: DpoLossTypeReference, x: number, y: number, nc: number, nr: number, p: DpoPairParams): [number, number, number] {
  const b = p.beta;
  const e = p.eps;
  const z = b * (x - y);
  switch (type) {
    case 'sigmoid': {
      // -(1-e) logsig(z) - e logsig(-z); d/dz = sig(z) - (1-e) = e - sig(-z)
      const l = (1 - e) * softplus(-z) + e * softplus(z);
      const g = b * (e - sigmoid(-z));
      return [l, g, -g];
    }
    case 'robust': {
      // [-(1-e) logsig(z) + e logsig(-z)]/(1-2e); d/dz = sig(z) - (1-e)/(1-2e)
      const l = ((1 - e) * softplus(-z) - e * softplus(z)) / (1 - 2 * e);
      const g = b * (sigmoid(z) - (1 - e) / (1 - 2 * e));
      return [l, g, -g];
    }
    case 'hinge': {
      const l = Math.max(0, 1 - z);
      const g = z < 1 ? -b : Number.isNaN(z) ? NaN : 0;
      return [l, g, -g];
    }
    case 'ipo': {
      const target = 1 / (2 * b);
      if (Number.isNaN(nc)) {
        // OpenRLHF: summed log-ratios.
        const d = x - y - target;
        return [d * d, 2 * d, -2 * d];
      }
      // TRL: per-token means.
      const d = x / nc - y / nr - target;
      return [d * d, (2 * d) / nc, (-2 * d) / nr];
    }
    case 'sigmoid_norm': {
      const w = b * (x / nc - y / nr);
      const s = sigmoid(-w);
      return [softplus(-w), (-b * s) / nc, (b * s) / nr];
    }
    case 'exo_pair': {
      // KL(Bern(sig z) || Bern(1-e)) = sig(z)(logsig(z) - log(1-e)) + sig(-z)(logsig(-z) - log e)
      const q = sigmoid(z);
      const qn = sigmoid(-z);
      const l = q * (logSigmoid(z) - Math.log1p(-e)) + qn * (logSigmoid(-z) - Math.log(e));
      const g = b * q * qn * (z - Math.log((1 - e) / e));
      return [l, g, -g];
    }
    case 'nca_pair': {
      const u = b * x;
      const v = b * y;
      const l = softplus(-u) + 0.5 * softplus(u) + 0.5 * softplus(v);
      return [l, b * (1.5 * sigmoid(u) - 1), 0.5 * b * sigmoid(v)];
    }
    case 'bco_pair': {
      const u = b * x - p.delta;
      const v = b * y - p.delta;
      const l = softplus(-u) + softplus(v);
      return [l, -b * sigmoid(-u), b * sigmoid(v)];
    }
    case 'sppo_hard': {
      const a = x - 0.5 / b;
      const c = y + 0.5 / b;
      return [a * a + c * c, 2 * a, 2 * c];
    }
    case 'apo_zero': {
      const sx = sigmoid(b * x);
      const sy = sigmoid(b * y);
      return [1 - sx + sy, -b * sx * sigmoid(-b * x), b * sy * sigmoid(-b * y)];
    }
    case 'apo_down': {
      const sx = sigmoid(b * x);
      const sz = sigmoid(z);
      const dz = b * sz * sigmoid(-z);
      return [sx + 1 - sz, b * sx * sigmoid(-b * x) - dz, dz];
    }
    case 'discopop': {
      // l = -logsig(z)(1 - m) + exp(-z) m, m = sig(z/tau); exp(-z) m = exp(-z + logsig(z/tau))
      const tau = p.tau;
      const m = sigmoid(z / tau);
      const mc = sigmoid(-z / tau);
      const ls = logSigmoid(z);
      const expM = Math.exp(-z + logSigmoid(z / tau));
      const expMM = Math.exp(-z + logSigmoid(z / tau) + logSigmoid(-z / tau));
      const l = -ls * mc + expM;
      const dz = -sigmoid(-z) * mc - expM + (ls * m * mc + expMM) / tau;
      return [l, b * dz, -b * dz];
    }
    default:
      throw new RangeError(`dpoLossReference: unknown lossType '${String(type)}'`);
  }
}

export interface DpoLossReferenceInputs {
  policyChosen: NumberArray;
  policyRejected: NumberArray;
  refChosen: NumberArray;
  refRejected: NumberArray;
  chosenLengths?: NumberArray | null;
  rejectedLengths?: NumberArray | null;
}

export interface DpoLossReferenceOptions {
  beta?: number;
  lossType?: DpoLossTypeReference;
  labelSmoothing?: number;
  /** DiscoPOP tau; default 0.05 (TRL DPOConfig.discopop_tau). */
  discopopTau?: number;
}

export interface DpoLossReference {
  loss: number;
  /** Per-pair losses l_i (loss = mean). */
  losses: Float64Array;
  gradChosen: Float64Array;
  gradRejected: Float64Array;
  stats: { rewardsChosen: number; rewardsRejected: number; accuracy: number; margin: number };
  /** bco_pair's detached shift: the mean of the 2N rewards beta*x, beta*y (0 for other types). */
  bcoDelta: number;
}

/** Types that need chosenLengths / rejectedLengths. */
export function dpoNeedsLengths(type: DpoLossTypeReference): boolean {
  return type === 'sigmoid_norm';
}

/**
 * loss = mean_i l_i, gradChosen = d loss / d policyChosen = (1/N) dl_i/dx_i, gradRejected likewise with y.
 * Stats: rewardsChosen mean(beta x), rewardsRejected mean(beta y), accuracy mean(beta x > beta y), margin mean(beta (x - y)).
 * bco_pair (stateless): delta = mean over the batch of {beta x_i} and {beta y_i}, held fixed in the gradient.
 */
export function dpoLossReference(inputs: DpoLossReferenceInputs, opts: DpoLossReferenceOptions = {}): DpoLossReference {
  const op = 'dpoLossReference';
  const beta = opts.beta ?? 0.1;
  const type = opts.lossType ?? 'sigmoid';
  const eps = opts.labelSmoothing ?? 0;
  const tau = opts.discopopTau ?? 0.05;
  if (!(dpoLossTypesReference as readonly string[]).includes(type)) throw new RangeError(`${op}: unknown lossType '${String(type)}'`);
  if (!(beta > 0 && Number.isFinite(beta))) throw new RangeError(`${op}: beta must be > 0`);
  if (!(eps >= 0 && eps < 0.5)) throw new RangeError(`${op}: labelSmoothing must be in [0, 0.5)`);
  if (type === 'exo_pair' && eps === 0) throw new RangeError(`${op}: exo_pair needs labelSmoothing > 0`);
  if (!(tau > 0)) throw new RangeError(`${op}: discopopTau must be > 0`);
  const { policyChosen: pc, policyRejected: pr, refChosen: rc, refRejected: rr } = inputs;
  const cl = inputs.chosenLengths ?? null;
  const rl = inputs.rejectedLengths ?? null;
  if ((cl === null) !== (rl === null)) throw new RangeError(`${op}: chosenLengths and rejectedLengths go together`);
  if (dpoNeedsLengths(type) && cl === null) throw new RangeError(`${op}: ${type} needs chosenLengths and rejectedLengths`);
  const N = pc.length;
  if (cl !== null && rl !== null) {
    for (let i = 0; i < N; ++i) if (!(cl[i] >= 1 && rl[i] >= 1)) throw new RangeError(`${op}: lengths must be >= 1 (index ${i})`);
  }
  let delta = 0;
  if (type === 'bco_pair' && N > 0) {
    let s = 0;
    for (let i = 0; i < N; ++i) s += beta * (pc[i] - rc[i]) + beta * (pr[i] - rr[i]);
    delta = s / (2 * N);
  }
  const params: DpoPairParams = { beta, eps, tau, delta };
  const losses = new Float64Array(N);
  const gradChosen = new Float64Array(N);
  const gradRejected = new Float64Array(N);
  let lossSum = 0;
  let rcSum = 0;
  let rrSum = 0;
  let correct = 0;
  let marginSum = 0;
  for (let i = 0; i < N; ++i) {
    const x = pc[i] - rc[i];
    const y = pr[i] - rr[i];
    const useLengths = cl !== null && rl !== null && (type === 'ipo' || type === 'sigmoid_norm');
    const [l, gx, gy] = dpoPairLoss(type, x, y, useLengths ? cl[i] : NaN, useLengths ? rl[i] : NaN, params);
    losses[i] = l;
    lossSum += l;
    gradChosen[i] = gx / N;
    gradRejected[i] = gy / N;
    rcSum += beta * x;
    rrSum += beta * y;
    if (beta * x > beta * y) ++correct;
    marginSum += beta * x - beta * y;
  }
  return {
    loss: mean(lossSum, N), losses, gradChosen, gradRejected,
    stats: { rewardsChosen: mean(rcSum, N), rewardsRejected: mean(rrSum, N), accuracy: mean(correct, N), margin: mean(marginSum, N) },
    bcoDelta: delta,
  };
}

// --- §8 sequence log-probs ----------------------------------------------------------------------

export interface SequenceLogprobsReferenceOptions {
  /** Masked mean instead of the masked sum; rows with no valid token give 0. Default false. */
  average?: boolean;
}

/** [B]: sum_t m_bt lp_bt, or that sum / n_b (0 when n_b = 0). mask null: every token valid. */
export function sequenceLogprobsReference(B: number, T: number, tokenLogprobs: NumberArray, mask: NumberArray | null,
                                          opts: SequenceLogprobsReferenceOptions = {}): Float64Array {
  const out = new Float64Array(B);
  for (let b = 0; b < B; ++b) {
    let s = 0;
    let n = 0;
    for (let t = 0; t < T; ++t) {
      if (mask !== null && mask[b * T + t] === 0) continue;
      s += tokenLogprobs[b * T + t];
      ++n;
    }
    out[b] = opts.average ? (n === 0 ? 0 : s / n) : s;
  }
  return out;
}

/** [B,T]: d seq_b / d lp_bt * g_b = m_bt g_b (sum) or m_bt g_b / n_b (mean; 0 for empty rows). */
export function sequenceLogprobsBackwardReference(B: number, T: number, gradSequence: NumberArray, mask: NumberArray | null,
                                                  opts: SequenceLogprobsReferenceOptions = {}): Float64Array {
  const out = new Float64Array(B * T);
  for (let b = 0; b < B; ++b) {
    let n = 0;
    for (let t = 0; t < T; ++t) if (mask === null || mask[b * T + t] !== 0) ++n;
    if (n === 0) continue;
    const g = opts.average ? gradSequence[b] / n : gradSequence[b];
    for (let t = 0; t < T; ++t) if (mask === null || mask[b * T + t] !== 0) out[b * T + t] = g;
  }
  return out;
}

// --- §9 group-relative advantages ---------------------------------------------------------------

export type GroupEstimatorReference = 'grpo' | 'rloo' | 'reinforce-baseline';
export type GroupScaleReference = 'group' | 'batch' | 'none';

export interface GroupAdvantagesReferenceOptions {
  /** Groups of this many consecutive rows (must divide B). */
  groupSize?: number;
  /** One integer label per row (groups need not be contiguous). */
  groupIds?: NumberArray;
  estimator?: GroupEstimatorReference;
  /** grpo only: divide by the group's std, the batch's std, or nothing. Default 'group'. */
  scale?: GroupScaleReference;
  /** Added to the std. Default 1e-4 (TRL). */
  eps?: number;
}

/** Mean and Bessel-corrected std of the non-NaN values at `rows` (std 0 when fewer than 2). */
function nanStats(r: NumberArray, rows: number[]): { n: number; sum: number; mean: number; std: number } {
  let n = 0;
  let sum = 0;
  for (const i of rows) if (!Number.isNaN(r[i])) { ++n; sum += r[i]; }
  const m = n === 0 ? 0 : sum / n;
  let ss = 0;
  for (const i of rows) if (!Number.isNaN(r[i])) ss += (r[i] - m) * (r[i] - m);
  return { n, sum, mean: m, std: n < 2 ? 0 : Math.sqrt(ss / (n - 1)) };
}

/**
 * grpo: (r - mean_g)/(std_g + eps) (scale 'group'), /(std_batch + eps) ('batch'), r - mean_g ('none');
 * rloo: (G r - sum_g r)/(G - 1), 0 for G = 1; reinforce-baseline: r - mean_g.
 * NaN rewards get 0 and are left out of every statistic (G counts the non-NaN rows).
 */
export function groupAdvantagesReference(rewards: NumberArray, opts: GroupAdvantagesReferenceOptions): Float64Array {
  const op = 'groupAdvantagesReference';
  const B = rewards.length;
  const estimator = opts.estimator ?? 'grpo';
  const scale = opts.scale ?? 'group';
  const eps = opts.eps ?? 1e-4;
  const groups = new Map<number, number[]>();
  if (opts.groupIds !== undefined) {
    for (let i = 0; i < B; ++i) {
      const g = opts.groupIds[i];
      let rows = groups.get(g);
      if (rows === undefined) groups.set(g, rows = []);
      rows.push(i);
    }
  } else {
    const G = opts.groupSize;
    if (G === undefined || !(Number.isInteger(G) && G >= 1) || B % G !== 0) throw new RangeError(`${op}: groupSize must divide B`);
    for (let g = 0; g < B / G; ++g) groups.set(g, Array.from({ length: G }, (_, k) => g * G + k));
  }
  const batchStd = nanStats(rewards, [...Array(B).keys()]).std;
  const out = new Float64Array(B);
  for (const rows of groups.values()) {
    const st = nanStats(rewards, rows);
    for (const i of rows) {
      const r = rewards[i];
      if (Number.isNaN(r)) { out[i] = 0; continue; }
      switch (estimator) {
        case 'grpo':
          out[i] = scale === 'none' ? r - st.mean : (r - st.mean) / ((scale === 'batch' ? batchStd : st.std) + eps);
          break;
        case 'rloo':
          out[i] = st.n < 2 ? 0 : (st.n * r - st.sum) / (st.n - 1);
          break;
        case 'reinforce-baseline':
          out[i] = r - st.mean;
          break;
        default:
          throw new RangeError(`${op}: unknown estimator '${String(estimator)}'`);
      }
    }
  }
  return out;
}
