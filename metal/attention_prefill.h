// Attention prefill: a threadgroup takes kPrefillSimdgroups x 8 query rows of one (batch, query head);
// each SIMD-group owns 8 rows. The threadgroup walks key tiles of BK keys, staging each K tile and the
// V tile (its DVT-column slice) once in threadgroup memory with coalesced loads. Per tile a SIMD-group
// computes S = Q K^T with 8x8 simdgroup matrices (float32), runs an online softmax on its 8 x BK score
// tile (4 lanes per row, combined with simd_shuffle_xor), and accumulates O += P V into DVT/8 fragments
// held in registers. Bottom-right causal: the walk stops at the last key the threadgroup's last row may
// see (whole tiles past the diagonal are skipped, per SIMD-group too) and only tiles on the diagonal are
// masked element-wise. Dk != Dv is allowed; a Dv wider than DVT is covered by dv_tiles threadgroups
// (grid x), each recomputing the scores for its slice.
#pragma once
#include "kargs.h"
#include "utils.h"

// Keys per tile: the largest of 32, 16, 8 whose K and V tiles plus the score scratch fit in 32 KB.
template <typename T, int DK, int DVT>
constexpr int prefill_tile_keys() {
  return prefill_tile_bytes(32, DK, DVT, int(sizeof(T))) <= kMaxThreadgroupBytes   ? 32
         : prefill_tile_bytes(16, DK, DVT, int(sizeof(T))) <= kMaxThreadgroupBytes ? 16
                                                                                   : 8;
}

template <typename T, int DK, int DVT>
[[kernel, max_total_threads_per_threadgroup(kPrefillSimdgroups * 32)]] void attention_prefill(
    const device T* q [[buffer(0)]],
    const device T* k [[buffer(1)]],
    const device T* v [[buffer(2)]],
    device T* out [[buffer(3)]],
    constant AttnPrefillArgs& a [[buffer(4)]],
    uint3 tgid [[threadgroup_position_in_grid]],
    ushort tid [[thread_index_in_threadgroup]],
    ushort sg [[simdgroup_index_in_threadgroup]],
    ushort lane [[thread_index_in_simdgroup]]) {
  constexpr int BK = prefill_tile_keys<T, DK, DVT>(), NF = DVT / 8, KPL = BK / 4;
  constexpr int NTHREADS = kPrefillSimdgroups * 32;
  threadgroup T kt[BK * DK];
  threadgroup T vt[BK * DVT];
  threadgroup float tile_all[kPrefillSimdgroups * 8 * BK];  // per SIMD-group: scores, then probabilities
  threadgroup float fac_all[kPrefillSimdgroups * 8];        // per-row rescale factors
  threadgroup float* tile = tile_all + sg * 8 * BK;
  threadgroup float* fac = fac_all + sg * 8;

  const int qtile = int(tgid.x) / a.dv_tiles, dv0 = (int(tgid.x) % a.dv_tiles) * DVT;
  const int hq = int(tgid.y), b = int(tgid.z), hkv = hq / a.gqa;
  const int tg_row0 = qtile * kPrefillSimdgroups * 8;
  const int row0 = tg_row0 + int(sg) * 8;
  const int nrows = clamp(a.Lq - row0, 0, 8);  // 0: this SIMD-group only helps stage tiles
  const int tg_rows = min(kPrefillSimdgroups * 8, a.Lq - tg_row0);
  const int off = a.Lk - a.Lq;  // query i sits at key position off + i
  const int tg_kend = a.causal ? clamp(off + tg_row0 + tg_rows, 0, a.Lk) : a.Lk;
  const int my_kend = a.causal ? clamp(off + row0 + nrows, 0, a.Lk) : a.Lk;

  const device T* qp = q + size_t(b) * a.q.batch + size_t(hq) * a.q.head + size_t(row0) * a.q.seq;
  const device T* kb = k + size_t(b) * a.k.batch + size_t(hkv) * a.k.head;
  const device T* vb = v + size_t(b) * a.v.batch + size_t(hkv) * a.v.head + dv0;
  const int qld = int(a.q.seq);

  frag8 o[NF];
  for (int f = 0; f < NF; f++) o[f] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  // Softmax lanes: row lane / 4, columns (lane % 4) * KPL .. + KPL of the score tile.
  const int srow = lane / 4, scol = (lane % 4) * KPL;
  const int qpos = off + row0 + srow;
  float m_run = kNegInf, l_run = 0.0f;
  const short2 rc = frag_coord(lane);

  for (int k0 = 0; k0 < tg_kend; k0 += BK) {
    const int kn = min(BK, a.Lk - k0);
    for (int i = tid; i < kn * DK; i += NTHREADS) kt[i] = kb[size_t(k0 + i / DK) * a.k.seq + i % DK];
    for (int i = tid; i < kn * DVT; i += NTHREADS) vt[i] = vb[size_t(k0 + i / DVT) * a.v.seq + i % DVT];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (nrows > 0 && k0 < my_kend) {  // uniform within the SIMD-group
      frag8 s[BK / 8];
      for (int t = 0; t < BK / 8; t++) s[t] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
      for (int d0 = 0; d0 < DK; d0 += 8) {
        frag8 fq;
        frag_load(fq, qp + d0, qld, nrows, 8, lane);
        for (int t = 0; t < BK / 8; t++) {
          frag8 fk;  // K^T: (dim, key)
          frag_load_t(fk, kt + 8 * t * DK + d0, DK, 8, kn - 8 * t, lane);
          simdgroup_multiply_accumulate(s[t], fq, fk, s[t]);
        }
      }
      for (int t = 0; t < BK / 8; t++) frag_store<float>(s[t], tile + 8 * t, BK, 8, 8, lane);
      simdgroup_barrier(mem_flags::mem_threadgroup);

      float sv[KPL];
      float tmax = kNegInf;
      for (int j = 0; j < KPL; j++) {
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
      for (int j = 0; j < KPL; j++) {
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
          frag_load(fv, vt + 8 * t * DVT + 8 * f, DVT, kn - 8 * t, 8, lane);
          simdgroup_multiply_accumulate(o[f], p[t], fv, o[f]);
        }
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);  // the next tile overwrites kt, vt (and tile, fac)
  }

  if (nrows == 0) return;
  if (lane % 4 == 0) fac[srow] = l_run > 0.0f ? 1.0f / l_run : 0.0f;  // a row that saw no key gives 0
  simdgroup_barrier(mem_flags::mem_threadgroup);
  const float inv = fac[rc.y];
  device T* op = out + ((size_t(b) * a.Hq + hq) * a.Lq + row0) * a.Dv + dv0;
  for (int f = 0; f < NF; f++) {
    o[f].thread_elements() *= inv;
    frag_store<T>(o[f], op + 8 * f, a.Dv, nrows, 8, lane);
  }
}
