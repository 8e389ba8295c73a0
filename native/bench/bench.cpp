// Native CPU benchmark (no Node): each op's optimised kernel on the thread pool, and its scalar
// reference, against the STREAM-triad bandwidth of triads run in turns with it. Bytes are the op's
// compulsory traffic (every input read once, every output written once; whitening reads x
// twice because the statistics must be known before the first output: x and mask, then x). Plain
// streaming loops with the traffic of the GAE family and of the masked statistics stand beside
// them: the ceilings for those mixes of reads and writes here.
// The matrix multiply is compute-bound instead: its rows give GFLOP/s against the floating-point
// peak of this machine, measured in the same run (--matmul: those rows only).
//   rlhf_native_bench [--threads N] [--quick] [--matmul]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "rlhf/bandwidth.h"
#include "rlhf/kernels.h"
#include "rlhf/nn.h"
#include "rlhf/policy.h"
#include "rlhf/whiten.h"
#include "thread_pool.h"

using namespace rlhf;

namespace {

// The times of at least 5 runs of fn (and more until minSeconds have passed), sorted; `between`
// runs after each, untimed.
std::vector<double> sortedSeconds(const std::function<void()>& fn, double minSeconds,
                                  const std::function<void()>& between = [] {}) {
  fn();  // warm-up: first touch, caches, thread wake-up
  std::vector<double> times;
  const auto start = std::chrono::steady_clock::now();
  while (times.size() < 5 || (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < minSeconds &&
                              times.size() < 1000)) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    between();
  }
  std::sort(times.begin(), times.end());
  return times;
}

// A triad over arrays larger than the caches, run in turns with an op's runs: this machine's
// bandwidth swings by a third within minutes as other tenants load it, and the op and the triad
// then see the same moments (README "Benchmark").
class PairedTriad {
 public:
  explicit PairedTriad(int64_t n) : a_(n, 0.0f), b_(n, 1.0f), c_(n, 2.0f) {}
  double seconds() { return triadSeconds(a_.data(), b_.data(), c_.data(), static_cast<int64_t>(a_.size())); }
  double bytes() const { return 12.0 * static_cast<double>(a_.size()); }

 private:
  std::vector<float> a_, b_, c_;
};

// The median seconds of fn, and the triad's bandwidth in GB/s (median), run in turns for at least
// 5 runs and minSeconds.
std::pair<double, double> pairedMedians(const std::function<void()>& fn, PairedTriad& triad, double minSeconds) {
  std::vector<double> triads;
  const std::vector<double> times = sortedSeconds(fn, minSeconds, [&] { triads.push_back(triad.seconds()); });
  std::sort(triads.begin(), triads.end());
  return {times[times.size() / 2], triad.bytes() / triads[triads.size() / 2] / 1e9};
}

// n elements `lead` past a page boundary: where an array lands decides some kernels' paths (the
// token GAE and returns tiles stream straight into outputs at their inputs' place in a line),
// and a std::vector lands wherever the heap has room.
template <typename E>
class PageArray {
 public:
  PageArray(int64_t n, int lead, E fill = E{}) : room_(static_cast<size_t>(n + 4096 / sizeof(E) + lead), fill) {
    const uintptr_t at = reinterpret_cast<uintptr_t>(room_.data());
    data_ = room_.data() + (4096 - at % 4096) % 4096 / sizeof(E) + lead;
  }
  E* data() { return data_; }

 private:
  std::vector<E> room_;
  E* data_;
};

struct Row {
  std::string op, shape, path;
  double seconds, bytes;
};

// A row against the bandwidth of the triads run in turns with it.
void print(const Row& r, double triad) {
  const double gbs = r.bytes / r.seconds / 1e9;
  std::printf("%-18s %-16s %-10s %12.1f %10.2f %8.1f%% %10.2f\n", r.op.c_str(), r.shape.c_str(), r.path.c_str(),
              r.seconds * 1e6, gbs, 100.0 * gbs / triad, triad);
}

