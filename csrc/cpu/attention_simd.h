// Flash-attention CPU kernel written once over a SIMD traits type S
// (attention_avx2.cpp, attention_avx512.cpp instantiate it with their flags).
//
// Work unit: one KV head of one batch entry and a tile of "rows", where the
// rows of a KV head are its (query position, head in the GQA group) pairs,
// position-major. All heads of a group share every K/V block they read.
// Per block of keys:
//   S^T (keys x rows) = K Q'^T      Q' = Q * scale * log2(e)
//   causal mask (only blocks that cross the diagonal)
//   online softmax, vectorised over rows: m, l, P = exp2(S - m), rescale O
//   O (rows x Dv) += P V
// Scores are kept transposed (keys x rows) so the softmax runs down columns
// without horizontal reductions, and V never needs a transpose.
//
// Two ways to form S^T:
// - prefill (many rows): GEMM micro-kernel with K rows broadcast against Q'^T
//   packed [d][row]; K/V blocks are widened to float32 once per block
//   (float32 K/V are read in place) and reused by every row of the tile.
// - decode (at most one vector of rows): dot products along d reading K rows
//   straight from the cache as vectors, so float16/bfloat16 are widened in
//   registers with no conversion pass; P V reads V the same way. Both use
//   tiles of at most 4 rows (4 rows x 3 keys, 4 rows x 3 vectors: 7 loads per
//   12 FMAs), which is what bounds GQA decode on AVX2 (8 FLOP per cache byte).
//   A single row (no GQA) keeps its scores contiguous so the softmax runs
//   along the keys, and reads its key range as 3 segments side by side (one
//   key of each per score tile) so the hardware prefetchers see 3 long
//   streams instead of short rows read in step. Otherwise K/V lines are
//   prefetched ~8 KB ahead, spread over the score loop. The key range of a
//   unit is split into chunks run on different threads, merged after.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <new>
#include <type_traits>
#include <vector>

#include "cpu/attention.h"
#include "cpu/attention_tiles.h"
#include "cpu/exp2_poly.h"
#include "cpu/half.h"
#include "cpu/thread_pool.h"

namespace tandem::cpu::attn {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
inline int64_t ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }

inline float to_f32(float x) { return x; }
inline float to_f32(f16 x) { return half::f16_to_f32(x.bits); }
inline float to_f32(bf16 x) { return half::bf16_to_f32(x.bits); }
inline void from_f32(float x, float* d) { *d = x; }
inline void from_f32(float x, f16* d) { d->bits = half::f32_to_f16(x); }
inline void from_f32(float x, bf16* d) { d->bits = half::f32_to_bf16(x); }
template <class S>
inline void vstore(float* p, typename S::V v) { S::store(p, v); }
template <class S>
inline void vstore(f16* p, typename S::V v) { S::store_f16(&p->bits, v); }
template <class S>
inline void vstore(bf16* p, typename S::V v) { S::store_bf16(&p->bits, v); }

// Growable 64-byte aligned float buffer (one per thread and role).
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  ~Scratch() { std::free(p_); }
  float* get(int64_t n) {
    if (static_cast<size_t>(n) > cap_) {
      std::free(p_);
      cap_ = static_cast<size_t>(round_up(std::max<int64_t>(n, 16), 16));
      p_ = static_cast<float*>(std::aligned_alloc(64, cap_ * sizeof(float)));
      if (!p_) throw std::bad_alloc();
    }
    return p_;
  }

 private:
  float* p_ = nullptr;
  size_t cap_ = 0;
};

// dst[0, n) = float32(src[0, n)), dst[n, npad) = 0.
template <class S, class T>
void load_row(const T* src, int64_t n, int64_t npad, float* dst) {
  constexpr int W = S::W;
  int64_t i = 0;
  for (; i + W <= n; i += W) S::store(dst + i, vload<S>(src + i));
  for (; i < n; ++i) dst[i] = to_f32(src[i]);
  for (; i < npad; ++i) dst[i] = 0.0f;
}

