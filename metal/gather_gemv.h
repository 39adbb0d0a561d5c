// Expert-gathered FP8 GEMV (decode): a threadgroup owns one work item of gather_route (one used expert
// and all of its <= MT rows: the plan takes this kernel only when P = T*k <= 8) and a block of
// kGemvSimdgroups * kGemvRows output rows. As in fp8_gemv.h, each SIMD-group's lanes stream 16-byte
// chunks of its rows' codes once, decode them with the fp16 bit trick and dot each with the matching
// 16 values of every gathered x row while the chunk is in registers; block scales come once per chunk,
// simd_sum reduces the lanes. So a selected expert's codes are read exactly once, an unselected
// expert's never (slots past the item count exit before touching codes). Accumulation is float32.
// The loops mirror fp8_gemv.h's, with x rows addressed through the pair list instead of a stride.
#pragma once
#include "fp8.h"
#include "kargs.h"

constant constexpr int kGatherChunk = 16;  // codes per lane per step (one uint4)
constant constexpr int kGatherStep = kGatherChunk * kSimdWidth;

// K % 16 == 0 and bk % 16 == 0: 16-byte loads; the scales of the <= 32 blocks one step spans are
// loaded by one lane each and handed to the lanes that need them with simd_shuffle.
template <typename T, int MT>
METAL_FUNC void gather_gemv_aligned(const device T* x, thread const size_t* xoff, int nx,
                                    const device uchar* codes, const device float* scales,
                                    constant GatherGemvArgs& a, int row0, int nrows, ushort lane,
                                    thread float* acc) {  // acc[m * kGemvRows + r]
  for (int c0 = 0; c0 < a.K; c0 += kGatherStep) {
    const int c = c0 + int(lane) * kGatherChunk;
    const bool active = c < a.K;
    const int b0 = c0 / a.bk;
    const int nb = (min(c0 + kGatherStep, a.K) - 1) / a.bk - b0 + 1;
    const ushort my_b = ushort(active ? c / a.bk - b0 : 0);
    half4 w[kGemvRows][4];
    float s[kGemvRows];
    int prev_srow = -1;
    for (int r = 0; r < kGemvRows; r++) {
      const int srow = (row0 + r) / a.bn;
      if (srow != prev_srow) {  // uniform: rows of one scale row share the shuffle
        float sv = (r < nrows && int(lane) < nb) ? scales[srow * a.scales_ld + b0 + lane] : 0.0f;
        s[r] = simd_shuffle(sv, my_b) * kFp8ScaleFold;
        prev_srow = srow;
      } else {
        s[r] = s[r - 1];
      }
      if (active && r < nrows) {
        uint4 ch = *reinterpret_cast<const device uint4*>(codes + size_t(row0 + r) * a.K + c);
        w[r][0] = fp8x4_decode_scaled(ch.x);
        w[r][1] = fp8x4_decode_scaled(ch.y);
        w[r][2] = fp8x4_decode_scaled(ch.z);
        w[r][3] = fp8x4_decode_scaled(ch.w);
      }
    }
    if (!active) continue;
    for (int m = 0; m < MT; m++) {
      if (m >= nx) break;
      float xv[kGatherChunk];
      const device T* xr = x + xoff[m] + c;
      for (int j = 0; j < kGatherChunk; j++) xv[j] = float(xr[j]);
      for (int r = 0; r < kGemvRows; r++) {
        if (r >= nrows) break;
        float d = 0.0f;
        for (int q = 0; q < 4; q++) {
          float4 wf = float4(w[r][q]);
          d += dot(wf, float4(xv[4 * q], xv[4 * q + 1], xv[4 * q + 2], xv[4 * q + 3]));
        }
        acc[m * kGemvRows + r] = fma(s[r], d, acc[m * kGemvRows + r]);
      }
    }
  }
}

// Any K and block size: byte loads; each lane keeps the scale of the block it is in per row.
template <typename T, int MT>
METAL_FUNC void gather_gemv_general(const device T* x, thread const size_t* xoff, int nx,
                                    const device uchar* codes, const device float* scales,
                                    constant GatherGemvArgs& a, int row0, int nrows, ushort lane,
                                    thread float* acc) {
  int cur_b[kGemvRows];
  float cur_s[kGemvRows];
  for (int r = 0; r < kGemvRows; r++) cur_b[r] = -1;
  for (int c = int(lane) * kGatherChunk; c < a.K; c += kGatherStep) {
    const int cend = min(c + kGatherChunk, a.K);
    for (int col = c; col < cend; col++) {
      float xv[MT];
      for (int m = 0; m < MT; m++) xv[m] = m < nx ? float(x[xoff[m] + col]) : 0.0f;
      const int b = col / a.bk;
      for (int r = 0; r < kGemvRows; r++) {
        if (r >= nrows) break;
        if (b != cur_b[r]) {
          cur_b[r] = b;
          cur_s[r] = scales[((row0 + r) / a.bn) * a.scales_ld + b] * kFp8ScaleFold;
        }
        const float w = float(fp8_decode_scaled(codes[size_t(row0 + r) * a.K + col])) * cur_s[r];
        for (int m = 0; m < MT; m++) acc[m * kGemvRows + r] = fma(w, xv[m], acc[m * kGemvRows + r]);
      }
    }
  }
}

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
    gather_gemv_aligned<T, MT>(x, xoff, nx, ce, se, a, row0, nrows, lane, acc);
  } else {
    gather_gemv_general<T, MT>(x, xoff, nx, ce, se, a, row0, nrows, lane, acc);
  }
  for (int m = 0; m < MT; m++) {
    for (int r = 0; r < kGemvRows; r++) {
      const float total = simd_sum(acc[m * kGemvRows + r]);
      if (lane == 0 && m < nx && r < nrows) out[size_t(pair[m]) * a.N + row0 + r] = static_cast<T>(total);
    }
  }
}