// The row of an op timed in turns with the triad.
void printPaired(const std::string& op, const std::string& shape, const std::string& path, double bytes,
                 const std::function<void()>& fn, PairedTriad& triad, double minSeconds) {
  const auto [seconds, gbs] = pairedMedians(fn, triad, minSeconds);
  print({op, shape, path, seconds, bytes}, gbs);
}

using RunFn = std::function<void(const std::string&, const std::string&, double, const std::function<void()>&)>;

// The policy family: log-probs forward and backward at LLM vocabularies, the fused actor loss,
// KL, and the PPO policy + value losses over n tokens.
void benchPolicy(const RunFn& run, bool quick, int64_t n, const std::vector<uint8_t>& mask) {
  for (auto [N, V] : {std::pair<int64_t, int64_t>{quick ? 256 : 4096, 32000}, {quick ? 64 : 1024, 128256}}) {
    std::vector<float> z(static_cast<size_t>(N * V)), lp(N), H(N), gLp(N, 1.0f), gH(N, -0.01f),
        dz(static_cast<size_t>(N * V));
    for (size_t i = 0; i < z.size(); ++i) z[i] = static_cast<float>((i * 2654435761u) % 1000) * 0.008f - 4;
    std::vector<int32_t> y(N);
    for (int64_t i = 0; i < N; ++i) y[i] = static_cast<int32_t>((i * 7919) % V);
    const std::string shape = "[" + std::to_string(N) + "," + std::to_string(V) + "]";
    LogprobsArgs f;
    f.N = N;
    f.V = V;
    f.logits = z.data();
    f.labels = y.data();
    f.logprobs = lp.data();
    f.entropy = H.data();
    run("logprobs+entropy", shape, N * V * 4.0, [&] { logprobsCpu(f); });
    LogprobsBackwardArgs b;
    b.N = N;
    b.V = V;
    b.logits = z.data();
    b.labels = y.data();
    b.gradLogprobs = gLp.data();
    b.gradEntropy = gH.data();
    b.gradLogits = dz.data();
    run("logprobs backward", shape, N * V * 8.0, [&] { logprobsBackwardCpu(b); });
    ActorLossArgs a;
    a.B = 1;
    a.T = N;
    a.V = V;
    a.logits = z.data();
    a.labels = y.data();
    std::vector<float> old(N, -10.0f), adv(N, 0.5f), ref(N, -10.1f);
    a.oldLogprobs = old.data();
    a.advantages = adv.data();
    a.refLogprobs = ref.data();
    a.entropyCoef = 0.01f;
    a.klCoef = 0.05f;
    a.klOptions.estimator = KlEstimator::K3;
    a.gradLogits = dz.data();
    run("actorLoss", shape, N * V * 8.0, [&] { actorLossCpu(a); });
  }
  std::vector<float> lp(n), old(n), adv(n), v(n), vo(n), R(n), g1(n), g2(n);
  for (int64_t i = 0; i < n; ++i) {
    lp[i] = -1.0f - static_cast<float>(i % 97) * 0.01f;
    old[i] = -1.0f - static_cast<float>(i % 89) * 0.01f;
    adv[i] = static_cast<float>(i % 11 - 5) * 0.2f;
    v[i] = static_cast<float>(i % 13) * 0.1f;
    vo[i] = static_cast<float>(i % 17) * 0.1f;
    R[i] = static_cast<float>(i % 19) * 0.1f;
  }
  KlPenaltyArgs k;
  k.n = n;
  k.logprobs = lp.data();
  k.refLogprobs = old.data();
  k.o.estimator = KlEstimator::K3;
  k.kl = g1.data();
  k.grad = g2.data();
  run("klPenalty k3", std::to_string(n), n * 16.0, [&] { klPenaltyCpu(k); });
  const int64_t T = 1024, B = n / T;
  PolicyLossArgs p;
  p.B = B;
  p.T = T;
  p.logprobs = lp.data();
  p.oldLogprobs = old.data();
  p.advantages = adv.data();
  p.mask = mask.data();
  p.grad = g1.data();
  ValueLossArgs w;
  w.B = B;
  w.T = T;
  w.values = v.data();
  w.oldValues = vo.data();
  w.returns = R.data();
  w.mask = mask.data();
  w.clip = 0.2f;
  w.grad = g2.data();
  run("ppo+value loss", "[" + std::to_string(B) + "," + std::to_string(T) + "]", n * 34.0, [&] {
    policyLossCpu(p);
    valueLossCpu(w);
  });
}

