// Fused attention CPU kernels: arguments and entry points.
//
// q (B, Hq, Lq, Dk), k (B, Hkv, Lk, Dk), v (B, Hkv, Lk, Dv) are read in place
// through element strides for their first three dimensions (the last one is
// contiguous), so K/V may be views into a larger preallocated cache. out
// (B, Hq, Lq, Dv) is row-contiguous. All arrays share one element type;
// scores, softmax and accumulation are float32.
#pragma once

#include <cstdint>

#include "cpu/isa.h"

namespace tandem::cpu {

enum class ElemType { F32, F16, BF16 };

struct AttentionArgs {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  ElemType type;
  int64_t B, Hq, Hkv, Lq, Lk, Dk, Dv;
  int64_t qs[3], ks[3], vs[3];  // element strides of dims (batch, head, position)
  float scale;
  bool causal;  // bottom-right aligned: query i sits at key position Lk - Lq + i

  int64_t group() const { return Hq / Hkv; }
  int64_t q_offset() const { return Lk - Lq; }
};

void attention_scalar(const AttentionArgs& a);
void attention_avx2(const AttentionArgs& a);
void attention_avx512(const AttentionArgs& a);
void attention(Isa isa, const AttentionArgs& a);

} // namespace tandem::cpu
