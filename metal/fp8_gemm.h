// FP8 GEMM for larger M (prefill): y (M, N) = x (M, K) @ dequant(codes, scales)^T.
// A threadgroup computes a kGemmBM x kGemmBN tile of y. Per kGemmBK step it stages the x tile and the
// dequantized weight tile (decoded with the fp16 bit trick, block scale folded in) in threadgroup
// memory as float, then its 2 x 2 SIMD-groups each multiply-accumulate a 16 x 32 sub-tile with 8x8
// simdgroup matrices. Edge tiles (ragged M, N, K) are zero-filled on load and masked on store.
#pragma once
#include "fp8.h"
#include "kargs.h"

constant constexpr int kGemmLd = kGemmBK + kGemmPad;

// Stage x[m0 : m0+BM, k0 : k0+BK] as float; 8 consecutive elements per thread.
template <typename T>
METAL_FUNC void gemm_stage_x(threadgroup float* xs, const device T* x,
                             constant Fp8GemmArgs& a, int m0, int k0, ushort tid) {
  const int r = tid / 4, c = (tid % 4) * 8;
  const int gm = m0 + r;
  for (int j = 0; j < 8; j++) {
    const int gk = k0 + c + j;
    xs[r * kGemmLd + c + j] = (gm < a.M && gk < a.K) ? float(x[size_t(gm) * a.K + gk]) : 0.0f;
  }
}

// Stage the dequantized weight rows n0 : n0+BN, columns k0 : k0+BK; 16 codes per thread.
template <bool ALIGNED>
METAL_FUNC void gemm_stage_w(threadgroup float* ws, const device uchar* codes,
                             const device float* scales, constant Fp8GemmArgs& a, int n0, int k0, ushort tid) {
  const int r = tid / 2, c = (tid % 2) * 16;
  const int gn = n0 + r, gk = k0 + c;
  if (ALIGNED) {  // K % 16 == 0 and bk % 16 == 0: one 16-byte load, one scale
    if (gn < a.N && gk < a.K) {
      const float s = scales[(gn / a.bn) * a.scales_ld + gk / a.bk] * kFp8ScaleFold;
      const uint4 ch = *reinterpret_cast<const device uint4*>(codes + size_t(gn) * a.K + gk);
      const uint words[4] = {ch.x, ch.y, ch.z, ch.w};
      for (int q = 0; q < 4; q++) {
        const float4 v = float4(fp8x4_decode_scaled(words[q])) * s;
        ws[r * kGemmLd + c + 4 * q] = v.x;
        ws[r * kGemmLd + c + 4 * q + 1] = v.y;
        ws[r * kGemmLd + c + 4 * q + 2] = v.z;
        ws[r * kGemmLd + c + 4 * q + 3] = v.w;
      }
    } else {
      for (int j = 0; j < 16; j++) ws[r * kGemmLd + c + j] = 0.0f;
    }
  } else {
    int cur_b = -1;
    float s = 0.0f;
    for (int j = 0; j < 16; j++) {
      float v = 0.0f;
      if (gn < a.N && gk + j < a.K) {
        const int b = (gk + j) / a.bk;
        if (b != cur_b) {
          cur_b = b;
          s = scales[(gn / a.bn) * a.scales_ld + b] * kFp8ScaleFold;
        }
        v = float(fp8_decode_scaled(codes[size_t(gn) * a.K + gk + j])) * s;
      }
      ws[r * kGemmLd + c + j] = v;
    }
  }
}

// One K step of a SIMD-group's 16x32 sub-tile: acc += xs[sm.., :] * ws[sn.., :]^T over the staged
// kGemmBK columns (shared by fp8_gemm and gather_gemm).
METAL_FUNC void gemm_mma_tile(thread frag8 (*acc)[4], threadgroup const float* xs, threadgroup const float* ws,
                              int sm, int sn, ushort lane) {
  for (int kk = 0; kk < kGemmBK; kk += 8) {
    frag8 fa[2], fb[4];
    for (int i = 0; i < 2; i++) frag_load(fa[i], xs + (sm + 8 * i) * kGemmLd + kk, kGemmLd, 8, 8, lane);
    for (int j = 0; j < 4; j++) frag_load_t(fb[j], ws + (sn + 8 * j) * kGemmLd + kk, kGemmLd, 8, 8, lane);
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 4; j++) simdgroup_multiply_accumulate(acc[i][j], fa[i], fb[j], acc[i][j]);
  }
}

template <typename T, bool ALIGNED>
[[kernel, max_total_threads_per_threadgroup(kGemmThreads)]] void fp8_gemm(
    const device T* x [[buffer(0)]],
    const device uchar* codes [[buffer(1)]],
    const device float* scales [[buffer(2)]],
    device T* y [[buffer(3)]],
    constant Fp8GemmArgs& a [[buffer(4)]],
    uint3 tgid [[threadgroup_position_in_grid]],
    ushort tid [[thread_index_in_threadgroup]],
    ushort sg [[simdgroup_index_in_threadgroup]],
    ushort lane [[thread_index_in_simdgroup]]) {
  threadgroup float xs[kGemmBM * kGemmLd];
  threadgroup float ws[kGemmBN * kGemmLd];
  // Row tiles of x vary fastest (grid x), so the threadgroups sharing a weight tile run close together
  // and the weights stream from memory about once.
  const int m0 = int(tgid.x) * kGemmBM, n0 = int(tgid.y) * kGemmBN;
  const int sm = (sg / 2) * 16, sn = (sg % 2) * 32;  // this SIMD-group's sub-tile
  frag8 acc[2][4];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 4; j++) acc[i][j] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);

  for (int k0 = 0; k0 < a.K; k0 += kGemmBK) {
    gemm_stage_x<T>(xs, x, a, m0, k0, tid);
    gemm_stage_w<ALIGNED>(ws, codes, scales, a, n0, k0, tid);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    gemm_mma_tile(acc, xs, ws, sm, sn, lane);
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  for (int i = 0; i < 2; i++) {
    for (int j = 0; j < 4; j++) {
      const int r0 = m0 + sm + 8 * i, c0 = n0 + sn + 8 * j;
      frag_store<T>(acc[i][j], y + size_t(max(r0, 0)) * a.N + c0, a.N, a.M - r0, a.N - c0, lane);
    }
  }
}
