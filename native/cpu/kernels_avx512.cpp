// The chunk kernels compiled for AVX-512 (F, DQ, BW, VL); called only when the CPU has them.
#define RLHF_CHUNK_NS avx512
#include "chunk_kernels.h"
#include "policy_chunks.h"
#include "preference_chunks.h"
#include "nn_chunks.h"
#include "cpu_variants.h"

namespace rlhf {

const ChunkKernels& avx512KernelsTable() {
  static const ChunkKernels k = {"avx512", avx512::gaeColumns, avx512::tokenGaeRows, avx512::discountedReturnsRows,
                                 avx512::blockMoments, avx512::affineRange, avx512::rowSoftmax, avx512::rowSoftmaxStore,
                                 avx512::rowSoftmaxGrad, avx512::rowGradGiven, avx512::klRange, avx512::policyBlock,
                                 avx512::valueBlock, avx512::pairwiseRange, avx512::maskedRowSum, avx512::dpoRange,
                                 avx512::biasActRows, avx512::biasActGradRows, avx512::columnSums, avx512::adamwRange,
                                 avx512::sumSquaresRange, avx512::triadRange};
  return k;
}

}  // namespace rlhf
