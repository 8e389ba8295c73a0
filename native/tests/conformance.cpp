// Native conformance test (CTest): every CPU op, on every instruction-set variant and thread
// count, against the scalar reference, with guard elements after every output to catch
// out-of-bounds writes. Sequential and elementwise ops must match bit for bit (the op table's
// cpuTol of 0); reductions within cpuTol. Needs no Node.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cpu_variants.h"
#include "rlhf/error.h"
#include "rlhf/kernels.h"
#include "rlhf/op_table.h"
#include "rlhf/whiten.h"
#include "thread_pool.h"

using namespace rlhf;

namespace {

int passed = 0, failed = 0;
std::set<std::string> covered;

void report(bool ok, const std::string& what) {
  (ok ? passed : failed)++;
  if (!ok) std::printf("FAIL %s\n", what.c_str());
}

constexpr int kGuard = 16;
constexpr float kSentinel = -12345.678f;

// An output buffer with guard elements after its end.
struct Out {
  std::vector<float> v;
  explicit Out(int64_t n) : v(static_cast<size_t>(n + kGuard), kSentinel) {}
  float* data() { return v.data(); }
  bool guardIntact(int64_t n) const {
    for (int i = 0; i < kGuard; ++i)
      if (std::memcmp(&v[static_cast<size_t>(n + i)], &kSentinel, sizeof(float)) != 0) return false;
    return true;
  }
};

bool sameBits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0 || (std::isnan(a) && std::isnan(b)); }

// Compares n floats: bitwise when tol == 0, else relative to max(1, |ref|).
bool close(const float* got, const float* ref, int64_t n, double tol, std::string& why) {
  for (int64_t i = 0; i < n; ++i) {
    const bool ok = tol == 0 ? sameBits(got[i], ref[i])
                             : (std::isnan(got[i]) && std::isnan(ref[i])) ||
                                   std::fabs(got[i] - ref[i]) <= tol * std::fmax(1.0, std::fabs(ref[i]));
    if (!ok) {
      why = "at " + std::to_string(i) + ": got " + std::to_string(got[i]) + ", reference " + std::to_string(ref[i]);
      return false;
    }
  }
  return true;
}

double tolOf(const char* op) {
  for (const OpInfo& o : kOps)
    if (std::strcmp(o.name, op) == 0) return o.cpuTol;
  return -1;
}

std::mt19937 rng(12345);
std::vector<float> randomFloats(int64_t n, float lo = -2, float hi = 2) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}
std::vector<uint8_t> randomFlags(int64_t n, double p) {
  std::bernoulli_distribution d(p);
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng) ? 1 : 0;
  return v;
}

// Runs `body` under every CPU path and thread count that must reproduce the reference.
void forEachCpuConfig(const std::function<void(const std::string&)>& body) {
  const CpuPath paths[] = {CpuPath::Baseline, CpuPath::Auto};
  for (CpuPath p : paths) {
    for (int threads : {1, 2, 3, 7}) {
      ThreadPool::instance().setNumThreads(threads);
      setCpuPath(p);
      body(std::string(p == CpuPath::Baseline ? "x86-64" : cpuVariantName()) + " threads=" + std::to_string(threads));
    }
  }
  setCpuPath(CpuPath::Auto);
  ThreadPool::instance().setNumThreads(2);
}

// --- gae --------------------------------------------------------------------------------------

enum class Flags { None, Terminated, TerminatedTruncated, CleanRl };
enum class RateLayout { Scalar, PerStep, Full };

