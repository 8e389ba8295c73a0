// CUDA kernel timings: every op of the CUDA backend on the shapes that matter (the policy family
// at the vocabularies of LLM RLHF: 32000 and 128256, float32 and bfloat16), timed with CUDA
// events on the backend's own stream after a warm-up, with L2 flushed before every timed
// launch (a memset over twice the L2 size), as the median of at least 20 launches and 0.2 s.
// Bandwidth is the op's compulsory traffic (each input read once, each output written once)
// over the median time, set against the device-to-device copy bandwidth measured here and the
// theoretical peak from the memory clock and bus width. The matrix multiply is compute-bound: it
// reports GFLOP/s (2*M*N*K per product) against the device's float32 FMA peak (SMs x clock x
// float32 lanes per SM x 2), and the same compulsory traffic as the other ops.
//
// Usage: rlhf_cuda_bench [--json FILE] [--algorithms] [--only GROUP]
//   --algorithms  also times each advantage op under both forced algorithms
//                 (RLHF_CUDA_ADVANTAGES=sequential|scan), for tuning the shape heuristic.
//   --only GROUP  one group of ops: gae, tokenGae, returns, whiten, logprobs, actorLoss, losses,
//                 matmul or adamw (a profiler run of one kernel needs no more).
// Prints "no CUDA device" and exits 0 where there is no GPU.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../cuda/device.h"
#include "rlhf/cuda.h"
#include "rlhf/error.h"
#include "rlhf/kernels.h"
#include "rlhf/nn.h"
#include "rlhf/policy.h"
#include "rlhf/whiten.h"

namespace {

namespace cu = rlhf::cuda;
using rlhf::cuda::detail::check;

constexpr int kDevice = 0;
constexpr int kMinLaunches = 20;
constexpr double kMinSeconds = 0.2;
constexpr int kMaxLaunches = 100000;

// Device memory owned by the bench, filled from the host.
class DeviceArray {
 public:
  template <class T>
  explicit DeviceArray(const std::vector<T>& host) : ptr_(cu::alloc(host.size() * sizeof(T), kDevice)) {
    cu::copyToDevice(ptr_, host.data(), host.size() * sizeof(T), kDevice);
  }
  explicit DeviceArray(size_t bytes) : ptr_(cu::alloc(bytes, kDevice)) {}
  ~DeviceArray() {
    try {
      cu::free(ptr_, kDevice);
    } catch (const rlhf::KernelError& e) {
      std::fprintf(stderr, "free: %s\n", e.what());
    }
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_;
};

std::vector<float> uniform(size_t n, float lo, float hi, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

std::vector<uint8_t> bernoulli(size_t n, double p, unsigned seed) {
  std::mt19937 gen(seed);
  std::bernoulli_distribution dist(p);
  std::vector<uint8_t> v(n);
  for (uint8_t& x : v) x = dist(gen) ? 1 : 0;
  return v;
}

// Rows valid up to a length between 70% and 100% of T: a response mask with padding.
std::vector<uint8_t> responseMask(int64_t B, int64_t T, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> length(T * 7 / 10, T);
  std::vector<uint8_t> m(static_cast<size_t>(B * T), 0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = length(gen);
    std::fill(m.begin() + b * T, m.begin() + b * T + len, uint8_t{1});
  }
  return m;
}

class Timer {
 public:
  explicit Timer(cudaStream_t stream) : stream_(stream) {
    check(cudaEventCreate(&start_), "cudaEventCreate");
    check(cudaEventCreate(&stop_), "cudaEventCreate");
    int l2 = 0;
    check(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, kDevice), "cudaDeviceGetAttribute(L2)");
    flushBytes_ = std::max<size_t>(2 * static_cast<size_t>(l2), 1 << 20);
    check(cudaMalloc(&flush_, flushBytes_), "cudaMalloc (L2 flush buffer)");
  }
  ~Timer() {
    cudaFree(flush_);
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Median time of `op` in microseconds.
  double medianUs(const std::function<void()>& op) {
    op();
    op();
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (warm-up)");
    std::vector<float> ms;
    const auto begin = std::chrono::steady_clock::now();
    auto seconds = [&] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    };
    while ((static_cast<int>(ms.size()) < kMinLaunches || seconds() < kMinSeconds) &&
           static_cast<int>(ms.size()) < kMaxLaunches) {
      check(cudaMemsetAsync(flush_, static_cast<int>(ms.size() & 0xff), flushBytes_, stream_), "L2 flush");
      check(cudaEventRecord(start_, stream_), "cudaEventRecord");
      op();
      check(cudaEventRecord(stop_, stream_), "cudaEventRecord");
      check(cudaEventSynchronize(stop_), "cudaEventSynchronize");
      float t = 0;
      check(cudaEventElapsedTime(&t, start_, stop_), "cudaEventElapsedTime");
      ms.push_back(t);
    }
    std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
    return 1e3 * ms[ms.size() / 2];
  }

 private:
  cudaStream_t stream_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  void* flush_ = nullptr;
  size_t flushBytes_ = 0;
};

struct Result {
  std::string op, shape, algorithm;
  double medianUs, bytes, targetUs;
  double flops = 0;  // floating-point operations, for the compute-bound ops
};

struct Bench {
  Timer& timer;
  std::vector<Result> results;
  bool algorithms = false;

