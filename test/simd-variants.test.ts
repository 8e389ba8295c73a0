// The instruction-set variants of the CPU kernels: RLHF_SIMD caps the one a process picks, and
// setCpuPath chooses among them for tests and benchmarks (the other suites run every path in
// helpers' cpuPaths against the reference).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import t from 'tap';

import * as rl from '../lib/index';
import { native } from '../lib/native';
import { cpuPaths, expectError, ft, snapshot, withCpuPath } from './helpers/index';

const dist = path.join(path.resolve(__dirname, '..'), 'dist', 'index.js');
const skipDist = fs.existsSync(dist) ? false : 'dist/ is not built (npx tsc -p tsconfig.json)';

// The variant a fresh process picks with RLHF_SIMD set to `cap` (undefined: not set).
function variantWith(cap: string | undefined): string {
  const env = { ...process.env };
  if (cap === undefined) delete env.RLHF_SIMD;
  else env.RLHF_SIMD = cap;
  const script = `process.stdout.write(require(${JSON.stringify(dist)}).buildInfo().simd)`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env, timeout: 60_000 });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return r.stdout;
}

t.test('RLHF_SIMD caps the variant a process picks', { skip: skipDist }, async (t) => {
  const best = variantWith(undefined);
  t.match(best, /^(avx512|avx2|x86-64)$/, `this CPU's variant: ${best}`);
  t.equal(variantWith('baseline'), 'x86-64', 'baseline: the x86-64 baseline');
  t.equal(variantWith('avx2'), best === 'avx512' ? 'avx2' : best, 'avx2: at most AVX2');
  t.equal(variantWith('avx512'), best, 'a cap at or above the best changes nothing');
});

t.test("setCpuPath takes 'auto', 'baseline', 'avx2' and 'reference', and names them when given another", async (t) => {
  // Token GAE is sequential: every path gives the reference's bits.
  const B = 17, T = 40;
  const rewards = ft(Array.from({ length: B * T }, (_, i) => Math.sin(i * 0.37)), [B, T]);
  const values = ft(Array.from({ length: B * T }, (_, i) => Math.cos(i * 0.11)), [B, T]);
  const mask = rl.tensor(Uint8Array.from({ length: B * T }, (_, i) => (i % 7 === 0 ? 0 : 1)), [B, T]);
  const run = () => snapshot(rl.tokenGae({ rewards, values, mask }, { gamma: 0.99, lambda: 0.95 }).advantages);
  const ref = withCpuPath('reference', run);
  for (const p of ['auto', 'baseline', 'avx2'] as const) {
    t.same(Array.from(withCpuPath(p, run)), Array.from(ref), `${p}: token GAE gives the reference's bits`);
  }
  t.ok(cpuPaths.includes('avx2') === (rl.buildInfo().simd === 'avx512'), 'the suites run AVX2 on its own where AVX-512 is in use');
  expectError(t, () => native().setCpuPath('avx1024' as never), RangeError, /expected 'auto', 'baseline', 'avx2' or 'reference' but received 'avx1024'/);
  native().setCpuPath('auto');
});

t.test("setReadStreams: the row passes that only read give the same bits one row at a time and several in step", async (t) => {
  // Rows of odd lengths with masked tokens, and rows ignored by their label among those read.
  const B = 11, T = 37, N = 9, V = 1003;
  const lp = ft(Array.from({ length: B * T }, (_, i) => -Math.abs(Math.sin(i * 0.71)) * 3), [B, T]);
  const mask = rl.tensor(Uint8Array.from({ length: B * T }, (_, i) => (i % 5 === 0 ? 0 : 1)), [B, T]);
  const logits = ft(Array.from({ length: N * V }, (_, i) => Math.sin(i * 0.013) * 9), [N, V]);
  const labels = rl.tensor(Int32Array.from({ length: N }, (_, i) => (i === 4 ? -100 : (i * 331) % V)), [N]);
  const run = (mode: 'one' | 'several') => {
    native().setReadStreams(mode);
    try {
      const r = rl.logprobsFromLogits(logits, labels, { entropy: true });
      return [snapshot(rl.sequenceLogprobs(lp, mask)), snapshot(r.logprobs), snapshot(r.entropy!)];
    } finally {
      native().setReadStreams('auto');
    }
  };
  const [one, several] = [run('one'), run('several')];
  for (const [i, name] of ['sequenceLogprobs', 'logprobs', 'entropy'].entries()) {
    t.same(Array.from(one[i]), Array.from(several[i]), `${name}: the same bits`);
  }
  expectError(t, () => native().setReadStreams('four' as never), RangeError, /expected 'auto', 'one' or 'several' but received 'four'/);
  for (const mode of ['one', 'several'] as const) {
    native().setReadStreams(mode);
    t.equal(rl.backends().cpu.readStreams, mode, `backends() reports '${mode}' once set`);
  }
  native().setReadStreams('auto');
});

// How a fresh process reads its rows with RLHF_READ_STREAMS set to `value` (undefined: not set).
function readStreamsWith(value: string | undefined): string {
  const env = { ...process.env };
  if (value === undefined) delete env.RLHF_READ_STREAMS;
  else env.RLHF_READ_STREAMS = value;
  const script = `process.stdout.write(require(${JSON.stringify(dist)}).backends().cpu.readStreams)`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env, timeout: 60_000 });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return r.stdout;
}

t.test('RLHF_READ_STREAMS overrides the choice by vendor (one row at a time on AMD)', { skip: skipDist }, async (t) => {
  const amd = /AuthenticAMD/.test(fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '');
  t.equal(readStreamsWith(undefined), amd ? 'one' : 'several', `by vendor (${amd ? 'AMD' : 'not AMD'})`);
  t.equal(readStreamsWith('one'), 'one');
  t.equal(readStreamsWith('several'), 'several');
});
