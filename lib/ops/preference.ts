// The preference family (SEMANTICS.md §7-9): the pairwise reward-model loss, the DPO family,
// sequence log-probs and their backward, and group-relative advantages. Each op validates, then
// calls the addon synchronously or, in its Async form, on a worker thread.
import { rangeError, typeError } from '../errors';
import {
  NativeDpoStats, NativePairwiseStats, dpoStatsOf, native, pairwiseStatsOf, statsOfAsyncCall, statsOfCall,
} from '../native';
import { Tensor } from '../tensor';
import {
  Arg, arg, booleanOr, checkFinite, choice, commonDevice, inputsObject, keysOf, matrixShape, optionalArg, options, output,
  outputPair,
  sameShape,
} from '../validate';

type ArrayIn = Tensor | Float32Array;
type MaskIn = Tensor | Uint8Array;
type IntsIn = Tensor | Int32Array;

function numberOr(op: string, name: string, v: unknown, fallback: number, ok: (x: number) => boolean, what: string): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number') throw typeError(op, name, 'a number', v);
  if (!ok(v)) throw rangeError(op, name, `must be ${what} but is ${v}`);
  return v;
}

/** Every argument of a pair op: one element per pair, the same count. */
function samePairs(op: string, first: Arg, others: (Arg | null)[]): void {
  for (const a of others)
    if (a !== null && a.size !== first.size)
      throw rangeError(op, a.name, `must hold ${first.size} values (one per pair, as \`${first.name}\`) but holds ${a.size}`);
}

// --- §7 pairwise reward-model loss -----------------------------------------------------------------

/** The gradients of a pair loss, given as `out`. */
export interface PairGradients {
  gradChosen?: Tensor;
  gradRejected?: Tensor;
}

const pairGradientKeys = keysOf<PairGradients>({ gradChosen: true, gradRejected: true });

export interface PairwiseInputs {
  /** [N] rewards of the chosen completions. */
  chosen: ArrayIn;
  /** [N] rewards of the rejected completions. */
  rejected: ArrayIn;
  /** A margin for every pair (a number) or per pair ([N]); default 0. */
  margin?: number | ArrayIn;
}

export interface PairwiseOptions {
  /** TRL's center_rewards_coefficient: + centerCoef * mean((rc + rr)^2). Default 0 (0.01 recommended). */
  centerCoef?: number;
  checkFinite?: boolean;
  out?: PairGradients;
}

export interface PairwiseResult {
  loss: number;
  gradChosen: Tensor;
  gradRejected: Tensor;
  stats: { accuracy: number; meanMargin: number; meanChosen: number; meanRejected: number };
}

const pairwiseInputKeys = keysOf<PairwiseInputs>({ chosen: true, rejected: true, margin: true });
const pairwiseOptionKeys = keysOf<PairwiseOptions>({ centerCoef: true, checkFinite: true, out: true });

function preparePairwise(op: string, inputs: PairwiseInputs, opts: PairwiseOptions | undefined) {
  const i = inputsObject<PairwiseInputs>(op, inputs, pairwiseInputKeys);
  const chosen = arg(op, 'chosen', i.chosen, 'float32');
  const rejected = arg(op, 'rejected', i.rejected, 'float32');
  sameShape(op, chosen, rejected);
  const marginArray = typeof i.margin === 'number' || i.margin === undefined ? null : arg(op, 'margin', i.margin, 'float32');
  samePairs(op, chosen, [marginArray]);
  const marginValue = typeof i.margin === 'number' ? numberOr(op, 'margin', i.margin, 0, Number.isFinite, 'finite') : 0;
  const device = commonDevice(op, [chosen, rejected, marginArray]);
  const o = options<PairwiseOptions>(op, opts, pairwiseOptionKeys);
  const centerCoef = numberOr(op, 'centerCoef', o.centerCoef, 0, (x) => x >= 0 && Number.isFinite(x), 'a finite number >= 0');
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [chosen, rejected, marginArray]);
  const out = options<PairGradients>(op, o.out, pairGradientKeys, 'out', 'an object of output tensors');
  const [gradChosen, gradRejected] = outputPair(op, ['out.gradChosen', 'out.gradRejected'], [out.gradChosen, out.gradRejected],
    chosen.shape, device, [chosen, rejected, marginArray]);
  const call = (stats: Float64Array, async: boolean) => native().pairwiseRewardLoss(chosen.raw, rejected.raw,
    marginArray?.raw ?? null, marginValue, centerCoef, gradChosen.raw(op, 'out.gradChosen'), gradRejected.raw(op, 'out.gradRejected'),
    stats, async);
  const result = (s: NativePairwiseStats): PairwiseResult => ({
    loss: s.loss, gradChosen, gradRejected,
    stats: { accuracy: s.accuracy, meanMargin: s.meanMargin, meanChosen: s.meanChosen, meanRejected: s.meanRejected },
  });
  return { call, result };
}