  void time(const std::string& op, const std::string& shape, double bytes, const std::function<void()>& fn,
            double targetUs = 0, double flops = 0) {
    results.push_back({op, shape, "auto", timer.medianUs(fn), bytes, targetUs, flops});
  }

  // Advantage ops: the shape-based choice, and on request each algorithm forced.
  void timeAdvantage(const std::string& op, const std::string& shape, double bytes,
                     const std::function<void()>& fn, double targetUs = 0) {
    time(op, shape, bytes, fn, targetUs);
    if (!algorithms) return;
    for (const char* algorithm : {"sequential", "scan"}) {
      setenv("RLHF_CUDA_ADVANTAGES", algorithm, 1);
      results.push_back({op, shape, algorithm, timer.medianUs(fn), bytes, targetUs, 0});
    }
    unsetenv("RLHF_CUDA_ADVANTAGES");
  }
};

std::string shape2(const char* a, int64_t x, const char* b, int64_t y) {
  return std::string("[") + a + "=" + std::to_string(x) + "," + b + "=" + std::to_string(y) + "]";
}

// CleanRL-style rollouts: rewards, values, dones as `terminated` shifted by one step.
void benchGae(Bench& bench, int64_t T, int64_t N, double targetUs) {
  const size_t n = static_cast<size_t>(T * N);
  DeviceArray rewards(uniform(n, -1, 1, 1)), values(uniform(n, -1, 1, 2)),
      lastValues(uniform(static_cast<size_t>(N), -1, 1, 3)), dones(bernoulli(n, 0.01, 4)),
      nextDone(bernoulli(static_cast<size_t>(N), 0.01, 5));
  DeviceArray advantages(n * sizeof(float)), returns(n * sizeof(float));
  rlhf::GaeArgs a;
  a.T = T;
  a.N = N;
  a.rewards = rewards.as<float>();
  a.values = values.as<float>();
  a.nextValues = values.as<float>() + N;
  a.nextValuesLast = lastValues.as<float>();
  a.terminated = dones.as<uint8_t>() + N;
  a.terminatedLast = nextDone.as<uint8_t>();
  a.gammaValue = 0.99f;
  a.lambdaValue = 0.95f;
  a.advantages = advantages.as<float>();
  a.returns = returns.as<float>();
  // rewards, values, dones and the outputs once each; lastValues and nextDone once.
  const double bytes = 17.0 * static_cast<double>(n) + 5.0 * static_cast<double>(N);
  bench.timeAdvantage("gae", shape2("T", T, "N", N), bytes, [&] { cu::gae(a, kDevice); }, targetUs);
}

void benchTokenGae(Bench& bench, int64_t B, int64_t T, rlhf::MaskMode mode, const char* name,
                   double targetUs) {
  const size_t n = static_cast<size_t>(B * T);
  DeviceArray rewards(uniform(n, -1, 1, 6)), values(uniform(n, -1, 1, 7)), mask(responseMask(B, T, 8));
  DeviceArray advantages(n * sizeof(float)), returns(n * sizeof(float));
  rlhf::TokenGaeArgs a;
  a.B = B;
  a.T = T;
  a.rewards = rewards.as<float>();
  a.values = values.as<float>();
  a.mask = mask.as<uint8_t>();
  a.gamma = 1.0f;
  a.lambda = 0.95f;
  a.maskMode = mode;
  a.advantages = advantages.as<float>();
  a.returns = returns.as<float>();
  bench.timeAdvantage(name, shape2("B", B, "T", T), 17.0 * static_cast<double>(n),
                      [&] { cu::tokenGae(a, kDevice); }, targetUs);
}

void benchReturns(Bench& bench, int64_t B, int64_t T) {
  const size_t n = static_cast<size_t>(B * T);
  DeviceArray rewards(uniform(n, -1, 1, 9)), mask(responseMask(B, T, 10));
  DeviceArray returns(n * sizeof(float));
  rlhf::DiscountedReturnsArgs a;
  a.B = B;
  a.T = T;
  a.rewards = rewards.as<float>();
  a.mask = mask.as<uint8_t>();
  a.gamma = 0.99f;
  a.returns = returns.as<float>();
  bench.timeAdvantage("discountedReturns", shape2("B", B, "T", T), 9.0 * static_cast<double>(n),
                      [&] { cu::discountedReturns(a, kDevice); });
}

// Moments (which wait for their result on the host), the affine map, and both as one whitening.
void benchWhiten(Bench& bench, int64_t n) {
  const size_t count = static_cast<size_t>(n);
  DeviceArray x(uniform(count, -3, 5, 11)), mask(bernoulli(count, 0.8, 12)), out(count * sizeof(float));
  rlhf::MaskedMomentsArgs m;
  m.n = n;
  m.x = x.as<float>();
  m.mask = mask.as<uint8_t>();
  rlhf::AffineArgs affine = rlhf::planWhiten(cu::maskedMoments(m, kDevice), rlhf::WhitenOptions{});
  affine.n = n;
  affine.x = x.as<float>();
  affine.out = out.as<float>();
  const std::string shape = "[n=" + std::to_string(n) + "]";
  const double elements = static_cast<double>(n);
  bench.time("maskedMoments", shape, 5.0 * elements, [&] { cu::maskedMoments(m, kDevice); });
  bench.time("affine", shape, 8.0 * elements, [&] { cu::affine(affine, kDevice); });
  // Two passes: x and mask for the moments, then x again and the output. The affine pass
  // never reads the mask, so that is all the traffic two passes need.
  bench.time("whiten", shape, 13.0 * elements, [&] {
    rlhf::AffineArgs plan = rlhf::planWhiten(cu::maskedMoments(m, kDevice), rlhf::WhitenOptions{});
    plan.n = n;
    plan.x = x.as<float>();
    plan.out = out.as<float>();
    cu::affine(plan, kDevice);
  });
}

// --- the policy-gradient family -------------------------------------------------------------
// Logits of billions of elements are filled on the device: a hash of the index mapped to
// [lo, hi), so that the inputs cost no host time and no host memory.

__device__ float hashUnit(uint64_t i) {
  i = (i ^ (i >> 30)) * 0xbf58476d1ce4e5b9ull;
  i = (i ^ (i >> 27)) * 0x94d049bb133111ebull;
  return static_cast<float>((i ^ (i >> 31)) >> 40) * 0x1p-24f;
}

__device__ void storeLogit(float* p, float x) { *p = x; }
__device__ void storeLogit(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }

template <class T>
__global__ void fillUniformKernel(T* p, int64_t n, uint64_t seed, float lo, float hi) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    storeLogit(p + i, lo + (hi - lo) * hashUnit(i * 0x9e3779b97f4a7c15ull + seed));
}

// Logits [N,V] on the device, float32 or bfloat16.
struct DeviceLogits {
  rlhf::LogitsDtype dtype;
  size_t elementBytes;
  DeviceArray data;
  DeviceLogits(int64_t N, int64_t V, rlhf::LogitsDtype d, cudaStream_t stream)
      : dtype(d), elementBytes(d == rlhf::LogitsDtype::F32 ? 4 : 2), data(static_cast<size_t>(N * V) * elementBytes) {
    const int64_t n = N * V;
    if (d == rlhf::LogitsDtype::F32)
      fillUniformKernel<<<4096, 256, 0, stream>>>(data.as<float>(), n, 1, -8.0f, 8.0f);
    else
      fillUniformKernel<<<4096, 256, 0, stream>>>(data.as<__nv_bfloat16>(), n, 1, -8.0f, 8.0f);
    check(cudaGetLastError(), "fillUniformKernel");
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (fill)");
  }
  double bytes(int64_t N, int64_t V) const { return static_cast<double>(N) * static_cast<double>(V) * elementBytes; }
};

std::vector<int32_t> randomLabels(int64_t n, int64_t V, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> label(0, static_cast<int32_t>(V - 1));
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& y : v) y = label(gen);
  return v;
}

