// safetensors checkpoints (https://github.com/huggingface/safetensors), written from the format's
// description: an 8-byte little-endian u64 header length N, N bytes of a JSON header
// {"__metadata__": {str: str}, "<name>": {"dtype", "shape", "data_offsets": [begin, end]}, ...},
// then the data section, each tensor row-major little-endian at its offsets (relative to the
// first byte after the header). The tensors cover the data section exactly: no gaps, no overlap.
//
// Saves are atomic: the file is written under a temporary name in the same directory, fsynced,
// renamed over the target and the directory fsynced, so a crash leaves the old checkpoint or
// the new one at `path`, never a torn one. Loads validate the whole header before reading data
// and copy each tensor into its own array (a typed array needs its element alignment, which
// the offsets in a file written by another tool need not give).
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import nodePath from 'node:path';

import { RlhfError, describe, rangeError, typeError } from '../errors';
import { DeviceSpec, Dtype, Tensor, TypedArray, arrayTypes, deviceName, parseDevice, tensor } from '../tensor';

/** dtype -> the format's name for it. */
const dtypeTags: Record<Dtype, string> = { float32: 'F32', int32: 'I32', uint8: 'U8', float16: 'F16', bfloat16: 'BF16' };
// A Map, not an object: a header's dtype string must not find Object.prototype members.
const dtypesByTag = new Map(Object.entries(dtypeTags).map(([d, tag]) => [tag, d as Dtype]));
const supportedTags = [...dtypesByTag.keys()].join(', ');

/** The Python library refuses headers larger than this, so a file we accept it can read too. */
const kMaxHeaderBytes = 100_000_000;
const kMetadataKey = '__metadata__';
const littleEndianHost = os.endianness() === 'LE';

export interface LoadSafetensorsOptions {
  /** Where the loaded tensors live (default 'cpu'). */
  device?: DeviceSpec;
}

export interface LoadedSafetensors {
  tensors: Record<string, Tensor>;
  metadata: Record<string, string>;
}

function itemSize(dtype: Dtype): number {
  return arrayTypes[dtype].BYTES_PER_ELEMENT;
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

/** The bytes of an array in little-endian order: the array's own bytes on a little-endian host. */
function littleEndianBytes(a: TypedArray): Uint8Array {
  const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (littleEndianHost || a.BYTES_PER_ELEMENT === 1) return bytes;
  const copy = Buffer.from(bytes);
  return a.BYTES_PER_ELEMENT === 2 ? copy.swap16() : copy.swap32();
}

/** Turns little-endian bytes read into `a` into host order, in place. */
function fromLittleEndian(a: TypedArray): void {
  if (littleEndianHost || a.BYTES_PER_ELEMENT === 1) return;
  const bytes = Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  if (a.BYTES_PER_ELEMENT === 2) bytes.swap16();
  else bytes.swap32();
}

/** A Node system error (it has an errno code) as E_IO naming the file; anything else unchanged. */
function ioError(op: string, verb: string, path: string, e: unknown): unknown {
  if (e instanceof RlhfError || typeof (e as { code?: unknown })?.code !== 'string') return e;
  return new RlhfError('E_IO', `${op}: cannot ${verb} '${path}': ${(e as Error).message}`);
}

// --- save -------------------------------------------------------------------------------------

interface SaveEntry {
  name: string;
  tensor: Tensor;
}

/** What a save writes: the padded header and the tensors in data-section order. */
interface SavePlan {
  header: Uint8Array;
  entries: SaveEntry[];
}

function checkPath(op: string, path: unknown): void {
  if (typeof path !== 'string' || path === '') throw typeError(op, 'path', 'a non-empty string', path);
}

function tensorEntries(op: string, tensors: unknown): SaveEntry[] {
  let pairs: [unknown, unknown][];
  if (tensors instanceof Map) pairs = [...tensors.entries()];
  else if (tensors !== null && typeof tensors === 'object' && !Array.isArray(tensors)) pairs = Object.entries(tensors);
  else throw typeError(op, 'tensors', 'a Record<string, Tensor> or a Map<string, Tensor>', tensors);
  return pairs.map(([name, t]) => {
    if (typeof name !== 'string') throw typeError(op, 'tensors', 'string names', name);
    if (name === '') throw rangeError(op, 'tensors', 'has an empty name');
    if (name.startsWith('__'))
      throw rangeError(op, 'tensors', `has the name '${name}': names starting with '__' are reserved for the header`);
    const arg = `tensors['${name}']`;
    if (!(t instanceof Tensor)) throw typeError(op, arg, 'a Tensor', t);
    t.raw(op, arg);  // throws E_DISPOSED now, before anything is written
    return { name, tensor: t };
  });
}

function checkMetadata(op: string, metadata: unknown): Record<string, string> | undefined {
  if (metadata === undefined) return undefined;
  if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata))
    throw typeError(op, 'metadata', 'a Record<string, string>', metadata);
  for (const [key, value] of Object.entries(metadata))
    if (typeof value !== 'string') throw typeError(op, `metadata['${key}']`, 'a string', value);
  return metadata as Record<string, string>;
}

