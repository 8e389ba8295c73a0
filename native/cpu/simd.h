// A small vector abstraction for the chunk kernels that need explicit SIMD (reductions with a
// fixed lane order, exp): VF is 16 floats on AVX-512, 8 on AVX2 and 4 on the x86-64 baseline
// (SSE2); VD holds half as many doubles, so a VF widens into two VDs. Each variant's code is the
// same algorithm at its own width. Included inside the variant's namespace by the chunk-kernel
// headers.
#pragma once
#include <cstdint>
#include <cstring>
#if defined(__AVX2__)
#include <immintrin.h>
#else
#include <emmintrin.h>
#endif

namespace rlhf {
namespace RLHF_CHUNK_NS {
namespace simd {

#if defined(__AVX512F__)
// 16 floats. A comparison gives a VM, which here is a mask register (on the narrower variants a
// VF of all-ones lanes), so that every kernel reads the same at each width while a mask here
// costs no move out of its register: selecting, zeroing and adding in its lanes are one masked
// instruction.
constexpr int W = 16;
using VF = __m512;
using VD = __m512d;
using VI = __m512i;
struct VM {
  __mmask16 k;
};
inline VF load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, VF v) { _mm512_storeu_ps(p, v); }
inline void stream(float* p, VF v) { _mm512_stream_ps(p, v); }  // p 64-byte aligned
inline VF set1(float x) { return _mm512_set1_ps(x); }
inline VF add(VF a, VF b) { return _mm512_add_ps(a, b); }
inline VF sub(VF a, VF b) { return _mm512_sub_ps(a, b); }
inline VF mul(VF a, VF b) { return _mm512_mul_ps(a, b); }
inline VF div(VF a, VF b) { return _mm512_div_ps(a, b); }
inline VF sqrt(VF a) { return _mm512_sqrt_ps(a); }
inline VF fmadd(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
inline VF fnmadd(VF a, VF b, VF c) { return _mm512_fnmadd_ps(a, b, c); }
inline VF max(VF a, VF b) { return _mm512_max_ps(a, b); }
inline VF min(VF a, VF b) { return _mm512_min_ps(a, b); }
inline VM lt(VF a, VF b) { return {_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ)}; }
inline VM gt(VF a, VF b) { return {_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ)}; }
inline VM eq(VF a, VF b) { return {_mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ)}; }
inline VM isNan(VF a) { return {_mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q)}; }
inline VM noLanes() { return {0}; }
inline VM allLanes() { return {0xFFFF}; }
inline VF bitAnd(VF a, VF b) { return _mm512_and_ps(a, b); }
inline VF bitOr(VF a, VF b) { return _mm512_or_ps(a, b); }
inline VF bitAnd(VM m, VF x) { return _mm512_maskz_mov_ps(m.k, x); }  // x in m's lanes, else 0
inline VM bitAnd(VM a, VM b) { return {static_cast<__mmask16>(a.k & b.k)}; }
inline VM bitOr(VM a, VM b) { return {static_cast<__mmask16>(a.k | b.k)}; }
inline VF select(VM m, VF a, VF b) { return _mm512_mask_blend_ps(m.k, b, a); }  // m ? a : b
inline VF andNot(VM m, VF x) { return _mm512_maskz_mov_ps(static_cast<__mmask16>(~m.k), x); }
inline VM andNot(VM m, VM x) { return {static_cast<__mmask16>(~m.k & x.k)}; }
inline int anyLane(VM m) { return m.k; }
// acc + x in m's lanes, acc elsewhere.
inline VF addIn(VF acc, VM m, VF x) { return _mm512_mask_add_ps(acc, m.k, acc, x); }
inline VF absf(VF a) { return _mm512_andnot_ps(_mm512_set1_ps(-0.0f), a); }
inline VI subInt(VI a, VI b) { return _mm512_sub_epi32(a, b); }
inline VI bitsOf(VF a) { return _mm512_castps_si512(a); }
inline VF iota() { return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
inline VF intsToFloats(const int32_t* p) { return _mm512_cvtepi32_ps(_mm512_loadu_si512(p)); }
inline void accumulate(VD& lo, VD& hi, VF x) {
  lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(x)));
  hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1)));
}
inline void accumulateSquares(VD& lo, VD& hi, VF x) {
  const VD a = _mm512_cvtps_pd(_mm512_castps512_ps256(x)), b = _mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1));
  lo = _mm512_add_pd(lo, _mm512_mul_pd(a, a));
  hi = _mm512_add_pd(hi, _mm512_mul_pd(b, b));
}
inline VD zeroD() { return _mm512_setzero_pd(); }
inline VD set1D(double x) { return _mm512_set1_pd(x); }
inline VD addD(VD a, VD b) { return _mm512_add_pd(a, b); }
inline VD mulD(VD a, VD b) { return _mm512_mul_pd(a, b); }
inline void storeD(double* p, VD v) { _mm512_storeu_pd(p, v); }
inline VM maskFromBytes(const uint8_t* p) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return {_mm_test_epi8_mask(bytes, bytes)};
}
// u = m 2^k with m in [1, 2), k an integer as a float, for u >= 1 (NaN gives NaN).
inline VF mantissaAndExponent(VF u, VF& k) {
  k = _mm512_getexp_ps(u);
  return _mm512_getmant_ps(u, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
}
#elif defined(__AVX2__)
constexpr int W = 8;
using VF = __m256;
using VD = __m256d;
using VI = __m256i;
using VM = VF;  // comparisons give all-ones lanes
inline VF load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, VF v) { _mm256_storeu_ps(p, v); }
inline void stream(float* p, VF v) { _mm256_stream_ps(p, v); }  // p 32-byte aligned
inline VF set1(float x) { return _mm256_set1_ps(x); }
inline VF add(VF a, VF b) { return _mm256_add_ps(a, b); }
inline VF sub(VF a, VF b) { return _mm256_sub_ps(a, b); }
inline VF mul(VF a, VF b) { return _mm256_mul_ps(a, b); }
inline VF div(VF a, VF b) { return _mm256_div_ps(a, b); }
inline VF sqrt(VF a) { return _mm256_sqrt_ps(a); }
// a*b + c with one rounding (the AVX2 variant is compiled with FMA). Used where results are
// compared to the reference within a tolerance: the polynomials of exp, log1p, tanh and the k3
// series, the softmax sums, the matrix multiply.
inline VF fmadd(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
inline VF fnmadd(VF a, VF b, VF c) { return _mm256_fnmadd_ps(a, b, c); }  // c - a*b
// max(a, b): b when either is NaN (the x86 rule), so put the value whose NaN must survive second.
inline VF max(VF a, VF b) { return _mm256_max_ps(a, b); }
inline VF min(VF a, VF b) { return _mm256_min_ps(a, b); }
inline VF lt(VF a, VF b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
inline VF gt(VF a, VF b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
inline VF eq(VF a, VF b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
inline VF isNan(VF a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
inline VF bitAnd(VF a, VF b) { return _mm256_and_ps(a, b); }
inline VF bitOr(VF a, VF b) { return _mm256_or_ps(a, b); }
inline VF select(VF m, VF a, VF b) { return _mm256_blendv_ps(b, a, m); }  // m ? a : b
// x where the mask m is clear, 0 where it is set (bitAnd(m, x) is x where m is set, else 0): one
// bitwise operation, which any vector pipe runs, where select(m, 0, x) would take a blend.
inline VF andNot(VF m, VF x) { return _mm256_andnot_ps(m, x); }
inline int anyLane(VF m) { return _mm256_movemask_ps(m); }
inline VF absf(VF a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
// 2^k as a float, for k in [-126, 127].
inline VF pow2(VI k) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23)); }
inline VI shiftRight1(VI k) { return _mm256_srai_epi32(k, 1); }
inline VI subInt(VI a, VI b) { return _mm256_sub_epi32(a, b); }
inline VI bitsOf(VF a) { return _mm256_castps_si256(a); }
inline VI setInt(int32_t x) { return _mm256_set1_epi32(x); }
// 0,1,...,W-1 as floats (for one-hot lanes).
inline VF iota() { return _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7); }
// As the AVX-512 variant's, from the exponent field: for u >= 1 the field is k + 127 (a NaN gives
// some m and k: the caller keeps NaN apart).
inline VF mantissaAndExponent(VF u, VF& k) {
  const VI bits = bitsOf(u);
  k = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127)));
  return _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x3F800000)));
}
// W int32 values as floats.
inline VF intsToFloats(const int32_t* p) {
  return _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
// Adds the low and high halves of x, widened to double, to two accumulators.
inline void accumulate(VD& lo, VD& hi, VF x) {
  lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
  hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
}
// lo, hi += x*x with x widened first: the squares are exact in float64.
inline void accumulateSquares(VD& lo, VD& hi, VF x) {
  const VD a = _mm256_cvtps_pd(_mm256_castps256_ps128(x)), b = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
  lo = _mm256_add_pd(lo, _mm256_mul_pd(a, a));
  hi = _mm256_add_pd(hi, _mm256_mul_pd(b, b));
}
inline VD zeroD() { return _mm256_setzero_pd(); }
inline VD set1D(double x) { return _mm256_set1_pd(x); }
inline VD addD(VD a, VD b) { return _mm256_add_pd(a, b); }
inline VD mulD(VD a, VD b) { return _mm256_mul_pd(a, b); }
inline void storeD(double* p, VD v) { _mm256_storeu_pd(p, v); }
// All-ones lanes where the W bytes at p are non-zero.
inline VF maskFromBytes(const uint8_t* p) {
  const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(v, _mm256_setzero_si256()));
}
#else
constexpr int W = 4;
using VF = __m128;
using VD = __m128d;
using VI = __m128i;
using VM = VF;
inline VF load(const float* p) { return _mm_loadu_ps(p); }
inline void store(float* p, VF v) { _mm_storeu_ps(p, v); }
inline void stream(float* p, VF v) { _mm_stream_ps(p, v); }  // p 16-byte aligned
inline VF set1(float x) { return _mm_set1_ps(x); }
inline VF add(VF a, VF b) { return _mm_add_ps(a, b); }
inline VF sub(VF a, VF b) { return _mm_sub_ps(a, b); }
inline VF mul(VF a, VF b) { return _mm_mul_ps(a, b); }
inline VF div(VF a, VF b) { return _mm_div_ps(a, b); }
inline VF sqrt(VF a) { return _mm_sqrt_ps(a); }
inline VF fmadd(VF a, VF b, VF c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
inline VF fnmadd(VF a, VF b, VF c) { return _mm_sub_ps(c, _mm_mul_ps(a, b)); }
inline VF max(VF a, VF b) { return _mm_max_ps(a, b); }
inline VF min(VF a, VF b) { return _mm_min_ps(a, b); }
inline VF lt(VF a, VF b) { return _mm_cmplt_ps(a, b); }
inline VF gt(VF a, VF b) { return _mm_cmpgt_ps(a, b); }
inline VF eq(VF a, VF b) { return _mm_cmpeq_ps(a, b); }
inline VF isNan(VF a) { return _mm_cmpunord_ps(a, a); }
inline VF bitAnd(VF a, VF b) { return _mm_and_ps(a, b); }
inline VF bitOr(VF a, VF b) { return _mm_or_ps(a, b); }
inline VF select(VF m, VF a, VF b) { return _mm_or_ps(_mm_and_ps(m, a), _mm_andnot_ps(m, b)); }
inline VF andNot(VF m, VF x) { return _mm_andnot_ps(m, x); }
inline int anyLane(VF m) { return _mm_movemask_ps(m); }
inline VF absf(VF a) { return _mm_andnot_ps(_mm_set1_ps(-0.0f), a); }
inline VF pow2(VI k) { return _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(k, _mm_set1_epi32(127)), 23)); }
inline VI shiftRight1(VI k) { return _mm_srai_epi32(k, 1); }
inline VI subInt(VI a, VI b) { return _mm_sub_epi32(a, b); }
inline VI bitsOf(VF a) { return _mm_castps_si128(a); }
inline VI setInt(int32_t x) { return _mm_set1_epi32(x); }
inline VF iota() { return _mm_setr_ps(0, 1, 2, 3); }
inline VF mantissaAndExponent(VF u, VF& k) {  // as the AVX2 variant's
  const VI bits = bitsOf(u);
  k = _mm_cvtepi32_ps(_mm_sub_epi32(_mm_srli_epi32(bits, 23), _mm_set1_epi32(127)));
  return _mm_castsi128_ps(_mm_or_si128(_mm_and_si128(bits, _mm_set1_epi32(0x007FFFFF)), _mm_set1_epi32(0x3F800000)));
}
inline VF intsToFloats(const int32_t* p) { return _mm_cvtepi32_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline void accumulate(VD& lo, VD& hi, VF x) {
  lo = _mm_add_pd(lo, _mm_cvtps_pd(x));
  hi = _mm_add_pd(hi, _mm_cvtps_pd(_mm_movehl_ps(x, x)));
}
inline void accumulateSquares(VD& lo, VD& hi, VF x) {
  const VD a = _mm_cvtps_pd(x), b = _mm_cvtps_pd(_mm_movehl_ps(x, x));
  lo = _mm_add_pd(lo, _mm_mul_pd(a, a));
  hi = _mm_add_pd(hi, _mm_mul_pd(b, b));
}
inline VD zeroD() { return _mm_setzero_pd(); }
inline VD set1D(double x) { return _mm_set1_pd(x); }
inline VD addD(VD a, VD b) { return _mm_add_pd(a, b); }
inline VD mulD(VD a, VD b) { return _mm_mul_pd(a, b); }
inline void storeD(double* p, VD v) { _mm_storeu_pd(p, v); }
inline VF maskFromBytes(const uint8_t* p) {
  int32_t word;
  std::memcpy(&word, p, sizeof word);
  const __m128i z = _mm_setzero_si128();
  const __m128i v = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(word), z), z);
  return _mm_castsi128_ps(_mm_cmpgt_epi32(v, z));
}
#endif

