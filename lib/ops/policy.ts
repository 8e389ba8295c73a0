// The policy-gradient family (SEMANTICS.md §1, §4-6): log-probs and entropy from logits and their
// backward, KL penalties and reward shaping, the clipped PPO policy loss, the value loss, and the
// fused actor loss from logits. Each op validates, then calls the addon synchronously or, in its
// Async form, on a worker thread. Options follow SEMANTICS.md; `preset` sets the options of one
// library and explicit options override it.
import { rangeError, typeError } from '../errors';
import {
  NativeActorOptions, NativeActorStats, NativeAggregation, NativeKlOptions, NativePolicyOptions, NativePolicyStats,
  NativeValueStats, actorStatsOf, native, policyStatsOf, statsOfAsyncCall, statsOfCall, valueStatsOf,
} from '../native';
import { Dtype, Tensor, deviceName, outputTensor } from '../tensor';
import {
  Arg, arg, booleanOr, checkFinite, choice, commonDevice, inputsObject, keysOf, matrixShape, optionalArg, options, output,
  outputPair,
  sameShape,
} from '../validate';

type ArrayIn = Tensor | Float32Array;
type MaskIn = Tensor | Uint8Array;
type LabelsIn = Tensor | Int32Array;

// --- option readers ---------------------------------------------------------------------------------

function finite(op: string, name: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number') throw typeError(op, name, 'a number', v);
  if (!Number.isFinite(v)) throw rangeError(op, name, `must be finite but is ${v}`);
  return v;
}

/** A number in (lo, hi] (or [lo, hi] with closedLow), or `fallback` when undefined. */
function inRange(op: string, name: string, v: unknown, lo: number, hi: number, fallback: number, closedLow = false): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number') throw typeError(op, name, 'a number', v);
  if (!((closedLow ? v >= lo : v > lo) && v <= hi))
    throw rangeError(op, name, `must be in ${closedLow ? '[' : '('}${lo}, ${hi}] but is ${v}`);
  return v;
}

/** An optional positive bound: null (or undefined with a null fallback) is "none", Infinity to the addon. */
function positiveOrNone(op: string, name: string, v: unknown, fallback: number | null): number {
  const x = v === undefined ? fallback : v;
  if (x === null) return Infinity;
  if (typeof x !== 'number') throw typeError(op, name, 'a number > 0 or null', x);
  if (!(x > 0)) throw rangeError(op, name, `must be > 0 (or null for none) but is ${x}`);
  return x;
}

function int32(op: string, name: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number') throw typeError(op, name, 'a 32-bit integer', v);
  if (!Number.isInteger(v) || v < -2147483648 || v > 2147483647)
    throw rangeError(op, name, `must be a 32-bit integer but is ${v}`);
  return v;
}

// --- §1 log-probs and entropy from logits ---------------------------------------------------------

const logitsDtypes: readonly Dtype[] = ['float32', 'float16', 'bfloat16'];

/** Logits: a float32 Tensor, or a float16/bfloat16 one on CUDA. `dtype` is the addon's index. */
function logitsArg(op: string, v: unknown): { z: Arg; dtype: number } {
  if (!(v instanceof Tensor) || !logitsDtypes.includes(v.dtype))
    throw typeError(op, 'logits', 'a float32 Tensor (or float16/bfloat16 on CUDA) of shape [..., V]', v);
  if (v.dtype !== 'float32' && v.deviceIndex < 0)
    throw typeError(op, 'logits', `float32 on the CPU (${v.dtype} logits run on CUDA only)`, v);
  return { z: arg(op, 'logits', v, v.dtype), dtype: logitsDtypes.indexOf(v.dtype) };
}

/** The gradient of logits: the caller's `out` (same shape, dtype and device) or a new tensor. */
function logitsGradOut(op: string, name: string, out: unknown, z: Arg): Tensor {
  const like = z.tensor as Tensor;
  if (like.dtype === 'float32') return output(op, name, out, z.shape, z.device, [z]);
  if (out === undefined || out === null) return outputTensor(z.shape, like.dtype, z.device);
  if (!(out instanceof Tensor) || out.dtype !== like.dtype || out.deviceIndex !== z.device ||
      out.shape.length !== z.shape.length || out.shape.some((d, i) => d !== z.shape[i]))
    throw typeError(op, name, `a ${like.dtype} Tensor of shape [${z.shape.join(', ')}] on ${deviceName(z.device)}`, out);
  return out;
}

export interface LogprobsOut {
  logprobs?: Tensor;
  entropy?: Tensor;
}

export interface LogprobsOptions {
  /** Logits are divided by it (tau > 0). Default 1. */
  temperature?: number;
  /** Tokens with this label get lp = 0, entropy 0 and a zero gradient. Default -100. */
  ignoreIndex?: number;
  /** Also return the entropy of each row's distribution. Default false. */
  entropy?: boolean;
  checkFinite?: boolean;
  out?: LogprobsOut;
}

export interface LogprobsResult {
  logprobs: Tensor;
  entropy?: Tensor;
}