// --- plain loops: the ceilings of the ops' traffic ---------------------------------------------
// Front-to-back loops over page-aligned copies of the data, with the traffic of an op family and
// none of its order or arithmetic. Page-aligned, because outputs a few bytes ahead of an input in
// the low 12 address bits make the loads wait on the stores (4K aliasing), several times slower,
// which would measure the placement and not the traffic. [i0, i1) on multiples of 8 (of 16 for
// the read loop).

// A page-aligned copy of n elements (or fresh space for them), freed with it.
template <typename E>
class PageCopy {
 public:
  PageCopy(const E* from, int64_t n)
      : p_(static_cast<E*>(std::aligned_alloc(4096, (static_cast<size_t>(n) * sizeof(E) + 4095) / 4096 * 4096))) {
    if (from != nullptr) std::memcpy(p_, from, static_cast<size_t>(n) * sizeof(E));
  }
  ~PageCopy() { std::free(p_); }
  PageCopy(const PageCopy&) = delete;
  PageCopy& operator=(const PageCopy&) = delete;
  E* get() const { return p_; }

 private:
  E* p_;
};

#if defined(__x86_64__)
// Whether the CPU variant in use has AVX2 and FMA (the AVX2 and AVX-512 variants): the plain
// loops and the peak then use them too.
bool avx2InUse() { return std::strcmp(cpuVariantName(), "x86-64") != 0; }

// GAE's traffic: three input streams (two float, one byte), two float outputs written with
// non-temporal stores, an add and a subtract an element. Next to the triad's two reads and one
// write: writes cost the memory more than reads.
__attribute__((target("avx2"))) void plainStreamAvx2(const float* r, const float* v, const uint8_t* m, float* a,
                                                       float* b, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; i += 8) {
    const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(m + i)));
    const __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(bytes, _mm256_setzero_si256()));
    const __m256 x = _mm256_loadu_ps(r + i), y = _mm256_loadu_ps(v + i);
    _mm256_stream_ps(a + i, _mm256_and_ps(valid, _mm256_add_ps(x, y)));
    _mm256_stream_ps(b + i, _mm256_sub_ps(x, y));
  }
  _mm_sfence();
}
void plainStreamSse2(const float* r, const float* v, const uint8_t* m, float* a, float* b, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; i += 4) {
    const __m128 x = _mm_loadu_ps(r + i), y = _mm_loadu_ps(v + i);
    const __m128 valid = _mm_castsi128_ps(_mm_set_epi32(-(m[i + 3] != 0), -(m[i + 2] != 0), -(m[i + 1] != 0), -(m[i] != 0)));
    _mm_stream_ps(a + i, _mm_and_ps(valid, _mm_add_ps(x, y)));
    _mm_stream_ps(b + i, _mm_sub_ps(x, y));
  }
  _mm_sfence();
}

