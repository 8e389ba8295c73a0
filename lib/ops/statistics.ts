// Masked statistics and whitening (SEMANTICS.md §2). The moments are accumulated in float64 in
// a fixed order (the same result for any thread count); the presets turn them into the numbers
// TRL, verl, OpenRLHF and CleanRL compute.
import { rangeError } from '../errors';
import { native } from '../native';
import { Tensor } from '../tensor';
import {
  arg, booleanOr, checkFinite, choice, commonDevice, keysOf, numberIn, optionalArg, options, output, sameShape,
} from '../validate';

type ArrayIn = Tensor | Float32Array;
type MaskIn = Tensor | Uint8Array;

function prepareMoments(op: string, x: unknown, mask: unknown) {
  const xs = arg(op, 'x', x, 'float32');
  const m = optionalArg(op, 'mask', mask, 'uint8');
  sameShape(op, xs, m);
  const device = commonDevice(op, [xs, m]);
  return { xs, m, device };
}

export interface MaskedMeanOptions {
  /** A RangeError naming the first NaN or infinity in x. Default false. */
  checkFinite?: boolean;
}

export interface MaskedVarOptions extends MaskedMeanOptions {
  /** Bessel's correction (TRL, verl, CleanRL; default). False: population variance (OpenRLHF). */
  unbiased?: boolean;
}

const meanOptionKeys = keysOf<MaskedMeanOptions>({ checkFinite: true });
const varOptionKeys = keysOf<MaskedVarOptions>({ unbiased: true, checkFinite: true });

// x and mask as prepareMoments takes them, and the options of the mean or the variance.
function prepareStatistic(op: string, x: unknown, mask: unknown, opts: unknown, keys: readonly string[]) {
  const { xs, m } = prepareMoments(op, x, mask);
  const o = options<MaskedVarOptions>(op, opts, keys);
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [xs]);
  return { xs, m, unbiased: booleanOr(op, 'unbiased', o.unbiased, true) };
}

/** Mean of x where mask != 0 (mask omitted: all); 0 when nothing is selected. */
export function maskedMean(x: ArrayIn, mask?: MaskIn | null, opts?: MaskedMeanOptions): number {
  const { xs, m } = prepareStatistic('maskedMean', x, mask, opts, meanOptionKeys);
  return native().maskedMean(xs.raw, m?.raw ?? null, false) as number;
}

export async function maskedMeanAsync(x: ArrayIn, mask?: MaskIn | null, opts?: MaskedMeanOptions): Promise<number> {
  const { xs, m } = prepareStatistic('maskedMeanAsync', x, mask, opts, meanOptionKeys);
  return native().maskedMean(xs.raw, m?.raw ?? null, true) as Promise<number>;
}

/** Variance of x where mask != 0. Unbiased needs at least 2 selected elements (RangeError). */
export function maskedVar(x: ArrayIn, mask?: MaskIn | null, opts?: MaskedVarOptions): number {
  const { xs, m, unbiased } = prepareStatistic('maskedVar', x, mask, opts, varOptionKeys);
  return native().maskedVar(xs.raw, m?.raw ?? null, unbiased, false) as number;
}

export async function maskedVarAsync(x: ArrayIn, mask?: MaskIn | null, opts?: MaskedVarOptions): Promise<number> {
  const { xs, m, unbiased } = prepareStatistic('maskedVarAsync', x, mask, opts, varOptionKeys);
  return native().maskedVar(xs.raw, m?.raw ?? null, unbiased, true) as Promise<number>;
}

export type WhitenPreset = 'trl' | 'verl' | 'openrlhf' | 'cleanrl';
const whitenPresets: readonly WhitenPreset[] = ['trl', 'verl', 'openrlhf', 'cleanrl'];

export interface MaskedWhitenOptions {
  /**
   * 'trl' (default): (x-mean)*rsqrt(var_unbiased+eps). 'verl': the same with verl's
   * sum/(count+1e-8) means. 'openrlhf': population variance, rsqrt(max(var, eps)).
   * 'cleanrl': (x-mean)/(std_unbiased+eps).
   */
  preset?: WhitenPreset;
  /** False adds the mean back after scaling (reward whitening). Default true. */
  shiftMean?: boolean;
  /** False only centres: OpenRLHF's no_advantage_std_norm, so preset 'openrlhf' only. Default true. */
  scaleByStd?: boolean;
  /** Default 1e-8 (every preset). */
  eps?: number;
  checkFinite?: boolean;
  out?: Tensor;
}

const whitenOptionKeys = keysOf<MaskedWhitenOptions>({
  preset: true, shiftMean: true, scaleByStd: true, eps: true, checkFinite: true, out: true,
});

function prepareWhiten(op: string, x: unknown, mask: unknown, opts: MaskedWhitenOptions | undefined) {
  const { xs, m, device } = prepareMoments(op, x, mask);
  const o = options<MaskedWhitenOptions>(op, opts, whitenOptionKeys);
  const preset = whitenPresets.indexOf(choice(op, 'preset', o.preset, whitenPresets, 'trl'));
  const shiftMean = booleanOr(op, 'shiftMean', o.shiftMean, true);
  const scaleByStd = booleanOr(op, 'scaleByStd', o.scaleByStd, true);
  if (!scaleByStd && preset !== whitenPresets.indexOf('openrlhf'))
    throw rangeError(op, 'scaleByStd', "can be false only with preset 'openrlhf' (its no_advantage_std_norm mode)");
  const eps = numberIn(op, 'eps', o.eps, 0, 1, 1e-8);
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [xs]);
  const out = output(op, 'out', o.out, xs.shape, device, [xs]);
  const call = (async: boolean) =>
    native().maskedWhiten(xs.raw, m?.raw ?? null, preset, shiftMean, scaleByStd, eps, out.raw(op, 'out'), async);
  return { call, out };
}

/**
 * Whitens every element of x with the mean and variance of the elements where mask != 0.
 * A 1-D TypedArray input gives a 1-D float32 Tensor.
 */
export function maskedWhiten(x: ArrayIn, mask?: MaskIn | null, opts?: MaskedWhitenOptions): Tensor {
  const p = prepareWhiten('maskedWhiten', x, mask, opts);
  p.call(false);
  return p.out;
}

export async function maskedWhitenAsync(x: ArrayIn, mask?: MaskIn | null, opts?: MaskedWhitenOptions): Promise<Tensor> {
  const p = prepareWhiten('maskedWhitenAsync', x, mask, opts);
  await p.call(true);
  return p.out;
}