inline VF zero() { return set1(0.0f); }
#if !defined(__AVX512F__)
inline VM noLanes() { return zero(); }
inline VM allLanes() { return eq(zero(), zero()); }
inline VF addIn(VF acc, VM m, VF x) { return add(acc, bitAnd(m, x)); }
#endif
// How many lanes of a comparison's result are set.
inline int countLanes(VM m) { return __builtin_popcount(static_cast<unsigned>(anyLane(m))); }
// acc + 1 in m's lanes: a count per lane, exact in float below 2^24.
inline VF countIn(VF acc, VM m) { return addIn(acc, m, set1(1.0f)); }

// k = round(x / ln2) as a float and as an integer, by the magic-number trick: adding 1.5 * 2^23
// leaves round(x log2(e)) in the low mantissa bits (|x log2(e)| < 2^22), one FMA and one
// subtraction instead of a round trip through the integer conversions.
inline VF nearestLog2Multiple(VF x, VI& k) {
  const VF magic = set1(12582912.0f);
  const VF t = fmadd(x, set1(1.44269504088896341f), magic);
  k = subInt(bitsOf(t), bitsOf(magic));
  return sub(t, magic);
}

// p 2^k, k = kf an integer, rounded once as the exact product would be (into the denormals, or to
// inf): for k in [-150, 128] (times2ToK), in [-150, 0] (times2ToKNonPositive), in [-126, 127]
// (times2ToKNormal, where 2^k itself is a normal float). AVX-512 has it as one instruction for any
// k (vscalefps); the narrower variants build 2^k in the exponent field, in two factors where k may
// leave the normal range: 2^floor(k/2) exactly, then the rest, the one rounding; or 2^(k+64),
// exact, then 2^-64.
#if defined(__AVX512F__)
inline VF times2ToK(VF p, VF kf, VI) { return _mm512_scalef_ps(p, kf); }
inline VF times2ToKNonPositive(VF p, VF kf, VI) { return _mm512_scalef_ps(p, kf); }
inline VF times2ToKNormal(VF p, VF kf, VI) { return _mm512_scalef_ps(p, kf); }
// x < lo ? 0 : v, NaN x giving v: the comparison as a mask register that zeroes the lanes as v moves.
inline VF zeroWhereBelow(VF x, VF lo, VF v) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ), v); }
#else
inline VF times2ToK(VF p, VF, VI k) {
  const VI k1 = shiftRight1(k);
  return mul(mul(p, pow2(k1)), pow2(subInt(k, k1)));
}
inline VF times2ToKNonPositive(VF p, VF, VI k) { return mul(mul(p, pow2(subInt(k, setInt(-64)))), set1(0x1p-64f)); }
inline VF times2ToKNormal(VF p, VF, VI k) { return mul(p, pow2(k)); }
inline VF zeroWhereBelow(VF x, VF lo, VF v) { return select(lt(x, lo), zero(), v); }
#endif

