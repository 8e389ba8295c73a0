// PPOTrainer on the built-in environments: it learns CartPole (a short run with a fixed seed),
// is deterministic for a seed, follows its config (targetKl stops epochs, the learning rate
// anneals, the log file gets one line per update, events fire), rejects bad configs by name;
// and `rlhf train` writes the summary the README documents.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import t from 'tap';

import * as rl from '../lib/index';
import { PPOTrainer } from '../lib/trainers/ppo';
import { expectBitIdentical, expectError } from './helpers/index';

function paramsOf(m: rl.nn.Mlp): Float32Array {
  return Float32Array.from(m.parameters().flatMap((p) => Array.from(p.value.dataSync())));
}

t.test('learns CartPole: the mean return rises well above a random policy', async (t) => {
  const trainer = new PPOTrainer({ env: 'CartPole-v1', seed: 1, totalTimesteps: 40960 });
  const first = trainer.update();
  const r = trainer.train();
  t.equal(r.globalStep, 40960, 'ran the requested steps (80 updates of 4 x 128)');
  t.ok(r.meanReturnLast20 > 100, `mean return of the last 20 episodes ${r.meanReturnLast20.toFixed(1)} > 100 ` +
    `(random play: about 22; after the first update: ${first.meanReturn.toFixed(1)})`);
  t.ok(r.episodes > 0 && r.stepsPerSecond > 0, 'reports episodes and throughput');
});

t.test('deterministic for a seed, different for another', async (t) => {
  const run = (seed: number) => {
    const trainer = new PPOTrainer({ env: 'CartPole-v1', seed, totalTimesteps: 2048 });
    const metrics = [trainer.update(), trainer.update()];
    return { metrics, actor: paramsOf(trainer.actor), critic: paramsOf(trainer.critic) };
  };
  const a = run(3), b = run(3), c = run(4);
  expectBitIdentical(t, b.actor, a.actor, 'same seed: the same actor');
  expectBitIdentical(t, b.critic, a.critic, 'same seed: the same critic');
  t.same(b.metrics.map((m) => m.policyLoss), a.metrics.map((m) => m.policyLoss), 'same seed: the same losses');
  t.notSame(Array.from(c.actor.slice(0, 8)), Array.from(a.actor.slice(0, 8)), 'another seed: another actor');
});

t.test('config: targetKl, learning-rate annealing, log file, events', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlhf-ppo-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const log = path.join(dir, 'metrics.jsonl');
  const trainer = new PPOTrainer({ env: 'cartpole' as never, seed: 2, totalTimesteps: 4 * 512, targetKl: 1e-12, logFile: log });
  let episodes = 0;
  trainer.on('episode', () => { episodes += 1; });
  const updates: rl.PPOUpdateMetrics[] = [];
  trainer.on('update', (m: rl.PPOUpdateMetrics) => updates.push(m));
  trainer.train();
  t.equal(updates.length, 4, 'one update event per rollout');
  t.ok(episodes > 0, 'episode events');
  t.equal(trainer.optimizer.stepCount, 4 * 4, 'targetKl stops each update after its first epoch (4 minibatches)');
  t.same(updates.map((m) => Number(m.learningRate.toExponential(6))), [2.5e-4, 1.875e-4, 1.25e-4, 6.25e-5].map((x) => Number(x.toExponential(6))),
    'the learning rate anneals linearly per update, as CleanRL');
  const lines = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as rl.PPOUpdateMetrics);
  t.equal(lines.length, 4, 'one JSON line per update');
  t.equal(lines[3].globalStep, 2048, 'with the step count');
  const flat = new PPOTrainer({ env: 'Acrobot-v1', seed: 2, totalTimesteps: 1024, annealLr: false, numEnvs: 2, numSteps: 64, numMinibatches: 2 });
  t.equal(flat.env.name, 'Acrobot-v1', 'Acrobot by name');
  const m1 = flat.update(), m2 = flat.update();
  t.equal(m1.learningRate, m2.learningRate, 'annealLr: false keeps the learning rate');
});

