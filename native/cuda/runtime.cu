// The CUDA runtime side of the backend: device queries, the allocator and its counters, one
// stream per device, copies, and the scratch buffer that kernels share (device.h). Every CUDA
// call is checked and a failure becomes a KernelError; nothing here exits or aborts.
#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "device.h"
#include "rlhf/build_info.h"
#include "rlhf/cuda.h"
#include "rlhf/error.h"

namespace rlhf {
namespace cuda {

namespace {

// cudaMalloc(0) returns null; a minimum size keeps every allocation a distinct, valid pointer.
constexpr size_t kMinAllocation = 256;

struct DeviceState {
  std::mutex streamMutex;
  cudaStream_t stream = nullptr;  // created on first use, by whichever thread gets there first

  std::mutex memoryMutex;
  std::unordered_map<void*, size_t> live;  // pointer -> bytes requested
  MemoryStats stats;

  std::mutex scratchMutex;  // held by a ScratchLease
  void* scratch = nullptr;
  size_t scratchBytes = 0;
};

std::vector<std::unique_ptr<DeviceState>>* makeStates() {
  auto* states = new std::vector<std::unique_ptr<DeviceState>>();
  const int n = deviceCount();
  for (int d = 0; d < n; ++d) states->push_back(std::make_unique<DeviceState>());
  return states;
}

// Never destroyed: at process exit the CUDA runtime may already be unloaded when static
// destructors run, and the driver releases a process's streams and memory anyway.
DeviceState& stateOf(int device) {
  static std::vector<std::unique_ptr<DeviceState>>* states = makeStates();
  if (device < 0 || device >= static_cast<int>(states->size())) {
    throw KernelError(ErrorKind::Range, "CUDA device " + std::to_string(device) +
                                            " does not exist: this machine has " +
                                            std::to_string(states->size()) + " CUDA device(s)");
  }
  return *(*states)[device];
}

// 13000 -> "13.0", as CUDA encodes versions (1000*major + 10*minor).
std::string versionString(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

// CMake's list ("75-real;90", "90-virtual") in the "sm_75;sm_90" form of cuda.h; values that
// are not a number (such as "native") are passed through.
std::string formatArchitectures(const std::string& cmakeList) {
  std::string out, item;
  std::istringstream in(cmakeList);
  while (std::getline(in, item, ';')) {
    if (item.empty()) continue;
    const size_t dash = item.find('-');
    const std::string number = item.substr(0, dash);
    const std::string suffix = dash == std::string::npos ? "" : item.substr(dash + 1);
    const bool numeric = !number.empty() && number.find_first_not_of("0123456789") == std::string::npos;
    std::string name = item;
    if (numeric) name = (suffix == "virtual" ? "compute_" : "sm_") + number;
    out += (out.empty() ? "" : ";") + name;
  }
  return out;
}

int deviceAttribute(cudaDeviceAttr attr, int device) {
  int value = 0;
  if (cudaDeviceGetAttribute(&value, attr, device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return value;
}

void copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, int device,
          const char* what) {
  const cudaStream_t stream = detail::activate(device);
  if (bytes == 0) return;
  detail::check(cudaMemcpyAsync(dst, src, bytes, kind, stream), what);
  detail::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize after a copy");
}

}  // namespace

namespace detail {

// Out of memory is not sticky: the context stays usable, so it gets its own kind (E_OOM) and
// callers may free memory and try again.
ErrorKind errorKind(cudaError_t err) {
  return err == cudaErrorMemoryAllocation ? ErrorKind::OutOfMemory : ErrorKind::Cuda;
}

void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // a non-sticky error is also the "last error"; don't let it resurface
  throw KernelError(errorKind(err), std::string(what) + " failed: " + cudaGetErrorString(err));
}

void checkLaunch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return;
  throw KernelError(ErrorKind::Cuda,
                    std::string("launch of ") + kernel + " failed: " + cudaGetErrorString(err));
}

cudaStream_t activate(int device) {
  DeviceState& s = stateOf(device);
  check(cudaSetDevice(device), "cudaSetDevice");
  std::lock_guard<std::mutex> lock(s.streamMutex);
  if (s.stream == nullptr) {
    // Non-blocking: the legacy default stream that other libraries in the process may use
    // must not serialise with ours.
    check(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  }
  return s.stream;
}

ScratchLease::ScratchLease(int device, size_t bytes) {
  DeviceState& s = stateOf(device);
  const cudaStream_t stream = activate(device);
  lock_ = std::unique_lock<std::mutex>(s.scratchMutex);
  if (s.scratchBytes < bytes) {
    // Kernels enqueued by earlier holders may still be reading the old buffer.
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize before growing the scratch buffer");
    if (s.scratch != nullptr) check(cudaFree(s.scratch), "cudaFree (scratch)");
    s.scratch = nullptr;
    const size_t grown = std::max(bytes, 2 * s.scratchBytes);
    s.scratchBytes = 0;
    check(cudaMalloc(&s.scratch, grown), "cudaMalloc (scratch)");
    s.scratchBytes = grown;
  }
  data_ = s.scratch;
}

}  // namespace detail

bool compiled() { return true; }

int deviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no GPU: report none and leave no error behind
    return 0;
  }
  return n;
}

std::string architectures() { return formatArchitectures(RLHF_BUILD_CUDA_ARCHS); }

std::string runtimeVersion() {
  int v = 0;
  detail::check(cudaRuntimeGetVersion(&v), "cudaRuntimeGetVersion");
  return versionString(v);
}

std::string driverVersion() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return v == 0 ? "" : versionString(v);
}

