// The chunk kernels of each instruction-set variant (chunk_kernels.h) and the choice among them.
#pragma once
#include <cstdint>

#include "rlhf/kernels.h"

namespace rlhf {

// Time-major GAE works on column blocks of this many (its scratch: 3 blocks of floats).
constexpr int64_t kGaeBlock = 2048;
// Rows of token GAE and returns in flight per thread: 8 in the AVX2 tiles, 4 interleaved in the
// scalar form. The scratch holds 2*kRows row buffers.
constexpr int kRows = 8;
constexpr int kScalarRows = 4;
// Floats between row buffers: T rounded up to a line, plus a line so that the pitch is never a
// multiple of 4 KiB.
inline int64_t rowPitch(int64_t T) { return (T + 15) / 16 * 16 + 16; }
inline int64_t rowScratchFloats(int64_t T) { return 2 * kRows * rowPitch(T); }

// `streaming`: the outputs are far larger than the cache, write them with non-temporal stores.
struct ChunkKernels {
  const char* name;  // "avx2" or "x86-64" (the baseline every x86-64 CPU has)
  void (*gaeColumns)(const GaeArgs&, int64_t n0, int64_t n1, float* scratch, bool streaming);
  void (*tokenGaeRows)(const TokenGaeArgs&, int64_t b0, int64_t b1, float* scratch, bool streaming);
  void (*discountedReturnsRows)(const DiscountedReturnsArgs&, int64_t b0, int64_t b1, float* scratch,
                                bool streaming);
  MaskedMoments (*blockMoments)(const float* x, const uint8_t* m, int64_t len);
  void (*affineRange)(const AffineArgs&, int64_t i0, int64_t i1, bool streaming);
};

const ChunkKernels& baselineKernels();
const ChunkKernels* avx2Kernels();  // null when not compiled in
// The variant in use: AVX2 when compiled in and the CPU has AVX2 and FMA, else the baseline.
// RLHF_SIMD=baseline in the environment forces the baseline.
const ChunkKernels& activeKernels();

}  // namespace rlhf
