// Memory read bandwidth anchor for the benchmarks: the kernel pool's threads
// stream contiguous chunks, XOR-folding 32-byte words so the loop is bound by
// loads, not arithmetic.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/stream_read.h"
#include "cpu/thread_pool.h"

#if defined(TANDEM_X86)
#include <immintrin.h>
#endif

namespace tandem::cpu {

#if defined(TANDEM_X86)
__attribute__((target("avx2"))) static uint64_t fold_avx2(const uint8_t* p, int64_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 128 <= n; i += 128) {
    a0 = _mm256_xor_si256(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_xor_si256(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_xor_si256(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_xor_si256(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  __m256i a = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
  uint64_t w[4];
  std::memcpy(w, &a, 32);
  uint64_t r = w[0] ^ w[1] ^ w[2] ^ w[3];
  for (; i < n; ++i) r ^= p[i];
  return r;
}
#endif

static uint64_t fold_portable(const uint8_t* p, int64_t n) {
  uint64_t r = 0, w;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::memcpy(&w, p + i, 8);
    r ^= w;
  }
  for (; i < n; ++i) r ^= p[i];
  return r;
}

uint64_t stream_read(const uint8_t* data, int64_t nbytes) {
  // ~1 MB chunks claimed by whichever thread is free (as the GEMV's slabs):
  // with one half per thread, a thread the hypervisor paused held up the
  // whole read and understated the machine's bandwidth.
  constexpr int64_t kChunk = 1 << 20;
  const int threads = num_threads();
  const int parts = static_cast<int>(std::max<int64_t>(threads, std::min<int64_t>(nbytes / kChunk, 64 * threads)));
  std::vector<uint64_t> partial(static_cast<size_t>(parts), 0);
  parallel_for(parts, [&](int t) {
    const int64_t lo = nbytes * t / parts, hi = nbytes * (t + 1) / parts;
#if defined(TANDEM_X86)
    if (__builtin_cpu_supports("avx2")) {
      partial[t] = fold_avx2(data + lo, hi - lo);
      return;
    }
#endif
    partial[t] = fold_portable(data + lo, hi - lo);
  });
  uint64_t r = 0;
  for (uint64_t v : partial) r ^= v;
  return r;
}

} // namespace tandem::cpu
