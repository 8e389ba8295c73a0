// Node-API entry points of the neural-network family (nn.h). As in ops.cpp, each re-checks its
// arguments; the positional order is declared in lib/native.ts. Each runs on the device of its
// buffers: the CPU kernels for host memory, the CUDA kernels (native/cuda/nn.cu) otherwise. The
// optimizer ops take lists of buffers (every parameter of a model) and run synchronously: they
// are the last step of a training step, which waits for them anyway.
#include <cmath>
#include <string>
#include <vector>

#include "glue.h"
#include "ops.h"
#include "rlhf/cuda.h"
#include "rlhf/nn.h"
#include "rlhf/policy.h"

namespace rlhf {
namespace addon {

namespace {

// RangeError unless a stored [rows, cols] matrix with row pitch `ld` fits in `b`.
void requireMatrix(Napi::Env env, const Buffer& b, const char* op, const char* name, const char* ldName, int64_t rows,
                   int64_t cols, int64_t ld) {
  if (ld < cols) throwRangeError(env, op, ldName, "must be >= " + std::to_string(cols) + " but is " + std::to_string(ld));
  if (rows > 0 && ld > (int64_t{1} << 53) / rows) throwRangeError(env, op, name, "is too large");
  const int64_t needed = rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols;
  if (b.length < needed)
    throwRangeError(env, op, name, "must hold at least " + std::to_string(needed) + " elements (" + std::to_string(rows) +
                                       " rows of " + std::to_string(cols) + " with pitch " + std::to_string(ld) +
                                       ") but holds " + std::to_string(b.length));
}

Activation activationArg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  const int64_t act = intArg(info, i, op, "activation");
  if (act > static_cast<int64_t>(Activation::GeluTanh)) throwRangeError(info.Env(), op, "activation", "is not a known activation");
  return static_cast<Activation>(act);
}

// The backward of an activation reads its output (tanh, relu) or its input (the gelus).
void requireActivationInput(Napi::Env env, const char* op, Activation act, const Buffer& y, const Buffer& z) {
  const bool needsY = act == Activation::Tanh || act == Activation::Relu;
  const bool needsZ = act == Activation::Gelu || act == Activation::GeluTanh;
  if (needsY && !y.present()) throwRangeError(env, op, "y", "(the activation's output) is required by tanh and relu");
  if (needsZ && !z.present()) throwRangeError(env, op, "z", "(the pre-activation) is required by the gelus");
}

// Throws a Range KernelError naming the first id outside [0, vocab). (0 is passed as the label
// checker's ignore index: it is a valid id anyway, so nothing is exempt.)
void checkIds(const char* op, const int32_t* ids, int64_t n, int64_t vocab, int device) {
  const int64_t i = device == kCpu ? firstInvalidLabelCpu(ids, n, vocab, 0) : cuda::firstInvalidLabel(ids, n, vocab, 0, device);
  if (i < 0) return;
  int32_t value = 0;
  if (device == kCpu) value = ids[i];
  else cuda::copyToHost(&value, ids + i, sizeof value, device);
  throw KernelError(ErrorKind::Range, std::string(op) + ": `ids` holds " + std::to_string(value) + " at index " +
                                          std::to_string(i) + ", outside [0, " + std::to_string(vocab) + ")");
}

// A list argument: a JS array of float32 buffers on one device.
struct BufferList {
  std::vector<Buffer> buffers;
  std::vector<float*> data;
  std::vector<int64_t> sizes;
  int device = kCpu;
};

BufferList listArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  Napi::Env env = info.Env();
  if (!info[i].IsArray())
    throwTypeError(env, std::string(op) + ": expected an array of float32 buffers for `" + name + "`");
  Napi::Array array = info[i].As<Napi::Array>();
  BufferList l;
  const uint32_t n = array.Length();
  l.buffers.reserve(n);
  // The element's name is built only for an error: a model's step passes dozens of these lists.
  auto element = [&](uint32_t k) { return std::string(name) + "[" + std::to_string(k) + "]"; };
  for (uint32_t k = 0; k < n; ++k) {
    const Napi::Value v = array.Get(k);
    const Buffer host = hostBufferOf(env, v, Dtype::F32);
    l.buffers.push_back(host.present() ? host : bufferValue(env, v, Dtype::F32, op, element(k).c_str()));
    const Buffer& b = l.buffers.back();
    if (k == 0) l.device = b.device;
    else if (b.device != l.device) throwRangeError(env, op, element(k).c_str(), "is on another device than `" + std::string(name) + "[0]`");
    l.data.push_back(b.as<float>());
    l.sizes.push_back(b.length);
  }
  return l;
}

void requireSameSizes(Napi::Env env, const char* op, const BufferList& l, const BufferList& like, const char* name) {
  if (l.buffers.size() != like.buffers.size())
    throwRangeError(env, op, name, "must list " + std::to_string(like.buffers.size()) + " tensors (one per parameter) but lists " +
                                       std::to_string(l.buffers.size()));
  for (size_t k = 0; k < l.sizes.size(); ++k)
    if (l.sizes[k] != like.sizes[k])
      throwRangeError(env, op, (std::string(name) + "[" + std::to_string(k) + "]").c_str(),
                      "must hold " + std::to_string(like.sizes[k]) + " elements (as its parameter) but holds " + std::to_string(l.sizes[k]));
  if (!l.buffers.empty() && l.device != like.device) throwRangeError(env, op, name, "must be on the parameters' device");
}

double positiveFinite(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, bool allowZero) {
  const double v = numberArg(info, i, op, name);
  if (!std::isfinite(v) || v < 0 || (!allowZero && v == 0))
    throwRangeError(info.Env(), op, name, std::string("must be a finite number ") + (allowZero ? ">= 0" : "> 0") + " but is " + std::to_string(v));
  return v;
}

}  // namespace

