// FP8 GEMV for M = 1..8 rows of x (token decode): y (M, N) = x (M, K) @ dequant(codes, scales)^T.
// Each SIMD-group owns kGemvRows output rows; its lanes stream 16-byte chunks of those rows' codes
// (32 lanes cover 512 columns per step, so every code byte is read exactly once), decode them with the
// fp16 bit trick, and dot them with the matching 16 values of each x row held in registers. The block
// scale multiplies each 16-column partial dot (a chunk never straddles a block when bk % 16 == 0),
// and simd_sum reduces the lanes at the end. Accumulation is float32.
#pragma once
#include "fp8.h"
#include "kargs.h"

constant constexpr int kGemvChunk = 16;       // codes per lane per step (one uint4)
constant constexpr int kGemvStep = kGemvChunk * kSimdWidth;

// K % 16 == 0 and bk % 16 == 0: 16-byte loads; the scales of the <= 32 blocks one step spans are
// loaded by one lane each and handed to the lanes that need them with simd_shuffle.
// x row m starts at x + xoff[m] (m < nx): consecutive rows here, rows gathered through a pair list in
// gather_gemv.h. A is any argument struct with K, bn, bk and scales_ld.
template <typename T, int MT, typename A>
METAL_FUNC void gemv_aligned(const device T* x, thread const size_t* xoff, int nx, const device uchar* codes,
                             const device float* scales, constant A& a, int row0, int nrows, ushort lane,
                             thread float* acc) {  // acc[m * kGemvRows + r]
  for (int c0 = 0; c0 < a.K; c0 += kGemvStep) {
    const int c = c0 + int(lane) * kGemvChunk;
    const bool active = c < a.K;
    const int b0 = c0 / a.bk;
    const int nb = (min(c0 + kGemvStep, a.K) - 1) / a.bk - b0 + 1;
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
      float xv[kGemvChunk];
      const device T* xr = x + xoff[m] + c;
      for (int j = 0; j < kGemvChunk; j++) xv[j] = float(xr[j]);
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

// Any K and block size: byte loads, and each lane keeps the scale of the block it is in per row
// (re-read only when its columns cross into the next block).
template <typename T, int MT, typename A>
METAL_FUNC void gemv_general(const device T* x, thread const size_t* xoff, int nx, const device uchar* codes,
                             const device float* scales, constant A& a, int row0, int nrows, ushort lane,
                             thread float* acc) {  // acc[m * kGemvRows + r]
  int cur_b[kGemvRows];
  float cur_s[kGemvRows];
  for (int r = 0; r < kGemvRows; r++) cur_b[r] = -1;
  for (int c = int(lane) * kGemvChunk; c < a.K; c += kGemvStep) {
    const int cend = min(c + kGemvChunk, a.K);
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
[[kernel, max_total_threads_per_threadgroup(kGemvSimdgroups * 32)]] void fp8_gemv(
    const device T* x [[buffer(0)]],
    const device uchar* codes [[buffer(1)]],
    const device float* scales [[buffer(2)]],
    device T* y [[buffer(3)]],
    constant Fp8GemvArgs& a [[buffer(4)]],
    uint tgid [[threadgroup_position_in_grid]],
    ushort sg [[simdgroup_index_in_threadgroup]],
    ushort lane [[thread_index_in_simdgroup]]) {
  const int row0 = (int(tgid) * kGemvSimdgroups + int(sg)) * kGemvRows;
  if (row0 >= a.N) return;  // the whole SIMD-group leaves; there are no threadgroup barriers
  const int nrows = min(kGemvRows, a.N - row0);
  size_t xoff[MT];
  for (int m = 0; m < MT; m++) xoff[m] = size_t(m) * a.K;
  float acc[MT * kGemvRows];
  for (int i = 0; i < MT * kGemvRows; i++) acc[i] = 0.0f;
  if (ALIGNED) {
    gemv_aligned<T, MT>(x, xoff, a.M, codes, scales, a, row0, nrows, lane, acc);
  } else {
    gemv_general<T, MT>(x, xoff, a.M, codes, scales, a, row0, nrows, lane, acc);
  }
  for (int m = 0; m < MT; m++) {
    for (int r = 0; r < kGemvRows; r++) {
      const float total = simd_sum(acc[m * kGemvRows + r]);
      if (lane == 0 && m < a.M && r < nrows) y[size_t(m) * a.N + row0 + r] = static_cast<T>(total);
    }
  }
}
