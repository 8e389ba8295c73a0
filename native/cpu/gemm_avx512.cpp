// The matrix multiply compiled for AVX-512 (F, DQ, BW, VL); called only when the CPU has them.
// Each element is the same FMA chain over k as in the AVX2 multiply, and the epilogue the same
// lane formulas, so the two give the same bits.
#define RLHF_CHUNK_NS avx512
#include "gemm.h"

namespace rlhf {

void avx512Gemm(const MatmulArgs& a) { avx512::gemm(a); }

}  // namespace rlhf
