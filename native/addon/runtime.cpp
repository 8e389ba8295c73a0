// Node-API entry points of the runtime: what was built, what the machine offers, threads,
// device memory statistics, the op table and the bandwidth roofline.
#include <string>
#include <thread>

#include "glue.h"
#include "ops.h"
#include "rlhf/bandwidth.h"
#include "rlhf/build_info.h"
#include "rlhf/cuda.h"
#include "rlhf/host_memory.h"
#include "rlhf/kernels.h"
#include "rlhf/op_table.h"
#include "thread_pool.h"

namespace rlhf {
namespace addon {

static Napi::Array splitList(Napi::Env env, const std::string& list) {
  Napi::Array out = Napi::Array::New(env);
  size_t start = 0;
  uint32_t k = 0;
  while (start < list.size()) {
    size_t end = list.find(';', start);
    if (end == std::string::npos) end = list.size();
    if (end > start) out.Set(k++, list.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

Napi::Value buildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("cuda", Napi::Boolean::New(env, cuda::compiled()));
  o.Set("cudaArchitectures", splitList(env, cuda::architectures()));
  o.Set("cudaVersion", RLHF_BUILD_CUDA_VERSION);
  o.Set("cudaRequest", RLHF_BUILD_CUDA_REQUEST);
  o.Set("simd", cpuVariantName());
  o.Set("simdCompiled", RLHF_BUILD_SIMD);
  o.Set("compiler", RLHF_BUILD_COMPILER);
  o.Set("buildType", RLHF_BUILD_TYPE);
  o.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  return o;
}

Napi::Value backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("available", true);
  cpu.Set("threads", ThreadPool::instance().numThreads());
  cpu.Set("hardwareThreads", static_cast<double>(std::thread::hardware_concurrency()));
  cpu.Set("simd", cpuVariantName());
  cpu.Set("readStreams", readsSeveralInStep() ? "several" : "one");
  cpu.Set("hugePages", hugePagesAdvisable());

  Napi::Object cu = Napi::Object::New(env);
  const int count = cuda::deviceCount();
  cu.Set("compiled", cuda::compiled());
  cu.Set("devices", count);
  cu.Set("runtimeVersion", cuda::runtimeVersion());
  cu.Set("driverVersion", cuda::driverVersion());
  Napi::Array list = Napi::Array::New(env);
  for (int d = 0; d < count; ++d) {
    try {
      const cuda::DeviceInfo di = cuda::deviceInfo(d);
      Napi::Object o = Napi::Object::New(env);
      o.Set("index", d);
      o.Set("name", di.name);
      o.Set("computeCapability", std::to_string(di.major) + "." + std::to_string(di.minor));
      o.Set("totalMemory", static_cast<double>(di.totalMemory));
      o.Set("peakBandwidthGBs", di.peakBandwidthGBs);
      list.Set(static_cast<uint32_t>(d), o);
    } catch (const KernelError& e) {
      throwKernelError(env, e);
    }
  }
  cu.Set("deviceList", list);

  Napi::Object o = Napi::Object::New(env);
  o.Set("cpu", cpu);
  o.Set("cuda", cu);
  return o;
}

Napi::Value setNumThreads(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 0, "setNumThreads", "n");
  if (n < 1 || n > 1024)
    throwRangeError(info.Env(), "setNumThreads: expected `n` in [1, 1024] but received " + std::to_string(n));
  ThreadPool::instance().setNumThreads(static_cast<int>(n));
  return info.Env().Undefined();
}

Napi::Value getNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), ThreadPool::instance().numThreads());
}

// memoryStats(device) -> { liveAllocations, liveBytes, peakBytes, totalAllocations }
Napi::Value memoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t device = intArg(info, 0, "memoryStats", "device");
  cuda::MemoryStats s;
  try {
    s = cuda::memoryStats(static_cast<int>(device));
  } catch (const KernelError& e) {
    throwKernelError(env, e);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("liveAllocations", static_cast<double>(s.liveAllocations));
  o.Set("liveBytes", static_cast<double>(s.liveBytes));
  o.Set("peakBytes", static_cast<double>(s.peakBytes));
  o.Set("totalAllocations", static_cast<double>(s.totalAllocations));
  return o;
}

