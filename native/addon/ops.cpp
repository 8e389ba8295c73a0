// Node-API entry points of the ops. Each one re-checks its arguments (the TypeScript layer has
// already validated them, but the addon never trusts its caller), builds the kernel's argument
// struct and dispatches on the device of its buffers. Arguments are positional; their order is
// declared once, in lib/native.ts.
#include <string>

#include "glue.h"
#include "ops.h"
#include "rlhf/cuda.h"
#include "rlhf/kernels.h"
#include "rlhf/whiten.h"

namespace rlhf {
namespace addon {

// A discount or lambda: a number, or a Float32Array of T (per step) or T*N (per element).
struct Rate {
  float value = 0;
  Buffer array;
  int64_t strideT = 0, strideN = 0;
};

static Rate rateArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t T, int64_t N) {
  Rate r;
  double v;
  if (napi_get_value_double(info.Env(), info[i], &v) == napi_ok) {
    if (!(v >= 0 && v <= 1))
      throwRangeError(info.Env(), std::string("gae: expected `") + name + "` in [0, 1] but received " + std::to_string(v));
    r.value = static_cast<float>(v);
    return r;
  }
  r.array = bufferArg(info, i, Dtype::F32, "gae", name);
  if (r.array.length == T) {
    r.strideT = 1;
  } else if (r.array.length == T * N) {
    r.strideT = N;
    r.strideN = 1;
  } else {
    throwRangeError(info.Env(), std::string("gae: expected `") + name + "` to be a number or to hold " +
                                    std::to_string(T) + " (per step) or " + std::to_string(T * N) +
                                    " (per element) values, but it holds " + std::to_string(r.array.length));
  }
  return r;
}

// gae(T, N, rewards, values, nextValues?, lastValues?, terminated?, truncated?, dones?, nextDone?,
//     gamma, lambda, advantages, returns, async)
Napi::Value gae(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "gae";
  const int64_t T = intArg(info, 0, op, "T"), N = intArg(info, 1, op, "N");
  const Buffer rewards = bufferArg(info, 2, Dtype::F32, op, "rewards");
  const Buffer values = bufferArg(info, 3, Dtype::F32, op, "values");
  const Buffer nextValues = bufferArg(info, 4, Dtype::F32, op, "nextValues", true);
  const Buffer lastValues = bufferArg(info, 5, Dtype::F32, op, "lastValues", true);
  const Buffer terminated = bufferArg(info, 6, Dtype::U8, op, "terminated", true);
  const Buffer truncated = bufferArg(info, 7, Dtype::U8, op, "truncated", true);
  const Buffer dones = bufferArg(info, 8, Dtype::U8, op, "dones", true);
  const Buffer nextDone = bufferArg(info, 9, Dtype::U8, op, "nextDone", true);
  const Rate gamma = rateArg(info, 10, "gamma", T, N);
  const Rate lambda = rateArg(info, 11, "lambda", T, N);
  const Buffer advantages = bufferArg(info, 12, Dtype::F32, op, "advantages");
  const Buffer returns = bufferArg(info, 13, Dtype::F32, op, "returns");
  const bool async = boolArg(info, 14, op, "async");

  requireLength(env, rewards, op, "rewards", T, N);
  requireLength(env, values, op, "values", T, N);
  requireLength(env, advantages, op, "advantages", T, N);
  requireLength(env, returns, op, "returns", T, N);
  if (nextValues.present()) requireLength(env, nextValues, op, "nextValues", T, N);
  if (lastValues.present()) requireLength(env, lastValues, op, "lastValues", N);
  if (terminated.present()) requireLength(env, terminated, op, "terminated", T, N);
  if (truncated.present()) requireLength(env, truncated, op, "truncated", T, N);
  if (dones.present()) requireLength(env, dones, op, "dones", T, N);
  if (nextDone.present()) requireLength(env, nextDone, op, "nextDone", N);
  if (!nextValues.present() && !lastValues.present() && T > 0)
    throwRangeError(env, "gae: `lastValues` is required unless `nextValues` is given");
  if (truncated.present() && !nextValues.present())
    throwRangeError(env, "gae: `nextValues` is required when `truncated` is given (with auto-reset environments values[t+1] belongs to the next episode)");
  if (dones.present() != nextDone.present())
    throwRangeError(env, "gae: `dones` and `nextDone` (the CleanRL convention) go together");
  if (dones.present() && (terminated.present() || truncated.present()))
    throwRangeError(env, "gae: give either CleanRL's `dones`/`nextDone` or `terminated`/`truncated`, not both");
  const int device = commonDevice(env, op, {{"rewards", &rewards}, {"values", &values}, {"nextValues", &nextValues},
                                           {"lastValues", &lastValues}, {"terminated", &terminated},
                                           {"truncated", &truncated}, {"dones", &dones}, {"nextDone", &nextDone},
                                           {"gamma", &gamma.array}, {"lambda", &lambda.array},
                                           {"advantages", &advantages}, {"returns", &returns}});

  GaeArgs a;
  a.T = T;
  a.N = N;
  a.rewards = rewards.as<float>();
  a.values = values.as<float>();
  const int64_t lastRow = T > 0 ? (T - 1) * N : 0;
  if (nextValues.present()) {
    a.nextValues = nextValues.as<float>();
    a.nextValuesLast = nextValues.as<float>() + lastRow;
  } else {
    a.nextValues = values.as<float>() + N;  // V'_t = values[t+1]
    a.nextValuesLast = lastValues.as<float>();
  }
  if (dones.present()) {
    // CleanRL stores done *before* step t: step t ended its episode iff dones[t+1] (nextDone at T-1).
    a.terminated = dones.as<uint8_t>() + N;
    a.terminatedLast = nextDone.as<uint8_t>();
  } else if (terminated.present()) {
    a.terminated = terminated.as<uint8_t>();
    a.terminatedLast = terminated.as<uint8_t>() + lastRow;
  }
  a.truncated = truncated.as<uint8_t>();
  a.gammaValue = gamma.value;
  a.gammaArray = gamma.array.as<float>();
  a.gammaStrideT = gamma.strideT;
  a.gammaStrideN = gamma.strideN;
  a.lambdaValue = lambda.value;
  a.lambdaArray = lambda.array.as<float>();
  a.lambdaStrideT = lambda.strideT;
  a.lambdaStrideN = lambda.strideN;
  a.advantages = advantages.as<float>();
  a.returns = returns.as<float>();
  return runKernel(info, async,
                   {rewards, values, nextValues, lastValues, terminated, truncated, dones, nextDone, gamma.array,
                    lambda.array, advantages, returns},
                   [a, device]() -> ToJs {
                     if (a.T > 0 && a.N > 0) {
                       if (device == kCpu) gaeCpu(a);
                       else cuda::gae(a, device);
                     }
                     return undefinedResult;
                   });
}

static float unitArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  const double v = numberArg(info, i, op, name);
  if (!(v >= 0 && v <= 1))
    throwRangeError(info.Env(), std::string(op) + ": expected `" + name + "` in [0, 1] but received " + std::to_string(v));
  return static_cast<float>(v);
}

