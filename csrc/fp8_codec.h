// Elementwise FP8 E4M3 codec: to_fp8 (float -> uint8 codes) and from_fp8.
#pragma once

#include "primitive_base.h"

namespace tandem {

class ToFp8 : public mx::UnaryPrimitive {
 public:
  explicit ToFp8(mx::Stream s) : mx::UnaryPrimitive(s) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "ToFp8"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

class FromFp8 : public mx::UnaryPrimitive {
 public:
  explicit FromFp8(mx::Stream s) : mx::UnaryPrimitive(s) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "FromFp8"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

mx::array to_fp8(const mx::array& x, mx::StreamOrDevice s = {});
mx::array from_fp8(const mx::array& codes, mx::Dtype dtype, mx::StreamOrDevice s = {});

} // namespace tandem