/** Logits [..., V] and labels of shape [...]: the rows N, the vocabulary V and the label shape. */
function logitsShape(op: string, logits: Arg, labels: Arg): { N: number; V: number; rowShape: readonly number[] } {
  if (logits.shape.length < 2)
    throw rangeError(op, 'logits', `must be at least 2-D ([..., V]) but has shape [${logits.shape.join(', ')}]`);
  const V = logits.shape[logits.shape.length - 1];
  const rowShape = logits.shape.slice(0, -1);
  const N = rowShape.reduce((p, d) => p * d, 1);
  if (V < 1) throw rangeError(op, 'logits', 'must have a vocabulary (last dimension) of at least 1');
  const labelsMatch = labels.tensor === null ? labels.size === N && rowShape.length === 1
    : labels.shape.length === rowShape.length && labels.shape.every((d, i) => d === rowShape[i]);
  if (!labelsMatch)
    throw rangeError(op, 'labels', `must have shape [${rowShape.join(', ')}] (the logits' without V) but has [${labels.shape.join(', ')}]`);
  return { N, V, rowShape };
}

const logprobsOptionKeys = keysOf<LogprobsOptions>({
  temperature: true, ignoreIndex: true, entropy: true, checkFinite: true, out: true,
});
const logprobsOutKeys = keysOf<LogprobsOut>({ logprobs: true, entropy: true });

function prepareLogprobs(op: string, logits: unknown, labels: unknown, opts: LogprobsOptions | undefined) {
  const { z, dtype } = logitsArg(op, logits);
  const y = arg(op, 'labels', labels, 'int32');
  const { N, V, rowShape } = logitsShape(op, z, y);
  const device = commonDevice(op, [z, y]);
  const o = options<LogprobsOptions>(op, opts, logprobsOptionKeys);
  const temperature = inRange(op, 'temperature', o.temperature, 0, Number.MAX_VALUE, 1);
  const ignoreIndex = int32(op, 'ignoreIndex', o.ignoreIndex, -100);
  const withEntropy = booleanOr(op, 'entropy', o.entropy, false);
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [z]);
  const out = options<LogprobsOut>(op, o.out, logprobsOutKeys, 'out', 'an object of output tensors');
  const logprobs = output(op, 'out.logprobs', out.logprobs, rowShape, device);
  const entropy = withEntropy ? output(op, 'out.entropy', out.entropy, rowShape, device) : null;
  const call = (async: boolean) => native().logprobsFromLogits(N, V, dtype, z.raw, y.raw, temperature, ignoreIndex,
    logprobs.raw(op, 'out.logprobs'), entropy?.raw(op, 'out.entropy') ?? null, async);
  const result: LogprobsResult = entropy ? { logprobs, entropy } : { logprobs };
  return { call, result };
}

/** lp = log softmax(logits/tau)[label] per row, one pass over each row; optionally the entropy. */
export function logprobsFromLogits(logits: Tensor, labels: LabelsIn, opts?: LogprobsOptions): LogprobsResult {
  const p = prepareLogprobs('logprobsFromLogits', logits, labels, opts);
  p.call(false);
  return p.result;
}

export async function logprobsFromLogitsAsync(logits: Tensor, labels: LabelsIn, opts?: LogprobsOptions): Promise<LogprobsResult> {
  const p = prepareLogprobs('logprobsFromLogitsAsync', logits, labels, opts);
  await p.call(true);
  return p.result;
}

export interface LogprobsBackwardInputs {
  logits: Tensor;
  labels: LabelsIn;
  /** d loss / d logprobs, shape of labels. */
  gradLogprobs: ArrayIn;
  /** d loss / d entropy, shape of labels (omitted: 0). */
  gradEntropy?: ArrayIn;
  /**
   * The forward's log-probs for these logits, labels and temperature (optional). With them each row
   * is read once instead of three times on the CPU and twice with CUDA. A row whose log-prob (or
   * entropy) misses its logits by more than 2^-16 (stale, NaN) is computed from the logits alone;
   * within that, its gradient is off by at most that share (by the float32 rounding of lp, about
   * 1e-6, when the values are the forward's own).
   */
  logprobs?: ArrayIn;
  /** The forward's entropies, with `logprobs`: needed for the one pass where gradEntropy is not 0. */
  entropy?: ArrayIn;
}

export interface LogprobsBackwardOptions {
  temperature?: number;
  ignoreIndex?: number;
  /** A RangeError naming the argument and the first NaN or infinity in the inputs. Default false. */
  checkFinite?: boolean;
  out?: Tensor;
}

const backwardInputKeys = keysOf<LogprobsBackwardInputs>({
  logits: true, labels: true, gradLogprobs: true, gradEntropy: true, logprobs: true, entropy: true,
});
const backwardOptionKeys = keysOf<LogprobsBackwardOptions>({ temperature: true, ignoreIndex: true, checkFinite: true, out: true });

function prepareLogprobsBackward(op: string, inputs: LogprobsBackwardInputs, opts: LogprobsBackwardOptions | undefined) {
  const i = inputsObject<LogprobsBackwardInputs>(op, inputs, backwardInputKeys);
  const { z, dtype } = logitsArg(op, i.logits);
  const y = arg(op, 'labels', i.labels, 'int32');
  const { N, V } = logitsShape(op, z, y);
  const gLp = arg(op, 'gradLogprobs', i.gradLogprobs, 'float32');
  const gH = optionalArg(op, 'gradEntropy', i.gradEntropy, 'float32');
  const lp = optionalArg(op, 'logprobs', i.logprobs, 'float32');
  const H = optionalArg(op, 'entropy', i.entropy, 'float32');
  if (H !== null && lp === null)
    throw rangeError(op, 'entropy', "goes with logprobs (both the forward's outputs), but logprobs is missing");
  for (const g of [gLp, gH, lp, H])
    if (g !== null && g.size !== N) throw rangeError(op, g.name, `must hold ${N} values (one per row of logits) but holds ${g.size}`);
  commonDevice(op, [z, y, gLp, gH, lp, H]);
  const o = options<LogprobsBackwardOptions>(op, opts, backwardOptionKeys);
  const temperature = inRange(op, 'temperature', o.temperature, 0, Number.MAX_VALUE, 1);
  const ignoreIndex = int32(op, 'ignoreIndex', o.ignoreIndex, -100);
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [z, gLp, gH, lp, H]);
  const out = logitsGradOut(op, 'out', o.out, z);
  const call = (async: boolean) => native().logprobsFromLogitsBackward(N, V, dtype, z.raw, y.raw, gLp.raw, gH?.raw ?? null,
    lp?.raw ?? null, H?.raw ?? null, temperature, ignoreIndex, out.raw(op, 'out'), async);
  return { call, out };
}

