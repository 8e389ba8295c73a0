// Tensor: a shape, a dtype and a device over memory that is either a TypedArray (CPU, a
// zero-copy view of the caller's array) or a DeviceBuffer (CUDA, owned by the tensor).
import { RlhfError, describe, rangeError, typeError } from './errors';
import { HalfDtype, toHalfBits } from './half';
import { DeviceBuffer, HostRaw, Raw, native } from './native';

/** float16 and bfloat16 hold their bits in a Uint16Array (see lib/half.ts); CUDA computes on them. */
export type Dtype = 'float32' | 'int32' | 'uint8' | 'float16' | 'bfloat16';
/** A CPU tensor's memory: the host arrays the addon takes. */
export type TypedArray = HostRaw;
export type DeviceSpec = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;

/** dtype -> TypedArray constructor: the one table of the package's element types. */
export const arrayTypes = {
  float32: Float32Array,
  int32: Int32Array,
  uint8: Uint8Array,
  float16: Uint16Array,
  bfloat16: Uint16Array,
} as const;

function isHalf(d: Dtype): d is HalfDtype {
  return d === 'float16' || d === 'bfloat16';
}

/** The dtype of an array; a Uint16Array says nothing of which 16-bit float it holds: null. */
export function dtypeOf(a: TypedArray): Dtype | null {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof Uint8Array) return 'uint8';
  return null;
}

function isSupportedArray(a: unknown): a is TypedArray {
  return a instanceof Float32Array || a instanceof Int32Array || a instanceof Uint8Array || a instanceof Uint16Array;
}

/** A device as the addon numbers it: -1 for the CPU, else the CUDA ordinal. */
export type DeviceIndex = number;

/** Parses a device string; 'auto' is CUDA when compiled in and a GPU is present. */
export function parseDevice(device: unknown, op = 'tensor', arg = 'device'): DeviceIndex {
  if (device === undefined || device === 'cpu') return -1;
  if (device === 'auto') return native().backends().cuda.devices > 0 ? 0 : -1;
  if (typeof device !== 'string') throw typeError(op, arg, "'cpu', 'cuda', 'cuda:N' or 'auto'", device);
  const m = /^cuda(?::(\d+))?$/.exec(device);
  if (m === null) throw rangeError(op, arg, `must be 'cpu', 'cuda', 'cuda:N' or 'auto', not '${device}'`);
  const index = m[1] === undefined ? 0 : Number(m[1]);
  const b = native().backends().cuda;
  if (!b.compiled)
    throw new RlhfError('E_CUDA_UNAVAILABLE', `${op}: device '${device}' requested but rlhf-node was built without CUDA ` +
      '(rebuild with `RLHF_CUDA=1 npm run build` on a machine with nvcc)');
  if (index >= b.devices)
    throw new RlhfError('E_CUDA_UNAVAILABLE', `${op}: device '${device}' requested but this machine has ` +
      `${b.devices} CUDA device(s)`);
  return index;
}

export function deviceName(index: DeviceIndex): string {
  return index < 0 ? 'cpu' : `cuda:${index}`;
}

function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function checkShape(shape: unknown, op: string): readonly number[] {
  if (!Array.isArray(shape)) throw typeError(op, 'shape', 'an array of non-negative integers', shape);
  for (const d of shape)
    if (!Number.isSafeInteger(d) || d < 0)
      throw rangeError(op, 'shape', `must hold non-negative integers, but holds ${describe(d)}`);
  return Object.freeze(shape.slice());
}

function detachedError(op: string, arg: string, size: number): RlhfError {
  return new RlhfError('E_DETACHED', `${op}: \`${arg}\` was detached: its ArrayBuffer was transferred (postMessage, ` +
    `structuredClone or transfer()), so it no longer holds its ${size} elements`);
}

