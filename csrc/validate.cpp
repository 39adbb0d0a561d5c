#include "validate.h"

#include <sstream>
#include <stdexcept>

namespace tandem {

void fail(const char* op, const std::string& msg) {
  throw std::invalid_argument(std::string(op) + ": " + msg);
}

std::string shape_str(const mx::Shape& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << (s.size() == 1 ? ",)" : ")");
  return os.str();
}

std::string dtype_str(mx::Dtype t) {
  switch (t) {
    case mx::bool_: return "bool";
    case mx::uint8: return "uint8";
    case mx::uint16: return "uint16";
    case mx::uint32: return "uint32";
    case mx::uint64: return "uint64";
    case mx::int8: return "int8";
    case mx::int16: return "int16";
    case mx::int32: return "int32";
    case mx::int64: return "int64";
    case mx::float16: return "float16";
    case mx::bfloat16: return "bfloat16";
    case mx::float32: return "float32";
    case mx::float64: return "float64";
    case mx::complex64: return "complex64";
  }
  return "unknown dtype";
}

bool is_float(mx::Dtype t) {
  return t == mx::float16 || t == mx::bfloat16 || t == mx::float32;
}

void check_float(const char* op, const char* what, const mx::array& a) {
  if (!is_float(a.dtype()))
    fail(op, std::string(what) + " must be float16, bfloat16 or float32, got " + dtype_str(a.dtype()));
}

void check_dtype(const char* op, const char* what, const mx::array& a, mx::Dtype want) {
  if (a.dtype() != want)
    fail(op, std::string(what) + " must be " + dtype_str(want) + ", got " + dtype_str(a.dtype()));
}

void check_ndim(const char* op, const char* what, const mx::array& a, int ndim) {
  if (a.ndim() != static_cast<size_t>(ndim))
    fail(op, std::string(what) + " must have " + std::to_string(ndim) + " dimensions, got shape " +
                 shape_str(a.shape()));
}

void check_block_scales(const char* op, const std::pair<int, int>& block, int64_t N, int64_t K,
                        const mx::array& scales, int64_t experts) {
  auto [bn, bk] = block;
  if (bn <= 0 || bk <= 0)
    fail(op, "block_size must be two positive integers, got (" + std::to_string(bn) + ", " +
                 std::to_string(bk) + ")");
  check_dtype(op, "scales", scales, mx::float32);
  const int lead = experts > 0 ? 1 : 0;
  check_ndim(op, "scales", scales, 2 + lead);
  const int64_t rb = (N + bn - 1) / bn, cb = (K + bk - 1) / bk;
  if ((lead && scales.shape(0) != experts) || scales.shape(lead) != rb || scales.shape(lead + 1) != cb)
    fail(op, "scales shape " + shape_str(scales.shape()) + " does not match weight (" +
                 (lead ? std::to_string(experts) + ", " : "") + std::to_string(N) + ", " + std::to_string(K) +
                 ") with block_size (" + std::to_string(bn) + ", " + std::to_string(bk) + "): expected (" +
                 (lead ? std::to_string(experts) + ", " : "") + std::to_string(rb) + ", " +
                 std::to_string(cb) + ")");
}

const float* as_float32(const mx::array& a, std::vector<float>& tmp) {
  if (a.dtype() == mx::float32) return a.data<float>();
  tmp.resize(a.size());
  if (a.dtype() == mx::float16) {
    auto* p = a.data<mx::float16_t>();
    for (size_t i = 0; i < a.size(); ++i) tmp[i] = static_cast<float>(p[i]);
  } else {
    auto* p = a.data<mx::bfloat16_t>();
    for (size_t i = 0; i < a.size(); ++i) tmp[i] = static_cast<float>(p[i]);
  }
  return tmp.data();
}

void store_float32(const float* src, mx::array& out) {
  const size_t n = out.size();
  if (out.dtype() == mx::float32) {
    float* d = out.data<float>();
    if (d != src) std::copy(src, src + n, d);
  } else if (out.dtype() == mx::float16) {
    auto* d = out.data<mx::float16_t>();
    for (size_t i = 0; i < n; ++i) d[i] = static_cast<mx::float16_t>(src[i]);
  } else {
    auto* d = out.data<mx::bfloat16_t>();
    for (size_t i = 0; i < n; ++i) d[i] = static_cast<mx::bfloat16_t>(src[i]);
  }
}

} // namespace tandem
