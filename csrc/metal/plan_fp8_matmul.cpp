#include "metal/plan_fp8_matmul.h"

#include "kargs.h"

namespace tandem::metal {

Launch plan_fp8_matmul(int M, int N, int K, int bn, int bk, ActDtype t, bool codes_aligned) {
  const char* op = "plan_fp8_matmul";
  if (M < 1 || N < 1 || K < 1) plan_fail(op, "M, N and K must be positive");
  if (bn < 1 || bk < 1) plan_fail(op, "block sizes must be positive");
  // 16-byte code loads need 16-aligned rows and chunks that never straddle a scale block.
  const bool aligned = codes_aligned && K % 16 == 0 && bk % 16 == 0;
  Launch L;
  L.args_index = 4;
  const std::string dt = dtype_name(t);
  if (M <= kGemvMaxRows) {
    const int mt = M == 1 ? 1 : M == 2 ? 2 : M <= 4 ? 4 : 8;
    L.kernel = "fp8_gemv_" + dt + "_m" + std::to_string(mt) + (aligned ? "_a16" : "_any");
    L.grid = {ceil_div(N, kGemvRows * kGemvSimdgroups), 1, 1};
    L.threadgroup = {uint32_t(kGemvSimdgroups * 32), 1, 1};
    L.threadgroup_memory = 0;
    L.args = pack_args(Fp8GemvArgs{M, N, K, bn, bk, int(ceil_div(K, bk))});
  } else {
    L.kernel = "fp8_gemm_" + dt + (aligned ? "_a16" : "_any");
    L.grid = {ceil_div(M, kGemmBM), ceil_div(N, kGemmBN), 1};  // x tiles fastest: weight tiles reused in cache
    L.threadgroup = {uint32_t(kGemmThreads), 1, 1};
    L.threadgroup_memory = uint32_t((kGemmBM + kGemmBN) * (kGemmBK + kGemmPad) * sizeof(float));
    L.args = pack_args(Fp8GemmArgs{M, N, K, bn, bk, int(ceil_div(K, bk))});
  }
  return L;
}

}  // namespace tandem::metal
