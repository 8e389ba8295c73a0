// Single-thread chunk kernels of the preference family, compiled once per instruction-set
// variant (included by kernels_base.cpp and kernels_avx2.cpp after policy_chunks.h).
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
  VF e;
  const VF loss = softplus(sub(zero(), delta), e);
  const VF sig = sigmoidFrom(delta, e);
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