// dst[i] = src[i] * mul for i < n, narrowed to T with round to nearest even.
template <class S, class T>
void store_row(const float* src, float mul, int64_t n, T* dst) {
  constexpr int W = S::W;
  const auto vm = S::set1(mul);
  int64_t i = 0;
  for (; i + W <= n; i += W) vstore<S>(dst + i, S::mul(S::load(src + i), vm));
  for (; i < n; ++i) from_f32(src[i] * mul, dst + i);
}

inline int64_t elem_size(ElemType t) { return t == ElemType::F32 ? 4 : 2; }

// How the problem is cut into tasks.
struct Plan {
  int64_t G;       // query heads per KV head
  int64_t rows;    // rows of one KV head: Lq * G
  int64_t RT;      // rows per tile
  int64_t tiles;   // tiles per KV head
  int64_t KB;      // keys per block
  int64_t nsplit;  // key-range chunks per tile (decode), merged afterwards
  int64_t BH;      // B * Hkv
  int64_t Dkp, Dvp;  // head dims rounded up to whole vectors
  bool decode;     // a tile is at most one vector of rows: dot-product path
  int64_t prefetch_keys;  // decode: how far ahead of the scores K/V rows are requested
  int64_t tasks() const { return tiles * BH * nsplit; }
};

template <class S>
Plan make_plan(const AttentionArgs& a) {
  constexpr int W = S::W;
  Plan p;
  p.G = a.group();
  p.rows = a.Lq * p.G;
  p.BH = a.B * a.Hkv;
  p.Dkp = round_up(a.Dk, W);
  p.Dvp = round_up(a.Dv, W);
  // Q'^T and O of a tile stay in L2 (~192 KB); multiples of 6 and W suit both micro-kernels.
  const int64_t fit = (48 * 1024) / (a.Dk + p.Dvp);
  const int64_t rt = std::clamp<int64_t>(fit / (6 * W) * (6 * W), 2 * W, 12 * W);
  p.decode = p.rows <= W;
  // A few query positions against a long cache (decode with a large GQA group,
  // MLA with absorbed projections): one tile holds every row so each K/V byte
  // is read once per step; the key split below provides the parallelism.
  const bool one_tile = a.Lq <= 32 && p.rows * (a.Dk + p.Dvp) * 4 <= (640 << 10);
  p.RT = p.decode || one_tile ? p.rows : std::min(rt, round_up(p.rows, W));
  p.tiles = ceil_div(p.rows, p.RT);
  p.KB = p.decode ? 240 : 64;  // decode: whole chunks of 24 keys (decode_scores)
  // ~8 KB of K and V ahead (measured: 2-16 KB alike, 32 KB+ slower, none 20-30% slower cold).
  p.prefetch_keys = std::max<int64_t>(8, (8 << 10) / ((a.Dk + a.Dv) * elem_size(a.type)));
  // Too few units to keep every thread busy (decode): split the keys. Several
  // tasks per thread keep the tail short when a thread is slowed down (16 per
  // thread rather than 8: MLA decode at 32k keys +1-7 points, GQA alike).
  const int64_t units = p.BH * p.tiles, want = 16 * num_threads();
  p.nsplit = units < want ? std::max<int64_t>(1, std::min(ceil_div(want, units), a.Lk / (4 * p.KB))) : 1;
  return p;
}

// Per-thread working set of a task.
struct Work {
  Scratch q, k, v, s, o, state;
};

// The running state of one tile: transposed scores, output accumulator and
// per-row softmax statistics (log2 domain).
struct TileState {
  int64_t R, Rp, Dvp;
  float *st, *o, *m, *l, *alpha, *qpos;
};

