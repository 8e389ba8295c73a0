// Advantage estimation: time-major GAE for environment rollouts, batch-major GAE over token
// sequences, and discounted returns (SEMANTICS.md §3). Each op validates, then calls the addon
// synchronously or, in its Async form, on a worker thread.
import { rangeError, typeError } from '../errors';
import { RawRate, native } from '../native';
import { Tensor } from '../tensor';
import {
  Arg, arg, booleanOr, checkFinite, choice, commonDevice, inputsObject, keysOf, matrixShape, numberIn, optionalArg, options, output,
  outputPair, requireSize, sameShape,
} from '../validate';

type ArrayIn = Tensor | Float32Array;
type MaskIn = Tensor | Uint8Array;
type RateIn = number | Float32Array | Tensor;

export interface AdvantagesResult {
  advantages: Tensor;
  returns: Tensor;
}

export interface AdvantagesOut {
  advantages?: Tensor;
  returns?: Tensor;
}

export interface GaeInputs {
  /** [T,N] (or [T] for one environment): reward after step t. */
  rewards: ArrayIn;
  /** [T,N]: V(s_t). */
  values: ArrayIn;
  /** [N]: value of the state after the last step; required unless `nextValues` is given. */
  lastValues?: ArrayIn;
  /** [T,N] uint8: step t ended its episode in a terminal state (no bootstrap). */
  terminated?: MaskIn;
  /** [T,N] uint8: step t ended its episode by a time limit (bootstrap, but stop the lambda chain). */
  truncated?: MaskIn;
  /** [T,N]: value of the state after step t; required with `truncated` (auto-reset environments). */
  nextValues?: ArrayIn;
  /** CleanRL: [T,N] done flag stored *before* step t (preset 'cleanrl' only). */
  dones?: MaskIn;
  /** CleanRL: [N] done flag after the last step (preset 'cleanrl' only). */
  nextDone?: MaskIn;
}

export interface GaeOptions {
  /** Discount: a number, or per step [T], or per element [T,N]. Default 0.99. */
  gamma?: RateIn;
  /** GAE lambda, same forms as gamma. Default 0.95. */
  lambda?: RateIn;
  /** 'torchrl' (default: terminated/truncated/nextValues), 'rlax' (same), 'cleanrl' (dones/nextDone). */
  preset?: 'torchrl' | 'rlax' | 'cleanrl';
  checkFinite?: boolean;
  out?: AdvantagesOut;
}

const gaePresets = ['torchrl', 'rlax', 'cleanrl'] as const;

// A gamma or lambda argument: a number in [0,1], or T or T*N values in [0,1].
function rate(op: string, name: string, v: unknown, T: number, N: number, device: number, fallback: number): { raw: RawRate; arg: Arg | null } {
  if (v === undefined) return { raw: fallback, arg: null };
  if (typeof v === 'number') return { raw: numberIn(op, name, v, 0, 1), arg: null };
  if (!(v instanceof Tensor) && !(v instanceof Float32Array)) throw typeError(op, name, 'a number, a Float32Array or a float32 Tensor', v);
  const a = arg(op, name, v, 'float32');
  if (a.size !== T && a.size !== T * N)
    throw rangeError(op, name, `must be a number or hold ${T} (per step) or ${T * N} (per element) values, but holds ${a.size}`);
  if (a.device !== device) throw rangeError(op, name, 'must be on the device of `rewards`');
  const host = a.tensor !== null ? (a.tensor.dataSync() as Float32Array) : (a.raw as Float32Array);
  for (let i = 0; i < host.length; ++i)
    if (!(host[i] >= 0 && host[i] <= 1)) throw rangeError(op, name, `must hold values in [0, 1] but holds ${host[i]} at index ${i}`);
  return { raw: a.raw as RawRate, arg: a };
}

const advantagesOutKeys = keysOf<AdvantagesOut>({ advantages: true, returns: true });
const gaeInputKeys = keysOf<GaeInputs>({
  rewards: true, values: true, lastValues: true, terminated: true, truncated: true, nextValues: true, dones: true, nextDone: true,
});
const gaeOptionKeys = keysOf<GaeOptions>({ gamma: true, lambda: true, preset: true, checkFinite: true, out: true });