std::string rowsShape(int64_t N, int64_t V, rlhf::LogitsDtype d) {
  return shape2("N", N, "V", V) + (d == rlhf::LogitsDtype::F32 ? " f32" : " bf16");
}

// Forward (lp and H) and backward (gLp and gH given, then also the forward's lp and H) over
// [N,V]: the logits are read once forward; the backward reads them and writes the gradient.
void benchLogprobs(Bench& bench, int64_t N, int64_t V, rlhf::LogitsDtype dtype, cudaStream_t stream) {
  const DeviceLogits logits(N, V, dtype, stream);
  DeviceArray labels(randomLabels(N, V, 13)), gLp(uniform(static_cast<size_t>(N), -1, 1, 14)),
      gH(uniform(static_cast<size_t>(N), -0.01f, 0.01f, 15));
  DeviceArray lp(static_cast<size_t>(N) * 4), H(static_cast<size_t>(N) * 4), grad(static_cast<size_t>(logits.bytes(N, V)));
  rlhf::LogprobsArgs f;
  f.N = N;
  f.V = V;
  f.logits = logits.data.as<void>();
  f.dtype = dtype;
  f.labels = labels.as<int32_t>();
  f.logprobs = lp.as<float>();
  f.entropy = H.as<float>();
  const double n = static_cast<double>(N);
  bench.time("logprobs", rowsShape(N, V, dtype), logits.bytes(N, V) + 12.0 * n, [&] { cu::logprobs(f, kDevice); });
  rlhf::LogprobsBackwardArgs b;
  b.N = N;
  b.V = V;
  b.logits = f.logits;
  b.dtype = dtype;
  b.labels = f.labels;
  b.gradLogprobs = gLp.as<float>();
  b.gradEntropy = gH.as<float>();
  b.gradLogits = grad.as<void>();
  bench.time("logprobsBackward", rowsShape(N, V, dtype), 2 * logits.bytes(N, V) + 12.0 * n,
             [&] { cu::logprobsBackward(b, kDevice); });
  // Given the forward's lp and H (just computed above), as the trainers call it: one pass a row.
  cu::logprobs(f, kDevice);
  b.logprobs = f.logprobs;
  b.entropy = f.entropy;
  bench.time("logprobsBackward +lp,H", rowsShape(N, V, dtype), 2 * logits.bytes(N, V) + 20.0 * n,
             [&] { cu::logprobsBackward(b, kDevice); });
}

