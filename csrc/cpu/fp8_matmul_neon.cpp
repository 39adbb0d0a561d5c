// ARMv8 NEON path (Apple silicon CPUs, Linux on ARM).
#include "cpu/fp8_matmul_simd.h"
#include "cpu/simd_neon.h"

namespace tandem::cpu {
void fp8_matmul_neon(const Fp8MatmulArgs& a) { simd::fp8_matmul<SimdNeon>(a); }
void fp8_gemv_batch_neon(const Fp8MatmulArgs* jobs, int64_t n) { simd::gemv_batch<SimdNeon>(jobs, n); }
} // namespace tandem::cpu