// The masked statistics' traffic: a float and a byte stream read, nothing written; the masked
// values and the count summed in float (the sums only keep the loads from being dropped). Each
// stream's lines requested once, 4 KiB of floats ahead (the mask's 1 KiB), as sequenceLogprobs
// requests its rows on the AMD machine. Requested 2 KiB ahead at every vector, as it was first
// written (on the Intel host, where reads alone got even less of the memory without), this loop
// was no ceiling on the AMD machine: 74% of the paired triad in the slow phase and 52-54% in the
// fast one, where once a line 4 KiB ahead gives 82% and 68-69% (and sequenceLogprobs 69-74%).
__attribute__((target("avx2"))) float plainReadAvx2(const float* x, const uint8_t* m, int64_t i0, int64_t i1) {
  __m256 sum = _mm256_setzero_ps(), count = sum;
  for (int64_t i = i0; i < i1; i += 16) {
    // Addresses formed as integers: near the end they lie past the arrays (a prefetch never faults).
    __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(x + i) + 4096));
    if (i % 64 == 0) __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(m + i) + 1024));
    for (int64_t k = i; k < i + 16; k += 8) {
      const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(m + k)));
      const __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(bytes, _mm256_setzero_si256()));
      sum = _mm256_add_ps(sum, _mm256_and_ps(valid, _mm256_loadu_ps(x + k)));
      count = _mm256_add_ps(count, _mm256_and_ps(valid, _mm256_set1_ps(1.0f)));
    }
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, _mm256_add_ps(sum, count));
  return lanes[0];
}
float plainReadSse2(const float* x, const uint8_t* m, int64_t i0, int64_t i1) {
  __m128 sum = _mm_setzero_ps(), count = sum;
  for (int64_t i = i0; i < i1; i += 4) {
    const __m128 valid = _mm_castsi128_ps(_mm_set_epi32(-(m[i + 3] != 0), -(m[i + 2] != 0), -(m[i + 1] != 0), -(m[i] != 0)));
    sum = _mm_add_ps(sum, _mm_and_ps(valid, _mm_loadu_ps(x + i)));
    count = _mm_add_ps(count, _mm_and_ps(valid, _mm_set1_ps(1.0f)));
  }
  float lanes[4];
  _mm_storeu_ps(lanes, _mm_add_ps(sum, count));
  return lanes[0];
}

// The GAE plain loop over n elements on the pool (n a multiple of 8): median seconds and the
// paired triad's GB/s.
std::pair<double, double> plainStreamTimes(const float* r, const float* v, const uint8_t* m, int64_t n, PairedTriad& triad,
                                           double minSeconds) {
  const bool avx2 = avx2InUse();
  const PageCopy<float> pr(r, n), pv(v, n), a(nullptr, n), b(nullptr, n);
  const PageCopy<uint8_t> pm(m, n);
  return pairedMedians(
      [&] {
        parallelFor(n, 1 << 15, 16, [&](int64_t i0, int64_t i1) {
          if (avx2) plainStreamAvx2(pr.get(), pv.get(), pm.get(), a.get(), b.get(), i0, i1);
          else plainStreamSse2(pr.get(), pv.get(), pm.get(), a.get(), b.get(), i0, i1);
        });
      },
      triad, minSeconds);
}

// The statistics' plain loop over n elements on the pool, likewise.
std::pair<double, double> plainReadTimes(const float* x, const uint8_t* m, int64_t n, PairedTriad& triad, double minSeconds) {
  const bool avx2 = avx2InUse();
  const PageCopy<float> px(x, n);
  const PageCopy<uint8_t> pm(m, n);
  std::atomic<float> sink{0};  // keeps the sums, and so the loads, from being dropped
  return pairedMedians(
      [&] {
        parallelFor(n, 1 << 15, 16, [&](int64_t i0, int64_t i1) {
          sink.store(avx2 ? plainReadAvx2(px.get(), pm.get(), i0, i1) : plainReadSse2(px.get(), pm.get(), i0, i1),
                     std::memory_order_relaxed);
        });
      },
      triad, minSeconds);
}
#endif

// --- matmul -------------------------------------------------------------------------------------

