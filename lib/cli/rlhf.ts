#!/usr/bin/env node
// The `rlhf` command: `rlhf bench` times every kernel (see lib/cli/bench.ts); `rlhf info` shows
// what was built and what the machine offers.
import * as rl from '../index';
import { Backend, runBench, writeJson } from './bench';

const usage = `usage: rlhf <command> [options]

commands:
  bench   time every op on every backend against the machine's memory bandwidth
          --op NAME[,NAME]      only these ops (gae, tokenGae, discountedReturns, maskedWhiten, maskedMean)
          --backend LIST        cpu,cuda,js (default: all available)
          --threads N           CPU threads (default: all cores)
          --json FILE           also write the results as JSON
          --quick               small shapes, short runs (a smoke test)
  info    build and backend information
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
  const report = runBench({
    ops: stringFlag(flags, 'op')?.split(','),
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

function main(argv: string[]): void {
  const [command, ...rest] = argv;
  switch (command) {
    case 'bench': return bench(rest);
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
