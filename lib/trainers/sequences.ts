// Completions under a TokenPolicy: every completion token is predicted from the contextSize
// tokens before it (prompt tokens included, padding before the start), and a completion's
// log-probability is the sum (or mean) of its tokens'. The forward and backward chain of ops
// shared by the trainers that score sequences (DPO, and the RLHF trainers after it).
import { TokenPolicy } from '../nn/models';
import { logprobsFromLogits, logprobsFromLogitsBackward } from '../ops/policy';
import { sequenceLogprobs, sequenceLogprobsBackward } from '../ops/preference';
import { Tensor, tensor } from '../tensor';

const kIgnore = -100;
const kPad = 0;

/** B completions laid out [B, T] (T the longest), with each token's context window. */
export interface CompletionBatch {
  B: number;
  T: number;
  contextSize: number;
  /** [B*T, contextSize]: the tokens before each position, padded on the left. */
  contexts: Int32Array;
  /** [B*T]: the completion's tokens, the ignore index past its end. */
  labels: Int32Array;
  /** [B*T]: 1 on completion tokens. */
  mask: Uint8Array;
  /** [B]: tokens per completion. */
  lengths: Int32Array;
}

export function completionBatch(prompts: readonly Int32Array[], completions: readonly Int32Array[], contextSize: number): CompletionBatch {
  const B = completions.length;
  const T = Math.max(1, ...completions.map((c) => c.length));
  const C = contextSize;
  const contexts = new Int32Array(B * T * C).fill(kPad);
  const labels = new Int32Array(B * T).fill(kIgnore);
  const mask = new Uint8Array(B * T);
  const lengths = new Int32Array(B);
  for (let b = 0; b < B; ++b) {
    const sequence = new Int32Array(prompts[b].length + completions[b].length);
    sequence.set(prompts[b]);
    sequence.set(completions[b], prompts[b].length);
    lengths[b] = completions[b].length;
    for (let t = 0; t < completions[b].length; ++t) {
      const at = prompts[b].length + t;  // the position predicted
      const row = b * T + t;
      labels[row] = sequence[at];
      mask[row] = 1;
      for (let k = 0; k < C; ++k) {
        const src = at - C + k;
        if (src >= 0) contexts[row * C + k] = sequence[src];
      }
    }
  }
  return { B, T, contextSize: C, contexts, labels, mask, lengths };
}

/**
 * The log-probability of each completion under `policy` ([B]), and the backward that takes
 * d loss / d those log-probabilities into the policy's parameter gradients. The policy's next
 * backward must be this one (a TokenPolicy keeps its last forward).
 */
export function completionLogprobs(policy: TokenPolicy, batch: CompletionBatch, average = false): {
  logprobs: Float32Array;
  backward: (grad: Float32Array) => void;
} {
  const { B, T, contextSize: C } = batch;
  const { logits } = policy.forward(tensor(batch.contexts, [B * T, C], { dtype: 'int32' }));
  const labels = tensor(batch.labels, [B * T], { dtype: 'int32' });
  const tokens = logprobsFromLogits(logits, labels, { ignoreIndex: kIgnore }).logprobs;
  const mask = tensor(batch.mask, [B, T], { dtype: 'uint8' });
  const seq = sequenceLogprobs(tensor(tokens.dataSync() as Float32Array, [B, T]), mask, { average });
  const backward = (grad: Float32Array) => {
    const gradTokens = sequenceLogprobsBackward({ gradSequence: grad, mask }, { average });
    const gradLogprobs: Tensor = tensor(gradTokens.dataSync() as Float32Array, [B * T]);
    const gradLogits = logprobsFromLogitsBackward({ logits, labels, gradLogprobs }, { ignoreIndex: kIgnore });
    policy.backward({ gradLogits });
  };
  return { logprobs: Float32Array.from(seq.dataSync() as Float32Array), backward };
}