// matmul(M, N, K, a, lda, transA, b, ldb, transB, c, ldc, accumulate, bias?, activation, z?, async);
// with a bias, an activation or z it is a dense layer's forward (MatmulArgs' epilogue).
Napi::Value matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "matmul";
  MatmulArgs a;
  a.M = intArg(info, 0, op, "M");
  a.N = intArg(info, 1, op, "N");
  a.K = intArg(info, 2, op, "K");
  const Buffer A = bufferArg(info, 3, Dtype::F32, op, "a");
  a.lda = intArg(info, 4, op, "lda");
  a.transA = boolArg(info, 5, op, "transA");
  const Buffer B = bufferArg(info, 6, Dtype::F32, op, "b");
  a.ldb = intArg(info, 7, op, "ldb");
  a.transB = boolArg(info, 8, op, "transB");
  const Buffer C = bufferArg(info, 9, Dtype::F32, op, "c");
  a.ldc = intArg(info, 10, op, "ldc");
  a.accumulate = boolArg(info, 11, op, "accumulate");
  const Buffer bias = bufferArg(info, 12, Dtype::F32, op, "bias", true);
  a.act = activationArg(info, 13, op);
  const Buffer z = bufferArg(info, 14, Dtype::F32, op, "z", true);
  const bool async = boolArg(info, 15, op, "async");
  if (a.transA) requireMatrix(env, A, op, "a", "lda", a.K, a.M, a.lda);
  else requireMatrix(env, A, op, "a", "lda", a.M, a.K, a.lda);
  if (a.transB) requireMatrix(env, B, op, "b", "ldb", a.N, a.K, a.ldb);
  else requireMatrix(env, B, op, "b", "ldb", a.K, a.N, a.ldb);
  requireMatrix(env, C, op, "c", "ldc", a.M, a.N, a.ldc);
  if (bias.present()) requireLength(env, bias, op, "bias", a.N);
  if (z.present()) requireMatrix(env, z, op, "z", "ldc", a.M, a.N, a.ldc);
  const int device = commonDevice(env, op, {{"a", &A}, {"b", &B}, {"c", &C}, {"bias", &bias}, {"z", &z}});
  a.a = A.as<float>();
  a.b = B.as<float>();
  a.c = C.as<float>();
  a.bias = bias.as<float>();
  a.z = z.as<float>();
  return runKernel(info, async, {A, B, C, bias, z}, [a, device]() -> ToJs {
    if (device == kCpu) matmulCpu(a);
    else cuda::matmul(a, device);
    return undefinedResult;
  });
}

