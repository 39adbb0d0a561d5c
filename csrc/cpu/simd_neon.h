// NEON traits for the kernels in fp8_matmul_simd.h (4 floats per vector; ARMv8
// has fp16 <-> fp32 conversion in the base ISA).
#pragma once

#include <arm_neon.h>

#include <cstdint>
#include <cstring>

namespace tandem::cpu {

struct SimdNeon {
  static constexpr int W = 4;
  static constexpr int MR = 8;  // 8 x 8 micro-tile: 16 accumulators of 32 q registers
  static constexpr int kGemvPassRows = 8;  // GEMV rows per pass (fp8_matmul_simd.h); not measured lower on NEON
  using V = float32x4_t;

  static V zero() { return vdupq_n_f32(0.0f); }
  static V set1(float v) { return vdupq_n_f32(v); }
  static V load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, V v) { vst1q_f32(p, v); }
  static V fma(V a, V b, V c) { return vfmaq_f32(c, a, b); }
  static constexpr int kDecodeShift = 8;  // fp16 trick below
  static V mul(V a, V b) { return vmulq_f32(a, b); }
  static V add(V a, V b) { return vaddq_f32(a, b); }
  static float reduce(V v) { return vaddvq_f32(v); }
  static V load_partial(const float* p, int n) {
    float buf[W] = {};
    std::memcpy(buf, p, sizeof(float) * n);
    return vld1q_f32(buf);
  }

  // E4M3 -> fp16 bits (value * 2^-8): code in the high byte, arithmetic shift
  // right by one, clear the sign copy in bit 14.
  static uint16x8_t fp16_bits(uint8x8_t b) {
    int16x8_t t = vreinterpretq_s16_u16(vshlq_n_u16(vmovl_u8(b), 8));
    return vandq_u16(vreinterpretq_u16_s16(vshrq_n_s16(t, 1)), vdupq_n_u16(0xBFFF));
  }
  static V half_to_float(uint16x4_t h) { return vcvt_f32_f16(vreinterpret_f16_u16(h)); }
  static void decode2(const uint8_t* p, V& lo, V& hi) {
    uint16x8_t h = fp16_bits(vld1_u8(p));
    lo = half_to_float(vget_low_u16(h));
    hi = half_to_float(vget_high_u16(h));
  }
  static V decode(const uint8_t* p) {
    uint8_t buf[8] = {};
    std::memcpy(buf, p, W);
    return half_to_float(vget_low_u16(fp16_bits(vld1_u8(buf))));
  }
  static V decode_partial(const uint8_t* p, int n) {
    uint8_t buf[8] = {};
    std::memcpy(buf, p, n);
    return half_to_float(vget_low_u16(fp16_bits(vld1_u8(buf))));
  }
};

} // namespace tandem::cpu
