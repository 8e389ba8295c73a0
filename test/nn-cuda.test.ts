// The neural-network family on CUDA, seen from TypeScript: rl.matmul and whole models (forward,
// backward, AdamW, clipping) on 'cuda' against the same on the CPU, within the op table's
// cudaTol scaled as the kernels round. Without a CUDA device every subtest is skipped.
import t from 'tap';

import * as rl from '../lib/index';
import { T as TapT, cudaSkip, cudaTol, expectClose, randomFloats, rng } from './helpers/index';

const opts = { skip: cudaSkip };

async function host(x: rl.Tensor): Promise<Float32Array> {
  return Float32Array.from((await x.data()) as Float32Array);
}

/** Every parameter (and gradient) of two models of the same config, side by side. */
async function expectSameModel(t: TapT, gpu: rl.nn.Module<object>, cpu: rl.nn.Module<object>, rtol: number, what: string) {
  const g = gpu.parameters(), c = cpu.parameters();
  for (let i = 0; i < c.length; ++i) {
    expectClose(t, await host(g[i].value), await host(c[i].value), { rtol, atol: rtol }, `${what}: ${c[i].name}`);
    if (c[i].grad !== null && g[i].grad !== null)
      expectClose(t, await host(g[i].grad as rl.Tensor), await host(c[i].grad as rl.Tensor), { rtol, atol: rtol }, `${what}: grad ${c[i].name}`);
  }
}

t.test('matmul on CUDA matches the CPU for every transpose combination', opts, async (t) => {
  const shapes: [number, number, number][] = [[1, 1, 1], [65, 33, 17], [128, 64, 4], [300, 257, 190], [512, 512, 512]];
  for (const [M, N, K] of shapes)
    for (const transA of [false, true])
      for (const transB of [false, true]) {
        const r = rng(M + N + K);
        const a = randomFloats(r, M * K), b = randomFloats(r, K * N);
        const A = rl.tensor(a, transA ? [K, M] : [M, K]), B = rl.tensor(b, transB ? [N, K] : [K, N]);
        const cpu = await host(rl.matmul(A, B, { transA, transB }));
        const gpu = await host(rl.matmul(A.to('cuda'), B.to('cuda'), { transA, transB }));
        // Both round float32 products over K terms of size ~1: allow a few K ulps of sqrt(K).
        expectClose(t, gpu, cpu, { rtol: cudaTol('matmul'), atol: 8 * K * 2 ** -24 * Math.sqrt(K) }, `[${M}x${N}x${K}] ${transA ? 'T' : 'N'}${transB ? 'T' : 'N'}`);
      }
});

t.test('an MLP trained on CUDA follows the CPU', opts, async (t) => {
  const make = (device: 'cpu' | 'cuda') => rl.nn.mlp({ inputSize: 4, hiddenSizes: [64, 64], outputSize: 2, activation: 'gelu', seed: 3, device });
  const cpu = make('cpu'), gpu = make('cuda');
  await expectSameModel(t, gpu, cpu, 0, 'same seed, same initial values');
  const x = randomFloats(rng(4), 128 * 4), g = randomFloats(rng(5), 128 * 2, 0.1);
  const oc = rl.optim.adamw(cpu.parameters(), { lr: 1e-3 }), og = rl.optim.adamw(gpu.parameters(), { lr: 1e-3 });
  for (let step = 0; step < 5; ++step) {
    for (const [m, o, dev] of [[cpu, oc, 'cpu'], [gpu, og, 'cuda']] as const) {
      m.zeroGrad();
      const out = m.forward(rl.tensor(x, [128, 4], { device: dev }));
      t.same(out.shape, [128, 2], `${dev} output shape`);
      m.backward(rl.tensor(g, [128, 2], { device: dev }), { inputGrad: false });
      const norm = rl.clipGradNorm(m.parameters(), 1.0);
      t.ok(Number.isFinite(norm), `${dev} gradient norm is finite`);
      o.step();
    }
  }
  await expectSameModel(t, gpu, cpu, 1e-4, 'after 5 AdamW steps');
});

t.test('token policy and reward model on CUDA match the CPU', opts, async (t) => {
  const policy = rl.nn.tokenPolicy({ vocabSize: 97, contextSize: 3, valueHead: true, seed: 6 });
  const policyGpu = policy.to('cuda');
  t.equal(policyGpu.device, 'cuda:0', 'to(cuda) moves the model');
  const ids = new Int32Array(40 * 3).map((_, i) => (i * 31) % 97);
  const gl = randomFloats(rng(7), 40 * 97, 0.01), gv = randomFloats(rng(8), 40);
  for (const [m, dev] of [[policy, 'cpu'], [policyGpu, 'cuda']] as const) {
    m.zeroGrad();
    m.forward(rl.tensor(ids, [40, 3], { device: dev }));
    m.backward({ gradLogits: rl.tensor(Float32Array.from(gl), [40, 97], { device: dev }), gradValues: rl.tensor(Float32Array.from(gv), [40], { device: dev }) });
  }
  await expectSameModel(t, policyGpu, policy, 1e-4, 'token policy gradients');
  const rm = rl.nn.rewardModel({ vocabSize: 50, seed: 9 });
  const rmGpu = rm.to('cuda');
  const tokens = new Int32Array(6 * 10).map((_, i) => (i * 7) % 50);
  const mask = new Uint8Array(60).map((_, i) => (i % 10 < 7 ? 1 : 0));
  const outs: Float32Array[] = [];
  for (const [m, dev] of [[rm, 'cpu'], [rmGpu, 'cuda']] as const) {
    m.zeroGrad();
    outs.push(await host(m.forward(rl.tensor(tokens, [6, 10], { device: dev }), rl.tensor(mask, [6, 10], { device: dev }))));
    m.backward(rl.tensor(new Float32Array(6).fill(1), [6], { device: dev }));
  }
  expectClose(t, outs[1], outs[0], { rtol: 1e-5, atol: 1e-6 }, 'rewards');
  await expectSameModel(t, rmGpu, rm, 1e-4, 'reward model gradients');
});

t.test('matmul outputs on CUDA are counted by memoryStats and freed by dispose', opts, async (t) => {
  const before = rl.memoryStats('cuda').liveAllocations;
  const x = rl.tensor(new Float32Array(16), [4, 4], { device: 'cuda' });
  const y = rl.matmul(x, x);
  t.ok(rl.memoryStats('cuda').liveAllocations >= before + 2, 'allocations are counted');
  x.dispose();
  y.dispose();
  t.equal(rl.memoryStats('cuda').liveAllocations, before, 'back to the start after dispose');
});
