// Single-thread chunk kernels, written as plain loops that the compiler vectorises. This header
// is compiled once for each instruction-set variant: the x86-64 baseline, AVX2 and AVX-512 (see
// kernels_*.cpp), inside the namespace named by RLHF_CHUNK_NS. The whole tree builds with
// -ffp-contract=off, so every element is computed with the same operations in the same order as
// the scalar reference and the results are bit-identical to it, whatever the instruction set or
// the thread count.
//
// Included only by the kernels_*.cpp files.
#include <cstdint>
#include <cstring>
#include <type_traits>
#if defined(__AVX2__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "cpu_variants.h"
#include "rlhf/kernels.h"
#include "simd.h"

namespace rlhf {
namespace RLHF_CHUNK_NS {

// Requests the line `bytes` past p, which may lie past the end of p's array: a prefetch never
// faults, and the address is formed as an integer, not as a pointer out of bounds.
RLHF_KEEP_PREFETCH static void prefetchAhead(const void* p, int64_t bytes) {
  __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(p) + bytes), 0, 3);
}


// Walks [0, n) in the spans the alignment of `out` allows: body.one(i) for single elements,
// body.four(i) where out+i is 16-byte aligned (with SSE2), body.eight(i) where it is 32-byte
// aligned (with AVX), body.sixteen(i) where it is 64-byte aligned (with AVX-512), so that a body
// can store whole vectors there non-temporally. The body is taken by value: a local copy, which
// no store through its pointers can change, keeps its fields in registers.
template <typename Body>
static void alignedSpans(const float* out, int64_t n, const Body body) {
  int64_t i = 0;
#if defined(__SSE2__)
  for (; i < n && (reinterpret_cast<uintptr_t>(out + i) & 15) != 0; ++i) body.one(i);
#if defined(__AVX__)
  if (i + 4 <= n && (reinterpret_cast<uintptr_t>(out + i) & 31) != 0) {
    body.four(i);
    i += 4;
  }
#if defined(__AVX512F__)
  if (i + 8 <= n && (reinterpret_cast<uintptr_t>(out + i) & 63) != 0) {
    body.eight(i);
    i += 8;
  }
  for (; i + 16 <= n; i += 16) body.sixteen(i);
#endif
  for (; i + 8 <= n; i += 8) body.eight(i);
#endif
  for (; i + 4 <= n; i += 4) body.four(i);
#endif
  for (; i < n; ++i) body.one(i);
}

// The alignment that alignedSpans gives its widest stores.
#if defined(__AVX512F__)
constexpr uintptr_t kWidestStore = 64;
#else
constexpr uintptr_t kWidestStore = 32;
#endif

// Writes out[0..n) with non-temporal stores, which skip the read that a plain store of a line
// not in cache costs. The elements come from `source`: at1(j) one, at4(j) four (with SSE2),
// at8(j) eight (with AVX), at16(j) sixteen (with AVX-512) from j, the same bits whichever gives
// them. The widest stores the instruction set has (32-byte ones moved about a fifth more per
// second than 16-byte ones here, and 64-byte ones about a tenth more again), and every
// 16-byte-aligned part non-temporal: a plain store into a line that is also being streamed (a
// row's first or last line, shared with the next row) made rows that start 48 bytes into a line
// 40% slower.
template <typename Source>
struct StreamTo {
  float* out;
  Source source;
  void one(int64_t i) const { out[i] = source.at1(i); }
#if defined(__SSE2__)
  void four(int64_t i) const { _mm_stream_ps(out + i, source.at4(i)); }
#endif
#if defined(__AVX__)
  void eight(int64_t i) const { _mm256_stream_ps(out + i, source.at8(i)); }
#endif
#if defined(__AVX512F__)
  void sixteen(int64_t i) const { _mm512_stream_ps(out + i, source.at16(i)); }
#endif
};

template <typename Source>
static void streamOut(float* out, int64_t n, const Source& source) {
  alignedSpans(out, n, StreamTo<Source>{out, source});
}

// The elements of a finished row buffer, as they are.
struct CopySource {
  const float* src;
  float at1(int64_t j) const { return src[j]; }
#if defined(__SSE2__)
  __m128 at4(int64_t j) const { return _mm_loadu_ps(src + j); }
#endif
#if defined(__AVX__)
  __m256 at8(int64_t j) const { return _mm256_loadu_ps(src + j); }
#endif
#if defined(__AVX512F__)
  __m512 at16(int64_t j) const { return _mm512_loadu_ps(src + j); }
#endif
};

// Copies a finished row of outputs to its destination, non-temporally when `streaming` (outputs
// much larger than the last-level cache). Either way the values are the same bits.
static void storeRow(float* __restrict dst, const float* __restrict src, int64_t n, bool streaming) {
  if (streaming) return streamOut(dst, n, CopySource{src});
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

// Orders the non-temporal stores before whatever the thread does next (the pool's hand-off).
static void endStreaming(bool streaming) {
#if defined(__SSE2__)
  if (streaming) _mm_sfence();
#endif
}

// Where in a 64-byte-aligned slot to put a buffer bound for dst: at the same place in a line as
// dst. A copy whose destination lies a little ahead of its source in the low 12 address bits
// makes each load wait for the store just before it (4K aliasing), and a non-temporal store
// leaves late: such copies ran 2 to 4 times slower. The slot holds 16 floats more than the row.
static inline float* lineLike(float* slot, const float* dst) {
  return slot + (reinterpret_cast<uintptr_t>(dst) & 63) / sizeof(float);
}

// Where in a slot of 1024 floats more than it needs to put a buffer read in step with dst: at
// dst's place in a 4 KiB page, so that its loads never wait on dst's stores (see below).
static inline float* pageLike(float* slot, const float* dst) {
  return slot + ((reinterpret_cast<uintptr_t>(dst) - reinterpret_cast<uintptr_t>(slot)) & 4095) / sizeof(float);
}

// STREAM's triad a = b + 3c, one element of it.
struct TriadSource {
  const float* b;
  const float* c;
  float at1(int64_t j) const { return b[j] + 3.0f * c[j]; }
#if defined(__SSE2__)
  __m128 at4(int64_t j) const { return _mm_add_ps(_mm_loadu_ps(b + j), _mm_mul_ps(_mm_set1_ps(3.0f), _mm_loadu_ps(c + j))); }
#endif
#if defined(__AVX__)
  __m256 at8(int64_t j) const {
    return _mm256_add_ps(_mm256_loadu_ps(b + j), _mm256_mul_ps(_mm256_set1_ps(3.0f), _mm256_loadu_ps(c + j)));
  }
#endif
#if defined(__AVX512F__)
  __m512 at16(int64_t j) const {
    return _mm512_add_ps(_mm512_loadu_ps(b + j), _mm512_mul_ps(_mm512_set1_ps(3.0f), _mm512_loadu_ps(c + j)));
  }
#endif
};

// The triad over [i0, i1) with the ops' non-temporal stores: the bandwidth roofline the
// benchmarks report against, measured with the stores the ops use.
void triadRange(float* __restrict a, const float* __restrict b, const float* __restrict c, int64_t i0, int64_t i1) {
  streamOut(a + i0, i1 - i0, TriadSource{b + i0, c + i0});
  endStreaming(true);
}

// The sum of x over [i0, i1) in float lanes (four chains, so that the adds keep up): a pass that
// only reads, each line requested 4 KiB ahead once, as the ops that only read request theirs.
// The read roofline the benchmarks set those ops against (readSeconds); the sum only keeps the
// loads from being optimised away.
float readRange(const float* x, int64_t i0, int64_t i1) {
  using namespace simd;
  constexpr int64_t kLineFloats = 16;
  VF s0 = zero(), s1 = zero(), s2 = zero(), s3 = zero();
  int64_t i = i0;
  for (; i + 4 * W <= i1; i += 4 * W) {
    for (int64_t l = 0; l < 4 * W; l += kLineFloats) prefetchAhead(x + i + l, 4096);
    s0 = add(s0, load(x + i));
    s1 = add(s1, load(x + i + W));
    s2 = add(s2, load(x + i + 2 * W));
    s3 = add(s3, load(x + i + 3 * W));
  }
  for (; i + W <= i1; i += W) s0 = add(s0, load(x + i));
  alignas(64) float lanes[W];
  store(lanes, add(add(s0, s1), add(s2, s3)));
  float s = 0.0f;
  for (const float l : lanes) s += l;
  for (; i < i1; ++i) s += x[i];
  return s;
}

// --- time-major GAE: columns [n0,n1), time running backwards, vectorised across columns ------
// Columns go in blocks of kGaeBlock so that the running advantage stays in L1 between time
// steps. Each row's outputs are written straight from registers when every stream read in step
// with them is clear of aliasing with them (the usual case: arrays this large all start alike
// in their pages), else through row buffers copied out after the row, 5 to 20% slower.

// The few vector operations of the GAE row at four lanes (SSE2), eight (AVX2) and sixteen
// (AVX-512), so that one body serves the aligned head of a row at each width and its bulk.
#if defined(__SSE2__)
struct Lanes4 {
  using V = __m128;
  static V load(const float* p) { return _mm_loadu_ps(p); }
  static V set1(float x) { return _mm_set1_ps(x); }
  static V add(V a, V b) { return _mm_add_ps(a, b); }
  static V sub(V a, V b) { return _mm_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm_mul_ps(a, b); }
  static void store(float* p, V x) { _mm_storeu_ps(p, x); }
  static void stream(float* p, V x) { _mm_stream_ps(p, x); }
  // 1.0f in the lanes whose flag bytes (from p, and from q unless null) are all 0, +0.0f
  // elsewhere: the scalar code's 1 - flag, exactly.
  static V clear(const uint8_t* p, const uint8_t* q) {
    int32_t bytes, more = 0;
    std::memcpy(&bytes, p, 4);
    if (q != nullptr) std::memcpy(&more, q, 4);
    const __m128i zero = _mm_setzero_si128();
    const __m128i words = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(bytes | more), zero), zero);
    return _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(words, zero)), set1(1.0f));
  }
};
#endif
#if defined(__AVX2__)
struct Lanes8 {
  using V = __m256;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static void store(float* p, V x) { _mm256_storeu_ps(p, x); }
  static void stream(float* p, V x) { _mm256_stream_ps(p, x); }
  static V clear(const uint8_t* p, const uint8_t* q) {
    __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    if (q != nullptr) bytes = _mm_or_si128(bytes, _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q)));
    const __m256i words = _mm256_cvtepu8_epi32(bytes);
    return _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(words, _mm256_setzero_si256())), set1(1.0f));
  }
};
#endif
#if defined(__AVX512F__)
struct Lanes16 {
  using V = __m512;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static void store(float* p, V x) { _mm512_storeu_ps(p, x); }
  static void stream(float* p, V x) { _mm512_stream_ps(p, x); }
  static V clear(const uint8_t* p, const uint8_t* q) {
    __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if (q != nullptr) bytes = _mm_or_si128(bytes, _mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
    return _mm512_maskz_mov_ps(_mm_testn_epi8_mask(bytes, bytes), set1(1.0f));
  }
};
#endif

// One row of a block: the inputs at step t from column n0, the running advantage (A_{t+1} in,
// A_t out), and where A_t and A_t + V_t go. one/four/eight/sixteen compute and store 1 to 16
// columns from j with the scalar reference's operations in its order: the same bits.
template <bool kTerminated, bool kTruncated, bool kGammaVec, bool kLambdaVec>
struct GaeRow {
  const float *r, *v, *nv, *g, *l;
  const uint8_t *term, *trunc;
  float gs, ls;
  float* next;
  float *adv, *ret;
  bool streaming;
  // Elements from this row's inputs to those of the row walked next (-N; 0 for none): that row's
  // are requested meanwhile. The walk goes back through time, a block's width of each row, and
  // the hardware's prefetchers, which follow streams forward within a row, lose the trail at every
  // row: [1024,4096] on AMD EPYC (Zen 5), alternated in one process, 1.57-1.68 -> 1.45-1.49 ms
  // (73-76% -> 80-82% of the paired triad) with AVX-512, 1.71 -> 1.54 ms with AVX2.
  int64_t ahead;

