// Attention eval_gpu on Apple silicon: the decode, split decode (+ merge) or prefill launches planned by
// plan_attention, with K/V strides taken from the arrays so cache views need no copy.
#include <stdexcept>
#include <string>

#include "mlx/allocator.h"
#include "metal/eval.h"
#include "metal/eval_common.h"
#include "metal/plan_attention.h"

namespace tandem::metal {

void eval_attention_gpu(const mx::Stream& s, const std::vector<mx::array>& inputs, mx::array& out, float scale,
                        bool causal) {
  const auto& q = inputs[0];
  const auto& k = inputs[1];
  const auto& v = inputs[2];
  // Any batch/head/sequence strides are read in place; a strided head dim is not (copies are not
  // available inside eval_gpu: MLX does not export its GPU copy), so the op must pass such inputs
  // through mx::contiguous for GPU streams.
  for (const auto* a : {&q, &k, &v})
    if (a->strides(3) != 1 && a->shape(3) != 1)
      throw std::invalid_argument("fused_attention: the Metal kernels need q, k and v contiguous along the head dim");
  out.set_data(mx::allocator::malloc(out.nbytes()));
  const int B = q.shape(0), Hq = q.shape(1), Lq = q.shape(2), Dk = q.shape(3);
  const int Hkv = k.shape(1), Lk = k.shape(2), Dv = v.shape(3);
  const std::array<int64_t, 3> qs{q.strides(0), q.strides(1), q.strides(2)};
  const std::array<int64_t, 3> ks{k.strides(0), k.strides(1), k.strides(2)};
  const std::array<int64_t, 3> vs{v.strides(0), v.strides(1), v.strides(2)};
  AttentionPlan P = plan_attention(B, Hq, Hkv, Lq, Lk, Dk, Dv, act_dtype("fused_attention", out.dtype()), scale,
                                   causal, qs, ks, vs);
  if (P.launches.size() == 1) {
    encode_launch(s, P.launches[0], {{0, &q}, {1, &k}, {2, &v}}, {{3, &out}});
    return;
  }
  // Split-KV: float32 partial outputs and (max, sum) pairs, then the merge.
  mx::array part_o({int(P.partial_out_elems)}, mx::float32, nullptr, {});
  mx::array part_ml({int(P.partial_ml_elems)}, mx::float32, nullptr, {});
  part_o.set_data(mx::allocator::malloc(part_o.nbytes()));
  part_ml.set_data(mx::allocator::malloc(part_ml.nbytes()));
  encode_launch(s, P.launches[0], {{0, &q}, {1, &k}, {2, &v}}, {{3, &part_o}, {5, &part_ml}});
  encode_launch(s, P.launches[1], {{0, &part_o}, {1, &part_ml}}, {{2, &out}});
  auto& enc = mx::metal::get_command_encoder(s);
  enc.add_temporary(part_o);
  enc.add_temporary(part_ml);
}

}  // namespace tandem::metal
