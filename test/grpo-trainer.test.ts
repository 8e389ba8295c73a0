// GRPOTrainer on a toy task whose reward counts the word 'good' in a completion: the mean reward
// rises; completions stop at the end-of-sequence token or the length limit; the KL term is 0
// without a reference and grows with beta; every loss type trains; a seed fixes the run; bad
// configs and bad rewards are named errors.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import t from 'tap';

import * as rl from '../lib/index';
import { Random } from '../lib/nn/random';
import { GRPOConfig, GRPOTrainer } from '../lib/trainers/grpo';
import { expectBitIdentical, expectError } from './helpers/index';

const words = ['the', 'a', 'cat', 'dog', 'sat', 'ran', 'on', 'mat', 'good', 'bad'];

function prompts(seed: number, n: number): string[] {
  const rng = new Random(seed);
  return Array.from({ length: n }, () => Array.from({ length: 3 }, () => words[Math.floor(rng.uniform() * 8)]).join(' '));
}

const tokenizer = rl.data.SimpleTokenizer.fromTexts([words.join(' ')]);
const countGood = (_p: string, c: string) => c.split(' ').filter((w) => w === 'good').length;

function config(extra: Partial<GRPOConfig> = {}): GRPOConfig {
  return { prompts: prompts(1, 64), rewardFn: countGood, tokenizer, maxCompletionLength: 6, learningRate: 1e-2,
    perDeviceTrainBatchSize: 8, maxSteps: 30, seed: 1, ...extra };
}

function paramsOf(m: rl.nn.TokenPolicy): Float32Array {
  return Float32Array.from(m.parameters().flatMap((p) => Array.from(p.value.dataSync())));
}

t.test('the reward rises; completions respect the length limit; no reference without beta', async (t) => {
  const trainer = new GRPOTrainer(config());
  t.equal(trainer.reference, null, 'beta 0: no reference model');
  const steps = trainer.train();
  t.equal(steps.length, 30, 'maxSteps steps');
  const first = steps[0].reward, last = steps.slice(-5).reduce((a, m) => a + m.reward, 0) / 5;
  t.ok(last > first + 2, `mean reward ${first.toFixed(2)} -> ${last.toFixed(2)} (at most 6 per completion)`);
  t.ok(steps.every((m) => m.completionLength <= 6 && m.kl === 0), 'at most maxCompletionLength tokens, KL 0');
  t.ok(steps.every((m) => m.samplesPerSecond > 0 && m.tokensPerSecond > 0), 'throughput is reported');
  const completions = trainer.generate([tokenizer.encode('the cat sat')]);
  t.equal(completions.length, 8, 'numGenerations completions per prompt');
  t.ok(completions.every((c) => c.length >= 1 && c.length <= 6), 'each within the limit');
  t.ok(completions.every((c) => c.indexOf(rl.data.SimpleTokenizer.EOS) < 0 || c.indexOf(rl.data.SimpleTokenizer.EOS) === c.length - 1),
    'nothing follows an end-of-sequence token');
});

t.test('beta > 0 keeps a frozen reference and reports a growing KL', async (t) => {
  const trainer = new GRPOTrainer(config({ beta: 0.04, maxSteps: 15 }));
  const before = paramsOf(trainer.reference as rl.nn.TokenPolicy);
  const steps = trainer.train();
  t.ok(Math.abs(steps[0].kl) < 1e-6, `the first step starts at the reference: KL ${steps[0].kl.toExponential(1)} (rounding only)`);
  t.ok(steps[steps.length - 1].kl > 0, `and moves away from it (${steps[steps.length - 1].kl.toExponential(2)})`);
  expectBitIdentical(t, paramsOf(trainer.reference as rl.nn.TokenPolicy), before, 'the reference is frozen');
});

t.test('every loss type trains; a seed fixes the run', async (t) => {
  for (const lossType of ['grpo', 'bnpo', 'dr_grpo', 'dapo'] as const) {
    const steps = new GRPOTrainer(config({ lossType, maxSteps: 20 })).train();
    const last = steps.slice(-5).reduce((a, m) => a + m.reward, 0) / 5;
    t.ok(steps.every((m) => Number.isFinite(m.loss)) && last > steps[0].reward, `${lossType}: reward ${steps[0].reward.toFixed(2)} -> ${last.toFixed(2)}`);
  }
  const run = () => {
    const trainer = new GRPOTrainer(config({ maxSteps: 5 }));
    trainer.train();
    return paramsOf(trainer.policy);
  };
  expectBitIdentical(t, run(), run(), 'the same seed gives the same policy');
});

t.test('save and resume continue bit for bit', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlhf-grpo-ckpt-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const c = config({ beta: 0.04, maxSteps: 12, prompts: prompts(2, 20) });
  const straight = new GRPOTrainer(c);
  const straightSteps = straight.train();
  const first = new GRPOTrainer(c);
  for (let i = 0; i < 5; ++i) first.step();
  first.save(dir);
  const resumed = GRPOTrainer.resume(dir, c);
  const rest = resumed.train();
  t.equal(rest.length, 7, 'the remaining steps');
  expectBitIdentical(t, paramsOf(resumed.policy), paramsOf(straight.policy), '5 steps + resume + 7 == 12 steps');
  t.same(rest.map((m) => m.reward), straightSteps.slice(5).map((m) => m.reward), 'the same rewards after the resume');
});

t.test('bad configs and rewards are named errors', async (t) => {
  expectError(t, () => new GRPOTrainer({ prompts: [], rewardFn: countGood }), RangeError, /GRPOTrainer: `prompts` holds no prompts/);
  expectError(t, () => new GRPOTrainer({ prompts: [1] as never, rewardFn: countGood }), TypeError, /an array of strings for `prompts`/);
  expectError(t, () => new GRPOTrainer({ prompts: ['a'], rewardFn: 3 as never }), TypeError, /a function \(prompt, completion\) => number for `rewardFn`/);
  expectError(t, () => new GRPOTrainer(config({ numGenerations: 1 })), RangeError, /`numGenerations` must be an integer >= 2/);
  expectError(t, () => new GRPOTrainer(config({ lossType: 'ppo' as never })), RangeError, /`lossType` must be one of/);
  expectError(t, () => new GRPOTrainer(config({ temperature: 0 })), RangeError, /`temperature` must be a finite number/);
  expectError(t, () => new GRPOTrainer(config({ rewardFn: () => NaN })).train(), RangeError, /`rewardFn` returned NaN for completion 0/);
});