// The fused actor loss over [B*T, V] with every term on: compulsory traffic is the logits
// read once and the gradient written once (the kernels read the logits twice). Also prints
// the device memory the op allocated beyond its inputs and outputs, as the driver sees it.
void benchActorLoss(Bench& bench, int64_t B, int64_t T, int64_t V, rlhf::LogitsDtype dtype, cudaStream_t stream) {
  const int64_t N = B * T;
  const size_t n = static_cast<size_t>(N);
  size_t freeBefore = 0, freeAfter = 0, total = 0;
  check(cudaMemGetInfo(&freeBefore, &total), "cudaMemGetInfo");
  const double need = 2 * static_cast<double>(N) * V * (dtype == rlhf::LogitsDtype::F32 ? 4 : 2) + 64.0 * N;
  if (need > 0.9 * static_cast<double>(freeBefore)) {
    std::printf("actorLoss %s: skipped, needs %.1f GB of %.1f GB free\n", rowsShape(N, V, dtype).c_str(), need / 1e9,
                freeBefore / 1e9);
    return;
  }
  const DeviceLogits logits(N, V, dtype, stream);
  DeviceArray grad(static_cast<size_t>(logits.bytes(N, V)));
  DeviceArray labels(randomLabels(N, V, 16)), old(uniform(n, -12, -8, 17)), adv(uniform(n, -1, 1, 18)),
      ref(uniform(n, -12, -8, 19)), mask(responseMask(B, T, 20)), lp(n * 4), H(n * 4);
  rlhf::ActorLossArgs a;
  a.B = B;
  a.T = T;
  a.V = V;
  a.logits = logits.data.as<void>();
  a.dtype = dtype;
  a.labels = labels.as<int32_t>();
  a.oldLogprobs = old.as<float>();
  a.advantages = adv.as<float>();
  a.refLogprobs = ref.as<float>();
  a.mask = mask.as<uint8_t>();
  a.o.dualClip = 3;
  a.entropyCoef = 0.01f;
  a.klCoef = 0.05f;
  a.klOptions.estimator = rlhf::KlEstimator::K3;
  a.gradLogits = grad.as<void>();
  a.logprobs = lp.as<float>();
  a.entropy = H.as<float>();
  check(cudaMemGetInfo(&freeBefore, &total), "cudaMemGetInfo");
  cu::actorLoss(a, kDevice);
  cu::synchronize(kDevice);
  check(cudaMemGetInfo(&freeAfter, &total), "cudaMemGetInfo");
  std::printf("actorLoss %s: %lld bytes of device memory allocated beyond inputs and outputs (the scratch "
              "buffer's growth, driver view; 0 when earlier ops already grew it enough)\n",
              rowsShape(N, V, dtype).c_str(), static_cast<long long>(freeBefore) - static_cast<long long>(freeAfter));
  bench.time("actorLoss", rowsShape(N, V, dtype), 2 * logits.bytes(N, V) + 25.0 * N, [&] { cu::actorLoss(a, kDevice); });
}