// Sets the scores of keys kb0 + j past each row's own position to -inf;
// keys before first_masked are visible to every row of the tile.
template <class S>
void mask_block(const TileState& t, int64_t kb0, int64_t n, int64_t first_masked) {
  using V = typename S::V;
  constexpr int W = S::W;
  const V neg_inf = S::set1(kNegInf);
  for (int64_t j = std::max<int64_t>(0, first_masked - kb0); j < n; ++j) {
    const V kp = S::set1(static_cast<float>(kb0 + j));
    float* s = t.st + j * t.Rp;
    for (int64_t c = 0; c < t.Rp; c += W)
      S::store(s + c, S::select_gt(kp, S::load(t.qpos + c), neg_inf, S::load(s + c)));
  }
}

// Online softmax over one block of n transposed scores. Turns st into P,
// updates m and l, and rescales the first R rows of O by 2^(m_old - m_new)
// when any of those factors differs from 1.
template <class S>
void softmax_block(const TileState& t, int64_t n) {
  using V = typename S::V;
  constexpr int W = S::W;
  const int64_t Rp = t.Rp;
  const V neg_inf = S::set1(kNegInf), one = S::set1(1.0f);
  bool rescale = false;
  for (int64_t c = 0; c < Rp; c += W) {
    V mx = neg_inf;
    for (int64_t j = 0; j < n; ++j) mx = S::max(mx, S::load(t.st + j * Rp + c));
    const V m_old = S::load(t.m + c), m_new = S::max(m_old, mx);
    // A row whose keys so far are all masked keeps m = -inf; subtracting 0
    // instead makes its P exactly 0 rather than NaN.
    const V mu = S::select_eq(m_new, neg_inf, S::zero(), m_new);
    const V al = S::exp2(S::sub(m_old, mu));
    rescale |= !S::all_eq(al, one);
    V sum = S::zero();
    for (int64_t j = 0; j < n; ++j) {
      const V pj = S::exp2(S::sub(S::load(t.st + j * Rp + c), mu));
      S::store(t.st + j * Rp + c, pj);
      sum = S::add(sum, pj);
    }
    S::store(t.m + c, m_new);
    S::store(t.l + c, S::fma(S::load(t.l + c), al, sum));
    S::store(t.alpha + c, al);
  }
  if (!rescale) return;
  for (int64_t r = 0; r < t.R; ++r) {
    const V al = S::set1(t.alpha[r]);
    float* o = t.o + r * t.Dvp;
    for (int64_t c = 0; c < t.Dvp; c += W) S::store(o + c, S::mul(S::load(o + c), al));
  }
}

// softmax_block for a single row whose n scores are contiguous (Rp = 1).
template <class S>
void softmax_row(const TileState& t, int64_t n) {
  using V = typename S::V;
  constexpr int W = S::W;
  float* st = t.st;
  const int64_t nw = n / W * W;
  V mxv = S::set1(kNegInf);
  for (int64_t j = 0; j < nw; j += W) mxv = S::max(mxv, S::load(st + j));
  alignas(64) float lanes[W];
  S::store(lanes, mxv);
  float mx = kNegInf;
  for (int i = 0; i < W; ++i) mx = std::max(mx, lanes[i]);
  for (int64_t j = nw; j < n; ++j) mx = std::max(mx, st[j]);
  const float m_old = t.m[0], m_new = std::max(m_old, mx);
  const float mu = m_new == kNegInf ? 0.0f : m_new;  // as softmax_block: all -inf gives P = 0
  const V vmu = S::set1(mu);
  V sum = S::zero();
  for (int64_t j = 0; j < nw; j += W) {
    const V pj = S::exp2(S::sub(S::load(st + j), vmu));
    S::store(st + j, pj);
    sum = S::add(sum, pj);
  }
  if (nw < n) {  // the tail through a padded vector (-inf lanes give 0)
    for (int i = 0; i < W; ++i) lanes[i] = nw + i < n ? st[nw + i] : kNegInf;
    const V pj = S::exp2(S::sub(S::load(lanes), vmu));
    S::store(lanes, pj);
    sum = S::add(sum, pj);
    for (int64_t j = nw; j < n; ++j) st[j] = lanes[j - nw];
  }
  const float al = std::exp2(m_old - mu);
  t.m[0] = m_new;
  t.l[0] = t.l[0] * al + S::reduce(sum);
  if (al == 1.0f) return;
  const V va = S::set1(al);
  for (int64_t c = 0; c < t.Dvp; c += W) S::store(t.o + c, S::mul(S::load(t.o + c), va));
}

