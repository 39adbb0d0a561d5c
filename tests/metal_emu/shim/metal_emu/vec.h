// MSL vector types: vec<T,N> with .xyzw/.rgba members, swizzles, element access, elementwise
// operators (hidden friends, so scalars and swizzles convert implicitly), packed_vec<T,N>.
// Layout follows Metal: vec<T,3> occupies and aligns to 4 elements; packed types do not pad.
#pragma once
#include "base.h"

namespace metal {

template <class T, int N> struct vec;
template <class T, int N> struct packed_vec;

// A swizzle member: shares the vector's storage, reads as vec<T,M>, writes its lanes.
// V (= vec<T,M>) is a template argument so ADL finds V's operators for swizzle operands.
template <class V, class T, int S, int... I> struct swz {
  using value_t = T;
  T e[S];
  operator V() const { return V(e[I]...); }
  swz& operator=(const V& v) {
    int k = 0;
    ((e[I] = v[k++]), ...);
    return *this;
  }
  swz& operator=(const swz& o) { return *this = V(o); }
  template <class U> swz& operator+=(const U& o) { return *this = V(*this) + o; }
  template <class U> swz& operator-=(const U& o) { return *this = V(*this) - o; }
  template <class U> swz& operator*=(const U& o) { return *this = V(*this) * o; }
  template <class U> swz& operator/=(const U& o) { return *this = V(*this) / o; }
  T operator[](int i) const { return V(*this)[i]; }
};

#include "swizzles.inc"

template <class T, int N> struct vec_data;
template <class T> struct vec_data<T, 2> {
  union { T e[2]; struct { T x, y; }; struct { T r, g; }; METAL_EMU_SWIZZLES_2 };
};
template <class T> struct vec_data<T, 3> {
  union { T e[4]; struct { T x, y, z; }; struct { T r, g, b; }; METAL_EMU_SWIZZLES_3 };
};
template <class T> struct vec_data<T, 4> {
  union { T e[4]; struct { T x, y, z, w; }; struct { T r, g, b, a; }; METAL_EMU_SWIZZLES_4 };
};

template <class X> struct ncomp { static constexpr int value = 1; };
template <class U, int M> struct ncomp<vec<U, M>> { static constexpr int value = M; };
template <class U, int M> struct ncomp<packed_vec<U, M>> { static constexpr int value = M; };
template <class V, class T, int S, int... I> struct ncomp<swz<V, T, S, I...>> { static constexpr int value = sizeof...(I); };
template <class X> inline constexpr int ncomp_v = ncomp<std::remove_cvref_t<X>>::value;

template <class T, int N>
struct alignas(sizeof(T) * (N == 3 ? 4 : N)) vec : vec_data<T, N> {
  static_assert(N >= 2 && N <= 4, "vec<T,N>: N must be 2, 3 or 4");
  using value_type = T;
  static constexpr int size = N;

  vec() = default;
  vec(const vec& o) = default;
  template <class U> requires is_scalar_v<U>
  constexpr vec(U s) { for (int i = 0; i < N; i++) this->e[i] = T(s); }
  template <class A0, class A1, class... A>
    requires(ncomp_v<A0> + ncomp_v<A1> + (0 + ... + ncomp_v<A>) == N)
  vec(const A0& a0, const A1& a1, const A&... a) {
    T* d = this->e;
    put(d, a0); put(d, a1); (put(d, a), ...);
  }
  template <class U> explicit vec(const vec<U, N>& o) { for (int i = 0; i < N; i++) this->e[i] = T(o[i]); }
  template <class V, class U, int S, int... I> requires(sizeof...(I) == N)
  vec(const swz<V, U, S, I...>& s) { U src[] = {s.e[I]...}; for (int i = 0; i < N; i++) this->e[i] = T(src[i]); }
  vec(const packed_vec<T, N>& p) { for (int i = 0; i < N; i++) this->e[i] = p[i]; }
  vec& operator=(const vec& o) { __builtin_memcpy(this->e, o.e, sizeof(T) * N); return *this; }

  T& operator[](int i) { return this->e[i]; }
  const T& operator[](int i) const { return this->e[i]; }

