// Native CPU benchmark (no Node): each op's optimised kernel on the thread pool, and its scalar
// reference, against the STREAM-triad bandwidth measured in the same run. Bytes are the op's
// compulsory traffic (every input read once, every output written once; whitening reads x
// twice because the statistics must be known before the first output: x and mask, then x).
//   rlhf_native_bench [--threads N] [--quick]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "rlhf/bandwidth.h"
#include "rlhf/kernels.h"
#include "rlhf/policy.h"
#include "rlhf/whiten.h"
#include "thread_pool.h"

using namespace rlhf;

namespace {

double medianSeconds(const std::function<void()>& fn, double minSeconds) {
  fn();  // warm-up: first touch, caches, thread wake-up
  std::vector<double> times;
  const auto start = std::chrono::steady_clock::now();
  while (times.size() < 5 || (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < minSeconds &&
                              times.size() < 1000)) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

struct Row {
  std::string op, shape, path;
  double seconds, bytes;
};

void print(const Row& r, double triad) {
  const double gbs = r.bytes / r.seconds / 1e9;
  std::printf("%-18s %-16s %-10s %12.1f %10.2f %8.1f%%\n", r.op.c_str(), r.shape.c_str(), r.path.c_str(),
              r.seconds * 1e6, gbs, 100.0 * gbs / triad);
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

}  // namespace

int main(int argc, char** argv) {
  int threads = ThreadPool::instance().numThreads();
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--quick") == 0) quick = true;
  }
  ThreadPool::instance().setNumThreads(std::max(1, threads));
  const double minSeconds = quick ? 0.05 : 0.3;
  const double triad = measureTriadBandwidthGBs(quick ? (1 << 22) : (1 << 25), quick ? 3 : 10);
  std::printf("threads %d, CPU variant %s, STREAM triad %.2f GB/s\n", ThreadPool::instance().numThreads(),
              cpuVariantName(), triad);
  std::printf("%-18s %-16s %-10s %12s %10s %9s\n", "op", "shape", "path", "median us", "GB/s", "of triad");

  const int64_t T = 1024, N = quick ? 1024 : 4096, n = T * N;
  std::vector<float> r(n, 0.5f), v(n, 0.25f), last(N, 0.1f), adv(n), ret(n), out(n);
  std::vector<uint8_t> flags(n, 0), mask(n, 1);
  for (int64_t i = 0; i < n; i += 97) flags[i] = 1;
  for (int64_t i = 0; i < n; i += 13) mask[i] = 0;

  auto run = [&](const std::string& op, const std::string& shape, double bytes, const std::function<void()>& fn) {
    setCpuPath(CpuPath::Auto);
    print({op, shape, "optimised", medianSeconds(fn, minSeconds), bytes}, triad);
    setCpuPath(CpuPath::Reference);
    print({op, shape, "reference", medianSeconds(fn, minSeconds), bytes}, triad);
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
    run(mode == MaskMode::Premask ? "tokenGae premask" : "tokenGae skip",
        "[" + std::to_string(N) + "," + std::to_string(T) + "]", n * (4.0 + 4 + 1 + 4 + 4), [&] { tokenGaeCpu(k); });
  }

  DiscountedReturnsArgs d;
  d.B = N;
  d.T = T;
  d.rewards = r.data();
  d.mask = mask.data();
  d.gamma = 0.99f;
  d.returns = ret.data();
  run("discountedReturns", "[" + std::to_string(N) + "," + std::to_string(T) + "]", n * (4.0 + 1 + 4),
      [&] { discountedReturnsCpu(d); });

  const int64_t m = quick ? (1 << 22) : (1 << 24);
  std::vector<float> x(m);
  std::vector<uint8_t> xm(m, 1);
  for (int64_t i = 0; i < m; ++i) x[i] = static_cast<float>(i % 1000) * 0.001f;
  MaskedMomentsArgs ma{m, x.data(), xm.data()};
  std::vector<float> wout(m);
  run("maskedWhiten", std::to_string(m), m * (4.0 + 1 + 4 + 4), [&] {
    AffineArgs a = planWhiten(maskedMomentsCpu(ma), WhitenOptions{});
    a.n = m;
    a.x = x.data();
    a.out = wout.data();
    affineCpu(a);
  });
  benchPolicy(run, quick, n, mask);
  return 0;
}