/** d/dlogits of sum(gradLogprobs*lp + gradEntropy*H): a Tensor of the logits' shape. */
export function logprobsFromLogitsBackward(inputs: LogprobsBackwardInputs, opts?: LogprobsBackwardOptions): Tensor {
  const p = prepareLogprobsBackward('logprobsFromLogitsBackward', inputs, opts);
  p.call(false);
  return p.out;
}

export async function logprobsFromLogitsBackwardAsync(inputs: LogprobsBackwardInputs, opts?: LogprobsBackwardOptions): Promise<Tensor> {
  const p = prepareLogprobsBackward('logprobsFromLogitsBackwardAsync', inputs, opts);
  await p.call(true);
  return p.out;
}

// --- §4 KL penalties ------------------------------------------------------------------------------

export type KlEstimator = 'k1' | 'k2' | 'k3' | 'abs';
const estimators: readonly KlEstimator[] = ['k1', 'k2', 'k3', 'abs'];

export interface KlOptions {
  /** 'k1' d, 'k2' d^2/2, 'k3' exp(-d)+d-1, 'abs' |d|, d = logprobs - refLogprobs. Default 'k1'. */
  estimator?: KlEstimator;
  /** Clamp d to +-c first (verl's k3: 20); null: none. */
  clampLogRatio?: number | null;
  /** Clamp the estimate to +-c (verl's k3 and OpenRLHF: 10); null: none. */
  clampOutput?: number | null;
  /** verl's "k1+"/"k3+": the estimator's value with the gradient of k2 (d). Default false. */
  straightThrough?: boolean;
  /** 'trl' (no clamps), 'verl' (k3 clamps d to 20 and the output to 10), 'openrlhf' (output to 10). */
  preset?: 'trl' | 'verl' | 'openrlhf';
}

export interface KlPenaltyOut {
  kl?: Tensor;
  grad?: Tensor;
}

export interface KlPenaltyOptions extends KlOptions {
  /** A RangeError naming the argument and the first NaN or infinity in the inputs. Default false. */
  checkFinite?: boolean;
  out?: KlPenaltyOut;
}

const klOptionNames: Record<keyof Required<KlOptions>, true> = {
  estimator: true, clampLogRatio: true, clampOutput: true, straightThrough: true, preset: true,
};
const klOptionKeys = keysOf<KlOptions>(klOptionNames);
const klPenaltyOptionKeys = keysOf<KlPenaltyOptions>({ ...klOptionNames, checkFinite: true, out: true });
const klPenaltyOutKeys = keysOf<KlPenaltyOut>({ kl: true, grad: true });

const klPresets = ['trl', 'verl', 'openrlhf'] as const;

function klOptions(op: string, v: unknown, keys: readonly string[], name = 'options'): NativeKlOptions {
  const o = options<KlOptions>(op, v, keys, name);
  const preset = choice(op, `${name === 'options' ? '' : `${name}.`}preset`, o.preset, klPresets, 'trl');
  const estimator = choice(op, 'estimator', o.estimator, estimators, 'k1');
  const verlK3 = preset === 'verl' && estimator === 'k3';
  return {
    estimator: estimators.indexOf(estimator),
    clampLogRatio: positiveOrNone(op, 'clampLogRatio', o.clampLogRatio, verlK3 ? 20 : null),
    clampOutput: positiveOrNone(op, 'clampOutput', o.clampOutput, verlK3 || preset === 'openrlhf' ? 10 : null),
    straightThrough: booleanOr(op, 'straightThrough', o.straightThrough, false),
  };
}

export interface KlPenaltyResult {
  /** The per-token estimate. */
  kl: Tensor;
  /** d kl / d logprobs, elementwise. */
  grad: Tensor;
}

function prepareKl(op: string, logprobs: unknown, refLogprobs: unknown, opts: unknown) {
  const lp = arg(op, 'logprobs', logprobs, 'float32');
  const ref = arg(op, 'refLogprobs', refLogprobs, 'float32');
  sameShape(op, lp, ref);
  const device = commonDevice(op, [lp, ref]);
  const k = klOptions(op, opts, klPenaltyOptionKeys);
  if (booleanOr(op, 'checkFinite', (opts as KlPenaltyOptions | undefined)?.checkFinite, false)) checkFinite(op, [lp, ref]);
  const out = options<KlPenaltyOut>(op, (opts as KlPenaltyOptions | undefined)?.out, klPenaltyOutKeys, 'out',
    'an object of output tensors');
  const [kl, grad] = outputPair(op, ['out.kl', 'out.grad'], [out.kl, out.grad], lp.shape, device, [lp, ref]);
  const call = (async: boolean) => native().klPenalty(lp.raw, ref.raw, k, kl.raw(op, 'out.kl'), grad.raw(op, 'out.grad'), async);
  return { call, result: { kl, grad } };
}

