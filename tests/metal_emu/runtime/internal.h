// Declarations shared by the runtime's source files (not seen by kernel code).
#pragma once
#include <metal_stdlib>

#include <atomic>
#include <mutex>
#include <vector>

#include "launch.h"

#define API extern "C" __attribute__((visibility("default")))

namespace metal_emu {

static_assert(sizeof(Lane) <= kLaneRecord, "Lane record too large");
static_assert(kMaxBuffers == 32, "launch.h and library.py assume 32 buffer slots");

struct Launch {
  const LaunchDesc* d;
  const KernelEntry* k;
  uint32_t ngroups[3];
};

// room for 32 KB of allocations plus their alignment and red zones
constexpr size_t kArenaBytes = 2 * kMaxThreadgroupMemory + (64 + kMaxBuffers) * (kRedZone + 64);

// registry.cpp
const std::vector<const KernelEntry*>& kernels();
std::mutex& dispatch_mutex();
// lane_errors.cpp
char* tg_carve(Worker* w, size_t size, size_t align, const void* key, const char* name, const char* file,
               unsigned line);
bool check_red_zones(Worker* w);
// fibers.cpp
char* region_pool(int slot);
void install_fault_handler();
void set_fault_worker(Worker* w);
void* lane_initial_sp(Lane* L);
// scheduler.cpp
void worker_loop(Worker* w, std::atomic<uint64_t>* next, std::atomic<int>* abort_flag, uint64_t total);

}  // namespace metal_emu
