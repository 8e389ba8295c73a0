// Plain TypeScript references for the policy-gradient ops (SEMANTICS.md §1, §4-6): log-probs and
// entropy from logits and their backward, KL estimators, reward shaping, the clipped PPO policy
// loss (every aggregation, both importance levels, its stats), the clipped value loss and the
// fused actor loss from logits. float64 loops over number[] or TypedArray inputs, written from
// the semantics, not from the C++. The tests judge the addon against them and the benchmark runs
// them as its "js" backend.
//
// Clamps are written with Math.min/Math.max, which return NaN when any operand is NaN, so that a
// NaN in an input reaches every output it touches (SEMANTICS.md: NaN is never silently a number).
// Masked tokens are skipped, not multiplied by 0: a NaN under the mask does not leak.

import type { NumberArray } from './advantages';

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(Math.max(x, lo), hi);
}

function isValid(mask: NumberArray | null | undefined, i: number): boolean {
  return mask === null || mask === undefined || mask[i] !== 0;
}

/** A clamp bound: null, undefined and Infinity mean "no clamp". */
function bound(v: number | null | undefined): number {
  return v === null || v === undefined ? Infinity : v;
}

// --- §1 log-probs and entropy from logits [N,V] -----------------------------------------------

export interface LogprobsReferenceOptions {
  /** tau > 0; the logits are divided by it. Default 1. */
  temperature?: number;
  /** Rows with this label get lp = 0, H = 0 and a zero gradient. Default -100. */
  ignoreIndex?: number;
  /** Also compute the entropy. Default true. */
  entropy?: boolean;
}

export interface LogprobsReference {
  logprobs: Float64Array;
  /** null when opts.entropy is false. */
  entropy: Float64Array | null;
}

function checkLabel(op: string, label: number, V: number, ignoreIndex: number, i: number): boolean {
  if (label === ignoreIndex) return false;
  if (!(Number.isInteger(label) && label >= 0 && label < V))
    throw new RangeError(`${op}: \`labels\` holds ${label} at index ${i}, outside [0, ${V}) and not ignoreIndex ${ignoreIndex}`);
  return true;
}

/**
 * Softmax statistics of one row x = z/tau (stable: shifted by the row maximum M):
 * lse = M + log(s), s = sum exp(x_j - M); meanShifted = sum_j p_j (x_j - M), where terms with
 * p_j = 0 (x_j = -inf) count as 0. Writes p into `p` when given.
 */
function rowSoftmax(logits: NumberArray, off: number, V: number, invTau: number, p: Float64Array | null) {
  let M = -Infinity;
  let nan = false;
  for (let j = 0; j < V; ++j) {
    const x = logits[off + j] * invTau;
    if (Number.isNaN(x)) nan = true;
    else if (x > M) M = x;
  }
  if (nan) M = NaN;
  let s = 0;
  for (let j = 0; j < V; ++j) s += Math.exp(logits[off + j] * invTau - M);
  let meanShifted = 0;
  for (let j = 0; j < V; ++j) {
    const e = Math.exp(logits[off + j] * invTau - M);
    const pj = e / s;
    if (p !== null) p[j] = pj;
    if (e !== 0) meanShifted += pj * (logits[off + j] * invTau - M);
  }
  return { M, logS: Math.log(s), meanShifted };
}

/**
 * lp_i = z_{i,y}/tau - logsumexp_j(z_{i,j}/tau); H_i = logsumexp(z/tau) - sum_j p_j z_j/tau.
 * A label outside [0, V) that is not ignoreIndex is a RangeError.
 */
export function logprobsReference(N: number, V: number, logits: NumberArray, labels: NumberArray,
                                  opts: LogprobsReferenceOptions = {}): LogprobsReference {
  const op = 'logprobsReference';
  const tau = opts.temperature ?? 1;
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const withEntropy = opts.entropy ?? true;
  const invTau = 1 / tau;
  const logprobs = new Float64Array(N);
  const entropy = withEntropy ? new Float64Array(N) : null;
  for (let i = 0; i < N; ++i) {
    if (!checkLabel(op, labels[i], V, ignoreIndex, i)) continue;
    const off = i * V;
    const { M, logS, meanShifted } = rowSoftmax(logits, off, V, invTau, null);
    // Both relative to M, so huge logits do not cancel catastrophically.
    logprobs[i] = (logits[off + labels[i]] * invTau - M) - logS;
    if (entropy !== null) entropy[i] = logS - meanShifted;
  }
  return { logprobs, entropy };
}