// O (R x Dvp) += P V for one block, V rows typed as stored. For decode the
// row panel is at most 4 rows (4 x 3 vectors: 7 loads per 12 FMAs) and widens
// in columns as rows get fewer, and the block is visited in chunks of keys so the V
// rows a chunk touches stay in L1 while every column panel passes over them.
template <class S, class TV>
void pv_block(const TileState& t, int64_t n, const TV* v, int64_t ldv) {
  constexpr int W = S::W;
  const int64_t nv = t.Dvp / W;
  if (t.Rp > W) return gemm_block<S, 6, 2, true>(t.R, nv, n, t.st, t.Rp, v, ldv, t.o, t.Dvp, true);
  constexpr int64_t chunk = 32;
  for (int64_t j = 0; j < n; j += chunk) {
    const int64_t nj = std::min(chunk, n - j);
    const float* p = t.st + j * t.Rp;
    const TV* vj = v + j * ldv;
    if (t.R > 2)
      gemm_block<S, 4, 3, true>(t.R, nv, nj, p, t.Rp, vj, ldv, t.o, t.Dvp, true);
    else
      gemm_block<S, 2, 6, true>(t.R, nv, nj, p, t.Rp, vj, ldv, t.o, t.Dvp, true);
  }
}

// O (1 x Dvp) += P V for one row over keys taken NSEG at a time from NSEG
// segments of V (vseg elements apart), P[j * NSEG + s] the weight of key j of
// segment s: the segments' V rows are read side by side, as their K rows were.
// Chunks of keys stay in L1 while every column panel (8 accumulators) passes.
template <class S, int NSEG, class TV>
void pv_segments(const TileState& t, const float* P, int64_t n, const TV* v, int64_t ldv, int64_t vseg) {
  using V = typename S::V;
  constexpr int W = S::W;
  constexpr int64_t chunk = 16;
  const int64_t nv = t.Dvp / W;
  for (int64_t j0 = 0; j0 < n; j0 += chunk) {
    const int64_t j1 = std::min(n, j0 + chunk);
    int64_t c = 0;
    each_width<8>(c, nv, [&](auto width, int64_t c0) {
      constexpr int N = decltype(width)::value;
      float* o = t.o + c0 * W;
      V acc[N];
      for (int i = 0; i < N; ++i) acc[i] = S::load(o + i * W);
      for (int64_t j = j0; j < j1; ++j)
        for (int s = 0; s < NSEG; ++s) {
          const V p = S::set1(P[j * NSEG + s]);
          const TV* vr = v + s * vseg + j * ldv + c0 * W;
          for (int i = 0; i < N; ++i) acc[i] = S::fma(p, vload<S>(vr + i * W), acc[i]);
        }
      for (int i = 0; i < N; ++i) S::store(o + i * W, acc[i]);
    });
  }
}

// Segmented single-row decode (see dot_segments): segments per score tile.
// Measured with 3, 4, 6 and 8 (8 = the 1 x 8 tile's width): fewer streams
// keep up better with two threads, 3 and 4 alike.
constexpr int kSegments = 3;
constexpr int64_t kMinSegment = 16;  // keys per segment; shorter ranges use plain blocks