// PPO policy loss and value loss over B*T tokens, each returning its scalars to the host.
void benchLosses(Bench& bench, int64_t B, int64_t T) {
  const size_t n = static_cast<size_t>(B * T);
  DeviceArray lp(uniform(n, -3, -0.1f, 21)), old(uniform(n, -3, -0.1f, 22)), adv(uniform(n, -1, 1, 23)),
      mask(responseMask(B, T, 24)), values(uniform(n, -1, 1, 25)), oldValues(uniform(n, -1, 1, 26)),
      returns(uniform(n, -1, 1, 27)), grad(n * 4);
  rlhf::PolicyLossArgs p;
  p.B = B;
  p.T = T;
  p.logprobs = lp.as<float>();
  p.oldLogprobs = old.as<float>();
  p.advantages = adv.as<float>();
  p.mask = mask.as<uint8_t>();
  p.o.dualClip = 3;
  p.grad = grad.as<float>();
  rlhf::ValueLossArgs v;
  v.B = B;
  v.T = T;
  v.values = values.as<float>();
  v.oldValues = oldValues.as<float>();
  v.returns = returns.as<float>();
  v.mask = mask.as<uint8_t>();
  v.clip = 0.2f;
  v.grad = grad.as<float>();
  const std::string shape = shape2("B", B, "T", T);
  const double tokens = static_cast<double>(n);
  // lp, old, A and the gradient (4 bytes each) and the mask; values, old values, returns,
  // the gradient and the mask.
  bench.time("ppoPolicyLoss", shape, 17.0 * tokens, [&] { cu::policyLoss(p, kDevice); });
  p.o.importance = rlhf::ImportanceLevel::Sequence;
  bench.time("ppoPolicyLoss seq", shape, 17.0 * tokens, [&] { cu::policyLoss(p, kDevice); });
  bench.time("valueLoss", shape, 17.0 * tokens, [&] { cu::valueLoss(v, kDevice); });
  p.o.importance = rlhf::ImportanceLevel::Token;
  bench.time("ppo+value", shape, 34.0 * tokens, [&] {
    cu::policyLoss(p, kDevice);
    cu::valueLoss(v, kDevice);
  });
}

