// The chunk kernels compiled for the AVX2 + FMA instruction set; called only when the CPU has them.
#define RLHF_CHUNK_NS avx2
#define RLHF_CHUNK_NAME "avx2"
#include "chunk_kernels.h"
#include "policy_chunks.h"
#include "preference_chunks.h"
#include "nn_chunks.h"
#include "kernel_table.h"
