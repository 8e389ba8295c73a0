// The reward-model trainer (lib/trainers/reward.ts) and its data helpers (lib/data): learning a
// synthetic preference, bit-identical resuming from a mid-epoch checkpoint, margins as SEMANTICS
// §7 defines them, named errors for bad configs and broken JSONL, TRL's conversational layout,
// and the tokenizer's round trip and determinism.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';

import * as rl from '../lib/index';
import { expectBitIdentical, expectError, rng, snapshot } from './helpers/index';

const { SimpleTokenizer, readPreferences } = rl.data;
type Pair = rl.data.PreferencePair;

const words = ['apple', 'river', 'stone', 'cloud', 'tree', 'house', 'light', 'music', 'paper', 'green', 'quick', 'slow',
  'table', 'window', 'dog', 'cat', 'road', 'sky', 'sun', 'moon'];

/**
 * Pairs whose chosen text holds one 'good' more than the rejected one, among 12-17 random words
 * each: the other words are noise a fresh model cannot tell from the signal, so it starts near
 * chance.
 */
function synthetic(seed: number, n: number): Pair[] {
  const r = rng(seed);
  const pick = () => words[Math.floor(r() * words.length)];
  const text = (goods: number) => {
    const toks = Array.from({ length: 12 + Math.floor(r() * 6) }, pick);
    toks.fill('good', 0, goods);
    for (let i = toks.length - 1; i > 0; --i) {
      const j = Math.floor(r() * (i + 1));
      [toks[i], toks[j]] = [toks[j], toks[i]];
    }
    return toks.join(' ');
  };
  return Array.from({ length: n }, () => {
    const goods = Math.floor(r() * 3);
    return { prompt: Array.from({ length: 3 }, pick).join(' '), chosen: text(goods + 1), rejected: text(goods) };
  });
}

const data = synthetic(1, 400);
const trainData = data.slice(0, 300);
const evalData = data.slice(300);

