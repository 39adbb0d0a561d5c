// FP8 E4M3 decoding for the kernels. The fp16 bit trick: a code's magnitude bits (c & 0x7F) << 7 are
// the fp16 with the same mantissa and an exponent 8 lower (fp16 bias 15 vs E4M3 bias 7), also for
// subnormals; the sign moves to bit 15. So the half equals the E4M3 value times 2^-8, and the kernels
// fold the 2^8 into the block scale (one multiply per block, not per element).
// NaN codes (0x7F/0xFF) decode to 480 * 2^-8 here: the quantizer never emits them, so weight kernels
// skip the check (DESIGN section 4).
#pragma once
#include "utils.h"

constant constexpr float kFp8ScaleFold = 256.0f;  // 2^8, multiplied into every block scale

// One code -> its value times 2^-8, as half.
METAL_FUNC half fp8_decode_scaled(uchar c) {
  ushort u = ushort(c);
  return as_type<half>(ushort(((u & 0x80) << 8) | ((u & 0x7F) << 7)));
}

// Four codes packed little-endian in a uint -> their values times 2^-8, in order.
METAL_FUNC half4 fp8x4_decode_scaled(uint w) {
  uint even = w & 0x00FF00FFu;         // codes 0 and 2, one per 16-bit half
  uint odd = (w >> 8) & 0x00FF00FFu;   // codes 1 and 3
  half2 e = as_type<half2>(((even & 0x007F007Fu) << 7) | ((even & 0x00800080u) << 8));
  half2 o = as_type<half2>(((odd & 0x007F007Fu) << 7) | ((odd & 0x00800080u) << 8));
  return half4(e.x, o.x, e.y, o.y);
}
