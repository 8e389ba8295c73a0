// Native conformance test (CTest): every CPU op, on every instruction-set variant and thread
// count, against the scalar reference, with guard elements after every output to catch
// out-of-bounds writes. Sequential and elementwise ops must match bit for bit (the op table's
// cpuTol of 0); reductions within cpuTol. Needs no Node.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <tuple>
#include <string>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cpu_variants.h"
#include "rlhf/error.h"
#include "rlhf/host_memory.h"
#include "rlhf/kernels.h"
#include "rlhf/nn.h"
#include "rlhf/op_table.h"
#include "rlhf/policy.h"
#include "rlhf/preference.h"
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

// The inputs' seed: fixed, or RLHF_TEST_SEED to draw other inputs (a tolerance that holds for
// one draw only is a bug in the test or the kernel).
unsigned testSeed() {
  const char* s = std::getenv("RLHF_TEST_SEED");
  return s != nullptr ? static_cast<unsigned>(std::strtoul(s, nullptr, 10)) : 12345u;
}
std::mt19937 rng(testSeed());
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

// Runs `body` under each CPU path whose code differs here (the x86-64 baseline, AVX2 where it is
// not the variant this CPU selects, and that variant), with the path's name.
void forEachCpuPath(const std::function<void(const std::string&)>& body) {
  for (CpuPath p : {CpuPath::Baseline, CpuPath::Avx2, CpuPath::Auto}) {
    if (!cpuPathIsDistinct(p)) continue;
    setCpuPath(p);
    body(cpuPathName(p));
  }
  setCpuPath(CpuPath::Auto);
}

// Runs `body` under every CPU path and thread count that must reproduce the reference, the row
// passes that only read taking one row at a time on 1 and 3 threads and several in step on 2 and
// 7 (setReadStreams), so that both ways are checked on every CPU and give the same bits.
void forEachCpuConfig(const std::function<void(const std::string&)>& body) {
  forEachCpuPath([&](const std::string& path) {
    for (int threads : {1, 2, 3, 7}) {
      ThreadPool::instance().setNumThreads(threads);
      const bool several = threads == 2 || threads == 7;
      setReadStreams(several ? ReadStreams::Several : ReadStreams::One);
      body(path + " threads=" + std::to_string(threads) + (several ? " several" : " one"));
    }
  });
  setReadStreams(ReadStreams::Auto);
  ThreadPool::instance().setNumThreads(2);
}

// --- gae --------------------------------------------------------------------------------------

enum class Flags { None, Terminated, TerminatedTruncated, CleanRl };
enum class RateLayout { Scalar, PerStep, Full };

// retLead: the returns start that many floats into their buffer, so that the advantages and the
// returns meet every relative alignment. rewardsBehind: the rewards are read from a copy placed
// that many floats behind the advantages in their pages (0: where the allocator put them), so
// that the outputs are written straight (clear of 4K aliasing) or through row buffers (not).
void testGae(int64_t T, int64_t N, Flags flags, RateLayout gammaLayout, RateLayout lambdaLayout, int retLead = 0,
             int rewardsBehind = 0) {
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
                           " lambda=" + std::to_string(static_cast<int>(lambdaLayout)) +
                           (retLead != 0 ? " retLead=" + std::to_string(retLead) : "") +
                           (rewardsBehind != 0 ? " rewardsBehind=" + std::to_string(rewardsBehind) : "");
  std::vector<float> rewardsRoom(static_cast<size_t>(rewardsBehind != 0 ? n + 1024 : 0));
  forEachCpuConfig([&](const std::string& config) {
    Out adv(n), ret(n + retLead);
    GaeArgs f = a;
    f.advantages = adv.data();
    f.returns = ret.data() + retLead;
    if (rewardsBehind != 0) {
      const uintptr_t gap = reinterpret_cast<uintptr_t>(adv.data()) - reinterpret_cast<uintptr_t>(rewardsRoom.data());
      float* placed = rewardsRoom.data() + ((gap - 4 * rewardsBehind) & 4095) / sizeof(float);
      std::copy(rewards.begin(), rewards.end(), placed);
      f.rewards = placed;
    }
    gaeCpu(f);
    std::string why;
    bool leadIntact = true;
    for (int i = 0; i < retLead; ++i) leadIntact = leadIntact && sameBits(ret.data()[i], kSentinel);
    const bool ok = close(adv.data(), refAdv.data(), n, tolOf("gae"), why) &&
                    close(ret.data() + retLead, refRet.data(), n, tolOf("gae"), why) && adv.guardIntact(n) &&
                    ret.guardIntact(n + retLead) && leadIntact;
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

// n elements `lead` past a page boundary, with guards after them: inputs and outputs laid out
// alike in their pages, as the typed arrays of one allocator usually are (a std::vector's place
// depends on what the heap held before), so that the tiles meet every alignment of their rows
// and the straight paths are taken where a test expects them.
template <typename E>
struct Placed {
  std::vector<E> room;
  E* p;
  Placed(int64_t n, int lead, E fill) : room(static_cast<size_t>(n + (4096 + 64) / sizeof(E) + lead + kGuard), fill) {
    const uintptr_t at = reinterpret_cast<uintptr_t>(room.data());
    p = room.data() + ((4096 - at % 4096) % 4096) / sizeof(E) + lead;
  }
  Placed(const std::vector<E>& v, int lead) : Placed(static_cast<int64_t>(v.size()), lead, E{}) {
    std::copy(v.begin(), v.end(), p);
  }
  bool guardIntact(int64_t n) const {
    for (int i = 0; i < kGuard; ++i)
      if (std::memcmp(&p[n + i], &kSentinel, sizeof(float)) != 0) return false;
    return true;
  }
};

// Whether the tiles stream the rows' outputs straight into place (straightRowLines): `expected`
// -1 when the case does not say, else 0 or 1.
void reportStraight(int expected, bool straight, const std::string& name) {
  if (expected >= 0)
    report(straight == (expected == 1), name + (expected == 1 ? " goes straight" : " goes through row buffers"));
}

// lead and outLead: the inputs and the outputs start that many elements past a page boundary;
// expectStraight: see reportStraight.
void testTokenGae(int64_t B, int64_t T, MaskMode mode, bool withLast, int lead = 0, int outLead = 0,
                  int expectStraight = -1) {
  covered.insert("tokenGae");
  const int64_t n = B * T;
  const Placed<float> rewards(randomFloats(n), lead), values(randomFloats(n), lead);
  const Placed<uint8_t> mask(responseMask(B, T), lead);
  const auto last = randomFloats(B);
  TokenGaeArgs a;
  a.B = B;
  a.T = T;
  a.rewards = rewards.p;
  a.values = values.p;
  a.mask = mode == MaskMode::None ? nullptr : mask.p;
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
                           std::to_string(static_cast<int>(mode)) + (withLast ? " lastValues" : "") +
                           (lead != 0 ? " lead=" + std::to_string(lead) : "") +
                           (outLead != 0 ? " outLead=" + std::to_string(outLead) : "");
  forEachCpuConfig([&](const std::string& config) {
    Placed<float> adv(n, outLead, kSentinel), ret(n, outLead, kSentinel);
    TokenGaeArgs f = a;
    f.advantages = adv.p;
    f.returns = ret.p;
    tokenGaeCpu(f);
    std::string why;
    const bool ok = close(f.advantages, refAdv.data(), n, tolOf("tokenGae"), why) &&
                    close(f.returns, refRet.data(), n, tolOf("tokenGae"), why) && adv.guardIntact(n) && ret.guardIntact(n);
    report(ok, name + " [" + config + "] " + why);
    reportStraight(expectStraight, straightRowLines(T, f.values, {f.advantages, f.returns}, {f.rewards, f.values}),
                   name);
  });
}

void testReturns(int64_t B, int64_t T, bool masked, int lead = 0, int outLead = 0, int expectStraight = -1) {
  covered.insert("discountedReturns");
  const int64_t n = B * T;
  const Placed<float> rewards(randomFloats(n), lead);
  const Placed<uint8_t> mask(responseMask(B, T), lead);
  DiscountedReturnsArgs a;
  a.B = B;
  a.T = T;
  a.rewards = rewards.p;
  a.mask = masked ? mask.p : nullptr;
  a.gamma = 0.97f;
  Out ref(n);
  DiscountedReturnsArgs r = a;
  r.returns = ref.data();
  discountedReturnsReference(r);
  forEachCpuConfig([&](const std::string& config) {
    Placed<float> got(n, outLead, kSentinel);
    DiscountedReturnsArgs f = a;
    f.returns = got.p;
    discountedReturnsCpu(f);
    std::string why;
    const bool ok = close(f.returns, ref.data(), n, tolOf("discountedReturns"), why) && got.guardIntact(n);
    const std::string name = "discountedReturns B=" + std::to_string(B) + " T=" + std::to_string(T) +
                             (masked ? " masked" : "") + (lead != 0 ? " lead=" + std::to_string(lead) : "") +
                             (outLead != 0 ? " outLead=" + std::to_string(outLead) : "");
    report(ok, name + " [" + config + "] " + why);
    reportStraight(expectStraight, straightRowLines(T, f.rewards, {f.returns}, {f.rewards}), name);
  });
}

// Where new outputs are placed (streamingPlaceInPage): at the first input's place in a line; at
// its place in a page when that is clear of every input both ways (clearOfAliasing), else at
// some clear place when there is one, which a search of every candidate decides here.
void testStreamingPlace() {
  std::mt19937 gen(7);
  const auto bothWays = [](uintptr_t place, uintptr_t in) {
    const auto at = [](uintptr_t x) { return reinterpret_cast<const void*>(x); };
    return clearOfAliasing(at(place), at(in)) && clearOfAliasing(at(in), at(place));
  };
  int wrong = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    const int count = 1 + static_cast<int>(gen() % 5);
    std::vector<uintptr_t> in(static_cast<size_t>(count));
    std::vector<const void*> ptrs;
    for (int i = 0; i < count; ++i) {
      in[static_cast<size_t>(i)] = (uintptr_t{1} << 20) * (1 + gen() % 64) + 4 * (gen() % 1024);
      ptrs.push_back(reinterpret_cast<const void*>(in[static_cast<size_t>(i)]));
      if (gen() % 7 == 0 && i > 0) ptrs.push_back(nullptr);  // absent inputs are skipped
    }
    const uintptr_t place = streamingPlaceInPage(ptrs.data(), static_cast<int>(ptrs.size()));
    const auto clearOfAll = [&](uintptr_t p) {
      for (uintptr_t x : in)
        if (!bothWays(p, x)) return false;
      return true;
    };
    bool anyClear = false;
    for (uintptr_t line = 0; line < 4096; line += 64) anyClear = anyClear || clearOfAll((in[0] + line) & 4095);
    const bool ok = place < 4096 && (place - in[0]) % 64 == 0 && (!anyClear || clearOfAll(place)) &&
                    (!clearOfAll(in[0] & 4095) || place == (in[0] & 4095));
    if (!ok && ++wrong <= 3) report(false, "streamingPlaceInPage trial " + std::to_string(trial));
  }
  report(wrong == 0, "streamingPlaceInPage: 20000 sets of inputs");
  report(streamingPlaceInPage(nullptr, 0) == 0, "streamingPlaceInPage with no inputs");
}

// Huge pages for large new outputs (host_memory.h): where the system takes the request, only the
// whole 2 MiB pages of a range are asked for, and smaps shows the request on them alone.
void testHugePageAdvice() {
#if defined(__linux__)
  const size_t huge = size_t{2} << 20, bytes = 5 * huge;
  void* region = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) return report(false, "huge pages: mmap of 10 MiB failed");
  char* const base = static_cast<char*>(region);
  char* const firstWhole = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(base) + huge - 1) & ~(huge - 1));
  if (!hugePagesAdvisable()) {
    report(!adviseHugePages(base, bytes), "huge pages: not asked for where the system does not take the request");
  } else {
    report(!adviseHugePages(firstWhole + 16, huge), "huge pages: none asked for in a range with no whole 2 MiB page");
    report(!hugePagesRequestedIn(firstWhole, huge), "huge pages: not requested before asking");
    report(adviseHugePages(firstWhole + 16, 3 * huge), "huge pages: asked for a range of 3 x 2 MiB");
    report(hugePagesRequestedIn(firstWhole + huge, huge) && hugePagesRequestedIn(firstWhole + 2 * huge, huge),
           "huge pages: requested on the range's whole 2 MiB pages");
    report(!hugePagesRequestedIn(firstWhole, huge) && !hugePagesRequestedIn(firstWhole + 3 * huge, huge),
           "huge pages: not requested on the pages the range only partly covers");
    report(hugePagesRequestedIn(firstWhole + 16, 2 * huge) && !hugePagesRequestedIn(firstWhole + huge + 16, huge),
           "huge pages: a range's first whole page is the one looked at; a range with none has no request");
    std::memset(firstWhole, 1, 4 * huge);  // the memory stays ordinary memory
    report(firstWhole[4 * huge - 1] == 1, "huge pages: the advised range holds what was written");
  }
  munmap(region, bytes);
