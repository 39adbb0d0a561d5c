// Metal "internals" (`#pragma METAL internals : enable`): the __metal_* builtins MLX's headers
// call directly. They map onto the shim's functions; the fast-math flag is ignored.
#pragma once
#include "math.h"
#include "simd.h"

#define __METAL_MAYBE_FAST_MATH__ false
#define __METAL_FAST_MATH__ true
#define __METAL_PRECISE_MATH__ false

#define METAL_EMU_INTERNAL1(name)                                                  \
  template <class... M> inline float __metal_##name(float x, M...) { return metal::name(x); }
#define METAL_EMU_INTERNAL2(name)                                                  \
  template <class... M> inline float __metal_##name(float x, float y, M...) { return metal::name(x, y); }
#define METAL_EMU_INTERNAL3(name)                                                  \
  template <class... M> inline float __metal_##name(float x, float y, float z, M...) { return metal::name(x, y, z); }
METAL_EMU_INTERNAL1(fabs) METAL_EMU_INTERNAL1(acos) METAL_EMU_INTERNAL1(acosh) METAL_EMU_INTERNAL1(asin)
METAL_EMU_INTERNAL1(asinh) METAL_EMU_INTERNAL1(atan) METAL_EMU_INTERNAL1(atanh) METAL_EMU_INTERNAL1(ceil)
METAL_EMU_INTERNAL1(cos) METAL_EMU_INTERNAL1(cosh) METAL_EMU_INTERNAL1(cospi) METAL_EMU_INTERNAL1(exp)
METAL_EMU_INTERNAL1(exp10) METAL_EMU_INTERNAL1(exp2) METAL_EMU_INTERNAL1(floor) METAL_EMU_INTERNAL1(fract)
METAL_EMU_INTERNAL1(log) METAL_EMU_INTERNAL1(log10) METAL_EMU_INTERNAL1(log2) METAL_EMU_INTERNAL1(rint)
METAL_EMU_INTERNAL1(round) METAL_EMU_INTERNAL1(rsqrt) METAL_EMU_INTERNAL1(sin) METAL_EMU_INTERNAL1(sinh)
METAL_EMU_INTERNAL1(sinpi) METAL_EMU_INTERNAL1(sqrt) METAL_EMU_INTERNAL1(tan) METAL_EMU_INTERNAL1(tanh)
METAL_EMU_INTERNAL1(tanpi) METAL_EMU_INTERNAL1(trunc)
METAL_EMU_INTERNAL2(atan2) METAL_EMU_INTERNAL2(divide) METAL_EMU_INTERNAL2(fmax) METAL_EMU_INTERNAL2(fmin)
METAL_EMU_INTERNAL2(fmod) METAL_EMU_INTERNAL2(pow) METAL_EMU_INTERNAL2(powr) METAL_EMU_INTERNAL2(nextafter)
METAL_EMU_INTERNAL3(fma) METAL_EMU_INTERNAL3(fmax3) METAL_EMU_INTERNAL3(fmin3) METAL_EMU_INTERNAL3(fmedian3)
#undef METAL_EMU_INTERNAL1
#undef METAL_EMU_INTERNAL2
#undef METAL_EMU_INTERNAL3
template <class... M> inline float __metal_ldexp(float x, int k, M...) { return metal::ldexp(x, k); }
inline float __metal_frexp(float x, int* e) { return __builtin_frexpf(x, e); }

// SIMD builtins keep the caller's call site, so divergence is still found per call.
#define METAL_EMU_INTERNAL_SIMD1(name) \
  template <class T> inline T __metal_##name(T x, metal::SL loc = metal::SL::current()) { return metal::name(x, loc); }
#define METAL_EMU_INTERNAL_SIMD2(name)                                                     \
  template <class T, class I>                                                             \
  inline T __metal_##name(T x, I i, metal::SL loc = metal::SL::current()) { return metal::name(x, i, loc); }
METAL_EMU_INTERNAL_SIMD1(simd_sum) METAL_EMU_INTERNAL_SIMD1(simd_product) METAL_EMU_INTERNAL_SIMD1(simd_max)
METAL_EMU_INTERNAL_SIMD1(simd_min) METAL_EMU_INTERNAL_SIMD1(simd_xor) METAL_EMU_INTERNAL_SIMD1(simd_prefix_inclusive_sum)
METAL_EMU_INTERNAL_SIMD1(simd_prefix_exclusive_sum) METAL_EMU_INTERNAL_SIMD1(simd_prefix_inclusive_product)
METAL_EMU_INTERNAL_SIMD1(simd_prefix_exclusive_product)
METAL_EMU_INTERNAL_SIMD2(simd_shuffle) METAL_EMU_INTERNAL_SIMD2(simd_shuffle_xor) METAL_EMU_INTERNAL_SIMD2(simd_shuffle_up)
METAL_EMU_INTERNAL_SIMD2(simd_shuffle_down) METAL_EMU_INTERNAL_SIMD2(simd_shuffle_rotate_up)
METAL_EMU_INTERNAL_SIMD2(simd_shuffle_rotate_down) METAL_EMU_INTERNAL_SIMD2(simd_broadcast)
template <class T, class I>
inline T __metal_simd_shuffle_and_fill_down(T x, T f, I d, ushort m = 32, metal::SL loc = metal::SL::current()) {
  return metal::simd_shuffle_and_fill_down(x, f, d, m, loc);
}
template <class T, class I>
inline T __metal_simd_shuffle_and_fill_up(T x, T f, I d, ushort m = 32, metal::SL loc = metal::SL::current()) {
  return metal::simd_shuffle_and_fill_up(x, f, d, m, loc);
}
template <class T> inline T __metal_get_simdgroup_size(T) { return T(metal_emu::kSimdWidth); }
template <class T> inline T __metal_get_thread_index_in_simdgroup(T) { return T(metal_emu::cur_lane()->lane); }
#undef METAL_EMU_INTERNAL_SIMD1
#undef METAL_EMU_INTERNAL_SIMD2