function prepareGae(op: string, inputs: GaeInputs, opts: GaeOptions | undefined) {
  inputsObject(op, inputs, gaeInputKeys);
  const o = options<GaeOptions>(op, opts, gaeOptionKeys);
  const preset = choice(op, 'preset', o.preset, gaePresets, 'torchrl');
  const rewards = arg(op, 'rewards', inputs.rewards, 'float32');
  const [T, N] = matrixShape(op, rewards, 'column');
  const values = arg(op, 'values', inputs.values, 'float32');
  sameShape(op, rewards, values);
  const nextValues = optionalArg(op, 'nextValues', inputs.nextValues, 'float32');
  sameShape(op, rewards, nextValues);
  const lastValues = optionalArg(op, 'lastValues', inputs.lastValues, 'float32');
  requireSize(op, lastValues, N, `${N} values (one per environment)`);
  const terminated = optionalArg(op, 'terminated', inputs.terminated, 'uint8');
  sameShape(op, rewards, terminated);
  const truncated = optionalArg(op, 'truncated', inputs.truncated, 'uint8');
  sameShape(op, rewards, truncated);
  const dones = optionalArg(op, 'dones', inputs.dones, 'uint8');
  sameShape(op, rewards, dones);
  const nextDone = optionalArg(op, 'nextDone', inputs.nextDone, 'uint8');
  requireSize(op, nextDone, N, `${N} flags (one per environment)`);

  if (preset === 'cleanrl') {
    if (terminated !== null || truncated !== null)
      throw rangeError(op, terminated !== null ? 'terminated' : 'truncated', "is not used with preset 'cleanrl': pass CleanRL's `dones` and `nextDone`");
    if (dones === null || nextDone === null)
      throw rangeError(op, dones === null ? 'dones' : 'nextDone', "is required with preset 'cleanrl' (CleanRL's done flags)");
  } else if (dones !== null || nextDone !== null) {
    throw rangeError(op, dones !== null ? 'dones' : 'nextDone', "is CleanRL's convention: pass { preset: 'cleanrl' }, or use `terminated`/`truncated`");
  }
  if (truncated !== null && nextValues === null)
    throw rangeError(op, 'nextValues', 'is required when `truncated` is given: with auto-reset environments values[t+1] belongs to the next episode');
  if (nextValues === null && lastValues === null)
    throw rangeError(op, 'lastValues', 'is required unless `nextValues` is given');

  const device = commonDevice(op, [rewards, values, nextValues, lastValues, terminated, truncated, dones, nextDone]);
  const gamma = rate(op, 'gamma', o.gamma, T, N, device, 0.99);
  const lambda = rate(op, 'lambda', o.lambda, T, N, device, 0.95);
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [rewards, values, nextValues, lastValues]);
  const out = options<AdvantagesOut>(op, o.out, advantagesOutKeys, 'out', 'an object of output tensors');
  const perElement = (r: { arg: Arg | null }) => (r.arg !== null && r.arg.size === T * N ? r.arg : null);
  const [advantages, returns] = outputPair(op, ['out.advantages', 'out.returns'], [out.advantages, out.returns],
    rewards.shape, device, [rewards, values, nextValues, perElement(gamma), perElement(lambda)]);
  const call = (async: boolean) => native().gae(T, N, rewards.raw, values.raw, nextValues?.raw ?? null,
    lastValues?.raw ?? null, terminated?.raw ?? null, truncated?.raw ?? null, dones?.raw ?? null,
    nextDone?.raw ?? null, gamma.raw, lambda.raw, advantages.raw(op, 'out.advantages'),
    returns.raw(op, 'out.returns'), async);
  return { call, result: { advantages, returns } };
}

/** GAE over environment rollouts, time-major [T,N] (CleanRL, torchrl, rlax). */
export function gae(inputs: GaeInputs, opts?: GaeOptions): AdvantagesResult {
  const p = prepareGae('gae', inputs, opts);
  p.call(false);
  return p.result;
}

export async function gaeAsync(inputs: GaeInputs, opts?: GaeOptions): Promise<AdvantagesResult> {
  const p = prepareGae('gaeAsync', inputs, opts);
  await p.call(true);
  return p.result;
}

export type MaskMode = 'premask' | 'skip' | 'none';
const maskModes: readonly MaskMode[] = ['premask', 'skip', 'none'];

export interface TokenGaeInputs {
  /** [B,T] token-level rewards. */
  rewards: ArrayIn;
  /** [B,T] values. */
  values: ArrayIn;
  /** [B,T] uint8, 1 for response tokens; optional only with maskMode 'none'. */
  mask?: MaskIn;
  /** [B] value to bootstrap from after the last column (default 0). */
  lastValues?: ArrayIn;
}

export interface TokenGaeOptions {
  gamma?: number;
  lambda?: number;
  /** 'premask' (TRL 0.9, OpenRLHF), 'skip' (verl), 'none' (current TRL PPO). */
  maskMode?: MaskMode;
  /** Sets maskMode, gamma and lambda as that library does; explicit options win. */
  preset?: 'trl' | 'trl-0.9' | 'openrlhf' | 'verl';
  checkFinite?: boolean;
  out?: AdvantagesOut;
}

const tokenPresets: Record<NonNullable<TokenGaeOptions['preset']>, { maskMode: MaskMode; gamma: number; lambda: number }> = {
  trl: { maskMode: 'none', gamma: 1, lambda: 0.95 },
  'trl-0.9': { maskMode: 'premask', gamma: 1, lambda: 0.95 },
  openrlhf: { maskMode: 'premask', gamma: 1, lambda: 0.95 },
  verl: { maskMode: 'skip', gamma: 1, lambda: 1 },
};

const tokenPresetNames = Object.keys(tokenPresets) as (keyof typeof tokenPresets)[];

const tokenGaeInputKeys = keysOf<TokenGaeInputs>({ rewards: true, values: true, mask: true, lastValues: true });
const tokenGaeOptionKeys = keysOf<TokenGaeOptions>({
  gamma: true, lambda: true, maskMode: true, preset: true, checkFinite: true, out: true,
});

