// What the addon keeps per Node environment (the main thread and each worker_threads Worker load
// it separately): Node-API instance data has one slot, so everything goes in this struct.
#pragma once
#include <napi.h>

namespace rlhf {
namespace addon {

struct AddonData {
  Napi::FunctionReference deviceBufferClass;
  // worker_threads.markAsUntransferable, handed over by lib/native.ts; empty until then.
  Napi::FunctionReference markUntransferable;
};

// This environment's data, created on first use and freed with the environment.
AddonData& addonData(Napi::Env env);

}  // namespace addon
}  // namespace rlhf
