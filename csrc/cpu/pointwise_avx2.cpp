// Compiled with AVX2/FMA/F16C flags (CMakeLists.txt); only called when the processor has them.
#include "cpu/pointwise.h"
#include "cpu/simd_avx2.h"

namespace tandem::cpu {

// silu(g) = g * sigmoid(g) with e = 2^(-|g| log2 e) <= 1, so exp2 never
// overflows: sigmoid = 1 / (1 + e) for g >= 0 and e / (1 + e) below.
void silu_mul_avx2(const float* g, const float* u, float* out, int64_t n) {
  using S = SimdAvx2;
  const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
  const __m256 neg_log2e = _mm256_set1_ps(-1.4426950408889634f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    const __m256 e = S::exp2(_mm256_mul_ps(_mm256_andnot_ps(sign, x), neg_log2e));
    const __m256 r = _mm256_div_ps(one, _mm256_add_ps(one, e));
    const __m256 sig = _mm256_blendv_ps(r, _mm256_mul_ps(e, r), x);  // sign bit of x picks e * r
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(x, sig), _mm256_loadu_ps(u + i)));
  }
  silu_mul_scalar(g + i, u + i, out + i, n - i);
}

} // namespace tandem::cpu
