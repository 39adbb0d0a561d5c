#include "metal/plan_attention.h"

#include <algorithm>
#include <cmath>

#include "kargs.h"

namespace tandem::metal {

namespace {

constexpr int kHeadDims[][2] = {{64, 64}, {80, 80}, {96, 96}, {128, 128}, {192, 128}, {256, 256}, {576, 512}};

// Query rows per decode SIMD-group: registers hold R x (Dk + Dv) / 32 floats per lane.
int decode_row_cap(int Dv) { return Dv <= 128 ? 8 : Dv <= 256 ? 4 : 2; }

int next_pow2(int x) {
  int p = 1;
  while (p < x) p *= 2;
  return p;
}

std::string head_tag(ActDtype t, int Dk, int Dv) {
  return std::string(dtype_name(t)) + "_" + std::to_string(Dk) + "_" + std::to_string(Dv);
}

AttnStrides strides(const std::array<int64_t, 3>& s) { return AttnStrides{s[0], s[1], s[2]}; }

}  // namespace

bool attention_head_dims_supported(int Dk, int Dv) {
  for (auto& p : kHeadDims)
    if (p[0] == Dk && p[1] == Dv) return true;
  return false;
}

AttentionPlan plan_attention(int B, int Hq, int Hkv, int Lq, int Lk, int Dk, int Dv, ActDtype t, float scale,
                             bool causal, const std::array<int64_t, 3>& q_strides,
                             const std::array<int64_t, 3>& k_strides, const std::array<int64_t, 3>& v_strides) {
  const char* op = "plan_attention";
  if (B < 1 || Hq < 1 || Hkv < 1 || Lq < 1 || Lk < 1) plan_fail(op, "B, Hq, Hkv, Lq and Lk must be positive");
  if (Hq % Hkv != 0) plan_fail(op, "Hq must be a multiple of Hkv");
  if (!attention_head_dims_supported(Dk, Dv))
    plan_fail(op, "no Metal kernel for head dims (Dk, Dv) = (" + std::to_string(Dk) + ", " + std::to_string(Dv) +
                      "); supported: (64,64) (80,80) (96,96) (128,128) (192,128) (256,256) (576,512)");
  for (int i = 0; i < 3; i++)
    if (q_strides[i] < 0 || k_strides[i] < 0 || v_strides[i] < 0) plan_fail(op, "strides must be non-negative");
  if (!(scale > 0.0f) || !std::isfinite(scale)) plan_fail(op, "scale must be positive and finite");
  const int G = Hq / Hkv;
  const float scale_log2 = float(double(scale) * 1.4426950408889634);
  AttentionPlan P;

  if (Lq <= kDecodeMaxRows) {
    // R rows per SIMD-group (fewer for wide heads: R x (Dk + Dv) / 32 floats per lane live in registers),
    // up to kDecodeMaxSimdgroups SIMD-groups, so one threadgroup usually takes the whole GQA group.
    const int rows = G * Lq;
    const int R = std::min(decode_row_cap(Dv), next_pow2(int(ceil_div(rows, kDecodeMaxSimdgroups))));
    const int S = std::min(kDecodeMaxSimdgroups, int(ceil_div(rows, R)));
    const uint32_t rowgroups = ceil_div(rows, S * R);
    const int64_t tgs = int64_t(rowgroups) * B * Hkv;
    int splits = 1;
    if (Lk >= kSplitMinKeys && tgs < kSplitBusyThreadgroups)
      splits = std::clamp(int(ceil_div(Lk, kSplitTargetKeys)), 2, kMaxSplits);
    // Keys per split; the last split may be short.
    const int kps = int(ceil_div(Lk, splits));
    splits = int(ceil_div(Lk, kps));
    AttnDecodeArgs a{strides(q_strides), strides(k_strides), strides(v_strides), B, Hq, Hkv, Lq, Lk, G,
                     causal ? 1 : 0, kps, splits, scale_log2};
    Launch L;
    const std::string tag = head_tag(t, Dk, Dv) + "_r" + std::to_string(R);
    L.kernel = (splits > 1 ? "attention_decode_split_" : "attention_decode_") + tag;
    L.grid = {rowgroups, uint32_t(B * Hkv), uint32_t(splits)};
    L.threadgroup = {uint32_t(S * 32), 1, 1};
    const int tile_keys = kDecodeTileBytes / ((Dk + Dv) * dtype_size(t));
    L.threadgroup_memory = uint32_t(tile_keys * (Dk + Dv) * dtype_size(t));
    L.args_index = 4;
    L.args = pack_args(a);
    P.launches.push_back(L);
    P.splits = splits;
    if (splits > 1) {
      P.variant = "decode_split";
      const int64_t rows = int64_t(B) * Hq * Lq;
      P.partial_out_elems = rows * splits * Dv;
      P.partial_ml_elems = rows * splits * 2;
      Launch M;
      M.kernel = std::string("attention_decode_merge_") + dtype_name(t);
      M.grid = {uint32_t(rows), 1, 1};
      M.threadgroup = {uint32_t(kMergeThreads), 1, 1};
      M.args_index = 3;
      M.args = pack_args(AttnMergeArgs{int(rows), splits, Dv});
      P.launches.push_back(M);
    } else {
      P.variant = "decode";
    }
    return P;
  }

  const int dvt = std::min(Dv, 256);
  const int dv_tiles = Dv / dvt;
  AttnPrefillArgs a{strides(q_strides), strides(k_strides), strides(v_strides), B, Hq, Hkv, Lq, Lk, G, causal ? 1 : 0, Dv, dv_tiles,
                    scale_log2};
  Launch L;
  L.kernel = "attention_prefill_" + head_tag(t, Dk, Dv);
  L.grid = {ceil_div(Lq, 8 * kPrefillSimdgroups) * uint32_t(dv_tiles), uint32_t(Hq), uint32_t(B)};
  L.threadgroup = {uint32_t(kPrefillSimdgroups * 32), 1, 1};
  int tile_bytes = 0;  // the kernel's choice of keys per tile (prefill_tile_keys)
  for (int bk : {32, 16, 8}) {
    tile_bytes = prefill_tile_bytes(bk, Dk, dvt, dtype_size(t));
    if (tile_bytes <= kMaxThreadgroupBytes) break;
  }
  L.threadgroup_memory = uint32_t(tile_bytes);
  L.args_index = 4;
  L.args = pack_args(a);
  P.variant = "prefill";
  P.launches.push_back(L);
  return P;
}

}  // namespace tandem::metal
