// What the sequence trainers (DPO, GRPO, RLHF PPO) ask of a policy. rl.nn.TokenPolicy implements
// it; so can a model from any other JS framework (see examples/custom-policy.ts): next-token
// logits, and values when it has a value head, for rows of context windows; a backward that adds
// to its parameters' gradients; the parameters themselves (value and gradient tensors, which
// AdamW updates in place); and a frozen copy for the reference.
import { typeError } from '../errors';
import { Parameter } from '../nn/module';
import { Tensor } from '../tensor';

export interface SequencePolicy {
  readonly config: { readonly vocabSize: number; readonly contextSize: number; readonly valueHead: boolean };
  /** contexts [N, contextSize] int32 -> logits [N, vocabSize] (and values [N] with a value head). */
  forward(contexts: Tensor): { logits: Tensor; values: Tensor | null };
  /** Gradients of the last forward's outputs -> added to the parameters' gradients. */
  backward(grads: { gradLogits?: Tensor; gradValues?: Tensor | Float32Array }): void;
  parameters(): Parameter[];
  /** A frozen copy (forward only) with the current values. */
  clone(): SequencePolicy;
}

/** `v` as a SequencePolicy, or a TypeError naming the option. */
export function sequencePolicy(op: string, v: unknown): SequencePolicy {
  const p = v as SequencePolicy;
  const ok = p !== null && typeof p === 'object' && typeof p.forward === 'function' && typeof p.backward === 'function' &&
    typeof p.parameters === 'function' && typeof p.clone === 'function' && p.config !== null && typeof p.config === 'object' &&
    Number.isInteger(p.config.vocabSize) && Number.isInteger(p.config.contextSize);
  if (!ok) throw typeError(op, 'policy', 'a SequencePolicy (rl.nn.tokenPolicy(...), or forward/backward/parameters/clone and config)', v);
  return p;
}
