// Forced-included (g++ -include) when the AVX-512 kernels are built for a host
// without AVX-512 (tests/test_avx512_emulated.py): the host's own intrinsics
// first, then SIMDe's portable AVX-512 under the usual names (native
// aliases), then the intrinsics SIMDe 0.7.4 (Debian 12) lacks, written lane
// by lane here. Masked loads touch only the enabled lanes, as the hardware does.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

namespace tandem_simde {

template <class T, int N, class V>
inline void lanes(V v, T (&out)[N]) {
  static_assert(sizeof(V) == sizeof(out), "lane count");
  std::memcpy(out, &v, sizeof(v));
}
template <class V, class T, int N>
inline V from_lanes(const T (&in)[N]) {
  static_assert(sizeof(V) == sizeof(in), "lane count");
  V v;
  std::memcpy(&v, in, sizeof(v));
  return v;
}

inline simde__m256 extractf32x8_ps(simde__m512 a, int i) {
  float f[16], h[8];
  lanes(a, f);
  std::memcpy(h, f + 8 * (i & 1), sizeof(h));
  return from_lanes<simde__m256>(h);
}
inline float reduce_add_ps(simde__m512 a) {  // pairwise, as GCC's own
  float f[16];
  lanes(a, f);
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) f[i] += f[i + w];
  return f[0];
}
inline simde__m256i cvtepi32_epi16(simde__m512i a) {
  int32_t x[16];
  int16_t y[16];
  lanes(a, x);
  for (int i = 0; i < 16; ++i) y[i] = static_cast<int16_t>(x[i]);
  return from_lanes<simde__m256i>(y);
}
inline simde__m512i cvtepu16_epi32(simde__m256i a) {
  uint16_t x[16];
  uint32_t y[16];
  lanes(a, x);
  for (int i = 0; i < 16; ++i) y[i] = x[i];
  return from_lanes<simde__m512i>(y);
}
inline simde__m512i cvtepu8_epi16(simde__m256i a) {
  uint8_t x[32];
  uint16_t y[32];
  lanes(a, x);
  for (int i = 0; i < 32; ++i) y[i] = x[i];
  return from_lanes<simde__m512i>(y);
}
// The conversions go through the host's F16C / AVX, one 256-bit half at a time.
inline simde__m512 cvtph_ps(simde__m256i a) {
  uint16_t x[16];
  float y[16];
  lanes(a, x);
  for (int h = 0; h < 2; ++h) _mm256_storeu_ps(y + 8 * h, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 8 * h))));
  return from_lanes<simde__m512>(y);
}
inline simde__m256i cvtps_ph(simde__m512 a, int rounding) {
  float x[16];
  uint16_t y[16];
  lanes(a, x);
  for (int h = 0; h < 2; ++h) {
    const __m256 v = _mm256_loadu_ps(x + 8 * h);
    // _mm256_cvtps_ph needs a constant: the kernels pass nearest-even, others are refused.
    if (rounding != (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)) __builtin_trap();
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + 8 * h), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  return from_lanes<simde__m256i>(y);
}
inline simde__m512i cvtps_epi32(simde__m512 a) {
  float x[16];
  int32_t y[16];
  lanes(a, x);
  for (int h = 0; h < 2; ++h)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + 8 * h), _mm256_cvtps_epi32(_mm256_loadu_ps(x + 8 * h)));
  return from_lanes<simde__m512i>(y);
}
inline simde__m512 maskz_loadu_ps(uint16_t k, const void* p) {
  float y[16] = {};
  for (int i = 0; i < 16; ++i)
    if (k >> i & 1) std::memcpy(y + i, static_cast<const float*>(p) + i, sizeof(float));
  return from_lanes<simde__m512>(y);
}
inline simde__m128i maskz_loadu_epi8(uint16_t k, const void* p) {
  uint8_t y[16] = {};
  for (int i = 0; i < 16; ++i)
    if (k >> i & 1) y[i] = static_cast<const uint8_t*>(p)[i];
  return from_lanes<simde__m128i>(y);
}

}  // namespace tandem_simde

#define _mm512_extractf32x8_ps(a, i) tandem_simde::extractf32x8_ps(a, i)
#define _mm512_reduce_add_ps(a) tandem_simde::reduce_add_ps(a)
#define _mm512_cvtepi32_epi16(a) tandem_simde::cvtepi32_epi16(a)
#define _mm512_cvtepu16_epi32(a) tandem_simde::cvtepu16_epi32(a)
#define _mm512_cvtepu8_epi16(a) tandem_simde::cvtepu8_epi16(a)
#define _mm512_cvtph_ps(a) tandem_simde::cvtph_ps(a)
#define _mm512_cvtps_ph(a, r) tandem_simde::cvtps_ph(a, r)
#define _mm512_cvtps_epi32(a) tandem_simde::cvtps_epi32(a)
#define _mm512_maskz_loadu_ps(k, p) tandem_simde::maskz_loadu_ps(k, p)
#define _mm_maskz_loadu_epi8(k, p) tandem_simde::maskz_loadu_epi8(k, p)
