// Node-API entry points of the policy-gradient family (policy.h). As in ops.cpp, each re-checks
// its arguments and dispatches on the device of its buffers; the positional order is declared
// in lib/native.ts. The losses take their options as one object, read once per call.
#include <cmath>
#include <string>

#include "glue.h"
#include "ops.h"
#include "rlhf/cuda.h"
#include "rlhf/policy.h"

namespace rlhf {
namespace addon {

namespace {

// Labels compare as floats in the vectorised kernels: exact up to 2^24.
constexpr int64_t kMaxVocabulary = int64_t{1} << 24;

std::string str(double v) {
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return std::to_string(v);
}

// A number in (lo, hi] or [lo, hi] (closed when `closedLow`); Infinity passes only when hi is.
double numberIn(Napi::Env env, double v, const char* op, const char* name, double lo, double hi, bool closedLow) {
  const bool ok = (closedLow ? v >= lo : v > lo) && v <= hi;
  if (!ok)
    throwRangeError(env, op, name, std::string("must be in ") + (closedLow ? "[" : "(") + str(lo) + ", " + str(hi) +
                                  "] but is " + str(v));
  return v;
}

int32_t int32Arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  const double v = numberArg(info, i, op, name);
  if (!(v >= -2147483648.0 && v <= 2147483647.0) || v != std::floor(v))
    throwRangeError(info.Env(), op, name, "must be a 32-bit integer but is " + str(v));
  return static_cast<int32_t>(v);
}

double objectNumber(Napi::Env env, Napi::Object o, const char* op, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throwTypeError(env, std::string(op) + ": expected a number for option `" + key + "`");
  return v.As<Napi::Number>().DoubleValue();
}

bool objectBool(Napi::Env env, Napi::Object o, const char* op, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) throwTypeError(env, std::string(op) + ": expected a boolean for option `" + key + "`");
  return v.As<Napi::Boolean>().Value();
}

Napi::Object objectArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (!info[i].IsObject()) throwTypeError(info.Env(), std::string(op) + ": expected an object for `" + name + "`");
  return info[i].As<Napi::Object>();
}

template <typename Enum>
Enum enumOption(Napi::Env env, Napi::Object o, const char* op, const char* key, int count) {
  const double v = objectNumber(env, o, op, key);
  if (!(v >= 0 && v < count) || v != std::floor(v)) throwRangeError(env, op, key, "is not a known choice (" + str(v) + ")");
  return static_cast<Enum>(static_cast<int32_t>(v));
}

// Aggregations that divide by a caller's normalizer.
bool usesNormalizer(Aggregation a) {
  return a == Aggregation::SeqMeanTokenSumNorm || a == Aggregation::DrGrpo || a == Aggregation::Dapo;
}

// { aggregation, normalizer } of a loss.
void readAggregation(Napi::Env env, Napi::Object o, const char* op, Aggregation& mode, double& normalizer) {
  mode = enumOption<Aggregation>(env, o, op, "aggregation", 8);
  normalizer = objectNumber(env, o, op, "normalizer");
  if (usesNormalizer(mode) && !(normalizer > 0 && std::isfinite(normalizer)))
    throwRangeError(env, op, "normalizer", "must be a finite number > 0 but is " + str(normalizer));
}