/** Bradley-Terry loss mean(-logsig(rc - rr - margin)) (+ reward centring), both gradients and stats. */
export function pairwiseRewardLoss(inputs: PairwiseInputs, opts?: PairwiseOptions): PairwiseResult {
  const p = preparePairwise('pairwiseRewardLoss', inputs, opts);
  return p.result(statsOfCall(p.call, pairwiseStatsOf));
}

export async function pairwiseRewardLossAsync(inputs: PairwiseInputs, opts?: PairwiseOptions): Promise<PairwiseResult> {
  const p = preparePairwise('pairwiseRewardLossAsync', inputs, opts);
  return p.result(await statsOfAsyncCall(p.call, pairwiseStatsOf));
}

// --- §8 the DPO family ------------------------------------------------------------------------------

export type DpoLossType =
  | 'sigmoid' | 'robust' | 'hinge' | 'ipo' | 'sigmoid_norm' | 'exo_pair' | 'nca_pair' | 'bco_pair' | 'sppo_hard'
  | 'apo_zero' | 'apo_down' | 'discopop';
const dpoTypes: readonly DpoLossType[] = [
  'sigmoid', 'robust', 'hinge', 'ipo', 'sigmoid_norm', 'exo_pair', 'nca_pair', 'bco_pair', 'sppo_hard', 'apo_zero',
  'apo_down', 'discopop',
];

export interface DpoInputs {
  /** [N] sequence log-probs of the chosen completions under the policy. */
  policyChosen: ArrayIn;
  policyRejected: ArrayIn;
  /** [N] the same under the frozen reference. */
  refChosen: ArrayIn;
  refRejected: ArrayIn;
  /** [N] int32 token counts (>= 1): 'sigmoid_norm' needs them; 'ipo' with them uses per-token means. */
  chosenLengths?: IntsIn;
  rejectedLengths?: IntsIn;
}

export interface DpoOptions {
  /** Default 0.1. */
  beta?: number;
  /** Formulas as TRL's DPO trainer; default 'sigmoid'. 'bco_pair' uses the batch's mean reward as its reference point. */
  lossType?: DpoLossType;
  /** In [0, 0.5): cDPO's smoothing for 'sigmoid' and 'robust', required > 0 by 'exo_pair'. Default 0. */
  labelSmoothing?: number;
  /** 'discopop' temperature, default 0.05 (TRL). */
  discopopTau?: number;
  checkFinite?: boolean;
  out?: PairGradients;
}

export interface DpoResult {
  loss: number;
  /** d loss / d policyChosen. */
  gradChosen: Tensor;
  /** d loss / d policyRejected. */
  gradRejected: Tensor;
  stats: { rewardsChosen: number; rewardsRejected: number; accuracy: number; margin: number };
}

