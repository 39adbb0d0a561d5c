// Deliberately broken kernels: each must make the emulator raise (tests/metal_emu/test_errors.py
// finds the offending lines by their BUG markers).
#include <metal_stdlib>
using namespace metal;

[[kernel]] void barrier_in_branch(device float* out [[buffer(0)]],
                                  uint tid [[thread_index_in_threadgroup]]) {
  threadgroup float tmp[64];
  tmp[tid] = float(tid);
  if (tid < 16) {
    threadgroup_barrier(mem_flags::mem_threadgroup);  // BUG: barrier_in_branch
  }
  out[tid] = tmp[tid];
}

[[kernel]] void barrier_after_return(device float* out [[buffer(0)]],
                                     uint tid [[thread_index_in_threadgroup]]) {
  if (tid >= 40) {
    return;
  }
  threadgroup_barrier(mem_flags::mem_device);  // BUG: barrier_after_return
  out[tid] = 1.0f;
}

[[kernel]] void simd_sum_diverged(device float* out [[buffer(0)]],
                                  uint lane [[thread_index_in_simdgroup]]) {
  float v = float(lane);
  if (lane % 2 == 0) {
    v = simd_sum(v);  // BUG: simd_sum_diverged
  }
  out[lane] = v;
}

[[kernel]] void read_past_end(const device float* x [[buffer(0)]],
                              device float* y [[buffer(1)]],
                              uint i [[thread_position_in_grid]]) {
  y[i] = x[i + 1];  // BUG: read_past_end
}

[[kernel]] void write_past_end(device float* y [[buffer(0)]],
                               uint i [[thread_position_in_grid]]) {
  y[i + 1] = 2.0f;  // BUG: write_past_end
}

[[kernel]] void huge_threadgroup_array(device float* out [[buffer(0)]],
                                       uint tid [[thread_index_in_threadgroup]]) {
  threadgroup float big[9000];  // BUG: huge_threadgroup_array
  big[tid] = 1.0f;
  out[tid] = big[tid];
}

[[kernel, max_total_threads_per_threadgroup(64)]] void capped(device float* out [[buffer(0)]],
                                                              uint i [[thread_position_in_grid]]) {
  out[i] = 1.0f;
}

[[kernel]] void simdgroup_load_past_end(const device float* a [[buffer(0)]],
                                        device float* out [[buffer(1)]],
                                        uint lane [[thread_index_in_simdgroup]]) {
  simdgroup_float8x8 m;
  simdgroup_load(m, a, 8);  // BUG: simdgroup_load_past_end
  simdgroup_store(m, out, 8);
}

[[kernel]] void stack_overflow(device float* out [[buffer(0)]],
                               constant uint& n [[buffer(1)]],
                               uint i [[thread_position_in_grid]]) {
  float big[60000];  // BUG: stack_overflow (240 KB of thread memory)
  for (uint k = 0; k < n; k++) {
    big[k] = float(k + i);
  }
  out[i] = big[n - 1];
}

[[kernel]] void wild_threadgroup_pointer(device float* out [[buffer(0)]],
                                         constant ulong& offset [[buffer(1)]],
                                         threadgroup float* scratch [[threadgroup(0)]],
                                         uint i [[thread_position_in_grid]]) {
  out[i] = scratch[offset];  // BUG: wild_threadgroup_pointer
}

[[kernel]] void threadgroup_write_past_end(device float* out [[buffer(0)]],
                                           uint tid [[thread_index_in_threadgroup]]) {
  threadgroup float tile[32];  // BUG: threadgroup_write_past_end (written by 33 threads)
  tile[tid] = float(tid);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[tid] = tile[tid % 32];
}

// Reads what the previous SIMD-group wrote, without a barrier: right in first-to-last order only.
[[kernel]] void missing_barrier(const device float* x [[buffer(0)]],
                                device float* out [[buffer(1)]],
                                uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float tile[64];
  tile[lid] = x[lid];
  out[lid] = lid >= 32 ? tile[lid - 32] : x[lid];  // BUG: missing_barrier
}