// { clipLow, clipHigh, dualClip, clampLogRatio, aggregation, normalizer, importance, clipfracMode }
PolicyLossOptions policyOptions(Napi::Env env, Napi::Object o, const char* op) {
  PolicyLossOptions p;
  p.clipLow = static_cast<float>(numberIn(env, objectNumber(env, o, op, "clipLow"), op, "clipLow", 0, 1, false));
  if (p.clipLow >= 1) throwRangeError(env, op, "clipLow", "must be < 1");
  p.clipHigh = static_cast<float>(numberIn(env, objectNumber(env, o, op, "clipHigh"), op, "clipHigh", 0, 10, false));
  const double dual = objectNumber(env, o, op, "dualClip");
  if (dual != 0 && !(dual > 1 && std::isfinite(dual)))
    throwRangeError(env, op, "dualClip", "must be > 1 (or off) but is " + str(dual));
  p.dualClip = static_cast<float>(dual);
  p.clampLogRatio = static_cast<float>(
      numberIn(env, objectNumber(env, o, op, "clampLogRatio"), op, "clampLogRatio", 0, INFINITY, false));
  readAggregation(env, o, op, p.aggregation, p.normalizer);
  p.importance = enumOption<ImportanceLevel>(env, o, op, "importance", 2);
  p.clipfracMode = enumOption<ClipfracMode>(env, o, op, "clipfracMode", 2);
  return p;
}

// { estimator, clampLogRatio, clampOutput, straightThrough }
KlOptions klOptions(Napi::Env env, Napi::Object o, const char* op) {
  KlOptions k;
  k.estimator = enumOption<KlEstimator>(env, o, op, "estimator", 4);
  k.clampLogRatio = static_cast<float>(
      numberIn(env, objectNumber(env, o, op, "clampLogRatio"), op, "clampLogRatio", 0, INFINITY, false));
  k.clampOutput =
      static_cast<float>(numberIn(env, objectNumber(env, o, op, "clampOutput"), op, "clampOutput", 0, INFINITY, false));
  k.straightThrough = objectBool(env, o, op, "straightThrough");
  return k;
}

void requireVocabulary(Napi::Env env, const char* op, int64_t V) {
  if (V < 1 || V > kMaxVocabulary)
    throwRangeError(env, op, "V", "(the vocabulary) must be in [1, " + std::to_string(kMaxVocabulary) + "] but is " +
                                 std::to_string(V));
}

// Throws a Range KernelError naming the first label that is neither in [0, V) nor ignoreIndex.
void checkLabels(const char* op, const int32_t* labels, int64_t n, int64_t V, int32_t ignoreIndex, int device) {
  const int64_t i = device == kCpu ? firstInvalidLabelCpu(labels, n, V, ignoreIndex)
                                   : cuda::firstInvalidLabel(labels, n, V, ignoreIndex, device);
  if (i < 0) return;
  int32_t value = 0;
  if (device == kCpu) value = labels[i];
  else cuda::copyToHost(&value, labels + i, sizeof value, device);
  throw KernelError(ErrorKind::Range, std::string(op) + ": `labels` holds " + std::to_string(value) + " at index " +
                                          std::to_string(i) + ", outside [0, " + std::to_string(V) +
                                          ") and not the ignoreIndex " + std::to_string(ignoreIndex));
}

float temperatureArg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  const double t = numberArg(info, i, op, "temperature");
  if (!(t > 0 && std::isfinite(t))) throwRangeError(info.Env(), op, "temperature", "must be a finite number > 0 but is " + str(t));
  return static_cast<float>(t);
}

// Logits of float32, or (CUDA only) float16 / bfloat16: argument i is the dtype (LogitsDtype),
// argument i+1 the buffer. The CPU kernels take float32 only.
Buffer logitsArg(const Napi::CallbackInfo& info, size_t i, const char* op, LogitsDtype& dtype) {
  const int64_t d = intArg(info, i, op, "logitsDtype");
  if (d > 2) throwRangeError(info.Env(), op, "logitsDtype", "is not a known dtype");
  dtype = static_cast<LogitsDtype>(d);
  Buffer b = bufferArg(info, i + 1, dtype == LogitsDtype::F32 ? Dtype::F32 : Dtype::F16, op, "logits");
  if (dtype != LogitsDtype::F32 && b.device == kCpu)
    throwTypeError(info.Env(), std::string(op) + ": float16 and bfloat16 `logits` are supported on CUDA only; "
                                                 "pass float32 logits on the CPU");
  return b;
}

}  // namespace

