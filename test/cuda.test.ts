// The CUDA backend seen from TypeScript: the same ops on 'cuda' tensors, compared with the CPU
// (tolerance from rl.opTable()'s cudaTol, widened with T for the parallel scans as SEMANTICS.md
// §3 allows), device tensors, mixed-device errors, and memoryStats returning to its starting
// count after dispose. Without a CUDA device every subtest is skipped, not failed.
import t from 'tap';

import * as rl from '../lib/index';
import { native } from '../lib/native';
import {
  discountedReturnsReference, gaeReference, tokenGaeReference,
} from '../lib/reference/advantages';
import {
  cudaSkip, cudaTol, expectBitIdentical, expectClose, expectError, expectNear, randomFlags, randomFloats, responseMask, rng,
  uniformFloats,
} from './helpers/index';

const opts = { skip: cudaSkip };

const cu = (a: Float32Array | Uint8Array, shape: number[]) => rl.tensor(a, shape, { device: 'cuda' });

async function host(x: rl.Tensor): Promise<Float32Array> {
  return (await x.data()) as Float32Array;
}

/**
 * Asserts |gpu - cpu| <= tol * max(1, scale) elementwise, where scale bounds the sum of the
 * magnitudes of the terms behind each element (a parallel scan rounds relative to that, not
 * relative to the possibly cancelled result). tol = max(cudaTol, 1e-6*sqrt(T)).
 */
function expectScanClose(t: Parameters<typeof expectClose>[0], gpu: Float32Array, cpu: Float32Array, scale: ArrayLike<number>,
  op: string, T: number, msg: string): void {
  const tol = Math.max(cudaTol(op), 1e-6 * Math.sqrt(Math.max(T, 1)));
  for (let i = 0; i < cpu.length; ++i) {
    const g = gpu[i];
    const c = cpu[i];
    if (Number.isNaN(c) || Number.isNaN(g)) {
      if (Number.isNaN(c) !== Number.isNaN(g)) {
        t.fail(`${msg}: element ${i} is ${g}, CPU ${c}`);
        return;
      }
      continue;
    }
    if (!(Math.abs(g - c) <= tol * Math.max(1, scale[i]))) {
      t.fail(`${msg}: element ${i} is ${g}, CPU ${c}, allowed ${tol * Math.max(1, scale[i])}`);
      return;
    }
  }
  t.pass(msg);
}

const abs = (a: Float32Array) => a.map(Math.abs);

// A magnitude bound for each GAE output: the same recursion over |r| + 2|V| and |V|, so that
// every delta becomes |r| + gamma*|V'| + |V|.
function absRewards(r: Float32Array, v: Float32Array): Float32Array {
  const out = new Float32Array(r.length);
  for (let i = 0; i < r.length; ++i) out[i] = Math.abs(r[i]) + 2 * Math.abs(v[i]);
  return out;
}

t.test('a tensor moved to CUDA and back holds the same bits; dataSync on CUDA is a copy', opts, async (t) => {
  const a = randomFloats(rng(1), 1000);
  const x = rl.tensor(a, [10, 100]).to('cuda');
  t.equal(x.device, 'cuda:0');
  t.strictSame([...x.shape], [10, 100]);
  const back = x.to('cpu');
  t.equal(back.device, 'cpu');
  expectBitIdentical(t, back.dataSync() as Float32Array, a, 'cpu -> cuda -> cpu');
  const s = x.dataSync();
  t.not(s, a, 'dataSync of a CUDA tensor is a new array');
  expectBitIdentical(t, s as Float32Array, a, 'with the same values');
  expectBitIdentical(t, await host(x), a, 'data() of a CUDA tensor');
  t.equal(x.to('cuda'), x, "to('cuda') of a CUDA tensor is the tensor itself");
  const m = rl.tensor(Uint8Array.from([0, 1, 255]), [3], { device: 'cuda' });
  t.strictSame([...(await m.data())], [0, 1, 255], 'uint8 round trip');
  x.dispose();
  expectError(t, () => x.dataSync(), Error, /has been disposed/, 'E_DISPOSED');
  m.dispose();
  back.dispose();
});

