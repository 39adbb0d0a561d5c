// Scalar float16 / bfloat16 <-> float32 conversions (IEEE, round to nearest
// even), the reference the SIMD paths (F16C, bit shifts) agree with.
#pragma once

#include <cstdint>
#include <cstring>

namespace tandem::half {

inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FF;
  if (e == 0x1F) return bits_to_f32(sign | 0x7F800000u | (m << 13));  // inf / NaN
  if (e != 0) return bits_to_f32(sign | ((e + 112) << 23) | (m << 13));
  // Subnormal (or zero): m * 2^-24, exact in float32.
  const float mag = static_cast<float>(m) * (1.0f / 16777216.0f);
  return bits_to_f32(f32_to_bits(mag) | sign);
}

inline uint16_t f32_to_f16(float f) {
  const uint32_t u = f32_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return sign | 0x7E00;               // NaN
  if (a >= 0x477FF000u) return sign | 0x7C00;              // rounds past 65504: inf
  if (a < 0x38800000u) {                                   // below 2^-14: subnormal grid 2^-24
    const float scaled = bits_to_f32(a) * 16777216.0f;     // exact
    uint32_t m = static_cast<uint32_t>(scaled);
    const float rem = scaled - static_cast<float>(m);
    if (rem > 0.5f || (rem == 0.5f && (m & 1u))) ++m;
    return sign | static_cast<uint16_t>(m);
  }
  uint32_t r = a + 0xFFFu + ((a >> 13) & 1u);              // round mantissa 23 -> 10 bits
  return sign | static_cast<uint16_t>((r >> 13) - (112u << 10));
}

} // namespace tandem::half
