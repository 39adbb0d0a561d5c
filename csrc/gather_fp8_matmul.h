// out (..., k, N): row t of x (..., K) times expert indices[t, j] of stacked FP8 weights codes
// (E, N, K), for every j (DeepSeek-V3's routed experts; MLA's per-head absorbed matrices).
#pragma once

#include "cpu/isa.h"
#include "fp8_quantize.h"

namespace tandem {

class GatherFp8Matmul : public mx::UnaryPrimitive {
 public:
  GatherFp8Matmul(mx::Stream s, BlockSize block, cpu::Isa isa)
      : mx::UnaryPrimitive(s), block_(block), isa_(isa) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  const char* name() const override { return "GatherFp8Matmul"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto& o = static_cast<const GatherFp8Matmul&>(other);
    return block_ == o.block_ && isa_ == o.isa_;
  }

 private:
  BlockSize block_;
  cpu::Isa isa_;
};

mx::array gather_fp8_matmul(const mx::array& x, const mx::array& codes, const mx::array& scales,
                            const mx::array& indices, BlockSize block, mx::StreamOrDevice s = {});

} // namespace tandem
