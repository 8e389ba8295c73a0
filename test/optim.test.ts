// rl.optim and rl.clipGradNorm: AdamW bit for bit against torch.optim.AdamW's float32 order
// (emulated with Math.fround) and within rounding of the published rule in float64, over several
// tensors and steps; the schedules; global-norm clipping; optimizer state save/load; bad input.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import t from 'tap';

import * as rl from '../lib/index';
import { native } from '../lib/native';
import { expectBitIdentical, expectError, expectNear, randomFloats, rng, withThreads } from './helpers/index';

const f = Math.fround;

function param(name: string, values: Float32Array, grad: Float32Array): rl.nn.Parameter {
  return { name, value: rl.tensor(values), grad: rl.tensor(grad) };
}

/** Tensors of several sizes (one past the native block of 8192, one empty) with random values and gradients. */
function makeParams(seed: number) {
  const r = rng(seed);
  return [5, 0, 8200, 64].map((n, i) => param(`p${i}`, randomFloats(r, n), randomFloats(r, n, 0.5)));
}

interface Hyper { lr: number; beta1: number; beta2: number; eps: number; wd: number }

/** torch.optim.AdamW (foreach=False) in float32, operation by operation, for step t. */
function adamwFloat32(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, step: number, h: Hyper): void {
  const decay = f(1 - h.lr * h.wd), w1 = f(1 - h.beta1), b2 = f(h.beta2), w2 = f(1 - h.beta2);
  const stepSize = f(h.lr / (1 - h.beta1 ** step)), bias2 = f(Math.sqrt(1 - h.beta2 ** step)), eps = f(h.eps);
  for (let i = 0; i < p.length; ++i) {
    const pd = f(p[i] * decay);
    m[i] = f(m[i] + f(w1 * f(g[i] - m[i])));
    v[i] = f(f(v[i] * b2) + f(f(w2 * g[i]) * g[i]));
    const denom = f(f(f(Math.sqrt(v[i])) / bias2) + eps);
    p[i] = f(pd + f(-stepSize * f(m[i] / denom)));
  }
}

/** The published rule (Loshchilov & Hutter, with Adam's bias corrections) in float64. */
function adamwFloat64(p: Float64Array, g: Float32Array, m: Float64Array, v: Float64Array, step: number, h: Hyper): void {
  for (let i = 0; i < p.length; ++i) {
    p[i] *= 1 - h.lr * h.wd;
    m[i] = h.beta1 * m[i] + (1 - h.beta1) * g[i];
    v[i] = h.beta2 * v[i] + (1 - h.beta2) * g[i] * g[i];
    const mHat = m[i] / (1 - h.beta1 ** step), vHat = v[i] / (1 - h.beta2 ** step);
    p[i] -= h.lr * mHat / (Math.sqrt(vHat) + h.eps);
  }
}

t.test('AdamW: PyTorch float32 order bit for bit, the published rule within rounding', async (t) => {
  const h: Hyper = { lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, wd: 0.05 };
  const params = makeParams(1);
  const opt = rl.optim.adamw(params, { lr: h.lr, betas: [h.beta1, h.beta2], eps: h.eps, weightDecay: h.wd });
  const emu = params.map((p) => ({
    p: Float32Array.from(p.value.dataSync() as Float32Array), m: new Float32Array(p.value.size), v: new Float32Array(p.value.size),
  }));
  const exact = params.map((p) => ({
    p: Float64Array.from(p.value.dataSync() as Float32Array), m: new Float64Array(p.value.size), v: new Float64Array(p.value.size),
  }));
  const r = rng(2);
  for (let step = 1; step <= 6; ++step) {
    params.forEach((p) => (p.grad as rl.Tensor).dataSync().set(randomFloats(r, p.value.size, step)));
    opt.step();
    params.forEach((p, i) => {
      const g = p.grad?.dataSync() as Float32Array;
      adamwFloat32(emu[i].p, g, emu[i].m, emu[i].v, step, h);
      adamwFloat64(exact[i].p, g, exact[i].m, exact[i].v, step, h);
    });
  }
  t.equal(opt.stepCount, 6, 'stepCount');
  params.forEach((p, i) => {
    const got = p.value.dataSync() as Float32Array;
    expectBitIdentical(t, got, emu[i].p, `${p.name}: torch's float32 order`);
    let worst = 0;
    for (let k = 0; k < got.length; ++k) worst = Math.max(worst, Math.abs(got[k] - exact[i].p[k]) / Math.max(1e-3, Math.abs(exact[i].p[k])));
    t.ok(worst < 1e-5, `${p.name}: within ${worst.toExponential(2)} of the float64 rule`);
  });
});

