// Node-API entry points of the preference family (preference.h). As in ops.cpp, each re-checks its
// arguments; the positional order is declared in lib/native.ts. Each runs on the device of its
// buffers: the CPU kernels for host memory, the CUDA kernels (native/cuda/preference.cu) otherwise.
#include <cmath>
#include <string>
#include <vector>

#include "glue.h"
#include "ops.h"
#include "rlhf/cuda.h"
#include "rlhf/preference.h"

namespace rlhf {
namespace addon {

namespace {

double finiteArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  const double v = numberArg(info, i, op, name);
  if (!std::isfinite(v)) throwRangeError(info.Env(), op, name, "must be finite but is " + std::to_string(v));
  return v;
}

// Lengths of sequences: every entry >= 1. Lengths in device memory are copied to the host first
// (N int32 values: small next to the work of the loss).
void checkLengths(Napi::Env env, const char* op, const char* name, const Buffer& b) {
  const int32_t* v = b.as<int32_t>();
  std::vector<int32_t> host;
  if (b.device != kCpu && b.length > 0) {
    host.resize(static_cast<size_t>(b.length));
    try {
      cuda::copyToHost(host.data(), v, host.size() * sizeof(int32_t), b.device);
    } catch (const KernelError& e) {
      throwKernelError(env, e);
    }
    v = host.data();
  }
  for (int64_t i = 0; i < b.length; ++i)
    if (v[i] < 1) throwRangeError(env, op, name, "must hold lengths >= 1 but holds " + std::to_string(v[i]) + " at index " + std::to_string(i));
}

}  // namespace

// pairwiseRewardLoss(chosen, rejected, margin?, marginValue, centerCoef, gradChosen, gradRejected, stats, async)
Napi::Value pairwiseRewardLoss(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "pairwiseRewardLoss";
  const Buffer chosen = bufferArg(info, 0, Dtype::F32, op, "chosen");
  const Buffer rejected = bufferArg(info, 1, Dtype::F32, op, "rejected");
  const Buffer margin = bufferArg(info, 2, Dtype::F32, op, "margin", true);
  PairwiseLossArgs a;
  a.marginValue = static_cast<float>(finiteArg(info, 3, op, "margin"));
  a.centerCoef = static_cast<float>(finiteArg(info, 4, op, "centerCoef"));
  if (a.centerCoef < 0) throwRangeError(env, op, "centerCoef", "must be >= 0");
  const Buffer gradChosen = bufferArg(info, 5, Dtype::F32, op, "gradChosen");
  const Buffer gradRejected = bufferArg(info, 6, Dtype::F32, op, "gradRejected");
  const Buffer stats = statsArg(info, 7, op, 5);
  const bool async = boolArg(info, 8, op, "async");
  requireSameLength(env, rejected, chosen, op, "rejected", "chosen");
  if (margin.present()) requireSameLength(env, margin, chosen, op, "margin", "chosen");
  requireSameLength(env, gradChosen, chosen, op, "gradChosen", "chosen");
  requireSameLength(env, gradRejected, chosen, op, "gradRejected", "chosen");
  const int device = commonDevice(env, op, {{"chosen", &chosen}, {"rejected", &rejected}, {"margin", &margin},
                                            {"gradChosen", &gradChosen}, {"gradRejected", &gradRejected}});
  a.N = chosen.length;
  a.chosen = chosen.as<float>();
  a.rejected = rejected.as<float>();
  a.margin = margin.as<float>();
  a.gradChosen = gradChosen.as<float>();
  a.gradRejected = gradRejected.as<float>();
  return runKernel(info, async, {chosen, rejected, margin, gradChosen, gradRejected, stats}, [a, device, stats]() -> ToJs {
    const PairwiseLossStats s = device == kCpu ? pairwiseLossCpu(a) : cuda::pairwiseLoss(a, device);
    // In the order pairwiseStatsOf reads them.
    writeStats(stats, {s.loss, s.accuracy, s.meanMargin, s.meanChosen, s.meanRejected});
    return undefinedResult;
  });
}

// dpoLoss(policyChosen, policyRejected, refChosen, refRejected, chosenLengths?, rejectedLengths?, lossType,
//         beta, labelSmoothing, discopopTau, gradChosen, gradRejected, stats, async)
Napi::Value dpoLoss(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "dpoLoss";
  const Buffer pc = bufferArg(info, 0, Dtype::F32, op, "policyChosen");
  const Buffer pr = bufferArg(info, 1, Dtype::F32, op, "policyRejected");
  const Buffer rc = bufferArg(info, 2, Dtype::F32, op, "refChosen");
  const Buffer rr = bufferArg(info, 3, Dtype::F32, op, "refRejected");
  const Buffer nc = bufferArg(info, 4, Dtype::I32, op, "chosenLengths", true);
  const Buffer nr = bufferArg(info, 5, Dtype::I32, op, "rejectedLengths", true);
  DpoLossArgs a;
  const int64_t type = intArg(info, 6, op, "lossType");
  if (type > 11) throwRangeError(env, op, "lossType", "is not a known loss type");
  a.type = static_cast<DpoLossType>(type);
  a.beta = static_cast<float>(finiteArg(info, 7, op, "beta"));
  if (!(a.beta > 0)) throwRangeError(env, op, "beta", "must be > 0");
  a.labelSmoothing = static_cast<float>(finiteArg(info, 8, op, "labelSmoothing"));
  if (!(a.labelSmoothing >= 0 && a.labelSmoothing < 0.5f)) throwRangeError(env, op, "labelSmoothing", "must be in [0, 0.5)");
  if (a.type == DpoLossType::ExoPair && a.labelSmoothing == 0)
    throwRangeError(env, op, "labelSmoothing", "must be > 0 for 'exo_pair' (its loss has log(labelSmoothing))");
  a.discopopTau = static_cast<float>(finiteArg(info, 9, op, "discopopTau"));
  if (!(a.discopopTau > 0)) throwRangeError(env, op, "discopopTau", "must be > 0");
  const Buffer gradChosen = bufferArg(info, 10, Dtype::F32, op, "gradChosen");
  const Buffer gradRejected = bufferArg(info, 11, Dtype::F32, op, "gradRejected");
  const Buffer stats = statsArg(info, 12, op, 5);
  const bool async = boolArg(info, 13, op, "async");
  for (auto [b, name] : {std::pair<const Buffer*, const char*>{&pr, "policyRejected"}, {&rc, "refChosen"},
                         {&rr, "refRejected"}, {&gradChosen, "gradChosen"}, {&gradRejected, "gradRejected"}})
    requireSameLength(env, *b, pc, op, name, "policyChosen");
  if (nc.present() != nr.present())
    throwRangeError(env, op, nc.present() ? "rejectedLengths" : "chosenLengths", "must be given with the other lengths");
  if (a.type == DpoLossType::SigmoidNorm && !nc.present())
    throwRangeError(env, op, "chosenLengths", "and `rejectedLengths` are required by 'sigmoid_norm'");
  const int device = commonDevice(env, op, {{"policyChosen", &pc}, {"policyRejected", &pr}, {"refChosen", &rc},
                                            {"refRejected", &rr}, {"chosenLengths", &nc}, {"rejectedLengths", &nr},
                                            {"gradChosen", &gradChosen}, {"gradRejected", &gradRejected}});
  if (nc.present()) {
    requireSameLength(env, nc, pc, op, "chosenLengths", "policyChosen");
    requireSameLength(env, nr, pc, op, "rejectedLengths", "policyChosen");
    checkLengths(env, op, "chosenLengths", nc);
    checkLengths(env, op, "rejectedLengths", nr);
  }
  a.N = pc.length;
  a.policyChosen = pc.as<float>();
  a.policyRejected = pr.as<float>();
  a.refChosen = rc.as<float>();
  a.refRejected = rr.as<float>();
  a.chosenLengths = nc.as<int32_t>();
  a.rejectedLengths = nr.as<int32_t>();
  a.gradChosen = gradChosen.as<float>();
  a.gradRejected = gradRejected.as<float>();
  return runKernel(info, async, {pc, pr, rc, rr, nc, nr, gradChosen, gradRejected, stats}, [a, device, stats]() -> ToJs {
    const DpoLossStats s = device == kCpu ? dpoLossCpu(a) : cuda::dpoLoss(a, device);
    // In the order dpoStatsOf reads them.
    writeStats(stats, {s.loss, s.rewardsChosen, s.rewardsRejected, s.accuracy, s.margin});
    return undefinedResult;
  });
}

// sequenceLogprobs(B, T, tokenLogprobs, mask?, average, out, async)
Napi::Value sequenceLogprobs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "sequenceLogprobs";
  const int64_t B = intArg(info, 0, op, "B"), T = intArg(info, 1, op, "T");
  const Buffer lp = bufferArg(info, 2, Dtype::F32, op, "tokenLogprobs");
  const Buffer mask = bufferArg(info, 3, Dtype::U8, op, "mask", true);
  SequenceLogprobsArgs a;
  a.average = boolArg(info, 4, op, "average");
  const Buffer out = bufferArg(info, 5, Dtype::F32, op, "out");
  const bool async = boolArg(info, 6, op, "async");
  requireLength(env, lp, op, "tokenLogprobs", B, T);
  if (mask.present()) requireLength(env, mask, op, "mask", B, T);
  requireLength(env, out, op, "out", B);
  const int device = commonDevice(env, op, {{"tokenLogprobs", &lp}, {"mask", &mask}, {"out", &out}});
  a.B = B;
  a.T = T;
  a.tokenLogprobs = lp.as<float>();
  a.mask = mask.as<uint8_t>();
  a.out = out.as<float>();
  return runKernel(info, async, {lp, mask, out}, [a, device]() -> ToJs {
    if (device == kCpu) sequenceLogprobsCpu(a);
    else cuda::sequenceLogprobs(a, device);
    return [](Napi::Env env) -> Napi::Value { return env.Undefined(); };
  });
}

