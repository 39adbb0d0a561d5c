// The launch descriptor passed from Python (ctypes mirror in metal_emu/library.py) or a C driver.
#pragma once
#include <cstdint>

namespace metal_emu {

struct LaunchDesc {
  int32_t kernel, mode;  // mode 0: grid counts threads; 1: grid counts threadgroups
  uint32_t grid[3], tg[3];
  int32_t nworkers, order;  // order 0: first to last; 1: last to first (threadgroups, SIMD-groups, lanes)
  uint64_t buf_ptr[32], buf_size[32], buf_bound[32], tg_size[32];  // 32 = kMaxBuffers
  uint64_t bytes_read[32], bytes_written[32];
  int32_t err_kind, pad2;
  uint64_t err_addr;
  char err_msg[2048];
};

}  // namespace metal_emu

extern "C" {
int metal_emu_kernel_count();
const char* metal_emu_kernel_name(int i);
int metal_emu_dispatch(metal_emu::LaunchDesc* d);
}
