// The machine's own memory bandwidth, measured as STREAM's triad (a = b + s*c) on the library's
// thread pool: the roofline that the benchmarks report each op against. The stores are
// non-temporal, as the ops' large outputs are, so that the triad's 12 counted bytes per element
// are the bytes that actually move (a plain store would also read each line first).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "rlhf/bandwidth.h"
#include "thread_pool.h"

namespace rlhf {

double measureTriadBandwidthGBs(int64_t n, int repeats) {
  std::vector<float> a(n), b(n), c(n);
  constexpr int64_t kLine = 16;
  // First touch by the threads that will use the pages.
  parallelFor(n, 1 << 16, kLine, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      a[i] = 0.0f;
      b[i] = 1.0f;
      c[i] = 2.0f;
    }
  });
  double best = 1e300;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    parallelFor(n, 1 << 16, kLine, [&](int64_t i0, int64_t i1) {
      float* __restrict pa = a.data();
      const float* __restrict pb = b.data();
      const float* __restrict pc = c.data();
      int64_t i = i0;
#if defined(__SSE2__)
      for (; i < i1 && (reinterpret_cast<uintptr_t>(pa + i) & 15) != 0; ++i) pa[i] = pb[i] + 3.0f * pc[i];
      const __m128 three = _mm_set1_ps(3.0f);
      for (; i + 4 <= i1; i += 4)
        _mm_stream_ps(pa + i, _mm_add_ps(_mm_loadu_ps(pb + i), _mm_mul_ps(three, _mm_loadu_ps(pc + i))));
      _mm_sfence();
#endif
      for (; i < i1; ++i) pa[i] = pb[i] + 3.0f * pc[i];
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::min(best, s);
  }
  return 3.0 * sizeof(float) * static_cast<double>(n) / best / 1e9;
}

}  // namespace rlhf
