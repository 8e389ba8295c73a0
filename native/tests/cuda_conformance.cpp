// CUDA conformance: every op of the CUDA backend against the scalar reference, through the
// rlhf::cuda API alone (plain C++, no CUDA headers). Each advantage op runs under both of its
// algorithms (RLHF_CUDA_ADVANTAGES=sequential and =scan) on every shape, so both are checked
// on the shapes that pick either one: one lane, short and long lanes (T = 131072), tails that
// are not multiples of 32, thousands of lanes, and empty inputs. The policy-gradient family runs
// against its scalar references with the op table's cudaTol, float16/bfloat16 logits against
// the reference on the same rounded values. The neural-network family (matmul, bias and
// activation, embedding, layer norm, mean pooling, AdamW, sumSquares, scale) runs against its
// scalar references with the tolerances of its section. Output buffers are filled with a
// sentinel and followed by guard bytes that must stay untouched.
//
// Sizes past the launch limits (2^31 - 1 blocks) are rejected with a Range error before any
// pointer is read ("limits"); the opt-in "big" family runs ops past 2^31 and 2^32 rows on
// buffers of 32-64 GiB, where a block count cast to 32 bits once failed or silently wrapped.
//
// Usage: rlhf_cuda_tests [--quick] [--big] [--only FAMILY]   (--quick leaves out the shapes of
// millions of elements and the deliberate out-of-memory, for compute-sanitizer runs; --big adds
// the "big" family, which needs a GPU with 64 GiB free and takes a few minutes; --only runs one
// family's cases: runtime, advantages, statistics, policy, preference, nn, limits or big). Exits
// 77 (skipped) where there is no CUDA device.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "rlhf/cuda.h"
#include "rlhf/error.h"
#include "rlhf/kernels.h"
#include "rlhf/nn.h"
#include "rlhf/op_table.h"
#include "rlhf/policy.h"
#include "rlhf/preference.h"

namespace {

namespace cu = rlhf::cuda;

int gDevice = 0;
bool gQuick = false;
bool gBig = false;

// --- report -----------------------------------------------------------------------------------

struct Report {
  int passed = 0, failed = 0;
  void record(bool ok, const std::string& name, const std::string& detail) {
    std::printf("%s %s: %s\n", ok ? "ok  " : "FAIL", name.c_str(), detail.c_str());
    std::fflush(stdout);
    (ok ? passed : failed) += 1;
  }
};

std::string shape(const char* a, int64_t x, const char* b, int64_t y) {
  return std::string("[") + a + "=" + std::to_string(x) + "," + b + "=" + std::to_string(y) + "]";
}

std::string fmt(const char* format, double x) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, x);
  return buf;
}

// --- inputs -----------------------------------------------------------------------------------

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {  // splitmix64
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  std::vector<float> uniform(int64_t n, float lo, float hi) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = lo + (hi - lo) * static_cast<float>(unit());
    return v;
  }
  std::vector<uint8_t> flags(int64_t n, double p) {
    std::vector<uint8_t> v(static_cast<size_t>(n));
    for (uint8_t& x : v) x = unit() < p ? 1 : 0;
    return v;
  }

 private:
  uint64_t state_;
};

// A response mask: each row is valid up to a random length (trailing padding), with interior
// holes where `holes` > 0.
std::vector<uint8_t> responseMask(Rng& rng, int64_t B, int64_t T, double holes) {
  std::vector<uint8_t> m(static_cast<size_t>(B * T));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t length = T - static_cast<int64_t>(rng.unit() * 0.3 * static_cast<double>(T));
    for (int64_t t = 0; t < T; ++t) m[b * T + t] = t < length && rng.unit() >= holes ? 1 : 0;
  }
  return m;
}

// NaN at up to `count` masked positions: the kernels must never let them into a valid output.
void poisonMasked(std::vector<float>& x, const std::vector<uint8_t>& mask, int count) {
  for (size_t i = 0; i < x.size() && count > 0; i += 97) {
    if (mask[i] != 0) continue;
    x[i] = std::numeric_limits<float>::quiet_NaN();
    count -= 1;
  }
}

// --- device buffers ---------------------------------------------------------------------------

constexpr size_t kGuard = 256;
constexpr uint8_t kSentinel = 0xA5;

// Device memory of `bytes` plus kGuard guard bytes, all set to kSentinel until written.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes), ptr_(cu::alloc(bytes + kGuard, gDevice)) {
    fillSentinel();
  }
  ~DeviceBuffer() {
    try {
      cu::free(ptr_, gDevice);
    } catch (const rlhf::KernelError& e) {
      std::printf("FAIL free: %s\n", e.what());
    }
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  void upload(const void* src) { cu::copyToDevice(ptr_, src, bytes_, gDevice); }
  void download(void* dst) const { cu::copyToHost(dst, ptr_, bytes_, gDevice); }
  void fillSentinel() {
    const std::vector<uint8_t> s(bytes_ + kGuard, kSentinel);
    cu::copyToDevice(ptr_, s.data(), s.size(), gDevice);
  }
  bool guardIntact() const {
    std::vector<uint8_t> g(kGuard);
    cu::copyToHost(g.data(), static_cast<const char*>(ptr_) + bytes_, kGuard, gDevice);
    for (uint8_t b : g)
      if (b != kSentinel) return false;
    return true;
  }

 private:
  size_t bytes_;
  void* ptr_;
};

// Device copies of host vectors, made once per vector; null for an empty vector.
class Uploads {
 public:
  template <class T>
  T* of(const std::vector<T>& v) {
    if (v.empty()) return nullptr;
    std::unique_ptr<DeviceBuffer>& slot = buffers_[v.data()];
    if (!slot) {
      slot = std::make_unique<DeviceBuffer>(v.size() * sizeof(T));
      slot->upload(v.data());
    }
    return slot->as<T>();
  }

 private:
  std::map<const void*, std::unique_ptr<DeviceBuffer>> buffers_;
};

// --- expected values --------------------------------------------------------------------------

// For each output element: the scalar reference's float32 value, the same recursion evaluated
// in float64, and the sum of the magnitudes of the terms that make it up (the float64
// recursion run on absolute values), which is what rounding errors are proportional to.
struct Expected {
  std::vector<float> reference;
  std::vector<double> exact, scale;
  explicit Expected(int64_t n)
      : reference(static_cast<size_t>(n)), exact(static_cast<size_t>(n)), scale(static_cast<size_t>(n)) {}
};

// Scan tolerance, relative to `scale`: 1e-6*sqrt(T). A float32 recursion over T steps makes
// one rounding of at most 2^-24 of the running magnitude per operation; these add up like a
// random walk, about 6e-8*sqrt(T) of the scale, for the sequential loop and for the scan's
// tree alike, and the bound keeps a margin of about 16 over that. Bugs (a lost step, a wrong
// carry, a missed mask) are errors of the order of the terms themselves, 1e-2 and more.
double scanTolerance(int64_t T) { return 1e-6 * std::sqrt(static_cast<double>(std::max<int64_t>(T, 1))); }
// Below about 1e-38 float32 loses relative precision (a decaying advantage over long padding
// ends in subnormals and then 0 where float64 still has 1e-300): an absolute floor for those.
constexpr double kUnderflowFloor = 1e-30;

bool sameBits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

// Sequential paths repeat the reference's operations: expect the same bits, allow 1e-6 of the
// scale (and report how many elements were not identical).
std::string compareSequential(const std::vector<float>& gpu, const Expected& e, bool& ok) {
  int64_t differ = 0;
  double worst = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    const float g = gpu[i], r = e.reference[i];
    if (sameBits(g, r) || (std::isnan(g) && std::isnan(r))) continue;
    differ += 1;
    const double rel = std::fabs(static_cast<double>(g) - r) / std::max(e.scale[i], 1e-30);
    if (std::isnan(g) != std::isnan(r) || !(rel <= 1e-6)) {
      ok = false;
      return "element " + std::to_string(i) + " is " + fmt("%.9g", g) + ", reference " + fmt("%.9g", r);
    }
    worst = std::max(worst, rel);
  }
  if (differ == 0) return "bit-identical";
  return std::to_string(differ) + " not bit-identical, max " + fmt("%.2g", worst) + " of scale";
}

// Scan paths: against the float64 recursion within scanTolerance(T) of the scale; NaN exactly
// where the float64 recursion has NaN.
std::string compareScan(const std::vector<float>& gpu, const Expected& e, int64_t T, bool& ok) {
  const double tol = scanTolerance(T);
  double worst = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    const double g = gpu[i], x = e.exact[i];
    if (std::isnan(x)) {
      if (std::isnan(g)) continue;
      ok = false;
      return "element " + std::to_string(i) + " is " + fmt("%.9g", g) + ", expected NaN";
    }
    const double err = std::fabs(g - x), bound = tol * e.scale[i] + kUnderflowFloor;
    if (!(err <= bound)) {
      ok = false;
      return "element " + std::to_string(i) + " is " + fmt("%.9g", g) + ", expected " +
             fmt("%.9g", x) + " within " + fmt("%.2g", bound);
    }
    worst = std::max(worst, err / bound);
  }
  return "max error " + fmt("%.2g", worst) + " of the tolerance";
}

// --- float64 recursions -----------------------------------------------------------------------

void gaeExact(const rlhf::GaeArgs& a, Expected& adv, Expected& ret) {
  const int64_t T = a.T, N = a.N;
  std::vector<double> next(static_cast<size_t>(N), 0.0), nextScale(static_cast<size_t>(N), 0.0);
  for (int64_t t = T - 1; t >= 0; --t) {
    const bool last = t == T - 1;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t i = t * N + n;
      const double nv = last ? a.nextValuesLast[n] : a.nextValues[i];
      const bool term = a.terminated != nullptr && (last ? a.terminatedLast[n] : a.terminated[i]) != 0;
      const bool trunc = a.truncated != nullptr && a.truncated[i] != 0;
      const double g = a.gammaArray ? a.gammaArray[t * a.gammaStrideT + n * a.gammaStrideN] : a.gammaValue;
      const double l = a.lambdaArray ? a.lambdaArray[t * a.lambdaStrideT + n * a.lambdaStrideN] : a.lambdaValue;
      const double r = a.rewards[i], v = a.values[i];
      const double boot = term ? 0.0 : g * nv;
      const double c = (term || trunc) ? 0.0 : g * l;
      next[n] = r + boot - v + c * next[n];
      nextScale[n] = std::fabs(r) + std::fabs(boot) + std::fabs(v) + std::fabs(c) * nextScale[n];
      adv.exact[i] = next[n];
      adv.scale[i] = nextScale[n];
      ret.exact[i] = next[n] + v;
      ret.scale[i] = nextScale[n] + std::fabs(v);
    }
  }
}

void tokenGaeExact(const rlhf::TokenGaeArgs& a, Expected& adv, Expected& ret) {
  const double gamma = a.gamma, gl = static_cast<double>(a.gamma) * a.lambda;
  for (int64_t b = 0; b < a.B; ++b) {
    double nextValue = a.lastValues ? a.lastValues[b] : 0.0, A = 0, S = 0;
    for (int64_t t = a.T - 1; t >= 0; --t) {
      const int64_t i = b * a.T + t;
      const bool valid = a.maskMode == rlhf::MaskMode::None || a.mask == nullptr || a.mask[i] != 0;
      const bool premask = a.maskMode == rlhf::MaskMode::Premask;
      const double r = premask && !valid ? 0.0 : a.rewards[i];
      const double v = premask && !valid ? 0.0 : a.values[i];
      if (valid || premask) {
        A = r + gamma * nextValue - v + gl * A;
        S = std::fabs(r) + std::fabs(gamma * nextValue) + std::fabs(v) + std::fabs(gl) * S;
        nextValue = v;
      }
      adv.exact[i] = A;
      adv.scale[i] = S;
      ret.exact[i] = A + v;
      ret.scale[i] = S + std::fabs(v);
    }
  }
}

void returnsExact(const rlhf::DiscountedReturnsArgs& a, Expected& ret) {
  for (int64_t b = 0; b < a.B; ++b) {
    double G = 0, S = 0;
    for (int64_t t = a.T - 1; t >= 0; --t) {
      const int64_t i = b * a.T + t;
      const double r = (a.mask == nullptr || a.mask[i] != 0) ? a.rewards[i] : 0.0;
      G = r + static_cast<double>(a.gamma) * G;
      S = std::fabs(r) + std::fabs(static_cast<double>(a.gamma)) * S;
      ret.exact[i] = G;
      ret.scale[i] = S;
    }
  }
}

// --- running an advantage op under both algorithms --------------------------------------------

// "sequential", "scan", or anything else for the shape-based choice.
void setAlgorithm(const char* algorithm) {
#ifdef _WIN32
  _putenv_s("RLHF_CUDA_ADVANTAGES", algorithm);
#else
  setenv("RLHF_CUDA_ADVANTAGES", algorithm, 1);
#endif
}

struct Output {
  std::string name;
  Expected expected;
  DeviceBuffer device;
  Output(std::string n, int64_t count)
      : name(std::move(n)), expected(count), device(static_cast<size_t>(count) * sizeof(float)) {}
  float* ptr() { return device.as<float>(); }
};

void runBothAlgorithms(Report& report, const std::string& name, int64_t T,
                       std::vector<Output*> outputs, const std::function<void()>& launch) {
  for (const char* algorithm : {"sequential", "scan"}) {
    setAlgorithm(algorithm);
    for (Output* o : outputs) o->device.fillSentinel();
    bool ok = true;
    std::string detail;
    try {
      launch();
      cu::synchronize(gDevice);
      for (Output* o : outputs) {
        std::vector<float> gpu(o->expected.reference.size());
        o->device.download(gpu.data());
        const std::string d = std::strcmp(algorithm, "scan") == 0
                                  ? compareScan(gpu, o->expected, T, ok)
                                  : compareSequential(gpu, o->expected, ok);
        if (!o->device.guardIntact()) {
          ok = false;
          detail += o->name + " guard bytes overwritten; ";
        }
        detail += o->name + " " + d + "; ";
        if (!ok) break;
      }
    } catch (const rlhf::KernelError& e) {
      ok = false;
      detail = e.what();
    }
    report.record(ok, name + " " + algorithm, detail);
  }
  setAlgorithm("auto");
}

// --- GAE ----------------------------------------------------------------------------------------

enum class GaeVariant { Plain, Flags, Terminated, Truncated, CleanRl, NaN };
const char* gaeVariantName(GaeVariant v) {
  switch (v) {
    case GaeVariant::Plain: return "plain";
    case GaeVariant::Flags: return "flags+nextValues+gamma[T]+lambda[T,N]";
    case GaeVariant::Terminated: return "terminated";
    case GaeVariant::Truncated: return "truncated+nextValues";
    case GaeVariant::CleanRl: return "cleanrl-dones";
    case GaeVariant::NaN: return "nan-reward";
  }
  return "";
}

void gaeCase(Report& report, int64_t T, int64_t N, GaeVariant variant, uint64_t seed) {
  Rng rng(seed);
  const int64_t n = T * N;
  const auto rewards = [&] {
    auto r = rng.uniform(n, -1, 1);
    if (variant == GaeVariant::NaN && n > 0) r[static_cast<size_t>(n / 2)] = std::numeric_limits<float>::quiet_NaN();
    return r;
  }();
  const auto values = rng.uniform(n, -2, 2), lastValues = rng.uniform(N, -2, 2);
  std::vector<float> nextValues, gammas, lambdas;
  std::vector<uint8_t> terminated, terminatedLast, truncated, dones;
  const bool separateNext = variant == GaeVariant::Flags || variant == GaeVariant::Truncated;
  if (separateNext) nextValues = rng.uniform(n, -2, 2);
  if (variant == GaeVariant::Flags || variant == GaeVariant::Terminated) {
    terminated = rng.flags(n, 0.05);
    terminatedLast = rng.flags(N, 0.3);
  }
  if (variant == GaeVariant::Flags || variant == GaeVariant::Truncated) truncated = rng.flags(n, 0.05);
  if (variant == GaeVariant::CleanRl) {
    dones = rng.flags(n, 0.05);
    terminatedLast = rng.flags(N, 0.3);  // nextDone
  }
  if (variant == GaeVariant::Flags) {
    gammas = rng.uniform(T, 0.9f, 1.0f);
    lambdas = rng.uniform(n, 0.8f, 1.0f);
  }

  // The same arguments over host or device copies: `p` maps a host vector to its pointer.
  auto makeArgs = [&](auto&& p) {
    rlhf::GaeArgs a;
    a.T = T;
    a.N = N;
    a.rewards = p(rewards);
    a.values = p(values);
    a.nextValues = separateNext ? p(nextValues) : (p(values) ? p(values) + N : nullptr);
    a.nextValuesLast = p(lastValues);
    if (variant == GaeVariant::CleanRl) {
      a.terminated = p(dones) ? p(dones) + N : nullptr;  // terminated_t = dones_{t+1}
      a.terminatedLast = p(terminatedLast);
    } else if (!terminated.empty()) {
      a.terminated = p(terminated);
      a.terminatedLast = p(terminatedLast);
    }
    a.truncated = p(truncated);
    a.gammaValue = 0.99f;
    a.lambdaValue = 0.95f;
    if (!gammas.empty()) {
      a.gammaArray = p(gammas);
      a.gammaStrideT = 1;
      a.lambdaArray = p(lambdas);
      a.lambdaStrideT = N;
      a.lambdaStrideN = 1;
    }
    return a;
  };

  Output adv("advantages", n), ret("returns", n);
  rlhf::GaeArgs host = makeArgs([](const auto& v) { return v.empty() ? nullptr : v.data(); });
  host.advantages = adv.expected.reference.data();
  host.returns = ret.expected.reference.data();
  rlhf::gaeReference(host);
  gaeExact(host, adv.expected, ret.expected);

  Uploads uploads;
  rlhf::GaeArgs dev = makeArgs([&](const auto& v) { return uploads.of(v); });
  dev.advantages = adv.ptr();
  dev.returns = ret.ptr();
  runBothAlgorithms(report, std::string("gae ") + gaeVariantName(variant) + " " + shape("T", T, "N", N), T,
                    {&adv, &ret}, [&] { cu::gae(dev, gDevice); });
}

// --- token GAE and discounted returns -----------------------------------------------------------

const char* modeName(rlhf::MaskMode m) {
  switch (m) {
    case rlhf::MaskMode::Premask: return "premask";
    case rlhf::MaskMode::Skip: return "skip";
    case rlhf::MaskMode::None: return "none";
  }
  return "";
}

void tokenGaeCase(Report& report, int64_t B, int64_t T, rlhf::MaskMode mode, bool withLastValues,
                  uint64_t seed) {
  Rng rng(seed);
  const int64_t n = B * T;
  const auto mask = responseMask(rng, B, T, 0.2);
  auto rewards = rng.uniform(n, -1, 1), values = rng.uniform(n, -2, 2);
  if (mode != rlhf::MaskMode::None) {
    poisonMasked(rewards, mask, 3);
    poisonMasked(values, mask, 3);
  }
  const auto lastValues = withLastValues ? rng.uniform(B, -2, 2) : std::vector<float>();
  const bool useMask = mode != rlhf::MaskMode::None || B % 2 == 0;  // None: with and without

  auto makeArgs = [&](auto&& p) {
    rlhf::TokenGaeArgs a;
    a.B = B;
    a.T = T;
    a.rewards = p(rewards);
    a.values = p(values);
    a.mask = useMask ? p(mask) : nullptr;
    a.lastValues = p(lastValues);
    a.gamma = 1.0f;
    a.lambda = 0.95f;
    a.maskMode = mode;
    return a;
  };
  Output adv("advantages", n), ret("returns", n);
  rlhf::TokenGaeArgs host = makeArgs([](const auto& v) { return v.empty() ? nullptr : v.data(); });
  host.advantages = adv.expected.reference.data();
  host.returns = ret.expected.reference.data();
  rlhf::tokenGaeReference(host);
  tokenGaeExact(host, adv.expected, ret.expected);

  Uploads uploads;
  rlhf::TokenGaeArgs dev = makeArgs([&](const auto& v) { return uploads.of(v); });
  dev.advantages = adv.ptr();
  dev.returns = ret.ptr();
  const std::string name = std::string("tokenGae ") + modeName(mode) + (useMask ? "" : " no-mask") +
                           (withLastValues ? " lastValues " : " ") + shape("B", B, "T", T);
  runBothAlgorithms(report, name, T, {&adv, &ret}, [&] { cu::tokenGae(dev, gDevice); });
}