  template <class U> vec& operator+=(const U& o) { return *this = *this + o; }
  template <class U> vec& operator-=(const U& o) { return *this = *this - o; }
  template <class U> vec& operator*=(const U& o) { return *this = *this * o; }
  template <class U> vec& operator/=(const U& o) { return *this = *this / o; }
  template <class U> vec& operator%=(const U& o) { return *this = *this % o; }
  template <class U> vec& operator&=(const U& o) { return *this = *this & o; }
  template <class U> vec& operator|=(const U& o) { return *this = *this | o; }
  template <class U> vec& operator^=(const U& o) { return *this = *this ^ o; }
  template <class U> vec& operator<<=(const U& o) { return *this = *this << o; }
  template <class U> vec& operator>>=(const U& o) { return *this = *this >> o; }

#define METAL_EMU_VEC_BIN(op)                                                     \
  friend vec operator op(const vec& a, const vec& b) {                            \
    vec r;                                                                        \
    for (int i = 0; i < N; i++) r.e[i] = T(a.e[i] op b.e[i]);                     \
    return r;                                                                     \
  }
  METAL_EMU_VEC_BIN(+) METAL_EMU_VEC_BIN(-) METAL_EMU_VEC_BIN(*) METAL_EMU_VEC_BIN(/)
  METAL_EMU_VEC_BIN(&) METAL_EMU_VEC_BIN(|) METAL_EMU_VEC_BIN(^) METAL_EMU_VEC_BIN(<<)
  METAL_EMU_VEC_BIN(>>)
#undef METAL_EMU_VEC_BIN
  friend vec operator%(const vec& a, const vec& b) {
    vec r;
    for (int i = 0; i < N; i++) {
      if constexpr (std::is_integral_v<T>) r.e[i] = T(a.e[i] % b.e[i]);
      else r.e[i] = T(__builtin_fmodf(float(a.e[i]), float(b.e[i])));
    }
    return r;
  }
#define METAL_EMU_VEC_CMP(op)                                                     \
  friend vec<bool, N> operator op(const vec& a, const vec& b) {                   \
    vec<bool, N> r;                                                               \
    for (int i = 0; i < N; i++) r.e[i] = a.e[i] op b.e[i];                        \
    return r;                                                                     \
  }
  METAL_EMU_VEC_CMP(==) METAL_EMU_VEC_CMP(!=) METAL_EMU_VEC_CMP(<) METAL_EMU_VEC_CMP(<=)
  METAL_EMU_VEC_CMP(>) METAL_EMU_VEC_CMP(>=) METAL_EMU_VEC_CMP(&&) METAL_EMU_VEC_CMP(||)
#undef METAL_EMU_VEC_CMP
  friend vec operator-(const vec& a) { vec r; for (int i = 0; i < N; i++) r.e[i] = T(-a.e[i]); return r; }
  friend vec operator+(const vec& a) { return a; }
  friend vec operator~(const vec& a) { vec r; for (int i = 0; i < N; i++) r.e[i] = T(~a.e[i]); return r; }
  friend vec<bool, N> operator!(const vec& a) { vec<bool, N> r; for (int i = 0; i < N; i++) r.e[i] = !a.e[i]; return r; }