t.test('a checkpoint resumes exactly where the run stopped', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlhf-ppo-ckpt-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const config = { env: 'Acrobot-v1', seed: 7, totalTimesteps: 6 * 512 };
  const straight = new PPOTrainer(config);
  const straightMetrics = [1, 2, 3, 4, 5, 6].map(() => straight.update());
  const first = new PPOTrainer(config);
  for (let i = 0; i < 3; ++i) first.update();
  first.save(dir);
  t.same(fs.readdirSync(dir).sort(), ['actor.safetensors', 'critic.safetensors', 'optimizer.safetensors', 'trainer.json'],
    'the checkpoint files');
  const resumed = PPOTrainer.resume(dir);
  t.equal(resumed.globalStep, 3 * 512, 'the step count is restored');
  const resumedMetrics = [1, 2, 3].map(() => resumed.update());
  expectBitIdentical(t, paramsOf(resumed.actor), paramsOf(straight.actor), 'actor: 3 updates + resume + 3 == 6 updates');
  expectBitIdentical(t, paramsOf(resumed.critic), paramsOf(straight.critic), 'critic too');
  t.same(resumedMetrics.map((m) => [m.update, m.globalStep, m.policyLoss, m.meanReturn]),
    straightMetrics.slice(3).map((m) => [m.update, m.globalStep, m.policyLoss, m.meanReturn]), 'and the same metrics');
  expectError(t, () => PPOTrainer.resume(path.join(dir, 'missing')), Error, /cannot read .*trainer\.json/, 'E_IO');
});

t.test('bad configs are named errors', async (t) => {
  expectError(t, () => new PPOTrainer({ env: 'Pong' }), RangeError, /`name` must be one of/);
  expectError(t, () => new PPOTrainer({ env: 42 as never }), TypeError, /PPOTrainer: expected an environment name/);
  expectError(t, () => new PPOTrainer({ env: 'CartPole-v1', numMinibatches: 3 }), RangeError, /`numMinibatches` must divide the batch of 512/);
  expectError(t, () => new PPOTrainer({ env: 'CartPole-v1', learningRate: -1 }), RangeError, /`learningRate` must be a finite number >= 0/);
  expectError(t, () => new PPOTrainer({ env: 'CartPole-v1', gamma: 1.5 }), RangeError, /`gamma` must be in \[0, 1\]/);
  expectError(t, () => new PPOTrainer({ env: 'CartPole-v1', numSteps: 0 }), RangeError, /`numSteps` must be an integer >= 1/);
  expectError(t, () => new PPOTrainer({ env: 'CartPole-v1', targetKl: 0 }), RangeError, /`targetKl` must be a number > 0 or null/);
  expectError(t, () => new PPOTrainer({ env: 'CartPole-v1', normAdv: 1 as never }), TypeError, /a boolean for `normAdv`/);
  expectError(t, () => new PPOTrainer(null as never), TypeError, /a PPOConfig object for `config`/);
});

t.test('rlhf train writes the documented summary', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlhf-train-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const summary = path.join(dir, 'summary.json');
  const cli = path.join(__dirname, '..', 'dist', 'cli', 'rlhf.js');
  const out = execFileSync(process.execPath, [cli, 'train', 'cartpole', '--seed', '5', '--steps', '2048', '--summary', summary], { encoding: 'utf8' });
  t.match(out, /CartPole-v1 seed 5: mean return of the last 20 episodes/, 'prints a summary line');
  const s = JSON.parse(fs.readFileSync(summary, 'utf8')) as Record<string, unknown>;
  t.same(Object.keys(s).sort(), ['env', 'meanReturnLast20', 'seconds', 'seed', 'steps', 'stepsPerSecond'], 'the summary fields');
  t.equal(s.env, 'CartPole-v1');
  t.equal(s.seed, 5);
  t.equal(s.steps, 2048);
  t.match(execFileSync(process.execPath, [cli, 'train', '--help'], { encoding: 'utf8' }), /train cartpole\|acrobot/, '--help');
  t.throws(() => execFileSync(process.execPath, [cli, 'train', 'pong'], { encoding: 'utf8', stdio: 'pipe' }), 'an unknown environment fails');
});
