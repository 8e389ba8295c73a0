// Single-thread chunk kernels of the preference family, compiled once per instruction-set
// variant (included by the kernels_*.cpp files after policy_chunks.h).
#include <cmath>
#include <cstdint>

#include "cpu_variants.h"
#include "rlhf/preference.h"
#include "simd.h"

namespace rlhf {
namespace RLHF_CHUNK_NS {

using namespace simd;

// --- the pairwise reward-model loss over pairs [i0, i1) ---------------------------------------------

// Sums in float lanes flushed into float64 every kFlushVectors vectors (as the loss blocks of
// policy_chunks.h); the margin's mean is the chosen mean minus the rejected one.
struct PairwiseLanes {
  VF loss, center, chosen, rejected, correct;
  VD lossLo, lossHi, centerLo, centerHi, chosenLo, chosenHi, rejectedLo, rejectedHi;
  int pending;
};

static inline void flush(PairwiseLanes& L) {
  flushInto(L.loss, L.lossLo, L.lossHi);
  flushInto(L.center, L.centerLo, L.centerHi);
  flushInto(L.chosen, L.chosenLo, L.chosenHi);
  flushInto(L.rejected, L.rejectedLo, L.rejectedHi);
  L.pending = 0;
}

// The pairwise loss's inputs and constants as locals no store can alias.
struct PairwiseView {
  const float* __restrict chosen;
  const float* __restrict rejected;
  const float* __restrict margin;
  float* __restrict gradChosen;
  float* __restrict gradRejected;
  float marginValue, invN, centerScale;  // centerScale = 2 centerCoef / N
  bool streaming;                         // both gradients streamed past the cache, in step
};

// A vector of pairs as far as the loop takes it ahead of the one it finishes (see pipelined):
// delta = rc - rr - margin and exp(-|delta|).
struct PairwiseAhead {
  VF delta, e;
};

template <bool kPartial>
static inline PairwiseAhead pairwiseAhead(const PairwiseView& v, int64_t i, int64_t n) {
  const VF m = v.margin == nullptr ? set1(v.marginValue) : loadOr<kPartial>(v.margin + i, n);
  const VF delta = sub(sub(loadOr<kPartial>(v.chosen + i, n), loadOr<kPartial>(v.rejected + i, n)), m);
  return {delta, logisticExp(delta)};
}

// Pairs [i, i + n) given what pairwiseAhead took of them. kCenter: centerCoef is not 0 (without
// it, the centring term and its gradient are left out: a sixth of the loop's operations, which
// bounds the loss on this machine, and no sum of squares to overflow).
template <bool kCenter, bool kPartial>
static inline void pairwiseVector(const PairwiseView& v, int64_t i, int64_t n, const PairwiseAhead& p,
                                  PairwiseLanes& L) {
  const VF rc = loadOr<kPartial>(v.chosen + i, n);
  const VF rr = loadOr<kPartial>(v.rejected + i, n);
  const VM valid = kPartial ? lt(iota(), set1(static_cast<float>(n))) : allLanes();
  const Logistic f = logisticFrom(p.delta, p.e);
  const VF g = mul(f.sNeg, set1(-v.invN));  // (sig(delta) - 1)/N without the cancellation
  if (kCenter) {
    const VF sum = add(rc, rr);
    const VF c = mul(set1(v.centerScale), sum);
    storeOr<kPartial>(v.gradChosen + i, add(g, c), n, v.streaming);
    storeOr<kPartial>(v.gradRejected + i, sub(c, g), n, v.streaming);
    L.center = add(L.center, inLanes<kPartial>(valid, mul(sum, sum)));
  } else {
    storeOr<kPartial>(v.gradChosen + i, g, n, v.streaming);
    storeOr<kPartial>(v.gradRejected + i, sub(zero(), g), n, v.streaming);
  }
  L.loss = add(L.loss, inLanes<kPartial>(valid, f.spMinus));
  L.chosen = add(L.chosen, inLanes<kPartial>(valid, rc));
  L.rejected = add(L.rejected, inLanes<kPartial>(valid, rr));
  L.correct = countIn(L.correct, inLanes<kPartial>(valid, gt(rc, rr)));
  if (++L.pending == kFlushVectors) flush(L);
}

template <bool kCenter>
static PairwiseLanes pairwiseLanes(const PairwiseView& v, int64_t i0, int64_t i1) {
  PairwiseLanes L{zero(), zero(), zero(), zero(), zero(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD(),
                  zeroD(), zeroD(), 0};
  // Streamed, the pairs before the gradients reach a vector boundary go first, as a partial vector.
  const int64_t head = v.streaming ? alignHead(v.gradChosen + i0, i1 - i0) : 0;
  if (head > 0) pairwiseVector<kCenter, true>(v, i0, head, pairwiseAhead<true>(v, i0, head), L);
  const int64_t i = pipelined(
      i0 + head, i1, [&](int64_t j) { return pairwiseAhead<false>(v, j, W); },
      [&](int64_t j, const PairwiseAhead& x) { pairwiseVector<kCenter, false>(v, j, W, x, L); });
  if (i < i1) pairwiseVector<kCenter, true>(v, i, i1 - i, pairwiseAhead<true>(v, i, i1 - i), L);
  flush(L);
  return L;
}

PairwiseBlock pairwiseRange(const PairwiseLossArgs& a, int64_t i0, int64_t i1, bool streaming) {
  const float invN = static_cast<float>(1.0 / static_cast<double>(a.N));
  const PairwiseView v{a.chosen, a.rejected, a.margin, a.gradChosen, a.gradRejected, a.marginValue, invN,
                       static_cast<float>(2.0 * a.centerCoef / static_cast<double>(a.N)), streaming};
  const PairwiseLanes L = a.centerCoef != 0.0f ? pairwiseLanes<true>(v, i0, i1) : pairwiseLanes<false>(v, i0, i1);
  PairwiseBlock out;
  out.loss = sumLanes(L.lossLo) + sumLanes(L.lossHi);
  out.center = sumLanes(L.centerLo) + sumLanes(L.centerHi);
  out.chosen = sumLanes(L.chosenLo) + sumLanes(L.chosenHi);
  out.rejected = sumLanes(L.rejectedLo) + sumLanes(L.rejectedHi);
  out.margin = out.chosen - out.rejected;
  out.correct = static_cast<int64_t>(sumLanesF(L.correct));
  return out;
}

// --- the DPO family over pairs [i0, i1) ----------------------------------------------------------------
// The formulas of preference_math.h in float32 lanes; logsig via softplus, so that margins of any
// size stay finite and exact.

static inline VF neg(VF z) { return sub(zero(), z); }

struct DpoTerms {
  VF l, dx, dy;
};

struct DpoConsts {
  VF b, eps, oneMinusEps, invOneMinus2Eps, logOneMinusEps, logEps, logOdds, halfInvB, tau, invTau, delta;
};

// The types whose loss takes the logistic family of z = beta (x - y).
template <DpoLossType kType>
constexpr bool kLogisticOfZ = kType == DpoLossType::Sigmoid || kType == DpoLossType::Robust ||
                              kType == DpoLossType::ExoPair || kType == DpoLossType::ApoDown ||
                              kType == DpoLossType::Discopop;

// A vector of pairs as far as the loop takes it ahead of the one it finishes: the log-ratios, z,
// and for the types that need it exp(-|z|) (see logisticExp).
struct DpoAhead {
  VF x, y, z, e;
};

template <DpoLossType kType>
static inline DpoTerms dpoVector(const DpoAhead& p, VF nc, VF nr, const DpoConsts& c) {
  const VF b = c.b, x = p.x, y = p.y, z = p.z;
  switch (kType) {
    case DpoLossType::Sigmoid: {
      const Logistic f = logisticFrom(z, p.e);
      const VF l = add(mul(c.oneMinusEps, f.spMinus), mul(c.eps, f.spPlus));
      const VF d = mul(b, sub(c.eps, f.sNeg));  // b (sig(z) - (1 - eps))
      return {l, d, neg(d)};
    }
    case DpoLossType::Robust: {
      const Logistic f = logisticFrom(z, p.e);
      const VF l = mul(sub(mul(c.oneMinusEps, f.spMinus), mul(c.eps, f.spPlus)), c.invOneMinus2Eps);
      const VF d = mul(b, sub(f.s, mul(c.oneMinusEps, c.invOneMinus2Eps)));
      return {l, d, neg(d)};
    }
    case DpoLossType::Hinge: {
      const VF l = max(zero(), sub(set1(1.0f), z));
      const VF d = select(lt(z, set1(1.0f)), neg(b), select(isNan(z), z, zero()));
      return {l, d, neg(d)};
    }
    case DpoLossType::Ipo: {
      // nc = 0 marks "no lengths": the summed form.
      const VM normalised = gt(nc, zero());
      const VF ncs = select(normalised, nc, set1(1.0f)), nrs = select(normalised, nr, set1(1.0f));
      const VF g = sub(sub(div(x, ncs), div(y, nrs)), c.halfInvB);
      const VF d = mul(set1(2.0f), g);
      return {mul(g, g), div(d, ncs), neg(div(d, nrs))};
    }
    case DpoLossType::SigmoidNorm: {
      const VF w = mul(b, sub(div(x, nc), div(y, nr)));
      const Logistic f = logistic(w);
      return {f.spMinus, neg(div(mul(b, f.sNeg), nc)), div(mul(b, f.sNeg), nr)};
    }
    case DpoLossType::ExoPair: {
      const Logistic f = logisticFrom(z, p.e);
      const VF l = neg(add(mul(f.s, add(f.spMinus, c.logOneMinusEps)), mul(f.sNeg, add(f.spPlus, c.logEps))));
      const VF d = mul(mul(mul(b, f.s), f.sNeg), sub(z, c.logOdds));
      return {l, d, neg(d)};
    }
    case DpoLossType::NcaPair: {
      const Logistic u = logistic(mul(b, x)), v = logistic(mul(b, y));
      const VF l = add(add(u.spMinus, mul(set1(0.5f), u.spPlus)), mul(set1(0.5f), v.spPlus));
      return {l, mul(b, sub(mul(set1(1.5f), u.s), set1(1.0f))), mul(mul(set1(0.5f), b), v.s)};
    }
    case DpoLossType::BcoPair: {
      const Logistic u = logistic(sub(mul(b, x), c.delta)), v = logistic(sub(mul(b, y), c.delta));
      return {add(u.spMinus, v.spPlus), neg(mul(b, u.sNeg)), mul(b, v.s)};
    }
    case DpoLossType::SppoHard: {
      const VF gx = sub(x, c.halfInvB), gy = add(y, c.halfInvB);
      return {add(mul(gx, gx), mul(gy, gy)), mul(set1(2.0f), gx), mul(set1(2.0f), gy)};
    }
    case DpoLossType::ApoZero: {
      const Logistic u = logistic(mul(b, x)), v = logistic(mul(b, y));
      return {add(sub(set1(1.0f), u.s), v.s), neg(mul(mul(b, u.s), u.sNeg)), mul(mul(b, v.s), v.sNeg)};
    }
    case DpoLossType::ApoDown: {
      const Logistic u = logistic(mul(b, x)), f = logisticFrom(z, p.e);
      const VF szz = mul(f.s, f.sNeg);
      return {sub(add(u.s, set1(1.0f)), f.s), sub(mul(mul(b, u.s), u.sNeg), mul(b, szz)), mul(b, szz)};
    }
    case DpoLossType::Discopop: {
      const Logistic f = logisticFrom(z, p.e), t = logistic(mul(z, c.invTau));
      const VF m = t.s, oneMinusM = t.sNeg;
      const VF expM = simd::exp(neg(add(t.spMinus, z)));
      const VF expMM = simd::exp(neg(add(add(t.spMinus, z), t.spPlus)));
      const VF l = add(mul(f.spMinus, oneMinusM), expM);
      const VF dz = add(sub(neg(mul(f.sNeg, oneMinusM)), expM),
                        mul(sub(expMM, mul(mul(f.spMinus, m), oneMinusM)), c.invTau));
      const VF d = mul(b, dz);
      return {l, d, neg(d)};
    }
  }
  return {zero(), zero(), zero()};
}

// Sums as the pairwise loss's: float lanes flushed into float64 every kFlushVectors vectors.
struct DpoSums {
  VF loss, bx, by, correct;
  VD lossLo, lossHi, bxLo, bxHi, byLo, byHi;
  int pending;
};

static inline void flush(DpoSums& L) {
  flushInto(L.loss, L.lossLo, L.lossHi);
  flushInto(L.bx, L.bxLo, L.bxHi);
  flushInto(L.by, L.byLo, L.byHi);
  L.pending = 0;
}

// The DPO inputs as locals no store can alias.
struct DpoView {
  const float* __restrict pc;
  const float* __restrict pr;
  const float* __restrict rc;
  const float* __restrict rr;
  const int32_t* __restrict nc;
  const int32_t* __restrict nr;
  float* __restrict gc;
  float* __restrict gr;
  bool streaming;  // both gradients streamed past the cache, in step
};

// Sequence lengths as floats; a partial vector's padding lanes get 1, so that they divide
// harmlessly (their results are dropped).
template <bool kPartial>
static inline VF lengthsOr(const int32_t* p, int64_t n) {
  if (!kPartial) return intsToFloats(p);
  alignas(64) float t[W];
  for (int64_t j = 0; j < W; ++j) t[j] = j < n ? static_cast<float>(p[j]) : 1.0f;
  return load(t);
}

template <DpoLossType kType, bool kPartial>
static inline DpoAhead dpoAhead(const DpoView& v, const DpoConsts& c, int64_t i, int64_t n) {
  const VF x = sub(loadOr<kPartial>(v.pc + i, n), loadOr<kPartial>(v.rc + i, n));
  const VF y = sub(loadOr<kPartial>(v.pr + i, n), loadOr<kPartial>(v.rr + i, n));
  const VF z = mul(c.b, sub(x, y));
  return {x, y, z, kLogisticOfZ<kType> ? logisticExp(z) : zero()};
}

// Pairs [i, i + n) given what dpoAhead took of them.
template <DpoLossType kType, bool kPartial>
static inline void dpoStep(const DpoView& v, const DpoConsts& c, VF invN, int64_t i, int64_t n, const DpoAhead& a,
                           DpoSums& L) {
  const VM valid = kPartial ? lt(iota(), set1(static_cast<float>(n))) : allLanes();
  const bool lengths = v.nc != nullptr;
  const VF nc = lengths ? lengthsOr<kPartial>(v.nc + i, n) : zero();
  const VF nr = lengths ? lengthsOr<kPartial>(v.nr + i, n) : zero();
  const DpoTerms p = dpoVector<kType>(a, nc, nr, c);
  storeOr<kPartial>(v.gc + i, mul(p.dx, invN), n, v.streaming);
  storeOr<kPartial>(v.gr + i, mul(p.dy, invN), n, v.streaming);
  const VF bx = mul(c.b, a.x), by = mul(c.b, a.y);
  L.loss = add(L.loss, inLanes<kPartial>(valid, p.l));
  L.bx = add(L.bx, inLanes<kPartial>(valid, bx));
  L.by = add(L.by, inLanes<kPartial>(valid, by));
  L.correct = countIn(L.correct, inLanes<kPartial>(valid, gt(bx, by)));
  if (++L.pending == kFlushVectors) flush(L);
}

template <DpoLossType kType>
static DpoBlock dpoRangeT(const DpoLossArgs& a, const DpoConsts& c, float invN, int64_t i0, int64_t i1,
                         bool streaming) {
  DpoSums L{zero(), zero(), zero(), zero(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), 0};
  const DpoView v{a.policyChosen, a.policyRejected, a.refChosen, a.refRejected, a.chosenLengths, a.rejectedLengths,
                  a.gradChosen, a.gradRejected, streaming};
  const VF vInvN = set1(invN);
  // Streamed, the pairs before the gradients reach a vector boundary go first, as a partial vector.
  const int64_t head = streaming ? alignHead(v.gc + i0, i1 - i0) : 0;
  if (head > 0) dpoStep<kType, true>(v, c, vInvN, i0, head, dpoAhead<kType, true>(v, c, i0, head), L);
  const int64_t i = pipelined(
      i0 + head, i1, [&](int64_t j) { return dpoAhead<kType, false>(v, c, j, W); },
      [&](int64_t j, const DpoAhead& x) { dpoStep<kType, false>(v, c, vInvN, j, W, x, L); });
  if (i < i1) dpoStep<kType, true>(v, c, vInvN, i, i1 - i, dpoAhead<kType, true>(v, c, i, i1 - i), L);
  flush(L);
  DpoBlock out;
  out.loss = sumLanes(L.lossLo) + sumLanes(L.lossHi);
  out.chosen = sumLanes(L.bxLo) + sumLanes(L.bxHi);
  out.rejected = sumLanes(L.byLo) + sumLanes(L.byHi);
  out.correct = sumLanesF(L.correct);
  return out;
}

DpoBlock dpoRange(const DpoLossArgs& a, double delta, int64_t i0, int64_t i1, bool streaming) {
  const float e = a.labelSmoothing, b = a.beta;
  const DpoConsts c{set1(b), set1(e), set1(1 - e), set1(1 / (1 - 2 * e)), set1(std::log(1 - e)),
                    set1(e > 0 ? std::log(e) : 0.0f), set1(e > 0 ? std::log((1 - e) / e) : 0.0f), set1(0.5f / b),
                    set1(a.discopopTau), set1(1 / a.discopopTau), set1(static_cast<float>(delta))};
  const float invN = static_cast<float>(1.0 / static_cast<double>(a.N));
  switch (a.type) {
    case DpoLossType::Sigmoid: return dpoRangeT<DpoLossType::Sigmoid>(a, c, invN, i0, i1, streaming);
    case DpoLossType::Robust: return dpoRangeT<DpoLossType::Robust>(a, c, invN, i0, i1, streaming);
    case DpoLossType::Hinge: return dpoRangeT<DpoLossType::Hinge>(a, c, invN, i0, i1, streaming);
    case DpoLossType::Ipo: return dpoRangeT<DpoLossType::Ipo>(a, c, invN, i0, i1, streaming);
    case DpoLossType::SigmoidNorm: return dpoRangeT<DpoLossType::SigmoidNorm>(a, c, invN, i0, i1, streaming);
    case DpoLossType::ExoPair: return dpoRangeT<DpoLossType::ExoPair>(a, c, invN, i0, i1, streaming);
    case DpoLossType::NcaPair: return dpoRangeT<DpoLossType::NcaPair>(a, c, invN, i0, i1, streaming);
    case DpoLossType::BcoPair: return dpoRangeT<DpoLossType::BcoPair>(a, c, invN, i0, i1, streaming);
    case DpoLossType::SppoHard: return dpoRangeT<DpoLossType::SppoHard>(a, c, invN, i0, i1, streaming);
    case DpoLossType::ApoZero: return dpoRangeT<DpoLossType::ApoZero>(a, c, invN, i0, i1, streaming);
    case DpoLossType::ApoDown: return dpoRangeT<DpoLossType::ApoDown>(a, c, invN, i0, i1, streaming);
    case DpoLossType::Discopop: return dpoRangeT<DpoLossType::Discopop>(a, c, invN, i0, i1, streaming);
  }
  return DpoBlock{};
}

// --- masked row sums for sequence log-probs ------------------------------------------------------------
// Rows are read kRowsInStep at a time, in step, where readsSeveralInStep() says so (not on AMD:
// dispatch.cpp): more streams a thread keep more reads in flight on Intel, which is what bounds a
// pass that only reads. In Node, [4096,4096] with 2 threads, builds alternated in one process on
// the Intel host: one row at a time 64-70% of the paired triad, two 69-75%, four 73-77%, eight no
// faster than four. Each row sums in float lanes flushed into float64 every
// kFlushVectors vectors, as the loss sums do (float64 adds on every vector cost 1-3 points in a
// C++ sketch).
constexpr int kRowsInStep = 4;

// One row's running sum and count of valid tokens.
struct RowSum {
  VF part = zero();
  VD lo = zeroD(), hi = zeroD();
  int64_t count = 0;
  void add(VM valid, VF x) {
    part = addIn(part, valid, x);
    count += countLanes(valid);
  }
  void flush() { flushInto(part, lo, hi); }
  MaskedSum result() {
    flush();
    return {sumLanes(lo) + sumLanes(hi), static_cast<double>(count)};
  }
};

// The mask's lanes from m[i] (all lanes where there is no mask: m is then null, never offset).
template <bool kMasked>
static inline VM validAt(const uint8_t* m, int64_t i) { return kMasked ? maskFromBytes(m + i) : allLanes(); }

// The row's last T % W tokens.
static inline void addTail(RowSum& r, const float* x, const uint8_t* m, int64_t t, int64_t T) {
  if (t == T) return;
  alignas(8) uint8_t mb[W] = {};
  for (int64_t j = 0; t + j < T; ++j) mb[j] = m != nullptr ? m[t + j] : 1;
  r.add(maskFromBytes(mb), loadPartial(x + t, T - t, 0.0f));
}

// How many elements ahead a row's lines are requested: kStreamPrefetch with rows in step (tuned
// so on the Intel host), and as far as the row passes of the log-probs request theirs (4 KiB of
// floats) one row at a time. On the AMD machine, [4096,4096], alternated in one process with
// 2 KiB: 81-82% of the paired triad against 78-79% (0.958-0.965 of the time, three runs;
// 8 KiB 0.947-0.969).
template <int kRows>
constexpr int64_t kRowAhead = kRows == 1 ? kRowPrefetchBytes / 4 : kStreamPrefetch;

// Rows [b, b + kRows) of x and m (rows of T; m null when kMasked is false) into out[b...]. Every
// loop over the rows is unrolled, so that the sums stay in registers, and row j is addressed as
// the first row's pointer plus j*T, so that the rows share two pointers (a pointer a row left too
// few registers: 1-4% slower).
template <int kRows, bool kMasked>
static void maskedRowSumsOf(const float* x, const uint8_t* m, int64_t T, int64_t b, MaskedSum* out) {
  const float* x0 = x + b * T;
  const uint8_t* m0 = kMasked ? m + b * T : nullptr;
  RowSum r[kRows];
  int pending = 0;
  int64_t t = 0;
  for (; t + W <= T; t += W) {
#pragma GCC unroll 8
    for (int j = 0; j < kRows; ++j) {
      if (t % 16 < W) prefetchAhead(x0 + j * T + t, kRowAhead<kRows> * 4);
      if (kMasked && t % 64 < W) prefetchAhead(m0 + j * T + t, kRowAhead<kRows>);
    }
#pragma GCC unroll 8
    for (int j = 0; j < kRows; ++j) r[j].add(validAt<kMasked>(m0, j * T + t), load(x0 + j * T + t));
    if (++pending == kFlushVectors) {
#pragma GCC unroll 8
      for (int j = 0; j < kRows; ++j) r[j].flush();
      pending = 0;
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < kRows; ++j) {
    addTail(r[j], x0 + j * T, kMasked ? m0 + j * T : nullptr, t, T);
    out[b + j] = r[j].result();
  }
}

template <bool kMasked>
static void maskedRowSumsT(const float* x, const uint8_t* m, int64_t T, int64_t rows, MaskedSum* out) {
  int64_t b = 0;
  if (readsSeveralInStep())
    for (; b + kRowsInStep <= rows; b += kRowsInStep) maskedRowSumsOf<kRowsInStep, kMasked>(x, m, T, b, out);
  for (; b < rows; ++b) maskedRowSumsOf<1, kMasked>(x, m, T, b, out);
}

void maskedRowSums(const float* x, const uint8_t* m, int64_t T, int64_t rows, MaskedSum* out) {
  if (m != nullptr) maskedRowSumsT<true>(x, m, T, rows, out);
  else maskedRowSumsT<false>(x, nullptr, T, rows, out);
}

}  // namespace RLHF_CHUNK_NS
}  // namespace rlhf
