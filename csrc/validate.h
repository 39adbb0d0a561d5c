// Argument checks shared by the ops: every failure is std::invalid_argument
// (Python ValueError) whose message starts with the op's name.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "mlx/array.h"

namespace tandem {

namespace mx = mlx::core;

[[noreturn]] void fail(const char* op, const std::string& msg);
std::string shape_str(const mx::Shape& s);
std::string dtype_str(mx::Dtype t);

bool is_float(mx::Dtype t);  // float16, bfloat16, float32
void check_float(const char* op, const char* what, const mx::array& a);
void check_dtype(const char* op, const char* what, const mx::array& a, mx::Dtype want);
void check_ndim(const char* op, const char* what, const mx::array& a, int ndim);
// Block size (bn, bk) of a weight (N, K) against its scales (ceil(N/bn), ceil(K/bk)); with
// experts > 0 the scales are (experts, ceil(N/bn), ceil(K/bk)), one grid per stacked weight.
void check_block_scales(const char* op, const std::pair<int, int>& block, int64_t N, int64_t K,
                        const mx::array& scales, int64_t experts = 0);

// Float views of activations inside eval: float32 arrays are used in place,
// float16/bfloat16 are widened into `tmp`. Inputs must be row-contiguous.
const float* as_float32(const mx::array& a, std::vector<float>& tmp);
// Writes float32 values into out (any float dtype, row-contiguous), rounding to nearest even.
void store_float32(const float* src, mx::array& out);

} // namespace tandem
