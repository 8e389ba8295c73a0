# CPU-only mirror of the addon for node-gyp (`npm run build:gyp`). The primary build is
# CMakeLists.txt (cmake-js), which also builds CUDA and the native tests; keep the source lists
# of the two in step.
{
  "target_defaults": {
    "cflags_cc": ["-std=c++17", "-O3", "-ffp-contract=off", "-fexceptions"],
    "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
    "include_dirs": ["native/include", "native/cpu", "native/gyp"],
  },
  "targets": [
    {
      # The AVX2 variant of the chunk kernels, compiled with its own flags and chosen at run time.
      "target_name": "rlhf_avx2",
      "type": "static_library",
      "sources": ["native/cpu/kernels_avx2.cpp", "native/cpu/gemm_avx2.cpp"],
      "cflags_cc": ["-mavx2", "-mfma"],
    },
    {
      # The AVX-512 variant of the chunk kernels, likewise.
      "target_name": "rlhf_avx512",
      "type": "static_library",
      "sources": ["native/cpu/kernels_avx512.cpp", "native/cpu/gemm_avx512.cpp"],
      "cflags_cc": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mfma",
                    "-Wno-uninitialized", "-Wno-maybe-uninitialized"],  # GCC bug 105593, as in CMakeLists.txt
    },
    {
      "target_name": "rlhf",
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS",
                  "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],  # as in CMakeLists.txt
      "conditions": [
        ["target_arch=='x64'", {"dependencies": ["rlhf_avx2", "rlhf_avx512"],
                                  "defines": ["RLHF_HAVE_AVX2_VARIANT", "RLHF_HAVE_AVX512_VARIANT"]}],
      ],
      "sources": [
        "native/reference/advantages.cpp",
        "native/reference/statistics.cpp",
        "native/reference/whiten_plan.cpp",
        "native/reference/policy.cpp",
        "native/reference/preference.cpp",
        "native/reference/nn.cpp",
        "native/cpu/thread_pool.cpp",
        "native/cpu/dispatch.cpp",
        "native/cpu/policy.cpp",
        "native/cpu/preference.cpp",
        "native/cpu/nn.cpp",
        "native/cpu/gemm.cpp",
        "native/cpu/bandwidth.cpp",
        "native/cpu/host_memory.cpp",
        "native/cpu/kernels_base.cpp",
        "native/cuda/cuda_unavailable.cpp",
        "native/addon/addon.cpp",
        "native/addon/device_buffer.cpp",
        "native/addon/glue.cpp",
        "native/addon/ops.cpp",
        "native/addon/policy_ops.cpp",
        "native/addon/preference_ops.cpp",
        "native/addon/nn_ops.cpp",
        "native/addon/runtime.cpp",
      ],
    },
  ],
}
