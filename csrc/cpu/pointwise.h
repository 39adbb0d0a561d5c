// Small fused elementwise kernels of a decoder layer, float32 in and out.
// At decode they touch a few thousand values, so what they save is MLX's
// per-op cost (tens of microseconds here) and MLX's slow CPU transcendentals.
#pragma once

#include <cstdint>

#include "cpu/isa.h"

namespace tandem::cpu {

// out = silu(g) * u = g / (1 + e^-g) * u.
void silu_mul(Isa isa, const float* g, const float* u, float* out, int64_t n);
void silu_mul_scalar(const float* g, const float* u, float* out, int64_t n);
void silu_mul_avx2(const float* g, const float* u, float* out, int64_t n);

// Rotate-half rotary embedding of x laid out (B, L, H, D) contiguous: feature i
// < dims/2 of the token at position offset + l pairs with i + dims/2 at angle
// (offset + l) * inv_freq[i]; features past dims pass through. With row_offsets
// (B,) batch row b starts at row_offsets[b] instead (a ragged batch).
void rope(const float* x, float* out, int64_t B, int64_t L, int64_t H, int64_t D, int64_t dims,
          const float* inv_freq, int64_t offset, const int32_t* row_offsets = nullptr);

// Per row of D: y = x * rsqrt(mean(x^2) + eps) * w.
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t D, float eps);

} // namespace tandem::cpu
