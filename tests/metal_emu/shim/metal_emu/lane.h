// The emulator's execution model as seen from kernel code: every GPU thread ("lane") is a
// fiber whose stack lives in a 2^k-aligned region that ends with its Lane record, so kernel
// code finds its lane from the stack pointer without thread-local storage.
#pragma once
#include "base.h"

namespace metal_emu {

constexpr int kSimdWidth = 32;
constexpr int kMaxThreads = 1024;
constexpr int kMaxBuffers = 32;
constexpr size_t kMaxThreadgroupMemory = 32768;
constexpr uintptr_t kRegion = 128 * 1024;  // guard page, stack, Lane record at the top
constexpr uintptr_t kLaneRecord = 256;     // the stack starts right below the record: one hot page per lane

enum ErrKind : int { E_NONE = 0, E_DIVERGENCE = 1, E_OOB = 2, E_LIMIT = 3, E_OTHER = 4 };
enum LaneState : uint8_t { L_READY, L_RUN, L_SIMD, L_BARRIER, L_DONE };

struct Group;
using ResolveFn = void (*)(Group*);

// A rendezvous call site: lanes meet only when file, line, column and operation agree.
struct Site {
  const char* file;
  uint32_t line, col;
  ResolveFn fn;
  const char* what;
};

// One bound device buffer as seen by one worker (OS thread); counters are per worker.
struct BufferInfo {
  char* base;
  char* end;
  uint64_t read, written;
  int index;
  int bound;
};
inline BufferInfo g_null_buffer{nullptr, nullptr, 0, 0, -1, 0};

struct Worker;
struct alignas(64) Lane {
  void* sp;
  uint32_t lane;   // thread_index_in_simdgroup
  uint32_t index;  // thread_index_in_threadgroup
  Group* group;
  Worker* worker;
  int64_t iarg;
  uintptr_t last_load;  // address + size of this lane's latest counted device load
};

// Everything the scheduler scans lives here, not in the lanes' (scattered) stack pages.
struct alignas(16) Slot { unsigned char d[64]; };
struct Group {
  Lane* lanes[kSimdWidth];
  int n, index, arrived, ready, done;
  LaneState state[kSimdWidth];
  Site site[kSimdWidth];
  Slot in[kSimdWidth];
  Slot out[kSimdWidth];
};

// A threadgroup allocation; a red zone of kRedZone canary bytes follows each one, checked when
// the threadgroup ends, so writes past the end of a threadgroup array are reported.
struct TgVar { const void* key; char* ptr; size_t size; const char* name; const char* file; unsigned line; };
constexpr size_t kRedZone = 64;
constexpr unsigned char kCanary = 0xcb;
struct Launch;
struct Worker {
  void* sched_sp;
  const Launch* launch;
  BufferInfo bufs[kMaxBuffers];
  BufferInfo sink;  // raw pointers that belong to no buffer (program-scope constants)
  char* tg_dyn[kMaxBuffers];
  char* arena;       // threadgroup memory: allocations and red zones
  size_t arena_used;  // bytes of the arena in use, red zones included
  size_t tg_bytes;    // bytes counted against the 32 KB limit
  TgVar tgvars[64 + kMaxBuffers];  // static variables and [[threadgroup(n)]] blocks
  int ntgvars;
  const Site* resolving;  // set while a lane performs a collective for its SIMD-group
  Lane* running;          // the lane executing now (for the fault handler)
  uint32_t tgid[3], actual[3], nominal[3], ngroups[3], grid[3];
  uint32_t nthreads, nsimd;
  char* regions;
  Group* groups;
  int failed;
  int err_kind;
  uintptr_t err_addr;
  char err_msg[2048];
};

extern "C" void metal_emu_switch(void** save_sp, void* to_sp) __attribute__((visibility("hidden")));

// Lane records sit below the top of their region, staggered by region index so that the
// records (and hot stack tops) of neighbouring lanes do not all fall into one cache set.
constexpr uintptr_t kColorStride = 320, kColors = 64;
inline uintptr_t lane_record(uintptr_t region_base) {
  return region_base + kRegion - kLaneRecord - ((region_base / kRegion) % kColors) * kColorStride;
}
inline Lane* cur_lane() {
  uintptr_t sp;
#if defined(__x86_64__)
  asm("mov %%rsp, %0" : "=r"(sp));
#elif defined(__aarch64__)
  asm("mov %0, sp" : "=r"(sp));
#else
  char probe;
  sp = reinterpret_cast<uintptr_t>(&probe);
#endif
  return reinterpret_cast<Lane*>(lane_record(sp & ~(kRegion - 1)));
}
[[noreturn]] void lane_fail(Lane* L, int kind, const char* msg, uintptr_t addr = 0);
[[noreturn]] void lane_failf(Lane* L, int kind, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

inline bool same_site(const Site& a, const Site& b) {
  return a.line == b.line && a.col == b.col && a.fn == b.fn &&
         (a.file == b.file || __builtin_strcmp(a.file, b.file) == 0);
}

// A SIMD-scope rendezvous. The last lane to arrive performs the operation on its own stack
// (so bounds errors inside it are reported like any other), then all lanes continue.
inline void simd_arrive(Lane* L, const Site& s) {
  Group* g = L->group;
  const uint32_t me = L->lane;
  g->site[me] = s;
  g->state[me] = L_SIMD;
  if (++g->arrived == g->n) {
    bool same = true;
    for (int i = 0; i < g->n && same; i++) same = same_site(g->site[i], s);
    if (same) {
      g->arrived = 0;
      L->worker->resolving = &g->site[me];
      if (s.fn) s.fn(g);
      L->worker->resolving = nullptr;
      for (int i = 0; i < g->n; i++) g->state[i] = L_READY;
      g->state[me] = L_RUN;
      g->ready = g->n - 1;
      return;
    }
  }
  metal_emu_switch(&L->sp, L->worker->sched_sp);
}

inline void barrier_arrive(Lane* L, const Site& s) {
  L->group->site[L->lane] = s;
  L->group->state[L->lane] = L_BARRIER;
  metal_emu_switch(&L->sp, L->worker->sched_sp);
}

inline Site make_site(const std::source_location& loc, ResolveFn fn, const char* what) {
  return Site{loc.file_name(), loc.line(), loc.column(), fn, what};
}

}  // namespace metal_emu
