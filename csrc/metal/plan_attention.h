// Kernel choice and launch geometry of fused attention on Metal (metal/attention_decode.h,
// attention_prefill.h).
#pragma once

#include "metal/launch.h"

namespace tandem::metal {

constexpr int kDecodeMaxRows = 8;         // Lq up to this uses the decode kernels
constexpr int kSplitMinKeys = 1024;       // decode splits the keys from this cache length on
constexpr int kSplitTargetKeys = 512;     // ... aiming at this many keys per split
constexpr int kMaxSplits = 32;
constexpr int kSplitBusyThreadgroups = 256;  // ... unless this many threadgroups already fill the GPU

struct AttentionPlan {
  std::string variant;            // "decode", "decode_split" or "prefill"
  std::vector<Launch> launches;   // encoded in order
  int splits = 1;                 // decode_split: key ranges per query row
  // decode_split scratch (float32): partial outputs (B, Hq, Lq, splits, Dv) and (max, sum) pairs
  // (B, Hq, Lq, splits, 2), bound as buffers 3 and 5 of the first launch, 0 and 1 of the merge.
  int64_t partial_out_elems = 0;
  int64_t partial_ml_elems = 0;
};

// Strides in elements of q (B, Hq, Lq, Dk), k (B, Hkv, Lk, Dk) and v (B, Hkv, Lk, Dv): {batch, head, seq};
// the head dim is contiguous. The output (B, Hq, Lq, Dv) is contiguous.
// Buffers: 0 q, 1 k, 2 v, 3 out, 4 args. Throws std::invalid_argument on unsupported input.
AttentionPlan plan_attention(int B, int Hq, int Hkv, int Lq, int Lk, int Dk, int Dv, ActDtype t, float scale,
                             bool causal, const std::array<int64_t, 3>& q_strides,
                             const std::array<int64_t, 3>& k_strides, const std::array<int64_t, 3>& v_strides);

// Whether a (Dk, Dv) pair has Metal kernels.
bool attention_head_dims_supported(int Dk, int Dv);

}  // namespace tandem::metal
