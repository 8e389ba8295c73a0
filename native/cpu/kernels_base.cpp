// The chunk kernels compiled for the x86-64 baseline (SSE2).
#define RLHF_CHUNK_NS baseline
#define RLHF_CHUNK_NAME "x86-64"
#include "chunk_kernels.h"
#include "policy_chunks.h"
#include "preference_chunks.h"
#include "nn_chunks.h"
#include "kernel_table.h"
