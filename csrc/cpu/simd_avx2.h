// AVX2 + FMA + F16C traits for the kernels in fp8_matmul_simd.h (8 floats per vector).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace tandem::cpu {

struct SimdAvx2 {
  static constexpr int W = 8;
  static constexpr int MR = 6;  // 6 x 16 micro-tile: 12 accumulators of 16 ymm registers
  using V = __m256;

  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float v) { return _mm256_set1_ps(v); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
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

  // E4M3 -> fp16 bits, the true value times 2^-8 (callers fold 2^8 into the
  // block scale): code b in the high byte, arithmetic shift right by one puts
  // the magnitude at bits 7..13 and copies the sign into bit 14, which is cleared.
  static __m128i fp16_bits(__m128i w) {
    return _mm_and_si128(_mm_srai_epi16(_mm_slli_epi16(w, 8), 1), _mm_set1_epi16(-16385));
  }
  static V decode_bits(__m128i b) { return _mm256_cvtph_ps(fp16_bits(_mm_cvtepu8_epi16(b))); }
  // 2W codes at once: the integer part runs on 256-bit lanes.
  static void decode2(const uint8_t* p, V& lo, V& hi) {
    __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    __m256i h = _mm256_and_si256(_mm256_srai_epi16(_mm256_slli_epi16(w, 8), 1),
                                 _mm256_set1_epi16(-16385));
    lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
  }
  static V decode(const uint8_t* p) {
    return decode_bits(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static V decode_partial(const uint8_t* p, int n) {
    alignas(16) uint8_t buf[16] = {};
    std::memcpy(buf, p, n);
    return decode_bits(_mm_load_si128(reinterpret_cast<const __m128i*>(buf)));
  }
};

} // namespace tandem::cpu