#if defined(__x86_64__)
// `steps` steps of 12 independent chains of multiply-adds on one thread (more chains than an
// FMA's latency times the FMA pipes of current x86 cores, so that the pipes never wait); returns
// the flops done. AVX-512 FMA, AVX2 + FMA, or what the x86-64 baseline has: SSE2 multiply then add.
constexpr int kChains = 12;
__attribute__((target("avx512f"))) double fma512Chains(int64_t steps) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c));
  const __m512 m = _mm512_set1_ps(0.999999f), d = _mm512_set1_ps(1e-7f);
  for (int64_t s = 0; s < steps; ++s)
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], m, d);
  float sink[16];
  for (int c = 1; c < kChains; ++c) acc[0] = _mm512_add_ps(acc[0], acc[c]);
  _mm512_storeu_ps(sink, acc[0]);
  volatile float keep = sink[0];
  (void)keep;
  return static_cast<double>(steps) * kChains * 32;
}
__attribute__((target("avx2,fma"))) double fmaChains(int64_t steps) {
  __m256 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_ps(static_cast<float>(c));
  const __m256 m = _mm256_set1_ps(0.999999f), d = _mm256_set1_ps(1e-7f);
  for (int64_t s = 0; s < steps; ++s)
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], m, d);
  float sink[8];
  for (int c = 1; c < kChains; ++c) acc[0] = _mm256_add_ps(acc[0], acc[c]);
  _mm256_storeu_ps(sink, acc[0]);
  volatile float keep = sink[0];
  (void)keep;
  return static_cast<double>(steps) * kChains * 16;
}
double mulAddChains(int64_t steps) {
  __m128 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm_set1_ps(static_cast<float>(c));
  const __m128 m = _mm_set1_ps(0.999999f), d = _mm_set1_ps(1e-7f);
  for (int64_t s = 0; s < steps; ++s)
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = _mm_add_ps(_mm_mul_ps(acc[c], m), d);
  float sink[4];
  for (int c = 1; c < kChains; ++c) acc[0] = _mm_add_ps(acc[0], acc[c]);
  _mm_storeu_ps(sink, acc[0]);
  volatile float keep = sink[0];
  (void)keep;
  return static_cast<double>(steps) * kChains * 8;
}
#endif

// The floating-point peak of the pool in GFLOP/s, for the instruction set the multiply runs (the
// variant's: AVX-512 FMA, AVX2 + FMA or the baseline's): every thread runs the chains at once,
// best of several tries (0 where not measurable).
double measurePeakGflops() {
#if defined(__x86_64__)
  const bool fma = avx2InUse(), fma512 = std::strcmp(cpuVariantName(), "avx512") == 0;
  const auto chains = fma512 ? fma512Chains : fma ? fmaChains : mulAddChains;
  const int threads = ThreadPool::instance().numThreads();
  constexpr int64_t kSteps = 1 << 21;  // 200 to 400 Mflop per thread: a few milliseconds
  double best = 0;
  for (int attempt = 0; attempt < 7; ++attempt) {
    std::vector<double> flops(static_cast<size_t>(threads));
    const auto t0 = std::chrono::steady_clock::now();
    ThreadPool::instance().run(threads, [&](int64_t t) { flops[t] = chains(kSteps); });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double total = 0;
    for (double f : flops) total += f;
    best = std::max(best, total / seconds / 1e9);
  }
  return best;
#else
  return 0;
#endif
}