// logprobsFromLogits(N, V, logitsDtype, logits, labels, temperature, ignoreIndex, logprobs, entropy?, async)
Napi::Value logprobsFromLogits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "logprobsFromLogits";
  const int64_t N = intArg(info, 0, op, "N"), V = intArg(info, 1, op, "V");
  requireVocabulary(env, op, V);
  LogprobsArgs a;
  const Buffer logits = logitsArg(info, 2, op, a.dtype);
  const Buffer labels = bufferArg(info, 4, Dtype::I32, op, "labels");
  a.temperature = temperatureArg(info, 5, op);
  a.ignoreIndex = int32Arg(info, 6, op, "ignoreIndex");
  const Buffer logprobs = bufferArg(info, 7, Dtype::F32, op, "logprobs");
  const Buffer entropy = bufferArg(info, 8, Dtype::F32, op, "entropy", true);
  const bool async = boolArg(info, 9, op, "async");
  requireLength(env, logits, op, "logits", N, V);
  requireLength(env, labels, op, "labels", N);
  requireLength(env, logprobs, op, "logprobs", N);
  if (entropy.present()) requireLength(env, entropy, op, "entropy", N);
  const int device = commonDevice(env, op, {{"logits", &logits}, {"labels", &labels}, {"logprobs", &logprobs},
                                           {"entropy", &entropy}});
  a.N = N;
  a.V = V;
  a.logits = logits.data;
  a.labels = labels.as<int32_t>();
  a.logprobs = logprobs.as<float>();
  a.entropy = entropy.as<float>();
  return runKernel(info, async, {logits, labels, logprobs, entropy}, [a, device, op]() -> ToJs {
    if (a.N == 0) return undefinedResult;
    checkLabels(op, a.labels, a.N, a.V, a.ignoreIndex, device);
    if (device == kCpu) logprobsCpu(a);
    else cuda::logprobs(a, device);
    return undefinedResult;
  });
}

// logprobsFromLogitsBackward(N, V, logitsDtype, logits, labels, gradLogprobs, gradEntropy?, logprobs?, entropy?,
//                            temperature, ignoreIndex, gradLogits (the logits' dtype), async)
Napi::Value logprobsFromLogitsBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "logprobsFromLogitsBackward";
  const int64_t N = intArg(info, 0, op, "N"), V = intArg(info, 1, op, "V");
  requireVocabulary(env, op, V);
  LogprobsBackwardArgs a;
  const Buffer logits = logitsArg(info, 2, op, a.dtype);
  const Buffer labels = bufferArg(info, 4, Dtype::I32, op, "labels");
  const Buffer gradLogprobs = bufferArg(info, 5, Dtype::F32, op, "gradLogprobs");
  const Buffer gradEntropy = bufferArg(info, 6, Dtype::F32, op, "gradEntropy", true);
  const Buffer logprobs = bufferArg(info, 7, Dtype::F32, op, "logprobs", true);
  const Buffer entropy = bufferArg(info, 8, Dtype::F32, op, "entropy", true);
  a.temperature = temperatureArg(info, 9, op);
  a.ignoreIndex = int32Arg(info, 10, op, "ignoreIndex");
  const Buffer gradLogits =
      bufferArg(info, 11, a.dtype == LogitsDtype::F32 ? Dtype::F32 : Dtype::F16, op, "gradLogits");
  const bool async = boolArg(info, 12, op, "async");
  requireLength(env, logits, op, "logits", N, V);
  requireLength(env, labels, op, "labels", N);
  requireLength(env, gradLogprobs, op, "gradLogprobs", N);
  if (gradEntropy.present()) requireLength(env, gradEntropy, op, "gradEntropy", N);
  if (logprobs.present()) requireLength(env, logprobs, op, "logprobs", N);
  if (entropy.present()) {
    if (!logprobs.present())
      throwRangeError(env, op, "entropy", "goes with `logprobs` (both the forward's outputs), which is missing");
    requireLength(env, entropy, op, "entropy", N);
  }
  requireLength(env, gradLogits, op, "gradLogits", N, V);
  const int device = commonDevice(env, op, {{"logits", &logits}, {"labels", &labels}, {"gradLogprobs", &gradLogprobs},
                                           {"gradEntropy", &gradEntropy}, {"logprobs", &logprobs},
                                           {"entropy", &entropy}, {"gradLogits", &gradLogits}});
  a.N = N;
  a.V = V;
  a.logits = logits.data;
  a.labels = labels.as<int32_t>();
  a.gradLogprobs = gradLogprobs.as<float>();
  a.gradEntropy = gradEntropy.as<float>();
  a.logprobs = logprobs.as<float>();
  a.entropy = entropy.as<float>();
  a.gradLogits = gradLogits.data;
  return runKernel(info, async, {logits, labels, gradLogprobs, gradEntropy, logprobs, entropy, gradLogits},
                   [a, device, op]() -> ToJs {
    if (a.N == 0) return undefinedResult;
    checkLabels(op, a.labels, a.N, a.V, a.ignoreIndex, device);
    if (device == kCpu) logprobsBackwardCpu(a);
    else cuda::logprobsBackward(a, device);
    return undefinedResult;
  });
}