#endif
}

// --- statistics ---------------------------------------------------------------------------------

bool relClose(double got, double ref, double tol) {
  if (std::isnan(got) || std::isnan(ref)) return std::isnan(got) && std::isnan(ref);
  return std::fabs(got - ref) <= tol * std::fmax(1.0, std::fabs(ref));
}

// The streaming affine at every placement of out against x: the same page offset (the direct
// path), a few bytes either way of it (through a buffer), and in place. Elementwise in one
// order: the same bits as the reference.
void testAffinePlacement() {
  const int64_t n = (int64_t{1} << 22) + 37;  // 16 MiB and more: the streaming path
  const auto x = randomFloats(n);
  AffineArgs ref{n, x.data(), 0.25f, 1.5f, -0.125f, nullptr};
  Out want(n);
  ref.out = want.data();
  affineReference(ref);
  std::vector<float> room(static_cast<size_t>(n + 3072 + kGuard), kSentinel);  // at < 3072
  const uintptr_t xAt = reinterpret_cast<uintptr_t>(x.data()), roomAt = reinterpret_cast<uintptr_t>(room.data());
  const int64_t samePage = static_cast<int64_t>(((xAt - roomAt) & 4095) / sizeof(float));
  for (int64_t shift : {0, 1, 4, 12, -4, 1000}) {
    const int64_t at = samePage + 1024 + shift;
    forEachCpuConfig([&](const std::string& config) {
      std::fill(room.begin(), room.end(), kSentinel);
      AffineArgs a = ref;
      a.out = room.data() + at;
      affineCpu(a);
      std::string why;
      bool untouched = true;
      for (int64_t i = 0; i < static_cast<int64_t>(room.size()); ++i)
        if (i < at || i >= at + n) untouched = untouched && sameBits(room[static_cast<size_t>(i)], kSentinel);
      report(close(a.out, want.data(), n, 0, why) && untouched,
             "affine out " + std::to_string(shift) + " floats from x's page offset [" + config + "] " + why);
    });
  }
  forEachCpuConfig([&](const std::string& config) {
    std::vector<float> inPlace = x;
    AffineArgs a = ref;
    a.x = inPlace.data();
    a.out = inPlace.data();
    affineCpu(a);
    std::string why;
    report(close(inPlace.data(), want.data(), n, 0, why), "affine in place [" + config + "] " + why);
  });
}

// The baseline's chunk kernels and, when it is another, the variant this CPU selects (the AVX2
// one, when AVX-512 is selected, runs under RLHF_SIMD=avx2).
std::vector<const ChunkKernels*> baselineAndActive() {
  std::vector<const ChunkKernels*> variants = {&baselineKernels()};
  if (&activeKernels() != &baselineKernels()) variants.push_back(&activeKernels());
  return variants;
}

// The bandwidth roofline's triad, in each variant: a = b + 3c exactly over [i0, i1) from any
// alignment, nothing outside touched.
void testTriad() {
  for (const ChunkKernels* k : baselineAndActive())
    for (auto [i0, i1] : {std::pair<int64_t, int64_t>{0, 1000}, {1, 999}, {3, 4}, {5, 37}, {7, 7}}) {
      auto b = randomFloats(1000), c = randomFloats(1000);
      std::vector<float> a(1000, -7.0f);
      k->triadRange(a.data(), b.data(), c.data(), i0, i1);
      bool ok = true;
      for (int64_t i = 0; i < 1000; ++i) {
        const float want = i >= i0 && i < i1 ? b[i] + 3.0f * c[i] : -7.0f;
        ok = ok && sameBits(a[i], want);
      }
      report(ok, std::string("triad [") + k->name + "] [" + std::to_string(i0) + "," + std::to_string(i1) + ")");
    }
}

// The read roofline's pass, in each variant: the sum of x over [i0, i1) from any alignment, within
// float rounding of the float64 sum (positive terms, so that the bound is relative).
void testReadPass() {
  for (const ChunkKernels* k : baselineAndActive())
    for (auto [i0, i1] : {std::pair<int64_t, int64_t>{0, 1000}, {1, 999}, {3, 4}, {5, 37}, {7, 7}}) {
      const auto x = randomFloats(1000, 0, 1);
      double want = 0;
      for (int64_t i = i0; i < i1; ++i) want += x[i];
      const double got = k->readRange(x.data(), i0, i1);
      report(std::fabs(got - want) <= 1e-5 * want, std::string("read pass [") + k->name + "] [" + std::to_string(i0) + "," +
                                                         std::to_string(i1) + ") " + std::to_string(got) + " against " +
                                                         std::to_string(want));
    }
}

// The valid-token count the losses weigh by, in each variant: every nonzero byte counts once
// (any value, not just 1), over lengths either side of whole lines, from any start.
void testMaskCount() {
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> m(5000);
  for (auto& x : m) x = byte(rng) < 80 ? 0 : static_cast<uint8_t>(byte(rng) | 1);
  for (const ChunkKernels* k : baselineAndActive())
    for (int64_t start : {0, 1, 3, 17})
      for (int64_t n : {0, 1, 15, 63, 64, 65, 127, 1000, 4096 + 7}) {
        int64_t want = 0;
        for (int64_t i = start; i < start + n; ++i) want += m[static_cast<size_t>(i)] != 0;
        const int64_t got = k->countNonZero(m.data() + start, n);
        report(got == want, std::string("mask count [") + k->name + "] from " + std::to_string(start) + ", n=" +
                                std::to_string(n) + ": " + std::to_string(got) + " vs " + std::to_string(want));
      }
}

