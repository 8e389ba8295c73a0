// Memory-bandwidth measurement used as the roofline by every benchmark.
#pragma once
#include <cstdint>

namespace rlhf {

// Best-of-`repeats` STREAM triad over three float arrays of n elements on the thread pool, with
// non-temporal stores; counts 12 bytes per element as STREAM does.
double measureTriadBandwidthGBs(int64_t n, int repeats);

// Seconds of one triad a = b + 3c over n elements on the thread pool (12n bytes moved): the
// benchmarks run it between the runs of an op, so that each op is set against the bandwidth of
// the moments it ran in.
double triadSeconds(float* a, const float* b, const float* c, int64_t n);

// Seconds of one pass that only reads n floats on the thread pool (4n bytes), each thread's share
// front to back: the roofline of the ops that only read, which on some machines is well below the
// triad's (a core keeps only so many reads in flight; the triad's streamed stores do not count
// against them).
double readSeconds(const float* x, int64_t n);

// Elements per array of a triad that measures memory rather than cache: its three arrays
// together at least twice the last-level cache (as the OS reports it; 32 MiB where it does not),
// and at least 16M elements. Run between an op's runs, it also leaves none of the op's data in
// the cache, so that the op is timed from memory too.
int64_t memoryTriadElements();

}  // namespace rlhf
