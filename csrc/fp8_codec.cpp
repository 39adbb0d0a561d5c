#include "fp8_codec.h"

#include "cpu/kernels.h"
#include "mlx/ops.h"
#include "validate.h"

namespace tandem {

void ToFp8::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  std::vector<mx::array> outs{out};
  dispatch_cpu(stream(), inputs, outs, [](auto& in, auto& out) {
    std::vector<float> tmp;
    const float* x = as_float32(in[0], tmp);
    cpu::encode_fp8(x, out[0].template data<uint8_t>(), static_cast<int64_t>(in[0].size()));
  });
}

void FromFp8::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  std::vector<mx::array> outs{out};
  dispatch_cpu(stream(), inputs, outs, [](auto& in, auto& out) {
    const int64_t n = static_cast<int64_t>(in[0].size());
    if (out[0].dtype() == mx::float32) {
      cpu::decode_fp8(in[0].template data<uint8_t>(), out[0].template data<float>(), n);
    } else {
      std::vector<float> tmp(n);
      cpu::decode_fp8(in[0].template data<uint8_t>(), tmp.data(), n);
      store_float32(tmp.data(), out[0]);
    }
  });
}

mx::array to_fp8(const mx::array& x, mx::StreamOrDevice s) {
  check_float("to_fp8", "x", x);
  auto xc = mx::contiguous(x, false, s);
  return mx::array(x.shape(), mx::uint8, std::make_shared<ToFp8>(mx::to_stream(s)), {xc});
}

mx::array from_fp8(const mx::array& codes, mx::Dtype dtype, mx::StreamOrDevice s) {
  check_dtype("from_fp8", "codes", codes, mx::uint8);
  if (!is_float(dtype)) fail("from_fp8", "dtype must be float16, bfloat16 or float32, got " + dtype_str(dtype));
  auto c = mx::contiguous(codes, false, s);
  return mx::array(codes.shape(), dtype, std::make_shared<FromFp8>(mx::to_stream(s)), {c});
}

} // namespace tandem
