// RLHF_HOST_DEVICE marks the per-element formulas that the scalar references, the CPU kernels and
// the CUDA kernels share: callable from device code when nvcc compiles them, plain inline
// functions otherwise.
#pragma once

#if defined(__CUDACC__)
#define RLHF_HOST_DEVICE __host__ __device__
#else
#define RLHF_HOST_DEVICE
#endif