t.test('AdamW: decoupled weight decay, the first step, thread invariance', async (t) => {
  const p = param('w', new Float32Array([2, -4, 0.5]), new Float32Array(3));
  rl.optim.adamw([p], { lr: 0.1, weightDecay: 0.5 }).step();
  t.same(Array.from(p.value.dataSync()), [2, -4, 0.5].map((x) => f(x * f(1 - 0.1 * 0.5))), 'a zero gradient only decays');
  const q = param('w', new Float32Array([1, 1]), new Float32Array([3, -0.002]));
  rl.optim.adamw([q], { lr: 0.01, weightDecay: 0 }).step();
  const got = q.value.dataSync();
  expectNear(t, got[0], 1 - 0.01, { rtol: 1e-6 }, 'step 1 moves by lr * sign(g)');
  expectNear(t, got[1], 1 + 0.01, { rtol: 1e-6 }, 'for any gradient size');
  const run = (n: number) => withThreads(n, () => {
    const ps = makeParams(3);
    const opt = rl.optim.adamw(ps);
    for (let s = 0; s < 3; ++s) opt.step();
    return Float32Array.from(ps.flatMap((x) => Array.from(x.value.dataSync())));
  });
  expectBitIdentical(t, run(2), run(1), '2 threads equal 1');
});

t.test("AdamW over a model's parameters passes one buffer each, with the bits of the per-tensor lists", async (t) => {
  const make = () => rl.nn.mlp({ inputSize: 3, hiddenSizes: [8, 8], outputSize: 2, seed: 4 });
  const x = randomFloats(rng(7), 15), g = randomFloats(rng(8), 10);
  const a = make(), b = make();
  // The model's parameters lie back to back (one buffer); reversed, they do not (four lists).
  const optA = rl.optim.adamw(a.parameters(), { lr: 0.01 });
  const optB = rl.optim.adamw(b.parameters().reverse(), { lr: 0.01 });
  const addon = native() as unknown as { adamw: (...args: unknown[]) => unknown };
  const adamw = addon.adamw;
  const listLengths: number[] = [];
  addon.adamw = (...args: unknown[]) => {
    listLengths.push((args[0] as unknown[]).length);
    return adamw(...args);
  };
  t.teardown(() => {
    addon.adamw = adamw;
  });
  for (let s = 0; s < 4; ++s)
    for (const [m, opt] of [[a, optA], [b, optB]] as const) {
      opt.zeroGrad();
      m.forward(x);
      m.backward(g, { inputGrad: false });
      opt.step();
    }
  t.strictSame(listLengths, [1, 6, 1, 6, 1, 6, 1, 6], 'one buffer for the model order, six tensors reversed');
  for (const [i, p] of a.parameters().entries())
    expectBitIdentical(t, p.value.dataSync() as Float32Array, b.parameters()[i].value.dataSync() as Float32Array, `${p.name} after 4 steps`);
  expectBitIdentical(t, a.parameters()[0].grad?.dataSync() as Float32Array, b.parameters()[0].grad?.dataSync() as Float32Array,
    'zeroGrad through the one buffer too');
  // A disposed parameter is named, as with the lists.
  a.parameters()[2].value.dispose();
  expectError(t, () => optA.step(), Error, /AdamW\.step: `params\[2\]` has been disposed/, 'E_DISPOSED');
});

t.test('schedules', async (t) => {
  const lin = rl.optim.linearSchedule({ totalSteps: 10, warmupSteps: 2 });
  t.same([0, 1, 2, 6, 10, 12].map(lin), [0, 0.5, 1, 0.5, 0, 0], 'linear: warm-up, decay to 0, stays 0');
  const anneal = rl.optim.linearSchedule({ totalSteps: 4 });
  t.same([0, 1, 2, 3].map(anneal), [1, 0.75, 0.5, 0.25], "linear without warm-up: CleanRL's 1 - step/total");
  const cos = rl.optim.cosineSchedule({ totalSteps: 12, warmupSteps: 2 });
  t.same([0, 1, 2, 12].map(cos), [0, 0.5, 1, 0], 'cosine: warm-up, 1 at its end, 0 at totalSteps');
  expectNear(t, cos(7), 0.5, { rtol: 1e-12 }, 'cosine: half-way is 0.5');
  t.equal(rl.optim.constantSchedule()(1000), 1, 'constant');
  const p = param('w', new Float32Array([1]), new Float32Array([1]));
  const opt = rl.optim.adamw([p], { lr: 0.1, schedule: rl.optim.linearSchedule({ totalSteps: 4 }) });
  const lrs: number[] = [];
  for (let s = 0; s < 4; ++s) {
    lrs.push(opt.lr);
    opt.step();
  }
  t.same(lrs.map((x) => Number(x.toFixed(12))), [0.1, 0.075, 0.05, 0.025], 'the optimizer follows its schedule');
  expectError(t, () => rl.optim.linearSchedule({ totalSteps: 0 }), RangeError, /`totalSteps` must be an integer >= 1/);
  expectError(t, () => rl.optim.cosineSchedule({ totalSteps: 5, warmupSteps: 6 }), RangeError, /`warmupSteps` must be an integer in \[0, totalSteps\]/);
});