Napi::Value synchronize(const Napi::CallbackInfo& info) {
  const int64_t device = intArg(info, 0, "synchronize", "device");
  try {
    cuda::synchronize(static_cast<int>(device));
  } catch (const KernelError& e) {
    throwKernelError(info.Env(), e);
  }
  return info.Env().Undefined();
}

Napi::Value opTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array rows = Napi::Array::New(env);
  for (int i = 0; i < kNumOps; ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", kOps[i].name);
    o.Set("family", kOps[i].family);
    o.Set("cuda", kOps[i].cuda);
    o.Set("cpuTol", kOps[i].cpuTol);
    o.Set("cudaTol", kOps[i].cudaTol);
    rows.Set(static_cast<uint32_t>(i), o);
  }
  return rows;
}

// measureBandwidth(elements, repeats, async) -> GB/s (STREAM triad)
Napi::Value measureBandwidth(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 0, "measureBandwidth", "elements");
  const int64_t repeats = intArg(info, 1, "measureBandwidth", "repeats");
  const bool async = boolArg(info, 2, "measureBandwidth", "async");
  if (n < 1 || repeats < 1) throwRangeError(info.Env(), "measureBandwidth: `elements` and `repeats` must be >= 1");
  return runKernel(info, async, {}, [n, repeats]() -> ToJs {
    const double gbs = measureTriadBandwidthGBs(n, static_cast<int>(repeats));
    return [gbs](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, gbs); };
  });
}

// memoryTriadElements() -> elements per array of a triad that measures memory, not cache
Napi::Value memoryTriadElements(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(rlhf::memoryTriadElements()));
}

// triadSeconds(a, b, c) -> seconds of one STREAM triad a = b + 3c over three Float32Arrays of
// one length: the bandwidth the benchmark sets each op against, measured between its runs.
Napi::Value triadSeconds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* names[] = {"a", "b", "c"};
  Buffer arrays[3];
  for (size_t i = 0; i < 3; ++i) {
    arrays[i] = bufferArg(info, i, Dtype::F32, "triadSeconds", names[i]);
    if (arrays[i].device != kCpu) throwRangeError(env, "triadSeconds", names[i], "must be host memory (a Float32Array)");
  }
  requireSameLength(env, arrays[1], arrays[0], "triadSeconds", "b", "a");
  requireSameLength(env, arrays[2], arrays[0], "triadSeconds", "c", "a");
  return Napi::Number::New(
      env, rlhf::triadSeconds(arrays[0].as<float>(), arrays[1].as<float>(), arrays[2].as<float>(), arrays[0].length));
}

// readSeconds(x) -> seconds of one pass that only reads a Float32Array on the thread pool: the
// read roofline the benchmark sets the ops that only read against, measured between their runs.
Napi::Value readSeconds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Buffer x = bufferArg(info, 0, Dtype::F32, "readSeconds", "x");
  if (x.device != kCpu) throwRangeError(env, "readSeconds", "x", "must be host memory (a Float32Array)");
  return Napi::Number::New(env, rlhf::readSeconds(x.as<float>(), x.length));
}

// The address of a TypedArray's first element.
static const void* typedArrayStart(Napi::Env env, Napi::Value v, const char* op, const std::string& name) {
  if (!v.IsTypedArray()) throwTypeError(env, std::string(op) + ": expected a TypedArray for `" + name + "`");
  const Napi::TypedArray a = v.As<Napi::TypedArray>();
  return static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
}

