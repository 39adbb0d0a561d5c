// FP8 dequant-matmul kernels written once over a SIMD traits type S
// (simd_avx512.h, simd_avx2.h); each ISA's .cpp instantiates them with its
// own compiler flags.
//
// GEMV (M <= kGemvMaxRows): every weight byte is read once, decoded in
// registers and multiplied with the M activation rows; block scales apply once
// per (row, block). GEMM: BLIS structure; W is decoded a KC x NC panel at a time
// into a per-thread buffer, X is packed once into MR-row panels, and a
// register-blocked MR x 2W micro-kernel accumulates into y.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <type_traits>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/thread_pool.h"

namespace tandem::cpu::simd {

// Fully unroll loops over compile-time counts: GCC otherwise keeps the
// accumulator arrays in memory and the FMA chains go through the stack.
#define TANDEM_UNROLL _Pragma("GCC unroll 32")

// 2^e as a product of two floats, so |e| up to 252 stays representable.
inline float pow2_half(int e) { return std::ldexp(1.0f, e / 2); }
inline float pow2_rest(int e) { return std::ldexp(1.0f, e - e / 2); }

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};
using AlignedBuf = std::unique_ptr<float[], AlignedFree>;
inline AlignedBuf aligned_floats(size_t n) {
  size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
  return AlignedBuf(static_cast<float*>(std::aligned_alloc(64, bytes ? bytes : 64)));
}

// Splits [0, n) into `parts` contiguous ranges; returns range i.
inline void split_range(int64_t n, int parts, int i, int64_t& lo, int64_t& hi) {
  lo = n * i / parts;
  hi = n * (i + 1) / parts;
}

constexpr int kLine = 64;

// Calls f(std::integral_constant<int, I>) for I = B, B + Step, ... < E.
template <int B, int E, int Step, class F>
inline void static_for(F&& f) {
  if constexpr (B < E) {
    f(std::integral_constant<int, B>{});
    static_for<B + Step, E, Step>(f);
  }
}

// The two partial sums (even / odd vectors: two FMA chains) of one scale block
// [kb, kend) for R weight rows w[] against MP activation rows x.
template <class S, int MP, int R>
inline void block_partials(const float* x, int64_t K, const uint8_t* const* w, int64_t kb, int64_t kend,
                           bool prefetch, typename S::V (&part)[MP][R][2]) {
  using V = typename S::V;
  constexpr int W = S::W;
  TANDEM_UNROLL
  for (int m = 0; m < MP; ++m)
    TANDEM_UNROLL
    for (int r = 0; r < R; ++r) part[m][r][0] = part[m][r][1] = S::zero();
  // NV * W codes of every row against the MP activation rows; the NV vectors
  // alternate between the two partial sums.
  auto step = [&](int64_t k, auto nv) __attribute__((always_inline)) {
    constexpr int NV = decltype(nv)::value;
    V xv[MP][NV];
    TANDEM_UNROLL
    for (int m = 0; m < MP; ++m)
      TANDEM_UNROLL
      for (int i = 0; i < NV; ++i) xv[m][i] = S::load(x + m * K + k + i * W);
    TANDEM_UNROLL
    for (int r = 0; r < R; ++r) {
      V wv[NV];
      TANDEM_UNROLL
      for (int i = 0; i < NV; i += 2) S::decode2(w[r] + k + i * W, wv[i], wv[i + 1]);
      TANDEM_UNROLL
      for (int i = 0; i < NV; ++i)
        TANDEM_UNROLL
        for (int m = 0; m < MP; ++m) part[m][r][i & 1] = S::fma(wv[i], xv[m][i], part[m][r][i & 1]);
    }
  };
  using Two = std::integral_constant<int, 2>;
  using Wide = std::integral_constant<int, MP <= 2 ? 4 : 2>;  // MP > 2: x registers run out
  int64_t k = kb;
  // One cache line of each row per iteration, with its prefetch.
  for (; k + kLine <= kend; k += kLine) {
    if (prefetch) {
      TANDEM_UNROLL
      for (int r = 0; r < R; ++r) __builtin_prefetch(w[r] + K + k);
    }
    TANDEM_UNROLL
    for (int j = 0; j < kLine; j += Wide::value * W) step(k + j, Wide{});
  }
  for (; k + 2 * W <= kend; k += 2 * W) step(k, Two{});
  for (; k < kend; k += W) {
    const int rem = static_cast<int>(std::min<int64_t>(W, kend - k));
    TANDEM_UNROLL
    for (int r = 0; r < R; ++r) {
      const V wv = rem == W ? S::decode(w[r] + k) : S::decode_partial(w[r] + k, rem);
      TANDEM_UNROLL
      for (int m = 0; m < MP; ++m) {
        const V xm = rem == W ? S::load(x + m * K + k) : S::load_partial(x + m * K + k, rem);
        part[m][r][0] = S::fma(wv, xm, part[m][r][0]);
      }
    }
  }
}

