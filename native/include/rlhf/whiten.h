// Masked statistics and whitening presets: turns the moments of the valid elements into the
// numbers each library reports (SEMANTICS.md §2). Host code shared by every backend.
#pragma once
#include "rlhf/kernels.h"

namespace rlhf {

enum class WhitenPreset : int32_t { Trl = 0, Verl = 1, OpenRlhf = 2, CleanRl = 3 };

struct WhitenOptions {
  WhitenPreset preset = WhitenPreset::Trl;
  bool shiftMean = true;   // false adds the mean back (reward whitening)
  bool scaleByStd = true;  // OpenRLHF's mean-only mode when false
  double eps = 1e-8;
};

// Mean of the valid elements; 0 when there are none (the empty mean, as verl's +1e-8 gives).
double maskedMeanFromMoments(const MaskedMoments& m);
// Variance of the valid elements; throws a Range KernelError naming `op` when `unbiased` and
// fewer than 2 are valid (TRL and verl raise there too). 0 for an empty population variance.
double maskedVarFromMoments(const MaskedMoments& m, bool unbiased, const char* op);
// out = (x - center)*scale + shift as each preset computes it; throws a Range KernelError when
// the preset cannot whiten that few valid elements.
AffineArgs planWhiten(const MaskedMoments& m, const WhitenOptions& o);

}  // namespace rlhf
