// matmulCpu: the blocked multiply of gemm.h compiled for the x86-64 baseline here, for AVX2 in
// gemm_avx2.cpp and for AVX-512 in gemm_avx512.cpp, chosen as the chunk kernels are (setCpuPath,
// RLHF_SIMD).
#define RLHF_CHUNK_NS baseline
#include "gemm.h"
#include "cpu_variants.h"

namespace rlhf {

#ifdef RLHF_HAVE_AVX2_VARIANT
void avx2Gemm(const MatmulArgs& a);
#endif
#ifdef RLHF_HAVE_AVX512_VARIANT
void avx512Gemm(const MatmulArgs& a);
#endif

void matmulCpu(const MatmulArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return matmulReference(a);
#ifdef RLHF_HAVE_AVX512_VARIANT
  if (k == avx512Kernels()) return avx512Gemm(a);
#endif
#ifdef RLHF_HAVE_AVX2_VARIANT
  if (k != &baselineKernels()) return avx2Gemm(a);
#endif
  baseline::gemm(a);
}

}  // namespace rlhf