// exp(r + k ln2) / 2^k for the reduced argument: Cephes' polynomial, r = x - k ln2 with ln2
// split in two so that k*ln2hi is exact. The polynomial is evaluated in Estrin's scheme (pairs of
// terms, then powers of r^2) rather than Horner's: half the dependent steps, which is what bounds
// a loop of exps.
inline VF reducedArgument(VF x, VF kf) {  // x - k ln2, ln2 in two parts
  return fnmadd(kf, set1(-2.12194440e-4f), fnmadd(kf, set1(0.693359375f), x));
}

inline VF expReduced(VF x, VF kf) {
  const VF r = reducedArgument(x, kf);
  const VF r2 = mul(r, r), r4 = mul(r2, r2);
  const VF a = fmadd(set1(1.6666665459e-1f), r, set1(5.0000001201e-1f));
  const VF b = fmadd(set1(8.3334519073e-3f), r, set1(4.1665795894e-2f));
  const VF c = fmadd(set1(1.9875691500e-4f), r, set1(1.3981999507e-3f));
  const VF p = fmadd(r4, c, fmadd(r2, b, a));
  return add(fmadd(p, r2, r), set1(1.0f));
}

// exp(x) to within 2 ulp (Cephes' range reduction and polynomial), denormal results included,
// with no selects: x is clamped to [-104, 89] (NaN stays NaN: min and max return their second
// operand), and at either end the result rounds by itself to what it must be: 0 at -104, whose
// exp is under half the smallest denormal, and +inf from ln(FLT_MAX) up. 2^k may leave the normal
// exponent range at either end (times2ToK).
inline VF exp(VF x) {
  const VF xc = min(set1(89.0f), max(set1(-104.0f), x));
  VI k;
  const VF kf = nearestLog2Multiple(xc, k);
  return times2ToK(expReduced(xc, kf), kf, k);
}