export interface LogprobsBackwardReferenceInputs {
  logits: NumberArray;
  labels: NumberArray;
  /** [N] d(objective)/d lp. */
  gradLogprobs: NumberArray;
  /** [N] d(objective)/d H, or absent: 0. */
  gradEntropy?: NumberArray | null;
}

/**
 * dz_ij = (onehot_ij - p_ij) gLp_i / tau - p_ij (x_ij - E_i) gH_i / tau, x = z/tau, E_i = sum_j p_ij x_ij;
 * terms with p_ij = 0 contribute 0 to the entropy part. Rows with label == ignoreIndex: 0.
 */
export function logprobsBackwardReference(N: number, V: number, inputs: LogprobsBackwardReferenceInputs,
                                          opts: LogprobsReferenceOptions = {}): Float64Array {
  const op = 'logprobsBackwardReference';
  const { logits, labels, gradLogprobs } = inputs;
  const gradEntropy = inputs.gradEntropy ?? null;
  const tau = opts.temperature ?? 1;
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const invTau = 1 / tau;
  const out = new Float64Array(N * V);
  const p = new Float64Array(V);
  for (let i = 0; i < N; ++i) {
    if (!checkLabel(op, labels[i], V, ignoreIndex, i)) continue;
    const off = i * V;
    const { M, meanShifted } = rowSoftmax(logits, off, V, invTau, p);
    const gLp = gradLogprobs[i];
    const gH = gradEntropy === null ? 0 : gradEntropy[i];
    for (let j = 0; j < V; ++j) {
      const onehot = j === labels[i] ? 1 : 0;
      let g = (onehot - p[j]) * gLp * invTau;
      if (gH !== 0 && p[j] !== 0) g -= p[j] * ((logits[off + j] * invTau - M) - meanShifted) * gH * invTau;
      else if (Number.isNaN(gH)) g = NaN;
      out[off + j] = g;
    }
  }
  return out;
}

// --- §4 KL penalties, reward shaping ------------------------------------------------------------

export type KlEstimatorReference = 'k1' | 'k2' | 'k3' | 'abs';

export interface KlReferenceOptions {
  estimator?: KlEstimatorReference;
  /** Clamp d = lp - ref to +-this before the estimator (gradient 0 where it clamps). */
  clampLogRatio?: number | null;
  /** Clamp the estimate to +-this (gradient 0 where it clamps). */
  clampOutput?: number | null;
  /** verl k1+/k3+: the forward value as above, the gradient of k2 on the raw d (= d). */
  straightThrough?: boolean;
}

/** The KL estimate of one d = lp - ref and its derivative with respect to lp. */
export function klToken(d: number, o: KlReferenceOptions): [number, number] {
  const est = o.estimator ?? 'k1';
  const cr = bound(o.clampLogRatio);
  const co = bound(o.clampOutput);
  const dc = clamp(d, -cr, cr);
  const ratioClamped = d > cr || d < -cr;
  let k: number;
  let g: number;
  switch (est) {
    case 'k1': k = dc; g = 1; break;
    case 'k2': k = 0.5 * dc * dc; g = dc; break;
    case 'k3': k = Math.exp(-dc) + dc - 1; g = 1 - Math.exp(-dc); break;
    case 'abs': k = Math.abs(dc); g = Math.sign(dc); break;
    default: throw new RangeError(`klReference: unknown estimator '${String(est)}'`);
  }
  if (ratioClamped) g = 0;
  const out = clamp(k, -co, co);
  if (k > co || k < -co) g = 0;
  if (o.straightThrough) g = d;
  if (Number.isNaN(d)) g = NaN;
  return [out, g];
}

/** Elementwise KL estimate of lp against ref, and d kl / d lp. */
export function klPenaltyReference(logprobs: NumberArray, refLogprobs: NumberArray, opts: KlReferenceOptions = {}): { kl: Float64Array; grad: Float64Array } {
  const n = logprobs.length;
  const kl = new Float64Array(n);
  const grad = new Float64Array(n);
  for (let i = 0; i < n; ++i) {
    const [k, g] = klToken(logprobs[i] - refLogprobs[i], opts);
    kl[i] = k;
    grad[i] = g;
  }
  return { kl, grad };
}

