// The matrix multiply compiled for the AVX2 + FMA instruction set; called only when the CPU has them.
#define RLHF_CHUNK_NS avx2
#include "gemm.h"

namespace rlhf {

void avx2Gemm(const MatmulArgs& a) { avx2::gemm(a); }

}  // namespace rlhf
