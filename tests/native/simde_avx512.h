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
// Out's lanes from In's, 8 at a time through f(const From* x, To* y).
template <class Out, class To, class From, class In, class F>
inline Out convert8(In a, F f) {
  constexpr int N = sizeof(In) / sizeof(From);
  From x[N];
  To y[N];
  lanes(a, x);
  for (int i = 0; i < N; i += 8) f(x + i, y + i);
  return from_lanes<Out>(y);
}
// Integer widening / truncation, lane by lane.
template <class Out, class To, class From, class In>
inline Out cast_lanes(In a) {
  return convert8<Out, To, From>(a, [](const From* x, To* y) {
    for (int i = 0; i < 8; ++i) y[i] = static_cast<To>(x[i]);
  });
}
inline simde__m256i cvtepi32_epi16(simde__m512i a) { return cast_lanes<simde__m256i, int16_t, int32_t>(a); }
inline simde__m512i cvtepu16_epi32(simde__m256i a) { return cast_lanes<simde__m512i, uint32_t, uint16_t>(a); }
inline simde__m512i cvtepu8_epi16(simde__m256i a) { return cast_lanes<simde__m512i, uint16_t, uint8_t>(a); }
// Float conversions through the host's F16C / AVX, 8 lanes at a time.
inline simde__m512 cvtph_ps(simde__m256i a) {
  return convert8<simde__m512, float, uint16_t>(a, [](const uint16_t* x, float* y) {
    _mm256_storeu_ps(y, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x))));
  });
}
inline simde__m256i cvtps_ph(simde__m512 a, int rounding) {
  // _mm256_cvtps_ph needs a constant: the kernels pass nearest-even, others are refused.
  if (rounding != (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)) __builtin_trap();
  return convert8<simde__m256i, uint16_t, float>(a, [](const float* x, uint16_t* y) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  });
}
inline simde__m512i cvtps_epi32(simde__m512 a) {
  return convert8<simde__m512i, int32_t, float>(a, [](const float* x, int32_t* y) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y), _mm256_cvtps_epi32(_mm256_loadu_ps(x)));
  });
}
// Zero-masked load of Out's lanes of T: only the enabled lanes are read.
template <class Out, class T>
inline Out maskz_loadu(uint16_t k, const void* p) {
  T y[sizeof(Out) / sizeof(T)] = {};
  for (int i = 0; i < static_cast<int>(sizeof(Out) / sizeof(T)); ++i)
    if (k >> i & 1) std::memcpy(y + i, static_cast<const T*>(p) + i, sizeof(T));
  return from_lanes<Out>(y);
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
#define _mm512_maskz_loadu_ps(k, p) tandem_simde::maskz_loadu<simde__m512, float>(k, p)
#define _mm_maskz_loadu_epi8(k, p) tandem_simde::maskz_loadu<simde__m128i, uint8_t>(k, p)