// The multiplies of the models: square, the PPO MLP's layers forward (K = 4 observations, 64
// hidden, a 2-wide head, NN and as the layers run it, NT) and backward (dX = dY W^T, dW = X^T dY,
// the first layer's 64 x 4), a large batch, and the weight gradient of a large batch (A
// transposed, K = 4096). The peak is measured before and after the
// rows and the higher kept: other work on the machine may have slowed one of the two.
void benchMatmul(double minSeconds) {
  struct Shape {
    int64_t M, N, K;
    bool transA, transB;
  };
  const Shape shapes[] = {{512, 512, 512, false, false}, {128, 64, 64, false, false}, {128, 64, 4, false, false},
                          {128, 2, 64, false, false},    {128, 2, 64, false, true},   {128, 64, 64, false, true},
                          {64, 64, 128, true, false},    {64, 4, 128, true, false},   {4096, 256, 256, false, false},
                          {256, 256, 4096, true, false}};
  double peak = measurePeakGflops();
  std::vector<std::vector<double>> times;
  for (const Shape& s : shapes) {
    std::vector<float> a(static_cast<size_t>(s.M * s.K)), b(static_cast<size_t>(s.K * s.N));
    std::vector<float> c(static_cast<size_t>(s.M * s.N));
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 61) * 0.01f - 0.3f;
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 53) * 0.01f - 0.26f;
    MatmulArgs g;
    g.M = s.M;
    g.N = s.N;
    g.K = s.K;
    g.a = a.data();
    g.lda = s.transA ? s.M : s.K;
    g.transA = s.transA;
    g.b = b.data();
    g.ldb = s.transB ? s.K : s.N;
    g.transB = s.transB;
    g.c = c.data();
    g.ldc = s.N;
    times.push_back(sortedSeconds([&] { matmulCpu(g); }, minSeconds));
  }
  peak = std::max(peak, measurePeakGflops());
  std::printf("matmul: threads %d, CPU variant %s, measured peak %.1f GFLOP/s\n", ThreadPool::instance().numThreads(),
              cpuVariantName(), peak);
  std::printf("%-18s %-16s %-6s %12s %12s %10s %9s\n", "op", "shape MxNxK", "layout", "best us", "median us", "GFLOP/s",
              "of peak");
  for (size_t i = 0; i < times.size(); ++i) {
    const Shape& s = shapes[i];
    const double gflops = 2.0 * s.M * s.N * s.K / times[i][0] / 1e9;
    const std::string shape = std::to_string(s.M) + "x" + std::to_string(s.N) + "x" + std::to_string(s.K);
    const std::string layout = std::string(s.transA ? "T" : "N") + (s.transB ? "T" : "N");
    std::printf("%-18s %-16s %-6s %12.1f %12.1f %10.1f %8.1f%%\n", "matmul", shape.c_str(), layout.c_str(),
                times[i][0] * 1e6, times[i][times[i].size() / 2] * 1e6, gflops, peak > 0 ? 100.0 * gflops / peak : 0.0);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int threads = ThreadPool::instance().numThreads();
  bool quick = false, matmulOnly = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--matmul") == 0) matmulOnly = true;
  }
  ThreadPool::instance().setNumThreads(std::max(1, threads));
  const double minSeconds = quick ? 0.05 : 0.3;
  if (matmulOnly) {
    benchMatmul(minSeconds);
    return 0;
  }
  // Triads over twice the last-level cache: memory, not cache, and none of an op's data left in
  // the cache for its next run (README "Benchmark").
  const int64_t triadElements = quick ? (1 << 22) : memoryTriadElements();
  const double triad = measureTriadBandwidthGBs(triadElements, quick ? 3 : 10);
  std::printf("threads %d, CPU variant %s, STREAM triad %.2f GB/s (best of 10); each row against triads run in turns "
              "with it (median)\n",
              ThreadPool::instance().numThreads(), cpuVariantName(), triad);
  std::printf("%-18s %-16s %-10s %12s %10s %9s %10s\n", "op", "shape", "path", "median us", "GB/s", "of triad",
              "triad GB/s");
  PairedTriad paired(triadElements);

  const int64_t T = 1024, N = quick ? 1024 : 4096, n = T * N;
  // 16 bytes into a page, as a large array fresh from the system; the outputs of the `buffered`
  // rows 16 bytes further on, off the inputs' place in a line.
  PageArray<float> r(n, 4, 0.5f), v(n, 4, 0.25f), adv(n, 4), ret(n, 4), advOff(n, 8), retOff(n, 8);
  std::vector<float> last(N, 0.1f);
  std::vector<uint8_t> flags(n, 0), mask(n, 1);
  for (int64_t i = 0; i < n; i += 97) flags[i] = 1;
  for (int64_t i = 0; i < n; i += 13) mask[i] = 0;

  auto run = [&](const std::string& op, const std::string& shape, double bytes, const std::function<void()>& fn) {
    setCpuPath(CpuPath::Auto);
    printPaired(op, shape, "optimised", bytes, fn, paired, minSeconds);
    setCpuPath(CpuPath::Reference);
    printPaired(op, shape, "reference", bytes, fn, paired, minSeconds);
    setCpuPath(CpuPath::Auto);
  };

  GaeArgs g;
  g.T = T;
  g.N = N;
  g.rewards = r.data();
  g.values = v.data();
  g.nextValues = v.data() + N;
  g.nextValuesLast = last.data();
  g.terminated = flags.data();
  g.terminatedLast = flags.data() + (T - 1) * N;
  g.gammaValue = 0.99f;
  g.lambdaValue = 0.95f;
  g.advantages = adv.data();
  g.returns = ret.data();
  const std::string tn = "[" + std::to_string(T) + "," + std::to_string(N) + "]";
  run("gae", tn, n * (4.0 + 4 + 1 + 4 + 4), [&] { gaeCpu(g); });

  for (MaskMode mode : {MaskMode::Premask, MaskMode::Skip}) {
    TokenGaeArgs k;
    k.B = N;
    k.T = T;
    k.rewards = r.data();
    k.values = v.data();
    k.mask = mask.data();
    k.gamma = 1.0f;
    k.lambda = 0.95f;
    k.maskMode = mode;
    k.advantages = adv.data();
    k.returns = ret.data();
    const std::string name = mode == MaskMode::Premask ? "tokenGae premask" : "tokenGae skip";
    const std::string shape = "[" + std::to_string(N) + "," + std::to_string(T) + "]";
    run(name, shape, n * (4.0 + 4 + 1 + 4 + 4), [&] { tokenGaeCpu(k); });
    TokenGaeArgs off = k;
    off.advantages = advOff.data();
    off.returns = retOff.data();
    printPaired(name, shape, "buffered", n * (4.0 + 4 + 1 + 4 + 4), [&] { tokenGaeCpu(off); }, paired, minSeconds);
  }

