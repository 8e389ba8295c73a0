// One variant's table of chunk kernels, in the order of ChunkKernels' fields, written once for
// all three variants: each kernels_*.cpp includes it last, after the chunk-kernel headers it
// compiled into its RLHF_CHUNK_NS, and names the variant in RLHF_CHUNK_NAME. A new kernel then
// enters every variant's table at once.
#include "cpu_variants.h"

namespace rlhf {
namespace RLHF_CHUNK_NS {

const ChunkKernels& table() {
  static const ChunkKernels k = {RLHF_CHUNK_NAME, gaeColumns, tokenGaeRows, discountedReturnsRows, countNonZero,
                                 blocksMoments, affineRange, rowSoftmax, rowSoftmaxPair, rowSoftmaxStep,
                                 rowGradGiven, klRange, policyBlock, valueBlock, pairwiseRange,
                                 maskedRowSums, maskedScaleRows, dpoRange, biasActRows, biasActGradRows, columnSums,
                                 adamwRange, sumSquaresRange, triadRange, readRange};
  return k;
}

}  // namespace RLHF_CHUNK_NS
}  // namespace rlhf
