// Argument checks shared by every op. They run before the addon is called, so that a mistake
// is reported in the caller's terms (op, argument, expected, received); the addon re-checks.
import { describe, rangeError, typeError } from './errors';
import { Raw, native } from './native';
import { Dtype, DeviceIndex, Tensor, TypedArray, arrayTypes, deviceName, outputTensor } from './tensor';

/** An array argument resolved to what the addon takes. */
export interface Arg {
  name: string;
  raw: Raw;
  shape: readonly number[];
  size: number;
  device: DeviceIndex;
  tensor: Tensor | null;
}

const expectedKind: Record<Dtype, string> = {
  float32: 'a float32 Tensor or a Float32Array',
  int32: 'an int32 Tensor or an Int32Array',
  uint8: 'a uint8 Tensor or a Uint8Array',
  float16: 'a float16 Tensor',
  bfloat16: 'a bfloat16 Tensor',
};

/** Reads a Tensor, or a TypedArray taken as 1-D, of the given dtype. */
export function arg(op: string, name: string, v: unknown, dtype: Dtype): Arg {
  if (v instanceof Tensor) {
    if (v.dtype !== dtype) throw typeError(op, name, expectedKind[dtype], v);
    return { name, raw: v.raw(op, name), shape: v.shape, size: v.size, device: v.deviceIndex, tensor: v };
  }
  if (v instanceof arrayTypes[dtype]) {
    const a = v as TypedArray;
    return { name, raw: a, shape: [a.length], size: a.length, device: -1, tensor: null };
  }
  throw typeError(op, name, expectedKind[dtype], v);
}

export function optionalArg(op: string, name: string, v: unknown, dtype: Dtype): Arg | null {
  return v === undefined || v === null ? null : arg(op, name, v, dtype);
}

function equalShapes(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; ++i) if (a[i] !== b[i]) return false;
  return true;
}

export function sameShape(op: string, a: Arg, b: Arg | null): void {
  if (b === null) return;
  if (!equalShapes(a.shape, b.shape))
    throw rangeError(op, b.name, `must have the shape of \`${a.name}\` [${a.shape.join(', ')}] but has [${b.shape.join(', ')}]`);
}

export function requireSize(op: string, a: Arg | null, size: number, what: string): void {
  if (a !== null && a.size !== size) throw rangeError(op, a.name, `must hold ${what} but holds ${a.size} elements`);
}

/** The one device of all present args; mixed devices are a RangeError naming both. */
export function commonDevice(op: string, args: (Arg | null)[]): DeviceIndex {
  let first: Arg | null = null;
  for (const a of args) {
    if (a === null) continue;
    if (first === null) first = a;
    else if (a.device !== first.device)
      throw rangeError(op, a.name, `is on ${deviceName(a.device)} but \`${first.name}\` is on ${deviceName(first.device)}: all tensors must be on one device`);
  }
  return first === null ? -1 : first.device;
}

/**
 * The names an object argument of an op may have, every one of T's and no other: written as
 * `keysOf<T>({ a: true, b: true })`, the compiler checks the list against T both ways.
 */
export function keysOf<T>(keys: Record<keyof Required<T>, true>): readonly string[] {
  return Object.keys(keys);
}

// A name an op does not take is a mistake it would otherwise pass over in silence: a misspelt
// option (`clip_low` for `clipLow`) left at its default, a misspelt optional input (`masks`)
// left out. A RangeError naming it, as for any value outside what the argument takes.
function onlyKeys(op: string, name: string, v: object, keys: readonly string[], kind: string): void {
  for (const k in v) {
    if (!keys.includes(k)) {
      const path = name === 'options' || name === 'inputs' ? k : `${name}.${k}`;
      throw rangeError(op, path, `is not ${kind} (they are: ${keys.join(', ')})`);
    }
  }
}

/** The object of tensors an op takes as its first argument, with no name but `keys`. */
export function inputsObject<T>(op: string, v: unknown, keys: readonly string[]): T {
  if (v === null || typeof v !== 'object') throw typeError(op, 'inputs', 'an object of tensors', v);
  onlyKeys(op, 'inputs', v, keys, 'an input');
  return v as T;
}

