// Cross-checks the SIMD fused attention of one ISA (argv[1]: avx2 or avx512)
// against the portable scalar kernel over drawn problems: every head-dim pair
// of the op and odd ones, GQA groups up to 16 (one AVX-512 vector of decode
// rows), decode / chunked / full prefill, causal and not, batch 2, K/V as
// views of a longer cache whose unused rows hold huge keys and NaN values,
// q in (B, H, L, D) or (B, L, H, D) order. Built by tests/test_avx512_emulated.py
// with the AVX-512 kernels compiled over SIMDe on a host without AVX-512.
// Prints "ok <cases> isa=<name>" or the first mismatch; exit code 1 on failure.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/attention.h"
#include "cpu/half.h"

using namespace tandem::cpu;
namespace half = tandem::half;

namespace {

float to_float(const std::vector<uint16_t>& raw, ElemType t, int64_t i) {
  if (t == ElemType::F16) return half::f16_to_f32(raw[i]);
  if (t == ElemType::BF16) return half::bf16_to_f32(raw[i]);
  float f;
  std::memcpy(&f, &raw[2 * i], 4);
  return f;
}

void put(std::vector<uint16_t>& raw, ElemType t, int64_t i, float x) {
  if (t == ElemType::F16) raw[i] = half::f32_to_f16(x);
  else if (t == ElemType::BF16) raw[i] = half::f32_to_bf16(x);
  else std::memcpy(&raw[2 * i], &x, 4);
}

// Storage for n elements of type t (float32 takes two uint16 slots).
std::vector<uint16_t> buffer(ElemType t, int64_t n) { return std::vector<uint16_t>(t == ElemType::F32 ? 2 * n : n); }

}  // namespace

int main(int argc, char** argv) {
  const std::string want = argc > 1 ? argv[1] : "avx512";
  const Isa isa = want == "avx2" ? Isa::Avx2 : Isa::Avx512;
  const int cases_wanted = argc > 2 ? std::atoi(argv[2]) : 400;
  std::mt19937 rng(20261128);
  auto pick = [&](auto const& v) { return v[rng() % v.size()]; };
  const std::vector<std::pair<int64_t, int64_t>> dims = {
      {64, 64}, {80, 80}, {96, 96}, {128, 128}, {192, 128}, {256, 256}, {576, 512}, {1, 1}, {7, 5}, {40, 72}, {33, 17}};
  const std::vector<int64_t> groups = {1, 2, 3, 4, 5, 8, 16}, lengths = {1, 2, 7, 16, 33, 127, 300, 1000, 2100};
  const ElemType types[] = {ElemType::F32, ElemType::F16, ElemType::BF16};
  std::normal_distribution<float> nd(0.0f, 1.0f);
  int cases = 0;
  for (; cases < cases_wanted; ++cases) {
    const auto [Dk, Dv] = pick(dims);
    const ElemType t = types[rng() % 3];
    const int64_t G = pick(groups), Hkv = 1 + rng() % 2, B = 1 + rng() % 2, Hq = G * Hkv;
    int64_t Lk = pick(lengths);
    const bool causal = rng() % 2;
    const int kind = rng() % 3;  // decode, chunk, full
    int64_t Lq = kind == 0 ? 1 + rng() % 8 : kind == 1 ? pick(lengths) : Lk;
    if (causal) Lq = std::min(Lq, Lk);
    while (B * Hq * Lq * Lk * (Dk + Dv) > 4e7 && Lq > 1) Lq = std::max<int64_t>(1, Lq / 4);
    while (B * Hq * Lq * Lk * (Dk + Dv) > 4e7 && Lk > (causal ? Lq : 1)) Lk = std::max<int64_t>(causal ? Lq : 1, Lk / 4);
    const int64_t cap = Lk + 1 + rng() % 40;  // cache rows; the ones past Lk must never be read
    const bool q_blhd = rng() % 2;

    auto q = buffer(t, B * Hq * Lq * Dk), k = buffer(t, B * Hkv * cap * Dk), v = buffer(t, B * Hkv * cap * Dv);
    const float huge = t == ElemType::F16 ? 6e4f : 1e30f;
    for (int64_t i = 0; i < B * Hq * Lq * Dk; ++i) put(q, t, i, nd(rng));
    for (int64_t i = 0; i < B * Hkv * cap * Dk; ++i) put(k, t, i, (i / Dk) % cap < Lk ? nd(rng) : huge);
    for (int64_t i = 0; i < B * Hkv * cap * Dv; ++i) put(v, t, i, (i / Dv) % cap < Lk ? nd(rng) : NAN);
    auto out_ref = buffer(t, B * Hq * Lq * Dv), out = out_ref;

    AttentionArgs a{};
    a.q = q.data(); a.k = k.data(); a.v = v.data(); a.out = out_ref.data(); a.type = t;
    a.B = B; a.Hq = Hq; a.Hkv = Hkv; a.Lq = Lq; a.Lk = Lk; a.Dk = Dk; a.Dv = Dv;
    if (q_blhd) { a.qs[0] = Lq * Hq * Dk; a.qs[1] = Dk; a.qs[2] = Hq * Dk; }
    else { a.qs[0] = Hq * Lq * Dk; a.qs[1] = Lq * Dk; a.qs[2] = Dk; }
    a.ks[0] = Hkv * cap * Dk; a.ks[1] = cap * Dk; a.ks[2] = Dk;
    a.vs[0] = Hkv * cap * Dv; a.vs[1] = cap * Dv; a.vs[2] = Dv;
    a.scale = 1.0f / std::sqrt(static_cast<float>(Dk));
    a.causal = causal;
    attention_scalar(a);
    a.out = out.data();
    attention(isa, a);

    // float32 accumulation in a different order, then rounding to the output type.
    const float tol = t == ElemType::F32 ? 2e-5f : t == ElemType::F16 ? 2e-3f : 1.6e-2f;
    for (int64_t i = 0; i < B * Hq * Lq * Dv; ++i) {
      const float g = to_float(out, t, i), w = to_float(out_ref, t, i);
      if (!(std::fabs(g - w) <= tol * (1.0f + std::fabs(w)))) {
        std::printf("mismatch isa=%s case=%d type=%d B=%ld Hq=%ld Hkv=%ld Lq=%ld Lk=%ld D=%ld/%ld causal=%d i=%ld got=%g want=%g\n",
                    isa_name(isa), cases, static_cast<int>(t), long(B), long(Hq), long(Hkv), long(Lq), long(Lk),
                    long(Dk), long(Dv), int(causal), long(i), g, w);
        return 1;
      }
    }
  }
  std::printf("ok %d isa=%s\n", cases, isa_name(isa));
  return 0;
}
