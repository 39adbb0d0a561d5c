// Elementwise FP8 codec and block (de)quantization on the CPU. These run at
// load/convert time, not per token, so they are portable loops split over the pool.
#include <algorithm>
#include <cmath>

#include "cpu/fp8.h"
#include "cpu/kernels.h"
#include "cpu/thread_pool.h"

namespace tandem::cpu {
namespace {

template <class F>
void parallel_chunks(int64_t n, int64_t min_chunk, F&& f) {
  int parts = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), n / min_chunk)));
  parallel_for(parts, [&](int t) { f(n * t / parts, n * (t + 1) / parts); });
}

}  // namespace

void encode_fp8(const float* x, uint8_t* out, int64_t n) {
  parallel_chunks(n, 1 << 16, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) out[i] = fp8::encode(x[i]);
  });
}

void decode_fp8(const uint8_t* c, float* out, int64_t n) {
  const float* lut = fp8::table().v;
  parallel_chunks(n, 1 << 16, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) out[i] = lut[c[i]];
  });
}

void quantize_fp8_blocks(const float* w, int64_t N, int64_t K, int64_t bn, int64_t bk,
                         uint8_t* codes, float* scales) {
  const int64_t rb = (N + bn - 1) / bn, cb = (K + bk - 1) / bk;
  parallel_chunks(rb, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t r0 = i * bn, r1 = std::min(N, r0 + bn);
      for (int64_t j = 0; j < cb; ++j) {
        const int64_t c0 = j * bk, c1 = std::min(K, c0 + bk);
        float amax = 0.0f;
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(w[r * K + c]));
        const float s = amax > 0.0f ? amax / 448.0f : 1.0f;
        scales[i * cb + j] = s;
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < c1; ++c) codes[r * K + c] = fp8::encode(w[r * K + c] / s);
      }
    }
  });
}

void dequantize_fp8_blocks(const uint8_t* codes, const float* scales, int64_t N, int64_t K,
                           int64_t bn, int64_t bk, float* out) {
  const float* lut = fp8::table().v;
  const int64_t cb = (K + bk - 1) / bk;
  parallel_chunks(N, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r)
      for (int64_t c = 0; c < K; ++c)
        out[r * K + c] = lut[codes[r * K + c]] * scales[(r / bn) * cb + c / bk];
  });
}

} // namespace tandem::cpu
