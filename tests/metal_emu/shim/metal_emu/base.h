// Scalar types of the Metal Shading Language for the CPU emulator: half, bfloat, the
// short integer names, type traits and numeric_limits (std lacks _Float16/bfloat ones).
#pragma once
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <source_location>
#include <type_traits>
#include <utility>

// Defined by Apple's metal_stdlib; MLX-style code relies on it.
#define METAL_FUNC inline __attribute__((__always_inline__))

typedef unsigned char uchar;
typedef unsigned short ushort;
typedef unsigned int uint;
typedef unsigned long ulong;
#if !(defined(__aarch64__) && !defined(__clang__) && __GNUC__ < 13)
typedef _Float16 half;
#else
// Older compilers (GCC 12 on aarch64) lack _Float16 in C++; __fp16 stores the same bits but does
// its arithmetic in float, so half expressions round less often than on a GPU.
typedef __fp16 half;
#define METAL_EMU_HALF_IS_STORAGE_ONLY 1
#endif

namespace metal {

// bfloat: a struct, not a compiler type, so conversions are explicit code we control.
// float -> bfloat rounds to nearest even; NaN stays a (quiet) NaN.
struct bfloat {
  uint16_t bits;
  bfloat() = default;
  static constexpr uint16_t round(float f) {
    uint32_t u = std::bit_cast<uint32_t>(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
  }
  // MSL: float and half convert to bfloat only explicitly; bfloat converts to float implicitly.
  explicit constexpr bfloat(float f) : bits(round(f)) {}
  template <class U>
    requires(std::is_arithmetic_v<U> || std::is_same_v<U, half>)
  explicit constexpr bfloat(U v) : bits(round(float(v))) {}
  static constexpr bfloat from_bits(uint16_t b) { bfloat r{}; r.bits = b; return r; }
  constexpr operator float() const { return std::bit_cast<float>(uint32_t(bits) << 16); }
  constexpr bfloat operator-() const { return from_bits(bits ^ 0x8000u); }
  constexpr bfloat operator+() const { return *this; }
  template <class U> constexpr bfloat& operator+=(U v) { return *this = bfloat(float(*this) + float(v)); }
  template <class U> constexpr bfloat& operator-=(U v) { return *this = bfloat(float(*this) - float(v)); }
  template <class U> constexpr bfloat& operator*=(U v) { return *this = bfloat(float(*this) * float(v)); }
  template <class U> constexpr bfloat& operator/=(U v) { return *this = bfloat(float(*this) / float(v)); }
};

template <class T> inline constexpr bool is_fp_v =
    std::is_floating_point_v<T> || std::is_same_v<T, half> || std::is_same_v<T, bfloat>;
template <class T> inline constexpr bool is_scalar_v = is_fp_v<T> || std::is_integral_v<T>;

// bfloat op bfloat -> bfloat; bfloat op integer -> bfloat; bfloat op float/half -> float.
template <class U> using bf_result_t = std::conditional_t<std::is_integral_v<U>, bfloat, float>;
#define METAL_EMU_BF_ARITH(op)                                                              \
  constexpr bfloat operator op(bfloat a, bfloat b) { return bfloat(float(a) op float(b)); } \
  template <class U> requires is_scalar_v<U>                                                \
  constexpr bf_result_t<U> operator op(bfloat a, U b) { return bf_result_t<U>(float(a) op float(b)); } \
  template <class U> requires is_scalar_v<U>                                                \
  constexpr bf_result_t<U> operator op(U a, bfloat b) { return bf_result_t<U>(float(a) op float(b)); }
METAL_EMU_BF_ARITH(+)
METAL_EMU_BF_ARITH(-)
METAL_EMU_BF_ARITH(*)
METAL_EMU_BF_ARITH(/)
#undef METAL_EMU_BF_ARITH
#define METAL_EMU_BF_CMP(op)                                                                     \
  constexpr bool operator op(bfloat a, bfloat b) { return float(a) op float(b); }                \
  template <class U> requires is_scalar_v<U>                                                     \
  constexpr bool operator op(bfloat a, U b) { return float(a) op float(b); }                     \
  template <class U> requires is_scalar_v<U>                                                     \
  constexpr bool operator op(U a, bfloat b) { return float(a) op float(b); }
METAL_EMU_BF_CMP(==)
METAL_EMU_BF_CMP(!=)
METAL_EMU_BF_CMP(<)
METAL_EMU_BF_CMP(<=)
METAL_EMU_BF_CMP(>)
METAL_EMU_BF_CMP(>=)
#undef METAL_EMU_BF_CMP

template <class T> struct numeric_limits : std::numeric_limits<T> {};
template <> struct numeric_limits<half> {
  static constexpr bool is_specialized = true, is_signed = true, has_infinity = true, has_quiet_NaN = true;
  static constexpr int digits = 11;
  static constexpr half max() { return half(65504.0f); }
  static constexpr half lowest() { return half(-65504.0f); }
  static constexpr half min() { return half(6.103515625e-05f); }
  static constexpr half epsilon() { return half(0.0009765625f); }
  static constexpr half denorm_min() { return half(5.9604644775390625e-08f); }
  static constexpr half infinity() { return std::bit_cast<half>(uint16_t(0x7c00)); }
  static constexpr half quiet_NaN() { return std::bit_cast<half>(uint16_t(0x7e00)); }
};
template <> struct numeric_limits<bfloat> {
  static constexpr bool is_specialized = true, is_signed = true, has_infinity = true, has_quiet_NaN = true;
  static constexpr int digits = 8;
  static constexpr bfloat max() { return bfloat::from_bits(0x7f7f); }
  static constexpr bfloat lowest() { return bfloat::from_bits(0xff7f); }
  static constexpr bfloat min() { return bfloat::from_bits(0x0080); }
  static constexpr bfloat epsilon() { return bfloat::from_bits(0x3c00); }
  static constexpr bfloat denorm_min() { return bfloat::from_bits(0x0001); }
  static constexpr bfloat infinity() { return bfloat::from_bits(0x7f80); }
  static constexpr bfloat quiet_NaN() { return bfloat::from_bits(0x7fc0); }
};

// The type traits MSL exposes in namespace metal (MLX-style code names them metal::...).
using std::conditional; using std::conditional_t; using std::enable_if; using std::enable_if_t;
using std::integral_constant; using std::is_arithmetic; using std::is_arithmetic_v;
using std::is_integral; using std::is_integral_v; using std::is_convertible; using std::is_convertible_v; using std::is_same; using std::is_same_v;
using std::is_signed; using std::is_signed_v; using std::is_unsigned; using std::is_unsigned_v;
using std::remove_const_t; using std::remove_cv_t; using std::remove_reference_t; using std::decay_t;
using std::true_type; using std::false_type; using std::bool_constant; using std::make_unsigned_t;
using std::is_pointer; using std::is_pointer_v; using std::remove_pointer; using std::remove_pointer_t;
using std::remove_cv; using std::remove_reference; using std::remove_const; using std::is_const;
using std::is_const_v; using std::is_void; using std::is_void_v; using std::make_signed_t;
// Address spaces are gone from the emulated types (device pointers are metal_emu::dptr), so
// removing them is the identity.
template <class T> struct remove_addrspace { using type = T; };
template <class T> using remove_addrspace_t = typename remove_addrspace<T>::type;
template <class T> struct is_floating_point : std::bool_constant<is_fp_v<std::remove_cv_t<T>>> {};
template <class T> inline constexpr bool is_floating_point_v = is_floating_point<T>::value;

// as_type: a bit cast that refuses mismatched sizes, as the Metal compiler does.
template <class To, class From> inline To as_type(const From& x) {
  static_assert(sizeof(To) == sizeof(From), "as_type: source and destination sizes differ");
  To r;
  __builtin_memcpy(static_cast<void*>(&r), static_cast<const void*>(&x), sizeof(To));
  return r;
}

}  // namespace metal

using metal::bfloat;