// emptyBlocks: the 2nd and 4th moment blocks (kMomentsBlock elements each) wholly masked out, so
// that blocks read in step include blocks with nothing to add.
void testStatistics(int64_t n, double maskP, float offset, bool emptyBlocks = false) {
  covered.insert("maskedMean");
  covered.insert("maskedVar");
  covered.insert("maskedWhiten");
  auto x = randomFloats(n, offset - 3, offset + 3);
  auto mask = randomFlags(n, maskP);
  if (emptyBlocks)
    for (int64_t block : {1, 3})
      for (int64_t i = block * kMomentsBlock; i < std::min(n, (block + 1) * kMomentsBlock); ++i) mask[i] = 0;
  const uint8_t* m = maskP >= 1 ? nullptr : mask.data();
  MaskedMomentsArgs a{n, x.data(), m};
  const MaskedMoments ref = maskedMomentsReference(a);
  const std::string name = "statistics n=" + std::to_string(n) + " p=" + std::to_string(maskP) +
                           " offset=" + std::to_string(offset) + (emptyBlocks ? " empty blocks" : "");
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
  // Every variant's moment kernel keeps one lane order: the same bits, not just close.
  setCpuPath(CpuPath::Baseline);
  const MaskedMoments baseline = maskedMomentsCpu(a);
  forEachCpuPath([&](const std::string& path) {
    const MaskedMoments m = maskedMomentsCpu(a);
    report(std::memcmp(&baseline, &m, sizeof baseline) == 0 || (std::isnan(baseline.mean) && std::isnan(m.mean)),
           name + " moments bit-identical to the baseline's on " + path);
  });
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

// The moments' lane order on data whose sums round at every step: values over 60 binary orders
// of magnitude, so that summing any element out of its place changes the bits. Every variant
// must give the baseline's bits, masked and unmasked, for lengths around the vector widths.
void testMomentsLaneOrder() {
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  std::uniform_int_distribution<int> exponent(-30, 30), sign(0, 1);
  for (int64_t n : {int64_t{5}, int64_t{23}, int64_t{37}, int64_t{1000}, int64_t{65537}}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = std::ldexp(mantissa(rng), exponent(rng)) * (sign(rng) ? 1.0f : -1.0f);
    const std::vector<uint8_t> mask = randomFlags(n, 0.6);
    for (const uint8_t* m : {static_cast<const uint8_t*>(nullptr), mask.data()}) {
      const MaskedMomentsArgs a{n, x.data(), m};
      setCpuPath(CpuPath::Baseline);
      const MaskedMoments baseline = maskedMomentsCpu(a);
      forEachCpuPath([&](const std::string& path) {
        const MaskedMoments got = maskedMomentsCpu(a);
        report(std::memcmp(&baseline, &got, sizeof got) == 0, "moments lane order n=" + std::to_string(n) +
                                                                   (m ? " masked" : "") + " on " + path +
                                                                   ": the baseline's bits");
      });
    }
  }
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


// --- the policy family ---------------------------------------------------------------------------
// Fast paths against the reference within the op's cpuTol, and bit-identical across thread
// counts of one instruction-set variant (the first config of each variant is the yardstick).

struct ThreadInvariance {
  std::string variant;
  std::vector<float> first;
  // True when `got` equals the first output seen for this variant (recording it if new).
  bool check(const std::string& config, const std::vector<float>& got) {
    const std::string v = config.substr(0, config.find(' '));
    if (v != variant) {
      variant = v;
      first = got;
      return true;
    }
    return first.size() == got.size() && std::memcmp(first.data(), got.data(), got.size() * sizeof(float)) == 0;
  }
};

std::vector<int32_t> randomLabels(int64_t n, int64_t V, double ignoreP) {
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(V - 1));
  std::bernoulli_distribution ignore(ignoreP);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = ignore(rng) ? -100 : d(rng);
  return v;
}

// Logits with the hazards of real ones: some -inf, some huge, one row far from 0.
std::vector<float> hazardousLogits(int64_t N, int64_t V) {
  auto z = randomFloats(N * V, -8, 8);
  for (int64_t i = 0; i < N; ++i) {
    if (i % 3 == 1) for (int64_t j = 0; j < V; j += 5) z[i * V + j] = -INFINITY;
    if (i % 4 == 2) for (int64_t j = 0; j < V; ++j) z[i * V + j] += 3e4f;
  }
  return z;
}

// The backward given the forward's float32 lp carries its rounding: half an ulp of lp moves every
// p_j of the row by that share (4e-6 at lp = -80), on top of the op's tolerance.
bool closeGiven(const float* got, const float* ref, const float* lp, int64_t N, int64_t V, std::string& why) {
  for (int64_t i = 0; i < N; ++i) {
    const float a = std::fabs(lp[i]);
    const double tol = tolOf("logprobsFromLogitsBackward") + (std::isfinite(a) ? std::nextafter(a, INFINITY) - a : 0);
    if (!close(got + i * V, ref + i * V, V, tol, why)) {
      why = "row " + std::to_string(i) + " (lp " + std::to_string(lp[i]) + "), " + why;
      return false;
    }
  }
  return true;
}

// The backward's arguments over [N,V] logits z with their labels and the gradients of the
// log-probs and the entropies (no forward outputs, no output yet).
LogprobsBackwardArgs backwardArgs(int64_t N, int64_t V, float tau, const std::vector<float>& z,
                                  const std::vector<int32_t>& labels, const std::vector<float>& gLp,
                                  const std::vector<float>& gH) {
  LogprobsBackwardArgs g;
  g.N = N;
  g.V = V;
  g.logits = z.data();
  g.labels = labels.data();
  g.temperature = tau;
  g.gradLogprobs = gLp.data();
  g.gradEntropy = gH.data();
  return g;
}

// The forward and the backward (plain, given the forward's outputs, given stale ones) of [N,V]
// logits z with their labels, on every CPU config, against the reference.
void testLogprobsCase(const std::string& name, int64_t N, int64_t V, float tau, const std::vector<float>& z,
                      const std::vector<int32_t>& labels) {
  covered.insert("logprobsFromLogits");
  covered.insert("logprobsFromLogitsBackward");
  auto gLp = randomFloats(N), gH = randomFloats(N);
  LogprobsArgs a;
  a.N = N;
  a.V = V;
  a.logits = z.data();
  a.labels = labels.data();
  a.temperature = tau;
  Out refLp(N), refH(N);
  a.logprobs = refLp.data();
  a.entropy = refH.data();
  logprobsReference(a);
  LogprobsBackwardArgs g = backwardArgs(N, V, tau, z, labels, gLp, gH);
  Out refG(N * V);
  g.gradLogits = refG.data();
  logprobsBackwardReference(g);
  ThreadInvariance inv;
  forEachCpuConfig([&](const std::string& config) {
    Out lp(N), H(N), grad(N * V);
    LogprobsArgs f = a;
    f.logprobs = lp.data();
    f.entropy = H.data();
    logprobsCpu(f);
    LogprobsBackwardArgs fg = g;
    fg.gradLogits = grad.data();
    logprobsBackwardCpu(fg);
    std::string why;
    const bool ok = close(lp.data(), refLp.data(), N, tolOf("logprobsFromLogits"), why) &&
                    close(H.data(), refH.data(), N, tolOf("logprobsFromLogits"), why) &&
                    close(grad.data(), refG.data(), N * V, tolOf("logprobsFromLogitsBackward"), why) &&
                    lp.guardIntact(N) && H.guardIntact(N) && grad.guardIntact(N * V);
    // The one pass given this config's own forward outputs.
    Out given(N * V);
    fg.logprobs = lp.data();
    fg.entropy = H.data();
    fg.gradLogits = given.data();
    logprobsBackwardCpu(fg);
    std::string whyGiven;
    report(closeGiven(given.data(), refG.data(), lp.data(), N, V, whyGiven) && given.guardIntact(N * V),
           name + " given lp, H [" + config + "] " + whyGiven);
    // Outputs that do not fit their rows (lp off by 1e-3, NaN, H off by 1e-2): every row is
    // recomputed from its logits, the bits of the plain backward.
    std::vector<float> badLp(lp.v.begin(), lp.v.begin() + N), badH(H.v.begin(), H.v.begin() + N);
    for (int64_t i = 0; i < N; ++i) {
      if (i % 3 == 0) badLp[i] += 1e-3f;
      if (i % 3 == 1) badLp[i] = NAN;
      if (i % 3 == 2) badH[i] += 1e-2f * std::fmax(1.0f, std::fabs(badH[i]));
    }
    Out stale(N * V);
    fg.logprobs = badLp.data();
    fg.entropy = badH.data();
    fg.gradLogits = stale.data();
    logprobsBackwardCpu(fg);
    report(std::memcmp(stale.data(), grad.data(), static_cast<size_t>(N * V) * sizeof(float)) == 0 &&
               stale.guardIntact(N * V),
           name + " given stale lp, H: the plain backward's bits [" + config + "]");
    std::vector<float> all(lp.v.begin(), lp.v.begin() + N);
    all.insert(all.end(), H.v.begin(), H.v.begin() + N);
    all.insert(all.end(), grad.v.begin(), grad.v.begin() + N * V);
    all.insert(all.end(), given.v.begin(), given.v.begin() + N * V);
    report(ok && inv.check(config, all), name + " [" + config + "] " + why);
  });
}

void testLogprobs(int64_t N, int64_t V, float tau) {
  auto z = hazardousLogits(N, V);
  auto labels = randomLabels(N, V, 0.1);
  // Keep the labels off the -inf logits so that every lp is finite.
  for (int64_t i = 0; i < N; ++i)
    if (labels[i] >= 0 && std::isinf(z[i * V + labels[i]])) labels[i] = static_cast<int32_t>((labels[i] + 1) % V);
  testLogprobsCase("logprobs N=" + std::to_string(N) + " V=" + std::to_string(V) + " tau=" + std::to_string(tau), N, V,
                   tau, z, labels);
}

// Rows whose statistics are poisoned, among ordinary ones: a NaN in a row's first half, at its
// end, at its start; a +inf; every logit -inf. The plain backward reads each row's statistics in
// step with the gradient of the row before it (rowSoftmaxStep), so a poisoned row must not reach
// its neighbours, and must be NaN wherever its poison falls.
void testLogprobsPoisoned(int64_t V, float tau) {
  const int64_t N = 41;
  auto z = randomFloats(N * V, -8, 8);
  for (int64_t i = 0; i < N; ++i) {
    float* row = z.data() + i * V;
    switch (i % 8) {
      case 3: row[V / 4] = NAN; break;
      case 4: row[V - 1] = NAN; break;
      case 5: row[V / 2] = INFINITY; break;
      case 6: std::fill(row, row + V, -INFINITY); break;
      case 7: row[0] = NAN; break;
      default: break;
    }
  }
  testLogprobsCase("logprobs poisoned rows V=" + std::to_string(V) + " tau=" + std::to_string(tau), N, V, tau, z,
                   randomLabels(N, V, 0.1));
}

// A row with a NaN has no statistics, so its gradient must not depend on what the backward's row
// buffer held. The buffer is allocated afresh for the call (one thread: on this one), and the heap
// hands back the block of that size (RowBuffers: V + 48 floats) freed just before: filled with one
// NaN and then another, the two calls must give the same bits (the product of NaN and a stale NaN
// took the stale one's bits, which made the thread-invariance checks flaky).
void testLogprobsStaleRowBuffer() {
  const int64_t N = 2, V = 100;
  auto z = randomFloats(N * V, -4, 4);
  z[5] = NAN;
  const std::vector<int32_t> labels{7, 9};
  const std::vector<float> gLp{1.0f, 1.0f}, gH{0.5f, 0.5f};
  LogprobsBackwardArgs g = backwardArgs(N, V, 1.0f, z, labels, gLp, gH);
  std::vector<std::vector<float>> grads;
  ThreadPool::instance().setNumThreads(1);
  forEachCpuPath([&](const std::string& path) {
    grads.clear();
    for (uint32_t stale : {0x7fc00001u, 0xffc12345u}) {
      {
        std::unique_ptr<float[]> block(new float[static_cast<size_t>(V + 48)]);
        for (int64_t j = 0; j < V + 48; ++j) std::memcpy(&block[j], &stale, sizeof stale);
      }
      std::vector<float> grad(static_cast<size_t>(N * V));
      g.gradLogits = grad.data();
      logprobsBackwardCpu(g);
      grads.push_back(grad);
    }
    report(std::memcmp(grads[0].data(), grads[1].data(), grads[0].size() * sizeof(float)) == 0 &&
               std::isnan(grads[0][0]) && !std::isnan(grads[0][V]),
           "logprobs backward: a NaN row's gradient whatever the row buffer held [" + path + "]");
  });
  ThreadPool::instance().setNumThreads(2);
}

// The plain backward takes a row's statistics in vectors from the row's start and writes its
// gradient in vectors from the output's line boundaries (streamed), each such vector's first
// lanes taking the factor of the block before. Outputs of 9 MB placed 0, 1, 5 and 15 floats past
// a line, over logits placed 0 and 3 floats past one, with a row length that moves every row's
// alignment: each within the tolerance of the reference, and the same bits wherever either lies.
void testLogprobsPlacement() {
  covered.insert("logprobsFromLogitsBackward");
  const int64_t N = 70, V = 32003;
  const auto z0 = randomFloats(N * V, -8, 8);
  const auto labels = randomLabels(N, V, 0.1);
  const auto gLp = randomFloats(N), gH = randomFloats(N);
  LogprobsBackwardArgs ref = backwardArgs(N, V, 1.0f, z0, labels, gLp, gH);
  Out refG(N * V);
  ref.gradLogits = refG.data();
  logprobsBackwardReference(ref);
  forEachCpuPath([&](const std::string& path) {
    std::vector<float> first;
    for (int zLead : {0, 3}) {
      std::unique_ptr<float[]> zRoom(new float[static_cast<size_t>(N * V + 32)]);
      float* z = alignToLine(zRoom.get()) + zLead;
      std::copy(z0.begin(), z0.end(), z);
      for (int outLead : {0, 1, 5, 15}) {
        std::unique_ptr<float[]> outRoom(new float[static_cast<size_t>(N * V + 32)]);
        float* out = alignToLine(outRoom.get()) + outLead;
        LogprobsBackwardArgs g = ref;
        g.logits = z;
        g.gradLogits = out;
        logprobsBackwardCpu(g);
        std::string why;
        const bool ok = close(out, refG.data(), N * V, tolOf("logprobsFromLogitsBackward"), why);
        const std::vector<float> got(out, out + N * V);
        if (first.empty()) first = got;
        const bool same = std::memcmp(first.data(), got.data(), got.size() * sizeof(float)) == 0;
        report(ok && same, "logprobs backward placed: logits +" + std::to_string(zLead) + ", output +" +
                               std::to_string(outLead) + " [" + path + "] " + (same ? why : "bits differ"));
      }
    }
  });
}

// Labels at their rows' least likely tokens (lp down to -110): the one pass given lp and H is as
// close to the reference as the rounding of lp allows (closeGiven).
void testLogprobsUnlikely(float spread, float tau) {
  const int64_t N = 64, V = 4099;
  auto z = randomFloats(N * V, -spread, spread);
  std::vector<int32_t> labels(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i)
    labels[i] = static_cast<int32_t>(std::min_element(z.begin() + i * V, z.begin() + (i + 1) * V) - (z.begin() + i * V));
  testLogprobsCase("logprobs unlikely labels, spread " + std::to_string(spread) + " tau=" + std::to_string(tau), N, V,
                   tau, z, labels);
}

// gradLead: the gradient starts that many floats into its buffer, so that the two outputs differ
// in alignment.
void testKl(int64_t n, int gradLead = 0) {
  covered.insert("klPenalty");
  auto lp = randomFloats(n, -6, 0), ref = randomFloats(n, -6, 0);
  // Away from the output clamp's kinks (k2 and k3 reach 10 inside this range): within rounding of
  // one, the float32 kernels and the float64 reference may decide the clamp differently, and the
  // gradient jumps from d to 0 (some seeds drew such a d among 2M).
  for (int64_t i = 0; i < n; ++i)
    for (double d = static_cast<double>(lp[i]) - ref[i];
         std::fabs(0.5 * d * d - 10) < 1e-4 || std::fabs(std::exp(-d) + d - 1 - 10) < 1e-4;
         d = static_cast<double>(lp[i]) - ref[i])
      lp[i] += 1e-3f;
  lp[7] = ref[7] + 1e-4f;  // the small-d series
  lp[8] = ref[8] - 30.0f;  // beyond every clamp
  lp[9] = NAN;
  for (int e = 0; e < 4; ++e)
    for (int variant = 0; variant < 3; ++variant) {
      KlPenaltyArgs a;
      a.n = n;
      a.logprobs = lp.data();
      a.refLogprobs = ref.data();
      a.o.estimator = static_cast<KlEstimator>(e);
      if (variant == 1) {
        a.o.clampLogRatio = 20;
        a.o.clampOutput = 10;
      }
      a.o.straightThrough = variant == 2;
      Out rk(n), rg(n);
      a.kl = rk.data();
      a.grad = rg.data();
      klPenaltyReference(a);
      forEachCpuConfig([&](const std::string& config) {
        Out k(n), g(n + gradLead);
        KlPenaltyArgs f = a;
        f.kl = k.data();
        f.grad = g.data() + gradLead;
        klPenaltyCpu(f);
        std::string why;
        bool leadIntact = true;
        for (int i = 0; i < gradLead; ++i) leadIntact = leadIntact && sameBits(g.data()[i], kSentinel);
        const bool ok = close(k.data(), rk.data(), n, tolOf("klPenalty"), why) &&
                        close(f.grad, rg.data(), n, tolOf("klPenalty"), why) && k.guardIntact(n) &&
                        g.guardIntact(n + gradLead) && leadIntact;
        report(ok, "klPenalty n=" + std::to_string(n) + " gradLead=" + std::to_string(gradLead) +
                       " estimator=" + std::to_string(e) + " variant=" + std::to_string(variant) + " [" + config + "] " +
                       why);
      });
    }
}

// The k3 estimator exp(-d) + d - 1 and its gradient 1 - exp(-d) element by element, for d over
// +-[1e-6, 80], against float64 on both variants: k3 within 2^-21 relative where |d| < 1/2 (its
// series; the direct form would lose half its digits there) and 2^-19 beyond (worst just past 1/2,
// 16 x 2^-24 when measured), the gradient within 2^-22.
void testK3Accuracy() {
  std::vector<float> lp, ref;
  for (int k = 0; k <= 4000; ++k) {
    const float d = std::pow(10.0f, -6.0f + 7.9f * static_cast<float>(k) / 4000);
    for (float sign : {1.0f, -1.0f}) {
      lp.push_back(sign * d);
      ref.push_back(0.0f);
    }
  }
  const int64_t n = static_cast<int64_t>(lp.size());
  forEachCpuPath([&](const std::string& path) {
    std::vector<float> k(n), g(n);
    KlPenaltyArgs a;
    a.n = n;
    a.logprobs = lp.data();
    a.refLogprobs = ref.data();
    a.o.estimator = KlEstimator::K3;
    a.kl = k.data();
    a.grad = g.data();
    klPenaltyCpu(a);
    std::string why;
    for (int64_t i = 0; i < n && why.empty(); ++i) {
      const double d = lp[i], wantK = std::expm1(-d) + d, wantG = -std::expm1(-d);
      const double tolK = std::ldexp(1.0, std::fabs(d) < 0.5 ? -21 : -19), tolG = std::ldexp(1.0, -22);
      if (std::fabs(k[i] - wantK) > tolK * std::fabs(wantK) || std::fabs(g[i] - wantG) > tolG * std::fabs(wantG))
        why = "d=" + std::to_string(d) + ": k3 " + std::to_string(k[i]) + " against " + std::to_string(wantK) +
              ", gradient " + std::to_string(g[i]) + " against " + std::to_string(wantG);
    }
    report(why.empty(), "k3 and its gradient within their bounds [" + path + "] " + why);
  });
}

void testShapeRewards(int64_t B, int64_t T) {
  covered.insert("shapeRewards");
  auto scores = randomFloats(B, -5, 5), kl = randomFloats(B * T);
  auto mask = responseMask(B, T);
  auto eos = randomFlags(B, 0.7);
  for (int placement = 0; placement < 2; ++placement) {
    ShapeRewardsArgs a;
    a.B = B;
    a.T = T;
    a.scores = scores.data();
    a.kl = kl.data();
    a.mask = mask.data();
    a.hasEos = eos.data();
    a.klCoef = 0.05f;
    a.placement = static_cast<ScorePlacement>(placement);
    a.missingEosPenalty = 1.0f;
    a.scoreClip = 3.0f;
    Out ref(B * T);
    a.rewards = ref.data();
    shapeRewardsReference(a);
    forEachCpuConfig([&](const std::string& config) {
      Out got(B * T);
      ShapeRewardsArgs f = a;
      f.rewards = got.data();
      shapeRewardsCpu(f);
      std::string why;
      report(close(got.data(), ref.data(), B * T, 0, why) && got.guardIntact(B * T),
             "shapeRewards B=" + std::to_string(B) + " placement=" + std::to_string(placement) + " [" + config + "] " + why);
    });
  }
}

bool statsClose(const PolicyLossStats& g, const PolicyLossStats& r, double tol) {
  return relClose(g.loss, r.loss, tol) && relClose(g.clipfrac, r.clipfrac, tol) &&
         relClose(g.clipfracLower, r.clipfracLower, tol) && relClose(g.approxKl, r.approxKl, tol) &&
         relClose(g.approxKlK3, r.approxKlK3, tol) && relClose(g.ppoKl, r.ppoKl, tol);
}

void testPolicyLoss(int64_t B, int64_t T, PolicyLossOptions o, bool masked, bool perRow) {
  covered.insert("ppoPolicyLoss");
  const int64_t n = B * T;
  auto lp = randomFloats(n, -3, 0), adv = randomFloats(perRow ? B : n);
  std::vector<float> old(static_cast<size_t>(n));
  std::normal_distribution<float> shift(0, 0.3f);
  for (int64_t i = 0; i < n; ++i) old[i] = lp[i] + shift(rng);
  auto mask = responseMask(B, T);
  if (o.normalizer == 0) o.normalizer = static_cast<double>(T);
  PolicyLossArgs a;
  a.B = B;
  a.T = T;
  a.logprobs = lp.data();
  a.oldLogprobs = old.data();
  a.advantages = adv.data();
  a.advantagesPerRow = perRow;
  a.mask = masked ? mask.data() : nullptr;
  a.o = o;
  Out rg(n);
  a.grad = rg.data();
  const PolicyLossStats ref = policyLossReference(a);
  const std::string name = "ppoPolicyLoss B=" + std::to_string(B) + " T=" + std::to_string(T) + " agg=" +
                           std::to_string(static_cast<int>(o.aggregation)) + " seq=" +
                           std::to_string(static_cast<int>(o.importance)) + " dual=" + std::to_string(o.dualClip) +
                           (masked ? " masked" : "") + (perRow ? " perRow" : "");
  ThreadInvariance inv;
  forEachCpuConfig([&](const std::string& config) {
    Out g(n);
    PolicyLossArgs f = a;
    f.grad = g.data();
    const PolicyLossStats s = policyLossCpu(f);
    std::string why;
    const double tol = tolOf("ppoPolicyLoss");
    const bool ok = close(g.data(), rg.data(), n, tol, why) && g.guardIntact(n) && statsClose(s, ref, tol);
    std::vector<float> all(g.v.begin(), g.v.begin() + n);
    all.push_back(static_cast<float>(s.loss));
    report(ok && inv.check(config, all), name + " [" + config + "] " + why + " loss " + std::to_string(s.loss) + " vs " +
                                               std::to_string(ref.loss));
  });
}

void testValueLoss(int64_t B, int64_t T, float clip, Aggregation agg, float offset) {
  covered.insert("valueLoss");
  const int64_t n = B * T;
  auto v = randomFloats(n, offset - 2, offset + 2), old = randomFloats(n, offset - 2, offset + 2),
       R = randomFloats(n, offset - 3, offset + 3);
  auto mask = responseMask(B, T);
  ValueLossArgs a;
  a.B = B;
  a.T = T;
  a.values = v.data();
  a.oldValues = old.data();
  a.returns = R.data();
  a.mask = mask.data();
  a.clip = clip;
  a.aggregation = agg;
  a.normalizer = static_cast<double>(B * T);
  Out rg(n);
  a.grad = rg.data();
  const ValueLossStats ref = valueLossReference(a);
  ThreadInvariance inv;
  forEachCpuConfig([&](const std::string& config) {
    Out g(n);
    ValueLossArgs f = a;
    f.grad = g.data();
    const ValueLossStats s = valueLossCpu(f);
    std::string why;
    const double tol = tolOf("valueLoss");
    const bool ok = close(g.data(), rg.data(), n, tol, why) && g.guardIntact(n) && relClose(s.loss, ref.loss, tol) &&
                    relClose(s.vfClipfrac, ref.vfClipfrac, tol) && relClose(s.explainedVariance, ref.explainedVariance, tol);
    std::vector<float> all(g.v.begin(), g.v.begin() + n);
    all.push_back(static_cast<float>(s.loss));
    all.push_back(static_cast<float>(s.explainedVariance));
    report(ok && inv.check(config, all), "valueLoss B=" + std::to_string(B) + " T=" + std::to_string(T) + " clip=" +
                                             std::to_string(clip) + " agg=" + std::to_string(static_cast<int>(agg)) +
                                             " [" + config + "] " + why);
  });
}

void testActorLoss(int64_t B, int64_t T, int64_t V, ImportanceLevel level, float tau) {
  covered.insert("actorLossFromLogits");
  const int64_t n = B * T;
  auto z = hazardousLogits(n, V);
  auto labels = randomLabels(n, V, 0.05);
  for (int64_t i = 0; i < n; ++i)
    if (labels[i] >= 0 && std::isinf(z[i * V + labels[i]])) labels[i] = static_cast<int32_t>((labels[i] + 1) % V);
  auto adv = randomFloats(n), ref = randomFloats(n, -12, -2), old = randomFloats(n, -12, -2);
  auto mask = responseMask(B, T);
  ActorLossArgs a;
  a.B = B;
  a.T = T;
  a.V = V;
  a.logits = z.data();
  a.labels = labels.data();
  a.temperature = tau;
  a.oldLogprobs = old.data();
  a.advantages = adv.data();
  a.refLogprobs = ref.data();
  a.mask = mask.data();
  a.o.importance = level;
  a.o.dualClip = 3;
  a.o.aggregation = Aggregation::SeqMeanTokenMean;
  a.entropyCoef = 0.01f;
  a.klCoef = 0.1f;
  a.klOptions.estimator = KlEstimator::K3;
  // Old log-probs near the new ones, so that some ratios fall inside the clip range.
  LogprobsArgs l;
  l.N = n;
  l.V = V;
  l.logits = z.data();
  l.labels = labels.data();
  l.temperature = tau;
  std::vector<float> lp0(static_cast<size_t>(n));
  l.logprobs = lp0.data();
  logprobsReference(l);
  std::normal_distribution<float> shift(0, 0.2f);
  for (int64_t i = 0; i < n; ++i) old[i] = lp0[i] + shift(rng);
  // Reference log-probs within a few nats of the policy's, as a trained policy keeps them: drawn
  // from [-12, -2] against log-probs of -30, the k3 gradient exp(ref - lp) grew past 1e7 and its
  // float32 difference ref - lp set the rounding (2e-6 relative, over the tolerance).
  std::normal_distribution<float> drift(0, 1.0f);
  for (int64_t i = 0; i < n; ++i) ref[i] = std::isfinite(lp0[i]) ? lp0[i] + drift(rng) : ref[i];
  Out rg(n * V), rlp(n), rH(n);
  a.gradLogits = rg.data();
  a.logprobs = rlp.data();
  a.entropy = rH.data();
  const ActorLossStats refS = actorLossReference(a);
  const std::string name = "actorLoss B=" + std::to_string(B) + " T=" + std::to_string(T) + " V=" + std::to_string(V) +
                           (level == ImportanceLevel::Sequence ? " sequence" : " token");
  ThreadInvariance inv;
  forEachCpuConfig([&](const std::string& config) {
    Out g(n * V), lp(n), H(n);
    ActorLossArgs f = a;
    f.gradLogits = g.data();
    f.logprobs = lp.data();
    f.entropy = H.data();
    const ActorLossStats s = actorLossCpu(f);
    std::string why;
    const double tol = tolOf("actorLossFromLogits");
    const bool ok = close(g.data(), rg.data(), n * V, tol, why) && close(lp.data(), rlp.data(), n, tol, why) &&
                    close(H.data(), rH.data(), n, tol, why) && g.guardIntact(n * V) && statsClose(s.policy, refS.policy, tol) &&
                    relClose(s.loss, refS.loss, tol) && relClose(s.entropy, refS.entropy, tol) && relClose(s.kl, refS.kl, tol);
    std::vector<float> all(g.v.begin(), g.v.begin() + n * V);
    all.push_back(static_cast<float>(s.loss));
    report(ok && inv.check(config, all), name + " [" + config + "] " + why + " loss " + std::to_string(s.loss) + " vs " +
                                             std::to_string(refS.loss));
  });
}

void testPolicyFamily() {
  for (auto [N, V] : {std::pair<int64_t, int64_t>{1, 1}, {5, 3}, {7, 1000}, {9, 4099}, {3, 32000}, {2, 128256}})
    for (float tau : {1.0f, 0.7f}) testLogprobs(N, V, tau);
  testLogprobs(160, 32000, 1.0f);  // 20 MB of gradient: the streaming stores
  for (int64_t V : {1, 2, 17, 100, 4099}) testLogprobsPoisoned(V, V == 100 ? 0.7f : 1.0f);
  testLogprobsStaleRowBuffer();
  testLogprobsPlacement();
  for (float spread : {8.0f, 30.0f})
    for (float tau : {1.0f, 0.7f}) testLogprobsUnlikely(spread, tau);
  testKl(5003);
  testKl(5003, 1);
  // Outputs large enough to stream (16 MiB together): both at the inputs' place in their pages;
  // then the gradient 1040 bytes on, clear of 4K aliasing but off the lines, so that it goes
  // through plain stores while the KL itself streams.
  testKl((int64_t{1} << 21) + 37);
  testKl((int64_t{1} << 21) + 37, 260);
  testK3Accuracy();
  for (auto [B, T] : {std::pair<int64_t, int64_t>{1, 1}, {7, 33}, {300, 129}}) testShapeRewards(B, T);
  for (int agg = 0; agg < 8; ++agg)
    for (int level = 0; level < 2; ++level) {
      PolicyLossOptions o;
      o.aggregation = static_cast<Aggregation>(agg);
      o.importance = static_cast<ImportanceLevel>(level);
      o.normalizer = agg == 6 ? 37 * 301 : 0;
      testPolicyLoss(37, 301, o, true, false);
    }
  PolicyLossOptions dual;
  dual.dualClip = 3;
  dual.clampLogRatio = 0.2f;
  dual.clipHigh = 0.28f;
  dual.clipfracMode = ClipfracMode::Ratio;
  testPolicyLoss(5, 1000, dual, true, true);
  testPolicyLoss(1, 100003, dual, false, false);
  testPolicyLoss(64, 16384, PolicyLossOptions{}, true, false);
  for (float clip : {kNoClamp, 0.2f})
    for (int agg : {0, 1, 4, 6}) testValueLoss(37, 301, clip, static_cast<Aggregation>(agg), 0.0f);
  testValueLoss(64, 16384, 0.5f, Aggregation::TokenMean, 500.0f);
  for (ImportanceLevel level : {ImportanceLevel::Token, ImportanceLevel::Sequence}) {
    testActorLoss(3, 5, 1, level, 1.0f);
    testActorLoss(4, 9, 1000, level, 0.8f);
    testActorLoss(2, 3, 32000, level, 1.0f);
    testActorLoss(4, 20, 32003, level, 0.9f);  // 10 MB of gradient, streamed; rows at every alignment
  }
}


// --- the preference family -------------------------------------------------------------------------

void testPairwise(int64_t N, bool perPairMargin) {
  covered.insert("pairwiseRewardLoss");
  auto rc = randomFloats(N, -4, 4), rr = randomFloats(N, -4, 4), margin = randomFloats(N, -1, 1);
  if (N > 3) {
    rc[0] = 100;  // margins of +-100 stay exact
    rr[1] = 100;
    rc[2] = NAN;
  }
  PairwiseLossArgs a;
  a.N = N;
  a.chosen = rc.data();
  a.rejected = rr.data();
  a.margin = perPairMargin ? margin.data() : nullptr;
  a.marginValue = 0.5f;
  a.centerCoef = 0.01f;
  Out rgc(N), rgr(N);
  a.gradChosen = rgc.data();
  a.gradRejected = rgr.data();
  const PairwiseLossStats ref = pairwiseLossReference(a);
  ThreadInvariance inv;
  forEachCpuConfig([&](const std::string& config) {
    Out gc(N), gr(N);
    PairwiseLossArgs f = a;
    f.gradChosen = gc.data();
    f.gradRejected = gr.data();
    const PairwiseLossStats s = pairwiseLossCpu(f);
    std::string why;
    const double tol = tolOf("pairwiseRewardLoss");
    const bool ok = close(gc.data(), rgc.data(), N, tol, why) && close(gr.data(), rgr.data(), N, tol, why) &&
                    gc.guardIntact(N) && gr.guardIntact(N) && relClose(s.loss, ref.loss, tol) &&
                    relClose(s.accuracy, ref.accuracy, tol) && relClose(s.meanMargin, ref.meanMargin, tol) &&
                    relClose(s.meanChosen, ref.meanChosen, tol) && relClose(s.meanRejected, ref.meanRejected, tol);
    std::vector<float> all(gc.v.begin(), gc.v.begin() + N);
    all.push_back(static_cast<float>(s.loss));
    report(ok && inv.check(config, all), "pairwiseRewardLoss N=" + std::to_string(N) + " [" + config + "] " + why);
  });
}

// DPO's arguments over the four log-prob arrays (sigmoid, label smoothing 0.1, no lengths).
DpoLossArgs dpoArgs(int64_t N, const float* pc, const float* pr, const float* rc, const float* rr) {
  DpoLossArgs a;
  a.N = N;
  a.policyChosen = pc;
  a.policyRejected = pr;
  a.refChosen = rc;
  a.refRejected = rr;
  a.labelSmoothing = 0.1f;
  return a;
}

void testDpo(int64_t N) {
  covered.insert("dpoLoss");
  auto pc = randomFloats(N, -60, -20), pr = randomFloats(N, -60, -20), rc = randomFloats(N, -60, -20),
       rr = randomFloats(N, -60, -20);
  std::vector<int32_t> nc(static_cast<size_t>(N)), nr(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    nc[i] = static_cast<int32_t>(1 + i % 37);
    nr[i] = static_cast<int32_t>(1 + i % 23);
  }
  for (int type = 0; type < 12; ++type) {
    DpoLossArgs a = dpoArgs(N, pc.data(), pr.data(), rc.data(), rr.data());
    a.type = static_cast<DpoLossType>(type);
    if (a.type == DpoLossType::Ipo || a.type == DpoLossType::SigmoidNorm) {
      a.chosenLengths = nc.data();
      a.rejectedLengths = nr.data();
    }
    Out rgc(N), rgr(N);
    a.gradChosen = rgc.data();
    a.gradRejected = rgr.data();
    const DpoLossStats ref = dpoLossReference(a);
    forEachCpuConfig([&](const std::string& config) {
      Out gc(N), gr(N);
      DpoLossArgs f = a;
      f.gradChosen = gc.data();
      f.gradRejected = gr.data();
      const DpoLossStats s = dpoLossCpu(f);
      std::string why;
      const double tol = tolOf("dpoLoss");
      // The gradients carry a factor 1/N: compare them at the scale of one pair.
      auto perPair = [N](const float* g) {
        std::vector<float> v(g, g + N);
        for (float& x : v) x *= static_cast<float>(N);
        return v;
      };
      const bool ok = close(perPair(gc.data()).data(), perPair(rgc.data()).data(), N, tol, why) &&
                      close(perPair(gr.data()).data(), perPair(rgr.data()).data(), N, tol, why) &&
                      gc.guardIntact(N) && gr.guardIntact(N) && relClose(s.loss, ref.loss, tol) &&
                      relClose(s.accuracy, ref.accuracy, tol) && relClose(s.margin, ref.margin, tol) &&
                      relClose(s.rewardsChosen, ref.rewardsChosen, tol);
      report(ok, "dpoLoss type=" + std::to_string(type) + " N=" + std::to_string(N) + " [" + config + "] " + why +
                     " loss " + std::to_string(s.loss) + " vs " + std::to_string(ref.loss));
    });
  }
}

void testSequenceLogprobs(int64_t B, int64_t T, bool masked = true) {
  covered.insert("sequenceLogprobs");
  covered.insert("sequenceLogprobsBackward");
  auto lp = randomFloats(B * T, -8, 0), g = randomFloats(B);
  auto mask = responseMask(B, T);
  const uint8_t* m = masked ? mask.data() : nullptr;
  for (bool average : {false, true}) {
    SequenceLogprobsArgs a{B, T, lp.data(), m, average, nullptr};
    Out ref(B);
    a.out = ref.data();
    sequenceLogprobsReference(a);
    SequenceLogprobsBackwardArgs gb{B, T, g.data(), m, average, nullptr};
    Out refG(B * T);
    gb.out = refG.data();
    sequenceLogprobsBackwardReference(gb);
    ThreadInvariance inv;
    forEachCpuConfig([&](const std::string& config) {
      Out got(B), gotG(B * T);
      SequenceLogprobsArgs f = a;
      f.out = got.data();
      sequenceLogprobsCpu(f);
      SequenceLogprobsBackwardArgs fb = gb;
      fb.out = gotG.data();
      sequenceLogprobsBackwardCpu(fb);
      std::string why;
      const bool ok = close(got.data(), ref.data(), B, tolOf("sequenceLogprobs"), why) &&
                      close(gotG.data(), refG.data(), B * T, tolOf("sequenceLogprobsBackward"), why) &&
                      got.guardIntact(B) && gotG.guardIntact(B * T);
      report(ok && inv.check(config, std::vector<float>(got.v.begin(), got.v.begin() + B)),
             "sequenceLogprobs B=" + std::to_string(B) + " T=" + std::to_string(T) + (average ? " average" : "") +
                 (masked ? "" : " no mask") +
                 " [" + config + "] " + why);
    });
  }
}

// The pairwise and DPO gradients large enough to stream (isStreaming): placed alike in their lines
// at each offset (a head of plain stores first, where the offset is not 0), and unlike (then
// written with plain stores). The gradients are elementwise, so they keep their bits whatever the
// placing; the sums may move in their last bits with the head, within the tolerance.
void testPreferenceStreamed() {
  const int64_t N = (int64_t{1} << 20) + 5;
  // The inputs 16 bytes into a page, as large arrays fresh from the system: where the heap puts
  // them depends on what ran before.
  const int lead = 4;
  const Placed<float> c(randomFloats(N, -4, 4), lead), r(randomFloats(N, -4, 4), lead);
  const Placed<float> pc(randomFloats(N, -60, -20), lead), pr(randomFloats(N, -60, -20), lead),
      rc(randomFloats(N, -60, -20), lead), rr(randomFloats(N, -60, -20), lead);
  PairwiseLossArgs pw;
  pw.N = N;
  pw.chosen = c.p;
  pw.rejected = r.p;
  pw.marginValue = 0.25f;
  DpoLossArgs dpo = dpoArgs(N, pc.p, pr.p, rc.p, rr.p);
  Out pwRefC(N), pwRefR(N), dpoRefC(N), dpoRefR(N);
  for (float center : {0.0f, 0.01f}) {
    pw.centerCoef = center;
    pw.gradChosen = pwRefC.data();
    pw.gradRejected = pwRefR.data();
    const PairwiseLossStats pwRef = pairwiseLossReference(pw);
    dpo.gradChosen = dpoRefC.data();
    dpo.gradRejected = dpoRefR.data();
    const DpoLossStats dpoRef = dpoLossReference(dpo);
    std::map<std::string, std::vector<float>> firstGrads;
    for (auto [leadC, leadR] : {std::pair<int, int>{0, 0}, {3, 3}, {15, 15}, {0, 5}}) {
      // Each gradient `lead` floats past half a page, clear of aliasing with the inputs.
      const int half = 2048 / 4;
      Placed<float> placedC(N, half + leadC, kSentinel), placedR(N, half + leadR, kSentinel);
      float* gc = placedC.p;
      float* gr = placedR.p;
      const std::string placing = " gradients at +" + std::to_string(leadC) + ", +" + std::to_string(leadR);
      const bool alike = leadC == leadR;
      report(streamedInStep(N, gc, gr, {c.p, r.p}) == alike && streamedInStep(N, gc, gr, {pc.p, pr.p, rc.p, rr.p}) == alike,
             "preference losses: the test's gradients stream exactly when placed alike" + placing);
      auto guards = [&] { return placedC.guardIntact(N) && placedR.guardIntact(N); };
      forEachCpuConfig([&](const std::string& config) {
        PairwiseLossArgs f = pw;
        f.gradChosen = gc;
        f.gradRejected = gr;
        const PairwiseLossStats ps = pairwiseLossCpu(f);
        std::string why;
        const double tol = tolOf("pairwiseRewardLoss");
        bool ok = close(gc, pwRefC.data(), N, tol, why) && close(gr, pwRefR.data(), N, tol, why) && guards() &&
                  relClose(ps.loss, pwRef.loss, tol) && relClose(ps.meanChosen, pwRef.meanChosen, tol);
        // The same bits as this variant's first run, whatever the placing and the thread count.
        const std::string variant = config.substr(0, config.find(' '));
        auto& first = firstGrads[variant];
        if (first.empty()) first.assign(gc, gc + N);
        ok = ok && std::memcmp(first.data(), gc, static_cast<size_t>(N) * sizeof(float)) == 0;
        report(ok, "pairwiseRewardLoss streamed centerCoef=" + std::to_string(center) + placing + " [" + config + "] " +
                       why);
        DpoLossArgs g = dpo;
        g.gradChosen = gc;
        g.gradRejected = gr;
        const DpoLossStats ds = dpoLossCpu(g);
        const double dtol = tolOf("dpoLoss");
        why.clear();
        // The gradients carry 1/N: compared at the scale of one pair.
        bool dok = guards() && relClose(ds.loss, dpoRef.loss, dtol) && relClose(ds.rewardsChosen, dpoRef.rewardsChosen, dtol);
        for (int64_t i = 0; dok && i < N; ++i)
          dok = std::fabs(gc[i] - dpoRefC.v[i]) * N <= dtol * std::fmax(1.0, std::fabs(dpoRefC.v[i]) * N) &&
                std::fabs(gr[i] - dpoRefR.v[i]) * N <= dtol * std::fmax(1.0, std::fabs(dpoRefR.v[i]) * N);
        report(dok, "dpoLoss streamed" + placing + " [" + config + "]");
      });
    }
  }
}

// The row kernel of shapeRewards and sequenceLogprobsBackward (maskedScaleRows): short rows, rows
// with no valid token, no mask, and outputs of 16 MiB and more (streamed).
void testMaskedScaleRows() {
  for (auto [B, T] : {std::pair<int64_t, int64_t>{5, 1}, {3, 7}, {2050, 2048}}) testShapeRewards(B, T);
  testSequenceLogprobs(300, 129, false);
  testSequenceLogprobs(2050, 2048);
}

void testGroupAdvantages(int64_t N, int64_t groupSize) {
  covered.insert("groupAdvantages");
  auto r = randomFloats(N, -1, 3);
  for (int64_t i = 5; i < N; i += 97) r[i] = NAN;
  // A group all NaN (no valid row) and one of equal rewards (std 0), where there are enough groups.
  for (int64_t i = 3 * groupSize; i < std::min(N, 4 * groupSize) && 8 * groupSize <= N; ++i) r[i] = NAN;
  for (int64_t i = 6 * groupSize; i < std::min(N, 7 * groupSize) && 8 * groupSize <= N; ++i) r[i] = 0.75f;
  std::vector<int32_t> ids(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) ids[i] = static_cast<int32_t>((i * 7) % 11) - 3;
  for (int e = 0; e < 3; ++e)
    for (int sc = 0; sc < 3; ++sc)
      for (bool byIds : {false, true}) {
        GroupAdvantagesArgs a;
        a.N = N;
        a.rewards = r.data();
        a.groupSize = byIds ? 0 : groupSize;
        a.groupIds = byIds ? ids.data() : nullptr;
        a.estimator = static_cast<GroupEstimator>(e);
        a.scale = static_cast<GroupScale>(sc);
        Out ref(N);
        a.out = ref.data();
        groupAdvantagesReference(a);
        forEachCpuConfig([&](const std::string& config) {
          Out got(N);
          GroupAdvantagesArgs f = a;
          f.out = got.data();
          groupAdvantagesCpu(f);
          std::string why;
          report(close(got.data(), ref.data(), N, 0, why) && got.guardIntact(N),
                 "groupAdvantages N=" + std::to_string(N) + " estimator=" + std::to_string(e) + " scale=" +
                     std::to_string(sc) + (byIds ? " ids" : "") + " [" + config + "] " + why);
        });
      }
}

// The logistic family that the pairwise and DPO kernels share (simd.h), z by z: the loss of 16
// pairs (two full vectors: the pipelined loop) and of one (the tail) all at z is softplus(-z),
// and each chosen gradient -sig(-z)/N, for z over [-110, 110] and tiny |z|, against float64: both
// within 2^-22 relative (1 ulp is 2^-23 relative at most) and, for denormal results, within two
// of the smallest denormal. At 2^-23 the test fails. 1040 pairs (65 vectors of 16, more of the
// narrower widths: several flushes) take each lane's product of 1 + e far above 2, where
// log1pNonNegative turns it into its sum through the exponent: their loss within 2^-20.
void testLogisticAccuracy() {
  std::vector<float> zs{0.0f};
  for (int k = 1; k <= 8000; ++k) zs.push_back(static_cast<float>(k) * 0.01373f);
  for (int k = 1; k <= 40; ++k) zs.push_back(std::ldexp(1.0f, -k));
  const size_t positives = zs.size();
  for (size_t i = 0; i < positives; ++i) zs.push_back(-zs[i]);
  const double ulp = std::ldexp(1.0, -23), denormal = std::ldexp(1.0, -149);
  auto within = [&](double got, double ref, double ulps) {
    return std::fabs(got - ref) <= ulps * ulp * std::fabs(ref) + 2 * denormal;  // ulps of 2^-23 relative
  };
  forEachCpuPath([&](const std::string& path) {
    std::string why;
    for (float z : zs) {
      for (int64_t N : {16, 1, 1040}) {
        std::vector<float> chosen(N, z), rejected(N, 0.0f), gc(N), gr(N);
        PairwiseLossArgs a;
        a.N = N;
        a.chosen = chosen.data();
        a.rejected = rejected.data();
        a.gradChosen = gc.data();
        a.gradRejected = gr.data();
        const double loss = pairwiseLossCpu(a).loss;
        const double e = std::exp(-std::fabs(static_cast<double>(z)));
        const double softplus = std::log1p(e) + std::fmax(-static_cast<double>(z), 0.0);
        const double sigNeg = z >= 0 ? e / (1 + e) : 1 / (1 + e);
        bool ok = within(static_cast<float>(loss), softplus, N > 16 ? 8 : 2);
        for (float g : gc) ok = ok && within(-static_cast<double>(g), sigNeg / static_cast<double>(N), 2);
        if (!ok) {
          why = "z=" + std::to_string(z) + " N=" + std::to_string(N) + ": softplus(-z) " + std::to_string(loss) +
                " against " + std::to_string(softplus) + ", sig(-z) " + std::to_string(-gc[0] * N) + " against " +
                std::to_string(sigNeg);
          break;
        }
      }
      if (!why.empty()) break;
    }
    report(why.empty(), "logistic family within 2^-22 relative [" + path + "] " + why);
  });
}

void testPreferenceFamily() {
  testLogisticAccuracy();
  // 35, 50 and 16421 (two blocks and 37): fewer than three full vectors, exactly three, and a last
  // block of two, around the loops' three-deep pipeline (pipelinedThree) on every variant.
  for (int64_t N : {1, 7, 8, 35, 50, 1000, 16421, 100003}) testPairwise(N, N % 2 == 1);
  for (int64_t N : {1, 9, 35, 50, 16421, 20001}) testDpo(N);
  testPreferenceStreamed();
  for (auto [B, T] : {std::pair<int64_t, int64_t>{1, 1}, {7, 33}, {300, 129}, {3, 20000}}) testSequenceLogprobs(B, T);
  for (auto [N, G] : {std::pair<int64_t, int64_t>{1, 1}, {12, 4}, {64, 8}, {1000, 1}}) testGroupAdvantages(N, G);
}

// --- the neural-network family ----------------------------------------------------------------------
// The matrix multiply is tested exhaustively by matmul_conformance.cpp; one case here keeps the
// op table's row covered.

// Runs `fast` (the CPU entry point writing into `got`) under every config against `ref`, with
// guards after the n outputs and thread invariance within a variant.
void checkAgainst(const char* op, const std::string& what, const Out& ref, int64_t n,
                  const std::function<void(Out&)>& fast) {
  covered.insert(op);
  ThreadInvariance inv;
  forEachCpuConfig([&](const std::string& config) {
    Out got(n);
    fast(got);
    std::string why;
    const bool ok = close(got.data(), ref.v.data(), n, tolOf(op), why) && got.guardIntact(n);
    report(ok && inv.check(config, std::vector<float>(got.v.begin(), got.v.begin() + n)),
           std::string(op) + " " + what + " [" + config + "] " + why);
  });
}

void testMatmulCovered() {
  const int64_t M = 37, N = 29, K = 45;
  auto A = randomFloats(M * K), B = randomFloats(K * N);
  MatmulArgs a{M, N, K, A.data(), K, false, B.data(), N, false, nullptr, N, false};
  Out ref(M * N);
  a.c = ref.data();
  matmulReference(a);
  checkAgainst("matmul", "37x29x45", ref, M * N, [&](Out& got) {
    MatmulArgs f = a;
    f.c = got.data();
    matmulCpu(f);
  });
}

void testBiasAct(int64_t rows, int64_t cols, Activation act) {
  auto x = randomFloats(rows * cols, -6, 6), bias = randomFloats(cols), gy = randomFloats(rows * cols);
  x[0] = NAN;
  if (x.size() > 3) x[3] = 0.3f;  // the polynomial side of the vector tanh
  const std::string what = std::to_string(rows) + "x" + std::to_string(cols) + " act=" + std::to_string(static_cast<int>(act));
  Out refY(rows * cols), refZ(rows * cols);
  BiasActArgs f{rows, cols, x.data(), bias.data(), act, refY.data(), refZ.data()};
  biasActReference(f);
  checkAgainst("biasAct", what, refY, rows * cols, [&](Out& got) {
    BiasActArgs g = f;
    g.y = got.data();
    g.z = nullptr;
    biasActCpu(g);
  });
  std::vector<float> gbRef(static_cast<size_t>(cols), 0.5f);
  Out refGx(rows * cols);
  BiasActBackwardArgs b{rows, cols, gy.data(), refY.data(), refZ.data(), act, refGx.data(), gbRef.data()};
  biasActBackwardReference(b);
  checkAgainst("biasActBackward", what, refGx, rows * cols, [&](Out& got) {
    std::vector<float> gb(static_cast<size_t>(cols), 0.5f);
    BiasActBackwardArgs g = b;
    g.gradX = got.data();
    g.gradBias = gb.data();
    biasActBackwardCpu(g);
    report(std::memcmp(gb.data(), gbRef.data(), gb.size() * sizeof(float)) == 0, "biasActBackward gradBias " + what);
  });
}

// denseBackward against the reference (the op's tolerance) and, on every CPU config, against
// its three steps run one by one on that config (bit for bit): the side-by-side products of
// small layers, and the sequential ones of large layers, are the ops they compose.
void testDenseBackward(int64_t rows, int64_t in, int64_t out, Activation act, bool withGradX, bool accumulateGradX,
                       bool inPlace) {
  covered.insert("denseBackward");
  auto x = randomFloats(rows * in), w = randomFloats(out * in), pre = randomFloats(rows * out, -3, 3);
  auto gy = randomFloats(rows * out), gw0 = randomFloats(out * in), gb0 = randomFloats(out), gx0 = randomFloats(rows * in);
  std::vector<float> y(pre.size()), z(pre.size());
  biasActReference(BiasActArgs{rows, out, pre.data(), nullptr, act, y.data(), z.data()});
  const std::string what = std::to_string(rows) + "x" + std::to_string(in) + "->" + std::to_string(out) + " act=" +
                           std::to_string(static_cast<int>(act)) + (withGradX ? accumulateGradX ? " +=gradX" : " gradX" : "") +
                           (inPlace ? " in place" : "");
  // The outputs of one run, each with guards; gradY is copied so that in place may overwrite it.
  struct Outputs {
    std::vector<float> gradY;
    Out gz, gw, gb, gx;
    Outputs(const std::vector<float>& gy, const std::vector<float>& gw0, const std::vector<float>& gb0,
            const std::vector<float>& gx0, int64_t zs)
        : gradY(gy), gz(zs), gw(static_cast<int64_t>(gw0.size())), gb(static_cast<int64_t>(gb0.size())),
          gx(static_cast<int64_t>(gx0.size())) {
      std::copy(gw0.begin(), gw0.end(), gw.v.begin());
      std::copy(gb0.begin(), gb0.end(), gb.v.begin());
      std::copy(gx0.begin(), gx0.end(), gx.v.begin());
    }
  };
  auto gradZOf = [&](Outputs& o) { return inPlace ? o.gradY.data() : o.gz.data(); };
  auto argsFor = [&](Outputs& o) {
    return DenseBackwardArgs{rows, in, out, x.data(), w.data(), y.data(), z.data(), act, o.gradY.data(), gradZOf(o),
                             o.gw.data(), o.gb.data(), withGradX ? o.gx.data() : nullptr, accumulateGradX};
  };
  Outputs ref(gy, gw0, gb0, gx0, rows * out);
  denseBackwardReference(argsFor(ref));
  const double tol = tolOf("denseBackward");
  forEachCpuConfig([&](const std::string& config) {
    Outputs got(gy, gw0, gb0, gx0, rows * out), steps(gy, gw0, gb0, gx0, rows * out);
    denseBackwardCpu(argsFor(got));
    const DenseBackwardArgs s = argsFor(steps);
    biasActBackwardCpu(activationGradStep(s));
    matmulCpu(weightGradStep(s));
    if (withGradX) matmulCpu(inputGradStep(s));
    const struct {
      const char* name;
      const float *got, *steps, *ref;
      int64_t n;
      const Out* guarded;
    } outs[] = {{"gradZ", gradZOf(got), gradZOf(steps), gradZOf(ref), rows * out, inPlace ? nullptr : &got.gz},
                {"gradW", got.gw.data(), steps.gw.data(), ref.gw.data(), out * in, &got.gw},
                {"gradBias", got.gb.data(), steps.gb.data(), ref.gb.data(), out, &got.gb},
                {"gradX", got.gx.data(), steps.gx.data(), ref.gx.data(), rows * in, &got.gx}};
    for (const auto& o : outs) {
      std::string why;
      const bool nearRef = close(o.got, o.ref, o.n, tol, why);
      const bool stepBits = std::memcmp(o.got, o.steps, static_cast<size_t>(o.n) * sizeof(float)) == 0;
      const bool guards = o.guarded == nullptr || o.guarded->guardIntact(o.n);
      report(nearRef && stepBits && guards, std::string("denseBackward ") + o.name + " " + what + " [" + config + "] " + why +
                                                (stepBits ? "" : " (not the bits of its steps)") + (guards ? "" : " (guard overwritten)"));
    }
  });
}

void testEmbedding(int64_t n, int64_t dim, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 7 + i * i) % vocab);  // repeats
  auto table = randomFloats(vocab * dim), g = randomFloats(n * dim);
  const std::string what = std::to_string(n) + "x" + std::to_string(dim) + " vocab=" + std::to_string(vocab);
  Out ref(n * dim);
  EmbeddingArgs f{n, dim, vocab, ids.data(), table.data(), ref.data()};
  embeddingReference(f);
  checkAgainst("embedding", what, ref, n * dim, [&](Out& got) {
    EmbeddingArgs e = f;
    e.out = got.data();
    embeddingCpu(e);
  });
  Out refT(vocab * dim);
  std::fill(refT.v.begin(), refT.v.begin() + vocab * dim, 0.25f);
  EmbeddingBackwardArgs b{n, dim, vocab, ids.data(), g.data(), refT.data()};
  embeddingBackwardReference(b);
  checkAgainst("embeddingBackward", what, refT, vocab * dim, [&](Out& got) {
    std::fill(got.v.begin(), got.v.begin() + vocab * dim, 0.25f);
    EmbeddingBackwardArgs e = b;
    e.gradTable = got.data();
    embeddingBackwardCpu(e);
  });
}

