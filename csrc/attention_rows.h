// Attention for a ragged batch (continuous batching): row b of the batch is its
// own sequence with its own K/V cache buffers at its own position. One op
// writes every row's new keys/values into its buffers (in place when MLX can
// donate them) and attends each row over its valid prefix, instead of ~8 small
// MLX ops per row and layer (slices, cache updates, views, a concatenate).
#pragma once

#include <optional>

#include "cpu/isa.h"
#include "primitive_base.h"

namespace tandem {

class AttentionRows : public mx::Primitive {
 public:
  // value_dim > 0: no separate values; they are the keys' first value_dim features (MLA).
  AttentionRows(mx::Stream s, float scale, std::vector<int64_t> offsets, int64_t value_dim, cpu::Isa isa)
      : mx::Primitive(s), scale_(scale), offsets_(std::move(offsets)), value_dim_(value_dim), isa_(isa) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override { no_gpu(name()); }
  const char* name() const override { return "AttentionRows"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto& o = static_cast<const AttentionRows&>(other);
    return scale_ == o.scale_ && offsets_ == o.offsets_ && value_dim_ == o.value_dim_ && isa_ == o.isa_;
  }

 private:
  float scale_;
  std::vector<int64_t> offsets_;
  int64_t value_dim_;
  cpu::Isa isa_;
};

// q (B, Hq, L, Dk), k (B, Hkv, L, Dk), v (B, Hkv, L, Dv): the batch's new positions, row b at
// positions offsets[b] .. offsets[b] + L - 1 of its sequence. k_caches[b] (1, Hkv, cap_b, Dk) and
// v_caches[b] (1, Hkv, cap_b, Dv) are row b's buffers, cap_b >= offsets[b] + L, positions before
// offsets[b] already filled. Returns (out (B, Hq, L, Dv), new k buffers, new v buffers): the buffers
// with the new positions written; out is causal attention of each row over its offsets[b] + L keys.
// The buffers are written in place unless an evaluated view of them is alive (see eval_cpu).
// With v = nullopt, no v_caches and value_dim: one buffer per row whose keys' first value_dim
// features are the values (MLA's latent cache); the third result is then empty.
std::tuple<mx::array, std::vector<mx::array>, std::vector<mx::array>> attention_rows(
    const mx::array& q, const mx::array& k, const std::optional<mx::array>& v,
    const std::vector<mx::array>& k_caches, const std::vector<mx::array>& v_caches,
    const std::vector<int64_t>& offsets, std::optional<float> scale = std::nullopt,
    std::optional<int64_t> value_dim = std::nullopt, mx::StreamOrDevice s = {});

} // namespace tandem