  void one(int64_t j) const {
    const float gamma = kGammaVec ? g[j] : gs;
    const float lambda = kLambdaVec ? l[j] : ls;
    // Flags as 0/1 arithmetic rather than branches.
    const int32_t isTerm = kTerminated ? term[j] != 0 : 0;
    const int32_t isTrunc = kTruncated ? trunc[j] != 0 : 0;
    const float notTerminated = static_cast<float>(1 - isTerm);
    const float carry = static_cast<float>(1 - (isTerm | isTrunc));
    const float delta = r[j] + gamma * notTerminated * nv[j] - v[j];
    const float A = delta + gamma * lambda * carry * next[j];
    next[j] = A;
    adv[j] = A;
    ret[j] = A + v[j];
  }
  template <typename L>
  void lanes(int64_t j) const {
    using V = typename L::V;
    const V gamma = kGammaVec ? L::load(g + j) : L::set1(gs);
    const V lambda = kLambdaVec ? L::load(l + j) : L::set1(ls);
    const V notTerminated = kTerminated ? L::clear(term + j, nullptr) : L::set1(1.0f);
    const V carry = kTerminated || kTruncated
                        ? L::clear(kTerminated ? term + j : trunc + j, kTerminated && kTruncated ? trunc + j : nullptr)
                        : L::set1(1.0f);
    // The next row's inputs, once a line: from the vector that starts in a line's first bytes.
    constexpr uintptr_t kVectorBytes = sizeof(V), kLanes = kVectorBytes / 4;
    if ((reinterpret_cast<uintptr_t>(r + j) & 63) < kVectorBytes) prefetchAhead(r + j, ahead * 4);
    if ((reinterpret_cast<uintptr_t>(v + j) & 63) < kVectorBytes) prefetchAhead(v + j, ahead * 4);
    if (kTerminated && (reinterpret_cast<uintptr_t>(term + j) & 63) < kLanes) prefetchAhead(term + j, ahead);
    const V vj = L::load(v + j);
    const V delta = L::sub(L::add(L::load(r + j), L::mul(L::mul(gamma, notTerminated), L::load(nv + j))), vj);
    const V A = L::add(delta, L::mul(L::mul(L::mul(gamma, lambda), carry), L::load(next + j)));
    L::store(next + j, A);
    if (streaming) {
      L::stream(adv + j, A);
      L::stream(ret + j, L::add(A, vj));
    } else {
      L::store(adv + j, A);
      L::store(ret + j, L::add(A, vj));
    }
  }
#if defined(__SSE2__)
  void four(int64_t j) const { lanes<Lanes4>(j); }
#endif
#if defined(__AVX2__)
  void eight(int64_t j) const { lanes<Lanes8>(j); }
#endif
#if defined(__AVX512F__)
  void sixteen(int64_t j) const { lanes<Lanes16>(j); }
#endif
};

// Whether a block's outputs can be written straight: the float streams read in step with them
// are clear of aliasing with both (the flag bytes run at a quarter of the pace and only cross
// the outputs' offsets for a few vectors a row), and the two outputs share an alignment, so
// that their vectors are stored together.
static bool gaeDirect(const GaeArgs& a) {
  if (!allClearOfAliasing({a.advantages, a.returns},
                          {a.rewards, a.values, a.nextValues, a.gammaStrideN != 0 ? a.gammaArray : nullptr,
                           a.lambdaStrideN != 0 ? a.lambdaArray : nullptr}))
    return false;
  return ((reinterpret_cast<uintptr_t>(a.advantages) ^ reinterpret_cast<uintptr_t>(a.returns)) & (kWidestStore - 1)) == 0;
}

template <bool kTerminated, bool kTruncated, bool kGammaVec, bool kLambdaVec>
static void gaeBlockT(const GaeArgs& a, int64_t n0, int64_t w, float* nextSlot, float* advSlot, float* retSlot,
                      bool streaming) {
  const int64_t T = a.T, N = a.N;
  const bool direct = gaeDirect(a);
  // At the outputs' place in a page, so that its loads never wait on their stores either.
  float* __restrict next = pageLike(nextSlot, a.advantages + n0);
  for (int64_t j = 0; j < w; ++j) next[j] = 0.0f;
  for (int64_t t = T - 1; t >= 0; --t) {
    const bool last = t == T - 1;
    const int64_t row = t * N + n0;
    GaeRow<kTerminated, kTruncated, kGammaVec, kLambdaVec> step;
    step.r = a.rewards + row;
    step.v = a.values + row;
    step.nv = last ? a.nextValuesLast + n0 : a.nextValues + row;
    step.term = kTerminated ? (last ? a.terminatedLast + n0 : a.terminated + row) : nullptr;
    step.trunc = kTruncated ? a.truncated + row : nullptr;
    step.g = a.gammaArray != nullptr ? a.gammaArray + t * a.gammaStrideT + n0 * a.gammaStrideN : nullptr;
    step.l = a.lambdaArray != nullptr ? a.lambdaArray + t * a.lambdaStrideT + n0 * a.lambdaStrideN : nullptr;
    step.gs = step.g != nullptr ? step.g[0] : a.gammaValue;
    step.ls = step.l != nullptr ? step.l[0] : a.lambdaValue;
    step.next = next;
    step.streaming = streaming;
    step.ahead = t > 0 ? -N : 0;
    if (direct) {
      step.adv = a.advantages + row;
      step.ret = a.returns + row;
      alignedSpans(step.adv, w, step);
      continue;
    }
    step.adv = lineLike(advSlot, a.advantages + row);
    step.ret = lineLike(retSlot, a.returns + row);
    step.streaming = false;
    alignedSpans(step.adv, w, step);
    storeRow(a.advantages + row, step.adv, w, streaming);
    storeRow(a.returns + row, step.ret, w, streaming);
  }
}

// One column walked down time with scalars: for narrow rollouts (a few environments), where the
// per-row setup of the vectorised block would cost more than the arithmetic.
template <bool kTerminated, bool kTruncated>
static void gaeColumnT(const GaeArgs& a, int64_t n) {
  const int64_t T = a.T, N = a.N;
  float next = 0.0f;
  for (int64_t t = T - 1; t >= 0; --t) {
    const bool last = t == T - 1;
    const int64_t i = t * N + n;
    const float nv = last ? a.nextValuesLast[n] : a.nextValues[i];
    const int32_t isTerm = kTerminated ? (last ? a.terminatedLast[n] : a.terminated[i]) != 0 : 0;
    const int32_t isTrunc = kTruncated ? a.truncated[i] != 0 : 0;
    const float gamma =
        a.gammaArray != nullptr ? a.gammaArray[t * a.gammaStrideT + n * a.gammaStrideN] : a.gammaValue;
    const float lambda =
        a.lambdaArray != nullptr ? a.lambdaArray[t * a.lambdaStrideT + n * a.lambdaStrideN] : a.lambdaValue;
    const float notTerminated = static_cast<float>(1 - isTerm);
    const float carry = static_cast<float>(1 - (isTerm | isTrunc));
    const float v = a.values[i];
    const float delta = a.rewards[i] + gamma * notTerminated * nv - v;
    next = delta + gamma * lambda * carry * next;
    a.advantages[i] = next;
    a.returns[i] = next + v;
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
  if (n1 - n0 < kGaeNarrow) {
    for (int64_t n = n0; n < n1; ++n) {
      if (a.terminated && a.truncated) gaeColumnT<true, true>(a, n);
      else if (a.terminated) gaeColumnT<true, false>(a, n);
      else if (a.truncated) gaeColumnT<false, true>(a, n);
      else gaeColumnT<false, false>(a, n);
    }
    return;
  }
  GaeBlockFn fn;
  if (a.terminated && a.truncated) fn = pickRates<true, true>(a);
  else if (a.terminated) fn = pickRates<true, false>(a);
  else if (a.truncated) fn = pickRates<false, true>(a);
  else fn = pickRates<false, false>(a);
  // scratch: gaeScratchFloats(cap) floats from a line boundary
  const int64_t cap = n1 - n0 < kGaeBlock ? n1 - n0 : kGaeBlock, slot = gaeSlotFloats(cap);
  float* rows = scratch + gaeNextFloats(cap);
  for (int64_t b = n0; b < n1; b += cap) {
    const int64_t w = n1 - b < cap ? n1 - b : cap;
    fn(a, b, w, scratch, rows, rows + slot, streaming);
  }
  endStreaming(streaming);
}

// --- batch-major token GAE and returns: rows [b0,b1) ----------------------------------------
// One row alone is bound by the latency of its recursion, so several rows run together (8 in
// the AVX2 tiles, kScalarRows interleaved otherwise). Their outputs go to row buffers whose pitch
// is not a multiple of 4 KiB: written in place, the rows (T*4 bytes apart) would alias in the
// store buffer and in L1 sets and run several times slower.

// Row buffer k of a line-aligned scratch for [*,T] rows, placed like dst, the row it is copied to.
static inline float* rowSlot(float* scratch, int64_t k, int64_t T, const float* dst) {
  return lineLike(scratch + k * rowPitch(T), dst);
}

// Starting state of G rows: the bootstrap value, and no advantage yet.
template <int G>
static void tokenGaeStart(const TokenGaeArgs& a, int64_t b, float* nextValue, float* nextAdv) {
  for (int g = 0; g < G; ++g) {
    nextValue[g] = a.lastValues != nullptr ? a.lastValues[b + g] : 0.0f;
    nextAdv[g] = 0.0f;
  }
}

// Rows of G from b: in row buffers (advantages in slot 2g of scratch, returns in slot 2g+1), or
// the outputs themselves when scratch is null.
struct TokenGaeRows {
  float* adv[kRows];
  float* ret[kRows];
  TokenGaeRows(const TokenGaeArgs& a, int64_t b, int G, float* scratch) {
    for (int g = 0; g < G; ++g) {
      float* advDst = a.advantages + (b + g) * a.T;
      float* retDst = a.returns + (b + g) * a.T;
      adv[g] = scratch != nullptr ? rowSlot(scratch, 2 * g, a.T, advDst) : advDst;
      ret[g] = scratch != nullptr ? rowSlot(scratch, 2 * g + 1, a.T, retDst) : retDst;
    }
  }
};

// Steps t = tEnd-1 down to tBegin of G rows with scalars, advancing their state, into their
// rows.
template <MaskMode kMode, int G>
static void tokenGaeSteps(const TokenGaeArgs& a, int64_t b, int64_t tEnd, int64_t tBegin, float* nextValue,
                          float* nextAdv, const TokenGaeRows& rows) {
  const int64_t T = a.T;
  const float gamma = a.gamma, gl = a.gamma * a.lambda;
  // The state in locals, which stay in registers: through the arrays, every output store may
  // alias them, and each step waited on the last one's stores and loads.
  float nv[G], na[G];
  const float* rewards[G];
  const float* values[G];
  const uint8_t* mask[G];
#pragma GCC unroll 8
  for (int g = 0; g < G; ++g) {
    nv[g] = nextValue[g];
    na[g] = nextAdv[g];
    rewards[g] = a.rewards + (b + g) * T;
    values[g] = a.values + (b + g) * T;
    mask[g] = kMode == MaskMode::None ? nullptr : a.mask + (b + g) * T;
  }
  for (int64_t t = tEnd - 1; t >= tBegin; --t) {
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      const float r = rewards[g][t], v = values[g][t];
      const bool valid = kMode == MaskMode::None || mask[g][t] != 0;
      float A, ret;
      if (kMode == MaskMode::Premask) {
        const float rt = valid ? r : 0.0f, vt = valid ? v : 0.0f;
        A = rt + gamma * nv[g] - vt + gl * na[g];
        nv[g] = vt;
        ret = A + vt;
      } else if (kMode == MaskMode::Skip) {
        const float candidate = r + gamma * nv[g] - v + gl * na[g];
        A = valid ? candidate : na[g];
        nv[g] = valid ? v : nv[g];
        ret = A + v;
      } else {
        A = r + gamma * nv[g] - v + gl * na[g];
        nv[g] = v;
        ret = A + v;
      }
      na[g] = A;
      rows.adv[g][t] = A;
      rows.ret[g][t] = ret;
    }
  }
#pragma GCC unroll 8
  for (int g = 0; g < G; ++g) {
    nextValue[g] = nv[g];
    nextAdv[g] = na[g];
  }
}

static void tokenGaeStoreRows(const TokenGaeArgs& a, int64_t b, int G, const TokenGaeRows& rows, bool streaming) {
  const int64_t T = a.T;
  for (int g = 0; g < G; ++g) {
    storeRow(a.advantages + (b + g) * T, rows.adv[g], T, streaming);
    storeRow(a.returns + (b + g) * T, rows.ret[g], T, streaming);
  }
}

template <MaskMode kMode, int G>
static void tokenGaeGroup(const TokenGaeArgs& a, int64_t b, float* scratch, bool streaming) {
  const TokenGaeRows rows(a, b, G, scratch);
  float nextValue[G], nextAdv[G];
  tokenGaeStart<G>(a, b, nextValue, nextAdv);
  tokenGaeSteps<kMode, G>(a, b, a.T, 0, nextValue, nextAdv, rows);
  tokenGaeStoreRows(a, b, G, rows, streaming);
}

#if defined(__AVX2__)
// Eight rows at once, vectorised across the rows: an 8x8 tile (8 rows x 8 time steps) of each
// input is loaded row-wise and transposed in registers, the recursion runs over the tile's 8
// steps with one lane per row, and the outputs are transposed back into row form. Each lane
// performs exactly the scalar code's operations in the same order: the same bits.

static inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// All-ones lanes where the 8 mask bytes at m are 0 (the masked steps), all-zero elsewhere.
static inline __m256 maskedLanes(const uint8_t* m) {
  const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(m)));
  return _mm256_castsi256_ps(_mm256_cmpeq_epi32(bytes, _mm256_setzero_si256()));
}

