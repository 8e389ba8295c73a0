// Argument reading, named errors and the sync/async runner of the Node-API glue.
#include "glue.h"

#include <memory>
#include <utility>

#include "addon_data.h"
#include "device_buffer.h"

namespace rlhf {
namespace addon {

const char* dtypeName(Dtype d) {
  switch (d) {
    case Dtype::F32: return "Float32Array";
    case Dtype::I32: return "Int32Array";
    case Dtype::U8: return "Uint8Array";
    case Dtype::F16: return "Uint16Array (float16 or bfloat16 bits)";
  }
  return "?";
}

static napi_typedarray_type napiType(Dtype d) {
  switch (d) {
    case Dtype::F32: return napi_float32_array;
    case Dtype::I32: return napi_int32_array;
    case Dtype::U8: return napi_uint8_array;
    case Dtype::F16: return napi_uint16_array;
  }
  return napi_float32_array;
}

static int64_t dtypeBytes(Dtype d) {
  switch (d) {
    case Dtype::U8: return 1;
    case Dtype::F16: return 2;
    case Dtype::F32:
    case Dtype::I32: break;
  }
  return 4;
}

void throwTypeError(Napi::Env env, const std::string& message) {
  throw Napi::TypeError::New(env, message);
}

void throwRangeError(Napi::Env env, const char* op, const char* name, const std::string& what) {
  throwRangeError(env, std::string(op) + ": `" + name + "` " + what);
}

void throwRangeError(Napi::Env env, const std::string& message) {
  throw Napi::RangeError::New(env, message);
}

void throwCodedError(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  throw e;
}

void throwKernelError(Napi::Env env, const KernelError& e) {
  switch (e.kind) {
    case ErrorKind::Type: throwTypeError(env, e.what());
    case ErrorKind::Range: throwRangeError(env, e.what());
    case ErrorKind::CudaUnavailable: throwCodedError(env, "E_CUDA_UNAVAILABLE", e.what());
    case ErrorKind::Cuda: throwCodedError(env, "E_CUDA", e.what());
    case ErrorKind::OutOfMemory: throwCodedError(env, "E_OOM", e.what());
    case ErrorKind::Disposed: throwCodedError(env, "E_DISPOSED", e.what());
    case ErrorKind::Internal: break;
  }
  throwCodedError(env, "E_INTERNAL", e.what());
}

KernelError hostOutOfMemory() {
  return KernelError(ErrorKind::OutOfMemory, "out of host memory: a kernel's working buffer could not be allocated");
}

static std::string describe(Napi::Value v) {
  if (v.IsNull()) return "null";
  if (v.IsUndefined()) return "undefined";
  if (v.IsTypedArray()) {
    switch (v.As<Napi::TypedArray>().TypedArrayType()) {
      case napi_int8_array: return "Int8Array";
      case napi_uint8_array: return "Uint8Array";
      case napi_uint8_clamped_array: return "Uint8ClampedArray";
      case napi_int16_array: return "Int16Array";
      case napi_uint16_array: return "Uint16Array";
      case napi_int32_array: return "Int32Array";
      case napi_uint32_array: return "Uint32Array";
      case napi_float32_array: return "Float32Array";
      case napi_float64_array: return "Float64Array";
      default: return "a TypedArray";
    }
  }
  if (v.IsArray()) return "an Array";
  if (v.IsNumber()) return "a number";
  if (v.IsString()) return "a string";
  if (v.IsBoolean()) return "a boolean";
  return "an object";
}

// Each Node-API call costs tens of nanoseconds and an op reads up to fifteen arguments, so these
// readers make as few calls as they can: the common, valid case is one or two calls.
Buffer bufferArg(const Napi::CallbackInfo& info, size_t i, Dtype dtype, const char* op,
                 const char* name, bool optional) {
  return bufferValue(info.Env(), info[i], dtype, op, name, optional);
}

Buffer hostBufferOf(Napi::Env env, Napi::Value v, Dtype dtype) {
  Buffer b;
  napi_typedarray_type type;
  size_t length;
  void* data;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, nullptr, nullptr) != napi_ok || type != napiType(dtype))
    return b;
  b.js = v;
  b.data = data;
  b.length = static_cast<int64_t>(length);
  return b;
}

