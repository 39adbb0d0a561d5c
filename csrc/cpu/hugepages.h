// Transparent huge pages for long-lived weight buffers (Linux).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tandem::cpu {

// Asks the kernel to back the 2 MB-aligned interior of [p, p + n) with huge
// pages and to collapse the pages already there (MADV_COLLAPSE, Linux 6.1+).
// Streaming kernels then take one TLB miss per 2 MB instead of per 4 KB (page
// walks are nested, hence dear, in a VM) and the hardware prefetcher is not
// stopped at every 4 KB boundary. Returns the bytes now in huge pages as far as
// the calls succeeded; 0 where unsupported. Never fails: it is advice.
int64_t advise_hugepages(const void* p, size_t n);

} // namespace tandem::cpu
