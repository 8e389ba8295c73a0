// The trainer.json of a checkpoint: written beside its place and renamed over it (a reader never
// sees half a file), read back with the error a caller can act on.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { RlhfError } from '../errors';
import { AdamW } from '../optim';

export function writeJsonAtomic(op: string, file: string, value: unknown): void {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(tmp, JSON.stringify(value) + '\n');
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new RlhfError('E_IO', `${op}: cannot write '${file}': ${(e as Error).message}`);
  }
}

/** The JSON object in `file` whose `format` is `format`: E_IO when unreadable, E_FORMAT otherwise. */
export function readJsonState<T extends { format: string }>(op: string, file: string, format: string): T {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new RlhfError('E_IO', `${op}: cannot read '${file}': ${(e as Error).message}`);
  }
  let state: T;
  try {
    state = JSON.parse(text) as T;
  } catch {
    throw new RlhfError('E_FORMAT', `${op}: '${file}' is not JSON`);
  }
  if (state === null || typeof state !== 'object' || state.format !== format)
    throw new RlhfError('E_FORMAT', `${op}: '${file}' is not a ${format} state saved by rlhf-node`);
  return state;
}

/** A policy that can be checkpointed: save(path) and load(path), as rl.nn models have. */
export interface Saveable {
  save(path: string): void;
  load(path: string): void;
}

export function saveable(op: string, name: string, v: unknown): Saveable {
  const s = v as Saveable;
  if (s === null || typeof s !== 'object' || typeof s.save !== 'function' || typeof s.load !== 'function')
    throw new RlhfError('E_FORMAT', `${op}: the ${name} has no save()/load(): only such models can be checkpointed`);
  return s;
}

/** policy.safetensors, reference.safetensors (when there is a reference) and optimizer.safetensors in `dir`. */
export function saveModels(op: string, dir: string, policy: unknown, reference: unknown | null, optimizer: AdamW): void {
  fs.mkdirSync(dir, { recursive: true });
  saveable(op, 'policy', policy).save(path.join(dir, 'policy.safetensors'));
  if (reference !== null) saveable(op, 'reference', reference).save(path.join(dir, 'reference.safetensors'));
  optimizer.saveState(path.join(dir, 'optimizer.safetensors'));
}

/** Reads what saveModels() wrote into the same models and optimizer. */
export function loadModels(op: string, dir: string, policy: unknown, reference: unknown | null, optimizer: AdamW): void {
  saveable(op, 'policy', policy).load(path.join(dir, 'policy.safetensors'));
  if (reference !== null) saveable(op, 'reference', reference).load(path.join(dir, 'reference.safetensors'));
  optimizer.loadState(path.join(dir, 'optimizer.safetensors'));
}