// biasAct(rows, cols, x, bias?, activation, y, z?, async)
Napi::Value biasAct(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "biasAct";
  BiasActArgs a;
  a.rows = intArg(info, 0, op, "rows");
  a.cols = intArg(info, 1, op, "cols");
  const Buffer x = bufferArg(info, 2, Dtype::F32, op, "x");
  const Buffer bias = bufferArg(info, 3, Dtype::F32, op, "bias", true);
  a.act = activationArg(info, 4, op);
  const Buffer y = bufferArg(info, 5, Dtype::F32, op, "y");
  const Buffer z = bufferArg(info, 6, Dtype::F32, op, "z", true);
  const bool async = boolArg(info, 7, op, "async");
  requireLength(env, x, op, "x", a.rows, a.cols);
  if (bias.present()) requireLength(env, bias, op, "bias", a.cols);
  requireLength(env, y, op, "y", a.rows, a.cols);
  if (z.present()) requireLength(env, z, op, "z", a.rows, a.cols);
  const int device = commonDevice(env, op, {{"x", &x}, {"bias", &bias}, {"y", &y}, {"z", &z}});
  a.x = x.as<float>();
  a.bias = bias.as<float>();
  a.y = y.as<float>();
  a.z = z.as<float>();
  return runKernel(info, async, {x, bias, y, z}, [a, device]() -> ToJs {
    if (device == kCpu) biasActCpu(a);
    else cuda::biasAct(a, device);
    return undefinedResult;
  });
}

// biasActBackward(rows, cols, gradY, y?, z?, activation, gradX, gradBias?, async)
Napi::Value biasActBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "biasActBackward";
  BiasActBackwardArgs a;
  a.rows = intArg(info, 0, op, "rows");
  a.cols = intArg(info, 1, op, "cols");
  const Buffer gy = bufferArg(info, 2, Dtype::F32, op, "gradY");
  const Buffer y = bufferArg(info, 3, Dtype::F32, op, "y", true);
  const Buffer z = bufferArg(info, 4, Dtype::F32, op, "z", true);
  a.act = activationArg(info, 5, op);
  const Buffer gx = bufferArg(info, 6, Dtype::F32, op, "gradX");
  const Buffer gb = bufferArg(info, 7, Dtype::F32, op, "gradBias", true);
  const bool async = boolArg(info, 8, op, "async");
  requireLength(env, gy, op, "gradY", a.rows, a.cols);
  if (y.present()) requireLength(env, y, op, "y", a.rows, a.cols);
  if (z.present()) requireLength(env, z, op, "z", a.rows, a.cols);
  requireLength(env, gx, op, "gradX", a.rows, a.cols);
  if (gb.present()) requireLength(env, gb, op, "gradBias", a.cols);
  requireActivationInput(env, op, a.act, y, z);
  const int device = commonDevice(env, op, {{"gradY", &gy}, {"y", &y}, {"z", &z}, {"gradX", &gx}, {"gradBias", &gb}});
  a.gradY = gy.as<float>();
  a.y = y.as<float>();
  a.z = z.as<float>();
  a.gradX = gx.as<float>();
  a.gradBias = gb.as<float>();
  return runKernel(info, async, {gy, y, z, gx, gb}, [a, device]() -> ToJs {
    if (device == kCpu) biasActBackwardCpu(a);
    else cuda::biasActBackward(a, device);
    return undefinedResult;
  });
}