// Eight steps of one row from t0, as the recursion reads them: premasked (+0 where masked) or as
// they are.
template <MaskMode kMode>
static inline __m256 stepsOf(const float* x, const uint8_t* m) {
  const __m256 raw = _mm256_loadu_ps(x);
  return kMode == MaskMode::Premask ? _mm256_andnot_ps(maskedLanes(m), raw) : raw;
}

// Requests element t of 8 rows of `elementBytes`-wide elements, `rowBytes` apart, from `rows`.
RLHF_KEEP_PREFETCH static void prefetchRows(const void* rows, int64_t rowBytes, int64_t t, int64_t elementBytes) {
  for (int g = 0; g < 8; ++g)
    _mm_prefetch(static_cast<const char*>(rows) + g * rowBytes + t * elementBytes, _MM_HINT_T0);
}

// The tile grid of a group of rows: whole tiles of `width` steps (8, or 16: a line) over
// [first, end). It starts where every row of `x` is aligned to a tile's bytes, when all eight
// rows share an alignment (T a multiple of the width), so that no tile load straddles two lines
// (from memory, straddling loads cost about a fifth more time; a typed array from JavaScript
// usually starts 16 bytes into a line). The steps from end run with scalars before the tiles,
// the steps before first with scalars after them.
struct TileGrid {
  int64_t first, tiles, end;
  TileGrid(const float* x, int64_t T, int64_t width) {
    const uintptr_t bytes = static_cast<uintptr_t>(4 * width), misalign = reinterpret_cast<uintptr_t>(x) % bytes;
    first = T % width != 0 || T < width || misalign % 4 != 0 ? 0 : static_cast<int64_t>((bytes - misalign) % bytes / 4);
    tiles = (T - first) / width;
    end = first + width * tiles;
  }
};