/**
 * Orders tensors as the data section holds them: larger elements first, then by name (UTF-16
 * code units). The data section starts 8-byte aligned, so every tensor then starts at a
 * multiple of its element size, and a reader that maps the file can view it in place.
 */
function byAlignmentThenName(a: SaveEntry, b: SaveEntry): number {
  const bySize = itemSize(b.tensor.dtype) - itemSize(a.tensor.dtype);
  if (bySize !== 0) return bySize;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** The length prefix and JSON header, padded with spaces so the data section is 8-byte aligned. */
function encodeHeader(entries: SaveEntry[], metadata: Record<string, string> | undefined): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) header[kMetadataKey] = metadata;
  let offset = 0;
  for (const { name, tensor: t } of entries) {
    const end = offset + t.size * itemSize(t.dtype);
    header[name] = { dtype: dtypeTags[t.dtype], shape: [...t.shape], data_offsets: [offset, end] };
    offset = end;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const out = Buffer.alloc(8 + padded, 0x20);
  out.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(out, 8);
  return out;
}

function planSave(op: string, path: unknown, tensors: unknown, metadata: unknown): SavePlan {
  checkPath(op, path);
  const entries = tensorEntries(op, tensors).sort(byAlignmentThenName);
  return { header: encodeHeader(entries, checkMetadata(op, metadata)), entries };
}

/** The file's bytes, chunk by chunk; CUDA tensors are copied to the host one at a time. */
function* fileChunks(plan: SavePlan): Generator<Uint8Array> {
  yield plan.header;
  for (const { tensor: t } of plan.entries) if (t.size > 0) yield littleEndianBytes(t.dataSync());
}

function tempPath(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
}

// Directory fsync makes the rename durable. Some platforms and filesystems refuse to open or
// fsync a directory (Windows: EISDIR/EPERM; some Linux filesystems: EINVAL); that is no error.
const kDirSyncRefusals = new Set(['EISDIR', 'EPERM', 'EACCES', 'EINVAL']);

function isDirSyncRefusal(e: unknown): boolean {
  return kDirSyncRefusals.has((e as { code?: string })?.code ?? '');
}

function writeAllSync(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length;) done += fs.writeSync(fd, bytes, done, bytes.length - done);
}

function syncDirectorySync(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    if (!isDirSyncRefusal(e)) throw e;
  }
}

function removeQuietlySync(path: string): void {
  try {
    fs.unlinkSync(path);
  } catch {
    // Not removable: the save's own error is the one to report.
  }
}

/**
 * Saves tensors (any device; CUDA ones are copied to the host) and optional string metadata as
 * a safetensors file, atomically: `path` holds the old file or the complete new one, never a
 * partial one. Arguments are checked before anything is written.
 */
