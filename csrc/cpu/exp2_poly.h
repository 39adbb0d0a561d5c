// 2^f on f in [-1/2, 1/2], highest degree first (Cephes exp2f, ~2 ulp); the
// SIMD traits evaluate it by Horner's rule after splitting off 2^round(x).
#pragma once

namespace tandem::cpu {

inline constexpr float kExp2Poly[] = {1.535336188319500e-4f, 1.339887440266574e-3f, 9.618437357674640e-3f,
                                      5.550332471162809e-2f, 2.402264791363012e-1f, 6.931472028550421e-1f,
                                      1.0f};

} // namespace tandem::cpu