t.test('gae on CUDA matches the CPU within cudaTol (scan tolerance for long T)', opts, async (t) => {
  const r = rng(2);
  for (const [T, N, flags, perElement] of [[512, 64, true, false], [20, 300, true, true], [4096, 4, true, false], [64, 20000, false, false]] as const) {
    const n = T * N;
    const rewards = randomFloats(r, n);
    const values = randomFloats(r, n, 2);
    const lastValues = randomFloats(r, N, 2);
    const terminated = flags ? randomFlags(r, n, 0.01) : undefined;
    const truncated = flags ? randomFlags(r, n, 0.01) : undefined;
    const nextValues = flags ? randomFloats(r, n, 2) : undefined;
    const gamma = perElement ? uniformFloats(r, n, 0.9, 1) : Math.fround(0.99);
    const lambda = Math.fround(0.95);
    const cpuIn: rl.GaeInputs = {
      rewards: rl.tensor(rewards, [T, N]), values: rl.tensor(values, [T, N]), lastValues: rl.tensor(lastValues),
      terminated: terminated && rl.tensor(terminated, [T, N]), truncated: truncated && rl.tensor(truncated, [T, N]),
      nextValues: nextValues && rl.tensor(nextValues, [T, N]),
    };
    const gpuIn: rl.GaeInputs = {
      rewards: cu(rewards, [T, N]), values: cu(values, [T, N]), lastValues: cu(lastValues, [N]),
      terminated: terminated && cu(terminated, [T, N]), truncated: truncated && cu(truncated, [T, N]),
      nextValues: nextValues && cu(nextValues, [T, N]),
    };
    const gpuGamma = typeof gamma === 'number' ? gamma : cu(gamma, [T, N]);
    const cpu = rl.gae(cpuIn, { gamma, lambda });
    const gpu = rl.gae(gpuIn, { gamma: gpuGamma, lambda });
    t.equal(gpu.advantages.device, 'cuda:0', 'outputs live on the inputs\' device');
    const scale = gaeReference(T, N, {
      rewards: absRewards(rewards, values), values: abs(values), lastValues: abs(lastValues), terminated, truncated,
      nextValues: nextValues && abs(nextValues),
    }, { gamma, lambda });
    const label = `[${T},${N}]${flags ? ' flags' : ''}${perElement ? ' per-element gamma' : ''}`;
    expectScanClose(t, await host(gpu.advantages), cpu.advantages.dataSync() as Float32Array, scale.advantages, 'gae', T, `${label} advantages`);
    expectScanClose(t, await host(gpu.returns), cpu.returns.dataSync() as Float32Array, scale.returns, 'gae', T, `${label} returns`);
    const asyncGpu = await rl.gaeAsync(gpuIn, { gamma: gpuGamma, lambda });
    expectBitIdentical(t, await host(asyncGpu.advantages), await host(gpu.advantages), `${label} async = sync on CUDA`);
    for (const x of [gpuIn.rewards, gpuIn.values, gpuIn.lastValues, gpuIn.terminated, gpuIn.truncated, gpuIn.nextValues,
      gpu.advantages, gpu.returns, asyncGpu.advantages, asyncGpu.returns])
      (x as rl.Tensor | undefined)?.dispose();
    if (typeof gpuGamma !== 'number') gpuGamma.dispose();
  }
});

t.test('gae on CUDA with the CleanRL preset matches the CPU', opts, async (t) => {
  const r = rng(3);
  const T = 128;
  const N = 16;
  const rewards = randomFloats(r, T * N);
  const values = randomFloats(r, T * N);
  const lastValues = randomFloats(r, N);
  const dones = randomFlags(r, T * N, 0.05);
  const nextDone = randomFlags(r, N, 0.3);
  const cpu = rl.gae({ rewards: rl.tensor(rewards, [T, N]), values: rl.tensor(values, [T, N]), lastValues: rl.tensor(lastValues),
    dones: rl.tensor(dones, [T, N]), nextDone: rl.tensor(nextDone) }, { preset: 'cleanrl' });
  const gpu = rl.gae({ rewards: cu(rewards, [T, N]), values: cu(values, [T, N]), lastValues: cu(lastValues, [N]),
    dones: cu(dones, [T, N]), nextDone: cu(nextDone, [N]) }, { preset: 'cleanrl' });
  const scale = gaeReference(T, N, { rewards: absRewards(rewards, values), values: abs(values), lastValues: abs(lastValues), dones, nextDone },
    { gamma: Math.fround(0.99), lambda: Math.fround(0.95) });
  expectScanClose(t, await host(gpu.advantages), cpu.advantages.dataSync() as Float32Array, scale.advantages, 'gae', T, 'cleanrl advantages');
});

