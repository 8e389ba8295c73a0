// Single-thread chunk kernels of the policy-gradient family, compiled once per instruction-set
// variant (included by the kernels_*.cpp files after chunk_kernels.h). They use the explicit
// vectors of simd.h: each lane keeps its own running sums in a fixed order, so every result
// depends only on the input and the variant, never on the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cpu_variants.h"
#include "rlhf/policy.h"
#include "simd.h"

namespace rlhf {
namespace RLHF_CHUNK_NS {

using namespace simd;

// --- one row of logits: the softmax statistics in a single pass ---------------------------------
// The row goes in blocks of kSoftmaxVectors vectors. Each block is read once from memory while
// its max is found, then again from L1: each lane rescales its sums only when its max grows,
// then adds e = exp((z - max)/tau) (one exp per element) and e * (z - max)/tau for the entropy.
// Working with z - max (exact in float32 for logits near the max) rather than z/tau keeps the
// digits of large logits.
constexpr int kSoftmaxVectors = 8;

struct SoftmaxLanes {
  VF m;                 // running max of z per lane (-inf until the lane sees a finite value)
  VD sLo, sHi;          // sum of exp((z - m)/tau)
  VD uLo, uHi;          // sum of exp((z - m)/tau) * (z - m)/tau, terms with exp = 0 left out
};

static inline void widen(VF x, VD& lo, VD& hi) {
  lo = zeroD();
  hi = zeroD();
  accumulate(lo, hi, x);
}

// Moves every lane's sums from its max m to newMax: with delta = (m - m')/tau and c = exp(delta),
// s' = c s and u' = c (u + s delta). Lanes that saw nothing yet (m = -inf) hold zeros and stay so.
template <bool kScaled>
static inline void rescale(SoftmaxLanes& L, VF newMax, VF tau) {
  const VM seen = gt(L.m, set1(-__builtin_inff()));
  VF delta = sub(L.m, newMax);
  if (kScaled) delta = div(delta, tau);
  delta = bitAnd(seen, delta);
  const VF c = bitAnd(seen, simd::exp(delta));
  VD cLo, cHi, dLo, dHi;
  widen(c, cLo, cHi);
  widen(delta, dLo, dHi);
  L.uLo = mulD(cLo, addD(L.uLo, mulD(L.sLo, dLo)));
  L.uHi = mulD(cHi, addD(L.uHi, mulD(L.sHi, dHi)));
  L.sLo = mulD(cLo, L.sLo);
  L.sHi = mulD(cHi, L.sHi);
  L.m = newMax;
}

// Elements (< W, at most n) before p reaches a vector-aligned address: a head done with plain
// stores lets every following full vector stream.
static inline int64_t alignHead(const float* p, int64_t n) {
  const int64_t misaligned = static_cast<int64_t>((reinterpret_cast<uintptr_t>(p) / 4) % W);
  const int64_t head = misaligned == 0 ? 0 : W - misaligned;
  return head < n ? head : n;
}

// The first pass over logits from memory requests them this far ahead (past a row's end into the
// next row's): a core's own loads keep too few lines in flight here. The forward ran at 36-48%
// of the paired triad without it and 55-70% with it (2 threads, [4096,32000] and [1024,128256];
// 1 KiB ahead gained nothing, 8 and 16 KiB less than 4).
constexpr int64_t kRowPrefetchBytes = 4096;

// Elementwise passes over several streams request each stream's line kStreamPrefetch elements
// ahead (as for the moments, a core's own loads keep too few lines in flight), once a line (the
// vector at i that starts in a line's first W elements; a mask's once per 64 bytes) or, with
// kEachVector, at every vector. The repeats made the PPO policy and value losses 7-13% faster
// from memory (four streams and a mask each, 16M tokens, 2 threads, alternating builds), the
// sequence sums 7-12% ([4096,4096]), and the KL penalty, whose arithmetic weighs more, 5% slower.
// kAheadBytes: how far ahead the floats' lines are requested (the mask's a quarter of it).
constexpr int64_t kStreamPrefetch = 512;
template <bool kEachVector, int64_t kAheadBytes = kStreamPrefetch * 4, typename... Floats>
RLHF_KEEP_PREFETCH static void prefetchStreams(int64_t i, const uint8_t* mask, Floats... floats) {
  if (kEachVector || i % 16 < W) (prefetchAhead(floats + i, kAheadBytes), ...);
  if (mask != nullptr && (kEachVector || i % 64 < W)) prefetchAhead(mask + i, kAheadBytes / 4);
}

// Sums in float lanes flushed into float64 lanes every kFlushVectors vectors: a few ulps at most.
constexpr int kFlushVectors = 16;

static inline void flushInto(VF& f, VD& lo, VD& hi) {
  accumulate(lo, hi, f);
  f = zero();
}

// The sums of e and of e x over a row, so flushed.
struct ExpSums {
  VF s = zero(), u = zero();
  VD sLo = zeroD(), sHi = zeroD(), uLo = zeroD(), uHi = zeroD();
  int pending = 0;
  void add(VF e, VF x) {
    s = simd::add(s, e);
    u = fmadd(e, x, u);
    if (++pending == kFlushVectors) flush();
  }
  void flush() {
    flushInto(s, sLo, sHi);
    flushInto(u, uLo, uHi);
    pending = 0;
  }
  // The two totals, once flushed.
  double sumE() const { return sumLanes(sLo) + sumLanes(sHi); }
  double sumEx() const { return sumLanes(uLo) + sumLanes(uHi); }
};

// The full vectors of [i, end) as a two-stage pipeline: ahead(j) takes vector j as far as the
// head of its longest dependency chain (an exp, typically), finish(j, a) does the rest, and each
// vector's ahead comes before the previous vector's finish. Two independent chains then sit side
// by side in the out-of-order window, which one long chain a vector fills on its own: 3-10% on
// the exp-bound loops here (KL 3%, PPO policy 5%, pairwise 10%, alternating builds). Returns the
// first index not done (end, or the start of a tail).
template <typename Ahead, typename Finish>
static inline int64_t pipelined(int64_t i, int64_t end, Ahead ahead, Finish finish) {
  if (i + W > end) return i;
  auto current = ahead(i);
  for (; i + 2 * W <= end; i += W) {
    const auto next = ahead(i + W);
    finish(i, current);
    current = next;
  }
  finish(i, current);
  return i + W;
}

// As pipelined, three vectors deep, for loops whose ahead gives one vector (the exp) and whose
// float lanes are flushed into float64 sums: flush() runs after every kFlushVectors finishes, between
// inner loops that hold only the float lanes, and once at the end. The three stages are named
// values, not an array, and the float lanes must be plain locals of the caller (not members of a
// struct, which GCC 12 keeps in memory), reached by the finish and flush only through code forced
// inline (RLHF_ALWAYS_INLINE): otherwise they are stored at every vector. One vector deep, the long
// chains of an exp and a log1p a vector (about 80 cycles) filled the out-of-order window with work
// that waits: pairwise took 22.5 cycles a vector of 16 pairs, about 19 three deep and no less four
// deep (AMD EPYC Zen 5, in the cache, one thread); its log1p since taken once a flush
// (log1pProductStep), about 17.
template <typename Ahead, typename Finish, typename Flush>
static inline int64_t pipelinedThree(int64_t i, int64_t end, Ahead ahead, Finish finish, Flush flush) {
  const int64_t vectors = (end - i) / W;
  if (vectors < 3) {
    for (int64_t k = 0; k < vectors; ++k, i += W) finish(i, ahead(i));
    flush();
    return i;
  }
  VF a = ahead(i), b = ahead(i + W), c = ahead(i + 2 * W);
  for (int64_t left = vectors - 3; left > 0;) {
    const int64_t steps = std::min<int64_t>(left, kFlushVectors);
    for (int64_t s = 0; s < steps; ++s, i += W) {
      const VF next = ahead(i + 3 * W);
      finish(i, a);
      a = b;
      b = c;
      c = next;
    }
    left -= steps;
    flush();
  }
  finish(i, a);
  finish(i + W, b);
  finish(i + 2 * W, c);
  flush();
  return i + 3 * W;
}

// Loads n <= W floats, the missing lanes set to `fill`.
static inline VF loadPartial(const float* p, int64_t n, float fill) {
  alignas(64) float tmp[W];
  for (int i = 0; i < W; ++i) tmp[i] = i < n ? p[i] : fill;
  return load(tmp);
}

template <bool kScaled>
static inline void softmaxBlock(SoftmaxLanes& L, const float* z, int64_t count, VF tau) {
  const int64_t full = count / W, tail = count % W;
  const VF tailValues = tail != 0 ? loadPartial(z + full * W, tail, -__builtin_inff()) : zero();
  VF bm = set1(-__builtin_inff());
  for (int64_t k = 0; k < full; ++k) bm = max(bm, load(z + k * W));
  if (tail != 0) bm = max(bm, tailValues);
  const VF newMax = max(L.m, bm);
  if (anyLane(gt(newMax, L.m))) rescale<kScaled>(L, newMax, tau);
  // Lanes whose max is still -inf subtract 0, so that their -inf elements give exp = 0.
  const VF base = select(eq(L.m, set1(-__builtin_inff())), zero(), L.m);
  VF s = zero(), u = zero();
  auto add1 = [&](VF zv) {
    VF x = sub(zv, base);
    if (kScaled) x = div(x, tau);
    VF xc;
    const VF e = expSoftmax(x, xc);
    s = add(s, e);
    u = fmadd(e, xc, u);
  };
  // The requests ahead go out from this loop, one a vector, rather than from the max's: spread
  // through the exps they keep memory busy while the core computes (3-5% faster than a burst
  // of eight from the short max loop; 2 threads, [4096,32000] and [1024,128256]).
  for (int64_t k = 0; k < full; ++k) {
    prefetchAhead(z + k * W, kRowPrefetchBytes);
    add1(load(z + k * W));
  }
  if (tail != 0) add1(tailValues);
  accumulate(L.sLo, L.sHi, s);
  accumulate(L.uLo, L.uHi, u);
}

// The row's statistics from its lanes: the lanes combined about the row's max M, in lane order.
static RowSoftmax softmaxOfLanes(const SoftmaxLanes& L, float tau) {
  alignas(64) float m[W];
  double s[W], u[W];
  store(m, L.m);
  storeD(s, L.sLo);
  storeD(s + W / 2, L.sHi);
  storeD(u, L.uLo);
  storeD(u + W / 2, L.uHi);
  float M = -__builtin_inff();
  bool nan = false;
  for (int i = 0; i < W; ++i) {
    M = std::fmax(M, m[i]);
    nan |= std::isnan(m[i]) || std::isnan(s[i]) || std::isnan(u[i]);
  }
  if (nan || std::isinf(M)) return {NAN, NAN, NAN};
  double S = 0, U = 0;
  for (int i = 0; i < W; ++i) {
    if (m[i] == -__builtin_inff()) continue;
    const double d = (static_cast<double>(m[i]) - M) / tau, c = std::exp(d);
    S += c * s[i];
    U += c * (u[i] + s[i] * d);
  }
  return {M, std::log(S), U / S};
}

static inline SoftmaxLanes noLanesYet() { return {set1(-__builtin_inff()), zeroD(), zeroD(), zeroD(), zeroD()}; }

// Rows z and z2 (when not null) block by block in turns: two streams in flight a thread rather
// than one. Forward [4096,32000] and [1024,128256], 2 threads, old and new addons alternated in
// one process: 51-62% of the paired triad one row at a time, 54-69% two at a time (the same
// bits: each row's operations are unchanged).
template <bool kScaled>
static void rowSoftmaxT(const float* z, const float* z2, int64_t V, float tau, RowSoftmax* out) {
  SoftmaxLanes L = noLanesYet(), L2 = noLanesYet();
  const VF vtau = set1(tau);
  constexpr int64_t kBlock = kSoftmaxVectors * W;
  for (int64_t j = 0; j < V; j += kBlock) {
    const int64_t count = V - j < kBlock ? V - j : kBlock;
    softmaxBlock<kScaled>(L, z + j, count, vtau);
    if (z2 != nullptr) softmaxBlock<kScaled>(L2, z2 + j, count, vtau);
  }
  out[0] = softmaxOfLanes(L, tau);
  if (z2 != nullptr) out[1] = softmaxOfLanes(L2, tau);
}

RowSoftmax rowSoftmax(const float* z, int64_t V, float tau) {
  RowSoftmax s;
  if (tau == 1.0f) rowSoftmaxT<false>(z, nullptr, V, tau, &s);
  else rowSoftmaxT<true>(z, nullptr, V, tau, &s);
  return s;
}

void rowSoftmaxPair(const float* z, const float* z2, int64_t V, float tau, RowSoftmax* out) {
  if (tau == 1.0f) rowSoftmaxT<false>(z, z2, V, tau, out);
  else rowSoftmaxT<true>(z, z2, V, tau, out);
}

// --- the logits' gradient from the logits alone: two rows a step --------------------------------
// The gradient needs a row's statistics before its first element, so each row is read twice:
// from memory for its statistics, keeping e_j = exp((z_j - m_b)/tau) in a row buffer (m_b the
// largest logit up to z_j's block), then from cache for
//   g_j = ((onehot_j - p_j) gLp - p_j (x_j - meanShift) gH) / tau,
//   p_j = e_j f_b,  f_b = exp((m_b - M)/tau) / S,  x_j = (z_j - M)/tau,
// formed as p_j (a - b (x_j - meanShift)) (+ gLp/tau at the label): six operations a vector
// where the first form takes nine, and no second exp. f_b changes only where the running max
// grows, a few times a row, and is taken in float64 then.
// A step does both, block by block in one loop: the statistics of one row while it writes the
// gradient of the row the step before read, so that memory reads one row and writes another the
// whole time. Passes in turn (the max, the exps, the gradient, with the next row's max read
// along the last two) left memory reading only, then writing only: [1024,128256] and
// [4096,32000], 2 threads, 0.36-0.39 ns an element a thread against 0.32-0.33 so, and
// 0.83-0.86 of the time in scripts/ab-bench.js. Within a block a vector of each row goes in turn (bothBlock).

// This row's logits and exps, which come from cache, are requested this far ahead into L1.
constexpr int64_t kCachedAhead = 1024;

// Floats from the vector boundary before p to p.
static inline int64_t pastVector(const float* p) { return static_cast<int64_t>((reinterpret_cast<uintptr_t>(p) / 4) % W); }

// A row walked in vectors: vector k holds the elements [kW - shift, (k+1)W - shift) that lie in
// [0, V). The statistics walk from the row's start (shift 0), so that where a row lies never
// changes a bit of its result; the gradient walks from its output's vector boundaries, so that
// every whole vector streams. Blocks are kSoftmaxVectors vectors of a walk.
struct RowWalk {
  RowWalk(int64_t n, int64_t s)
      : V(n),
        shift(s),
        vectors((n + shift + W - 1) / W),
        wholeBegin(shift == 0 ? 0 : 1),
        wholeEnd(std::max(wholeBegin, (n + shift) / W)),
        blocks((vectors + kSoftmaxVectors - 1) / kSoftmaxVectors) {}
  int64_t start(int64_t k) const { return k * W - shift; }
  // Whether block b's vectors all lie wholly in the row.
  bool inner(int64_t b) const { return b * kSoftmaxVectors >= wholeBegin && (b + 1) * kSoftmaxVectors <= wholeEnd; }
  int64_t V, shift, vectors, wholeBegin, wholeEnd, blocks;
};

// Vector k of the walk, its lanes outside the row set to fill.
static VF walkLoad(const float* z, const RowWalk& w, int64_t k, float fill) {
  alignas(64) float t[W];
  for (int i = 0; i < W; ++i) {
    const int64_t j = w.start(k) + i;
    t[i] = j >= 0 && j < w.V ? z[j] : fill;
  }
  return load(t);
}

// The largest lane, NaN lanes left out.
static float largestLane(VF v) {
  alignas(64) float t[W];
  store(t, v);
  float m = -__builtin_inff();
  for (int i = 0; i < W; ++i) m = t[i] > m ? t[i] : m;
  return m;
}

// A row's sums of e and e x (x = (z - m)/tau as expSoftmax clamps it) about its running max m.
struct RunningSums {
  float m = -__builtin_inff();
  VD sLo = zeroD(), sHi = zeroD(), uLo = zeroD(), uHi = zeroD();
  // Moves the sums to a larger max: with d = (m - m')/tau and c = exp(d), s' = c s and
  // u' = c (u + s d).
  void raise(float to, float tau) {
    if (m != -__builtin_inff()) {
      const double d = (static_cast<double>(m) - to) / tau;
      const VD c = set1D(std::exp(d)), vd = set1D(d);
      uLo = mulD(c, addD(uLo, mulD(sLo, vd)));
      uHi = mulD(c, addD(uHi, mulD(sHi, vd)));
      sLo = mulD(c, sLo);
      sHi = mulD(c, sHi);
    }
    m = to;
  }
  // The row's statistics; NaN where it holds a NaN or an infinity, or nothing but -inf.
  RowSoftmax statistics() const {
    const double S = sumLanes(sLo) + sumLanes(sHi), U = sumLanes(uLo) + sumLanes(uHi);
    if (std::isnan(S) || std::isnan(U) || std::isinf(m)) return {NAN, NAN, NAN};
    return {m, std::log(S), U / S};
  }
};

// Vectors [k0, k1) of the walk: block b's.
static inline int64_t blockBegin(int64_t b) { return b * kSoftmaxVectors; }
static inline int64_t blockEnd(const RowWalk& w, int64_t b) { return std::min((b + 1) * kSoftmaxVectors, w.vectors); }

// Vector k of the walk, whole (kEdge false) or in part, the lanes outside the row set to fill.
template <bool kEdge>
static inline VF walkVector(const float* z, const RowWalk& w, int64_t k, float fill) {
  return kEdge ? walkLoad(z, w, k, fill) : load(z + w.start(k));
}

// Block b of the row being read, in three parts: its max, taken into the running sums, gives
// the base its exps are about (start); each vector's exps, summed and kept in e (exps); the
// block's sums, and in blockMax[b] the max they are about (finish).
struct BlockExps {
  VF base, s = zero(), u = zero();
};

template <bool kEdge>
static inline BlockExps startExps(RunningSums& R, const float* z, const RowWalk& w, int64_t b, float tau) {
  VF bm = set1(-__builtin_inff());
  for (int64_t k = blockBegin(b); k < blockEnd(w, b); ++k) bm = max(bm, walkVector<kEdge>(z, w, k, -__builtin_inff()));
  if (anyLane(gt(bm, set1(R.m)))) R.raise(largestLane(bm), tau);
  // While the max is still -inf, so is every element so far: about 0 their exps are 0.
  return {set1(R.m == -__builtin_inff() ? 0.0f : R.m)};
}

template <bool kScaled, bool kEdge>
static inline void exps(BlockExps& x, const float* z, const RowWalk& w, int64_t k, float* e, VF tau) {
  // As in softmaxBlock: the requests ahead go out one a vector, spread through the exps.
  if (!kEdge) prefetchAhead(z + w.start(k), kRowPrefetchBytes);
  VF d = sub(walkVector<kEdge>(z, w, k, -__builtin_inff()), x.base);
  if (kScaled) d = div(d, tau);
  VF dc;
  const VF ev = expSoftmax(d, dc);
  x.s = add(x.s, ev);
  x.u = fmadd(ev, dc, x.u);
  store(e + w.start(k), ev);
}

static inline void finishExps(RunningSums& R, const BlockExps& x, int64_t b, float* blockMax) {
  accumulate(R.sLo, R.sHi, x.s);
  accumulate(R.uLo, R.uHi, x.u);
  blockMax[b] = R.m;
}

// The gradient's factors, with 1/tau folded in: g_j = p_j (a - b (x_j - meanShift)) off the
// label, plus c at the label, where a = -gLp/tau, b = gH/tau, c = gLp/tau.
struct GradFactors {
  VF a, b, c, max, meanShift;
};

template <bool kScaled, bool kEntropy, bool kLabel>
static inline VF gradVector(VF z, VF p, const GradFactors& f, VF tau) {
  VF k = f.a;
  if (kEntropy) {
    VF x = sub(z, f.max);
    if (kScaled) x = div(x, tau);
    // x as expSoftmax clamps it: p * x = 0 rather than NaN where z = -inf (there p is 0).
    x = max(set1(kSoftmaxExpFloor), x);
    k = fnmadd(f.b, sub(x, f.meanShift), k);
  }
  return kLabel ? fmadd(p, k, f.c) : mul(p, k);
}

// The gradient of a row whose statistics step is done, walked from its output's boundaries by w:
// its factors, and the f_b of the statistics' blocks at hand. Block b of w starts shift elements
// before block b of the statistics, so its first vector takes its first shift lanes' f_b from
// block b - 1 (a whole vector) and the rest from block b; its other vectors lie in block b.
struct GradRow {
  GradRow(const PipelinedRow& r, const RowWalk& walk, float tau)
      : row(r),
        w(walk),
        f{set1(static_cast<float>(-static_cast<double>(r.gLp) / tau)),
          set1(static_cast<float>(static_cast<double>(r.gH) / tau)),
          set1(static_cast<float>(static_cast<double>(r.gLp) / tau)), set1(r.s.max),
          set1(static_cast<float>(r.s.meanShift))},
        tau(tau),
        lastBlock(((w.V + W - 1) / W + kSoftmaxVectors - 1) / kSoftmaxVectors - 1),
        early(lt(iota(), set1(static_cast<float>(w.shift)))) {}
  // f_b for exps about m: exp((m - M)/tau) / S, 0 about -inf (those exps are all 0).
  float factor(float m) const {
    if (m == -__builtin_inff()) return 0.0f;
    return static_cast<float>(std::exp((static_cast<double>(m) - row.s.max) / tau - row.s.logSum));
  }
  // To block b of w; the factors of its first vector, and of the others.
  void toBlock(int64_t b) {
    const VF before = fb;
    // w's last block may start past the statistics' last (its lanes there lie outside the row).
    const float mb = row.blockMax[std::min(b, lastBlock)];
    if (mb != m) {
      m = mb;
      fb = set1(factor(m));
    }
    first = select(early, before, fb);
  }
  const PipelinedRow& row;
  const RowWalk& w;
  GradFactors f;
  float tau;
  int64_t lastBlock;             // the statistics' last block
  VM early;                      // the lanes of a block's first vector that lie in the block before
  float m = __builtin_nanf("");  // the max fb is about (NaN: none yet)
  VF fb = zero(), first = zero();
};

// Vector k of the gradient of row g.row by its walk w, less the label's one-hot term, its exps
// times fk. `streams`: whole vectors go past the cache.
template <bool kScaled, bool kEntropy, bool kEdge>
static inline void gradient(const GradRow& g, const RowWalk& w, int64_t k, VF fk, bool streams, VF tau) {
  const float* z = g.row.z;
  const float* e = g.row.e;
  float* out = g.row.out;
  if (!kEdge) {
    if (kEntropy) prefetchAhead(z + w.start(k), kCachedAhead);
    prefetchAhead(e + w.start(k), kCachedAhead);
  }
  const VF p = mul(walkVector<kEdge>(e, w, k, 0.0f), fk);
  const VF v = gradVector<kScaled, kEntropy, false>(walkVector<kEdge>(z, w, k, 0.0f), p, g.f, tau);
  if (kEdge) {
    alignas(64) float t[W];
    store(t, v);
    for (int i = 0; i < W; ++i) {
      const int64_t j = w.start(k) + i;
      if (j >= 0 && j < w.V) out[j] = t[i];
    }
  } else if (streams) {
    stream(out + w.start(k), v);
  } else {
    store(out + w.start(k), v);
  }
}

// Block b of one row's statistics, or of another's gradient, or (both inner) of the two, a
// vector of each in turn: the exps' long chains and the gradient's short ones side by side.
template <bool kScaled, bool kEdge>
static void statisticsBlock(RunningSums& R, const PipelinedRow& in, const RowWalk& w, int64_t b, float tau) {
  const VF vtau = set1(tau);
  BlockExps x = startExps<kEdge>(R, in.z, w, b, tau);
  for (int64_t k = blockBegin(b); k < blockEnd(w, b); ++k) exps<kScaled, kEdge>(x, in.z, w, k, in.e, vtau);
  finishExps(R, x, b, in.blockMax);
}

template <bool kScaled, bool kEntropy, bool kEdge>
static void gradientBlock(GradRow& g, int64_t b, bool streams) {
  const VF vtau = set1(g.tau);
  g.toBlock(b);
  for (int64_t k = blockBegin(b); k < blockEnd(g.w, b); ++k)
    gradient<kScaled, kEntropy, kEdge>(g, g.w, k, k == blockBegin(b) ? g.first : g.fb, streams, vtau);
}

template <bool kScaled, bool kEntropy>
static void bothBlock(RunningSums& R, const PipelinedRow& in, const RowWalk& wi, GradRow& g, int64_t b, bool streams) {
  const VF vtau = set1(g.tau);
  BlockExps x = startExps<false>(R, in.z, wi, b, g.tau);
  g.toBlock(b);
  for (int64_t k = blockBegin(b); k < blockEnd(wi, b); ++k) {
    exps<kScaled, false>(x, in.z, wi, k, in.e, vtau);
    gradient<kScaled, kEntropy, false>(g, g.w, k, k == blockBegin(b) ? g.first : g.fb, streams, vtau);
  }
  finishExps(R, x, b, in.blockMax);
}

// The label's element with its one-hot term, by the same operations on its values alone (three
// operations a vector fewer in the loop than finding the label's lane there). After a fence, so
// that no streamed store can land after it.
template <bool kScaled, bool kEntropy>
static void labelElement(const GradRow& g, bool streams) {
  endStreaming(streams);
  const int32_t label = g.row.label;
  if (label < 0 || label >= g.w.V) return;
  const float p = g.row.e[label] * g.factor(g.row.blockMax[label / W / kSoftmaxVectors]);
  alignas(64) float t[W];
  store(t, gradVector<kScaled, kEntropy, true>(set1(g.row.z[label]), set1(p), g.f, set1(g.tau)));
  g.row.out[label] = t[0];
}

template <bool kScaled, bool kEntropy>
static RowSoftmax rowSoftmaxStepT(const PipelinedRow* in, const PipelinedRow* grad, int64_t V, float tau, bool streaming) {
  const RowWalk wi(V, 0), wg(V, grad != nullptr ? pastVector(grad->out) : 0);
  const int64_t inBlocks = in != nullptr ? wi.blocks : 0, gradBlocks = grad != nullptr ? wg.blocks : 0;
  const bool streams = grad != nullptr && streaming;
  RunningSums sums;
  const PipelinedRow none;
  GradRow g(grad != nullptr ? *grad : none, wg, tau);
  for (int64_t b = 0; b < std::max(inBlocks, gradBlocks); ++b) {
    const bool statistics = b < inBlocks, gradient = b < gradBlocks;
    if (statistics && gradient && wi.inner(b) && wg.inner(b)) {
      bothBlock<kScaled, kEntropy>(sums, *in, wi, g, b, streams);
      continue;
    }
    if (statistics) {
      if (wi.inner(b)) statisticsBlock<kScaled, false>(sums, *in, wi, b, tau);
      else statisticsBlock<kScaled, true>(sums, *in, wi, b, tau);
    }
    if (gradient) {
      if (wg.inner(b)) gradientBlock<kScaled, kEntropy, false>(g, b, streams);
      else gradientBlock<kScaled, kEntropy, true>(g, b, streams);
    }
  }
  if (grad != nullptr) labelElement<kScaled, kEntropy>(g, streams);
  return in != nullptr ? sums.statistics() : RowSoftmax{};
}

RowSoftmax rowSoftmaxStep(const PipelinedRow* in, const PipelinedRow* grad, int64_t V, float tau, bool streaming) {
  // A row with a NaN or an infinity has no statistics, and its exps are not what the gradient
  // takes: its gradient is NaN, written as such.
  if (grad != nullptr && std::isnan(grad->s.max)) {
    std::fill(grad->out, grad->out + V, static_cast<float>(NAN));
    grad = nullptr;
  }
  const bool scaled = tau != 1.0f, entropy = grad != nullptr && grad->gH != 0.0f;
  if (scaled && entropy) return rowSoftmaxStepT<true, true>(in, grad, V, tau, streaming);
  if (scaled) return rowSoftmaxStepT<true, false>(in, grad, V, tau, streaming);
  if (entropy) return rowSoftmaxStepT<false, true>(in, grad, V, tau, streaming);
  return rowSoftmaxStepT<false, false>(in, grad, V, tau, streaming);
}

// --- one row of the logits' gradient given the forward's outputs ---------------------------------
// With the row's log-prob lp (and entropy H) from the forward, log p_j = (z_j - L)/tau needs no
// statistics of its own (L = z_label - tau lp, tau times the log-sum-exp): one pass reads each
// logit once, takes one exp and writes
//   g_j = p_j (a - b (log p_j + H)) (+ gLp/tau at the label),  a = -gLp/tau, b = gH/tau
// (d/dz_j of H is -p_j (log p_j + H)/tau). L is formed in float64 and used as its float Lf plus
// the correction (Lf - L)/tau: the logits that carry the mass lie close to L, so that z_j - Lf
// loses no digits, and p_j carries little more than the rounding of the given lp. (Measured from
// z_label instead, the sum (z_j - z_label)/tau + lp of two large terms cost an unlikely label's
// row 2-4 ulps of lp.) The pass also sums p_j and p_j log p_j, which are 1 and -H when lp and H
// belong to this row: the caller checks them (rowGradGiven's RowCheck).
template <bool kScaled, bool kEntropy>
static RowCheck rowGradGivenT(const float* z, int64_t V, float tau, int32_t label, float lp, float H, float gLp,
                              float gH, float* out, bool streaming) {
  const double L = static_cast<double>(z[label]) - static_cast<double>(tau) * lp;
  const float Lf = static_cast<float>(L);
  const VF vtau = set1(tau), ref = set1(Lf), corr = set1(static_cast<float>((Lf - L) / tau)), vlp = set1(lp);
  const VF vH = set1(H);
  const VF a = set1(static_cast<float>(-static_cast<double>(gLp) / tau));
  const VF b = set1(static_cast<float>(static_cast<double>(gH) / tau));
  ExpSums sums;
  // The gradient of one vector of logits without the label's one-hot term, summing p and p log p.
  auto at = [&](VF zv) {
    VF x = sub(zv, ref);
    if (kScaled) x = div(x, vtau);
    VF logp;
    const VF p = expSoftmax(add(x, corr), logp);
    sums.add(p, logp);
    return mul(p, kEntropy ? fnmadd(b, add(logp, vH), a) : a);
  };
  auto partial = [&](int64_t j, int64_t n) {
    alignas(64) float tmp[W];
    const VF g = at(loadPartial(z + j, n, -__builtin_inff()));
    store(tmp, g);
    for (int64_t i = 0; i < n; ++i) out[j + i] = tmp[i];
  };
  const int64_t head = alignHead(out, V);
  if (head > 0) partial(0, head);
  int64_t j = head;
  for (; j + W <= V; j += W) {
    prefetchAhead(z + j, kRowPrefetchBytes);
    const VF g = at(load(z + j));
    if (streaming) stream(out + j, g);
    else store(out + j, g);
  }
  if (j < V) partial(j, V - j);
  sums.flush();
  // The label's element with its one-hot term: log p there is lp itself.
  VF logp;
  const VF p = expSoftmax(vlp, logp);
  const VF k = kEntropy ? fnmadd(b, add(logp, vH), a) : a;
  alignas(64) float t[W];
  store(t, fmadd(p, k, set1(static_cast<float>(static_cast<double>(gLp) / tau))));
  endStreaming(streaming);
  out[label] = t[0];
  return {sums.sumE(), sums.sumEx()};
}

RowCheck rowGradGiven(const float* z, int64_t V, float tau, int32_t label, float lp, float H, float gLp, float gH,
                      float* out, bool streaming) {
  const bool scaled = tau != 1.0f, entropy = gH != 0.0f;
  if (scaled && entropy) return rowGradGivenT<true, true>(z, V, tau, label, lp, H, gLp, gH, out, streaming);
  if (scaled) return rowGradGivenT<true, false>(z, V, tau, label, lp, H, gLp, gH, out, streaming);
  if (entropy) return rowGradGivenT<false, true>(z, V, tau, label, lp, H, gLp, gH, out, streaming);
  return rowGradGivenT<false, false>(z, V, tau, label, lp, H, gLp, gH, out, streaming);
}

// --- KL estimators ---------------------------------------------------------------------------------

// The k3 estimator exp(-d) + d - 1 and its gradient 1 - exp(-d), from one exp. For |d| < 1/2,
// where those forms would lose up to half their digits, k3 is its Taylor series
// d^2 (1/2 - d/3! + d^2/4! - ... - d^7/9!) (terms in pairs, in powers of d^2) and the gradient is
// d - k3 (there k3 < 0.3 |d|: no cancellation).
struct K3 {
  VF k, grad;
};

static inline K3 k3Of(VF d, VF e) {  // e = exp(-d)
  const VF d2 = mul(d, d);
  VF q = fmadd(set1(-1.0f / 362880), d, set1(1.0f / 40320));
  q = fmadd(q, d2, fmadd(set1(-1.0f / 5040), d, set1(1.0f / 720)));
  q = fmadd(q, d2, fmadd(set1(-1.0f / 120), d, set1(1.0f / 24)));
  q = fmadd(q, d2, fmadd(set1(-1.0f / 6), d, set1(0.5f)));
  const VF series = mul(q, d2);
  const VM small = lt(absf(d), set1(0.5f));
  return {select(small, series, sub(add(e, d), set1(1.0f))), select(small, sub(d, series), sub(set1(1.0f), e))};
}

// clamp(x, -c, c) keeping NaN (max/min return their second operand when either is NaN).
static inline VF clampSym(VF x, float c) { return min(set1(c), max(set1(-c), x)); }

// A vector of log-ratios as far as the loop takes it ahead of the one it finishes (see
// pipelined): d, d clamped, and for k3 exp(-dc), the head of its longest dependency chain.
struct KlAhead {
  VF d, dc, e;
};

// kClamps: either clamp is set (without, both are the identity and are skipped).
template <KlEstimator kEst, bool kClamps>
static inline KlAhead klAhead(VF lp, VF ref, const KlOptions& o) {
  const VF d = sub(lp, ref);
  const VF dc = kClamps ? clampSym(d, o.clampLogRatio) : d;
  return {d, dc, kEst == KlEstimator::K3 ? simd::exp(sub(zero(), dc)) : zero()};
}

template <KlEstimator kEst, bool kClamps>
static inline void klVector(const KlAhead& x, const KlOptions& o, VF& kl, VF& grad) {
  const VF d = x.d, dc = x.dc;
  VF k, g;
  switch (kEst) {
    case KlEstimator::K1: k = dc; g = set1(1.0f); break;
    case KlEstimator::K2: k = mul(mul(set1(0.5f), dc), dc); g = dc; break;
    case KlEstimator::K3: {
      const K3 t = k3Of(dc, x.e);
      k = t.k;
      g = t.grad;
      break;
    }
    case KlEstimator::Abs:
      k = absf(dc);
      g = sub(bitAnd(gt(dc, zero()), set1(1.0f)), bitAnd(lt(dc, zero()), set1(1.0f)));
      break;
  }
  if (kClamps) {
    const VM ratioClamped = gt(absf(d), set1(o.clampLogRatio)), outClamped = gt(absf(k), set1(o.clampOutput));
    g = andNot(bitOr(ratioClamped, outClamped), g);
    k = clampSym(k, o.clampOutput);
  }
  kl = k;
  grad = o.straightThrough ? d : g;
}

// A full vector of outputs: streamed past the cache when asked and the address allows.
static inline void storeOut(float* p, VF v, bool streaming) {
  if (streaming && (reinterpret_cast<uintptr_t>(p) % (4 * W)) == 0) stream(p, v);
  else store(p, v);
}

template <KlEstimator kEst, bool kClamps>
static void klRangeT(const KlPenaltyArgs& a, int64_t i0, int64_t i1, bool streaming) {
  // Locals that no store through kl or grad can alias (see PolicyView).
  const float* __restrict lp = a.logprobs;
  const float* __restrict ref = a.refLogprobs;
  float* __restrict kl = a.kl;
  float* __restrict grad = a.grad;
  const KlOptions o = a.o;
  VF k, g;
  // The n < W elements from j: the head before the outputs reach a vector boundary, or the tail.
  auto partial = [&](int64_t j, int64_t n) {
    alignas(64) float tk[W], tg[W];
    const KlAhead x = klAhead<kEst, kClamps>(loadPartial(lp + j, n, 0.0f), loadPartial(ref + j, n, 0.0f), o);
    klVector<kEst, kClamps>(x, o, k, g);
    store(tk, k);
    store(tg, g);
    for (int64_t t = 0; t < n; ++t) {
      kl[j + t] = tk[t];
      grad[j + t] = tg[t];
    }
  };
  // Whole vectors of stores that straddle no line: a 64-byte vector at an address a line plus 16
  // bytes (where large Float32Arrays start) would write two lines with every store.
  const int64_t head = alignHead(kl + i0, i1 - i0);
  if (head > 0) partial(i0, head);
  const int64_t i = pipelined(
      i0 + head, i1, [&](int64_t j) { return klAhead<kEst, kClamps>(load(lp + j), load(ref + j), o); },
      [&](int64_t j, const KlAhead& x) {
        prefetchStreams<false>(j, nullptr, lp, ref);
        klVector<kEst, kClamps>(x, o, k, g);
        storeOut(kl + j, k, streaming);
        storeOut(grad + j, g, streaming);
      });
  if (i < i1) partial(i, i1 - i);
  endStreaming(streaming);
}

// One row of MaskedScaleRows: the head before out reaches a vector boundary and the tail with
// scalars, whole vectors between (streamed when asked); the addend patched into its vector.
template <bool kX, bool kMask>
static void maskedScaleRow(const float* __restrict x, const uint8_t* __restrict m, float s, float* __restrict out,
                           int64_t n, int64_t at, double add, bool streaming) {
  const auto scalar = [&](int64_t t) {
    const float v = !kMask || m[t] != 0 ? (kX ? s * x[t] : s) : 0.0f;
    return t == at ? static_cast<float>(static_cast<double>(v) + add) : v;
  };
  const int64_t head = alignHead(out, n);
  for (int64_t t = 0; t < head; ++t) out[t] = scalar(t);
  const VF vs = set1(s);
  int64_t t = head;
  for (; t + W <= n; t += W) {
    if (kX) prefetchStreams<true>(t, kMask ? m : nullptr, x);
    else if (kMask) prefetchStreams<true>(t, m);
    VF v = kX ? mul(vs, load(x + t)) : vs;
    if (kMask) v = bitAnd(maskFromBytes(m + t), v);
    if (at >= t && at < t + W) {
      alignas(64) float lanes[W];
      store(lanes, v);
      lanes[at - t] = static_cast<float>(static_cast<double>(lanes[at - t]) + add);
      v = load(lanes);
    }
    storeOut(out + t, v, streaming);
  }
  for (; t < n; ++t) out[t] = scalar(t);
}

template <bool kX, bool kMask>
static void maskedScaleRowsT(const MaskedScaleRows& r, int64_t b0, int64_t b1, bool streaming) {
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t i = b * r.T;
    maskedScaleRow<kX, kMask>(kX ? r.x + i : nullptr, kMask ? r.mask + i : nullptr, r.scale[b], r.out + i, r.T,
                              r.at != nullptr ? r.at[b] : -1, r.add != nullptr ? r.add[b] : 0.0, streaming);
  }
  endStreaming(streaming);
}

void maskedScaleRows(const MaskedScaleRows& r, int64_t b0, int64_t b1, bool streaming) {
  if (r.x != nullptr) {
    if (r.mask != nullptr) maskedScaleRowsT<true, true>(r, b0, b1, streaming);
    else maskedScaleRowsT<true, false>(r, b0, b1, streaming);
  } else {
    if (r.mask != nullptr) maskedScaleRowsT<false, true>(r, b0, b1, streaming);
    else maskedScaleRowsT<false, false>(r, b0, b1, streaming);
  }
}

template <KlEstimator kEst>
static void klRangeOf(const KlPenaltyArgs& a, int64_t i0, int64_t i1, bool streaming) {
  if (a.o.clampLogRatio != kNoClamp || a.o.clampOutput != kNoClamp) klRangeT<kEst, true>(a, i0, i1, streaming);
  else klRangeT<kEst, false>(a, i0, i1, streaming);
}

void klRange(const KlPenaltyArgs& a, int64_t i0, int64_t i1, bool streaming) {
  switch (a.o.estimator) {
    case KlEstimator::K1: return klRangeOf<KlEstimator::K1>(a, i0, i1, streaming);
    case KlEstimator::K2: return klRangeOf<KlEstimator::K2>(a, i0, i1, streaming);
    case KlEstimator::K3: return klRangeOf<KlEstimator::K3>(a, i0, i1, streaming);
    case KlEstimator::Abs: return klRangeOf<KlEstimator::Abs>(a, i0, i1, streaming);
  }
}

// --- the PPO policy loss over a block of tokens -------------------------------------------------
// Tokens [i0, i1) of the flat [B,T] batch, row by row. Writes the per-token gradient
// w_b * dl/dr * r (0 where masked or where the log-ratio clamp is active) and returns the
// block's sums. With `seqLogRatio` (the sequence importance level) every token of row b uses
// that row's log-ratio; the caller then spreads each row's gradient over its tokens.

// Sums over a block: float lanes over at most kFlushVectors vectors, flushed into float64 lanes;
// counts stay exact in float lanes (at most kLossBlock / W per lane). Only the loss is weighed
// by its row: at each row's end its float64 lanes, times the row's weight, join the block's
// (WeighedLoss). Every sum is reduced across its lanes once a block: reduced at each row's end, as
// before, they had cost a 64-token row more than its tokens (1.7 against 0.77 ns a token).

struct PolicyLanes {
  VF loss, d, d2, k3, clipped, lower;
  VD lossLo, lossHi, dLo, dHi, d2Lo, d2Hi, k3Lo, k3Hi;
  int pending;
};

// A row's loss, in its float lanes and their float64 flushes, weighed by the row's weight into
// the block's lanes; the row's lanes start again from zero.
struct WeighedLoss {
  VD lo = zeroD(), hi = zeroD();
  void add(VF& loss, VD& rowLo, VD& rowHi, double weight) {
    flushInto(loss, rowLo, rowHi);
    const VD w = set1D(weight);
    lo = addD(lo, mulD(w, rowLo));
    hi = addD(hi, mulD(w, rowHi));
    rowLo = zeroD();
    rowHi = zeroD();
  }
  double sum() const { return sumLanes(lo) + sumLanes(hi); }
};

static inline void flush(PolicyLanes& L) {
  flushInto(L.loss, L.lossLo, L.lossHi);
  flushInto(L.d, L.dLo, L.dHi);
  flushInto(L.d2, L.d2Lo, L.d2Hi);
  flushInto(L.k3, L.k3Lo, L.k3Hi);
  L.pending = 0;
}

// x (values or a mask) in the lanes a partial vector holds and 0 in its padding (`valid` marks
// the lanes held); a full vector's x as it is.
template <bool kPartial, typename V>
static inline V inLanes(VM valid, V x) {
  return kPartial ? bitAnd(valid, x) : x;
}

static inline double sumLanesF(VF v) {
  alignas(64) float t[W];
  store(t, v);
  double s = 0;
  for (int i = 0; i < W; ++i) s += t[i];
  return s;
}

// What one block reads, copied out of the arguments: locals that no store through `grad` can
// alias, so the compiler keeps them in registers across the loop.
struct PolicyView {
  const float* __restrict lp;
  const float* __restrict old;
  const float* __restrict adv;
  const uint8_t* __restrict mask;
  float* __restrict grad;
  bool perRow, streaming, clamp, dual, ratioClipfrac;
  float clampLogRatio, lo, hi, dualClip;
};

template <bool kPartial>
static inline VF loadOr(const float* p, int64_t n) {
  return kPartial ? loadPartial(p, n, 0.0f) : load(p);
}

template <bool kPartial>
static inline VM validLanes(const uint8_t* mask, int64_t i, int64_t n) {
  VM valid = kPartial ? lt(iota(), set1(static_cast<float>(n))) : allLanes();
  if (mask != nullptr) {
    alignas(8) uint8_t mb[W] = {};
    if (kPartial) for (int64_t j = 0; j < n; ++j) mb[j] = mask[i + j];
    valid = bitAnd(valid, maskFromBytes(kPartial ? mb : mask + i));
  }
  return valid;
}

template <bool kPartial>
static inline void storeOr(float* p, VF v, int64_t n, bool streaming) {
  if (kPartial) {
    alignas(64) float tmp[W];
    store(tmp, v);
    for (int64_t j = 0; j < n; ++j) p[j] = tmp[j];
  } else {
    storeOut(p, v, streaming);
  }
}

// A vector of tokens as far as the loop takes it ahead of the one it finishes (see pipelined): the
// token log-ratios, the log-ratio the ratio is taken of (clamped), and the ratio.
struct PolicyAhead {
  VF dTok, d, r;
};

// kPlain: the options of most calls, known when compiling (no log-ratio clamp, no dual clip,
// advantages per token, the branch clipfrac), so that their tests leave the loop: 15% of it.
template <bool kPlain>
struct PolicyFlags {
  bool perRow, clamp, dual, ratioClipfrac;
  explicit PolicyFlags(const PolicyView& v)
      : perRow(!kPlain && v.perRow), clamp(!kPlain && v.clamp), dual(!kPlain && v.dual),
        ratioClipfrac(!kPlain && v.ratioClipfrac) {}
};

template <bool kPartial, bool kSequence, bool kPlain>
static inline PolicyAhead policyAhead(const PolicyView& v, int64_t i, int64_t n, float seqD) {
  const PolicyFlags<kPlain> f(v);
  const VF dTok = sub(loadOr<kPartial>(v.lp + i, n), loadOr<kPartial>(v.old + i, n));
  const VF dRaw = kSequence ? set1(seqD) : dTok;
  const VF d = f.clamp ? clampSym(dRaw, v.clampLogRatio) : dRaw;
  return {dTok, d, simd::exp(d)};
}

template <bool kPartial, bool kSequence, bool kPlain>
static inline void policyVector(const PolicyView& v, int64_t i, int64_t n, const PolicyAhead& p, float advRow,
                                float seqD, VF w, PolicyLanes& L) {
  const PolicyFlags<kPlain> f(v);
  const VF dTok = p.dTok, d = p.d, r = p.r;
  const VM valid = validLanes<kPartial>(v.mask, i, n);
  const VF A = f.perRow ? set1(advRow) : loadOr<kPartial>(v.adv + i, n);
  const VF dRaw = kSequence ? set1(seqD) : dTok;
  const VM clampActive = f.clamp ? gt(absf(dRaw), set1(v.clampLogRatio)) : noLanes();
  const VF negA = sub(zero(), A);
  const VF unclipped = mul(negA, r);
  const VF clipped = mul(negA, min(set1(v.hi), max(set1(v.lo), r)));
  const VM clippedWins = gt(clipped, unclipped);
  VF l = select(clippedWins, clipped, unclipped);
  VF dldr = andNot(clippedWins, negA);
  VM lower = noLanes();
  if (f.dual) {
    const VF cap = mul(negA, set1(v.dualClip));
    lower = bitAnd(lt(A, zero()), gt(l, cap));
    l = select(lower, cap, l);
    dldr = andNot(lower, dldr);
  }
  // Zero wherever dl/dr is (also where r overflowed: 0 * inf would be NaN).
  const VM gradZero = bitOr(clampActive, eq(dldr, zero()));
  storeOr<kPartial>(v.grad + i, bitAnd(andNot(gradZero, valid), mul(mul(w, dldr), r)), n, v.streaming);
  L.loss = addIn(L.loss, valid, l);
  const VM counted = f.ratioClipfrac ? bitOr(lt(r, set1(v.lo)), gt(r, set1(v.hi))) : clippedWins;
  L.clipped = countIn(L.clipped, bitAnd(valid, counted));
  L.lower = countIn(L.lower, bitAnd(valid, lower));
  // The KL stats take each token's own clamped log-ratio dt: approxKl = mean(dt^2)/2, ppoKl =
  // mean(-dt), approxKlK3 = mean(exp(dt) - 1 - dt) in float32 as CleanRL computes it (at the
  // token level r is exp(dt) already).
  const VF dt = kSequence && f.clamp ? clampSym(dTok, v.clampLogRatio) : (kSequence ? dTok : d);
  const VF rt = kSequence ? simd::exp(dt) : r;
  L.d = addIn(L.d, valid, dt);
  L.d2 = addIn(L.d2, valid, mul(dt, dt));
  L.k3 = addIn(L.k3, valid, sub(sub(rt, set1(1.0f)), dt));
  if (++L.pending == kFlushVectors) flush(L);
}

// The view by value: a local whose address no store can reach, so that its flags and constants
// stay in registers across the loop (through a reference they were reloaded, and branched on,
// every vector).
template <bool kSequence, bool kPlain>
static PolicyBlock policyBlockT(const PolicyView v, int64_t T, const double* rowWeight, const float* seqLogRatio,
                                int64_t i0, int64_t i1) {
  const PolicyFlags<kPlain> f(v);
  PolicyBlock out;
  PolicyLanes L{zero(), zero(), zero(), zero(), zero(), zero(), zeroD(), zeroD(), zeroD(), zeroD(),
                zeroD(), zeroD(), zeroD(), zeroD(), 0};
  WeighedLoss weighed;
  for (int64_t i = i0; i < i1;) {
    const int64_t b = i / T;
    const int64_t end = (b + 1) * T < i1 ? (b + 1) * T : i1;
    const VF w = set1(static_cast<float>(rowWeight[b]));
    const float advRow = f.perRow ? v.adv[b] : 0.0f, seqD = kSequence ? seqLogRatio[b] : 0.0f;
    // The n < W tokens from j: the row's head before the stores can stream, or its tail.
    auto partial = [&](int64_t j, int64_t n) {
      policyVector<true, kSequence, kPlain>(v, j, n, policyAhead<true, kSequence, kPlain>(v, j, n, seqD), advRow, seqD,
                                            w, L);
    };
    const int64_t head = v.streaming ? alignHead(v.grad + i, end - i) : 0;
    if (head > 0) partial(i, head);
    i = pipelined(
        i + head, end, [&](int64_t j) { return policyAhead<false, kSequence, kPlain>(v, j, W, seqD); },
        [&](int64_t j, const PolicyAhead& p) {
          prefetchStreams<true>(j, v.mask, v.lp, v.old, f.perRow ? v.lp : v.adv);
          policyVector<false, kSequence, kPlain>(v, j, W, p, advRow, seqD, w, L);
        });
    if (i < end) partial(i, end - i);
    i = end;
    weighed.add(L.loss, L.lossLo, L.lossHi, rowWeight[b]);
  }
  flush(L);
  out.loss = weighed.sum();
  out.kl2 = 0.5 * (sumLanes(L.d2Lo) + sumLanes(L.d2Hi));
  out.kl3 = sumLanes(L.k3Lo) + sumLanes(L.k3Hi);
  out.klp = -(sumLanes(L.dLo) + sumLanes(L.dHi));
  out.clipped = static_cast<int64_t>(sumLanesF(L.clipped));
  out.lower = static_cast<int64_t>(sumLanesF(L.lower));
  return out;
}

PolicyBlock policyBlock(const PolicyLossArgs& a, const double* rowWeight, const float* seqLogRatio, int64_t i0,
                        int64_t i1, bool streaming) {
  const PolicyLossOptions& o = a.o;
  const PolicyView v{a.logprobs, a.oldLogprobs, a.advantages, a.mask, a.grad, a.advantagesPerRow, streaming,
                     o.clampLogRatio != kNoClamp, o.dualClip > 0, o.clipfracMode == ClipfracMode::Ratio,
                     o.clampLogRatio, 1.0f - o.clipLow, 1.0f + o.clipHigh, o.dualClip};
  const bool plain = !v.perRow && !v.clamp && !v.dual && !v.ratioClipfrac;
  if (seqLogRatio != nullptr)
    return plain ? policyBlockT<true, true>(v, a.T, rowWeight, seqLogRatio, i0, i1)
                 : policyBlockT<true, false>(v, a.T, rowWeight, seqLogRatio, i0, i1);
  return plain ? policyBlockT<false, true>(v, a.T, rowWeight, seqLogRatio, i0, i1)
               : policyBlockT<false, false>(v, a.T, rowWeight, seqLogRatio, i0, i1);
}

// --- the value loss over a block of tokens ----------------------------------------------------------
// Writes the per-token gradient 0.5 * w_b * dl/dv and returns the block's sums, with the moments
// of the returns R and of the errors R - v about the block's first valid values (shifted sums,
// so that a large common offset does not cancel the digits of the variances).

// As PolicyLanes: float lanes flushed into float64 every kFlushVectors vectors.
struct ValueLanes {
  VF loss, r1, r2, e1, e2, clipped, valid;
  VD lossLo, lossHi, r1Lo, r1Hi, r2Lo, r2Hi, e1Lo, e1Hi, e2Lo, e2Hi;
  int pending;
};

static inline void flush(ValueLanes& L) {
  flushInto(L.loss, L.lossLo, L.lossHi);
  flushInto(L.r1, L.r1Lo, L.r1Hi);
  flushInto(L.r2, L.r2Lo, L.r2Hi);
  flushInto(L.e1, L.e1Lo, L.e1Hi);
  flushInto(L.e2, L.e2Lo, L.e2Hi);
  L.pending = 0;
}

// The value loss's inputs and options as locals (see PolicyView).
struct ValueView {
  const float* __restrict values;
  const float* __restrict old;
  const float* __restrict returns;
  const uint8_t* __restrict mask;
  float* __restrict grad;
  bool clipped, streaming;
  float clip, shiftR, shiftE;
};

template <bool kPartial>
static inline void valueVector(const ValueView& x, int64_t i, int64_t n, VF halfW, ValueLanes& L) {
  const VF v = loadOr<kPartial>(x.values + i, n);
  const VF R = loadOr<kPartial>(x.returns + i, n);
  const VM valid = validLanes<kPartial>(x.mask, i, n);
  const VF err = sub(v, R);
  VF l = mul(err, err);
  VF dldv = mul(set1(2.0f), err);
  VM clippedWins = noLanes();
  if (x.clipped) {
    const VF old = loadOr<kPartial>(x.old + i, n);
    // max and min return their second operand when either is NaN: a NaN old value reaches vc.
    const VF vc = min(max(v, sub(old, set1(x.clip))), add(old, set1(x.clip)));
    const VF ce = sub(vc, R);
    const VF lc = mul(ce, ce);
    clippedWins = gt(lc, l);
    l = select(clippedWins, lc, l);
    dldv = andNot(clippedWins, dldv);
    const VM nan = isNan(lc);
    l = select(nan, lc, l);
    dldv = select(nan, lc, dldv);
  }
  storeOr<kPartial>(x.grad + i, bitAnd(valid, mul(halfW, dldv)), n, x.streaming);
  L.loss = addIn(L.loss, valid, l);
  L.clipped = countIn(L.clipped, bitAnd(valid, clippedWins));
  L.valid = countIn(L.valid, valid);
  const VF dr = bitAnd(valid, sub(R, set1(x.shiftR)));
  const VF de = bitAnd(valid, sub(sub(R, v), set1(x.shiftE)));
  L.r1 = add(L.r1, dr);
  L.r2 = add(L.r2, mul(dr, dr));
  L.e1 = add(L.e1, de);
  L.e2 = add(L.e2, mul(de, de));
  if (++L.pending == kFlushVectors) flush(L);
}

static MaskedMoments momentsFromShifted(double count, double shift, double s1, double s2) {
  MaskedMoments m;
  if (count == 0) return m;
  m.count = count;
  m.mean = shift + s1 / count;
  const double m2 = s2 - s1 * (s1 / count);
  m.m2 = m2 < 0 ? 0.0 : m2;  // rounding can dip below 0; a NaN stays NaN
  return m;
}

ValueBlock valueBlock(const ValueLossArgs& a, const double* rowWeight, int64_t i0, int64_t i1, bool streaming) {
  ValueBlock out;
  int64_t first = i0;
  if (a.mask != nullptr)
    while (first < i1 && a.mask[first] == 0) ++first;
  if (first == i1) {
    for (int64_t i = i0; i < i1; ++i) a.grad[i] = 0;
    return out;
  }
  const ValueView x{a.values, a.oldValues, a.returns, a.mask, a.grad, a.clip != kNoClamp, streaming, a.clip,
                    a.returns[first], a.returns[first] - a.values[first]};
  ValueLanes L{zero(), zero(), zero(), zero(), zero(), zero(), zero(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD(),
               zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), 0};
  const int64_t T = a.T;
  WeighedLoss weighed;
  for (int64_t i = i0; i < i1;) {
    const int64_t b = i / T;
    const int64_t end = (b + 1) * T < i1 ? (b + 1) * T : i1;
    const VF halfW = set1(0.5f * static_cast<float>(rowWeight[b]));
    const int64_t head = x.streaming ? alignHead(x.grad + i, end - i) : 0;
    if (head > 0) {
      valueVector<true>(x, i, head, halfW, L);
      i += head;
    }
    for (; i + W <= end; i += W) {
      prefetchStreams<true>(i, x.mask, x.values, x.returns, x.clipped ? x.old : x.values);
      valueVector<false>(x, i, W, halfW, L);
    }
    if (i < end) {
      valueVector<true>(x, i, end - i, halfW, L);
      i = end;
    }
    weighed.add(L.loss, L.lossLo, L.lossHi, rowWeight[b]);
  }
  flush(L);
  out.loss = weighed.sum();
  out.valid = static_cast<int64_t>(sumLanesF(L.valid));
  out.clipped = static_cast<int64_t>(sumLanesF(L.clipped));
  const double n = static_cast<double>(out.valid);
  out.returns = momentsFromShifted(n, x.shiftR, sumLanes(L.r1Lo) + sumLanes(L.r1Hi), sumLanes(L.r2Lo) + sumLanes(L.r2Hi));
  out.errors = momentsFromShifted(n, x.shiftE, sumLanes(L.e1Lo) + sumLanes(L.e1Hi), sumLanes(L.e2Lo) + sumLanes(L.e2Hi));
  return out;
}

}  // namespace RLHF_CHUNK_NS
}  // namespace rlhf
