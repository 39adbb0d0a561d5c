// Instantiations of the FP8 GEMM: fp8_gemm_<dtype>_<a16: K, bk multiples of 16 | any>.
#include "fp8_gemm.h"

instantiate_kernel("fp8_gemm_float16_a16", fp8_gemm, half, true)
instantiate_kernel("fp8_gemm_float16_any", fp8_gemm, half, false)
instantiate_kernel("fp8_gemm_bfloat16_a16", fp8_gemm, bfloat, true)
instantiate_kernel("fp8_gemm_bfloat16_any", fp8_gemm, bfloat, false)
instantiate_kernel("fp8_gemm_float32_a16", fp8_gemm, float, true)
instantiate_kernel("fp8_gemm_float32_any", fp8_gemm, float, false)
