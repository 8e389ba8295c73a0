// Single-thread chunk kernels of the preference family, compiled once per instruction-set
// variant (included by kernels_base.cpp and kernels_avx2.cpp after policy_chunks.h).
#include <cmath>
#include <cstdint>

#include "cpu_variants.h"
#include "rlhf/preference.h"
#include "simd.h"

namespace rlhf {
namespace RLHF_CHUNK_NS {

using namespace simd;

// --- the pairwise reward-model loss over pairs [i0, i1) ---------------------------------------------

struct PairwiseLanes {
  VD lossLo, lossHi, centerLo, centerHi, marginLo, marginHi, chosenLo, chosenHi, rejectedLo, rejectedHi;
};

template <bool kPartial>
static inline void pairwiseVector(const PairwiseLossArgs& a, int64_t i, int64_t n, PairwiseLanes& L,
                                  int64_t& correct) {
  const VF rc = kPartial ? loadPartial(a.chosen + i, n, 0.0f) : load(a.chosen + i);
  const VF rr = kPartial ? loadPartial(a.rejected + i, n, 0.0f) : load(a.rejected + i);
  const VF m = a.margin == nullptr ? set1(a.marginValue)
                                   : (kPartial ? loadPartial(a.margin + i, n, 0.0f) : load(a.margin + i));
  const VF valid = kPartial ? lt(iota(), set1(static_cast<float>(n))) : eq(zero(), zero());
  const VF delta = sub(sub(rc, rr), m);
  const Logistic f = logistic(delta);
  const VF loss = sub(zero(), f.ls);
  const VF sig = f.s;
  const VF sum = add(rc, rr);
  const float invN = 1.0f / static_cast<float>(a.N);
  const VF g = mul(sub(sig, set1(1.0f)), set1(invN));
  const VF c = mul(set1(2.0f * a.centerCoef * invN), sum);
  const VF gc = add(g, c), gr = sub(c, g);
  if (kPartial) {
    alignas(32) float tc[W], tr[W];
    store(tc, gc);
    store(tr, gr);
    for (int64_t j = 0; j < n; ++j) {
      a.gradChosen[i + j] = tc[j];
      a.gradRejected[i + j] = tr[j];
    }
  } else {
    store(a.gradChosen + i, gc);
    store(a.gradRejected + i, gr);
  }
  accumulate(L.lossLo, L.lossHi, select(valid, loss, zero()));
  accumulate(L.centerLo, L.centerHi, select(valid, mul(sum, sum), zero()));
  accumulate(L.marginLo, L.marginHi, select(valid, sub(rc, rr), zero()));
  accumulate(L.chosenLo, L.chosenHi, select(valid, rc, zero()));
  accumulate(L.rejectedLo, L.rejectedHi, select(valid, rr, zero()));
  correct += countLanes(bitAnd(valid, gt(rc, rr)));
}

PairwiseBlock pairwiseRange(const PairwiseLossArgs& a, int64_t i0, int64_t i1) {
  PairwiseLanes L{zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD()};
  PairwiseBlock out;
  int64_t i = i0;
  for (; i + W <= i1; i += W) pairwiseVector<false>(a, i, W, L, out.correct);
  if (i < i1) pairwiseVector<true>(a, i, i1 - i, L, out.correct);
  out.loss = sumLanes(L.lossLo) + sumLanes(L.lossHi);
  out.center = sumLanes(L.centerLo) + sumLanes(L.centerHi);
  out.margin = sumLanes(L.marginLo) + sumLanes(L.marginHi);
  out.chosen = sumLanes(L.chosenLo) + sumLanes(L.chosenHi);
  out.rejected = sumLanes(L.rejectedLo) + sumLanes(L.rejectedHi);
  return out;
}

// --- the DPO family over pairs [i0, i1) ----------------------------------------------------------------
// The formulas of preference_math.h in float32 lanes; logsig via softplus, so that margins of any
// size stay finite and exact.

static inline VF neg(VF z) { return sub(zero(), z); }

struct DpoLanes {
  VF l, dx, dy;
};

struct DpoConsts {
  VF b, eps, oneMinusEps, invOneMinus2Eps, logOneMinusEps, logEps, logOdds, halfInvB, tau, invTau, delta;
};

template <DpoLossType kType>
static inline DpoLanes dpoVector(VF x, VF y, VF nc, VF nr, const DpoConsts& c) {
  const VF b = c.b, z = mul(b, sub(x, y));
  switch (kType) {
    case DpoLossType::Sigmoid: {
      const Logistic f = logistic(z);
      const VF l = sub(neg(mul(c.oneMinusEps, f.ls)), mul(c.eps, f.lsNeg));
      const VF d = mul(b, sub(f.s, c.oneMinusEps));
      return {l, d, neg(d)};
    }
    case DpoLossType::Robust: {
      const Logistic f = logistic(z);
      const VF l = mul(add(neg(mul(c.oneMinusEps, f.ls)), mul(c.eps, f.lsNeg)), c.invOneMinus2Eps);
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
      const VF normalised = gt(nc, zero());
      const VF ncs = select(normalised, nc, set1(1.0f)), nrs = select(normalised, nr, set1(1.0f));
      const VF g = sub(sub(div(x, ncs), div(y, nrs)), c.halfInvB);
      const VF d = mul(set1(2.0f), g);
      return {mul(g, g), div(d, ncs), neg(div(d, nrs))};
    }
    case DpoLossType::SigmoidNorm: {
      const VF w = mul(b, sub(div(x, nc), div(y, nr)));
      const Logistic f = logistic(w);
      return {neg(f.ls), neg(div(mul(b, f.sNeg), nc)), div(mul(b, f.sNeg), nr)};
    }
    case DpoLossType::ExoPair: {
      const Logistic f = logistic(z);
      const VF l = add(mul(f.s, sub(f.ls, c.logOneMinusEps)), mul(f.sNeg, sub(f.lsNeg, c.logEps)));
      const VF d = mul(mul(mul(b, f.s), f.sNeg), sub(z, c.logOdds));
      return {l, d, neg(d)};
    }
    case DpoLossType::NcaPair: {
      const Logistic u = logistic(mul(b, x)), v = logistic(mul(b, y));
      const VF l = sub(sub(neg(u.ls), mul(set1(0.5f), u.lsNeg)), mul(set1(0.5f), v.lsNeg));
      return {l, mul(b, sub(mul(set1(1.5f), u.s), set1(1.0f))), mul(mul(set1(0.5f), b), v.s)};
    }
    case DpoLossType::BcoPair: {
      const Logistic u = logistic(sub(mul(b, x), c.delta)), v = logistic(sub(mul(b, y), c.delta));
      return {sub(neg(u.ls), v.lsNeg), neg(mul(b, u.sNeg)), mul(b, v.s)};
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
      const Logistic u = logistic(mul(b, x)), f = logistic(z);
      const VF szz = mul(f.s, f.sNeg);
      return {sub(add(u.s, set1(1.0f)), f.s), sub(mul(mul(b, u.s), u.sNeg), mul(b, szz)), mul(b, szz)};
    }
    case DpoLossType::Discopop: {
      const Logistic f = logistic(z), t = logistic(mul(z, c.invTau));
      const VF m = t.s, oneMinusM = t.sNeg;
      const VF expM = simd::exp(sub(t.ls, z));
      const VF expMM = simd::exp(add(sub(t.ls, z), t.lsNeg));
      const VF l = add(neg(mul(f.ls, oneMinusM)), expM);
      const VF dz = add(sub(neg(mul(f.sNeg, oneMinusM)), expM),
                        mul(add(mul(mul(f.ls, m), oneMinusM), expMM), c.invTau));
      const VF d = mul(b, dz);
      return {l, d, neg(d)};
    }
  }
  return {zero(), zero(), zero()};
}

template <DpoLossType kType>
static DpoBlock dpoRangeT(const DpoLossArgs& a, const DpoConsts& c, float invN, int64_t i0, int64_t i1) {
  VD lossLo = zeroD(), lossHi = zeroD(), xLo = zeroD(), xHi = zeroD(), yLo = zeroD(), yHi = zeroD();
  int64_t correct = 0;
  const VF vInvN = set1(invN);
  const float* __restrict pc = a.policyChosen;
  const float* __restrict pr = a.policyRejected;
  const float* __restrict rc = a.refChosen;
  const float* __restrict rr = a.refRejected;
  const int32_t* nc = a.chosenLengths;
  const int32_t* nr = a.rejectedLengths;
  float* __restrict gc = a.gradChosen;
  float* __restrict gr = a.gradRejected;
  for (int64_t i = i0; i < i1; i += W) {
    const int64_t n = i1 - i < W ? i1 - i : W;
    const bool partial = n < W;
    const VF x = partial ? sub(loadPartial(pc + i, n, 0.0f), loadPartial(rc + i, n, 0.0f)) : sub(load(pc + i), load(rc + i));
    const VF y = partial ? sub(loadPartial(pr + i, n, 0.0f), loadPartial(rr + i, n, 0.0f)) : sub(load(pr + i), load(rr + i));
    alignas(32) float lc[W] = {}, lr[W] = {};
    if (nc != nullptr)
      for (int64_t j = 0; j < n; ++j) {
        lc[j] = static_cast<float>(nc[i + j]);
        lr[j] = static_cast<float>(nr[i + j]);
      }
    // Padding lanes get lengths 1 so that they divide harmlessly; they are masked out below.
    const VF pad = lt(iota(), set1(static_cast<float>(n)));
    const VF vnc = nc != nullptr ? select(pad, load(lc), set1(1.0f)) : zero();
    const VF vnr = nc != nullptr ? select(pad, load(lr), set1(1.0f)) : zero();
    const DpoLanes p = dpoVector<kType>(x, y, vnc, vnr, c);
    const VF dx = mul(p.dx, vInvN), dy = mul(p.dy, vInvN);
    if (partial) {
      alignas(32) float tx[W], ty[W];
      store(tx, dx);
      store(ty, dy);
      for (int64_t j = 0; j < n; ++j) {
        gc[i + j] = tx[j];
        gr[i + j] = ty[j];
      }
    } else {
      store(gc + i, dx);
      store(gr + i, dy);
    }
    accumulate(lossLo, lossHi, select(pad, p.l, zero()));
    const VF bx = mul(c.b, x), by = mul(c.b, y);
    accumulate(xLo, xHi, select(pad, bx, zero()));
    accumulate(yLo, yHi, select(pad, by, zero()));
    correct += countLanes(bitAnd(pad, gt(bx, by)));
  }
  DpoBlock out;
  out.loss = sumLanes(lossLo) + sumLanes(lossHi);
  out.chosen = sumLanes(xLo) + sumLanes(xHi);
  out.rejected = sumLanes(yLo) + sumLanes(yHi);
  out.correct = static_cast<double>(correct);
  return out;
}

DpoBlock dpoRange(const DpoLossArgs& a, double delta, int64_t i0, int64_t i1) {
  const float e = a.labelSmoothing, b = a.beta;
  const DpoConsts c{set1(b), set1(e), set1(1 - e), set1(1 / (1 - 2 * e)), set1(std::log(1 - e)),
                    set1(e > 0 ? std::log(e) : 0.0f), set1(e > 0 ? std::log((1 - e) / e) : 0.0f), set1(0.5f / b),
                    set1(a.discopopTau), set1(1 / a.discopopTau), set1(static_cast<float>(delta))};
  const float invN = static_cast<float>(1.0 / static_cast<double>(a.N));
  switch (a.type) {
    case DpoLossType::Sigmoid: return dpoRangeT<DpoLossType::Sigmoid>(a, c, invN, i0, i1);
    case DpoLossType::Robust: return dpoRangeT<DpoLossType::Robust>(a, c, invN, i0, i1);
    case DpoLossType::Hinge: return dpoRangeT<DpoLossType::Hinge>(a, c, invN, i0, i1);
    case DpoLossType::Ipo: return dpoRangeT<DpoLossType::Ipo>(a, c, invN, i0, i1);
    case DpoLossType::SigmoidNorm: return dpoRangeT<DpoLossType::SigmoidNorm>(a, c, invN, i0, i1);
    case DpoLossType::ExoPair: return dpoRangeT<DpoLossType::ExoPair>(a, c, invN, i0, i1);
    case DpoLossType::NcaPair: return dpoRangeT<DpoLossType::NcaPair>(a, c, invN, i0, i1);
    case DpoLossType::BcoPair: return dpoRangeT<DpoLossType::BcoPair>(a, c, invN, i0, i1);
    case DpoLossType::SppoHard: return dpoRangeT<DpoLossType::SppoHard>(a, c, invN, i0, i1);
    case DpoLossType::ApoZero: return dpoRangeT<DpoLossType::ApoZero>(a, c, invN, i0, i1);
    case DpoLossType::ApoDown: return dpoRangeT<DpoLossType::ApoDown>(a, c, invN, i0, i1);
    case DpoLossType::Discopop: return dpoRangeT<DpoLossType::Discopop>(a, c, invN, i0, i1);
  }
  return DpoBlock{};
}

// --- masked row sums for sequence log-probs ------------------------------------------------------------

MaskedSum maskedRowSum(const float* x, const uint8_t* m, int64_t T) {
  VD lo = zeroD(), hi = zeroD();
  int64_t count = 0, t = 0;
  for (; t + W <= T; t += W) {
    const VF valid = m != nullptr ? maskFromBytes(m + t) : eq(zero(), zero());
    accumulate(lo, hi, select(valid, load(x + t), zero()));
    count += countLanes(valid);
  }
  if (t < T) {
    alignas(8) uint8_t mb[W] = {};
    for (int64_t j = 0; t + j < T; ++j) mb[j] = m != nullptr ? m[t + j] : 1;
    const VF valid = maskFromBytes(mb);
    accumulate(lo, hi, select(valid, loadPartial(x + t, T - t, 0.0f), zero()));
    count += countLanes(valid);
  }
  return {sumLanes(lo) + sumLanes(hi), static_cast<double>(count)};
}

}  // namespace RLHF_CHUNK_NS
}  // namespace rlhf
