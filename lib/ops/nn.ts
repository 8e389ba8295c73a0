// The public matrix multiply. The models of rl.nn (lib/nn) call the same kernel through
// lib/nn/kernels.ts; this is the checked form for users.
import { rangeError } from '../errors';
import { native } from '../native';
import { Tensor } from '../tensor';
import { arg, booleanOr, checkFinite, commonDevice, keysOf, options, output } from '../validate';

export interface MatmulOptions {
  /** Use a's transpose: a is stored [K, M]. Default false. */
  transA?: boolean;
  /** Use b's transpose: b is stored [N, K]. Default false. */
  transB?: boolean;
  /** Write the [M, N] result here instead of a new tensor. */
  out?: Tensor;
  /** Add the product to `out` (required) instead of overwriting it: out += op(a) op(b). */
  accumulate?: boolean;
  /** A RangeError naming the argument and the first NaN or infinity in the inputs. Default false. */
  checkFinite?: boolean;
}

function matrix(op: string, name: string, v: unknown) {
  const a = arg(op, name, v, 'float32');
  if (a.tensor === null || a.shape.length !== 2)
    throw rangeError(op, name, `must be a 2-D float32 Tensor but has shape [${a.shape.join(', ')}]`);
  return a;
}

const matmulOptionKeys = keysOf<MatmulOptions>({ transA: true, transB: true, out: true, accumulate: true, checkFinite: true });

function prepareMatmul(op: string, aIn: Tensor, bIn: Tensor, opts: MatmulOptions | undefined) {
  const a = matrix(op, 'a', aIn);
  const b = matrix(op, 'b', bIn);
  const o = options<MatmulOptions>(op, opts, matmulOptionKeys);
  const transA = booleanOr(op, 'transA', o.transA, false);
  const transB = booleanOr(op, 'transB', o.transB, false);
  const accumulate = booleanOr(op, 'accumulate', o.accumulate, false);
  if (booleanOr(op, 'checkFinite', o.checkFinite, false)) checkFinite(op, [a, b]);
  const [M, K] = transA ? [a.shape[1], a.shape[0]] : [a.shape[0], a.shape[1]];
  const [Kb, N] = transB ? [b.shape[1], b.shape[0]] : [b.shape[0], b.shape[1]];
  if (Kb !== K)
    throw rangeError(op, 'b', `must have ${K} ${transB ? 'columns' : 'rows'} (the inner dimension of op(a) [${M}, ${K}]) but has ${Kb}`);
  const device = commonDevice(op, [a, b]);
  if (accumulate && o.out === undefined) throw rangeError(op, 'accumulate', 'needs `out` (the tensor to add to)');
  const out = output(op, 'out', o.out, [M, N], device);
  const call = (async: boolean) => native().matmul(M, N, K, a.raw, a.shape[1], transA, b.raw, b.shape[1], transB,
    out.raw(op, 'out'), N, accumulate, null, 0, null, async);
  return { call, out };
}

/** op(a) op(b) for 2-D float32 tensors, op(x) = x or its transpose; float32 sums, deterministic. */
export function matmul(a: Tensor, b: Tensor, opts?: MatmulOptions): Tensor {
  const p = prepareMatmul('matmul', a, b, opts);
  p.call(false);
  return p.out;
}

export async function matmulAsync(a: Tensor, b: Tensor, opts?: MatmulOptions): Promise<Tensor> {
  const p = prepareMatmul('matmulAsync', a, b, opts);
  await p.call(true);
  return p.out;
}
