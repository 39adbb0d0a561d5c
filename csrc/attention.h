// Fused scaled-dot-product attention (online softmax, GQA, bottom-right causal
// mask, K/V read in place from strided cache views).
#pragma once

#include <optional>

#include "cpu/attention.h"
#include "cpu/isa.h"
#include "primitive_base.h"

namespace tandem {

class FusedAttention : public mx::UnaryPrimitive {
 public:
  // The ISA is fixed when the op is built, so a bad TANDEM_ISA fails at the call.
  FusedAttention(mx::Stream s, float scale, bool causal, cpu::Isa isa)
      : mx::UnaryPrimitive(s), scale_(scale), causal_(causal), isa_(isa) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  const char* name() const override { return "FusedAttention"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto& o = static_cast<const FusedAttention&>(other);
    return scale_ == o.scale_ && causal_ == o.causal_ && isa_ == o.isa_;
  }

 private:
  float scale_;
  bool causal_;
  cpu::Isa isa_;
};

// Element type of a float array for the CPU kernels.
cpu::ElemType elem_type(mx::Dtype t);
// Base pointer and (batch, head, position) element strides of a 4-d array inside eval: read in
// place when its last dimension is contiguous, else gathered into tmp first.
const void* strided_view(const mx::array& a, std::vector<char>& tmp, int64_t strides[3]);

// q (B, Hq, Lq, Dk), k (B, Hkv, Lk, Dk), v (B, Hkv, Lk, Dv) -> (B, Hq, Lq, Dv) in q's dtype.
// scale defaults to 1/sqrt(Dk); with causal, query i sits at key position Lk - Lq + i.
mx::array fused_attention(const mx::array& q, const mx::array& k, const mx::array& v,
                          std::optional<float> scale = std::nullopt, bool causal = true,
                          mx::StreamOrDevice s = {});

} // namespace tandem
