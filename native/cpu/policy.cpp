// The optimised CPU entry points of the policy-gradient family: rows of logits and blocks of
// tokens spread over the thread pool, the chunk kernels of policy_chunks.h doing the work.
// Losses are summed over fixed blocks of tokens combined in block order, so the thread count
// never changes a bit of the result.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "../reference/policy_math.h"
#include "blocks.h"
#include "cpu_variants.h"
#include "rlhf/error.h"
#include "rlhf/policy.h"
#include "thread_pool.h"

namespace rlhf {

using namespace policy_math;

static const float* f32(const void* p, LogitsDtype dtype) {
  if (dtype != LogitsDtype::F32) throw KernelError(ErrorKind::Type, "the CPU kernels take float32 logits only");
  return static_cast<const float*>(p);
}

// Rows of V logits per thread part: enough rows that a part is worth waking a thread.
static int64_t rowGrain(int64_t V) { return std::max<int64_t>(1, kMinElementsPerThread / std::max<int64_t>(V, 1)); }

// z_label/tau - logsumexp(z/tau) and the entropy, from a row's softmax statistics.
static double logprobOf(const float* z, int32_t label, float tau, const RowSoftmax& s) {
  return (static_cast<double>(z[label]) - s.max) / tau - s.logSum;
}
static double entropyOf(const RowSoftmax& s) { return s.logSum - s.meanShift; }

// A part's buffers for one row in the pipeline of rowSoftmaxStep: the exps (starting on a 64-byte
// line, where the walk's whole vectors are stored) and the block maxima. Allocated when first
// used: rows whose gradient comes from the forward's outputs need none. Left uninitialised: every
// element read back was written first, and zeroing a row of a large vocabulary costs a small call
// as much as its kernel.
class RowBuffers {
 public:
  explicit RowBuffers(int64_t V) : V_(V) {}
  void lend(PipelinedRow& row) {
    if (exps_ == nullptr) {
      exps_.reset(new float[static_cast<size_t>(V_ + 48)]);
      blockMax_.reset(new float[static_cast<size_t>(V_ / 32 + 2)]);
    }
    row.e = alignToLine(exps_.get());
    row.blockMax = blockMax_.get();
  }

 private:
  int64_t V_;
  std::unique_ptr<float[]> exps_, blockMax_;
};

int64_t firstInvalidLabelCpu(const int32_t* labels, int64_t n, int64_t V, int32_t ignoreIndex) {
  for (int64_t i = 0; i < n; ++i)
    if (labels[i] != ignoreIndex && (labels[i] < 0 || labels[i] >= V)) return i;
  return -1;
}

void logprobsCpu(const LogprobsArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return logprobsReference(a);
  const float* logits = f32(a.logits, a.dtype);
  auto finish = [&](int64_t i, const RowSoftmax& s) {
    const float* z = logits + i * a.V;
    a.logprobs[i] = static_cast<float>(logprobOf(z, a.labels[i], a.temperature, s));
    if (a.entropy) a.entropy[i] = static_cast<float>(entropyOf(s));
  };
  parallelFor(a.N, rowGrain(a.V), 1, [&](int64_t i0, int64_t i1) {
    // Rows to be read go in pairs (rowSoftmaxPair) where readsSeveralInStep() says so, else one
    // by one; `held` is the first of a pair, or -1.
    const bool pairs = readsSeveralInStep();
    int64_t held = -1;
    for (int64_t i = i0; i < i1; ++i) {
      if (a.labels[i] == a.ignoreIndex) {
        a.logprobs[i] = 0;
        if (a.entropy) a.entropy[i] = 0;
      } else if (!pairs) {
        finish(i, k->rowSoftmax(logits + i * a.V, a.V, a.temperature));
      } else if (held < 0) {
        held = i;
      } else {
        RowSoftmax s[2];
        k->rowSoftmaxPair(logits + held * a.V, logits + i * a.V, a.V, a.temperature, s);
        finish(held, s[0]);
        finish(i, s[1]);
        held = -1;
      }
    }
    if (held >= 0) finish(held, k->rowSoftmax(logits + held * a.V, a.V, a.temperature));
  });
}

// Rows whose gradient comes from their logits alone, two a step (rowSoftmaxStep): a row's
// statistics are read while the gradient of the row read before it is written. So a row's
// gradient is written by the next read, or by flush(), with the gradients of its log-prob and
// entropy given after its own read (from the statistics that read returns, in the actor loss).
class PlainRows {
 public:
  PlainRows(const ChunkKernels* k, int64_t V, float tau, bool streaming)
      : k_(k), V_(V), tau_(tau), streaming_(streaming), buffers_{RowBuffers(V), RowBuffers(V)} {}
  // Row z's statistics; its gradient goes to out, of the label's log-prob times gLp and the
  // entropy times gH as gradients() gives them next.
  RowSoftmax read(const float* z, int32_t label, float* out) {
    PipelinedRow& row = rows_[next_];
    buffers_[next_].lend(row);
    row.z = z;
    row.label = label;
    row.out = out;
    row.s = k_->rowSoftmaxStep(&row, pending_ ? &rows_[1 - next_] : nullptr, V_, tau_, streaming_);
    pending_ = true;
    next_ = 1 - next_;
    return row.s;
  }
  void gradients(float gLp, float gH) {
    rows_[1 - next_].gLp = gLp;
    rows_[1 - next_].gH = gH;
  }
  void push(const float* z, int32_t label, float gLp, float gH, float* out) {
    read(z, label, out);
    gradients(gLp, gH);
  }
  void flush() {
    if (pending_) k_->rowSoftmaxStep(nullptr, &rows_[1 - next_], V_, tau_, streaming_);
    pending_ = false;
  }
  // Row z's gradient, written before this returns.
  void now(const float* z, int32_t label, float gLp, float gH, float* out) {
    flush();
    push(z, label, gLp, gH, out);
    flush();
  }

