// Routing for the expert-gathered FP8 matmul: a counting sort of the P = T*k (row, slot) pairs by
// expert in one threadgroup (indices are device data, so the grouping happens on the GPU). It counts
// pairs per expert in threadgroup atomics, turns the counts into pair-list offsets and work items with
// two threadgroup scans (each thread owns a contiguous run of experts, so items come out in expert
// order), then scatters the pair ids. Every loop strides by the threadgroup, so any P works.
// Out-of-range experts (< 0 or >= E) are never used as an index: their pairs are left out of every
// item and their output rows are written as NaN here (the CPU op raises instead; a GPU kernel cannot).
// The order of pairs within an expert depends on atomic timing; no result does (rows are independent).
#pragma once
#include "kargs.h"
#include "utils.h"

// Exclusive prefix sum of v over the threadgroup's kRouteThreads threads; total gets the sum.
METAL_FUNC int route_scan(int v, threadgroup int* sums, ushort sg, ushort lane, thread int& total) {
  const int incl = simd_prefix_inclusive_sum(v);
  if (lane == kSimdWidth - 1) sums[sg] = incl;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (sg == 0) {  // kRouteThreads / 32 == 32 SIMD-group sums, one per lane
    const int s = sums[lane];
    const int ex = simd_prefix_exclusive_sum(s);
    sums[lane] = ex;
    if (lane == kSimdWidth - 1) sums[kSimdWidth] = ex + s;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  const int r = sums[sg] + incl - v;
  total = sums[kSimdWidth];
  threadgroup_barrier(mem_flags::mem_threadgroup);  // sums is reused by the next scan
  return r;
}

template <typename T>
[[kernel, max_total_threads_per_threadgroup(kRouteThreads)]] void gather_route(
    const device int* indices [[buffer(0)]],
    device T* out [[buffer(1)]],
    device int* route [[buffer(2)]],
    constant GatherRouteArgs& a [[buffer(3)]],
    ushort tid [[thread_index_in_threadgroup]],
    ushort sg [[simdgroup_index_in_threadgroup]],
    ushort lane [[thread_index_in_simdgroup]]) {
  threadgroup atomic_int count[kRouteMaxExperts];  // pairs per expert, then the scatter cursor
  threadgroup int sums[kSimdWidth + 1];
  for (int e = tid; e < a.E; e += kRouteThreads) atomic_store_explicit(&count[e], 0, memory_order_relaxed);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (int p = tid; p < a.P; p += kRouteThreads) {
    const int e = indices[p];
    if (e >= 0 && e < a.E) {
      atomic_fetch_add_explicit(&count[e], 1, memory_order_relaxed);
    } else {
      const T nan = static_cast<T>(numeric_limits<float>::quiet_NaN());
      for (int n = 0; n < a.N; n++) out[size_t(p) * a.N + n] = nan;
    }
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);

  const int per = (a.E + kRouteThreads - 1) / kRouteThreads;
  const int e0 = min(a.E, int(tid) * per), e1 = min(a.E, e0 + per);
  int npairs = 0, nitems = 0;
  for (int e = e0; e < e1; e++) {
    const int c = atomic_load_explicit(&count[e], memory_order_relaxed);
    npairs += c;
    nitems += (c + a.rows_per_item - 1) / a.rows_per_item;
  }
  int total_pairs, total_items;
  int pair = route_scan(npairs, sums, sg, lane, total_pairs);
  int item = route_scan(nitems, sums, sg, lane, total_items);
  device int4* items = reinterpret_cast<device int4*>(route + kRouteHeader);
  for (int e = e0; e < e1; e++) {
    const int c = atomic_load_explicit(&count[e], memory_order_relaxed);
    for (int s = 0; s < c; s += a.rows_per_item) {
      if (item < a.max_items) items[item] = int4(e, pair + s, min(a.rows_per_item, c - s), 0);
      item++;
    }
    atomic_store_explicit(&count[e], pair, memory_order_relaxed);
    pair += c;
  }
  if (tid == 0) route[0] = min(total_items, a.max_items);  // the plan's bound makes min a no-op
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (int p = tid; p < a.P; p += kRouteThreads) {
    const int e = indices[p];
    if (e >= 0 && e < a.E) route[a.pairs_offset + atomic_fetch_add_explicit(&count[e], 1, memory_order_relaxed)] = p;
  }
}
