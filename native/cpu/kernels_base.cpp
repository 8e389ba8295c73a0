// The chunk kernels compiled for the x86-64 baseline (SSE2).
#define RLHF_CHUNK_NS baseline
#include "chunk_kernels.h"
#include "policy_chunks.h"
#include "preference_chunks.h"
#include "nn_chunks.h"
#include "cpu_variants.h"

namespace rlhf {

const ChunkKernels& baselineKernelsTable() {
  static const ChunkKernels k = {"x86-64", baseline::gaeColumns, baseline::tokenGaeRows,
                                 baseline::discountedReturnsRows, baseline::blockMoments, baseline::affineRange,
                                 baseline::rowSoftmax, baseline::rowSoftmaxStore, baseline::rowSoftmaxGrad,
                                 baseline::rowGradGiven, baseline::klRange, baseline::policyBlock, baseline::valueBlock,
                                 baseline::pairwiseRange, baseline::maskedRowSum, baseline::dpoRange,
                                 baseline::biasActRows, baseline::biasActGradRows, baseline::columnSums,
                                 baseline::adamwRange, baseline::sumSquaresRange, baseline::triadRange};
  return k;
}

}  // namespace rlhf
