// SIMD-group collectives checked against numpy: a shuffle butterfly, the other shuffles, scans,
// reductions on vectors, and a block prefix sum built from barriers and threadgroup memory.
#include <metal_stdlib>
using namespace metal;

// Butterfly all-reduce with simd_shuffle_xor: every lane ends with the sum of its SIMD-group.
[[kernel]] void butterfly_sum(const device float* x [[buffer(0)]],
                              device float* out [[buffer(1)]],
                              uint i [[thread_position_in_grid]]) {
  float v = x[i];
  for (ushort m = 16; m > 0; m >>= 1) {
    v += simd_shuffle_xor(v, m);
  }
  out[i] = v;
}

// out[k * n + i] = result k of lane i: shuffle (reverse), down 3, up 5, broadcast lane 7,
// rotate down 1, prefix inclusive / exclusive sums, max, min, ballot of (x > 0).
[[kernel]] void shuffles(const device int* x [[buffer(0)]],
                         device int* out [[buffer(1)]],
                         uint i [[thread_position_in_grid]],
                         uint lane [[thread_index_in_simdgroup]],
                         uint n [[threads_per_grid]]) {
  int v = x[i];
  out[0 * n + i] = simd_shuffle(v, ushort(31 - lane));
  out[1 * n + i] = simd_shuffle_down(v, 3u);
  out[2 * n + i] = simd_shuffle_up(v, 5u);
  out[3 * n + i] = simd_broadcast(v, ushort(7));
  out[4 * n + i] = simd_shuffle_rotate_down(v, 1u);
  out[5 * n + i] = simd_prefix_inclusive_sum(v);
  out[6 * n + i] = simd_prefix_exclusive_sum(v);
  out[7 * n + i] = simd_max(v);
  out[8 * n + i] = simd_min(v);
  out[9 * n + i] = int(uint64_t(simd_ballot(v > 0)) & 0xffffffffu);
}

// simd_sum of float4 and half vectors (elementwise), as MLX's reductions use them.
[[kernel]] void vector_sums(const device float4* x [[buffer(0)]],
                            device float4* out [[buffer(1)]],
                            device half2* hout [[buffer(2)]],
                            uint i [[thread_position_in_grid]],
                            uint sg [[simdgroup_index_in_threadgroup]],
                            uint lane [[thread_index_in_simdgroup]],
                            uint tg [[threadgroup_position_in_grid]],
                            uint nsg [[simdgroups_per_threadgroup]]) {
  float4 v = x[i];
  float4 s = simd_sum(v);
  half2 h = simd_sum(half2(v.xy));
  if (lane == 0) {
    out[tg * nsg + sg] = s;
    hout[tg * nsg + sg] = h;
  }
}

// Inclusive prefix sum of one block per threadgroup: Hillis-Steele over threadgroup memory
// given as a [[threadgroup(0)]] buffer, with a barrier between the read and the write phase.
[[kernel]] void block_scan(const device uint* x [[buffer(0)]],
                           device uint* out [[buffer(1)]],
                           threadgroup uint* buf [[threadgroup(0)]],
                           uint gid [[thread_position_in_grid]],
                           uint lid [[thread_index_in_threadgroup]],
                           uint tsize [[threads_per_threadgroup]]) {
  buf[lid] = x[gid];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (uint off = 1; off < tsize; off *= 2) {
    uint add = lid >= off ? buf[lid - off] : 0u;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    buf[lid] += add;
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  out[gid] = buf[lid];
}
