// DeviceBuffer: CUDA memory owned by a JS object (see device_buffer.h).
#include "device_buffer.h"

#include <string>

#include "addon_data.h"
#include "glue.h"
#include "rlhf/cuda.h"

namespace rlhf {
namespace addon {

Napi::Function DeviceBuffer::define(Napi::Env env) {
  Napi::Function ctor = DefineClass(
      env, "DeviceBuffer",
      {InstanceMethod("dispose", &DeviceBuffer::dispose),
       InstanceMethod("isDisposed", &DeviceBuffer::isDisposed),
       InstanceMethod("copyFromHost", &DeviceBuffer::copyFromHost),
       InstanceMethod("copyToHost", &DeviceBuffer::copyToHost),
       InstanceMethod("copyFromDevice", &DeviceBuffer::copyFromDevice)});
  addonData(env).deviceBufferClass = Napi::Persistent(ctor);
  return ctor;
}

bool DeviceBuffer::isDeviceBuffer(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) return false;
  const Napi::FunctionReference& ctor = addonData(env).deviceBufferClass;
  return !ctor.IsEmpty() && v.As<Napi::Object>().InstanceOf(ctor.Value());
}

DeviceBuffer::DeviceBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceBuffer>(info) {
  const int64_t bytes = intArg(info, 0, "DeviceBuffer", "bytes");
  const int64_t device = intArg(info, 1, "DeviceBuffer", "device");
  if (bytes < 0) throwRangeError(info.Env(), "DeviceBuffer: `bytes` must be >= 0, got " + std::to_string(bytes));
  try {
    data_ = cuda::alloc(static_cast<size_t>(bytes), static_cast<int>(device));
  } catch (const KernelError& e) {
    throwKernelError(info.Env(), e);
  }
  bytes_ = bytes;
  device_ = static_cast<int>(device);
}

DeviceBuffer::~DeviceBuffer() { release(); }

// Frees the memory; errors are swallowed only here, where there is no one left to tell.
void DeviceBuffer::release() {
  if (data_ == nullptr) return;
  try {
    cuda::free(data_, device_);
  } catch (const KernelError&) {
  }
  data_ = nullptr;
}

void DeviceBuffer::unpin() {
  if (--pins_ == 0 && disposeWhenUnpinned_) release();
}

void DeviceBuffer::requireLive(Napi::Env env, const char* what) const {
  if (disposed() || disposeWhenUnpinned_)
    throwCodedError(env, "E_DISPOSED", std::string(what) + ": the tensor has been disposed");
}

Napi::Value DeviceBuffer::dispose(const Napi::CallbackInfo& info) {
  if (pins_ > 0) disposeWhenUnpinned_ = true;
  else release();
  return info.Env().Undefined();
}

Napi::Value DeviceBuffer::isDisposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), disposed() || disposeWhenUnpinned_);
}

// Checks that argument 0 is a TypedArray of exactly this buffer's size.
static Napi::TypedArray hostArg(const Napi::CallbackInfo& info, int64_t bytes, const char* what) {
  if (info.Length() < 1 || !info[0].IsTypedArray())
    throwTypeError(info.Env(), std::string(what) + ": expected a TypedArray");
  Napi::TypedArray host = info[0].As<Napi::TypedArray>();
  if (static_cast<int64_t>(host.ByteLength()) != bytes)
    throwRangeError(info.Env(), std::string(what) + ": expected " + std::to_string(bytes) +
                                    " bytes but the TypedArray holds " + std::to_string(host.ByteLength()));
  return host;
}

static void* hostData(Napi::TypedArray a) {
  return static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
}

Napi::Value DeviceBuffer::copyFromHost(const Napi::CallbackInfo& info) {
  requireLive(info.Env(), "copyFromHost");
  Napi::TypedArray host = hostArg(info, bytes_, "copyFromHost");
  try {
    cuda::copyToDevice(data_, hostData(host), static_cast<size_t>(bytes_), device_);
  } catch (const KernelError& e) {
    throwKernelError(info.Env(), e);
  }
  return info.Env().Undefined();
}

Napi::Value DeviceBuffer::copyToHost(const Napi::CallbackInfo& info) {
  requireLive(info.Env(), "copyToHost");
  Napi::TypedArray host = hostArg(info, bytes_, "copyToHost");
  try {
    cuda::copyToHost(hostData(host), data_, static_cast<size_t>(bytes_), device_);
  } catch (const KernelError& e) {
    throwKernelError(info.Env(), e);
  }
  return info.Env().Undefined();
}

Napi::Value DeviceBuffer::copyFromDevice(const Napi::CallbackInfo& info) {
  requireLive(info.Env(), "copyFromDevice");
  if (info.Length() < 1 || !isDeviceBuffer(info.Env(), info[0]))
    throwTypeError(info.Env(), "copyFromDevice: expected a DeviceBuffer");
  DeviceBuffer* src = unwrap(info[0]);
  src->requireLive(info.Env(), "copyFromDevice");
  if (src->bytes_ != bytes_ || src->device_ != device_)
    throwRangeError(info.Env(), "copyFromDevice: source and destination differ in size or device");
  try {
    cuda::copyOnDevice(data_, src->data_, static_cast<size_t>(bytes_), device_);
  } catch (const KernelError& e) {
    throwKernelError(info.Env(), e);
  }
  return info.Env().Undefined();
}

}  // namespace addon
}  // namespace rlhf