// The row tiles below compute 8 rows x 8 steps from t0 into out[k][g], output k of row g in row
// form, carrying each row's state from the tile after to the tile before; line(t0, ...) does
// the same for the 16 steps from t0 as two tiles, the later one first. Two ways to run them
// over a grid:

// Each tile into the row buffers: 8 steps of each row a tile, the grid's tiles from the end back.
// Tiles whose kPrefetchTiles is set request their rows' elements kTilePrefetch steps before the
// tile: eight rows walked backwards are more streams than the hardware prefetcher follows. The
// token GAE tiles read three arrays a row and leave it to the hardware: with these requests
// (24 a tile) they ran about a tenth slower on an AVX-512 Xeon, on both its AVX-512 and AVX2
// paths, in alternating runs.
constexpr int64_t kTilePrefetch = 64;
template <typename Tile>
static void tilesIntoRows(Tile& tile, const TileGrid& grid, float* const* const* out) {
  for (int64_t i = 0; i < grid.tiles; ++i) {
    const int64_t t0 = grid.end - 8 * (i + 1);
    if (Tile::kPrefetchTiles && t0 >= kTilePrefetch) tile.prefetch(t0 - kTilePrefetch, true);
    __m256 o[Tile::kOutputs][8];
    tile(t0, o);
    for (int k = 0; k < Tile::kOutputs; ++k)
      for (int g = 0; g < 8; ++g) _mm256_storeu_ps(out[k][g] + t0, o[k][g]);
  }
}

// Straight into the outputs, for outputs that stream (see straightRowLines): the grid's lines of
// 16 steps from the end back, each as two tiles that load their rows together (tile.line), so
// that a row's line of each input is read in one go (8 rows of two arrays, 4 KiB apart when T
// is 1024, fall in one L1 set: a line read in two tiles is often read twice), and its line of
// each output is streamed whole as it is computed, the writes overlapping the reads, with no
// row buffer to copy out after each group of rows. The rows' lines kLinePrefetch lines before
// are requested (the mask's, a quarter as wide, every fourth line; near the start, the first
// line, which the scalar steps read). On an AVX-512 Xeon with 2 threads, [4096,1024], in turns
// with the build that had only the row buffers, as shares of the triad run in turns with them:
// all arrays at one place in their pages, premask 83% against 67%, skip 80% against 63%,
// returns 89% against 71%; all 16 bytes into a page, 69/60, 65/58 and 81/70. 3 or 5 lines ahead
// ran no faster than the row buffers, 4, 6 and 8 alike. (Through the row buffers, streaming
// each output line as soon as it was complete, two lines behind, ran at 38-52%.)
constexpr int64_t kLinePrefetch = 4;
template <typename Tile>
static void linesStraight(Tile& tile, const TileGrid& grid, float* const* const* out) {
  for (int64_t i = 0; i < grid.tiles; ++i) {
    const int64_t t0 = grid.end - 16 * (i + 1);
    tile.prefetch(t0 >= 16 * kLinePrefetch ? t0 - 16 * kLinePrefetch : 0, i % 4 == 0);
    __m256 earlier[Tile::kOutputs][8], later[Tile::kOutputs][8];
    tile.line(t0, earlier, later);
    for (int k = 0; k < Tile::kOutputs; ++k)
      for (int g = 0; g < 8; ++g) {
        _mm256_stream_ps(out[k][g] + t0, earlier[k][g]);
        _mm256_stream_ps(out[k][g] + t0 + 8, later[k][g]);
      }
  }
}

template <typename Tile>
static void runTiles(Tile& tile, const TileGrid& grid, float* const* const* out, bool straight) {
  if (straight) linesStraight(tile, grid, out);
  else tilesIntoRows(tile, grid, out);
}

// Steps [lo, hi) of the tile's rows, from hi back, in windows of 8 steps that lie within the
// rows (T >= 8): the steps past the grid and before it, where rows do not start on a line (or T
// is not a whole number of tiles). Each window computes all its lanes and keeps its active
// steps, stored with plain masked stores: the edge lines are shared with the neighbouring rows.
// As scalar steps, with 8 rows' state kept through memory, the 16 such steps of each row took a
// tenth of token GAE's time ([4096,1024], rows 16 bytes into a line).
template <typename Tile>
static void edgeWindows(Tile& tile, int64_t hi, int64_t lo, float* const* const* out) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  while (hi > lo) {
    const int64_t t0 = hi >= 8 ? hi - 8 : 0;
    const int first = static_cast<int>(lo > t0 ? lo - t0 : 0), last = static_cast<int>(hi - t0);
    const __m256i keep = _mm256_and_si256(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32(first - 1)),
                                          _mm256_cmpgt_epi32(_mm256_set1_epi32(last), lane));
    __m256 o[Tile::kOutputs][8];
    tile.window(t0, first, last, o);
    for (int k = 0; k < Tile::kOutputs; ++k)
      for (int g = 0; g < 8; ++g) _mm256_maskstore_ps(out[k][g] + t0, keep, o[k][g]);
    hi = t0 + first;
  }
}

static inline void streamLine(float* dst, const float* line) {
  _mm256_stream_ps(dst, _mm256_load_ps(line));
  _mm256_stream_ps(dst + 8, _mm256_load_ps(line + 8));
}

// Straight into the outputs where the rows do not start on a line (T a whole number of lines, so
// that row g's last steps and row g+1's first share one line): those lines are put together
// here, row g's part from the windows past the grid, row g+1's from the windows before it, and
// streamed whole. Stored as two parts, each line was read before it was written, and the rows
// ran at 80-85% of the pace of rows that start on a line. Line 0 is the one that the previous
// group's last row shares with this group's first; a thread's first and last rows write their
// parts of the lines they share with another thread's rows with plain stores.
template <int kOutputs>
struct SharedLines {
  alignas(64) float line[kOutputs][9][16];
  float* pending[kOutputs] = {};  // where line 0 goes once its second part is in; null if nowhere
  int64_t tail = 0;               // steps of a row in the line it shares with the next
  // Rows for edgeWindows: the parts of the lines past the grid, and before it.
  float* tails[kOutputs][8];
  float* heads[kOutputs][8];
  float* const* tailRows[kOutputs];
  float* const* headRows[kOutputs];

  void begin(const TileGrid& grid, int64_t T) {
    tail = T - grid.end;
    for (int k = 0; k < kOutputs; ++k) {
      for (int g = 0; g < 8; ++g) {
        tails[k][g] = line[k][g + 1] - grid.end;
        heads[k][g] = line[k][g] + tail;
      }
      tailRows[k] = tails[k];
      headRows[k] = heads[k];
    }
  }
  // The group's lines, now whole, streamed; line 0 without its first part (this thread's first
  // row) stored as its second part alone; the last row's part kept for the next group.
  void store(const TileGrid& grid, float* const* const* out) {
    for (int k = 0; k < kOutputs; ++k) {
      if (pending[k] != nullptr) streamLine(pending[k], line[k][0]);
      else std::memcpy(out[k][0], line[k][0] + tail, static_cast<size_t>(grid.first) * sizeof(float));
      for (int g = 1; g < 8; ++g) streamLine(out[k][g - 1] + grid.end, line[k][g]);
      std::memcpy(line[k][0], line[k][8], sizeof(line[k][0]));
      pending[k] = out[k][7] + grid.end;
    }
  }
  // After a thread's last group: its last row's part of line 0, stored alone.
  void flush() {
    for (int k = 0; k < kOutputs; ++k)
      if (pending[k] != nullptr) std::memcpy(pending[k], line[k][0], static_cast<size_t>(tail) * sizeof(float));
  }
};