// R weight rows at once against M activation rows: each x vector loaded from
// L1/L2 serves R rows (x in float32 is 4 bytes per code byte, so without this
// the x reads, not the weight stream, bound the kernel).
// x is the activation scaled by 2^t (see gemv); out = 2^(S::kDecodeShift - t)
// as two float factors (out[0] * out[1]), computed once per call: two ldexp
// calls per row cost 10% on short rows.
// The R rows are rs rows apart (see gemv_rows). With `prefetch`, each row's
// successor (the next row of its stream) is fetched at the same column while
// these are streamed, so a stream does not stall at every row end.
// Each block is swept in passes of at most S::kGemvPassRows activation rows:
// their 2 x rows partial sums stay in registers (all 8 rows at once need 16
// accumulators plus the decoded codes, more than AVX2's 16 ymm registers, and
// the spills halved its speed); the block's codes are re-read from L1 by the
// later passes. Every row's arithmetic is the same whatever M and the pass
// split, so a row's result does not depend on the rows batched with it.
template <class S, int M, int R>
inline void gemv_block(const Fp8MatmulArgs& a, const float* x, const float* out, int64_t n, int64_t rs,
                       bool prefetch) {
  using V = typename S::V;
  constexpr int MS = M < S::kGemvPassRows ? M : S::kGemvPassRows;
  const int64_t K = a.K, bk = a.bk, sc = a.scale_cols();
  const uint8_t* w[R];
  const float* srow[R];
  TANDEM_UNROLL
  for (int r = 0; r < R; ++r) {
    w[r] = a.codes + (n + r * rs) * K;
    srow[r] = a.scales + ((n + r * rs) / a.bn) * sc;
  }
  V acc[M][R];
  TANDEM_UNROLL
  for (int m = 0; m < M; ++m)
    TANDEM_UNROLL
    for (int r = 0; r < R; ++r) acc[m][r] = S::zero();
  // kb / bk counted, not divided: a 64-bit division per block and row cost ~10%.
  for (int64_t kb = 0, blk = 0; kb < K; kb += bk, ++blk) {
    const int64_t kend = std::min(K, kb + bk);
    static_for<0, M, MS>([&](auto m0c) __attribute__((always_inline)) {
      constexpr int m0 = decltype(m0c)::value, MP = M - m0 < MS ? M - m0 : MS;
      V part[MP][R][2];
      block_partials<S, MP, R>(x + m0 * K, K, w, kb, kend, prefetch && m0 == 0, part);
      TANDEM_UNROLL
      for (int r = 0; r < R; ++r) {
        const V s = S::set1(srow[r][blk]);
        TANDEM_UNROLL
        for (int m = 0; m < MP; ++m)
          acc[m0 + m][r] = S::fma(S::add(part[m][r][0], part[m][r][1]), s, acc[m0 + m][r]);
      }
    });
  }
  TANDEM_UNROLL
  for (int m = 0; m < M; ++m)
    TANDEM_UNROLL
    for (int r = 0; r < R; ++r)
      a.y[m * a.N + n + r * rs] = S::reduce(acc[m][r]) * out[0] * out[1];
}

template <class S, int M>
void gemv_rows(const Fp8MatmulArgs& a, const float* x, const float* out, int64_t n0, int64_t n1) {
  constexpr int R = M == 1 ? 4 : (M == 2 ? 2 : 1);
  // The R rows of a step are R quarters of the slab apart, so each of the R
  // streams walks consecutive rows: one long sequential run per stream, which
  // the hardware prefetcher follows across rows (adjacent rows jumped R rows at
  // every row end and cost a quarter of the bandwidth when rows are short).
  const int64_t q = (n1 - n0) / R;
  for (int64_t j = 0; j < q; ++j) gemv_block<S, M, R>(a, x, out, n0 + j, q, j + 1 < q);
  for (int64_t n = n0 + R * q; n < n1; ++n) gemv_block<S, M, 1>(a, x, out, n, 1, false);
}

