// Single-thread chunk kernels of the neural-network family, compiled once per instruction-set
// variant (included by the kernels_*.cpp files after preference_chunks.h, and by gemm.h, whose
// epilogue is biasActBlock). The matrix multiply has its own files (gemm.h); what is here is
// elementwise, but for the sums of squares, whose lane order is the variant's.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../reference/nn_math.h"
#include "cpu_variants.h"
#include "rlhf/nn.h"
#include "simd.h"

namespace rlhf {
namespace RLHF_CHUNK_NS {

using namespace simd;

// act(z) for a vector. The gelus have no vector form here: their lanes go through the scalar
// formula, which keeps them bit-identical to the reference.
static inline VF activateVector(Activation act, VF z) {
  switch (act) {
    case Activation::Identity: return z;
    case Activation::Tanh: return simd::tanh(z);
    case Activation::Relu: return select(lt(z, zero()), zero(), z);
    case Activation::Gelu:
    case Activation::GeluTanh: break;
  }
  alignas(64) float lanes[W];
  store(lanes, z);
  for (int l = 0; l < W; ++l) lanes[l] = nn_math::activate(act, lanes[l]);
  return load(lanes);
}

// gradY * act'(y, z), the product in float32 as the reference forms it: a relu's gradient is a
// multiplication by 0 or 1, so that a NaN or infinite gradY stays NaN where y <= 0 as it does there.
static inline VF gradVector(Activation act, VF g, const float* y, const float* z) {
  switch (act) {
    case Activation::Identity: return g;
    case Activation::Tanh: {
      const VF yv = load(y);
      return mul(g, sub(set1(1.0f), mul(yv, yv)));
    }
    case Activation::Relu: return mul(g, bitAnd(gt(load(y), zero()), set1(1.0f)));
    case Activation::Gelu:
    case Activation::GeluTanh: break;
  }
  alignas(64) float lanes[W];
  store(lanes, g);
  for (int l = 0; l < W; ++l) lanes[l] *= nn_math::activationGrad(act, 0.0f, z[l]);
  return load(lanes);
}

// f(std::integral_constant<Activation, act>{}): the activation as a template argument, so that
// the loops f instantiates carry no switch.
template <typename F>
static inline void withActivation(Activation act, F&& f) {
  switch (act) {
    case Activation::Identity: return f(std::integral_constant<Activation, Activation::Identity>{});
    case Activation::Tanh: return f(std::integral_constant<Activation, Activation::Tanh>{});
    case Activation::Relu: return f(std::integral_constant<Activation, Activation::Relu>{});
    case Activation::Gelu: return f(std::integral_constant<Activation, Activation::Gelu>{});
    case Activation::GeluTanh: return f(std::integral_constant<Activation, Activation::GeluTanh>{});
  }
}

// y = act(x + bias) (and z = x + bias when kept) over rows [r0, r1) and columns [c0, c1) of
// x, y and z, all of row pitch ld; the activation a template argument so that the inner loop
// carries no switch. Whole vectors from c0, then the scalar formula for the columns left.
template <Activation Act>
static inline void biasActBlockOf(const float* x, const float* bias, float* y, float* z, int64_t ld, int64_t r0,
                                  int64_t r1, int64_t c0, int64_t c1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * ld;
    float* yr = y + r * ld;
    float* zr = z != nullptr ? z + r * ld : nullptr;
    int64_t j = c0;
    for (; j + W <= c1; j += W) {
      const VF zv = bias != nullptr ? add(load(xr + j), load(bias + j)) : load(xr + j);
      if (zr != nullptr) store(zr + j, zv);
      store(yr + j, activateVector(Act, zv));
    }
    for (; j < c1; ++j) {
      const float zj = bias != nullptr ? xr[j] + bias[j] : xr[j];
      if (zr != nullptr) zr[j] = zj;
      yr[j] = nn_math::activate(Act, zj);
    }
  }
}

static inline void biasActBlock(Activation act, const float* x, const float* bias, float* y, float* z, int64_t ld,
                                int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  withActivation(act, [&](auto a) { biasActBlockOf<decltype(a)::value>(x, bias, y, z, ld, r0, r1, c0, c1); });
}

static inline void biasActRows(const BiasActArgs& a, int64_t r0, int64_t r1) {
  biasActBlock(a.act, a.x, a.bias, a.y, a.z, a.cols, r0, r1, 0, a.cols);
}

// sums[j] = the sum over rows r of x[r * cols + j], widened to double and added in row order
// from 0 as the reference adds them (so these are its bits), for columns [c0, c1). Strips of
// two vectors of columns keep four accumulators in registers down the rows.
static inline void columnSums(const float* x, int64_t rows, int64_t cols, int64_t c0, int64_t c1, double* sums) {
  int64_t j = c0;
  for (; j + 2 * W <= c1; j += 2 * W) {
    VD acc[4] = {zeroD(), zeroD(), zeroD(), zeroD()};
    for (int64_t r = 0; r < rows; ++r) {
      const float* p = x + r * cols + j;
      accumulate(acc[0], acc[1], load(p));
      accumulate(acc[2], acc[3], load(p + W));
    }
    for (int v = 0; v < 4; ++v) storeD(sums + j + v * (W / 2), acc[v]);
  }
  for (; j < c1; ++j) {
    double s = 0;
    for (int64_t r = 0; r < rows; ++r) s += x[r * cols + j];
    sums[j] = s;
  }
}

// gradX = gradY * act' for rows [r0, r1).
template <Activation Act>
static inline void biasActGradRowsOf(const BiasActBackwardArgs& a, int64_t r0, int64_t r1) {
  const int64_t C = a.cols;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t o = r * C;
    const float* y = a.y != nullptr ? a.y + o : nullptr;
    const float* z = a.z != nullptr ? a.z + o : nullptr;
    int64_t j = 0;
    for (; j + W <= C; j += W)
      store(a.gradX + o + j, gradVector(Act, load(a.gradY + o + j), y != nullptr ? y + j : nullptr, z != nullptr ? z + j : nullptr));
    for (; j < C; ++j)
      a.gradX[o + j] = a.gradY[o + j] * nn_math::activationGrad(Act, y != nullptr ? y[j] : 0.0f, z != nullptr ? z[j] : 0.0f);
  }
}

