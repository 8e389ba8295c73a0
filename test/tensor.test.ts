// Tensors (views, conversion, shape checks, dispose, devices) and the runtime surface: backends,
// buildInfo, threads, memoryStats, and the op table against the package's exports.
import t from 'tap';

import * as rl from '../lib/index';
import { expectError, hasCuda } from './helpers/index';

const noCuda = hasCuda() ? 'a CUDA device is present' : false;

t.test('tensor over a Float32Array is a zero-copy view: later writes to the array are seen by dataSync', async (t) => {
  const a = Float32Array.from([1, 2, 3, 4, 5, 6]);
  const x = rl.tensor(a, [2, 3]);
  t.equal(x.dataSync(), a, 'dataSync returns the caller\'s array itself');
  a[4] = 42;
  t.equal(x.dataSync()[4], 42, 'a write to the original array after creation is visible');
  t.strictSame([...x.shape], [2, 3]);
  t.equal(x.size, 6);
  t.equal(x.dtype, 'float32');
  t.equal(x.device, 'cpu');
  t.equal(x.toString(), 'Tensor(float32, [2, 3], cpu)');
});

t.test('tensor over Int32Array and Uint8Array keeps their dtype, and the default shape is [length]', async (t) => {
  const i = rl.tensor(Int32Array.from([1, -2, 3]));
  t.equal(i.dtype, 'int32');
  t.strictSame([...i.shape], [3]);
  t.strictSame([...(i.dataSync() as Int32Array)], [1, -2, 3]);
  const m = rl.tensor(Uint8Array.from([0, 1]), [2, 1]);
  t.equal(m.dtype, 'uint8');
  t.strictSame([...m.shape], [2, 1]);
  t.ok(m.dataSync() instanceof Uint8Array);
});

t.test('tensor from number[] converts: float32 by default, or the dtype asked for', async (t) => {
  const x = rl.tensor([0.1, 2, -3], [3]);
  t.equal(x.dtype, 'float32');
  t.ok(x.dataSync() instanceof Float32Array);
  t.strictSame([...x.dataSync()], [Math.fround(0.1), 2, -3], 'values are rounded to float32');
  const i = rl.tensor([7, -8], [1, 2], { dtype: 'int32' });
  t.equal(i.dtype, 'int32');
  t.strictSame([...(i.dataSync() as Int32Array)], [7, -8]);
  const m = rl.tensor([1, 0, 1], undefined, { dtype: 'uint8' });
  t.equal(m.dtype, 'uint8');
  t.strictSame([...m.shape], [3]);
});

t.test('tensor copies and freezes its shape: changing the caller\'s shape array later changes nothing', async (t) => {
  const shape = [2, 2];
  const x = rl.tensor(new Float32Array(4), shape);
  shape[0] = 4;
  t.strictSame([...x.shape], [2, 2]);
  t.ok(Object.isFrozen(x.shape), 'shape is frozen');
});

t.test('tensor with zero-sized dims is empty but valid', async (t) => {
  const x = rl.tensor(new Float32Array(0), [0, 5]);
  t.equal(x.size, 0);
  t.strictSame([...x.shape], [0, 5]);
  t.equal(x.dataSync().length, 0);
});

t.test('tensor rejects a dtype option that does not match the TypedArray with a TypeError', async (t) => {
  expectError(t, () => rl.tensor(new Float32Array(2), [2], { dtype: 'int32' }), TypeError,
    /^tensor: expected a Int32Array for dtype 'int32' for `data` but received Float32Array$/);
  expectError(t, () => rl.tensor(new Uint8Array(2), [2], { dtype: 'float32' }), TypeError,
    /tensor: .*`data` but received Uint8Array/);
  expectError(t, () => rl.tensor([1, 2], [2], { dtype: 'float64' as never }), RangeError,
    /tensor: `dtype` must be 'float32', 'int32', 'uint8', 'float16' or 'bfloat16', not 'float64'/);
});

