// Matrix multiply conformance (CTest): matmulCpu on every instruction-set variant and thread
// count against matmulReference, for every layout (transposes, row pitches wider than the rows,
// accumulate), with guard elements after C and in its pitch padding that must stay untouched.
// The fast paths sum float32 products, so they agree with the float64 reference within
//   4 K 2^-24 sum_k |a_ik b_kj|  (+ the same bound on |C| when accumulating: C is one more term);
// between thread counts, and between a product and any sub-block of it, the bits must be equal
// (the contract of nn.h: the rounding of C[i,j] depends on K only). Needs no Node.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "rlhf/kernels.h"
#include "rlhf/nn.h"
#include "thread_pool.h"

using namespace rlhf;

namespace {

int passed = 0, failed = 0;

void report(bool ok, const std::string& what) {
  (ok ? passed : failed)++;
  if (!ok) std::printf("FAIL %s\n", what.c_str());
}

constexpr int64_t kGuard = 16;
constexpr float kSentinel = -12345.678f;

bool isSentinel(float x) { return std::memcmp(&x, &kSentinel, sizeof x) == 0; }
bool sameBits(const std::vector<float>& x, const std::vector<float>& y) {
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

std::mt19937 rng(20240611);
std::vector<float> randomFloats(int64_t n) {
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

struct Layout {
  bool transA = false, transB = false, accumulate = false;
  int64_t pad = 0;  // extra floats at the end of every row of A, B and C
};

std::string nameOf(int64_t M, int64_t N, int64_t K, const Layout& l) {
  return "matmul " + std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) + (l.transA ? " At" : " A") +
         (l.transB ? " Bt" : " B") + (l.accumulate ? " +=" : " =") + " pad=" + std::to_string(l.pad);
}

// Operands in their stored layouts, and the initial C: the logical elements random when
// accumulating and NaN otherwise (an overwritten C must never be read), the pitch padding and
// kGuard elements after the end the sentinel.
struct Problem {
  MatmulArgs args;
  std::vector<float> a, b, c0;
};

Problem makeProblem(int64_t M, int64_t N, int64_t K, const Layout& l) {
  Problem p;
  MatmulArgs& g = p.args;
  g.M = M;
  g.N = N;
  g.K = K;
  g.transA = l.transA;
  g.transB = l.transB;
  g.accumulate = l.accumulate;
  g.lda = (l.transA ? M : K) + l.pad;
  g.ldb = (l.transB ? K : N) + l.pad;
  g.ldc = N + l.pad;
  p.a = randomFloats((l.transA ? K : M) * g.lda + 1);
  p.b = randomFloats((l.transB ? N : K) * g.ldb + 1);
  p.c0.assign(static_cast<size_t>(M * g.ldc + kGuard), kSentinel);
  const std::vector<float> init = randomFloats(M * N);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      p.c0[i * g.ldc + j] = l.accumulate ? init[i * N + j] : std::numeric_limits<float>::quiet_NaN();
  g.a = p.a.data();
  g.b = p.b.data();
  return p;
}

float opA(const MatmulArgs& g, int64_t i, int64_t k) { return g.transA ? g.a[k * g.lda + i] : g.a[i * g.lda + k]; }
float opB(const MatmulArgs& g, int64_t k, int64_t j) { return g.transB ? g.b[j * g.ldb + k] : g.b[k * g.ldb + j]; }

// C computed into a copy of the initial C by `fn` (matmulCpu or matmulReference).
std::vector<float> runInto(const Problem& p, void (*fn)(const MatmulArgs&)) {
  std::vector<float> c = p.c0;
  MatmulArgs g = p.args;
  g.c = c.data();
  fn(g);
  return c;
}

// Every logical element within the bound of the header against the reference (NaN where it is
// NaN, the same infinity where it is infinite); the padding and the guard untouched.
bool agrees(const Problem& p, const std::vector<float>& got, const std::vector<float>& ref, std::string& why) {
  const MatmulArgs& g = p.args;
  for (size_t e = 0; e < got.size(); ++e) {
    const int64_t pitch = std::max<int64_t>(g.ldc, 1);
    const int64_t i = static_cast<int64_t>(e) / pitch, j = static_cast<int64_t>(e) % pitch;
    if (i >= g.M || j >= g.N) {
      if (!isSentinel(got[e])) {
        why = "wrote outside C at offset " + std::to_string(e);
        return false;
      }
      continue;
    }
    double bound = 0;
    for (int64_t k = 0; k < g.K; ++k) bound += std::fabs(static_cast<double>(opA(g, i, k)) * opB(g, k, j));
    if (g.accumulate) bound += std::fabs(p.c0[e]);
    const double tol = 4.0 * static_cast<double>(g.K) * std::ldexp(1.0, -24) * bound + 1e-30;
    const float x = got[e], r = ref[e];
    const bool ok = std::isnan(r) ? std::isnan(x) : std::isinf(r) ? x == r : std::fabs(double(x) - r) <= tol;
    if (!ok) {
      why = "at (" + std::to_string(i) + "," + std::to_string(j) + "): got " + std::to_string(x) + ", reference " +
            std::to_string(r) + ", tolerance " + std::to_string(tol);
      return false;
    }
  }
  return true;
}

// Runs `body(config)` under each CPU path and thread count 1, 2, 3.
void forEachCpuConfig(const std::function<void(CpuPath, int, const std::string&)>& body) {
  for (CpuPath path : {CpuPath::Baseline, CpuPath::Avx2, CpuPath::Auto}) {
    if (!cpuPathIsDistinct(path)) continue;
    setCpuPath(path);
    for (int threads : {1, 2, 3}) {
      ThreadPool::instance().setNumThreads(threads);
      body(path, threads, std::string(cpuPathName(path)) + " threads=" + std::to_string(threads));
    }
  }
  setCpuPath(CpuPath::Auto);
  ThreadPool::instance().setNumThreads(2);
}

// One problem on every configuration: within the bound of the reference, the same bits at every
// thread count of a path, and on AVX-512 the bits of the AVX2 path (each element is the same FMA
// chain at either width).
void testProblem(const Problem& p, const std::string& name) {
  const std::vector<float> ref = runInto(p, matmulReference);
  std::vector<float> first, avx2;
  forEachCpuConfig([&](CpuPath path, int threads, const std::string& config) {
    const std::vector<float> got = runInto(p, matmulCpu);
    std::string why;
    report(agrees(p, got, ref, why), name + " [" + config + "] " + why);
    if (threads == 1) first = got;
    else report(sameBits(got, first), name + " [" + config + "] same bits as one thread");
    if (threads == 1 && path == CpuPath::Avx2) avx2 = got;
    if (threads == 1 && path == CpuPath::Auto && std::strcmp(cpuVariantName(), "avx512") == 0)
      report(sameBits(got, avx2), name + " [" + config + "] same bits as avx2");
  });
}

void testShape(int64_t M, int64_t N, int64_t K) {
  for (bool transA : {false, true})
    for (bool transB : {false, true})
      for (bool accumulate : {false, true})
        for (int64_t pad : {0, 3}) {
          const Layout l{transA, transB, accumulate, pad};
          testProblem(makeProblem(M, N, K, l), nameOf(M, N, K, l));
        }
}

// The product of the op(A) rows [r0, M) and op(B) columns [c0, N) must reproduce those elements
// of the full product bit for bit, although every tile boundary (and maybe the loop structure)
// moves: the rounding of an element may depend on K only.
void testSubBlockBits(int64_t M, int64_t N, int64_t K, bool transA, bool transB, int64_t r0, int64_t c0) {
  const Layout l{transA, transB, false, 5};
  Problem full = makeProblem(M, N, K, l);
  Problem sub = full;
  MatmulArgs& s = sub.args;
  s.M = M - r0;
  s.N = N - c0;
  s.a = sub.a.data() + (transA ? r0 : r0 * s.lda);
  s.b = sub.b.data() + (transB ? c0 * s.ldb : c0);
  const std::string name = "sub-block bits " + nameOf(M, N, K, l) + " from (" + std::to_string(r0) + "," +
                           std::to_string(c0) + ")";
  forEachCpuConfig([&](CpuPath, int, const std::string& config) {
    const std::vector<float> whole = runInto(full, matmulCpu), part = runInto(sub, matmulCpu);
    bool same = true;
    for (int64_t i = 0; i < s.M; ++i)
      same = same && std::memcmp(&part[i * s.ldc], &whole[(i + r0) * s.ldc + c0], s.N * sizeof(float)) == 0;
    report(same, name + " [" + config + "]");
  });
}

// A NaN in op(A)[i, k] makes row i of C NaN and no other; an infinity in op(B)[k, j] makes column
// j infinite or NaN as the reference says.
void testNonFinite(int64_t M, int64_t N, int64_t K, bool transA, bool transB) {
  const Layout l{transA, transB, false, 2};
  Problem p = makeProblem(M, N, K, l);
  const int64_t i = M / 2, k = K - 1, j = N - 1;
  p.a[transA ? k * p.args.lda + i : i * p.args.lda + k] = std::numeric_limits<float>::quiet_NaN();
  p.b[transB ? j * p.args.ldb + 0 : 0 * p.args.ldb + j] = std::numeric_limits<float>::infinity();
  const std::vector<float> ref = runInto(p, matmulReference);
  const std::string name = "non-finite " + nameOf(M, N, K, l);
  forEachCpuConfig([&](CpuPath, int, const std::string& config) {
    const std::vector<float> got = runInto(p, matmulCpu);
    std::string why;
    bool rows = true;
    for (int64_t r = 0; r < M; ++r)
      for (int64_t c = 0; c < N - 1; ++c) rows = rows && std::isnan(got[r * p.args.ldc + c]) == (r == i);
    report(rows && agrees(p, got, ref, why), name + " [" + config + "] " + (rows ? why : "NaN in the wrong rows"));
  });
}

// `dense` (no padding) with its rows padded by `pad`: the same logical elements.
Problem withPadding(const Problem& dense, int64_t pad) {
  const MatmulArgs& d = dense.args;
  Problem p = makeProblem(d.M, d.N, d.K, Layout{d.transA, d.transB, d.accumulate, pad});
  auto copyRows = [](const std::vector<float>& from, int64_t fromPitch, std::vector<float>& to, int64_t toPitch,
                     int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; ++r) std::copy_n(&from[r * fromPitch], cols, &to[r * toPitch]);
  };
  copyRows(dense.a, d.lda, p.a, p.args.lda, d.transA ? d.K : d.M, d.transA ? d.M : d.K);
  copyRows(dense.b, d.ldb, p.b, p.args.ldb, d.transB ? d.N : d.K, d.transB ? d.K : d.N);
  copyRows(dense.c0, d.ldc, p.c0, p.args.ldc, d.M, d.N);
  return p;
}

// The dense-layer epilogue (bias, activation, z): on every configuration the bits of C and z must
// be those of the plain product followed by biasActCpu over it, and the reference's epilogue those
// of matmulReference followed by biasActReference; with row padding, those of the unpadded call.
// Guards after C and z, and z's padding, stay untouched.
void testEpilogue(int64_t M, int64_t N, int64_t K, bool transA, bool transB, bool accumulate, Activation act, bool withBias,
                  bool withZ) {
  const std::string name = "epilogue act=" + std::to_string(static_cast<int>(act)) + (withBias ? " bias" : "") +
                           (withZ ? " z" : "") + " " + nameOf(M, N, K, Layout{transA, transB, accumulate, 0});
  const std::vector<float> bias = randomFloats(N);
  // C and z of one call on a copy of the problem's C, z's padding and guard the sentinel.
  auto run = [&](const Problem& p, void (*fn)(const MatmulArgs&), std::vector<float>& z) {
    std::vector<float> c = p.c0;
    z.assign(c.size(), kSentinel);
    MatmulArgs g = p.args;
    g.c = c.data();
    g.bias = withBias ? bias.data() : nullptr;
    g.act = act;
    g.z = withZ ? z.data() : nullptr;
    fn(g);
    return c;
  };
  // The product, then biasAct over the dense C.
  auto split = [&](const Problem& p, void (*mm)(const MatmulArgs&), void (*ba)(const BiasActArgs&), std::vector<float>& z) {
    std::vector<float> c = runInto(p, mm);
    z.assign(c.size(), kSentinel);
    ba(BiasActArgs{M, N, c.data(), withBias ? bias.data() : nullptr, act, c.data(), withZ ? z.data() : nullptr});
    return c;
  };
  const Problem dense = makeProblem(M, N, K, Layout{transA, transB, accumulate, 0});
  const Problem padded = withPadding(dense, 3);
  std::vector<float> zRef, zSplitRef;
  const std::vector<float> ref = run(dense, matmulReference, zRef);
  report(sameBits(ref, split(dense, matmulReference, biasActReference, zSplitRef)) && sameBits(zRef, zSplitRef),
         name + " [reference] = matmulReference then biasActReference");
  forEachCpuConfig([&](CpuPath, int, const std::string& config) {
    std::vector<float> z, zSplit, zPadded;
    const std::vector<float> got = run(dense, matmulCpu, z);
    report(sameBits(got, split(dense, matmulCpu, biasActCpu, zSplit)) && sameBits(z, zSplit),
           name + " [" + config + "] = matmulCpu then biasActCpu");
    // The same problem with padded rows: its logical elements equal, padding and guards untouched.
    const MatmulArgs& g = padded.args;
    const std::vector<float> gotPadded = run(padded, matmulCpu, zPadded);
    bool same = true, untouched = true;
    for (int64_t e = 0; e < static_cast<int64_t>(gotPadded.size()); ++e) {
      const int64_t i = e / g.ldc, j = e % g.ldc;
      if (i < M && j < N) {
        same = same && std::memcmp(&gotPadded[e], &got[i * N + j], sizeof(float)) == 0 &&
               (!withZ || std::memcmp(&zPadded[e], &z[i * N + j], sizeof(float)) == 0);
      } else {
        untouched = untouched && isSentinel(gotPadded[e]) && isSentinel(zPadded[e]);
      }
    }
    report(same && untouched, name + " [" + config + "] padded rows: " + (same ? "" : "other bits ") +
                                  (untouched ? "" : "wrote outside C or z"));
  });
}

}  // namespace