void testGae(int64_t T, int64_t N, Flags flags, RateLayout gammaLayout, RateLayout lambdaLayout) {
  covered.insert("gae");
  const int64_t n = T * N;
  auto rewards = randomFloats(n), values = randomFloats(n), nextValues = randomFloats(n), last = randomFloats(N);
  auto term = randomFlags(n, 0.1), trunc = randomFlags(n, 0.05), nextDone = randomFlags(N, 0.2);
  auto rates = [&](RateLayout l, float lo) {
    return randomFloats(l == RateLayout::Full ? n : l == RateLayout::PerStep ? T : 1, lo, 1.0f);
  };
  auto gamma = rates(gammaLayout, 0.9f), lambda = rates(lambdaLayout, 0.8f);
  GaeArgs a;
  a.T = T;
  a.N = N;
  a.rewards = rewards.data();
  a.values = values.data();
  a.nextValues = values.data() + N;
  a.nextValuesLast = last.data();
  if (flags == Flags::Terminated || flags == Flags::TerminatedTruncated) {
    a.terminated = term.data();
    a.terminatedLast = term.data() + (T - 1) * N;
  }
  if (flags == Flags::TerminatedTruncated) {
    a.truncated = trunc.data();
    a.nextValues = nextValues.data();
    a.nextValuesLast = nextValues.data() + (T - 1) * N;
  }
  if (flags == Flags::CleanRl) {
    a.terminated = term.data() + N;
    a.terminatedLast = nextDone.data();
  }
  auto setRate = [&](RateLayout l, std::vector<float>& v, float& value, const float*& array, int64_t& sT, int64_t& sN) {
    value = v[0];
    if (l == RateLayout::Scalar) return;
    array = v.data();
    sT = l == RateLayout::PerStep ? 1 : N;
    sN = l == RateLayout::PerStep ? 0 : 1;
  };
  setRate(gammaLayout, gamma, a.gammaValue, a.gammaArray, a.gammaStrideT, a.gammaStrideN);
  setRate(lambdaLayout, lambda, a.lambdaValue, a.lambdaArray, a.lambdaStrideT, a.lambdaStrideN);

  Out refAdv(n), refRet(n);
  GaeArgs r = a;
  r.advantages = refAdv.data();
  r.returns = refRet.data();
  gaeReference(r);
  const std::string name = "gae T=" + std::to_string(T) + " N=" + std::to_string(N) + " flags=" +
                           std::to_string(static_cast<int>(flags)) + " gamma=" + std::to_string(static_cast<int>(gammaLayout)) +
                           " lambda=" + std::to_string(static_cast<int>(lambdaLayout));
  forEachCpuConfig([&](const std::string& config) {
    Out adv(n), ret(n);
    GaeArgs f = a;
    f.advantages = adv.data();
    f.returns = ret.data();
    gaeCpu(f);
    std::string why;
    const bool ok = close(adv.data(), refAdv.data(), n, tolOf("gae"), why) &&
                    close(ret.data(), refRet.data(), n, tolOf("gae"), why) && adv.guardIntact(n) && ret.guardIntact(n);
    report(ok, name + " [" + config + "] " + why);
  });
}

// --- token GAE and returns ----------------------------------------------------------------------

// A mask with interior holes and trailing padding of random length per row.
std::vector<uint8_t> responseMask(int64_t B, int64_t T) {
  std::vector<uint8_t> m = randomFlags(B * T, 0.85);
  std::uniform_int_distribution<int64_t> len(0, T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = len(rng); t < T; ++t) m[static_cast<size_t>(b * T + t)] = 0;
  return m;
}

void testTokenGae(int64_t B, int64_t T, MaskMode mode, bool withLast) {
  covered.insert("tokenGae");
  const int64_t n = B * T;
  auto rewards = randomFloats(n), values = randomFloats(n), last = randomFloats(B);
  auto mask = responseMask(B, T);
  TokenGaeArgs a;
  a.B = B;
  a.T = T;
  a.rewards = rewards.data();
  a.values = values.data();
  a.mask = mode == MaskMode::None ? nullptr : mask.data();
  a.lastValues = withLast ? last.data() : nullptr;
  a.gamma = 0.99f;
  a.lambda = 0.95f;
  a.maskMode = mode;
  Out refAdv(n), refRet(n);
  TokenGaeArgs r = a;
  r.advantages = refAdv.data();
  r.returns = refRet.data();
  tokenGaeReference(r);
  const std::string name = "tokenGae B=" + std::to_string(B) + " T=" + std::to_string(T) + " mode=" +
                           std::to_string(static_cast<int>(mode)) + (withLast ? " lastValues" : "");
  forEachCpuConfig([&](const std::string& config) {
    Out adv(n), ret(n);
    TokenGaeArgs f = a;
    f.advantages = adv.data();
    f.returns = ret.data();
    tokenGaeCpu(f);
    std::string why;
    const bool ok = close(adv.data(), refAdv.data(), n, tolOf("tokenGae"), why) &&
                    close(ret.data(), refRet.data(), n, tolOf("tokenGae"), why) && adv.guardIntact(n) && ret.guardIntact(n);
    report(ok, name + " [" + config + "] " + why);
  });
}