t.test('clipGradNorm', async (t) => {
  const params = makeParams(4);
  let sq = 0;
  for (const p of params) for (const g of p.grad?.dataSync() as Float32Array) sq += g * g;
  const before = params.map((p) => Float32Array.from(p.grad?.dataSync() as Float32Array));
  const norm = rl.clipGradNorm(params, 1e9);
  expectNear(t, norm, Math.sqrt(sq), { rtol: 1e-12 }, 'returns the global L2 norm');
  params.forEach((p, i) => expectBitIdentical(t, p.grad?.dataSync() as Float32Array, before[i], `${p.name} untouched under the limit`));
  rl.clipGradNorm(params, 2);
  let after = 0;
  for (const p of params) for (const g of p.grad?.dataSync() as Float32Array) after += g * g;
  expectNear(t, Math.sqrt(after), 2, { rtol: 1e-5 }, 'scaled to maxNorm');
  const coef = f(2 / (norm + 1e-6));
  t.equal(params[3].grad?.dataSync()[7], f(before[3][7] * coef), 'by maxNorm / (norm + 1e-6), in float32');
  const bad = [param('w', new Float32Array(2), new Float32Array([1, NaN]))];
  expectError(t, () => rl.clipGradNorm(bad, 1), RangeError, /clipGradNorm: `params` have a gradient norm of NaN/);
  t.ok(Number.isNaN(rl.clipGradNorm(bad, 1, { errorIfNonfinite: false })), 'errorIfNonfinite: false returns the NaN norm');
  t.same(Array.from(bad[0].grad?.dataSync() as Float32Array).map(String), ['1', 'NaN'], '...and scales nothing');
  expectError(t, () => rl.clipGradNorm(params, -1), RangeError, /`maxNorm` must be in \[0, Infinity\)/);
  expectError(t, () => rl.clipGradNorm(params, undefined as unknown as number), TypeError, /a number for `maxNorm`/);
});

t.test('optimizer state: save, load, resume', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlhf-optim-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const grads = (s: number) => randomFloats(rng(100 + s), 8200, 0.5);
  const schedule = rl.optim.linearSchedule({ totalSteps: 10 });
  const straight = makeParams(5).slice(2, 3);
  const a = rl.optim.adamw(straight, { schedule });
  for (let s = 0; s < 6; ++s) {
    straight[0].grad?.dataSync().set(grads(s));
    a.step();
  }
  const resumed = makeParams(5).slice(2, 3);
  const b = rl.optim.adamw(resumed, { schedule });
  for (let s = 0; s < 3; ++s) {
    resumed[0].grad?.dataSync().set(grads(s));
    b.step();
  }
  const file = path.join(dir, 'adamw.safetensors');
  b.saveState(file);
  const values = Float32Array.from(resumed[0].value.dataSync() as Float32Array);
  const fresh = [param('p2', values, new Float32Array(values.length))];
  const c = rl.optim.adamw(fresh, { schedule });
  c.loadState(file);
  t.equal(c.stepCount, 3, 'the step count is restored');
  for (let s = 3; s < 6; ++s) {
    fresh[0].grad?.dataSync().set(grads(s));
    c.step();
  }
  expectBitIdentical(t, fresh[0].value.dataSync() as Float32Array, straight[0].value.dataSync() as Float32Array,
    'save at step 3 + load + 3 steps == 6 steps');
  const other = rl.optim.adamw([param('q', new Float32Array(3), new Float32Array(3))]);
  expectError(t, () => other.loadState(file), Error, /has no float32 'm.0.q'/, 'E_FORMAT');
});

t.test('bad input', async (t) => {
  const p = param('w', new Float32Array(2), new Float32Array(2));
  expectError(t, () => rl.optim.adamw(p as unknown as rl.nn.Parameter[]), TypeError, /an array of parameters/);
  expectError(t, () => rl.optim.adamw([{ name: 'x', value: p.value, grad: null }]), RangeError, /has no gradient: its model is frozen/);
  expectError(t, () => rl.optim.adamw([p], { lr: -1 }), RangeError, /`lr` must be in \[0, Infinity\)/);
  expectError(t, () => rl.optim.adamw([p], { betas: [0.9, 1] }), RangeError, /`betas\[1\]` must be in \[0, 1\)/);
  expectError(t, () => rl.optim.adamw([p], { betas: 0.9 as unknown as [number, number] }), TypeError, /a pair \[beta1, beta2\]/);
  expectError(t, () => rl.optim.adamw([p], { eps: 0 }), RangeError, /`eps` must be > 0/);
  const mismatched = { name: 'y', value: rl.tensor(new Float32Array(3)), grad: rl.tensor(new Float32Array(2)) };
  expectError(t, () => rl.optim.adamw([mismatched]).step(), RangeError, /adamw: `grads\[0\]` must hold 3 elements/);
  // The same when the values and the gradients each lie back to back and only the totals agree.
  const values = new Float32Array(5), grads = new Float32Array(5);
  const crossed = [
    { name: 'a', value: rl.tensor(values.subarray(0, 3)), grad: rl.tensor(grads.subarray(0, 2)) },
    { name: 'b', value: rl.tensor(values.subarray(3, 5)), grad: rl.tensor(grads.subarray(2, 5)) },
  ];
  expectError(t, () => rl.optim.adamw(crossed).step(), RangeError, /adamw: `grads\[0\]` must hold 3 elements/);
  const opt = rl.optim.adamw([p], { schedule: () => NaN });
  expectError(t, () => opt.step(), RangeError, /`schedule` gave the learning rate NaN at step 0/);
});
