// Register-blocked micro-kernels of the attention kernel, written over a
// SIMD traits type S (W floats per vector V).
//
// tile: C (MR x NV*W) (+)= sum_k A(m, k) * B[k][0 .. NV*W). A scalars are
// broadcast, B rows are loaded as NV vectors (float32, or float16/bfloat16
// widened on load), MR*NV accumulators stay in registers for the whole kc
// loop (the BLIS micro-kernel). ACol says how A is stored: A(m, k) =
// A[k*lda + m] (column-major, e.g. P^T) or A[m*lda + k] (row-major, e.g. K).
//
// dot: C[n][m] = Q[m] . K[n] for up to 4 query rows and NK keys, vectorised
// along the head dimension so K rows are read as vectors straight from the
// cache (decode: no conversion pass). Rows of C get 4 floats per row panel.
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

// Calls f(width, c) for column panels of N vectors, then narrower ones for
// the remainder, advancing c.
template <int N, class F>
inline void each_width(int64_t& c, int64_t nv, F&& f) {
  if constexpr (N >= 1) {
    // A lone 1-wide panel at the end would leave its few accumulators waiting
    // on FMA latency: the last N + 1 vectors go as two panels (16 = 3+3+3+3+2+2).
    const int64_t stop = N >= 3 && nv - c > N && (nv - c) % N == 1 ? nv - (N + 1) : nv;
    for (; c + N <= stop; c += N) f(std::integral_constant<int, N>{}, c);
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

// Requests the cache lines of the K or V rows of keys that a later tile will
// read. A tile announces how many keys it reads (rows()) and then issues the
// requests a line or two per FMA iteration (step()), the rest at its end
// (flush()): spread out, they do not fill the miss buffers in bursts that
// stall the core. Dense rows (stride = row length, the usual cache layout)
// are one linear range, each line requested once; strided rows are requested
// at once.
struct PrefetchStream {
  const char* row = nullptr;   // next row to announce
  const char* done = nullptr;  // dense rows: lines below this are requested
  const char* end = nullptr;   // dense rows: lines below this are announced
  int64_t ld = 0, bytes = 0;   // row stride and length, bytes

  void init(const void* first, int64_t stride, int64_t len) {
    row = static_cast<const char*>(first);
    done = end = row - (reinterpret_cast<uintptr_t>(row) & 63);
    ld = stride;
    bytes = len;
  }
  void rows(int64_t m) {
    const char* last = row + m * ld;
    if (ld == bytes) {
      end = last;
    } else {
      for (const char* r = row; r < last; r += ld)
        for (const char* l = r - (reinterpret_cast<uintptr_t>(r) & 63); l < r + bytes; l += 64)
          __builtin_prefetch(l, 0, 2);
    }
    row = last;
  }
  void step() {
    if (done < end) {
      __builtin_prefetch(done, 0, 2);
      done += 64;
    }
  }
  void flush() {
    for (; done < end; done += 64) __builtin_prefetch(done, 0, 2);
  }
};

struct Prefetch {
  PrefetchStream k, v;
  int64_t left = 0;  // rows still worth requesting (the task's key range ends)

  void rows(int64_t nk) {
    const int64_t m = nk < left ? nk : left;
    if (m <= 0) return;
    k.rows(m);
    v.rows(m);
    left -= m;
  }
  void step() {
    k.step();
    v.step();
  }
  void flush() {
    k.flush();
    v.flush();
  }
};

// C[n][0 .. 4) = Q[m] . K[n] for MR <= 4 query rows (lanes past MR get 0)
// and NK keys, or C[n] when one row's scores are contiguous (ldc = 1). Q is
// packed [d / W][rows][W]: one pointer with constant offsets (separate row
// pointers spilled registers). K rows are read as stored. The smaller operand
// set stays in registers; each accumulator is reduced once, at the end.
template <class S, int MR, int NK, class TK>
inline void dot(int64_t nd, const float* qp, int64_t ldq, const TK* K, int64_t ldk, float* C,
                int64_t ldc, Prefetch* pf) {
  using V = typename S::V;
  constexpr int W = S::W;
  V acc[MR][NK];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NK; ++n) acc[m][n] = S::zero();
  for (int64_t i = 0; i < nd; ++i, qp += ldq) {
    if (pf) {
      pf->step();
      if (MR == 1) pf->step();  // few FMAs per key: more lines per iteration
    }
    const TK* kd = K + i * W;
    if constexpr (MR >= NK) {
      V k[NK];
      for (int n = 0; n < NK; ++n) k[n] = vload<S>(kd + n * ldk);
      for (int m = 0; m < MR; ++m) {
        const V q = S::load(qp + m * W);
        for (int n = 0; n < NK; ++n) acc[m][n] = S::fma(q, k[n], acc[m][n]);
      }
    } else {
      V q[MR];
      for (int m = 0; m < MR; ++m) q[m] = S::load(qp + m * W);
      for (int n = 0; n < NK; ++n) {
        const V k = vload<S>(kd + n * ldk);
        for (int m = 0; m < MR; ++m) acc[m][n] = S::fma(q[m], k, acc[m][n]);
      }
    }
  }
  if (pf) pf->flush();
  if (MR == 1 && ldc == 1) {  // a single row with contiguous scores: 4 keys per reduction
    for (int n = 0; n < NK; n += 4) {
      V t[4];
      for (int i = 0; i < 4; ++i) t[i] = n + i < NK ? acc[0][n + i] : S::zero();
      S::reduce4(C + n, t);  // may write up to 3 zeros past key NK - 1 (overwritten or slack)
    }
    return;
  }
  for (int n = 0; n < NK; ++n) {
    V t[4];
    for (int m = 0; m < 4; ++m) t[m] = m < MR ? acc[m][n] : S::zero();
    S::reduce4(C + n * ldc, t);
  }
}

// C[j][0 .. 4) for keys j < nk: NK keys at a time, single keys at the end;
// each tile announces to `pf` (when given) as many keys as it reads.
template <class S, int MR, int NK, class TK>
void dot_keys(int64_t nk, int64_t nd, const float* qp, int64_t ldq, const TK* K, int64_t ldk,
              float* C, int64_t ldc, Prefetch* pf) {
  int64_t j = 0;
  for (; j + NK <= nk; j += NK) {
    if (pf) pf->rows(NK);
    dot<S, MR, NK>(nd, qp, ldq, K + j * ldk, ldk, C + j * ldc, ldc, pf);
  }
  for (; j < nk; ++j) {
    if (pf) pf->rows(1);
    dot<S, MR, 1>(nd, qp, ldq, K + j * ldk, ldk, C + j * ldc, ldc, pf);
  }
}

// Scores of one row against keys taken NK at a time from NK segments of the
// key range, lds elements apart: C[j * NK + n] = Q . K[j * ldk + n * lds].
// Each segment is then read as one sequential stream, which the hardware
// prefetchers follow; neighbouring short rows read in step were not followed
// (one core: 5.4 GB/s in step vs 10.4 GB/s as 8 streams, a stream read 10.1).
// Two accumulators per key (even and odd vectors along d) so NK = 3 keys
// still keep 6 FMA chains in flight.
template <class S, int NK, class TK>
void dot_segments(int64_t nk, int64_t nd, const float* qp, const TK* K, int64_t ldk, int64_t lds,
                  float* C) {
  using V = typename S::V;
  constexpr int W = S::W;
  static_assert(NK <= 4, "one reduce4 per tile");
  for (int64_t j = 0; j < nk; ++j) {
    const TK* kj = K + j * ldk;
    V a0[NK], a1[NK];
    for (int n = 0; n < NK; ++n) a0[n] = a1[n] = S::zero();
    int64_t i = 0;
    for (; i + 2 <= nd; i += 2) {
      const V q0 = S::load(qp + i * W), q1 = S::load(qp + (i + 1) * W);
      for (int n = 0; n < NK; ++n) {
        a0[n] = S::fma(q0, vload<S>(kj + n * lds + i * W), a0[n]);
        a1[n] = S::fma(q1, vload<S>(kj + n * lds + (i + 1) * W), a1[n]);
      }
    }
    if (i < nd) {
      const V q0 = S::load(qp + i * W);
      for (int n = 0; n < NK; ++n) a0[n] = S::fma(q0, vload<S>(kj + n * lds + i * W), a0[n]);
    }
    V t[4];
    for (int n = 0; n < 4; ++n) t[n] = n < NK ? S::add(a0[n], a1[n]) : S::zero();
    S::reduce4(C + j * NK, t);  // writes 4 - NK zeros past the tile: the next tile's or slack
  }
}

// Scores of rows [r0, r0 + mr) (mr <= 4) against nk keys; the key tile widens
// as rows get fewer so there are always 8-12 independent accumulators.
template <class S, class TK>
void dot_rows(int mr, int64_t nk, int64_t nd, const float* qp, int64_t ldq, const TK* K, int64_t ldk,
              float* C, int64_t ldc, Prefetch* pf) {
  switch (mr) {
    case 1: return dot_keys<S, 1, 8>(nk, nd, qp, ldq, K, ldk, C, ldc, pf);
    case 2: return dot_keys<S, 2, 6>(nk, nd, qp, ldq, K, ldk, C, ldc, pf);
    case 3: return dot_keys<S, 3, 4>(nk, nd, qp, ldq, K, ldk, C, ldc, pf);
    default: return dot_keys<S, 4, 3>(nk, nd, qp, ldq, K, ldk, C, ldc, pf);
  }
}

} // namespace tandem::cpu::attn
