// Compiled with AVX2/FMA/F16C flags (CMakeLists.txt); only called when the processor has them.
#include "cpu/fp8_matmul_simd.h"
#include "cpu/simd_avx2.h"

namespace tandem::cpu {
void fp8_matmul_avx2(const Fp8MatmulArgs& a) { simd::fp8_matmul<SimdAvx2>(a); }
void fp8_gemv_batch_avx2(const Fp8MatmulArgs* jobs, int64_t n) { simd::gemv_batch<SimdAvx2>(jobs, n); }
} // namespace tandem::cpu
