// CUDA conformance: every op of the CUDA backend against the scalar reference, through the
// rlhf::cuda API alone (plain C++, no CUDA headers). Each advantage op runs under both of its
// algorithms (RLHF_CUDA_ADVANTAGES=sequential and =scan) on every shape, so both are checked
// on the shapes that pick either one: one lane, short and long lanes (T = 131072), tails that
// are not multiples of 32, thousands of lanes, and empty inputs. Output buffers are filled with
// a sentinel and followed by guard bytes that must stay untouched.
//
// Usage: rlhf_cuda_tests [--quick]   (--quick leaves out the shapes of millions of elements,
// for compute-sanitizer runs). Exits 77 (skipped) where there is no CUDA device.
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

namespace {

namespace cu = rlhf::cuda;

int gDevice = 0;
bool gQuick = false;

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
  // for one segment of several tiles; a few long rows; thousands of rows.
  const std::vector<Shape> tokenShapes = {
      {1, 1, false},      {5, 7, false},       {3, 65, false},     {17, 1000, false},
      {2, 4099, false},   {1, 131072, false},  {1, 300000, false}, {130, 5000, false},
      {3, 100000, true},  {4096, 1024, true},  {20000, 40, true}};
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

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) gQuick = gQuick || std::strcmp(argv[i], "--quick") == 0;
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
    runtimeCases(report);
    advantageCases(report);
    statisticsCases(report);
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
