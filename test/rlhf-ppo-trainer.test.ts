// RLHFPPOTrainer on a toy task (the score counts the word 'good'): the score rises while the KL
// to the frozen reference grows and is reported; a stronger KL coefficient holds the policy
// closer; the adaptive controller moves the coefficient towards its target; a reward model works
// as the reward; a seed fixes the run; bad configs are named errors.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import t from 'tap';

import * as rl from '../lib/index';
import { Random } from '../lib/nn/random';
import { RLHFPPOConfig, RLHFPPOTrainer } from '../lib/trainers/rlhf-ppo';
import { expectBitIdentical, expectError } from './helpers/index';

const words = ['the', 'a', 'cat', 'dog', 'sat', 'ran', 'on', 'mat', 'good', 'bad'];
const tokenizer = rl.data.SimpleTokenizer.fromTexts([words.join(' ')]);
const countGood = (_p: string, c: string) => c.split(' ').filter((w) => w === 'good').length;

function prompts(seed: number, n: number): string[] {
  const rng = new Random(seed);
  return Array.from({ length: n }, () => Array.from({ length: 3 }, () => words[Math.floor(rng.uniform() * 8)]).join(' '));
}

function config(extra: Partial<RLHFPPOConfig> = {}): RLHFPPOConfig {
  return { prompts: prompts(1, 64), tokenizer, reward: countGood, learningRate: 3e-3, batchSize: 32, miniBatchSize: 8, seed: 1,
    initKlCoef: 0.05, ...extra };
}

function run(trainer: RLHFPPOTrainer, steps: number): rl.RLHFStepMetrics[] {
  return Array.from({ length: steps }, () => trainer.step());
}

function paramsOf(m: rl.nn.TokenPolicy): Float32Array {
  return Float32Array.from(m.parameters().flatMap((p) => Array.from(p.value.dataSync())));
}

t.test('the score rises, the KL to the frozen reference is reported, the reference stays', async (t) => {
  const trainer = new RLHFPPOTrainer(config());
  const reference = paramsOf(trainer.reference);
  const steps = run(trainer, 15);
  t.ok(steps[0].kl < 1e-4, `the first rollout is the reference's: KL ${steps[0].kl.toExponential(1)}`);
  t.ok(steps[14].score > steps[0].score + 4, `score ${steps[0].score.toFixed(2)} -> ${steps[14].score.toFixed(2)} (at most 8)`);
  t.ok(steps[14].kl > 1, `the policy moved away from the reference: KL ${steps[14].kl.toFixed(2)}`);
  t.ok(steps.every((m) => m.completions.length === 32 && m.completionLength <= 8), 'batchSize completions within the length limit');
  t.ok(steps.every((m) => m.samplesPerSecond > 0 && m.tokensPerSecond >= m.samplesPerSecond && Number.isFinite(m.explainedVariance)),
    'throughput and explained variance are reported');
  t.ok(steps[14].explainedVariance > steps[0].explainedVariance, `the value head learns: explained variance ${steps[0].explainedVariance.toFixed(2)} -> ${steps[14].explainedVariance.toFixed(2)}`);
  expectBitIdentical(t, paramsOf(trainer.reference), reference, 'the reference is frozen');
  t.equal(trainer.generate(['the cat sat'], 3).length, 3, 'generate gives count completions');
});

t.test('the KL penalty holds the policy closer; the adaptive controller moves the coefficient', async (t) => {
  const loose = run(new RLHFPPOTrainer(config({ initKlCoef: 0 })), 12);
  const tight = run(new RLHFPPOTrainer(config({ initKlCoef: 2 })), 12);
  t.ok(tight[11].kl < loose[11].kl, `KL with coefficient 2: ${tight[11].kl.toFixed(2)} < with 0: ${loose[11].kl.toFixed(2)}`);
  const adaptive = run(new RLHFPPOTrainer(config({ initKlCoef: 0.05, target: 0.5, horizon: 100 })), 12);
  t.ok(adaptive[11].klCoef > adaptive[0].klCoef, `KL above its target raises the coefficient: ${adaptive[0].klCoef} -> ${adaptive[11].klCoef.toFixed(4)}`);
});