// --- the neural-network family ----------------------------------------------------------------

// Float32 FMA lanes per SM: 64 up to sm_80 (A100 included), 128 from sm_86 on (sm_86, sm_89,
// sm_90 / H100 and H200, sm_100, sm_120).
int fp32LanesPerSm(int major, int minor) {
  if (major < 8 || (major == 8 && minor == 0)) return 64;
  return 128;
}

// SMs x clock x lanes x 2 (an FMA is two operations), in GFLOP/s; 0 when the clock is unknown.
double fp32PeakGflops(const cu::DeviceInfo& info) {
  int sms = 0, clockKHz = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, kDevice), "cudaDeviceGetAttribute(SMs)");
  if (cudaDeviceGetAttribute(&clockKHz, cudaDevAttrClockRate, kDevice) != cudaSuccess) {
    cudaGetLastError();
    clockKHz = 0;
  }
  return static_cast<double>(sms) * clockKHz * 1e3 * fp32LanesPerSm(info.major, info.minor) * 2 / 1e9;
}

// C[M,N] = A[M,K] B[K,N], packed: 2*M*N*K operations, A, B and C moved once.
void benchMatmul(Bench& bench, int64_t M, int64_t N, int64_t K) {
  DeviceArray a(uniform(static_cast<size_t>(M * K), -1, 1, 30)), b(uniform(static_cast<size_t>(K * N), -1, 1, 31));
  DeviceArray c(static_cast<size_t>(M * N) * sizeof(float));
  rlhf::MatmulArgs m;
  m.M = M;
  m.N = N;
  m.K = K;
  m.a = a.as<float>();
  m.lda = K;
  m.b = b.as<float>();
  m.ldb = N;
  m.c = c.as<float>();
  m.ldc = N;
  const std::string shape = "[" + std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) + "]";
  const double bytes = 4.0 * static_cast<double>(M * K + K * N + M * N);
  bench.time("matmul", shape, bytes, [&] { cu::matmul(m, kDevice); }, 0, 2.0 * M * N * K);
}

// One AdamW step over `count` tensors of `size` elements: p, g, m, v read, p, m, v written.
void benchAdamw(Bench& bench, int64_t count, int64_t size) {
  std::vector<std::unique_ptr<DeviceArray>> arrays;
  std::vector<float*> p, g, m, v;
  for (int64_t t = 0; t < count; ++t) {
    const size_t n = static_cast<size_t>(size);
    for (auto* list : {&p, &g, &m, &v}) {
      const float hi = list == &v ? 1e-4f : list == &p ? 1.0f : 0.1f;
      arrays.push_back(std::make_unique<DeviceArray>(uniform(n, list == &v ? 0.0f : -hi, hi, 32 + static_cast<unsigned>(t))));
      list->push_back(arrays.back()->as<float>());
    }
  }
  const std::vector<int64_t> sizes(static_cast<size_t>(count), size);
  rlhf::AdamwArgs a;
  a.tensors = {count, sizes.data(), p.data(), g.data(), m.data(), v.data()};
  a.step = 10;
  const std::string shape = "[" + std::to_string(count) + "x" + std::to_string(size) + "]";
  bench.time("adamw", shape, 28.0 * static_cast<double>(count * size), [&] { cu::adamw(a, kDevice); });
}