// Decoded codes carry a 2^-kDecodeShift factor. When that factor is large
// (2^-120 for AVX2) the products with x would fall into float32's subnormal
// range and lose precision, so x is first scaled by a power of two t that
// brings its largest magnitude to 2^(kDecodeShift - 20); exact, undone at the
// end. Returns t and fills `scaled` (or returns 0 and leaves x as is).
template <class S>
int scale_activations(const Fp8MatmulArgs& a, std::vector<float>& scaled) {
  if (S::kDecodeShift <= 8) return 0;
  const int64_t n = a.M * a.K;
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(a.x[i]));
  if (amax == 0.0f || !std::isfinite(amax)) return 0;
  const int t = S::kDecodeShift - 20 - std::ilogb(amax);
  const float f1 = pow2_half(t), f2 = pow2_rest(t);
  scaled.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) scaled[i] = a.x[i] * f1 * f2;
  return t;
}

// One GEMV problem prepared for its slabs: the (possibly rescaled) activations
// and the output factors (see scale_activations).
struct GemvPrep {
  const Fp8MatmulArgs* a;
  const float* x;
  float out[2];
  std::vector<float> scaled;
};

template <class S>
void prepare_gemv(const Fp8MatmulArgs& a, GemvPrep& p) {
  const int t = scale_activations<S>(a, p.scaled);
  p.a = &a;
  p.x = t == 0 ? a.x : p.scaled.data();
  const int out_exp = S::kDecodeShift - t;
  p.out[0] = pow2_half(out_exp);
  p.out[1] = pow2_rest(out_exp);
}

// Rows are handed out in groups of 4; small problems stay whole. Otherwise
// slabs of about 512 KB are claimed by whichever thread is free: with one slab
// per thread, a worker that is still waking up (tens of microseconds) left the
// caller streaming both halves alone.
constexpr int64_t kGroup = 4;
inline int gemv_parts(const Fp8MatmulArgs& a) {
  const int64_t groups = (a.N + kGroup - 1) / kGroup;
  const int64_t want = a.N * a.K < (1 << 18) ? 1 : std::max<int64_t>(a.N * a.K >> 19, num_threads());
  return static_cast<int>(std::min<int64_t>({want, groups, 16 * num_threads()}));
}

template <class S>
void gemv_slab(const GemvPrep& p, int parts, int i) {
  const Fp8MatmulArgs& a = *p.a;
  int64_t lo, hi;
  split_range((a.N + kGroup - 1) / kGroup, parts, i, lo, hi);
  const int64_t n0 = lo * kGroup, n1 = std::min(a.N, hi * kGroup);
  switch (a.M) {
    case 1: return gemv_rows<S, 1>(a, p.x, p.out, n0, n1);
    case 2: return gemv_rows<S, 2>(a, p.x, p.out, n0, n1);
    case 3: return gemv_rows<S, 3>(a, p.x, p.out, n0, n1);
    case 4: return gemv_rows<S, 4>(a, p.x, p.out, n0, n1);
    case 5: return gemv_rows<S, 5>(a, p.x, p.out, n0, n1);
    case 6: return gemv_rows<S, 6>(a, p.x, p.out, n0, n1);
    case 7: return gemv_rows<S, 7>(a, p.x, p.out, n0, n1);
    default: return gemv_rows<S, 8>(a, p.x, p.out, n0, n1);
  }
}

template <class S>
void gemv(const Fp8MatmulArgs& a) {
  thread_local GemvPrep mine;  // keeps the rescaled-x buffer between calls
  GemvPrep& p = mine;          // a named reference: a lambda naming `mine` would get the worker's own
  prepare_gemv<S>(a, p);
  const int parts = gemv_parts(a);
  parallel_for(parts, [&](int i) { gemv_slab<S>(p, parts, i); });
}

