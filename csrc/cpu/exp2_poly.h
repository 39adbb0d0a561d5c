// 2^x for x <= 0 (softmax and sigmoid arguments), written once over a SIMD
// traits type S (its max, sub, round, fma, mul, set1 and pow2i).
#pragma once

namespace tandem::cpu {

// 2^f on f in [-1/2, 1/2], highest degree first (Cephes exp2f, ~2 ulp).
inline constexpr float kExp2Poly[] = {1.535336188319500e-4f, 1.339887440266574e-3f, 9.618437357674640e-3f,
                                      5.550332471162809e-2f, 2.402264791363012e-1f, 6.931472028550421e-1f,
                                      1.0f};

// 2^round(x) built in the exponent bits times the polynomial by Horner's rule;
// x <= -127 (and -inf) gives exactly 0.
template <class S>
inline typename S::V exp2_nonpositive(typename S::V x) {
  using V = typename S::V;
  x = S::max(x, S::set1(-127.0f));
  const V n = S::round(x);
  const V f = S::sub(x, n);
  V p = S::set1(kExp2Poly[0]);
  for (int i = 1; i < 7; ++i) p = S::fma(p, f, S::set1(kExp2Poly[i]));
  return S::mul(p, S::pow2i(n));
}

} // namespace tandem::cpu
