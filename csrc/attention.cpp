#include "attention.h"

#include <cmath>
#include <cstring>

#include "cpu/attention.h"
#include "validate.h"
#ifdef TANDEM_METAL
#include "metal/eval.h"
#endif

namespace tandem {

cpu::ElemType elem_type(mx::Dtype t) {
  if (t == mx::float16) return cpu::ElemType::F16;
  if (t == mx::bfloat16) return cpu::ElemType::BF16;
  return cpu::ElemType::F32;
}

// Base pointer and (batch, head, position) element strides of a 4-d input.
// Views with a contiguous last dimension (e.g. cache[:, :, :L, :]) are read
// in place, whatever their other strides; anything else (a transposed last
// dimension) is gathered into `tmp` first.
const void* strided_view(const mx::array& a, std::vector<char>& tmp, int64_t strides[3]) {
  const auto& st = a.strides();
  if (st[3] == 1 || a.shape(3) == 1) {
    for (int i = 0; i < 3; ++i) strides[i] = st[i];
    return a.data<char>();
  }
  const size_t item = a.itemsize();
  tmp.resize(a.size() * item);
  const char* src = a.data<char>();
  char* dst = tmp.data();
  for (int64_t i0 = 0; i0 < a.shape(0); ++i0)
    for (int64_t i1 = 0; i1 < a.shape(1); ++i1)
      for (int64_t i2 = 0; i2 < a.shape(2); ++i2)
        for (int64_t i3 = 0; i3 < a.shape(3); ++i3, dst += item)
          std::memcpy(dst, src + (i0 * st[0] + i1 * st[1] + i2 * st[2] + i3 * st[3]) * item, item);
  strides[2] = a.shape(3);
  strides[1] = strides[2] * a.shape(2);
  strides[0] = strides[1] * a.shape(1);
  return tmp.data();
}

void FusedAttention::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  std::vector<mx::array> outs{out};
  dispatch_cpu(stream(), inputs, outs, [scale = scale_, causal = causal_, isa = isa_](auto& in, auto& out) {
    const auto &q = in[0], &k = in[1], &v = in[2];
    std::vector<char> qtmp, ktmp, vtmp;
    cpu::AttentionArgs a;
    a.q = strided_view(q, qtmp, a.qs);
    a.k = strided_view(k, ktmp, a.ks);
    a.v = strided_view(v, vtmp, a.vs);
    a.out = out[0].template data<char>();
    a.type = elem_type(q.dtype());
    a.B = q.shape(0);
    a.Hq = q.shape(1);
    a.Lq = q.shape(2);
    a.Dk = q.shape(3);
    a.Hkv = k.shape(1);
    a.Lk = k.shape(2);
    a.Dv = v.shape(3);
    a.scale = scale;
    a.causal = causal;
    cpu::attention(isa, a);
  });
}

void FusedAttention::eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) {
#ifdef TANDEM_METAL
  metal::eval_attention_gpu(stream(), inputs, out, scale_, causal_);
#else
  (void)inputs, (void)out;
  no_gpu(name());
#endif
}

mx::array fused_attention(const mx::array& q, const mx::array& k, const mx::array& v,
                          std::optional<float> scale, bool causal, mx::StreamOrDevice s) {
  const char* op = "fused_attention";
  check_float(op, "q", q);
  check_float(op, "k", k);
  check_float(op, "v", v);
  if (k.dtype() != q.dtype() || v.dtype() != q.dtype())
    fail(op, "q, k and v must have the same dtype, got " + dtype_str(q.dtype()) + ", " +
                 dtype_str(k.dtype()) + " and " + dtype_str(v.dtype()));
  check_ndim(op, "q (B, Hq, Lq, Dk)", q, 4);
  check_ndim(op, "k (B, Hkv, Lk, Dk)", k, 4);
  check_ndim(op, "v (B, Hkv, Lk, Dv)", v, 4);
  const std::string shapes = "; q " + shape_str(q.shape()) + ", k " + shape_str(k.shape()) + ", v " +
                             shape_str(v.shape());
  if (q.size() == 0 || k.size() == 0 || v.size() == 0) fail(op, "empty dimensions are not allowed" + shapes);
  if (k.shape(0) != q.shape(0) || v.shape(0) != q.shape(0))
    fail(op, "q, k and v must have the same batch size" + shapes);
  if (k.shape(1) != v.shape(1) || k.shape(2) != v.shape(2))
    fail(op, "k and v must have the same number of heads and the same length" + shapes);
  if (q.shape(1) % k.shape(1) != 0)
    fail(op, "the number of query heads (" + std::to_string(q.shape(1)) +
                 ") must be a multiple of the number of key/value heads (" + std::to_string(k.shape(1)) +
                 ")" + shapes);
  if (k.shape(3) != q.shape(3)) fail(op, "q and k must have the same head dimension" + shapes);
  if (causal && q.shape(2) > k.shape(2))
    fail(op, "with causal=True the queries are the last Lq of the Lk key positions, so Lq (" +
                 std::to_string(q.shape(2)) + ") must not exceed Lk (" + std::to_string(k.shape(2)) + ")");
  const float sc = scale ? *scale : 1.0f / std::sqrt(static_cast<float>(q.shape(3)));
  if (!std::isfinite(sc)) fail(op, "scale must be finite, got " + std::to_string(sc));
  auto isa = cpu::active_isa();
  mx::Shape out_shape{q.shape(0), q.shape(1), q.shape(2), v.shape(3)};
  return mx::array(out_shape, q.dtype(),
                   std::make_shared<FusedAttention>(mx::to_stream(s), sc, causal, isa), {q, k, v});
}

} // namespace tandem