// exp(x) for x <= 0 or NaN, bit for bit what exp() gives there (both round p 2^k once), in fewer
// operations on the narrower variants (times2ToKNonPositive).
inline VF expNonPositive(VF x) {
  const VF xc = max(set1(-104.0f), x);  // NaN stays NaN
  VI k;
  const VF kf = nearestLog2Multiple(xc, k);
  return times2ToKNonPositive(expReduced(xc, kf), kf, k);
}

// exp(x) for the softmax, where x = (z - max)/tau <= 0 or NaN, with every x below -87 (whose exp
// is under 1.7e-38 of the row's largest term, a denormal) taken as 0, so that 2^k is normal. On the reduced argument a degree-5 polynomial of our own fit (scripts/fit-polynomials.py)
// in place of Cephes' degree 7: within 2.3 ulp of exp over every float in [-87, 0], where exp()
// is within 1.05, and three operations fewer in the loop that bounds the softmax. `clamped`
// receives max(x, -87) (NaN for NaN), which times the result is e*x without the NaN that
// 0 * -inf would give.
constexpr float kSoftmaxExpFloor = -87.0f;
inline VF expSoftmax(VF x, VF& clamped) {
  const VF lo = set1(kSoftmaxExpFloor);
  const VF xc = max(lo, x);  // NaN stays NaN (max returns its second operand)
  VI k;
  const VF kf = nearestLog2Multiple(xc, k);
  const VF r = reducedArgument(xc, kf);
  const VF r2 = mul(r, r);
  const VF q = fmadd(r2, fmadd(set1(8.3125261590e-3f), r, set1(4.1890114546e-2f)),
                     fmadd(set1(1.6667114198e-1f), r, set1(4.9999231100e-1f)));
  clamped = xc;
  return zeroWhereBelow(x, lo, times2ToKNormal(add(fmadd(q, r2, r), set1(1.0f)), kf, k));
}

