#include "gather_fp8_matmul.h"

#include <limits>
#include <stdexcept>

#include "cpu/kernels.h"
#include "mlx/ops.h"
#include "mlx/transforms.h"
#include "validate.h"
#ifdef TANDEM_METAL
#include "metal/eval.h"
#endif

namespace tandem {

void GatherFp8Matmul::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  auto [bn, bk] = block_;
  std::vector<mx::array> outs{out};
  dispatch_cpu(stream(), inputs, outs, [bn = bn, bk = bk, isa = isa_](auto& in, auto& out) {
    const auto &x = in[0], &codes = in[1], &scales = in[2], &indices = in[3];
    auto& y = out[0];
    std::vector<float> xtmp, ytmp;
    cpu::GatherFp8MatmulArgs g;
    g.x = as_float32(x, xtmp);
    g.codes = codes.template data<uint8_t>();
    g.scales = scales.template data<float>();
    g.indices = indices.template data<int32_t>();
    g.T = x.shape(0);
    g.K = x.shape(1);
    g.k = indices.shape(1);
    g.E = codes.shape(0);
    g.N = codes.shape(1);
    g.bn = bn;
    g.bk = bk;
    g.y = y.dtype() == mx::float32 ? y.template data<float>() : (ytmp.resize(y.size()), ytmp.data());
    try {
      cpu::gather_fp8_matmul(isa, g);  // checks every index before reading any weight byte
    } catch (const std::invalid_argument&) {
      // MLX 0.32.4 rethrows this at mx.eval as a RuntimeError yet leaves `out` marked evaluated,
      // so later reads would see uninitialised memory: make them NaN.
      std::vector<float> nan(y.size(), std::numeric_limits<float>::quiet_NaN());
      store_float32(nan.data(), y);
      throw;
    }
    if (g.y == ytmp.data()) store_float32(g.y, y);
  });
}

void GatherFp8Matmul::eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) {
#ifdef TANDEM_METAL
  metal::eval_gather_fp8_matmul_gpu(stream(), inputs, out, block_.first, block_.second);
#else
  (void)inputs, (void)out;
  no_gpu(name());
#endif
}

mx::array gather_fp8_matmul(const mx::array& x, const mx::array& codes, const mx::array& scales,
                            const mx::array& indices, BlockSize block, mx::StreamOrDevice s) {
  const char* op = "gather_fp8_matmul";
  check_float(op, "x", x);
  if (x.ndim() < 1) fail(op, "x must have at least one dimension");
  check_dtype(op, "codes", codes, mx::uint8);
  check_ndim(op, "codes", codes, 3);
  check_dtype(op, "indices", indices, mx::int32);
  const int E = codes.shape(0), N = codes.shape(1), K = codes.shape(2);
  if (E == 0 || N == 0 || K == 0) fail(op, "codes must not be empty, got shape " + shape_str(codes.shape()));
  if (x.shape(-1) != K)
    fail(op, "x's last dimension (" + std::to_string(x.shape(-1)) + ") must equal the experts' K (" +
                 std::to_string(K) + "); x shape " + shape_str(x.shape()) + ", codes shape " +
                 shape_str(codes.shape()));
  if (indices.ndim() != x.ndim())
    fail(op, "indices must have x's leading dimensions plus one (k): x " + shape_str(x.shape()) +
                 ", indices " + shape_str(indices.shape()));
  for (int d = 0; d + 1 < x.ndim(); ++d)
    if (indices.shape(d) != x.shape(d))
      fail(op, "indices' leading dimensions must equal x's: x " + shape_str(x.shape()) + ", indices " +
                   shape_str(indices.shape()));
  const int k = indices.shape(-1);
  if (k == 0) fail(op, "indices' last dimension (experts per row) must be at least 1");
  check_block_scales(op, block, N, K, scales, E);
  // Indices that are already evaluated (given by the caller, not computed in this graph) are
  // checked now, so a bad one is a ValueError at the call. The kernel checks them all again
  // before reading any weight (MLX reports that one as a RuntimeError at evaluation).
  if (indices.is_available()) {
    auto ic = mx::contiguous(indices, false, s);
    mx::eval(ic);
    const int32_t* p = ic.data<int32_t>();
    for (size_t i = 0; i < ic.size(); ++i)
      if (p[i] < 0 || p[i] >= E)
        fail(op, "index " + std::to_string(p[i]) + " at position " + std::to_string(i) + " is outside [0, " +
                     std::to_string(E) + ")");
  }
  auto isa = cpu::active_isa();

  mx::Shape out_shape = indices.shape();
  out_shape.push_back(N);
  const int T = x.size() / K;
  if (T == 0) return mx::zeros(out_shape, x.dtype(), s);
  auto x2 = mx::reshape(mx::contiguous(x, false, s), {T, K}, s);
  auto i2 = mx::reshape(mx::contiguous(indices, false, s), {T, k}, s);
  auto y = mx::array({T, k, N}, x.dtype(), std::make_shared<GatherFp8Matmul>(mx::to_stream(s), block, isa),
                     {x2, mx::contiguous(codes, false, s), mx::contiguous(scales, false, s), i2});
  return mx::reshape(y, out_shape, s);
}

} // namespace tandem