// tokenGae(B, T, rewards, values, mask?, lastValues?, gamma, lambda, maskMode, advantages, returns, async)
Napi::Value tokenGae(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "tokenGae";
  const int64_t B = intArg(info, 0, op, "B"), T = intArg(info, 1, op, "T");
  const Buffer rewards = bufferArg(info, 2, Dtype::F32, op, "rewards");
  const Buffer values = bufferArg(info, 3, Dtype::F32, op, "values");
  const Buffer mask = bufferArg(info, 4, Dtype::U8, op, "mask", true);
  const Buffer lastValues = bufferArg(info, 5, Dtype::F32, op, "lastValues", true);
  const float gamma = unitArg(info, 6, op, "gamma"), lambda = unitArg(info, 7, op, "lambda");
  const int64_t mode = intArg(info, 8, op, "maskMode");
  const Buffer advantages = bufferArg(info, 9, Dtype::F32, op, "advantages");
  const Buffer returns = bufferArg(info, 10, Dtype::F32, op, "returns");
  const bool async = boolArg(info, 11, op, "async");

  requireLength(env, rewards, op, "rewards", B, T);
  requireLength(env, values, op, "values", B, T);
  requireLength(env, advantages, op, "advantages", B, T);
  requireLength(env, returns, op, "returns", B, T);
  if (mask.present()) requireLength(env, mask, op, "mask", B, T);
  if (lastValues.present()) requireLength(env, lastValues, op, "lastValues", B);
  if (mode > 2) throwRangeError(env, "tokenGae: unknown `maskMode` " + std::to_string(mode));
  const MaskMode maskMode = static_cast<MaskMode>(mode);
  if (!mask.present() && maskMode != MaskMode::None)
    throwRangeError(env, "tokenGae: `mask` is required unless maskMode is 'none'");
  const int device = commonDevice(env, op, {{"rewards", &rewards}, {"values", &values}, {"mask", &mask},
                                           {"lastValues", &lastValues}, {"advantages", &advantages},
                                           {"returns", &returns}});
  TokenGaeArgs a;
  a.B = B;
  a.T = T;
  a.rewards = rewards.as<float>();
  a.values = values.as<float>();
  a.mask = maskMode == MaskMode::None ? nullptr : mask.as<uint8_t>();
  a.lastValues = lastValues.as<float>();
  a.gamma = gamma;
  a.lambda = lambda;
  a.maskMode = maskMode;
  a.advantages = advantages.as<float>();
  a.returns = returns.as<float>();
  return runKernel(info, async, {rewards, values, mask, lastValues, advantages, returns}, [a, device]() -> ToJs {
    if (a.B > 0 && a.T > 0) {
      if (device == kCpu) tokenGaeCpu(a);
      else cuda::tokenGae(a, device);
    }
    return undefinedResult;
  });
}

