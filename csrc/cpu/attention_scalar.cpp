// Portable fused attention: the readable specification of what the SIMD
// kernels compute. One query row at a time, keys visited once in order with
// the online (streaming) softmax: running max m, running sum l, running
// unnormalised output o; a new maximum rescales l and o by exp(m_old - m_new).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/attention.h"
#include "cpu/half.h"
#include "cpu/thread_pool.h"

namespace tandem::cpu {
namespace {

float load_elem(const void* base, int64_t i, ElemType t) {
  switch (t) {
    case ElemType::F32: return static_cast<const float*>(base)[i];
    case ElemType::F16: return half::f16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case ElemType::BF16: return half::bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
  }
  return 0.0f;
}

void store_elem(void* base, int64_t i, float x, ElemType t) {
  switch (t) {
    case ElemType::F32: static_cast<float*>(base)[i] = x; break;
    case ElemType::F16: static_cast<uint16_t*>(base)[i] = half::f32_to_f16(x); break;
    case ElemType::BF16: static_cast<uint16_t*>(base)[i] = half::f32_to_bf16(x); break;
  }
}

// Output row (b, h, i): softmax(scale * q . k_j over visible keys j) @ v.
void attend_row(const AttentionArgs& a, int64_t b, int64_t h, int64_t i, std::vector<float>& q,
                std::vector<float>& o) {
  const int64_t kvh = h / a.group();
  const int64_t qrow = b * a.qs[0] + h * a.qs[1] + i * a.qs[2];
  const int64_t krow0 = b * a.ks[0] + kvh * a.ks[1], vrow0 = b * a.vs[0] + kvh * a.vs[1];
  for (int64_t d = 0; d < a.Dk; ++d) q[d] = load_elem(a.q, qrow + d, a.type);
  // Causal: keys after the query's own position are invisible.
  const int64_t n_keys = a.causal ? a.q_offset() + i + 1 : a.Lk;

  float m = -std::numeric_limits<float>::infinity(), l = 0.0f;
  std::fill(o.begin(), o.end(), 0.0f);
  for (int64_t j = 0; j < n_keys; ++j) {
    const int64_t krow = krow0 + j * a.ks[2], vrow = vrow0 + j * a.vs[2];
    float s = 0.0f;
    for (int64_t d = 0; d < a.Dk; ++d) s += q[d] * load_elem(a.k, krow + d, a.type);
    s *= a.scale;
    const float m_new = std::max(m, s);
    const float alpha = std::exp(m - m_new);  // 0 on the first key (m = -inf)
    const float p = std::exp(s - m_new);
    l = l * alpha + p;
    for (int64_t d = 0; d < a.Dv; ++d) o[d] = o[d] * alpha + p * load_elem(a.v, vrow + d, a.type);
    m = m_new;
  }
  const int64_t orow = ((b * a.Hq + h) * a.Lq + i) * a.Dv;
  for (int64_t d = 0; d < a.Dv; ++d) store_elem(a.out, orow + d, o[d] / l, a.type);
}

} // namespace

void attention_scalar(const AttentionArgs& a) {
  const int64_t rows = a.B * a.Hq * a.Lq;
  const int parts = static_cast<int>(std::min<int64_t>(rows, 4 * num_threads()));
  parallel_for(parts, [&](int t) {
    std::vector<float> q(a.Dk), o(a.Dv);
    for (int64_t r = rows * t / parts; r < rows * (t + 1) / parts; ++r)
      attend_row(a, r / (a.Hq * a.Lq), (r / a.Lq) % a.Hq, r % a.Lq, q, o);
  });
}

void attention(Isa isa, const AttentionArgs& a) {
  switch (isa) {
#if defined(TANDEM_X86)
    case Isa::Avx512: return attention_avx512(a);
    case Isa::Avx2: return attention_avx2(a);
#endif
    default: return attention_scalar(a);
  }
}

} // namespace tandem::cpu