t.test('tensor rejects unsupported data with a TypeError naming `data`', async (t) => {
  expectError(t, () => rl.tensor(new Float64Array(2) as never, [2]), TypeError,
    /tensor: expected a Float32Array, Int32Array, Uint8Array, Uint16Array or number\[\] for `data` but received Float64Array/);
  expectError(t, () => rl.tensor('abc' as never, [3]), TypeError, /tensor: .*`data` but received 'abc'/);
  expectError(t, () => rl.tensor([1, '2' as never, 3], [3]), TypeError,
    /tensor: expected an array of numbers for `data` but received '2'/);
  expectError(t, () => rl.tensor([1], [1], null as never), TypeError, /tensor: expected an options object for `opts`/);
});

t.test('tensor rejects a shape whose size differs from the data length with a RangeError', async (t) => {
  expectError(t, () => rl.tensor(new Float32Array(3), [2, 2]), RangeError,
    /^tensor: `shape` \[2, 2\] holds 4 elements but `data` has 3$/);
  expectError(t, () => rl.tensor([1, 2, 3], [4]), RangeError, /tensor: `shape` \[4\] holds 4 elements but `data` has 3/);
});

t.test('tensor rejects negative, non-integer and non-numeric dims', async (t) => {
  expectError(t, () => rl.tensor(new Float32Array(2), [-1, -2]), RangeError,
    /tensor: `shape` must hold non-negative integers, but holds -1/);
  expectError(t, () => rl.tensor(new Float32Array(3), [1.5, 2]), RangeError, /tensor: `shape` .* holds 1\.5/);
  expectError(t, () => rl.tensor(new Float32Array(3), [NaN] as never), RangeError, /tensor: `shape` .* holds NaN/);
  expectError(t, () => rl.tensor(new Float32Array(3), ['3'] as never), RangeError, /tensor: `shape` .* holds '3'/);
  expectError(t, () => rl.tensor(new Float32Array(3), 3 as never), TypeError,
    /tensor: expected an array of non-negative integers for `shape` but received 3/);
});

t.test('data() resolves to the same values as dataSync()', async (t) => {
  const x = rl.tensor([1, 2, 3]);
  const d = await x.data();
  t.strictSame([...d], [1, 2, 3]);
  t.equal(d, x.dataSync(), 'on the CPU it is the same view');
});

t.test('dispose makes a tensor unusable with E_DISPOSED, is idempotent, and Symbol.dispose does the same', async (t) => {
  const x = rl.tensor([1, 2, 3]);
  t.equal(x.isDisposed, false);
  x.dispose();
  t.equal(x.isDisposed, true);
  expectError(t, () => x.dataSync(), Error, /dataSync: `tensor` has been disposed/, 'E_DISPOSED');
  await t.rejects(x.data(), { code: 'E_DISPOSED' }, 'data() rejects after dispose');
  expectError(t, () => x.to('cpu'), Error, /to: `tensor` has been disposed/, 'E_DISPOSED');
  x.dispose();
  t.equal(x.isDisposed, true, 'a second dispose is a no-op');

  const y = rl.tensor([4, 5]);
  t.equal(typeof y[Symbol.dispose], 'function');
  y[Symbol.dispose]();
  t.equal(y.isDisposed, true, 'Symbol.dispose disposes');
  expectError(t, () => y.dataSync(), Error, /has been disposed/, 'E_DISPOSED');
});

t.test('a disposed tensor passed to an op is an Error with code E_DISPOSED naming the op and argument', async (t) => {
  const x = rl.tensor([1, 2, 3]);
  x.dispose();
  expectError(t, () => rl.maskedMean(x), Error, /^maskedMean: `x` has been disposed$/, 'E_DISPOSED');
  const m = rl.tensor(Uint8Array.from([1, 1, 1]));
  m.dispose();
  expectError(t, () => rl.maskedWhiten(rl.tensor([1, 2, 3]), m), Error, /maskedWhiten: `mask` has been disposed/, 'E_DISPOSED');
});