// klPenalty(logprobs, refLogprobs, { estimator, clampLogRatio, clampOutput, straightThrough }, kl, grad, async)
Napi::Value klPenalty(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "klPenalty";
  const Buffer logprobs = bufferArg(info, 0, Dtype::F32, op, "logprobs");
  const Buffer ref = bufferArg(info, 1, Dtype::F32, op, "refLogprobs");
  KlPenaltyArgs a;
  a.o = klOptions(env, objectArg(info, 2, op, "options"), op);
  const Buffer kl = bufferArg(info, 3, Dtype::F32, op, "kl");
  const Buffer grad = bufferArg(info, 4, Dtype::F32, op, "grad");
  const bool async = boolArg(info, 5, op, "async");
  requireSameLength(env, ref, logprobs, op, "refLogprobs", "logprobs");
  requireSameLength(env, kl, logprobs, op, "kl", "logprobs");
  requireSameLength(env, grad, logprobs, op, "grad", "logprobs");
  const int device =
      commonDevice(env, op, {{"logprobs", &logprobs}, {"refLogprobs", &ref}, {"kl", &kl}, {"grad", &grad}});
  a.n = logprobs.length;
  a.logprobs = logprobs.as<float>();
  a.refLogprobs = ref.as<float>();
  a.kl = kl.as<float>();
  a.grad = grad.as<float>();
  return runKernel(info, async, {logprobs, ref, kl, grad}, [a, device]() -> ToJs {
    if (a.n == 0) return undefinedResult;
    if (device == kCpu) klPenaltyCpu(a);
    else cuda::klPenalty(a, device);
    return undefinedResult;
  });
}

