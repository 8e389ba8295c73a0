// Module registration: one entry point per row of the op table, then the runtime functions.
#include <napi.h>

#include "addon_data.h"
#include "device_buffer.h"
#include "glue.h"
#include "ops.h"
#include "rlhf/op_table.h"

namespace rlhf {
namespace addon {

AddonData& addonData(Napi::Env env) {
  AddonData* data = env.GetInstanceData<AddonData>();
  if (data == nullptr) {
    data = new AddonData();
    env.SetInstanceData<AddonData>(data);
  }
  return *data;
}

// setUntransferableMarker(fn): the function that Async calls apply to the ArrayBuffers they use.
static Napi::Value setUntransferableMarker(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction())
    throwTypeError(info.Env(), "setUntransferableMarker: expected a function for `marker`");
  addonData(info.Env()).markUntransferable = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
#define RLHF_REGISTER_OP(name, family, cuda, cpuTol, cudaTol) \
  exports.Set(#name, Napi::Function::New(env, name, #name));
  RLHF_OP_TABLE(RLHF_REGISTER_OP)
#undef RLHF_REGISTER_OP
  exports.Set("firstNonFinite", Napi::Function::New(env, firstNonFinite));
  exports.Set("buildInfo", Napi::Function::New(env, buildInfo));
  exports.Set("backends", Napi::Function::New(env, backends));
  exports.Set("setNumThreads", Napi::Function::New(env, setNumThreads));
  exports.Set("getNumThreads", Napi::Function::New(env, getNumThreads));
  exports.Set("memoryStats", Napi::Function::New(env, memoryStats));
  exports.Set("synchronize", Napi::Function::New(env, synchronize));
  exports.Set("opTable", Napi::Function::New(env, opTable));
  exports.Set("measureBandwidth", Napi::Function::New(env, measureBandwidth));
  exports.Set("triadSeconds", Napi::Function::New(env, triadSeconds));
  exports.Set("readSeconds", Napi::Function::New(env, readSeconds));
  exports.Set("memoryTriadElements", Napi::Function::New(env, memoryTriadElements));
  exports.Set("setCpuPath", Napi::Function::New(env, setCpuPath));
  exports.Set("setReadStreams", Napi::Function::New(env, setReadStreams));
  exports.Set("placeShift", Napi::Function::New(env, placeShift));
  exports.Set("placeInPage", Napi::Function::New(env, placeInPage));
  exports.Set("adviseHugePages", Napi::Function::New(env, adviseHugePages));
  exports.Set("hugePagesRequested", Napi::Function::New(env, hugePagesRequested));
  exports.Set("setUntransferableMarker", Napi::Function::New(env, setUntransferableMarker));
  exports.Set("DeviceBuffer", DeviceBuffer::define(env));
  return exports;
}

}  // namespace addon
}  // namespace rlhf

// NODE_API_MODULE pastes the function's name into an identifier, so it takes a global name.
static Napi::Object initRlhf(Napi::Env env, Napi::Object exports) { return rlhf::addon::init(env, exports); }
NODE_API_MODULE(rlhf, initRlhf)
