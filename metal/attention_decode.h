// Attention decode for Lq = 1..8 query rows per head (token generation with a KV cache).
// A threadgroup takes one KV head of one batch entry and up to R query rows of the GQA group that
// shares it (rows ordered (query head, query position)), so the group reads that KV head once.
// Its kDecodeSimdgroups SIMD-groups split the keys (key j goes to SIMD-group j % S); lanes own
// head-dim slices d = lane + 32 i of q, k, v and the output. Per key: simd_sum gives each row's score,
// then an online softmax update in float32 (exp2 with log2(e) folded into the scale). The SIMD-groups'
// partial (max, sum, out) are merged through threadgroup memory. The split variant takes one range of
// keys per threadgroup (grid z) and writes normalised partials that attention_decode_merge combines.
#pragma once
#include "kargs.h"
#include "utils.h"

// Row r of a KV head's rows (query head g of the group, position lq) -> its index in (B, Hq, Lq): the
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

// Runs this SIMD-group's share of keys [kbeg, kend) and leaves its partial max, sum and output of
// every row in threadgroup memory (sm_m, sm_l: [S][R]; sm_o: [S][R][DV]); ends with a barrier.
template <typename T, int DK, int DV, int R>
METAL_FUNC void decode_partials(const device T* q, const device T* k, const device T* v, constant AttnDecodeArgs& a,
                                threadgroup float* sm_m, threadgroup float* sm_l, threadgroup float* sm_o,
                                int b, int hkv, int row0, int nrows, int kbeg, int kend, ushort sg, ushort lane) {
  constexpr int DKPL = (DK + kSimdWidth - 1) / kSimdWidth, DVPL = (DV + kSimdWidth - 1) / kSimdWidth;
  float qr[R][DKPL], o[R][DVPL], m[R], l[R];
  int limit[R];  // row r sees keys j < limit[r] (bottom-right causal)
  int kmax = kbeg;
  for (int r = 0; r < R; r++) {
    m[r] = kNegInf;
    l[r] = 0.0f;
    for (int i = 0; i < DVPL; i++) o[r][i] = 0.0f;
    limit[r] = 0;
    if (r < nrows) {
      const int lq = (row0 + r) % a.Lq;
      const device T* qp = q + decode_q_offset(a, b, hkv, row0 + r);
      for (int i = 0; i < DKPL; i++) {
        const int d = int(lane) + kSimdWidth * i;
        qr[r][i] = d < DK ? float(qp[d]) * a.scale_log2 : 0.0f;
      }
      limit[r] = a.causal ? a.Lk - a.Lq + lq + 1 : a.Lk;
      kmax = max(kmax, min(kend, limit[r]));
    }
  }
  const device T* kb = k + size_t(b) * a.k.batch + size_t(hkv) * a.k.head;
  const device T* vb = v + size_t(b) * a.v.batch + size_t(hkv) * a.v.head;
  for (int j = kbeg + int(sg); j < kmax; j += kDecodeSimdgroups) {
    const device T* kp = kb + size_t(j) * a.k.seq;
    const device T* vp = vb + size_t(j) * a.v.seq;
    float kv[DKPL], vv[DVPL];
    for (int i = 0; i < DKPL; i++) {
      const int d = int(lane) + kSimdWidth * i;
      kv[i] = d < DK ? float(kp[d]) : 0.0f;
    }
    for (int i = 0; i < DVPL; i++) {
      const int d = int(lane) + kSimdWidth * i;
      vv[i] = d < DV ? float(vp[d]) : 0.0f;
    }
    for (int r = 0; r < R; r++) {
      if (r >= nrows) break;  // uniform: nrows is the same for every lane
      float s = 0.0f;
      for (int i = 0; i < DKPL; i++) s = fma(qr[r][i], kv[i], s);
      s = simd_sum(s);
      if (j < limit[r]) {
        const float mn = max(m[r], s);
        const float alpha = exp2(m[r] - mn), p = exp2(s - mn);
        l[r] = l[r] * alpha + p;
        for (int i = 0; i < DVPL; i++) o[r][i] = fma(o[r][i], alpha, p * vv[i]);
        m[r] = mn;
      }
    }
  }
  for (int r = 0; r < R; r++) {
    if (lane == 0) {
      sm_m[sg * R + r] = m[r];
      sm_l[sg * R + r] = l[r];
    }
    for (int i = 0; i < DVPL; i++) {
      const int d = int(lane) + kSimdWidth * i;
      if (d < DV) sm_o[(sg * R + r) * DV + d] = o[r][i];
    }
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
}

// Merges the SIMD-groups' partials of row r, column d: returns (output / sum, max, sum); all zero when
// the row saw no key.
template <int DV, int R>
METAL_FUNC float3 decode_combine(threadgroup float* sm_m, threadgroup float* sm_l, threadgroup float* sm_o, int r,
                                 int d) {
  float mx = kNegInf;
  for (int s = 0; s < kDecodeSimdgroups; s++) mx = max(mx, sm_m[s * R + r]);
  if (mx == kNegInf) return float3(0.0f);
  float sum = 0.0f, acc = 0.0f;
  for (int s = 0; s < kDecodeSimdgroups; s++) {
    const float w = exp2(sm_m[s * R + r] - mx);  // 0 for a SIMD-group that saw no key
    sum = fma(w, sm_l[s * R + r], sum);
    acc = fma(w, sm_o[(s * R + r) * DV + d], acc);
  }
  return float3(acc / sum, mx, sum);
}

template <typename T, int DK, int DV, int R>
[[kernel, max_total_threads_per_threadgroup(kDecodeSimdgroups * 32)]] void attention_decode(
    const device T* q [[buffer(0)]],
    const device T* k [[buffer(1)]],
    const device T* v [[buffer(2)]],
    device T* out [[buffer(3)]],
    constant AttnDecodeArgs& a [[buffer(4)]],
    uint3 tgid [[threadgroup_position_in_grid]],
    ushort tid [[thread_index_in_threadgroup]],
    ushort sg [[simdgroup_index_in_threadgroup]],
    ushort lane [[thread_index_in_simdgroup]]) {
  threadgroup float sm_m[kDecodeSimdgroups * R];
  threadgroup float sm_l[kDecodeSimdgroups * R];
  threadgroup float sm_o[kDecodeSimdgroups * R * DV];
  const int b = int(tgid.y) / a.Hkv, hkv = int(tgid.y) % a.Hkv;
  const int row0 = int(tgid.x) * R, nrows = min(R, a.gqa * a.Lq - row0);
  decode_partials<T, DK, DV, R>(q, k, v, a, sm_m, sm_l, sm_o, b, hkv, row0, nrows, 0, a.Lk, sg, lane);
  for (int idx = tid; idx < nrows * DV; idx += kDecodeSimdgroups * 32) {
    const int r = idx / DV, d = idx % DV;
    out[decode_row_index(a, b, hkv, row0 + r) * DV + d] = static_cast<T>(decode_combine<DV, R>(sm_m, sm_l, sm_o, r, d).x);
  }
}

template <typename T, int DK, int DV, int R>
[[kernel, max_total_threads_per_threadgroup(kDecodeSimdgroups * 32)]] void attention_decode_split(
    const device T* q [[buffer(0)]],
    const device T* k [[buffer(1)]],
    const device T* v [[buffer(2)]],
    device float* part_o [[buffer(3)]],
    constant AttnDecodeArgs& a [[buffer(4)]],
    device float2* part_ml [[buffer(5)]],
    uint3 tgid [[threadgroup_position_in_grid]],
    ushort tid [[thread_index_in_threadgroup]],
    ushort sg [[simdgroup_index_in_threadgroup]],
    ushort lane [[thread_index_in_simdgroup]]) {
  threadgroup float sm_m[kDecodeSimdgroups * R];
  threadgroup float sm_l[kDecodeSimdgroups * R];
  threadgroup float sm_o[kDecodeSimdgroups * R * DV];
  const int b = int(tgid.y) / a.Hkv, hkv = int(tgid.y) % a.Hkv, split = int(tgid.z);
  const int row0 = int(tgid.x) * R, nrows = min(R, a.gqa * a.Lq - row0);
  const int kbeg = split * a.keys_per_split, kend = min(a.Lk, kbeg + a.keys_per_split);
  decode_partials<T, DK, DV, R>(q, k, v, a, sm_m, sm_l, sm_o, b, hkv, row0, nrows, kbeg, kend, sg, lane);
  for (int idx = tid; idx < nrows * DV; idx += kDecodeSimdgroups * 32) {
    const int r = idx / DV, d = idx % DV;
    const float3 c = decode_combine<DV, R>(sm_m, sm_l, sm_o, r, d);
    const size_t slot = decode_row_index(a, b, hkv, row0 + r) * a.splits + split;
    part_o[slot * DV + d] = c.x;
    if (d == 0) part_ml[slot] = float2(c.y, c.z);
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