void testLayerNorm(int64_t rows, int64_t cols, bool affine) {
  auto x = randomFloats(rows * cols, -3, 3), gamma = randomFloats(cols), beta = randomFloats(cols), gy = randomFloats(rows * cols);
  for (int64_t j = 0; j < cols; ++j) x[j] = 1000.0f + x[j];  // a row far from 0
  const std::string what = std::to_string(rows) + "x" + std::to_string(cols) + (affine ? " affine" : "");
  Out ref(rows * cols);
  std::vector<float> mean(static_cast<size_t>(rows)), rstd(static_cast<size_t>(rows));
  LayerNormArgs f{rows, cols, x.data(), affine ? gamma.data() : nullptr, affine ? beta.data() : nullptr, 1e-5f, ref.data(),
                  mean.data(), rstd.data()};
  layerNormReference(f);
  checkAgainst("layerNorm", what, ref, rows * cols, [&](Out& got) {
    std::vector<float> m2(static_cast<size_t>(rows)), r2(static_cast<size_t>(rows));
    LayerNormArgs g = f;
    g.y = got.data();
    g.mean = m2.data();
    g.rstd = r2.data();
    layerNormCpu(g);
    report(m2 == mean && r2 == rstd, "layerNorm statistics " + what);
  });
  Out refG(rows * cols);
  std::vector<float> gg(static_cast<size_t>(cols), 1.0f), gb(static_cast<size_t>(cols), -1.0f);
  LayerNormBackwardArgs b{rows, cols, x.data(), f.gamma, mean.data(), rstd.data(), gy.data(), refG.data(), gg.data(), gb.data()};
  layerNormBackwardReference(b);
  checkAgainst("layerNormBackward", what, refG, rows * cols, [&](Out& got) {
    std::vector<float> gg2(static_cast<size_t>(cols), 1.0f), gb2(static_cast<size_t>(cols), -1.0f);
    LayerNormBackwardArgs g = b;
    g.gradX = got.data();
    g.gradGamma = gg2.data();
    g.gradBeta = gb2.data();
    layerNormBackwardCpu(g);
    report(gg2 == gg && gb2 == gb, "layerNormBackward gamma/beta " + what);
  });
}