const dpoInputKeys = keysOf<DpoInputs>({
  policyChosen: true, policyRejected: true, refChosen: true, refRejected: true, chosenLengths: true, rejectedLengths: true,
});
const dpoOptionKeys = keysOf<DpoOptions>({
  beta: true, lossType: true, labelSmoothing: true, discopopTau: true, checkFinite: true, out: true,
});

function prepareDpo(op: string, inputs: DpoInputs, opts: DpoOptions | undefined) {
  const i = inputsObject<DpoInputs>(op, inputs, dpoInputKeys);
  const pc = arg(op, 'policyChosen', i.policyChosen, 'float32');
  const pr = arg(op, 'policyRejected', i.policyRejected, 'float32');
  const rc = arg(op, 'refChosen', i.refChosen, 'float32');
  const rr = arg(op, 'refRejected', i.refRejected, 'float32');
  const nc = optionalArg(op, 'chosenLengths', i.chosenLengths, 'int32');
  const nr = optionalArg(op, 'rejectedLengths', i.rejectedLengths, 'int32');
  samePairs(op, pc, [pr, rc, rr, nc, nr]);
  const device = commonDevice(op, [pc, pr, rc, rr, nc, nr]);
  const o = options<DpoOptions>(op, opts, dpoOptionKeys);
  const type = choice(op, 'lossType', o.lossType, dpoTypes, 'sigmoid');
  const beta = numberOr(op, 'beta', o.beta, 0.1, (x) => x > 0 && Number.isFinite(x), 'a finite number > 0');
  const eps = numberOr(op, 'labelSmoothing', o.labelSmoothing, 0, (x) => x >= 0 && x < 0.5, 'in [0, 0.5)');
  if (type === 'exo_pair' && eps === 0) throw rangeError(op, 'labelSmoothing', "must be > 0 for 'exo_pair' (its loss has log(labelSmoothing))");
  if ((nc === null) !== (nr === null)) throw rangeError(op, nc === null ? 'chosenLengths' : 'rejectedLengths', 'must be given with the other lengths');
  if (type === 'sigmoid_norm' && nc === null) throw rangeError(op, 'chosenLengths', "and `rejectedLengths` are required by 'sigmoid_norm'");
  const tau = numberOr(op, 'discopopTau', o.discopopTau, 0.05, (x) => x > 0 && Number.isFinite(x), 'a finite number > 0');
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [pc, pr, rc, rr]);
  const out = options<PairGradients>(op, o.out, pairGradientKeys, 'out', 'an object of output tensors');
  const [gradChosen, gradRejected] = outputPair(op, ['out.gradChosen', 'out.gradRejected'], [out.gradChosen, out.gradRejected],
    pc.shape, device, [pc, pr, rc, rr]);
  const call = (stats: Float64Array, async: boolean) => native().dpoLoss(pc.raw, pr.raw, rc.raw, rr.raw, nc?.raw ?? null,
    nr?.raw ?? null, dpoTypes.indexOf(type), beta, eps, tau, gradChosen.raw(op, 'out.gradChosen'),
    gradRejected.raw(op, 'out.gradRejected'), stats, async);
  const result = (s: NativeDpoStats): DpoResult => ({
    loss: s.loss, gradChosen, gradRejected,
    stats: { rewardsChosen: s.rewardsChosen, rewardsRejected: s.rewardsRejected, accuracy: s.accuracy, margin: s.margin },
  });
  return { call, result };
}

/** The DPO family's loss over N pairs of sequence log-probs, both policy gradients and the stats. */
export function dpoLoss(inputs: DpoInputs, opts?: DpoOptions): DpoResult {
  const p = prepareDpo('dpoLoss', inputs, opts);
  return p.result(statsOfCall(p.call, dpoStatsOf));
}

export async function dpoLossAsync(inputs: DpoInputs, opts?: DpoOptions): Promise<DpoResult> {
  const p = prepareDpo('dpoLossAsync', inputs, opts);
  return p.result(await statsOfAsyncCall(p.call, dpoStatsOf));
}

// --- §8 sequence log-probs ------------------------------------------------------------------------------