export interface ShapeRewardsReferenceInputs {
  scores: NumberArray;
  kl: NumberArray;
  mask: NumberArray;
  hasEos?: NumberArray | null;
}

export interface ShapeRewardsReferenceOptions {
  klCoef?: number;
  scorePlacement?: 'last-valid' | 'after-last';
  missingEosPenalty?: number | null;
  scoreClip?: number | null;
}

/**
 * rewards[b,t] = -klCoef*kl[b,t] on valid tokens (0 elsewhere), plus the row's score at
 *   'last-valid': the last valid t (a row with none gets no score);
 *   'after-last': the slot after the last valid t when there is one, else the last valid t
 *                 (a row with none: t = 0).
 * score = clamp(scores[b] - (hasEos given and hasEos[b] = 0 ? missingEosPenalty : 0), +-scoreClip).
 */
export function shapeRewardsReference(B: number, T: number, inputs: ShapeRewardsReferenceInputs,
                                      opts: ShapeRewardsReferenceOptions = {}): Float64Array {
  const { scores, kl, mask } = inputs;
  const hasEos = inputs.hasEos ?? null;
  const klCoef = opts.klCoef ?? 0.05;
  const placement = opts.scorePlacement ?? 'last-valid';
  const penalty = opts.missingEosPenalty ?? null;
  const clip = bound(opts.scoreClip);
  const out = new Float64Array(B * T);
  for (let b = 0; b < B; ++b) {
    let last = -1;
    for (let t = 0; t < T; ++t) {
      const i = b * T + t;
      if (mask[i] !== 0) {
        out[i] = -klCoef * kl[i];
        last = t;
      }
    }
    if (T === 0) continue;
    let pos: number;
    if (placement === 'last-valid') pos = last;
    else pos = last < 0 ? 0 : last + 1 < T ? last + 1 : last;
    if (pos < 0) continue;
    let score = scores[b];
    if (penalty !== null && hasEos !== null && hasEos[b] === 0) score -= penalty;
    out[b * T + pos] += clamp(score, -clip, clip);
  }
  return out;
}

/** The adaptive KL controller's update (Ziegler et al.): the new coefficient. */
export function adaptiveKlCoefReference(coef: number, currentKl: number, nSteps: number, target: number, horizon: number): number {
  const err = clamp(currentKl / target - 1, -0.2, 0.2);
  return coef * (1 + err * nSteps / horizon);
}

// --- §5-6 aggregation ---------------------------------------------------------------------------

export type AggregationReference =
  'token-mean' | 'seq-mean-token-mean' | 'seq-mean-token-sum' | 'seq-mean-token-sum-norm' | 'grpo' | 'bnpo' | 'dr_grpo' | 'dapo';

export const aggregationsReference: readonly AggregationReference[] =
  ['token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm', 'grpo', 'bnpo', 'dr_grpo', 'dapo'];

/** The normalizer a mode uses: the caller's, or the default (T, B*T); a RangeError where none fits. */
export function resolveNormalizerReference(mode: AggregationReference, B: number, T: number, normalizer?: number | null): number {
  const given = normalizer !== undefined && normalizer !== null;
  switch (mode) {
    case 'seq-mean-token-sum-norm': return given ? normalizer : T;
    case 'dr_grpo': return given ? normalizer : B * T;
    case 'dapo':
      if (!given) throw new RangeError("aggregationReference: 'dapo' needs a normalizer");
      return normalizer;
    default:
      if (given) throw new RangeError(`aggregationReference: '${mode}' takes no normalizer`);
      return 0;
  }
}

/**
 * The weight w[b,t] of each token in loss = sum w*l: 0 on masked tokens, and on valid tokens
 *   token-mean               1/sum(m)                (0 when nothing is valid)
 *   seq-mean-token-mean      1/(n_b * nonEmptyRows)
 *   seq-mean-token-sum       1/nonEmptyRows
 *   seq-mean-token-sum-norm  1/normalizer            (default T)
 *   grpo                     1/(max(n_b,1) * B)
 *   bnpo                     1/max(sum(m), 1)
 *   dr_grpo                  1/normalizer            (default B*T)
 *   dapo                     1/normalizer            (required)
 */
