// The chunk kernels compiled for the AVX2 + FMA instruction set; called only when the CPU has them.
#define RLHF_CHUNK_NS avx2
#include "chunk_kernels.h"
#include "policy_chunks.h"
#include "preference_chunks.h"
#include "nn_chunks.h"
#include "cpu_variants.h"

namespace rlhf {

const ChunkKernels& avx2KernelsTable() {
  static const ChunkKernels k = {"avx2", avx2::gaeColumns, avx2::tokenGaeRows, avx2::discountedReturnsRows,
                                 avx2::blockMoments, avx2::affineRange, avx2::rowSoftmax, avx2::rowSoftmaxStore,
                                 avx2::rowSoftmaxGrad, avx2::rowGradGiven, avx2::klRange, avx2::policyBlock,
                                 avx2::valueBlock, avx2::pairwiseRange, avx2::maskedRowSum, avx2::dpoRange,
                                 avx2::biasActRows, avx2::biasActGradRows, avx2::columnSums, avx2::adamwRange,
                                 avx2::sumSquaresRange, avx2::triadRange};
  return k;
}

}  // namespace rlhf
