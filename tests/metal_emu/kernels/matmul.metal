// Matrix multiply with simdgroup_matrix, in two shapes:
// - matmul_direct_<T>: one SIMD-group per 8x8 tile of C, operands loaded straight from device
//   memory (so the byte counts are easy to predict: every A tile is read once per tile column);
// - matmul_staged: a 16x16 block per threadgroup (4 SIMD-groups), A and B staged through
//   threadgroup memory by all 128 threads between barriers.
#include <metal_stdlib>
using namespace metal;

struct MatmulArgs {
  uint M, N, K;
};

template <typename T>
[[kernel]] void matmul_direct(const device T* A [[buffer(0)]],
                              const device T* B [[buffer(1)]],
                              device float* C [[buffer(2)]],
                              constant MatmulArgs& args [[buffer(3)]],
                              uint2 tile [[threadgroup_position_in_grid]]) {
  simdgroup_matrix<float, 8, 8> acc = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  for (uint k = 0; k < args.K; k += 8) {
    simdgroup_matrix<T, 8, 8> a, b;
    simdgroup_load(a, A + tile.y * 8 * args.K + k, args.K);
    simdgroup_load(b, B + k * args.N + tile.x * 8, args.N);
    simdgroup_multiply_accumulate(acc, a, b, acc);
  }
  simdgroup_store(acc, C + tile.y * 8 * args.N + tile.x * 8, args.N);
}

#define instantiate_matmul(name, type) \
  template [[host_name(name)]] [[kernel]] decltype(matmul_direct<type>) matmul_direct<type>;
instantiate_matmul("matmul_direct_float", float)
instantiate_matmul("matmul_direct_half", half)

[[kernel]] void matmul_staged(const device float* A [[buffer(0)]],
                              const device float* B [[buffer(1)]],
                              device float* C [[buffer(2)]],
                              constant MatmulArgs& args [[buffer(3)]],
                              uint2 block [[threadgroup_position_in_grid]],
                              uint lid [[thread_index_in_threadgroup]],
                              uint sg [[simdgroup_index_in_threadgroup]]) {
  threadgroup float As[16 * 8];
  threadgroup float Bs[8 * 16];
  const uint row0 = block.y * 16, col0 = block.x * 16;
  const uint sr = (sg / 2) * 8, sc = (sg % 2) * 8;
  simdgroup_float8x8 acc(0.0f);
  for (uint k = 0; k < args.K; k += 8) {
    As[lid] = A[(row0 + lid / 8) * args.K + k + lid % 8];
    Bs[lid] = B[(k + lid / 16) * args.N + col0 + lid % 16];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    simdgroup_float8x8 a, b;
    simdgroup_load(a, As + sr * 8, 8);
    simdgroup_load(b, Bs + sc, 16);
    simdgroup_multiply_accumulate(acc, a, b, acc);
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  simdgroup_store(acc, C, args.N, ulong2(col0 + sc, row0 + sr));
}

// Transposed load: C = A^T * B with A stored K x M.
[[kernel]] void matmul_at(const device float* A [[buffer(0)]],
                          const device float* B [[buffer(1)]],
                          device float* C [[buffer(2)]],
                          constant MatmulArgs& args [[buffer(3)]],
                          uint2 tile [[threadgroup_position_in_grid]]) {
  simdgroup_float8x8 acc = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  for (uint k = 0; k < args.K; k += 8) {
    simdgroup_float8x8 a, b;
    simdgroup_load(a, A + k * args.M + tile.y * 8, args.M, ulong2(0, 0), true);
    simdgroup_load(b, B + k * args.N + tile.x * 8, args.N);
    simdgroup_multiply_accumulate(acc, a, b, acc);
  }
  simdgroup_store(acc, C + tile.y * 8 * args.N + tile.x * 8, args.N);
}