void returnsCase(Report& report, int64_t B, int64_t T, bool withMask, float gamma, uint64_t seed) {
  Rng rng(seed);
  const int64_t n = B * T;
  const auto mask = withMask ? responseMask(rng, B, T, 0.2) : std::vector<uint8_t>();
  auto rewards = rng.uniform(n, -1, 1);
  if (withMask) poisonMasked(rewards, mask, 3);

  auto makeArgs = [&](auto&& p) {
    rlhf::DiscountedReturnsArgs a;
    a.B = B;
    a.T = T;
    a.rewards = p(rewards);
    a.mask = p(mask);
    a.gamma = gamma;
    return a;
  };
  Output ret("returns", n);
  rlhf::DiscountedReturnsArgs host = makeArgs([](const auto& v) { return v.empty() ? nullptr : v.data(); });
  host.returns = ret.expected.reference.data();
  rlhf::discountedReturnsReference(host);
  returnsExact(host, ret.expected);

  Uploads uploads;
  rlhf::DiscountedReturnsArgs dev = makeArgs([&](const auto& v) { return uploads.of(v); });
  dev.returns = ret.ptr();
  const std::string name = std::string("discountedReturns") + (withMask ? " mask" : " no-mask") +
                           " gamma=" + fmt("%g", gamma) + " " + shape("B", B, "T", T);
  runBothAlgorithms(report, name, T, {&ret}, [&] { cu::discountedReturns(dev, gDevice); });
}

// --- statistics ---------------------------------------------------------------------------------

bool closeRel(double got, double want, double scale, double rel) {
  if (std::isnan(want)) return std::isnan(got);
  return std::fabs(got - want) <= rel * scale;
}

