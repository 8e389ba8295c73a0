// Reading trainer configs: each option checked and named in the error, the default where unset.
import { rangeError, typeError } from '../errors';

export function intAtLeast(op: string, name: string, v: unknown, min: number, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw rangeError(op, name, `must be an integer >= ${min} but is ${String(v)}`);
  return v;
}

export function finiteAtLeast(op: string, name: string, v: unknown, min: number, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw rangeError(op, name, `must be a finite number >= ${min} but is ${String(v)}`);
  return v;
}

export function inUnitInterval(op: string, name: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw rangeError(op, name, `must be in [0, 1] but is ${String(v)}`);
  return v;
}

export function bool(op: string, name: string, v: unknown, fallback: boolean): boolean {
  if (v === undefined) return fallback;
  if (typeof v !== 'boolean') throw typeError(op, name, 'a boolean', v);
  return v;
}

export function seedOf(op: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff)
    throw rangeError(op, 'seed', `must be an integer in [0, 2^32) but is ${String(v)}`);
  return v;
}

export function pathOrNull(op: string, name: string, v: unknown): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string') throw typeError(op, name, 'a file path', v);
  return v;
}

/** Samples and tokens per second since `start` (process.hrtime.bigint()). */
export function throughput(start: bigint, samples: number, lengths: Int32Array): { samplesPerSecond: number; tokensPerSecond: number } {
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const tokens = lengths.reduce((a, b) => a + b, 0);
  return { samplesPerSecond: samples / seconds, tokensPerSecond: tokens / seconds };
}