 private:
  const ChunkKernels* k_;
  int64_t V_;
  float tau_;
  bool streaming_;
  RowBuffers buffers_[2];
  PipelinedRow rows_[2];
  int next_ = 0;          // the slot the next read fills
  bool pending_ = false;  // whether the other slot's gradient is still to be written
};

// A row's gradient in one pass from the forward's log-prob lp and entropy H (of a label in
// [0, V)), or from its logits alone by `rows` where they do not fit the row.
static void givenRowGradient(const ChunkKernels* k, const float* z, int64_t V, float tau, int32_t label, float lp,
                             float H, float gLp, float gH, float* out, bool streaming, PlainRows& rows) {
  const RowCheck c = k->rowGradGiven(z, V, tau, label, lp, H, gLp, gH, out, streaming);
  if (!givenFitsRow(c.p, c.pLogP, gH != 0.0f, H)) rows.now(z, label, gLp, gH, out);
}

void logprobsBackwardCpu(const LogprobsBackwardArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return logprobsBackwardReference(a);
  const float* logits = f32(a.logits, a.dtype);
  float* grad = static_cast<float*>(a.gradLogits);
  const bool streaming = isStreaming(a.N * a.V);
  auto gradH = [&](int64_t i) { return a.gradEntropy ? a.gradEntropy[i] : 0.0f; };
  // Whether row i's gradient comes from the forward's outputs (in one pass, when they fit it).
  auto given = [&](int64_t i) {
    const int32_t label = a.labels[i];
    return a.logprobs != nullptr && (gradH(i) == 0.0f || a.entropy != nullptr) && label >= 0 && label < a.V;
  };
  parallelFor(a.N, rowGrain(a.V), 1, [&](int64_t i0, int64_t i1) {
    PlainRows rows(k, a.V, a.temperature, streaming);
    for (int64_t i = i0; i < i1; ++i) {
      float* out = grad + i * a.V;
      const int32_t label = a.labels[i];
      if (label == a.ignoreIndex) {
        std::memset(out, 0, static_cast<size_t>(a.V) * sizeof(float));
        continue;
      }
      const float* z = logits + i * a.V;
      const float gH = gradH(i);
      if (given(i))
        givenRowGradient(k, z, a.V, a.temperature, label, a.logprobs[i], gH != 0.0f ? a.entropy[i] : 0.0f,
                         a.gradLogprobs[i], gH, out, streaming, rows);
      else
        rows.push(z, label, a.gradLogprobs[i], gH, out);
    }
    rows.flush();
    fenceStreams(streaming);
  });
}

// Large outputs are streamed past the cache (as the losses' gradients are): written with plain
// stores, each of their lines was read first, half as much traffic again as the op's own. Not
// where an output lies a little ahead of an input in its page (clearOfAliasing).
void klPenaltyCpu(const KlPenaltyArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return klPenaltyReference(a);
  const bool streaming = isStreaming(2 * a.n) && allClearOfAliasing({a.kl, a.grad}, {a.logprobs, a.refLogprobs});
  parallelFor(a.n, kMinElementsPerThread, kLine, [&](int64_t i0, int64_t i1) { k->klRange(a, i0, i1, streaming); });
}

// The last valid column of a row (-1 when none), from its end: where a response's mask ends.
static int64_t lastValid(const uint8_t* m, int64_t T) {
  int64_t t = T;
  for (; t >= 8; t -= 8) {
    uint64_t word;
    std::memcpy(&word, m + t - 8, 8);
    if (word != 0) break;
  }
  for (--t; t >= 0; --t)
    if (m[t] != 0) return t;
  return -1;
}

// Each row's score column and score first (the mask's end, read from the row's end), then the
// rows in one pass: -klCoef*kl on valid tokens, the score added at its column.
void shapeRewardsCpu(const ShapeRewardsArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return shapeRewardsReference(a);
  const int64_t B = a.B, T = a.T;
  std::vector<float> scale(static_cast<size_t>(B), -a.klCoef);
  std::vector<int64_t> at(static_cast<size_t>(B));
  std::vector<double> add(static_cast<size_t>(B));
  const MaskedScaleRows rows{a.kl, a.mask, T, scale.data(), at.data(), add.data(), a.rewards};
  const bool streaming = isStreaming(B * T) && allClearOfAliasing({a.rewards}, {a.kl});
  parallelFor(B, std::max<int64_t>(1, kMinElementsPerThread / std::max<int64_t>(T, 1)), 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t last = lastValid(a.mask + b * T, T);
      double score = a.scores[b];
      if (a.hasEos != nullptr && a.hasEos[b] == 0) score -= a.missingEosPenalty;
      at[b] = a.placement == ScorePlacement::AfterLast && last + 1 < T ? last + 1 : last;
      add[b] = policy_math::clampSym(score, a.scoreClip);
    }
    k->maskedScaleRows(rows, b0, b1, streaming);
  });
}

