// A planned Metal kernel launch: what eval_gpu encodes and what the emulator tests dispatch.
// Plain C++ (no Metal, no MLX) so the planning compiles and is tested on every platform.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace tandem::metal {

// Apple GPU limits the plans must respect.
constexpr int kMaxThreadsPerThreadgroup = 1024;
constexpr int kMaxThreadgroupMemory = 32768;

enum class ActDtype { float16, bfloat16, float32 };

inline const char* dtype_name(ActDtype t) {
  switch (t) {
    case ActDtype::float16: return "float16";
    case ActDtype::bfloat16: return "bfloat16";
    default: return "float32";
  }
}
inline int dtype_size(ActDtype t) { return t == ActDtype::float32 ? 4 : 2; }

struct Launch {
  std::string kernel;                  // host name in mlx_tandem.metallib
  std::array<uint32_t, 3> grid{1, 1, 1};         // threadgroups (dispatchThreadgroups)
  std::array<uint32_t, 3> threadgroup{1, 1, 1};  // threads per threadgroup
  uint32_t threadgroup_memory = 0;     // bytes of threadgroup arrays the kernel declares (static)
  int args_index = 0;                  // buffer index of the argument struct
  std::vector<uint8_t> args;           // the packed argument struct

  uint32_t threads() const { return threadgroup[0] * threadgroup[1] * threadgroup[2]; }
};

template <class A>
std::vector<uint8_t> pack_args(const A& a) {
  std::vector<uint8_t> out(sizeof(A));
  std::memcpy(out.data(), &a, sizeof(A));
  return out;
}

inline uint32_t ceil_div(int64_t a, int64_t b) { return uint32_t((a + b - 1) / b); }

[[noreturn]] inline void plan_fail(const char* op, const std::string& msg) {
  throw std::invalid_argument(std::string(op) + ": " + msg);
}

}  // namespace tandem::metal
