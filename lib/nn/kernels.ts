// The native kernels as the layers call them: tensors whose shapes the layers guarantee, no
// option parsing (the addon still checks every length and device, so a mistake here throws
// rather than corrupts). Everything is synchronous: a layer's next step needs the result.
import { native } from '../native';
import { Tensor } from '../tensor';

export type ActivationName = 'identity' | 'tanh' | 'relu' | 'gelu' | 'gelu_tanh';
export const activationNames: readonly ActivationName[] = ['identity', 'tanh', 'relu', 'gelu', 'gelu_tanh'];
const activationIndex: Record<ActivationName, number> = { identity: 0, tanh: 1, relu: 2, gelu: 3, gelu_tanh: 4 };

/** Whether the backward of `act` needs the pre-activation (else the output serves). */
export function needsPreActivation(act: ActivationName): boolean {
  return act === 'gelu' || act === 'gelu_tanh';
}

const raw = (t: Tensor, name: string) => t.raw('nn', name);
const rawOrNull = (t: Tensor | null, name: string) => (t === null ? null : t.raw('nn', name));

/** What a gemm applies to C as it stores it (a dense layer's forward): C = act(P + bias), z = P + bias. */
export interface Epilogue {
  bias: Tensor | null;
  act: ActivationName;
  z: Tensor | null;
}

const noEpilogue: Epilogue = { bias: null, act: 'identity', z: null };

/**
 * c (+)= op(a) op(b) over the leading rows of dense row-major tensors: a is [M, K] ([K, M] when
 * transA), b is [K, N] ([N, K] when transB), c is [M, N]; then the epilogue.
 */
export function gemm(M: number, N: number, K: number, a: Tensor, transA: boolean, b: Tensor, transB: boolean, c: Tensor,
                     accumulate: boolean, epilogue: Epilogue = noEpilogue): void {
  native().matmul(M, N, K, raw(a, 'a'), transA ? M : K, transA, raw(b, 'b'), transB ? K : N, transB, raw(c, 'c'), N,
    accumulate, rawOrNull(epilogue.bias, 'bias'), activationIndex[epilogue.act], rawOrNull(epilogue.z, 'z'), false);
}

/** What a dense layer's backward reads and writes (see denseBackward). */
export interface DenseGrads {
  /** d/dy [rows, out]. */
  gradY: Tensor;
  /** Receives d/d(pre-activation) [rows, out]; may be gradY. */
  gradZ: Tensor;
  /** Accumulate [out, in] and [out]. */
  gradW: Tensor;
  gradBias: Tensor | null;
  /** Receives (or, with accumulateGradX, adds) d/dx [rows, in] when given. */
  gradX: Tensor | null;
  accumulateGradX: boolean;
}

/**
 * The backward of y = act(x w^T + b) in one native call: gradZ = gradY * act', gradBias += its
 * column sums, gradW += gradZ^T x, gradX (+)= gradZ w. y (tanh, relu) or z (the gelus) feeds act'.
 */
export function denseBackward(rows: number, inSize: number, outSize: number, x: Tensor, w: Tensor, y: Tensor | null,
                              z: Tensor | null, act: ActivationName, g: DenseGrads): void {
  native().denseBackward(rows, inSize, outSize, raw(x, 'x'), raw(w, 'w'), rawOrNull(y, 'y'), rawOrNull(z, 'z'),
    activationIndex[act], raw(g.gradY, 'gradY'), raw(g.gradZ, 'gradZ'), raw(g.gradW, 'gradW'), rawOrNull(g.gradBias, 'gradBias'),
    rawOrNull(g.gradX, 'gradX'), g.accumulateGradX, false);
}

export function embedding(n: number, dim: number, vocab: number, ids: Tensor, table: Tensor, out: Tensor): void {
  native().embedding(n, dim, vocab, raw(ids, 'ids'), raw(table, 'table'), raw(out, 'out'), false);
}

export function embeddingBackward(n: number, dim: number, vocab: number, ids: Tensor, gradOut: Tensor, gradTable: Tensor): void {
  native().embeddingBackward(n, dim, vocab, raw(ids, 'ids'), raw(gradOut, 'gradOut'), raw(gradTable, 'gradTable'), false);
}

export function layerNorm(rows: number, cols: number, x: Tensor, gamma: Tensor, beta: Tensor, eps: number, y: Tensor,
                          mean: Tensor, rstd: Tensor): void {
  native().layerNorm(rows, cols, raw(x, 'x'), raw(gamma, 'gamma'), raw(beta, 'beta'), eps, raw(y, 'y'), raw(mean, 'mean'),
    raw(rstd, 'rstd'), false);
}

export function layerNormBackward(rows: number, cols: number, x: Tensor, gamma: Tensor, mean: Tensor, rstd: Tensor,
                                  gradY: Tensor, gradX: Tensor, gradGamma: Tensor | null, gradBeta: Tensor | null): void {
  native().layerNormBackward(rows, cols, raw(x, 'x'), raw(gamma, 'gamma'), raw(mean, 'mean'), raw(rstd, 'rstd'),
    raw(gradY, 'gradY'), raw(gradX, 'gradX'), rawOrNull(gradGamma, 'gradGamma'), rawOrNull(gradBeta, 'gradBeta'), false);
}

export function meanPool(B: number, T: number, D: number, x: Tensor, mask: Tensor | null, out: Tensor): void {
  native().meanPool(B, T, D, raw(x, 'x'), rawOrNull(mask, 'mask'), raw(out, 'out'), false);
}

export function meanPoolBackward(B: number, T: number, D: number, gradOut: Tensor, mask: Tensor | null, gradX: Tensor): void {
  native().meanPoolBackward(B, T, D, raw(gradOut, 'gradOut'), rawOrNull(mask, 'mask'), raw(gradX, 'gradX'), false);
}
