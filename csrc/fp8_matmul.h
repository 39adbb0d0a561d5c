// y = x @ dequant(codes, scales).T with the weights decoded inside the kernel.
#pragma once

#include "cpu/isa.h"
#include "fp8_quantize.h"

namespace tandem {

class Fp8Matmul : public mx::UnaryPrimitive {
 public:
  // The ISA is fixed when the op is built, so a bad TANDEM_ISA fails at the call.
  Fp8Matmul(mx::Stream s, BlockSize block, cpu::Isa isa)
      : mx::UnaryPrimitive(s), block_(block), isa_(isa) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  const char* name() const override { return "Fp8Matmul"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto& o = static_cast<const Fp8Matmul&>(other);
    return block_ == o.block_ && isa_ == o.isa_;
  }

 private:
  BlockSize block_;
  cpu::Isa isa_;
};

mx::array fp8_matmul(const mx::array& x, const mx::array& codes, const mx::array& scales,
                     BlockSize block, mx::StreamOrDevice s = {});

} // namespace tandem