void momentsCase(Report& report, int64_t n, bool withMask, bool validNaN, uint64_t seed) {
  Rng rng(seed);
  auto x = rng.uniform(n, 1, 5);  // off-centre, so that the shifted sums matter
  auto mask = withMask ? rng.flags(n, 0.7) : std::vector<uint8_t>();
  if (withMask) poisonMasked(x, mask, 5);
  if (validNaN && n > 0) {
    x[static_cast<size_t>(n - 1)] = std::numeric_limits<float>::quiet_NaN();
    if (withMask) mask[static_cast<size_t>(n - 1)] = 1;
  }
  rlhf::MaskedMomentsArgs host;
  host.n = n;
  host.x = x.data();
  host.mask = withMask ? mask.data() : nullptr;
  const rlhf::MaskedMoments want = rlhf::maskedMomentsReference(host);

  const std::string name = "maskedMoments" + std::string(withMask ? " mask" : " no-mask") +
                           (validNaN ? " valid-NaN" : "") + " [n=" + std::to_string(n) + "]";
  try {
    Uploads uploads;
    rlhf::MaskedMomentsArgs dev = host;
    dev.x = uploads.of(x);
    dev.mask = withMask ? uploads.of(mask) : nullptr;
    const rlhf::MaskedMoments got = cu::maskedMoments(dev, gDevice);
    const rlhf::MaskedMoments again = cu::maskedMoments(dev, gDevice);
    // Float64 sums of up to 16M float inputs in two different orders: 1e-9 relative covers the
    // worst case of the reference's plain loop (n*2^-53) with room.
    const double spread = std::sqrt(want.count > 0 ? std::fabs(want.m2) / want.count : 0.0);
    const bool ok = got.count == want.count &&
                    closeRel(got.mean, want.mean, std::fabs(want.mean) + spread, 1e-9) &&
                    closeRel(got.m2, want.m2, std::fabs(want.m2), 1e-9) &&
                    std::memcmp(&got, &again, sizeof(got)) == 0;
    report.record(ok, name,
                  "count " + fmt("%.0f", got.count) + " mean " + fmt("%.17g", got.mean) + " (reference " +
                      fmt("%.17g", want.mean) + ") m2 " + fmt("%.17g", got.m2) + " (reference " +
                      fmt("%.17g", want.m2) + ")" + (std::memcmp(&got, &again, sizeof(got)) == 0 ? "" : " NOT deterministic"));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

void affineCase(Report& report, int64_t n, int64_t offset, uint64_t seed) {
  Rng rng(seed);
  const auto x = rng.uniform(n + offset, -10, 10);
  std::vector<float> want(static_cast<size_t>(n));
  rlhf::AffineArgs host;
  host.n = n;
  host.x = x.data() + offset;
  host.center = 0.37f;
  host.scale = 1.7f;
  host.shift = -0.2f;
  host.out = want.data();
  rlhf::affineReference(host);

  const std::string name = "affine [n=" + std::to_string(n) + "] offset " + std::to_string(offset);
  try {
    Uploads uploads;
    // `offset` floats into both buffers: 4-byte aligned only, so the scalar kernel runs.
    DeviceBuffer out(static_cast<size_t>(n + offset) * sizeof(float));
    rlhf::AffineArgs dev = host;
    dev.x = uploads.of(x) + offset;
    dev.out = out.as<float>() + offset;
    cu::affine(dev, gDevice);
    std::vector<float> got(static_cast<size_t>(n + offset));
    out.download(got.data());
    bool ok = out.guardIntact();
    for (int64_t i = 0; i < n && ok; ++i) ok = sameBits(got[offset + i], want[i]);
    report.record(ok, name, ok ? "bit-identical, guard intact" : "differs from the reference or guard overwritten");
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

void firstNonFiniteCase(Report& report, int64_t n, std::vector<std::pair<int64_t, float>> bad) {
  std::vector<float> x = Rng(n).uniform(n, -1, 1);
  for (const auto& [i, v] : bad) x[static_cast<size_t>(i)] = v;
  const int64_t want = rlhf::firstNonFiniteCpu(x.data(), n);
  const std::string name = "firstNonFinite [n=" + std::to_string(n) + "] with " + std::to_string(bad.size()) + " bad";
  try {
    Uploads uploads;
    const int64_t got = cu::firstNonFinite(uploads.of(x), n, gDevice);
    report.record(got == want, name, "got " + std::to_string(got) + ", reference " + std::to_string(want));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// --- the runtime --------------------------------------------------------------------------------

void runtimeCases(Report& report) {
  const cu::MemoryStats before = cu::memoryStats(gDevice);
  {
    void* a = cu::alloc(0, gDevice);
    void* b = cu::alloc(0, gDevice);
    const cu::MemoryStats during = cu::memoryStats(gDevice);
    report.record(a != nullptr && b != nullptr && a != b, "alloc(0)", "distinct non-null pointers");
    report.record(during.liveAllocations == before.liveAllocations + 2 &&
                      during.totalAllocations == before.totalAllocations + 2,
                  "memoryStats counts allocations", "live " + std::to_string(during.liveAllocations));
    cu::free(a, gDevice);
    cu::free(b, gDevice);
  }
  {
    const std::vector<float> src = Rng(1).uniform(1000, -1, 1);
    std::vector<float> back(src.size());
    DeviceBuffer d1(src.size() * sizeof(float)), d2(src.size() * sizeof(float));
    d1.upload(src.data());
    cu::copyOnDevice(d2.as<float>(), d1.as<float>(), src.size() * sizeof(float), gDevice);
    d2.download(back.data());
    report.record(std::memcmp(src.data(), back.data(), src.size() * sizeof(float)) == 0 && d2.guardIntact(),
                  "copies host -> device -> device -> host", "round trip");
  }
  try {
    cu::alloc(16, cu::deviceCount());
    report.record(false, "invalid device index", "no error");
  } catch (const rlhf::KernelError& e) {
    report.record(e.kind == rlhf::ErrorKind::Range, "invalid device index", e.what());
  }
  // More than the device holds: OutOfMemory (E_OOM in JS), nothing counted, and the next
  // allocation and copy work. Not under --quick: compute-sanitizer reports every failed
  // cudaMalloc as an error, and this one fails on purpose.
  if (!gQuick) {
    const cu::MemoryStats at = cu::memoryStats(gDevice);
    const size_t tooMuch = cu::deviceInfo(gDevice).totalMemory * 4;
    try {
      cu::alloc(tooMuch, gDevice);
      report.record(false, "an allocation beyond device memory", "no error");
    } catch (const rlhf::KernelError& e) {
      report.record(e.kind == rlhf::ErrorKind::OutOfMemory, "an allocation beyond device memory is OutOfMemory", e.what());
    }
    const cu::MemoryStats after = cu::memoryStats(gDevice);
    report.record(after.liveAllocations == at.liveAllocations && after.liveBytes == at.liveBytes,
                  "a failed allocation is not counted", "live " + std::to_string(after.liveAllocations));
    const std::vector<float> src = Rng(2).uniform(256, -1, 1);
    std::vector<float> back(src.size());
    DeviceBuffer d(src.size() * sizeof(float));
    d.upload(src.data());
    d.download(back.data());
    report.record(std::memcmp(src.data(), back.data(), src.size() * sizeof(float)) == 0,
                  "the device works after an out-of-memory", "round trip");
  }
  try {
    rlhf::GaeArgs a;
    a.T = 4;
    a.N = 4;
    cu::gae(a, gDevice);
    report.record(false, "null pointers are refused", "no error");
  } catch (const rlhf::KernelError& e) {
    report.record(e.kind != rlhf::ErrorKind::Cuda, "null pointers are refused", e.what());
  }
}

void advantageCases(Report& report) {
  struct Shape {
    int64_t rows, cols;
    bool large;
  };
  // [T,N] for GAE: one step; tiny; tails off multiples of 32 (tile width 32, 4, 1); the
  // "[N=8192,T=64]" bench shape; one long environment; segments of several tiles (width 32
  // and width 1); many environments.
  const std::vector<Shape> gaeShapes = {
      {1, 1, false},       {7, 5, false},      {33, 37, false},       {300, 3, false},
      {1000, 1, false},    {64, 8192, false},  {1, 32768, false},     {131072, 1, false},
      {20000, 40, false},  {300000, 1, false}, {1024, 4096, true},    {40, 20000, true}};
  uint64_t seed = 1000;
  for (const Shape& s : gaeShapes) {
    if (s.large && gQuick) continue;
    const bool small = s.rows * s.cols <= 100000;
    for (GaeVariant v : {GaeVariant::Plain, GaeVariant::Flags, GaeVariant::Terminated, GaeVariant::Truncated,
                         GaeVariant::CleanRl, GaeVariant::NaN}) {
      if (!small && v != GaeVariant::Plain && v != GaeVariant::Flags && v != GaeVariant::CleanRl) continue;
      gaeCase(report, s.rows, s.cols, v, ++seed);
    }
  }
  gaeCase(report, 0, 5, GaeVariant::Plain, ++seed);
  gaeCase(report, 5, 0, GaeVariant::Plain, ++seed);

  // [B,T] for token GAE and returns: one token; short rows (sequential by default); rows just
  // past one tile; one very long row, in one-tile and in several-tile segments; enough rows
  // for one segment of several tiles; a few long rows; thousands of rows (a warp per row under
  // the scan: one short tile, several tiles with a tail); more rows than that.
  const std::vector<Shape> tokenShapes = {
      {1, 1, false},      {5, 7, false},       {3, 65, false},     {17, 1000, false},
      {2, 4099, false},   {1, 131072, false},  {1, 300000, false}, {130, 5000, false},
      {2048, 37, false},  {3, 100000, true},   {4096, 1024, true}, {2048, 2500, true},
      {20000, 40, true}};
  for (const Shape& s : tokenShapes) {
    if (s.large && gQuick) continue;
    const bool small = s.rows * s.cols <= 100000;
    for (rlhf::MaskMode mode : {rlhf::MaskMode::Premask, rlhf::MaskMode::Skip, rlhf::MaskMode::None}) {
      tokenGaeCase(report, s.rows, s.cols, mode, true, ++seed);
      if (small) tokenGaeCase(report, s.rows, s.cols, mode, false, ++seed);
    }
    returnsCase(report, s.rows, s.cols, true, 0.99f, ++seed);
    returnsCase(report, s.rows, s.cols, false, 1.0f, ++seed);
  }
  tokenGaeCase(report, 0, 5, rlhf::MaskMode::Skip, true, ++seed);
  tokenGaeCase(report, 4, 0, rlhf::MaskMode::Premask, true, ++seed);
  returnsCase(report, 0, 9, true, 0.99f, ++seed);
}

void statisticsCases(Report& report) {
  uint64_t seed = 5000;
  for (int64_t n : {0, 1, 5, 4095, 4096, 4097, 100003, 1 << 20, 16 << 20}) {
    if (gQuick && n > (1 << 20)) continue;
    momentsCase(report, n, false, false, ++seed);
    momentsCase(report, n, true, false, ++seed);
  }
  momentsCase(report, 10000, true, true, ++seed);
  momentsCase(report, 10000, false, true, ++seed);
  {
    rlhf::MaskedMomentsArgs none;  // every element masked
    std::vector<float> x(300, 1.0f);
    std::vector<uint8_t> m(300, 0);
    Uploads uploads;
    none.n = 300;
    none.x = uploads.of(x);
    none.mask = uploads.of(m);
    const rlhf::MaskedMoments got = cu::maskedMoments(none, gDevice);
    report.record(got.count == 0 && got.mean == 0 && got.m2 == 0, "maskedMoments all masked", "count 0");
  }

  for (int64_t n : {0, 1, 3, 4, 1001, (1 << 20) + 3})
    for (int64_t offset : {0, 1}) affineCase(report, n, offset, ++seed);

  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  firstNonFiniteCase(report, 0, {});
  firstNonFiniteCase(report, 1000, {});
  firstNonFiniteCase(report, 1000, {{0, nan}});
  firstNonFiniteCase(report, 1000, {{999, inf}});
  firstNonFiniteCase(report, 100000, {{70000, inf}, {5000, nan}, {99999, -inf}});
  firstNonFiniteCase(report, (1 << 20) + 7, {{(1 << 20) + 6, -inf}});
}

// --- the policy-gradient family -----------------------------------------------------------------
// Every launcher against its scalar reference (float64) with the op table's cudaTol; float16
// and bfloat16 logits against the reference run on the same values rounded to that type.

double cudaTol(const char* op) {
  for (const rlhf::OpInfo& info : rlhf::kOps)
    if (std::strcmp(info.name, op) == 0) return info.cudaTol;
  std::printf("FAIL op table: no row %s\n", op);
  std::exit(1);
}

// |got - want| <= bound, and NaN exactly where the reference has NaN.
struct Comparison {
  bool ok = true;
  double worst = 0;  // largest error as a share of its bound
  std::string detail;
  void check(double got, double want, double bound, const std::string& what) {
    if (!ok) return;
    if (std::isnan(want) || std::isnan(got)) {
      if (std::isnan(want) && std::isnan(got)) return;
      ok = false;
    } else {
      const double err = std::fabs(got - want);
      if (err == 0) return;
      if (!(err <= bound)) ok = false;
      if (ok) worst = std::max(worst, err / bound);
    }
    if (!ok) detail = what + " is " + fmt("%.9g", got) + ", reference " + fmt("%.9g", want) + " within " + fmt("%.2g", bound);
  }
  std::string summary() const { return ok ? "max error " + fmt("%.2g", worst) + " of the tolerance" : detail; }
};

// Logits as the device gets them (float32, or the bits of float16 / bfloat16) and as the
// reference gets them: the same values, rounded to the dtype.
uint16_t halfBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00;
  if (a >= 0x477ff000u) return sign | 0x7c00;
  if (a < 0x38800000u) {
    float af;
    std::memcpy(&af, &a, 4);
    return sign | static_cast<uint16_t>(std::nearbyint(af * 0x1p24f));  // multiples of 2^-24, exact
  }
  const uint32_t mantissa = a & 0x7fffffu, kept = mantissa >> 13, rest = mantissa & 0x1fffu;
  uint32_t r = (((a >> 23) - 112) << 10) | kept;
  if (rest > 0x1000u || (rest == 0x1000u && (kept & 1))) r += 1;
  return sign | static_cast<uint16_t>(r);
}

float halfValue(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e == 0) return (sign ? -1.0f : 1.0f) * static_cast<float>(m) * 0x1p-24f;
  const uint32_t bits = sign | (e == 0x1f ? 0x7f800000u | (m << 13) : ((e + 112) << 23) | (m << 13));
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t bf16Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

float bf16Value(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

const char* dtypeName(rlhf::LogitsDtype d) {
  switch (d) {
    case rlhf::LogitsDtype::F32: return "f32";
    case rlhf::LogitsDtype::F16: return "f16";
    case rlhf::LogitsDtype::BF16: return "bf16";
  }
  return "";
}

// Relative rounding of one conversion to the dtype (half an ulp), and the absolute one of
// float16's subnormals: what writing the gradient in that type may add to its error.
double outputRounding(rlhf::LogitsDtype d) {
  return d == rlhf::LogitsDtype::F16 ? 0x1p-11 : d == rlhf::LogitsDtype::BF16 ? 0x1p-8 : 0.0;
}
double outputFloor(rlhf::LogitsDtype d) { return d == rlhf::LogitsDtype::F16 ? 0x1p-25 : 0.0; }

struct Logits {
  rlhf::LogitsDtype dtype;
  std::vector<float> values;   // the reference's copy
  std::vector<uint16_t> bits;  // the device's copy for float16 / bfloat16
  Logits(std::vector<float> raw, rlhf::LogitsDtype d) : dtype(d), values(std::move(raw)) {
    if (dtype == rlhf::LogitsDtype::F32) return;
    bits.resize(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      bits[i] = dtype == rlhf::LogitsDtype::F16 ? halfBits(values[i]) : bf16Bits(values[i]);
      values[i] = dtype == rlhf::LogitsDtype::F16 ? halfValue(bits[i]) : bf16Value(bits[i]);
    }
  }
  const void* device(Uploads& up) const {
    return dtype == rlhf::LogitsDtype::F32 ? static_cast<const void*>(up.of(values)) : up.of(bits);
  }
  size_t elementBytes() const { return dtype == rlhf::LogitsDtype::F32 ? 4 : 2; }
  // A buffer of `shift` + values.size() elements of the dtype, less the first `shift`.
  std::vector<float> download(const DeviceBuffer& b, size_t shift = 0) const {
    std::vector<float> out(values.size() + shift);
    if (dtype == rlhf::LogitsDtype::F32) {
      b.download(out.data());
    } else {
      std::vector<uint16_t> h(out.size());
      b.download(h.data());
      for (size_t i = 0; i < h.size(); ++i) out[i] = dtype == rlhf::LogitsDtype::F16 ? halfValue(h[i]) : bf16Value(h[i]);
    }
    out.erase(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(shift));
    return out;
  }
};

enum class LogitsKind { Plain, NegInf, Huge, Ignored, NaN };
const char* logitsKindName(LogitsKind k) {
  switch (k) {
    case LogitsKind::Plain: return "plain";
    case LogitsKind::NegInf: return "-inf";
    case LogitsKind::Huge: return "huge";
    case LogitsKind::Ignored: return "ignoreIndex";
    case LogitsKind::NaN: return "NaN";
  }
  return "";
}

constexpr int32_t kIgnore = -100;

// Logits [N,V] and labels of a kind: -inf on a third of the entries and on whole rows but
// the label; huge values about +-2e4 (exp would overflow without the max); a fifth of the
// labels ignored (with NaN logits in one ignored row, which must not leak); NaN in one row.
struct LogitsCase {
  std::vector<float> raw;
  std::vector<int32_t> labels;
};

LogitsCase makeLogits(Rng& rng, int64_t N, int64_t V, LogitsKind kind) {
  LogitsCase c;
  c.raw = rng.uniform(N * V, -6, 6);
  c.labels.resize(static_cast<size_t>(N));
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t i = 0; i < N; ++i) {
    const int32_t y = static_cast<int32_t>(rng.next() % static_cast<uint64_t>(V));
    c.labels[i] = y;
    float* row = c.raw.data() + i * V;
    switch (kind) {
      case LogitsKind::Plain: break;
      case LogitsKind::NegInf:
        for (int64_t j = 0; j < V; ++j)
          if (j != y && (i % 3 == 0 || rng.unit() < 0.33)) row[j] = -inf;
        break;
      case LogitsKind::Huge:
        for (int64_t j = 0; j < V; ++j) row[j] = (i % 2 == 0 ? 2e4f : -2e4f) + row[j] * (i % 4 < 2 ? 1.0f : 3e3f);
        break;
      case LogitsKind::Ignored:
        if (rng.unit() < 0.2 || i == 0) {
          c.labels[i] = kIgnore;
          if (i == 0) row[0] = nan;
        }
        break;
      case LogitsKind::NaN:
        if (i == N / 2) row[V / 2] = nan;
        break;
    }
  }
  return c;
}

// lp and H are O(log V) quantities: an absolute tolerance below 1, relative above.
double unitScale(double want) { return std::max(1.0, std::fabs(want)); }

bool guardsIntact(std::initializer_list<const DeviceBuffer*> buffers) {
  for (const DeviceBuffer* b : buffers)
    if (!b->guardIntact()) return false;
  return true;
}

// Per row: lp and H forward, then the backward with random upstream gradients (gH given or
// null), each run twice to check that the bits repeat. gradShift > 0 places the gradient that
// many elements after a 16-byte boundary, where the logits are on one: the gradient's rows
// then sit differently from the logits' and take the element-by-element path.
void logprobsCase(Report& report, int64_t N, int64_t V, rlhf::LogitsDtype dtype, float tau, LogitsKind kind,
                  bool withEntropy, uint64_t seed, int64_t gradShift = 0) {
  Rng rng(seed);
  LogitsCase lc = makeLogits(rng, N, V, kind);
  const Logits logits(std::move(lc.raw), dtype);
  const std::vector<float> gLp = rng.uniform(N, -2, 2), gH = withEntropy ? rng.uniform(N, -1, 1) : std::vector<float>();
  const std::string name = std::string("logprobs ") + dtypeName(dtype) + " " + logitsKindName(kind) +
                           " tau=" + fmt("%g", tau) + (withEntropy ? "" : " no-entropy") +
                           (gradShift > 0 ? " gradient-shifted" : "") + " " + shape("N", N, "V", V);

  std::vector<float> wantLp(N), wantH(N), wantGrad(static_cast<size_t>(N * V));
  rlhf::LogprobsArgs host;
  host.N = N;
  host.V = V;
  host.logits = logits.values.data();
  host.labels = lc.labels.data();
  host.temperature = tau;
  host.ignoreIndex = kIgnore;
  host.logprobs = wantLp.data();
  host.entropy = withEntropy ? wantH.data() : nullptr;
  rlhf::logprobsReference(host);
  rlhf::LogprobsBackwardArgs hostBack;
  hostBack.N = N;
  hostBack.V = V;
  hostBack.logits = logits.values.data();
  hostBack.labels = lc.labels.data();
  hostBack.temperature = tau;
  hostBack.ignoreIndex = kIgnore;
  hostBack.gradLogprobs = gLp.data();
  hostBack.gradEntropy = withEntropy ? gH.data() : nullptr;
  hostBack.gradLogits = wantGrad.data();
  rlhf::logprobsBackwardReference(hostBack);

  try {
    Uploads up;
    DeviceBuffer lp(N * sizeof(float)), H(N * sizeof(float)),
        grad(static_cast<size_t>(N * V + gradShift) * logits.elementBytes());
    rlhf::LogprobsArgs dev = host;
    dev.dtype = dtype;
    dev.logits = logits.device(up);
    dev.labels = up.of(lc.labels);
    dev.logprobs = lp.as<float>();
    dev.entropy = withEntropy ? H.as<float>() : nullptr;
    rlhf::LogprobsBackwardArgs devBack = hostBack;
    devBack.dtype = dtype;
    devBack.logits = dev.logits;
    devBack.labels = dev.labels;
    devBack.gradLogprobs = up.of(gLp);
    devBack.gradEntropy = up.of(gH);
    devBack.gradLogits = grad.as<char>() + gradShift * static_cast<int64_t>(logits.elementBytes());

    std::vector<float> gotLp(N), gotH(N), firstLp, firstH, firstGrad;
    std::vector<float> gotGrad;
    for (int run = 0; run < 2; ++run) {
      cu::logprobs(dev, gDevice);
      cu::logprobsBackward(devBack, gDevice);
      lp.download(gotLp.data());
      if (withEntropy) H.download(gotH.data());
      gotGrad = logits.download(grad, static_cast<size_t>(gradShift));
      if (run == 0) {
        firstLp = gotLp;
        firstH = gotH;
        firstGrad = gotGrad;
      }
    }
    const bool repeat = std::memcmp(firstLp.data(), gotLp.data(), N * sizeof(float)) == 0 &&
                        std::memcmp(firstH.data(), gotH.data(), N * sizeof(float)) == 0 &&
                        std::memcmp(firstGrad.data(), gotGrad.data(), gotGrad.size() * sizeof(float)) == 0;

    const double tolLp = cudaTol("logprobsFromLogits"), tolGrad = cudaTol("logprobsFromLogitsBackward");
    Comparison fwd, back;
    for (int64_t i = 0; i < N; ++i) {
      fwd.check(gotLp[i], wantLp[i], tolLp * unitScale(wantLp[i]), "lp[" + std::to_string(i) + "]");
      if (withEntropy) fwd.check(gotH[i], wantH[i], tolLp * unitScale(wantH[i]), "H[" + std::to_string(i) + "]");
    }
    // Each entry is (onehot - p) gLp - p (z/tau - E) gH over tau: float32 rounding makes
    // errors of a few ulps of |gLp| and of |gH| (1 + H) (p |z/tau - E| stays below 1 + H),
    // however small the entry itself (1 - p_y when p_y is close to 1).
    auto checkGradient = [&](const std::vector<float>& got, Comparison& c) {
      for (int64_t i = 0; i < N; ++i) {
        const double rowScale =
            (std::fabs(gLp[i]) + (withEntropy ? std::fabs(gH[i]) * (1 + std::fabs(wantH[i])) : 0)) / tau;
        for (int64_t j = 0; j < V; ++j) {
          const double want = wantGrad[i * V + j];
          const double bound = tolGrad * (std::fabs(want) + rowScale) + outputRounding(dtype) * std::fabs(want) +
                               outputFloor(dtype);
          c.check(got[i * V + j], want, bound, "dz[" + std::to_string(i) + "," + std::to_string(j) + "]");
        }
      }
    };
    checkGradient(gotGrad, back);

    // The backward given the forward's outputs (one pass a row), within the same bounds; given
    // values that miss their rows (lp off by 1e-3 or NaN, H off by 1e-2), every row is computed
    // from its logits: the plain backward's bits.
    DeviceBuffer givenGrad(static_cast<size_t>(N * V + gradShift) * logits.elementBytes());
    rlhf::LogprobsBackwardArgs givenBack = devBack;
    givenBack.logprobs = lp.as<float>();
    givenBack.entropy = withEntropy ? H.as<float>() : nullptr;
    givenBack.gradLogits = givenGrad.as<char>() + gradShift * static_cast<int64_t>(logits.elementBytes());
    cu::logprobsBackward(givenBack, gDevice);
    Comparison given;
    checkGradient(logits.download(givenGrad, static_cast<size_t>(gradShift)), given);
    std::vector<float> badLp = gotLp, badH = gotH;
    for (int64_t i = 0; i < N; ++i) {
      if (i % 3 == 0) badLp[i] += 1e-3f;
      if (i % 3 == 1) badLp[i] = NAN;
      if (i % 3 == 2 && withEntropy) badH[i] += 1e-2f * std::max(1.0f, std::fabs(badH[i]));
      if (i % 3 == 2 && !withEntropy) badLp[i] -= 1e-3f;
    }
    givenBack.logprobs = up.of(badLp);
    givenBack.entropy = withEntropy ? up.of(badH) : nullptr;
    cu::logprobsBackward(givenBack, gDevice);
    const std::vector<float> staleGrad = logits.download(givenGrad, static_cast<size_t>(gradShift));
    const bool stale = std::memcmp(staleGrad.data(), gotGrad.data(), gotGrad.size() * sizeof(float)) == 0;

    const bool guards = guardsIntact({&lp, &H, &grad, &givenGrad});
    report.record(fwd.ok && repeat && guards, name,
                  "forward " + fwd.summary() + (repeat ? "" : "; NOT bit-identical on a second run") +
                      (guards ? "" : "; guard bytes overwritten"));
    report.record(back.ok && guards, "logprobsBackward" + name.substr(8), "gradient " + back.summary());
    report.record(given.ok && stale && guards, "logprobsBackward given lp, H" + name.substr(8),
                  "gradient " + given.summary() + (stale ? "" : "; given stale values: NOT the plain backward's bits"));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

void firstInvalidLabelCase(Report& report, int64_t n, int64_t V, std::vector<std::pair<int64_t, int32_t>> bad) {
  std::vector<int32_t> labels(static_cast<size_t>(n));
  Rng rng(n + V);
  for (int32_t& y : labels) y = rng.unit() < 0.1 ? kIgnore : static_cast<int32_t>(rng.next() % static_cast<uint64_t>(V));
  for (const auto& [i, y] : bad) labels[static_cast<size_t>(i)] = y;
  const int64_t want = rlhf::firstInvalidLabelCpu(labels.data(), n, V, kIgnore);
  const std::string name = "firstInvalidLabel [n=" + std::to_string(n) + ",V=" + std::to_string(V) + "] with " +
                           std::to_string(bad.size()) + " bad";
  try {
    Uploads up;
    const int64_t got = cu::firstInvalidLabel(up.of(labels), n, V, kIgnore, gDevice);
    report.record(got == want, name, "got " + std::to_string(got) + ", reference " + std::to_string(want));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

const char* estimatorName(rlhf::KlEstimator e) {
  switch (e) {
    case rlhf::KlEstimator::K1: return "k1";
    case rlhf::KlEstimator::K2: return "k2";
    case rlhf::KlEstimator::K3: return "k3";
    case rlhf::KlEstimator::Abs: return "abs";
  }
  return "";
}

std::string klOptionsName(const rlhf::KlOptions& o) {
  std::string s = estimatorName(o.estimator);
  if (o.clampLogRatio != rlhf::kNoClamp) s += " clampLogRatio=" + fmt("%g", o.clampLogRatio);
  if (o.clampOutput != rlhf::kNoClamp) s += " clampOutput=" + fmt("%g", o.clampOutput);
  if (o.straightThrough) s += " straightThrough";
  return s;
}

// Elementwise in float64 like the reference: the same bits but for the last ulp of exp.
void klPenaltyCase(Report& report, int64_t n, const rlhf::KlOptions& o, uint64_t seed) {
  Rng rng(seed);
  const std::vector<float> lp = rng.uniform(n, -30, 0), ref = rng.uniform(n, -30, 0);
  std::vector<float> wantKl(n), wantGrad(n);
  rlhf::KlPenaltyArgs host;
  host.n = n;
  host.logprobs = lp.data();
  host.refLogprobs = ref.data();
  host.o = o;
  host.kl = wantKl.data();
  host.grad = wantGrad.data();
  rlhf::klPenaltyReference(host);
  const std::string name = "klPenalty " + klOptionsName(o) + " [n=" + std::to_string(n) + "]";
  try {
    Uploads up;
    DeviceBuffer kl(n * sizeof(float)), grad(n * sizeof(float));
    rlhf::KlPenaltyArgs dev = host;
    dev.logprobs = up.of(lp);
    dev.refLogprobs = up.of(ref);
    dev.kl = kl.as<float>();
    dev.grad = grad.as<float>();
    cu::klPenalty(dev, gDevice);
    std::vector<float> gotKl(n), gotGrad(n);
    kl.download(gotKl.data());
    grad.download(gotGrad.data());
    const double tol = cudaTol("klPenalty");
    Comparison c;
    // k3 = exp(-d) + d - 1 cancels near d = 0: its error is relative to exp(-d) + |d| + 1.
    for (int64_t i = 0; i < n; ++i) {
      const double d = static_cast<double>(lp[i]) - ref[i];
      const double scale = std::exp(-std::max(-30.0, std::min(30.0, d))) + std::fabs(d) + 1;
      c.check(gotKl[i], wantKl[i], tol * scale, "kl[" + std::to_string(i) + "]");
      c.check(gotGrad[i], wantGrad[i], tol * scale, "grad[" + std::to_string(i) + "]");
    }
    const bool guards = guardsIntact({&kl, &grad});
    report.record(c.ok && guards, name, c.summary() + (guards ? "" : "; guard bytes overwritten"));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// Bit-identical (the op table's cudaTol is 0): the same float64 operations on the same values.
void shapeRewardsCase(Report& report, int64_t B, int64_t T, rlhf::ScorePlacement placement, bool withEos,
                      float scoreClip, uint64_t seed) {
  Rng rng(seed);
  const std::vector<float> scores = rng.uniform(B, -8, 8), kl = rng.uniform(B * T, -0.5f, 1.0f);
  std::vector<uint8_t> mask = responseMask(rng, B, T, 0.1);
  if (B > 1) std::fill(mask.begin() + T, mask.begin() + 2 * T, uint8_t{0});  // a row with nothing valid
  if (B > 2) std::fill(mask.begin() + 2 * T, mask.begin() + 3 * T, uint8_t{1});  // one valid to the end
  const std::vector<uint8_t> hasEos = withEos ? rng.flags(B, 0.5) : std::vector<uint8_t>();
  std::vector<float> want(static_cast<size_t>(B * T));
  rlhf::ShapeRewardsArgs host;
  host.B = B;
  host.T = T;
  host.scores = scores.data();
  host.kl = kl.data();
  host.mask = mask.data();
  host.hasEos = withEos ? hasEos.data() : nullptr;
  host.klCoef = 0.05f;
  host.placement = placement;
  host.missingEosPenalty = 1.5f;
  host.scoreClip = scoreClip;
  host.rewards = want.data();
  rlhf::shapeRewardsReference(host);
  const std::string name = std::string("shapeRewards ") +
                           (placement == rlhf::ScorePlacement::LastValid ? "last-valid" : "after-last") +
                           (withEos ? " hasEos" : "") + (scoreClip != rlhf::kNoClamp ? " scoreClip" : "") + " " +
                           shape("B", B, "T", T);
  try {
    Uploads up;
    DeviceBuffer rewards(static_cast<size_t>(B * T) * sizeof(float));
    rlhf::ShapeRewardsArgs dev = host;
    dev.scores = up.of(scores);
    dev.kl = up.of(kl);
    dev.mask = up.of(mask);
    dev.hasEos = up.of(hasEos);
    dev.rewards = rewards.as<float>();
    cu::shapeRewards(dev, gDevice);
    std::vector<float> got(want.size());
    rewards.download(got.data());
    int64_t differ = 0;
    for (size_t i = 0; i < got.size(); ++i) differ += sameBits(got[i], want[i]) ? 0 : 1;
    const bool guards = rewards.guardIntact();
    report.record(differ == 0 && guards, name,
                  differ == 0 ? "bit-identical" : std::to_string(differ) + " elements differ" +
                                                      std::string(guards ? "" : "; guard bytes overwritten"));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

const char* aggregationName(rlhf::Aggregation a) {
  switch (a) {
    case rlhf::Aggregation::TokenMean: return "token-mean";
    case rlhf::Aggregation::SeqMeanTokenMean: return "seq-mean-token-mean";
    case rlhf::Aggregation::SeqMeanTokenSum: return "seq-mean-token-sum";
    case rlhf::Aggregation::SeqMeanTokenSumNorm: return "seq-mean-token-sum-norm";
    case rlhf::Aggregation::Grpo: return "grpo";
    case rlhf::Aggregation::Bnpo: return "bnpo";
    case rlhf::Aggregation::DrGrpo: return "dr_grpo";
    case rlhf::Aggregation::Dapo: return "dapo";
  }
  return "";
}

constexpr rlhf::Aggregation kAggregations[] = {
    rlhf::Aggregation::TokenMean, rlhf::Aggregation::SeqMeanTokenMean,    rlhf::Aggregation::SeqMeanTokenSum,
    rlhf::Aggregation::SeqMeanTokenSumNorm, rlhf::Aggregation::Grpo, rlhf::Aggregation::Bnpo,
    rlhf::Aggregation::DrGrpo, rlhf::Aggregation::Dapo};

// The normalizer the caller would resolve: T for the Dr. GRPO family, B*T for TRL's, a global
// token count for DAPO.
double defaultNormalizer(rlhf::Aggregation a, int64_t B, int64_t T) {
  switch (a) {
    case rlhf::Aggregation::SeqMeanTokenSumNorm: return static_cast<double>(T);
    case rlhf::Aggregation::DrGrpo: return static_cast<double>(B * T);
    case rlhf::Aggregation::Dapo: return 0.75 * static_cast<double>(B * T) + 3;
    default: return 0;
  }
}

// Losses and stats are float64 sums in another order than the reference's: relative
// differences of about n * 2^-53, far inside cudaTol. The absolute floor of 1e-9 covers sums
// that cancel to about 0, where a lost or doubled token would still be off by about 1/n.
void checkStat(Comparison& c, double got, double want, double tol, const char* what) {
  c.check(got, want, tol * std::fabs(want) + 1e-9, what);
}

bool sameStats(const void* a, const void* b, size_t bytes) { return std::memcmp(a, b, bytes) == 0; }

struct PolicyInputs {
  std::vector<float> lp, old, adv;
  std::vector<uint8_t> mask;
};

PolicyInputs policyInputs(Rng& rng, int64_t B, int64_t T, bool perRow, bool withMask) {
  PolicyInputs in;
  in.lp = rng.uniform(B * T, -4, -0.1f);
  // Ratios about 0.5..2: per token within +-0.4 of a per-row offset within +-0.3, so that the
  // rows' mean log-ratios (Sequence importance) clip too.
  in.old = in.lp;
  for (int64_t b = 0; b < B; ++b) {
    const float offset = static_cast<float>(rng.unit() - 0.5) * 0.6f;
    for (int64_t t = 0; t < T; ++t) in.old[b * T + t] += offset + static_cast<float>(rng.unit() - 0.5) * 0.8f;
  }
  in.adv = rng.uniform(perRow ? B : B * T, -2, 2);
  if (withMask) {
    in.mask = responseMask(rng, B, T, 0.15);
    if (B > 1) std::fill(in.mask.begin() + T, in.mask.begin() + 2 * T, uint8_t{0});
    poisonMasked(in.lp, in.mask, 3);
    poisonMasked(in.old, in.mask, 3);
  }
  return in;
}

std::string policyOptionsName(const rlhf::PolicyLossOptions& o, bool perRow, bool withMask) {
  std::string s = aggregationName(o.aggregation);
  s += o.importance == rlhf::ImportanceLevel::Sequence ? " sequence" : " token";
  if (o.dualClip > 0) s += " dualClip=" + fmt("%g", o.dualClip);
  if (o.clampLogRatio != rlhf::kNoClamp) s += " clampLogRatio=" + fmt("%g", o.clampLogRatio);
  if (o.clipHigh != o.clipLow) s += " clipHigh=" + fmt("%g", o.clipHigh);
  if (o.clipfracMode == rlhf::ClipfracMode::Ratio) s += " clipfrac=ratio";
  if (perRow) s += " A[B]";
  if (!withMask) s += " no-mask";
  return s;
}

void policyLossCase(Report& report, int64_t B, int64_t T, rlhf::PolicyLossOptions o, bool perRow, bool withMask,
                    uint64_t seed) {
  Rng rng(seed);
  const PolicyInputs in = policyInputs(rng, B, T, perRow, withMask);
  o.normalizer = defaultNormalizer(o.aggregation, B, T);
  std::vector<float> want(static_cast<size_t>(B * T));
  rlhf::PolicyLossArgs host;
  host.B = B;
  host.T = T;
  host.logprobs = in.lp.data();
  host.oldLogprobs = in.old.data();
  host.advantages = in.adv.data();
  host.advantagesPerRow = perRow;
  host.mask = withMask ? in.mask.data() : nullptr;
  host.o = o;
  host.grad = want.data();
  const rlhf::PolicyLossStats ws = rlhf::policyLossReference(host);
  const std::string name = "policyLoss " + policyOptionsName(o, perRow, withMask) + " " + shape("B", B, "T", T);
  try {
    Uploads up;
    DeviceBuffer grad(static_cast<size_t>(B * T) * sizeof(float));
    rlhf::PolicyLossArgs dev = host;
    dev.logprobs = up.of(in.lp);
    dev.oldLogprobs = up.of(in.old);
    dev.advantages = up.of(in.adv);
    dev.mask = up.of(in.mask);
    dev.grad = grad.as<float>();
    const rlhf::PolicyLossStats gs = cu::policyLoss(dev, gDevice);
    std::vector<float> got(want.size()), again(want.size());
    grad.download(got.data());
    const rlhf::PolicyLossStats gs2 = cu::policyLoss(dev, gDevice);
    grad.download(again.data());
    const bool repeat = sameStats(&gs, &gs2, sizeof(gs)) && std::memcmp(got.data(), again.data(), got.size() * 4) == 0;
    const double tol = cudaTol("ppoPolicyLoss");
    Comparison c;
    checkStat(c, gs.loss, ws.loss, tol, "loss");
    checkStat(c, gs.clipfrac, ws.clipfrac, tol, "clipfrac");
    checkStat(c, gs.clipfracLower, ws.clipfracLower, tol, "clipfracLower");
    checkStat(c, gs.approxKl, ws.approxKl, tol, "approxKl");
    checkStat(c, gs.approxKlK3, ws.approxKlK3, tol, "approxKlK3");
    checkStat(c, gs.ppoKl, ws.ppoKl, tol, "ppoKl");
    // Per token the same float64 operations; under Sequence the row's log-ratio is a sum in
    // another order, which moves r by an ulp or so.
    for (size_t i = 0; i < got.size(); ++i)
      c.check(got[i], want[i], tol * std::fabs(want[i]) + 1e-12, "grad[" + std::to_string(i) + "]");
    const bool guards = grad.guardIntact();
    report.record(c.ok && repeat && guards, name,
                  "loss " + fmt("%.9g", gs.loss) + " clipfrac " + fmt("%.4g", gs.clipfrac) + "; " + c.summary() +
                      (repeat ? "" : "; NOT bit-identical on a second run") + (guards ? "" : "; guard overwritten"));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

void valueLossCase(Report& report, int64_t B, int64_t T, float clip, rlhf::Aggregation agg, bool withMask,
                   uint64_t seed) {
  Rng rng(seed);
  const int64_t n = B * T;
  std::vector<float> values = rng.uniform(n, -2, 2), oldValues = values, returns = rng.uniform(n, -1, 3);
  for (float& v : oldValues) v += static_cast<float>(rng.unit() - 0.5);
  std::vector<uint8_t> mask = withMask ? responseMask(rng, B, T, 0.15) : std::vector<uint8_t>();
  if (withMask) {
    if (B > 1) std::fill(mask.begin() + T, mask.begin() + 2 * T, uint8_t{0});
    poisonMasked(values, mask, 3);
    poisonMasked(returns, mask, 3);
  }
  std::vector<float> want(static_cast<size_t>(n));
  rlhf::ValueLossArgs host;
  host.B = B;
  host.T = T;
  host.values = values.data();
  host.oldValues = clip != rlhf::kNoClamp ? oldValues.data() : nullptr;
  host.returns = returns.data();
  host.mask = withMask ? mask.data() : nullptr;
  host.clip = clip;
  host.aggregation = agg;
  host.normalizer = defaultNormalizer(agg, B, T);
  host.grad = want.data();
  const rlhf::ValueLossStats ws = rlhf::valueLossReference(host);
  const std::string name = std::string("valueLoss ") + aggregationName(agg) +
                           (clip != rlhf::kNoClamp ? " clip=" + fmt("%g", clip) : std::string(" unclipped")) +
                           (withMask ? "" : " no-mask") + " " + shape("B", B, "T", T);
  try {
    Uploads up;
    DeviceBuffer grad(static_cast<size_t>(n) * sizeof(float));
    rlhf::ValueLossArgs dev = host;
    dev.values = up.of(values);
    dev.oldValues = clip != rlhf::kNoClamp ? up.of(oldValues) : nullptr;
    dev.returns = up.of(returns);
    dev.mask = up.of(mask);
    dev.grad = grad.as<float>();
    const rlhf::ValueLossStats gs = cu::valueLoss(dev, gDevice);
    const rlhf::ValueLossStats gs2 = cu::valueLoss(dev, gDevice);
    std::vector<float> got(want.size());
    grad.download(got.data());
    const double tol = cudaTol("valueLoss");
    Comparison c;
    checkStat(c, gs.loss, ws.loss, tol, "loss");
    checkStat(c, gs.vfClipfrac, ws.vfClipfrac, tol, "vfClipfrac");
    // Moments combined pairwise against the reference's two passes: float64 both.
    checkStat(c, gs.explainedVariance, ws.explainedVariance, tol, "explainedVariance");
    for (size_t i = 0; i < got.size(); ++i)
      c.check(got[i], want[i], tol * std::fabs(want[i]), "grad[" + std::to_string(i) + "]");
    const bool repeat = sameStats(&gs, &gs2, sizeof(gs)), guards = grad.guardIntact();
    report.record(c.ok && repeat && guards, name,
                  "loss " + fmt("%.9g", gs.loss) + " ev " + fmt("%.6g", gs.explainedVariance) + "; " + c.summary() +
                      (repeat ? "" : "; NOT bit-identical on a second run") + (guards ? "" : "; guard overwritten"));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// The fused actor loss: stats, lp and H, and the gradient with respect to the logits. The
// gradient's tolerance needs each token's coefficients gLp and gH (as in logprobsCase); they
// are rebuilt here from the reference's pieces: the policy loss's gradient on the reference
// lp, the KL estimator's gradient and the aggregation weights.
struct ActorSetup {
  int64_t B, T, V;
  rlhf::LogitsDtype dtype;
  float tau;
  LogitsKind kind;
  rlhf::PolicyLossOptions o;
  bool perRow, withMask, withRef, outputs;
  float entropyCoef, klCoef;
  rlhf::KlOptions kl;
};

std::vector<double> actorCoefficients(const ActorSetup& s, const rlhf::ActorLossArgs& host, const std::vector<float>& lp,
                                      const std::vector<uint8_t>& valid, std::vector<double>& gH) {
  const int64_t n = s.B * s.T;
  std::vector<float> pg(static_cast<size_t>(n));
  rlhf::PolicyLossArgs p;
  p.B = s.B;
  p.T = s.T;
  p.logprobs = lp.data();
  p.oldLogprobs = host.oldLogprobs;
  p.advantages = host.advantages;
  p.advantagesPerRow = s.perRow;
  p.mask = valid.data();
  p.o = host.o;
  p.grad = pg.data();
  rlhf::policyLossReference(p);
  std::vector<float> klv(static_cast<size_t>(n)), klg(static_cast<size_t>(n));
  if (s.withRef) {
    rlhf::KlPenaltyArgs k;
    k.n = n;
    k.logprobs = lp.data();
    k.refLogprobs = host.refLogprobs;
    k.o = s.kl;
    k.kl = klv.data();
    k.grad = klg.data();
    rlhf::klPenaltyReference(k);
  }
  std::vector<double> rowValid(static_cast<size_t>(s.B), 0.0);
  double total = 0, nonEmpty = 0;
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t t = 0; t < s.T; ++t) rowValid[b] += valid[b * s.T + t];
    total += rowValid[b];
    nonEmpty += rowValid[b] > 0 ? 1 : 0;
  }
  std::vector<double> gLp(static_cast<size_t>(n), 0.0);
  gH.assign(static_cast<size_t>(n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const double w = rlhf::aggregationRowWeight(host.o.aggregation, host.o.normalizer, rowValid[i / s.T], total,
                                                nonEmpty, static_cast<double>(s.B));
    gLp[i] = std::fabs(pg[i]) + (s.withRef ? std::fabs(s.klCoef * w * klg[i]) : 0.0);
    gH[i] = std::fabs(s.entropyCoef * w);
  }
  return gLp;
}

std::string actorName(const ActorSetup& s) {
  std::string name = std::string("actorLoss ") + dtypeName(s.dtype) + " " + logitsKindName(s.kind) + " " +
                     policyOptionsName(s.o, s.perRow, s.withMask);
  if (s.tau != 1) name += " tau=" + fmt("%g", s.tau);
  if (s.withRef) name += " kl=" + fmt("%g", s.klCoef) + " " + klOptionsName(s.kl);
  if (s.entropyCoef != 0) name += " ent=" + fmt("%g", s.entropyCoef);
  if (!s.outputs) name += " no-lp-out";
  return name + " [B=" + std::to_string(s.B) + ",T=" + std::to_string(s.T) + ",V=" + std::to_string(s.V) + "]";
}

void actorLossCase(Report& report, ActorSetup s, uint64_t seed) {
  Rng rng(seed);
  const int64_t n = s.B * s.T, V = s.V;
  LogitsCase lc = makeLogits(rng, n, V, s.kind);
  const Logits logits(std::move(lc.raw), s.dtype);
  PolicyInputs in = policyInputs(rng, s.B, s.T, s.perRow, s.withMask);
  const std::vector<float> ref = rng.uniform(n, -5, -0.5f);
  s.o.normalizer = defaultNormalizer(s.o.aggregation, s.B, s.T);
  std::vector<float> wantLp(n), wantH(n), wantGrad(static_cast<size_t>(n * V));
  rlhf::ActorLossArgs host;
  host.B = s.B;
  host.T = s.T;
  host.V = V;
  host.logits = logits.values.data();
  host.labels = lc.labels.data();
  host.temperature = s.tau;
  host.ignoreIndex = kIgnore;
  host.oldLogprobs = in.old.data();
  host.advantages = in.adv.data();
  host.advantagesPerRow = s.perRow;
  host.refLogprobs = s.withRef ? ref.data() : nullptr;
  host.mask = s.withMask ? in.mask.data() : nullptr;
  host.o = s.o;
  host.entropyCoef = s.entropyCoef;
  host.klCoef = s.klCoef;
  host.klOptions = s.kl;
  host.gradLogits = wantGrad.data();
  host.logprobs = wantLp.data();
  host.entropy = wantH.data();
  const rlhf::ActorLossStats ws = rlhf::actorLossReference(host);
  std::vector<uint8_t> valid(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    valid[i] = (!s.withMask || in.mask[i] != 0) && lc.labels[i] != kIgnore ? 1 : 0;
  std::vector<double> gH;
  const std::vector<double> gLp = actorCoefficients(s, host, wantLp, valid, gH);

  const std::string name = actorName(s);
  try {
    Uploads up;
    DeviceBuffer lp(n * sizeof(float)), H(n * sizeof(float)), grad(static_cast<size_t>(n * V) * logits.elementBytes());
    rlhf::ActorLossArgs dev = host;
    dev.dtype = s.dtype;
    dev.logits = logits.device(up);
    dev.labels = up.of(lc.labels);
    dev.oldLogprobs = up.of(in.old);
    dev.advantages = up.of(in.adv);
    dev.refLogprobs = s.withRef ? up.of(ref) : nullptr;
    dev.mask = s.withMask ? up.of(in.mask) : nullptr;
    dev.gradLogits = grad.as<void>();
    dev.logprobs = s.outputs ? lp.as<float>() : nullptr;
    dev.entropy = s.outputs ? H.as<float>() : nullptr;
    const rlhf::ActorLossStats gs = cu::actorLoss(dev, gDevice);
    const std::vector<float> gotGrad = logits.download(grad);
    const rlhf::ActorLossStats gs2 = cu::actorLoss(dev, gDevice);
    const std::vector<float> again = logits.download(grad);
    const bool repeat = sameStats(&gs, &gs2, sizeof(gs)) &&
                        std::memcmp(gotGrad.data(), again.data(), gotGrad.size() * sizeof(float)) == 0;

    // lp and H come from float32 row sums: the policy terms see lp with an error of about
    // cudaTol, so the scalars are held to cudaTol too (plus the 1e-9 floor of checkStat).
    const double tol = cudaTol("actorLossFromLogits");
    Comparison c;
    checkStat(c, gs.loss, ws.loss, tol, "loss");
    checkStat(c, gs.policy.loss, ws.policy.loss, tol, "policy.loss");
    checkStat(c, gs.entropy, ws.entropy, tol, "entropy");
    checkStat(c, gs.kl, ws.kl, tol, "kl");
    checkStat(c, gs.policy.approxKl, ws.policy.approxKl, tol, "approxKl");
    checkStat(c, gs.policy.approxKlK3, ws.policy.approxKlK3, tol, "approxKlK3");
    checkStat(c, gs.policy.ppoKl, ws.policy.ppoKl, tol, "ppoKl");
    // A ratio on the clip boundary could flip with lp's last bits; random inputs never land
    // there, so the clip fractions must agree exactly.
    c.check(gs.policy.clipfrac, ws.policy.clipfrac, 1e-12, "clipfrac");
    c.check(gs.policy.clipfracLower, ws.policy.clipfracLower, 1e-12, "clipfracLower");
    if (s.outputs) {
      std::vector<float> gotLp(n), gotH(n);
      lp.download(gotLp.data());
      H.download(gotH.data());
      for (int64_t i = 0; i < n; ++i) {
        c.check(gotLp[i], wantLp[i], tol * unitScale(wantLp[i]), "lp[" + std::to_string(i) + "]");
        c.check(gotH[i], wantH[i], tol * unitScale(wantH[i]), "H[" + std::to_string(i) + "]");
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      const double rowScale = (gLp[i] + gH[i] * (1 + std::fabs(wantH[i]))) / s.tau;
      for (int64_t j = 0; j < V; ++j) {
        const double want = wantGrad[i * V + j];
        const double bound = tol * (std::fabs(want) + rowScale) + outputRounding(s.dtype) * std::fabs(want) +
                             outputFloor(s.dtype);
        c.check(gotGrad[i * V + j], want, bound, "dz[" + std::to_string(i) + "," + std::to_string(j) + "]");
      }
    }
    const bool guards = guardsIntact({&lp, &H, &grad});
    report.record(c.ok && repeat && guards, name,
                  "loss " + fmt("%.9g", gs.loss) + "; " + c.summary() + (repeat ? "" : "; NOT bit-identical on a second run") +
                      (guards ? "" : "; guard bytes overwritten"));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// Empty inputs return the documented values and launch nothing that reads a null pointer.
void emptyPolicyCases(Report& report) {
  try {
    rlhf::LogprobsArgs lp;
    lp.V = 32000;
    cu::logprobs(lp, gDevice);
    rlhf::LogprobsBackwardArgs back;
    back.V = 32000;
    cu::logprobsBackward(back, gDevice);
    rlhf::KlPenaltyArgs kl;
    cu::klPenalty(kl, gDevice);
    rlhf::ShapeRewardsArgs shape0;
    shape0.T = 5;
    cu::shapeRewards(shape0, gDevice);
    rlhf::PolicyLossArgs p;
    p.B = 4;
    const rlhf::PolicyLossStats ps = cu::policyLoss(p, gDevice);
    rlhf::ValueLossArgs v;
    v.T = 3;
    const rlhf::ValueLossStats vs = cu::valueLoss(v, gDevice);
    rlhf::ActorLossArgs a;
    a.V = 128256;
    const rlhf::ActorLossStats as = cu::actorLoss(a, gDevice);
    cu::synchronize(gDevice);
    const bool ok = ps.loss == 0 && ps.clipfrac == 0 && vs.loss == 0 && std::isnan(vs.explainedVariance) &&
                    as.loss == 0 && cu::firstInvalidLabel(nullptr, 0, 5, kIgnore, gDevice) == -1;
    report.record(ok, "policy family: empty inputs", "N=0, B=0, T=0 with V>0: zero losses, NaN explained variance");
  } catch (const rlhf::KernelError& e) {
    report.record(false, "policy family: empty inputs", e.what());
  }
}

void policyCases(Report& report) {
  using rlhf::LogitsDtype;
  uint64_t seed = 9000;
  emptyPolicyCases(report);

  // Log-probs: V = 1; small V (a warp per row) and odd V (packs cut by the row's alignment);
  // a block per row; the two LLM vocabularies on a few rows.
  struct LogitsShape {
    int64_t N, V;
  };
  const std::vector<LogitsShape> shapes = {{5, 1}, {37, 7}, {64, 100}, {19, 1000}, {9, 1031}, {6, 5000}};
  for (const LogitsShape& sh : shapes)
    for (LogitsDtype d : {LogitsDtype::F32, LogitsDtype::F16, LogitsDtype::BF16})
      for (LogitsKind k : {LogitsKind::Plain, LogitsKind::NegInf, LogitsKind::Huge, LogitsKind::Ignored})
        logprobsCase(report, sh.N, sh.V, d, 1.0f, k, true, ++seed);
  logprobsCase(report, 64, 100, LogitsDtype::F32, 0.7f, LogitsKind::Plain, true, ++seed);
  logprobsCase(report, 6, 5000, LogitsDtype::F32, 1.3f, LogitsKind::Huge, true, ++seed);
  logprobsCase(report, 19, 1000, LogitsDtype::F32, 1.0f, LogitsKind::Plain, false, ++seed);
  logprobsCase(report, 9, 1031, LogitsDtype::BF16, 0.6f, LogitsKind::NegInf, false, ++seed);
  logprobsCase(report, 9, 1031, LogitsDtype::F32, 1.0f, LogitsKind::NegInf, true, ++seed, 1);
  logprobsCase(report, 37, 7, LogitsDtype::F16, 1.0f, LogitsKind::Ignored, true, ++seed, 3);
  logprobsCase(report, 8, 300, LogitsDtype::F32, 1.0f, LogitsKind::NaN, true, ++seed);
  logprobsCase(report, 4, 3000, LogitsDtype::F16, 1.0f, LogitsKind::NaN, true, ++seed);
  for (LogitsDtype d : {LogitsDtype::F32, LogitsDtype::F16, LogitsDtype::BF16}) {
    logprobsCase(report, 3, 32000, d, 1.0f, LogitsKind::Plain, true, ++seed);
    if (!gQuick) logprobsCase(report, 2, 128256, d, 1.0f, LogitsKind::Ignored, true, ++seed);
  }
  logprobsCase(report, 3, 32000, LogitsDtype::F32, 0.8f, LogitsKind::NegInf, true, ++seed);
  if (!gQuick) logprobsCase(report, 2, 128256, LogitsDtype::BF16, 1.0f, LogitsKind::Huge, true, ++seed);

  firstInvalidLabelCase(report, 1000, 50, {});
  firstInvalidLabelCase(report, 1000, 50, {{999, 50}});
  firstInvalidLabelCase(report, 100000, 32000, {{70000, -1}, {5000, 32000}, {99999, -101}});
  firstInvalidLabelCase(report, 10000, 7, {{0, 7}});

  for (rlhf::KlEstimator e : {rlhf::KlEstimator::K1, rlhf::KlEstimator::K2, rlhf::KlEstimator::K3, rlhf::KlEstimator::Abs}) {
    rlhf::KlOptions o;
    o.estimator = e;
    klPenaltyCase(report, 10007, o, ++seed);
    o.clampLogRatio = 20;
    o.clampOutput = 10;
    klPenaltyCase(report, 10007, o, ++seed);
    o.straightThrough = true;
    klPenaltyCase(report, 1001, o, ++seed);
  }

  for (rlhf::ScorePlacement pl : {rlhf::ScorePlacement::LastValid, rlhf::ScorePlacement::AfterLast}) {
    shapeRewardsCase(report, 7, 50, pl, true, rlhf::kNoClamp, ++seed);
    shapeRewardsCase(report, 5, 1, pl, false, rlhf::kNoClamp, ++seed);
    shapeRewardsCase(report, 3, 3000, pl, true, 5.0f, ++seed);
    shapeRewardsCase(report, 300, 33, pl, false, 5.0f, ++seed);
  }

  // Every aggregation, both importance levels, dual clip and the log-ratio clamp; rows of one
  // item and of several (T = 1500: three items), advantages per token and per row.
  for (rlhf::Aggregation agg : kAggregations) {
    for (rlhf::ImportanceLevel level : {rlhf::ImportanceLevel::Token, rlhf::ImportanceLevel::Sequence}) {
      rlhf::PolicyLossOptions o;
      o.aggregation = agg;
      o.importance = level;
      policyLossCase(report, 6, 37, o, false, true, ++seed);
      o.dualClip = 3;
      o.clipHigh = 0.28f;
      policyLossCase(report, 3, 1500, o, level == rlhf::ImportanceLevel::Sequence, true, ++seed);
    }
  }
  {
    rlhf::PolicyLossOptions o;
    o.clampLogRatio = 0.3f;
    o.clipfracMode = rlhf::ClipfracMode::Ratio;
    policyLossCase(report, 40, 64, o, false, true, ++seed);
    policyLossCase(report, 1, 20000, o, false, false, ++seed);
    o.importance = rlhf::ImportanceLevel::Sequence;
    o.clampLogRatio = 0.05f;
    policyLossCase(report, 40, 64, o, true, true, ++seed);
    o.importance = rlhf::ImportanceLevel::Token;
    o.aggregation = rlhf::Aggregation::SeqMeanTokenMean;
    if (!gQuick) policyLossCase(report, 256, 2048, o, false, true, ++seed);
  }

  for (rlhf::Aggregation agg : kAggregations) {
    valueLossCase(report, 6, 37, 0.2f, agg, true, ++seed);
    valueLossCase(report, 3, 1500, rlhf::kNoClamp, agg, agg == rlhf::Aggregation::TokenMean, ++seed);
  }
  valueLossCase(report, 1, 20000, 0.5f, rlhf::Aggregation::TokenMean, false, ++seed);

  // The fused op: small V (warp rows) and a block per row, every dtype; the PPO options; the
  // KL term under each estimator; the entropy bonus; ignored labels and masked tokens.
  auto actor = [&](int64_t B, int64_t T, int64_t V, LogitsDtype d) {
    ActorSetup s{B, T, V, d, 1.0f, LogitsKind::Ignored, rlhf::PolicyLossOptions{}, false, true, true, true,
                 0.01f, 0.05f, rlhf::KlOptions{}};
    return s;
  };
  for (LogitsDtype d : {LogitsDtype::F32, LogitsDtype::F16, LogitsDtype::BF16}) {
    actorLossCase(report, actor(3, 20, 50, d), ++seed);
    actorLossCase(report, actor(2, 5, 3000, d), ++seed);
  }
  for (rlhf::Aggregation agg : kAggregations) {
    ActorSetup s = actor(4, 33, 64, LogitsDtype::F32);
    s.o.aggregation = agg;
    actorLossCase(report, s, ++seed);
    s.o.importance = rlhf::ImportanceLevel::Sequence;
    s.o.dualClip = 3;
    actorLossCase(report, s, ++seed);
  }
  for (rlhf::KlEstimator e : {rlhf::KlEstimator::K1, rlhf::KlEstimator::K2, rlhf::KlEstimator::K3, rlhf::KlEstimator::Abs}) {
    ActorSetup s = actor(2, 40, 20, LogitsDtype::F32);
    s.kl.estimator = e;
    s.kl.clampLogRatio = 20;
    s.kl.clampOutput = 10;
    s.kl.straightThrough = e == rlhf::KlEstimator::K3;
    actorLossCase(report, s, ++seed);
  }
  {
    ActorSetup s = actor(2, 24, 300, LogitsDtype::F32);
    s.kind = LogitsKind::NegInf;
    s.tau = 0.7f;
    s.withRef = false;
    s.klCoef = 0;
    s.outputs = false;
    actorLossCase(report, s, ++seed);
    s.kind = LogitsKind::Huge;
    s.tau = 1.0f;
    s.withMask = false;
    s.perRow = true;
    s.entropyCoef = 0;
    s.o.clampLogRatio = 0.2f;
    actorLossCase(report, s, ++seed);
    s = actor(1, 1, 1, LogitsDtype::F32);
    s.kind = LogitsKind::Plain;
    actorLossCase(report, s, ++seed);
    s = actor(2, 600, 16, LogitsDtype::BF16);
    s.o.importance = rlhf::ImportanceLevel::Sequence;
    actorLossCase(report, s, ++seed);
    s = actor(1, 3, 32000, LogitsDtype::BF16);
    actorLossCase(report, s, ++seed);
    if (!gQuick) {
      s = actor(1, 2, 128256, LogitsDtype::F32);
      s.kind = LogitsKind::Plain;
      actorLossCase(report, s, ++seed);
    }
  }
}

// --- the preference family ----------------------------------------------------------------------
// Every launcher against its scalar reference with the op table's cudaTol: each pair's float64
// terms are the reference's operations, so gradients match to an ulp or so of float64; the
// losses and stats are sums in a tree, another order than the reference's. Each case runs twice
// and must give the same bits; outputs are followed by guard bytes.

const char* dpoTypeName(rlhf::DpoLossType t) {
  static const char* const names[] = {"sigmoid", "robust",    "hinge",   "ipo",      "sigmoid_norm", "exo_pair",
                                      "nca_pair", "bco_pair", "sppo_hard", "apo_zero", "apo_down", "discopop"};
  return names[static_cast<int>(t)];
}

const char* groupEstimatorName(rlhf::GroupEstimator e) {
  switch (e) {
    case rlhf::GroupEstimator::Grpo: return "grpo";
    case rlhf::GroupEstimator::Rloo: return "rloo";
    case rlhf::GroupEstimator::ReinforceBaseline: return "reinforce-baseline";
  }
  return "?";
}

const char* groupScaleName(rlhf::GroupScale s) {
  switch (s) {
    case rlhf::GroupScale::Group: return "group";
    case rlhf::GroupScale::Batch: return "batch";
    case rlhf::GroupScale::None: return "none";
  }
  return "?";
}

// Pairs with rewards in +-spread (spread 100: margins of +-200), a NaN pair where withNaN.
void pairwiseCase(Report& report, int64_t N, bool withMargin, float centerCoef, float spread, bool withNaN,
                  uint64_t seed) {
  Rng rng(seed);
  std::vector<float> chosen = rng.uniform(N, -spread, spread), rejected = rng.uniform(N, -spread, spread);
  std::vector<float> margin = withMargin ? rng.uniform(N, -1, 1) : std::vector<float>();
  if (withNaN && N > 2) chosen[static_cast<size_t>(N / 2)] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> wantC(static_cast<size_t>(N)), wantR(static_cast<size_t>(N));
  rlhf::PairwiseLossArgs host;
  host.N = N;
  host.chosen = chosen.data();
  host.rejected = rejected.data();
  host.margin = withMargin ? margin.data() : nullptr;
  host.marginValue = 0.25f;
  host.centerCoef = centerCoef;
  host.gradChosen = wantC.data();
  host.gradRejected = wantR.data();
  const rlhf::PairwiseLossStats ws = rlhf::pairwiseLossReference(host);
  const std::string name = "pairwiseLoss N=" + std::to_string(N) + (withMargin ? " margin[N]" : " margin=0.25") +
                           " center=" + fmt("%g", centerCoef) + " spread=" + fmt("%g", spread) + (withNaN ? " NaN" : "");
  try {
    Uploads up;
    DeviceBuffer gc(static_cast<size_t>(N) * sizeof(float)), gr(static_cast<size_t>(N) * sizeof(float));
    rlhf::PairwiseLossArgs dev = host;
    dev.chosen = up.of(chosen);
    dev.rejected = up.of(rejected);
    dev.margin = up.of(margin);
    dev.gradChosen = gc.as<float>();
    dev.gradRejected = gr.as<float>();
    const rlhf::PairwiseLossStats gs = cu::pairwiseLoss(dev, gDevice);
    std::vector<float> gotC(wantC.size()), gotR(wantR.size()), againC(wantC.size()), againR(wantR.size());
    gc.download(gotC.data());
    gr.download(gotR.data());
    const rlhf::PairwiseLossStats gs2 = cu::pairwiseLoss(dev, gDevice);
    gc.download(againC.data());
    gr.download(againR.data());
    // By the bits: a NaN gradient must repeat too.
    const bool repeat = sameStats(&gs, &gs2, sizeof(gs)) && std::memcmp(gotC.data(), againC.data(), gotC.size() * 4) == 0 &&
                        std::memcmp(gotR.data(), againR.data(), gotR.size() * 4) == 0;
    const double tol = cudaTol("pairwiseRewardLoss");
    Comparison c;
    checkStat(c, gs.loss, ws.loss, tol, "loss");
    checkStat(c, gs.accuracy, ws.accuracy, tol, "accuracy");
    checkStat(c, gs.meanMargin, ws.meanMargin, tol, "meanMargin");
    checkStat(c, gs.meanChosen, ws.meanChosen, tol, "meanChosen");
    checkStat(c, gs.meanRejected, ws.meanRejected, tol, "meanRejected");
    for (size_t i = 0; i < gotC.size(); ++i) {
      c.check(gotC[i], wantC[i], tol * std::fabs(wantC[i]) + 1e-12, "gradChosen[" + std::to_string(i) + "]");
      c.check(gotR[i], wantR[i], tol * std::fabs(wantR[i]) + 1e-12, "gradRejected[" + std::to_string(i) + "]");
    }
    const bool guards = guardsIntact({&gc, &gr});
    report.record(c.ok && repeat && guards, name,
                  "loss " + fmt("%.9g", gs.loss) + "; " + c.summary() + (repeat ? "" : "; NOT bit-identical on a second run") +
                      (guards ? "" : "; guard overwritten"));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// Log-probs of pairs: x - y spread over +-spread/beta... per side within +-spread of the
// reference's, lengths 1..64 where withLengths, a NaN pair where withNaN.
void dpoCase(Report& report, int64_t N, rlhf::DpoLossType type, bool withLengths, float beta, float spread,
             bool withNaN, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> pc = rng.uniform(N, -60, -1), pr = rng.uniform(N, -60, -1);
  std::vector<float> rc = pc, rr = pr;
  for (float& v : rc) v += static_cast<float>(rng.unit() - 0.5) * 2 * spread;
  for (float& v : rr) v += static_cast<float>(rng.unit() - 0.5) * 2 * spread;
  std::vector<int32_t> nc, nr;
  if (withLengths) {
    for (int64_t i = 0; i < N; ++i) {
      nc.push_back(1 + static_cast<int32_t>(rng.unit() * 64));
      nr.push_back(1 + static_cast<int32_t>(rng.unit() * 64));
    }
  }
  if (withNaN && N > 2) pr[static_cast<size_t>(N / 3)] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> wantC(static_cast<size_t>(N)), wantR(static_cast<size_t>(N));
  rlhf::DpoLossArgs host;
  host.N = N;
  host.policyChosen = pc.data();
  host.policyRejected = pr.data();
  host.refChosen = rc.data();
  host.refRejected = rr.data();
  host.chosenLengths = withLengths ? nc.data() : nullptr;
  host.rejectedLengths = withLengths ? nr.data() : nullptr;
  host.type = type;
  host.beta = beta;
  const bool smoothed = type == rlhf::DpoLossType::Sigmoid || type == rlhf::DpoLossType::Robust ||
                        type == rlhf::DpoLossType::ExoPair;
  host.labelSmoothing = smoothed ? 0.1f : 0.0f;
  host.discopopTau = 0.05f;
  host.gradChosen = wantC.data();
  host.gradRejected = wantR.data();
  const rlhf::DpoLossStats ws = rlhf::dpoLossReference(host);
  const std::string name = std::string("dpoLoss ") + dpoTypeName(type) + " N=" + std::to_string(N) +
                           " beta=" + fmt("%g", beta) + " spread=" + fmt("%g", spread) +
                           (withLengths ? " lengths" : "") + (withNaN ? " NaN" : "");
  try {
    Uploads up;
    DeviceBuffer gc(static_cast<size_t>(N) * sizeof(float)), gr(static_cast<size_t>(N) * sizeof(float));
    rlhf::DpoLossArgs dev = host;
    dev.policyChosen = up.of(pc);
    dev.policyRejected = up.of(pr);
    dev.refChosen = up.of(rc);
    dev.refRejected = up.of(rr);
    dev.chosenLengths = up.of(nc);
    dev.rejectedLengths = up.of(nr);
    dev.gradChosen = gc.as<float>();
    dev.gradRejected = gr.as<float>();
    const rlhf::DpoLossStats gs = cu::dpoLoss(dev, gDevice);
    std::vector<float> gotC(wantC.size()), gotR(wantR.size()), againC(wantC.size()), againR(wantR.size());
    gc.download(gotC.data());
    gr.download(gotR.data());
    const rlhf::DpoLossStats gs2 = cu::dpoLoss(dev, gDevice);
    gc.download(againC.data());
    gr.download(againR.data());
    const bool repeat = sameStats(&gs, &gs2, sizeof(gs)) && std::memcmp(gotC.data(), againC.data(), gotC.size() * 4) == 0 &&
                        std::memcmp(gotR.data(), againR.data(), gotR.size() * 4) == 0;
    const double tol = cudaTol("dpoLoss");
    Comparison c;
    checkStat(c, gs.loss, ws.loss, tol, "loss");
    checkStat(c, gs.rewardsChosen, ws.rewardsChosen, tol, "rewardsChosen");
    checkStat(c, gs.rewardsRejected, ws.rewardsRejected, tol, "rewardsRejected");
    checkStat(c, gs.accuracy, ws.accuracy, tol, "accuracy");
    checkStat(c, gs.margin, ws.margin, tol, "margin");
    for (size_t i = 0; i < gotC.size(); ++i) {
      c.check(gotC[i], wantC[i], tol * std::fabs(wantC[i]) + 1e-12, "gradChosen[" + std::to_string(i) + "]");
      c.check(gotR[i], wantR[i], tol * std::fabs(wantR[i]) + 1e-12, "gradRejected[" + std::to_string(i) + "]");
    }
    const bool guards = guardsIntact({&gc, &gr});
    report.record(c.ok && repeat && guards, name,
                  "loss " + fmt("%.9g", gs.loss) + "; " + c.summary() + (repeat ? "" : "; NOT bit-identical on a second run") +
                      (guards ? "" : "; guard overwritten"));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// Forward and backward of sequence log-probs; with a mask, row 1 is empty and masked tokens
// hold NaN; one upstream gradient is NaN.
void sequenceCase(Report& report, int64_t B, int64_t T, bool withMask, bool average, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> lp = rng.uniform(B * T, -8, 0), gs = rng.uniform(B, -2, 2);
  std::vector<uint8_t> mask;
  if (withMask) {
    mask = responseMask(rng, B, T, 0.2);
    if (B > 1) std::fill(mask.begin() + T, mask.begin() + 2 * T, uint8_t{0});
    poisonMasked(lp, mask, 5);
  }
  if (B > 2) gs[2] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> want(static_cast<size_t>(B)), wantBack(static_cast<size_t>(B * T));
  rlhf::SequenceLogprobsArgs fwd;
  fwd.B = B;
  fwd.T = T;
  fwd.tokenLogprobs = lp.data();
  fwd.mask = withMask ? mask.data() : nullptr;
  fwd.average = average;
  fwd.out = want.data();
  rlhf::sequenceLogprobsReference(fwd);
  rlhf::SequenceLogprobsBackwardArgs back;
  back.B = B;
  back.T = T;
  back.gradSequence = gs.data();
  back.mask = fwd.mask;
  back.average = average;
  back.out = wantBack.data();
  rlhf::sequenceLogprobsBackwardReference(back);
  const std::string name = std::string("sequenceLogprobs") + (average ? " average" : " sum") +
                           (withMask ? "" : " no-mask") + " " + shape("B", B, "T", T);
  try {
    Uploads up;
    DeviceBuffer out(static_cast<size_t>(B) * sizeof(float)), outBack(static_cast<size_t>(B * T) * sizeof(float));
    rlhf::SequenceLogprobsArgs dfwd = fwd;
    dfwd.tokenLogprobs = up.of(lp);
    dfwd.mask = up.of(mask);
    dfwd.out = out.as<float>();
    rlhf::SequenceLogprobsBackwardArgs dback = back;
    dback.gradSequence = up.of(gs);
    dback.mask = dfwd.mask;
    dback.out = outBack.as<float>();
    std::vector<float> got(want.size()), again(want.size()), gotBack(wantBack.size()), againBack(wantBack.size());
    cu::sequenceLogprobs(dfwd, gDevice);
    cu::sequenceLogprobsBackward(dback, gDevice);
    out.download(got.data());
    outBack.download(gotBack.data());
    cu::sequenceLogprobs(dfwd, gDevice);
    cu::sequenceLogprobsBackward(dback, gDevice);
    out.download(again.data());
    outBack.download(againBack.data());
    const bool repeat = std::memcmp(got.data(), again.data(), got.size() * 4) == 0 &&
                        std::memcmp(gotBack.data(), againBack.data(), gotBack.size() * 4) == 0;
    const double tol = cudaTol("sequenceLogprobs"), tolBack = cudaTol("sequenceLogprobsBackward");
    Comparison c;
    for (size_t i = 0; i < got.size(); ++i)
      c.check(got[i], want[i], tol * std::fabs(want[i]) + 1e-12, "out[" + std::to_string(i) + "]");
    for (size_t i = 0; i < gotBack.size(); ++i) {
      c.check(gotBack[i], wantBack[i], tolBack * std::fabs(wantBack[i]), "grad[" + std::to_string(i) + "]");
      if (tolBack == 0 && c.ok && !sameBits(gotBack[i], wantBack[i]) && !std::isnan(wantBack[i])) {
        c.ok = false;
        c.detail = "grad[" + std::to_string(i) + "] differs in its bits";
      }
    }
    const bool guards = guardsIntact({&out, &outBack});
    report.record(c.ok && repeat && guards, name,
                  c.summary() + (repeat ? "" : "; NOT bit-identical on a second run") + (guards ? "" : "; guard overwritten"));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// Rewards with NaN where withNaN (a whole group of them, and single ones); groups of
// groupSize consecutive rows, or ids (groupSize 0) that are scattered, negative and of size one.
void groupCase(Report& report, int64_t N, int64_t groupSize, rlhf::GroupEstimator estimator, rlhf::GroupScale scale,
               bool withNaN, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> rewards = rng.uniform(N, -1, 2);
  std::vector<int32_t> ids;
  if (groupSize == 0) {
    for (int64_t i = 0; i < N; ++i) ids.push_back(static_cast<int32_t>(rng.unit() * 7) - 3);
    if (N > 4) ids[static_cast<size_t>(N - 1)] = 1000;  // a group of one
  }
  if (withNaN) {
    const int64_t G = groupSize > 0 ? groupSize : 1;
    for (int64_t i = 0; i < std::min<int64_t>(G, N); ++i) rewards[static_cast<size_t>(i)] = std::numeric_limits<float>::quiet_NaN();
    for (int64_t i = G + 1; i < N; i += 11) rewards[static_cast<size_t>(i)] = std::numeric_limits<float>::quiet_NaN();
  }
  std::vector<float> want(static_cast<size_t>(N));
  rlhf::GroupAdvantagesArgs host;
  host.N = N;
  host.rewards = rewards.data();
  host.groupSize = groupSize;
  host.groupIds = groupSize == 0 ? ids.data() : nullptr;
  host.estimator = estimator;
  host.scale = scale;
  host.eps = 1e-4f;
  host.out = want.data();
  rlhf::groupAdvantagesReference(host);
  const std::string name = std::string("groupAdvantages ") + groupEstimatorName(estimator) + " scale=" +
                           groupScaleName(scale) + " N=" + std::to_string(N) +
                           (groupSize > 0 ? " groupSize=" + std::to_string(groupSize) : std::string(" groupIds")) +
                           (withNaN ? " NaN" : "");
  try {
    Uploads up;
    DeviceBuffer out(static_cast<size_t>(N) * sizeof(float));
    rlhf::GroupAdvantagesArgs dev = host;
    dev.rewards = up.of(rewards);
    dev.groupIds = up.of(ids);
    dev.out = out.as<float>();
    std::vector<float> got(want.size()), again(want.size());
    cu::groupAdvantages(dev, gDevice);
    out.download(got.data());
    cu::groupAdvantages(dev, gDevice);
    out.download(again.data());
    const bool repeat = std::memcmp(got.data(), again.data(), got.size() * 4) == 0;
    const double tol = cudaTol("groupAdvantages");
    Comparison c;
    for (size_t i = 0; i < got.size(); ++i)
      c.check(got[i], want[i], tol * std::fabs(want[i]) + 1e-12, "out[" + std::to_string(i) + "]");
    const bool guards = out.guardIntact();
    report.record(c.ok && repeat && guards, name,
                  c.summary() + (repeat ? "" : "; NOT bit-identical on a second run") + (guards ? "" : "; guard overwritten"));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// Empty inputs return zero stats and launch nothing that reads a null pointer.
void emptyPreferenceCases(Report& report) {
  try {
    rlhf::PairwiseLossArgs pw;
    const rlhf::PairwiseLossStats ps = cu::pairwiseLoss(pw, gDevice);
    rlhf::DpoLossArgs dpo;
    dpo.type = rlhf::DpoLossType::BcoPair;
    const rlhf::DpoLossStats ds = cu::dpoLoss(dpo, gDevice);
    rlhf::SequenceLogprobsArgs seq;
    seq.T = 7;
    cu::sequenceLogprobs(seq, gDevice);
    rlhf::SequenceLogprobsBackwardArgs back;
    back.B = 3;  // T = 0: nothing to write
    cu::sequenceLogprobsBackward(back, gDevice);
    rlhf::GroupAdvantagesArgs g;
    g.groupSize = 4;
    cu::groupAdvantages(g, gDevice);
    g.groupSize = 0;
    cu::groupAdvantages(g, gDevice);
    cu::synchronize(gDevice);
    const bool ok = ps.loss == 0 && ps.accuracy == 0 && ds.loss == 0 && ds.margin == 0;
    report.record(ok, "preference family: empty inputs", "N=0, B=0, T=0: zero stats, no launch");
  } catch (const rlhf::KernelError& e) {
    report.record(false, "preference family: empty inputs", e.what());
  }
}

void preferenceCases(Report& report) {
  uint64_t seed = 12000;
  emptyPreferenceCases(report);
  // Pairs: one, a block's worth and a tail, several blocks (a second reduction level).
  for (int64_t N : {int64_t{1}, int64_t{37}, int64_t{2049}, int64_t{5000}}) {
    pairwiseCase(report, N, false, 0.0f, 3, false, ++seed);
    pairwiseCase(report, N, true, 0.01f, 3, N > 2, ++seed);
  }
  pairwiseCase(report, 300, true, 0.0f, 100, false, ++seed);
  pairwiseCase(report, 300, false, 0.05f, 100, true, ++seed);
  if (!gQuick) pairwiseCase(report, 3000000, true, 0.01f, 3, false, ++seed);

  using DT = rlhf::DpoLossType;
  for (int t = 0; t <= static_cast<int>(DT::Discopop); ++t) {
    const DT type = static_cast<DT>(t);
    const bool needsLengths = type == DT::SigmoidNorm;
    dpoCase(report, 1, type, needsLengths, 0.1f, 2, false, ++seed);
    dpoCase(report, 2500, type, needsLengths, 0.1f, 2, true, ++seed);
    // Margins of +-100: beta (x - y) far out on both sides.
    dpoCase(report, 200, type, needsLengths, 1.0f, 50, false, ++seed);
    if (type == DT::Ipo) dpoCase(report, 300, type, true, 0.1f, 2, false, ++seed);
    if (!gQuick) dpoCase(report, 1000000, type, true, 0.1f, 2, false, ++seed);
  }

  struct Rows {
    int64_t B, T;
  };
  for (const Rows& r : std::vector<Rows>{{1, 1}, {5, 31}, {37, 100}, {9, 1031}})
    for (bool withMask : {true, false})
      for (bool average : {false, true}) sequenceCase(report, r.B, r.T, withMask, average, ++seed);
  sequenceCase(report, 4, 0, true, true, ++seed);
  if (!gQuick) sequenceCase(report, 256, 8192, true, true, ++seed);

  using E = rlhf::GroupEstimator;
  using S = rlhf::GroupScale;
  struct Groups {
    int64_t N, groupSize;
  };
  for (const Groups& g : std::vector<Groups>{{1, 1}, {16, 1}, {64, 8}, {600, 6}, {520, 40}, {300, 0}, {1, 0}})
    for (E e : {E::Grpo, E::Rloo, E::ReinforceBaseline})
      for (S s : {S::Group, S::Batch, S::None}) {
        if (e != E::Grpo && s != S::Group) continue;  // the scale only matters to GRPO
        groupCase(report, g.N, g.groupSize, e, s, g.N > 1, ++seed);
      }
  groupCase(report, 4096, 2048, E::Grpo, S::Batch, true, ++seed);
  groupCase(report, 5000, 4, E::Grpo, S::Batch, false, ++seed);
}

// --- the neural-network family ------------------------------------------------------------------
// Every launcher against its scalar reference (nn.h) on random inputs: matmul within
// 4*(K+1)*2^-24 of sum_k |a b| (+ |c| when accumulating: one more rounding), the others with the
// op table's cudaTol relative to the value or to the magnitude of its sum (the elementwise ops
// share the nn_math formulas, but the device's float64 erf/tanh/exp may differ from the host's
// in their last bit; layer norm and the column sums add in another order). A cudaTol of 0
// means the same bits (embedding and its backward, which adds in the reference's order, mean
// pooling's backward, scaleGrads). The ops whose sums the device orders its own
// way (matmul, the column sums of the backward passes, sumSquares) run twice and must repeat
// their bits. Outputs are followed by guard bytes; matmul's C by padding columns that must
// keep their bits.

const char* activationName(rlhf::Activation act) {
  static const char* const names[] = {"identity", "tanh", "relu", "gelu", "gelu-tanh"};
  return names[static_cast<int>(act)];
}

// Tolerance `rel` of `scale` (the magnitude the rounding errors are proportional to).
double relBound(double rel, double scale) { return rel * scale + 1e-30; }

// Bits where tol is 0, else within tol of scale (NaN for NaN either way).
void checkTol(Comparison& c, float got, float want, double tol, double scale, const std::string& what) {
  if (tol == 0 && !sameBits(got, want) && !(std::isnan(got) && std::isnan(want)) && c.ok) {
    c.ok = false;
    c.detail = what + " is " + fmt("%.9g", got) + ", reference " + fmt("%.9g", want) + " (bits must match)";
  }
  c.check(got, want, relBound(tol, scale), what);
}

bool sameFloats(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void recordNn(Report& report, const std::string& name, const Comparison& c, bool repeat, bool guards) {
  report.record(c.ok && repeat && guards, name,
                c.summary() + (repeat ? "" : "; NOT bit-identical on a second run") + (guards ? "" : "; guard overwritten"));
}

// --- matmul ---

struct MatmulShape {
  int64_t M, N, K;
  bool transA, transB;
  int64_t padA = 0, padB = 0, padC = 0;  // extra pitch beyond the packed one
  int64_t offset = 0;                    // A and B start this many floats into their buffers
  bool accumulate = false;
  bool withNaN = false;  // a NaN in A: its row of C is NaN
};

std::string matmulName(const MatmulShape& s) {
  return "matmul [" + std::to_string(s.M) + "x" + std::to_string(s.N) + "x" + std::to_string(s.K) + "] " +
         (s.transA ? "T" : "N") + (s.transB ? "T" : "N") +
         (s.padA + s.padB + s.padC > 0 ? " pitch+" + std::to_string(s.padA) + "/" + std::to_string(s.padB) + "/" +
                                             std::to_string(s.padC)
                                       : "") +
         (s.offset > 0 ? " offset " + std::to_string(s.offset) : "") + (s.accumulate ? " accumulate" : "") +
         (s.withNaN ? " NaN" : "");
}

void matmulCase(Report& report, const MatmulShape& s, uint64_t seed) {
  Rng rng(seed);
  const int64_t lda = (s.transA ? s.M : s.K) + s.padA, rowsA = s.transA ? s.K : s.M;
  const int64_t ldb = (s.transB ? s.K : s.N) + s.padB, rowsB = s.transB ? s.N : s.K;
  const int64_t ldc = s.N + s.padC;
  std::vector<float> A = rng.uniform(s.offset + rowsA * lda, -1, 1), B = rng.uniform(s.offset + rowsB * ldb, -1, 1);
  std::vector<float> C0 = rng.uniform(s.M * ldc, -2, 2);
  // NaN in the pitch padding: an element read beyond a row's extent would show.
  auto poisonPadding = [&](std::vector<float>& X, int64_t rows, int64_t extent, int64_t ld) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = extent; j < ld; ++j) X[static_cast<size_t>(s.offset + r * ld + j)] = NAN;
  };
  poisonPadding(A, rowsA, s.transA ? s.M : s.K, lda);
  poisonPadding(B, rowsB, s.transB ? s.K : s.N, ldb);
  if (s.withNaN && s.M > 1 && s.K > 1) A[static_cast<size_t>(s.offset + (s.transA ? 1 * lda + s.M / 2 : s.M / 2 * lda + 1))] = NAN;
  rlhf::MatmulArgs host;
  host.M = s.M;
  host.N = s.N;
  host.K = s.K;
  host.a = A.data() + s.offset;
  host.lda = lda;
  host.transA = s.transA;
  host.b = B.data() + s.offset;
  host.ldb = ldb;
  host.transB = s.transB;
  host.ldc = ldc;
  host.accumulate = s.accumulate;
  std::vector<float> want = C0;
  host.c = want.data();
  rlhf::matmulReference(host);
  const std::string name = matmulName(s);
  try {
    DeviceBuffer a(A.size() * sizeof(float)), b(B.size() * sizeof(float)), c(C0.size() * sizeof(float));
    a.upload(A.data());
    b.upload(B.data());
    rlhf::MatmulArgs dev = host;
    dev.a = A.empty() ? nullptr : a.as<float>() + s.offset;
    dev.b = B.empty() ? nullptr : b.as<float>() + s.offset;
    dev.c = c.as<float>();
    std::vector<float> got(C0.size()), again(C0.size());
    c.upload(C0.data());
    cu::matmul(dev, gDevice);
    c.download(got.data());
    c.upload(C0.data());
    cu::matmul(dev, gDevice);
    c.download(again.data());
    Comparison cmp;
    for (int64_t i = 0; i < s.M && cmp.ok; ++i)
      for (int64_t j = 0; j < ldc; ++j) {
        const size_t at = static_cast<size_t>(i * ldc + j);
        if (j >= s.N) {  // padding: untouched
          if (!sameBits(got[at], C0[at])) cmp.check(got[at], C0[at], 0, "padding C[" + std::to_string(at) + "]");
          continue;
        }
        double magnitude = s.accumulate ? std::fabs(C0[at]) : 0.0;
        for (int64_t k = 0; k < s.K; ++k) {
          const double x = s.transA ? A[s.offset + k * lda + i] : A[s.offset + i * lda + k];
          const double y = s.transB ? B[s.offset + j * ldb + k] : B[s.offset + k * ldb + j];
          magnitude += std::fabs(x * y);
        }
        const double bound = 4.0 * static_cast<double>(std::max<int64_t>(s.K, 1) + 1) * 0x1p-24 * magnitude + 1e-30;
        cmp.check(got[at], want[at], bound, "C[" + std::to_string(i) + "," + std::to_string(j) + "]");
      }
    recordNn(report, name, cmp, sameFloats(got, again), guardsIntact({&a, &b, &c}));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// A dense layer's forward (MatmulArgs' epilogue: bias, activation, z): on CUDA it must give the
// bits of the plain product followed by biasAct, which the cases above and below hold to their
// references; K = 0 with accumulate still applies the epilogue. A pitched C is a Range error.
void matmulEpilogueCase(Report& report, int64_t M, int64_t N, int64_t K, bool accumulate, rlhf::Activation act,
                        uint64_t seed) {
  Rng rng(seed);
  const std::vector<float> A = rng.uniform(M * K, -1, 1), B = rng.uniform(N * K, -1, 1), C0 = rng.uniform(M * N, -2, 2);
  const std::vector<float> bias = rng.uniform(N, -1, 1);
  const std::string name = "matmul epilogue [" + std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) +
                           "] NT act=" + std::to_string(static_cast<int>(act)) + (accumulate ? " accumulate" : "");
  try {
    DeviceBuffer a(std::max<size_t>(A.size(), 1) * sizeof(float)), b(std::max<size_t>(B.size(), 1) * sizeof(float));
    DeviceBuffer c(C0.size() * sizeof(float)), z(C0.size() * sizeof(float)), bi(bias.size() * sizeof(float));
    if (!A.empty()) a.upload(A.data());
    if (!B.empty()) b.upload(B.data());
    bi.upload(bias.data());
    const rlhf::MatmulArgs plain{M, N, K, a.as<float>(), K, false, b.as<float>(), K, true, c.as<float>(), N, accumulate};
    rlhf::MatmulArgs fused = plain;
    fused.bias = bi.as<float>();
    fused.act = act;
    fused.z = z.as<float>();
    std::vector<float> gotC(C0.size()), gotZ(C0.size()), wantC(C0.size()), wantZ(C0.size());
    c.upload(C0.data());
    cu::matmul(fused, gDevice);
    c.download(gotC.data());
    z.download(gotZ.data());
    c.upload(C0.data());
    z.fillSentinel();
    cu::matmul(plain, gDevice);
    cu::biasAct(rlhf::BiasActArgs{M, N, c.as<float>(), bi.as<float>(), act, c.as<float>(), z.as<float>()}, gDevice);
    c.download(wantC.data());
    z.download(wantZ.data());
    report.record(sameFloats(gotC, wantC) && sameFloats(gotZ, wantZ) && guardsIntact({&c, &z}), name,
                  "the bits of matmul then biasAct");
    rlhf::MatmulArgs pitched = fused;
    pitched.N = N - 1;
    try {
      cu::matmul(pitched, gDevice);
      report.record(false, name + " with ldc > N", "no error");
    } catch (const rlhf::KernelError& e) {
      report.record(e.kind == rlhf::ErrorKind::Range, name + " with ldc > N is a Range error", e.what());
    }
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// --- bias and activation ---

void biasActCase(Report& report, int64_t rows, int64_t cols, rlhf::Activation act, bool withBias, bool inPlace,
                 uint64_t seed) {
  Rng rng(seed);
  const int64_t n = rows * cols;
  std::vector<float> x = rng.uniform(n, -4, 4), bias = withBias ? rng.uniform(cols, -1, 1) : std::vector<float>();
  std::vector<float> gy = rng.uniform(n, -1, 1), gb0 = rng.uniform(cols, -1, 1);
  if (n > 3) x[static_cast<size_t>(n / 2)] = NAN;
  if (n > 5) x[1] = 0.0f;  // relu's kink
  std::vector<float> wantY(static_cast<size_t>(n)), wantZ(static_cast<size_t>(n)), wantGx(static_cast<size_t>(n));
  std::vector<float> wantGb = gb0;
  rlhf::BiasActArgs f;
  f.rows = rows;
  f.cols = cols;
  f.x = x.data();
  f.bias = withBias ? bias.data() : nullptr;
  f.act = act;
  f.y = wantY.data();
  f.z = wantZ.data();
  rlhf::biasActReference(f);
  rlhf::BiasActBackwardArgs bw;
  bw.rows = rows;
  bw.cols = cols;
  bw.gradY = gy.data();
  bw.y = wantY.data();
  bw.z = wantZ.data();
  bw.act = act;
  bw.gradX = wantGx.data();
  bw.gradBias = withBias ? wantGb.data() : nullptr;
  rlhf::biasActBackwardReference(bw);
  const std::string name = std::string("biasAct+backward ") + activationName(act) + " " + shape("rows", rows, "cols", cols) +
                           (withBias ? " bias" : "") + (inPlace ? " in-place" : "");
  try {
    const size_t bytes = static_cast<size_t>(n) * sizeof(float), colBytes = static_cast<size_t>(cols) * sizeof(float);
    DeviceBuffer dx(bytes), dbias(colBytes), dy(bytes), dz(bytes), dgy(bytes), dgx(bytes), dgb(colBytes);
    dx.upload(x.data());
    if (withBias) dbias.upload(bias.data());
    rlhf::BiasActArgs df = f;
    df.x = dx.as<float>();
    df.bias = withBias ? dbias.as<float>() : nullptr;
    df.y = inPlace ? dx.as<float>() : dy.as<float>();
    df.z = dz.as<float>();
    cu::biasAct(df, gDevice);
    std::vector<float> gotY(wantY.size()), gotZ(wantZ.size());
    (inPlace ? dx : dy).download(gotY.data());
    dz.download(gotZ.data());
    rlhf::BiasActBackwardArgs db = bw;
    db.y = df.y;
    db.z = df.z;
    db.gradX = inPlace ? dgy.as<float>() : dgx.as<float>();
    db.gradY = dgy.as<float>();
    db.gradBias = withBias ? dgb.as<float>() : nullptr;
    std::vector<float> gotGx(wantGx.size()), gotGb(wantGb.size()), againGx(wantGx.size()), againGb(wantGb.size());
    auto backward = [&](std::vector<float>& gx, std::vector<float>& gb) {
      dgy.upload(gy.data());
      dgb.upload(gb0.data());
      cu::biasActBackward(db, gDevice);
      (inPlace ? dgy : dgx).download(gx.data());
      dgb.download(gb.data());
    };
    backward(gotGx, gotGb);
    backward(againGx, againGb);
    const double tol = cudaTol("biasAct"), tolBack = cudaTol("biasActBackward");
    Comparison c;
    for (size_t i = 0; i < gotY.size(); ++i) {
      checkTol(c, gotY[i], wantY[i], tol, std::fabs(wantY[i]), "y[" + std::to_string(i) + "]");
      checkTol(c, gotZ[i], wantZ[i], 0, 0, "z[" + std::to_string(i) + "]");
      checkTol(c, gotGx[i], wantGx[i], tolBack, std::fabs(wantGx[i]), "gradX[" + std::to_string(i) + "]");
    }
    if (withBias)
      for (int64_t j = 0; j < cols; ++j) {
        double magnitude = std::fabs(gb0[j]);
        for (int64_t r = 0; r < rows; ++r) magnitude += std::fabs(wantGx[r * cols + j]);
        checkTol(c, gotGb[j], wantGb[j], tolBack, magnitude, "gradBias[" + std::to_string(j) + "]");
      }
    const bool repeat = sameFloats(gotGx, againGx) && sameFloats(gotGb, againGb);
    recordNn(report, name, c, repeat, guardsIntact({&dx, &dbias, &dy, &dz, &dgy, &dgx, &dgb}));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// --- a dense layer's backward ---

// cu::denseBackward against the reference (the op's tolerance), twice for repeatability.
void denseBackwardCase(Report& report, int64_t rows, int64_t in, int64_t out, rlhf::Activation act, bool withGradX,
                       bool accumulateGradX, uint64_t seed) {
  Rng rng(seed);
  const std::vector<float> x = rng.uniform(rows * in, -1, 1), w = rng.uniform(out * in, -1, 1), pre = rng.uniform(rows * out, -3, 3);
  const std::vector<float> gy = rng.uniform(rows * out, -1, 1), gw0 = rng.uniform(out * in, -1, 1), gb0 = rng.uniform(out, -1, 1);
  const std::vector<float> gx0 = rng.uniform(rows * in, -1, 1);
  std::vector<float> y(pre.size()), z(pre.size());
  rlhf::biasActReference(rlhf::BiasActArgs{rows, out, pre.data(), nullptr, act, y.data(), z.data()});
  std::vector<float> wantGz(pre.size()), wantGw = gw0, wantGb = gb0, wantGx = gx0;
  const rlhf::DenseBackwardArgs host{rows,          in,          out,          x.data(),     w.data(),
                                     y.data(),      z.data(),    act,          gy.data(),    wantGz.data(),
                                     wantGw.data(), wantGb.data(), withGradX ? wantGx.data() : nullptr, accumulateGradX};
  rlhf::denseBackwardReference(host);
  const std::string name = std::string("denseBackward ") + activationName(act) + " " + shape("rows", rows, "in", in) +
                           " out=" + std::to_string(out) + (withGradX ? accumulateGradX ? " +=gradX" : " gradX" : "");
  try {
    auto bytes = [](const std::vector<float>& v) { return std::max<size_t>(v.size(), 1) * sizeof(float); };
    DeviceBuffer dx(bytes(x)), dw(bytes(w)), dy(bytes(y)), dz(bytes(z)), dgy(bytes(gy)), dgz(bytes(gy)), dgw(bytes(gw0)),
        dgb(bytes(gb0)), dgx(bytes(gx0));
    dx.upload(x.data());
    dw.upload(w.data());
    dy.upload(y.data());
    dz.upload(z.data());
    const rlhf::DenseBackwardArgs dev{rows,            in,              out,             dx.as<float>(),
                                      dw.as<float>(),  dy.as<float>(),  dz.as<float>(),  act,
                                      dgy.as<float>(), dgz.as<float>(), dgw.as<float>(), dgb.as<float>(),
                                      withGradX ? dgx.as<float>() : nullptr, accumulateGradX};
    struct Got {
      std::vector<float> gz, gw, gb, gx;
    };
    auto run = [&]() {
      dgy.upload(gy.data());
      dgw.upload(gw0.data());
      dgb.upload(gb0.data());
      dgx.upload(gx0.data());
      cu::denseBackward(dev, gDevice);
      Got g{std::vector<float>(wantGz.size()), std::vector<float>(wantGw.size()), std::vector<float>(wantGb.size()),
            std::vector<float>(wantGx.size())};
      dgz.download(g.gz.data());
      dgw.download(g.gw.data());
      dgb.download(g.gb.data());
      dgx.download(g.gx.data());
      return g;
    };
    const Got got = run(), again = run();
    const double tol = cudaTol("denseBackward");
    Comparison c;
    const struct {
      const char* what;
      const std::vector<float>&got, &want;
    } outs[] = {{"gradZ", got.gz, wantGz}, {"gradW", got.gw, wantGw}, {"gradBias", got.gb, wantGb}, {"gradX", got.gx, wantGx}};
    for (const auto& o : outs)
      for (size_t i = 0; i < o.want.size(); ++i)
        checkTol(c, o.got[i], o.want[i], tol, unitScale(o.want[i]), std::string(o.what) + "[" + std::to_string(i) + "]");
    const bool repeat = sameFloats(got.gz, again.gz) && sameFloats(got.gw, again.gw) && sameFloats(got.gb, again.gb) &&
                        sameFloats(got.gx, again.gx);
    recordNn(report, name, c, repeat, guardsIntact({&dx, &dw, &dy, &dz, &dgy, &dgz, &dgw, &dgb, &dgx}));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// --- embedding ---

// Ids from a vocabulary of `vocab` with a run of one id, so that rows repeat.
void embeddingCase(Report& report, int64_t n, int64_t dim, int64_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& id : ids) id = static_cast<int32_t>(rng.unit() * static_cast<double>(vocab));
  for (int64_t i = n / 3; i < n / 3 + n / 4; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>(vocab - 1);
  std::vector<float> table = rng.uniform(vocab * dim, -1, 1), gradOut = rng.uniform(n * dim, -1, 1);
  std::vector<float> gt0 = rng.uniform(vocab * dim, -1, 1);
  std::vector<float> wantOut(static_cast<size_t>(n * dim)), wantGt = gt0;
  rlhf::EmbeddingArgs f;
  f.n = n;
  f.dim = dim;
  f.vocab = vocab;
  f.ids = ids.data();
  f.table = table.data();
  f.out = wantOut.data();
  rlhf::embeddingReference(f);
  rlhf::EmbeddingBackwardArgs bw;
  bw.n = n;
  bw.dim = dim;
  bw.vocab = vocab;
  bw.ids = ids.data();
  bw.gradOut = gradOut.data();
  bw.gradTable = wantGt.data();
  rlhf::embeddingBackwardReference(bw);
  const std::string name = "embedding+backward " + shape("n", n, "dim", dim) + " vocab=" + std::to_string(vocab);
  try {
    Uploads up;
    DeviceBuffer out(wantOut.size() * sizeof(float)), gt(gt0.size() * sizeof(float));
    rlhf::EmbeddingArgs df = f;
    df.ids = up.of(ids);
    df.table = up.of(table);
    df.out = out.as<float>();
    cu::embedding(df, gDevice);
    std::vector<float> gotOut(wantOut.size()), gotGt(gt0.size()), againGt(gt0.size());
    out.download(gotOut.data());
    rlhf::EmbeddingBackwardArgs db = bw;
    db.ids = df.ids;
    db.gradOut = up.of(gradOut);
    db.gradTable = gt.as<float>();
    for (std::vector<float>* dst : {&gotGt, &againGt}) {
      gt.upload(gt0.data());
      cu::embeddingBackward(db, gDevice);
      gt.download(dst->data());
    }
    const double tol = cudaTol("embedding"), tolBack = cudaTol("embeddingBackward");
    Comparison c;
    for (size_t i = 0; i < gotOut.size(); ++i)
      checkTol(c, gotOut[i], wantOut[i], tol, std::fabs(wantOut[i]), "out[" + std::to_string(i) + "]");
    for (size_t i = 0; i < gotGt.size(); ++i)
      checkTol(c, gotGt[i], wantGt[i], tolBack, std::fabs(wantGt[i]), "gradTable[" + std::to_string(i) + "]");
    recordNn(report, name, c, sameFloats(gotGt, againGt), guardsIntact({&out, &gt}));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// --- layer norm ---

// Rows of x in [-2, 3) (row 0 constant: variance 0), gradients in [-1, 1).
void layerNormCase(Report& report, int64_t rows, int64_t cols, bool affine, bool withParamGrads, uint64_t seed) {
  Rng rng(seed);
  const int64_t n = rows * cols;
  std::vector<float> x = rng.uniform(n, -2, 3), gy = rng.uniform(n, -1, 1);
  if (rows > 1)
    for (int64_t j = 0; j < cols; ++j) x[static_cast<size_t>(j)] = 0.75f;
  std::vector<float> gamma = affine ? rng.uniform(cols, 0.5f, 1.5f) : std::vector<float>();
  std::vector<float> beta = affine ? rng.uniform(cols, -0.5f, 0.5f) : std::vector<float>();
  std::vector<float> gg0 = rng.uniform(cols, -1, 1), gb0 = rng.uniform(cols, -1, 1);
  std::vector<float> wantY(static_cast<size_t>(n)), wantMean(static_cast<size_t>(rows)), wantRstd(static_cast<size_t>(rows));
  std::vector<float> wantGx(static_cast<size_t>(n)), wantGg = gg0, wantGb = gb0;
  rlhf::LayerNormArgs f;
  f.rows = rows;
  f.cols = cols;
  f.x = x.data();
  f.gamma = affine ? gamma.data() : nullptr;
  f.beta = affine ? beta.data() : nullptr;
  f.eps = 1e-5f;
  f.y = wantY.data();
  f.mean = wantMean.data();
  f.rstd = wantRstd.data();
  rlhf::layerNormReference(f);
  rlhf::LayerNormBackwardArgs bw;
  bw.rows = rows;
  bw.cols = cols;
  bw.x = x.data();
  bw.gamma = f.gamma;
  bw.mean = wantMean.data();
  bw.rstd = wantRstd.data();
  bw.gradY = gy.data();
  bw.gradX = wantGx.data();
  bw.gradGamma = withParamGrads ? wantGg.data() : nullptr;
  bw.gradBeta = withParamGrads ? wantGb.data() : nullptr;
  rlhf::layerNormBackwardReference(bw);
  const std::string name = "layerNorm+backward " + shape("rows", rows, "cols", cols) + (affine ? " affine" : "") +
                           (withParamGrads ? " param-grads" : "");
  try {
    Uploads up;
    const size_t bytes = static_cast<size_t>(n) * sizeof(float), rowBytes = static_cast<size_t>(rows) * sizeof(float),
                 colBytes = static_cast<size_t>(cols) * sizeof(float);
    DeviceBuffer y(bytes), mean(rowBytes), rstd(rowBytes), gx(bytes), gg(colBytes), gb(colBytes);
    rlhf::LayerNormArgs df = f;
    df.x = up.of(x);
    df.gamma = up.of(gamma);
    df.beta = up.of(beta);
    df.y = y.as<float>();
    df.mean = mean.as<float>();
    df.rstd = rstd.as<float>();
    cu::layerNorm(df, gDevice);
    std::vector<float> gotY(wantY.size()), gotMean(wantMean.size()), gotRstd(wantRstd.size());
    y.download(gotY.data());
    mean.download(gotMean.data());
    rstd.download(gotRstd.data());
    // The backward from the reference's statistics, so that it is compared on the same inputs.
    rlhf::LayerNormBackwardArgs db = bw;
    db.x = df.x;
    db.gamma = df.gamma;
    db.mean = up.of(wantMean);
    db.rstd = up.of(wantRstd);
    db.gradY = up.of(gy);
    db.gradX = gx.as<float>();
    db.gradGamma = withParamGrads ? gg.as<float>() : nullptr;
    db.gradBeta = withParamGrads ? gb.as<float>() : nullptr;
    std::vector<float> gotGx(wantGx.size()), gotGg(cols), gotGb(cols), againGx(wantGx.size()), againGg(cols), againGb(cols);
    auto backward = [&](std::vector<float>& x_, std::vector<float>& g_, std::vector<float>& b_) {
      gg.upload(gg0.data());
      gb.upload(gb0.data());
      cu::layerNormBackward(db, gDevice);
      gx.download(x_.data());
      gg.download(g_.data());
      gb.download(b_.data());
    };
    backward(gotGx, gotGg, gotGb);
    backward(againGx, againGg, againGb);
    // Inputs and gradients are of order 1: tolerances relative to max(1, |value|).
    const double tol = cudaTol("layerNorm"), tolBack = cudaTol("layerNormBackward");
    Comparison c;
    for (int64_t r = 0; r < rows; ++r) {
      checkTol(c, gotMean[r], wantMean[r], tol, unitScale(wantMean[r]), "mean[" + std::to_string(r) + "]");
      checkTol(c, gotRstd[r], wantRstd[r], tol, std::fabs(wantRstd[r]), "rstd[" + std::to_string(r) + "]");
    }
    for (size_t i = 0; i < gotY.size(); ++i) {
      checkTol(c, gotY[i], wantY[i], tol, unitScale(wantY[i]), "y[" + std::to_string(i) + "]");
      checkTol(c, gotGx[i], wantGx[i], tolBack, unitScale(wantGx[i]), "gradX[" + std::to_string(i) + "]");
    }
    if (withParamGrads)
      for (int64_t j = 0; j < cols; ++j) {
        checkTol(c, gotGg[j], wantGg[j], tolBack, unitScale(wantGg[j]), "gradGamma[" + std::to_string(j) + "]");
        checkTol(c, gotGb[j], wantGb[j], tolBack, unitScale(wantGb[j]), "gradBeta[" + std::to_string(j) + "]");
      }
    const bool repeat = sameFloats(gotGx, againGx) && sameFloats(gotGg, againGg) && sameFloats(gotGb, againGb);
    recordNn(report, name, c, repeat, guardsIntact({&y, &mean, &rstd, &gx, &gg, &gb}));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// --- mean pooling ---

// With a mask: row 1 has no valid token (pools to 0), masked positions hold NaN.
void meanPoolCase(Report& report, int64_t B, int64_t T, int64_t D, bool withMask, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x = rng.uniform(B * T * D, -2, 2), gOut = rng.uniform(B * D, -1, 1);
  std::vector<uint8_t> mask;
  if (withMask) {
    mask = responseMask(rng, B, T, 0.2);
    if (B > 1) std::fill(mask.begin() + T, mask.begin() + 2 * T, uint8_t{0});
    for (int64_t bt = 0; bt < B * T; ++bt)
      if (mask[bt] == 0 && D > 0) x[static_cast<size_t>(bt * D)] = NAN;
  }
  std::vector<float> wantOut(static_cast<size_t>(B * D)), wantGx(static_cast<size_t>(B * T * D));
  rlhf::MeanPoolArgs f;
  f.B = B;
  f.T = T;
  f.D = D;
  f.x = x.data();
  f.mask = withMask ? mask.data() : nullptr;
  f.out = wantOut.data();
  rlhf::meanPoolReference(f);
  rlhf::MeanPoolBackwardArgs bw;
  bw.B = B;
  bw.T = T;
  bw.D = D;
  bw.gradOut = gOut.data();
  bw.mask = f.mask;
  bw.gradX = wantGx.data();
  rlhf::meanPoolBackwardReference(bw);
  const std::string name = "meanPool+backward [B=" + std::to_string(B) + ",T=" + std::to_string(T) + ",D=" +
                           std::to_string(D) + "]" + (withMask ? " mask" : "");
  try {
    Uploads up;
    DeviceBuffer out(wantOut.size() * sizeof(float)), gx(wantGx.size() * sizeof(float));
    rlhf::MeanPoolArgs df = f;
    df.x = up.of(x);
    df.mask = up.of(mask);
    df.out = out.as<float>();
    cu::meanPool(df, gDevice);
    rlhf::MeanPoolBackwardArgs db = bw;
    db.gradOut = up.of(gOut);
    db.mask = df.mask;
    db.gradX = gx.as<float>();
    cu::meanPoolBackward(db, gDevice);
    std::vector<float> gotOut(wantOut.size()), gotGx(wantGx.size());
    out.download(gotOut.data());
    gx.download(gotGx.data());
    const double tol = cudaTol("meanPool"), tolBack = cudaTol("meanPoolBackward");
    Comparison c;
    for (size_t i = 0; i < gotOut.size(); ++i)
      checkTol(c, gotOut[i], wantOut[i], tol, std::fabs(wantOut[i]), "out[" + std::to_string(i) + "]");
    for (size_t i = 0; i < gotGx.size(); ++i)
      checkTol(c, gotGx[i], wantGx[i], tolBack, std::fabs(wantGx[i]), "gradX[" + std::to_string(i) + "]");
    recordNn(report, name, c, true, guardsIntact({&out, &gx}));
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// --- the optimizer ---

// Host tensors of the given sizes and their device copies, as TensorLists of either side.
struct TensorSet {
  std::vector<int64_t> sizes;
  std::vector<std::vector<float>> params, grads, m, v;
  std::vector<std::unique_ptr<DeviceBuffer>> buffers;  // params, grads, m, v per tensor
  std::vector<float*> hp, hg, hm, hv, dp, dg, dm, dv;

  TensorSet(Rng& rng, const std::vector<int64_t>& s) : sizes(s) {
    for (int64_t n : sizes) {
      params.push_back(rng.uniform(n, -1, 1));
      grads.push_back(rng.uniform(n, -0.1f, 0.1f));
      m.push_back(rng.uniform(n, -0.01f, 0.01f));
      v.push_back(rng.uniform(n, 0, 1e-4f));
    }
    for (size_t t = 0; t < sizes.size(); ++t)
      for (std::vector<float>* host : {&params[t], &grads[t], &m[t], &v[t]}) {
        buffers.push_back(std::make_unique<DeviceBuffer>(host->size() * sizeof(float)));
        buffers.back()->upload(host->data());
      }
    for (size_t t = 0; t < sizes.size(); ++t) {
      hp.push_back(params[t].data());
      hg.push_back(grads[t].data());
      hm.push_back(m[t].data());
      hv.push_back(v[t].data());
      dp.push_back(buffers[4 * t]->as<float>());
      dg.push_back(buffers[4 * t + 1]->as<float>());
      dm.push_back(buffers[4 * t + 2]->as<float>());
      dv.push_back(buffers[4 * t + 3]->as<float>());
    }
  }
  rlhf::TensorList hostList() {
    return {static_cast<int64_t>(sizes.size()), sizes.data(), hp.data(), hg.data(), hm.data(), hv.data()};
  }
  rlhf::TensorList deviceList() {
    return {static_cast<int64_t>(sizes.size()), sizes.data(), dp.data(), dg.data(), dm.data(), dv.data()};
  }
  std::vector<float> download(size_t t, int which) const {  // which: 0 params, 1 grads, 2 m, 3 v
    std::vector<float> out(static_cast<size_t>(sizes[t]));
    buffers[4 * t + which]->download(out.data());
    return out;
  }
  bool guardsIntact() const {
    for (const auto& b : buffers)
      if (!b->guardIntact()) return false;
    return true;
  }
};

std::string sizesName(const std::vector<int64_t>& sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? "," : "") + std::to_string(sizes[i]);
  return s + "]";
}

void adamwCase(Report& report, const std::vector<int64_t>& sizes, int64_t step, double weightDecay, uint64_t seed) {
  Rng rng(seed);
  TensorSet set(rng, sizes);
  rlhf::AdamwArgs host;
  host.tensors = set.hostList();
  host.step = step;
  host.lr = 3e-3;
  host.weightDecay = weightDecay;
  const std::string name = "adamw sizes=" + sizesName(sizes) + " step=" + std::to_string(step) + " wd=" + fmt("%g", weightDecay);
  try {
    rlhf::AdamwArgs dev = host;
    dev.tensors = set.deviceList();
    cu::adamw(dev, gDevice);
    rlhf::adamwReference(host);  // updates the host copies in place
    const double tol = cudaTol("adamw");
    Comparison c;
    const char* names[] = {"param", "grad", "m", "v"};
    for (size_t t = 0; t < sizes.size(); ++t)
      for (int which : {0, 2, 3}) {
        const std::vector<float> got = set.download(t, which);
        const std::vector<float>& want = which == 0 ? set.params[t] : which == 2 ? set.m[t] : set.v[t];
        for (size_t i = 0; i < got.size(); ++i)
          checkTol(c, got[i], want[i], tol, std::fabs(want[i]),
                   std::string(names[which]) + "[" + std::to_string(t) + "][" + std::to_string(i) + "]");
      }
    recordNn(report, name, c, true, set.guardsIntact());
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// sumSquares twice (same bits), then scale by `factor` (a float multiply: the same bits).
void sumSquaresScaleCase(Report& report, const std::vector<int64_t>& sizes, float factor, uint64_t seed) {
  Rng rng(seed);
  TensorSet set(rng, sizes);
  const std::string name = "sumSquares+scale sizes=" + sizesName(sizes);
  try {
    rlhf::SumSquaresArgs hs;
    hs.tensors = set.hostList();
    rlhf::SumSquaresArgs ds;
    ds.tensors = set.deviceList();
    const double want = rlhf::sumSquaresReference(hs);
    const double got = cu::sumSquares(ds, gDevice), again = cu::sumSquares(ds, gDevice);
    rlhf::ScaleArgs sc;
    sc.tensors = set.deviceList();
    sc.factor = factor;
    cu::scale(sc, gDevice);
    sc.tensors = set.hostList();
    rlhf::scaleReference(sc);
    const double tolScale = cudaTol("scaleGrads");
    Comparison c;
    c.check(got, want, relBound(cudaTol("sumSquares"), want), "sum of squares");
    for (size_t t = 0; t < sizes.size(); ++t) {
      const std::vector<float> scaled = set.download(t, 1);
      for (size_t i = 0; i < scaled.size(); ++i)
        checkTol(c, scaled[i], set.grads[t][i], tolScale, std::fabs(set.grads[t][i]), "scaled grads[" + std::to_string(i) + "]");
    }
    recordNn(report, name, c, std::memcmp(&got, &again, sizeof(double)) == 0, set.guardsIntact());
  } catch (const rlhf::KernelError& e) {
    report.record(false, name, e.what());
  }
}

// Empty shapes launch nothing that reads a pointer; out-of-contract arguments throw.
void nnEdgeCases(Report& report) {
  try {
    rlhf::MatmulArgs mm;
    mm.M = 0;
    mm.N = 5;
    mm.K = 3;
    cu::matmul(mm, gDevice);
    rlhf::BiasActArgs ba;
    ba.rows = 3;
    cu::biasAct(ba, gDevice);
    rlhf::EmbeddingBackwardArgs eb;
    eb.dim = 4;
    cu::embeddingBackward(eb, gDevice);
    rlhf::LayerNormBackwardArgs lb;
    lb.rows = 2;
    cu::layerNormBackward(lb, gDevice);
    rlhf::MeanPoolArgs mp;
    mp.T = 3;
    cu::meanPool(mp, gDevice);
    rlhf::AdamwArgs ad;
    cu::adamw(ad, gDevice);
    rlhf::SumSquaresArgs ss;
    const double zero = cu::sumSquares(ss, gDevice);
    cu::synchronize(gDevice);
    report.record(zero == 0, "nn family: empty inputs", "no launch, sumSquares 0");
  } catch (const rlhf::KernelError& e) {
    report.record(false, "nn family: empty inputs", e.what());
  }
  auto expectThrow = [&](const char* what, const std::function<void()>& fn, rlhf::ErrorKind kind) {
    try {
      fn();
      report.record(false, what, "did not throw");
    } catch (const rlhf::KernelError& e) {
      report.record(e.kind == kind, what, e.what());
    }
  };
  expectThrow("matmul: negative K", [] {
    rlhf::MatmulArgs mm;
    mm.M = mm.N = 2;
    mm.K = -1;
    cu::matmul(mm, gDevice);
  }, rlhf::ErrorKind::Range);
  expectThrow("matmul: null a", [] {
    rlhf::MatmulArgs mm;
    mm.M = mm.N = mm.K = 2;
    mm.lda = mm.ldb = mm.ldc = 2;
    mm.c = reinterpret_cast<float*>(16);
    mm.b = mm.c;
    cu::matmul(mm, gDevice);
  }, rlhf::ErrorKind::Internal);
  expectThrow("adamw: negative tensor size", [] {
    const int64_t size = -3;
    float* p = nullptr;
    rlhf::AdamwArgs ad;
    ad.tensors = {1, &size, &p, &p, &p, &p};
    cu::adamw(ad, gDevice);
  }, rlhf::ErrorKind::Range);
}

void nnCases(Report& report) {
  uint64_t seed = 13000;
  nnEdgeCases(report);
  // matmul: empty and degenerate shapes, primes, every transpose with odd pitches and
  // unaligned starts (the element-by-element paths), tile edges, accumulate, NaN.
  std::vector<MatmulShape> shapes = {
      {0, 5, 3, false, false},        {5, 0, 3, false, false},         {4, 5, 0, false, false},
      {4, 5, 0, true, true, 0, 0, 2, 0, true}, {1, 1, 1, false, false}, {1, 1, 1, true, true, 0, 0, 0, 0, true},
      {7, 13, 11, false, false},      {1, 64, 17, false, true},        {64, 1, 17, true, false},
  };
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      shapes.push_back({64, 64, 64, ta, tb});
      shapes.push_back({65, 63, 67, ta, tb, 3, 1, 5, 1});
      shapes.push_back({128, 64, 64, ta, tb, 0, 0, 0, 0, true});
      shapes.push_back({37, 131, 29, ta, tb, 4, 8, 4, 0, false, true});
      shapes.push_back({130, 257, 9, ta, tb, 1, 0, 2, 0, true});
      // Extents of 3 mod 4 in pitches of multiples of 4: the last float4 group of a row would
      // take one padding element (NaN).
      shapes.push_back({35, 71, 31, ta, tb, 1, 1, 1});
    }
  if (!gQuick) {
    shapes.push_back({1600, 1500, 40, false, false});  // 128-tiles on GPUs of up to 156 SMs
    shapes.push_back({1537, 1601, 35, true, true, 1, 3, 1, 1, true});
    shapes.push_back({300, 200, 3000, false, true});
  }
  for (const MatmulShape& s : shapes) matmulCase(report, s, ++seed);

  using A = rlhf::Activation;
  for (A act : {A::Identity, A::Tanh, A::Relu, A::Gelu, A::GeluTanh}) {
    matmulEpilogueCase(report, 128, 64, 64, false, act, ++seed);
    matmulEpilogueCase(report, 37, 3, 19, true, act, ++seed);
  }
  matmulEpilogueCase(report, 9, 20, 0, true, A::Tanh, ++seed);
  for (A act : {A::Identity, A::Tanh, A::Relu, A::Gelu, A::GeluTanh}) {
    biasActCase(report, 1, 1, act, true, false, ++seed);
    biasActCase(report, 37, 61, act, true, false, ++seed);
    biasActCase(report, 300, 129, act, true, true, ++seed);
    biasActCase(report, 5, 33, act, false, act == A::Relu, ++seed);
  }
  biasActCase(report, 1000, 3, A::Gelu, true, false, ++seed);  // several row chunks
  for (A act : {A::Identity, A::Tanh, A::Gelu}) {
    denseBackwardCase(report, 128, 64, 64, act, true, false, ++seed);
    denseBackwardCase(report, 128, 4, 2, act, true, true, ++seed);
  }
  denseBackwardCase(report, 37, 19, 5, A::Relu, false, false, ++seed);

  embeddingCase(report, 1, 1, 1, ++seed);
  embeddingCase(report, 100, 7, 5, ++seed);
  embeddingCase(report, 1500, 33, 200, ++seed);  // several id stages, ids of every class
  embeddingCase(report, 300, 64, 3000, ++seed);

  for (bool affine : {false, true}) {
    layerNormCase(report, 1, 1, affine, true, ++seed);
    layerNormCase(report, 3, 7, affine, affine, ++seed);
    layerNormCase(report, 37, 100, affine, true, ++seed);
    layerNormCase(report, 300, 33, affine, true, ++seed);
  }
  if (!gQuick) layerNormCase(report, 4096, 768, true, true, ++seed);

  for (bool withMask : {false, true}) {
    meanPoolCase(report, 1, 1, 1, withMask, ++seed);
    meanPoolCase(report, 5, 17, 9, withMask, ++seed);
    meanPoolCase(report, 3, 0, 4, withMask, ++seed);
    meanPoolCase(report, 9, 100, 70, withMask, ++seed);
  }

  const std::vector<int64_t> list = {1, 0, 8191, 8192, 8193, 3, 20000};
  adamwCase(report, {5}, 1, 0.01, ++seed);
  adamwCase(report, list, 1, 0.01, ++seed);
  adamwCase(report, list, 10, 0.0, ++seed);
  sumSquaresScaleCase(report, {5}, 0.5f, ++seed);
  sumSquaresScaleCase(report, list, 0.3f, ++seed);
  if (!gQuick) {
    adamwCase(report, {10000000, 768, 3}, 3, 0.01, ++seed);
    sumSquaresScaleCase(report, {10000000, 768, 3}, 0.7f, ++seed);
  }
}

// --- launch limits ----------------------------------------------------------------------------
// Each of these shapes is past what one launch covers; the entry function must say so with a
// Range error naming the size, before it reads a pointer (every pointer here is null) and
// before anything reaches the device.

void expectLimit(Report& report, const std::string& name, const std::function<void()>& call) {
  try {
    call();
    report.record(false, name, "no error");
  } catch (const rlhf::KernelError& e) {
    const bool ok = e.kind == rlhf::ErrorKind::Range && std::strstr(e.what(), "must be at most") != nullptr;
    report.record(ok, name + " is a Range error", e.what());
  }
}

void limitCases(Report& report) {
  constexpr int64_t k2to31 = int64_t{1} << 31, k2to34 = int64_t{1} << 34, k2to44 = int64_t{1} << 44;
  expectLimit(report, "logprobs [N=2^34,V=10] (warp rows)", [] {
    rlhf::LogprobsArgs a;
    a.N = k2to34;
    a.V = 10;
    cu::logprobs(a, gDevice);
  });
  expectLimit(report, "logprobs [N=2^31,V=5000] (block rows)", [] {
    rlhf::LogprobsArgs a;
    a.N = k2to31;
    a.V = 5000;
    cu::logprobs(a, gDevice);
  });
  expectLimit(report, "logprobsBackward [N=2^31,V=2048]", [] {
    rlhf::LogprobsBackwardArgs a;
    a.N = k2to31;
    a.V = 2048;
    cu::logprobsBackward(a, gDevice);
  });
  expectLimit(report, "firstInvalidLabel [n=2^44]", [] { cu::firstInvalidLabel(nullptr, k2to44, 10, -100, gDevice); });
  expectLimit(report, "shapeRewards [B=2^34,T=1]", [] {
    rlhf::ShapeRewardsArgs a;
    a.B = k2to34;
    a.T = 1;
    cu::shapeRewards(a, gDevice);
  });
  expectLimit(report, "policyLoss [B=2^34,T=1]", [] {
    rlhf::PolicyLossArgs a;
    a.B = k2to34;
    a.T = 1;
    cu::policyLoss(a, gDevice);
  });
  expectLimit(report, "valueLoss [B=1,T=2^44]", [] {
    rlhf::ValueLossArgs a;
    a.B = 1;
    a.T = k2to44;
    cu::valueLoss(a, gDevice);
  });
  expectLimit(report, "actorLoss [B=2^31,T=1,V=2048] (block rows)", [] {
    rlhf::ActorLossArgs a;
    a.B = k2to31;
    a.T = 1;
    a.V = 2048;
    cu::actorLoss(a, gDevice);
  });
  expectLimit(report, "maskedMoments [n=2^44]", [] {
    rlhf::MaskedMomentsArgs a;
    a.n = k2to44;
    cu::maskedMoments(a, gDevice);
  });
  expectLimit(report, "firstNonFinite [n=2^44]", [] { cu::firstNonFinite(nullptr, k2to44, gDevice); });
  expectLimit(report, "pairwiseLoss [N=2^44]", [] {
    rlhf::PairwiseLossArgs a;
    a.N = k2to44;
    cu::pairwiseLoss(a, gDevice);
  });
  expectLimit(report, "dpoLoss [N=2^44]", [] {
    rlhf::DpoLossArgs a;
    a.N = k2to44;
    cu::dpoLoss(a, gDevice);
  });
  expectLimit(report, "groupAdvantages [N=2^44,groupSize=4] scale batch", [] {
    rlhf::GroupAdvantagesArgs a;
    a.N = k2to44;
    a.groupSize = 4;
    a.estimator = rlhf::GroupEstimator::Grpo;
    a.scale = rlhf::GroupScale::Batch;
    cu::groupAdvantages(a, gDevice);
  });
}

// --- past 2^31 and 2^32 rows (--big) ----------------------------------------------------------
// Device buffers of tens of GiB, filled and checked through a host chunk, so that the host
// needs no copy of them.

constexpr size_t kBigChunk = size_t{64} << 20;  // floats per host chunk (256 MiB)

class BigBuffer {
 public:
  explicit BigBuffer(int64_t count) : count_(count), ptr_(cu::alloc(static_cast<size_t>(count) * sizeof(float), gDevice)) {}
  ~BigBuffer() {
    try {
      cu::free(ptr_, gDevice);
    } catch (const rlhf::KernelError& e) {
      std::printf("FAIL free: %s\n", e.what());
    }
  }
  BigBuffer(const BigBuffer&) = delete;
  BigBuffer& operator=(const BigBuffer&) = delete;
  float* ptr() const { return static_cast<float*>(ptr_); }

  // Element i = value(i).
  void fill(const std::function<float(int64_t)>& value) {
    std::vector<float> host(kBigChunk);
    for (int64_t i0 = 0; i0 < count_; i0 += static_cast<int64_t>(kBigChunk)) {
      const int64_t n = std::min<int64_t>(static_cast<int64_t>(kBigChunk), count_ - i0);
      for (int64_t k = 0; k < n; ++k) host[static_cast<size_t>(k)] = value(i0 + k);
      cu::copyToDevice(ptr() + i0, host.data(), static_cast<size_t>(n) * sizeof(float), gDevice);
    }
  }

  // The first index whose bits differ from want(i), or -1; `got` gets its value.
  int64_t firstMismatch(const std::function<float(int64_t)>& want, float& got) const {
    std::vector<float> host(kBigChunk);
    for (int64_t i0 = 0; i0 < count_; i0 += static_cast<int64_t>(kBigChunk)) {
      const int64_t n = std::min<int64_t>(static_cast<int64_t>(kBigChunk), count_ - i0);
      cu::copyToHost(host.data(), ptr() + i0, static_cast<size_t>(n) * sizeof(float), gDevice);
      for (int64_t k = 0; k < n; ++k) {
        const float w = want(i0 + k);
        if (std::memcmp(&host[static_cast<size_t>(k)], &w, sizeof(float)) != 0) {
          got = host[static_cast<size_t>(k)];
          return i0 + k;
        }
      }
    }
    return -1;
  }

 private:
  int64_t count_;
  void* ptr_;
};

void recordMismatch(Report& report, const std::string& name, const BigBuffer& out,
                    const std::function<float(int64_t)>& want) {
  float got = 0;
  const int64_t at = out.firstMismatch(want, got);
  report.record(at < 0, name,
                at < 0 ? "every element as the reference"
                       : "element " + std::to_string(at) + " is " + fmt("%.9g", got) + ", reference " + fmt("%.9g", want(at)));
}

// A big case that cannot allocate its buffers is skipped, not failed.
void bigCase(Report& report, const std::string& name, const std::function<void()>& body) {
  try {
    body();
  } catch (const rlhf::KernelError& e) {
    if (e.kind == rlhf::ErrorKind::OutOfMemory) {
      std::printf("skip %s: %s\n", name.c_str(), e.what());
      return;
    }
    report.record(false, name, e.what());
  }
}

void bigCases(Report& report) {
  // Returns of [2^32 + 1, 1] under both algorithms: G = r exactly. The scan's lane groups are
  // the rows here, and their count once went to gridDim.x through a 32-bit cast: 2^32 + 1
  // wrapped to one block, which computed row 0 and left every other row unwritten.
  const int64_t rows = (int64_t{1} << 32) + 1;
  bigCase(report, "discountedReturns [B=2^32+1,T=1]", [&] {
    auto reward = [](int64_t i) { return static_cast<float>(i % 1001) * 0.25f - 100.0f; };
    BigBuffer rewards(rows), returns(rows);
    rewards.fill(reward);
    for (const char* algorithm : {"sequential", "scan"}) {
      setAlgorithm(algorithm);
      returns.fill([](int64_t) { return std::numeric_limits<float>::quiet_NaN(); });
      rlhf::DiscountedReturnsArgs a;
      a.B = rows;
      a.T = 1;
      a.rewards = rewards.ptr();
      a.gamma = 0.99f;
      a.returns = returns.ptr();
      cu::discountedReturns(a, gDevice);
      cu::synchronize(gDevice);
      recordMismatch(report, std::string("discountedReturns [B=2^32+1,T=1] ") + algorithm, returns, reward);
    }
    setAlgorithm("auto");
  });

  // Sequence log-probs of [2^34 + 8, 0]: a warp per row is 2^31 + 1 blocks of 8 warps, one
  // more than a grid holds; the launch once failed. Every row's sum is 0.
  const int64_t sequences = (int64_t{1} << 34) + 8;
  bigCase(report, "sequenceLogprobs [B=2^34+8,T=0]", [&] {
    BigBuffer out(sequences);
    out.fill([](int64_t) { return std::numeric_limits<float>::quiet_NaN(); });
    rlhf::SequenceLogprobsArgs a;
    a.B = sequences;
    a.T = 0;
    a.average = true;
    a.out = out.ptr();
    cu::sequenceLogprobs(a, gDevice);
    cu::synchronize(gDevice);
    recordMismatch(report, "sequenceLogprobs [B=2^34+8,T=0]", out, [](int64_t) { return 0.0f; });
  });
}

}  // namespace

int main(int argc, char** argv) {
  // --only FAMILY (runtime, advantages, statistics, policy, preference, nn, limits, big): that
  // family's cases alone.
  std::string only;
  for (int i = 1; i < argc; ++i) {
    gQuick = gQuick || std::strcmp(argv[i], "--quick") == 0;
    gBig = gBig || std::strcmp(argv[i], "--big") == 0;
    if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
  }
  auto selected = [&](const char* family) { return only.empty() || only == family; };
  if (cu::deviceCount() == 0) {
    std::printf("cuda_conformance: no CUDA device, skipped\n");
    return 77;
  }
  Report report;
  try {
    const cu::DeviceInfo info = cu::deviceInfo(gDevice);
    std::printf("device 0: %s (sm_%d%d), runtime %s, driver %s, built for %s%s\n", info.name.c_str(),
                info.major, info.minor, cu::runtimeVersion().c_str(), cu::driverVersion().c_str(),
                cu::architectures().c_str(), gQuick ? ", quick" : "");
    if (selected("runtime")) runtimeCases(report);
    if (selected("advantages")) advantageCases(report);
    if (selected("statistics")) statisticsCases(report);
    if (selected("policy")) policyCases(report);
    if (selected("preference")) preferenceCases(report);
    if (selected("nn")) nnCases(report);
    if (selected("limits")) limitCases(report);
    if ((gBig && only.empty()) || only == "big") bigCases(report);
    const cu::MemoryStats end = cu::memoryStats(gDevice);
    report.record(end.liveAllocations == 0 && end.liveBytes == 0, "memoryStats back to zero",
                  std::to_string(end.liveAllocations) + " live allocations, " + std::to_string(end.liveBytes) +
                      " bytes, peak " + std::to_string(end.peakBytes));
  } catch (const rlhf::KernelError& e) {
    report.record(false, "unexpected error", e.what());
  }
  std::printf("%d passed, %d failed\n", report.passed, report.failed);
  return report.failed == 0 ? 0 : 1;
}