// A group of 8 rows on its tiles: the windows past the grid, the tiles, the windows before it.
// (One call of runTiles, so that it is inlined and the tile's state stays in registers: called
// from two places, the line walk ran out of line and 7-15% slower.)
template <typename Tile>
static void runGroup(Tile& tile, const TileGrid& grid, int64_t T, float* const* const* out, bool straight,
                     SharedLines<Tile::kOutputs>& shared) {
  const bool share = straight && grid.first != 0;
  if (share) shared.begin(grid, T);
  edgeWindows(tile, T, grid.end, share ? shared.tailRows : out);
  runTiles(tile, grid, out, straight);
  edgeWindows(tile, grid.first, 0, share ? shared.headRows : out);
  if (share) shared.store(grid, out);
}

// The inputs of 8 rows from b, held by value: a tile that read them through the arguments would
// load every pointer again after each vector store, which may alias anything.
struct TileInputs {
  const float* rewards;
  const float* values;   // null for the returns
  const uint8_t* mask;   // null when there is none
  int64_t T;
  TileInputs(const float* r, const float* v, const uint8_t* m, int64_t b, int64_t steps)
      : rewards(r + b * steps), values(v != nullptr ? v + b * steps : nullptr),
        mask(m != nullptr ? m + b * steps : nullptr), T(steps) {}
  TileInputs(const TokenGaeArgs& a, int64_t b) : TileInputs(a.rewards, a.values, a.mask, b, a.T) {}
  TileInputs(const DiscountedReturnsArgs& a, int64_t b) : TileInputs(a.rewards, nullptr, a.mask, b, a.T) {}
  // Requests step t of each row of each input (of the mask when withMask), the values' step
  // valuesNearer on (toward the steps being read; within the row).
  RLHF_KEEP_PREFETCH void prefetch(int64_t t, bool withMask, int64_t valuesNearer = 0) const {
    prefetchRows(rewards, 4 * T, t, 4);
    if (values != nullptr) prefetchRows(values, 4 * T, std::min(t + valuesNearer, T - 1), 4);
    if (withMask && mask != nullptr) prefetchRows(mask, T, t, 1);
  }
};

// Premask and none: the next value of step t is the (premasked) value of step t+1 whatever the
// advantages are, so delta_t = (r_t + gamma*v_{t+1}) - v_t is formed in row form, 8 steps of a
// row per vector, before the tile is transposed; only delta goes into the lanes-per-row form,
// where A_t = delta_t + gamma*lambda*A_{t+1} runs, and the returns A_t + v_t are formed in row
// form after A is transposed back. Two transposes a tile instead of five, the same operations
// in the same order for every element: the same bits as the scalar steps.
template <MaskMode kMode>
struct TokenGaeDeltaTile {
  static constexpr int kOutputs = 2;  // advantages, returns
  static constexpr bool kPrefetchTiles = false;
  TileInputs in;
  float* nextValue;  // each row's (premasked) value one step on, carried through memory
  __m256 na, vg, vgl;
  __m256i shiftDown;
  TokenGaeDeltaTile(const TokenGaeArgs& a, int64_t b, float* nextValues, const float* nextAdv)
      : in(a, b), nextValue(nextValues), na(_mm256_load_ps(nextAdv)), vg(_mm256_set1_ps(a.gamma)),
        vgl(_mm256_set1_ps(a.gamma * a.lambda)), shiftDown(_mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7)) {}
  // Row g's 8 steps from t0 in row form: its deltas, and its (premasked) values.
  void row(int g, int64_t t0, __m256& D, __m256& Vt) {
    const int64_t at = g * in.T + t0;
    const uint8_t* m = kMode == MaskMode::None ? nullptr : in.mask + at;
    const __m256 rt = stepsOf<kMode>(in.rewards + at, m);
    Vt = stepsOf<kMode>(in.values + at, m);
    // The values one step on: this tile's own from lane 1, then the next value the row carries
    // (the first of the tile after, of the scalar steps, or the bootstrap value).
    const __m256 next =
        _mm256_blend_ps(_mm256_permutevar8x32_ps(Vt, shiftDown), _mm256_broadcast_ss(nextValue + g), 0x80);
    _mm_store_ss(nextValue + g, _mm256_castps256_ps128(Vt));
    D = _mm256_sub_ps(_mm256_add_ps(rt, _mm256_mul_ps(vg, next)), Vt);
  }
  // The advantages and returns of a tile's steps [lo, hi) from its deltas and values.
  void finish(__m256 out[kOutputs][8], const __m256 Vt[8], int lo = 0, int hi = 8) {
    __m256* D = out[0];
    transpose8(D);
    for (int k = hi - 1; k >= lo; --k) {
      na = _mm256_add_ps(D[k], _mm256_mul_ps(vgl, na));
      D[k] = na;
    }
    transpose8(D);
    for (int g = 0; g < 8; ++g) out[1][g] = _mm256_add_ps(D[g], Vt[g]);
  }
  void operator()(int64_t t0, __m256 out[kOutputs][8]) {
    __m256 Vt[8];
    // Left rolled, the row loops run about a tenth slower.
#pragma GCC unroll 8
    for (int g = 0; g < 8; ++g) row(g, t0, out[0][g], Vt[g]);
    finish(out, Vt);
  }
  void line(int64_t t0, __m256 earlier[kOutputs][8], __m256 later[kOutputs][8]) {
    __m256 Ve[8], Vl[8];
#pragma GCC unroll 8
    for (int g = 0; g < 8; ++g) {
      row(g, t0 + 8, later[0][g], Vl[g]);
      row(g, t0, earlier[0][g], Ve[g]);
    }
    finish(later, Vl);
    finish(earlier, Ve);
  }
  // Steps [t0+lo, t0+hi) only (see edgeWindows). Below hi the values one step on are the
  // window's own, the same as those carried; the value carried on is that of step t0+lo.
  void window(int64_t t0, int lo, int hi, __m256 out[kOutputs][8]) {
    __m256 Vt[8];
    for (int g = 0; g < 8; ++g) {
      row(g, t0, out[0][g], Vt[g]);
      alignas(32) float v[8];
      _mm256_store_ps(v, Vt[g]);
      nextValue[g] = v[lo];
    }
    finish(out, Vt, lo, hi);
  }
  // The values' lines are requested two lines after the rewards' (linesStraight): the rows'
  // lines of both arrays, one L1 set's worth each where the arrays lie alike in their pages, then
  // arrive apart. Premask, [4096,1024], 2 threads on the AMD EPYC, alternating in one process:
  // 0.968-0.977 of the time with the paired triad at 52-57 GB/s (2.5-3.5 points of it more),
  // 0.975-0.988 at 97-99 GB/s, and with the values 1 KiB on from the rewards in their pages, 85%
  // of the triad against 82%. (The skip tile, which also reads the values in row form after its
  // recursion, gained 1% at the slow triad and lost 1% at the fast one: it keeps them together.)
  static constexpr int64_t kValuesNearer = 32;
  RLHF_KEEP_PREFETCH void prefetch(int64_t t, bool withMask) const {
    in.prefetch(t, withMask && kMode != MaskMode::None, kValuesNearer);
  }
};

// Skip: the next value carries through masked steps, so it depends on the mask sequence and the
// recursion runs on transposed tiles of rewards, values and mask; the returns A_t + v_t are
// formed in row form.
struct TokenGaeSkipTile {
  static constexpr int kOutputs = 2;
  static constexpr bool kPrefetchTiles = false;
  TileInputs in;
  __m256 nv, na, vg, vgl;
  TokenGaeSkipTile(const TokenGaeArgs& a, int64_t b, const float* nextValue, const float* nextAdv)
      : in(a, b), nv(_mm256_load_ps(nextValue)), na(_mm256_load_ps(nextAdv)), vg(_mm256_set1_ps(a.gamma)),
        vgl(_mm256_set1_ps(a.gamma * a.lambda)) {}
  // The inputs of a tile in row form.
  struct Rows {
    __m256 r[8], v[8], masked[8];
  };
  void load(int g, int64_t t0, Rows& x) const {
    const int64_t at = g * in.T + t0;
    x.r[g] = _mm256_loadu_ps(in.rewards + at);
    x.v[g] = _mm256_loadu_ps(in.values + at);
    x.masked[g] = maskedLanes(in.mask + at);
  }
  // The advantages and returns of the tile's steps [t0+lo, t0+hi) from its inputs (which it
  // transposes).
  void finish(int64_t t0, Rows& x, __m256 out[kOutputs][8], int lo = 0, int hi = 8) {
    __m256* R = out[0];
    transpose8(x.r);
    transpose8(x.v);
    transpose8(x.masked);
    for (int k = hi - 1; k >= lo; --k) {
      const __m256 candidate = _mm256_add_ps(_mm256_sub_ps(_mm256_add_ps(x.r[k], _mm256_mul_ps(vg, nv)), x.v[k]),
                                             _mm256_mul_ps(vgl, na));
      na = _mm256_blendv_ps(candidate, na, x.masked[k]);
      nv = _mm256_blendv_ps(x.v[k], nv, x.masked[k]);
      R[k] = na;
    }
    transpose8(R);
    for (int g = 0; g < 8; ++g) out[1][g] = _mm256_add_ps(R[g], _mm256_loadu_ps(in.values + g * in.T + t0));
  }
  void operator()(int64_t t0, __m256 out[kOutputs][8]) {
    Rows x;
    for (int g = 0; g < 8; ++g) load(g, t0, x);
    finish(t0, x, out);
  }
  void line(int64_t t0, __m256 earlier[kOutputs][8], __m256 later[kOutputs][8]) {
    Rows xe, xl;
    for (int g = 0; g < 8; ++g) {
      load(g, t0 + 8, xl);
      load(g, t0, xe);
    }
    finish(t0 + 8, xl, later);
    finish(t0, xe, earlier);
  }
  // Steps [t0+lo, t0+hi) only (see edgeWindows).
  void window(int64_t t0, int lo, int hi, __m256 out[kOutputs][8]) {
    Rows x;
    for (int g = 0; g < 8; ++g) load(g, t0, x);
    finish(t0, x, out, lo, hi);
  }
  RLHF_KEEP_PREFETCH void prefetch(int64_t t, bool withMask) const { in.prefetch(t, withMask); }
};

