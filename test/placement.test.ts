// Where large new CPU outputs start in memory: placed in their page for the kernel that writes
// them (placedFloats, placeShift), at the first input's place in a 64-byte line and clear of 4K aliasing
// with every input read in step with them, whatever place the caller's arrays have. The results
// are the same wherever the outputs lie. From 4 MiB up they ask for huge pages (host_memory.h).
// From 1 MiB up an op's new output is not zeroed (outputTensor); the test command fills every new
// output with NaN first (RLHF_POISON_OUTPUTS=1), so that every op's tests show it writes them whole.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import t from 'tap';

import * as rl from '../lib/index';
import { native } from '../lib/native';
import { emptyTensor, outputTensor, placedFloats } from '../lib/tensor';
import { expectBitIdentical } from './helpers/index';

type HostArray = Float32Array | Uint8Array;

// A zeroed array of n elements that starts `place` bytes into a page.
function placedAt<A extends HostArray>(Ctor: { new (b: ArrayBuffer, o: number, n: number): A; BYTES_PER_ELEMENT: number },
                                       n: number, place: number): A {
  const buffer = new ArrayBuffer(n * Ctor.BYTES_PER_ELEMENT + 8192);
  const base = native().placeInPage(new Uint8Array(buffer));
  return new Ctor(buffer, (place - base + 8192) % 4096, n);
}

// The kernels' rule (clearOfAliasing in native/cpu/cpu_variants.h), both ways.
function clearBothWays(out: number, input: number): boolean {
  const ahead = (d: number) => ((d % 4096) + 4096) % 4096;
  const clear = (d: number) => ahead(d) === 0 || ahead(d) >= 1024;
  return clear(out - input) && clear(input - out);
}

function placeOf(a: HostArray | rl.Tensor): number {
  return native().placeInPage((a instanceof rl.Tensor ? a.dataSync() : a) as HostArray);
}

t.test('placedFloats: zeroed, its length, at the first input\'s place in a line, clear of every input', async (t) => {
  for (const places of [[16], [0, 64], [16, 80, 3000], [3328, 3264], [100, 1200, 2300, 3400]]) {
    const inputs = places.map((p) => placedAt(Float32Array, 1000, p));
    const out = placedFloats(5000, inputs);
    t.equal(out.length, 5000);
    t.ok(out.every((x) => x === 0), 'zeroed');
    const at = placeOf(out);
    t.equal(((at - places[0]) % 64 + 64) % 64, 0, `[${places}]: at ${at}, like the first input in a line`);
    const clearPlaceExists = Array.from({ length: 64 }, (_, k) => (places[0] + 64 * k) % 4096)
      .some((p) => places.every((q) => clearBothWays(p, q)));
    if (clearPlaceExists) t.ok(places.every((q) => clearBothWays(at, q)), `[${places}]: ${at} is clear of them all`);
  }
  t.equal(placeOf(placedFloats(10, [placedAt(Float32Array, 10, 52), null])), 52, 'at the input\'s own place when that is clear');
});

t.test('placeShift and placedFloats: bad arguments are named errors, an impossible size a RangeError', async (t) => {
  const n = native() as unknown as { placeShift(...args: unknown[]): unknown; placeInPage(a: unknown): unknown };
  t.throws(() => n.placeShift(new Float32Array(4), []), TypeError);
  t.throws(() => n.placeShift(new ArrayBuffer(100), []), RangeError);
  t.throws(() => n.placeShift(new ArrayBuffer(8192), 'x'), TypeError);
  t.throws(() => n.placeShift(new ArrayBuffer(8192), [{}]), { name: 'TypeError', message: /inputs\[0\]/ });
  t.throws(() => n.placeInPage([1, 2]), TypeError);
  // Allocated in JS, a buffer that cannot be had is a RangeError (napi_create_arraybuffer's
  // failure would end the process).
  t.throws(() => placedFloats(2 ** 40, []), RangeError);
});

