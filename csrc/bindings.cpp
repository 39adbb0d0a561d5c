// The only file that knows Python: nanobind bindings of the ops in the mlx
// domain, so mx.array passes straight through.
#include <cmath>

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/array.h>
#include <nanobind/ndarray.h>

#include "attention.h"
#include "attention_rows.h"
#include "sample_tokens.h"
#include "mlx/transforms.h"
#include "cpu/hugepages.h"
#include "cpu/isa.h"
#include "cpu/stream_read.h"
#include "cpu/thread_pool.h"
#include "fp8_codec.h"
#include "fp8_matmul.h"
#include "fp8_quantize.h"
#include "gather_fp8_matmul.h"
#include "metal/plan_attention.h"
#include "metal/plan_fp8_matmul.h"
#include "metal/plan_gather_fp8_matmul.h"
#include "pointwise.h"

namespace nb = nanobind;
using namespace nb::literals;
namespace mx = mlx::core;

namespace {
// Metal launch plans as plain Python data, for the emulator tests (tests/test_metal_*.py).
tandem::metal::ActDtype act_dtype(const char* op, mx::Dtype t) {
  if (t == mx::float16) return tandem::metal::ActDtype::float16;
  if (t == mx::bfloat16) return tandem::metal::ActDtype::bfloat16;
  if (t == mx::float32) return tandem::metal::ActDtype::float32;
  throw nb::value_error((std::string(op) + ": dtype must be float16, bfloat16 or float32").c_str());
}
nb::dict launch_dict(const tandem::metal::Launch& L) {
  nb::dict d;
  d["kernel"] = L.kernel;
  d["grid"] = nb::make_tuple(L.grid[0], L.grid[1], L.grid[2]);
  d["threadgroup"] = nb::make_tuple(L.threadgroup[0], L.threadgroup[1], L.threadgroup[2]);
  d["threadgroup_memory"] = L.threadgroup_memory;
  d["mode"] = "threadgroups";
  d["args_index"] = L.args_index;
  d["args"] = nb::bytes(reinterpret_cast<const char*>(L.args.data()), L.args.size());
  d["function_constants"] = nb::dict();
  return d;
}
}  // namespace

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

  m.def("gather_fp8_matmul", &tandem::gather_fp8_matmul, "x"_a, "codes"_a, "scales"_a, "indices"_a,
        "block_size"_a = std::pair<int, int>{128, 128}, nb::kw_only(), "stream"_a = nb::none(),
        "Expert-gathered FP8 matmul: x (..., K), codes (E, N, K) uint8, scales (E, ceil(N/bn), ceil(K/bk)) "
        "float32, indices (..., k) int32 with x's leading dimensions -> (..., k, N) in x's dtype, row t times "
        "expert indices[t, j]. Only the selected experts' bytes are read, each once; an index outside [0, E) "
        "raises ValueError at the call when indices are already evaluated, else RuntimeError naming the op "
        "at evaluation (no weight byte read; the result then holds NaN).");

  m.def("fused_attention", &tandem::fused_attention, "q"_a, "k"_a, "v"_a, nb::kw_only(),
        "scale"_a = nb::none(), "causal"_a = true, "stream"_a = nb::none(),
        "Scaled dot-product attention: q (B, Hq, Lq, Dk), k (B, Hkv, Lk, Dk), v (B, Hkv, Lk, Dv) -> "
        "(B, Hq, Lq, Dv) in q's dtype. scale defaults to 1/sqrt(Dk); Hq a multiple of Hkv (GQA); with "
        "causal the queries are the last Lq of the Lk positions. float32 softmax and accumulation; K/V "
        "may be strided views into a larger cache (read in place).");

  m.def("attention_rows", &tandem::attention_rows, "q"_a, "k"_a, "v"_a.none(), "k_caches"_a, "v_caches"_a,
        "offsets"_a, nb::kw_only(), "scale"_a = nb::none(), "value_dim"_a = nb::none(), "stream"_a = nb::none(),
        "Attention of a ragged batch, each row its own sequence with its own cache: q (B, Hq, L, Dk), k "
        "(B, Hkv, L, Dk), v (B, Hkv, L, Dv) are row b's positions offsets[b] .. offsets[b] + L - 1; "
        "k_caches[b] (1, Hkv, cap, Dk) / v_caches[b] (1, Hkv, cap, Dv) its buffers. Returns (out (B, Hq, L, "
        "Dv), k buffers, v buffers) with the new positions written and each row attending causally over "
        "its offsets[b] + L keys. The buffers are written in place (the returned ones share their memory) "
        "unless an evaluated view of them is alive, then copied first: positions from offsets[b] on of "
        "the arrays passed in may change. v=None, v_caches=[] and value_dim: the values are the keys' first "
        "value_dim features (MLA's latent cache, one buffer per row). CPU only.");
  m.def("sample_tokens", &tandem::sample_tokens, "logits"_a, "temperature"_a, "top_k"_a, "top_p"_a, "min_p"_a,
        "key_seeds"_a, nb::kw_only(), "stream"_a = nb::none(),
        "One token per row of logits (B, V): temperature (0: the first maximum), then top_k, top_p (the "
        "nucleus of the top-k set, in order of logit then index) and min_p; drawn by inverse CDF over "
        "the kept tokens in index order with one uniform number from the row's key seed (splitmix64). "
        "-> int32 (B,). CPU only.");
  m.def("key_uniform", &tandem::cpu::key_uniform, "key_seed"_a, "The uniform number in [0, 1) a key seed draws.");
  m.def(
      "sample_kept",
      [](const std::vector<float>& row, float temperature, int64_t top_k, float top_p, float min_p) {
        if (row.empty()) throw std::invalid_argument("sample_kept: the row must not be empty");
        return tandem::cpu::kept_tokens(row.data(), static_cast<int64_t>(row.size()),
                                        {temperature, top_k, top_p, min_p, 0});
      },
      "row"_a, "temperature"_a, "top_k"_a, "top_p"_a, "min_p"_a,
      "The token ids sample_tokens' filters keep for one row of logits (ascending; for tests).");
  m.def("silu_mul", &tandem::silu_mul, "gate"_a, "up"_a, nb::kw_only(), "stream"_a = nb::none(),
        "silu(gate) * up (SwiGLU) in float32, one rounding to the promoted dtype. CPU only.");
  m.def("rope", &tandem::rope, "x"_a, "inv_freq"_a, "offset"_a = 0, nb::kw_only(), "row_offsets"_a = nb::none(),
        "stream"_a = nb::none(),
        "Rotate-half rotary embedding of x (B, L, H, D) at positions offset..offset+L-1 with float32 "
        "inverse frequencies (dims/2,); features past dims pass through. row_offsets (int32 (B,)): each "
        "batch row starts at its own position instead (a ragged batch; offset must then be 0). CPU only.");
  m.def("rms_norm", &tandem::rms_norm, "x"_a, "weight"_a, "eps"_a, nb::kw_only(), "stream"_a = nb::none(),
        "x * rsqrt(mean(x^2, -1) + eps) * weight in float32. CPU only.");
  m.def("add_rms_norm", &tandem::add_rms_norm, "x"_a, "residual"_a, "weight"_a, "eps"_a, nb::kw_only(),
        "stream"_a = nb::none(), "(h, rms_norm(h)) with h = x + residual rounded to its dtype. CPU only.");

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
  m.def(
      "advise_hugepages",
      [](std::vector<mx::array> arrays) {
        mx::eval(arrays);
        int64_t total = 0;
        for (auto& a : arrays)
          if (a.data_size() && a.flags().contiguous)
            total += tandem::cpu::advise_hugepages(a.data<uint8_t>(), a.data_size() * a.itemsize());
        return total;
      },
      "arrays"_a,
      "Back the (evaluated) arrays' memory with 2 MB pages where the OS allows (Linux THP, "
      "MADV_COLLAPSE); returns the bytes now in huge pages. Weight streaming is a few percent faster.");
  m.def("num_threads", &tandem::cpu::num_threads, "Threads in the kernel pool.");

  m.def(
      "plan_fp8_matmul",
      [](int M, int N, int K, std::pair<int, int> block_size, mx::Dtype dtype, bool codes_aligned) {
        auto t = act_dtype("plan_fp8_matmul", dtype);
        return launch_dict(
            tandem::metal::plan_fp8_matmul(M, N, K, block_size.first, block_size.second, t, codes_aligned));
      },
      "M"_a, "N"_a, "K"_a, "block_size"_a, "dtype"_a, "codes_aligned"_a = true,
      "The Metal launch Fp8Matmul's eval_gpu encodes for x (M, K), codes (N, K): kernel, grid, threadgroup, "
      "threadgroup_memory, mode, args (packed kargs), args_index, function_constants.");
  m.def(
      "plan_gather_fp8_matmul",
      [](int T, int k, int E, int N, int K, std::pair<int, int> block_size, mx::Dtype dtype, bool codes_aligned) {
        auto t = act_dtype("plan_gather_fp8_matmul", dtype);
        auto G = tandem::metal::plan_gather_fp8_matmul(T, k, E, N, K, block_size.first, block_size.second, t,
                                                       codes_aligned);
        nb::list launches;
        for (auto& L : G.launches) launches.append(launch_dict(L));
        nb::dict d;
        d["variant"] = G.variant;
        d["max_items"] = G.max_items;
        d["route_elems"] = G.route_elems;
        d["launches"] = launches;
        return d;
      },
      "T"_a, "k"_a, "E"_a, "N"_a, "K"_a, "block_size"_a, "dtype"_a, "codes_aligned"_a = true,
      "The Metal launches GatherFp8Matmul's eval_gpu encodes for x (T, K), codes (E, N, K), indices (T, k): "
      "the route, then the GEMV or GEMM; route_elems is the int32 route scratch they share.");
  m.def(
      "plan_attention",
      [](int B, int Hq, int Hkv, int Lq, int Lk, int Dk, int Dv, mx::Dtype dtype, std::optional<float> scale,
         bool causal, std::optional<std::array<int64_t, 3>> q_strides, std::optional<std::array<int64_t, 3>> k_strides,
         std::optional<std::array<int64_t, 3>> v_strides) {
        auto t = act_dtype("plan_attention", dtype);
        auto P = tandem::metal::plan_attention(
            B, Hq, Hkv, Lq, Lk, Dk, Dv, t, scale ? *scale : 1.0f / std::sqrt(float(Dk)), causal,
            q_strides ? *q_strides : std::array<int64_t, 3>{int64_t(Hq) * Lq * Dk, int64_t(Lq) * Dk, Dk},
            k_strides ? *k_strides : std::array<int64_t, 3>{int64_t(Hkv) * Lk * Dk, int64_t(Lk) * Dk, Dk},
            v_strides ? *v_strides : std::array<int64_t, 3>{int64_t(Hkv) * Lk * Dv, int64_t(Lk) * Dv, Dv});
        nb::dict d;
        nb::list launches;
        for (auto& L : P.launches) launches.append(launch_dict(L));
        d["variant"] = P.variant;
        d["splits"] = P.splits;
        d["partial_out_elems"] = P.partial_out_elems;
        d["partial_ml_elems"] = P.partial_ml_elems;
        d["launches"] = launches;
        return d;
      },
      "B"_a, "Hq"_a, "Hkv"_a, "Lq"_a, "Lk"_a, "Dk"_a, "Dv"_a, "dtype"_a, "scale"_a = nb::none(), "causal"_a = true,
      "q_strides"_a = nb::none(), "k_strides"_a = nb::none(), "v_strides"_a = nb::none(),
      "The Metal launches fused attention's eval_gpu encodes (strides in elements: batch, head, seq).");
}
