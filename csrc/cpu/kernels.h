// Entry points of the CPU kernels. Activations arrive as float32 (the
// primitive converts float16/bfloat16 once); accumulation is float32.
#pragma once

#include <cstdint>

#include "cpu/isa.h"

namespace tandem::cpu {

// y (M, N) = x (M, K) @ dequant(codes (N, K), scales).T, all row-major contiguous.
// scales has shape (ceil(N / bn), ceil(K / bk)).
struct Fp8MatmulArgs {
  const float* x;
  const uint8_t* codes;
  const float* scales;
  float* y;
  int64_t M, N, K;
  int64_t bn, bk;
  int64_t scale_cols() const { return (K + bk - 1) / bk; }
};

// Up to this many rows of x take the GEMV path (weights streamed once, no
// dequantized panel); more rows take the blocked GEMM path.
constexpr int64_t kGemvMaxRows = 8;
// Up to this many rows run as GEMVs of at most kGemvMaxRows rows (batched decode, see fp8_matmul_simd.h).
constexpr int64_t kGemvGroupMaxRows = 32;

void fp8_matmul_scalar(const Fp8MatmulArgs& a);
void fp8_matmul_avx2(const Fp8MatmulArgs& a);
void fp8_matmul_avx512(const Fp8MatmulArgs& a);
void fp8_matmul_neon(const Fp8MatmulArgs& a);
void fp8_matmul(Isa isa, const Fp8MatmulArgs& a);

// Several problems of at most kGemvMaxRows rows each in one parallel region (one fork/join for all).
void fp8_gemv_batch_avx2(const Fp8MatmulArgs* jobs, int64_t n);
void fp8_gemv_batch_avx512(const Fp8MatmulArgs* jobs, int64_t n);
void fp8_gemv_batch_neon(const Fp8MatmulArgs* jobs, int64_t n);
void fp8_gemv_batch(Isa isa, const Fp8MatmulArgs* jobs, int64_t n);

// out (T, k, N): row t of x (T, K) times expert indices[t, j] of codes (E, N, K) for every j.
struct GatherFp8MatmulArgs {
  const float* x;
  const uint8_t* codes;   // E experts of (N, K), one after the other
  const float* scales;    // E grids of (ceil(N / bn), ceil(K / bk))
  const int32_t* indices; // (T, k)
  float* y;               // (T, k, N)
  int64_t T, k, E, N, K;
  int64_t bn, bk;
};

// Groups the (t, j) pairs by expert so each selected expert's weights are read once: experts
// with at most kGemvMaxRows rows run as one batch of GEMVs, the others as a GEMM each.
// Throws std::invalid_argument for an index outside [0, E) before reading any weight.
void gather_fp8_matmul(Isa isa, const GatherFp8MatmulArgs& g);

// Elementwise codec and block quantization (not hot; portable code).
void encode_fp8(const float* x, uint8_t* out, int64_t n);
void decode_fp8(const uint8_t* c, float* out, int64_t n);
// amax/448 per (bn, bk) block (1 for an all-zero block), codes = encode(w / scale).
void quantize_fp8_blocks(const float* w, int64_t N, int64_t K, int64_t bn, int64_t bk,
                         uint8_t* codes, float* scales);
void dequantize_fp8_blocks(const uint8_t* codes, const float* scales, int64_t N, int64_t K,
                           int64_t bn, int64_t bk, float* out);

} // namespace tandem::cpu
