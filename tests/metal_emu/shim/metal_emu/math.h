// MSL math (metal::, metal::fast::, metal::precise::): every floating function has float, half
// and double overloads plus elementwise vec versions. As in MSL there are no bfloat overloads:
// a bfloat argument converts to float (MLX's bf16_math.h adds its own).
// Precision is IEEE float throughout: the GPU's fast-math approximations are not modelled.
#pragma once
#include "vec.h"

namespace metal {

#define METAL_EMU_F1(name, fexpr)                                                  \
  inline float name(float x) { return fexpr; }                                     \
  inline float name(double d) { float x = float(d); return fexpr; }                \
  inline half name(half h) { float x = float(h); return half(fexpr); }             \
  template <class T, int N> vec<T, N> name(const vec<T, N>& v) {                   \
    vec<T, N> r;                                                                   \
    for (int i = 0; i < N; i++) r[i] = T(name(v[i]));                              \
    return r;                                                                      \
  }
METAL_EMU_F1(exp, __builtin_expf(x))
METAL_EMU_F1(exp2, __builtin_exp2f(x))
METAL_EMU_F1(exp10, __builtin_powf(10.0f, x))
METAL_EMU_F1(log, __builtin_logf(x))
METAL_EMU_F1(log2, __builtin_log2f(x))
METAL_EMU_F1(log10, __builtin_log10f(x))
METAL_EMU_F1(sqrt, __builtin_sqrtf(x))
METAL_EMU_F1(rsqrt, 1.0f / __builtin_sqrtf(x))
METAL_EMU_F1(sin, __builtin_sinf(x))
METAL_EMU_F1(cos, __builtin_cosf(x))
METAL_EMU_F1(tan, __builtin_tanf(x))
METAL_EMU_F1(asin, __builtin_asinf(x))
METAL_EMU_F1(acos, __builtin_acosf(x))
METAL_EMU_F1(atan, __builtin_atanf(x))
METAL_EMU_F1(sinh, __builtin_sinhf(x))
METAL_EMU_F1(cosh, __builtin_coshf(x))
METAL_EMU_F1(tanh, __builtin_tanhf(x))
METAL_EMU_F1(floor, __builtin_floorf(x))
METAL_EMU_F1(ceil, __builtin_ceilf(x))
METAL_EMU_F1(round, __builtin_roundf(x))
METAL_EMU_F1(rint, __builtin_rintf(x))
METAL_EMU_F1(trunc, __builtin_truncf(x))
METAL_EMU_F1(fract, __builtin_fminf(x - __builtin_floorf(x), 0x1.fffffep-1f))
METAL_EMU_F1(fabs, __builtin_fabsf(x))
METAL_EMU_F1(saturate, __builtin_fminf(__builtin_fmaxf(x, 0.0f), 1.0f))
METAL_EMU_F1(sign, x > 0 ? 1.0f : (x < 0 ? -1.0f : (x != x ? 0.0f : x)))
METAL_EMU_F1(acosh, __builtin_acoshf(x))
METAL_EMU_F1(asinh, __builtin_asinhf(x))
METAL_EMU_F1(atanh, __builtin_atanhf(x))
METAL_EMU_F1(cospi, __builtin_cosf(3.14159265358979323846f * x))
METAL_EMU_F1(sinpi, __builtin_sinf(3.14159265358979323846f * x))
METAL_EMU_F1(tanpi, __builtin_tanf(3.14159265358979323846f * x))
#undef METAL_EMU_F1

#define METAL_EMU_F2(name, fexpr)                                                              \
  inline float name(float x, float y) { return fexpr; }                                        \
  inline float name(double dx, double dy) { float x = float(dx), y = float(dy); return fexpr; } \
  inline half name(half hx, half hy) { float x = float(hx), y = float(hy); return half(fexpr); } \
  template <class T, int N> vec<T, N> name(const vec<T, N>& a, const vec<T, N>& b) {            \
    vec<T, N> r;                                                                               \
    for (int i = 0; i < N; i++) r[i] = T(name(a[i], b[i]));                                    \
    return r;                                                                                  \
  }                                                                                            \
  template <class T, int N> vec<T, N> name(const vec<T, N>& a, std::type_identity_t<T> b) { return name(a, vec<T, N>(b)); } \
  template <class T, int N> vec<T, N> name(std::type_identity_t<T> a, const vec<T, N>& b) { return name(vec<T, N>(a), b); }
METAL_EMU_F2(pow, __builtin_powf(x, y))
METAL_EMU_F2(powr, __builtin_powf(x, y))
METAL_EMU_F2(atan2, __builtin_atan2f(x, y))
METAL_EMU_F2(fmod, __builtin_fmodf(x, y))
METAL_EMU_F2(copysign, __builtin_copysignf(x, y))
METAL_EMU_F2(fmax, __builtin_fmaxf(x, y))
METAL_EMU_F2(fmin, __builtin_fminf(x, y))
METAL_EMU_F2(step, y < x ? 0.0f : 1.0f)
METAL_EMU_F2(fdim, x > y ? x - y : 0.0f)
METAL_EMU_F2(nextafter, __builtin_nextafterf(x, y))
#undef METAL_EMU_F2

// max/min/clamp/abs also exist for integers (same type on both sides, as in MSL).
// Metal's float max/min return the other operand when one is NaN (fmax semantics).
inline float max(float a, float b) { return __builtin_fmaxf(a, b); }
inline float min(float a, float b) { return __builtin_fminf(a, b); }
inline half max(half a, half b) { return half(__builtin_fmaxf(float(a), float(b))); }
inline half min(half a, half b) { return half(__builtin_fminf(float(a), float(b))); }
inline float max(double a, double b) { return __builtin_fmaxf(float(a), float(b)); }
inline float min(double a, double b) { return __builtin_fminf(float(a), float(b)); }
template <class T> requires std::is_integral_v<T> T max(T a, T b) { return a > b ? a : b; }
template <class T> requires std::is_integral_v<T> T min(T a, T b) { return a < b ? a : b; }
template <class T> requires is_scalar_v<T> T clamp(T x, T lo, T hi) { return T(min(max(x, lo), hi)); }
inline float clamp(double x, double lo, double hi) { return clamp(float(x), float(lo), float(hi)); }
template <class T> requires std::is_integral_v<T> T abs(T x) { return x < 0 ? T(-x) : x; }
inline float abs(float x) { return __builtin_fabsf(x); }
inline float abs(double x) { return __builtin_fabsf(float(x)); }
inline half abs(half x) { return half(__builtin_fabsf(float(x))); }
template <class T> requires is_scalar_v<T> T max3(T a, T b, T c) { return T(max(max(a, b), c)); }
template <class T> requires is_scalar_v<T> T min3(T a, T b, T c) { return T(min(min(a, b), c)); }
template <class T> requires is_scalar_v<T> T median3(T a, T b, T c) { return T(max(min(a, b), min(max(a, b), c))); }
inline float fmax3(float a, float b, float c) { return max(max(a, b), c); }
inline float fmin3(float a, float b, float c) { return min(min(a, b), c); }
inline float fmedian3(float a, float b, float c) { return median3(a, b, c); }

#define METAL_EMU_VEC2(name)                                                                  \
  template <class T, int N> vec<T, N> name(const vec<T, N>& a, const vec<T, N>& b) {          \
    vec<T, N> r;                                                                             \
    for (int i = 0; i < N; i++) r[i] = T(name(a[i], b[i]));                                  \
    return r;                                                                                \
  }                                                                                          \
  template <class T, int N> vec<T, N> name(const vec<T, N>& a, std::type_identity_t<T> b) { return name(a, vec<T, N>(b)); } \
  template <class T, int N> vec<T, N> name(std::type_identity_t<T> a, const vec<T, N>& b) { return name(vec<T, N>(a), b); }
METAL_EMU_VEC2(max)
METAL_EMU_VEC2(min)
#undef METAL_EMU_VEC2
template <class T, int N> vec<T, N> abs(const vec<T, N>& v) {
  vec<T, N> r;
  for (int i = 0; i < N; i++) r[i] = T(abs(v[i]));
  return r;
}
template <class T, int N, class L, class H> vec<T, N> clamp(const vec<T, N>& x, const L& lo, const H& hi) {
  return min(max(x, vec<T, N>(lo)), vec<T, N>(hi));
}

inline float fma(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
inline half fma(half a, half b, half c) { return half(__builtin_fmaf(float(a), float(b), float(c))); }
template <class T, int N> vec<T, N> fma(const vec<T, N>& a, const vec<T, N>& b, const vec<T, N>& c) {
  vec<T, N> r;
  for (int i = 0; i < N; i++) r[i] = T(fma(a[i], b[i], c[i]));
  return r;
}
template <class T> requires is_fp_v<T> T mix(T x, T y, T a) { return T(float(x) + (float(y) - float(x)) * float(a)); }
template <class T, int N, class A> vec<T, N> mix(const vec<T, N>& x, const vec<T, N>& y, const A& a) {
  return x + (y - x) * vec<T, N>(a);
}

inline bool isnan(float x) { return __builtin_isnan(x); }
inline bool isnan(half x) { return __builtin_isnan(float(x)); }
inline bool isinf(float x) { return __builtin_isinf(x); }
inline bool isinf(half x) { return __builtin_isinf(float(x)); }
inline bool isfinite(float x) { return __builtin_isfinite(x); }
inline bool isfinite(half x) { return __builtin_isfinite(float(x)); }
inline bool signbit(float x) { return __builtin_signbit(x); }
inline bool signbit(half x) { return __builtin_signbit(float(x)); }
#define METAL_EMU_VPRED(name)                                                     \
  template <class T, int N> vec<bool, N> name(const vec<T, N>& v) {               \
    vec<bool, N> r;                                                               \
    for (int i = 0; i < N; i++) r[i] = name(v[i]);                                \
    return r;                                                                     \
  }
METAL_EMU_VPRED(isnan) METAL_EMU_VPRED(isinf) METAL_EMU_VPRED(isfinite) METAL_EMU_VPRED(signbit)
#undef METAL_EMU_VPRED

// Relational and geometric helpers.
template <int N> bool any(const vec<bool, N>& v) { for (int i = 0; i < N; i++) if (v[i]) return true; return false; }
template <int N> bool all(const vec<bool, N>& v) { for (int i = 0; i < N; i++) if (!v[i]) return false; return true; }
inline bool any(bool b) { return b; }
inline bool all(bool b) { return b; }
template <class T> requires is_scalar_v<T> T select(T a, T b, bool c) { return c ? b : a; }
template <class T, int N> vec<T, N> select(const vec<T, N>& a, const vec<T, N>& b, const vec<bool, N>& c) {
  vec<T, N> r;
  for (int i = 0; i < N; i++) r[i] = c[i] ? b[i] : a[i];
  return r;
}
template <class T, int N> vec<T, N> select(const vec<T, N>& a, const vec<T, N>& b, bool c) { return c ? b : a; }
template <class T, int N> T dot(const vec<T, N>& a, const vec<T, N>& b) {
  float s = 0;
  for (int i = 0; i < N; i++) s += float(a[i]) * float(b[i]);
  return T(s);
}
template <class T, int N> T length(const vec<T, N>& a) { return T(__builtin_sqrtf(float(dot(a, a)))); }
template <class T, int N> vec<T, N> normalize(const vec<T, N>& a) { return a * vec<T, N>(T(1.0f / float(length(a)))); }

// Integer bit functions.
template <class T> requires std::is_integral_v<T> T popcount(T x) { return T(__builtin_popcountll((unsigned long long)std::make_unsigned_t<T>(x))); }
template <class T> requires std::is_integral_v<T> T clz(T x) {
  using U = std::make_unsigned_t<T>;
  return x == 0 ? T(sizeof(T) * 8) : T(__builtin_clzll((unsigned long long)U(x)) - (64 - sizeof(T) * 8));
}
template <class T> requires std::is_integral_v<T> T ctz(T x) { return x == 0 ? T(sizeof(T) * 8) : T(__builtin_ctzll((unsigned long long)x)); }
template <class T> requires std::is_integral_v<T> T extract_bits(T x, uint offset, uint bits) {
  using U = std::make_unsigned_t<T>;
  if (bits == 0) return 0;
  U m = bits >= sizeof(T) * 8 ? U(~U(0)) : U((U(1) << bits) - 1);
  return T((U(x) >> offset) & m);
}
template <class T> requires std::is_integral_v<T> T mulhi(T a, T b) {
  return T((__int128(a) * __int128(b)) >> (sizeof(T) * 8));
}
template <class T> requires std::is_integral_v<T> T rotate(T v, T i) {
  using U = std::make_unsigned_t<T>;
  const unsigned w = sizeof(T) * 8;
  unsigned s = unsigned(i) % w;
  return s == 0 ? v : T((U(v) << s) | (U(v) >> (w - s)));
}

#define METAL_EMU_FAST_NAMES \
using metal::abs; using metal::acos; using metal::asin; using metal::atan; using metal::atan2; \
using metal::ceil; using metal::copysign; using metal::cos; using metal::cosh; using metal::divide; \
using metal::exp; using metal::exp10; using metal::exp2; using metal::fabs; using metal::floor; \
using metal::fmax; using metal::fmin; using metal::fmod; using metal::fract; using metal::log; \
using metal::log10; using metal::log2; using metal::max; using metal::min; using metal::pow; \
using metal::powr; using metal::rint; using metal::round; using metal::rsqrt; using metal::saturate; \
using metal::sign; using metal::sin; using metal::sinh; using metal::sqrt; using metal::tan; \
using metal::tanh; using metal::trunc; using metal::clamp; using metal::step;
// Swizzle/packed arguments: convert to vec<T,N> and call the vec overloads.
#define METAL_EMU_PROXY1(name) \
  template <class X> requires vec_proxy<X> auto name(const X& x) { return name(to_vec(x)); }
#define METAL_EMU_PROXY2(name)                                                                  \
  template <class A, class B> requires(vec_proxy<A> || vec_proxy<B>)                          \
  auto name(const A& a, const B& b) { return name(to_vec(a), to_vec(b)); }
#define METAL_EMU_PROXY3(name)                                                                  \
  template <class A, class B, class C> requires(vec_proxy<A> || vec_proxy<B> || vec_proxy<C>) \
  auto name(const A& a, const B& b, const C& c) { return name(to_vec(a), to_vec(b), to_vec(c)); }
METAL_EMU_PROXY1(exp) METAL_EMU_PROXY1(exp2) METAL_EMU_PROXY1(exp10) METAL_EMU_PROXY1(log) METAL_EMU_PROXY1(log2)
METAL_EMU_PROXY1(log10) METAL_EMU_PROXY1(sqrt) METAL_EMU_PROXY1(rsqrt) METAL_EMU_PROXY1(sin) METAL_EMU_PROXY1(cos)
METAL_EMU_PROXY1(tan) METAL_EMU_PROXY1(tanh) METAL_EMU_PROXY1(floor) METAL_EMU_PROXY1(ceil) METAL_EMU_PROXY1(round)
METAL_EMU_PROXY1(rint) METAL_EMU_PROXY1(trunc) METAL_EMU_PROXY1(fract) METAL_EMU_PROXY1(fabs) METAL_EMU_PROXY1(abs)
METAL_EMU_PROXY1(saturate) METAL_EMU_PROXY1(sign) METAL_EMU_PROXY1(isnan) METAL_EMU_PROXY1(isinf)
METAL_EMU_PROXY1(isfinite) METAL_EMU_PROXY1(length) METAL_EMU_PROXY1(normalize) METAL_EMU_PROXY1(any)
METAL_EMU_PROXY1(all)
METAL_EMU_PROXY2(pow) METAL_EMU_PROXY2(powr) METAL_EMU_PROXY2(fmax) METAL_EMU_PROXY2(fmin) METAL_EMU_PROXY2(max)
METAL_EMU_PROXY2(min) METAL_EMU_PROXY2(dot) METAL_EMU_PROXY2(fmod) METAL_EMU_PROXY2(step) METAL_EMU_PROXY2(copysign)
METAL_EMU_PROXY3(clamp) METAL_EMU_PROXY3(fma) METAL_EMU_PROXY3(mix) METAL_EMU_PROXY3(select)
#undef METAL_EMU_PROXY1
#undef METAL_EMU_PROXY2
#undef METAL_EMU_PROXY3

// Divide helpers MSL has in fast:: (divide) and the fast::/precise:: namespaces themselves:
// both name the same IEEE implementations here.
inline float divide(float a, float b) { return a / b; }
inline float ldexp(float x, int k) { return __builtin_ldexpf(x, k); }
inline half ldexp(half x, int k) { return half(__builtin_ldexpf(float(x), k)); }
inline float frexp(float x, int& e) { return __builtin_frexpf(x, &e); }
inline half frexp(half x, int& e) { return half(__builtin_frexpf(float(x), &e)); }
namespace fast {
METAL_EMU_FAST_NAMES
}  // namespace fast
// Using-declarations (not a directive) so that overloads added later to metal::precise (as MLX's
// bf16_math.h does) do not hide these.
namespace precise {
METAL_EMU_FAST_NAMES
}  // namespace precise

}  // namespace metal
