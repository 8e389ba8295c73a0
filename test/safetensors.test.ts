// safetensors checkpoints: bit-exact round trips of every dtype, the byte layout of a known file,
// strict rejection of corrupt files, atomic saves (a failed save leaves the old file and no
// temporary), the Promise forms, and cross-checks against Python (the safetensors package when
// importable, and an independent struct + json + numpy parser).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';

import * as rl from '../lib/index';
import { float16Value, bfloat16Value } from '../lib/half';
import { TypedArray } from '../lib/tensor';
import { T, expectError, expectRejection, hasCuda } from './helpers/index';

// --- fixtures ---------------------------------------------------------------------------------

/** A fresh directory, removed when the test ends. */
function tempDir(tt: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlhf-safetensors-'));
  tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function f32FromBits(bits: number[]): Float32Array {
  return new Float32Array(Uint32Array.from(bits).buffer);
}

/**
 * One tensor of every dtype with the awkward values: NaN payloads (quiet and signalling, both
 * signs), -0, infinities, denormals, integer extremes; and scalar, empty and 2-D empty shapes.
 */
function sampleTensors(): Record<string, rl.Tensor> {
  return {
    f32: rl.tensor(f32FromBits([0x3fc00000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00001, 0x7f800001, 0xffffffff,
      0x00000001]), [2, 4]),
    i32: rl.tensor(Int32Array.from([-2147483648, 2147483647, 0, -1, 7, 42]), [3, 2]),
    u8: rl.tensor(Uint8Array.from({ length: 256 }, (_, i) => i), [16, 16]),
    f16: rl.tensor(Uint16Array.from([0x3c00, 0x8000, 0x7c00, 0xfc00, 0x7e01, 0x7c01, 0x0001, 0x7bff]), [8],
      { dtype: 'float16' }),
    bf16: rl.tensor(Uint16Array.from([0x3f80, 0x8000, 0x7f80, 0xff80, 0x7fc1, 0x7f81, 0x0001, 0xff7f]), [2, 2, 2],
      { dtype: 'bfloat16' }),
    'model.layers.0.größe': rl.tensor(f32FromBits([0x40490fdb]), []),
    empty: rl.tensor(new Float32Array(0), [0]),
    empty2d: rl.tensor(new Int32Array(0), [2, 0]),
  };
}

const sampleMetadata = { format: 'pt', step: '1200', note: 'ünïcode, "quotes" and {braces}' };

function bytesOf(a: TypedArray | Uint8Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Asserts equal bytes, reporting the first differing byte. */
function expectSameBytes(tt: T, got: Uint8Array, want: Uint8Array, msg: string): void {
  const n = Math.min(got.length, want.length);
  let i = 0;
  while (i < n && got[i] === want[i]) ++i;
  if (i === n && got.length === want.length) tt.pass(msg);
  else tt.fail(`${msg}: first difference at byte ${i} of ${got.length} (expected ${want.length} bytes)`);
}

/** Asserts two tensor sets hold the same names, dtypes, shapes and bits. */
function expectSameTensors(tt: tap.Test, got: Record<string, rl.Tensor>, want: Record<string, rl.Tensor>): void {
  tt.strictSame(Object.keys(got).sort(), Object.keys(want).sort(), 'same tensor names');
  for (const [name, w] of Object.entries(want)) {
    const g = got[name];
    if (g === undefined) continue;
    tt.equal(g.dtype, w.dtype, `${name}: dtype`);
    tt.strictSame([...g.shape], [...w.shape], `${name}: shape`);
    expectSameBytes(tt, bytesOf(g.dataSync()), bytesOf(w.dataSync()), `${name}: bit-exact data`);
  }
}

/** A file from a header (an object, JSON text or raw bytes) and a data section, padded as a writer pads. */
function buildFile(header: object | string | Buffer, data: Uint8Array = new Uint8Array(0)): Buffer {
  let json = Buffer.isBuffer(header) ? header : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([prefix, json, data]);
}

/** The header and data section of a file. */
function splitFile(file: Buffer): { header: Record<string, unknown>; data: Buffer } {
  const n = Number(file.readBigUInt64LE(0));
  return { header: JSON.parse(file.subarray(8, 8 + n).toString('utf8')), data: file.subarray(8 + n) };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Header = Record<string, any>;

/** The file at `p` with its header JSON edited (the data section kept as it is). */
function editHeader(p: string, edit: (h: Header) => void): Buffer {
  const { header, data } = splitFile(fs.readFileSync(p));
  edit(header);
  return buildFile(header, data);
}

/** A good two-tensor file (a: F32 [2,2] at [0,16], b: U8 [3] at [16,19]) to corrupt. */
function goodFile(dir: string): string {
  const p = path.join(dir, 'good.safetensors');
  rl.saveSafetensors(p, { a: rl.tensor([1, 2, 3, 4], [2, 2]), b: rl.tensor(Uint8Array.from([7, 8, 9])) }, { k: 'v' });
  return p;
}

function leftovers(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => f.includes('.tmp-'));
}

// --- round trips ------------------------------------------------------------------------------

t.test('round trip is bit-exact for every dtype, NaN payloads, -0, scalars, empty shapes and metadata', async (t) => {
  const dir = tempDir(t);
  const p = path.join(dir, 'all.safetensors');
  const want = sampleTensors();
  rl.saveSafetensors(p, want, sampleMetadata);
  const got = rl.loadSafetensors(p);
  expectSameTensors(t, got.tensors, want);
  t.strictSame(got.metadata, sampleMetadata, 'metadata round trips');
  for (const [name, x] of Object.entries(got.tensors)) {
    const a = x.dataSync();
    t.ok(a.byteOffset === 0 && a.buffer.byteLength === a.byteLength, `${name}: loaded into its own array`);
    t.equal(x.device, 'cpu', `${name}: on the CPU by default`);
  }
});

t.test('a Map of tensors saves like a Record; no metadata loads as {} and writes no __metadata__', async (t) => {
  const dir = tempDir(t);
  const fromRecord = path.join(dir, 'record.safetensors');
  const fromMap = path.join(dir, 'map.safetensors');
  rl.saveSafetensors(fromRecord, sampleTensors());
  rl.saveSafetensors(fromMap, new Map(Object.entries(sampleTensors())));
  expectSameBytes(t, fs.readFileSync(fromMap), fs.readFileSync(fromRecord), 'same bytes from a Map and a Record');
  t.notOk('__metadata__' in splitFile(fs.readFileSync(fromRecord)).header, 'no __metadata__ key');
  t.strictSame(rl.loadSafetensors(fromRecord).metadata, {});
});

t.test('no tensors at all is a valid file: the header {} padded to 8 bytes', async (t) => {
  const dir = tempDir(t);
  const p = path.join(dir, 'empty.safetensors');
  rl.saveSafetensors(p, {});
  expectSameBytes(t, fs.readFileSync(p), Buffer.from('0800000000000000' + '7b7d202020202020', 'hex'), 'bytes');
  t.strictSame(rl.loadSafetensors(p), { tensors: {}, metadata: {} });
});

t.test('saving over an existing checkpoint replaces it', async (t) => {
  const dir = tempDir(t);
  const p = path.join(dir, 'ckpt.safetensors');
  rl.saveSafetensors(p, { w: rl.tensor([1, 2]) });
  rl.saveSafetensors(p, { w: rl.tensor([3, 4, 5]) });
  t.strictSame([...rl.loadSafetensors(p).tensors.w.dataSync()], [3, 4, 5]);
  t.strictSame(leftovers(dir), []);
});

// --- byte layout ------------------------------------------------------------------------------

t.test('the bytes of a small file equal the layout computed by hand from the format description', async (t) => {
  const dir = tempDir(t);
  const p = path.join(dir, 'known.safetensors');
  // 'b' (F32) is written before 'a' (U8): larger elements first, then by name.
  rl.saveSafetensors(p, { a: rl.tensor(Uint8Array.from([1, 2, 3])), b: rl.tensor([1, -2]) }, { format: 'pt' });
  // Counted by hand: {"__metadata__":{"format":"pt"},  is 32 bytes; each tensor entry is 53 with
  // its separator: 138 bytes, padded with 6 spaces to 144 (0x90) so the data starts at 152 = 8 * 19.
  const json = '{"__metadata__":{"format":"pt"},' +
    '"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
    '"a":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}}';
  t.equal(json.length, 138, 'the hand count of the JSON');
  const want = Buffer.concat([
    Buffer.from('9000000000000000', 'hex'),  // u64 LE 144
    Buffer.from(json + '      ', 'latin1'),
    Buffer.from('0000803f' + '000000c0', 'hex'),  // 1.0f, -2.0f little-endian
    Buffer.from('010203', 'hex'),
  ]);
  t.equal(want.length, 163);
  expectSameBytes(t, fs.readFileSync(p), want, 'file bytes');
});

t.test('the data section starts 8-byte aligned whatever the header length, padded with spaces', async (t) => {
  const dir = tempDir(t);
  for (let len = 1; len <= 9; ++len) {
    const p = path.join(dir, `pad${len}.safetensors`);
    rl.saveSafetensors(p, { ['x'.repeat(len)]: rl.tensor([len]) });
    const file = fs.readFileSync(p);
    const n = Number(file.readBigUInt64LE(0));
    const text = file.subarray(8, 8 + n).toString('latin1');
    t.ok((8 + n) % 8 === 0 && /^\{.*\} {0,7}$/.test(text), `name of ${len} chars: header ${n} bytes, ends in spaces`);
  }
});

t.test('a file whose offsets leave a tensor unaligned loads: each tensor is copied into its own array', async (t) => {
  const dir = tempDir(t);
  const p = path.join(dir, 'unaligned.safetensors');
  // U8 [3] first, so the F32 data sits at byte 3 of the data section.
  const data = Buffer.concat([Buffer.from([5, 6, 7]), bytesOf(Float32Array.from([1.25, -3]))]);
  fs.writeFileSync(p, buildFile({
    m: { dtype: 'U8', shape: [3], data_offsets: [0, 3] },
    w: { dtype: 'F32', shape: [2], data_offsets: [3, 11] },
  }, data));
  const { tensors } = rl.loadSafetensors(p);
  t.strictSame([...tensors.w.dataSync()], [1.25, -3]);
  t.strictSame([...tensors.m.dataSync()], [5, 6, 7]);
  t.equal(tensors.w.dataSync().byteOffset % 4, 0, 'the Float32Array is 4-byte aligned');
});

// --- corrupt files ----------------------------------------------------------------------------

t.test('every corruption is an RlhfError E_FORMAT naming the file and the problem', async (t) => {
  const dir = tempDir(t);
  const good = goodFile(dir);
  const goodBytes = fs.readFileSync(good);
  const { data } = splitFile(goodBytes);
  const a = { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] };
  const b = { dtype: 'U8', shape: [3], data_offsets: [16, 19] };
  const cases: [string, Buffer, RegExp][] = [
    ['a file shorter than 8 bytes', Buffer.from([1, 2, 3, 4, 5]), /it is 5 bytes long, shorter than the 8-byte header length/],
    ['a header length larger than the file', Buffer.concat([Buffer.from('ff00000000000000', 'hex'), goodBytes.subarray(8)]),
      /the header length 255 is larger than the \d+ bytes after it/],
    ['a header length over the 100 MB limit', Buffer.concat([Buffer.from('01e1f50500000000', 'hex'), goodBytes.subarray(8)]),
      /the header length 100000001 exceeds the limit of 100000000 bytes/],
    ['a header length of 2^64 - 1', Buffer.concat([Buffer.from('ffffffffffffffff', 'hex'), goodBytes.subarray(8)]),
      /the header length 18446744073709551615 exceeds the limit/],
    ['a header that is not UTF-8', buildFile(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), /the header is not valid UTF-8/],
    ['a header that is not JSON', buildFile('{"a": {', data), /the header is not valid JSON/],
    ['a header that is a JSON array', buildFile('[1, 2]', data), /the header is an Array, not a JSON object/],
    ['a header that is JSON null', buildFile('null'), /the header is null, not a JSON object/],
    ['an entry without dtype', editHeader(good, (h) => delete h.a.dtype), /tensor 'a' has no `dtype`/],
    ['an entry without shape', editHeader(good, (h) => delete h.b.shape), /tensor 'b' has no `shape`/],
    ['an entry without data_offsets', editHeader(good, (h) => delete h.a.data_offsets), /tensor 'a' has no `data_offsets`/],
    ['an entry that is not an object', editHeader(good, (h) => { h.b = [1]; }), /tensor 'b' is an Array, not an object/],
    ['dtype F64', buildFile({ a: { ...a, dtype: 'F64', data_offsets: [0, 32] } }, Buffer.alloc(32)),
      /tensor 'a' has dtype 'F64', which is not supported \(supported: F32, I32, U8, F16, BF16\)/],
    ['dtype I64', editHeader(good, (h) => { h.a.dtype = 'I64'; }), /tensor 'a' has dtype 'I64', which is not supported \(supported: F32, I32/],
    ['dtype BOOL', editHeader(good, (h) => { h.b.dtype = 'BOOL'; }), /tensor 'b' has dtype 'BOOL', which is not supported/],
    ['dtype "constructor"', editHeader(good, (h) => { h.b.dtype = 'constructor'; }), /tensor 'b' has dtype 'constructor', which is not supported/],
    ['a negative shape entry', editHeader(good, (h) => { h.a.shape = [-2, -2]; }), /tensor 'a' has shape \[-2,-2\], not an array of non-negative integers/],
    ['a fractional shape entry', editHeader(good, (h) => { h.a.shape = [2.5, 2]; }), /tensor 'a' has shape \[2.5,2\]/],
    ['a string shape entry', editHeader(good, (h) => { h.a.shape = ['2', 2]; }), /tensor 'a' has shape \["2",2\]/],
    ['data_offsets not matching shape * itemsize', editHeader(good, (h) => { h.a.shape = [2, 3]; }),
      /tensor 'a' has data_offsets \[0, 16\] \(16 bytes\) but shape \[2, 3\] of F32 needs 24 bytes/],
    ['data_offsets not a pair', editHeader(good, (h) => { h.a.data_offsets = [0]; }), /tensor 'a' has data_offsets \[0\], not \[begin, end\]/],
    ['data_offsets decreasing', editHeader(good, (h) => { h.a.data_offsets = [16, 0]; }), /not \[begin, end\] with 0 <= begin <= end/],
    ['a truncated file', goodBytes.subarray(0, goodBytes.length - 2),
      /tensor 'b' has data_offsets \[16, 19\] beyond the 17-byte data section \(the file is truncated\?\)/],
    ['overlapping tensor data', buildFile({ a, b: { ...b, data_offsets: [14, 17] } }, data.subarray(0, 17)),
      /tensor 'b' starts at byte 14, before tensor 'a' ends at 16: tensor data overlaps/],
    ['a gap between tensors', buildFile({ a, b: { ...b, data_offsets: [17, 20] } }, Buffer.concat([data, Buffer.alloc(1)])),
      /tensor 'b' starts at byte 17 but tensor 'a' ends at 16: a gap in the data section/],
    ['a gap before the first tensor', buildFile({ b: { ...b, data_offsets: [1, 4] } }, Buffer.alloc(4)),
      /tensor 'b' starts at byte 1 but the data section starts at 0: a gap/],
    ['bytes after the last tensor', Buffer.concat([goodBytes, Buffer.alloc(3)]),
      /the tensors cover 19 bytes but the data section has 22: 3 trailing bytes belong to no tensor/],
    ['a non-string metadata value', editHeader(good, (h) => { h.__metadata__.k = 5; }),
      /__metadata__ value 'k' is 5, not a string/],
    ['metadata that is not an object', editHeader(good, (h) => { h.__metadata__ = 'v'; }), /__metadata__ is 'v', not an object/],
  ];
  for (const [what, bytes, message] of cases) {
    const p = path.join(dir, 'bad.safetensors');
    fs.writeFileSync(p, bytes);
    const where = new RegExp(`^loadSafetensors: '${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}' is not a valid safetensors file: `);
    expectError(t, () => rl.loadSafetensors(p), Error, where, 'E_FORMAT', `${what}: names the file`);
    expectError(t, () => rl.loadSafetensors(p), Error, message, 'E_FORMAT', what);
    await expectRejection(t, () => rl.loadSafetensorsAsync(p), Error,
      new RegExp(`^loadSafetensorsAsync: .*${message.source}`), 'E_FORMAT', `${what} (async)`);
  }
});

t.test('a missing or unreadable file is an RlhfError E_IO naming the path with the errno text', async (t) => {
  const dir = tempDir(t);
  const missing = path.join(dir, 'missing.safetensors');
  expectError(t, () => rl.loadSafetensors(missing), Error,
    new RegExp(`^loadSafetensors: cannot read '${missing}': ENOENT: no such file or directory`), 'E_IO');
  await expectRejection(t, () => rl.loadSafetensorsAsync(missing), Error,
    new RegExp(`^loadSafetensorsAsync: cannot read '${missing}': ENOENT`), 'E_IO');
  expectError(t, () => rl.loadSafetensors(dir), Error, new RegExp(`^loadSafetensors: cannot read '${dir}': EISDIR`), 'E_IO');
});

t.test('load checks its arguments before touching the file', async (t) => {
  expectError(t, () => rl.loadSafetensors(5 as never), TypeError,
    /^loadSafetensors: expected a non-empty string for `path` but received 5$/);
  expectError(t, () => rl.loadSafetensors('x', null as never), TypeError, /expected an options object for `opts`/);
  expectError(t, () => rl.loadSafetensors('x', { device: 'tpu' as never }), RangeError,
    /^loadSafetensors: `opts.device` must be 'cpu', 'cuda', 'cuda:N' or 'auto', not 'tpu'$/);
});

t.test('loading onto CUDA without a GPU is E_CUDA_UNAVAILABLE', { skip: hasCuda() ? 'a CUDA device is present' : false }, async (t) => {
  const dir = tempDir(t);
  const p = goodFile(dir);
  expectError(t, () => rl.loadSafetensors(p, { device: 'cuda' }), Error, /^loadSafetensors: device 'cuda' requested/,
    'E_CUDA_UNAVAILABLE');
});

t.test('CUDA tensors save through the host and load back onto the device', { skip: hasCuda() ? false : 'no CUDA device' }, async (t) => {
  const dir = tempDir(t);
  const p = path.join(dir, 'cuda.safetensors');
  const host = sampleTensors();
  const onDevice = Object.fromEntries(Object.entries(host).map(([k, v]) => [k, v.to('cuda')]));
  rl.saveSafetensors(p, onDevice);
  const cpuPath = path.join(dir, 'cpu.safetensors');
  rl.saveSafetensors(cpuPath, host);
  expectSameBytes(t, fs.readFileSync(p), fs.readFileSync(cpuPath), 'same file as from the CPU tensors');
  const got = rl.loadSafetensors(p, { device: 'cuda' });
  t.ok(Object.values(got.tensors).every((x) => x.device === 'cuda:0'), 'loaded onto cuda:0');
  expectSameTensors(t, got.tensors, host);
});

// --- save arguments and atomicity -------------------------------------------------------------

t.test('save rejects bad arguments before writing anything', async (t) => {
  const dir = tempDir(t);
  const p = path.join(dir, 'x.safetensors');
  const w = rl.tensor([1]);
  const disposed = rl.tensor([2]);
  disposed.dispose();
  expectError(t, () => rl.saveSafetensors(p, { w }, { step: 5 as never }), TypeError,
    /^saveSafetensors: expected a string for `metadata\['step'\]` but received 5$/);
  expectError(t, () => rl.saveSafetensors(p, { w }, ['a'] as never), TypeError, /expected a Record<string, string> for `metadata`/);
  expectError(t, () => rl.saveSafetensors(p, { '': w }), RangeError, /^saveSafetensors: `tensors` has an empty name$/);
  expectError(t, () => rl.saveSafetensors(p, { __metadata__: w }), RangeError,
    /^saveSafetensors: `tensors` has the name '__metadata__': names starting with '__' are reserved/);
  expectError(t, () => rl.saveSafetensors(p, { __x: w }), RangeError, /has the name '__x'/);
  expectError(t, () => rl.saveSafetensors(p, new Map([[1 as never, w]])), TypeError, /expected string names for `tensors`/);
  expectError(t, () => rl.saveSafetensors(p, { w: new Float32Array(1) as never }), TypeError,
    /^saveSafetensors: expected a Tensor for `tensors\['w'\]` but received Float32Array$/);
  expectError(t, () => rl.saveSafetensors(p, [w] as never), TypeError, /for `tensors` but received an Array/);
  expectError(t, () => rl.saveSafetensors(p, { w, d: disposed }), Error, /^saveSafetensors: `tensors\['d'\]` has been disposed$/,
    'E_DISPOSED');
  expectError(t, () => rl.saveSafetensors('' as never, { w }), TypeError, /expected a non-empty string for `path`/);
  await expectRejection(t, () => rl.saveSafetensorsAsync(p, { w, d: disposed }), Error,
    /^saveSafetensorsAsync: `tensors\['d'\]` has been disposed$/, 'E_DISPOSED');
  t.strictSame(fs.readdirSync(dir), [], 'nothing was written, not even a temporary file');
});

/** Runs fn with obj[key] replaced, restoring it afterwards. */
async function patched<O extends object, K extends keyof O>(obj: O, key: K, value: O[K], fn: () => unknown): Promise<void> {
  const original = obj[key];
  obj[key] = value;
  try {
    await fn();
  } finally {
    obj[key] = original;
  }
}

function ioFailure(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: simulated failure`), { code });
}

t.test('a failed save leaves the existing checkpoint intact and no temporary file behind', async (t) => {
  const dir = tempDir(t);
  const p = goodFile(dir);
  const before = fs.readFileSync(p);
  const big = { a: rl.tensor(new Float32Array(1000)), b: rl.tensor(new Float32Array(10)) };
  const intact = (what: string) => {
    expectSameBytes(t, fs.readFileSync(p), before, `${what}: the old checkpoint is intact`);
    t.strictSame(leftovers(dir), [], `${what}: no temporary file left`);
  };

  const disposed = rl.tensor([1]);
  disposed.dispose();
  expectError(t, () => rl.saveSafetensors(p, { ...big, z: disposed }), Error, /has been disposed/, 'E_DISPOSED');
  intact('a disposed tensor');

  // A write that fails after the header reached the temporary file (a full disk, say).
  let writes = 0;
  const writeSync = fs.writeSync;
  await patched(fs, 'writeSync', ((...args: Parameters<typeof fs.writeSync>) => {
    if (++writes === 2) throw ioFailure('ENOSPC');
    return (writeSync as (...a: unknown[]) => number)(...args);
  }) as typeof fs.writeSync, () => {
    expectError(t, () => rl.saveSafetensors(p, big), Error,
      new RegExp(`^saveSafetensors: cannot save '${p}': ENOSPC: simulated failure$`), 'E_IO');
  });
  t.ok(writes >= 2, 'the save got as far as writing data');
  intact('a failed write');

  await patched(fs, 'fsyncSync', (() => { throw ioFailure('EIO'); }) as typeof fs.fsyncSync, () => {
    expectError(t, () => rl.saveSafetensors(p, big), Error, /cannot save .*EIO: simulated failure/, 'E_IO');
  });
  intact('a failed fsync');

  await patched(fs.promises, 'rename', (async () => { throw ioFailure('EXDEV'); }) as typeof fs.promises.rename, async () => {
    await expectRejection(t, () => rl.saveSafetensorsAsync(p, big), Error,
      /^saveSafetensorsAsync: cannot save .*EXDEV: simulated failure$/, 'E_IO');
  });
  intact('a failed async rename');

  const blocked = path.join(dir, 'is-a-directory');
  fs.mkdirSync(path.join(blocked, 'child'), { recursive: true });
  expectError(t, () => rl.saveSafetensors(blocked, big), Error, /cannot save .*(EISDIR|ENOTEMPTY|EEXIST)/, 'E_IO');
  intact('a rename onto a directory');
});

t.test('a read-only directory fails the save with E_IO and keeps the old checkpoint', {
  skip: process.getuid?.() === 0 ? 'running as root: a read-only mode does not stop root from writing' :
    process.platform === 'win32' ? 'directory modes do not apply on Windows' : false,
}, async (t) => {
  const dir = tempDir(t);
  const p = goodFile(dir);
  const before = fs.readFileSync(p);
  fs.chmodSync(dir, 0o555);
  t.teardown(() => fs.chmodSync(dir, 0o755));
  expectError(t, () => rl.saveSafetensors(p, { w: rl.tensor([1]) }), Error, /cannot save .*EACCES/, 'E_IO');
  expectSameBytes(t, fs.readFileSync(p), before, 'the old checkpoint is intact');
  t.strictSame(leftovers(dir), []);
});

t.test('a platform that refuses to fsync a directory does not fail the save', async (t) => {
  const dir = tempDir(t);
  const p = path.join(dir, 'w.safetensors');
  const openSync = fs.openSync;
  await patched(fs, 'openSync', ((target: fs.PathLike, ...rest: unknown[]) => {
    if (target === dir) throw ioFailure('EISDIR');
    return (openSync as (...a: unknown[]) => number)(target, ...rest);
  }) as typeof fs.openSync, () => rl.saveSafetensors(p, { w: rl.tensor([1, 2]) }));
  t.strictSame([...rl.loadSafetensors(p).tensors.w.dataSync()], [1, 2]);
});

// --- async forms --------------------------------------------------------------------------------

t.test('the async forms write the same bytes and load the same tensors as the sync forms', async (t) => {
  const dir = tempDir(t);
  const syncPath = path.join(dir, 'sync.safetensors');
  const asyncPath = path.join(dir, 'async.safetensors');
  const want = sampleTensors();
  rl.saveSafetensors(syncPath, want, sampleMetadata);
  await rl.saveSafetensorsAsync(asyncPath, want, sampleMetadata);
  expectSameBytes(t, fs.readFileSync(asyncPath), fs.readFileSync(syncPath), 'same file bytes');
  const got = await rl.loadSafetensorsAsync(asyncPath);
  expectSameTensors(t, got.tensors, rl.loadSafetensors(syncPath).tensors);
  t.strictSame(got.metadata, sampleMetadata);
  t.strictSame(leftovers(dir), []);
});

// --- Python cross-checks ------------------------------------------------------------------------

function python(script: string, ...args: string[]): { ok: boolean; out: string; err: string } {
  const r = spawnSync('python3', ['-c', script, ...args], { encoding: 'utf8' });
  return { ok: r.status === 0, out: r.stdout ?? '', err: r.error ? String(r.error) : r.stderr };
}

function pythonLacks(module: string): string | false {
  const r = python(`import ${module}`);
  if (r.ok) return false;
  return /ENOENT/.test(r.err) ? 'python3 is not installed' : `python3 cannot import ${module} (pip install ${module})`;
}

const noNumpy = pythonLacks('numpy');
const noSafetensors = noNumpy || pythonLacks('safetensors');

// Reads a file with nothing but struct, json and numpy: checks the length prefix, the alignment,
// the coverage rule, and prints each tensor's bits and values (repr strings keep NaN, inf, -0).
const numpyReader = `
import json, struct, sys
import numpy as np
raw = open(sys.argv[1], 'rb').read()
(n,) = struct.unpack('<Q', raw[:8])
assert (8 + n) % 8 == 0, 'data section not 8-byte aligned'
header = json.loads(raw[8:8 + n].decode('utf-8'))
meta = header.pop('__metadata__', {})
data = raw[8 + n:]
spans = sorted(tuple(v['data_offsets']) for v in header.values())
end = 0
for b, e in spans:
    assert b == end, 'gap or overlap'
    end = e
assert end == len(data), 'data section not covered'
bits = {'F32': '<u4', 'I32': '<u4', 'U8': 'u1', 'F16': '<u2', 'BF16': '<u2'}
values = {'F32': '<f4', 'I32': '<i4', 'U8': 'u1', 'F16': '<f2'}
out = {}
for name, v in header.items():
    b, e = v['data_offsets']
    chunk = data[b:e]
    if v['dtype'] == 'BF16':
        vals = (np.frombuffer(chunk, '<u2').astype('<u4') << 16).view('<f4')
    else:
        vals = np.frombuffer(chunk, values[v['dtype']])
    vals = vals.reshape(v['shape'])
    out[name] = {'dtype': v['dtype'], 'shape': list(vals.shape),
                 'bits': np.frombuffer(chunk, bits[v['dtype']]).tolist(),
                 'values': [repr(float(x)) for x in vals.reshape(-1)]}
print(json.dumps({'metadata': meta, 'tensors': out}))
`;

const tags: Record<rl.Dtype, string> = { float32: 'F32', int32: 'I32', uint8: 'U8', float16: 'F16', bfloat16: 'BF16' };

/** A tensor's values as float64, decoding 16-bit float bits with the package's own converters. */
function valuesOf(x: rl.Tensor): number[] {
  const a = x.dataSync();
  if (x.dtype === 'float16') return [...a].map(float16Value);
  if (x.dtype === 'bfloat16') return [...a].map(bfloat16Value);
  return [...a];
}

/** Unsigned bit patterns of a tensor's elements, as numpy's .view(uint) prints them. */
function bitsOf(x: rl.Tensor): number[] {
  const a = x.dataSync();
  if (x.dtype === 'float32' || x.dtype === 'int32') return [...new Uint32Array(a.buffer, a.byteOffset, a.length)];
  return [...a];
}

function pyFloat(s: string): number {
  return s === 'nan' ? NaN : s === 'inf' ? Infinity : s === '-inf' ? -Infinity : Number(s);
}

t.test('an independent struct + json + numpy parser reads what we write, bit for bit', { skip: noNumpy }, async (t) => {
  const dir = tempDir(t);
  const p = path.join(dir, 'numpy.safetensors');
  const want = sampleTensors();
  rl.saveSafetensors(p, want, sampleMetadata);
  const r = python(numpyReader, p);
  if (!t.ok(r.ok, 'the numpy reader accepts the file') ) { t.comment(r.err); return; }
  const parsed = JSON.parse(r.out) as {
    metadata: Record<string, string>;
    tensors: Record<string, { dtype: string; shape: number[]; bits: number[]; values: string[] }>;
  };
  t.strictSame(parsed.metadata, sampleMetadata, 'metadata');
  t.strictSame(Object.keys(parsed.tensors).sort(), Object.keys(want).sort(), 'names');
  for (const [name, x] of Object.entries(want)) {
    const got = parsed.tensors[name];
    t.equal(got.dtype, tags[x.dtype], `${name}: dtype`);
    t.strictSame(got.shape, [...x.shape], `${name}: shape`);
    t.strictSame(got.bits, bitsOf(x), `${name}: bits`);
    const values = got.values.map(pyFloat);
    const same = values.length === x.size && values.every((v, i) => Object.is(v, valuesOf(x)[i]));
    t.ok(same, `${name}: values decoded by numpy equal ours (NaN, -0 and infinities included)`);
  }
});

// The safetensors package itself: its Rust core validates the whole file on deserialize.
const packageReader = `
import json, sys
from safetensors import deserialize, safe_open
path = sys.argv[1]
tensors = {name: {'dtype': v['dtype'], 'shape': list(v['shape']), 'hex': bytes(v['data']).hex()}
           for name, v in deserialize(open(path, 'rb').read())}
with safe_open(path, framework='numpy') as f:
    meta = f.metadata() or {}
print(json.dumps({'metadata': meta, 'tensors': tensors}))
`;

// numpy has no bfloat16, so the package's numpy writer covers the other four dtypes.
const packageWriter = `
import sys
import numpy as np
from safetensors.numpy import save_file
f32 = np.array([1.5, -0.0, np.inf, np.nan], dtype=np.float32)
f32.view(np.uint32)[3] = 0x7fc00001
save_file({
    'w.f32': f32.reshape(2, 2),
    'i32': np.array([-2**31, 2**31 - 1, 0], dtype=np.int32),
    'u8': np.arange(5, dtype=np.uint8),
    'f16': np.array([1, -0.0, 65504, 2**-24], dtype=np.float16),
    'empty': np.zeros((2, 0), dtype=np.float32),
    'scalar': np.array(3.0, dtype=np.float32),
}, sys.argv[1], metadata={'format': 'np'})
`;

t.test('the Python safetensors package reads what we write and we read what it writes', { skip: noSafetensors }, async (t) => {
  const dir = tempDir(t);
  const ours = path.join(dir, 'ours.safetensors');
  const want = sampleTensors();
  rl.saveSafetensors(ours, want, sampleMetadata);
  const r = python(packageReader, ours);
  if (!t.ok(r.ok, 'safetensors.deserialize accepts our file')) { t.comment(r.err); return; }
  const parsed = JSON.parse(r.out) as {
    metadata: Record<string, string>; tensors: Record<string, { dtype: string; shape: number[]; hex: string }>;
  };
  t.strictSame(parsed.metadata, sampleMetadata, 'metadata');
  for (const [name, x] of Object.entries(want))
    t.strictSame(parsed.tensors[name], { dtype: tags[x.dtype], shape: [...x.shape], hex: bytesOf(x.dataSync()).toString('hex') },
      `${name}: dtype, shape and bytes`);

  const theirs = path.join(dir, 'theirs.safetensors');
  const w = python(packageWriter, theirs);
  if (!t.ok(w.ok, 'safetensors.numpy.save_file ran')) { t.comment(w.err); return; }
  const got = rl.loadSafetensors(theirs);
  t.strictSame(got.metadata, { format: 'np' });
  expectSameTensors(t, got.tensors, {
    'w.f32': rl.tensor(f32FromBits([0x3fc00000, 0x80000000, 0x7f800000, 0x7fc00001]), [2, 2]),
    i32: rl.tensor(Int32Array.from([-2147483648, 2147483647, 0])),
    u8: rl.tensor(Uint8Array.from([0, 1, 2, 3, 4])),
    f16: rl.tensor(Uint16Array.from([0x3c00, 0x8000, 0x7bff, 0x0001]), [4], { dtype: 'float16' }),
    empty: rl.tensor(new Float32Array(0), [2, 0]),
    scalar: rl.tensor([3], []),
  });
});