export function saveSafetensors(path: string, tensors: Record<string, Tensor> | Map<string, Tensor>,
                                metadata?: Record<string, string>): void {
  const op = 'saveSafetensors';
  const plan = planSave(op, path, tensors, metadata);
  const tmp = tempPath(path);
  let fd: number;
  try {
    fd = fs.openSync(tmp, 'wx');
  } catch (e) {
    throw ioError(op, 'save', path, e);
  }
  let renamed = false;
  try {
    try {
      for (const chunk of fileChunks(plan)) writeAllSync(fd, chunk);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, path);
    renamed = true;
    // Past the rename the new file is in place; an error now says only that it may not be durable.
    syncDirectorySync(nodePath.dirname(path));
  } catch (e) {
    if (!renamed) removeQuietlySync(tmp);
    throw ioError(op, 'save', path, e);
  }
}

async function writeAll(file: fs.promises.FileHandle, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;)
    done += (await file.write(bytes, done, bytes.length - done)).bytesWritten;
}

async function syncDirectory(dir: string): Promise<void> {
  try {
    const handle = await fs.promises.open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (e) {
    if (!isDirSyncRefusal(e)) throw e;
  }
}

async function removeQuietly(path: string): Promise<void> {
  await fs.promises.unlink(path).catch(() => undefined);
}

/**
 * The Promise form of saveSafetensors; same file, same atomicity. CPU tensors are read while
 * the promise is pending: do not write to them or dispose them until it settles.
 */
export async function saveSafetensorsAsync(path: string, tensors: Record<string, Tensor> | Map<string, Tensor>,
                                           metadata?: Record<string, string>): Promise<void> {
  const op = 'saveSafetensorsAsync';
  const plan = planSave(op, path, tensors, metadata);
  const tmp = tempPath(path);
  let file: fs.promises.FileHandle;
  try {
    file = await fs.promises.open(tmp, 'wx');
  } catch (e) {
    throw ioError(op, 'save', path, e);
  }
  let renamed = false;
  try {
    try {
      for (const chunk of fileChunks(plan)) await writeAll(file, chunk);
      await file.sync();
    } finally {
      await file.close();
    }
    await fs.promises.rename(tmp, path);
    renamed = true;
    await syncDirectory(nodePath.dirname(path));
  } catch (e) {
    if (!renamed) await removeQuietly(tmp);
    throw ioError(op, 'save', path, e);
  }
}

// --- load -------------------------------------------------------------------------------------

interface LoadEntry {
  name: string;
  dtype: Dtype;
  shape: number[];
  begin: number;
  end: number;
}

/** A validated header: where the data section starts and what it holds. */
interface Layout {
  dataStart: number;
  entries: LoadEntry[];
  metadata: Record<string, string>;
}

function formatError(op: string, path: string, problem: string): RlhfError {
  return new RlhfError('E_FORMAT', `${op}: '${path}' is not a valid safetensors file: ${problem}`);
}

function checkLoadArgs(op: string, path: unknown, opts: unknown): number {
  checkPath(op, path);
  if (opts === null || typeof opts !== 'object') throw typeError(op, 'opts', 'an options object', opts);
  return parseDevice((opts as LoadSafetensorsOptions).device, op, 'opts.device');
}

/** The header length from the first 8 bytes, checked against the file size and the limit. */
function headerLength(op: string, path: string, fileSize: number, prefix: Uint8Array): number {
  const n = Buffer.from(prefix.buffer, prefix.byteOffset, 8).readBigUInt64LE(0);
  if (n > BigInt(kMaxHeaderBytes))
    throw formatError(op, path, `the header length ${n} exceeds the limit of ${kMaxHeaderBytes} bytes`);
  if (n > BigInt(fileSize - 8))
    throw formatError(op, path, `the header length ${n} is larger than the ${fileSize - 8} bytes after it`);
  return Number(n);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

function decodeHeader(op: string, path: string, bytes: Uint8Array): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw formatError(op, path, 'the header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw formatError(op, path, `the header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(header)) throw formatError(op, path, `the header is ${describe(header)}, not a JSON object`);
  return header;
}

function parseMetadata(op: string, path: string, value: unknown): Record<string, string> {
  if (!isPlainObject(value)) throw formatError(op, path, `${kMetadataKey} is ${describe(value)}, not an object`);
  for (const [key, v] of Object.entries(value))
    if (typeof v !== 'string') throw formatError(op, path, `${kMetadataKey} value '${key}' is ${describe(v)}, not a string`);
  // fromEntries defines own properties: a key '__proto__' stays a key.
  return Object.fromEntries(Object.entries(value)) as Record<string, string>;
}

/** One tensor's entry, each field checked; data_offsets must span exactly shape * itemsize. */
function parseEntry(op: string, path: string, name: string, value: unknown, dataBytes: number): LoadEntry {
  const bad = (problem: string) => formatError(op, path, `tensor '${name}' ${problem}`);
  if (!isPlainObject(value)) throw bad(`is ${describe(value)}, not an object`);
  for (const key of ['dtype', 'shape', 'data_offsets'])
    if (!(key in value)) throw bad(`has no \`${key}\``);
  const { dtype: tag, shape, data_offsets: offsets } = value;
  const dtype = typeof tag === 'string' ? dtypesByTag.get(tag) : undefined;
  if (dtype === undefined) throw bad(`has dtype ${describe(tag)}, which is not supported (supported: ${supportedTags})`);
  if (!Array.isArray(shape) || !shape.every(isCount))
    throw bad(`has shape ${JSON.stringify(shape)}, not an array of non-negative integers`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1])
    throw bad(`has data_offsets ${JSON.stringify(offsets)}, not [begin, end] with 0 <= begin <= end`);
  const [begin, end] = offsets as number[];
  const need = elementCount(shape) * itemSize(dtype);
  if (end - begin !== need)
    throw bad(`has data_offsets [${begin}, ${end}] (${end - begin} bytes) but shape [${shape.join(', ')}] of ${tag} ` +
      `needs ${need} bytes`);
  if (end > dataBytes)
    throw bad(`has data_offsets [${begin}, ${end}] beyond the ${dataBytes}-byte data section (the file is truncated?)`);
  return { name, dtype, shape, begin, end };
}

/** The spec's coverage rule: in offset order, each tensor starts where the previous one ends. */
function checkCoverage(op: string, path: string, entries: LoadEntry[], dataBytes: number): void {
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let end = 0;
  let previous = 'the data section starts at 0';
  for (const e of sorted) {
    if (e.begin < end)
      throw formatError(op, path, `tensor '${e.name}' starts at byte ${e.begin}, before ${previous}: tensor data overlaps`);
    if (e.begin > end)
      throw formatError(op, path, `tensor '${e.name}' starts at byte ${e.begin} but ${previous}: a gap in the data section`);
    end = e.end;
    previous = `tensor '${e.name}' ends at ${end}`;
  }
  if (end !== dataBytes)
    throw formatError(op, path, `the tensors cover ${end} bytes but the data section has ${dataBytes}: ` +
      `${dataBytes - end} trailing bytes belong to no tensor`);
}

function parseLayout(op: string, path: string, fileSize: number, headerBytes: Uint8Array): Layout {
  const header = decodeHeader(op, path, headerBytes);
  const dataStart = 8 + headerBytes.length;
  const dataBytes = fileSize - dataStart;
  let metadata: Record<string, string> = {};
  const entries: LoadEntry[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === kMetadataKey) metadata = parseMetadata(op, path, value);
    else entries.push(parseEntry(op, path, name, value, dataBytes));
  }
  checkCoverage(op, path, entries, dataBytes);
  return { dataStart, entries, metadata };
}