/** Per-token KL estimate between the policy and the reference, with its gradient. */
export function klPenalty(logprobs: ArrayIn, refLogprobs: ArrayIn, opts?: KlPenaltyOptions): KlPenaltyResult {
  const p = prepareKl('klPenalty', logprobs, refLogprobs, opts);
  p.call(false);
  return p.result;
}

export async function klPenaltyAsync(logprobs: ArrayIn, refLogprobs: ArrayIn, opts?: KlPenaltyOptions): Promise<KlPenaltyResult> {
  const p = prepareKl('klPenaltyAsync', logprobs, refLogprobs, opts);
  await p.call(true);
  return p.result;
}

// --- §4 reward shaping ----------------------------------------------------------------------------

export interface ShapeRewardsInputs {
  /** [B] sequence scores from the reward model. */
  scores: ArrayIn;
  /** [B,T] per-token KL. */
  kl: ArrayIn;
  /** [B,T] uint8 response mask. */
  mask: MaskIn;
  /** [B] uint8: the completion ended with EOS (needed by missingEosPenalty). */
  hasEos?: MaskIn;
}

export interface ShapeRewardsOptions {
  /** Token reward -klCoef*kl. Default 0.05 (TRL). */
  klCoef?: number;
  /** 'last-valid' (TRL 0.9, OpenRLHF, verl; default) or 'after-last' (current TRL PPO). */
  scorePlacement?: 'last-valid' | 'after-last';
  /** Subtracted from the score of completions without EOS (TRL's missing_eos_penalty). */
  missingEosPenalty?: number | null;
  /** Clamp scores to +-c (OpenRLHF's reward_clip_range); null: none. */
  scoreClip?: number | null;
  /** A RangeError naming the argument and the first NaN or infinity in the inputs. Default false. */
  checkFinite?: boolean;
  out?: Tensor;
}

const shapeRewardsInputKeys = keysOf<ShapeRewardsInputs>({ scores: true, kl: true, mask: true, hasEos: true });
const shapeRewardsOptionKeys = keysOf<ShapeRewardsOptions>({
  klCoef: true, scorePlacement: true, missingEosPenalty: true, scoreClip: true, checkFinite: true, out: true,
});
const placements = ['last-valid', 'after-last'] as const;

function prepareShape(op: string, inputs: ShapeRewardsInputs, opts: ShapeRewardsOptions | undefined) {
  const i = inputsObject<ShapeRewardsInputs>(op, inputs, shapeRewardsInputKeys);
  const kl = arg(op, 'kl', i.kl, 'float32');
  const [B, T] = matrixShape(op, kl, 'row');
  const scores = arg(op, 'scores', i.scores, 'float32');
  if (scores.size !== B) throw rangeError(op, 'scores', `must hold ${B} values (one per row of kl) but holds ${scores.size}`);
  const mask = arg(op, 'mask', i.mask, 'uint8');
  sameShape(op, kl, mask);
  const hasEos = optionalArg(op, 'hasEos', i.hasEos, 'uint8');
  if (hasEos !== null && hasEos.size !== B) throw rangeError(op, 'hasEos', `must hold ${B} flags but holds ${hasEos.size}`);
  const device = commonDevice(op, [kl, scores, mask, hasEos]);
  const o = options<ShapeRewardsOptions>(op, opts, shapeRewardsOptionKeys);
  const klCoef = inRange(op, 'klCoef', o.klCoef, 0, 1e30, 0.05, true);
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [scores, kl]);
  const placement = placements.indexOf(choice(op, 'scorePlacement', o.scorePlacement, placements, 'last-valid'));
  const penalty = o.missingEosPenalty === undefined || o.missingEosPenalty === null ? null
    : finite(op, 'missingEosPenalty', o.missingEosPenalty, 0);
  if (penalty !== null && hasEos === null) throw rangeError(op, 'hasEos', 'is required with `missingEosPenalty`');
  const scoreClip = positiveOrNone(op, 'scoreClip', o.scoreClip, null);
  const out = output(op, 'out', o.out, kl.shape, device, [kl]);
  const call = (async: boolean) => native().shapeRewards(B, T, scores.raw, kl.raw, mask.raw, penalty === null ? null : hasEos!.raw,
    klCoef, placement, penalty ?? 0, scoreClip, out.raw(op, 'out'), async);
  return { call, out };
}

/** Token rewards -klCoef*kl plus each row's score at one position. */
export function shapeRewards(inputs: ShapeRewardsInputs, opts?: ShapeRewardsOptions): Tensor {
  const p = prepareShape('shapeRewards', inputs, opts);
  p.call(false);
  return p.out;
}

export async function shapeRewardsAsync(inputs: ShapeRewardsInputs, opts?: ShapeRewardsOptions): Promise<Tensor> {
  const p = prepareShape('shapeRewardsAsync', inputs, opts);
  await p.call(true);
  return p.out;
}

// --- §5-6 losses ------------------------------------------------------------------------------------

export type Aggregation =
  | 'token-mean' | 'seq-mean-token-mean' | 'seq-mean-token-sum' | 'seq-mean-token-sum-norm'
  | 'grpo' | 'bnpo' | 'dr_grpo' | 'dapo';
const aggregations: readonly Aggregation[] = [
  'token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm', 'grpo', 'bnpo', 'dr_grpo', 'dapo',
];