function prepareTokenGae(op: string, inputs: TokenGaeInputs, opts: TokenGaeOptions | undefined) {
  inputsObject(op, inputs, tokenGaeInputKeys);
  const o = options<TokenGaeOptions>(op, opts, tokenGaeOptionKeys);
  const presetName = choice(op, 'preset', o.preset, tokenPresetNames, 'openrlhf');
  const preset = tokenPresets[presetName];
  const maskMode = choice(op, 'maskMode', o.maskMode, maskModes, preset.maskMode);
  const gamma = numberIn(op, 'gamma', o.gamma, 0, 1, preset.gamma);
  const lambda = numberIn(op, 'lambda', o.lambda, 0, 1, preset.lambda);
  const rewards = arg(op, 'rewards', inputs.rewards, 'float32');
  const [B, T] = matrixShape(op, rewards, 'row');
  const values = arg(op, 'values', inputs.values, 'float32');
  sameShape(op, rewards, values);
  const mask = optionalArg(op, 'mask', inputs.mask, 'uint8');
  sameShape(op, rewards, mask);
  if (mask === null && maskMode !== 'none') throw rangeError(op, 'mask', `is required with maskMode '${maskMode}'`);
  const lastValues = optionalArg(op, 'lastValues', inputs.lastValues, 'float32');
  requireSize(op, lastValues, B, `${B} values (one per row)`);
  const device = commonDevice(op, [rewards, values, mask, lastValues]);
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [rewards, values, lastValues]);
  const out = options<AdvantagesOut>(op, o.out, advantagesOutKeys, 'out', 'an object of output tensors');
  const [advantages, returns] = outputPair(op, ['out.advantages', 'out.returns'], [out.advantages, out.returns],
    rewards.shape, device, [values, rewards]);
  const call = (async: boolean) => native().tokenGae(B, T, rewards.raw, values.raw, mask?.raw ?? null,
    lastValues?.raw ?? null, gamma, lambda, maskModes.indexOf(maskMode), advantages.raw(op, 'out.advantages'),
    returns.raw(op, 'out.returns'), async);
  return { call, result: { advantages, returns } };
}

/** GAE over token sequences, batch-major [B,T] (TRL, OpenRLHF, verl). */
export function tokenGae(inputs: TokenGaeInputs, opts?: TokenGaeOptions): AdvantagesResult {
  const p = prepareTokenGae('tokenGae', inputs, opts);
  p.call(false);
  return p.result;
}

export async function tokenGaeAsync(inputs: TokenGaeInputs, opts?: TokenGaeOptions): Promise<AdvantagesResult> {
  const p = prepareTokenGae('tokenGaeAsync', inputs, opts);
  await p.call(true);
  return p.result;
}

export interface DiscountedReturnsInputs {
  /** [B,T] rewards. */
  rewards: ArrayIn;
  /** [B,T] uint8; masked rewards count as 0 (optional: all valid). */
  mask?: MaskIn;
}

export interface DiscountedReturnsOptions {
  /** Default 1 (OpenRLHF's REINFORCE). */
  gamma?: number;
  checkFinite?: boolean;
  out?: Tensor;
}

const returnsInputKeys = keysOf<DiscountedReturnsInputs>({ rewards: true, mask: true });
const returnsOptionKeys = keysOf<DiscountedReturnsOptions>({ gamma: true, checkFinite: true, out: true });

function prepareReturns(op: string, inputs: DiscountedReturnsInputs, opts: DiscountedReturnsOptions | undefined) {
  inputsObject(op, inputs, returnsInputKeys);
  const o = options<DiscountedReturnsOptions>(op, opts, returnsOptionKeys);
  const gamma = numberIn(op, 'gamma', o.gamma, 0, 1, 1);
  const rewards = arg(op, 'rewards', inputs.rewards, 'float32');
  const [B, T] = matrixShape(op, rewards, 'row');
  const mask = optionalArg(op, 'mask', inputs.mask, 'uint8');
  sameShape(op, rewards, mask);
  const device = commonDevice(op, [rewards, mask]);
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [rewards]);
  const returns = output(op, 'out', o.out, rewards.shape, device, [rewards]);
  const call = (async: boolean) =>
    native().discountedReturns(B, T, rewards.raw, mask?.raw ?? null, gamma, returns.raw(op, 'out'), async);
  return { call, result: returns };
}

/** REINFORCE returns: reverse discounted cumulative sum of the masked rewards, per row. */
export function discountedReturns(inputs: DiscountedReturnsInputs, opts?: DiscountedReturnsOptions): Tensor {
  const p = prepareReturns('discountedReturns', inputs, opts);
  p.call(false);
  return p.result;
}

export async function discountedReturnsAsync(inputs: DiscountedReturnsInputs, opts?: DiscountedReturnsOptions): Promise<Tensor> {
  const p = prepareReturns('discountedReturnsAsync', inputs, opts);
  await p.call(true);
  return p.result;
}
