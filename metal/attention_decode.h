// Attention decode for Lq = 1..8 query rows per head (token generation with a KV cache).
// A threadgroup takes one KV head of one batch entry and up to S x R query rows of the GQA group that
// shares it (rows ordered (query head, query position)); each of its S SIMD-groups owns R rows.
// The threadgroup walks its keys in tiles staged once in threadgroup memory, so the group reads the
// KV head once; lanes own head-dim slices d = lane + 32 i of q, k, v and the output. Per key and row:
// simd_sum gives the score, then an online softmax update in float32 (exp2, log2(e) folded into the
// scale). The split variant takes one range of keys per threadgroup (grid z) and writes normalised
// partials with their (max, sum) that attention_decode_merge combines.
#pragma once
#include "kargs.h"
#include "utils.h"

// Row of a KV head's rows (query head g of the group, position lq) -> its index in (B, Hq, Lq): the
// output row (contiguous, times Dv) and the slot of the split partials.
METAL_FUNC size_t decode_row_index(constant AttnDecodeArgs& a, int b, int hkv, int row) {
  const int g = row / a.Lq, lq = row % a.Lq;
  return (size_t(b) * a.Hq + size_t(hkv) * a.gqa + g) * a.Lq + lq;
}

// ... and the element offset of its query in q (strided).
METAL_FUNC size_t decode_q_offset(constant AttnDecodeArgs& a, int b, int hkv, int row) {
  const int g = row / a.Lq, lq = row % a.Lq;
  return size_t(b) * a.q.batch + size_t(hkv * a.gqa + g) * a.q.head + size_t(lq) * a.q.seq;
}

// Keys per staged tile (shared with the host plan through kDecodeTileBytes).
template <typename T, int DK, int DV>
constexpr int decode_tile_keys() {
  return kDecodeTileBytes / ((DK + DV) * int(sizeof(T)));
}

