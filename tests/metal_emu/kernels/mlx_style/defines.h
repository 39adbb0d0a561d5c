// MLX-style helpers: the instantiate_kernel macro, a Limits table (METAL_FUNC comes from metal_stdlib).
#pragma once
#include <metal_stdlib>
#pragma METAL internals : enable

#define instantiate_kernel(name, func, ...) \
  template [[host_name(name)]] [[kernel]] decltype(func<__VA_ARGS__>) func<__VA_ARGS__>;

static constant constexpr int kSimdSize = 32;

template <typename U>
struct Limits {
  static const constant U max = metal::numeric_limits<U>::max();
  static const constant U lowest = metal::numeric_limits<U>::lowest();
};

// A 4-bit code table in program-scope constant memory (as a decoder would keep one).
constant float kCodebook[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
