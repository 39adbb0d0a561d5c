// AVX2 + FMA + F16C traits for the kernels in fp8_matmul_simd.h (8 floats per vector).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu/exp2_poly.h"

namespace tandem::cpu {

struct SimdAvx2 {
  static constexpr int W = 8;
  static constexpr int MR = 6;  // 6 x 16 micro-tile: 12 accumulators of 16 ymm registers
  static constexpr int kGemvPassRows = 4;  // GEMV rows per pass (fp8_matmul_simd.h): 4 x 2 partial sums + codes fit 16 ymm
  using V = __m256;

  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float v) { return _mm256_set1_ps(v); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static float reduce(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static V load_partial(const float* p, int n) {
    alignas(32) float buf[W] = {};
    std::memcpy(buf, p, sizeof(float) * n);
    return _mm256_load_ps(buf);
  }

  // E4M3 -> float32 bits holding the true value times 2^-kDecodeShift: the
  // sign-extended code shifted left by 20 puts the magnitude at bits 20..26
  // (exponent field = e, mantissa = m) and copies of the sign at 27..31; the
  // mask keeps bit 31. Subnormal codes land on float32 subnormals with the
  // same 2^-120 factor. Three integer ops per 8 codes, no conversion unit:
  // the fp16 trick (cvtph) ran one core at 9 GB/s from L2, this at 13.
  static constexpr int kDecodeShift = 120;
  static V decode_bits(__m128i b) {
    const __m256i w = _mm256_slli_epi32(_mm256_cvtepi8_epi32(b), 20);
    return _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32(static_cast<int>(0x87F00000u))));
  }
  static void decode2(const uint8_t* p, V& lo, V& hi) {
    lo = decode(p);
    hi = decode(p + W);
  }
  static V decode(const uint8_t* p) {
    return decode_bits(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static V decode_partial(const uint8_t* p, int n) {
    alignas(16) uint8_t buf[16] = {};
    std::memcpy(buf, p, n);
    return decode_bits(_mm_load_si128(reinterpret_cast<const __m128i*>(buf)));
  }

  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V round(V x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^n for whole-valued n in [-127, 127], built in the exponent bits (n = -127 gives 0).
  static V pow2i(V n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  static V exp2(V x) { return exp2_nonpositive<SimdAvx2>(x); }
};

} // namespace tandem::cpu