export function aggregationWeightsReference(B: number, T: number, mask: NumberArray | null | undefined,
                                            mode: AggregationReference, normalizer?: number | null): Float64Array {
  const norm = resolveNormalizerReference(mode, B, T, normalizer);
  const rowValid = new Float64Array(B);
  let total = 0;
  let nonEmpty = 0;
  for (let b = 0; b < B; ++b) {
    let n = 0;
    for (let t = 0; t < T; ++t) if (isValid(mask, b * T + t)) ++n;
    rowValid[b] = n;
    total += n;
    if (n > 0) ++nonEmpty;
  }
  const w = new Float64Array(B * T);
  for (let b = 0; b < B; ++b) {
    const n = rowValid[b];
    let rw: number;
    switch (mode) {
      case 'token-mean': rw = total > 0 ? 1 / total : 0; break;
      case 'seq-mean-token-mean': rw = n > 0 ? 1 / (n * nonEmpty) : 0; break;
      case 'seq-mean-token-sum': rw = nonEmpty > 0 ? 1 / nonEmpty : 0; break;
      case 'grpo': rw = 1 / (Math.max(n, 1) * B); break;
      case 'bnpo': rw = 1 / Math.max(total, 1); break;
      case 'seq-mean-token-sum-norm':
      case 'dr_grpo':
      case 'dapo': rw = 1 / norm; break;
      default: throw new RangeError(`aggregationReference: unknown aggregation '${String(mode)}'`);
    }
    for (let t = 0; t < T; ++t) if (isValid(mask, b * T + t)) w[b * T + t] = rw;
  }
  return w;
}

// --- §5 clipped PPO policy loss -----------------------------------------------------------------

export interface PolicyLossReferenceInputs {
  /** [B,T] */
  logprobs: NumberArray;
  /** [B,T] */
  oldLogprobs: NumberArray;
  /** [B,T], or [B]: one per row, broadcast over T. */
  advantages: NumberArray;
  /** [B,T] or absent: all valid. */
  mask?: NumberArray | null;
}

export interface PolicyLossReferenceOptions {
  clipLow?: number;
  /** Default clipLow. */
  clipHigh?: number;
  /** c > 1: for A < 0, l = min(l, -A c). null/0: off. */
  dualClip?: number | null;
  /** Clamp the log-ratio (token d; the row's d_b at the sequence level) before exp. */
  clampLogRatio?: number | null;
  aggregation?: AggregationReference;
  normalizer?: number | null;
  importanceLevel?: 'token' | 'sequence';
  clipfracMode?: 'branch' | 'ratio';
}

export interface PolicyLossStatsReference {
  clipfrac: number;
  clipfracLower: number;
  approxKl: number;
  approxKlK3: number;
  ppoKl: number;
}

export interface PolicyLossReference {
  loss: number;
  /** d loss / d logprobs [B,T]. */
  grad: Float64Array;
  stats: PolicyLossStatsReference;
  /** The per-token loss l (0 on masked tokens), for tests. */
  tokenLoss: Float64Array;
  /** The aggregation weights used, for tests. */
  weights: Float64Array;
}

/**
 * One token: l = max(-A r, -A clip(r, 1-lo, 1+hi)); with the dual clip and A < 0, min(l, -A c).
 * g = dl/dr: -A where the unclipped branch is active, 0 where a clipped one strictly wins.
 */
export function ppoToken(A: number, r: number, clipLow: number, clipHigh: number, dualClip: number) {
  const l1 = -A * r;
  const l2 = -A * clamp(r, 1 - clipLow, 1 + clipHigh);
  let l = l1;
  let g = -A;
  let clipped = false;
  let lower = false;
  if (l2 > l1) {
    l = l2;
    g = 0;
    clipped = true;
  }
  if (dualClip > 0 && A < 0) {
    const l3 = -A * dualClip;
    if (l > l3) {
      l = l3;
      g = 0;
      lower = true;
    }
  }
  return { l, g, clipped, lower };
}

