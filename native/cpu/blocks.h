// Helpers of the dispatch files whose reductions run over fixed blocks: the block size fixes the
// rounding, so any thread count gives the same bits.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "cpu_variants.h"
#include "thread_pool.h"

namespace rlhf {

// Elements per block of the loss reductions.
constexpr int64_t kLossBlock = 8192;

// Orders a part's non-temporal stores before the pool's hand-off.
inline void fenceStreams(bool streaming) {
#if defined(__SSE2__)
  if (streaming) _mm_sfence();
#endif
}

// Runs `block(i0, i1)` over fixed blocks of kLossBlock elements on the pool and returns the
// results in block order (fencing the streamed stores of each part).
template <typename Result, typename BlockFn>
std::vector<Result> overBlocks(int64_t n, bool streaming, BlockFn block) {
  const int64_t blocks = (n + kLossBlock - 1) / kLossBlock;
  std::vector<Result> out(static_cast<size_t>(blocks));
  parallelFor(blocks, std::max<int64_t>(1, kMinElementsPerThread / kLossBlock), 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) out[b] = block(b * kLossBlock, std::min(n, (b + 1) * kLossBlock));
    fenceStreams(streaming);
  });
  return out;
}

}  // namespace rlhf
