// What the CUDA kernel files share with runtime.cu: error checks that throw, the per-device
// stream, and a scratch buffer for the kernels that need one. Internal to native/cuda.
#pragma once
#include <cuda_runtime.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

#include "rlhf/error.h"

namespace rlhf {
namespace cuda {
namespace detail {

// Throws KernelError(errorKind(err), "<what> failed: <cudaGetErrorString>") unless err is
// cudaSuccess.
void check(cudaError_t err, const char* what);
// OutOfMemory for cudaErrorMemoryAllocation, Cuda for the rest.
ErrorKind errorKind(cudaError_t err);
// Checks the launch just enqueued (bad configuration, missing kernel image for this GPU).
void checkLaunch(const char* kernel);

// Validates the device index (a Range KernelError), makes it current on this thread and
// returns its stream, creating the stream on first use.
cudaStream_t activate(int device);

// Exclusive use of the device's scratch buffer while the kernels that use it are enqueued.
// Every user enqueues on the same stream, so the next holder's kernels run after ours; the
// buffer only grows, after waiting for the stream.
class ScratchLease {
 public:
  ScratchLease(int device, size_t bytes);
  void* data() const { return data_; }

 private:
  std::unique_lock<std::mutex> lock_;
  void* data_ = nullptr;
};

// Sub-buffers of one scratch lease, each aligned to 256 bytes. A first pass over a null base
// sizes the lease; a second places the same buffers at its address.
class Carver {
 public:
  explicit Carver(void* base) : base_(static_cast<char*>(base)) {}
  template <class X>
  X* take(int64_t count) {
    offset_ = (offset_ + 255) / 256 * 256;
    X* p = base_ == nullptr ? nullptr : reinterpret_cast<X*>(base_ + offset_);
    offset_ += static_cast<size_t>(count) * sizeof(X);
    return p;
  }
  size_t bytes() const { return offset_; }

 private:
  char* base_;
  size_t offset_ = 0;
};

// --- launch limits --------------------------------------------------------------------------
// gridDim.x is at most 2^31 - 1 (gridDim.y and gridDim.z at most 65535). A block count made
// from a row or element count is never a plain cast, which past 2^32 would wrap to a small
// grid and leave the rest of the work silently undone, and past 2^31 - 1 fail to launch. The
// grid-stride kernels cap their grids (at 65536 blocks); a kernel whose block owns a fixed
// share of the work launches in slices (launchSliced), which leaves its code as it was (a
// grid-stride loop around such a body costs registers: +40-90 in the advantage scans); and
// where a fixed-share grid's limit lies far past any GPU's memory, the entry function rejects
// the size (requireAtMost) instead.
constexpr int64_t kMaxGridX = INT_MAX;

inline unsigned cappedGrid(int64_t needed) {
  return static_cast<unsigned>(needed < kMaxGridX ? needed : kMaxGridX);
}

// Calls launch(firstBlock, blocks) for consecutive slices of at most kMaxGridX of `total`
// blocks; the kernel's block is firstBlock + blockIdx.x. Below the limit: one launch of all
// `total` blocks with firstBlock 0, the launch there was before.
template <class Launch>
void launchSliced(int64_t total, const Launch& launch) {
  for (int64_t first = 0; first < total; first += kMaxGridX) launch(first, cappedGrid(total - first));
}

// Warp-per-row kernels of kWarps warps a block launch through launchWarpRows, in slices of at most
// kMaxGridX blocks; warp w of block firstBlock + blockIdx.x takes row warpRow<kWarps>(firstBlock),
// (firstBlock + blockIdx.x) * kWarps + w. 2^34 rows are more blocks than one grid holds, and a
// [2^34, 1] batch (128 GiB) fits on an H200.
template <int kWarps, class Launch>
void launchWarpRows(int64_t rows, const Launch& launch) {
  launchSliced((rows + kWarps - 1) / kWarps, launch);
}

template <int kWarps>
__device__ inline int64_t warpRow(int64_t firstBlock) {
  return (firstBlock + blockIdx.x) * kWarps + threadIdx.x / 32;
}

// A Range KernelError (a RangeError in JS) "<op>: `<name>` must be at most <max> but is <value>".
inline void requireAtMost(const char* op, const char* name, int64_t value, int64_t max) {
  if (value > max)
    throw KernelError(ErrorKind::Range, std::string(op) + ": `" + name + "` must be at most " + std::to_string(max) +
                                            " but is " + std::to_string(value));
}

// Copies device memory to the host and waits for it (and for everything before it on the stream).
inline void toHost(void* dst, const void* src, size_t bytes, cudaStream_t stream, const char* what) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), what);
  check(cudaStreamSynchronize(stream), what);
}

// MaskedMoments without its default member initialisers, which __shared__ memory cannot have.
struct Moments {
  double count, mean, m2;
};

// The formula of rlhf::combineMoments (kernels.h), operation for operation.
__device__ inline Moments combine(const Moments& a, const Moments& b) {
  if (b.count == 0) return a;
  if (a.count == 0) return b;
  Moments r;
  r.count = a.count + b.count;
  const double delta = b.mean - a.mean;
  r.mean = a.mean + delta * (b.count / r.count);
  r.m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count / r.count);
  return r;
}

}  // namespace detail
}  // namespace cuda
}  // namespace rlhf