// --- aggregation weights ----------------------------------------------------------------------

struct RowCounts {
  std::vector<double> valid;  // per row
  double total = 0, nonEmpty = 0;
};

// Valid tokens of the row starting at i0; each case its own loop so that the counting vectorises.
static int64_t validInRow(const ChunkKernels& k, const uint8_t* mask, const int32_t* labels, int32_t ignoreIndex,
                          int64_t i0, int64_t T) {
  int64_t n = 0;
  if (labels == nullptr) {
    n = k.countNonZero(mask + i0, T);
  } else if (mask == nullptr) {
    for (int64_t i = i0; i < i0 + T; ++i) n += labels[i] != ignoreIndex;
  } else {
    for (int64_t i = i0; i < i0 + T; ++i) n += (mask[i] != 0) & (labels[i] != ignoreIndex);
  }
  return n;
}

// Valid tokens per row: mask != 0 (null: all) and, when labels are given, label != ignoreIndex.
static RowCounts countRows(const ChunkKernels& k, int64_t B, int64_t T, const uint8_t* mask,
                           const int32_t* labels = nullptr, int32_t ignoreIndex = 0) {
  RowCounts c;
  c.valid.assign(static_cast<size_t>(B), 0.0);
  if (mask == nullptr && labels == nullptr) {
    std::fill(c.valid.begin(), c.valid.end(), static_cast<double>(T));
  } else {
    const int64_t grain = std::max<int64_t>(1, kMinElementsPerThread / std::max<int64_t>(T, 1));
    parallelFor(B, grain, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        c.valid[b] = static_cast<double>(validInRow(k, mask, labels, ignoreIndex, b * T, T));
    });
  }
  for (double n : c.valid) {
    c.total += n;
    c.nonEmpty += n > 0 ? 1 : 0;
  }
  return c;
}