// Runs keys [kbeg, kend) for this SIMD-group's rows [row0, row0 + nrows) (nrows may be 0: the SIMD-group
// still helps stage tiles). Leaves per row r: o[r * DVPL + i] (unnormalised), m[r], l[r] for this lane.
template <typename T, int DK, int DV, int R>
METAL_FUNC void decode_rows(const device T* q, const device T* k, const device T* v, constant AttnDecodeArgs& a,
                            threadgroup T* kt, threadgroup T* vt, int b, int hkv, int tg_row0, int tg_rows,
                            int row0, int nrows, int kbeg, int kend, ushort tid, ushort nthreads, ushort lane,
                            thread float* o, thread float* m, thread float* l) {
  constexpr int DKPL = (DK + kSimdWidth - 1) / kSimdWidth, DVPL = (DV + kSimdWidth - 1) / kSimdWidth;
  constexpr int BK = decode_tile_keys<T, DK, DV>();
  float qr[R * DKPL];
  int limit[R];  // row r sees keys j < limit[r] (bottom-right causal)
  for (int r = 0; r < R; r++) {
    m[r] = kNegInf;
    l[r] = 0.0f;
    for (int i = 0; i < DVPL; i++) o[r * DVPL + i] = 0.0f;
    limit[r] = 0;
    if (r < nrows) {
      const device T* qp = q + decode_q_offset(a, b, hkv, row0 + r);
      for (int i = 0; i < DKPL; i++) {
        const int d = int(lane) + kSimdWidth * i;
        qr[r * DKPL + i] = d < DK ? float(qp[d]) * a.scale_log2 : 0.0f;
      }
      limit[r] = a.causal ? a.Lk - a.Lq + (row0 + r) % a.Lq + 1 : a.Lk;
    }
  }
  // The last key any row of the threadgroup sees (uniform over the threadgroup; Lq <= 8 positions).
  if (a.causal) {
    int max_lq = 0;
    for (int r = tg_row0; r < tg_row0 + min(tg_rows, a.Lq); r++) max_lq = max(max_lq, r % a.Lq);
    kend = min(kend, a.Lk - a.Lq + max_lq + 1);
  }
  const device T* kb = k + size_t(b) * a.k.batch + size_t(hkv) * a.k.head;
  const device T* vb = v + size_t(b) * a.v.batch + size_t(hkv) * a.v.head;
  for (int t0 = kbeg; t0 < kend; t0 += BK) {
    const int n = min(BK, kend - t0);
    for (int i = tid; i < n * DK; i += nthreads) kt[i] = kb[size_t(t0 + i / DK) * a.k.seq + i % DK];
    for (int i = tid; i < n * DV; i += nthreads) vt[i] = vb[size_t(t0 + i / DV) * a.v.seq + i % DV];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (int j = 0; j < n; j++) {
      if (nrows == 0) break;  // uniform within the SIMD-group
      float kv[DKPL], vv[DVPL];
      for (int i = 0; i < DKPL; i++) {
        const int d = int(lane) + kSimdWidth * i;
        kv[i] = d < DK ? float(kt[j * DK + d]) : 0.0f;
      }
      for (int i = 0; i < DVPL; i++) {
        const int d = int(lane) + kSimdWidth * i;
        vv[i] = d < DV ? float(vt[j * DV + d]) : 0.0f;
      }
      for (int r = 0; r < R; r++) {
        if (r >= nrows) break;  // uniform: nrows is the same for every lane
        float s = 0.0f;
        for (int i = 0; i < DKPL; i++) s = fma(qr[r * DKPL + i], kv[i], s);
        s = simd_sum(s);
        if (t0 + j < limit[r]) {
          const float mn = max(m[r], s);
          const float alpha = exp2(m[r] - mn), p = exp2(s - mn);
          l[r] = l[r] * alpha + p;
          for (int i = 0; i < DVPL; i++) o[r * DVPL + i] = fma(o[r * DVPL + i], alpha, p * vv[i]);
          m[r] = mn;
        }
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);  // the next tile overwrites kt, vt
  }
}

template <typename T, int DK, int DV, int R>
[[kernel, max_total_threads_per_threadgroup(1024)]] void attention_decode(
    const device T* q [[buffer(0)]],
    const device T* k [[buffer(1)]],
    const device T* v [[buffer(2)]],
    device T* out [[buffer(3)]],
    constant AttnDecodeArgs& a [[buffer(4)]],
    uint3 tgid [[threadgroup_position_in_grid]],
    ushort tid [[thread_index_in_threadgroup]],
    ushort sg [[simdgroup_index_in_threadgroup]],
    ushort nsg [[simdgroups_per_threadgroup]],
    ushort lane [[thread_index_in_simdgroup]]) {
  constexpr int DVPL = (DV + kSimdWidth - 1) / kSimdWidth, BK = decode_tile_keys<T, DK, DV>();
  threadgroup T kt[BK * DK];
  threadgroup T vt[BK * DV];
  const int b = int(tgid.y) / a.Hkv, hkv = int(tgid.y) % a.Hkv, rows = a.gqa * a.Lq;
  const int tg_row0 = int(tgid.x) * nsg * R, row0 = tg_row0 + int(sg) * R;
  const int nrows = clamp(rows - row0, 0, R);
  float o[R * DVPL], m[R], l[R];
  decode_rows<T, DK, DV, R>(q, k, v, a, kt, vt, b, hkv, tg_row0, min(int(nsg) * R, rows - tg_row0), row0, nrows,
                            0, a.Lk, tid, ushort(nsg * kSimdWidth), lane, o, m, l);
  for (int r = 0; r < nrows; r++) {
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;  // a row that saw no key gives 0
    device T* op = out + decode_row_index(a, b, hkv, row0 + r) * DV;
    for (int i = 0; i < DVPL; i++) {
      const int d = int(lane) + kSimdWidth * i;
      if (d < DV) op[d] = static_cast<T>(o[r * DVPL + i] * inv);
    }
  }
}

template <typename T, int DK, int DV, int R>
[[kernel, max_total_threads_per_threadgroup(1024)]] void attention_decode_split(
    const device T* q [[buffer(0)]],
    const device T* k [[buffer(1)]],
    const device T* v [[buffer(2)]],
    device float* part_o [[buffer(3)]],
    constant AttnDecodeArgs& a [[buffer(4)]],
    device float2* part_ml [[buffer(5)]],
    uint3 tgid [[threadgroup_position_in_grid]],
    ushort tid [[thread_index_in_threadgroup]],
    ushort sg [[simdgroup_index_in_threadgroup]],
    ushort nsg [[simdgroups_per_threadgroup]],
    ushort lane [[thread_index_in_simdgroup]]) {
  constexpr int DVPL = (DV + kSimdWidth - 1) / kSimdWidth, BK = decode_tile_keys<T, DK, DV>();
  threadgroup T kt[BK * DK];
  threadgroup T vt[BK * DV];
  const int b = int(tgid.y) / a.Hkv, hkv = int(tgid.y) % a.Hkv, split = int(tgid.z), rows = a.gqa * a.Lq;
  const int tg_row0 = int(tgid.x) * nsg * R, row0 = tg_row0 + int(sg) * R;
  const int nrows = clamp(rows - row0, 0, R);
  const int kbeg = split * a.keys_per_split, kend = min(a.Lk, kbeg + a.keys_per_split);
  float o[R * DVPL], m[R], l[R];
  decode_rows<T, DK, DV, R>(q, k, v, a, kt, vt, b, hkv, tg_row0, min(int(nsg) * R, rows - tg_row0), row0, nrows,
                            kbeg, kend, tid, ushort(nsg * kSimdWidth), lane, o, m, l);
  for (int r = 0; r < nrows; r++) {
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    const size_t slot = decode_row_index(a, b, hkv, row0 + r) * a.splits + split;
    for (int i = 0; i < DVPL; i++) {
      const int d = int(lane) + kSimdWidth * i;
      if (d < DV) part_o[slot * DV + d] = o[r * DVPL + i] * inv;
    }
    if (lane == 0) part_ml[slot] = float2(m[r], l[r]);
  }
}

// Second pass of the split variant: one SIMD-group per query row combines its splits' partials.
template <typename T>
[[kernel, max_total_threads_per_threadgroup(kMergeThreads)]] void attention_decode_merge(
    const device float* part_o [[buffer(0)]],
    const device float2* part_ml [[buffer(1)]],
    device T* out [[buffer(2)]],
    constant AttnMergeArgs& a [[buffer(3)]],
    uint tgid [[threadgroup_position_in_grid]],
    ushort lane [[thread_index_in_simdgroup]]) {
  const size_t row = tgid;
  const device float2* ml = part_ml + row * a.splits;
  float mx = kNegInf;
  for (int p = 0; p < a.splits; p++) mx = max(mx, ml[p].x);
  float sum = 0.0f;
  if (mx != kNegInf) {
    for (int p = 0; p < a.splits; p++) sum = fma(exp2(ml[p].x - mx), ml[p].y, sum);
  }
  for (int d = lane; d < a.Dv; d += kMergeThreads) {
    float acc = 0.0f;
    if (sum > 0.0f) {
      for (int p = 0; p < a.splits; p++) acc = fma(exp2(ml[p].x - mx) * ml[p].y, part_o[(row * a.splits + p) * a.Dv + d], acc);
      acc /= sum;
    }
    out[row * a.Dv + d] = static_cast<T>(acc);
  }
}
