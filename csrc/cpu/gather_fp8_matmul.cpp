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
  auto job = [&](int64_t e, int64_t m) {
    Fp8MatmulArgs a;
    a.codes = g.codes + e * expert_codes;
    a.scales = g.scales + e * expert_scales;
    a.M = m;
    a.N = g.N;
    a.K = g.K;
    a.bn = g.bn;
    a.bk = g.bk;
    return a;
  };
  auto gather_rows = [&](int64_t e, float* xe) {
    for (int64_t r = 0; r < start[e + 1] - start[e]; ++r) {
      const float* src = g.x + (order[start[e] + r] / g.k) * g.K;
      std::copy(src, src + g.K, xe + r * g.K);
    }
  };
  auto scatter_rows = [&](int64_t e, const float* ye) {
    for (int64_t r = 0; r < start[e + 1] - start[e]; ++r)
      std::copy(ye + r * g.N, ye + (r + 1) * g.N, g.y + order[start[e] + r] * g.N);
  };

  // GEMV experts (<= kGemvMaxRows rows) run together, so their gathered rows coexist; one
  // chosen by a single pair reads its x row and writes its y row in place.
  std::vector<int64_t> gemv_experts, gemm_experts;
  int64_t gemv_rows = 0, gemm_max_rows = 0;
  for (int64_t e = 0; e < g.E; ++e) {
    const int64_t m = start[e + 1] - start[e];
    if (m == 0) continue;
    if (m <= kGemvMaxRows) {
      gemv_experts.push_back(e);
      if (m > 1) gemv_rows += m;
    } else {
      gemm_experts.push_back(e);
      gemm_max_rows = std::max(gemm_max_rows, m);
    }
  }
  if (!gemv_experts.empty()) {
    std::vector<float> xs(static_cast<size_t>(gemv_rows * g.K)), ys(static_cast<size_t>(gemv_rows * g.N));
    std::vector<Fp8MatmulArgs> jobs;
    int64_t at = 0;
    for (int64_t e : gemv_experts) {
      const int64_t m = start[e + 1] - start[e];
      Fp8MatmulArgs a = job(e, m);
      if (m == 1) {
        const int64_t p = order[start[e]];
        a.x = g.x + (p / g.k) * g.K;
        a.y = g.y + p * g.N;
      } else {
        a.x = xs.data() + at * g.K;
        a.y = ys.data() + at * g.N;
        gather_rows(e, xs.data() + at * g.K);
        at += m;
      }
      jobs.push_back(a);
    }
    fp8_gemv_batch(isa, jobs.data(), static_cast<int64_t>(jobs.size()));
    for (size_t j = 0; j < jobs.size(); ++j)
      if (jobs[j].M > 1) scatter_rows(gemv_experts[j], jobs[j].y);
  }
  // GEMM experts one after another (each GEMM is parallel inside) through one reused buffer:
  // peak memory is the largest expert's rows, not all T * k of them (prefill).
  if (!gemm_experts.empty()) {
    std::vector<float> xs(static_cast<size_t>(gemm_max_rows * g.K)), ys(static_cast<size_t>(gemm_max_rows * g.N));
    for (int64_t e : gemm_experts) {
      Fp8MatmulArgs a = job(e, start[e + 1] - start[e]);
      a.x = xs.data();
      a.y = ys.data();
      gather_rows(e, xs.data());
      fp8_matmul(isa, a);
      scatter_rows(e, ys.data());
    }
  }
}

} // namespace tandem::cpu