int main() {
  std::printf("rlhf matmul conformance: CPU variant %s\n", cpuVariantName());
  const int64_t shapes[][3] = {{1, 1, 1},    {7, 5, 3},     {17, 33, 65}, {129, 127, 131}, {64, 64, 64},
                               {1, 4096, 64}, {4096, 1, 64}, {128, 64, 4}, {128, 64, 64},   {128, 2, 64},
                               {64, 64, 128}, {33, 70, 600}, {0, 5, 7},    {5, 0, 7},       {5, 7, 0},
                               {1, 1, 0},     {13, 100, 1},  {5, 2000, 600}, {64, 4, 128}, {300, 1, 700},
                               {63, 3, 9}};
  for (const auto& s : shapes) testShape(s[0], s[1], s[2]);
  testProblem(makeProblem(512, 512, 512, Layout{}), nameOf(512, 512, 512, Layout{}));
  for (bool transA : {false, true})
    for (bool transB : {false, true}) {
      testSubBlockBits(70, 66, 300, transA, transB, 1, 3);
      testSubBlockBits(200, 150, 520, transA, transB, 7, 17);
      testSubBlockBits(9, 1500, 700, transA, transB, 2, 5);  // few rows: the tasks split columns
      testSubBlockBits(50, 20, 300, transA, transB, 7, 13);  // a narrow part: two tiles of rows at a time
      // At most 4 columns of many rows: the swapped product (stored transposed) against the
      // direct one it is part of, over two k blocks and over one.
      testSubBlockBits(90, 20, 300, transA, transB, 3, 17);
      testSubBlockBits(130, 6, 70, transA, transB, 0, 4);
      testNonFinite(100, 3, 40, transA, transB);
      testNonFinite(20, 30, 40, transA, transB);
      testNonFinite(70, 100, 300, transA, transB);
    }
  const int64_t epilogueShapes[][3] = {{128, 64, 64}, {128, 2, 64}, {37, 29, 300}, {5, 70, 3}, {9, 20, 0}, {200, 150, 40}};
  for (const auto& s : epilogueShapes)
    for (Activation act : {Activation::Identity, Activation::Tanh, Activation::Relu, Activation::Gelu, Activation::GeluTanh})
      for (int layout = 0; layout < 4; ++layout)
        testEpilogue(s[0], s[1], s[2], layout & 1, layout & 2, layout == 3, act, act != Activation::Relu, act != Activation::Tanh);
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