static std::vector<double> rowWeights(const RowCounts& c, Aggregation mode, double normalizer, int64_t B) {
  std::vector<double> w(c.valid.size());
  for (size_t b = 0; b < w.size(); ++b)
    w[b] = aggregationRowWeight(mode, normalizer, c.valid[b], c.total, c.nonEmpty, static_cast<double>(B));
  return w;
}

// --- the PPO policy loss -------------------------------------------------------------------------

// The sequence importance level's log weight of each row: the masked mean of lp - old.
static std::vector<float> sequenceLogRatios(const PolicyLossArgs& a, const RowCounts& c) {
  std::vector<float> s(static_cast<size_t>(a.B));
  for (int64_t b = 0; b < a.B; ++b) {
    double sum = 0;
    for (int64_t i = b * a.T; i < (b + 1) * a.T; ++i)
      if (a.mask == nullptr || a.mask[i] != 0) sum += static_cast<double>(a.logprobs[i]) - a.oldLogprobs[i];
    s[b] = static_cast<float>(sum / std::max(c.valid[b], 1.0));
  }
  return s;
}

// With one ratio per row, d loss / d lp_bt is the row's summed d loss / d log-weight spread
// evenly over its valid tokens.
static void spreadRowGradients(const PolicyLossArgs& a, const RowCounts& c) {
  for (int64_t b = 0; b < a.B; ++b) {
    double sum = 0;
    for (int64_t i = b * a.T; i < (b + 1) * a.T; ++i) sum += a.grad[i];
    const float g = static_cast<float>(sum / std::max(c.valid[b], 1.0));
    for (int64_t i = b * a.T; i < (b + 1) * a.T; ++i)
      if (a.mask == nullptr || a.mask[i] != 0) a.grad[i] = g;
  }
}

PolicyLossStats policyLossCpu(const PolicyLossArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return policyLossReference(a);
  const RowCounts c = countRows(*k, a.B, a.T, a.mask);
  const std::vector<double> w = rowWeights(c, a.o.aggregation, a.o.normalizer, a.B);
  const bool sequence = a.o.importance == ImportanceLevel::Sequence;
  const std::vector<float> seq = sequence ? sequenceLogRatios(a, c) : std::vector<float>();
  const bool streaming = isStreaming(a.B * a.T);
  const std::vector<PolicyBlock> parts = overBlocks<PolicyBlock>(a.B * a.T, streaming, [&](int64_t i0, int64_t i1) {
    return k->policyBlock(a, w.data(), sequence ? seq.data() : nullptr, i0, i1, streaming);
  });
  if (sequence) spreadRowGradients(a, c);
  PolicyBlock t;
  for (const PolicyBlock& p : parts) {
    t.loss += p.loss;
    t.kl2 += p.kl2;
    t.kl3 += p.kl3;
    t.klp += p.klp;
    t.clipped += p.clipped;
    t.lower += p.lower;
  }
  const double n = c.total;
  PolicyLossStats s;
  s.loss = t.loss;
  if (n > 0) {
    s.clipfrac = static_cast<double>(t.clipped) / n;
    s.clipfracLower = static_cast<double>(t.lower) / n;
    s.approxKl = t.kl2 / n;
    s.approxKlK3 = t.kl3 / n;
    s.ppoKl = t.klp / n;
  }
  return s;
}

// --- the value loss ------------------------------------------------------------------------------

ValueLossStats valueLossCpu(const ValueLossArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return valueLossReference(a);
  const RowCounts c = countRows(*k, a.B, a.T, a.mask);
  const std::vector<double> w = rowWeights(c, a.aggregation, a.normalizer, a.B);
  const bool streaming = isStreaming(a.B * a.T);
  const std::vector<ValueBlock> parts = overBlocks<ValueBlock>(
      a.B * a.T, streaming, [&](int64_t i0, int64_t i1) { return k->valueBlock(a, w.data(), i0, i1, streaming); });
  double loss = 0, clipped = 0;
  MaskedMoments returns, errors;
  for (const ValueBlock& p : parts) {
    loss += p.loss;
    clipped += static_cast<double>(p.clipped);
    returns = combineMoments(returns, p.returns);
    errors = combineMoments(errors, p.errors);
  }
  ValueLossStats s;
  s.loss = 0.5 * loss;
  s.vfClipfrac = c.total > 0 ? clipped / c.total : 0;
  s.explainedVariance = c.total > 0 && returns.m2 > 0 ? 1 - errors.m2 / returns.m2 : NAN;
  return s;
}