// discountedReturns(B, T, rewards, mask?, gamma, returns, async)
Napi::Value discountedReturns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "discountedReturns";
  const int64_t B = intArg(info, 0, op, "B"), T = intArg(info, 1, op, "T");
  const Buffer rewards = bufferArg(info, 2, Dtype::F32, op, "rewards");
  const Buffer mask = bufferArg(info, 3, Dtype::U8, op, "mask", true);
  const float gamma = unitArg(info, 4, op, "gamma");
  const Buffer returns = bufferArg(info, 5, Dtype::F32, op, "returns");
  const bool async = boolArg(info, 6, op, "async");
  requireLength(env, rewards, op, "rewards", B, T);
  requireLength(env, returns, op, "returns", B, T);
  if (mask.present()) requireLength(env, mask, op, "mask", B, T);
  const int device = commonDevice(env, op, {{"rewards", &rewards}, {"mask", &mask}, {"returns", &returns}});
  DiscountedReturnsArgs a;
  a.B = B;
  a.T = T;
  a.rewards = rewards.as<float>();
  a.mask = mask.as<uint8_t>();
  a.gamma = gamma;
  a.returns = returns.as<float>();
  return runKernel(info, async, {rewards, mask, returns}, [a, device]() -> ToJs {
    if (a.B > 0 && a.T > 0) {
      if (device == kCpu) discountedReturnsCpu(a);
      else cuda::discountedReturns(a, device);
    }
    return undefinedResult;
  });
}

// Reads (x, mask?) for the masked statistics and returns the kernel arguments and device.
static MaskedMomentsArgs momentsArgs(const Napi::CallbackInfo& info, const char* op, Buffer& x, Buffer& mask,
                                     int& device) {
  x = bufferArg(info, 0, Dtype::F32, op, "x");
  mask = bufferArg(info, 1, Dtype::U8, op, "mask", true);
  if (mask.present()) requireSameLength(info.Env(), mask, x, op, "mask", "x");
  device = commonDevice(info.Env(), op, {{"x", &x}, {"mask", &mask}});
  MaskedMomentsArgs a;
  a.n = x.length;
  a.x = x.as<float>();
  a.mask = mask.as<uint8_t>();
  return a;
}