// log1p(e) for e in [0, 1] (or NaN) as e q(e), q a degree-9 polynomial fitted by us to
// log1p(e)/e (scripts/fit-polynomials.py), evaluated as pairs of terms in powers of e^2: half the
// dependent steps of Horner's rule. Within 2 ulp of log1p over the range (float64 at 2M points;
// testLogisticAccuracy holds the family built on it to 2^-22 relative), e itself for denormal e.
// Half the operations of log(1 + e) with a correction for the rounding of 1 + e.
inline VF log1pUnit(VF e) {
  const VF e2 = mul(e, e);
  VF q = fmadd(set1(-3.244031919e-03f), e, set1(1.985149272e-02f));
  q = fmadd(q, e2, fmadd(set1(-5.695959181e-02f), e, set1(1.060366035e-01f)));
  q = fmadd(q, e2, fmadd(set1(-1.530559659e-01f), e, set1(1.967594028e-01f)));
  q = fmadd(q, e2, fmadd(set1(-2.495413423e-01f), e, set1(3.332996368e-01f)));
  q = fmadd(q, e2, fmadd(set1(-4.999990165e-01f), e, set1(1.0f)));
  return mul(q, e);
}

// log1p(s) for s >= 0 (or NaN): log1pUnit(s) up to 1; above, with 1 + s rounded to u = m 2^k
// (m in [1, 2)), k ln2 + log1pUnit(m - 1), m - 1 exact. The rounding of 1 + s, at most half an ulp
// of u, moves log u by under 2^-24, where log u > ln 2: under an ulp more.
inline VF log1pNonNegative(VF s) {
  const VF one = set1(1.0f);
  const VM above = gt(s, one);  // NaN fails the comparison
  VF k;
  const VF m = mantissaAndExponent(add(one, s), k);
  const VF x = select(above, sub(m, one), s);
  const VF kAbove = bitAnd(above, k);
  return fmadd(kAbove, set1(0.693359375f), fmadd(kAbove, set1(-2.12194440e-4f), log1pUnit(x)));
}