function hostArrayFor(entry: LoadEntry): TypedArray {
  return new arrayTypes[entry.dtype](elementCount(entry.shape));
}

function asBytes(a: TypedArray): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function toTensor(entry: LoadEntry, host: TypedArray, device: number): Tensor {
  fromLittleEndian(host);
  return tensor(host, entry.shape, { dtype: entry.dtype, device: deviceName(device) as DeviceSpec });
}

function loaded(layout: Layout, tensors: [string, Tensor][]): LoadedSafetensors {
  return { tensors: Object.fromEntries(tensors), metadata: layout.metadata };
}

function tooShort(op: string, path: string, size: number): RlhfError {
  return formatError(op, path, `it is ${size} bytes long, shorter than the 8-byte header length`);
}

/** Fills `into` from `position`; a short read means the file shrank since it was measured. */
function readExactSync(op: string, path: string, fd: number, into: Uint8Array, position: number): void {
  for (let done = 0; done < into.length;) {
    const n = fs.readSync(fd, into, done, into.length - done, position + done);
    if (n === 0) throw formatError(op, path, `it ends at byte ${position + done}, before the data it declares`);
    done += n;
  }
}

/**
 * Loads a safetensors file: its tensors (on `opts.device`, default the CPU; each in its own
 * array) and its metadata. The header is validated in full before any data is read; every
 * problem is an RlhfError with code E_FORMAT naming the file, and an unreadable file E_IO.
 */