void testMeanPool(int64_t B, int64_t T, int64_t D) {
  auto x = randomFloats(B * T * D), g = randomFloats(B * D);
  auto mask = randomFlags(B * T, 0.6);
  for (int64_t t = 0; t < T; ++t) mask[t] = 0;  // a row with no valid token
  const std::string what = std::to_string(B) + "x" + std::to_string(T) + "x" + std::to_string(D);
  Out ref(B * D);
  MeanPoolArgs f{B, T, D, x.data(), mask.data(), ref.data()};
  meanPoolReference(f);
  checkAgainst("meanPool", what, ref, B * D, [&](Out& got) {
    MeanPoolArgs m = f;
    m.out = got.data();
    meanPoolCpu(m);
  });
  Out refG(B * T * D);
  MeanPoolBackwardArgs b{B, T, D, g.data(), mask.data(), refG.data()};
  meanPoolBackwardReference(b);
  checkAgainst("meanPoolBackward", what, refG, B * T * D, [&](Out& got) {
    MeanPoolBackwardArgs m = b;
    m.gradX = got.data();
    meanPoolBackwardCpu(m);
  });
}

// Parameters of several sizes (one spanning blocks, one empty), updated for three steps.
void testOptimizer() {
  const std::vector<int64_t> sizes = {1, 7, 0, 3 * kNormBlock + 5, 64};
  auto make = [&](float lo, float hi) {
    std::vector<std::vector<float>> t;
    for (int64_t n : sizes) t.push_back(randomFloats(n, lo, hi));
    return t;
  };
  auto params = make(-1, 1), grads = make(-1, 1), m = make(-0.1f, 0.1f), v = make(0, 0.01f);
  auto pointers = [](std::vector<std::vector<float>>& t) {
    std::vector<float*> p;
    for (auto& x : t) p.push_back(x.data());
    return p;
  };
  auto flatten = [](const std::vector<std::vector<float>>& t) {
    std::vector<float> f;
    for (const auto& x : t) f.insert(f.end(), x.begin(), x.end());
    return f;
  };
  auto refP = params, refM = m, refV = v;
  auto pp = pointers(refP), pg = pointers(grads), pm = pointers(refM), pv = pointers(refV);
  TensorList list{static_cast<int64_t>(sizes.size()), sizes.data(), pp.data(), pg.data(), pm.data(), pv.data()};
  for (int64_t step = 1; step <= 3; ++step) adamwReference(AdamwArgs{list, step, 3e-3, 0.9, 0.999, 1e-8, 0.01});
  const double refSq = sumSquaresReference(SumSquaresArgs{list});
  covered.insert("adamw");
  covered.insert("sumSquares");
  covered.insert("scaleGrads");
  forEachCpuConfig([&](const std::string& config) {
    auto p2 = params, m2 = m, v2 = v, g2 = grads;
    auto qp = pointers(p2), qg = pointers(g2), qm = pointers(m2), qv = pointers(v2);
    TensorList l{static_cast<int64_t>(sizes.size()), sizes.data(), qp.data(), qg.data(), qm.data(), qv.data()};
    for (int64_t step = 1; step <= 3; ++step) adamwCpu(AdamwArgs{l, step, 3e-3, 0.9, 0.999, 1e-8, 0.01});
    report(flatten(p2) == flatten(refP) && flatten(m2) == flatten(refM) && flatten(v2) == flatten(refV), "adamw [" + config + "]");
    const double sq = sumSquaresCpu(SumSquaresArgs{l});
    report(std::fabs(sq - refSq) <= tolOf("sumSquares") * refSq, "sumSquares [" + config + "]");
    auto g3 = grads;
    auto rg = pointers(g3);
    TensorList lr = list;
    lr.grads = rg.data();
    scaleReference(ScaleArgs{lr, 0.37f});
    scaleCpu(ScaleArgs{l, 0.37f});
    report(flatten(g2) == flatten(g3), "scaleGrads [" + config + "]");
  });
}

