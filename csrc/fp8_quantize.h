// Block-scaled FP8 weights: quantize_fp8 (W -> codes, scales) and dequantize_fp8.
#pragma once

#include <utility>

#include "primitive_base.h"

namespace tandem {

using BlockSize = std::pair<int, int>;

class QuantizeFp8 : public mx::Primitive {
 public:
  QuantizeFp8(mx::Stream s, BlockSize block) : mx::Primitive(s), block_(block) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override { no_gpu(name()); }
  const char* name() const override { return "QuantizeFp8"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return block_ == static_cast<const QuantizeFp8&>(other).block_;
  }

 private:
  BlockSize block_;
};

class DequantizeFp8 : public mx::UnaryPrimitive {
 public:
  DequantizeFp8(mx::Stream s, BlockSize block) : mx::UnaryPrimitive(s), block_(block) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "DequantizeFp8"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return block_ == static_cast<const DequantizeFp8&>(other).block_;
  }

 private:
  BlockSize block_;
};

std::pair<mx::array, mx::array> quantize_fp8(const mx::array& w, BlockSize block,
                                             mx::StreamOrDevice s = {});
mx::array dequantize_fp8(const mx::array& codes, const mx::array& scales, BlockSize block,
                         mx::Dtype dtype, mx::StreamOrDevice s = {});

} // namespace tandem
