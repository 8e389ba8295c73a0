// The model interface of the sequence trainers: a bigram policy written outside rl.nn
// (examples/custom-policy.ts) trains with DPOTrainer and GRPOTrainer through SequencePolicy, and
// something that is not a policy is a named error.
import t from 'tap';

import * as rl from '../lib/index';
import { BigramPolicy, trainBigramWithDpo } from '../examples/custom-policy';
import { expectError } from './helpers/index';

t.test('DPO trains a policy from outside rl.nn', async (t) => {
  const { before, after } = trainBigramWithDpo(1);
  t.ok(before < 0.5 && after > 0.9, `held-out accuracy ${before} -> ${after}`);
});

t.test('GRPO trains it too, in place through AdamW', async (t) => {
  const tokenizer = rl.data.SimpleTokenizer.fromTexts(['the cat good bad']);
  const policy = new BigramPolicy(tokenizer.vocabSize);
  const trainer = new rl.GRPOTrainer({ prompts: ['the', 'cat', 'the cat'], tokenizer, policy, maxCompletionLength: 4,
    rewardFn: (_p, c) => c.split(' ').filter((w) => w === 'good').length, learningRate: 5e-2, maxSteps: 30, perDeviceTrainBatchSize: 3 });
  const steps = trainer.train();
  t.ok(steps[29].reward > steps[0].reward + 1, `reward ${steps[0].reward.toFixed(2)} -> ${steps[29].reward.toFixed(2)}`);
  t.ok(policy.parameters()[0].value.dataSync().some((x) => x !== 0), "the policy's own arrays were updated");
});

t.test('not a policy is a named error', async (t) => {
  expectError(t, () => new rl.DPOTrainer({ trainData: [{ prompt: 'a', chosen: 'b', rejected: 'c' }], policy: {} as never }),
    TypeError, /DPOTrainer: expected a SequencePolicy .* for `policy`/);
});