t.test('a tensor whose ArrayBuffer was transferred is E_DETACHED, never an empty tensor', async (t) => {
  const a = new Float32Array(8).fill(1);
  const x = rl.tensor(a, [8]);
  structuredClone(a.buffer, { transfer: [a.buffer] });
  expectError(t, () => rl.maskedMean(x), Error, /^maskedMean: `x` was detached: .* no longer holds its 8 elements$/, 'E_DETACHED');
  expectError(t, () => rl.matmul(rl.tensor(new Float32Array(4), [2, 2]), x), Error, /matmul: `b` was detached/, 'E_DETACHED');
  expectError(t, () => x.dataSync(), Error, /dataSync: `tensor` was detached/, 'E_DETACHED');
});

t.test('an ArrayBuffer that an Async call runs on cannot be moved: a transfer copies it and the call completes', async (t) => {
  const n = 1 << 21;
  const want = rl.ppoPolicyLoss({ logprobs: new Float32Array(n).fill(2), oldLogprobs: new Float32Array(n).fill(2),
    advantages: new Float32Array(n).fill(2) });
  for (const which of ['input', 'output'] as const) {
    const x = new Float32Array(n).fill(2);
    const out = rl.tensor(new Float32Array(n), [n]);
    const pending = rl.ppoPolicyLossAsync({ logprobs: x, oldLogprobs: x, advantages: x }, { out });
    const victim = which === 'input' ? x : (out.dataSync() as Float32Array);
    const moved = structuredClone(victim.buffer, { transfer: [victim.buffer] });
    t.equal(victim.length, n, `${which}: still attached after the transfer`);
    t.equal(moved.byteLength, 4 * n, `${which}: the receiver got a copy`);
    const got = await pending;
    t.equal(got.loss, want.loss, `${which}: the call completes with the sequential loss`);
    const bytes = (x: rl.Tensor) => {
      const a = x.dataSync() as Float32Array;
      return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
    };
    t.ok(bytes(got.grad).equals(bytes(want.grad)), `${which}: and the sequential gradient`);
  }
});

t.test("to('cpu') on a CPU tensor returns the tensor itself", async (t) => {
  const x = rl.tensor([1, 2]);
  t.equal(x.to('cpu'), x);
});

t.test('to() rejects device strings that are not devices', async (t) => {
  const x = rl.tensor([1, 2]);
  expectError(t, () => x.to('tpu' as never), RangeError, /to: `device` must be 'cpu', 'cuda', 'cuda:N' or 'auto', not 'tpu'/);
  expectError(t, () => x.to(0 as never), TypeError, /to: expected .* for `device` but received 0/);
  expectError(t, () => rl.tensor([1], [1], { device: 'gpu' as never }), RangeError, /tensor: `device` must be/);
});

t.test("'auto' picks the CPU when there is no CUDA device", { skip: noCuda }, async (t) => {
  t.equal(rl.tensor([1], [1], { device: 'auto' }).device, 'cpu');
});

t.test('asking for CUDA without a GPU is an Error with code E_CUDA_UNAVAILABLE', { skip: noCuda }, async (t) => {
  const x = rl.tensor([1, 2]);
  expectError(t, () => x.to('cuda'), Error, /to: device 'cuda' requested but/, 'E_CUDA_UNAVAILABLE');
  expectError(t, () => x.to('cuda:1'), Error, /to: device 'cuda:1' requested/, 'E_CUDA_UNAVAILABLE');
  expectError(t, () => rl.tensor([1, 2], [2], { device: 'cuda' }), Error, /tensor: device 'cuda' requested/, 'E_CUDA_UNAVAILABLE');
  expectError(t, () => rl.memoryStats('cuda'), Error, /memoryStats: device 'cuda' requested/, 'E_CUDA_UNAVAILABLE');
  expectError(t, () => rl.memoryStats('cuda:0'), Error, /memoryStats: /, 'E_CUDA_UNAVAILABLE');
});