// Several GEMV problems (M <= kGemvMaxRows each, e.g. the experts a token
// chose) in one parallel region: their slabs form one list claimed by whichever
// thread is free, so n small problems cost one fork/join, not n.
template <class S>
void gemv_batch(const Fp8MatmulArgs* jobs, int64_t n) {
  std::vector<GemvPrep> prep(static_cast<size_t>(n));
  std::vector<std::pair<int64_t, int>> items;  // (job, slab), slabs of a job in order
  std::vector<int> parts(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    prepare_gemv<S>(jobs[j], prep[j]);
    parts[j] = gemv_parts(jobs[j]);
    for (int i = 0; i < parts[j]; ++i) items.emplace_back(j, i);
  }
  parallel_for(static_cast<int>(items.size()), [&](int t) {
    const auto [j, i] = items[t];
    gemv_slab<S>(prep[j], parts[j], i);
  });
}

// Decodes codes[k0, k0 + kc) of one weight row with its block scales into out.
template <class S>
void decode_row(const Fp8MatmulArgs& a, int64_t n, int64_t k0, int64_t kc, float* out) {
  constexpr int W = S::W;
  const uint8_t* wrow = a.codes + n * a.K;
  const float* srow = a.scales + (n / a.bn) * a.scale_cols();
  // Undo the decode factor first (exact), then apply the block scale.
  const auto unit = S::set1(std::ldexp(1.0f, S::kDecodeShift));
  for (int64_t k = k0; k < k0 + kc;) {
    const int64_t seg_end = std::min(k0 + kc, (k / a.bk + 1) * a.bk);
    const auto s = S::set1(srow[k / a.bk]);
    for (; k + W <= seg_end; k += W)
      S::store(out + (k - k0), S::mul(S::mul(S::decode(wrow + k), unit), s));
    if (k < seg_end) {
      const int r = static_cast<int>(seg_end - k);
      alignas(64) float tmp[W];
      S::store(tmp, S::mul(S::mul(S::decode_partial(wrow + k, r), unit), s));
      std::copy(tmp, tmp + r, out + (k - k0));
      k = seg_end;
    }
  }
}

// acc (MR x 2W) over kc steps; A panel [k][MR], B panel [k][2W].
template <class S>
inline void micro_kernel(int64_t kc, const float* A, const float* B, float* C, int64_t ldc,
                         bool accumulate, int rows, int cols) {
  using V = typename S::V;
  constexpr int W = S::W, MR = S::MR, NR = 2 * W;
  V c0[MR], c1[MR];
  TANDEM_UNROLL
  for (int r = 0; r < MR; ++r) c0[r] = c1[r] = S::zero();
  for (int64_t k = 0; k < kc; ++k) {
    const V b0 = S::load(B + k * NR), b1 = S::load(B + k * NR + W);
    TANDEM_UNROLL
    for (int r = 0; r < MR; ++r) {
      const V ar = S::set1(A[k * MR + r]);
      c0[r] = S::fma(ar, b0, c0[r]);
      c1[r] = S::fma(ar, b1, c1[r]);
    }
  }
  if (rows == MR && cols == NR) {
    TANDEM_UNROLL
    for (int r = 0; r < MR; ++r) {
      float* c = C + r * ldc;
      S::store(c, accumulate ? S::add(c0[r], S::load(c)) : c0[r]);
      S::store(c + W, accumulate ? S::add(c1[r], S::load(c + W)) : c1[r]);
    }
    return;
  }
  // Edge tile: spill with constant indices only (a runtime index into c0/c1
  // would force GCC to keep the accumulators in memory inside the k loop).
  alignas(64) float tile[MR][NR];
  TANDEM_UNROLL
  for (int r = 0; r < MR; ++r) {
    S::store(tile[r], c0[r]);
    S::store(tile[r] + W, c1[r]);
  }
  for (int r = 0; r < rows; ++r) {
    float* c = C + r * ldc;
    for (int j = 0; j < cols; ++j) c[j] = accumulate ? c[j] + tile[r][j] : tile[r][j];
  }
}

