#include "cpu/pointwise.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/thread_pool.h"

namespace tandem::cpu {

// e = e^-|g| <= 1 never overflows: sigmoid = 1 / (1 + e), or e / (1 + e) for g < 0.
void silu_mul_scalar(const float* g, const float* u, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::exp(-std::fabs(g[i])), r = 1.0f / (1.0f + e);
    out[i] = g[i] * (std::signbit(g[i]) ? e * r : r) * u[i];
  }
}

void silu_mul(Isa isa, const float* g, const float* u, float* out, int64_t n) {
  // Prefill sizes (a few million values) are split over the pool.
  constexpr int64_t kChunk = 1 << 16;
  const int parts = static_cast<int>(std::clamp<int64_t>((n + kChunk - 1) / kChunk, 1, 4 * num_threads()));
  parallel_for(parts, [&](int t) {
    const int64_t lo = n * t / parts, hi = n * (t + 1) / parts;
#if defined(TANDEM_X86)
    if (isa == Isa::Avx2 || isa == Isa::Avx512) return silu_mul_avx2(g + lo, u + lo, out + lo, hi - lo);
#endif
    (void)isa;
    silu_mul_scalar(g + lo, u + lo, out + lo, hi - lo);
  });
}

void rope(const float* x, float* out, int64_t B, int64_t L, int64_t H, int64_t D, int64_t dims,
          const float* inv_freq, int64_t offset, const int32_t* row_offsets) {
  const int64_t half = dims / 2;
  std::vector<float> cs(static_cast<size_t>(2 * half));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = 0; l < L; ++l) {
      // The angle is rounded to float32 first, as transformers computes it; a row at its own
      // position gets exactly the numbers it would get alone.
      const float pos = static_cast<float>((row_offsets ? row_offsets[b] : offset) + l);
      for (int64_t i = 0; i < half; ++i) {
        const float a = pos * inv_freq[i];
        cs[i] = std::cos(a);
        cs[half + i] = std::sin(a);
      }
      for (int64_t h = 0; h < H; ++h) {
        const int64_t row = ((b * L + l) * H + h) * D;
        const float* xr = x + row;
        float* o = out + row;
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = xr[i], x2 = xr[i + half], c = cs[i], s = cs[half + i];
          o[i] = x1 * c - x2 * s;
          o[i + half] = x2 * c + x1 * s;
        }
        for (int64_t i = dims; i < D; ++i) o[i] = xr[i];
      }
    }
}

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t D, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * D;
    // Eight partial sums so the compiler vectorises without reassociating.
    float acc[8] = {};
    int64_t i = 0;
    for (; i + 8 <= D; i += 8)
      for (int j = 0; j < 8; ++j) acc[j] += xr[i + j] * xr[i + j];
    float ss = 0.0f;
    for (int j = 0; j < 8; ++j) ss += acc[j];
    for (; i < D; ++i) ss += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(D) + eps);
    float* yr = y + r * D;
    for (int64_t k = 0; k < D; ++k) yr[k] = xr[k] * inv * w[k];
  }
}

} // namespace tandem::cpu