export interface AggregationOptions {
  /** How per-token losses become one number (SEMANTICS.md §5). Default 'token-mean'. */
  aggregation?: Aggregation;
  /**
   * The divisor of 'seq-mean-token-sum-norm' (default T), 'dr_grpo' (default B*T) and 'dapo'
   * (required: the global token count); an error with the other modes.
   */
  normalizer?: number;
}

const aggregationOptionNames: Record<keyof Required<AggregationOptions>, true> = { aggregation: true, normalizer: true };

function aggregationOptions(op: string, o: AggregationOptions, B: number, T: number): NativeAggregation {
  const mode = choice(op, 'aggregation', o.aggregation, aggregations, 'token-mean');
  const fallback = mode === 'seq-mean-token-sum-norm' ? T : mode === 'dr_grpo' ? B * T : null;
  if (o.normalizer !== undefined && mode !== 'dapo' && fallback === null)
    throw rangeError(op, 'normalizer', `is not used by aggregation '${mode}'`);
  if (mode === 'dapo' && o.normalizer === undefined)
    throw rangeError(op, 'normalizer', "is required with aggregation 'dapo' (the global number of valid tokens)");
  const normalizer = o.normalizer === undefined ? (fallback ?? 0) : inRange(op, 'normalizer', o.normalizer, 0, Number.MAX_VALUE, 0);
  // An empty batch under a default normalizer divides nothing.
  return { aggregation: aggregations.indexOf(mode), normalizer: normalizer > 0 ? normalizer : 1 };
}

export interface PolicyLossOptions extends AggregationOptions {
  /** Lower clip range: r >= 1 - clipLow. Default 0.2. */
  clipLow?: number;
  /** Upper clip range: r <= 1 + clipHigh (DAPO's clip-higher). Default clipLow. */
  clipHigh?: number;
  /** Dual clip c > 1 for negative advantages (verl: 3); null: off. */
  dualClip?: number | null;
  /** Clamp the log-ratio before exp (verl, OpenRLHF: 20); null: none. */
  clampLogRatio?: number | null;
  /** 'token' (default) or 'sequence' (GSPO: one ratio per row from the masked mean log-ratio). */
  importanceLevel?: 'token' | 'sequence';
  /** 'branch' (the clipped branch wins: TRL, verl, OpenRLHF; default) or 'ratio' (|r-1| > eps: CleanRL). */
  clipfracMode?: 'branch' | 'ratio';
  /** 'trl', 'openrlhf' (the defaults), 'verl' (dualClip 3, clampLogRatio 20), 'cleanrl' (clipfracMode 'ratio'). */
  preset?: 'trl' | 'verl' | 'openrlhf' | 'cleanrl';
  checkFinite?: boolean;
}

const policyPresets = ['trl', 'verl', 'openrlhf', 'cleanrl'] as const;
const importanceLevels = ['token', 'sequence'] as const;
const clipfracModes = ['branch', 'ratio'] as const;

function policyOptions(op: string, o: PolicyLossOptions, B: number, T: number): NativePolicyOptions {
  const preset = choice(op, 'preset', o.preset, policyPresets, 'trl');
  const clipLow = inRange(op, 'clipLow', o.clipLow, 0, 1, 0.2);
  if (clipLow >= 1) throw rangeError(op, 'clipLow', `must be in (0, 1) but is ${clipLow}`);
  const clipHigh = inRange(op, 'clipHigh', o.clipHigh, 0, 10, clipLow);
  const dual = o.dualClip === undefined ? (preset === 'verl' ? 3 : null) : o.dualClip;
  if (dual !== null && (typeof dual !== 'number' || !(dual > 1) || !Number.isFinite(dual)))
    throw (typeof dual === 'number' ? rangeError(op, 'dualClip', `must be > 1 (or null for off) but is ${dual}`)
      : typeError(op, 'dualClip', 'a number > 1 or null', dual));
  // Field by field: built by a spread, the object took V8's slow path at every call (a [1,8]
  // policy loss with `out` took 4.95 us against 2.3).
  const { aggregation, normalizer } = aggregationOptions(op, o, B, T);
  return {
    aggregation,
    normalizer,
    clipLow,
    clipHigh,
    dualClip: dual ?? 0,
    clampLogRatio: positiveOrNone(op, 'clampLogRatio', o.clampLogRatio, preset === 'verl' ? 20 : null),
    importance: importanceLevels.indexOf(choice(op, 'importanceLevel', o.importanceLevel, importanceLevels, 'token')),
    clipfracMode: clipfracModes.indexOf(choice(op, 'clipfracMode', o.clipfracMode, clipfracModes, preset === 'cleanrl' ? 'ratio' : 'branch')),
  };
}

function perRowOrToken(op: string, a: Arg, B: number, T: number, like: Arg): void {
  if (a.size === B * T) {
    if (a.shape.length === like.shape.length) sameShape(op, like, a);
    return;
  }
  if (a.size !== B) throw rangeError(op, a.name, `must have shape [${like.shape.join(', ')}] or hold ${B} values (one per row) but has [${a.shape.join(', ')}]`);
}

export interface PolicyLossStats {
  /** Share of valid tokens where the clipped branch wins (or |r-1| > eps with clipfracMode 'ratio'). */
  clipfrac: number;
  /** Share of valid tokens where the dual clip is active. */
  clipfracLower: number;
  /** TRL: 0.5 * mean(d^2), d = logprobs - oldLogprobs. */
  approxKl: number;
  /** CleanRL: mean((r - 1) - log r). */
  approxKlK3: number;
  /** verl: mean(old - lp). */
  ppoKl: number;
}

