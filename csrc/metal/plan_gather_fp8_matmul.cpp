#include "metal/plan_gather_fp8_matmul.h"

#include <algorithm>
#include <climits>

#include "kargs.h"

namespace tandem::metal {

GatherPlan plan_gather_fp8_matmul(int T, int k, int E, int N, int K, int bn, int bk, ActDtype t,
                                  bool codes_aligned) {
  const char* op = "plan_gather_fp8_matmul";
  if (T < 1 || k < 1 || E < 1 || N < 1 || K < 1) plan_fail(op, "T, k, E, N and K must be positive");
  if (bn < 1 || bk < 1) plan_fail(op, "block sizes must be positive");
  if (E > kRouteMaxExperts)
    plan_fail(op, "at most " + std::to_string(kRouteMaxExperts) + " experts (the route counts them in threadgroup memory)");
  const int64_t P = int64_t(T) * k;
  if (P > INT_MAX / 16) plan_fail(op, "T * k is too large");  // the route offsets are int32
  const bool aligned = codes_aligned && K % 16 == 0 && bk % 16 == 0;
  const std::string dt = dtype_name(t);
  const bool gemv = P <= kGatherGemvMaxPairs;
  const int mt = P == 1 ? 1 : P == 2 ? 2 : P <= 4 ? 4 : 8;
  const int rows_per_item = gemv ? mt : kGemmBM;
  // Items: sum over used experts of ceil(rows / R) <= P / R + (experts used) <= P / R + min(E, P);
  // one per used expert when R >= P.
  const int64_t used = std::min<int64_t>(E, P);
  const int max_items = int(rows_per_item >= P ? used : used + P / rows_per_item);
  const int pairs_offset = kRouteHeader + 4 * max_items;
  const int scales_ld = int(ceil_div(K, bk)), scale_rows = int(ceil_div(N, bn));

  GatherPlan G;
  G.variant = gemv ? "gemv" : "gemm";
  G.max_items = max_items;
  G.route_elems = pairs_offset + P;
  Launch R;
  R.kernel = "gather_route_" + dt;
  R.threadgroup = {uint32_t(kRouteThreads), 1, 1};
  R.threadgroup_memory = uint32_t((kRouteMaxExperts + 32 + 1) * sizeof(int32_t));  // count[], sums[]
  R.args_index = 3;
  R.args = pack_args(GatherRouteArgs{int(P), E, N, rows_per_item, max_items, pairs_offset});
  G.launches.push_back(R);

  Launch M;
  M.args_index = 5;
  if (gemv) {
    M.kernel = "gather_gemv_" + dt + "_m" + std::to_string(mt) + (aligned ? "_a16" : "_any");
    M.grid = {ceil_div(N, kGemvRows * kGemvSimdgroups), uint32_t(max_items), 1};
    M.threadgroup = {uint32_t(kGemvSimdgroups * 32), 1, 1};
    M.args = pack_args(GatherGemvArgs{N, K, bn, bk, scales_ld, scale_rows, k, pairs_offset});
  } else {
    M.kernel = "gather_gemm_" + dt + (aligned ? "_a16" : "_any");
    M.grid = {uint32_t(max_items), ceil_div(N, kGemmBN), 1};  // items of one expert adjacent: weight tiles reused
    M.threadgroup = {uint32_t(kGemmThreads), 1, 1};
    M.threadgroup_memory =
        uint32_t((kGemmBM + kGemmBN) * (kGemmBK + kGemmPad) * sizeof(float) + kGemmBM * sizeof(int32_t));
    M.args = pack_args(GatherGemmArgs{Fp8GemmArgs{int(P), N, K, bn, bk, scales_ld}, scale_rows, k, pairs_offset});
  }
  G.launches.push_back(M);
  return G;
}

}  // namespace tandem::metal