void testReturns(int64_t B, int64_t T, bool masked) {
  covered.insert("discountedReturns");
  const int64_t n = B * T;
  auto rewards = randomFloats(n);
  auto mask = responseMask(B, T);
  DiscountedReturnsArgs a;
  a.B = B;
  a.T = T;
  a.rewards = rewards.data();
  a.mask = masked ? mask.data() : nullptr;
  a.gamma = 0.97f;
  Out ref(n);
  DiscountedReturnsArgs r = a;
  r.returns = ref.data();
  discountedReturnsReference(r);
  forEachCpuConfig([&](const std::string& config) {
    Out got(n);
    DiscountedReturnsArgs f = a;
    f.returns = got.data();
    discountedReturnsCpu(f);
    std::string why;
    const bool ok = close(got.data(), ref.data(), n, tolOf("discountedReturns"), why) && got.guardIntact(n);
    report(ok, "discountedReturns B=" + std::to_string(B) + " T=" + std::to_string(T) + (masked ? " masked" : "") +
                   " [" + config + "] " + why);
  });
}

// --- statistics ---------------------------------------------------------------------------------

bool relClose(double got, double ref, double tol) {
  if (std::isnan(got) || std::isnan(ref)) return std::isnan(got) && std::isnan(ref);
  return std::fabs(got - ref) <= tol * std::fmax(1.0, std::fabs(ref));
}

void testStatistics(int64_t n, double maskP, float offset) {
  covered.insert("maskedMean");
  covered.insert("maskedVar");
  covered.insert("maskedWhiten");
  auto x = randomFloats(n, offset - 3, offset + 3);
  auto mask = randomFlags(n, maskP);
  const uint8_t* m = maskP >= 1 ? nullptr : mask.data();
  MaskedMomentsArgs a{n, x.data(), m};
  const MaskedMoments ref = maskedMomentsReference(a);
  const std::string name = "statistics n=" + std::to_string(n) + " p=" + std::to_string(maskP) + " offset=" + std::to_string(offset);
  // All presets whose valid-count requirement this case meets.
  std::vector<WhitenOptions> presets;
  for (int p = 0; p < 4; ++p) {
    WhitenOptions o;
    o.preset = static_cast<WhitenPreset>(p);
    o.shiftMean = (p % 2) == 0;
    if (ref.count >= 2) presets.push_back(o);
  }
  std::vector<std::vector<float>> refOut;
  for (const WhitenOptions& o : presets) {
    AffineArgs w = planWhiten(ref, o);
    w.n = n;
    w.x = x.data();
    refOut.emplace_back(static_cast<size_t>(n));
    w.out = refOut.back().data();
    affineReference(w);
  }
  // The baseline and AVX2 moment kernels keep one lane order: the same bits, not just close.
  setCpuPath(CpuPath::Baseline);
  const MaskedMoments baseline = maskedMomentsCpu(a);
  setCpuPath(CpuPath::Auto);
  const MaskedMoments best = maskedMomentsCpu(a);
  report(std::memcmp(&baseline, &best, sizeof baseline) == 0 || (std::isnan(baseline.mean) && std::isnan(best.mean)),
         name + " moments bit-identical across instruction sets");
  forEachCpuConfig([&](const std::string& config) {
    const MaskedMoments got = maskedMomentsCpu(a);
    bool ok = got.count == ref.count && relClose(got.mean, ref.mean, tolOf("maskedMean")) &&
              relClose(got.m2, ref.m2, tolOf("maskedVar"));
    std::string why = ok ? "" : "moments differ: mean " + std::to_string(got.mean) + " vs " + std::to_string(ref.mean) +
                                    ", m2 " + std::to_string(got.m2) + " vs " + std::to_string(ref.m2);
    for (size_t k = 0; ok && k < presets.size(); ++k) {
      Out out(n);
      AffineArgs w = planWhiten(got, presets[k]);
      w.n = n;
      w.x = x.data();
      w.out = out.data();
      affineCpu(w);
      ok = close(out.data(), refOut[k].data(), n, tolOf("maskedWhiten"), why) && out.guardIntact(n);
    }
    report(ok, name + " [" + config + "] " + why);
  });
}

