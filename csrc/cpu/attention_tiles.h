// Register-blocked micro-kernels of the attention kernel, written over a
// SIMD traits type S (W floats per vector V).
//
// tile: C (MR x NV*W) (+)= sum_k A(m, k) * B[k][0 .. NV*W). A scalars are
// broadcast, B rows are loaded as NV vectors (float32, or float16/bfloat16
// widened on load), MR*NV accumulators stay in registers for the whole kc
// loop (the BLIS micro-kernel). ACol says how A is stored: A(m, k) =
// A[k*lda + m] (column-major, e.g. P^T) or A[m*lda + k] (row-major, e.g. K).
//
// dot: C[n][m] = Q[m] . K[n] for MR query rows and NK keys, vectorised along
// the head dimension so K rows are read as vectors straight from the cache
// (decode: no conversion pass, each K element loaded once per group). With
// W = 8 the rows of C must hold 8 floats (lanes past MR are written as 0).
#pragma once

#include <cstdint>
#include <type_traits>

namespace tandem::cpu::attn {

// Element types of K/V as stored; the kernels widen them in registers.
struct f16 {
  uint16_t bits;
};
struct bf16 {
  uint16_t bits;
};

template <class S>
inline typename S::V vload(const float* p) { return S::load(p); }
template <class S>
inline typename S::V vload(const f16* p) { return S::load_f16(&p->bits); }
template <class S>
inline typename S::V vload(const bf16* p) { return S::load_bf16(&p->bits); }

template <class S, int MR, int NV, bool ACol, class TB>
inline void tile(int64_t kc, const float* A, int64_t lda, const TB* B, int64_t ldb, float* C,
                 int64_t ldc, bool load_c) {
  using V = typename S::V;
  constexpr int W = S::W;
  V acc[MR][NV];
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) acc[m][v] = load_c ? S::load(C + m * ldc + v * W) : S::zero();
  for (int64_t k = 0; k < kc; ++k) {
    V b[NV];
    for (int v = 0; v < NV; ++v) b[v] = vload<S>(B + k * ldb + v * W);
    for (int m = 0; m < MR; ++m) {
      const V a = S::set1(ACol ? A[k * lda + m] : A[m * lda + k]);
      for (int v = 0; v < NV; ++v) acc[m][v] = S::fma(a, b[v], acc[m][v]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) S::store(C + m * ldc + v * W, acc[m][v]);
}

// tile<.., mr, ..> for a runtime mr in [1, MAXR] (edge panels).
template <class S, int MAXR, int NV, bool ACol, class TB>
inline void tile_rows(int mr, int64_t kc, const float* A, int64_t lda, const TB* B, int64_t ldb,
                      float* C, int64_t ldc, bool load_c) {
  if (mr == MAXR) return tile<S, MAXR, NV, ACol>(kc, A, lda, B, ldb, C, ldc, load_c);
  if constexpr (MAXR > 1) tile_rows<S, MAXR - 1, NV, ACol>(mr, kc, A, lda, B, ldb, C, ldc, load_c);
}

// Calls f(width, c) for column panels of NV vectors, then narrower ones for
// the remainder (greedy), advancing c.
template <int N, class F>
inline void each_width(int64_t& c, int64_t nv, F&& f) {
  if constexpr (N >= 1) {
    for (; c + N <= nv; c += N) f(std::integral_constant<int, N>{}, c);
    each_width<N - 1>(c, nv, f);
  }
}

// C (m x nv*W) over a whole block: MR-row panels times NV-vector column
// panels, smaller panels at the edges. Column panels are the outer loop so
// one B panel stays in L1 across the row panels.
template <class S, int MR, int NV, bool ACol, class TB>
void gemm_block(int64_t m, int64_t nv, int64_t kc, const float* A, int64_t lda, const TB* B,
                int64_t ldb, float* C, int64_t ldc, bool load_c) {
  constexpr int W = S::W;
  int64_t c = 0;
  each_width<NV>(c, nv, [&](auto nv_const, int64_t c0) {
    constexpr int N = decltype(nv_const)::value;
    for (int64_t i = 0; i < m; i += MR) {
      const float* a = ACol ? A + i : A + i * lda;
      const int mr = static_cast<int>(m - i < MR ? m - i : MR);
      tile_rows<S, MR, N, ACol>(mr, kc, a, lda, B + c0 * W, ldb, C + i * ldc + c0 * W, ldc, load_c);
    }
  });
}

// Rows of K and V a block ahead, fetched towards L2 a cache line at a time from
// inside the dot loop: the requests are spread evenly over the FMAs, so memory
// streams while this block is computed without bursts that fill the miss queue.
struct Prefetch {
  const char* k = nullptr;  // nullptr: nothing to fetch
  const char* v = nullptr;
  int64_t ldk = 0, ldv = 0, v_bytes = 0;  // row strides and V row length, bytes
};

template <class S, int MR, int NK, class TK>
inline void dot(int64_t d_len, const float* Q, int64_t ldq, const TK* K, int64_t ldk, float* C,
                int64_t ldc, const Prefetch& pf) {
  using V = typename S::V;
  constexpr int W = S::W;
  constexpr int64_t line = 64 / sizeof(TK);  // elements per cache line
  V acc[MR][NK];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NK; ++n) acc[m][n] = S::zero();
  for (int64_t d = 0; d < d_len; d += W) {
    if (pf.k && d % line == 0) {
      const int64_t off = d * static_cast<int64_t>(sizeof(TK));
      for (int n = 0; n < NK; ++n) {
        __builtin_prefetch(pf.k + n * pf.ldk + off, 0, 2);
        if (off < pf.v_bytes) __builtin_prefetch(pf.v + n * pf.ldv + off, 0, 2);
      }
    }
    V k[NK];
    for (int n = 0; n < NK; ++n) k[n] = vload<S>(K + n * ldk + d);
    for (int m = 0; m < MR; ++m) {
      const V q = S::load(Q + m * ldq + d);
      for (int n = 0; n < NK; ++n) acc[m][n] = S::fma(q, k[n], acc[m][n]);
    }
  }
  if (pf.k)  // V rows longer than K rows
    for (int64_t off = d_len * static_cast<int64_t>(sizeof(TK)); off < pf.v_bytes; off += 64)
      for (int n = 0; n < NK; ++n) __builtin_prefetch(pf.v + n * pf.ldv + off, 0, 2);
  if constexpr (W == 8) {
    // One transposed reduction per key fills the whole row of C (rows past MR get 0).
    for (int n = 0; n < NK; ++n) {
      V t[8];
      for (int m = 0; m < 8; ++m) t[m] = m < MR ? acc[m][n] : S::zero();
      S::store(C + n * ldc, S::reduce_rows(t));
    }
  } else {
    for (int n = 0; n < NK; ++n)
      for (int m = 0; m < MR; ++m) C[n * ldc + m] = S::reduce(acc[m][n]);
  }
}

// C[j][0..mr) for keys j < nk: NK keys at a time, single keys at the end.
template <class S, int MR, int NK, class TK>
void dot_keys(int64_t nk, int64_t d_len, const float* Q, int64_t ldq, const TK* K, int64_t ldk,
              float* C, int64_t ldc, Prefetch pf) {
  const Prefetch none;
  for (int64_t j = 0; j < nk;) {
    const Prefetch& p = pf.k ? pf : none;
    if (j + NK <= nk) {
      dot<S, MR, NK>(d_len, Q, ldq, K + j * ldk, ldk, C + j * ldc, ldc, p);
      j += NK;
      pf.k += NK * pf.ldk;
      pf.v += NK * pf.ldv;
    } else {
      dot<S, MR, 1>(d_len, Q, ldq, K + j * ldk, ldk, C + j * ldc, ldc, p);
      j += 1;
      pf.k += pf.ldk;
      pf.v += pf.ldv;
    }
  }
}

// Scores of mr <= 8 query rows against nk keys; the key tile widens as rows
// get fewer so there are always enough independent accumulators.
template <class S, class TK>
void dot_rows(int mr, int64_t nk, int64_t d_len, const float* Q, int64_t ldq, const TK* K,
              int64_t ldk, float* C, int64_t ldc, const Prefetch& pf) {
  switch (mr) {
    case 1: return dot_keys<S, 1, 8>(nk, d_len, Q, ldq, K, ldk, C, ldc, pf);
    case 2: return dot_keys<S, 2, 6>(nk, d_len, Q, ldq, K, ldk, C, ldc, pf);
    case 3: return dot_keys<S, 3, 4>(nk, d_len, Q, ldq, K, ldk, C, ldc, pf);
    case 4: return dot_keys<S, 4, 3>(nk, d_len, Q, ldq, K, ldk, C, ldc, pf);
    case 5: return dot_keys<S, 5, 2>(nk, d_len, Q, ldq, K, ldk, C, ldc, pf);
    case 6: return dot_keys<S, 6, 2>(nk, d_len, Q, ldq, K, ldk, C, ldc, pf);
    case 7: return dot_keys<S, 7, 1>(nk, d_len, Q, ldq, K, ldk, C, ldc, pf);
    default: return dot_keys<S, 8, 1>(nk, d_len, Q, ldq, K, ldk, C, ldc, pf);
  }
}

} // namespace tandem::cpu::attn