static MaskedMoments moments(const MaskedMomentsArgs& a, int device) {
  if (a.n == 0) return MaskedMoments{};
  return device == kCpu ? maskedMomentsCpu(a) : cuda::maskedMoments(a, device);
}

static ToJs numberResult(double v) {
  return [v](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, v); };
}

// maskedMean(x, mask?, async) -> number
Napi::Value maskedMean(const Napi::CallbackInfo& info) {
  Buffer x, mask;
  int device;
  const MaskedMomentsArgs a = momentsArgs(info, "maskedMean", x, mask, device);
  const bool async = boolArg(info, 2, "maskedMean", "async");
  return runKernel(info, async, {x, mask},
                   [a, device]() -> ToJs { return numberResult(maskedMeanFromMoments(moments(a, device))); });
}

// maskedVar(x, mask?, unbiased, async) -> number
Napi::Value maskedVar(const Napi::CallbackInfo& info) {
  Buffer x, mask;
  int device;
  const MaskedMomentsArgs a = momentsArgs(info, "maskedVar", x, mask, device);
  const bool unbiased = boolArg(info, 2, "maskedVar", "unbiased");
  const bool async = boolArg(info, 3, "maskedVar", "async");
  return runKernel(info, async, {x, mask}, [a, device, unbiased]() -> ToJs {
    return numberResult(maskedVarFromMoments(moments(a, device), unbiased, "maskedVar"));
  });
}

// maskedWhiten(x, mask?, preset, shiftMean, scaleByStd, eps, out, async)
Napi::Value maskedWhiten(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "maskedWhiten";
  Buffer x, mask;
  int device;
  const MaskedMomentsArgs m = momentsArgs(info, op, x, mask, device);
  const int64_t preset = intArg(info, 2, op, "preset");
  if (preset > 3) throwRangeError(env, "maskedWhiten: unknown `preset` " + std::to_string(preset));
  WhitenOptions o;
  o.preset = static_cast<WhitenPreset>(preset);
  o.shiftMean = boolArg(info, 3, op, "shiftMean");
  o.scaleByStd = boolArg(info, 4, op, "scaleByStd");
  o.eps = numberArg(info, 5, op, "eps");
  if (!(o.eps >= 0 && o.eps < 1e300)) throwRangeError(env, "maskedWhiten: expected a finite `eps` >= 0 but received " + std::to_string(o.eps));
  const Buffer out = bufferArg(info, 6, Dtype::F32, op, "out");
  requireSameLength(env, out, x, op, "out", "x");
  const bool async = boolArg(info, 7, op, "async");
  device = commonDevice(env, op, {{"x", &x}, {"mask", &mask}, {"out", &out}});
  float* outData = out.as<float>();
  return runKernel(info, async, {x, mask, out}, [m, o, outData, device]() -> ToJs {
    if (m.n == 0) return undefinedResult;
    AffineArgs a = planWhiten(moments(m, device), o);
    a.n = m.n;
    a.x = m.x;
    a.out = outData;
    if (device == kCpu) affineCpu(a);
    else cuda::affine(a, device);
    return undefinedResult;
  });
}

// firstNonFinite(x) -> index or -1 (synchronous; the checkFinite option)
Napi::Value firstNonFinite(const Napi::CallbackInfo& info) {
  const Buffer x = bufferArg(info, 0, Dtype::F32, "checkFinite", "x");
  return runKernel(info, false, {x}, [x]() -> ToJs {
    const int64_t i = x.device == kCpu ? firstNonFiniteCpu(x.as<float>(), x.length)
                                       : cuda::firstNonFinite(x.as<float>(), x.length, x.device);
    return numberResult(static_cast<double>(i));
  });
}

}  // namespace addon
}  // namespace rlhf
