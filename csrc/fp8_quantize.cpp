#include "fp8_quantize.h"

#include "cpu/kernels.h"
#include "mlx/ops.h"
#include "validate.h"

namespace tandem {

void QuantizeFp8::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  auto [bn, bk] = block_;
  dispatch_cpu(stream(), inputs, outputs, [bn = bn, bk = bk](auto& in, auto& out) {
    std::vector<float> tmp;
    const float* w = as_float32(in[0], tmp);
    cpu::quantize_fp8_blocks(w, in[0].shape(0), in[0].shape(1), bn, bk,
                             out[0].template data<uint8_t>(), out[1].template data<float>());
  });
}

void DequantizeFp8::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  auto [bn, bk] = block_;
  std::vector<mx::array> outs{out};
  dispatch_cpu(stream(), inputs, outs, [bn = bn, bk = bk](auto& in, auto& out) {
    const auto& c = in[0];
    std::vector<float> tmp;
    float* dst = out[0].dtype() == mx::float32 ? out[0].template data<float>()
                                               : (tmp.resize(c.size()), tmp.data());
    cpu::dequantize_fp8_blocks(c.template data<uint8_t>(), in[1].template data<float>(), c.shape(0),
                               c.shape(1), bn, bk, dst);
    if (dst == tmp.data()) store_float32(dst, out[0]);
  });
}

std::pair<mx::array, mx::array> quantize_fp8(const mx::array& w, BlockSize block, mx::StreamOrDevice s) {
  const char* op = "quantize_fp8";
  check_float(op, "w", w);
  check_ndim(op, "w", w, 2);
  auto [bn, bk] = block;
  if (bn <= 0 || bk <= 0)
    fail(op, "block_size must be two positive integers, got (" + std::to_string(bn) + ", " +
                 std::to_string(bk) + ")");
  const int N = w.shape(0), K = w.shape(1);
  if (N == 0 || K == 0) fail(op, "w must not be empty, got shape " + shape_str(w.shape()));
  auto wc = mx::contiguous(w, false, s);
  mx::Shape sshape{(N + bn - 1) / bn, (K + bk - 1) / bk};
  auto outs = mx::array::make_arrays({w.shape(), sshape}, {mx::uint8, mx::float32},
                                     std::make_shared<QuantizeFp8>(mx::to_stream(s), block), {wc});
  return {outs[0], outs[1]};
}

mx::array dequantize_fp8(const mx::array& codes, const mx::array& scales, BlockSize block,
                         mx::Dtype dtype, mx::StreamOrDevice s) {
  const char* op = "dequantize_fp8";
  check_dtype(op, "codes", codes, mx::uint8);
  check_ndim(op, "codes", codes, 2);
  if (!is_float(dtype)) fail(op, "dtype must be float16, bfloat16 or float32, got " + dtype_str(dtype));
  if (codes.shape(0) == 0 || codes.shape(1) == 0)
    fail(op, "codes must not be empty, got shape " + shape_str(codes.shape()));
  check_block_scales(op, block, codes.shape(0), codes.shape(1), scales);
  auto c = mx::contiguous(codes, false, s);
  auto sc = mx::contiguous(scales, false, s);
  return mx::array(codes.shape(), dtype, std::make_shared<DequantizeFp8>(mx::to_stream(s), block),
                   {c, sc});
}

} // namespace tandem
