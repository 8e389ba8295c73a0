// Single-thread chunk kernels, written as plain loops that the compiler vectorises. This header
// is compiled twice, once for the x86-64 baseline and once for AVX2 (see kernels_*.cpp), inside
// the namespace named by RLHF_CHUNK_NS. The whole tree builds with -ffp-contract=off, so every
// element is computed with the same operations in the same order as the scalar reference and
// the results are bit-identical to it, whatever the instruction set or the thread count.
//
// Included only by kernels_base.cpp and kernels_avx2.cpp.
#include <cstdint>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "cpu_variants.h"
#include "rlhf/kernels.h"

namespace rlhf {
namespace RLHF_CHUNK_NS {

// Copies a finished row of outputs to its destination. With `streaming` (outputs much larger
// than the last-level cache) it uses non-temporal stores, which skip the read that a normal
// store of a line not in cache costs. Either way the values are the same bits.
static void storeRow(float* __restrict dst, const float* __restrict src, int64_t n, bool streaming) {
  int64_t i = 0;
#if defined(__SSE2__)
  if (streaming) {
    for (; i < n && (reinterpret_cast<uintptr_t>(dst + i) & 15) != 0; ++i) dst[i] = src[i];
    for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
  }
#endif
  for (; i < n; ++i) dst[i] = src[i];
}

// Orders the non-temporal stores before whatever the thread does next (the pool's hand-off).
static void endStreaming(bool streaming) {
#if defined(__SSE2__)
  if (streaming) _mm_sfence();
#endif
}

// --- time-major GAE: columns [n0,n1), time running backwards, vectorised across columns ------
// Columns go in blocks of kGaeBlock so that the running advantage and one row of each output
// stay in L1 between time steps.

template <bool kTerminated, bool kTruncated, bool kGammaVec, bool kLambdaVec>
static void gaeBlockT(const GaeArgs& a, int64_t n0, int64_t w, float* __restrict next, float* __restrict advRow,
                      float* __restrict retRow, bool streaming) {
  const int64_t T = a.T, N = a.N;
  for (int64_t j = 0; j < w; ++j) next[j] = 0.0f;
  for (int64_t t = T - 1; t >= 0; --t) {
    const bool last = t == T - 1;
    const int64_t row = t * N + n0;
    const float* __restrict r = a.rewards + row;
    const float* __restrict v = a.values + row;
    const float* __restrict nv = last ? a.nextValuesLast + n0 : a.nextValues + row;
    const uint8_t* __restrict term =
        kTerminated ? (last ? a.terminatedLast + n0 : a.terminated + row) : nullptr;
    const uint8_t* __restrict trunc = kTruncated ? a.truncated + row : nullptr;
    const float* __restrict g =
        a.gammaArray != nullptr ? a.gammaArray + t * a.gammaStrideT + n0 * a.gammaStrideN : nullptr;
    const float* __restrict l = a.lambdaArray != nullptr
                                    ? a.lambdaArray + t * a.lambdaStrideT + n0 * a.lambdaStrideN
                                    : nullptr;
    const float gs = g != nullptr ? g[0] : a.gammaValue;
    const float ls = l != nullptr ? l[0] : a.lambdaValue;
    for (int64_t j = 0; j < w; ++j) {
      const float gamma = kGammaVec ? g[j] : gs;
      const float lambda = kLambdaVec ? l[j] : ls;
      // Flags as 0/1 arithmetic rather than branches, so that the loop vectorises.
      const int32_t isTerm = kTerminated ? term[j] != 0 : 0;
      const int32_t isTrunc = kTruncated ? trunc[j] != 0 : 0;
      const float notTerminated = static_cast<float>(1 - isTerm);
      const float carry = static_cast<float>(1 - (isTerm | isTrunc));
      const float delta = r[j] + gamma * notTerminated * nv[j] - v[j];
      const float A = delta + gamma * lambda * carry * next[j];
      next[j] = A;
      advRow[j] = A;
      retRow[j] = A + v[j];
    }
    storeRow(a.advantages + row, advRow, w, streaming);
    storeRow(a.returns + row, retRow, w, streaming);
  }
}

using GaeBlockFn = void (*)(const GaeArgs&, int64_t, int64_t, float*, float*, float*, bool);

template <bool kTerminated, bool kTruncated>
static GaeBlockFn pickRates(const GaeArgs& a) {
  const bool gv = a.gammaArray != nullptr && a.gammaStrideN != 0;
  const bool lv = a.lambdaArray != nullptr && a.lambdaStrideN != 0;
  if (gv && lv) return gaeBlockT<kTerminated, kTruncated, true, true>;
  if (gv) return gaeBlockT<kTerminated, kTruncated, true, false>;
  if (lv) return gaeBlockT<kTerminated, kTruncated, false, true>;
  return gaeBlockT<kTerminated, kTruncated, false, false>;
}

void gaeColumns(const GaeArgs& a, int64_t n0, int64_t n1, float* scratch, bool streaming) {
  GaeBlockFn fn;
  if (a.terminated && a.truncated) fn = pickRates<true, true>(a);
  else if (a.terminated) fn = pickRates<true, false>(a);
  else if (a.truncated) fn = pickRates<false, true>(a);
  else fn = pickRates<false, false>(a);
  const int64_t cap = n1 - n0 < kGaeBlock ? n1 - n0 : kGaeBlock;  // scratch holds 3*cap floats
  for (int64_t b = n0; b < n1; b += cap) {
    const int64_t w = n1 - b < cap ? n1 - b : cap;
    fn(a, b, w, scratch, scratch + cap, scratch + 2 * cap, streaming);
  }
  endStreaming(streaming);
}

// --- batch-major token GAE and returns: rows [b0,b1) ----------------------------------------
// One row alone is bound by the latency of its recursion, so kRows rows run interleaved. Their
// outputs go to row buffers whose pitch is not a multiple of 4 KiB: written in place, the rows
// (T*4 bytes apart) would alias in the store buffer and in L1 sets and run several times slower.

template <MaskMode kMode, int G>
static void tokenGaeGroup(const TokenGaeArgs& a, int64_t b, float* __restrict buf, bool streaming) {
  const int64_t T = a.T, pitch = rowPitch(T);
  const float gamma = a.gamma, gl = a.gamma * a.lambda;
  float nextValue[G], nextAdv[G];
  for (int g = 0; g < G; ++g) {
    nextValue[g] = a.lastValues != nullptr ? a.lastValues[b + g] : 0.0f;
    nextAdv[g] = 0.0f;
  }
  for (int64_t t = T - 1; t >= 0; --t) {
    for (int g = 0; g < G; ++g) {
      const int64_t i = (b + g) * T + t;
      const float r = a.rewards[i], v = a.values[i];
      const bool valid = kMode == MaskMode::None || a.mask[i] != 0;
      float A, ret;
      if (kMode == MaskMode::Premask) {
        const float rt = valid ? r : 0.0f, vt = valid ? v : 0.0f;
        A = rt + gamma * nextValue[g] - vt + gl * nextAdv[g];
        nextValue[g] = vt;
        ret = A + vt;
      } else if (kMode == MaskMode::Skip) {
        const float candidate = r + gamma * nextValue[g] - v + gl * nextAdv[g];
        A = valid ? candidate : nextAdv[g];
        nextValue[g] = valid ? v : nextValue[g];
        ret = A + v;
      } else {
        A = r + gamma * nextValue[g] - v + gl * nextAdv[g];
        nextValue[g] = v;
        ret = A + v;
      }
      nextAdv[g] = A;
      buf[(2 * g) * pitch + t] = A;
      buf[(2 * g + 1) * pitch + t] = ret;
    }
  }
  for (int g = 0; g < G; ++g) {
    storeRow(a.advantages + (b + g) * T, buf + (2 * g) * pitch, T, streaming);
    storeRow(a.returns + (b + g) * T, buf + (2 * g + 1) * pitch, T, streaming);
  }
}

template <MaskMode kMode>
static void tokenGaeRowsT(const TokenGaeArgs& a, int64_t b0, int64_t b1, float* buf, bool streaming) {
  int64_t b = b0;
  for (; b + kRows <= b1; b += kRows) tokenGaeGroup<kMode, kRows>(a, b, buf, streaming);
  for (; b < b1; ++b) tokenGaeGroup<kMode, 1>(a, b, buf, streaming);
}

void tokenGaeRows(const TokenGaeArgs& a, int64_t b0, int64_t b1, float* scratch, bool streaming) {
  switch (a.maskMode) {
    case MaskMode::Premask: tokenGaeRowsT<MaskMode::Premask>(a, b0, b1, scratch, streaming); break;
    case MaskMode::Skip: tokenGaeRowsT<MaskMode::Skip>(a, b0, b1, scratch, streaming); break;
    case MaskMode::None: tokenGaeRowsT<MaskMode::None>(a, b0, b1, scratch, streaming); break;
  }
  endStreaming(streaming);
}

template <bool kMasked, int G>
static void returnsGroup(const DiscountedReturnsArgs& a, int64_t b, float* __restrict buf, bool streaming) {
  const int64_t T = a.T, pitch = rowPitch(T);
  float next[G];
  for (int g = 0; g < G; ++g) next[g] = 0.0f;
  for (int64_t t = T - 1; t >= 0; --t) {
    for (int g = 0; g < G; ++g) {
      const int64_t i = (b + g) * T + t;
      const float r = (!kMasked || a.mask[i] != 0) ? a.rewards[i] : 0.0f;
      next[g] = r + a.gamma * next[g];
      buf[g * pitch + t] = next[g];
    }
  }
  for (int g = 0; g < G; ++g) storeRow(a.returns + (b + g) * T, buf + g * pitch, T, streaming);
}

template <bool kMasked>
static void returnsRowsT(const DiscountedReturnsArgs& a, int64_t b0, int64_t b1, float* buf, bool streaming) {
  int64_t b = b0;
  for (; b + kRows <= b1; b += kRows) returnsGroup<kMasked, kRows>(a, b, buf, streaming);
  for (; b < b1; ++b) returnsGroup<kMasked, 1>(a, b, buf, streaming);
}

void discountedReturnsRows(const DiscountedReturnsArgs& a, int64_t b0, int64_t b1, float* scratch, bool streaming) {
  if (a.mask != nullptr) returnsRowsT<true>(a, b0, b1, scratch, streaming);
  else returnsRowsT<false>(a, b0, b1, scratch, streaming);
  endStreaming(streaming);
}

// --- masked moments of one block ------------------------------------------------------------
// One pass: sums of (x - K) and (x - K)^2 in float64, shifted by the block's first valid
// element K so that the subtraction that follows loses nothing that matters (float squares are
// exact in float64). Eight accumulators each, a fixed order that the compiler may vectorise.

template <bool kMasked>
static MaskedMoments blockMomentsT(const float* x, const uint8_t* m, int64_t len) {
  int64_t first = 0;
  if (kMasked)
    while (first < len && m[first] == 0) ++first;
  MaskedMoments out;
  if (first == len) return out;
  const double K = x[first];
  constexpr int L = 8;
  double cnt[L] = {}, s1[L] = {}, s2[L] = {};
  int64_t i = 0;
  for (; i + L <= len; i += L) {
    for (int j = 0; j < L; ++j) {
      const bool valid = !kMasked || m[i + j] != 0;
      const double d = valid ? static_cast<double>(x[i + j]) - K : 0.0;
      cnt[j] += valid ? 1.0 : 0.0;
      s1[j] += d;
      s2[j] += d * d;
    }
  }
  for (int j = 0; i < len; ++i, ++j) {
    const bool valid = !kMasked || m[i] != 0;
    const double d = valid ? static_cast<double>(x[i]) - K : 0.0;
    cnt[j] += valid ? 1.0 : 0.0;
    s1[j] += d;
    s2[j] += d * d;
  }
  double c = 0, a1 = 0, a2 = 0;
  for (int j = 0; j < L; ++j) {
    c += cnt[j];
    a1 += s1[j];
    a2 += s2[j];
  }
  out.count = c;
  out.mean = K + a1 / c;
  const double m2 = a2 - a1 * (a1 / c);
  out.m2 = m2 < 0 ? 0.0 : m2;  // rounding can dip below 0; a NaN stays NaN
  return out;
}

MaskedMoments blockMoments(const float* x, const uint8_t* m, int64_t len) {
  return m != nullptr ? blockMomentsT<true>(x, m, len) : blockMomentsT<false>(x, nullptr, len);
}

void affineRange(const AffineArgs& a, int64_t i0, int64_t i1, bool streaming) {
  const float c = a.center, s = a.scale, sh = a.shift;
  if (!streaming) {
    const float* __restrict x = a.x;
    float* __restrict out = a.out;
    for (int64_t i = i0; i < i1; ++i) out[i] = (x[i] - c) * s + sh;
    return;
  }
  constexpr int64_t kChunk = 1024;
  alignas(64) float buf[kChunk];
  for (int64_t i = i0; i < i1; i += kChunk) {
    const int64_t w = i1 - i < kChunk ? i1 - i : kChunk;
    const float* __restrict x = a.x + i;
    for (int64_t j = 0; j < w; ++j) buf[j] = (x[j] - c) * s + sh;
    storeRow(a.out + i, buf, w, true);
  }
  endStreaming(true);
}

}  // namespace RLHF_CHUNK_NS
}  // namespace rlhf
