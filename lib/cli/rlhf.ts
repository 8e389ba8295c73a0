#!/usr/bin/env node
// The `rlhf` command: `rlhf bench` times every kernel (see lib/cli/bench.ts); `rlhf train` runs
// PPO on a built-in environment (lib/cli/train.ts); `rlhf demo` runs the whole RLHF pipeline on a
// toy task and plots reward over-optimisation (lib/cli/demo.ts); `rlhf info` shows what was built
// and what the machine offers.
import * as rl from '../index';
import { Backend, benchOpNames, checkBenchOps, runBench, writeJson } from './bench';
import { runDemo } from './demo';
import { train } from './train';

// Names joined by ", " in lines of at most `width` characters, each after the first indented.
function wrapped(names: string[], width: number, indent: number): string {
  const lines = [''];
  for (const n of names) {
    const last = lines.length - 1;
    const piece = lines[last] === '' ? n : `, ${n}`;
    if (lines[last] !== '' && lines[last].length + piece.length > width) {
      lines[last] += ',';
      lines.push(n);
    } else {
      lines[last] += piece;
    }
  }
  return lines.join(`\n${' '.repeat(indent)}`);
}

const usage = `usage: rlhf <command> [options]

commands:
  bench   time every op on every backend against the machine's memory bandwidth
          --op NAME[,NAME]      only these ops (a name, or a name and its variant: "dpoLoss ipo"):
                                ${wrapped(benchOpNames(), 58, 32)}
          --backend LIST        cpu,cuda,js (default: all available)
          --threads N           CPU threads (default: all cores)
          --json FILE           also write the results as JSON
          --quick               small shapes, short runs (a smoke test)
  train cartpole|acrobot
          PPO with CleanRL's settings (4 envs x 128 steps, 4 epochs of 4 minibatches, Adam 2.5e-4
          annealed, GAE 0.99/0.95, clip 0.2, entropy 0.01, gradient norm 0.5) on CartPole-v1 or Acrobot-v1
          --seed N              seed of the models, the environments and the sampling (default 1)
          --steps N             environment steps (default 500000)
          --summary FILE        write {env, seed, steps, meanReturnLast20, seconds, stepsPerSecond} as JSON
          --log FILE            append one JSON line of metrics per update
  demo    RLHF end to end on a toy task (about 20 seconds): simulated raters compare an SFT policy's
          completions by a hidden gold reward, a reward model learns their preferences, PPO with a KL
          penalty optimises against it; plots learned vs gold reward to show over-optimisation
          --seed N              seed of everything (default 1)
          --steps N             PPO steps (default 600)
          --kl-coef X           the KL penalty's coefficient (default 0.5; 0.05 lets the gold reward collapse)
          --plot FILE           the SVG plot (default rlhf-demo.svg)
          --summary FILE        write {goldBefore, goldAfter, rmAccuracy, kl, seconds, plot} as JSON
          --quick               a few seconds (a smoke test)
  info    build and backend information

every command takes --help
`;

function parseFlags(argv: string[]): Map<string, string | true> {
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new RangeError(`rlhf: unexpected argument '${a}'\n\n${usage}`);
    const [key, inline] = a.slice(2).split('=', 2);
    if (inline !== undefined) flags.set(key, inline);
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) flags.set(key, argv[++i]);
    else flags.set(key, true);
  }
  return flags;
}

function stringFlag(flags: Map<string, string | true>, name: string): string | undefined {
  const v = flags.get(name);
  if (v === true) throw new RangeError(`rlhf: --${name} needs a value`);
  return v;
}

function bench(argv: string[]): void {
  const flags = parseFlags(argv);
  const known = new Set(['op', 'backend', 'threads', 'json', 'quick']);
  for (const k of flags.keys()) if (!known.has(k)) throw new RangeError(`rlhf bench: unknown option --${k}\n\n${usage}`);
  const backends = stringFlag(flags, 'backend')?.split(',') as Backend[] | undefined;
  for (const b of backends ?? []) if (!['cpu', 'cuda', 'js'].includes(b)) throw new RangeError(`rlhf bench: unknown backend '${b}'`);
  if (backends?.includes('cuda') && rl.backends().cuda.devices === 0) console.log('rlhf bench: no CUDA device here; skipping the cuda backend');
  const threads = stringFlag(flags, 'threads');
  const ops = stringFlag(flags, 'op')?.split(',');
  if (ops !== undefined) checkBenchOps(ops);
  const report = runBench({
    ops,
    backends,
    quick: flags.has('quick'),
    threads: threads === undefined ? undefined : Number(threads),
  }, (line) => console.log(line));
  const json = stringFlag(flags, 'json');
  if (json !== undefined) {
    writeJson(json, report);
    console.log(`wrote ${json}`);
  }
}

function integerFlag(flags: Map<string, string | true>, name: string): number | undefined {
  const v = stringFlag(flags, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`rlhf: --${name} must be a non-negative integer, not '${v}'`);
  return n;
}

function trainCommand(argv: string[]): void {
  const [env, ...rest] = argv;
  if (env !== 'cartpole' && env !== 'acrobot') throw new RangeError(`rlhf train: expected 'cartpole' or 'acrobot', not '${env ?? ''}'\n\n${usage}`);
  const flags = parseFlags(rest);
  const known = new Set(['seed', 'steps', 'summary', 'log']);
  for (const k of flags.keys()) if (!known.has(k)) throw new RangeError(`rlhf train: unknown option --${k}\n\n${usage}`);
  train({ env, seed: integerFlag(flags, 'seed') ?? 1, steps: integerFlag(flags, 'steps'), summary: stringFlag(flags, 'summary'),
    log: stringFlag(flags, 'log') }, (line) => console.log(line));
}

function demoCommand(argv: string[]): void {
  const flags = parseFlags(argv);
  const known = new Set(['seed', 'steps', 'plot', 'summary', 'quick', 'kl-coef']);
  for (const k of flags.keys()) if (!known.has(k)) throw new RangeError(`rlhf demo: unknown option --${k}\n\n${usage}`);
  if (flags.get('quick') !== undefined && flags.get('quick') !== true) throw new RangeError('rlhf demo: --quick takes no value');
  const klCoef = stringFlag(flags, 'kl-coef');
  if (klCoef !== undefined && !(Number(klCoef) >= 0)) throw new RangeError(`rlhf demo: --kl-coef must be a number >= 0, not '${klCoef}'`);
  runDemo({ seed: integerFlag(flags, 'seed') ?? 1, steps: integerFlag(flags, 'steps'), plot: stringFlag(flags, 'plot'),
    summary: stringFlag(flags, 'summary'), quick: flags.has('quick'), klCoef: klCoef === undefined ? undefined : Number(klCoef) },
  (line) => console.log(line));
}

function main(argv: string[]): void {
  const [command, ...rest] = argv;
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(usage);
    return;
  }
  switch (command) {
    case 'bench': return bench(rest);
    case 'train': return trainCommand(rest);
    case 'demo': return demoCommand(rest);
    case 'info': console.log(JSON.stringify({ buildInfo: rl.buildInfo(), backends: rl.backends() }, null, 2)); return;
    case undefined: case '--help': case '-h': console.log(usage); return;
    default: throw new RangeError(`rlhf: unknown command '${command}'\n\n${usage}`);
  }
}

try {
  main(process.argv.slice(2));
} catch (e) {
  console.error((e as Error).message);
  process.exitCode = 1;
}