// shapeRewards(B, T, scores, kl, mask, hasEos?, klCoef, placement, missingEosPenalty, scoreClip, rewards, async)
Napi::Value shapeRewards(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "shapeRewards";
  const int64_t B = intArg(info, 0, op, "B"), T = intArg(info, 1, op, "T");
  const Buffer scores = bufferArg(info, 2, Dtype::F32, op, "scores");
  const Buffer kl = bufferArg(info, 3, Dtype::F32, op, "kl");
  const Buffer mask = bufferArg(info, 4, Dtype::U8, op, "mask");
  const Buffer hasEos = bufferArg(info, 5, Dtype::U8, op, "hasEos", true);
  ShapeRewardsArgs a;
  a.klCoef = static_cast<float>(numberIn(env, numberArg(info, 6, op, "klCoef"), op, "klCoef", 0, 1e30, true));
  const int64_t placement = intArg(info, 7, op, "scorePlacement");
  if (placement > 1) throwRangeError(env, op, "scorePlacement", "is not a known choice");
  a.placement = static_cast<ScorePlacement>(placement);
  a.missingEosPenalty = static_cast<float>(numberArg(info, 8, op, "missingEosPenalty"));
  if (!std::isfinite(a.missingEosPenalty)) throwRangeError(env, op, "missingEosPenalty", "must be finite");
  a.scoreClip = static_cast<float>(numberIn(env, numberArg(info, 9, op, "scoreClip"), op, "scoreClip", 0, INFINITY, false));
  const Buffer rewards = bufferArg(info, 10, Dtype::F32, op, "rewards");
  const bool async = boolArg(info, 11, op, "async");
  requireLength(env, scores, op, "scores", B);
  requireLength(env, kl, op, "kl", B, T);
  requireLength(env, mask, op, "mask", B, T);
  if (hasEos.present()) requireLength(env, hasEos, op, "hasEos", B);
  requireLength(env, rewards, op, "rewards", B, T);
  const int device = commonDevice(env, op, {{"scores", &scores}, {"kl", &kl}, {"mask", &mask}, {"hasEos", &hasEos},
                                           {"rewards", &rewards}});
  a.B = B;
  a.T = T;
  a.scores = scores.as<float>();
  a.kl = kl.as<float>();
  a.mask = mask.as<uint8_t>();
  a.hasEos = hasEos.as<uint8_t>();
  a.rewards = rewards.as<float>();
  return runKernel(info, async, {scores, kl, mask, hasEos, rewards}, [a, device]() -> ToJs {
    if (a.B == 0 || a.T == 0) return undefinedResult;
    if (device == kCpu) shapeRewardsCpu(a);
    else cuda::shapeRewards(a, device);
    return undefinedResult;
  });
}

// ppoPolicyLoss(B, T, logprobs, oldLogprobs, advantages, mask?, options, grad, stats, async)
// advantages hold B*T values, or B (one per row).
Napi::Value ppoPolicyLoss(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "ppoPolicyLoss";
  const int64_t B = intArg(info, 0, op, "B"), T = intArg(info, 1, op, "T");
  const Buffer logprobs = bufferArg(info, 2, Dtype::F32, op, "logprobs");
  const Buffer old = bufferArg(info, 3, Dtype::F32, op, "oldLogprobs");
  const Buffer adv = bufferArg(info, 4, Dtype::F32, op, "advantages");
  const Buffer mask = bufferArg(info, 5, Dtype::U8, op, "mask", true);
  PolicyLossArgs a;
  a.o = policyOptions(env, objectArg(info, 6, op, "options"), op);
  const Buffer grad = bufferArg(info, 7, Dtype::F32, op, "grad");
  const Buffer stats = statsArg(info, 8, op, 6);
  const bool async = boolArg(info, 9, op, "async");
  requireLength(env, logprobs, op, "logprobs", B, T);
  requireLength(env, old, op, "oldLogprobs", B, T);
  if (adv.length != B * T && adv.length != B) requireLength(env, adv, op, "advantages", B, T);
  if (mask.present()) requireLength(env, mask, op, "mask", B, T);
  requireLength(env, grad, op, "grad", B, T);
  const int device = commonDevice(env, op, {{"logprobs", &logprobs}, {"oldLogprobs", &old}, {"advantages", &adv},
                                           {"mask", &mask}, {"grad", &grad}});
  a.B = B;
  a.T = T;
  a.logprobs = logprobs.as<float>();
  a.oldLogprobs = old.as<float>();
  a.advantages = adv.as<float>();
  a.advantagesPerRow = adv.length != B * T;
  a.mask = mask.as<uint8_t>();
  a.grad = grad.as<float>();
  return runKernel(info, async, {logprobs, old, adv, mask, grad, stats}, [a, device, stats]() -> ToJs {
    PolicyLossStats s;
    if (a.B > 0 && a.T > 0) s = device == kCpu ? policyLossCpu(a) : cuda::policyLoss(a, device);
    // In the order policyStatsOf reads them.
    writeStats(stats, {s.loss, s.clipfrac, s.clipfracLower, s.approxKl, s.approxKlK3, s.ppoKl});
    return undefinedResult;
  });
}

