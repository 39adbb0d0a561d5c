#include "fp8_matmul.h"

#include "cpu/kernels.h"
#include "mlx/ops.h"
#include "validate.h"
#ifdef TANDEM_METAL
#include "metal/eval.h"
#endif

namespace tandem {

void Fp8Matmul::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  auto [bn, bk] = block_;
  std::vector<mx::array> outs{out};
  dispatch_cpu(stream(), inputs, outs, [bn = bn, bk = bk, isa = isa_](auto& in, auto& out) {
    const auto &x = in[0], &codes = in[1], &scales = in[2];
    auto& y = out[0];
    std::vector<float> xtmp, ytmp;
    cpu::Fp8MatmulArgs a;
    a.x = as_float32(x, xtmp);
    a.codes = codes.template data<uint8_t>();
    a.scales = scales.template data<float>();
    a.M = x.shape(0);
    a.K = x.shape(1);
    a.N = codes.shape(0);
    a.bn = bn;
    a.bk = bk;
    a.y = y.dtype() == mx::float32 ? y.template data<float>() : (ytmp.resize(y.size()), ytmp.data());
    cpu::fp8_matmul(isa, a);
    if (a.y == ytmp.data()) store_float32(a.y, y);
  });
}

void Fp8Matmul::eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) {
#ifdef TANDEM_METAL
  metal::eval_fp8_matmul_gpu(stream(), inputs, out, block_.first, block_.second);
#else
  (void)inputs, (void)out;
  no_gpu(name());
#endif
}

mx::array fp8_matmul(const mx::array& x, const mx::array& codes, const mx::array& scales,
                     BlockSize block, mx::StreamOrDevice s) {
  const char* op = "fp8_matmul";
  check_float(op, "x", x);
  if (x.ndim() < 1) fail(op, "x must have at least one dimension");
  check_dtype(op, "codes", codes, mx::uint8);
  check_ndim(op, "codes", codes, 2);
  const int N = codes.shape(0), K = codes.shape(1);
  if (N == 0 || K == 0) fail(op, "codes must not be empty, got shape " + shape_str(codes.shape()));
  if (x.shape(-1) != K)
    fail(op, "x's last dimension (" + std::to_string(x.shape(-1)) + ") must equal the weight's K (" +
                 std::to_string(K) + "); x shape " + shape_str(x.shape()) + ", codes shape " +
                 shape_str(codes.shape()));
  check_block_scales(op, block, N, K, scales);
  auto isa = cpu::active_isa();

  mx::Shape out_shape = x.shape();
  out_shape.back() = N;
  const int M = x.size() / K;
  if (M == 0) return mx::zeros(out_shape, x.dtype(), s);
  auto x2 = mx::reshape(mx::contiguous(x, false, s), {M, K}, s);
  auto y = mx::array({M, N}, x.dtype(), std::make_shared<Fp8Matmul>(mx::to_stream(s), block, isa),
                     {x2, mx::contiguous(codes, false, s), mx::contiguous(scales, false, s)});
  return mx::reshape(y, out_shape, s);
}

} // namespace tandem