// Whether skip's tiles go straight into the outputs: their lines hold 48 vectors of rows, which
// the 16 registers of AVX2 alone spill; there, as two tiles in turn too, they ran slower than
// through row buffers (47-53% of the triad against 53%).
#if defined(__AVX512F__)
constexpr bool kSkipLines = true;
#else
constexpr bool kSkipLines = false;
#endif

// Eight rows from b on tiles: the windows past the grid, the tiles, the windows before it, then
// (through row buffers) the rows copied out.
template <MaskMode kMode>
static void tokenGaeTiles(const TokenGaeArgs& a, int64_t b, float* scratch, bool streaming, bool straight,
                          SharedLines<2>& shared) {
  const TokenGaeRows rows(a, b, 8, straight ? nullptr : scratch);
  const TileGrid grid(a.values + b * a.T, a.T, straight ? 16 : 8);
  alignas(32) float nextValue[8], nextAdv[8];
  tokenGaeStart<8>(a, b, nextValue, nextAdv);
  float* const* out[2] = {rows.adv, rows.ret};
  using Tile = std::conditional_t<kMode == MaskMode::Skip, TokenGaeSkipTile, TokenGaeDeltaTile<kMode>>;
  Tile tile(a, b, nextValue, nextAdv);
  runGroup(tile, grid, a.T, out, straight, shared);
  if (!straight) tokenGaeStoreRows(a, b, 8, rows, streaming);
}
#endif

template <MaskMode kMode>
static void tokenGaeRowsT(const TokenGaeArgs& a, int64_t b0, int64_t b1, float* scratch, bool streaming) {
  int64_t b = b0;
#if defined(__AVX2__)
  const bool straight = streaming && (kMode != MaskMode::Skip || kSkipLines) &&
                        straightRowLines(a.T, a.values, {a.advantages, a.returns}, {a.rewards, a.values});
  if (a.T >= 8) {  // edgeWindows' windows lie within the rows
    SharedLines<2> shared;
    for (; b + 8 <= b1; b += 8) tokenGaeTiles<kMode>(a, b, scratch, streaming, straight, shared);
    shared.flush();
  }
#endif
  for (; b + kScalarRows <= b1; b += kScalarRows) tokenGaeGroup<kMode, kScalarRows>(a, b, scratch, streaming);
  for (; b < b1; ++b) tokenGaeGroup<kMode, 1>(a, b, scratch, streaming);
}

void tokenGaeRows(const TokenGaeArgs& a, int64_t b0, int64_t b1, float* scratch, bool streaming) {
  switch (a.maskMode) {
    case MaskMode::Premask: tokenGaeRowsT<MaskMode::Premask>(a, b0, b1, scratch, streaming); break;
    case MaskMode::Skip: tokenGaeRowsT<MaskMode::Skip>(a, b0, b1, scratch, streaming); break;
    case MaskMode::None: tokenGaeRowsT<MaskMode::None>(a, b0, b1, scratch, streaming); break;
  }
  endStreaming(streaming);
}

// Rows of G returns from b: in row buffers (slot g of scratch), or the outputs themselves when
// scratch is null.
struct ReturnsRows {
  float* row[kRows];
  ReturnsRows(const DiscountedReturnsArgs& a, int64_t b, int G, float* scratch) {
    for (int g = 0; g < G; ++g) {
      float* dst = a.returns + (b + g) * a.T;
      row[g] = scratch != nullptr ? rowSlot(scratch, g, a.T, dst) : dst;
    }
  }
};

// Steps t = tEnd-1 down to tBegin of G rows of returns with scalars, into their rows.
template <bool kMasked, int G>
static void returnsSteps(const DiscountedReturnsArgs& a, int64_t b, int64_t tEnd, int64_t tBegin, float* next,
                         const ReturnsRows& rows) {
  const int64_t T = a.T;
  // In locals, as in tokenGaeSteps.
  float carried[G];
  const float* rewards[G];
  const uint8_t* mask[G];
#pragma GCC unroll 8
  for (int g = 0; g < G; ++g) {
    carried[g] = next[g];
    rewards[g] = a.rewards + (b + g) * T;
    mask[g] = kMasked ? a.mask + (b + g) * T : nullptr;
  }
  for (int64_t t = tEnd - 1; t >= tBegin; --t) {
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      const float r = (!kMasked || mask[g][t] != 0) ? rewards[g][t] : 0.0f;
      carried[g] = r + a.gamma * carried[g];
      rows.row[g][t] = carried[g];
    }
  }
#pragma GCC unroll 8
  for (int g = 0; g < G; ++g) next[g] = carried[g];
}

static void returnsStoreRows(const DiscountedReturnsArgs& a, int64_t b, int G, const ReturnsRows& rows, bool streaming) {
  for (int g = 0; g < G; ++g) storeRow(a.returns + (b + g) * a.T, rows.row[g], a.T, streaming);
}

template <bool kMasked, int G>
static void returnsGroup(const DiscountedReturnsArgs& a, int64_t b, float* scratch, bool streaming) {
  const ReturnsRows rows(a, b, G, scratch);
  float next[G] = {};
  returnsSteps<kMasked, G>(a, b, a.T, 0, next, rows);
  returnsStoreRows(a, b, G, rows, streaming);
}

#if defined(__AVX2__)
// Returns as the token GAE delta tiles: the rewards are premasked in row form, so that only they
// go into the lanes-per-row form.
template <bool kMasked>
struct ReturnsTile {
  static constexpr int kOutputs = 1;
  static constexpr bool kPrefetchTiles = true;
  static constexpr MaskMode kMode = kMasked ? MaskMode::Premask : MaskMode::None;
  TileInputs in;
  __m256 next, gamma;
  ReturnsTile(const DiscountedReturnsArgs& a, int64_t b, const float* nextReturns)
      : in(a, b), next(_mm256_load_ps(nextReturns)), gamma(_mm256_set1_ps(a.gamma)) {}
  // Row g's 8 premasked rewards from t0.
  __m256 row(int g, int64_t t0) const {
    const int64_t at = g * in.T + t0;
    return stepsOf<kMode>(in.rewards + at, kMasked ? in.mask + at : nullptr);
  }
  // The returns of the tile's steps [lo, hi) from its premasked rewards.
  void finish(__m256 out[kOutputs][8], int lo = 0, int hi = 8) {
    __m256* G = out[0];
    transpose8(G);
    for (int k = hi - 1; k >= lo; --k) {
      next = _mm256_add_ps(G[k], _mm256_mul_ps(gamma, next));
      G[k] = next;
    }
    transpose8(G);
  }
  void operator()(int64_t t0, __m256 out[kOutputs][8]) {
    for (int g = 0; g < 8; ++g) out[0][g] = row(g, t0);
    finish(out);
  }
  void line(int64_t t0, __m256 earlier[kOutputs][8], __m256 later[kOutputs][8]) {
    for (int g = 0; g < 8; ++g) {
      later[0][g] = row(g, t0 + 8);
      earlier[0][g] = row(g, t0);
    }
    finish(later);
    finish(earlier);
  }
  // Steps [t0+lo, t0+hi) only (see edgeWindows).
  void window(int64_t t0, int lo, int hi, __m256 out[kOutputs][8]) {
    for (int g = 0; g < 8; ++g) out[0][g] = row(g, t0);
    finish(out, lo, hi);
  }
  RLHF_KEEP_PREFETCH void prefetch(int64_t t, bool withMask) const { in.prefetch(t, withMask); }
};

