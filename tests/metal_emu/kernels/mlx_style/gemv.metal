// Instantiation-only file, as MLX's .metal files are.
#include "gemv.h"

instantiate_kernel("toy_gemv_float_2", toy_gemv, float, 2)
instantiate_kernel("toy_gemv_half_4", toy_gemv, half, 4)
instantiate_kernel("toy_gemv_bfloat16_2", toy_gemv, bfloat, 2)
