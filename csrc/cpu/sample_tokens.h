// One token per row of logits with temperature, top-k, top-p and min-p, drawn by
// inverse CDF from one uniform number per row (a hash of the row's key seed).
// Only the kept tokens are ever sorted (partially), so a 150k vocabulary costs
// a pass or two over the row, not a full sort.
#pragma once

#include <cstdint>
#include <vector>

namespace tandem::cpu {

struct SampleParams {
  float temperature;  // 0: greedy (the first maximum)
  int64_t top_k;      // 0: off
  float top_p;        // 1: off
  float min_p;        // 0: off
  uint64_t key_seed;
};

// The uniform number in [0, 1) a key seed draws (splitmix64, 53 bits).
double key_uniform(uint64_t key_seed);

// The tokens the filters keep (ascending indices): temperature 0 keeps the first maximum; then
// top_k (ties at the k-th kept), top_p over the top-k set, min_p. Never empty.
std::vector<int32_t> kept_tokens(const float* logits, int64_t V, const SampleParams& p);

// Row of V logits -> token index: inverse CDF over the kept tokens in index order.
int32_t sample_row(const float* logits, int64_t V, const SampleParams& p);

} // namespace tandem::cpu