function ppoOptions(o: PolicyLossReferenceOptions) {
  const clipLow = o.clipLow ?? 0.2;
  return {
    clipLow,
    clipHigh: o.clipHigh ?? clipLow,
    dualClip: o.dualClip ?? 0,
    clampLogRatio: bound(o.clampLogRatio),
    aggregation: o.aggregation ?? 'token-mean',
    importanceLevel: o.importanceLevel ?? 'token',
    clipfracMode: o.clipfracMode ?? 'branch',
  };
}

/**
 * The clipped PPO policy loss over [B,T] (SEMANTICS.md §5), its gradient with respect to
 * logprobs and the stats (masked means over the valid tokens; 0 when none is valid):
 *   token level:    d = clamp(lp - old), r = exp(d), grad = w * dl/dr * r (0 where d is clamped)
 *   sequence level: d_b = clamp(sum_t m (lp - old) / max(n_b, 1)), one r_b per row;
 *                   grad_bt = m_bt/max(n_b,1) * r_b * sum_t' w_bt' dl_bt'/dr (0 where d_b is clamped)
 *   clipfrac        'branch': the clipped branch strictly wins; 'ratio': r < 1-lo or r > 1+hi
 *   clipfracLower   A < 0 and the dual clip strictly wins
 *   approxKl = mean(d^2)/2, approxKlK3 = mean(exp(d) - 1 - d), ppoKl = mean(-d), token d (clamped).
 */
export function ppoPolicyLossReference(B: number, T: number, inputs: PolicyLossReferenceInputs,
                                       opts: PolicyLossReferenceOptions = {}): PolicyLossReference {
  const { logprobs, oldLogprobs, advantages } = inputs;
  const mask = inputs.mask ?? null;
  const o = ppoOptions(opts);
  const perRow = advantages.length !== B * T;
  if (perRow && advantages.length !== B)
    throw new RangeError(`ppoPolicyLossReference: advantages must hold ${B * T} or ${B} values, not ${advantages.length}`);
  const w = aggregationWeightsReference(B, T, mask, o.aggregation, opts.normalizer);
  const grad = new Float64Array(B * T);
  const tokenLoss = new Float64Array(B * T);
  const cr = o.clampLogRatio;
  let loss = 0;
  let valid = 0;
  let clipCount = 0;
  let lowerCount = 0;
  let kl2 = 0;
  let k3 = 0;
  let ppoKl = 0;
  const gRow = new Float64Array(T);
  for (let b = 0; b < B; ++b) {
    const row = b * T;
    // The sequence-level log-ratio of the row (also used for nothing else).
    let seqD = 0;
    let seqClamped = false;
    if (o.importanceLevel === 'sequence') {
      let n = 0;
      let s = 0;
      for (let t = 0; t < T; ++t) {
        if (!isValid(mask, row + t)) continue;
        ++n;
        s += logprobs[row + t] - oldLogprobs[row + t];
      }
      const raw = s / Math.max(n, 1);
      seqD = clamp(raw, -cr, cr);
      seqClamped = raw > cr || raw < -cr;
    }
    let rowGradSum = 0;
    let rowValid = 0;
    for (let t = 0; t < T; ++t) {
      const i = row + t;
      gRow[t] = 0;
      if (!isValid(mask, i)) continue;
      ++rowValid;
      const rawD = logprobs[i] - oldLogprobs[i];
      const d = clamp(rawD, -cr, cr);
      const tokenClamped = rawD > cr || rawD < -cr;
      const A = perRow ? advantages[b] : advantages[i];
      const logR = o.importanceLevel === 'sequence' ? seqD : d;
      const r = Math.exp(logR);
      const tok = ppoToken(A, r, o.clipLow, o.clipHigh, o.dualClip);
      tokenLoss[i] = tok.l;
      loss += w[i] * tok.l;
      if (o.importanceLevel === 'token') {
        // A clipped token has no gradient even when r overflowed (0, not 0 * inf).
        grad[i] = tokenClamped || tok.g === 0 ? 0 : w[i] * tok.g * r;
        if (Number.isNaN(tok.l)) grad[i] = NaN;
      } else {
        if (tok.g !== 0) rowGradSum += w[i] * tok.g * r;
        gRow[t] = 1;
      }
      ++valid;
      const clipHit = o.clipfracMode === 'branch' ? tok.clipped : r < 1 - o.clipLow || r > 1 + o.clipHigh;
      if (clipHit) ++clipCount;
      if (tok.lower) ++lowerCount;
      kl2 += 0.5 * d * d;
      k3 += Math.exp(d) - 1 - d;
      ppoKl += -d;
    }
    if (o.importanceLevel === 'sequence') {
      const scale = seqClamped ? 0 : rowGradSum / Math.max(rowValid, 1);
      for (let t = 0; t < T; ++t) if (gRow[t] !== 0) grad[row + t] = Number.isNaN(rowGradSum) ? NaN : scale;
    }
  }
  const mean = (s: number) => (valid > 0 ? s / valid : 0);
  return {
    loss,
    grad,
    stats: { clipfrac: mean(clipCount), clipfracLower: mean(lowerCount), approxKl: mean(kl2), approxKlK3: mean(k3), ppoKl: mean(ppoKl) },
    tokenLoss,
    weights: w,
  };
}