static inline void biasActGradRows(const BiasActBackwardArgs& a, int64_t r0, int64_t r1) {
  withActivation(a.act, [&](auto act) { biasActGradRowsOf<decltype(act)::value>(a, r0, r1); });
}

// The AdamW update of elements [i0, i1) of one tensor, in nn_math::adamwUpdate's order.
static inline void adamwRange(const nn_math::AdamwStep& s, const float* g, float* p, float* m, float* v, int64_t i0,
                              int64_t i1) {
  const VF decay = set1(s.decay), w1 = set1(s.beta1Weight), b2 = set1(s.beta2), w2 = set1(s.oneMinusBeta2);
  const VF bias2 = set1(s.bias2Sqrt), eps = set1(s.eps), negStep = set1(-s.stepSize);
  int64_t i = i0;
  for (; i + W <= i1; i += W) {
    const VF gv = load(g + i);
    const VF pv = mul(load(p + i), decay);
    VF mv = load(m + i);
    mv = add(mv, mul(w1, sub(gv, mv)));
    const VF vv = add(mul(load(v + i), b2), mul(mul(w2, gv), gv));
    const VF denom = add(div(simd::sqrt(vv), bias2), eps);
    store(p + i, add(pv, mul(negStep, div(mv, denom))));
    store(m + i, mv);
    store(v + i, vv);
  }
  for (; i < i1; ++i) nn_math::adamwUpdate(s, g[i], p[i], m[i], v[i]);
}

// sum of x[i]^2 over [i0, i1) in float64: four pairs of vector lanes (independent chains, so the
// adds overlap), combined in a fixed order, then the tail. Within 1e-15 or so of the reference's
// sequential sum, and the same bits for the same range on any thread.
static inline double sumSquaresRange(const float* x, int64_t i0, int64_t i1) {
  VD acc[8] = {zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD(), zeroD()};
  int64_t i = i0;
  for (; i + 4 * W <= i1; i += 4 * W)
    for (int k = 0; k < 4; ++k) accumulateSquares(acc[2 * k], acc[2 * k + 1], load(x + i + k * W));
  for (; i + W <= i1; i += W) accumulateSquares(acc[0], acc[1], load(x + i));
  double s = 0;
  for (const VD& a : acc) s += sumLanes(a);
  for (; i < i1; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

}  // namespace RLHF_CHUNK_NS
}  // namespace rlhf
