// Fp8Matmul::eval_gpu on Apple silicon: the GEMV (M <= 8) or GEMM kernel planned by plan_fp8_matmul.
#include "mlx/allocator.h"
#include "metal/eval.h"
#include "metal/eval_common.h"
#include "metal/plan_fp8_matmul.h"

namespace tandem::metal {

void eval_fp8_matmul_gpu(const mx::Stream& s, const std::vector<mx::array>& inputs, mx::array& out, int bn,
                         int bk) {
  const auto& x = inputs[0];
  const auto& codes = inputs[1];
  const auto& scales = inputs[2];
  out.set_data(mx::allocator::malloc(out.nbytes()));
  const int M = x.shape(0), K = x.shape(1), N = codes.shape(0);
  // The 16-byte code loads also need the codes' start aligned (a row slice of a bigger weight may not be).
  const bool codes_aligned = codes.offset() % 16 == 0;
  Launch L = plan_fp8_matmul(M, N, K, bn, bk, act_dtype("fp8_matmul", out.dtype()), codes_aligned);
  encode_launch(s, L, {{0, &x}, {1, &codes}, {2, &scales}}, {{3, &out}});
}

}  // namespace tandem::metal
