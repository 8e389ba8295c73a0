// The chunk kernels compiled for AVX-512 (F, DQ, BW, VL); called only when the CPU has them.
#define RLHF_CHUNK_NS avx512
#define RLHF_CHUNK_NAME "avx512"
#include "chunk_kernels.h"
#include "policy_chunks.h"
#include "preference_chunks.h"
#include "nn_chunks.h"
#include "kernel_table.h"