export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: Dtype;
  readonly size: number;
  /** -1 for the CPU, else the CUDA ordinal. */
  readonly deviceIndex: DeviceIndex;
  #host: TypedArray | null;
  #buffer: DeviceBuffer | null;
  #disposed = false;

  /** @internal Use rl.tensor(). */
  constructor(shape: readonly number[], dtype: Dtype, deviceIndex: DeviceIndex, host: TypedArray | null,
              buffer: DeviceBuffer | null) {
    this.shape = shape;
    this.dtype = dtype;
    this.size = sizeOf(shape);
    this.deviceIndex = deviceIndex;
    this.#host = host;
    this.#buffer = buffer;
  }

  get device(): string {
    return deviceName(this.deviceIndex);
  }

  get isDisposed(): boolean {
    return this.#disposed;
  }

  /** @internal The memory as the addon takes it; throws E_DISPOSED after dispose(). */
  raw(op: string, arg: string): Raw {
    if (this.#disposed) throw new RlhfError('E_DISPOSED', `${op}: \`${arg}\` has been disposed`);
    if (this.#host !== null) {
      // A transferred ArrayBuffer leaves a zero-length view behind: the tensor would silently
      // read as empty.
      if (this.#host.length !== this.size) throw detachedError(op, arg, this.size);
      return this.#host;
    }
    return this.#buffer as DeviceBuffer;
  }

  /** CPU: the zero-copy view. CUDA: a blocking copy to a new TypedArray. */
  dataSync(): TypedArray {
    const raw = this.raw('dataSync', 'tensor');
    if (this.#host !== null) return this.#host;
    const host = withHugePages(ownHostArray(this.dtype, this.size));
    (raw as DeviceBuffer).copyToHost(host);
    return host;
  }

  /** The data on the host, from any device. */
  async data(): Promise<TypedArray> {
    return this.dataSync();
  }

  /** This tensor on another device: a copy, or this tensor itself when it is already there. */
  to(device: DeviceSpec): Tensor {
    const target = parseDevice(device, 'to', 'device');
    this.raw('to', 'tensor');
    if (target === this.deviceIndex) return this;
    if (target < 0) return new Tensor(this.shape, this.dtype, -1, this.dataSync(), null);
    const host = this.#host ?? this.dataSync();
    return uploadTensor(host, this.shape, this.dtype, target);
  }

  /** Frees device memory now (CPU tensors just become unusable). Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#buffer?.dispose();
    this.#buffer = null;
    this.#host = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device})`;
  }
}

function uploadTensor(host: TypedArray, shape: readonly number[], dtype: Dtype, device: DeviceIndex): Tensor {
  const buffer = new (native().DeviceBuffer)(host.byteLength, device);
  buffer.copyFromHost(host);
  return new Tensor(shape, dtype, device, null, buffer);
}

// Small host outputs are carved from a shared slab, as Node's Buffer pool does: a new
// ArrayBuffer costs more than the kernel of a small op. Each region is handed out once, so it
// starts zeroed like a new array; regions start on 32-byte boundaries (whole SIMD vectors).
const kSlabBytes = 64 * 1024;
const kPooledMaxBytes = 4096;
let slab: ArrayBuffer | null = null;
let slabOffset = 0;

/** @internal A zeroed host array of `size` elements of `dtype`. */
export function hostArray(dtype: Dtype, size: number): TypedArray {
  const Ctor = arrayTypes[dtype];
  const bytes = size * Ctor.BYTES_PER_ELEMENT;
  if (bytes === 0 || bytes > kPooledMaxBytes) return new Ctor(size);
  const rounded = (bytes + 31) & ~31;
  if (slab === null || slabOffset + rounded > kSlabBytes) {
    slab = new ArrayBuffer(kSlabBytes);
    slabOffset = 0;
  }
  const a = new Ctor(slab, slabOffset, size);
  slabOffset += rounded;
  return a;
}

// Host outputs from this size up start where the kernels stream them best beside the arrays
// read with them (placedFloats): where the heap puts them, an output a little ahead of an input
// in its page makes loads wait on stores, and the kernels fall back to slower paths. The page
// this costs is a quarter of a percent of the array at most.
const kPlacedMinBytes = 1 << 20;

// From this size up, an op's new output is not zeroed first: its kernel writes every element
// (the tests run with RLHF_POISON_OUTPUTS=1, which fills every new output, of any size, with NaN
// or 0xff bytes before its kernel runs). A zeroed array of this size often comes back from the C
// heap already mapped, and calloc then clears it on the calling thread before the kernel writes
// it again: token GAE [4096,1024] with new outputs, alternated in one process, took 3.1 ms
// zeroed and 2.5 ms uninitialised (1.6 ms into reused outputs).
const kUninitialisedMinBytes = 1 << 20;
const poisonOutputs = process.env.RLHF_POISON_OUTPUTS === '1';

/** @internal A zeroed Float32Array of `size` that starts where native().placeShift says. */
export function placedFloats(size: number, readWith: readonly (TypedArray | null)[]): Float32Array {
  return placedIn(new ArrayBuffer(size * 4 + 4096), size, readWith);
}

function placedIn(buffer: ArrayBuffer, size: number, readWith: readonly (TypedArray | null)[]): Float32Array {
  return new Float32Array(buffer, native().placeShift(buffer, [...readWith]), size);
}

// Memory whose contents are whatever was there: Node's allocator skips the clearing for it. Never
// from Node's Buffer pool, so the buffer is the array's alone.
function uninitialisedBytes(bytes: number): ArrayBuffer {
  return Buffer.allocUnsafeSlow(bytes).buffer as ArrayBuffer;
}

// An array on a buffer of its own, uninitialised from 1 MiB up, for a kernel or a copy (dataSync
// of a device tensor) that writes it whole.
function ownHostArray(dtype: Dtype, size: number): TypedArray {
  const Ctor = arrayTypes[dtype];
  const bytes = size * Ctor.BYTES_PER_ELEMENT;
  return bytes >= kUninitialisedMinBytes ? new Ctor(uninitialisedBytes(bytes), 0, size) : new Ctor(size);
}

// A new host array of `size`: zeroed, or with undefined contents where it is large enough for that
// to matter; float32 ones of 1 MiB or more placed beside `readWith` when given.
function newHostArray(dtype: Dtype, size: number, readWith: readonly (TypedArray | null)[], zeroed: boolean): TypedArray {
  const bytes = size * arrayTypes[dtype].BYTES_PER_ELEMENT;
  const placed = dtype === 'float32' && bytes >= kPlacedMinBytes && readWith.length > 0;
  const cleared = zeroed || bytes < kUninitialisedMinBytes;
  if (placed) return cleared ? placedFloats(size, readWith) : placedIn(uninitialisedBytes(bytes + 4096), size, readWith);
  return cleared ? hostArray(dtype, size) : ownHostArray(dtype, size);
}

// From this size up, a new host array asks for huge pages before its first write (host_memory.h):
// the kernel that fills it then takes a page fault every 2 MiB instead of every 4 KiB.
const kHugePagesMinBytes = 4 << 20;

function withHugePages<A extends TypedArray>(a: A): A {
  if (a.byteLength >= kHugePagesMinBytes) native().adviseHugePages(a.buffer as ArrayBuffer);
  return a;
}

// RLHF_POISON_OUTPUTS=1: what a kernel that left an element of its output unwritten would show.
function poisoned<A extends TypedArray>(a: A): A {
  if (poisonOutputs) {
    if (a instanceof Float32Array) a.fill(NaN);
    else new Uint8Array(a.buffer, a.byteOffset, a.byteLength).fill(0xff);
  }
  return a;
}

/**
 * @internal A new tensor of zeros on the CPU (uninitialised on a GPU). A large float32 one on
 * the CPU is placed in its page for the kernel that writes it, beside `readWith`: the host arrays
 * that kernel reads in step with it, the one its lines align to first.
 */
export function emptyTensor(shape: readonly number[], dtype: Dtype, device: DeviceIndex,
                            readWith: readonly (TypedArray | null)[] = []): Tensor {
  return newTensor(shape, dtype, device, readWith, true);
}

/**
 * @internal A new output of an op, whose kernel writes every element: as emptyTensor, but a
 * large one on the CPU is not zeroed first.
 */
export function outputTensor(shape: readonly number[], dtype: Dtype, device: DeviceIndex,
                             readWith: readonly (TypedArray | null)[] = []): Tensor {
  return newTensor(shape, dtype, device, readWith, false);
}

function newTensor(shape: readonly number[], dtype: Dtype, device: DeviceIndex, readWith: readonly (TypedArray | null)[],
                   zeroed: boolean): Tensor {
  if (device < 0) {
    const host = withHugePages(newHostArray(dtype, sizeOf(shape), readWith, zeroed));
    return new Tensor(shape, dtype, -1, zeroed ? host : poisoned(host), null);
  }
  const bytes = sizeOf(shape) * arrayTypes[dtype].BYTES_PER_ELEMENT;
  return new Tensor(shape, dtype, device, null, new (native().DeviceBuffer)(bytes, device));
}

export interface TensorOptions {
  device?: DeviceSpec;
  dtype?: Dtype;
}

/**
 * A tensor over `data` with `shape`. A TypedArray of the tensor's dtype is viewed without a copy
 * on the CPU; a number[] is converted (dtype float32 unless given). For dtype 'float16' or
 * 'bfloat16', `data` is a Uint16Array of the bits (viewed), or a Float32Array / number[] of
 * values (rounded to nearest even into a new Uint16Array).
 */
export function tensor(data: TypedArray | number[], shape?: number[], opts: TensorOptions = {}): Tensor {
  const op = 'tensor';
  if (opts === null || typeof opts !== 'object') throw typeError(op, 'opts', 'an options object', opts);
  const { dtype } = opts;
  if (dtype !== undefined && !(typeof dtype === 'string' && dtype in arrayTypes))
    throw rangeError(op, 'dtype', `must be 'float32', 'int32', 'uint8', 'float16' or 'bfloat16', not ${describe(dtype)}`);
  let host: TypedArray;
  let dt: Dtype;
  if (Array.isArray(data)) {
    dt = dtype ?? 'float32';
    for (let i = 0; i < data.length; ++i)
      if (typeof data[i] !== 'number') throw typeError(op, 'data', 'an array of numbers', data[i]);
    host = isHalf(dt) ? toHalfBits(data, dt) : arrayTypes[dt].from(data);
  } else if (dtype !== undefined && isHalf(dtype) && data instanceof Float32Array) {
    dt = dtype;
    host = toHalfBits(data, dtype);
  } else if (isSupportedArray(data)) {
    const own = dtypeOf(data);
    if (own === null && (dtype === undefined || !isHalf(dtype)))
      throw typeError(op, 'data', "a Uint16Array only with dtype 'float16' or 'bfloat16' (it holds their bits)", data);
    if (own !== null && dtype !== undefined && own !== dtype)
      throw typeError(op, 'data', `a ${arrayTypes[dtype].name} for dtype '${dtype}'`, data);
    dt = own ?? (dtype as Dtype);
    host = data;
  } else {
    throw typeError(op, 'data', 'a Float32Array, Int32Array, Uint8Array, Uint16Array or number[]', data);
  }
  const s = shape === undefined ? [host.length] : checkShape(shape, op);
  if (sizeOf(s) !== host.length)
    throw rangeError(op, 'shape', `[${s.join(', ')}] holds ${sizeOf(s)} elements but \`data\` has ${host.length}`);
  const device = parseDevice(opts.device, op);
  if (device < 0) return new Tensor(Object.freeze(s.slice()), dt, -1, host, null);
  return uploadTensor(host, Object.freeze(s.slice()), dt, device);
}
