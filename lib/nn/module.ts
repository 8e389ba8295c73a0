// What every model of rl.nn shares: its parameters (each a value and a gradient), gradient
// zeroing, frozen copies, moving between devices, and safetensors checkpoints.
import { RlhfError, rangeError } from '../errors';
import { loadSafetensors, saveSafetensors } from '../io/safetensors';
import { DeviceBuffer } from '../native';
import { DeviceIndex, DeviceSpec, Tensor, deviceName, emptyTensor, parseDevice, tensor } from '../tensor';

/** A trainable tensor and its gradient (null in a frozen model). Gradients accumulate. */
export interface Parameter {
  readonly name: string;
  readonly value: Tensor;
  readonly grad: Tensor | null;
}

/** How to create one parameter: its name, shape and initial values (filled on the host). */
export interface ParameterSpec {
  name: string;
  shape: number[];
  init: (values: Float32Array) => void;
}

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * The parameters of a model. On the CPU all values live in one Float32Array and all gradients in
 * another (the tensors are views of them), so that zeroing the gradients is one fill.
 */
class ParameterStore {
  readonly list: Parameter[];
  readonly #hostGrads: Float32Array | null;

  constructor(specs: ParameterSpec[], device: DeviceIndex, withGrads: boolean) {
    const total = specs.reduce((n, s) => n + sizeOf(s.shape), 0);
    const values = new Float32Array(total);
    this.#hostGrads = withGrads && device < 0 ? new Float32Array(total) : null;
    this.list = [];
    let offset = 0;
    for (const s of specs) {
      const n = sizeOf(s.shape);
      const host = values.subarray(offset, offset + n);
      s.init(host);
      const value = device < 0 ? tensor(host, s.shape) : tensor(host, s.shape, { device: deviceName(device) as DeviceSpec });
      let grad: Tensor | null = null;
      if (this.#hostGrads !== null) grad = tensor(this.#hostGrads.subarray(offset, offset + n), s.shape);
      else if (withGrads) grad = emptyTensor(s.shape, 'float32', device);
      this.list.push({ name: s.name, value, grad });
      offset += n;
    }
    if (withGrads && device >= 0) this.zeroGrad();
  }

  zeroGrad(): void {
    if (this.#hostGrads !== null) {
      this.#hostGrads.fill(0);
      return;
    }
    for (const p of this.list)
      if (p.grad !== null) (p.grad.raw('zeroGrad', p.name) as DeviceBuffer).copyFromHost(new Float32Array(p.grad.size));
  }
}

/** dst := src (same shape), across devices. */
export function copyValues(dst: Tensor, src: Tensor): void {
  const d = dst.raw('copy', 'dst');
  if (d instanceof Float32Array) {
    d.set(src.dataSync() as Float32Array);
    return;
  }
  const s = src.raw('copy', 'src');
  if (s instanceof Float32Array) (d as DeviceBuffer).copyFromHost(s);
  else (d as DeviceBuffer).copyFromDevice(s as DeviceBuffer);
}

const kModelKey = 'rlhf-node.model';
const kConfigKey = 'rlhf-node.config';

export abstract class Module<Config extends object> {
  /** The options the model was made with (normalised): enough to make it again. */
  readonly config: Readonly<Config>;
  readonly deviceIndex: DeviceIndex;
  /** A frozen model has no gradients: forward only (a reference policy). */
  readonly frozen: boolean;
  readonly #store: ParameterStore;

  protected constructor(config: Config, device: DeviceIndex, frozen: boolean, specs: ParameterSpec[]) {
    this.config = Object.freeze({ ...config });
    this.deviceIndex = device;
    this.frozen = frozen;
    this.#store = new ParameterStore(specs, device, !frozen);
  }

  /** The model's kind as written into checkpoints ('mlp', 'tokenPolicy', 'rewardModel'). */
  abstract get kind(): string;

  /** A new model of the same kind and config, on `device`, freshly initialised. */
  protected abstract make(device: DeviceIndex, frozen: boolean): this;

  get device(): string {
    return deviceName(this.deviceIndex);
  }

  parameters(): Parameter[] {
    return this.#store.list.slice();
  }

