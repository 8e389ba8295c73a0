// Plain TypeScript references for masked statistics and whitening (SEMANTICS.md §2), in float64
// over number[] or TypedArray inputs: two passes (mean, then squared deviations), no shortcuts.
// Each whitening preset follows the library it is named after, as native/reference/whiten_plan.cpp
// does. The tests judge the addon against these and the benchmark runs them as its "js" backend.

import type { NumberArray } from './advantages';

export type WhitenPresetReference = 'trl' | 'verl' | 'openrlhf' | 'cleanrl';

export interface MaskedWhitenReferenceOptions {
  preset?: WhitenPresetReference;
  /** False adds the centre back after scaling (reward whitening). Default true. */
  shiftMean?: boolean;
  /** False skips the division by the standard deviation ('openrlhf' only, as in the addon). */
  scaleByStd?: boolean;
  /** Default 1e-8. */
  eps?: number;
}

function isValid(mask: NumberArray | null, i: number): boolean {
  return mask === null || mask[i] !== 0;
}

function countAndSum(x: NumberArray, mask: NumberArray | null): [number, number] {
  let count = 0;
  let sum = 0;
  for (let i = 0; i < x.length; ++i) {
    if (!isValid(mask, i)) continue;
    count += 1;
    sum += x[i];
  }
  return [count, sum];
}

/** Sum of (x - center)^2 over the valid elements. */
function sumSquares(x: NumberArray, mask: NumberArray | null, center: number): number {
  let s = 0;
  for (let i = 0; i < x.length; ++i) {
    if (!isValid(mask, i)) continue;
    const d = x[i] - center;
    s += d * d;
  }
  return s;
}

function requireCount(count: number, needed: number, op: string): void {
  if (count < needed)
    throw new RangeError(`${op}: \`mask\` must select at least ${needed} element(s) for this variance, but selects ${count}`);
}

/** Mean of x where mask != 0 (no mask: all); 0 when nothing is selected. */
export function maskedMeanReference(x: NumberArray, mask?: NumberArray | null): number {
  const [count, sum] = countAndSum(x, mask ?? null);
  return count === 0 ? 0 : sum / count;
}

/** Variance of x where mask != 0: unbiased (default) needs 2 valid elements; population of none is 0. */
export function maskedVarReference(x: NumberArray, mask?: NumberArray | null, opts: { unbiased?: boolean } = {}): number {
  const m = mask ?? null;
  const unbiased = opts.unbiased ?? true;
  const [count, sum] = countAndSum(x, m);
  if (unbiased) requireCount(count, 2, 'maskedVarReference');
  if (count === 0) return 0;
  const ss = sumSquares(x, m, sum / count);
  return unbiased ? ss / (count - 1) : ss / count;
}

/**
 * Whitens every element of x (masked or not) with statistics of the valid elements:
 *   trl      (x - mean) / sqrt(var_unbiased + eps)                      needs 2 valid
 *   verl     as trl, but verl's means are sum/(count + 1e-8), both for the centre and for the
 *            mean of squared deviations from it (then the Bessel factor)  needs 2 valid
 *   openrlhf (x - mean) / sqrt(max(var_population, eps)); scaleByStd false only centres; needs 1 valid
 *   cleanrl  (x - mean) / (std_unbiased + eps)                           needs 2 valid
 * shiftMean false adds the centre back. An empty x gives an empty result.
 */
export function maskedWhitenReference(x: NumberArray, mask?: NumberArray | null, opts: MaskedWhitenReferenceOptions = {}): Float64Array {
  const m = mask ?? null;
  const preset = opts.preset ?? 'trl';
  const shiftMean = opts.shiftMean ?? true;
  const scaleByStd = opts.scaleByStd ?? true;
  const eps = opts.eps ?? 1e-8;
  const n = x.length;
  const out = new Float64Array(n);
  if (n === 0) return out;
  const op = 'maskedWhitenReference';
  const [count, sum] = countAndSum(x, m);
  let center: number;
  let scale: number;
  switch (preset) {
    case 'trl': {
      requireCount(count, 2, op);
      center = sum / count;
      const variance = sumSquares(x, m, center) / (count - 1);
      scale = 1 / Math.sqrt(variance + eps);
      break;
    }
    case 'verl': {
      requireCount(count, 2, op);
      center = sum / (count + 1e-8);
      const meanSquare = sumSquares(x, m, center) / (count + 1e-8);
      const variance = meanSquare * (count / (count - 1));
      scale = 1 / Math.sqrt(variance + eps);
      break;
    }
    case 'openrlhf': {
      requireCount(count, 1, op);
      center = sum / count;
      const variance = sumSquares(x, m, center) / count;
      // A comparison rather than Math.max so that a NaN variance stays NaN either way.
      scale = scaleByStd ? 1 / Math.sqrt(variance < eps ? eps : variance) : 1;
      break;
    }
    case 'cleanrl': {
      requireCount(count, 2, op);
      center = sum / count;
      const variance = sumSquares(x, m, center) / (count - 1);
      scale = 1 / (Math.sqrt(variance) + eps);
      break;
    }
    default:
      throw new RangeError(`${op}: unknown preset '${String(preset)}'`);
  }
  const shift = shiftMean ? 0 : center;
  for (let i = 0; i < n; ++i) out[i] = (x[i] - center) * scale + shift;
  return out;
}
