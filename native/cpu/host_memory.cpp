#include "rlhf/host_memory.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace rlhf {

constexpr uintptr_t kHugePage = uintptr_t{2} << 20;

// The whole 2 MiB pages within [p, p + bytes): [first, last), empty when there is none.
struct WholePages {
  uintptr_t first, last;
  WholePages(const void* p, size_t bytes)
      : first((reinterpret_cast<uintptr_t>(p) + kHugePage - 1) & ~(kHugePage - 1)),
        last((reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHugePage - 1)) {}
  bool empty() const { return last <= first; }
};

static bool readHugePagesAdvisable() {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const char* env = std::getenv("RLHF_HUGE_PAGES");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  std::ifstream mode("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  return std::getline(mode, line) && line.find("[madvise]") != std::string::npos;
#else
  return false;
#endif
}

bool hugePagesAdvisable() {
  static const bool advisable = readHugePagesAdvisable();
  return advisable;
}

bool adviseHugePages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const WholePages pages(p, bytes);
  if (!hugePagesAdvisable() || pages.empty()) return false;
  return madvise(reinterpret_cast<void*>(pages.first), pages.last - pages.first, MADV_HUGEPAGE) == 0;
#else
  (void)p;
  (void)bytes;
  return false;
#endif
}

bool hugePagesRequestedIn(const void* p, size_t bytes) {
  const WholePages pages(p, bytes);
  if (pages.empty()) return false;
  std::ifstream smaps("/proc/self/smaps");
  const uintptr_t at = pages.first;
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long long lo = 0, hi = 0;
    char dash = 0;
    std::istringstream header(line);
    if (header >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = lo <= at && at < hi;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      std::istringstream flags(line.substr(8));
      std::string flag;
      while (flags >> flag)
        if (flag == "hg") return true;
      return false;
    }
  }
  return false;
}

}  // namespace rlhf