t.test('backends() describes the CPU and CUDA backends', async (t) => {
  const b = rl.backends();
  t.equal(b.cpu.available, true);
  t.equal(b.cpu.threads, rl.getNumThreads(), 'cpu.threads is the pool size');
  t.ok(Number.isInteger(b.cpu.hardwareThreads) && b.cpu.hardwareThreads >= 1, 'hardwareThreads >= 1');
  t.match(b.cpu.simd, /^(avx512|avx2|x86-64)$/);
  t.equal(typeof b.cuda.compiled, 'boolean');
  t.ok(Number.isInteger(b.cuda.devices) && b.cuda.devices >= 0);
  t.equal(b.cuda.deviceList.length, b.cuda.devices, 'one deviceList entry per device');
  if (!b.cuda.compiled) t.equal(b.cuda.devices, 0, 'no devices without CUDA compiled in');
  for (const d of b.cuda.deviceList) {
    t.match(d.computeCapability, /^\d+\.\d+$/);
    t.ok(d.totalMemory > 0);
  }
});

t.test('backends() reports no CUDA device on this machine', { skip: noCuda }, async (t) => {
  t.equal(rl.backends().cuda.devices, 0);
  t.strictSame(rl.backends().cuda.deviceList, []);
});

t.test('buildInfo() says what was built', async (t) => {
  const info = rl.buildInfo();
  t.equal(info.cuda, rl.backends().cuda.compiled, 'buildInfo().cuda agrees with backends()');
  t.ok(Array.isArray(info.cudaArchitectures));
  if (!info.cuda) t.strictSame(info.cudaArchitectures, [], 'no architectures without CUDA');
  t.match(info.simd, /^(avx512|avx2|x86-64)$/);
  t.equal(info.simd, rl.backends().cpu.simd);
  t.equal(typeof info.simdCompiled, 'string');
  t.ok(info.compiler.length > 0, `compiler: ${info.compiler}`);
  t.match(info.cudaRequest, /^(AUTO|ON|OFF)$/);
  t.equal(info.napiVersion, 8);
  t.equal(typeof info.builder, 'string');
  t.ok(info.cudaFallback === null || typeof info.cudaFallback === 'string');
});

t.test('setNumThreads changes getNumThreads and backends().cpu.threads', async (t) => {
  const before = rl.getNumThreads();
  t.teardown(() => rl.setNumThreads(before));
  rl.setNumThreads(3);
  t.equal(rl.getNumThreads(), 3);
  t.equal(rl.backends().cpu.threads, 3);
  rl.setNumThreads(1);
  t.equal(rl.getNumThreads(), 1);
});

t.test('setNumThreads rejects bad counts: RangeError for values, TypeError for kinds', async (t) => {
  const before = rl.getNumThreads();
  expectError(t, () => rl.setNumThreads(0), RangeError, /setNumThreads: `n` must be in \[1, 1024\] but is 0/);
  expectError(t, () => rl.setNumThreads(-2), RangeError, /setNumThreads: `n` must be in \[1, 1024\]/);
  expectError(t, () => rl.setNumThreads(2.5), RangeError, /setNumThreads: `n` must be an integer but is 2\.5/);
  expectError(t, () => rl.setNumThreads(NaN), RangeError, /setNumThreads: `n` .* NaN/);
  expectError(t, () => rl.setNumThreads(Infinity), RangeError, /setNumThreads: `n`/);
  expectError(t, () => rl.setNumThreads(5000), RangeError, /setNumThreads: `n` must be in \[1, 1024\] but is 5000/);
  expectError(t, () => rl.setNumThreads('2' as never), TypeError, /setNumThreads: expected a number .* for `n` but received '2'/);
  expectError(t, () => rl.setNumThreads(undefined as never), TypeError, /setNumThreads: .*`n` but received undefined/);
  t.equal(rl.getNumThreads(), before, 'a rejected call leaves the count alone');
});