// placeShift(buffer, inputs) -> the byte offset in `buffer` (an ArrayBuffer a page longer than
// the output it will hold) at which the output starts where the kernels stream it best beside the
// TypedArrays of `inputs` (nulls skipped; see streamingPlaceInPage). The buffer is allocated in
// JS: there a failed allocation is a RangeError, where napi_create_arraybuffer's ends the process.
Napi::Value placeShift(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "placeShift";
  if (!info[0].IsArrayBuffer()) throwTypeError(env, "placeShift: expected an ArrayBuffer for `buffer`");
  Napi::ArrayBuffer buffer = info[0].As<Napi::ArrayBuffer>();
  if (buffer.ByteLength() < 4096) throwRangeError(env, op, "buffer", "must be at least a page (4096 bytes) long");
  if (!info[1].IsArray()) throwTypeError(env, "placeShift: expected an array for `inputs`");
  const Napi::Array list = info[1].As<Napi::Array>();
  std::vector<const void*> inputs;
  for (uint32_t i = 0; i < list.Length(); ++i) {
    const Napi::Value v = list.Get(i);
    if (!v.IsNull()) inputs.push_back(typedArrayStart(env, v, op, "inputs[" + std::to_string(i) + "]"));
  }
  const uintptr_t place = streamingPlaceInPage(inputs.data(), static_cast<int>(inputs.size()));
  return Napi::Number::New(env, static_cast<double>((place - reinterpret_cast<uintptr_t>(buffer.Data())) & 4095));
}

// placeInPage(array) -> the byte offset of its first element in its 4 KiB page (for tests and the
// benchmark, which report where arrays lie).
Napi::Value placeInPage(const Napi::CallbackInfo& info) {
  const void* p = typedArrayStart(info.Env(), info[0], "placeInPage", "array");
  return Napi::Number::New(info.Env(), static_cast<double>(reinterpret_cast<uintptr_t>(p) & 4095));
}

// adviseHugePages(buffer) -> whether the whole 2 MiB pages of the ArrayBuffer were asked to be
// huge pages when first touched (rlhf::adviseHugePages). For large new outputs, before any write.
Napi::Value adviseHugePages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer()) throwTypeError(env, "adviseHugePages: expected an ArrayBuffer for `buffer`");
  Napi::ArrayBuffer buffer = info[0].As<Napi::ArrayBuffer>();
  return Napi::Boolean::New(env, rlhf::adviseHugePages(buffer.Data(), buffer.ByteLength()));
}

// hugePagesRequested(array) -> whether the first whole 2 MiB page within the array carries that
// request; false when it spans none (for tests).
Napi::Value hugePagesRequested(const Napi::CallbackInfo& info) {
  const void* p = typedArrayStart(info.Env(), info[0], "hugePagesRequested", "array");
  return Napi::Boolean::New(info.Env(), rlhf::hugePagesRequestedIn(p, info[0].As<Napi::TypedArray>().ByteLength()));
}

// setCpuPath('auto' | 'baseline' | 'avx2' | 'reference'): which CPU code runs, for tests and
// benchmarks ('avx2' runs the active variant where the CPU lacks AVX2).
Napi::Value setCpuPath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string p = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (p == "auto") rlhf::setCpuPath(CpuPath::Auto);
  else if (p == "baseline") rlhf::setCpuPath(CpuPath::Baseline);
  else if (p == "avx2") rlhf::setCpuPath(CpuPath::Avx2);
  else if (p == "reference") rlhf::setCpuPath(CpuPath::Reference);
  else throwRangeError(env, "setCpuPath: expected 'auto', 'baseline', 'avx2' or 'reference' but received '" + p + "'");
  return env.Undefined();
}

// setReadStreams('auto' | 'one' | 'several'): how the passes that only read walk their rows, for
// tests and benchmarks (rlhf::setReadStreams).
Napi::Value setReadStreams(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string r = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (r == "auto") rlhf::setReadStreams(ReadStreams::Auto);
  else if (r == "one") rlhf::setReadStreams(ReadStreams::One);
  else if (r == "several") rlhf::setReadStreams(ReadStreams::Several);
  else throwRangeError(env, "setReadStreams: expected 'auto', 'one' or 'several' but received '" + r + "'");
  return env.Undefined();
}

}  // namespace addon
}  // namespace rlhf