// Sums of log1p(e), e in [0, 1], as products: a lane holds p - 1 for p the product of its 1 + e,
// which log1pNonNegative turns into the lane's sum when its float lanes are flushed. Two operations
// a vector in place of log1pUnit's twelve, and about as exact: p - 1 is e itself for a lane's first
// e (so that a tiny e is kept whole), and each step rounds p - 1 twice relatively (p - 1 + e, then
// + (p - 1) e), as adding to a float sum rounds it once. p is at most 2^(vectors) a lane.
inline VF log1pProductStep(VF pMinus1, VF e) { return fmadd(pMinus1, e, add(pMinus1, e)); }

// The logistic family of z from one exp, one log1p and one division: softplus(-z) = -logsig(z),
// softplus(z) = -logsig(-z), sig(z), sig(-z). With e = exp(-|z|) in [0, 1]:
// softplus(+-z) = max(+-z, 0) + log1p(e), exact for any |z|. NaN stays NaN.
struct Logistic {
  VF spMinus, spPlus, s, sNeg;
};

// The exp the logistic family starts from: exp(-|z|). Loops that compute it for their next vector
// before finishing this one (logisticFrom) give the out-of-order core two dependency chains to
// overlap.
inline VF logisticExp(VF z) { return expNonPositive(bitOr(z, set1(-0.0f))); }

inline Logistic logisticFrom(VF z, VF e) {
  const VF r = div(set1(1.0f), add(set1(1.0f), e));
  const VF log1pE = log1pUnit(e);
  const VF er = mul(e, r);
  const VM negative = lt(z, zero());
  return {add(max(zero(), sub(zero(), z)), log1pE), add(max(zero(), z), log1pE), select(negative, er, r),
          select(negative, r, er)};
}

inline Logistic logistic(VF z) { return logisticFrom(z, logisticExp(z)); }

// tanh(x) as x P(x^2) / Q(x^2) up to |x| = 7.9053, +-1 beyond (where float tanh is +-1): a
// rational fit of our own (weighted least squares on the relative error, iterated; float32
// coefficients), within 5.1e-7 relative of tanh for every float. A dozen operations and one
// division, where 1 - 2/(exp(2x) + 1) would cost an exp and lose digits near 0. NaN stays NaN.
inline VF tanh(VF x) {
  const VF c = set1(7.90531110763549805f);
  const VF s = mul(x, x);
  VF p = set1(-6.30926422218181e-09f);
  p = fmadd(p, s, set1(7.259179255925119e-06f));
  p = fmadd(p, s, set1(0.002709754975512624f));
  p = fmadd(p, s, set1(0.1272568255662918f));
  p = fmadd(p, s, set1(0.9999999403953552f));
  VF q = set1(0.0001984310947591439f);
  q = fmadd(q, s, set1(0.02290782332420349f));
  q = fmadd(q, s, set1(0.46058905124664307f));
  q = fmadd(q, s, set1(1.0f));
  const VF one = bitOr(set1(1.0f), bitAnd(x, set1(-0.0f)));
  return select(gt(absf(x), c), one, div(mul(x, p), q));
}

// Sums of the lanes, in lane order.
inline double sumLanes(VD v) {
  double d[W / 2];
  storeD(d, v);
  double s = 0;
  for (int i = 0; i < W / 2; ++i) s += d[i];
  return s;
}
}  // namespace simd
}  // namespace RLHF_CHUNK_NS
}  // namespace rlhf
