// The models of rl.nn: an MLP (classic-control policies and values), a token policy over a
// context window (logits over a vocabulary, optionally a value), and a reward model (a scalar per
// sequence). Each runs forward and backward as native kernels and accumulates its gradients.
import { rangeError, typeError } from '../errors';
import { DeviceIndex, DeviceSpec, Tensor, emptyTensor, parseDevice, tensor } from '../tensor';
import { booleanOr, choice, keysOf, options } from '../validate';
import { ActivationName, activationNames, embedding, embeddingBackward, layerNorm, layerNormBackward, meanPool,
  meanPoolBackward } from './kernels';
import { Dense, DenseStack } from './layers';
import { Module, ParameterSpec } from './module';
import { Random, orthogonal } from './random';

const inputGradKeys = keysOf<{ inputGrad?: boolean }>({ inputGrad: true });

export type InitName = 'orthogonal' | 'pytorch';

// --- option parsing ----------------------------------------------------------------------------------

function positiveInt(op: string, name: string, v: unknown, fallback?: number): number {
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== 'number') throw typeError(op, name, 'a positive integer', v);
  if (!Number.isInteger(v) || v < 1 || v > 2 ** 24) throw rangeError(op, name, `must be an integer in [1, 2^24] but is ${v}`);
  return v;
}

function sizes(op: string, name: string, v: unknown, fallback: number[]): number[] {
  if (v === undefined) return fallback;
  if (!Array.isArray(v)) throw typeError(op, name, 'an array of positive integers', v);
  return v.map((x, i) => positiveInt(op, `${name}[${i}]`, x));
}

function finiteOr(op: string, name: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw typeError(op, name, 'a finite number', v);
  return v;
}

function seedOf(op: string, v: unknown): number {
  if (v === undefined) return 0;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff)
    throw rangeError(op, 'seed', `must be an integer in [0, 2^32) but is ${String(v)}`);
  return v;
}

const inits: readonly InitName[] = ['orthogonal', 'pytorch'];

// --- initialisation ------------------------------------------------------------------------------------

/**
 * A dense layer's weight [out, in] and bias [out]: 'orthogonal' (CleanRL's layer_init: orthogonal
 * weights times `gain`, zero bias) or 'pytorch' (nn.Linear's default: both uniform in +-1/sqrt(in)).
 */
function denseSpecs(prefix: string, inSize: number, outSize: number, init: InitName, gain: number, rng: Random): ParameterSpec[] {
  const bound = 1 / Math.sqrt(inSize);
  const uniform = (a: Float32Array) => { for (let i = 0; i < a.length; ++i) a[i] = (2 * rng.uniform() - 1) * bound; };
  return [
    { name: `${prefix}.weight`, shape: [outSize, inSize],
      init: init === 'orthogonal' ? (a) => orthogonal(a, outSize, inSize, gain, rng) : uniform },
    { name: `${prefix}.bias`, shape: [outSize], init: init === 'orthogonal' ? () => undefined : uniform },
  ];
}

/** An embedding table [vocab, dim] drawn from N(0, 1), as nn.Embedding. */
function embeddingSpec(name: string, vocab: number, dim: number, rng: Random): ParameterSpec {
  return { name, shape: [vocab, dim], init: (a) => { for (let i = 0; i < a.length; ++i) a[i] = rng.normal(); } };
}

/** Dense layers over `sizes` (in, hidden..., out) with their parameter specs. */
function stackSpecs(prefix: string, widths: number[], init: InitName, gains: number[], rng: Random): ParameterSpec[] {
  const specs: ParameterSpec[] = [];
  for (let k = 0; k + 1 < widths.length; ++k) specs.push(...denseSpecs(`${prefix}.${k}`, widths[k], widths[k + 1], init, gains[k], rng));
  return specs;
}

function buildStack(model: Module<object>, prefix: string, widths: number[], acts: ActivationName[]): DenseStack {
  const layers = acts.map((act, k) => new Dense(widths[k], widths[k + 1], act, model.parameter(`${prefix}.${k}.weight`),
    model.parameter(`${prefix}.${k}.bias`)));
  return new DenseStack(layers, model.deviceIndex);
}

// --- inputs -------------------------------------------------------------------------------------------

/**
 * A [rows, cols] input on the model's device: a 2-D Tensor (or a 1-D one when cols is 1), or a
 * flat TypedArray of rows*cols.
 */