// An absent optional argument is told first, by one napi_typeof, rather than after failing as a
// typed array and as a device buffer (three calls): small calls pass several (gae, four).
Buffer bufferValue(Napi::Env env, Napi::Value v, Dtype dtype, const char* op, const char* name, bool optional) {
  Buffer b;
  napi_valuetype type;
  if (optional && napi_typeof(env, v, &type) == napi_ok && (type == napi_null || type == napi_undefined)) return b;
  const Buffer host = hostBufferOf(env, v, dtype);
  if (host.present()) return host;
  if (v.IsTypedArray())
    throwTypeError(env, std::string(op) + ": expected a " + dtypeName(dtype) + " for `" + name + "` but received " +
                            describe(v));
  if (DeviceBuffer::isDeviceBuffer(env, v)) {
    DeviceBuffer* d = DeviceBuffer::unwrap(v);
    if (d->disposed())
      throwCodedError(env, "E_DISPOSED", std::string(op) + ": `" + name + "` has been disposed");
    b.js = v;
    b.data = d->data();
    b.length = d->bytes() / dtypeBytes(dtype);
    b.device = d->device();
    return b;
  }
  throwTypeError(env, std::string(op) + ": expected a " + dtypeName(dtype) + " or a CUDA buffer for `" +
                          name + "` but received " + describe(v));
}

Buffer statsArg(const Napi::CallbackInfo& info, size_t i, const char* op, int64_t n) {
  napi_typedarray_type type;
  size_t length;
  void* data;
  if (napi_get_typedarray_info(info.Env(), info[i], &type, &length, &data, nullptr, nullptr) != napi_ok ||
      type != napi_float64_array || static_cast<int64_t>(length) < n)
    throwTypeError(info.Env(), std::string(op) + ": expected a Float64Array of at least " + std::to_string(n) +
                                   " numbers for `stats` but received " + describe(info[i]));
  Buffer b;
  b.js = info[i];
  b.data = data;
  b.length = static_cast<int64_t>(length);
  return b;
}

static double numberOrThrow(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name,
                            const char* expected) {
  double d;
  if (napi_get_value_double(info.Env(), info[i], &d) != napi_ok)
    throwTypeError(info.Env(), std::string(op) + ": expected " + expected + " for `" + name + "` but received " +
                                   describe(info[i]));
  return d;
}

int64_t intArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  const double d = numberOrThrow(info, i, op, name, "an integer");
  if (!(d >= 0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<int64_t>(d)))
    throwRangeError(info.Env(), std::string(op) + ": expected a non-negative integer for `" + name +
                                    "` but received " + std::to_string(d));
  return static_cast<int64_t>(d);
}

double numberArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  return numberOrThrow(info, i, op, name, "a number");
}

bool boolArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  bool b;
  if (napi_get_value_bool(info.Env(), info[i], &b) != napi_ok)
    throwTypeError(info.Env(), std::string(op) + ": expected a boolean for `" + name + "` but received " +
                                   describe(info[i]));
  return b;
}

void requireLength(Napi::Env env, const Buffer& b, const char* op, const char* name, int64_t rows, int64_t cols) {
  if (cols > 0 && rows > (int64_t{1} << 53) / cols)
    throwRangeError(env, std::string(op) + ": the shape [" + std::to_string(rows) + "," + std::to_string(cols) +
                             "] is too large");
  const int64_t expected = cols < 0 ? rows : rows * cols;
  if (b.length == expected) return;
  const std::string shape = cols < 0 ? "[" + std::to_string(rows) + "]"
                                     : "[" + std::to_string(rows) + "," + std::to_string(cols) + "]";
  throwRangeError(env, std::string(op) + ": expected `" + name + "` to hold " + std::to_string(expected) +
                           " elements " + shape + " but it holds " + std::to_string(b.length));
}

void requireSameLength(Napi::Env env, const Buffer& b, const Buffer& like, const char* op, const char* name,
                       const char* likeName) {
  if (b.length != like.length)
    throwRangeError(env, std::string(op) + ": expected `" + name + "` to hold as many elements as `" + likeName +
                             "` (" + std::to_string(like.length) + ") but it holds " + std::to_string(b.length));
}

int commonDevice(Napi::Env env, const char* op,
                 std::initializer_list<std::pair<const char*, const Buffer*>> buffers) {
  int device = kCpu;
  const char* first = nullptr;
  for (const auto& [name, b] : buffers) {
    if (!b->present()) continue;
    if (first == nullptr) {
      first = name;
      device = b->device;
    } else if (b->device != device) {
      auto label = [](int d) { return d == kCpu ? std::string("cpu") : "cuda:" + std::to_string(d); };
      throwRangeError(env, std::string(op) + ": all tensors must be on one device, but `" + first + "` is on " +
                               label(device) + " and `" + name + "` on " + label(b->device));
    }
  }
  return device;
}