// A segment length at most 31 keys under `len` whose K and V segment starts
// fall in different L1 sets: segments a multiple of 4 KB apart evict each
// other (measured: slower than one stream).
inline int64_t segment_length(int64_t len, int64_t krow, int64_t vrow) {
  auto spread = [&](int64_t l) {
    int64_t worst = 4096;
    for (int64_t row : {krow, vrow})
      for (int s = 1; s < kSegments; ++s) {
        const int64_t m = (s * l * row) & 4095;
        worst = std::min(worst, std::min(m, 4096 - m));
      }
    return worst;
  };
  int64_t best = len, best_spread = -1;
  for (int64_t l = len; l > len - 32 && l > 0; --l) {
    const int64_t sp = spread(l);
    if (sp > best_spread) best = l, best_spread = sp;
    if (sp >= 256) break;
  }
  return best;
}

template <class S, class T>
class TaskRunner {
 public:
  TaskRunner(const AttentionArgs& a, const Plan& p) : a_(a), p_(p) {}

  // Rows [r0, r0 + R) of KV head (b, kvh), keys of chunk `split`. With a
  // single chunk it writes the normalised output; otherwise the partial
  // (m, l, unnormalised O) rows for merge().
  void run(int64_t b, int64_t kvh, int64_t tile, int64_t split, float* part_m, float* part_l,
           float* part_o) const {
    constexpr int W = S::W;
    const AttentionArgs& a = a_;
    const Plan& p = p_;
    const int64_t G = p.G, Dk = a.Dk, Dv = a.Dv, KB = p.KB;
    const int64_t r0 = tile * p.RT, R = std::min(p.RT, p.rows - r0);
    // A single decode row keeps its scores contiguous (Rp = 1): softmax_row
    // then runs along the keys instead of wasting W - 1 lanes per key.
    const int64_t Rp = p.decode && R == 1 ? 1 : round_up(R, W);
    const int64_t qoff = a.q_offset(), p_first = r0 / G, p_last = (r0 + R - 1) / G;
    const int64_t kend = a.causal ? std::min(a.Lk, qoff + p_last + 1) : a.Lk;
    const int64_t nblk = ceil_div(kend, KB);
    const int64_t k_lo = nblk * split / p.nsplit * KB;
    const int64_t k_hi = std::min(kend, nblk * (split + 1) / p.nsplit * KB);

    thread_local Work w;
    TileState t;
    t.R = R;
    t.Rp = Rp;
    t.Dvp = p.Dvp;
    t.st = w.s.get(KB * Rp + 4);  // + 4: single-row score tiles store 4 sums at a time
    t.o = w.o.get(Rp * p.Dvp);
    const int64_t Rs = round_up(Rp, W);
    float* state = w.state.get(4 * Rs);
    t.m = state;
    t.l = state + Rs;
    t.alpha = state + 2 * Rs;
    t.qpos = state + 3 * Rs;
    for (int64_t r = 0; r < Rp; ++r) {
      t.qpos[r] = static_cast<float>(qoff + (r0 + std::min(r, R - 1)) / G);
      t.m[r] = kNegInf;
      t.l[r] = 0.0f;
    }
    std::fill(t.o, t.o + Rp * p.Dvp, 0.0f);
    std::fill(t.st, t.st + KB * Rp + 4, 0.0f);

    // Q' = Q * scale * log2(e): packed [Dkp / W][R][W] for decode (the dot
    // tiles address every row from one pointer), transposed [Dk][Rp] (padding
    // rows zero) for the prefill micro-kernel.
    const float qscale = a.scale * kLog2e;
    float* q = w.q.get(p.decode ? (R + 1) * p.Dkp : Dk * Rp + p.Dkp);
    if (p.decode) {
      float* row = q + R * p.Dkp;
      const auto vs = S::set1(qscale);
      for (int64_t r = 0; r < R; ++r) {
        load_row<S>(q_row(b, kvh, r0 + r), Dk, p.Dkp, row);
        for (int64_t d = 0; d < p.Dkp; d += W) S::store(q + (d / W * R + r) * W, S::mul(S::load(row + d), vs));
      }
    } else {
      float* row = q + Dk * Rp;
      for (int64_t r = 0; r < Rp; ++r) {
        if (r < R) load_row<S>(q_row(b, kvh, r0 + r), Dk, Dk, row);
        for (int64_t d = 0; d < Dk; ++d) q[d * Rp + r] = r < R ? row[d] * qscale : 0.0f;
      }
    }

    const T* k = static_cast<const T*>(a.k) + b * a.ks[0] + kvh * a.ks[1];
    const T* v = static_cast<const T*>(a.v) + b * a.vs[0] + kvh * a.vs[1];
    const int64_t first_masked = qoff + p_first + 1;  // keys from here on are masked for some row
    // A single row (no GQA) reads most of its keys as kSegments streams;
    // what is left (a remainder, masked keys) goes through plain blocks.
    int64_t k_rest = k_lo;
    if (p.decode && R == 1 && Dk == p.Dkp && Dv == p.Dvp) {
      constexpr int64_t es = sizeof(T);
      const int64_t len = ((a.causal ? std::min(k_hi, first_masked) : k_hi) - k_lo) / kSegments;
      const int64_t seg_len = segment_length(len, a.ks[2] * es, a.vs[2] * es);
      if (seg_len >= kMinSegment) {
        decode_segments(t, q, k, v, k_lo, seg_len);
        k_rest = k_lo + kSegments * seg_len;
      }
    }
    // Decode streams K and V once: the rows of the first p.prefetch_keys keys
    // are requested now, then each score tile requests as many keys ahead.
    Prefetch pf;
    if (p.decode) {
      constexpr int64_t es = sizeof(T);
      pf.k.init(k + k_rest * a.ks[2], a.ks[2] * es, Dk * es);
      pf.v.init(v + k_rest * a.vs[2], a.vs[2] * es, Dv * es);
      pf.left = k_hi - k_rest;
      pf.rows(p.prefetch_keys);
      pf.flush();
    }
    for (int64_t kb0 = k_rest; kb0 < k_hi; kb0 += KB) {
      const int64_t n = std::min(KB, k_hi - kb0);
      const T* kb = k + kb0 * a.ks[2];
      const T* vb = v + kb0 * a.vs[2];
      if (p.decode)
        decode_scores(w, t, q, kb, n, pf);
      else
        prefill_scores(w, t, q, kb, n);
      // (A single row never sees a masked key: kend stops at its position.)
      if (a.causal && kb0 + n > first_masked) mask_block<S>(t, kb0, n, first_masked);
      if (Rp == 1)
        softmax_row<S>(t, n);
      else
        softmax_block<S>(t, n);
      // O += P V, V read as stored when rows are whole vectors; widened once
      // per block for prefill with float16/bfloat16 (reused by every row panel).
      if (Dv == p.Dvp && (p.decode || std::is_same_v<T, float>)) {
        pv_block<S>(t, n, vb, a.vs[2]);
      } else {
        float* vbuf = w.v.get(KB * p.Dvp);
        for (int64_t j = 0; j < n; ++j) load_row<S>(vb + j * a.vs[2], Dv, p.Dvp, vbuf + j * p.Dvp);
        pv_block<S>(t, n, vbuf, p.Dvp);
      }
    }

    for (int64_t r = 0; r < R; ++r) {
      if (part_o) {
        part_m[r] = t.m[r];
        part_l[r] = t.l[r];
        std::copy(t.o + r * p.Dvp, t.o + r * p.Dvp + Dv, part_o + r * Dv);
      } else {
        store_row<S>(t.o + r * p.Dvp, 1.0f / t.l[r], Dv, out_row(b, kvh, r0 + r));
      }
    }
  }

