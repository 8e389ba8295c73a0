// What a node-gyp build compiled in (binding.gyp; CMake generates its own from build_info.h.in).
#pragma once
#define RLHF_BUILD_COMPILER "GNU " __VERSION__
#define RLHF_BUILD_SIMD "x86-64,avx2,avx512"
#define RLHF_BUILD_CUDA_ARCHS ""
#define RLHF_BUILD_CUDA_VERSION ""
#define RLHF_BUILD_CUDA_REQUEST "OFF"
#define RLHF_BUILD_TYPE "Release"
#define RLHF_BUILD_SYSTEM "node-gyp"
