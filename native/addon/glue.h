// Shared pieces of the Node-API glue: reading buffer arguments (a CPU TypedArray or a CUDA
// DeviceBuffer), the precondition macros that throw named JS errors, and running a kernel either
// synchronously or on a libuv worker behind a Promise.
#pragma once
#include <napi.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <new>
#include <string>
#include <vector>

#include "rlhf/error.h"

namespace rlhf {
namespace addon {

// F16: any 16-bit float (float16 or bfloat16); which one travels as a separate argument.
enum class Dtype { F32, I32, U8, F16 };
const char* dtypeName(Dtype d);

constexpr int kCpu = -1;  // device index of host memory

// A buffer argument as the kernels see it.
struct Buffer {
  void* data = nullptr;
  int64_t length = 0;  // elements
  int device = kCpu;
  napi_value js = nullptr;  // the JS object, kept alive by async calls
  bool present() const { return js != nullptr; }
  template <typename T> T* as() const { return static_cast<T*>(data); }
};

// Throws a JS error of the given class with an optional `code` property.
[[noreturn]] void throwTypeError(Napi::Env env, const std::string& message);
[[noreturn]] void throwRangeError(Napi::Env env, const std::string& message);
// "<op>: `<name>` <what>" as a RangeError.
[[noreturn]] void throwRangeError(Napi::Env env, const char* op, const char* name, const std::string& what);
[[noreturn]] void throwCodedError(Napi::Env env, const char* code, const std::string& message);
[[noreturn]] void throwKernelError(Napi::Env env, const KernelError& e);

// Reads argument i as a buffer of the given dtype: a TypedArray (host memory) or a DeviceBuffer
// (CUDA). With `optional`, null or undefined give an absent Buffer. `op` and `name` go in errors.
Buffer bufferArg(const Napi::CallbackInfo& info, size_t i, Dtype dtype, const char* op,
                 const char* name, bool optional = false);
// v as a host buffer when it is a TypedArray of `dtype`, else an absent Buffer: bufferValue's
// common case, for callers that build the argument's name only when it is needed (list elements).
Buffer hostBufferOf(Napi::Env env, Napi::Value v, Dtype dtype);
// The same for a value that is not an argument itself (an element of an array argument).
Buffer bufferValue(Napi::Env env, Napi::Value v, Dtype dtype, const char* op, const char* name, bool optional = false);
// Argument i as the Float64Array of at least n numbers that a loss op writes its stats into, in
// the order its entry point declares (lib/native.ts reads them back). Numbers in an array the
// caller keeps cost a cold call (after a large op has left the caches to other memory) about 10 us
// less than an object built here, whose property names are interned and whose shape transitions
// are looked up one by one.
Buffer statsArg(const Napi::CallbackInfo& info, size_t i, const char* op, int64_t n);
// Writes a loss op's stats into the array statsArg checked, in the order given.
inline void writeStats(const Buffer& stats, std::initializer_list<double> values) {
  double* o = stats.as<double>();
  for (const double v : values) *o++ = v;
}
int64_t intArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
double numberArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
bool boolArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);

// RangeError unless the buffer holds exactly rows*cols elements; the message shows the shape
// [rows,cols], or [rows] when cols < 0 (the string is only built on failure).
void requireLength(Napi::Env env, const Buffer& b, const char* op, const char* name, int64_t rows,
                   int64_t cols = -1);
// RangeError unless `b` holds as many elements as `like`.
void requireSameLength(Napi::Env env, const Buffer& b, const Buffer& like, const char* op, const char* name,
                       const char* likeName);
// The device shared by all present buffers; a RangeError naming the first that differs.
int commonDevice(Napi::Env env, const char* op, std::initializer_list<std::pair<const char*, const Buffer*>> buffers);

// What a kernel call hands back to JS once it has run.
using ToJs = std::function<Napi::Value(Napi::Env)>;
// The ToJs of a kernel whose results are all in its output buffers.
inline Napi::Value undefinedResult(Napi::Env env) { return env.Undefined(); }

// Queues `job` on a libuv worker and returns a Promise of its ToJs value. The JS objects of
// `keep` stay referenced, and device buffers pinned, until it settles.
Napi::Value queueKernel(Napi::Env env, std::initializer_list<Buffer> keep, std::function<ToJs()> job);

// The error of a std::bad_alloc inside a kernel: E_OOM in JS.
KernelError hostOutOfMemory();

// Runs `job` (a callable returning ToJs, which may throw KernelError) now, or on a worker behind
// a Promise when `async`. The synchronous path allocates nothing: small calls stay cheap.
template <typename Job>
Napi::Value runKernel(const Napi::CallbackInfo& info, bool async, std::initializer_list<Buffer> keep, Job&& job) {
  Napi::Env env = info.Env();
  if (async) return queueKernel(env, keep, std::function<ToJs()>(std::forward<Job>(job)));
  try {
    return job()(env);
  } catch (const KernelError& e) {
    throwKernelError(env, e);
  } catch (const Napi::Error&) {
    throw;  // already the JS error to throw (Napi::Error is a std::exception too)
  } catch (const std::bad_alloc&) {
    throwKernelError(env, hostOutOfMemory());
  } catch (const std::exception& e) {
    throwKernelError(env, KernelError(ErrorKind::Internal, e.what()));
  }
}

}  // namespace addon
}  // namespace rlhf