export interface PolicyLossResult {
  loss: number;
  /** d loss / d logprobs. */
  grad: Tensor;
  stats: PolicyLossStats;
}

export interface PolicyLossInputs {
  /** [B,T] (or [N]) log-probs under the policy being trained. */
  logprobs: ArrayIn;
  /** [B,T] log-probs at rollout. */
  oldLogprobs: ArrayIn;
  /** [B,T], or [B] (one per sequence, as GRPO). */
  advantages: ArrayIn;
  /** [B,T] uint8; omitted: every token counts. */
  mask?: MaskIn;
}

function policyStats(s: NativePolicyStats): PolicyLossStats {
  return { clipfrac: s.clipfrac, clipfracLower: s.clipfracLower, approxKl: s.approxKl, approxKlK3: s.approxKlK3, ppoKl: s.ppoKl };
}

const policyInputKeys = keysOf<PolicyLossInputs>({ logprobs: true, oldLogprobs: true, advantages: true, mask: true });
const policyOptionNames: Record<keyof Required<PolicyLossOptions>, true> = {
  ...aggregationOptionNames, clipLow: true, clipHigh: true, dualClip: true, clampLogRatio: true, importanceLevel: true,
  clipfracMode: true, preset: true, checkFinite: true,
};
const policyOptionKeys = keysOf<PolicyLossOptions & { out?: Tensor }>({ ...policyOptionNames, out: true });

function preparePolicy(op: string, inputs: PolicyLossInputs, opts: (PolicyLossOptions & { out?: Tensor }) | undefined) {
  const i = inputsObject<PolicyLossInputs>(op, inputs, policyInputKeys);
  const lp = arg(op, 'logprobs', i.logprobs, 'float32');
  const [B, T] = matrixShape(op, lp, 'row');
  const old = arg(op, 'oldLogprobs', i.oldLogprobs, 'float32');
  sameShape(op, lp, old);
  const adv = arg(op, 'advantages', i.advantages, 'float32');
  perRowOrToken(op, adv, B, T, lp);
  const mask = optionalArg(op, 'mask', i.mask, 'uint8');
  sameShape(op, lp, mask);
  const device = commonDevice(op, [lp, old, adv, mask]);
  const o = options<PolicyLossOptions & { out?: Tensor }>(op, opts, policyOptionKeys);
  const native_ = policyOptions(op, o, B, T);
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [lp, old, adv]);
  const grad = output(op, 'out', o.out, lp.shape, device, [lp, old, adv.size === lp.size ? adv : null]);
  const call = (stats: Float64Array, async: boolean) => native().ppoPolicyLoss(B, T, lp.raw, old.raw, adv.raw,
    mask?.raw ?? null, native_, grad.raw(op, 'out'), stats, async);
  const result = (s: NativePolicyStats): PolicyLossResult => ({ loss: s.loss, grad, stats: policyStats(s) });
  return { call, result };
}

/** The clipped PPO policy loss, its gradient with respect to logprobs and its stats, in one pass. */
export function ppoPolicyLoss(inputs: PolicyLossInputs, opts?: PolicyLossOptions & { out?: Tensor }): PolicyLossResult {
  const p = preparePolicy('ppoPolicyLoss', inputs, opts);
  return p.result(statsOfCall(p.call, policyStatsOf));
}

export async function ppoPolicyLossAsync(inputs: PolicyLossInputs, opts?: PolicyLossOptions & { out?: Tensor }): Promise<PolicyLossResult> {
  const p = preparePolicy('ppoPolicyLossAsync', inputs, opts);
  return p.result(await statsOfAsyncCall(p.call, policyStatsOf));
}

// --- §6 value loss ----------------------------------------------------------------------------------

export interface ValueLossInputs {
  /** [B,T] values being trained. */
  values: ArrayIn;
  /** [B,T] values at rollout (required when clipping). */
  oldValues?: ArrayIn;
  /** [B,T] return targets. */
  returns: ArrayIn;
  mask?: MaskIn;
}

export interface ValueLossOptions extends AggregationOptions {
  /** Clip range around oldValues; null: unclipped. Default 0.2 (TRL, CleanRL), 0.5 with preset 'verl'/'openrlhf'. */
  clip?: number | null;
  preset?: 'trl' | 'cleanrl' | 'verl' | 'openrlhf';
  checkFinite?: boolean;
  out?: Tensor;
}

export interface ValueLossResult {
  loss: number;
  /** d loss / d values. */
  grad: Tensor;
  stats: { vfClipfrac: number; explainedVariance: number };
}

const valuePresets = ['trl', 'cleanrl', 'verl', 'openrlhf'] as const;

const valueInputKeys = keysOf<ValueLossInputs>({ values: true, oldValues: true, returns: true, mask: true });
const valueOptionKeys = keysOf<ValueLossOptions>({
  ...aggregationOptionNames, clip: true, preset: true, checkFinite: true, out: true,
});