function matrixInput(op: string, name: string, v: unknown, dtype: 'float32' | 'int32' | 'uint8', cols: number,
                     device: DeviceIndex): { t: Tensor; rows: number } {
  let t: Tensor;
  if (v instanceof Tensor) {
    if (v.dtype !== dtype) throw typeError(op, name, `${dtype === 'int32' ? 'an' : 'a'} ${dtype} Tensor`, v);
    if (v.shape.length === 1 && cols === 1) {
      if (v.deviceIndex !== device) throw rangeError(op, name, `is on ${v.device} but the model is on another device`);
      return { t: v, rows: v.shape[0] };
    }
    if (v.shape.length !== 2 || v.shape[1] !== cols)
      throw rangeError(op, name, `must have shape [rows, ${cols}] but has [${v.shape.join(', ')}]`);
    if (v.deviceIndex !== device) throw rangeError(op, name, `is on ${v.device} but the model is on another device`);
    t = v;
  } else if ((dtype === 'float32' && v instanceof Float32Array) || (dtype === 'int32' && v instanceof Int32Array) ||
             (dtype === 'uint8' && v instanceof Uint8Array)) {
    if (v.length % cols !== 0) throw rangeError(op, name, `must hold a multiple of ${cols} values but holds ${v.length}`);
    t = tensor(v, [v.length / cols, cols]);
    if (device >= 0) t = t.to(`cuda:${device}`);
  } else {
    throw typeError(op, name, `${dtype === 'int32' ? 'an' : 'a'} ${dtype} Tensor or TypedArray`, v);
  }
  return { t, rows: t.shape[0] };
}

function requireRows(op: string, name: string, got: number, want: number): void {
  if (got !== want) throw rangeError(op, name, `must have ${want} rows (as the last forward's batch) but has ${got}`);
}

// --- MLP ----------------------------------------------------------------------------------------------

export interface MlpOptions {
  inputSize: number;
  /** Widths of the hidden layers; default [64, 64]. */
  hiddenSizes?: number[];
  outputSize: number;
  /** Of the hidden layers; default 'tanh'. */
  activation?: ActivationName;
  /** Of the output layer; default 'identity'. */
  outputActivation?: ActivationName;
  /** Default 'orthogonal'. */
  init?: InitName;
  /** Orthogonal gain of the hidden layers (default sqrt(2)) and of the output layer (default 1; CleanRL's actor uses 0.01). */
  hiddenGain?: number;
  outputGain?: number;
  seed?: number;
  device?: DeviceSpec;
}

const mlpOptionKeys = keysOf<MlpOptions>({
  inputSize: true, hiddenSizes: true, outputSize: true, activation: true, outputActivation: true, init: true,
  hiddenGain: true, outputGain: true, seed: true, device: true,
});

export type MlpConfig = Required<Omit<MlpOptions, 'device'>>;

export class Mlp extends Module<MlpConfig> {
  readonly #stack: DenseStack;
  #lastRows: number | null = null;

  /** @internal Use rl.nn.mlp(). */
  constructor(config: MlpConfig, device: DeviceIndex, frozen: boolean) {
    const widths = [config.inputSize, ...config.hiddenSizes, config.outputSize];
    const gains = widths.slice(1).map((_, k) => (k === widths.length - 2 ? config.outputGain : config.hiddenGain));
    super(config, device, frozen, stackSpecs('layers', widths, config.init, gains, new Random(config.seed)));
    const acts = widths.slice(1).map((_, k) => (k === widths.length - 2 ? config.outputActivation : config.activation));
    this.#stack = buildStack(this, 'layers', widths, acts);
  }

  get kind(): string {
    return 'mlp';
  }

  protected make(device: DeviceIndex, frozen: boolean): this {
    return new Mlp(this.config, device, frozen) as this;
  }

  /** x [B, inputSize] (a Tensor, or a Float32Array of B*inputSize) -> [B, outputSize]. */
  forward(x: Tensor | Float32Array): Tensor {
    const { t, rows } = matrixInput('mlp.forward', 'x', x, 'float32', this.config.inputSize, this.deviceIndex);
    const out = this.#stack.forward(rows, t);
    this.#lastRows = rows;
    return out;
  }

