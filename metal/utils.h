// Shared helpers for the mlx-tandem Metal kernels: the instantiation macro, 8x8 fragment I/O.
#pragma once
#include <metal_stdlib>

using namespace metal;

#ifndef METAL_FUNC
#define METAL_FUNC inline __attribute__((always_inline))
#endif

// One instantiation line per kernel variant; the host name encodes dtype and shape parameters.
#define instantiate_kernel(name, func, ...) \
  template [[host_name(name)]] [[kernel]] decltype(func<__VA_ARGS__>) func<__VA_ARGS__>;

constant constexpr int kSimdWidth = 32;
// -inf for masked scores and empty softmax states (spelled without the INFINITY macro).
constant constexpr float kNegInf = -numeric_limits<float>::infinity();

typedef simdgroup_matrix<float, 8, 8> frag8;

// Where this lane's two elements of an 8x8 simdgroup matrix live: row, and columns col, col+1
// (the layout MLX's steel/mma.h relies on).
METAL_FUNC short2 frag_coord(ushort lane) {
  short qid = short(lane / 4);
  return short2(short((qid & 2) * 2 + (lane % 2) * 2), short((qid & 4) + ((lane / 2) % 4)));
}

// Loads fragment elements (r, c) = src[r * ld + c] for r < rows, c < cols, zero elsewhere, converting to
// float. Element-wise (not simdgroup_load) so any source type, stride and ragged edge work.
template <typename P>
METAL_FUNC void frag_load(thread frag8& m, P src, int ld, int rows, int cols, ushort lane) {
  short2 rc = frag_coord(lane);
  thread auto& e = m.thread_elements();
  bool row_ok = rc.y < rows;
  e[0] = (row_ok && rc.x < cols) ? float(src[rc.y * ld + rc.x]) : 0.0f;
  e[1] = (row_ok && rc.x + 1 < cols) ? float(src[rc.y * ld + rc.x + 1]) : 0.0f;
}

// Same with the source transposed: (r, c) = src[c * ld + r].
template <typename P>
METAL_FUNC void frag_load_t(thread frag8& m, P src, int ld, int rows, int cols, ushort lane) {
  short2 rc = frag_coord(lane);
  thread auto& e = m.thread_elements();
  bool row_ok = rc.y < rows;
  e[0] = (row_ok && rc.x < cols) ? float(src[rc.x * ld + rc.y]) : 0.0f;
  e[1] = (row_ok && rc.x + 1 < cols) ? float(src[(rc.x + 1) * ld + rc.y]) : 0.0f;
}

// Stores (r, c) for r < rows, c < cols into dst[r * ld + c] as U.
template <typename U, typename P>
METAL_FUNC void frag_store(thread frag8& m, P dst, int ld, int rows, int cols, ushort lane) {
  short2 rc = frag_coord(lane);
  thread auto& e = m.thread_elements();
  if (rc.y < rows) {
    if (rc.x < cols) dst[rc.y * ld + rc.x] = static_cast<U>(e[0]);
    if (rc.x + 1 < cols) dst[rc.y * ld + rc.x + 1] = static_cast<U>(e[1]);
  }
}