template <class S>
void gemm(const Fp8MatmulArgs& a) {
  constexpr int MR = S::MR, NR = 2 * S::W;
  constexpr int64_t KC = 128, NC = 256;
  const int64_t M = a.M, N = a.N, K = a.K;
  const int64_t m_panels = (M + MR - 1) / MR;
  const int64_t k_slabs = (K + KC - 1) / KC;

  // Pack X once: slab p holds m_panels panels of [kc][MR], rows past M zeroed.
  AlignedBuf A = aligned_floats(static_cast<size_t>(m_panels * MR * K));
  parallel_for(static_cast<int>(std::min<int64_t>(m_panels, 4 * num_threads())), [&](int t) {
    const int parts = static_cast<int>(std::min<int64_t>(m_panels, 4 * num_threads()));
    int64_t lo, hi;
    split_range(m_panels, parts, t, lo, hi);
    for (int64_t p = 0; p < k_slabs; ++p) {
      const int64_t k0 = p * KC, kc = std::min(KC, K - k0);
      float* slab = A.get() + m_panels * MR * k0;
      for (int64_t i = lo; i < hi; ++i) {
        float* panel = slab + i * MR * kc;
        TANDEM_UNROLL
        for (int r = 0; r < MR; ++r) {
          const int64_t m = i * MR + r;
          for (int64_t k = 0; k < kc; ++k)
            panel[k * MR + r] = m < M ? a.x[m * K + k0 + k] : 0.0f;
        }
      }
    }
  });

  const int64_t n_chunks = (N + NC - 1) / NC;
  parallel_for(static_cast<int>(n_chunks), [&](int jc_idx) {
    const int64_t jc = jc_idx * NC, ncur = std::min(NC, N - jc);
    const int64_t n_panels = (ncur + NR - 1) / NR;
    thread_local std::vector<float> row_buf;
    row_buf.resize(KC);
    AlignedBuf B = aligned_floats(static_cast<size_t>(n_panels * NR * KC));
    for (int64_t p = 0; p < k_slabs; ++p) {
      const int64_t k0 = p * KC, kc = std::min(KC, K - k0);
      // Decode the KC x NC panel of W^T as [panel][k][NR], zero columns past N.
      for (int64_t j = 0; j < n_panels * NR; ++j) {
        float* dst = B.get() + (j / NR) * kc * NR + (j % NR);
        if (j < ncur) {
          decode_row<S>(a, jc + j, k0, kc, row_buf.data());
          for (int64_t k = 0; k < kc; ++k) dst[k * NR] = row_buf[k];
        } else {
          for (int64_t k = 0; k < kc; ++k) dst[k * NR] = 0.0f;
        }
      }
      const float* slab = A.get() + m_panels * MR * k0;
      for (int64_t jr = 0; jr < n_panels; ++jr) {
        const int cols = static_cast<int>(std::min<int64_t>(NR, ncur - jr * NR));
        for (int64_t ir = 0; ir < m_panels; ++ir) {
          const int rows = static_cast<int>(std::min<int64_t>(MR, M - ir * MR));
          micro_kernel<S>(kc, slab + ir * MR * kc, B.get() + jr * kc * NR,
                          a.y + ir * MR * N + jc + jr * NR, N, p > 0, rows, cols);
        }
      }
    }
  });
}

// A few rows more than a GEMV takes (a decode batch of several sequences): GEMVs of at most
// kGemvMaxRows rows each in one parallel region. Measured here (Zen 4, 8192x2048): faster than the
// GEMM tile up to 32 rows, and each row's result is bit-identical to running that row alone, so a
// sequence decodes the same tokens in a batch as by itself.
template <class S>
void gemv_row_groups(const Fp8MatmulArgs& a) {
  const int64_t groups = (a.M + kGemvMaxRows - 1) / kGemvMaxRows;
  std::vector<Fp8MatmulArgs> jobs;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t m0 = a.M * g / groups, m1 = a.M * (g + 1) / groups;
    Fp8MatmulArgs j = a;
    j.x = a.x + m0 * a.K;
    j.y = a.y + m0 * a.N;
    j.M = m1 - m0;
    jobs.push_back(j);
  }
  gemv_batch<S>(jobs.data(), groups);
}

template <class S>
void fp8_matmul(const Fp8MatmulArgs& a) {
  if (a.M <= kGemvMaxRows) return gemv<S>(a);
  if (a.M <= kGemvGroupMaxRows) return gemv_row_groups<S>(a);
  gemm<S>(a);
}

} // namespace tandem::cpu::simd