function tmpDir(t: { teardown(fn: () => void): unknown }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlhf-reward-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function parameters(model: rl.nn.RewardModel): Float32Array[] {
  return model.parameters().map((p) => snapshot(p.value));
}

t.test('learns a synthetic preference: held-out accuracy from chance to > 0.9, loss falls', (t) => {
  const trainer = new rl.RewardTrainer({ trainData, evalData, learningRate: 1e-2, numTrainEpochs: 3, seed: 0 });
  const before = trainer.evaluate();
  const steps: rl.RewardStepMetrics[] = [];
  const evals: rl.RewardEvalMetrics[] = [];
  trainer.on('step', (m: rl.RewardStepMetrics) => steps.push(m));
  trainer.on('evaluate', (m: rl.RewardEvalMetrics) => evals.push(m));
  const summary = trainer.train();
  t.ok(before.accuracy > 0.35 && before.accuracy < 0.65, `a fresh model is near chance (${before.accuracy})`);
  t.ok(summary.evalAccuracy! > 0.9, `held-out accuracy after training ${summary.evalAccuracy}`);
  t.ok(summary.evalLoss! < before.loss / 4 && summary.evalLoss! < Math.log(2) / 4, `held-out loss ${before.loss} -> ${summary.evalLoss}`);
  t.equal(trainer.stepsPerEpoch, Math.ceil(300 / 8), 'steps per epoch at TRL\'s batch size 8 (the last batch short)');
  t.equal(summary.steps, 3 * trainer.stepsPerEpoch, 'steps in all');
  t.equal(steps.length, summary.steps, "one 'step' event per step");
  t.same(evals.map((e) => e.epoch), [1, 2, 3], "one 'evaluate' event per epoch");
  t.equal(evals[2].accuracy, summary.evalAccuracy, 'the summary reports the last evaluation');
  t.equal(steps[0].learningRate, 1e-2, 'no warm-up by default: the first step uses the full rate');
  t.ok(steps[steps.length - 1].learningRate < 1e-2 / steps.length * 1.01, 'the rate decays linearly towards 0');
  t.ok(Math.abs(steps[steps.length - 1].epoch - 3) < 1e-12, 'fractional epochs end at numTrainEpochs');
  t.same(trainer.evaluate(), { loss: evals[2].loss, accuracy: evals[2].accuracy }, 'evaluate() is forward only: it does not change the model');
  t.end();
});

t.test('resuming from a mid-epoch checkpoint equals the uninterrupted run bit for bit', (t) => {
  const dir = tmpDir(t);
  const logFile = path.join(dir, 'log.jsonl');
  const config: rl.RewardConfig = { trainData, evalData, learningRate: 3e-3, numTrainEpochs: 2, warmupRatio: 0.1,
    centerRewardsCoefficient: 0.01, weightDecay: 0.01, seed: 7 };
  const whole = new rl.RewardTrainer(config);
  const wholeSummary = whole.train();

  const first = new rl.RewardTrainer({ ...config, logFile });
  for (let i = 0; i < first.stepsPerEpoch + 5; ++i) first.step();  // stop inside the second epoch
  first.save(path.join(dir, 'ckpt'));
  t.same(fs.readdirSync(path.join(dir, 'ckpt')).sort(), ['model.safetensors', 'optimizer.safetensors', 'trainer.json'],
    'a checkpoint is three files, no temporaries left');
  // Only the data is given again: the settings come from the checkpoint.
  const resumed = rl.RewardTrainer.resume(path.join(dir, 'ckpt'), { trainData, evalData, logFile });
  t.equal(resumed.stepCount, first.stepsPerEpoch + 5, 'the step count is restored');
  t.same(resumed.settings, whole.settings, 'the settings are restored');
  const resumedSummary = resumed.train();

  const want = parameters(whole.model);
  const got = parameters(resumed.model);
  want.forEach((w, i) => expectBitIdentical(t, got[i], w, `parameter ${whole.model.parameters()[i].name}`));
  t.equal(resumedSummary.trainLoss, wholeSummary.trainLoss, 'the mean training loss counts the steps before the checkpoint');
  t.equal(resumedSummary.evalAccuracy, wholeSummary.evalAccuracy, 'same final evaluation');
  const lines = fs.readFileSync(logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.equal(lines.filter((l) => 'loss' in l).length, wholeSummary.steps, 'the log holds one line per step across both runs');
  t.equal(lines.filter((l) => 'evalAccuracy' in l).length, 2, 'and one per evaluation');

  const state = JSON.parse(fs.readFileSync(path.join(dir, 'ckpt', 'trainer.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'ckpt', 'trainer.json'), JSON.stringify({ ...state, step: state.step + 1 }));
  expectError(t, () => rl.RewardTrainer.resume(path.join(dir, 'ckpt'), { trainData }), Error, /incomplete checkpoint/, 'E_FORMAT',
    'a checkpoint whose files disagree on the step');
  expectError(t, () => rl.RewardTrainer.resume(path.join(dir, 'none'), { trainData }), Error, /trainer\.json/, 'E_IO',
    'a missing checkpoint');
  t.end();
});

t.test('margins: the loss is mean(-logsig(rc - rr - margin)) (SEMANTICS §7)', (t) => {
  const trainer = new rl.RewardTrainer({ trainData: trainData.slice(0, 16), seed: 2 });
  const pair = trainData[0];
  const plain = trainer.evaluate([pair]).loss;
  // -logsig(d) = plain gives d = rc - rr; a margin m then gives -logsig(d - m) = log(1 + exp(m - d)).
  const d = -Math.log(Math.expm1(plain));
  for (const margin of [3, -2]) {
    const got = trainer.evaluate([{ ...pair, margin }]).loss;
    const want = Math.log1p(Math.exp(margin - d));
    t.ok(Math.abs(got - want) < 1e-4 * Math.max(1, want), `margin ${margin}: loss ${got}, want ${want}`);
  }
  const withMargins = new rl.RewardTrainer({ trainData: trainData.slice(0, 16).map((p) => ({ ...p, margin: 5 })), seed: 2 });
  const withoutMargins = new rl.RewardTrainer({ trainData: trainData.slice(0, 16), seed: 2 });
  t.ok(withMargins.step().loss > withoutMargins.step().loss + 1, 'training steps use the margins too');
  t.end();
});

t.test('bad configs are named errors', (t) => {
  const ok = { trainData: trainData.slice(0, 8) };
  expectError(t, () => new rl.RewardTrainer({ ...ok, perDeviceTrainBatchSize: 0 }), RangeError,
    /^RewardTrainer: `perDeviceTrainBatchSize` must be an integer >= 1 but is 0/, undefined, 'batch size 0');
  expectError(t, () => new rl.RewardTrainer({ ...ok, learningRate: '1e-3' as unknown as number }), TypeError,
    /^RewardTrainer: expected a finite number >= 0 for `learningRate` but received '1e-3'/, undefined, 'a string learning rate');
  expectError(t, () => new rl.RewardTrainer({ ...ok, maxLength: 2.5 }), RangeError, /`maxLength`/, undefined, 'a fractional maxLength');
  expectError(t, () => new rl.RewardTrainer({ ...ok, warmupRatio: 2 }), RangeError, /`warmupRatio` must be in \[0, 1\]/, undefined,
    'warmupRatio above 1');
  expectError(t, () => new rl.RewardTrainer({ ...ok, batchSize: 8 } as unknown as rl.RewardConfig), RangeError,
    /^RewardTrainer: `config.batchSize` is not an option \(they are: model, tokenizer, .*perDeviceTrainBatchSize/, undefined,
    'an unknown option');
  expectError(t, () => new rl.RewardTrainer({ trainData: [] }), RangeError, /`trainData` holds no preference pairs/, undefined, 'no pairs');
  expectError(t, () => new rl.RewardTrainer({ ...ok, evalData: [] }), RangeError, /`evalData` holds no preference pairs/, undefined,
    'no eval pairs');
  expectError(t, () => new rl.RewardTrainer({} as rl.RewardConfig), TypeError, /for `trainData`/, undefined, 'no trainData');
  expectError(t, () => new rl.RewardTrainer({ trainData: [{ prompt: 'p', chosen: 'a' }] as unknown as Pair[] }), TypeError,
    /`trainData\[0\]` has no `rejected`/, undefined, 'a pair without `rejected`');
  expectError(t, () => new rl.RewardTrainer({ ...ok, model: rl.nn.mlp({ inputSize: 2, outputSize: 1 }) as unknown as rl.nn.RewardModel }),
    TypeError, /a RewardModel .* for `model`/, undefined, 'a model of another kind');
  expectError(t, () => new rl.RewardTrainer({ ...ok, model: rl.nn.rewardModel({ vocabSize: 10 }),
    tokenizer: SimpleTokenizer.fromTexts(words) }), RangeError, /`tokenizer` has 23 ids but the model's vocabSize is 10/, undefined,
  'a tokenizer with more ids than the model');
  const trainer = new rl.RewardTrainer(ok);
  expectError(t, () => trainer.evaluate(), RangeError, /`data` is needed: the trainer has no evalData/, undefined, 'evaluate() without data');
  trainer.train();
  expectError(t, () => trainer.step(), RangeError, /all 1 steps are taken/, undefined, 'a step past the end');
  t.end();
});

t.test('a model given to the trainer is trained with the default tokenizer cut to its vocabulary', (t) => {
  const model = rl.nn.rewardModel({ vocabSize: 8, seed: 1 });
  const trainer = new rl.RewardTrainer({ trainData: trainData.slice(0, 8), model });
  t.equal(trainer.tokenizer.vocabSize, 8, 'the tokenizer keeps the 5 most frequent words');
  const before = parameters(model);
  trainer.train();
  t.ok(parameters(model).some((p, i) => p.some((x, j) => x !== before[i][j])), 'the given model is the one trained');
  t.end();
});

t.test('JSONL: TRL layouts, and broken lines named by file and line', (t) => {
  const dir = tmpDir(t);
  const file = path.join(dir, 'prefs.jsonl');
  fs.writeFileSync(file, [
    JSON.stringify({ prompt: 'Hi', chosen: 'Hello!', rejected: 'Go away.' }),
    '',
    JSON.stringify({ chosen: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }],
      rejected: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'No.' }], margin: 1.5 }),
    JSON.stringify({ prompt: [{ role: 'user', content: 'Q' }], chosen: [{ role: 'assistant', content: 'A' }],
      rejected: [{ role: 'assistant', content: 'B' }] }),
    '   ',
  ].join('\n'));
  t.same(readPreferences(file), [
    { prompt: 'Hi', chosen: 'Hello!', rejected: 'Go away.' },
    { prompt: '', chosen: 'Hi\nHello!', rejected: 'Hi\nNo.', margin: 1.5 },
    { prompt: 'Q', chosen: 'A', rejected: 'B' },
  ], 'standard, implicit-prompt conversational and explicit-prompt conversational rows; blank lines skipped');
  const trainer = new rl.RewardTrainer({ trainData: file, evalData: file });
  t.equal(trainer.trainData.length, 3, 'a JSONL path is accepted as trainData');

  const broken = (lines: string[], want: RegExp, what: string) => {
    fs.writeFileSync(file, lines.join('\n') + '\n');
    expectError(t, () => readPreferences(file), Error, want, 'E_FORMAT', what);
  };
  const good = JSON.stringify({ chosen: 'a', rejected: 'b' });
  const where = (line: number) => `^readPreferences: line ${line} of '${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}'`;
  broken([good, '', '{"chosen": "a", "rejected"'], new RegExp(`${where(3)} is not JSON`), 'not JSON');
  broken([good, JSON.stringify({ rejected: 'b' })], new RegExp(`${where(2)} has no \`chosen\``), 'missing `chosen`');
  broken([JSON.stringify({ chosen: 3, rejected: 'b' })], new RegExp(`${where(1)} has a \`chosen\` that is not a string or a list`),
    '`chosen` a number');
  broken([JSON.stringify({ chosen: [{ role: 'user' }], rejected: 'b' })], /line 1 .* has a `chosen` that is not a string or a list/,
    'a message without content');
  broken([good, good, JSON.stringify({ chosen: 'a', rejected: 'b', margin: 'big' })], new RegExp(`${where(3)} has a \`margin\` that is not a finite number`),
    'a margin that is not a number');
  broken(['[1, 2]'], new RegExp(`${where(1)} is an Array, not an object`), 'an array line');
  expectError(t, () => readPreferences(path.join(dir, 'missing.jsonl')), Error, /cannot read '.*missing\.jsonl'/, 'E_IO', 'a missing file');
  expectError(t, () => new rl.RewardTrainer({ trainData: path.join(dir, 'missing.jsonl') }), Error, /missing\.jsonl/, 'E_IO',
    'a missing trainData file');
  t.end();
});

t.test('SimpleTokenizer: reserved ids, deterministic vocabulary, round trip', (t) => {
  const texts = ['The cat sat.', 'the dog sat, the cat ran!'];
  const tok = SimpleTokenizer.fromTexts(texts);
  // Counts: the 3, cat 2, sat 2, . 1, , 1, ! 1, dog 1, ran 1 -> by count, then code-unit order.
  t.same(tok.toJSON(), { level: 'word', tokens: ['the', 'cat', 'sat', '!', ',', '.', 'dog', 'ran'] }, 'frequency, then lexicographic');
  t.equal(tok.vocabSize, 11, 'three reserved ids and eight tokens');
  t.same(Array.from(tok.encode('The CAT sat, the bird!')), [3, 4, 5, 7, 3, SimpleTokenizer.UNKNOWN, 6], 'lowercased; unknown word -> 1');
  t.equal(tok.decode(tok.encode('The cat sat, the dog!')), 'the cat sat , the dog !', 'decode joins words by spaces');
  t.equal(tok.decode([3, 4, SimpleTokenizer.EOS, SimpleTokenizer.PAD, SimpleTokenizer.PAD]), 'the cat', 'pad and EOS are skipped');
  t.same(SimpleTokenizer.fromTexts([...texts].reverse()).toJSON(), tok.toJSON(), 'the order of the texts does not matter');
  const again = SimpleTokenizer.fromJSON(JSON.stringify(tok.toJSON()));
  t.same(Array.from(again.encode('the dog ran.')), Array.from(tok.encode('the dog ran.')), 'fromJSON(toJSON()) encodes the same');
  t.equal(SimpleTokenizer.fromTexts(texts, { maxVocab: 5 }).vocabSize, 5, 'maxVocab counts the reserved ids');

  const chars = SimpleTokenizer.fromTexts(['abba', 'cab'], { level: 'char' });
  t.same(chars.toJSON().tokens, ['a', 'b', 'c'], 'character level');
  t.equal(chars.decode(chars.encode('cab ba')), 'cab<unk>ba', 'characters round-trip; the unseen space is unknown');

  expectError(t, () => SimpleTokenizer.fromTexts(texts, { level: 'byte' as 'word' }), RangeError, /`level` must be one of 'word', 'char'/);
  expectError(t, () => SimpleTokenizer.fromTexts(texts, { maxVocab: 2 }), RangeError, /`maxVocab` must be an integer >= 3/);
  expectError(t, () => SimpleTokenizer.fromTexts(['a', 3 as unknown as string]), TypeError, /for `texts\[1\]`/);
  expectError(t, () => tok.decode([11]), RangeError, /`ids\[0\]` must be an id in \[0, 11\)/);
  expectError(t, () => SimpleTokenizer.fromJSON('{"level": "word"}'), Error, /expected \{ level/, 'E_FORMAT');
  t.end();
});
