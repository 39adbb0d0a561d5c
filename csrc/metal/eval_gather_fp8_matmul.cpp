// GatherFp8Matmul::eval_gpu on Apple silicon: the route (grouping the (row, slot) pairs by expert on the
// GPU into an int32 scratch), then the GEMV (T*k <= 8) or GEMM over its work items, as planned by
// plan_gather_fp8_matmul. Out-of-range experts give NaN output rows (the route writes them).
#include "mlx/allocator.h"
#include "metal/eval.h"
#include "metal/eval_common.h"
#include "metal/plan_gather_fp8_matmul.h"

namespace tandem::metal {

void eval_gather_fp8_matmul_gpu(const mx::Stream& s, const std::vector<mx::array>& inputs, mx::array& out, int bn,
                                int bk) {
  const auto& x = inputs[0];
  const auto& codes = inputs[1];
  const auto& scales = inputs[2];
  const auto& indices = inputs[3];
  out.set_data(mx::allocator::malloc(out.nbytes()));
  const int T = x.shape(0), K = x.shape(1), E = codes.shape(0), N = codes.shape(1), k = indices.shape(1);
  // The 16-byte code loads also need the codes' start aligned (a slice of a bigger tensor may not be).
  const bool codes_aligned = codes.offset() % 16 == 0;
  GatherPlan P = plan_gather_fp8_matmul(T, k, E, N, K, bn, bk, act_dtype("gather_fp8_matmul", out.dtype()),
                                        codes_aligned);
  mx::array route({int(P.route_elems)}, mx::int32, nullptr, {});
  route.set_data(mx::allocator::malloc(route.nbytes()));
  encode_launch(s, P.launches[0], {{0, &indices}}, {{1, &out}, {2, &route}});
  encode_launch(s, P.launches[1], {{0, &x}, {1, &codes}, {2, &scales}, {4, &route}}, {{3, &out}});
  mx::metal::get_command_encoder(s).add_temporary(route);
}

}  // namespace tandem::metal