// denseBackward(rows, in, out, x, w, y?, z?, activation, gradY, gradZ, gradW, gradBias?, gradX?, accumulateGradX,
// async): biasActBackward and the two products of a dense layer's backward in one call. The
// operands are checked as those ops check them.
Napi::Value denseBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "denseBackward";
  DenseBackwardArgs a;
  a.rows = intArg(info, 0, op, "rows");
  a.in = intArg(info, 1, op, "in");
  a.out = intArg(info, 2, op, "out");
  const Buffer x = bufferArg(info, 3, Dtype::F32, op, "x");
  const Buffer w = bufferArg(info, 4, Dtype::F32, op, "w");
  const Buffer y = bufferArg(info, 5, Dtype::F32, op, "y", true);
  const Buffer z = bufferArg(info, 6, Dtype::F32, op, "z", true);
  a.act = activationArg(info, 7, op);
  const Buffer gy = bufferArg(info, 8, Dtype::F32, op, "gradY");
  const Buffer gz = bufferArg(info, 9, Dtype::F32, op, "gradZ");
  const Buffer gw = bufferArg(info, 10, Dtype::F32, op, "gradW");
  const Buffer gb = bufferArg(info, 11, Dtype::F32, op, "gradBias", true);
  const Buffer gx = bufferArg(info, 12, Dtype::F32, op, "gradX", true);
  a.accumulateGradX = boolArg(info, 13, op, "accumulateGradX");
  const bool async = boolArg(info, 14, op, "async");
  requireMatrix(env, x, op, "x", "in", a.rows, a.in, a.in);
  requireMatrix(env, w, op, "w", "in", a.out, a.in, a.in);
  if (y.present()) requireLength(env, y, op, "y", a.rows, a.out);
  if (z.present()) requireLength(env, z, op, "z", a.rows, a.out);
  requireLength(env, gy, op, "gradY", a.rows, a.out);
  requireLength(env, gz, op, "gradZ", a.rows, a.out);
  requireMatrix(env, gw, op, "gradW", "in", a.out, a.in, a.in);
  if (gb.present()) requireLength(env, gb, op, "gradBias", a.out);
  if (gx.present()) requireMatrix(env, gx, op, "gradX", "in", a.rows, a.in, a.in);
  requireActivationInput(env, op, a.act, y, z);
  const int device = commonDevice(env, op, {{"x", &x}, {"w", &w}, {"y", &y}, {"z", &z}, {"gradY", &gy}, {"gradZ", &gz},
                                            {"gradW", &gw}, {"gradBias", &gb}, {"gradX", &gx}});
  a.x = x.as<float>();
  a.w = w.as<float>();
  a.y = y.as<float>();
  a.z = z.as<float>();
  a.gradY = gy.as<float>();
  a.gradZ = gz.as<float>();
  a.gradW = gw.as<float>();
  a.gradBias = gb.as<float>();
  a.gradX = gx.as<float>();
  return runKernel(info, async, {x, w, y, z, gy, gz, gw, gb, gx}, [a, device]() -> ToJs {
    if (device == kCpu) denseBackwardCpu(a);
    else cuda::denseBackward(a, device);
    return undefinedResult;
  });
}

// embedding(n, dim, vocab, ids, table, out, async)
Napi::Value embedding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "embedding";
  EmbeddingArgs a;
  a.n = intArg(info, 0, op, "n");
  a.dim = intArg(info, 1, op, "dim");
  a.vocab = intArg(info, 2, op, "vocab");
  const Buffer ids = bufferArg(info, 3, Dtype::I32, op, "ids");
  const Buffer table = bufferArg(info, 4, Dtype::F32, op, "table");
  const Buffer out = bufferArg(info, 5, Dtype::F32, op, "out");
  const bool async = boolArg(info, 6, op, "async");
  requireLength(env, ids, op, "ids", a.n);
  requireLength(env, table, op, "table", a.vocab, a.dim);
  requireLength(env, out, op, "out", a.n, a.dim);
  const int device = commonDevice(env, op, {{"ids", &ids}, {"table", &table}, {"out", &out}});
  a.ids = ids.as<int32_t>();
  a.table = table.as<float>();
  a.out = out.as<float>();
  return runKernel(info, async, {ids, table, out}, [a, device]() -> ToJs {
    checkIds("embedding", a.ids, a.n, a.vocab, device);
    if (device == kCpu) embeddingCpu(a);
    else cuda::embedding(a, device);
    return undefinedResult;
  });
}