  /**
   * From d loss / d output [B, outputSize] of the last forward: adds every parameter's gradient,
   * returns d loss / d x (null with { inputGrad: false }, which skips its cost).
   */
  backward(gradOutput: Tensor | Float32Array, opts: { inputGrad?: boolean } = {}): Tensor | null {
    const op = 'mlp.backward';
    this.requireTrainable('backward');
    if (this.#lastRows === null) throw rangeError(op, 'gradOutput', 'needs a forward() first');
    const { t, rows } = matrixInput(op, 'gradOutput', gradOutput, 'float32', this.config.outputSize, this.deviceIndex);
    requireRows(op, 'gradOutput', rows, this.#lastRows);
    const gx = booleanOr(op, 'inputGrad', options<{ inputGrad?: boolean }>(op, opts, inputGradKeys).inputGrad, true)
      ? emptyTensor([rows, this.config.inputSize], 'float32', this.deviceIndex) : null;
    this.#stack.backward(t, gx);
    return gx;
  }
}

export function mlp(opts: MlpOptions): Mlp {
  const op = 'nn.mlp';
  const o = options<MlpOptions>(op, opts, mlpOptionKeys);
  const config: MlpConfig = {
    inputSize: positiveInt(op, 'inputSize', o.inputSize),
    hiddenSizes: sizes(op, 'hiddenSizes', o.hiddenSizes, [64, 64]),
    outputSize: positiveInt(op, 'outputSize', o.outputSize),
    activation: choice(op, 'activation', o.activation, activationNames, 'tanh'),
    outputActivation: choice(op, 'outputActivation', o.outputActivation, activationNames, 'identity'),
    init: choice(op, 'init', o.init, inits, 'orthogonal'),
    hiddenGain: finiteOr(op, 'hiddenGain', o.hiddenGain, Math.SQRT2),
    outputGain: finiteOr(op, 'outputGain', o.outputGain, 1),
    seed: seedOf(op, o.seed),
  };
  return new Mlp(config, parseDevice(o.device, op), false);
}

// --- token policy ---------------------------------------------------------------------------------------

/** The gradients a token policy's backward() takes: of its logits, of its values, or both. */
export interface TokenPolicyGrads {
  gradLogits?: Tensor | Float32Array;
  gradValues?: Tensor | Float32Array;
}

const tokenPolicyGradKeys = keysOf<TokenPolicyGrads>({ gradLogits: true, gradValues: true });

export interface TokenPolicyOptions {
  vocabSize: number;
  /** Tokens of context each prediction sees; default 4. */
  contextSize?: number;
  /** Default 16. */
  embedSize?: number;
  /** Default [64]. */
  hiddenSizes?: number[];
  /** Default 'tanh'. */
  activation?: ActivationName;
  /** A value head beside the logits; default false. */
  valueHead?: boolean;
  /** Default 'orthogonal' (logits gain 0.01 as CleanRL's actor, value gain 1). */
  init?: InitName;
  seed?: number;
  device?: DeviceSpec;
}

const tokenPolicyOptionKeys = keysOf<TokenPolicyOptions>({
  vocabSize: true, contextSize: true, embedSize: true, hiddenSizes: true, activation: true, valueHead: true,
  init: true, seed: true, device: true,
});

export type TokenPolicyConfig = Required<Omit<TokenPolicyOptions, 'device'>>;

export interface TokenPolicyOutput {
  /** [N, vocabSize] */
  logits: Tensor;
  /** [N], when the policy has a value head. */
  values: Tensor | null;
}

/**
 * Next-token logits from the previous contextSize tokens: their embeddings side by side, an MLP
 * trunk, then a linear head over the vocabulary (and optionally a scalar value head).
 */
export class TokenPolicy extends Module<TokenPolicyConfig> {
  readonly #trunk: DenseStack | null;
  readonly #policyHead: Dense;
  readonly #valueHead: Dense | null;
  #saved: { N: number; ids: Tensor; embedded: Tensor; hidden: Tensor; logits: Tensor; values: Tensor | null } | null = null;

  /** @internal Use rl.nn.tokenPolicy(). */
  constructor(config: TokenPolicyConfig, device: DeviceIndex, frozen: boolean) {
    const rng = new Random(config.seed);
    const input = config.contextSize * config.embedSize;
    const widths = [input, ...config.hiddenSizes];
    const hidden = widths[widths.length - 1];
    const specs = [
      embeddingSpec('embed.weight', config.vocabSize, config.embedSize, rng),
      ...stackSpecs('trunk', widths, config.init, widths.slice(1).map(() => Math.SQRT2), rng),
      ...denseSpecs('policy', hidden, config.vocabSize, config.init, 0.01, rng),
      ...(config.valueHead ? denseSpecs('value', hidden, 1, config.init, 1, rng) : []),
    ];
    super(config, device, frozen, specs);
    this.#trunk = config.hiddenSizes.length > 0
      ? buildStack(this, 'trunk', widths, config.hiddenSizes.map(() => config.activation)) : null;
    this.#policyHead = new Dense(hidden, config.vocabSize, 'identity', this.parameter('policy.weight'), this.parameter('policy.bias'));
    this.#valueHead = config.valueHead
      ? new Dense(hidden, 1, 'identity', this.parameter('value.weight'), this.parameter('value.bias')) : null;
  }

  get kind(): string {
    return 'tokenPolicy';
  }

  protected make(device: DeviceIndex, frozen: boolean): this {
    return new TokenPolicy(this.config, device, frozen) as this;
  }

  get #hiddenSize(): number {
    const h = this.config.hiddenSizes;
    return h.length > 0 ? h[h.length - 1] : this.config.contextSize * this.config.embedSize;
  }

  /** contexts [N, contextSize] int32 token ids (each in [0, vocabSize)) -> logits [N, V] and values [N]. */
  forward(contexts: Tensor | Int32Array): TokenPolicyOutput {
    const { contextSize: C, embedSize: E, vocabSize: V } = this.config;
    const { t: ids, rows: N } = matrixInput('tokenPolicy.forward', 'contexts', contexts, 'int32', C, this.deviceIndex);
    const embedded = emptyTensor([N, C * E], 'float32', this.deviceIndex);
    embedding(N * C, E, V, ids, this.parameter('embed.weight').value, embedded);
    const hidden = this.#trunk !== null ? this.#trunk.forward(N, embedded) : embedded;
    const logits = emptyTensor([N, V], 'float32', this.deviceIndex);
    this.#policyHead.forward(N, hidden, logits, null);
    let values: Tensor | null = null;
    if (this.#valueHead !== null) {
      values = emptyTensor([N], 'float32', this.deviceIndex);
      this.#valueHead.forward(N, hidden, values, null);
    }
    this.#saved = { N, ids, embedded, hidden, logits, values };
    return { logits, values };
  }

  /**
   * From d loss / d logits [N, V] and (with a value head) d loss / d values [N] of the last
   * forward: adds every parameter's gradient. Either gradient may be omitted (taken as 0).
   * Their values are rewritten in place, unchanged (the heads' identity activation).
   */
  backward(grads: TokenPolicyGrads): void {
    const op = 'tokenPolicy.backward';
    this.requireTrainable('backward');
    const s = this.#saved;
    if (s === null) throw rangeError(op, 'grads', 'needs a forward() first');
    if (grads instanceof Tensor || ArrayBuffer.isView(grads)) throw typeError(op, 'grads', 'an object { gradLogits, gradValues }', grads);
    const g = options<TokenPolicyGrads>(op, grads, tokenPolicyGradKeys, 'grads', 'an object { gradLogits, gradValues }');
    const H = this.#hiddenSize;
    const gHidden = emptyTensor([s.N, H], 'float32', this.deviceIndex);
    let written = false;
    if (g.gradLogits !== undefined) {
      const { t, rows } = matrixInput(op, 'gradLogits', g.gradLogits, 'float32', this.config.vocabSize, this.deviceIndex);
      requireRows(op, 'gradLogits', rows, s.N);
      this.#policyHead.backward(s.N, s.hidden, s.logits, null, t, t, gHidden, false);
      written = true;
    }
    if (g.gradValues !== undefined) {
      if (this.#valueHead === null) throw rangeError(op, 'gradValues', 'given but this policy has no value head');
      const { t, rows } = matrixInput(op, 'gradValues', g.gradValues, 'float32', 1, this.deviceIndex);
      requireRows(op, 'gradValues', rows, s.N);
      this.#valueHead.backward(s.N, s.hidden, s.values as Tensor, null, t, t, gHidden, written);
      written = true;
    }
    if (!written) return;
    const C = this.config.contextSize, E = this.config.embedSize;
    let gEmbedded = gHidden;
    if (this.#trunk !== null) {
      gEmbedded = emptyTensor([s.N, C * E], 'float32', this.deviceIndex);
      this.#trunk.backward(gHidden, gEmbedded);
    }
    embeddingBackward(s.N * C, E, this.config.vocabSize, s.ids, gEmbedded, this.parameter('embed.weight').grad as Tensor);
  }
}

export function tokenPolicy(opts: TokenPolicyOptions): TokenPolicy {
  const op = 'nn.tokenPolicy';
  const o = options<TokenPolicyOptions>(op, opts, tokenPolicyOptionKeys);
  const config: TokenPolicyConfig = {
    vocabSize: positiveInt(op, 'vocabSize', o.vocabSize),
    contextSize: positiveInt(op, 'contextSize', o.contextSize, 4),
    embedSize: positiveInt(op, 'embedSize', o.embedSize, 16),
    hiddenSizes: sizes(op, 'hiddenSizes', o.hiddenSizes, [64]),
    activation: choice(op, 'activation', o.activation, activationNames, 'tanh'),
    valueHead: booleanOr(op, 'valueHead', o.valueHead, false),
    init: choice(op, 'init', o.init, inits, 'orthogonal'),
    seed: seedOf(op, o.seed),
  };
  return new TokenPolicy(config, parseDevice(o.device, op), false);
}

// --- reward model ------------------------------------------------------------------------------------------

export interface RewardModelOptions {
  vocabSize: number;
  /** Default 16. */
  embedSize?: number;
  /** Widths of the per-token MLP; default [64]. */
  hiddenSizes?: number[];
  /** Default 'tanh'. */
  activation?: ActivationName;
  /** Layer norm over the pooled features before the head; default true. */
  layerNorm?: boolean;
  init?: InitName;
  seed?: number;
  device?: DeviceSpec;
}

const rewardModelOptionKeys = keysOf<RewardModelOptions>({
  vocabSize: true, embedSize: true, hiddenSizes: true, activation: true, layerNorm: true, init: true, seed: true,
  device: true,
});

export type RewardModelConfig = Required<Omit<RewardModelOptions, 'device'>>;

const kLayerNormEps = 1e-5;

/**
 * A scalar reward per sequence: token embeddings, a per-token MLP, the mean over the sequence's
 * valid tokens, an optional layer norm, and a linear head.
 */
export class RewardModel extends Module<RewardModelConfig> {
  readonly #trunk: DenseStack | null;
  readonly #head: Dense;
  #saved: {
    B: number; T: number; ids: Tensor; mask: Tensor | null; pooled: Tensor;
    norm: { y: Tensor; mean: Tensor; rstd: Tensor } | null; rewards: Tensor;
  } | null = null;

  /** @internal Use rl.nn.rewardModel(). */
  constructor(config: RewardModelConfig, device: DeviceIndex, frozen: boolean) {
    const rng = new Random(config.seed);
    const widths = [config.embedSize, ...config.hiddenSizes];
    const H = widths[widths.length - 1];
    const specs = [
      embeddingSpec('embed.weight', config.vocabSize, config.embedSize, rng),
      ...stackSpecs('trunk', widths, config.init, widths.slice(1).map(() => Math.SQRT2), rng),
      ...(config.layerNorm ? [
        { name: 'norm.weight', shape: [H], init: (a: Float32Array) => a.fill(1) },
        { name: 'norm.bias', shape: [H], init: () => undefined },
      ] : []),
      ...denseSpecs('head', H, 1, config.init, 1, rng),
    ];
    super(config, device, frozen, specs);
    this.#trunk = config.hiddenSizes.length > 0
      ? buildStack(this, 'trunk', widths, config.hiddenSizes.map(() => config.activation)) : null;
    this.#head = new Dense(H, 1, 'identity', this.parameter('head.weight'), this.parameter('head.bias'));
  }

  get kind(): string {
    return 'rewardModel';
  }

  protected make(device: DeviceIndex, frozen: boolean): this {
    return new RewardModel(this.config, device, frozen) as this;
  }

  get #featureSize(): number {
    const h = this.config.hiddenSizes;
    return h.length > 0 ? h[h.length - 1] : this.config.embedSize;
  }