void testNnFamily() {
  testMatmulCovered();
  for (Activation act : {Activation::Identity, Activation::Tanh, Activation::Relu, Activation::Gelu, Activation::GeluTanh})
    for (auto [r, c] : {std::pair<int64_t, int64_t>{1, 1}, {7, 13}, {128, 64}, {300, 257}}) testBiasAct(r, c, act);
  // The MLP step's layers (each product on one thread), a layer whose products run side by side
  // on 2+ threads (2 * 256 * 64 * 64 flops each), a lone row, and a layer too large for the
  // side-by-side products (2 * 256 * 160 * 128 flops each).
  for (Activation act : {Activation::Identity, Activation::Tanh, Activation::Gelu}) {
    testDenseBackward(128, 64, 64, act, true, false, false);
    testDenseBackward(128, 64, 2, act, true, true, act == Activation::Identity);
    testDenseBackward(128, 4, 64, act, false, false, false);
    testDenseBackward(256, 64, 64, act, true, false, false);
  }
  testDenseBackward(1, 3, 5, Activation::Relu, true, true, false);
  testDenseBackward(256, 160, 128, Activation::Tanh, true, false, false);
  for (auto [n, d, v] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {50, 8, 7}, {4000, 33, 300}}) testEmbedding(n, d, v);
  for (bool affine : {false, true})
    for (auto [r, c] : {std::pair<int64_t, int64_t>{1, 1}, {5, 64}, {600, 129}}) testLayerNorm(r, c, affine);
  for (auto [B, T, D] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {4, 9, 16}, {64, 50, 70}}) testMeanPool(B, T, D);
  testOptimizer();
}

}  // namespace