t.test('large new outputs are placed for their kernel; small ones are not', async (t) => {
  const B = 512;
  const T = 1024;  // 2 MiB a float array
  const n = B * T;
  const rewards = placedAt(Float32Array, n, 3328);
  const values = placedAt(Float32Array, n, 3264);  // a line below rewards: outputs at its place would alias
  const mask = placedAt(Uint8Array, n, 16);
  for (let i = 0; i < n; ++i) {
    rewards[i] = Math.sin(i) * 0.5;
    values[i] = Math.cos(i * 0.7);
    mask[i] = i % T < T - 37 ? 1 : 0;
  }
  const inputs = { rewards: rl.tensor(rewards, [B, T]), values: rl.tensor(values, [B, T]), mask: rl.tensor(mask, [B, T]) };
  for (const maskMode of ['premask', 'skip', 'none'] as const) {
    const got = rl.tokenGae(inputs, { maskMode });
    for (const out of [got.advantages, got.returns]) {
      const at = placeOf(out);
      t.equal(((at - 3264) % 64 + 64) % 64, 0, `tokenGae ${maskMode}: output at ${at}, like values in a line`);
      t.ok(clearBothWays(at, 3328) && clearBothWays(at, 3264), `tokenGae ${maskMode}: ${at} is clear of rewards and values`);
    }
    // The same bits as outputs the caller placed right after the inputs (the slower path).
    const out = { advantages: rl.tensor(placedAt(Float32Array, n, 3344), [B, T]), returns: rl.tensor(placedAt(Float32Array, n, 3360), [B, T]) };
    rl.tokenGae(inputs, { maskMode, out });
    expectBitIdentical(t, got.advantages.dataSync() as Float32Array, out.advantages.dataSync() as Float32Array, `tokenGae ${maskMode}: advantages alike`);
    expectBitIdentical(t, got.returns.dataSync() as Float32Array, out.returns.dataSync() as Float32Array, `tokenGae ${maskMode}: returns alike`);
  }

  const returns = rl.discountedReturns({ rewards: inputs.rewards, mask: inputs.mask }, { gamma: 0.9 });
  t.ok(clearBothWays(placeOf(returns), 3328), 'discountedReturns: clear of rewards');

  const kl = rl.klPenalty(rl.tensor(rewards), rl.tensor(values), { estimator: 'k3' });
  for (const out of [kl.kl, kl.grad]) t.ok(clearBothWays(placeOf(out), 3328) && clearBothWays(placeOf(out), 3264), 'klPenalty: clear of its inputs');

  const small = rl.tokenGae({ rewards: rl.tensor(rewards.subarray(0, 64), [1, 64]), values: rl.tensor(values.subarray(0, 64), [1, 64]) },
    { maskMode: 'none' });
  t.not(small.advantages.dataSync().buffer.byteLength, 64 * 4 + 4096, 'a small output is not given a page of room');
});

// Whether this system takes the request: Linux with transparent huge pages in madvise mode.
function systemTakesHugePageAdvice(): boolean {
  try {
    return fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8').includes('[madvise]');
  } catch {
    return false;
  }
}

t.test('new outputs of 4 MiB and more ask for huge pages where the system takes the request', async (t) => {
  const advisable = systemTakesHugePageAdvice() && process.env.RLHF_HUGE_PAGES !== '0';
  t.equal(rl.backends().cpu.hugePages, advisable, `backends().cpu.hugePages is ${advisable} here`);
  const B = 1024;
  const T = 1024;  // 4 MiB a float array
  const rewards = new Float32Array(B * T).map((_, i) => Math.sin(i));
  const values = new Float32Array(B * T).map((_, i) => Math.cos(i));
  const inputs = { rewards: rl.tensor(rewards, [B, T]), values: rl.tensor(values, [B, T]) };
  const got = rl.tokenGae(inputs, { maskMode: 'none' });
  for (const out of [got.advantages, got.returns])
    t.equal(native().hugePagesRequested(out.dataSync()), advisable, `a [${B},${T}] output: huge pages requested ${advisable}`);
  const reused = rl.tokenGae(inputs, { maskMode: 'none', out: rl.tokenGae(inputs, { maskMode: 'none' }) });
  expectBitIdentical(t, got.advantages.dataSync() as Float32Array, reused.advantages.dataSync() as Float32Array, 'the same bits as a reused output');

  const small = rl.tokenGae({ rewards: rl.tensor(rewards.subarray(0, 256 * T), [256, T]), values: rl.tensor(values.subarray(0, 256 * T), [256, T]) },
    { maskMode: 'none' });
  t.equal(small.advantages.size * 4, 1 << 20, 'a 1 MiB output');
  t.notOk(native().hugePagesRequested(small.advantages.dataSync()), 'spans no whole 2 MiB page: none requested');

  const n = native() as unknown as { adviseHugePages(b: unknown): unknown; hugePagesRequested(a: unknown): unknown };
  t.throws(() => n.adviseHugePages(new Float32Array(4)), { name: 'TypeError', message: /buffer/ });
  t.throws(() => n.hugePagesRequested([1, 2]), TypeError);
  t.equal(n.adviseHugePages(new ArrayBuffer(4096)), false, 'a buffer with no whole 2 MiB page: nothing to ask');
});

