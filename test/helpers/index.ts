// Shared test helpers: a seeded RNG and random tensors, tolerance and bit-exact comparisons that
// report the first bad index, error matchers, and scoped thread-count / CPU-path switches.
import * as rl from '../../lib/index';
import { native } from '../../lib/native';

/** The subset of a tap Test that the helpers use (kept structural so any tap version fits). */
/* eslint-disable @typescript-eslint/no-explicit-any */
export interface T {
  ok(cond: any, ...rest: any[]): unknown;
  fail(...rest: any[]): unknown;
  pass(...rest: any[]): unknown;
}
/* eslint-enable @typescript-eslint/no-explicit-any */

// --- random data ------------------------------------------------------------------------------

/** mulberry32: a small seeded generator of uniform floats in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let z = a;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  };
}

export type Rng = () => number;

/** Standard normal draws (Box-Muller). */
export function randn(r: Rng): number {
  const u = 1 - r();
  const v = r();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** n float32 values, normal with the given mean and standard deviation. */
export function randomFloats(r: Rng, n: number, std = 1, mean = 0): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; ++i) a[i] = mean + std * randn(r);
  return a;
}

/** n uniform float32 values in [lo, hi]. */
export function uniformFloats(r: Rng, n: number, lo: number, hi: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; ++i) a[i] = lo + (hi - lo) * r();
  return a;
}

/** n 0/1 flags, each 1 with probability p. */
export function randomFlags(r: Rng, n: number, p: number): Uint8Array {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; ++i) a[i] = r() < p ? 1 : 0;
  return a;
}

/**
 * A [B,T] response mask as RLHF batches have them: each row valid from a random start (prompt
 * left-padding) to a random end (right padding), with interior holes at probability `holes`.
 */
export function responseMask(r: Rng, B: number, T: number, holes = 0): Uint8Array {
  const m = new Uint8Array(B * T);
  for (let b = 0; b < B; ++b) {
    const start = Math.floor(r() * (T / 4));
    const end = start + Math.floor(r() * (T - start + 1));
    for (let t = start; t < end; ++t) m[b * T + t] = r() < holes ? 0 : 1;
  }
  return m;
}

export function f32(values: number[]): Float32Array {
  return Float32Array.from(values);
}

export function u8(values: number[]): Uint8Array {
  return Uint8Array.from(values);
}

/** A float32 tensor of the given shape over the given numbers. */
export function ft(values: number[] | Float32Array, shape?: number[]): rl.Tensor {
  return rl.tensor(values instanceof Float32Array ? values : Float32Array.from(values), shape);
}

/** A uint8 tensor of the given shape over the given numbers. */
export function mt(values: number[] | Uint8Array, shape?: number[]): rl.Tensor {
  return rl.tensor(values instanceof Uint8Array ? values : Uint8Array.from(values), shape);
}

/** The float32 data of a tensor (a copy-free view on the CPU). */
export function data(x: rl.Tensor): Float32Array {
  return x.dataSync() as Float32Array;
}

// --- comparisons ------------------------------------------------------------------------------

export interface Tolerance {
  /** Relative tolerance: |got - want| <= rtol * max(1, |want|) (default 1e-5). */
  rtol?: number;
  /** Absolute floor added to the bound (default 0). */
  atol?: number;
}

/**
 * Index of the first element where `got` and `want` differ by more than the tolerance, or -1.
 * NaN matches NaN only; +-Infinity matches only the same infinity.
 */
export function firstMismatch(got: ArrayLike<number>, want: ArrayLike<number>, tol: Tolerance = {}): number {
  const rtol = tol.rtol ?? 1e-5;
  const atol = tol.atol ?? 0;
  for (let i = 0; i < want.length; ++i) {
    const g = got[i];
    const w = want[i];
    if (Number.isNaN(w) || Number.isNaN(g)) {
      if (Number.isNaN(w) !== Number.isNaN(g)) return i;
      continue;
    }
    if (!Number.isFinite(w) || !Number.isFinite(g)) {
      if (g !== w) return i;
      continue;
    }
    if (!(Math.abs(g - w) <= rtol * Math.max(1, Math.abs(w)) + atol)) return i;
  }
  return -1;
}

/** Asserts element-wise closeness; on failure reports the first bad index and both values. */
export function expectClose(t: T, got: ArrayLike<number>, want: ArrayLike<number>, tol: Tolerance, msg: string): boolean {
  if (got.length !== want.length) {
    t.fail(`${msg}: length ${got.length}, expected ${want.length}`);
    return false;
  }
  const i = firstMismatch(got, want, tol);
  if (i >= 0) {
    let bad = 0;
    for (let j = i; j < want.length; ++j) if (firstMismatch([got[j]], [want[j]], tol) >= 0) ++bad;
    t.fail(`${msg}: first mismatch at index ${i}: got ${got[i]}, expected ${want[i]} ` +
      `(${bad} of ${want.length} elements outside rtol ${tol.rtol ?? 1e-5}, atol ${tol.atol ?? 0})`);
    return false;
  }
  t.pass(msg);
  return true;
}

