// Compiled with AVX-512 flags (CMakeLists.txt); only called when the processor has them.
#include "cpu/fp8_matmul_simd.h"
#include "cpu/simd_avx512.h"

namespace tandem::cpu {
void fp8_matmul_avx512(const Fp8MatmulArgs& a) { simd::fp8_matmul<SimdAvx512>(a); }
void fp8_gemv_batch_avx512(const Fp8MatmulArgs* jobs, int64_t n) { simd::gemv_batch<SimdAvx512>(jobs, n); }
} // namespace tandem::cpu
