// One argument struct per kernel, shared by the host planning code (csrc/metal/plan_*.cpp) and the
// shaders: plain fixed-width fields, 64-bit fields first so both sides lay them out identically.
// Buffer indices of each kernel are listed next to its struct.
#pragma once

#ifdef __METAL_VERSION__
typedef int tdm_i32;
typedef long tdm_i64;
#define TDM_CONST constant constexpr
#else
#include <cstdint>
typedef int32_t tdm_i32;
typedef int64_t tdm_i64;
#define TDM_CONST constexpr
#endif

// Launch-shape constants the host must agree on with the kernels.
TDM_CONST int kGemvRows = 4;         // output rows per SIMD-group
TDM_CONST int kGemvSimdgroups = 2;   // SIMD-groups per threadgroup
TDM_CONST int kGemmBM = 32;          // GEMM tile: rows of x / y
TDM_CONST int kGemmBN = 64;          // GEMM tile: weight rows (columns of y)
TDM_CONST int kGemmBK = 32;          // GEMM tile: K step
TDM_CONST int kGemmPad = 4;          // row padding of the staged tiles (bank conflicts)
TDM_CONST int kGemmThreads = 128;    // 2 x 2 SIMD-groups
TDM_CONST int kDecodeMaxSimdgroups = 32;  // attention decode: SIMD-groups (R query rows each) per threadgroup
TDM_CONST int kDecodeTileBytes = 16384;   // attention decode: K and V key tile staged in threadgroup memory
TDM_CONST int kMergeThreads = 32;    // attention decode merge: one SIMD-group per query row
TDM_CONST int kPrefillSimdgroups = 4;// attention prefill: SIMD-groups of 8 query rows each
TDM_CONST int kMaxThreadgroupBytes = 32768;

// attention prefill: threadgroup memory of a BK-key tile (K and V slices staged as T, float scores,
// per-row factors); the kernel takes the largest BK of 32, 16, 8 that fits.
constexpr inline int prefill_tile_bytes(int bk, int dk, int dvt, int elem) {
  return bk * (dk + dvt) * elem + kPrefillSimdgroups * 8 * (bk + 1) * 4;
}

// fp8_gemv_* : buffers 0 x (M, K) T, 1 codes (N, K) uchar, 2 scales float, 3 y (M, N) T, 4 args.
struct Fp8GemvArgs {
  tdm_i32 M, N, K;
  tdm_i32 bn, bk;        // block size
  tdm_i32 scales_ld;     // ceil(K / bk): row stride of scales
};

// fp8_gemm_* : same buffers as the GEMV.
struct Fp8GemmArgs {
  tdm_i32 M, N, K;
  tdm_i32 bn, bk;
  tdm_i32 scales_ld;
};

// Strides in elements; the innermost (head-dim) stride is 1. q may be a transposed view (B, L, H, D) ->
// (B, H, L, D), K/V views into a larger cache.
struct AttnStrides {
  tdm_i64 batch, head, seq;
};

// attention_decode_* : buffers 0 q (B, Hq, Lq, Dk), 1 k, 2 v, 3 out (B, Hq, Lq, Dv) contiguous, 4 args. attention_decode_split_*: 3 partial outputs float (B, Hq, Lq, splits,
// Dv), 4 args, 5 partial (max, sum) float2 (B, Hq, Lq, splits); then attention_decode_merge_* combines.
struct AttnDecodeArgs {
  AttnStrides q, k, v;
  tdm_i32 B, Hq, Hkv, Lq, Lk;
  tdm_i32 gqa;              // Hq / Hkv
  tdm_i32 causal;           // bottom-right aligned
  tdm_i32 keys_per_split;   // Lk when not split
  tdm_i32 splits;
  float scale_log2;         // softmax scale * log2(e): scores go through exp2
};

// attention_decode_merge_* : buffers 0 partial outputs, 1 partial (max, sum), 2 out, 3 args.
struct AttnMergeArgs {
  tdm_i32 rows;             // B * Hq * Lq
  tdm_i32 splits;
  tdm_i32 Dv;
};

// attention_prefill_* : buffers 0 q, 1 k, 2 v, 3 out (as the decode kernel), 4 args.
struct AttnPrefillArgs {
  AttnStrides q, k, v;
  tdm_i32 B, Hq, Hkv, Lq, Lk;
  tdm_i32 gqa;
  tdm_i32 causal;
  tdm_i32 Dv;
  tdm_i32 dv_tiles;         // Dv is covered in dv_tiles slices of the kernel's DVT columns
  float scale_log2;
};

// Expert-gathered FP8 matmul (mixture of experts): out (P = T*k, N) row p = t*k + j is
// x[t] @ dequant(codes[indices[t, j]])^T. gather_route_* groups the P pairs by expert on the GPU and
// writes a route scratch (int32): [0] the number of work items, [kRouteHeader, + 4 * max_items) the
// items (expert, first entry in the pair list, rows, 0), then the pair list (P pair ids, grouped by
// expert). An item is up to rows_per_item pairs of one expert; the matmul kernels launch max_items
// item slots and the slots past the count exit at once.
TDM_CONST int kRouteThreads = 1024;       // the route runs as one threadgroup
TDM_CONST int kRouteMaxExperts = 4096;    // its per-expert counters live in threadgroup memory
TDM_CONST int kRouteHeader = 4;           // ints before the items (keeps them 16-byte aligned)

// gather_route_* : buffers 0 indices (P) int, 1 out (P, N) T (NaN rows for out-of-range experts),
// 2 route int, 3 args.
struct GatherRouteArgs {
  tdm_i32 P, E, N;
  tdm_i32 rows_per_item;
  tdm_i32 max_items;
  tdm_i32 pairs_offset;  // kRouteHeader + 4 * max_items
};

// gather_gemv_* : buffers 0 x (T, K) T, 1 codes (E, N, K) uchar, 2 scales (E, ceil(N/bn), ceil(K/bk))
// float, 3 out (P, N) T, 4 route int, 5 args.
struct GatherGemvArgs {
  tdm_i32 N, K;
  tdm_i32 bn, bk;
  tdm_i32 scales_ld;     // ceil(K / bk)
  tdm_i32 scale_rows;    // ceil(N / bn): scales per expert = scale_rows * scales_ld
  tdm_i32 topk;          // k: pair p reads x row p / k
  tdm_i32 pairs_offset;
};

// gather_gemm_* : same buffers as the GEMV. mm is what fp8_gemm.h's tile loader reads (its M unused).
struct GatherGemmArgs {
  Fp8GemmArgs mm;
  tdm_i32 scale_rows;
  tdm_i32 topk;
  tdm_i32 pairs_offset;
};