/** A scalar version of expectClose. */
export function expectNear(t: T, got: number, want: number, tol: Tolerance, msg: string): boolean {
  const ok = firstMismatch([got], [want], tol) < 0;
  t.ok(ok, ok ? msg : `${msg}: got ${got}, expected ${want}`);
  return ok;
}

/** Asserts that two float32 arrays hold the same bits; reports the first differing index. */
export function expectBitIdentical(t: T, got: Float32Array, want: Float32Array, msg: string): boolean {
  if (got.length !== want.length) {
    t.fail(`${msg}: length ${got.length}, expected ${want.length}`);
    return false;
  }
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < a.length; ++i) {
    if (a[i] !== b[i]) {
      t.fail(`${msg}: first differing bits at index ${i}: ${got[i]} vs ${want[i]}`);
      return false;
    }
  }
  t.pass(msg);
  return true;
}

/** A copy of a tensor's float32 data (outputs are views that a later call may overwrite). */
export function snapshot(x: rl.Tensor): Float32Array {
  return Float32Array.from(x.dataSync() as Float32Array);
}

// --- errors -----------------------------------------------------------------------------------

type ErrorClass = new (...args: never[]) => Error;

function checkError(t: T, e: unknown, cls: ErrorClass, message: RegExp, code: string | undefined, what: string): boolean {
  if (!(e instanceof Error)) {
    t.fail(`${what}: threw a non-Error ${String(e)}`);
    return false;
  }
  // The exact class: a RangeError where a TypeError is expected is a failure, and vice versa.
  const exact = cls === Error ? !(e instanceof TypeError) && !(e instanceof RangeError) : e instanceof cls;
  const msgOk = message.test(e.message);
  const codeOk = code === undefined || (e as { code?: unknown }).code === code;
  const ok = exact && msgOk && codeOk;
  t.ok(ok, ok ? `${what}: ${e.constructor.name} ${JSON.stringify(e.message)}` :
    `${what}: expected ${cls.name}${code ? ` with code ${code}` : ''} matching ${message}, got ` +
    `${e.constructor.name}${(e as { code?: unknown }).code ? ` (code ${(e as { code?: unknown }).code})` : ''}: ${e.message}`);
  return ok;
}

/** Asserts that fn throws an instance of `cls` whose message matches `message` (and `code`). */
export function expectError(t: T, fn: () => unknown, cls: ErrorClass, message: RegExp, code?: string, what?: string): boolean {
  const label = what ?? `throws ${cls.name} ${message}`;
  try {
    fn();
  } catch (e) {
    return checkError(t, e, cls, message, code, label);
  }
  t.fail(`${label}: did not throw`);
  return false;
}

/** The Promise form of expectError: fn may throw synchronously or return a rejecting promise. */
export async function expectRejection(t: T, fn: () => Promise<unknown>, cls: ErrorClass, message: RegExp, code?: string, what?: string): Promise<boolean> {
  const label = what ?? `rejects with ${cls.name} ${message}`;
  try {
    await fn();
  } catch (e) {
    return checkError(t, e, cls, message, code, label);
  }
  t.fail(`${label}: did not reject`);
  return false;
}

// --- runtime switches -------------------------------------------------------------------------

/** Runs fn with n CPU threads, restoring the previous count afterwards. */
export function withThreads<R>(n: number, fn: () => R): R {
  const before = rl.getNumThreads();
  rl.setNumThreads(n);
  try {
    return fn();
  } finally {
    rl.setNumThreads(before);
  }
}

export type CpuPath = 'auto' | 'baseline' | 'avx2' | 'reference';

/** Runs fn with the addon's CPU code path forced, restoring 'auto' afterwards. */
export function withCpuPath<R>(path: CpuPath, fn: () => R): R {
  native().setCpuPath(path);
  try {
    return fn();
  } finally {
    native().setCpuPath('auto');
  }
}

/** Every CPU path whose code differs on this machine: AVX2 only where AVX-512 is the active variant. */
export const cpuPaths: readonly CpuPath[] =
  rl.buildInfo().simd === 'avx512' ? ['auto', 'baseline', 'avx2', 'reference'] : ['auto', 'baseline', 'reference'];
/** The index in cpuPaths of the scalar reference path (the last): every path before it is a fast one. */
export const referencePath = cpuPaths.length - 1;

/** True when the addon sees a CUDA device. */
export function hasCuda(): boolean {
  return rl.backends().cuda.devices > 0;
}

/** tap's `skip` option for the CUDA subtests: false with a device, else the reason. */
export const cudaSkip: false | string = hasCuda() ? false : 'no CUDA device';

/** The op table's tolerance for an op's CUDA path against the reference. */
export function cudaTol(op: string): number {
  const row = rl.opTable().find((r) => r.name === op);
  if (row === undefined) throw new Error(`opTable has no ${op}`);
  return row.cudaTol;
}
