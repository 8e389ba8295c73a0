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

// The pairwise and DPO loops request their inputs' lines this far ahead, once a line
// (prefetchStreams): with an exp and a division a pair in flight, the core's own loads come too late
// when memory is fast. On the AMD machine, 1M pairs, 2 threads, in turns in one process with the
// memory in its fast phase (the triad at 104-108 GB/s): pairwise 175-189 us against 188-196
// without, DPO sigmoid 276-296 against 333-353 (1 KiB ahead slower than none, 8 KiB slower for
// pairwise); scripts/ab-bench.js 0.93 and 0.87 of the time there, and 0.99-1.06 and 1.01-1.03 in
// the slow phase (60 GB/s).
constexpr int64_t kPairPrefetchBytes = 4096;

// Sums in float lanes (PairwiseLanes: references to plain locals of pairwiseSums, which stay in
// registers where members of a struct would not; see pipelinedThree) flushed into float64
// (PairwiseTotals) every kFlushVectors vectors, as the loss blocks of policy_chunks.h; the count
// of correct pairs stays in float lanes, exact up to 2^24 a lane. The loss is max(-delta, 0) +
// log1p(e) a pair: the first summed, the second taken as a product (log1pProductStep) whose
// log1p joins the sum at each flush. The margin's mean is the chosen mean minus the rejected one.
struct PairwiseLanes {
  VF &loss, &log1pProduct, &center, &chosen, &rejected, &correct;
};

struct PairwiseTotals {
  VD lossLo, lossHi, centerLo, centerHi, chosenLo, chosenHi, rejectedLo, rejectedHi;
};

RLHF_ALWAYS_INLINE void flush(const PairwiseLanes& L, PairwiseTotals& T) {
  L.loss = add(L.loss, log1pNonNegative(L.log1pProduct));
  L.log1pProduct = zero();
  flushInto(L.loss, T.lossLo, T.lossHi);
  flushInto(L.center, T.centerLo, T.centerHi);
  flushInto(L.chosen, T.chosenLo, T.chosenHi);
  flushInto(L.rejected, T.rejectedLo, T.rejectedHi);
}

// The pairwise loss's inputs and constants as locals no store can alias.
struct PairwiseView {
  const float* __restrict chosen;
  const float* __restrict rejected;
  const float* __restrict margin;
  float* __restrict gradChosen;
  float* __restrict gradRejected;
  float marginValue, invN, centerScale;  // centerScale = 2 centerCoef / N
};

// What the loop is compiled for: kCenter, centerCoef is not 0 (without it, the centring term and
// its gradient are left out: a sixth of the loop's operations, and no sum of squares to overflow);
// kMargin, a margin a pair (else the scalar marginValue); kStream, both gradients streamed past the
// cache, in step (streamedInStep), so that a full vector's stores need no test of either address.
template <bool kCenter_, bool kMargin_, bool kStream_>
struct PairwiseMode {
  static constexpr bool kCenter = kCenter_, kMargin = kMargin_, kStream = kStream_;
};

// A vector of gradients at p (aligned when streamed), or the first n lanes of it.
template <bool kStream, bool kPartial>
RLHF_ALWAYS_INLINE void storeGradients(float* p, VF v, int64_t n) {
  if (kPartial) storeOr<true>(p, v, n, false);
  else if (kStream) stream(p, v);
  else store(p, v);
}

// delta = rc - rr - margin of pairs [i, i + n), given their rc and rr.
template <typename Mode, bool kPartial>
RLHF_ALWAYS_INLINE VF pairwiseDelta(const PairwiseView& v, VF rc, VF rr, int64_t i, int64_t n) {
  const VF m = Mode::kMargin ? loadOr<kPartial>(v.margin + i, n) : set1(v.marginValue);
  return sub(sub(rc, rr), m);
}

// What the loop takes of a vector ahead of the one it finishes (see pipelinedThree): exp(-|delta|).
// The vector's delta is taken again when it is finished, from the cache: a second stage value a
// vector would cost the registers that the pipeline's depth needs.
template <typename Mode, bool kPartial>
RLHF_ALWAYS_INLINE VF pairwiseExp(const PairwiseView& v, int64_t i, int64_t n) {
  return logisticExp(
      pairwiseDelta<Mode, kPartial>(v, loadOr<kPartial>(v.chosen + i, n), loadOr<kPartial>(v.rejected + i, n), i, n));
}

