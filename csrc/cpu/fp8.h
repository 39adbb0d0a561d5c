// FP8 E4M3 ("e4m3fn") scalar codec: the readable specification that the SIMD
// kernels must match bit for bit. 1 sign, 4 exponent (bias 7), 3 mantissa
// bits; max finite 448 (0x7E); 0x7F/0xFF are NaN; no infinities.
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu/half.h"

namespace tandem::fp8 {

using half::bits_to_f32;
using half::f32_to_bits;

// Exact decode. NaN codes give NaN.
inline float decode(uint8_t b) {
  uint32_t sign = static_cast<uint32_t>(b & 0x80) << 24;
  uint32_t e = (b >> 3) & 0xF, m = b & 0x7;
  if (e == 0xF && m == 0x7) return bits_to_f32(sign | 0x7FC00000u);
  float mag;
  if (e == 0)
    mag = std::ldexp(static_cast<float>(m), -9);  // subnormal: m * 2^-9
  else
    mag = bits_to_f32(((e + 120) << 23) | (m << 20));  // rebias 7 -> 127
  return bits_to_f32(f32_to_bits(mag) | sign);
}

// Round to nearest even; finite overflow and +-inf saturate to +-448; NaN -> 0x7F.
inline uint8_t encode(float x) {
  uint32_t u = f32_to_bits(x);
  uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80);
  uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return 0x7F;
  if (a > f32_to_bits(448.0f)) return sign | 0x7E;
  if (a < f32_to_bits(0.015625f)) {  // below 2^-6: subnormal grid m * 2^-9, m in 0..8
    float m = std::nearbyint(bits_to_f32(a) * 512.0f);  // exact scaling, RNE
    return sign | static_cast<uint8_t>(m);
  }
  // Round the 23-bit mantissa to 3 bits (RNE); a carry moves into the exponent.
  a += 0x7FFFFu + ((a >> 20) & 1u);
  return sign | static_cast<uint8_t>((a >> 20) - (120u << 3));
}

// Decode table used by the scalar kernels (NaN codes decode to NaN here too).
struct DecodeTable {
  float v[256];
  DecodeTable() {
    for (int i = 0; i < 256; ++i) v[i] = decode(static_cast<uint8_t>(i));
  }
};

inline const DecodeTable& table() {
  static const DecodeTable t;
  return t;
}

} // namespace tandem::fp8