template <bool kMasked>
static void returnsTiles(const DiscountedReturnsArgs& a, int64_t b, float* scratch, bool streaming, bool straight,
                         SharedLines<1>& shared) {
  const ReturnsRows rows(a, b, 8, straight ? nullptr : scratch);
  const TileGrid grid(a.rewards + b * a.T, a.T, straight ? 16 : 8);
  alignas(32) float next[8] = {};
  float* const* out[1] = {rows.row};
  ReturnsTile<kMasked> tile(a, b, next);
  runGroup(tile, grid, a.T, out, straight, shared);
  if (!straight) returnsStoreRows(a, b, 8, rows, streaming);
}
#endif

template <bool kMasked>
static void returnsRowsT(const DiscountedReturnsArgs& a, int64_t b0, int64_t b1, float* scratch, bool streaming) {
  int64_t b = b0;
#if defined(__AVX2__)
  const bool straight = streaming && straightRowLines(a.T, a.rewards, {a.returns}, {a.rewards});
  if (a.T >= 8) {  // edgeWindows' windows lie within the rows
    SharedLines<1> shared;
    for (; b + 8 <= b1; b += 8) returnsTiles<kMasked>(a, b, scratch, streaming, straight, shared);
    shared.flush();
  }
#endif
  for (; b + kScalarRows <= b1; b += kScalarRows) returnsGroup<kMasked, kScalarRows>(a, b, scratch, streaming);
  for (; b < b1; ++b) returnsGroup<kMasked, 1>(a, b, scratch, streaming);
}

void discountedReturnsRows(const DiscountedReturnsArgs& a, int64_t b0, int64_t b1, float* scratch, bool streaming) {
  if (a.mask != nullptr) returnsRowsT<true>(a, b0, b1, scratch, streaming);
  else returnsRowsT<false>(a, b0, b1, scratch, streaming);
  endStreaming(streaming);
}

// --- valid bytes of a mask ------------------------------------------------------------------
// The nonzero bytes of m[0, n): the per-row token counts the losses weigh their gradients by,
// taken in a pass of their own before the gradients. Each byte capped at 1, then summed across
// a vector by SAD into 64-bit lanes, a line at a time, each line requested kCountPrefetch bytes
// ahead (past a row's end into the next row's). The plain SSE2 loop without requests counted a
// 16M-byte mask in 1.9 ms with 2 threads, this one in 1.1 ms (about the rate the cores read at):
// the pass had been an eighth of the PPO policy and value losses.
constexpr int64_t kCountPrefetch = 2048;

int64_t countNonZero(const uint8_t* m, int64_t n) {
  int64_t i = 0, count = 0;
#if defined(__AVX512BW__)
  const __m512i one = _mm512_set1_epi8(1), zero = _mm512_setzero_si512();
  __m512i sums = zero;
  for (; i + 64 <= n; i += 64) {
    prefetchAhead(m + i, kCountPrefetch);
    sums = _mm512_add_epi64(sums, _mm512_sad_epu8(_mm512_min_epu8(_mm512_loadu_si512(m + i), one), zero));
  }
  count = _mm512_reduce_add_epi64(sums);
#elif defined(__AVX2__)
  const __m256i one = _mm256_set1_epi8(1), zero = _mm256_setzero_si256();
  __m256i sums = zero;
  for (; i + 64 <= n; i += 64) {
    prefetchAhead(m + i, kCountPrefetch);
    const __m256i lo = _mm256_min_epu8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + i)), one);
    const __m256i hi = _mm256_min_epu8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + i + 32)), one);
    sums = _mm256_add_epi64(sums, _mm256_sad_epu8(_mm256_add_epi8(lo, hi), zero));
  }
  alignas(32) int64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sums);
  count = lanes[0] + lanes[1] + lanes[2] + lanes[3];
#elif defined(__SSE2__)
  const __m128i one = _mm_set1_epi8(1), zero = _mm_setzero_si128();
  __m128i sums = zero;
  for (; i + 64 <= n; i += 64) {
    prefetchAhead(m + i, kCountPrefetch);
    __m128i line = zero;
    for (int q = 0; q < 64; q += 16)
      line = _mm_add_epi8(line, _mm_min_epu8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(m + i + q)), one));
    sums = _mm_add_epi64(sums, _mm_sad_epu8(line, zero));
  }
  alignas(16) int64_t lanes[2];
  _mm_store_si128(reinterpret_cast<__m128i*>(lanes), sums);
  count = lanes[0] + lanes[1];
#endif
  for (; i < n; ++i) count += m[i] != 0;
  return count;
}

// --- masked moments of one block ------------------------------------------------------------
// One pass: sums of (x - K) and (x - K)^2 in float64, shifted by the block's first valid
// element K so that the subtraction that follows loses nothing that matters (float squares are
// exact in float64). Eight accumulators each, a fixed order that the compiler may vectorise.

// Lane j of the eight accumulators takes elements i with i % 8 == j. The AVX2 and AVX-512 forms
// below keep exactly that assignment and operation order, so every form gives the same bits.
struct MomentLanes {
  double cnt[8] = {}, s1[8] = {}, s2[8] = {};
};

template <bool kMasked>
static void accumulateScalar(const float* x, const uint8_t* m, int64_t i0, int64_t i1, double K, MomentLanes& L) {
  for (int64_t i = i0; i < i1; ++i) {
    const int j = static_cast<int>(i & 7);
    const bool valid = !kMasked || m[i] != 0;
    const double d = valid ? static_cast<double>(x[i]) - K : 0.0;
    L.cnt[j] += valid ? 1.0 : 0.0;
    L.s1[j] += d;
    L.s2[j] += d * d;
  }
}

#if defined(__AVX2__)
// Eight floats at a time: widened to two vectors of four doubles, invalid lanes zeroed by a
// bit mask (not a multiply, so that a NaN in a masked-out element stays out). The loads are
// requested kMomentsPrefetch elements ahead (into the next block at a block's end): a core's
// own reads keep too few lines in flight for the memory here, and the pass ran 60-66% of the
// triad without them against 69-82% with them (2 threads, 16M elements).
constexpr int64_t kMomentsPrefetch = 512;
// The valid elements are counted as the steps taken less the invalid ones, which each add 1 to
// an integer lane by subtracting their all-ones mask: one instruction where counting them in
// doubles took two, for the same whole-number counts.
template <bool kMasked>
static int64_t accumulateAvx2(const float* x, const uint8_t* m, int64_t len, double K, MomentLanes& L) {
  const __m256d k = _mm256_set1_pd(K);
  __m256d a0 = _mm256_setzero_pd(), a1 = a0, b0 = a0, b1 = a0;
  __m256i invalid0 = _mm256_setzero_si256(), invalid1 = invalid0;
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    prefetchAhead(x + i, kMomentsPrefetch * 4);
    if (kMasked && i % 64 == 0) prefetchAhead(m + i, kMomentsPrefetch);
    const __m256 xf = _mm256_loadu_ps(x + i);
    __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(xf)), k);
    __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(xf, 1)), k);
    if (kMasked) {
      const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(m + i));
      const __m128i invalid = _mm_cmpeq_epi8(bytes, _mm_setzero_si128());
      const __m256i bad0 = _mm256_cvtepi8_epi64(invalid), bad1 = _mm256_cvtepi8_epi64(_mm_srli_si128(invalid, 4));
      d0 = _mm256_andnot_pd(_mm256_castsi256_pd(bad0), d0);
      d1 = _mm256_andnot_pd(_mm256_castsi256_pd(bad1), d1);
      invalid0 = _mm256_sub_epi64(invalid0, bad0);
      invalid1 = _mm256_sub_epi64(invalid1, bad1);
    }
    a0 = _mm256_add_pd(a0, d0);
    a1 = _mm256_add_pd(a1, d1);
    b0 = _mm256_add_pd(b0, _mm256_mul_pd(d0, d0));
    b1 = _mm256_add_pd(b1, _mm256_mul_pd(d1, d1));
  }
  alignas(32) int64_t bad[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(bad), invalid0);
  _mm256_store_si256(reinterpret_cast<__m256i*>(bad + 4), invalid1);
  for (int j = 0; j < 8; ++j) L.cnt[j] = static_cast<double>(i / 8 - bad[j]);
  _mm256_storeu_pd(L.s1, a0);
  _mm256_storeu_pd(L.s1 + 4, a1);
  _mm256_storeu_pd(L.s2, b0);
  _mm256_storeu_pd(L.s2 + 4, b1);
  return i;
}
#endif