  /**
   * tokens [B, T] int32 and an optional mask [B, T] uint8 (1 = a token of the sequence; default
   * all) -> rewards [B]. T is taken from the mask when tokens are a flat Int32Array.
   */
  forward(tokens: Tensor | Int32Array, mask?: Tensor | Uint8Array | null): Tensor {
    const op = 'rewardModel.forward';
    const T = tokens instanceof Tensor ? tokens.shape[1] : mask instanceof Tensor ? mask.shape[1] : undefined;
    if (T === undefined) throw rangeError(op, 'tokens', 'must be a [B, T] Tensor when `mask` is not a Tensor either');
    const { t: ids, rows: B } = matrixInput(op, 'tokens', tokens, 'int32', T, this.deviceIndex);
    let m: Tensor | null = null;
    if (mask !== undefined && mask !== null) {
      const r = matrixInput(op, 'mask', mask, 'uint8', T, this.deviceIndex);
      requireRows(op, 'mask', r.rows, B);
      m = r.t;
    }
    const { vocabSize: V, embedSize: E } = this.config;
    const H = this.#featureSize;
    const embedded = emptyTensor([B * T, E], 'float32', this.deviceIndex);
    embedding(B * T, E, V, ids, this.parameter('embed.weight').value, embedded);
    const features = this.#trunk !== null ? this.#trunk.forward(B * T, embedded) : embedded;
    const pooled = emptyTensor([B, H], 'float32', this.deviceIndex);
    meanPool(B, T, H, features, m, pooled);
    let norm: { y: Tensor; mean: Tensor; rstd: Tensor } | null = null;
    if (this.config.layerNorm) {
      norm = { y: emptyTensor([B, H], 'float32', this.deviceIndex), mean: emptyTensor([B], 'float32', this.deviceIndex),
        rstd: emptyTensor([B], 'float32', this.deviceIndex) };
      layerNorm(B, H, pooled, this.parameter('norm.weight').value, this.parameter('norm.bias').value, kLayerNormEps, norm.y,
        norm.mean, norm.rstd);
    }
    const rewards = emptyTensor([B], 'float32', this.deviceIndex);
    this.#head.forward(B, norm?.y ?? pooled, rewards, null);
    this.#saved = { B, T, ids, mask: m, pooled, norm, rewards };
    return rewards;
  }

