// The optimizer (AdamW as one native kernel over every parameter), learning-rate schedules, and
// gradient clipping by the global norm.
import { RlhfError, rangeError, typeError } from './errors';
import { loadSafetensors, saveSafetensors } from './io/safetensors';
import { DeviceBuffer, Raw, native } from './native';
import { Parameter, copyValues } from './nn/module';
import { Tensor, emptyTensor, tensor } from './tensor';
import { booleanOr, keysOf, options } from './validate';

const clipOptionKeys = keysOf<{ errorIfNonfinite?: boolean }>({ errorIfNonfinite: true });

// --- schedules ---------------------------------------------------------------------------------------

/** The factor of the base learning rate for the step about to be taken (0 for the first). */
export type Schedule = (step: number) => number;

export interface ScheduleOptions {
  /** Steps over which the factor goes from 1 to its end value. */
  totalSteps: number;
  /** Steps of linear warm-up from 0 first; default 0. */
  warmupSteps?: number;
}

const scheduleOptionKeys = keysOf<ScheduleOptions>({ totalSteps: true, warmupSteps: true });

function scheduleSteps(op: string, opts: ScheduleOptions): { total: number; warmup: number } {
  const o = options<ScheduleOptions>(op, opts, scheduleOptionKeys);
  const total = o.totalSteps;
  const warmup = o.warmupSteps ?? 0;
  if (typeof total !== 'number' || !Number.isInteger(total) || total < 1) throw rangeError(op, 'totalSteps', `must be an integer >= 1 but is ${String(total)}`);
  if (typeof warmup !== 'number' || !Number.isInteger(warmup) || warmup < 0 || warmup > total)
    throw rangeError(op, 'warmupSteps', `must be an integer in [0, totalSteps] but is ${String(warmup)}`);
  return { total, warmup };
}

export function constantSchedule(): Schedule {
  return () => 1;
}

/**
 * Linear warm-up, then linear decay to 0 at totalSteps (transformers' linear schedule; with no
 * warm-up it is CleanRL's annealing, 1 - step/totalSteps).
 */
export function linearSchedule(opts: ScheduleOptions): Schedule {
  const { total, warmup } = scheduleSteps('optim.linearSchedule', opts);
  return (step) => (step < warmup ? step / Math.max(1, warmup) : Math.max(0, (total - step) / Math.max(1, total - warmup)));
}

/** Linear warm-up, then half a cosine from 1 to 0 at totalSteps (transformers' cosine schedule). */
export function cosineSchedule(opts: ScheduleOptions): Schedule {
  const { total, warmup } = scheduleSteps('optim.cosineSchedule', opts);
  return (step) => {
    if (step < warmup) return step / Math.max(1, warmup);
    const progress = Math.min(1, (step - warmup) / Math.max(1, total - warmup));
    return 0.5 * (1 + Math.cos(Math.PI * progress));
  };
}

// --- AdamW -----------------------------------------------------------------------------------------------

export interface AdamWOptions {
  /** Default 1e-3. */
  lr?: number;
  /** Default [0.9, 0.999]. */
  betas?: [number, number];
  /** Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay; default 0.01 (PyTorch's AdamW). */
  weightDecay?: number;
  /** Scales lr by schedule(step); default constant. */
  schedule?: Schedule;
}

const adamWOptionKeys = keysOf<AdamWOptions>({ lr: true, betas: true, eps: true, weightDecay: true, schedule: true });

function trainable(op: string, params: unknown): Parameter[] {
  if (!Array.isArray(params)) throw typeError(op, 'params', 'an array of parameters (model.parameters())', params);
  params.forEach((p: Parameter, i) => {
    if (p === null || typeof p !== 'object' || !(p.value instanceof Tensor)) throw typeError(op, `params[${i}]`, 'a parameter', p);
    if (p.grad === null) throw rangeError(op, `params[${i}]`, `('${p.name}') has no gradient: its model is frozen`);
    if (p.value.dtype !== 'float32') throw typeError(op, `params[${i}]`, 'a float32 parameter', p.value);
  });
  return params as Parameter[];
}

function finiteIn(op: string, name: string, v: unknown, lo: number, hi: number, fallback: number, hiOpen = false): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number') throw typeError(op, name, 'a number', v);
  if (!(v >= lo && (hiOpen ? v < hi : v <= hi))) throw rangeError(op, name, `must be in [${lo}, ${hi}${hiOpen ? ')' : ']'} but is ${v}`);
  return v;
}

/** Tensors shaped as the parameters over consecutive ranges of `buffer`. */
function viewsOf(buffer: Float32Array, params: readonly Parameter[]): Tensor[] {
  let offset = 0;
  return params.map((p) => {
    const view = tensor(buffer.subarray(offset, offset + p.value.size), [...p.value.shape]);
    offset += p.value.size;
    return view;
  });
}