  T* out_row(int64_t b, int64_t kvh, int64_t row) const {
    const int64_t pos = row / p_.G, g = row % p_.G;
    return static_cast<T*>(a_.out) + ((b * a_.Hq + kvh * p_.G + g) * a_.Lq + pos) * a_.Dv;
  }

 private:
  const T* q_row(int64_t b, int64_t kvh, int64_t row) const {
    const int64_t pos = row / p_.G, g = row % p_.G;
    return static_cast<const T*>(a_.q) + b * a_.qs[0] + (kvh * p_.G + g) * a_.qs[1] + pos * a_.qs[2];
  }

  // Single-row decode over keys [k0, k0 + kSegments * seg_len), none masked:
  // blocks of KB keys, kSegments * per at a time (scores st[j * kSegments + s]
  // for key k0 + s * seg_len + j), the online softmax over the block, then
  // P V with the segments' V rows read side by side. No software prefetch:
  // it slowed these streams.
  void decode_segments(const TileState& t, const float* qp, const T* k, const T* v, int64_t k0,
                       int64_t seg_len) const {
    constexpr int W = S::W;
    const int64_t ldk = a_.ks[2], ldv = a_.vs[2], nd = p_.Dkp / W;
    const int64_t per = std::max<int64_t>(1, p_.KB / kSegments);
    for (int64_t j0 = 0; j0 < seg_len; j0 += per) {
      const int64_t n = std::min(per, seg_len - j0);
      const T* kb = k + (k0 + j0) * ldk;
      const T* vb = v + (k0 + j0) * ldv;
      dot_segments<S, kSegments>(n, nd, qp, kb, ldk, seg_len * ldk, t.st);
      softmax_row<S>(t, n * kSegments);
      pv_segments<S, kSegments>(t, t.st, n, vb, ldv, seg_len * ldv);
    }
  }

