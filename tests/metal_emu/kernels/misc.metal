// Atomics, numeric conversions and the dispatch builtins, each checked from numpy.
#include <metal_stdlib>
using namespace metal;

// A histogram with device atomics (threadgroups race on several OS threads) plus a per-threadgroup
// count kept in a threadgroup atomic and added once per threadgroup.
[[kernel]] void histogram(const device uint* x [[buffer(0)]],
                          device atomic_uint* bins [[buffer(1)]],
                          device atomic_uint* total [[buffer(2)]],
                          constant uint& n [[buffer(3)]],
                          uint gid [[thread_position_in_grid]],
                          uint lid [[thread_index_in_threadgroup]]) {
  threadgroup atomic_uint local_count;
  if (lid == 0) {
    atomic_store_explicit(&local_count, 0u, memory_order_relaxed);
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (gid < n) {
    atomic_fetch_add_explicit(&bins[x[gid] % 16], 1u, memory_order_relaxed);
    atomic_fetch_add_explicit(&local_count, 1u, memory_order_relaxed);
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (lid == 0) {
    atomic_fetch_add_explicit(total, atomic_load_explicit(&local_count, memory_order_relaxed), memory_order_relaxed);
  }
}

// float -> half, bfloat (both round to nearest even) and back; half/bfloat bit patterns out.
[[kernel]] void convert(const device float* x [[buffer(0)]],
                        device ushort* half_bits [[buffer(1)]],
                        device ushort* bf_bits [[buffer(2)]],
                        device float* back [[buffer(3)]],
                        uint i [[thread_position_in_grid]]) {
  half h = half(x[i]);
  bfloat b = static_cast<bfloat>(x[i]);
  half_bits[i] = as_type<ushort>(h);
  bf_bits[i] = as_type<ushort>(b);
  back[2 * i] = float(h);
  back[2 * i + 1] = float(b);
}

// Every builtin of every thread, as 3 uints each (unused components 0), in grid order.
[[kernel]] void builtins(device uint* out [[buffer(0)]],
                         uint3 tpig [[thread_position_in_grid]],
                         uint3 tpitg [[thread_position_in_threadgroup]],
                         uint tiitg [[thread_index_in_threadgroup]],
                         uint3 tgpig [[threadgroup_position_in_grid]],
                         uint3 tgpg [[threadgroups_per_grid]],
                         uint3 tptg [[threads_per_threadgroup]],
                         uint tiisg [[thread_index_in_simdgroup]],
                         uint tpsg [[threads_per_simdgroup]],
                         ushort sgitg [[simdgroup_index_in_threadgroup]],
                         ushort sgptg [[simdgroups_per_threadgroup]],
                         uint3 grid [[threads_per_grid]]) {
  uint idx = (tpig.z * grid.y + tpig.y) * grid.x + tpig.x;
  device uint* o = out + idx * 30;
  uint vals[30] = {tpig.x, tpig.y, tpig.z, tpitg.x, tpitg.y, tpitg.z, tiitg, 0, 0,
                   tgpig.x, tgpig.y, tgpig.z, tgpg.x, tgpg.y, tgpg.z, tptg.x, tptg.y, tptg.z,
                   tiisg, 0, 0, tpsg, 0, 0, sgitg, 0, 0, sgptg, 0, 0};
  for (int k = 0; k < 30; k++) {
    o[k] = vals[k];
  }
}