// Device-to-device copy of 1 GiB: read once and written once.
double measuredBandwidthGBs(Timer& timer, cudaStream_t stream) {
  const size_t bytes = size_t{1} << 30;
  DeviceArray src(bytes), dst(bytes);
  check(cudaMemsetAsync(src.as<void>(), 1, bytes, stream), "cudaMemsetAsync");
  const double us = timer.medianUs([&] {
    check(cudaMemcpyAsync(dst.as<void>(), src.as<void>(), bytes, cudaMemcpyDeviceToDevice, stream),
          "cudaMemcpyAsync (bandwidth)");
  });
  return 2.0 * static_cast<double>(bytes) / (us * 1e-6) / 1e9;
}

std::string percent(double part, double whole) {
  if (whole <= 0) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", 100.0 * part / whole);
  return buf;
}

double gflops(const Result& r) { return r.flops / (r.medianUs * 1e-6) / 1e9; }

void printTable(const std::vector<Result>& results, double measured, double peak, double fp32Peak) {
  std::printf("%-24s %-24s %-11s %12s %9s %11s %8s %9s %7s %s\n", "op", "shape", "algorithm", "median us", "GB/s",
              "%measured", "%peak", "GFLOP/s", "%fp32", "target");
  for (const Result& r : results) {
    const double gbs = r.bytes / (r.medianUs * 1e-6) / 1e9;
    std::string target;
    if (r.targetUs > 0) target = "< " + std::to_string(static_cast<int>(r.targetUs)) + " us: " + (r.medianUs < r.targetUs ? "met" : "MISSED");
    char compute[32] = "";
    if (r.flops > 0) std::snprintf(compute, sizeof(compute), "%9.0f %7s", gflops(r), percent(gflops(r), fp32Peak).c_str());
    std::printf("%-24s %-24s %-11s %12.2f %9.1f %11s %8s %17s %s\n", r.op.c_str(), r.shape.c_str(), r.algorithm.c_str(),
                r.medianUs, gbs, percent(gbs, measured).c_str(), percent(gbs, peak).c_str(), compute, target.c_str());
  }
}

