#include "pointwise.h"

#include "cpu/pointwise.h"
#include "mlx/ops.h"
#include "validate.h"

namespace tandem {

void SiluMul::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  std::vector<mx::array> outs{out};
  dispatch_cpu(stream(), inputs, outs, [isa = isa_](auto& in, auto& out) {
    std::vector<float> g, u, y(out[0].size());
    cpu::silu_mul(isa, as_float32(in[0], g), as_float32(in[1], u), y.data(), static_cast<int64_t>(y.size()));
    store_float32(y.data(), out[0]);
  });
}

void Rope::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  std::vector<mx::array> outs{out};
  dispatch_cpu(stream(), inputs, outs, [offset = offset_](auto& in, auto& out) {
    const auto& x = in[0];
    std::vector<float> xf, y(x.size());
    cpu::rope(as_float32(x, xf), y.data(), x.shape(0), x.shape(1), x.shape(2), x.shape(3),
              2 * in[1].shape(0), in[1].template data<float>(), offset,
              in.size() > 2 ? in[2].template data<int32_t>() : nullptr);
    store_float32(y.data(), out[0]);
  });
}

void RmsNorm::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  dispatch_cpu(stream(), inputs, outputs, [eps = eps_, residual = residual_](auto& in, auto& out) {
    const auto& x = in[0];
    const int64_t D = x.shape(-1), rows = static_cast<int64_t>(x.size()) / D;
    std::vector<float> xf, rf, wf, h, y(x.size());
    const float* src = as_float32(x, xf);
    if (residual) {
      // h is rounded to its dtype before the norm, exactly as `x + r` then a norm would be.
      const float* r = as_float32(in[1], rf);
      h.resize(x.size());
      for (size_t i = 0; i < h.size(); ++i) h[i] = src[i] + r[i];
      store_float32(h.data(), out[0]);
      src = as_float32(out[0], h);
    }
    cpu::rms_norm(src, as_float32(in.back(), wf), y.data(), rows, D, eps);
    store_float32(y.data(), out.back());
  });
}

namespace {

mx::array contiguous(const mx::array& a, mx::StreamOrDevice s) { return mx::contiguous(a, false, s); }

void check_same_shape(const char* op, const mx::array& a, const mx::array& b, const char* an, const char* bn) {
  if (a.shape() != b.shape())
    fail(op, std::string(an) + " and " + bn + " must have the same shape, got " + shape_str(a.shape()) +
                 " and " + shape_str(b.shape()));
}

void check_norm_args(const char* op, const mx::array& x, const mx::array& w, float eps) {
  check_float(op, "x", x);
  check_float(op, "weight", w);
  if (x.ndim() < 1 || x.shape(-1) == 0) fail(op, "x must have a non-empty last dimension");
  if (w.ndim() != 1 || w.shape(0) != x.shape(-1))
    fail(op, "weight must have shape (" + std::to_string(x.shape(-1)) + ",), got " + shape_str(w.shape()));
  if (!(eps >= 0.0f)) fail(op, "eps must be >= 0");
}

} // namespace

mx::array silu_mul(const mx::array& gate, const mx::array& up, mx::StreamOrDevice s) {
  const char* op = "silu_mul";
  check_float(op, "gate", gate);
  check_float(op, "up", up);
  check_same_shape(op, gate, up, "gate", "up");
  const auto dtype = mx::promote_types(gate.dtype(), up.dtype());
  if (gate.size() == 0) return mx::zeros(gate.shape(), dtype, s);
  return mx::array(gate.shape(), dtype, std::make_shared<SiluMul>(mx::to_stream(s), cpu::active_isa()),
                   {contiguous(gate, s), contiguous(up, s)});
}

mx::array rope(const mx::array& x, const mx::array& inv_freq, int64_t offset,
               const std::optional<mx::array>& row_offsets, mx::StreamOrDevice s) {
  const char* op = "rope";
  check_float(op, "x", x);
  check_ndim(op, "x", x, 4);
  check_dtype(op, "inv_freq", inv_freq, mx::float32);
  check_ndim(op, "inv_freq", inv_freq, 1);
  const int64_t half = inv_freq.shape(0);
  if (half == 0 || 2 * half > x.shape(3))
    fail(op, "inv_freq must have between 1 and D/2 = " + std::to_string(x.shape(3) / 2) + " entries, got " +
                 std::to_string(half));
  if (offset < 0) fail(op, "offset must be >= 0, got " + std::to_string(offset));
  std::vector<mx::array> inputs{contiguous(x, s), contiguous(inv_freq, s)};
  if (row_offsets) {
    check_dtype(op, "row_offsets", *row_offsets, mx::int32);
    check_ndim(op, "row_offsets", *row_offsets, 1);
    if (row_offsets->shape(0) != x.shape(0))
      fail(op, "row_offsets needs one entry per batch row (" + std::to_string(x.shape(0)) + "), got " +
                   std::to_string(row_offsets->shape(0)));
    if (offset != 0) fail(op, "give either offset or row_offsets, not both");
    // read on the host here (small): a negative start would index before the sequence
    auto r = mx::contiguous(*row_offsets, false, s);
    r.eval();
    const int32_t* p = r.data<int32_t>();
    for (int64_t b = 0; b < r.shape(0); ++b)
      if (p[b] < 0) fail(op, "row_offsets must be >= 0, got " + std::to_string(p[b]) + " at row " + std::to_string(b));
    inputs.push_back(r);
  }
  if (x.size() == 0) return x;
  return mx::array(x.shape(), x.dtype(), std::make_shared<Rope>(mx::to_stream(s), offset), std::move(inputs));
}

mx::array rms_norm(const mx::array& x, const mx::array& weight, float eps, mx::StreamOrDevice s) {
  check_norm_args("rms_norm", x, weight, eps);
  const auto dtype = mx::promote_types(x.dtype(), weight.dtype());
  if (x.size() == 0) return mx::zeros(x.shape(), dtype, s);
  return mx::array(x.shape(), dtype, std::make_shared<RmsNorm>(mx::to_stream(s), eps, false),
                   {contiguous(x, s), contiguous(weight, s)});
}

std::pair<mx::array, mx::array> add_rms_norm(const mx::array& x, const mx::array& residual,
                                             const mx::array& weight, float eps, mx::StreamOrDevice s) {
  const char* op = "add_rms_norm";
  check_norm_args(op, x, weight, eps);
  check_float(op, "residual", residual);
  check_same_shape(op, x, residual, "x", "residual");
  const auto hdtype = mx::promote_types(x.dtype(), residual.dtype());
  const auto ydtype = mx::promote_types(hdtype, weight.dtype());
  if (x.size() == 0) return {mx::zeros(x.shape(), hdtype, s), mx::zeros(x.shape(), ydtype, s)};
  auto outs = mx::array::make_arrays({x.shape(), x.shape()}, {hdtype, ydtype},
                                     std::make_shared<RmsNorm>(mx::to_stream(s), eps, true),
                                     {contiguous(x, s), contiguous(residual, s), contiguous(weight, s)});
  return {outs[0], outs[1]};
}

} // namespace tandem
