// GPU evaluation of our primitives on Apple silicon: encodes the launches planned in plan_*.cpp on
// MLX's Metal command encoder. Defined in csrc/metal/eval_*.cpp, built on macOS only (TANDEM_METAL).
#pragma once

#include <vector>

#include "mlx/array.h"
#include "mlx/stream.h"

namespace tandem::metal {

namespace mx = mlx::core;

// inputs: x (M, K), codes (N, K) uint8, scales float32, all row-contiguous; out (M, N).
void eval_fp8_matmul_gpu(const mx::Stream& s, const std::vector<mx::array>& inputs, mx::array& out, int bn,
                         int bk);

// inputs: x (T, K), codes (E, N, K) uint8, scales (E, ceil(N/bn), ceil(K/bk)) float32, indices (T, k) int32,
// all row-contiguous; out (T, k, N). Out-of-range experts give NaN rows (no out-of-bounds read).
void eval_gather_fp8_matmul_gpu(const mx::Stream& s, const std::vector<mx::array>& inputs, mx::array& out, int bn,
                                int bk);

// inputs: q (B, Hq, Lq, Dk) row-contiguous, k (B, Hkv, Lk, Dk) and v (B, Hkv, Lk, Dv) with a contiguous
// last dimension (any batch/head/sequence strides, e.g. views of a larger cache); out (B, Hq, Lq, Dv).
void eval_attention_gpu(const mx::Stream& s, const std::vector<mx::array>& inputs, mx::array& out, float scale,
                        bool causal);

}  // namespace tandem::metal
