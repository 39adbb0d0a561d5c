// Fused elementwise ops of a decoder layer as MLX primitives (CPU; on a GPU
// stream the Python layer uses MLX's own kernels instead, see fused.py).
#pragma once

#include <optional>

#include "cpu/isa.h"
#include "primitive_base.h"

namespace tandem {

// silu(gate) * up in float32, rounded once to the promoted dtype.
class SiluMul : public mx::UnaryPrimitive {
 public:
  SiluMul(mx::Stream s, cpu::Isa isa) : mx::UnaryPrimitive(s), isa_(isa) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "SiluMul"; }
  bool is_equivalent(const mx::Primitive& o) const override {
    return isa_ == static_cast<const SiluMul&>(o).isa_;
  }

 private:
  cpu::Isa isa_;
};

// Rotate-half RoPE of x (B, L, H, D) at positions offset + l, or row_offsets[b] + l
// when a third input (int32 (B,)) is given.
class Rope : public mx::UnaryPrimitive {
 public:
  Rope(mx::Stream s, int64_t offset) : mx::UnaryPrimitive(s), offset_(offset) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "Rope"; }
  bool is_equivalent(const mx::Primitive& o) const override {
    return offset_ == static_cast<const Rope&>(o).offset_;
  }

 private:
  int64_t offset_;
};

// RMSNorm of x, or with a residual: h = x + residual (rounded to its dtype) and
// the norm of h, as two outputs.
class RmsNorm : public mx::Primitive {
 public:
  RmsNorm(mx::Stream s, float eps, bool residual) : mx::Primitive(s), eps_(eps), residual_(residual) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override { no_gpu(name()); }
  const char* name() const override { return "RmsNorm"; }
  bool is_equivalent(const mx::Primitive& o) const override {
    auto& r = static_cast<const RmsNorm&>(o);
    return eps_ == r.eps_ && residual_ == r.residual_;
  }

 private:
  float eps_;
  bool residual_;
};

mx::array silu_mul(const mx::array& gate, const mx::array& up, mx::StreamOrDevice s = {});
// x (B, L, H, D), inv_freq float32 (dims / 2,) with dims <= D even.
// row_offsets: int32 (B,), each batch row's own start position (then offset must be 0).
mx::array rope(const mx::array& x, const mx::array& inv_freq, int64_t offset,
               const std::optional<mx::array>& row_offsets = std::nullopt, mx::StreamOrDevice s = {});
mx::array rms_norm(const mx::array& x, const mx::array& weight, float eps, mx::StreamOrDevice s = {});
// Returns (x + residual, rms_norm(x + residual)).
std::pair<mx::array, mx::array> add_rms_norm(const mx::array& x, const mx::array& residual,
                                             const mx::array& weight, float eps, mx::StreamOrDevice s = {});

} // namespace tandem