  // Decode: S^T by dot products over chunks of keys small enough to stay in
  // L1 while every panel of 4 rows passes over them. K is read as stored
  // (widened to a small buffer only when Dk is not a whole number of vectors).
  void decode_scores(Work& w, const TileState& t, const float* qp, const T* k, int64_t n, Prefetch& pf) const {
    constexpr int W = S::W;
    const int64_t Dk = a_.Dk, Dkp = p_.Dkp, ldk = a_.ks[2], nd = Dkp / W, ldq = t.R * W;
    constexpr int64_t chunk = 24;  // a multiple of every key tile width (8, 6, 4, 3)
    const bool k_direct = Dk == Dkp;
    float* kbuf = k_direct ? nullptr : w.k.get(chunk * Dkp);
    for (int64_t j = 0; j < n; j += chunk) {
      const int64_t nj = std::min(chunk, n - j);
      if (!k_direct)
        for (int64_t i = 0; i < nj; ++i) load_row<S>(k + (j + i) * ldk, Dk, Dkp, kbuf + i * Dkp);
      for (int64_t r = 0; r < t.R; r += 4) {
        const int mr = static_cast<int>(std::min<int64_t>(4, t.R - r));
        float* c = t.st + j * t.Rp + r;
        Prefetch* f = r == 0 ? &pf : nullptr;
        if (k_direct)
          dot_rows<S>(mr, nj, nd, qp + r * W, ldq, k + j * ldk, ldk, c, t.Rp, f);
        else
          dot_rows<S>(mr, nj, nd, qp + r * W, ldq, static_cast<const float*>(kbuf), Dkp, c, t.Rp, f);
      }
    }
  }

  // Prefill: S^T = K Q'^T with the GEMM micro-kernel, K rows broadcast
  // (float32 read in place, float16/bfloat16 widened once per block).
  void prefill_scores(Work& w, const TileState& t, const float* qt, const T* k, int64_t n) const {
    constexpr int W = S::W;
    const int64_t Dk = a_.Dk;
    const float* kf;
    int64_t ldk;
    if constexpr (std::is_same_v<T, float>) {
      kf = k;
      ldk = a_.ks[2];
    } else {
      float* kbuf = w.k.get(p_.KB * Dk);
      for (int64_t j = 0; j < n; ++j) load_row<S>(k + j * a_.ks[2], Dk, Dk, kbuf + j * Dk);
      kf = kbuf;
      ldk = Dk;
    }
    gemm_block<S, 6, 2, false>(n, t.Rp / W, Dk, kf, ldk, qt, t.Rp, t.st, t.Rp, false);
  }

