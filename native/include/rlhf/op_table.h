// The one table of ops. The addon registers an entry point per row, exposes the table to
// TypeScript (rl.opTable()), the native conformance test checks that it covers every row, and
// the benchmarks iterate it.
//   name        the public op name (also the Node-API entry point in native/addon/*_ops.cpp);
//               the nn family's layer kernels (all but matmul) are called by the rl.nn models
//   family      the kernel family it belongs to
//   cuda        1 when a CUDA kernel exists
//   cpuTol      largest relative difference allowed between the optimised CPU kernel and the
//               scalar reference (0: bit-identical, as for every elementwise or sequential op)
//   cudaTol     the same for CUDA (parallel scans and trees reorder rounding)
// A product's difference grows with its K: denseBackward's weight gradient sums over the batch,
// a larger K than the matmul row's check uses, hence its looser tolerance.
#pragma once

#define RLHF_OP_TABLE(OP)                                 \
  OP(gae, "advantages", 1, 0.0, 1e-5)                     \
  OP(tokenGae, "advantages", 1, 0.0, 1e-5)                \
  OP(discountedReturns, "advantages", 1, 0.0, 1e-5)       \
  OP(maskedMean, "statistics", 1, 1e-12, 1e-12)           \
  OP(maskedVar, "statistics", 1, 1e-10, 1e-10)            \
  OP(maskedWhiten, "statistics", 1, 1e-6, 1e-6)           \
  OP(logprobsFromLogits, "policy", 1, 2e-6, 1e-5)         \
  OP(logprobsFromLogitsBackward, "policy", 1, 2e-6, 1e-5) \
  OP(klPenalty, "policy", 1, 1e-6, 1e-6)                  \
  OP(shapeRewards, "policy", 1, 0.0, 0.0)                 \
  OP(ppoPolicyLoss, "policy", 1, 1e-6, 1e-5)              \
  OP(valueLoss, "policy", 1, 1e-6, 1e-6)                  \
  OP(actorLossFromLogits, "policy", 1, 2e-6, 1e-5)        \
  OP(pairwiseRewardLoss, "preference", 1, 1e-6, 1e-6)      \
  OP(dpoLoss, "preference", 1, 2e-5, 1e-6)                 \
  OP(sequenceLogprobs, "preference", 1, 1e-6, 1e-6)        \
  OP(sequenceLogprobsBackward, "preference", 1, 0.0, 0.0) \
  OP(groupAdvantages, "preference", 1, 0.0, 1e-6)         \
  OP(matmul, "nn", 1, 1e-5, 1e-5)                         \
  OP(biasAct, "nn", 1, 2e-6, 2e-6)                        \
  OP(biasActBackward, "nn", 1, 0.0, 2e-6)                 \
  OP(denseBackward, "nn", 1, 1e-4, 1e-4)                  \
  OP(embedding, "nn", 1, 0.0, 0.0)                        \
  OP(embeddingBackward, "nn", 1, 0.0, 0.0)                \
  OP(layerNorm, "nn", 1, 0.0, 1e-5)                       \
  OP(layerNormBackward, "nn", 1, 0.0, 1e-5)               \
  OP(meanPool, "nn", 1, 0.0, 1e-6)                        \
  OP(meanPoolBackward, "nn", 1, 0.0, 0.0)                 \
  OP(adamw, "nn", 1, 0.0, 1e-6)                           \
  OP(sumSquares, "nn", 1, 1e-12, 1e-12)                   \
  OP(scaleGrads, "nn", 1, 0.0, 0.0)

namespace rlhf {

struct OpInfo {
  const char* name;
  const char* family;
  bool cuda;
  double cpuTol, cudaTol;
};

#define RLHF_OP_INFO(name, family, cuda, cpuTol, cudaTol) OpInfo{#name, family, cuda != 0, cpuTol, cudaTol},
inline constexpr OpInfo kOps[] = {RLHF_OP_TABLE(RLHF_OP_INFO)};
#undef RLHF_OP_INFO
inline constexpr int kNumOps = sizeof(kOps) / sizeof(kOps[0]);

}  // namespace rlhf