DeviceInfo deviceInfo(int device) {
  stateOf(device);
  cudaDeviceProp prop;
  detail::check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  DeviceInfo info;
  info.name = prop.name;
  info.major = prop.major;
  info.minor = prop.minor;
  info.totalMemory = prop.totalGlobalMem;
  // Double data rate: two transfers per memory clock. CUDA 13 may report the clock as 0 (or
  // not at all) for some GPUs; the peak is then unknown and reported as 0.
  const double clockKHz = deviceAttribute(cudaDevAttrMemoryClockRate, device);
  const double busBits = deviceAttribute(cudaDevAttrGlobalMemoryBusWidth, device);
  info.peakBandwidthGBs = 2.0 * clockKHz * 1e3 * busBits / 8.0 / 1e9;
  return info;
}

MemoryStats memoryStats(int device) {
  DeviceState& s = stateOf(device);
  std::lock_guard<std::mutex> lock(s.memoryMutex);
  return s.stats;
}

void* alloc(size_t bytes, int device) {
  DeviceState& s = stateOf(device);
  detail::activate(device);
  void* ptr = nullptr;
  const cudaError_t err = cudaMalloc(&ptr, std::max(bytes, kMinAllocation));
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw KernelError(detail::errorKind(err), "cudaMalloc of " + std::to_string(bytes) +
                                           " bytes on CUDA device " + std::to_string(device) +
                                           " failed: " + cudaGetErrorString(err));
  }
  std::lock_guard<std::mutex> lock(s.memoryMutex);
  s.live[ptr] = bytes;
  s.stats.liveAllocations += 1;
  s.stats.liveBytes += static_cast<int64_t>(bytes);
  s.stats.peakBytes = std::max(s.stats.peakBytes, s.stats.liveBytes);
  s.stats.totalAllocations += 1;
  return ptr;
}

void free(void* ptr, int device) {
  if (ptr == nullptr) return;
  DeviceState& s = stateOf(device);
  const cudaStream_t stream = detail::activate(device);
  {
    // Forget the pointer first, so that two racing frees cannot both reach cudaFree.
    std::lock_guard<std::mutex> lock(s.memoryMutex);
    const auto it = s.live.find(ptr);
    if (it == s.live.end()) {
      throw KernelError(ErrorKind::Internal, "free: the pointer was not allocated by rlhf-node on "
                                             "CUDA device " + std::to_string(device));
    }
    s.stats.liveAllocations -= 1;
    s.stats.liveBytes -= static_cast<int64_t>(it->second);
    s.live.erase(it);
  }
  // Kernels enqueued before the free may still use the memory.
  detail::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize before cudaFree");
  detail::check(cudaFree(ptr), "cudaFree");
}

void copyToDevice(void* dst, const void* src, size_t bytes, int device) {
  copy(dst, src, bytes, cudaMemcpyHostToDevice, device, "cudaMemcpyAsync (host to device)");
}

void copyToHost(void* dst, const void* src, size_t bytes, int device) {
  copy(dst, src, bytes, cudaMemcpyDeviceToHost, device, "cudaMemcpyAsync (device to host)");
}

void copyOnDevice(void* dst, const void* src, size_t bytes, int device) {
  copy(dst, src, bytes, cudaMemcpyDeviceToDevice, device, "cudaMemcpyAsync (device to device)");
}

void synchronize(int device) {
  const cudaStream_t stream = detail::activate(device);
  detail::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

}  // namespace cuda
}  // namespace rlhf
