// Instantiations of the expert-gathered FP8 GEMM: gather_gemm_<dtype>_<a16: K, bk multiples of 16 | any>.
#include "gather_gemm.h"

instantiate_kernel("gather_gemm_float16_a16", gather_gemm, half, true)
instantiate_kernel("gather_gemm_float16_any", gather_gemm, half, false)
instantiate_kernel("gather_gemm_bfloat16_a16", gather_gemm, bfloat, true)
instantiate_kernel("gather_gemm_bfloat16_any", gather_gemm, bfloat, false)
instantiate_kernel("gather_gemm_float32_a16", gather_gemm, float, true)
instantiate_kernel("gather_gemm_float32_any", gather_gemm, float, false)