// valueLoss(B, T, values, oldValues?, returns, mask?, clip, { aggregation, normalizer }, grad, stats, async)
Napi::Value valueLoss(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "valueLoss";
  const int64_t B = intArg(info, 0, op, "B"), T = intArg(info, 1, op, "T");
  const Buffer values = bufferArg(info, 2, Dtype::F32, op, "values");
  const Buffer oldValues = bufferArg(info, 3, Dtype::F32, op, "oldValues", true);
  const Buffer returns = bufferArg(info, 4, Dtype::F32, op, "returns");
  const Buffer mask = bufferArg(info, 5, Dtype::U8, op, "mask", true);
  ValueLossArgs a;
  a.clip = static_cast<float>(numberIn(env, numberArg(info, 6, op, "clip"), op, "clip", 0, INFINITY, false));
  readAggregation(env, objectArg(info, 7, op, "options"), op, a.aggregation, a.normalizer);
  const Buffer grad = bufferArg(info, 8, Dtype::F32, op, "grad");
  const Buffer stats = statsArg(info, 9, op, 3);
  const bool async = boolArg(info, 10, op, "async");
  requireLength(env, values, op, "values", B, T);
  requireLength(env, returns, op, "returns", B, T);
  if (oldValues.present()) requireLength(env, oldValues, op, "oldValues", B, T);
  else if (a.clip != kNoClamp) throwRangeError(env, op, "oldValues", "is required when `clip` is set");
  if (mask.present()) requireLength(env, mask, op, "mask", B, T);
  requireLength(env, grad, op, "grad", B, T);
  const int device = commonDevice(env, op, {{"values", &values}, {"oldValues", &oldValues}, {"returns", &returns},
                                           {"mask", &mask}, {"grad", &grad}});
  a.B = B;
  a.T = T;
  a.values = values.as<float>();
  a.oldValues = oldValues.as<float>();
  a.returns = returns.as<float>();
  a.mask = mask.as<uint8_t>();
  a.grad = grad.as<float>();
  return runKernel(info, async, {values, oldValues, returns, mask, grad, stats}, [a, device, stats]() -> ToJs {
    ValueLossStats s;
    s.explainedVariance = NAN;
    if (a.B > 0 && a.T > 0) s = device == kCpu ? valueLossCpu(a) : cuda::valueLoss(a, device);
    writeStats(stats, {s.loss, s.vfClipfrac, s.explainedVariance});  // in the order valueStatsOf reads them
    return undefinedResult;
  });
}