  /** The parameter called `name`. */
  parameter(name: string): Parameter {
    const p = this.#store.list.find((q) => q.name === name);
    if (p === undefined) throw rangeError(this.kind, 'name', `is not a parameter of this model: '${name}'`);
    return p;
  }

  get numParameters(): number {
    return this.#store.list.reduce((n, p) => n + p.value.size, 0);
  }

  zeroGrad(): void {
    this.#store.zeroGrad();
  }

  /** A copy with the same values; frozen (no gradients) unless `{ frozen: false }`. */
  clone(opts: { frozen?: boolean } = {}): this {
    const copy = this.make(this.deviceIndex, opts.frozen ?? true);
    copy.copyFrom(this);
    return copy;
  }

  /** This model on another device (a copy; this model itself when it is already there). */
  to(device: DeviceSpec): this {
    const target = parseDevice(device, `${this.kind}.to`, 'device');
    if (target === this.deviceIndex) return this;
    const copy = this.make(target, this.frozen);
    copy.copyFrom(this);
    return copy;
  }

  /** Copies every parameter value of `other` (a model of the same kind and config). */
  copyFrom(other: Module<Config>): void {
    const mine = this.#store.list;
    const theirs = other.parameters();
    if (theirs.length !== mine.length || theirs.some((p, i) => p.name !== mine[i].name || p.value.size !== mine[i].value.size))
      throw rangeError(`${this.kind}.copyFrom`, 'other', 'must be a model of the same kind and shape');
    mine.forEach((p, i) => copyValues(p.value, theirs[i].value));
  }

  /** Writes the parameters and the config to a safetensors file (atomically). */
  save(path: string, metadata: Record<string, string> = {}): void {
    const tensors: Record<string, Tensor> = {};
    for (const p of this.#store.list) tensors[p.name] = p.value;
    saveSafetensors(path, tensors, { ...metadata, [kModelKey]: this.kind, [kConfigKey]: JSON.stringify(this.config) });
  }

  /** Reads parameter values saved by save() (or by any tool, under the same names and shapes). */
  load(path: string): void {
    const op = `${this.kind}.load`;
    const { tensors, metadata } = loadSafetensors(path);
    const kind = metadata[kModelKey];
    if (kind !== undefined && kind !== this.kind)
      throw new RlhfError('E_FORMAT', `${op}: '${path}' holds a ${kind}, not a ${this.kind}`);
    for (const p of this.#store.list) {
      const t = tensors[p.name];
      if (t === undefined) throw new RlhfError('E_FORMAT', `${op}: '${path}' has no tensor '${p.name}'`);
      if (t.dtype !== 'float32' || t.shape.join(',') !== p.value.shape.join(','))
        throw new RlhfError('E_FORMAT', `${op}: '${path}' holds '${p.name}' as ${t.dtype} [${t.shape.join(', ')}], ` +
          `but this model's is float32 [${p.value.shape.join(', ')}]`);
    }
    const extra = Object.keys(tensors).filter((n) => !this.#store.list.some((p) => p.name === n));
    if (extra.length > 0) throw new RlhfError('E_FORMAT', `${op}: '${path}' holds tensors this model lacks: ${extra.join(', ')}`);
    for (const p of this.#store.list) copyValues(p.value, tensors[p.name]);
  }

  protected requireTrainable(op: string): void {
    if (this.frozen) throw new RlhfError('E_FROZEN', `${this.kind}.${op}: this model is frozen (a clone() for reference); ` +
      'clone({ frozen: false }) gives a trainable copy');
  }
}

/** Reads the kind and config saved with a model, to make it again (see rl.nn.loadModel). */
export function savedModelInfo(path: string): { kind: string; config: object } {
  const { metadata } = loadSafetensors(path);
  const kind = metadata[kModelKey];
  const config = metadata[kConfigKey];
  if (kind === undefined || config === undefined)
    throw new RlhfError('E_FORMAT', `loadModel: '${path}' was not saved by an rlhf-node model (no '${kModelKey}' metadata)`);
  try {
    return { kind, config: JSON.parse(config) as object };
  } catch {
    throw new RlhfError('E_FORMAT', `loadModel: '${path}' has a config that is not JSON`);
  }
}