 private:
  template <class X> static void put(T*& d, const X& x) {
    using Y = std::remove_cvref_t<X>;
    if constexpr (ncomp<Y>::value == 1) {
      *d++ = T(x);
    } else if constexpr (requires { typename Y::value_type; Y::size; }) {
      for (int i = 0; i < Y::size; i++) *d++ = T(x[i]);
    } else {  // a swizzle
      auto v = x.operator vec<typename Y::value_t, ncomp<Y>::value>();
      for (int i = 0; i < ncomp<Y>::value; i++) *d++ = T(v[i]);
    }
  }
};

template <class T, int N> struct packed_data;
template <class T> struct packed_data<T, 2> { union { T e[2]; struct { T x, y; }; struct { T r, g; }; }; };
template <class T> struct packed_data<T, 3> { union { T e[3]; struct { T x, y, z; }; struct { T r, g, b; }; }; };
template <class T> struct packed_data<T, 4> { union { T e[4]; struct { T x, y, z, w; }; struct { T r, g, b, a; }; }; };

template <class T, int N> struct packed_vec : packed_data<T, N> {
  using value_type = T;
  static constexpr int size = N;
  packed_vec() = default;
  packed_vec(const vec<T, N>& v) { for (int i = 0; i < N; i++) this->e[i] = v[i]; }
  template <class... A> requires(sizeof...(A) == N && (is_scalar_v<A> && ...))
  packed_vec(A... a) : packed_vec(vec<T, N>(a...)) {}
  T& operator[](int i) { return this->e[i]; }
  const T& operator[](int i) const { return this->e[i]; }
#define METAL_EMU_PACKED_BIN(op)                                                                   \
  friend vec<T, N> operator op(const packed_vec& a, const packed_vec& b) { return vec<T, N>(a) op vec<T, N>(b); } \
  friend vec<T, N> operator op(const packed_vec& a, const vec<T, N>& b) { return vec<T, N>(a) op b; } \
  friend vec<T, N> operator op(const vec<T, N>& a, const packed_vec& b) { return a op vec<T, N>(b); }
  METAL_EMU_PACKED_BIN(+) METAL_EMU_PACKED_BIN(-) METAL_EMU_PACKED_BIN(*) METAL_EMU_PACKED_BIN(/)
#undef METAL_EMU_PACKED_BIN
};

#define METAL_EMU_VEC_ALIASES(T, name)                                                        \
  using name##2 = vec<T, 2>; using name##3 = vec<T, 3>; using name##4 = vec<T, 4>;              \
  using packed_##name##2 = packed_vec<T, 2>; using packed_##name##3 = packed_vec<T, 3>;        \
  using packed_##name##4 = packed_vec<T, 4>;
METAL_EMU_VEC_ALIASES(float, float) METAL_EMU_VEC_ALIASES(half, half)
METAL_EMU_VEC_ALIASES(bfloat, bfloat) METAL_EMU_VEC_ALIASES(int, int)
METAL_EMU_VEC_ALIASES(uint, uint) METAL_EMU_VEC_ALIASES(short, short)
METAL_EMU_VEC_ALIASES(ushort, ushort) METAL_EMU_VEC_ALIASES(char, char)
METAL_EMU_VEC_ALIASES(uchar, uchar) METAL_EMU_VEC_ALIASES(bool, bool)
METAL_EMU_VEC_ALIASES(long, long) METAL_EMU_VEC_ALIASES(ulong, ulong)
#undef METAL_EMU_VEC_ALIASES

// Swizzles and packed vectors are not vec<T,N>, so function templates over vec<T,N> would not
// deduce them: vec_of_t names the vector type they stand for, and to_vec converts.
template <class X> struct vec_of { using type = void; };
template <class T, int N> struct vec_of<vec<T, N>> { using type = vec<T, N>; };
template <class T, int N> struct vec_of<packed_vec<T, N>> { using type = vec<T, N>; };
template <class V, class T, int S, int... I> struct vec_of<swz<V, T, S, I...>> { using type = V; };
template <class X> using vec_of_t = typename vec_of<std::remove_cvref_t<X>>::type;
template <class X> concept vec_proxy = !std::is_void_v<vec_of_t<X>> && !std::is_same_v<vec_of_t<X>, std::remove_cvref_t<X>>;
template <class X> auto to_vec(const X& x) {
  if constexpr (vec_proxy<X>) return vec_of_t<X>(x);
  else return x;
}

}  // namespace metal

// MSL makes the vector type names visible without `using namespace metal`.
#define METAL_EMU_EXPORT(name) using metal::name##2; using metal::name##3; using metal::name##4; \
  using metal::packed_##name##2; using metal::packed_##name##3; using metal::packed_##name##4;
METAL_EMU_EXPORT(float) METAL_EMU_EXPORT(half) METAL_EMU_EXPORT(bfloat) METAL_EMU_EXPORT(int)
METAL_EMU_EXPORT(uint) METAL_EMU_EXPORT(short) METAL_EMU_EXPORT(ushort) METAL_EMU_EXPORT(char)
METAL_EMU_EXPORT(uchar) METAL_EMU_EXPORT(bool) METAL_EMU_EXPORT(long) METAL_EMU_EXPORT(ulong)
#undef METAL_EMU_EXPORT
