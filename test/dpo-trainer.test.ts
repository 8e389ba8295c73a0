// DPOTrainer on a synthetic preference task (the chosen completion ends 'good', the rejected
// 'bad'): the held-out loss falls from ln 2 and the implicit reward ranks the pairs; the policy
// itself comes to prefer 'good'; the reference stays frozen; every loss type trains; JSONL
// input; determinism for a seed; bad configs are named errors.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import t from 'tap';

import * as rl from '../lib/index';
import { Random } from '../lib/nn/random';
import { DPOTrainer } from '../lib/trainers/dpo';
import { completionBatch, completionLogprobs } from '../lib/trainers/sequences';
import { expectBitIdentical, expectError } from './helpers/index';

const words = ['the', 'a', 'cat', 'dog', 'sat', 'ran', 'on', 'mat', 'log', 'big', 'small', 'red'];

function pairs(seed: number, n: number): rl.data.PreferencePair[] {
  const rng = new Random(seed);
  const pick = () => words[Math.floor(rng.uniform() * words.length)];
  return Array.from({ length: n }, () => {
    const body = `${pick()} ${pick()}`;
    return { prompt: `${pick()} ${pick()} ${pick()}`, chosen: `${body} good`, rejected: `${body} bad` };
  });
}

function paramsOf(m: rl.nn.TokenPolicy): Float32Array {
  return Float32Array.from(m.parameters().flatMap((p) => Array.from(p.value.dataSync())));
}

/** log p('good') - log p('bad') as the completion's last word, averaged over the pairs. */
function preferenceForGood(trainer: DPOTrainer, data: rl.data.PreferencePair[]): number {
  const tok = trainer.tokenizer;
  let sum = 0;
  for (const p of data) {
    const prompt = tok.encode(`${p.prompt} ${p.chosen.split(' ').slice(0, 2).join(' ')}`);
    const batch = completionBatch([prompt, prompt], [tok.encode('good'), tok.encode('bad')], trainer.policy.config.contextSize);
    const lp = completionLogprobs(trainer.policy, batch).logprobs;
    sum += lp[0] - lp[1];
  }
  return sum / data.length;
}

t.test('learns the preference: held-out loss, accuracy and margin, and the policy itself', async (t) => {
  const trainer = new DPOTrainer({ trainData: pairs(1, 300), evalData: pairs(2, 100), learningRate: 3e-3, numTrainEpochs: 3,
    perDeviceTrainBatchSize: 16, seed: 1 });
  const before = trainer.evaluate();
  t.ok(Math.abs(before.loss - Math.LN2) < 1e-6, `before training the policy is its reference: loss ln 2 (${before.loss})`);
  const referenceBefore = paramsOf(trainer.reference);
  const goodBefore = preferenceForGood(trainer, pairs(3, 50));
  const evaluations: rl.DPOEvaluation[] = [];
  trainer.on('evaluate', (e: rl.DPOEvaluation) => evaluations.push(e));
  const steps: rl.DPOStepMetrics[] = [];
  trainer.on('step', (m: rl.DPOStepMetrics) => steps.push(m));
  const s = trainer.train();
  t.equal(s.steps, 3 * Math.ceil(300 / 16), 'one step per minibatch per epoch');
  t.equal(steps.length, s.steps, 'a step event each');
  t.equal(evaluations.length, 3, 'an evaluation per epoch');
  t.ok(evaluations[2].loss < 0.35, `held-out loss falls from 0.693 to ${evaluations[2].loss.toFixed(3)}`);
  t.equal(s.evalAccuracy, 1, 'the implicit reward ranks every held-out pair');
  t.ok(evaluations[2].margin > evaluations[0].margin && evaluations[0].margin > 0, 'the margin grows');
  const goodAfter = preferenceForGood(trainer, pairs(3, 50));
  t.ok(goodAfter > goodBefore + 1, `the policy now prefers 'good': log-odds ${goodBefore.toFixed(2)} -> ${goodAfter.toFixed(2)}`);
  expectBitIdentical(t, paramsOf(trainer.reference), referenceBefore, 'the reference is frozen');
  t.ok(steps[steps.length - 1].learningRate < steps[0].learningRate, 'the learning rate decays linearly');
});