// embeddingBackward(n, dim, vocab, ids, gradOut, gradTable, async)
Napi::Value embeddingBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "embeddingBackward";
  EmbeddingBackwardArgs a;
  a.n = intArg(info, 0, op, "n");
  a.dim = intArg(info, 1, op, "dim");
  a.vocab = intArg(info, 2, op, "vocab");
  const Buffer ids = bufferArg(info, 3, Dtype::I32, op, "ids");
  const Buffer g = bufferArg(info, 4, Dtype::F32, op, "gradOut");
  const Buffer gt = bufferArg(info, 5, Dtype::F32, op, "gradTable");
  const bool async = boolArg(info, 6, op, "async");
  requireLength(env, ids, op, "ids", a.n);
  requireLength(env, g, op, "gradOut", a.n, a.dim);
  requireLength(env, gt, op, "gradTable", a.vocab, a.dim);
  const int device = commonDevice(env, op, {{"ids", &ids}, {"gradOut", &g}, {"gradTable", &gt}});
  a.ids = ids.as<int32_t>();
  a.gradOut = g.as<float>();
  a.gradTable = gt.as<float>();
  return runKernel(info, async, {ids, g, gt}, [a, device]() -> ToJs {
    checkIds("embeddingBackward", a.ids, a.n, a.vocab, device);
    if (device == kCpu) embeddingBackwardCpu(a);
    else cuda::embeddingBackward(a, device);
    return undefinedResult;
  });
}

// layerNorm(rows, cols, x, gamma?, beta?, eps, y, mean, rstd, async)
Napi::Value layerNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "layerNorm";
  LayerNormArgs a;
  a.rows = intArg(info, 0, op, "rows");
  a.cols = intArg(info, 1, op, "cols");
  const Buffer x = bufferArg(info, 2, Dtype::F32, op, "x");
  const Buffer gamma = bufferArg(info, 3, Dtype::F32, op, "gamma", true);
  const Buffer beta = bufferArg(info, 4, Dtype::F32, op, "beta", true);
  a.eps = static_cast<float>(positiveFinite(info, 5, op, "eps", false));
  const Buffer y = bufferArg(info, 6, Dtype::F32, op, "y");
  const Buffer mean = bufferArg(info, 7, Dtype::F32, op, "mean");
  const Buffer rstd = bufferArg(info, 8, Dtype::F32, op, "rstd");
  const bool async = boolArg(info, 9, op, "async");
  if (a.cols == 0 && a.rows > 0) throwRangeError(env, op, "cols", "must be >= 1");
  requireLength(env, x, op, "x", a.rows, a.cols);
  if (gamma.present()) requireLength(env, gamma, op, "gamma", a.cols);
  if (beta.present()) requireLength(env, beta, op, "beta", a.cols);
  requireLength(env, y, op, "y", a.rows, a.cols);
  requireLength(env, mean, op, "mean", a.rows);
  requireLength(env, rstd, op, "rstd", a.rows);
  const int device = commonDevice(env, op, {{"x", &x}, {"gamma", &gamma}, {"beta", &beta}, {"y", &y}, {"mean", &mean}, {"rstd", &rstd}});
  a.x = x.as<float>();
  a.gamma = gamma.as<float>();
  a.beta = beta.as<float>();
  a.y = y.as<float>();
  a.mean = mean.as<float>();
  a.rstd = rstd.as<float>();
  return runKernel(info, async, {x, gamma, beta, y, mean, rstd}, [a, device]() -> ToJs {
    if (device == kCpu) layerNormCpu(a);
    else cuda::layerNorm(a, device);
    return undefinedResult;
  });
}