/** An options object (or undefined: every option at its default), with no name but `keys`. */
export function options<T extends object>(op: string, v: unknown, keys: readonly string[], name = 'options',
                                          what = 'an options object'): Partial<T> {
  if (v === undefined) return {};
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw typeError(op, name, what, v);
  onlyKeys(op, name, v, keys, name === 'out' ? 'an output' : 'an option');
  return v as Partial<T>;
}

/** A finite number in [lo, hi], or `fallback` when undefined. */
export function numberIn(op: string, name: string, v: unknown, lo: number, hi: number, fallback?: number): number {
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== 'number') throw typeError(op, name, `a number in [${lo}, ${hi}]`, v);
  if (!(v >= lo && v <= hi)) throw rangeError(op, name, `must be in [${lo}, ${hi}] but is ${v}`);
  return v;
}

export function booleanOr(op: string, name: string, v: unknown, fallback: boolean): boolean {
  if (v === undefined) return fallback;
  if (typeof v !== 'boolean') throw typeError(op, name, 'a boolean', v);
  return v;
}

/** One of `choices`, or `fallback` when undefined. */
export function choice<C extends string>(op: string, name: string, v: unknown, choices: readonly C[], fallback: C): C {
  if (v === undefined) return fallback;
  if (typeof v !== 'string' || !(choices as readonly string[]).includes(v))
    throw rangeError(op, name, `must be one of ${choices.map((c) => `'${c}'`).join(', ')}, not ${describe(v)}`);
  return v as C;
}

/**
 * An output: the caller's `out` tensor (checked) or a new one on `device`, placed in memory for
 * the kernel beside `readWith`, the inputs it reads in step with this output (see outputTensor).
 */
export function output(op: string, name: string, out: unknown, shape: readonly number[], device: DeviceIndex,
                       readWith: readonly (Arg | null)[] = []): Tensor {
  if (out === undefined || out === null) return outputTensor(shape, 'float32', device, hostArrays(readWith));
  return checkedOut(op, name, out, shape, device);
}

/** Two outputs of one shape (small new CPU outputs come from the shared slab of hostArray). */
export function outputPair(op: string, names: [string, string], outs: [unknown, unknown], shape: readonly number[],
                           device: DeviceIndex, readWith: readonly (Arg | null)[] = []): [Tensor, Tensor] {
  return [output(op, names[0], outs[0], shape, device, readWith), output(op, names[1], outs[1], shape, device, readWith)];
}

function hostArrays(args: readonly (Arg | null)[]): TypedArray[] {
  const arrays: TypedArray[] = [];
  for (const a of args) if (a !== null && a.device < 0) arrays.push(a.raw as TypedArray);
  return arrays;
}

function checkedOut(op: string, name: string, out: unknown, shape: readonly number[], device: DeviceIndex): Tensor {
  const a = arg(op, name, out, 'float32');
  if (a.tensor === null) throw typeError(op, name, 'a float32 Tensor', out);
  if (a.device !== device) throw rangeError(op, name, `is on ${deviceName(a.device)} but the inputs are on ${deviceName(device)}`);
  if (!equalShapes(a.shape, shape))
    throw rangeError(op, name, `must have shape [${shape.join(', ')}] but has [${a.shape.join(', ')}]`);
  return a.tensor;
}

/** The checkFinite option: a RangeError naming the op, the argument and the first bad index. */
export function checkFinite(op: string, args: (Arg | null)[]): void {
  for (const a of args) {
    if (a === null || (a.tensor !== null && a.tensor.dtype !== 'float32') || (a.tensor === null && !(a.raw instanceof Float32Array))) continue;
    const i = native().firstNonFinite(a.raw);
    if (i >= 0) throw rangeError(op, a.name, `has a non-finite value at index ${i} (checkFinite)`);
  }
}

/** The shape [rows, cols] of a 2-D argument; a 1-D one is one row or one column as `oneD` says. */
export function matrixShape(op: string, a: Arg, oneD: 'column' | 'row'): [number, number] {
  if (a.shape.length === 2) return [a.shape[0], a.shape[1]];
  if (a.shape.length === 1) return oneD === 'column' ? [a.shape[0], 1] : [1, a.shape[0]];
  throw rangeError(op, a.name, `must be 1-D or 2-D but has shape [${a.shape.join(', ')}]`);
}

