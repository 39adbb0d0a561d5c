// Kernel choice and launch geometry of the FP8 dequant-matmul on Metal (metal/fp8_gemv.h, fp8_gemm.h).
#pragma once

#include "metal/launch.h"

namespace tandem::metal {

// Rows of x up to this use the GEMV (decode); more use the tiled GEMM.
constexpr int kGemvMaxRows = 8;

// y (M, N) = x (M, K) @ dequant(codes (N, K), scales, block (bn, bk))^T with x, y of dtype t.
// Buffers: 0 x, 1 codes, 2 scales, 3 y, 4 args. codes_aligned: the codes start on a 16-byte boundary
// (needed by the 16-byte loads). Throws std::invalid_argument on bad sizes.
Launch plan_fp8_matmul(int M, int N, int K, int bn, int bk, ActDtype t, bool codes_aligned = true);

}  // namespace tandem::metal