// Pairs [i, i + n) given e = pairwiseExp of them.
template <typename Mode, bool kPartial>
RLHF_ALWAYS_INLINE void pairwiseVector(const PairwiseView& v, int64_t i, int64_t n, VF e, const PairwiseLanes& L) {
  const VF rc = loadOr<kPartial>(v.chosen + i, n);
  const VF rr = loadOr<kPartial>(v.rejected + i, n);
  const VM valid = kPartial ? lt(iota(), set1(static_cast<float>(n))) : allLanes();
  const VF delta = pairwiseDelta<Mode, kPartial>(v, rc, rr, i, n);
  const VF g = mul(logisticFrom(delta, e).sNeg, set1(-v.invN));  // (sig(delta) - 1)/N without the cancellation
  if (Mode::kCenter) {
    const VF sum = add(rc, rr);
    const VF c = mul(set1(v.centerScale), sum);
    storeGradients<Mode::kStream, kPartial>(v.gradChosen + i, add(g, c), n);
    storeGradients<Mode::kStream, kPartial>(v.gradRejected + i, sub(c, g), n);
    L.center = add(L.center, inLanes<kPartial>(valid, mul(sum, sum)));
  } else {
    storeGradients<Mode::kStream, kPartial>(v.gradChosen + i, g, n);
    storeGradients<Mode::kStream, kPartial>(v.gradRejected + i, sub(zero(), g), n);
  }
  L.loss = add(L.loss, inLanes<kPartial>(valid, max(zero(), sub(zero(), delta))));
  L.log1pProduct = log1pProductStep(L.log1pProduct, inLanes<kPartial>(valid, e));
  L.chosen = add(L.chosen, inLanes<kPartial>(valid, rc));
  L.rejected = add(L.rejected, inLanes<kPartial>(valid, rr));
  L.correct = countIn(L.correct, inLanes<kPartial>(valid, gt(rc, rr)));
}

template <typename Mode>
static PairwiseBlock pairwiseSums(const PairwiseView v, int64_t i0, int64_t i1) {
  VF loss = zero(), log1pProduct = zero(), center = zero(), chosen = zero(), rejected = zero(), correct = zero();
  const PairwiseLanes L{loss, log1pProduct, center, chosen, rejected, correct};
  PairwiseTotals T{zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD()};
  // Streamed, the pairs before the gradients reach a vector boundary go first, as a partial vector.
  const int64_t head = Mode::kStream ? alignHead(v.gradChosen + i0, i1 - i0) : 0;
  if (head > 0) pairwiseVector<Mode, true>(v, i0, head, pairwiseExp<Mode, true>(v, i0, head), L);
  const int64_t i = pipelinedThree(
      i0 + head, i1, [&](int64_t j) RLHF_ALWAYS_INLINE_LAMBDA { return pairwiseExp<Mode, false>(v, j, W); },
      [&](int64_t j, VF e) RLHF_ALWAYS_INLINE_LAMBDA {
        if (Mode::kMargin) prefetchStreams<false, kPairPrefetchBytes>(j, nullptr, v.chosen, v.rejected, v.margin);
        else prefetchStreams<false, kPairPrefetchBytes>(j, nullptr, v.chosen, v.rejected);
        pairwiseVector<Mode, false>(v, j, W, e, L);
      },
      [&]() RLHF_ALWAYS_INLINE_LAMBDA { flush(L, T); });
  if (i < i1) pairwiseVector<Mode, true>(v, i, i1 - i, pairwiseExp<Mode, true>(v, i, i1 - i), L);
  flush(L, T);
  PairwiseBlock out;
  out.loss = sumLanes(T.lossLo) + sumLanes(T.lossHi);
  out.center = sumLanes(T.centerLo) + sumLanes(T.centerHi);
  out.chosen = sumLanes(T.chosenLo) + sumLanes(T.chosenHi);
  out.rejected = sumLanes(T.rejectedLo) + sumLanes(T.rejectedHi);
  out.margin = out.chosen - out.rejected;
  out.correct = static_cast<int64_t>(sumLanesF(L.correct));
  return out;
}

template <bool kCenter, bool kMargin>
static PairwiseBlock pairwiseSumsStreamedOr(const PairwiseView& v, int64_t i0, int64_t i1, bool streaming) {
  return streaming ? pairwiseSums<PairwiseMode<kCenter, kMargin, true>>(v, i0, i1)
                   : pairwiseSums<PairwiseMode<kCenter, kMargin, false>>(v, i0, i1);
}

