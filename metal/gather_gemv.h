// Expert-gathered FP8 GEMV (decode): a threadgroup owns one work item of gather_route (one used expert
// and all of its <= MT rows: the plan takes this kernel only when P = T*k <= 8) and a block of
// kGemvSimdgroups * kGemvRows output rows. As in fp8_gemv.h, each SIMD-group's lanes stream 16-byte
// chunks of its rows' codes once, decode them with the fp16 bit trick and dot each with the matching
// 16 values of every gathered x row while the chunk is in registers; block scales come once per chunk,
// simd_sum reduces the lanes. So a selected expert's codes are read exactly once, an unselected
// expert's never (slots past the item count exit before touching codes). Accumulation is float32.
// The loops are fp8_gemv.h's, with x rows addressed through the pair list instead of a stride.
#pragma once
#include "fp8_gemv.h"

template <typename T, int MT, bool ALIGNED>
[[kernel, max_total_threads_per_threadgroup(kGemvSimdgroups * 32)]] void gather_gemv(
    const device T* x [[buffer(0)]],
    const device uchar* codes [[buffer(1)]],
    const device float* scales [[buffer(2)]],
    device T* out [[buffer(3)]],
    const device int* route [[buffer(4)]],
    constant GatherGemvArgs& a [[buffer(5)]],
    uint2 tgid [[threadgroup_position_in_grid]],
    ushort sg [[simdgroup_index_in_threadgroup]],
    ushort lane [[thread_index_in_simdgroup]]) {
  if (int(tgid.y) >= route[0]) return;  // an unused item slot
  const int row0 = (int(tgid.x) * kGemvSimdgroups + int(sg)) * kGemvRows;
  if (row0 >= a.N) return;  // the whole SIMD-group leaves; there are no threadgroup barriers
  const int nrows = min(kGemvRows, a.N - row0);
  const int4 item = reinterpret_cast<const device int4*>(route + kRouteHeader)[tgid.y];
  const int nx = min(item.z, MT);
  int pair[MT];
  size_t xoff[MT];
  for (int m = 0; m < MT; m++) {
    pair[m] = m < nx ? route[a.pairs_offset + item.y + m] : 0;
    xoff[m] = size_t(pair[m] / a.topk) * a.K;
  }
  const device uchar* ce = codes + size_t(item.x) * a.N * a.K;
  const device float* se = scales + size_t(item.x) * a.scale_rows * a.scales_ld;
  float acc[MT * kGemvRows];
  for (int i = 0; i < MT * kGemvRows; i++) acc[i] = 0.0f;
  if (ALIGNED) {
    gemv_aligned<T, MT>(x, xoff, nx, ce, se, a, row0, nrows, lane, acc);
  } else {
    gemv_general<T, MT>(x, xoff, nx, ce, se, a, row0, nrows, lane, acc);
  }
  for (int m = 0; m < MT; m++) {
    for (int r = 0; r < kGemvRows; r++) {
      const float total = simd_sum(acc[m * kGemvRows + r]);
      if (lane == 0 && m < nx && r < nrows) out[size_t(pair[m]) * a.N + row0 + r] = static_cast<T>(total);
    }
  }
}