// --- the fused actor loss ------------------------------------------------------------------------
// Per token: the row's softmax statistics, then lp and H, then the token's terms of the three
// losses and their gradients with respect to lp and H, then the row of d loss / d logits. At the
// token importance level the statistics come from PlainRows, which keeps the row's exps and writes
// its gradient in the loop that reads the next row (one read of the logits from memory, one exp
// per logit); the sequence level needs every lp of a row before any gradient, so it reads the
// logits from memory twice, the second time in one pass given lp and H (rowGradGiven).

struct ActorToken {
  double l = 0, kl = 0, gLp = 0;  // policy loss term, KL term, d(pg + klCoef*kl)/d lp (without 1/n spread)
  bool clipped = false, lower = false;
  double kl2 = 0, kl3 = 0, klp = 0;  // stats on the token's own clamped log-ratio
};

static ActorToken actorToken(const ActorLossArgs& a, int64_t i, double lp, double dUsed, double w) {
  const PolicyLossOptions& o = a.o;
  ActorToken t;
  const double A = a.advantagesPerRow ? a.advantages[i / a.T] : a.advantages[i];
  const double d = clampSym(dUsed, o.clampLogRatio);
  const double r = std::exp(d);
  const TokenLoss tl = tokenLoss(r, A, o);
  t.l = tl.l;
  t.gLp = std::fabs(dUsed) > o.clampLogRatio ? 0.0 : ratioGradient(w, tl, r);
  t.clipped = countsAsClipped(tl, r, o);
  t.lower = tl.lowerActive;
  const double dt = clampSym(lp - a.oldLogprobs[i], o.clampLogRatio);
  t.kl2 = 0.5 * dt * dt;
  t.kl3 = std::exp(dt) - 1 - dt;
  t.klp = -dt;
  return t;
}

static double klTerm(const ActorLossArgs& a, int64_t i, double lp, double w, double& gLp) {
  if (a.refLogprobs == nullptr || a.klCoef == 0) return 0;
  const KlValue k = klOf(lp - a.refLogprobs[i], a.klOptions);
  gLp += static_cast<double>(a.klCoef) * w * k.grad;
  return k.kl;
}