PairwiseBlock pairwiseRange(const PairwiseLossArgs& a, int64_t i0, int64_t i1, bool streaming) {
  const float invN = static_cast<float>(1.0 / static_cast<double>(a.N));
  const PairwiseView v{a.chosen, a.rejected, a.margin, a.gradChosen, a.gradRejected, a.marginValue, invN,
                       static_cast<float>(2.0 * a.centerCoef / static_cast<double>(a.N))};
  const bool center = a.centerCoef != 0.0f, margin = a.margin != nullptr;
  if (center) return margin ? pairwiseSumsStreamedOr<true, true>(v, i0, i1, streaming)
                            : pairwiseSumsStreamedOr<true, false>(v, i0, i1, streaming);
  return margin ? pairwiseSumsStreamedOr<false, true>(v, i0, i1, streaming)
                : pairwiseSumsStreamedOr<false, false>(v, i0, i1, streaming);
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

// The types with an exp a pair, whose arithmetic fills the core while their inputs stream in:
// they request their inputs ahead (kPairPrefetchBytes). The others, a few operations a pair, gain
// nothing by it (ipo: 0.98 of the time in the fast phase, 1.03-1.08 in the slow one).
template <DpoLossType kType>
constexpr bool kRequestAhead = kType != DpoLossType::Hinge && kType != DpoLossType::Ipo &&
                               kType != DpoLossType::SppoHard;

// The types whose loss is log1p(e) plus terms without it: sigmoid, (1 - eps) softplus(-z) + eps
// softplus(z), and robust, whose weights of log1p(e) also come to 1. dpoVector leaves their
// log1p(e) out, and the loop sums it as a product (log1pProductStep).
template <DpoLossType kType>
constexpr bool kLog1pAsProduct = kType == DpoLossType::Sigmoid || kType == DpoLossType::Robust;

// A vector of pairs' log-ratios x = pc - rc and y = pr - rr, and z = beta (x - y).
struct DpoRatios {
  VF x, y, z;
};

// The terms of a vector of pairs given their ratios and, for the types that need it, e = exp(-|z|)
// (see logisticExp; 0 for the others).
template <DpoLossType kType>
static inline DpoTerms dpoVector(const DpoRatios& p, VF e, VF nc, VF nr, const DpoConsts& c) {
  const VF b = c.b, x = p.x, y = p.y, z = p.z;
  switch (kType) {
    case DpoLossType::Sigmoid: {  // log1p(e) left to the caller (kLog1pAsProduct)
      const Logistic f = logisticFrom(z, e);
      const VF l = fmadd(c.oneMinusEps, max(zero(), neg(z)), mul(c.eps, max(zero(), z)));
      const VF d = mul(b, sub(c.eps, f.sNeg));  // b (sig(z) - (1 - eps))
      return {l, d, neg(d)};
    }
    case DpoLossType::Robust: {  // log1p(e) left to the caller (kLog1pAsProduct)
      const Logistic f = logisticFrom(z, e);
      const VF l = mul(fnmadd(c.eps, max(zero(), z), mul(c.oneMinusEps, max(zero(), neg(z)))), c.invOneMinus2Eps);
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
      const Logistic f = logisticFrom(z, e);
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
      const Logistic u = logistic(mul(b, x)), f = logisticFrom(z, e);
      const VF szz = mul(f.s, f.sNeg);
      return {sub(add(u.s, set1(1.0f)), f.s), sub(mul(mul(b, u.s), u.sNeg), mul(b, szz)), mul(b, szz)};
    }
    case DpoLossType::Discopop: {
      const Logistic f = logisticFrom(z, e), t = logistic(mul(z, c.invTau));
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

// Sums as the pairwise loss's: float lanes (locals of dpoSums) flushed into float64; log1pProduct
// for the types that take it (kLog1pAsProduct), 0 for the others.
struct DpoLanes {
  VF &loss, &log1pProduct, &bx, &by, &correct;
};

struct DpoTotals {
  VD lossLo, lossHi, bxLo, bxHi, byLo, byHi;
};

template <bool kProduct>
RLHF_ALWAYS_INLINE void flush(const DpoLanes& L, DpoTotals& T) {
  if (kProduct) {
    L.loss = add(L.loss, log1pNonNegative(L.log1pProduct));
    L.log1pProduct = zero();
  }
  flushInto(L.loss, T.lossLo, T.lossHi);
  flushInto(L.bx, T.bxLo, T.bxHi);
  flushInto(L.by, T.byLo, T.byHi);
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

template <bool kPartial>
RLHF_ALWAYS_INLINE DpoRatios dpoRatios(const DpoView& v, const DpoConsts& c, int64_t i, int64_t n) {
  const VF x = sub(loadOr<kPartial>(v.pc + i, n), loadOr<kPartial>(v.rc + i, n));
  const VF y = sub(loadOr<kPartial>(v.pr + i, n), loadOr<kPartial>(v.rr + i, n));
  return {x, y, mul(c.b, sub(x, y))};
}

// What the loop takes of a vector ahead of the one it finishes (see pipelinedThree): exp(-|z|) for
// the types that need it. The ratios are taken again when the vector is finished (as pairwiseExp).
template <DpoLossType kType, bool kPartial>
RLHF_ALWAYS_INLINE VF dpoExp(const DpoView& v, const DpoConsts& c, int64_t i, int64_t n) {
  return kLogisticOfZ<kType> ? logisticExp(dpoRatios<kPartial>(v, c, i, n).z) : zero();
}

// Pairs [i, i + n) given e = dpoExp of them; kStream as PairwiseMode's.
template <DpoLossType kType, bool kStream, bool kPartial>
RLHF_ALWAYS_INLINE void dpoStep(const DpoView& v, const DpoConsts& c, VF invN, int64_t i, int64_t n, VF e,
                                const DpoLanes& L) {
  const VM valid = kPartial ? lt(iota(), set1(static_cast<float>(n))) : allLanes();
  const bool lengths = v.nc != nullptr;
  const VF nc = lengths ? lengthsOr<kPartial>(v.nc + i, n) : zero();
  const VF nr = lengths ? lengthsOr<kPartial>(v.nr + i, n) : zero();
  const DpoRatios a = dpoRatios<kPartial>(v, c, i, n);
  const DpoTerms p = dpoVector<kType>(a, e, nc, nr, c);
  storeGradients<kStream, kPartial>(v.gc + i, mul(p.dx, invN), n);
  storeGradients<kStream, kPartial>(v.gr + i, mul(p.dy, invN), n);
  const VF bx = mul(c.b, a.x), by = mul(c.b, a.y);
  L.loss = add(L.loss, inLanes<kPartial>(valid, p.l));
  if (kLog1pAsProduct<kType>) L.log1pProduct = log1pProductStep(L.log1pProduct, inLanes<kPartial>(valid, e));
  L.bx = add(L.bx, inLanes<kPartial>(valid, bx));
  L.by = add(L.by, inLanes<kPartial>(valid, by));
  L.correct = countIn(L.correct, inLanes<kPartial>(valid, gt(bx, by)));
}

template <DpoLossType kType, bool kStream>
static DpoBlock dpoSums(const DpoLossArgs& a, const DpoConsts& c, float invN, int64_t i0, int64_t i1) {
  VF loss = zero(), log1pProduct = zero(), bx = zero(), by = zero(), correct = zero();
  const DpoLanes L{loss, log1pProduct, bx, by, correct};
  DpoTotals T{zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD()};
  const DpoView v{a.policyChosen, a.policyRejected, a.refChosen, a.refRejected, a.chosenLengths, a.rejectedLengths,
                  a.gradChosen, a.gradRejected};
  const VF vInvN = set1(invN);
  // Streamed, the pairs before the gradients reach a vector boundary go first, as a partial vector.
  const int64_t head = kStream ? alignHead(v.gc + i0, i1 - i0) : 0;
  if (head > 0) dpoStep<kType, kStream, true>(v, c, vInvN, i0, head, dpoExp<kType, true>(v, c, i0, head), L);
  const int64_t i = pipelinedThree(
      i0 + head, i1, [&](int64_t j) RLHF_ALWAYS_INLINE_LAMBDA { return dpoExp<kType, false>(v, c, j, W); },
      [&](int64_t j, VF e) RLHF_ALWAYS_INLINE_LAMBDA {
        if (kRequestAhead<kType>) prefetchStreams<false, kPairPrefetchBytes>(j, nullptr, v.pc, v.pr, v.rc, v.rr);
        dpoStep<kType, kStream, false>(v, c, vInvN, j, W, e, L);
      },
      [&]() RLHF_ALWAYS_INLINE_LAMBDA { flush<kLog1pAsProduct<kType>>(L, T); });
  if (i < i1) dpoStep<kType, kStream, true>(v, c, vInvN, i, i1 - i, dpoExp<kType, true>(v, c, i, i1 - i), L);
  flush<kLog1pAsProduct<kType>>(L, T);
  DpoBlock out;
  out.loss = sumLanes(T.lossLo) + sumLanes(T.lossHi);
  out.chosen = sumLanes(T.bxLo) + sumLanes(T.bxHi);
  out.rejected = sumLanes(T.byLo) + sumLanes(T.byHi);
  out.correct = sumLanesF(correct);
  return out;
}

template <DpoLossType kType>
static DpoBlock dpoRangeT(const DpoLossArgs& a, const DpoConsts& c, float invN, int64_t i0, int64_t i1,
                         bool streaming) {
  return streaming ? dpoSums<kType, true>(a, c, invN, i0, i1) : dpoSums<kType, false>(a, c, invN, i0, i1);
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
