#include "sample_tokens.h"

#include <cmath>

#include "mlx/ops.h"
#include "validate.h"

namespace tandem {

void SampleTokens::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  std::vector<mx::array> outs{out};
  dispatch_cpu(stream(), inputs, outs, [rows = rows_](auto& in, auto& out) {
    std::vector<float> tmp;
    const float* x = as_float32(in[0], tmp);
    const int64_t V = in[0].shape(1);
    int32_t* tok = out[0].template data<int32_t>();
    for (size_t b = 0; b < rows.size(); ++b) tok[b] = cpu::sample_row(x + b * V, V, rows[b]);
  });
}

mx::array sample_tokens(const mx::array& logits, const std::vector<float>& temperature,
                        const std::vector<int64_t>& top_k, const std::vector<float>& top_p,
                        const std::vector<float>& min_p, const std::vector<uint64_t>& key_seeds,
                        mx::StreamOrDevice s) {
  const char* op = "sample_tokens";
  check_float(op, "logits", logits);
  check_ndim(op, "logits (B, V)", logits, 2);
  const size_t B = static_cast<size_t>(logits.shape(0));
  if (B == 0 || logits.shape(1) == 0) fail(op, "logits must not be empty, got " + shape_str(logits.shape()));
  if (temperature.size() != B || top_k.size() != B || top_p.size() != B || min_p.size() != B ||
      key_seeds.size() != B)
    fail(op, "one temperature, top_k, top_p, min_p and key seed per row (" + std::to_string(B) + " rows)");
  std::vector<cpu::SampleParams> rows(B);
  for (size_t b = 0; b < B; ++b) {
    const std::string row = " (row " + std::to_string(b) + ")";
    if (!(temperature[b] >= 0.0f) || !std::isfinite(temperature[b]))
      fail(op, "temperature must be finite and >= 0, got " + std::to_string(temperature[b]) + row);
    if (top_k[b] < 0) fail(op, "top_k must be >= 0, got " + std::to_string(top_k[b]) + row);
    if (!(top_p[b] > 0.0f && top_p[b] <= 1.0f)) fail(op, "top_p must be in (0, 1], got " + std::to_string(top_p[b]) + row);
    if (!(min_p[b] >= 0.0f && min_p[b] <= 1.0f)) fail(op, "min_p must be in [0, 1], got " + std::to_string(min_p[b]) + row);
    rows[b] = {temperature[b], top_k[b], top_p[b], min_p[b], key_seeds[b]};
  }
  return mx::array({logits.shape(0)}, mx::int32, std::make_shared<SampleTokens>(mx::to_stream(s), std::move(rows)),
                   {mx::contiguous(logits, false, s)});
}

} // namespace tandem
