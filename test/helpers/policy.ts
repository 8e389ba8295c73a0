// Helpers shared by the policy-gradient tests (logprobs, kl, policy-loss, value-loss,
// actor-loss): random logits and labels, log-ratios kept away from the PPO clip kinks, finite
// differences in float64 (on the references) and in float32 (on the ops' own losses), scaled
// comparisons and a check that an Async form rejects instead of throwing.
import * as rl from '../../lib/index';
import { expectClose, expectRejection, randn, Rng, T, Tolerance } from './index';

/** An int32 tensor of the given shape. */
export function it32(values: number[] | Int32Array, shape?: number[]): rl.Tensor {
  return rl.tensor(values instanceof Int32Array ? values : Int32Array.from(values), shape);
}

/** n*V logits, normal with the given scale. */
export function randomLogits(r: Rng, n: number, V: number, scale = 2): Float32Array {
  const a = new Float32Array(n * V);
  for (let i = 0; i < a.length; ++i) a[i] = scale * randn(r);
  return a;
}

/** n labels in [0, V); each is `ignoreIndex` with probability pIgnore. */
export function randomLabels(r: Rng, n: number, V: number, pIgnore = 0, ignoreIndex = -100): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; ++i) a[i] = r() < pIgnore ? ignoreIndex : Math.min(V - 1, Math.floor(r() * V));
  return a;
}

/**
 * A log-ratio d = lp - old kept well away from the kinks of the clipped PPO loss with clip 0.2
 * (r = 0.8, 1.2) and the dual clip c = 3 (r = 3): inside the trust region, above it, below it,
 * or (with `far`) beyond the dual clip. Each band leaves at least 3% of r to the nearest kink.
 */
export function kinkFreeLogRatio(r: Rng, far = false): number {
  const bands: [number, number][] = [[-0.1, 0.1], [0.3, 0.8], [-0.8, -0.4]];
  if (far) bands.push([1.3, 2]);
  const [lo, hi] = bands[Math.floor(r() * bands.length)];
  return lo + (hi - lo) * r();
}

/** A [B] or [B*n] array of advantages kept away from 0 (|A| in [0.2, 2], random sign). */
export function advantagesAwayFromZero(r: Rng, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; ++i) a[i] = (r() < 0.5 ? -1 : 1) * (0.2 + 1.8 * r());
  return a;
}

/** Central differences of f at x in float64: (f(x + h e_i) - f(x - h e_i)) / 2h for each i. */
export function finiteDifferences(f: (x: Float64Array) => number, x: ArrayLike<number>, h = 1e-6, indices?: number[]): Float64Array {
  const base = Float64Array.from(x);
  const out = new Float64Array(base.length);
  for (const i of indices ?? base.keys()) {
    const xi = base[i];
    base[i] = xi + h;
    const up = f(base);
    base[i] = xi - h;
    const down = f(base);
    base[i] = xi;
    out[i] = (up - down) / (2 * h);
  }
  return out;
}

/**
 * Central differences of f at a float32 x, for an op's own loss: the steps are the float32
 * numbers nearest x_i +- h, and the quotient divides by the step actually taken.
 * Returns the estimates at `indices` (in that order).
 */
export function finiteDifferencesF32(f: (x: Float32Array) => number, x: Float32Array, h: number, indices: number[]): Float64Array {
  const base = Float32Array.from(x);
  const out = new Float64Array(indices.length);
  indices.forEach((i, k) => {
    const xi = base[i];
    base[i] = xi + h;
    const hi = base[i];
    const up = f(base);
    base[i] = xi - h;
    const lo = base[i];
    const down = f(base);
    base[i] = xi;
    out[k] = (up - down) / (hi - lo);
  });
  return out;
}

/** Picks `count` distinct indices of [0, n) (all of them when n <= count). */
export function sampleIndices(r: Rng, n: number, count: number): number[] {
  const all = [...Array(n).keys()];
  for (let i = n - 1; i > 0; --i) {
    const j = Math.floor(r() * (i + 1));
    [all[i], all[j]] = [all[j], all[i]];
  }
  return all.slice(0, Math.min(n, count)).sort((a, b) => a - b);
}

/** The largest finite |x|. */
export function maxAbs(x: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < x.length; ++i) if (Number.isFinite(x[i]) && Math.abs(x[i]) > m) m = Math.abs(x[i]);
  return m;
}

/**
 * expectClose with an absolute floor relative to the largest |want|: for gradients whose
 * entries span orders of magnitude, float32 rounding is relative to the largest term.
 */
export function expectCloseScaled(t: T, got: ArrayLike<number>, want: ArrayLike<number>, rtol: number, msg: string): boolean {
  return expectClose(t, got, want, { rtol, atol: rtol * maxAbs(want) }, msg);
}

/** The values at `indices`. */
export function pick(x: ArrayLike<number>, indices: number[]): number[] {
  return indices.map((i) => x[i]);
}

/** A float32 copy of a float64 array. */
export function toF32(x: ArrayLike<number>): Float32Array {
  return Float32Array.from(x);
}

/** A copy of a tensor's data of any dtype as numbers. */
export function values(x: rl.Tensor): number[] {
  return Array.from(x.dataSync() as ArrayLike<number>);
}

/**
 * Asserts that `call` returns a Promise that rejects with `cls` matching `message`, and does not
 * throw synchronously (a caller writing `fAsync(...).catch(handle)` must see every failure).
 */
export async function expectAsyncRejection(t: T, name: string, call: () => Promise<unknown>,
                                           cls: typeof TypeError | typeof RangeError, message: RegExp): Promise<void> {
  let p: unknown = null;
  let thrown: unknown = null;
  try {
    p = call();
  } catch (e) {
    thrown = e;
  }
  if (thrown !== null) {
    t.fail(`${name}: threw synchronously (${(thrown as Error).constructor.name}: ${(thrown as Error).message}) instead of returning a rejected Promise`);
    return;
  }
  t.ok(p instanceof Promise, `${name}: returned a Promise`);
  await expectRejection(t, () => p as Promise<unknown>, cls, message, undefined, `${name}: rejects`);
}

export const gradTol: Tolerance = { rtol: 1e-5 };
