// Attention prefill: each SIMD-group owns 8 query rows of one (batch, query head) and walks the key
// tiles of kPrefillBK keys: S = Q K^T with 8x8 simdgroup matrices (float32), an online softmax on the
// 8 x BK score tile in threadgroup memory (4 lanes per row, combined with simd_shuffle_xor), then
// O += P V with simdgroup matrices, O held in registers as DVT/8 fragments. Bottom-right causal:
// the walk stops at the last key the group's last row may see (whole tiles past the diagonal are
// skipped) and only the tile on the diagonal is masked element-wise. Dk != Dv is allowed; a Dv wider
// than DVT is covered by dv_tiles threadgroups (grid x), each recomputing the scores for its slice.
// The SIMD-groups of a threadgroup never synchronise with each other.
#pragma once
#include "kargs.h"
#include "utils.h"

template <typename T, int DK, int DVT>
[[kernel, max_total_threads_per_threadgroup(kPrefillSimdgroups * 32)]] void attention_prefill(
    const device T* q [[buffer(0)]],
    const device T* k [[buffer(1)]],
    const device T* v [[buffer(2)]],
    device T* out [[buffer(3)]],
    constant AttnPrefillArgs& a [[buffer(4)]],
    uint3 tgid [[threadgroup_position_in_grid]],
    ushort sg [[simdgroup_index_in_threadgroup]],
    ushort lane [[thread_index_in_simdgroup]]) {
  constexpr int BK = kPrefillBK, NF = DVT / 8;
  threadgroup float tile_all[kPrefillSimdgroups * 8 * BK];  // this SIMD-group's scores, then probabilities
  threadgroup float fac_all[kPrefillSimdgroups * 8];        // per-row rescale factors
  threadgroup float* tile = tile_all + sg * 8 * BK;
  threadgroup float* fac = fac_all + sg * 8;

  const int qtile = int(tgid.x) / a.dv_tiles, dv0 = (int(tgid.x) % a.dv_tiles) * DVT;
  const int hq = int(tgid.y), b = int(tgid.z), hkv = hq / a.gqa;
  const int row0 = (qtile * kPrefillSimdgroups + int(sg)) * 8;
  if (row0 >= a.Lq) return;  // the whole SIMD-group leaves; nothing synchronises across SIMD-groups
  const int nrows = min(8, a.Lq - row0);
  const int off = a.Lk - a.Lq;  // query i sits at key position off + i
  const int kend = a.causal ? clamp(off + row0 + nrows, 0, a.Lk) : a.Lk;

  const device T* qp = q + size_t(b) * a.q.batch + size_t(hq) * a.q.head + size_t(row0) * a.q.seq;
  const device T* kb = k + size_t(b) * a.k.batch + size_t(hkv) * a.k.head;
  const device T* vb = v + size_t(b) * a.v.batch + size_t(hkv) * a.v.head + dv0;
  const int qld = int(a.q.seq), kld = int(a.k.seq), vld = int(a.v.seq);

  frag8 o[NF];
  for (int f = 0; f < NF; f++) o[f] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  // Softmax lanes: row lane / 4, columns (lane % 4) * 8 .. + 8 of the score tile.
  const int srow = lane / 4, scol = (lane % 4) * 8;
  const int qpos = off + row0 + srow;
  float m_run = kNegInf, l_run = 0.0f;
  const short2 rc = frag_coord(lane);

  for (int k0 = 0; k0 < kend; k0 += BK) {
    const int kn = min(BK, a.Lk - k0);
    frag8 s[BK / 8];
    for (int t = 0; t < BK / 8; t++) s[t] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
    for (int d0 = 0; d0 < DK; d0 += 8) {
      frag8 fq;
      frag_load(fq, qp + d0, qld, nrows, 8, lane);
      for (int t = 0; t < BK / 8; t++) {
        frag8 fk;  // K^T: (dim, key)
        frag_load_t(fk, kb + size_t(k0 + 8 * t) * a.k.seq + d0, kld, 8, kn - 8 * t, lane);
        simdgroup_multiply_accumulate(s[t], fq, fk, s[t]);
      }
    }
    for (int t = 0; t < BK / 8; t++) frag_store<float>(s[t], tile + 8 * t, BK, 8, 8, lane);
    simdgroup_barrier(mem_flags::mem_threadgroup);

    float sv[8];
    float tmax = kNegInf;
    for (int j = 0; j < 8; j++) {
      const int key = k0 + scol + j;
      const bool ok = key < a.Lk && (!a.causal || key <= qpos);
      sv[j] = ok ? tile[srow * BK + scol + j] * a.scale_log2 : kNegInf;
      tmax = max(tmax, sv[j]);
    }
    tmax = max(tmax, simd_shuffle_xor(tmax, ushort(1)));
    tmax = max(tmax, simd_shuffle_xor(tmax, ushort(2)));
    const float mn = max(m_run, tmax);
    const float alpha = mn == kNegInf ? 1.0f : exp2(m_run - mn);
    float psum = 0.0f;
    for (int j = 0; j < 8; j++) {
      const float p = mn == kNegInf ? 0.0f : exp2(sv[j] - mn);
      tile[srow * BK + scol + j] = p;
      psum += p;
    }
    psum += simd_shuffle_xor(psum, ushort(1));
    psum += simd_shuffle_xor(psum, ushort(2));
    l_run = l_run * alpha + psum;
    m_run = mn;
    if (lane % 4 == 0) fac[srow] = alpha;
    simdgroup_barrier(mem_flags::mem_threadgroup);

    const float my_alpha = fac[rc.y];
    for (int f = 0; f < NF; f++) o[f].thread_elements() *= my_alpha;
    frag8 p[BK / 8];
    for (int t = 0; t < BK / 8; t++) frag_load(p[t], tile + 8 * t, BK, 8, 8, lane);
    for (int f = 0; f < NF; f++) {
      for (int t = 0; t < BK / 8; t++) {
        frag8 fv;  // V: (key, dim)
        frag_load(fv, vb + size_t(k0 + 8 * t) * a.v.seq + 8 * f, vld, kn - 8 * t, 8, lane);
        simdgroup_multiply_accumulate(o[f], p[t], fv, o[f]);
      }
    }
    simdgroup_barrier(mem_flags::mem_threadgroup);  // the next tile overwrites tile/fac
  }

  if (lane % 4 == 0) fac[srow] = l_run > 0.0f ? 1.0f / l_run : 0.0f;  // a row that saw no key gives 0
  simdgroup_barrier(mem_flags::mem_threadgroup);
  const float inv = fac[rc.y];
  device T* op = out + ((size_t(b) * a.Hq + hq) * a.Lq + row0) * a.Dv + dv0;
  for (int f = 0; f < NF; f++) {
    o[f].thread_elements() *= inv;
    frag_store<T>(o[f], op + 8 * f, a.Dv, nrows, 8, lane);
  }
}