// --- §6 value loss ------------------------------------------------------------------------------

export interface ValueLossReferenceInputs {
  values: NumberArray;
  /** Required unless clip is null. */
  oldValues?: NumberArray | null;
  returns: NumberArray;
  mask?: NumberArray | null;
}

export interface ValueLossReferenceOptions {
  /** epsV > 0, or null: unclipped. Default 0.2. */
  clip?: number | null;
  aggregation?: AggregationReference;
  normalizer?: number | null;
}

export interface ValueLossReference {
  loss: number;
  grad: Float64Array;
  stats: { vfClipfrac: number; explainedVariance: number };
}

/**
 * l = max((v-R)^2, (clamp(v, vOld-eps, vOld+eps) - R)^2), loss = 0.5 sum w l,
 * grad = w (v - R) where the unclipped term is active, 0 where the clipped one strictly wins.
 * vfClipfrac: share of valid tokens where the clipped term strictly wins (0 when none);
 * explainedVariance = 1 - Var(R - v)/Var(R), population variances over valid tokens (NaN when
 * Var(R) = 0 or nothing is valid).
 */
export function valueLossReference(B: number, T: number, inputs: ValueLossReferenceInputs,
                                   opts: ValueLossReferenceOptions = {}): ValueLossReference {
  const { values, returns } = inputs;
  const oldValues = inputs.oldValues ?? null;
  const mask = inputs.mask ?? null;
  const eps = opts.clip === undefined ? 0.2 : opts.clip;
  if (eps !== null && oldValues === null) throw new RangeError('valueLossReference: a clipped value loss needs oldValues');
  const w = aggregationWeightsReference(B, T, mask, opts.aggregation ?? 'token-mean', opts.normalizer);
  const grad = new Float64Array(B * T);
  let loss = 0;
  let valid = 0;
  let clipped = 0;
  let sumR = 0;
  let sumE = 0;
  for (let i = 0; i < B * T; ++i) {
    if (!isValid(mask, i)) continue;
    const v = values[i];
    const R = returns[i];
    const u = (v - R) * (v - R);
    let l = u;
    let g = v - R;
    if (eps !== null) {
      const vOld = (oldValues as NumberArray)[i];
      const vc = clamp(v, vOld - eps, vOld + eps);
      const c = (vc - R) * (vc - R);
      if (c > u) {
        l = c;
        g = 0;
        ++clipped;
      } else if (Number.isNaN(c)) {
        l = NaN;
        g = NaN;
      }
    }
    loss += 0.5 * w[i] * l;
    grad[i] = w[i] * g;
    ++valid;
    sumR += R;
    sumE += R - v;
  }
  let explainedVariance = NaN;
  if (valid > 0) {
    const meanR = sumR / valid;
    const meanE = sumE / valid;
    let varR = 0;
    let varE = 0;
    for (let i = 0; i < B * T; ++i) {
      if (!isValid(mask, i)) continue;
      const a = returns[i] - meanR;
      const e = returns[i] - values[i] - meanE;
      varR += a * a;
      varE += e * e;
    }
    varR /= valid;
    varE /= valid;
    explainedVariance = varR === 0 ? NaN : 1 - varE / varR;
  }
  return { loss, grad, stats: { vfClipfrac: valid > 0 ? clipped / valid : 0, explainedVariance } };
}

// --- §5 fused actor loss from logits ------------------------------------------------------------