t.test('tokenGae on CUDA matches the CPU in every mask mode, including few rows with long T', opts, async (t) => {
  const r = rng(4);
  for (const [B, T] of [[64, 512], [2, 32768], [20000, 16]]) {
    const n = B * T;
    const rewards = randomFloats(r, n, 0.5);
    const values = randomFloats(r, n);
    const mask = responseMask(r, B, T, 0.05);
    const lastValues = randomFloats(r, B);
    for (const maskMode of ['premask', 'skip', 'none'] as const) {
      const o = { gamma: Math.fround(0.99), lambda: Math.fround(0.95), maskMode };
      const cpu = rl.tokenGae({ rewards: rl.tensor(rewards, [B, T]), values: rl.tensor(values, [B, T]), mask: rl.tensor(mask, [B, T]),
        lastValues: rl.tensor(lastValues) }, o);
      const gpuIn = { rewards: cu(rewards, [B, T]), values: cu(values, [B, T]), mask: cu(mask, [B, T]), lastValues: cu(lastValues, [B]) };
      const gpu = rl.tokenGae(gpuIn, o);
      const scale = tokenGaeReference(B, T, { rewards: absRewards(rewards, values), values: abs(values), mask, lastValues: abs(lastValues) }, o);
      expectScanClose(t, await host(gpu.advantages), cpu.advantages.dataSync() as Float32Array, scale.advantages, 'tokenGae', T,
        `${maskMode} [${B},${T}] advantages`);
      expectScanClose(t, await host(gpu.returns), cpu.returns.dataSync() as Float32Array, scale.returns, 'tokenGae', T,
        `${maskMode} [${B},${T}] returns`);
      for (const x of [...Object.values(gpuIn), gpu.advantages, gpu.returns]) x.dispose();
    }
  }
});

t.test('discountedReturns on CUDA matches the CPU', opts, async (t) => {
  const r = rng(5);
  for (const [B, T] of [[32, 1000], [1, 65536]]) {
    const rewards = randomFloats(r, B * T);
    const mask = responseMask(r, B, T, 0.1);
    const gamma = Math.fround(0.999);
    const cpu = rl.discountedReturns({ rewards: rl.tensor(rewards, [B, T]), mask: rl.tensor(mask, [B, T]) }, { gamma });
    const gr = cu(rewards, [B, T]);
    const gm = cu(mask, [B, T]);
    const gpu = await rl.discountedReturnsAsync({ rewards: gr, mask: gm }, { gamma });
    const scale = discountedReturnsReference(B, T, { rewards: abs(rewards), mask }, { gamma });
    expectScanClose(t, await host(gpu), cpu.dataSync() as Float32Array, scale, 'discountedReturns', T, `[${B},${T}]`);
    for (const x of [gr, gm, gpu]) x.dispose();
  }
});

t.test('masked statistics on CUDA match the CPU within cudaTol', opts, async (t) => {
  const r = rng(6);
  for (const n of [5, 4097, 1 << 20]) {
    const x = randomFloats(r, n, 2, 3);
    const m = randomFlags(r, n, 0.6);
    m[0] = 1;
    m[n - 1] = 1;
    const gx = cu(x, [n]);
    const gm = cu(m, [n]);
    const rel = (op: string, got: number, want: number, label: string) => expectNear(t, got, want, { rtol: cudaTol(op) }, label);
    rel('maskedMean', rl.maskedMean(gx, gm), rl.maskedMean(x, m), `n=${n} mean`);
    rel('maskedMean', await rl.maskedMeanAsync(gx), rl.maskedMean(x), `n=${n} mean, no mask, async`);
    const v = rl.maskedVar(x, m);
    rel('maskedVar', rl.maskedVar(gx, gm) / v, 1, `n=${n} variance`);
    for (const preset of ['trl', 'verl', 'openrlhf', 'cleanrl'] as const) {
      const cpu = rl.maskedWhiten(x, m, { preset });
      const gpu = rl.maskedWhiten(gx, gm, { preset });
      t.equal(gpu.device, 'cuda:0');
      expectClose(t, await host(gpu), cpu.dataSync(), { rtol: cudaTol('maskedWhiten') }, `n=${n} whiten ${preset}`);
      gpu.dispose();
    }
    gx.dispose();
    gm.dispose();
  }
});