t.test('score placement and the missing-EOS penalty', async (t) => {
  const after = run(new RLHFPPOTrainer(config({ scorePlacement: 'after-last' })), 3);
  t.ok(after.every((m) => Number.isFinite(m.policyLoss)), "'after-last' trains");
  // Every completion of an untrained policy over 11 ids runs to the limit without EOS most of the time:
  // a penalty of 100 makes the shaped return of those rows far lower, so the value head's loss jumps.
  const plain = run(new RLHFPPOTrainer(config()), 1)[0];
  const penalised = run(new RLHFPPOTrainer(config({ missingEosPenalty: 100 })), 1)[0];
  t.ok(penalised.valueLoss > 10 * plain.valueLoss, `missingEosPenalty reaches the returns (value loss ${plain.valueLoss.toFixed(2)} -> ${penalised.valueLoss.toFixed(2)})`);
  expectError(t, () => new RLHFPPOTrainer(config({ scorePlacement: 'first' as never })), RangeError, /`scorePlacement` must be one of/);
});

t.test('a reward model as the reward; a seed fixes the run', async (t) => {
  const rm = rl.nn.rewardModel({ vocabSize: tokenizer.vocabSize, seed: 4 });
  const m = run(new RLHFPPOTrainer(config({ reward: rm })), 3);
  t.ok(m.every((x) => Number.isFinite(x.score) && Number.isFinite(x.policyLoss)), 'the reward model scores every completion');
  const a = new RLHFPPOTrainer(config()), b = new RLHFPPOTrainer(config());
  run(a, 3);
  run(b, 3);
  expectBitIdentical(t, paramsOf(b.policy), paramsOf(a.policy), 'the same seed gives the same policy');
});

t.test('save and resume continue bit for bit (the adaptive coefficient included)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlhf-rlhfppo-ckpt-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const c = config({ target: 0.5, horizon: 100, prompts: prompts(3, 40) });
  const straight = new RLHFPPOTrainer(c);
  const straightSteps = run(straight, 6);
  const first = new RLHFPPOTrainer(c);
  run(first, 3);
  first.save(dir);
  const resumed = RLHFPPOTrainer.resume(dir, c);
  const rest = run(resumed, 3);
  expectBitIdentical(t, paramsOf(resumed.policy), paramsOf(straight.policy), '3 steps + resume + 3 == 6 steps');
  t.same(rest.map((m) => [m.score, m.klCoef]), straightSteps.slice(3).map((m) => [m.score, m.klCoef]), 'the same scores and coefficients');
});

t.test('bad configs are named errors', async (t) => {
  expectError(t, () => new RLHFPPOTrainer(config({ prompts: [] })), RangeError, /RLHFPPOTrainer: `prompts` holds no prompts/);
  expectError(t, () => new RLHFPPOTrainer(config({ tokenizer: {} as never })), TypeError, /a SimpleTokenizer for `tokenizer`/);
  expectError(t, () => new RLHFPPOTrainer(config({ reward: 1 as never })), TypeError, /a RewardModel or a function/);
  expectError(t, () => new RLHFPPOTrainer(config({ miniBatchSize: 5 })), RangeError, /`miniBatchSize` must divide batchSize 32/);
  expectError(t, () => new RLHFPPOTrainer(config({ policy: rl.nn.tokenPolicy({ vocabSize: 20 }) })), RangeError, /needs a value head/);
  expectError(t, () => new RLHFPPOTrainer(config({ target: 0 })), RangeError, /`target` must be a number > 0 or null/);
  expectError(t, () => new RLHFPPOTrainer(config({ reward: () => Infinity })).step(), RangeError, /`reward` returned Infinity/);
});