export function loadSafetensors(path: string, opts: LoadSafetensorsOptions = {}): LoadedSafetensors {
  const op = 'loadSafetensors';
  const device = checkLoadArgs(op, path, opts);
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (e) {
    throw ioError(op, 'read', path, e);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) throw tooShort(op, path, size);
    const prefix = new Uint8Array(8);
    readExactSync(op, path, fd, prefix, 0);
    const headerBytes = new Uint8Array(headerLength(op, path, size, prefix));
    readExactSync(op, path, fd, headerBytes, 8);
    const layout = parseLayout(op, path, size, headerBytes);
    const tensors = layout.entries.map((e): [string, Tensor] => {
      const host = hostArrayFor(e);
      readExactSync(op, path, fd, asBytes(host), layout.dataStart + e.begin);
      return [e.name, toTensor(e, host, device)];
    });
    return loaded(layout, tensors);
  } catch (e) {
    throw ioError(op, 'read', path, e);
  } finally {
    fs.closeSync(fd);
  }
}

async function readExact(op: string, path: string, file: fs.promises.FileHandle, into: Uint8Array,
                         position: number): Promise<void> {
  for (let done = 0; done < into.length;) {
    const { bytesRead } = await file.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) throw formatError(op, path, `it ends at byte ${position + done}, before the data it declares`);
    done += bytesRead;
  }
}

/** The Promise form of loadSafetensors; same checks, same result. */
export async function loadSafetensorsAsync(path: string, opts: LoadSafetensorsOptions = {}): Promise<LoadedSafetensors> {
  const op = 'loadSafetensorsAsync';
  const device = checkLoadArgs(op, path, opts);
  let file: fs.promises.FileHandle;
  try {
    file = await fs.promises.open(path, 'r');
  } catch (e) {
    throw ioError(op, 'read', path, e);
  }
  try {
    const size = (await file.stat()).size;
    if (size < 8) throw tooShort(op, path, size);
    const prefix = new Uint8Array(8);
    await readExact(op, path, file, prefix, 0);
    const headerBytes = new Uint8Array(headerLength(op, path, size, prefix));
    await readExact(op, path, file, headerBytes, 8);
    const layout = parseLayout(op, path, size, headerBytes);
    const tensors: [string, Tensor][] = [];
    for (const e of layout.entries) {
      const host = hostArrayFor(e);
      await readExact(op, path, file, asBytes(host), layout.dataStart + e.begin);
      tensors.push([e.name, toTensor(e, host, device)]);
    }
    return loaded(layout, tensors);
  } catch (e) {
    throw ioError(op, 'read', path, e);
  } finally {
    await file.close();
  }
}