export interface SequenceLogprobsOptions {
  /** Divide by the row's valid tokens (a row with none gives 0). Default false: the sum. */
  average?: boolean;
  /** A RangeError naming the argument and the first NaN or infinity in the inputs. Default false. */
  checkFinite?: boolean;
  out?: Tensor;
}

const sequenceOptionKeys = keysOf<SequenceLogprobsOptions>({ average: true, checkFinite: true, out: true });

function prepareSequence(op: string, tokenLogprobs: unknown, mask: unknown, opts: SequenceLogprobsOptions | undefined) {
  const lp = arg(op, 'tokenLogprobs', tokenLogprobs, 'float32');
  const [B, T] = matrixShape(op, lp, 'row');
  const m = optionalArg(op, 'mask', mask, 'uint8');
  sameShape(op, lp, m);
  const device = commonDevice(op, [lp, m]);
  const o = options<SequenceLogprobsOptions>(op, opts, sequenceOptionKeys);
  const average = booleanOr(op, 'average', o.average, false);
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [lp]);
  const out = output(op, 'out', o.out, [B], device);
  const call = (async: boolean) => native().sequenceLogprobs(B, T, lp.raw, m?.raw ?? null, average, out.raw(op, 'out'), async);
  return { call, out };
}

/** Per row, the masked sum (or mean) of token log-probs: [B,T] -> [B]. */
export function sequenceLogprobs(tokenLogprobs: ArrayIn, mask?: MaskIn | null, opts?: SequenceLogprobsOptions): Tensor {
  const p = prepareSequence('sequenceLogprobs', tokenLogprobs, mask, opts);
  p.call(false);
  return p.out;
}

export async function sequenceLogprobsAsync(tokenLogprobs: ArrayIn, mask?: MaskIn | null, opts?: SequenceLogprobsOptions): Promise<Tensor> {
  const p = prepareSequence('sequenceLogprobsAsync', tokenLogprobs, mask, opts);
  await p.call(true);
  return p.out;
}

export interface SequenceLogprobsBackwardInputs {
  /** [B] d loss / d sequence log-prob. */
  gradSequence: ArrayIn;
  /** [B,T] uint8: the shape of the token log-probs. */
  mask: MaskIn;
}

const sequenceBackwardInputKeys = keysOf<SequenceLogprobsBackwardInputs>({ gradSequence: true, mask: true });

function prepareSequenceBackward(op: string, inputs: SequenceLogprobsBackwardInputs, opts: SequenceLogprobsOptions | undefined) {
  const i = inputsObject<SequenceLogprobsBackwardInputs>(op, inputs, sequenceBackwardInputKeys);
  const m = arg(op, 'mask', i.mask, 'uint8');
  const [B, T] = matrixShape(op, m, 'row');
  const g = arg(op, 'gradSequence', i.gradSequence, 'float32');
  if (g.size !== B) throw rangeError(op, 'gradSequence', `must hold ${B} values (one per row of mask) but holds ${g.size}`);
  const device = commonDevice(op, [g, m]);
  const o = options<SequenceLogprobsOptions>(op, opts, sequenceOptionKeys);
  const average = booleanOr(op, 'average', o.average, false);
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [g]);
  const out = output(op, 'out', o.out, m.shape, device);
  const call = (async: boolean) => native().sequenceLogprobsBackward(B, T, g.raw, m.raw, average, out.raw(op, 'out'), async);
  return { call, out };
}

/** d loss / d token log-probs from d loss / d sequence log-probs: [B] -> [B,T]. */
export function sequenceLogprobsBackward(inputs: SequenceLogprobsBackwardInputs, opts?: SequenceLogprobsOptions): Tensor {
  const p = prepareSequenceBackward('sequenceLogprobsBackward', inputs, opts);
  p.call(false);
  return p.out;
}