  /** From d loss / d rewards [B] of the last forward: adds every parameter's gradient. */
  backward(gradRewards: Tensor | Float32Array): void {
    const op = 'rewardModel.backward';
    this.requireTrainable('backward');
    const s = this.#saved;
    if (s === null) throw rangeError(op, 'gradRewards', 'needs a forward() first');
    const { t: g, rows } = matrixInput(op, 'gradRewards', gradRewards, 'float32', 1, this.deviceIndex);
    requireRows(op, 'gradRewards', rows, s.B);
    const H = this.#featureSize, E = this.config.embedSize;
    const gFeatures = emptyTensor([s.B, H], 'float32', this.deviceIndex);
    this.#head.backward(s.B, s.norm?.y ?? s.pooled, s.rewards, null, g, g, gFeatures, false);
    let gPooled = gFeatures;
    if (s.norm !== null) {
      gPooled = emptyTensor([s.B, H], 'float32', this.deviceIndex);
      const w = this.parameter('norm.weight'), b = this.parameter('norm.bias');
      layerNormBackward(s.B, H, s.pooled, w.value, s.norm.mean, s.norm.rstd, gFeatures, gPooled, w.grad, b.grad);
    }
    const gTokens = emptyTensor([s.B * s.T, H], 'float32', this.deviceIndex);
    meanPoolBackward(s.B, s.T, H, gPooled, s.mask, gTokens);
    let gEmbedded = gTokens;
    if (this.#trunk !== null) {
      gEmbedded = emptyTensor([s.B * s.T, E], 'float32', this.deviceIndex);
      this.#trunk.backward(gTokens, gEmbedded);
    }
    embeddingBackward(s.B * s.T, E, this.config.vocabSize, s.ids, gEmbedded, this.parameter('embed.weight').grad as Tensor);
  }
}

export function rewardModel(opts: RewardModelOptions): RewardModel {
  const op = 'nn.rewardModel';
  const o = options<RewardModelOptions>(op, opts, rewardModelOptionKeys);
  const config: RewardModelConfig = {
    vocabSize: positiveInt(op, 'vocabSize', o.vocabSize),
    embedSize: positiveInt(op, 'embedSize', o.embedSize, 16),
    hiddenSizes: sizes(op, 'hiddenSizes', o.hiddenSizes, [64]),
    activation: choice(op, 'activation', o.activation, activationNames, 'tanh'),
    layerNorm: booleanOr(op, 'layerNorm', o.layerNorm, true),
    init: choice(op, 'init', o.init, inits, 'orthogonal'),
    seed: seedOf(op, o.seed),
  };
  return new RewardModel(config, parseDevice(o.device, op), false);
}
