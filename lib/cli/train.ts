// `rlhf train cartpole|acrobot`: PPO with CleanRL's settings on a built-in environment, progress
// on stderr every few updates, a summary at the end (and as JSON with --summary FILE).
import * as fs from 'node:fs';

import { PPOTrainer } from '../trainers/ppo';

export interface TrainOptions {
  env: 'cartpole' | 'acrobot';
  seed: number;
  steps?: number;
  summary?: string;
  log?: string;
}

const envNames = { cartpole: 'CartPole-v1', acrobot: 'Acrobot-v1' } as const;

export interface TrainSummary {
  env: string;
  seed: number;
  steps: number;
  meanReturnLast20: number;
  seconds: number;
  stepsPerSecond: number;
}

export function train(o: TrainOptions, print: (line: string) => void): TrainSummary {
  const trainer = new PPOTrainer({ env: envNames[o.env], seed: o.seed, totalTimesteps: o.steps, logFile: o.log });
  const every = 20;
  trainer.on('update', (m) => {
    if (m.update % every !== 0) return;
    print(`update ${String(m.update).padStart(4)}  steps ${String(m.globalStep).padStart(7)}  ` +
      `return(last 20) ${Number.isNaN(m.meanReturn) ? '-' : m.meanReturn.toFixed(1)}  entropy ${m.entropy.toFixed(3)}  ` +
      `approxKl ${m.approxKl.toExponential(2)}  clipfrac ${m.clipfrac.toFixed(3)}  ev ${m.explainedVariance.toFixed(2)}  ` +
      `${m.stepsPerSecond.toFixed(0)} steps/s`);
  });
  const r = trainer.train();
  const summary: TrainSummary = { env: trainer.env.name, seed: o.seed, steps: r.globalStep, meanReturnLast20: r.meanReturnLast20,
    seconds: r.seconds, stepsPerSecond: r.stepsPerSecond };
  print(`${summary.env} seed ${o.seed}: mean return of the last 20 episodes ${summary.meanReturnLast20.toFixed(2)} after ` +
    `${summary.steps} steps in ${summary.seconds.toFixed(1)} s (${summary.stepsPerSecond.toFixed(0)} steps/s)`);
  if (o.summary !== undefined) fs.writeFileSync(o.summary, JSON.stringify(summary, null, 2) + '\n');
  return summary;
}