// sequenceLogprobsBackward(B, T, gradSequence, mask?, average, out, async)
Napi::Value sequenceLogprobsBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "sequenceLogprobsBackward";
  const int64_t B = intArg(info, 0, op, "B"), T = intArg(info, 1, op, "T");
  const Buffer g = bufferArg(info, 2, Dtype::F32, op, "gradSequence");
  const Buffer mask = bufferArg(info, 3, Dtype::U8, op, "mask", true);
  SequenceLogprobsBackwardArgs a;
  a.average = boolArg(info, 4, op, "average");
  const Buffer out = bufferArg(info, 5, Dtype::F32, op, "out");
  const bool async = boolArg(info, 6, op, "async");
  requireLength(env, g, op, "gradSequence", B);
  if (mask.present()) requireLength(env, mask, op, "mask", B, T);
  requireLength(env, out, op, "out", B, T);
  const int device = commonDevice(env, op, {{"gradSequence", &g}, {"mask", &mask}, {"out", &out}});
  a.B = B;
  a.T = T;
  a.gradSequence = g.as<float>();
  a.mask = mask.as<uint8_t>();
  a.out = out.as<float>();
  return runKernel(info, async, {g, mask, out}, [a, device]() -> ToJs {
    if (device == kCpu) sequenceLogprobsBackwardCpu(a);
    else cuda::sequenceLogprobsBackward(a, device);
    return [](Napi::Env env) -> Napi::Value { return env.Undefined(); };
  });
}