function zerosLike(t: Tensor): Tensor {
  const z = emptyTensor(t.shape, 'float32', t.deviceIndex);
  const r = z.raw('zeros', 'tensor');
  if (!(r instanceof Float32Array)) (r as DeviceBuffer).copyFromHost(new Float32Array(t.size));
  return z;
}

/**
 * One Float32Array over `ts` when they are live host float32 tensors lying back to back, in list
 * order, in one ArrayBuffer (a model's parameters and its gradients do: see ParameterStore), else
 * null.
 */
function backToBack(ts: readonly Tensor[]): Float32Array | null {
  let first: Float32Array | null = null;
  let end = 0;
  for (const t of ts) {
    if (t.deviceIndex >= 0 || t.isDisposed) return null;
    let r: Raw;
    try {
      r = t.raw('adamw', 'params');
    } catch {
      return null;  // a transferred buffer: step() names it
    }
    if (!(r instanceof Float32Array)) return null;
    if (first === null) first = r;
    else if (r.buffer !== first.buffer || r.byteOffset !== end) return null;
    end = r.byteOffset + r.byteLength;
  }
  return first === null ? null : new Float32Array(first.buffer, first.byteOffset, (end - first.byteOffset) / 4);
}

/** The optimizer's state as four single buffers, when the parameters and gradients allow it. */
interface FlatState {
  values: Float32Array;
  grads: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

// The raw buffers of a list; the element's name ('grads[3]') is built only for the error.
const raws = (ts: Tensor[], op: string, name: string): Raw[] => ts.map((t, i) => {
  try {
    return t.raw(op, name);
  } catch {
    return t.raw(op, `${name}[${i}]`);
  }
});

/** AdamW (torch.optim.AdamW's update, see native/include/rlhf/nn.h) over a list of parameters. */
export class AdamW {
  readonly params: readonly Parameter[];
  readonly baseLr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly schedule: Schedule;
  readonly #m: Tensor[];
  readonly #v: Tensor[];
  // Set when every value, and every gradient, lies back to back in one host buffer: then a step
  // passes four buffers instead of four lists (the update is elementwise, so the bits are the
  // same), and m and v are views of two buffers too.
  readonly #flat: FlatState | null;
  #step = 0;

  constructor(params: Parameter[], opts: AdamWOptions = {}) {
    const op = 'optim.adamw';
    this.params = trainable(op, params).slice();
    const o = options<AdamWOptions>(op, opts, adamWOptionKeys);
    this.baseLr = finiteIn(op, 'lr', o.lr, 0, Infinity, 1e-3, true);
    const betas = o.betas ?? [0.9, 0.999];
    if (!Array.isArray(betas) || betas.length !== 2) throw typeError(op, 'betas', 'a pair [beta1, beta2]', betas);
    this.beta1 = finiteIn(op, 'betas[0]', betas[0], 0, 1, 0.9, true);
    this.beta2 = finiteIn(op, 'betas[1]', betas[1], 0, 1, 0.999, true);
    this.eps = finiteIn(op, 'eps', o.eps, 0, Infinity, 1e-8, true);
    if (this.eps === 0) throw rangeError(op, 'eps', 'must be > 0 (it keeps the update finite where v is 0)');
    this.weightDecay = finiteIn(op, 'weightDecay', o.weightDecay, 0, Infinity, 0.01, true);
    if (o.schedule !== undefined && typeof o.schedule !== 'function') throw typeError(op, 'schedule', 'a function of the step', o.schedule);
    this.schedule = o.schedule ?? constantSchedule();
    const values = backToBack(this.params.map((p) => p.value));
    const grads = values === null ? null : backToBack(this.params.map((p) => p.grad as Tensor));
    if (values !== null && grads !== null && this.params.every((p) => (p.grad as Tensor).size === p.value.size)) {
      this.#flat = { values, grads, m: new Float32Array(values.length), v: new Float32Array(values.length) };
      this.#m = viewsOf(this.#flat.m, this.params);
      this.#v = viewsOf(this.#flat.v, this.params);
    } else {
      this.#flat = null;
      this.#m = this.params.map((p) => zerosLike(p.value));
      this.#v = this.params.map((p) => zerosLike(p.value));
    }
  }

  /** Steps taken so far. */
  get stepCount(): number {
    return this.#step;
  }