t.test('CUDA inputs: mixed devices are a RangeError; checkFinite and empty inputs work there too', opts, async (t) => {
  const x = cu(Float32Array.from([1, 2, NaN, 4]), [4]);
  expectError(t, () => rl.maskedMean(x, Uint8Array.from([1, 1, 1, 1])), RangeError,
    /maskedMean: `mask` is on cpu but `x` is on cuda:0: all tensors must be on one device/);
  expectError(t, () => rl.maskedWhiten(x, null, { checkFinite: true }), RangeError, /maskedWhiten: `x` has a non-finite value at index 2/);
  expectError(t, () => rl.maskedWhiten(x, null, { out: rl.tensor(new Float32Array(4)) }), RangeError,
    /maskedWhiten: `out` is on cpu but the inputs are on cuda:0/);
  const e = rl.tokenGae({ rewards: cu(new Float32Array(0), [0, 8]), values: cu(new Float32Array(0), [0, 8]), mask: cu(new Uint8Array(0), [0, 8]) });
  t.equal(e.advantages.size, 0, 'an empty CUDA batch gives empty outputs');
  t.equal(rl.maskedMean(cu(new Float32Array(0), [0])), 0, 'mean of an empty CUDA tensor');
  x.dispose();
  expectError(t, () => rl.maskedMean(x), Error, /maskedMean: `x` has been disposed/, 'E_DISPOSED');
});

t.test('memoryStats returns to its starting live count after the tensors are disposed', opts, async (t) => {
  const r = rng(7);
  const B = 16;
  const T = 256;
  // Warm up first: a kernel's scratch buffer is allocated once and kept, which is not a leak.
  {
    const wr = cu(randomFloats(r, B * T), [B, T]);
    const wm = cu(responseMask(r, B, T), [B, T]);
    const wres = rl.tokenGae({ rewards: wr, values: wr, mask: wm }, { maskMode: 'skip' });
    const ww = await rl.maskedWhitenAsync(wres.advantages, wm);
    for (const x of [wr, wm, wres.advantages, wres.returns, ww]) x.dispose();
  }
  const before = rl.memoryStats('cuda');
  const made: rl.Tensor[] = [];
  const keep = <X extends rl.Tensor>(x: X): X => {
    made.push(x);
    return x;
  };
  const inputs = {
    rewards: keep(cu(randomFloats(r, B * T), [B, T])), values: keep(cu(randomFloats(r, B * T), [B, T])),
    mask: keep(cu(responseMask(r, B, T), [B, T])),
  };
  const res = rl.tokenGae(inputs, { maskMode: 'skip' });
  keep(res.advantages);
  keep(res.returns);
  const w = keep(await rl.maskedWhitenAsync(res.advantages, inputs.mask));
  const during = rl.memoryStats('cuda');
  t.ok(during.liveAllocations >= before.liveAllocations + made.length, `${during.liveAllocations - before.liveAllocations} live allocations while in use`);
  t.ok(during.liveBytes >= before.liveBytes + B * T * (4 * 5 + 1), 'live bytes cover the tensors');
  t.ok(during.peakBytes >= during.liveBytes, 'peak >= live');
  t.ok(w.size === B * T);
  for (const x of made) x.dispose();
  const after = rl.memoryStats('cuda');
  t.equal(after.liveAllocations, before.liveAllocations, 'live allocations back to the start');
  t.equal(after.liveBytes, before.liveBytes, 'live bytes back to the start');
  t.ok(after.totalAllocations >= before.totalAllocations + made.length, 'totalAllocations counts every allocation');
});

t.test('an allocation beyond device memory is E_OOM, and the next call works', opts, async (t) => {
  const total = rl.backends().cuda.deviceList[0].totalMemory;
  const before = rl.memoryStats('cuda');
  const Buffer = native().DeviceBuffer;
  expectError(t, () => new Buffer(total * 4, 0), Error, /cudaMalloc of \d+ bytes on CUDA device 0 failed/, 'E_OOM');
  const after = rl.memoryStats('cuda');
  t.equal(after.liveAllocations, before.liveAllocations, 'the failed allocation is not counted');
  const x = cu(Float32Array.from([1, 2, 3, 4]), [4]);
  t.same(Array.from(await host(rl.maskedWhiten(x))), Array.from(rl.maskedWhiten(rl.tensor(Float32Array.from([1, 2, 3, 4]))).dataSync()),
    'an op on the device afterwards gives the CPU result');
  x.dispose();
});