export interface ActorLossReferenceInputs {
  /** [B*T, V] */
  logits: NumberArray;
  /** [B*T] */
  labels: NumberArray;
  oldLogprobs: NumberArray;
  /** [B*T] or [B] */
  advantages: NumberArray;
  refLogprobs?: NumberArray | null;
  mask?: NumberArray | null;
}

export interface ActorLossReferenceOptions extends PolicyLossReferenceOptions {
  temperature?: number;
  ignoreIndex?: number;
  entropyCoef?: number;
  klCoef?: number;
  kl?: KlReferenceOptions;
}

export interface ActorLossReference {
  loss: number;
  gradLogits: Float64Array;
  /** lp and H of the tokens that take part; 0 on masked and ignored tokens (their rows are skipped). */
  logprobs: Float64Array;
  entropy: Float64Array;
  /** d loss / d lp and d loss / d H per token, for tests. */
  gradLogprobs: Float64Array;
  gradEntropy: Float64Array;
  stats: PolicyLossStatsReference & { policyLoss: number; entropy: number; kl: number };
}

/**
 * loss = pg(lp) + klCoef * agg(KL(lp, ref)) - entropyCoef * agg(H), one set of aggregation
 * weights for all three; tokens whose label is ignoreIndex count as masked. The KL term is left
 * out when refLogprobs is absent or klCoef = 0, the entropy term when entropyCoef = 0 (stats.kl is
 * then 0; stats.entropy is agg(H) always). gradLogits by the §1 backward of
 * gLp = dpg/dlp + klCoef w dKL/dlp and gH = -entropyCoef w. The logprobs and entropy outputs
 * hold 0 for tokens that take no part (masked ones as well as ignored ones), as the addon's do:
 * the fused op skips their rows entirely.
 */
export function actorLossReference(B: number, T: number, V: number, inputs: ActorLossReferenceInputs,
                                   opts: ActorLossReferenceOptions = {}): ActorLossReference {
  const N = B * T;
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const lpOpts = { temperature: opts.temperature ?? 1, ignoreIndex, entropy: true };
  const { logprobs, entropy } = logprobsReference(N, V, inputs.logits, inputs.labels, lpOpts);
  const H = entropy as Float64Array;
  const mask = new Uint8Array(N);
  for (let i = 0; i < N; ++i) mask[i] = isValid(inputs.mask, i) && inputs.labels[i] !== ignoreIndex ? 1 : 0;
  const pg = ppoPolicyLossReference(B, T, { logprobs, oldLogprobs: inputs.oldLogprobs, advantages: inputs.advantages, mask }, opts);
  const w = pg.weights;
  const klCoef = opts.klCoef ?? 0;
  const entropyCoef = opts.entropyCoef ?? 0;
  const ref = inputs.refLogprobs ?? null;
  const gradLogprobs = Float64Array.from(pg.grad);
  const gradEntropy = new Float64Array(N);
  let klAgg = 0;
  let entAgg = 0;
  for (let i = 0; i < N; ++i) {
    if (mask[i] === 0) continue;
    entAgg += w[i] * H[i];
    if (entropyCoef !== 0) gradEntropy[i] = -entropyCoef * w[i];
    if (ref !== null && klCoef !== 0) {
      const [k, g] = klToken(logprobs[i] - ref[i], opts.kl ?? {});
      klAgg += w[i] * k;
      gradLogprobs[i] += klCoef * w[i] * g;
    }
  }
  let loss = pg.loss;
  if (ref !== null && klCoef !== 0) loss += klCoef * klAgg;
  if (entropyCoef !== 0) loss -= entropyCoef * entAgg;
  const gradLogits = logprobsBackwardReference(N, V, { logits: inputs.logits, labels: inputs.labels, gradLogprobs, gradEntropy }, lpOpts);
  const lpOut = new Float64Array(N);
  const hOut = new Float64Array(N);
  for (let i = 0; i < N; ++i) {
    if (mask[i] === 0) continue;
    lpOut[i] = logprobs[i];
    hOut[i] = H[i];
  }
  return {
    loss,
    gradLogits,
    logprobs: lpOut,
    entropy: hOut,
    gradLogprobs,
    gradEntropy,
    stats: { ...pg.stats, policyLoss: pg.loss, entropy: entAgg, kl: klAgg },
  };
}