  const AttentionArgs& a_;
  const Plan& p_;
};

// Combines the nsplit partial results of every row of one unit (b, kvh, tile):
// out = sum_s 2^(m_s - M) O_s / sum_s 2^(m_s - M) l_s with M = max_s m_s.
template <class S, class T>
void merge(const TaskRunner<S, T>& runner, const AttentionArgs& a, const Plan& p, int64_t unit,
           const float* part_m, const float* part_l, const float* part_o, float* acc) {
  const int64_t tile = unit / p.BH, bh = unit % p.BH;
  const int64_t r0 = tile * p.RT, R = std::min(p.RT, p.rows - r0), Dv = a.Dv;
  const int64_t first = unit * p.nsplit;  // task index of chunk 0 (see run_all())
  for (int64_t r = 0; r < R; ++r) {
    float M = kNegInf;
    for (int64_t s = 0; s < p.nsplit; ++s) M = std::max(M, part_m[(first + s) * p.RT + r]);
    float L = 0.0f;
    std::fill(acc, acc + Dv, 0.0f);
    for (int64_t s = 0; s < p.nsplit; ++s) {
      const int64_t i = (first + s) * p.RT + r;
      if (part_m[i] == kNegInf) continue;  // this chunk saw no visible key for the row
      const float wgt = std::exp2(part_m[i] - M);
      L += wgt * part_l[i];
      const float* os = part_o + i * Dv;
      for (int64_t d = 0; d < Dv; ++d) acc[d] += wgt * os[d];
    }
    store_row<S>(acc, 1.0f / L, Dv, runner.out_row(bh / a.Hkv, bh % a.Hkv, r0 + r));
  }
}

template <class S, class T>
void run_all(const AttentionArgs& a) {
  const Plan p = make_plan<S>(a);
  const TaskRunner<S, T> runner(a, p);
  const int64_t units = p.tiles * p.BH;
  std::vector<float> part_m, part_l, part_o;
  if (p.nsplit > 1) {
    part_m.resize(p.tasks() * p.RT);
    part_l.resize(p.tasks() * p.RT);
    part_o.resize(p.tasks() * p.RT * a.Dv);
  }
  // Tasks are handed out last tile first: under a causal mask later tiles
  // see more keys, so the long ones start early.
  parallel_for(static_cast<int>(p.tasks()), [&](int i) {
    const int64_t split = i % p.nsplit, order = i / p.nsplit;
    const int64_t tile = p.tiles - 1 - order / p.BH, bh = order % p.BH;
    const int64_t task = (tile * p.BH + bh) * p.nsplit + split;
    if (p.nsplit > 1)
      runner.run(bh / a.Hkv, bh % a.Hkv, tile, split, part_m.data() + task * p.RT,
                 part_l.data() + task * p.RT, part_o.data() + task * p.RT * a.Dv);
    else
      runner.run(bh / a.Hkv, bh % a.Hkv, tile, split, nullptr, nullptr, nullptr);
  });
  if (p.nsplit > 1) {
    const int parts = static_cast<int>(std::min<int64_t>(units, num_threads()));
    parallel_for(parts, [&](int t) {
      std::vector<float> acc(a.Dv);
      for (int64_t u = units * t / parts; u < units * (t + 1) / parts; ++u)
        merge<S, T>(runner, a, p, u, part_m.data(), part_l.data(), part_o.data(), acc.data());
    });
  }
}

template <class S>
void attention(const AttentionArgs& a) {
  switch (a.type) {
    case ElemType::F32: return run_all<S, float>(a);
    case ElemType::F16: return run_all<S, f16>(a);
    case ElemType::BF16: return run_all<S, bf16>(a);
  }
}

} // namespace tandem::cpu::attn
