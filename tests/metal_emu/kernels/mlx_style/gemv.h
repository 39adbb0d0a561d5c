// A toy quantized GEMV in MLX's style: each SIMD-group owns one row, each lane streams 16-byte
// chunks of the row's codes (two 4-bit codes per byte), decodes them through a table, and the
// row sum comes from simd_sum over a vector accumulator. Function constants pick a bias and
// whether the output accumulates.
#pragma once
#include "defines.h"
#include "kargs.h"

using namespace metal;

constant bool has_bias [[function_constant(0)]];
constant bool accumulate [[function_constant(1)]];

METAL_FUNC float4 decode4(ushort pair) {
  return float4(kCodebook[pair & 0xf], kCodebook[(pair >> 4) & 0xf], kCodebook[(pair >> 8) & 0xf],
                kCodebook[pair >> 12]);
}

template <typename T>
METAL_FUNC void dot_chunk(const device uchar* codes, const thread T* xs, thread float4& acc) {
  uint4 chunk = *reinterpret_cast<const device uint4*>(codes);
  const thread ushort* halves = reinterpret_cast<const thread ushort*>(&chunk);
  for (int j = 0; j < 8; j++) {
    float4 w = decode4(halves[j]);
    vec<float, 4> xv = vec<float, 4>(float(xs[4 * j]), float(xs[4 * j + 1]), float(xs[4 * j + 2]),
                                     float(xs[4 * j + 3]));
    acc = fma(w, xv, acc);
  }
}

template <typename T, int ROWS_PER_TG>
[[kernel, max_total_threads_per_threadgroup(ROWS_PER_TG * 32)]] void toy_gemv(
    const device uchar* codes [[buffer(0)]],
    const device T* x [[buffer(1)]],
    device T* y [[buffer(2)]],
    constant GemvArgs& args [[buffer(3)]],
    const device T* bias [[buffer(4), function_constant(has_bias)]],
    uint tgid [[threadgroup_position_in_grid]],
    ushort simd_gid [[simdgroup_index_in_threadgroup]],
    ushort simd_lid [[thread_index_in_simdgroup]]) {
  threadgroup float row_sums[ROWS_PER_TG];
  const uint row = tgid * ROWS_PER_TG + simd_gid;
  float4 acc = 0.0f;
  if (row < args.n_rows) {
    const device uchar* row_codes = codes + size_t(row) * (args.n_cols / 2);
    for (uint c = simd_lid * 32; c < args.n_cols; c += kSimdSize * 32) {
      thread T xs[32];
      for (int j = 0; j < 32; j++) {
        xs[j] = x[c + j];
      }
      dot_chunk<T>(row_codes + c / 2, xs, acc);
    }
  }
  float4 total = simd_sum(acc);
  if (simd_lid == 0) {
    row_sums[simd_gid] = total.x + total.y + total.z + total.w;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (row < args.n_rows && simd_lid == 0) {
    float r = clamp(row_sums[simd_gid] * args.scale, float(Limits<T>::lowest), float(Limits<T>::max));
    if (has_bias) {
      r += static_cast<float>(bias[row]);
    }
    if (accumulate) {
      r += float(y[row]);
    }
    y[row] = static_cast<T>(r);
  }
}