#if defined(__x86_64__)
  {
    const auto [seconds, gbs] = plainStreamTimes(r.data(), v.data(), mask.data(), n, paired, minSeconds);
    print({"plain loop", tn, "gae bytes", seconds, n * (4.0 + 4 + 1 + 4 + 4)}, gbs);
  }
#endif

  DiscountedReturnsArgs d;
  d.B = N;
  d.T = T;
  d.rewards = r.data();
  d.mask = mask.data();
  d.gamma = 0.99f;
  d.returns = ret.data();
  run("discountedReturns", "[" + std::to_string(N) + "," + std::to_string(T) + "]", n * (4.0 + 1 + 4),
      [&] { discountedReturnsCpu(d); });
  DiscountedReturnsArgs dOff = d;
  dOff.returns = retOff.data();
  printPaired("discountedReturns", "[" + std::to_string(N) + "," + std::to_string(T) + "]", "buffered",
              n * (4.0 + 1 + 4), [&] { discountedReturnsCpu(dOff); }, paired, minSeconds);

  const int64_t m = quick ? (1 << 22) : (1 << 24);
  std::vector<float> x(m);
  std::vector<uint8_t> xm(m, 1);
  for (int64_t i = 0; i < m; ++i) x[i] = static_cast<float>(i % 1000) * 0.001f;
  MaskedMomentsArgs ma{m, x.data(), xm.data()};
  run("maskedMean", std::to_string(m), m * (4.0 + 1), [&] { maskedMomentsCpu(ma); });
#if defined(__x86_64__)
  {
    const auto [seconds, gbs] = plainReadTimes(x.data(), xm.data(), m, paired, minSeconds);
    print({"plain loop", std::to_string(m), "stat bytes", seconds, m * (4.0 + 1)}, gbs);
  }
#endif
  std::vector<float> wout(m);
  run("maskedWhiten", std::to_string(m), m * (4.0 + 1 + 4 + 4), [&] {
    AffineArgs a = planWhiten(maskedMomentsCpu(ma), WhitenOptions{});
    a.n = m;
    a.x = x.data();
    a.out = wout.data();
    affineCpu(a);
  });
  benchPolicy(run, quick, n, mask);
  benchMatmul(minSeconds);
  return 0;
}
