// Expert-gathered FP8 GEMM (prefill): a threadgroup computes one work item of gather_route (up to
// kGemmBM rows of one used expert, gathered through the pair list) times a kGemmBN tile of that expert's
// weight rows. The structure is fp8_gemm.h's (whose weight-tile loader it reuses): per kGemmBK step the
// gathered x tile and the dequantized weight tile are staged in threadgroup memory as float, 2 x 2
// SIMD-groups multiply-accumulate 16 x 32 sub-tiles with 8x8 simdgroup matrices, and the result rows
// are scattered to their (t, j) output rows. An expert's codes are read once per item (once when it
// has <= kGemmBM rows); slots past the item count exit at once, unselected experts are never read.
#pragma once
#include "fp8_gemm.h"

// Stage x[pair / k, k0 : k0+BK] for the tile's rows (rowp[r] < 0: past the item, zeros).
template <typename T>
METAL_FUNC void gather_stage_x(threadgroup float* xs, const device T* x, threadgroup const int* rowp,
                               constant GatherGemmArgs& a, int k0, ushort tid) {
  const int r = tid / 4, c = (tid % 4) * 8;
  const int p = rowp[r];
  const device T* xr = x + size_t(max(p, 0) / a.topk) * a.mm.K;
  for (int j = 0; j < 8; j++) {
    const int gk = k0 + c + j;
    xs[r * kGemmLd + c + j] = (p >= 0 && gk < a.mm.K) ? float(xr[gk]) : 0.0f;
  }
}

template <typename T, bool ALIGNED>
[[kernel, max_total_threads_per_threadgroup(kGemmThreads)]] void gather_gemm(
    const device T* x [[buffer(0)]],
    const device uchar* codes [[buffer(1)]],
    const device float* scales [[buffer(2)]],
    device T* out [[buffer(3)]],
    const device int* route [[buffer(4)]],
    constant GatherGemmArgs& a [[buffer(5)]],
    uint3 tgid [[threadgroup_position_in_grid]],
    ushort tid [[thread_index_in_threadgroup]],
    ushort sg [[simdgroup_index_in_threadgroup]],
    ushort lane [[thread_index_in_simdgroup]]) {
  threadgroup float xs[kGemmBM * kGemmLd];
  threadgroup float ws[kGemmBN * kGemmLd];
  threadgroup int rowp[kGemmBM];  // the pair id of each tile row, -1 past the item's rows
  if (int(tgid.x) >= route[0]) return;  // an unused item slot: the whole threadgroup leaves
  const int4 item = reinterpret_cast<const device int4*>(route + kRouteHeader)[tgid.x];
  const int rows = min(item.z, kGemmBM);
  if (tid < kGemmBM) rowp[tid] = int(tid) < rows ? route[a.pairs_offset + item.y + tid] : -1;
  threadgroup_barrier(mem_flags::mem_threadgroup);

  const int N = a.mm.N, K = a.mm.K;
  const device uchar* ce = codes + size_t(item.x) * N * K;
  const device float* se = scales + size_t(item.x) * a.scale_rows * a.mm.scales_ld;
  // Items of one expert are adjacent in grid x, so threadgroups sharing a weight tile run together.
  const int n0 = int(tgid.y) * kGemmBN;
  const int sm = (sg / 2) * 16, sn = (sg % 2) * 32;  // this SIMD-group's sub-tile
  frag8 acc[2][4];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 4; j++) acc[i][j] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);

  for (int k0 = 0; k0 < K; k0 += kGemmBK) {
    gather_stage_x<T>(xs, x, rowp, a, k0, tid);
    gemm_stage_w<ALIGNED>(ws, ce, se, a.mm, n0, k0, tid);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    gemm_mma_tile(acc, xs, ws, sm, sn, lane);
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  // Scatter: this lane's two elements of each fragment go to its row's (t, j) output row.
  const short2 rc = frag_coord(lane);
  for (int i = 0; i < 2; i++) {
    const int r = sm + 8 * i + rc.y;
    if (r >= rows) continue;
    device T* dst = out + size_t(rowp[r]) * N;
    for (int j = 0; j < 4; j++) {
      const int c = n0 + sn + 8 * j + rc.x;
      thread auto& e = acc[i][j].thread_elements();
      if (c < N) dst[c] = static_cast<T>(e[0]);
      if (c + 1 < N) dst[c + 1] = static_cast<T>(e[1]);
    }
  }
}