// layerNormBackward(rows, cols, x, gamma?, mean, rstd, gradY, gradX, gradGamma?, gradBeta?, async)
Napi::Value layerNormBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "layerNormBackward";
  LayerNormBackwardArgs a;
  a.rows = intArg(info, 0, op, "rows");
  a.cols = intArg(info, 1, op, "cols");
  const Buffer x = bufferArg(info, 2, Dtype::F32, op, "x");
  const Buffer gamma = bufferArg(info, 3, Dtype::F32, op, "gamma", true);
  const Buffer mean = bufferArg(info, 4, Dtype::F32, op, "mean");
  const Buffer rstd = bufferArg(info, 5, Dtype::F32, op, "rstd");
  const Buffer gy = bufferArg(info, 6, Dtype::F32, op, "gradY");
  const Buffer gx = bufferArg(info, 7, Dtype::F32, op, "gradX");
  const Buffer gg = bufferArg(info, 8, Dtype::F32, op, "gradGamma", true);
  const Buffer gb = bufferArg(info, 9, Dtype::F32, op, "gradBeta", true);
  const bool async = boolArg(info, 10, op, "async");
  if (a.cols == 0 && a.rows > 0) throwRangeError(env, op, "cols", "must be >= 1");
  requireLength(env, x, op, "x", a.rows, a.cols);
  if (gamma.present()) requireLength(env, gamma, op, "gamma", a.cols);
  requireLength(env, mean, op, "mean", a.rows);
  requireLength(env, rstd, op, "rstd", a.rows);
  requireLength(env, gy, op, "gradY", a.rows, a.cols);
  requireLength(env, gx, op, "gradX", a.rows, a.cols);
  if (gg.present()) requireLength(env, gg, op, "gradGamma", a.cols);
  if (gb.present()) requireLength(env, gb, op, "gradBeta", a.cols);
  const int device = commonDevice(env, op, {{"x", &x}, {"gamma", &gamma}, {"mean", &mean}, {"rstd", &rstd}, {"gradY", &gy},
                                            {"gradX", &gx}, {"gradGamma", &gg}, {"gradBeta", &gb}});
  a.x = x.as<float>();
  a.gamma = gamma.as<float>();
  a.mean = mean.as<float>();
  a.rstd = rstd.as<float>();
  a.gradY = gy.as<float>();
  a.gradX = gx.as<float>();
  a.gradGamma = gg.as<float>();
  a.gradBeta = gb.as<float>();
  return runKernel(info, async, {x, gamma, mean, rstd, gy, gx, gg, gb}, [a, device]() -> ToJs {
    if (device == kCpu) layerNormBackwardCpu(a);
    else cuda::layerNormBackward(a, device);
    return undefinedResult;
  });
}

// meanPool(B, T, D, x, mask?, out, async)
Napi::Value meanPool(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "meanPool";
  MeanPoolArgs a;
  a.B = intArg(info, 0, op, "B");
  a.T = intArg(info, 1, op, "T");
  a.D = intArg(info, 2, op, "D");
  const Buffer x = bufferArg(info, 3, Dtype::F32, op, "x");
  const Buffer mask = bufferArg(info, 4, Dtype::U8, op, "mask", true);
  const Buffer out = bufferArg(info, 5, Dtype::F32, op, "out");
  const bool async = boolArg(info, 6, op, "async");
  requireLength(env, x, op, "x", a.B * a.T, a.D);
  if (mask.present()) requireLength(env, mask, op, "mask", a.B, a.T);
  requireLength(env, out, op, "out", a.B, a.D);
  const int device = commonDevice(env, op, {{"x", &x}, {"mask", &mask}, {"out", &out}});
  a.x = x.as<float>();
  a.mask = mask.as<uint8_t>();
  a.out = out.as<float>();
  return runKernel(info, async, {x, mask, out}, [a, device]() -> ToJs {
    if (device == kCpu) meanPoolCpu(a);
    else cuda::meanPool(a, device);
    return undefinedResult;
  });
}

