#include "metal/eval_common.h"

#include <dlfcn.h>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace tandem::metal {

namespace {

// The directory of the loaded _ext binary: the wheel installs mlx_tandem.metallib beside it.
const std::string& binary_dir() {
  static const std::string dir = [] {
    Dl_info info;
    if (!dladdr(reinterpret_cast<void*>(&binary_dir), &info))
      throw std::runtime_error("mlx_tandem: cannot locate the extension binary to load mlx_tandem.metallib");
    return std::filesystem::path(info.dli_fname).parent_path().string();
  }();
  return dir;
}

}  // namespace

ActDtype act_dtype(const char* op, mx::Dtype t) {
  if (t == mx::float16) return ActDtype::float16;
  if (t == mx::bfloat16) return ActDtype::bfloat16;
  if (t == mx::float32) return ActDtype::float32;
  throw std::invalid_argument(std::string(op) + ": the Metal kernels take float16, bfloat16 or float32");
}

void encode_launch(const mx::Stream& s, const Launch& L, const std::vector<std::pair<int, const mx::array*>>& in,
                   const std::vector<std::pair<int, mx::array*>>& out) {
  auto& d = mx::metal::device(s.device);
  auto* lib = d.get_library("mlx_tandem", binary_dir());
  auto* kernel = d.get_kernel(L.kernel, lib);
  if (kernel->maxTotalThreadsPerThreadgroup() < L.threads())
    throw std::runtime_error("mlx_tandem: kernel " + L.kernel + " allows " +
                             std::to_string(kernel->maxTotalThreadsPerThreadgroup()) +
                             " threads per threadgroup, the plan needs " + std::to_string(L.threads()));
  auto& enc = mx::metal::get_command_encoder(s);
  enc.set_compute_pipeline_state(kernel);
  for (auto& [idx, a] : in) enc.set_input_array(*a, idx);
  for (auto& [idx, a] : out) enc.set_output_array(*a, idx);
  enc.set_bytes(L.args.data(), int(L.args.size()), L.args_index);
  enc.dispatch_threadgroups(MTL::Size(L.grid[0], L.grid[1], L.grid[2]),
                            MTL::Size(L.threadgroup[0], L.threadgroup[1], L.threadgroup[2]));
}

}  // namespace tandem::metal