void testNanPropagation() {
  std::vector<float> x = randomFloats(10000);
  std::vector<uint8_t> mask(10000, 1);
  x[777] = NAN;
  mask[5000] = 0;
  x[5000] = NAN;  // masked out: must not matter
  MaskedMomentsArgs a{10000, x.data(), mask.data()};
  report(std::isnan(maskedMomentsCpu(a).mean), "statistics: a NaN among the valid elements propagates");
  mask[777] = 0;
  const MaskedMoments m = maskedMomentsCpu(a);
  report(!std::isnan(m.mean) && !std::isnan(m.m2), "statistics: a NaN in a masked-out element is ignored");
}

void testTooFewValid() {
  std::vector<float> x = {1, 2, 3};
  std::vector<uint8_t> mask = {0, 1, 0};
  MaskedMomentsArgs a{3, x.data(), mask.data()};
  bool threw = false;
  try {
    WhitenOptions o;
    planWhiten(maskedMomentsCpu(a), o);
  } catch (const KernelError& e) {
    threw = e.kind == ErrorKind::Range;
  }
  report(threw, "maskedWhiten trl with one valid element is a Range error");
}

}  // namespace

int main() {
  std::printf("rlhf native conformance: CPU variant %s\n", cpuVariantName());
  for (auto [T, N] : {std::pair<int64_t, int64_t>{1, 1}, {7, 5}, {64, 33}, {300, 17}, {40, 3000}})
    for (Flags f : {Flags::None, Flags::Terminated, Flags::TerminatedTruncated, Flags::CleanRl})
      testGae(T, N, f, RateLayout::Scalar, RateLayout::Scalar);
  testGae(50, 70, Flags::Terminated, RateLayout::PerStep, RateLayout::Scalar);
  testGae(50, 70, Flags::TerminatedTruncated, RateLayout::Full, RateLayout::PerStep);
  testGae(50, 70, Flags::CleanRl, RateLayout::Scalar, RateLayout::Full);
  for (auto [B, T] : {std::pair<int64_t, int64_t>{1, 1}, {5, 7}, {13, 129}, {130, 300}, {3, 20000}})
    for (MaskMode m : {MaskMode::Premask, MaskMode::Skip, MaskMode::None})
      for (bool last : {false, true}) testTokenGae(B, T, m, last);
  for (auto [B, T] : {std::pair<int64_t, int64_t>{1, 1}, {9, 33}, {130, 300}})
    for (bool masked : {false, true}) testReturns(B, T, masked);
  for (int64_t n : {2, 3, 4095, 4096, 4097, 100003, 300000})
    for (double p : {1.0, 0.5, 0.02}) testStatistics(n, p, 0.0f);
  testStatistics(200000, 0.7, 1000.0f);  // a large mean: the shifted sums must not lose the variance
  // Outputs of 16 MiB and more take the non-temporal store paths.
  testGae(512, 4100, Flags::TerminatedTruncated, RateLayout::Scalar, RateLayout::Scalar);
  for (MaskMode m : {MaskMode::Premask, MaskMode::Skip, MaskMode::None}) testTokenGae(2051, 1024, m, true);
  testReturns(4099, 1024, true);
  testStatistics(4200000, 0.5, 0.0f);
  testNanPropagation();
  testTooFewValid();
  for (const OpInfo& o : kOps) report(covered.count(o.name) == 1, std::string("op table row covered: ") + o.name);
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
