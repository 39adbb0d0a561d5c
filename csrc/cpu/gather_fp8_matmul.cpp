// The expert-gathered FP8 matmul on top of the FP8 matmul kernels: pairs (t, j)
// are grouped by expert (a counting sort), so every selected expert's weights
// stream once for all the rows that chose it and unselected experts are never
// touched. Few rows per expert (decode) run as one batch of GEMVs in a single
// parallel region; many (prefill) as one blocked GEMM per expert.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/kernels.h"

namespace tandem::cpu {

void gather_fp8_matmul(Isa isa, const GatherFp8MatmulArgs& g) {
  const int64_t pairs = g.T * g.k;
  std::vector<int64_t> start(static_cast<size_t>(g.E) + 1, 0);
  for (int64_t p = 0; p < pairs; ++p) {
    const int32_t e = g.indices[p];
    if (e < 0 || e >= g.E)
      throw std::invalid_argument("gather_fp8_matmul: index " + std::to_string(e) + " at position " +
                                  std::to_string(p) + " is outside [0, " + std::to_string(g.E) + ")");
    ++start[e + 1];
  }
  for (int64_t e = 0; e < g.E; ++e) start[e + 1] += start[e];
  std::vector<int64_t> order(static_cast<size_t>(pairs));  // pairs sorted by expert, stable
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t p = 0; p < pairs; ++p) order[fill[g.indices[p]]++] = p;
  }

  const int64_t expert_codes = g.N * g.K;
  const int64_t expert_scales = ((g.N + g.bn - 1) / g.bn) * ((g.K + g.bk - 1) / g.bk);
  // An expert chosen by one pair reads its x row and writes its y row in place;
  // more rows are gathered into xs and scattered back from ys.
  std::vector<float> xs, ys;
  std::vector<int64_t> xs_at(static_cast<size_t>(g.E), -1);
  int64_t rows_copied = 0;
  for (int64_t e = 0; e < g.E; ++e)
    if (start[e + 1] - start[e] > 1) {
      xs_at[e] = rows_copied;
      rows_copied += start[e + 1] - start[e];
    }
  xs.resize(static_cast<size_t>(rows_copied * g.K));
  ys.resize(static_cast<size_t>(rows_copied * g.N));

  std::vector<Fp8MatmulArgs> gemv_jobs, gemm_jobs;
  for (int64_t e = 0; e < g.E; ++e) {
    const int64_t m = start[e + 1] - start[e];
    if (m == 0) continue;
    Fp8MatmulArgs a;
    a.codes = g.codes + e * expert_codes;
    a.scales = g.scales + e * expert_scales;
    a.M = m;
    a.N = g.N;
    a.K = g.K;
    a.bn = g.bn;
    a.bk = g.bk;
    if (m == 1) {
      const int64_t p = order[start[e]];
      a.x = g.x + (p / g.k) * g.K;
      a.y = g.y + p * g.N;
    } else {
      float* xe = xs.data() + xs_at[e] * g.K;
      for (int64_t r = 0; r < m; ++r) {
        const float* src = g.x + (order[start[e] + r] / g.k) * g.K;
        std::copy(src, src + g.K, xe + r * g.K);
      }
      a.x = xe;
      a.y = ys.data() + xs_at[e] * g.N;
    }
    (m <= kGemvMaxRows ? gemv_jobs : gemm_jobs).push_back(a);
  }
  if (!gemv_jobs.empty()) fp8_gemv_batch(isa, gemv_jobs.data(), static_cast<int64_t>(gemv_jobs.size()));
  for (const auto& a : gemm_jobs) fp8_matmul(isa, a);

  for (int64_t e = 0; e < g.E; ++e) {
    const int64_t m = start[e + 1] - start[e];
    if (m <= 1) continue;
    const float* ye = ys.data() + xs_at[e] * g.N;
    for (int64_t r = 0; r < m; ++r)
      std::copy(ye + r * g.N, ye + (r + 1) * g.N, g.y + order[start[e] + r] * g.N);
  }
}

} // namespace tandem::cpu
