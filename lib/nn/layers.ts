// Dense layers and stacks of them: the forward and backward passes as sequences of native
// kernels over buffers kept between calls, so that a training step allocates little.
import { DeviceIndex, Tensor, emptyTensor } from '../tensor';
import { ActivationName, denseBackward, gemm, needsPreActivation } from './kernels';
import { Parameter } from './module';

/** y = act(x W^T + b), W [out, in] as PyTorch's nn.Linear stores it, b [out]. */
export class Dense {
  constructor(readonly inSize: number, readonly outSize: number, readonly act: ActivationName,
              readonly weight: Parameter, readonly bias: Parameter) {}

  /**
   * Over B rows of x [B, in] into y [B, out]; z [B, out] receives x W^T + b when the backward needs
   * it. One native call: the bias and activation are the product's epilogue.
   */
  forward(B: number, x: Tensor, y: Tensor, z: Tensor | null): void {
    gemm(B, this.outSize, this.inSize, x, false, this.weight.value, true, y, false, { bias: this.bias.value, act: this.act, z });
  }

  /**
   * From gy = d/dy: gz = d/d(pre-activation) into `gz` (which may be gy), the weight and bias
   * gradients accumulated, and gx = gz W written (or added, with accumulateGx) when gx is given.
   * One native call.
   */
  backward(B: number, x: Tensor, y: Tensor, z: Tensor | null, gy: Tensor, gz: Tensor, gx: Tensor | null,
           accumulateGx: boolean): void {
    // The identity's gradient is gy itself: rewriting gy's own values in place (times 1) spares a
    // copy of what may be a [B, vocabulary] gradient.
    const gradZ = this.act === 'identity' ? gy : gz;
    denseBackward(B, this.inSize, this.outSize, x, this.weight.value, y, z, this.act, {
      gradY: gy, gradZ, gradW: this.weight.grad as Tensor, gradBias: this.bias.grad, gradX: gx, accumulateGradX: accumulateGx,
    });
  }
}

/** The buffers of one batch size: each layer's output (but the last's), pre-activation and gradient. */
interface Workspace {
  B: number;
  y: (Tensor | null)[];
  z: (Tensor | null)[];
  g: Tensor[];
}

const kWorkspaces = 4;

/** Dense layers applied in order; the backward runs through what the last forward kept. */
export class DenseStack {
  readonly layers: Dense[];
  readonly #device: DeviceIndex;
  readonly #workspaces: Workspace[] = [];
  #saved: { ws: Workspace; x: Tensor; out: Tensor } | null = null;

  constructor(layers: Dense[], device: DeviceIndex) {
    this.layers = layers;
    this.#device = device;
  }

  get inSize(): number {
    return this.layers[0].inSize;
  }

  get outSize(): number {
    return this.layers[this.layers.length - 1].outSize;
  }

  #workspace(B: number): Workspace {
    const i = this.#workspaces.findIndex((w) => w.B === B);
    if (i >= 0) return this.#workspaces[i];
    const last = this.layers.length - 1;
    const ws: Workspace = {
      B,
      y: this.layers.map((l, k) => (k === last ? null : emptyTensor([B, l.outSize], 'float32', this.#device))),
      z: this.layers.map((l) => (needsPreActivation(l.act) ? emptyTensor([B, l.outSize], 'float32', this.#device) : null)),
      g: this.layers.map((l) => emptyTensor([B, l.outSize], 'float32', this.#device)),
    };
    this.#workspaces.push(ws);
    if (this.#workspaces.length > kWorkspaces) this.#evictOne();
    return ws;
  }

  // Batch sizes vary at the end of an epoch; keep the few most recent, never the one the
  // backward still needs.
  #evictOne(): void {
    const i = this.#workspaces.findIndex((w) => w !== this.#saved?.ws);
    const [old] = this.#workspaces.splice(i, 1);
    for (const t of [...old.y, ...old.z, ...old.g]) t?.dispose();
  }

  /** x [B, in] -> a new tensor [B, out]; x and the result are kept for backward(). */
  forward(B: number, x: Tensor): Tensor {
    const ws = this.#workspace(B);
    const out = emptyTensor([B, this.outSize], 'float32', this.#device);
    let input = x;
    this.layers.forEach((layer, k) => {
      const y = ws.y[k] ?? out;
      layer.forward(B, input, y, ws.z[k]);
      input = y;
    });
    this.#saved = { ws, x, out };
    return out;
  }

  /**
   * gradOut [B, out] (not modified) -> accumulates every layer's parameter gradients, and writes
   * (or adds, with accumulateInput) d/dx into `gradInput` when it is given.
   */
  backward(gradOut: Tensor, gradInput: Tensor | null, accumulateInput = false): void {
    const saved = this.#saved;
    if (saved === null) throw new Error('DenseStack.backward before forward');
    const { ws, x, out } = saved;
    let gy = gradOut;
    for (let k = this.layers.length - 1; k >= 0; --k) {
      const layer = this.layers[k];
      const input = k === 0 ? x : (ws.y[k - 1] as Tensor);
      const gx = k === 0 ? gradInput : ws.g[k - 1];
      layer.backward(ws.B, input, ws.y[k] ?? out, ws.z[k], gy, ws.g[k], gx, k === 0 && accumulateInput);
      gy = gx as Tensor;
    }
  }
}
