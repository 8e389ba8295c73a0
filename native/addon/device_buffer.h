// DeviceBuffer: a JS object owning CUDA device memory. dispose() frees it at once unless an
// async op is using it, in which case it is freed when that op settles; a finalizer frees what
// was never disposed. Any use after dispose is an Error with code E_DISPOSED.
#pragma once
#include <napi.h>

#include <cstdint>

namespace rlhf {
namespace addon {

class DeviceBuffer : public Napi::ObjectWrap<DeviceBuffer> {
 public:
  static Napi::Function define(Napi::Env env);
  static bool isDeviceBuffer(Napi::Env env, Napi::Value v);
  static DeviceBuffer* unwrap(Napi::Value v) { return Napi::ObjectWrap<DeviceBuffer>::Unwrap(v.As<Napi::Object>()); }

  // new DeviceBuffer(bytes, device)
  explicit DeviceBuffer(const Napi::CallbackInfo& info);
  ~DeviceBuffer() override;

  void* data() const { return data_; }
  int64_t bytes() const { return bytes_; }
  int device() const { return device_; }
  bool disposed() const { return data_ == nullptr; }

  void pin() { ++pins_; }
  void unpin();

 private:
  Napi::Value dispose(const Napi::CallbackInfo& info);
  Napi::Value isDisposed(const Napi::CallbackInfo& info);
  Napi::Value copyFromHost(const Napi::CallbackInfo& info);
  Napi::Value copyToHost(const Napi::CallbackInfo& info);
  Napi::Value copyFromDevice(const Napi::CallbackInfo& info);
  void release();
  void requireLive(Napi::Env env, const char* what) const;

  void* data_ = nullptr;
  int64_t bytes_ = 0;
  int device_ = 0;
  int pins_ = 0;
  bool disposeWhenUnpinned_ = false;
};

}  // namespace addon
}  // namespace rlhf
