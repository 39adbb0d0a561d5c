// Portable FP8 matmul: the readable specification, and the path on processors
// without a SIMD kernel. Same blocking of scales as the SIMD GEMV.
#include <algorithm>

#include "cpu/fp8.h"
#include "cpu/kernels.h"
#include "cpu/thread_pool.h"

namespace tandem::cpu {

void fp8_matmul_scalar(const Fp8MatmulArgs& a) {
  const float* lut = fp8::table().v;
  const int64_t sc = a.scale_cols();
  const int parts = a.M * a.N * a.K < (1 << 16) ? 1 : num_threads();
  parallel_for(parts, [&](int t) {
    const int64_t n0 = a.N * t / parts, n1 = a.N * (t + 1) / parts;
    for (int64_t n = n0; n < n1; ++n) {
      const uint8_t* wrow = a.codes + n * a.K;
      const float* srow = a.scales + (n / a.bn) * sc;
      for (int64_t m = 0; m < a.M; ++m) {
        const float* xrow = a.x + m * a.K;
        float acc = 0.0f;
        for (int64_t kb = 0; kb < a.K; kb += a.bk) {
          float part = 0.0f;
          for (int64_t k = kb; k < std::min(a.K, kb + a.bk); ++k) part += lut[wrow[k]] * xrow[k];
          acc += part * srow[kb / a.bk];
        }
        a.y[m * a.N + n] = acc;
      }
    }
  });
}

void fp8_matmul(Isa isa, const Fp8MatmulArgs& a) {
  switch (isa) {
#if defined(TANDEM_X86)
    case Isa::Avx512: return fp8_matmul_avx512(a);
    case Isa::Avx2: return fp8_matmul_avx2(a);
#elif defined(TANDEM_ARM)
    case Isa::Neon: return fp8_matmul_neon(a);
#endif
    default: return fp8_matmul_scalar(a);
  }
}

void fp8_gemv_batch(Isa isa, const Fp8MatmulArgs* jobs, int64_t n) {
  switch (isa) {
#if defined(TANDEM_X86)
    case Isa::Avx512: return fp8_gemv_batch_avx512(jobs, n);
    case Isa::Avx2: return fp8_gemv_batch_avx2(jobs, n);
#elif defined(TANDEM_ARM)
    case Isa::Neon: return fp8_gemv_batch_neon(jobs, n);
#endif
    default:
      for (int64_t j = 0; j < n; ++j) fp8_matmul_scalar(jobs[j]);
  }
}

} // namespace tandem::cpu