export async function sequenceLogprobsBackwardAsync(inputs: SequenceLogprobsBackwardInputs, opts?: SequenceLogprobsOptions): Promise<Tensor> {
  const p = prepareSequenceBackward('sequenceLogprobsBackwardAsync', inputs, opts);
  await p.call(true);
  return p.out;
}

// --- §9 group-relative advantages ---------------------------------------------------------------------

export type GroupEstimator = 'grpo' | 'rloo' | 'reinforce-baseline';
const groupEstimators: readonly GroupEstimator[] = ['grpo', 'rloo', 'reinforce-baseline'];
const groupScales = ['group', 'batch', 'none'] as const;

export interface GroupAdvantagesOptions {
  /** Groups of this many consecutive rows (must divide B)... */
  groupSize?: number;
  /** ...or the rows sharing an id ([B] int32, any values, in any order). */
  groupIds?: IntsIn;
  /** 'grpo' (default), 'rloo' or 'reinforce-baseline' (Dr. GRPO). */
  estimator?: GroupEstimator;
  /** grpo's divisor: the group's std (default), the batch's, or none. */
  scale?: 'group' | 'batch' | 'none';
  /** Added to the std: 1e-4 (TRL, default), 1e-6 (verl), 1e-9 (OpenRLHF). */
  eps?: number;
  /** A RangeError at the first NaN or infinite reward (a NaN reward otherwise gives 0). Default false. */
  checkFinite?: boolean;
  out?: Tensor;
}

const groupOptionKeys = keysOf<GroupAdvantagesOptions>({
  groupSize: true, groupIds: true, estimator: true, scale: true, eps: true, checkFinite: true, out: true,
});

function prepareGroups(op: string, rewards: unknown, opts: GroupAdvantagesOptions | undefined) {
  const r = arg(op, 'rewards', rewards, 'float32');
  if (r.shape.length !== 1) throw rangeError(op, 'rewards', `must be 1-D ([B]) but has shape [${r.shape.join(', ')}]`);
  const o = options<GroupAdvantagesOptions>(op, opts, groupOptionKeys);
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [r]);
  const ids = optionalArg(op, 'groupIds', o.groupIds, 'int32');
  if (ids !== null && o.groupSize !== undefined) throw rangeError(op, 'groupIds', 'and `groupSize` exclude each other: give one');
  samePairs(op, r, [ids]);
  let groupSize = 0;
  if (ids === null) {
    if (o.groupSize === undefined) throw rangeError(op, 'groupSize', 'or `groupIds` is required');
    groupSize = numberOr(op, 'groupSize', o.groupSize, 0, (x) => Number.isInteger(x) && x >= 1 && r.size % x === 0,
      `an integer >= 1 that divides the ${r.size} rewards`);
  }
  const device = commonDevice(op, [r, ids]);
  const estimator = groupEstimators.indexOf(choice(op, 'estimator', o.estimator, groupEstimators, 'grpo'));
  const scale = groupScales.indexOf(choice(op, 'scale', o.scale, groupScales, 'group'));
  const eps = numberOr(op, 'eps', o.eps, 1e-4, (x) => x >= 0 && Number.isFinite(x), 'a finite number >= 0');
  const out = output(op, 'out', o.out, r.shape, device);
  const call = (async: boolean) => native().groupAdvantages(r.raw, groupSize, ids?.raw ?? null, estimator, scale, eps,
    out.raw(op, 'out'), async);
  return { call, out };
}

/** Group-relative advantages (GRPO, RLOO, REINFORCE with a group baseline); NaN rewards give 0. */
export function groupAdvantages(rewards: ArrayIn, opts?: GroupAdvantagesOptions): Tensor {
  const p = prepareGroups('groupAdvantages', rewards, opts);
  p.call(false);
  return p.out;
}

export async function groupAdvantagesAsync(rewards: ArrayIn, opts?: GroupAdvantagesOptions): Promise<Tensor> {
  const p = prepareGroups('groupAdvantagesAsync', rewards, opts);
  await p.call(true);
  return p.out;
}
