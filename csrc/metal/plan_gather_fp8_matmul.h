// Kernel choice and launch geometry of the expert-gathered FP8 matmul on Metal (metal/gather_route.h,
// gather_gemv.h, gather_gemm.h): the route, then the GEMV or the GEMM.
#pragma once

#include "metal/launch.h"

namespace tandem::metal {

// P = T*k pairs up to this use the GEMV: no expert can then have more rows than one pass holds, so
// every selected expert's codes are read exactly once. More pairs use the tiled GEMM.
constexpr int kGatherGemvMaxPairs = 8;

struct GatherPlan {
  std::string variant;           // "gemv" or "gemm"
  std::vector<Launch> launches;  // encoded in order: gather_route_*, then gather_gemv_* or gather_gemm_*
  int max_items = 0;             // work-item slots the matmul launches
  // int32 scratch written by the route and read by the matmul: header, items, pair list (kargs.h).
  int64_t route_elems = 0;
};

// out (T*k, N) row t*k + j = x (T, K) row t @ dequant(codes[indices[t, j]] (N, K), scales[...], (bn, bk))^T,
// codes (E, N, K), x and out of dtype t. Route buffers: 0 indices, 1 out, 2 route, 3 args; matmul:
// 0 x, 1 codes, 2 scales, 3 out, 4 route, 5 args. codes_aligned: the codes start on a 16-byte boundary.
// Throws std::invalid_argument on bad sizes.
GatherPlan plan_gather_fp8_matmul(int T, int k, int E, int N, int K, int bn, int bk, ActDtype t,
                                  bool codes_aligned = true);

}  // namespace tandem::metal
