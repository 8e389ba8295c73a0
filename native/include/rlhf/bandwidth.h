// Memory-bandwidth measurement used as the roofline by every benchmark.
#pragma once
#include <cstdint>

namespace rlhf {

// Best-of-`repeats` STREAM triad over three float arrays of n elements on the thread pool, with
// non-temporal stores; counts 12 bytes per element as STREAM does.
double measureTriadBandwidthGBs(int64_t n, int repeats);

}  // namespace rlhf