bool writeJson(const char* path, const std::vector<Result>& results, double measured, double peak, double fp32Peak) {
  FILE* f = std::fopen(path, "w");
  if (f == nullptr) return false;
  std::fprintf(f, "[\n");
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    const double gbs = r.bytes / (r.medianUs * 1e-6) / 1e9;
    char compute[128] = "";
    if (r.flops > 0)
      std::snprintf(compute, sizeof(compute), ", \"gflops\": %.1f, \"pctOfFp32Peak\": %.2f, \"fp32PeakGflops\": %.0f",
                    gflops(r), fp32Peak > 0 ? 100.0 * gflops(r) / fp32Peak : 0.0, fp32Peak);
    std::fprintf(f,
                 "  {\"op\": \"%s\", \"shape\": \"%s\", \"backend\": \"cuda\", \"algorithm\": \"%s\", "
                 "\"medianUs\": %.3f, \"gbPerS\": %.2f, \"pctOfMeasured\": %.2f, \"pctOfPeak\": %.2f, "
                 "\"measuredGBs\": %.1f, \"peakGBs\": %.1f%s}%s\n",
                 r.op.c_str(), r.shape.c_str(), r.algorithm.c_str(), r.medianUs, gbs,
                 measured > 0 ? 100.0 * gbs / measured : 0.0, peak > 0 ? 100.0 * gbs / peak : 0.0, measured,
                 peak, compute, i + 1 < results.size() ? "," : "");
  }
  std::fprintf(f, "]\n");
  return std::fclose(f) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* jsonPath = nullptr;
  const char* only = nullptr;
  bool algorithms = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) jsonPath = argv[++i];
    else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
    else if (std::strcmp(argv[i], "--algorithms") == 0) algorithms = true;
    else {
      std::fprintf(stderr, "usage: rlhf_cuda_bench [--json FILE] [--algorithms] [--only GROUP]\n");
      return 2;
    }
  }
  const auto wanted = [only](const char* group) { return only == nullptr || std::strcmp(only, group) == 0; };
  if (cu::deviceCount() == 0) {
    std::printf("no CUDA device\n");
    return 0;
  }
  try {
    const cu::DeviceInfo info = cu::deviceInfo(kDevice);
    const cudaStream_t stream = cu::detail::activate(kDevice);
    Timer timer(stream);
    const double measured = measuredBandwidthGBs(timer, stream);
    std::printf("%s (sm_%d%d), CUDA runtime %s, driver %s\n", info.name.c_str(), info.major, info.minor,
                cu::runtimeVersion().c_str(), cu::driverVersion().c_str());
    std::printf("bandwidth: %.0f GB/s measured (1 GiB device-to-device copy), %.0f GB/s theoretical peak\n",
                measured, info.peakBandwidthGBs);
    const double fp32Peak = fp32PeakGflops(info);
    std::printf("float32 peak: %.0f GFLOP/s (SMs x clock x %d lanes x 2)\n\n", fp32Peak,
                fp32LanesPerSm(info.major, info.minor));

    Bench bench{timer, {}, algorithms};
    if (wanted("gae")) {
      benchGae(bench, 1024, 4096, 0);
      benchGae(bench, 64, 8192, 10);
      benchGae(bench, 131072, 1, 50);
    }
    if (wanted("tokenGae")) {
      benchTokenGae(bench, 4096, 1024, rlhf::MaskMode::Premask, "tokenGae premask", 0);
      benchTokenGae(bench, 4096, 1024, rlhf::MaskMode::Skip, "tokenGae skip", 0);
      benchTokenGae(bench, 1, 131072, rlhf::MaskMode::Premask, "tokenGae premask", 50);
      benchTokenGae(bench, 1, 131072, rlhf::MaskMode::Skip, "tokenGae skip", 50);
    }
    if (wanted("returns")) {
      benchReturns(bench, 4096, 1024);
      benchReturns(bench, 1, 131072);
    }
    if (wanted("whiten")) benchWhiten(bench, int64_t{16} << 20);
    if (wanted("logprobs")) {
      benchLogprobs(bench, 4096, 32000, rlhf::LogitsDtype::F32, stream);
      benchLogprobs(bench, 1024, 128256, rlhf::LogitsDtype::F32, stream);
      benchLogprobs(bench, 1024, 128256, rlhf::LogitsDtype::BF16, stream);
    }
    if (wanted("actorLoss")) {
      benchActorLoss(bench, 8, 1024, 128256, rlhf::LogitsDtype::F32, stream);
      benchActorLoss(bench, 8, 1024, 128256, rlhf::LogitsDtype::BF16, stream);
    }
    if (wanted("losses")) benchLosses(bench, 16384, 1024);
    if (wanted("matmul")) {
      benchMatmul(bench, 512, 512, 512);
      benchMatmul(bench, 4096, 4096, 4096);
      benchMatmul(bench, 128, 64, 64);
    }
    if (wanted("adamw")) {
      benchAdamw(bench, 1, 10000000);
      benchAdamw(bench, 200, 50000);
    }

    printTable(bench.results, measured, info.peakBandwidthGBs, fp32Peak);
    if (jsonPath != nullptr && !writeJson(jsonPath, bench.results, measured, info.peakBandwidthGBs, fp32Peak)) {
      std::fprintf(stderr, "could not write %s\n", jsonPath);
      return 1;
    }
  } catch (const rlhf::KernelError& e) {
    std::fprintf(stderr, "rlhf_cuda_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