// meanPoolBackward(B, T, D, gradOut, mask?, gradX, async)
Napi::Value meanPoolBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "meanPoolBackward";
  MeanPoolBackwardArgs a;
  a.B = intArg(info, 0, op, "B");
  a.T = intArg(info, 1, op, "T");
  a.D = intArg(info, 2, op, "D");
  const Buffer g = bufferArg(info, 3, Dtype::F32, op, "gradOut");
  const Buffer mask = bufferArg(info, 4, Dtype::U8, op, "mask", true);
  const Buffer gx = bufferArg(info, 5, Dtype::F32, op, "gradX");
  const bool async = boolArg(info, 6, op, "async");
  requireLength(env, g, op, "gradOut", a.B, a.D);
  if (mask.present()) requireLength(env, mask, op, "mask", a.B, a.T);
  requireLength(env, gx, op, "gradX", a.B * a.T, a.D);
  const int device = commonDevice(env, op, {{"gradOut", &g}, {"mask", &mask}, {"gradX", &gx}});
  a.gradOut = g.as<float>();
  a.mask = mask.as<uint8_t>();
  a.gradX = gx.as<float>();
  return runKernel(info, async, {g, mask, gx}, [a, device]() -> ToJs {
    if (device == kCpu) meanPoolBackwardCpu(a);
    else cuda::meanPoolBackward(a, device);
    return undefinedResult;
  });
}

// adamw(params[], grads[], m[], v[], step, lr, beta1, beta2, eps, weightDecay)
Napi::Value adamw(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "adamw";
  const BufferList p = listArg(info, 0, op, "params");
  const BufferList g = listArg(info, 1, op, "grads");
  const BufferList m = listArg(info, 2, op, "m");
  const BufferList v = listArg(info, 3, op, "v");
  requireSameSizes(env, op, g, p, "grads");
  requireSameSizes(env, op, m, p, "m");
  requireSameSizes(env, op, v, p, "v");
  AdamwArgs a;
  a.step = intArg(info, 4, op, "step");
  if (a.step < 1) throwRangeError(env, op, "step", "must be >= 1");
  a.lr = positiveFinite(info, 5, op, "lr", true);
  a.beta1 = numberArg(info, 6, op, "beta1");
  a.beta2 = numberArg(info, 7, op, "beta2");
  if (!(a.beta1 >= 0 && a.beta1 < 1)) throwRangeError(env, op, "beta1", "must be in [0, 1) but is " + std::to_string(a.beta1));
  if (!(a.beta2 >= 0 && a.beta2 < 1)) throwRangeError(env, op, "beta2", "must be in [0, 1) but is " + std::to_string(a.beta2));
  a.eps = positiveFinite(info, 8, op, "eps", false);
  a.weightDecay = positiveFinite(info, 9, op, "weightDecay", true);
  a.tensors.count = static_cast<int64_t>(p.sizes.size());
  a.tensors.sizes = p.sizes.data();
  a.tensors.params = p.data.data();
  a.tensors.grads = g.data.data();
  a.tensors.m = m.data.data();
  a.tensors.v = v.data.data();
  try {
    if (p.device == kCpu) adamwCpu(a);
    else cuda::adamw(a, p.device);
  } catch (const KernelError& e) {
    throwKernelError(env, e);
  }
  return env.Undefined();
}

// sumSquares(grads[]) -> the sum of squares of every element, in float64
Napi::Value sumSquares(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const BufferList g = listArg(info, 0, "sumSquares", "grads");
  SumSquaresArgs a;
  a.tensors.count = static_cast<int64_t>(g.sizes.size());
  a.tensors.sizes = g.sizes.data();
  a.tensors.grads = g.data.data();
  try {
    return Napi::Number::New(env, g.device == kCpu ? sumSquaresCpu(a) : cuda::sumSquares(a, g.device));
  } catch (const KernelError& e) {
    throwKernelError(env, e);
  }
}

// scaleGrads(grads[], factor)
Napi::Value scaleGrads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "scaleGrads";
  const BufferList g = listArg(info, 0, op, "grads");
  ScaleArgs a;
  a.factor = static_cast<float>(numberArg(info, 1, op, "factor"));
  if (!std::isfinite(a.factor)) throwRangeError(env, op, "factor", "must be finite");
  a.tensors.count = static_cast<int64_t>(g.sizes.size());
  a.tensors.sizes = g.sizes.data();
  a.tensors.grads = g.data.data();
  try {
    if (g.device == kCpu) scaleCpu(a);
    else cuda::scale(a, g.device);
  } catch (const KernelError& e) {
    throwKernelError(env, e);
  }
  return env.Undefined();
}

}  // namespace addon
}  // namespace rlhf