ActorLossStats actorLossCpu(const ActorLossArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return actorLossReference(a);
  const float* logits = f32(a.logits, a.dtype);
  float* grad = static_cast<float*>(a.gradLogits);
  const int64_t n = a.B * a.T, V = a.V;
  const RowCounts c = countRows(*k, a.B, a.T, a.mask, a.labels, a.ignoreIndex);
  const std::vector<double> w = rowWeights(c, a.o.aggregation, a.o.normalizer, a.B);
  const bool streaming = isStreaming(n * V);
  const bool sequence = a.o.importance == ImportanceLevel::Sequence;
  auto valid = [&](int64_t i) { return (a.mask == nullptr || a.mask[i] != 0) && a.labels[i] != a.ignoreIndex; };

  std::vector<double> lp(static_cast<size_t>(n), 0.0), H(static_cast<size_t>(n), 0.0);
  std::vector<ActorToken> tok(static_cast<size_t>(n));
  std::vector<double> kl(static_cast<size_t>(n), 0.0);

  auto entropyGrad = [&](int64_t i) { return static_cast<float>(-static_cast<double>(a.entropyCoef) * w[i / a.T]); };
  // At the sequence level, a row's gradient from one pass given its lp and H (givenRowGradient);
  // `rows`: the part's, should they not fit its logits.
  auto writeGrad = [&](int64_t i, double gLp, PlainRows& rows) {
    givenRowGradient(k, logits + i * V, V, a.temperature, a.labels[i], static_cast<float>(lp[i]),
                     static_cast<float>(H[i]), static_cast<float>(gLp), entropyGrad(i), grad + i * V, streaming, rows);
  };
  auto zeroGrad = [&](int64_t i) { std::memset(grad + i * V, 0, static_cast<size_t>(V) * sizeof(float)); };
  auto keep = [&](int64_t i, const RowSoftmax& s) {
    lp[i] = logprobOf(logits + i * V, a.labels[i], a.temperature, s);
    H[i] = entropyOf(s);
  };

  if (!sequence) {
    parallelFor(n, rowGrain(V), 1, [&](int64_t i0, int64_t i1) {
      PlainRows rows(k, V, a.temperature, streaming);
      for (int64_t i = i0; i < i1; ++i) {
        if (!valid(i)) {
          zeroGrad(i);
          continue;
        }
        keep(i, rows.read(logits + i * V, a.labels[i], grad + i * V));
        const double wb = w[i / a.T];
        tok[i] = actorToken(a, i, lp[i], lp[i] - a.oldLogprobs[i], wb);
        double gLp = tok[i].gLp;
        kl[i] = klTerm(a, i, lp[i], wb, gLp);
        rows.gradients(static_cast<float>(gLp), entropyGrad(i));
      }
      rows.flush();
      fenceStreams(streaming);
    });
  } else {
    parallelFor(n, rowGrain(V), 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        if (valid(i)) keep(i, k->rowSoftmax(logits + i * V, V, a.temperature));
    });
    std::vector<double> gLp(static_cast<size_t>(n), 0.0);
    for (int64_t b = 0; b < a.B; ++b) {
      const int64_t r0 = b * a.T, r1 = r0 + a.T;
      double seqD = 0;
      for (int64_t i = r0; i < r1; ++i)
        if (valid(i)) seqD += lp[i] - a.oldLogprobs[i];
      const double nb = std::max(c.valid[b], 1.0);
      seqD /= nb;
      double rowGrad = 0;
      for (int64_t i = r0; i < r1; ++i)
        if (valid(i)) {
          tok[i] = actorToken(a, i, lp[i], seqD, w[b]);
          rowGrad += tok[i].gLp;
        }
      for (int64_t i = r0; i < r1; ++i)
        if (valid(i)) {
          gLp[i] = rowGrad / nb;
          kl[i] = klTerm(a, i, lp[i], w[b], gLp[i]);
        }
    }
    parallelFor(n, rowGrain(V), 1, [&](int64_t i0, int64_t i1) {
      PlainRows rows(k, V, a.temperature, streaming);
      for (int64_t i = i0; i < i1; ++i) {
        if (!valid(i)) {
          zeroGrad(i);
          continue;
        }
        writeGrad(i, gLp[i], rows);
      }
      fenceStreams(streaming);
    });
  }

  // Sums in the reference's order: tokens within a row, rows in order.
  ActorLossStats s;
  double clipped = 0, lower = 0, kl2 = 0, kl3 = 0, klp = 0, pg = 0, ent = 0, klSum = 0;
  for (int64_t b = 0; b < a.B; ++b) {
    double rowL = 0, rowH = 0, rowKl = 0;
    for (int64_t i = b * a.T; i < (b + 1) * a.T; ++i) {
      if (a.logprobs) a.logprobs[i] = static_cast<float>(lp[i]);
      if (a.entropy) a.entropy[i] = static_cast<float>(H[i]);
      if (!valid(i)) continue;
      rowL += tok[i].l;
      rowH += H[i];
      rowKl += kl[i];
      clipped += tok[i].clipped ? 1 : 0;
      lower += tok[i].lower ? 1 : 0;
      kl2 += tok[i].kl2;
      kl3 += tok[i].kl3;
      klp += tok[i].klp;
    }
    pg += w[b] * rowL;
    ent += w[b] * rowH;
    klSum += w[b] * rowKl;
  }
  const double total = c.total;
  s.policy.loss = pg;
  if (total > 0) {
    s.policy.clipfrac = clipped / total;
    s.policy.clipfracLower = lower / total;
    s.policy.approxKl = kl2 / total;
    s.policy.approxKlK3 = kl3 / total;
    s.policy.ppoKl = klp / total;
  }
  const bool withKl = a.refLogprobs != nullptr && a.klCoef != 0;
  s.entropy = ent;
  s.kl = withKl ? klSum : 0;
  s.loss = pg + (withKl ? static_cast<double>(a.klCoef) * klSum : 0.0) - static_cast<double>(a.entropyCoef) * ent;
  return s;
}

}  // namespace rlhf
