// Huge pages for large new host outputs. A loop that passes no `out` gets fresh arrays from the
// system each call, and the kernel that first writes one takes a page fault every 4 KiB: on the
// 2-core AMD machine a [1024,32000] log-prob gradient cost 40 ms new against 5 ms reused. Backed
// by 2 MiB pages it faulted 512 times less often (12 ms).
#pragma once
#include <cstddef>

namespace rlhf {

// Whether adviseHugePages asks for huge pages: on Linux with transparent huge pages in `madvise`
// mode, unless RLHF_HUGE_PAGES=0. (In `always` mode the system backs large arrays so already;
// in `never` mode it does not at all.)
bool hugePagesAdvisable();

// Asks that the whole 2 MiB pages within [p, p + bytes) be backed by huge pages when first
// touched; pages already touched keep their size. Returns whether it asked.
bool adviseHugePages(void* p, size_t bytes);

// Whether the first whole 2 MiB page within [p, p + bytes) carries that request (the VmFlags of
// its mapping in /proc/self/smaps include `hg`); false when there is no whole page. For tests.
bool hugePagesRequestedIn(const void* p, size_t bytes);

}  // namespace rlhf