function prepareValue(op: string, inputs: ValueLossInputs, opts: ValueLossOptions | undefined) {
  const i = inputsObject<ValueLossInputs>(op, inputs, valueInputKeys);
  const v = arg(op, 'values', i.values, 'float32');
  const [B, T] = matrixShape(op, v, 'row');
  const old = optionalArg(op, 'oldValues', i.oldValues, 'float32');
  sameShape(op, v, old);
  const R = arg(op, 'returns', i.returns, 'float32');
  sameShape(op, v, R);
  const mask = optionalArg(op, 'mask', i.mask, 'uint8');
  sameShape(op, v, mask);
  const device = commonDevice(op, [v, old, R, mask]);
  const o = options<ValueLossOptions>(op, opts, valueOptionKeys);
  const preset = choice(op, 'preset', o.preset, valuePresets, 'trl');
  const clip = positiveOrNone(op, 'clip', o.clip, preset === 'verl' || preset === 'openrlhf' ? 0.5 : 0.2);
  if (clip !== Infinity && old === null) throw rangeError(op, 'oldValues', 'is required when `clip` is set (pass clip: null for an unclipped loss)');
  const agg = aggregationOptions(op, o, B, T);
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [v, old, R]);
  const grad = output(op, 'out', o.out, v.shape, device, [v, R, old]);
  const call = (stats: Float64Array, async: boolean) => native().valueLoss(B, T, v.raw, old?.raw ?? null, R.raw,
    mask?.raw ?? null, clip, agg, grad.raw(op, 'out'), stats, async);
  const result = (s: NativeValueStats): ValueLossResult => ({
    loss: s.loss, grad, stats: { vfClipfrac: s.vfClipfrac, explainedVariance: s.explainedVariance },
  });
  return { call, result };
}

/** 0.5 * agg(max((v-R)^2, (clip(v, old +- clip) - R)^2)), its gradient and stats. */
export function valueLoss(inputs: ValueLossInputs, opts?: ValueLossOptions): ValueLossResult {
  const p = prepareValue('valueLoss', inputs, opts);
  return p.result(statsOfCall(p.call, valueStatsOf));
}

export async function valueLossAsync(inputs: ValueLossInputs, opts?: ValueLossOptions): Promise<ValueLossResult> {
  const p = prepareValue('valueLossAsync', inputs, opts);
  return p.result(await statsOfAsyncCall(p.call, valueStatsOf));
}

// --- §5 the fused actor loss from logits ----------------------------------------------------------

export interface ActorLossInputs {
  /** [B,T,V] (or [N,V], one row) logits of the response tokens. */
  logits: Tensor;
  /** [B,T] int32 sampled tokens; ignoreIndex marks tokens that take no part. */
  labels: LabelsIn;
  /** [B,T] log-probs at rollout. */
  oldLogprobs: ArrayIn;
  /** [B,T] or [B]. */
  advantages: ArrayIn;
  /** [B,T] log-probs under the frozen reference (needed when klCoef > 0). */
  refLogprobs?: ArrayIn;
  mask?: MaskIn;
}

export interface ActorLossOut {
  gradLogits?: Tensor;
  logprobs?: Tensor;
  entropy?: Tensor;
}

export interface ActorLossOptions extends PolicyLossOptions {
  temperature?: number;
  ignoreIndex?: number;
  /** Weight of the entropy bonus: loss -= entropyCoef * agg(H). Default 0. */
  entropyCoef?: number;
  /** Weight of the KL-to-reference loss: loss += klCoef * agg(KL). Default 0. */
  klCoef?: number;
  /** The KL estimator and its clamps (as klPenalty's options). Default k1, no clamps. */
  kl?: KlOptions;
  out?: ActorLossOut;
}

export interface ActorLossResult {
  /** pg + klCoef * kl - entropyCoef * entropy. */
  loss: number;
  /** d loss / d logits. */
  gradLogits: Tensor;
  /** lp and H of the tokens that take part; 0 where masked (their logits are never read). */
  logprobs: Tensor;
  entropy: Tensor;
  stats: PolicyLossStats & { policyLoss: number; entropy: number; kl: number };
}

const actorInputKeys = keysOf<ActorLossInputs>({
  logits: true, labels: true, oldLogprobs: true, advantages: true, refLogprobs: true, mask: true,
});
const actorOptionKeys = keysOf<ActorLossOptions>({
  ...policyOptionNames, temperature: true, ignoreIndex: true, entropyCoef: true, klCoef: true, kl: true, out: true,
});
const actorOutKeys = keysOf<ActorLossOut>({ gradLogits: true, logprobs: true, entropy: true });

