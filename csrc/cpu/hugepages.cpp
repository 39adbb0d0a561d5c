#include "cpu/hugepages.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace tandem::cpu {

int64_t advise_hugepages(const void* p, size_t n) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + n) & ~(kHuge - 1);
  if (hi <= lo) return 0;
  void* start = reinterpret_cast<void*>(lo);
  if (madvise(start, hi - lo, MADV_HUGEPAGE) != 0) return 0;
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
  // Fails with EINVAL before Linux 6.1 or EAGAIN/ENOMEM without free huge pages;
  // MADV_HUGEPAGE alone still lets khugepaged collapse the range later.
  if (madvise(start, hi - lo, MADV_COLLAPSE) != 0) return 0;
  return static_cast<int64_t>(hi - lo);
#else
  (void)p, (void)n;
  return 0;
#endif
}

} // namespace tandem::cpu