t.test('RLHF_HUGE_PAGES=0 leaves new outputs on ordinary pages', async (t) => {
  const dist = path.resolve(__dirname, '..', 'dist');
  const script = `const rl = require(${JSON.stringify(path.join(dist, 'index.js'))});
    const { native } = require(${JSON.stringify(path.join(dist, 'native.js'))});
    const x = rl.tensor(new Float32Array(1 << 21).fill(1), [2048, 1024]);
    const out = rl.tokenGae({ rewards: x, values: x }, { maskMode: 'none' });
    console.log(JSON.stringify([rl.backends().cpu.hugePages, native().hugePagesRequested(out.advantages.dataSync())]));`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, RLHF_HUGE_PAGES: '0' } });
  t.equal(r.status, 0, r.stderr);
  t.same(JSON.parse(r.stdout), [false, false]);
});

t.test('op outputs: not zeroed from 1 MiB up, NaN under RLHF_POISON_OUTPUTS=1, placed as the zeroed ones', async (t) => {
  const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', 'package.json'), 'utf8')) as { scripts: { test: string } };
  t.match(pkg.scripts.test, /^RLHF_POISON_OUTPUTS=1 /, 'the test command poisons new outputs');
  const poisoning = process.env.RLHF_POISON_OUTPUTS === '1';  // not under a bare `npx tap`
  const inputs = [placedAt(Float32Array, 1 << 18, 3328), placedAt(Float32Array, 1 << 18, 3264)];
  for (const size of [7, 1 << 18]) {
    const out = outputTensor([size], 'float32', -1, inputs).dataSync() as Float32Array;
    t.equal(out.length, size, `${size}: its length`);
    if (poisoning) t.ok(out.every((x) => Number.isNaN(x)), `${size}: poisoned`);
    t.ok(emptyTensor([size], 'float32', -1, inputs).dataSync().every((x) => x === 0), `${size}: emptyTensor still zeroed`);
  }
  const large = outputTensor([1 << 18], 'float32', -1, inputs).dataSync();
  t.equal(placeOf(large), placeOf(placedFloats(1 << 18, inputs)), 'placed where a zeroed output would be');
  if (poisoning) t.ok((outputTensor([1 << 20], 'uint8', -1).dataSync() as Uint8Array).every((x) => x === 0xff), 'bytes poisoned 0xff');

  const dist = path.resolve(__dirname, '..', 'dist');
  const script = `const t = require(${JSON.stringify(path.join(dist, 'tensor.js'))});
    const big = t.outputTensor([1 << 18], 'float32', -1).dataSync(), small = t.outputTensor([8], 'float32', -1).dataSync();
    console.log(JSON.stringify([big.length, big.buffer.byteLength, small.every((x) => x === 0)]));`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, RLHF_POISON_OUTPUTS: '' } });
  t.equal(r.status, 0, r.stderr);
  t.same(JSON.parse(r.stdout), [1 << 18, 1 << 20, true], 'unpoisoned: a 1 MiB output on its own buffer, a small one zeroed');
});