function prepareActor(op: string, inputs: ActorLossInputs, opts: ActorLossOptions | undefined) {
  const i = inputsObject<ActorLossInputs>(op, inputs, actorInputKeys);
  const { z, dtype } = logitsArg(op, i.logits);
  if (z.shape.length !== 2 && z.shape.length !== 3)
    throw rangeError(op, 'logits', `must have shape [B, T, V] or [N, V] but has [${z.shape.join(', ')}]`);
  const y = arg(op, 'labels', i.labels, 'int32');
  const { V, rowShape } = logitsShape(op, z, y);
  const [B, T] = rowShape.length === 2 ? [rowShape[0], rowShape[1]] : [1, rowShape[0]];
  const old = arg(op, 'oldLogprobs', i.oldLogprobs, 'float32');
  if (old.size !== B * T) throw rangeError(op, 'oldLogprobs', `must hold ${B * T} values (shape [${rowShape.join(', ')}]) but holds ${old.size}`);
  const adv = arg(op, 'advantages', i.advantages, 'float32');
  perRowOrToken(op, adv, B, T, old);
  const ref = optionalArg(op, 'refLogprobs', i.refLogprobs, 'float32');
  if (ref !== null && ref.size !== B * T) throw rangeError(op, 'refLogprobs', `must hold ${B * T} values but holds ${ref.size}`);
  const mask = optionalArg(op, 'mask', i.mask, 'uint8');
  if (mask !== null && mask.size !== B * T) throw rangeError(op, 'mask', `must hold ${B * T} flags but holds ${mask.size}`);
  const device = commonDevice(op, [z, y, old, adv, ref, mask]);
  const o = options<ActorLossOptions>(op, opts, actorOptionKeys);
  const klCoef = inRange(op, 'klCoef', o.klCoef, 0, 1e30, 0, true);
  if (klCoef > 0 && ref === null) throw rangeError(op, 'refLogprobs', 'is required when `klCoef` > 0');
  // Added to policyOptions' object rather than spread with it (see there): 11.3 -> 8.3 us for a
  // [1,8,16] call, and 5.9 us with the stats built the same way.
  const nativeOptions: NativeActorOptions = Object.assign(policyOptions(op, o, B, T), {
    temperature: inRange(op, 'temperature', o.temperature, 0, Number.MAX_VALUE, 1),
    ignoreIndex: int32(op, 'ignoreIndex', o.ignoreIndex, -100),
    entropyCoef: finite(op, 'entropyCoef', o.entropyCoef, 0),
    klCoef,
  });
  const kl = klOptions(op, o.kl, klOptionKeys, 'kl');
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [z, old, adv, ref]);
  const out = options<ActorLossOut>(op, o.out, actorOutKeys, 'out', 'an object of output tensors');
  const gradLogits = logitsGradOut(op, 'out.gradLogits', out.gradLogits, z);
  const logprobs = output(op, 'out.logprobs', out.logprobs, rowShape, device);
  const entropy = output(op, 'out.entropy', out.entropy, rowShape, device);
  const call = (stats: Float64Array, async: boolean) => native().actorLossFromLogits(B, T, V, dtype, z.raw, y.raw, old.raw,
    adv.raw, ref?.raw ?? null, mask?.raw ?? null, nativeOptions, kl, gradLogits.raw(op, 'out.gradLogits'),
    logprobs.raw(op, 'out.logprobs'), entropy.raw(op, 'out.entropy'), stats, async);
  const result = (s: NativeActorStats): ActorLossResult => ({
    loss: s.loss, gradLogits, logprobs, entropy,
    stats: Object.assign(policyStats(s), { policyLoss: s.policyLoss, entropy: s.entropy, kl: s.kl }),
  });
  return { call, result };
}

/**
 * The PPO actor loss straight from logits: log-probs, entropy bonus, KL-to-reference loss and the
 * clipped policy loss with d loss / d logits, never materialising the batch's softmax.
 */
export function actorLossFromLogits(inputs: ActorLossInputs, opts?: ActorLossOptions): ActorLossResult {
  const p = prepareActor('actorLossFromLogits', inputs, opts);
  return p.result(statsOfCall(p.call, actorStatsOf));
}

export async function actorLossFromLogitsAsync(inputs: ActorLossInputs, opts?: ActorLossOptions): Promise<ActorLossResult> {
  const p = prepareActor('actorLossFromLogitsAsync', inputs, opts);
  return p.result(await statsOfAsyncCall(p.call, actorStatsOf));
}

// --- §4 KL controllers -------------------------------------------------------------------------------

function requiredNumber(op: string, name: string, v: unknown, lo: number): number {
  if (typeof v !== 'number') throw typeError(op, name, 'a number', v);
  if (!(Number.isFinite(v) && v >= lo)) throw rangeError(op, name, `must be a finite number >= ${lo} but is ${v}`);
  return v;
}

/** A KL coefficient that never changes. */
export class FixedKLController {
  value: number;
  constructor(coef: number) {
    this.value = requiredNumber('FixedKLController', 'coef', coef, 0);
  }
  update(_currentKl: number, _nSteps: number): void {}
}

export interface AdaptiveKLOptions {
  initKlCoef: number;
  /** The KL to steer towards (> 0). */
  target: number;
  /** Steps over which the coefficient moves by the full error (> 0). */
  horizon: number;
}

const adaptiveKlKeys = keysOf<AdaptiveKLOptions>({ initKlCoef: true, target: true, horizon: true });

/**
 * Ziegler et al.'s controller: err = clip(kl/target - 1, -0.2, 0.2); coef *= 1 + err*nSteps/horizon.
 * Feed it the KL as your library measures it: TRL 0.9 the mean over sequences of the per-sequence
 * sum, verl the mean per token.
 */
export class AdaptiveKLController {
  value: number;
  readonly target: number;
  readonly horizon: number;
  constructor(opts: AdaptiveKLOptions) {
    const op = 'AdaptiveKLController';
    const o = options<AdaptiveKLOptions>(op, opts, adaptiveKlKeys);
    this.value = requiredNumber(op, 'initKlCoef', o.initKlCoef, 0);
    this.target = requiredNumber(op, 'target', o.target, Number.MIN_VALUE);
    this.horizon = requiredNumber(op, 'horizon', o.horizon, Number.MIN_VALUE);
  }
  update(currentKl: number, nSteps: number): void {
    const op = 'AdaptiveKLController.update';
    const kl = requiredNumber(op, 'currentKl', currentKl, -Infinity);
    const steps = requiredNumber(op, 'nSteps', nSteps, 0);
    const err = Math.min(Math.max(kl / this.target - 1, -0.2), 0.2);
    this.value *= 1 + (err * steps) / this.horizon;
  }
}
