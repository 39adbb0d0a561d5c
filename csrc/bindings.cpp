// The only file that knows Python: nanobind bindings of the ops in the mlx
// domain, so mx.array passes straight through.
#include <nanobind/nanobind.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/variant.h>
#include <nanobind/ndarray.h>

#include "cpu/isa.h"
#include "cpu/stream_read.h"
#include "cpu/thread_pool.h"
#include "fp8_codec.h"
#include "fp8_matmul.h"
#include "fp8_quantize.h"

namespace nb = nanobind;
using namespace nb::literals;
namespace mx = mlx::core;

NB_MODULE(_ext, m) {
  m.doc() = "mlx-tandem native kernels (FP8 E4M3 codec, dequant-matmul, fused attention)";

  m.def("to_fp8", &tandem::to_fp8, "x"_a, nb::kw_only(), "stream"_a = nb::none(),
        "Encode a float array to FP8 E4M3 codes (uint8): round to nearest even, saturate to +-448, NaN -> 0x7F.");
  m.def("from_fp8", &tandem::from_fp8, "codes"_a, nb::kw_only(), "dtype"_a = mx::float32,
        "stream"_a = nb::none(), "Decode FP8 E4M3 codes (uint8) exactly to a float dtype.");
  m.def(
      "quantize_fp8",
      [](const mx::array& w, std::pair<int, int> block_size, mx::StreamOrDevice s) {
        return tandem::quantize_fp8(w, block_size, s);
      },
      "w"_a, "block_size"_a = std::pair<int, int>{128, 128}, nb::kw_only(), "stream"_a = nb::none(),
      "Quantize a weight (N, K) to block-scaled FP8: returns (codes uint8 (N, K), scales float32 "
      "(ceil(N/bn), ceil(K/bk))).");
  m.def("dequantize_fp8", &tandem::dequantize_fp8, "codes"_a, "scales"_a,
        "block_size"_a = std::pair<int, int>{128, 128}, nb::kw_only(), "dtype"_a = mx::bfloat16,
        "stream"_a = nb::none(), "Expand block-scaled FP8 weights to a float dtype.");
  m.def("fp8_matmul", &tandem::fp8_matmul, "x"_a, "codes"_a, "scales"_a,
        "block_size"_a = std::pair<int, int>{128, 128}, nb::kw_only(), "stream"_a = nb::none(),
        "x (..., K) @ dequant(codes, scales).T -> (..., N) in x's dtype; weights decoded in the kernel.");

  m.def("cpu_isa", [] { return std::string(tandem::cpu::isa_name(tandem::cpu::active_isa())); },
        "The CPU kernel path in use (TANDEM_ISA overrides the detected one).");
  m.def("cpu_detected_isa", [] { return std::string(tandem::cpu::isa_name(tandem::cpu::detected_isa())); });
  m.def(
      "stream_read",
      [](nb::ndarray<const uint8_t, nb::c_contig, nb::device::cpu> buf) {
        nb::gil_scoped_release release;
        return tandem::cpu::stream_read(buf.data(), static_cast<int64_t>(buf.size()));
      },
      "buf"_a, "Benchmark anchor: read a contiguous uint8 numpy buffer once with the kernel pool.");
  m.def("num_threads", &tandem::cpu::num_threads, "Threads in the kernel pool.");
}