  /** The learning rate the next step() uses. */
  get lr(): number {
    return this.baseLr * this.schedule(this.#step);
  }

  /** One update of every parameter from its gradient (one native call). */
  step(): void {
    const op = 'AdamW.step';
    const lr = this.lr;
    if (!(lr >= 0 && Number.isFinite(lr))) throw rangeError(op, 'schedule', `gave the learning rate ${lr} at step ${this.#step}`);
    const flat = this.#flat;
    if (flat !== null && this.#flatUsable(flat)) {
      native().adamw([flat.values], [flat.grads], [flat.m], [flat.v], this.#step + 1, lr, this.beta1, this.beta2, this.eps,
        this.weightDecay);
    } else {
      const values = this.params.map((p) => p.value);
      const grads = this.params.map((p) => p.grad as Tensor);
      native().adamw(raws(values, op, 'params'), raws(grads, op, 'grads'), raws(this.#m, op, 'm'), raws(this.#v, op, 'v'),
        this.#step + 1, lr, this.beta1, this.beta2, this.eps, this.weightDecay);
    }
    this.#step += 1;
  }

  // The single buffers stand for the tensors only while every tensor is live and no buffer has
  // been transferred away; otherwise the lists are passed, whose checks name what is wrong.
  #flatUsable(flat: FlatState): boolean {
    if (flat.values.length === 0 || flat.grads.length === 0) return false;
    for (const p of this.params) if (p.value.isDisposed || (p.grad as Tensor).isDisposed) return false;
    return true;
  }

  /** Zeroes the gradients of the optimised parameters. */
  zeroGrad(): void {
    if (this.#flat !== null && this.#flatUsable(this.#flat)) {
      this.#flat.grads.fill(0);
      return;
    }
    const grads = this.params.map((p) => p.grad as Tensor);
    const host = grads.filter((g) => g.deviceIndex < 0);
    for (const g of host) (g.raw('zeroGrad', 'grad') as Float32Array).fill(0);
    for (const g of grads) if (g.deviceIndex >= 0) (g.raw('zeroGrad', 'grad') as DeviceBuffer).copyFromHost(new Float32Array(g.size));
  }

  /**
   * Writes the step count and both moments of every parameter (atomically) for resuming, keyed
   * by position and name ('m.3.layers.1.weight'): two models' parameters may share a name.
   */
  saveState(path: string): void {
    const tensors: Record<string, Tensor> = {};
    this.params.forEach((p, i) => {
      tensors[`m.${i}.${p.name}`] = this.#m[i];
      tensors[`v.${i}.${p.name}`] = this.#v[i];
    });
    saveSafetensors(path, tensors, { 'rlhf-node.optimizer': 'adamw', step: String(this.#step) });
  }

  /** Reads what saveState() wrote, for the same parameters. */
  loadState(path: string): void {
    const op = 'AdamW.loadState';
    const { tensors, metadata } = loadSafetensors(path);
    const step = Number(metadata.step);
    if (metadata['rlhf-node.optimizer'] !== 'adamw' || !Number.isInteger(step) || step < 0)
      throw new RlhfError('E_FORMAT', `${op}: '${path}' is not an AdamW state saved by rlhf-node`);
    this.params.forEach((p, i) => {
      for (const [kind, dst] of [['m', this.#m[i]], ['v', this.#v[i]]] as const) {
        const key = `${kind}.${i}.${p.name}`;
        const t = tensors[key];
        if (t === undefined || t.dtype !== 'float32' || t.size !== dst.size)
          throw new RlhfError('E_FORMAT', `${op}: '${path}' has no float32 '${key}' of ${dst.size} elements`);
        copyValues(dst, t);
      }
    });
    this.#step = step;
  }
}

export function adamw(params: Parameter[], opts?: AdamWOptions): AdamW {
  return new AdamW(params, opts);
}

// --- gradient clipping ---------------------------------------------------------------------------------------

/**
 * Scales every gradient by maxNorm / (norm + 1e-6) when that is below 1, with norm the L2 norm
 * of all gradients together (torch.nn.utils.clip_grad_norm_); returns that norm. A NaN or
 * infinite norm is a RangeError unless { errorIfNonfinite: false } (then nothing is scaled).
 */
export function clipGradNorm(params: Parameter[], maxNorm: number, opts: { errorIfNonfinite?: boolean } = {}): number {
  const op = 'clipGradNorm';
  const list = trainable(op, params);
  if (typeof maxNorm !== 'number') throw typeError(op, 'maxNorm', 'a number', maxNorm);
  const limit = finiteIn(op, 'maxNorm', maxNorm, 0, Infinity, 0, true);
  const o = options<{ errorIfNonfinite?: boolean }>(op, opts, clipOptionKeys);
  const errorIfNonfinite = booleanOr(op, 'errorIfNonfinite', o.errorIfNonfinite, true);
  const grads = raws(list.map((p) => p.grad as Tensor), op, 'grads');
  const norm = Math.sqrt(native().sumSquares(grads));
  if (!Number.isFinite(norm)) {
    if (errorIfNonfinite) throw rangeError(op, 'params', `have a gradient norm of ${norm}: a NaN or infinite gradient`);
    return norm;
  }
  const coef = limit / (norm + 1e-6);
  if (coef < 1) native().scaleGrads(grads, coef);
  return norm;
}
