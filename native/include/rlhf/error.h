// The one exception type that native code throws; the Node-API glue maps `kind` to a JS class.
#pragma once
#include <stdexcept>
#include <string>

namespace rlhf {

// OutOfMemory: host (std::bad_alloc) or device (cudaErrorMemoryAllocation) memory ran out; the
// call failed cleanly and the next one may succeed.
enum class ErrorKind { Type, Range, CudaUnavailable, Cuda, OutOfMemory, Disposed, Internal };

struct KernelError : std::runtime_error {
  ErrorKind kind;
  KernelError(ErrorKind k, const std::string& message) : std::runtime_error(message), kind(k) {}
};

}  // namespace rlhf
