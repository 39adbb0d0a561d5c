// Sum of a float vector: each threadgroup reduces its slice with simd_sum, combines the
// SIMD-group partials through threadgroup memory and writes one partial per threadgroup.
#include <metal_stdlib>
using namespace metal;

struct ReduceArgs {
  uint n;
};

[[kernel]] void reduce_sum(
    const device float* x [[buffer(0)]],
    device float* partials [[buffer(1)]],
    constant ReduceArgs& args [[buffer(2)]],
    uint gid [[thread_position_in_grid]],
    uint tgid [[threadgroup_position_in_grid]],
    uint lane [[thread_index_in_simdgroup]],
    uint sg [[simdgroup_index_in_threadgroup]],
    uint nsg [[simdgroups_per_threadgroup]]) {
  threadgroup float shared[32];
  float v = gid < args.n ? x[gid] : 0.0f;
  v = simd_sum(v);
  if (lane == 0) {
    shared[sg] = v;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (sg == 0) {
    float p = lane < nsg ? shared[lane] : 0.0f;
    p = simd_sum(p);
    if (lane == 0) {
      partials[tgid] = p;
    }
  }
}