#if defined(__AVX512F__)
// Sixteen floats at a time into one vector of eight doubles per sum: elements i..i+7, then
// i+8..i+15, added in that order, so that lane j still takes the elements with i % 8 == j in the
// order of the AVX2 form (the same bits), in half its instructions. Invalid lanes are zeroed by
// the subtraction itself (zero-masked), and valid ones counted in integer lanes (a masked add):
// four instructions fewer a vector than zeroing and counting them in doubles, for the same
// whole-number counts: 11% less time in cache (64K elements, one thread); from memory the pass
// is bound by its reads (16M elements, 2 threads: within the noise).
template <bool kMasked, int kBlocks>
static int64_t accumulateAvx512(const float* x, const uint8_t* m, int64_t len, const double* K, MomentLanes* L) {
  const __m512i one = _mm512_set1_epi64(1);
  __m512d k[kBlocks], a[kBlocks], b[kBlocks];
  __m512i c[kBlocks];
#pragma GCC unroll 4
  for (int q = 0; q < kBlocks; ++q) {
    k[q] = _mm512_set1_pd(K[q]);
    a[q] = b[q] = _mm512_setzero_pd();
    c[q] = _mm512_setzero_si512();
  }
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
#pragma GCC unroll 4
    for (int q = 0; q < kBlocks; ++q) {
      const int64_t at = q * kMomentsBlock + i;
      prefetchAhead(x + at, kMomentsPrefetch * 4);
      if (kMasked && i % 64 == 0) prefetchAhead(m + at, kMomentsPrefetch);
      const __m512 xf = _mm512_loadu_ps(x + at);
      __mmask8 valid0 = 0xff, valid1 = 0xff;
      if (kMasked) {
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(m + at));
        const __mmask16 valid = _mm_test_epi8_mask(bytes, bytes);
        valid0 = static_cast<__mmask8>(valid);
        valid1 = static_cast<__mmask8>(valid >> 8);
      }
      const __m512d d0 = _mm512_maskz_sub_pd(valid0, _mm512_cvtps_pd(_mm512_castps512_ps256(xf)), k[q]);
      const __m512d d1 = _mm512_maskz_sub_pd(valid1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(xf, 1)), k[q]);
      c[q] = _mm512_mask_add_epi64(c[q], valid0, c[q], one);
      c[q] = _mm512_mask_add_epi64(c[q], valid1, c[q], one);
      a[q] = _mm512_add_pd(_mm512_add_pd(a[q], d0), d1);
      b[q] = _mm512_add_pd(_mm512_add_pd(b[q], _mm512_mul_pd(d0, d0)), _mm512_mul_pd(d1, d1));
    }
  }
#pragma GCC unroll 4
  for (int q = 0; q < kBlocks; ++q) {
    alignas(64) int64_t counts[8];
    _mm512_store_si512(counts, c[q]);
    for (int j = 0; j < 8; ++j) L[q].cnt[j] = static_cast<double>(counts[j]);
    _mm512_storeu_pd(L[q].s1, a[q]);
    _mm512_storeu_pd(L[q].s2, b[q]);
  }
  return i;
}
#endif

// One pass: sums of (x - K) and (x - K)^2 in float64, shifted by the block's first valid
// element K so that the subtraction that follows loses nothing that matters (float squares are
// exact in float64). kBlocks blocks of len elements, kMomentsBlock apart, in step (AVX-512 only:
// elsewhere kBlocks is 1).
template <bool kMasked, int kBlocks>
static void blockMomentsT(const float* x, const uint8_t* m, int64_t len, MaskedMoments* out) {
  double K[kBlocks];
  bool empty[kBlocks];
  for (int q = 0; q < kBlocks; ++q) {
    const int64_t at = q * kMomentsBlock;
    int64_t first = 0;
    if (kMasked)
      while (first < len && m[at + first] == 0) ++first;
    empty[q] = first == len;
    K[q] = empty[q] ? 0.0 : x[at + first];
  }
  MomentLanes L[kBlocks];
  int64_t done = 0;
#if defined(__AVX512F__)
  done = accumulateAvx512<kMasked, kBlocks>(x, m, len, K, L);
#elif defined(__AVX2__)
  static_assert(kBlocks == 1, "blocks in step on AVX-512 only");
  done = accumulateAvx2<kMasked>(x, m, len, K[0], L[0]);
#endif
  for (int q = 0; q < kBlocks; ++q) {
    const int64_t at = q * kMomentsBlock;
    out[q] = MaskedMoments();
    if (empty[q]) continue;
    // Blocks in step are whole, a multiple of 16 elements: only a block alone has a tail.
    if (kBlocks == 1) accumulateScalar<kMasked>(x + at, m, done, len, K[q], L[q]);
    double c = 0, a1 = 0, a2 = 0;
    for (int j = 0; j < 8; ++j) {
      c += L[q].cnt[j];
      a1 += L[q].s1[j];
      a2 += L[q].s2[j];
    }
    out[q].count = c;
    out[q].mean = K[q] + a1 / c;
    const double m2 = a2 - a1 * (a1 / c);
    out[q].m2 = m2 < 0 ? 0.0 : m2;  // rounding can dip below 0; a NaN stays NaN
  }
}

// Blocks read in step, as maskedRowSums reads rows: maskedMean over 16M elements, 2 threads,
// builds alternated in one process, 61-63% of the paired triad one block at a time, 64-69% four
// at a time; on AMD EPYC too, where the row passes read one row at a time (dispatch.cpp). AVX-512
// only: the AVX2 form keeps six accumulators a block in its sixteen registers, and two blocks in
// step there ran 1-2% slower than one (the AVX2 variant on the Intel host).
#if defined(__AVX512F__)
constexpr int kMomentBlocksInStep = 4;
#else
constexpr int kMomentBlocksInStep = 1;
#endif

void blocksMoments(const float* x, const uint8_t* m, int64_t n, int64_t blocks, MaskedMoments* out) {
  static_assert(kMomentsBlock % 16 == 0, "blocks in step have no tail");
  int64_t b = 0;
  // Whole blocks kMomentBlocksInStep at a time, then the rest one by one.
  if constexpr (kMomentBlocksInStep > 1) {
    for (; b + kMomentBlocksInStep <= blocks && (b + kMomentBlocksInStep) * kMomentsBlock <= n;
         b += kMomentBlocksInStep) {
      const int64_t at = b * kMomentsBlock;
      if (m != nullptr) blockMomentsT<true, kMomentBlocksInStep>(x + at, m + at, kMomentsBlock, out + b);
      else blockMomentsT<false, kMomentBlocksInStep>(x + at, nullptr, kMomentsBlock, out + b);
    }
  }
  for (; b < blocks; ++b) {
    const int64_t at = b * kMomentsBlock, len = std::min(kMomentsBlock, n - at);
    if (m != nullptr) blockMomentsT<true, 1>(x + at, m + at, len, out + b);
    else blockMomentsT<false, 1>(x + at, nullptr, len, out + b);
  }
}

// (x - center) * scale + shift, one element of it, in that order.
struct AffineSource {
  const float* x;
  float c, s, sh;
  float at1(int64_t j) const { return (x[j] - c) * s + sh; }
#if defined(__SSE2__)
  __m128 at4(int64_t j) const {
    return _mm_add_ps(_mm_mul_ps(_mm_sub_ps(_mm_loadu_ps(x + j), _mm_set1_ps(c)), _mm_set1_ps(s)), _mm_set1_ps(sh));
  }
#endif
#if defined(__AVX__)
  __m256 at8(int64_t j) const {
    return _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), _mm256_set1_ps(c)), _mm256_set1_ps(s)),
                         _mm256_set1_ps(sh));
  }
#endif
#if defined(__AVX512F__)
  __m512 at16(int64_t j) const {
    return _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), _mm512_set1_ps(c)), _mm512_set1_ps(s)),
                         _mm512_set1_ps(sh));
  }
#endif
};

void affineRange(const AffineArgs& a, int64_t i0, int64_t i1, bool streaming) {
  const float c = a.center, s = a.scale, sh = a.shift;
  if (!streaming) {
    const float* __restrict x = a.x;
    float* __restrict out = a.out;
    for (int64_t i = i0; i < i1; ++i) out[i] = (x[i] - c) * s + sh;
    return;
  }
  // Streamed straight from x when out sits at x's offset in its page (always so in place, and
  // for arrays too large for the allocator's heap, which all start alike in their pages): a load
  // of x then never shares its low 12 address bits with a store still in flight. Anywhere else
  // the stores could make the loads wait whenever out lies a little ahead of x in those bits
  // (4K aliasing, up to ten times slower), so they go through a buffer, about 30% slower than
  // straight.
  if (((reinterpret_cast<uintptr_t>(a.out) - reinterpret_cast<uintptr_t>(a.x)) & 4095) == 0) {
    streamOut(a.out + i0, i1 - i0, AffineSource{a.x + i0, c, s, sh});
    endStreaming(true);
    return;
  }
  constexpr int64_t kChunk = 1024;
  alignas(64) float slot[kChunk + 16];
  for (int64_t i = i0; i < i1; i += kChunk) {
    const int64_t w = i1 - i < kChunk ? i1 - i : kChunk;
    const float* __restrict x = a.x + i;
    float* __restrict buf = lineLike(slot, a.out + i);
    for (int64_t j = 0; j < w; ++j) buf[j] = (x[j] - c) * s + sh;
    storeRow(a.out + i, buf, w, true);
  }
  endStreaming(true);
}

}  // namespace RLHF_CHUNK_NS
}  // namespace rlhf