int main() {
  std::printf("rlhf native conformance: CPU variant %s, seed %u\n", cpuVariantName(), testSeed());
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
  // Rows that start anywhere in a 32-byte block: the tile grid shifts to align them, with windows
  // of steps at both ends (T a multiple of 8), or stays put (T not).
  for (int lead = 1; lead < 8; ++lead)
    for (int64_t T : {8, 12, 16, 23, 64, 72}) {
      for (MaskMode m : {MaskMode::Premask, MaskMode::Skip, MaskMode::None})
        for (bool last : {false, true}) testTokenGae(17, T, m, last, lead);
      testReturns(17, T, true, lead);
      testReturns(17, T, false, lead);
    }
  for (int64_t n : {2, 3, 4095, 4096, 4097, 100003, 300000})
    for (double p : {1.0, 0.5, 0.02}) testStatistics(n, p, 0.0f);
  testStatistics(200000, 0.7, 1000.0f);  // a large mean: the shifted sums must not lose the variance
  testStatistics(9 * kMomentsBlock + 100, 0.5, 0.0f, true);
  // Outputs of 16 MiB and more take the non-temporal store paths.
  for (Flags f : {Flags::None, Flags::Terminated, Flags::TerminatedTruncated})
    testGae(512, 4100, f, RateLayout::Scalar, RateLayout::Scalar);
  for (int retLead : {1, 4}) testGae(512, 4100, Flags::TerminatedTruncated, RateLayout::Scalar, RateLayout::Scalar, retLead);
  // Rewards a little behind the outputs in their pages (through row buffers) and far behind
  // (straight), streamed and not.
  for (int behind : {4, 100, 600})
    for (int64_t T : {512, 16}) testGae(T, 4100, Flags::Terminated, RateLayout::Full, RateLayout::Scalar, 0, behind);
  testGae(520, 4096, Flags::CleanRl, RateLayout::PerStep, RateLayout::Scalar);
  // Streamed outputs straight into place: at the inputs' place in a page (lead 0), both a few
  // floats into a line (the grid shifts; the lines that rows share are put together, across
  // groups of rows and between threads' parts too), rows not a whole number of
  // pages apart (T = 1040); through row buffers with the outputs 12 bytes off the inputs' place
  // in a line, 64 or 256 bytes below them in a page, or T not a whole number of lines.
  for (MaskMode m : {MaskMode::Premask, MaskMode::Skip, MaskMode::None}) {
    testTokenGae(2051, 1024, m, true, 0, 0, 1);
    testTokenGae(2051, 1024, m, false, 4, 4, 1);
    testTokenGae(2021, 1040, m, true, 0, 0, 1);
    testTokenGae(2051, 1024, m, true, 0, 3, 0);
    testTokenGae(2051, 1024, m, true, 20, 4, 0);
    testTokenGae(2051, 1024, m, true, 100, 36, 0);
    testTokenGae(2040, 1032, m, true, 0, 0, 0);
    // A single line a row; one line after 12 steps with 4 before it; and rows of one line
    // partway into a line, all windows and shared lines, no tile.
    testTokenGae(131075, 16, m, true, 0, 0, 1);
    testTokenGae(65539, 32, m, false, 4, 4, 1);
    testTokenGae(131075, 16, m, true, 4, 4, 1);
  }
  for (bool masked : {true, false}) {
    testReturns(4099, 1024, masked, 0, 0, 1);
    testReturns(4099, 1024, masked, 12, 12, 1);
    testReturns(262147, 16, masked, 4, 4, 1);
    testReturns(4035, 1040, masked, 0, 0, 1);
    testReturns(4099, 1024, masked, 0, 5, 0);
    testReturns(4099, 1024, masked, 100, 36, 0);
  }
  testStatistics(4200000, 0.5, 0.0f);
  testMomentsLaneOrder();
  testNanPropagation();
  testTooFewValid();
  testTriad();
  testReadPass();
  testMaskCount();
  testAffinePlacement();
  testStreamingPlace();
  testHugePageAdvice();
  testPolicyFamily();
  testPreferenceFamily();
  testNnFamily();
  // Last, so that the cases above draw the random inputs they always drew.
  testMaskedScaleRows();
  // Groups eight at a time in step, with the rest one by one, over several threads; a partial
  // last group; sizes that do not divide a line.
  for (auto [N, G] : {std::pair<int64_t, int64_t>{200003, 16}, {90000, 3}, {131072, 64}}) testGroupAdvantages(N, G);
  for (const OpInfo& o : kOps) report(covered.count(o.name) == 1, std::string("op table row covered: ") + o.name);
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
