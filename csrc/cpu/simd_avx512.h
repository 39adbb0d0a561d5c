// AVX-512 traits for the kernels in fp8_matmul_simd.h (16 floats per vector).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "cpu/exp2_poly.h"

namespace tandem::cpu {

struct SimdAvx512 {
  static constexpr int W = 16;   // floats per vector
  static constexpr int MR = 12;  // GEMM micro-tile rows; NR = 2 * W columns
  static constexpr int kGemvPassRows = 8;  // GEMV rows per pass (fp8_matmul_simd.h): 8 x 2 partial sums fit 32 zmm
  using V = __m512;

  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float v) { return _mm512_set1_ps(v); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static constexpr int kDecodeShift = 8;  // fp16 trick below
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static float reduce(V v) { return _mm512_reduce_add_ps(v); }
  static V load_partial(const float* p, int n) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
  }

  // E4M3 -> fp16 bits: magnitude (b & 0x7F) << 7, sign to bit 15. The result is
  // the true value times 2^-8; callers fold 2^8 into the block scale.
  // Code b in the high byte, arithmetic shift right by one: magnitude at bits
  // 7..13, sign copied into bit 14, which is cleared.
  static V decode_bits(__m128i b) {
    __m256i w = _mm256_cvtepu8_epi16(b);
    return _mm512_cvtph_ps(_mm256_and_si256(_mm256_srai_epi16(_mm256_slli_epi16(w, 8), 1),
                                            _mm256_set1_epi16(-16385)));
  }
  static void decode2(const uint8_t* p, V& lo, V& hi) {
    __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    __m512i h = _mm512_and_si512(_mm512_srai_epi16(_mm512_slli_epi16(w, 8), 1),
                                 _mm512_set1_epi16(-16385));
    lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
  }
  static V decode(const uint8_t* p) {
    return decode_bits(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static V decode_partial(const uint8_t* p, int n) {
    return decode_bits(_mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << n) - 1), p));
  }

  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V round(V x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^n for whole-valued n in [-127, 127], built in the exponent bits (n = -127 gives 0).
  static V pow2i(V n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  static V exp2(V x) { return exp2_nonpositive<SimdAvx512>(x); }
};

} // namespace tandem::cpu