// DiscoPOP is left out of the accuracy check: at the reference (z = 0) its loss falls as z
// decreases, dl/dz = -3/4 + (1 - ln 2)/(4 tau) > 0 for tau = 0.05, so from there it first widens
// the wrong way; that is the published loss, not this trainer.
t.test('every loss type trains without NaN', async (t) => {
  const types: rl.DpoLossType[] = ['sigmoid', 'robust', 'hinge', 'ipo', 'sigmoid_norm', 'exo_pair', 'nca_pair', 'bco_pair',
    'sppo_hard', 'apo_zero', 'apo_down', 'discopop'];
  for (const lossType of types) {
    const trainer = new DPOTrainer({ trainData: pairs(4, 64), evalData: pairs(5, 32), lossType, learningRate: 3e-3,
      labelSmoothing: lossType === 'exo_pair' ? 1e-3 : 0, perDeviceTrainBatchSize: 16, numTrainEpochs: 2, seed: 2 });
    const s = trainer.train();
    const ranks = lossType === 'discopop' || (s.evalAccuracy ?? 0) >= 0.9;
    t.ok(Number.isFinite(s.trainLoss) && ranks, `${lossType}: finite loss ${s.trainLoss.toFixed(3)}, held-out accuracy ${s.evalAccuracy}`);
  }
});

t.test('JSONL input, determinism for a seed', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlhf-dpo-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'prefs.jsonl');
  fs.writeFileSync(file, pairs(6, 40).map((p) => JSON.stringify(p)).join('\n') + '\n');
  const run = () => {
    const trainer = new DPOTrainer({ trainData: file, learningRate: 1e-3, perDeviceTrainBatchSize: 8, seed: 9 });
    trainer.train();
    return paramsOf(trainer.policy);
  };
  expectBitIdentical(t, run(), run(), 'the same seed gives the same policy');
});

t.test('save and resume continue bit for bit', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlhf-dpo-ckpt-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const config = { trainData: pairs(8, 80), learningRate: 3e-3, perDeviceTrainBatchSize: 16, numTrainEpochs: 2, seed: 4 };
  const straight = new DPOTrainer(config);
  straight.train();
  const first = new DPOTrainer(config);
  t.equal(first.steps(7).length, 7, 'steps(n) runs n steps (into the second epoch)');
  first.save(dir);
  const resumed = DPOTrainer.resume(dir, config);
  t.equal(resumed.stepCount, 7, 'the step count is restored');
  t.equal(resumed.train().steps, 10 - 7, 'the rest of the run');
  expectBitIdentical(t, paramsOf(resumed.policy), paramsOf(straight.policy), '7 steps + resume + 3 == 10 steps');
  expectError(t, () => DPOTrainer.resume(path.join(dir, 'missing'), config), Error, /cannot read/, 'E_IO');
});

t.test('bad configs are named errors', async (t) => {
  const data = pairs(7, 8);
  expectError(t, () => new DPOTrainer({ trainData: [] }), RangeError, /DPOTrainer: `trainData` holds no pairs/);
  expectError(t, () => new DPOTrainer({ trainData: 3 as never }), TypeError, /`trainData`/);
  expectError(t, () => new DPOTrainer({ trainData: data, beta: 0 }), RangeError, /`beta` must be a finite number > 0/);
  expectError(t, () => new DPOTrainer({ trainData: data, lossType: 'kto' as never }), RangeError, /`lossType` must be one of/);
  expectError(t, () => new DPOTrainer({ trainData: data, perDeviceTrainBatchSize: 0 }), RangeError, /`perDeviceTrainBatchSize` must be an integer >= 1/);
  expectError(t, () => new DPOTrainer({ trainData: data, warmupRatio: 2 }), RangeError, /`warmupRatio` must be in \[0, 1\]/);
  expectError(t, () => new DPOTrainer({ trainData: data, policy: rl.nn.tokenPolicy({ vocabSize: 3 }) }), RangeError, /`policy` has a vocabulary of 3/);
  expectError(t, () => new DPOTrainer({ trainData: '/no/such/file.jsonl' }), Error, /no\/such\/file\.jsonl/, 'E_IO');
  expectError(t, () => new DPOTrainer({ trainData: data }).evaluate(), RangeError, /the trainer has no evalData/);
});
