// The machine's own memory bandwidth, measured as STREAM's triad (a = b + s*c) on the library's
// thread pool with the chunk kernels in use: the roofline that the benchmarks report each op
// against. The stores are non-temporal, as the ops' large outputs are, so that the triad's 12
// counted bytes per element are the bytes that actually move (a plain store would also read each
// line first); and as wide as the ops' (32 bytes with AVX2, which move about a tenth more than
// 16-byte ones).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <vector>
#if defined(__linux__)
#include <unistd.h>
#endif

#include "cpu_variants.h"
#include "rlhf/bandwidth.h"
#include "thread_pool.h"

namespace rlhf {

double triadSeconds(float* a, const float* b, const float* c, int64_t n) {
  const ChunkKernels& k = activeKernels();
  const auto start = std::chrono::steady_clock::now();
  parallelFor(n, 1 << 16, kLine, [&](int64_t i0, int64_t i1) { k.triadRange(a, b, c, i0, i1); });
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Where readSeconds leaves its sum, so that the reads are not dropped.
static volatile float gReadSink = 0.0f;

double readSeconds(const float* x, int64_t n) {
  const ChunkKernels& k = activeKernels();
  std::mutex sumMutex;
  float sum = 0.0f;
  const auto start = std::chrono::steady_clock::now();
  parallelFor(n, 1 << 16, kLine, [&](int64_t i0, int64_t i1) {
    const float part = k.readRange(x, i0, i1);
    std::lock_guard<std::mutex> lock(sumMutex);
    sum += part;
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  gReadSink = sum;
  return seconds;
}

// The largest cache the OS reports (on a virtual machine, the host's: shared with its other
// tenants, but there to be hit).
static int64_t lastLevelCacheBytes() {
  int64_t bytes = 0;
#if defined(__linux__) && defined(_SC_LEVEL3_CACHE_SIZE)
  for (int name : {_SC_LEVEL2_CACHE_SIZE, _SC_LEVEL3_CACHE_SIZE, _SC_LEVEL4_CACHE_SIZE})
    bytes = std::max<int64_t>(bytes, sysconf(name));
#endif
  return bytes > 0 ? bytes : int64_t{32} << 20;
}

int64_t memoryTriadElements() {
  const int64_t bytes = 2 * lastLevelCacheBytes();
  return std::max<int64_t>(int64_t{1} << 24, (bytes + 11) / 12);
}

double measureTriadBandwidthGBs(int64_t n, int repeats) {
  std::vector<float> a(n), b(n), c(n);
  // First touch by the threads that will use the pages.
  parallelFor(n, 1 << 16, kLine, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      a[i] = 0.0f;
      b[i] = 1.0f;
      c[i] = 2.0f;
    }
  });
  double best = 1e300;
  for (int r = 0; r < repeats; ++r) best = std::min(best, triadSeconds(a.data(), b.data(), c.data(), n));
  return 3.0 * sizeof(float) * static_cast<double>(n) / best / 1e9;
}

}  // namespace rlhf