t.test('opTable() lists every op of this wave with its family and tolerances', async (t) => {
  const rows = rl.opTable();
  const names = rows.map((r) => r.name);
  for (const name of ['gae', 'tokenGae', 'discountedReturns', 'maskedMean', 'maskedVar', 'maskedWhiten'])
    t.ok(names.includes(name), `opTable lists ${name}`);
  t.equal(new Set(names).size, names.length, 'no op is listed twice');
  for (const r of rows) {
    t.match(r, { name: String, family: String, cuda: Boolean, cpuTol: Number, cudaTol: Number }, `${r.name} row shape`);
    t.ok(r.cpuTol >= 0 && r.cpuTol < 1e-3 && r.cudaTol >= 0 && r.cudaTol < 1e-3, `${r.name} tolerances are small`);
  }
  const gae = rows.find((r) => r.name === 'gae');
  t.equal(gae?.family, 'advantages');
  t.equal(rows.find((r) => r.name === 'maskedWhiten')?.family, 'statistics');
});

t.test('every op in opTable() is exported as a function with an Async sibling', async (t) => {
  const exports = rl as unknown as Record<string, unknown>;
  // The layer kernels of the nn family are what the rl.nn models run (lib/nn/kernels.ts); of that
  // family only matmul is a public op.
  const rows = rl.opTable();
  const layerKernels = rows.filter((r) => r.family === 'nn' && r.name !== 'matmul');
  t.ok(layerKernels.length > 0, 'the nn family has layer kernels');
  for (const { name } of layerKernels) t.equal(exports[name], undefined, `${name} is internal to rl.nn`);
  for (const { name } of rows.filter((r) => !layerKernels.includes(r))) {
    t.equal(typeof exports[name], 'function', `rl.${name} is a function`);
    t.equal(typeof exports[`${name}Async`], 'function', `rl.${name}Async is a function`);
  }
});

t.test('the package root works through require() too', async (t) => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const viaRequire = require('../lib/index') as typeof rl;
  t.equal(viaRequire.tensor, rl.tensor);
  t.equal(viaRequire.maskedMean(rl.tensor([1, 3])), 2);
});

t.test('float16 and bfloat16 tensors hold rounded bits in a Uint16Array; a Uint16Array needs the dtype', async (t) => {
  // float16: 1 = 0x3c00, 2.5 = 0x4100, 65504 the largest finite, 70000 overflows, 2^-24 the
  // smallest denormal; 1e-7 rounds to 2^-23 (2 denormal steps).
  const h = rl.tensor([1, 2.5, -3, 65504, 70000, 2 ** -24, 1e-7, 1 + 2 ** -11], [8], { dtype: 'float16' });
  t.equal(h.dtype, 'float16');
  t.strictSame([...h.dataSync()], [0x3c00, 0x4100, 0xc200, 0x7bff, 0x7c00, 0x0001, 0x0002, 0x3c00],
    'round to nearest even, 1 + 2^-11 (a tie) rounds to 1');
  t.strictSame([...rl.fromHalfBits(h.dataSync() as Uint16Array, 'float16')], [1, 2.5, -3, 65504, Infinity, 2 ** -24, 2 ** -23, 1]);
  // bfloat16 keeps float32's exponent: 8 bits of mantissa.
  const b = rl.tensor(Float32Array.from([1, 3.14159, -1e30, NaN]), [4], { dtype: 'bfloat16' });
  t.strictSame([...b.dataSync()].slice(0, 2), [0x3f80, 0x4049]);
  t.ok(Number.isNaN(rl.bfloat16Value(b.dataSync()[3])), 'NaN stays NaN');
  const bits = new Uint16Array([0x3c00, 0x4000]);
  t.equal(rl.tensor(bits, [2], { dtype: 'float16' }).dataSync(), bits, 'a Uint16Array of bits is viewed, not copied');
  expectError(t, () => rl.tensor(new Uint16Array(2), [2]), TypeError,
    /tensor: expected a Uint16Array only with dtype 'float16' or 'bfloat16'/);
});

t.test('half-precision logits are refused on the CPU with a TypeError naming `logits`', async (t) => {
  const z = rl.tensor([1, 2, 3, 4], [2, 2], { dtype: 'bfloat16' });
  expectError(t, () => rl.logprobsFromLogits(z, new Int32Array([0, 1])), TypeError,
    /logprobsFromLogits: expected float32 on the CPU \(bfloat16 logits run on CUDA only\) for `logits`/);
});