// groupAdvantages(rewards, groupSize, groupIds?, estimator, scale, eps, out, async)
Napi::Value groupAdvantages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "groupAdvantages";
  const Buffer rewards = bufferArg(info, 0, Dtype::F32, op, "rewards");
  GroupAdvantagesArgs a;
  a.groupSize = intArg(info, 1, op, "groupSize");
  const Buffer ids = bufferArg(info, 2, Dtype::I32, op, "groupIds", true);
  const int64_t estimator = intArg(info, 3, op, "estimator"), scale = intArg(info, 4, op, "scale");
  if (estimator > 2) throwRangeError(env, op, "estimator", "is not a known estimator");
  if (scale > 2) throwRangeError(env, op, "scale", "is not a known scale");
  a.estimator = static_cast<GroupEstimator>(estimator);
  a.scale = static_cast<GroupScale>(scale);
  a.eps = static_cast<float>(finiteArg(info, 5, op, "eps"));
  if (!(a.eps >= 0)) throwRangeError(env, op, "eps", "must be >= 0");
  const Buffer out = bufferArg(info, 6, Dtype::F32, op, "out");
  const bool async = boolArg(info, 7, op, "async");
  requireSameLength(env, out, rewards, op, "out", "rewards");
  if (ids.present()) {
    if (a.groupSize != 0) throwRangeError(env, op, "groupIds", "and `groupSize` exclude each other");
    requireSameLength(env, ids, rewards, op, "groupIds", "rewards");
  } else if (a.groupSize == 0 || rewards.length % a.groupSize != 0) {
    throwRangeError(env, op, "groupSize", "must be >= 1 and divide the " + std::to_string(rewards.length) +
                                         " rewards, but is " + std::to_string(a.groupSize));
  }
  const int device = commonDevice(env, op, {{"rewards", &rewards}, {"groupIds", &ids}, {"out", &out}});
  a.N = rewards.length;
  a.rewards = rewards.as<float>();
  a.groupIds = ids.as<int32_t>();
  a.out = out.as<float>();
  return runKernel(info, async, {rewards, ids, out}, [a, device]() -> ToJs {
    if (device == kCpu) groupAdvantagesCpu(a);
    else cuda::groupAdvantages(a, device);
    return [](Napi::Env env) -> Napi::Value { return env.Undefined(); };
  });
}

}  // namespace addon
}  // namespace rlhf
