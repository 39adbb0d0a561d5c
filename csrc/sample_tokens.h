// Token sampling as an MLX primitive (CPU): the filters and the draw of
// sampling.sample_graph in one pass per row (cpu/sample_tokens.h), instead of
// full-vocabulary sorts and per-token noise built from MLX ops.
#pragma once

#include "cpu/sample_tokens.h"
#include "primitive_base.h"

namespace tandem {

class SampleTokens : public mx::UnaryPrimitive {
 public:
  SampleTokens(mx::Stream s, std::vector<cpu::SampleParams> rows) : mx::UnaryPrimitive(s), rows_(std::move(rows)) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "SampleTokens"; }
  bool is_equivalent(const mx::Primitive&) const override { return false; }  // keys differ every call

 private:
  std::vector<cpu::SampleParams> rows_;
};

// logits (B, V) float -> int32 (B,): row b drawn with temperature[b], top_k[b], top_p[b], min_p[b]
// and key_seeds[b] (temperature 0: the first maximum).
mx::array sample_tokens(const mx::array& logits, const std::vector<float>& temperature,
                        const std::vector<int64_t>& top_k, const std::vector<float>& top_p,
                        const std::vector<float>& min_p, const std::vector<uint64_t>& key_seeds,
                        mx::StreamOrDevice s = {});

} // namespace tandem