namespace {

// Runs a job on a libuv worker. Device buffers are pinned so that dispose() waits for the job;
// every JS input is referenced so that the garbage collector cannot take a TypedArray mid-job.
class KernelWorker : public Napi::AsyncWorker {
 public:
  KernelWorker(Napi::Env env, std::initializer_list<Buffer> keep, std::function<ToJs()> job)
      : Napi::AsyncWorker(env, "rlhf:kernel"), deferred_(Napi::Promise::Deferred::New(env)), job_(std::move(job)) {
    const Napi::FunctionReference& markUntransferable = addonData(env).markUntransferable;
    for (const Buffer& b : keep) {
      if (!b.present()) continue;
      refs_.push_back(Napi::Persistent(Napi::Value(env, b.js)));
      lengths_.push_back(b.device == kCpu ? b.length : -1);
      if (b.device == kCpu && !markUntransferable.IsEmpty()) {
        // The kernel runs on this memory from another thread: were the ArrayBuffer transferred
        // (postMessage, structuredClone), the memory would move to an owner that may free it
        // mid-job. Marked, a transfer copies it instead (Node 20) or throws (Node >= 21).
        napi_value arrayBuffer;
        if (napi_get_typedarray_info(env, b.js, nullptr, nullptr, nullptr, &arrayBuffer, nullptr) == napi_ok)
          markUntransferable.Call({arrayBuffer});
      }
      if (b.device != kCpu) {
        DeviceBuffer* d = DeviceBuffer::unwrap(Napi::Value(env, b.js));
        d->pin();
        pinned_.push_back(d);
      }
    }
  }
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      result_ = job_();
    } catch (const KernelError& e) {
      error_ = std::make_unique<KernelError>(e);
    } catch (const std::bad_alloc&) {
      error_ = std::make_unique<KernelError>(hostOutOfMemory());
    } catch (const std::exception& e) {
      error_ = std::make_unique<KernelError>(ErrorKind::Internal, e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    const bool detached = anyDetached(env);
    release();
    try {
      if (error_) throwKernelError(env, *error_);
      if (detached)
        throwCodedError(env, "E_DETACHED", "an ArrayBuffer that this call reads or writes was detached while it ran; "
                                           "its result is not returned");
      deferred_.Resolve(result_(env));
    } catch (const Napi::Error& e) {
      reject(e);
    }
  }
  void OnError(const Napi::Error& e) override {
    release();
    reject(e);
  }

 private:
  // Rejecting fails only when the environment can no longer run JavaScript (a worker_threads
  // Worker terminated while the job ran): nobody is left to settle the promise for, and an
  // exception escaping this libuv callback would abort the whole process.
  void reject(const Napi::Error& e) {
    try {
      deferred_.Reject(e.Value());
    } catch (const Napi::Error&) {
    }
  }
  // True when a host array no longer holds the elements it had when the job was queued: its
  // ArrayBuffer was detached mid-flight despite the marking (by another addon, or without
  // lib/native.ts's marker), and the result cannot be trusted.
  bool anyDetached(Napi::Env env) {
    for (size_t i = 0; i < refs_.size(); ++i) {
      if (lengths_[i] < 0) continue;
      size_t length = 0;
      if (napi_get_typedarray_info(env, refs_[i].Value(), nullptr, &length, nullptr, nullptr, nullptr) != napi_ok ||
          static_cast<int64_t>(length) != lengths_[i])
        return true;
    }
    return false;
  }
  void release() {
    for (DeviceBuffer* d : pinned_) d->unpin();
    pinned_.clear();
    refs_.clear();
  }
  Napi::Promise::Deferred deferred_;
  std::function<ToJs()> job_;
  ToJs result_;
  std::unique_ptr<KernelError> error_;
  std::vector<Napi::Reference<Napi::Value>> refs_;
  std::vector<int64_t> lengths_;  // elements of each host array when queued; -1 for device buffers
  std::vector<DeviceBuffer*> pinned_;
};

}  // namespace

Napi::Value queueKernel(Napi::Env env, std::initializer_list<Buffer> keep, std::function<ToJs()> job) {
  auto* worker = new KernelWorker(env, keep, std::move(job));
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

}  // namespace addon
}  // namespace rlhf