// actorLossFromLogits(B, T, V, logitsDtype, logits, labels, oldLogprobs, advantages, refLogprobs?, mask?,
//   { temperature, ignoreIndex, entropyCoef, klCoef, ...policy options }, { ...kl options },
//   gradLogits, logprobs?, entropy?, stats, async)
Napi::Value actorLossFromLogits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "actorLossFromLogits";
  const int64_t B = intArg(info, 0, op, "B"), T = intArg(info, 1, op, "T"), V = intArg(info, 2, op, "V");
  requireVocabulary(env, op, V);
  ActorLossArgs a;
  const Buffer logits = logitsArg(info, 3, op, a.dtype);
  const Buffer labels = bufferArg(info, 5, Dtype::I32, op, "labels");
  const Buffer old = bufferArg(info, 6, Dtype::F32, op, "oldLogprobs");
  const Buffer adv = bufferArg(info, 7, Dtype::F32, op, "advantages");
  const Buffer ref = bufferArg(info, 8, Dtype::F32, op, "refLogprobs", true);
  const Buffer mask = bufferArg(info, 9, Dtype::U8, op, "mask", true);
  const Napi::Object o = objectArg(info, 10, op, "options");
  a.o = policyOptions(env, o, op);
  a.temperature = static_cast<float>(objectNumber(env, o, op, "temperature"));
  if (!(a.temperature > 0 && std::isfinite(a.temperature)))
    throwRangeError(env, op, "temperature", "must be a finite number > 0 but is " + str(a.temperature));
  const double ignore = objectNumber(env, o, op, "ignoreIndex");
  if (!(ignore >= -2147483648.0 && ignore <= 2147483647.0) || ignore != std::floor(ignore))
    throwRangeError(env, op, "ignoreIndex", "must be a 32-bit integer but is " + str(ignore));
  a.ignoreIndex = static_cast<int32_t>(ignore);
  a.entropyCoef = static_cast<float>(objectNumber(env, o, op, "entropyCoef"));
  a.klCoef = static_cast<float>(objectNumber(env, o, op, "klCoef"));
  if (!std::isfinite(a.entropyCoef)) throwRangeError(env, op, "entropyCoef", "must be finite");
  if (!(a.klCoef >= 0 && std::isfinite(a.klCoef))) throwRangeError(env, op, "klCoef", "must be a finite number >= 0");
  a.klOptions = klOptions(env, objectArg(info, 11, op, "kl"), op);
  const Buffer gradLogits =
      bufferArg(info, 12, a.dtype == LogitsDtype::F32 ? Dtype::F32 : Dtype::F16, op, "gradLogits");
  const Buffer logprobs = bufferArg(info, 13, Dtype::F32, op, "logprobs", true);
  const Buffer entropy = bufferArg(info, 14, Dtype::F32, op, "entropy", true);
  const Buffer stats = statsArg(info, 15, op, 9);
  const bool async = boolArg(info, 16, op, "async");
  const int64_t n = B * T;
  requireLength(env, logits, op, "logits", n, V);
  requireLength(env, labels, op, "labels", n);
  requireLength(env, old, op, "oldLogprobs", n);
  if (adv.length != n && adv.length != B) requireLength(env, adv, op, "advantages", B, T);
  if (ref.present()) requireLength(env, ref, op, "refLogprobs", n);
  if (mask.present()) requireLength(env, mask, op, "mask", n);
  requireLength(env, gradLogits, op, "gradLogits", n, V);
  if (logprobs.present()) requireLength(env, logprobs, op, "logprobs", n);
  if (entropy.present()) requireLength(env, entropy, op, "entropy", n);
  const int device = commonDevice(env, op, {{"logits", &logits}, {"labels", &labels}, {"oldLogprobs", &old},
                                           {"advantages", &adv}, {"refLogprobs", &ref}, {"mask", &mask},
                                           {"gradLogits", &gradLogits}, {"logprobs", &logprobs},
                                           {"entropy", &entropy}});
  a.B = B;
  a.T = T;
  a.V = V;
  a.logits = logits.data;
  a.labels = labels.as<int32_t>();
  a.oldLogprobs = old.as<float>();
  a.advantages = adv.as<float>();
  a.advantagesPerRow = adv.length != n;
  a.refLogprobs = ref.as<float>();
  a.mask = mask.as<uint8_t>();
  a.gradLogits = gradLogits.data;
  a.logprobs = logprobs.as<float>();
  a.entropy = entropy.as<float>();
  return runKernel(info, async, {logits, labels, old, adv, ref, mask, gradLogits, logprobs, entropy, stats},
                   [a, device, op, stats]() -> ToJs {
                     ActorLossStats s;
                     if (a.B > 0 && a.T > 0) {
                       checkLabels(op, a.labels, a.B * a.T, a.V, a.ignoreIndex, device);
                       s = device == kCpu ? actorLossCpu(a) : cuda::actorLoss(a, device);
                     }
                     // As ppoPolicyLoss's six, then the total loss, the entropy and the KL (actorStatsOf).
                     const PolicyLossStats& p = s.policy;
                     writeStats(stats, {p.loss, p.clipfrac, p.clipfracLower, p.approxKl, p.approxKlK3, p.ppoKl, s.loss,
                                        s.entropy, s.kl});
                     return undefinedResult;
                   });
}

}  // namespace addon
}  // namespace rlhf
