// The emulator runtime: kernel registry, fiber regions, the per-threadgroup scheduler with its
// divergence diagnostics, bounds-error reporting and the C entry points Python calls.
#include <metal_stdlib>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <mutex>
#include <string>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <thread>
#include <vector>

#include "launch.h"
#include "switch.h"

static_assert(sizeof(metal_emu::Lane) <= metal_emu::kLaneRecord, "Lane record too large");
static_assert(metal_emu::kMaxBuffers == 32, "launch.h and library.py assume 32 buffer slots");

#define API extern "C" __attribute__((visibility("default")))

namespace metal_emu {

struct Launch {
  const LaunchDesc* d;
  const KernelEntry* k;
  uint32_t ngroups[3];
};

static std::vector<const KernelEntry*> g_kernels;
static std::vector<FcEntry> g_fcs;
static std::vector<char> g_fc_defined;
static std::mutex g_dispatch_mutex;

Registrar::Registrar(const KernelEntry* k, int nk, const FcEntry* f, int nf) {
  for (int i = 0; i < nk; i++) g_kernels.push_back(&k[i]);
  for (int i = 0; i < nf; i++) { g_fcs.push_back(f[i]); g_fc_defined.push_back(0); }
}
bool fc_defined(const void* addr) {
  for (size_t i = 0; i < g_fcs.size(); i++)
    if (g_fcs[i].addr == addr) return g_fc_defined[i];
  return true;
}

// ---- errors raised from inside a lane -------------------------------------------------------
static void describe_lane(const Lane* L, char* out, size_t n) {
  uint32_t t[3];
  builtin_value(L, B_thread_position_in_grid, t);
  const Worker* w = L->worker;
  snprintf(out, n, " [thread (%u,%u,%u) of threadgroup (%u,%u,%u)]", t[0], t[1], t[2], w->tgid[0], w->tgid[1], w->tgid[2]);
}
void lane_fail(Lane* L, int kind, const char* msg, uintptr_t addr) {
  Worker* w = L->worker;
  if (!w->failed) {
    w->failed = 1;
    w->err_kind = kind;
    char where[128];
    describe_lane(L, where, sizeof where);
    snprintf(w->err_msg, sizeof w->err_msg, "%s%s", msg, where);
    w->err_addr = 0;
    Dl_info info;
    if (addr && dladdr(reinterpret_cast<void*>(addr), &info) && info.dli_fbase)
      w->err_addr = addr - reinterpret_cast<uintptr_t>(info.dli_fbase);
  }
  L->group->state[L->lane] = L_DONE;
  metal_emu_switch(&L->sp, w->sched_sp);
  __builtin_unreachable();
}
void lane_failf(Lane* L, int kind, const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  lane_fail(L, kind, buf);
}
void oob_fail(const BufferInfo* info, uintptr_t addr, size_t n, bool write) {
  uintptr_t ret = reinterpret_cast<uintptr_t>(__builtin_return_address(0));
  Lane* L = cur_lane();
  Worker* w = L->worker;
  char msg[1024];
  const char* op = write ? "write" : "read";
  if (info == &g_null_buffer) {
    snprintf(msg, sizeof msg, "%s of %zu bytes through a null device pointer", op, n);
  } else if (info == &w->sink) {
    snprintf(msg, sizeof msg, "%s of %zu bytes through an unchecked pointer", op, n);
  } else if (!info->bound) {
    snprintf(msg, sizeof msg, "out-of-bounds %s of %zu bytes: buffer %d is not bound", op, n, info->index);
  } else {
    long long off = (long long)(addr - reinterpret_cast<uintptr_t>(info->base));
    snprintf(msg, sizeof msg, "out-of-bounds %s of %zu bytes at byte offset %lld of buffer %d (size %lld bytes)", op, n,
             off, info->index, (long long)(info->end - info->base));
  }
  if (w->resolving) {  // inside a collective (simdgroup_load/store): its call site is known
    size_t len = strlen(msg);
    snprintf(msg + len, sizeof msg - len, " in %s at %s:%u", w->resolving->what, w->resolving->file, w->resolving->line);
    ret = 0;
  }
  lane_fail(L, E_OOB, msg, ret);
}
void fail_unbound(Lane* L, const char* what, int index, const char* param) {
  lane_failf(L, E_OTHER, "%s %d (parameter '%s') is not bound", what, index, param);
}
void fail_small(Lane* L, int index, size_t need, const char* param) {
  lane_failf(L, E_OOB, "buffer %d (parameter '%s') holds %lld bytes, the kernel reads %zu", index, param,
             (long long)(L->worker->bufs[index].end - L->worker->bufs[index].base), need);
}
BufferInfo* find_buffer(const void* p) {
  Worker* w = cur_lane()->worker;
  const char* c = static_cast<const char*>(p);
  if (!c) return &g_null_buffer;
  for (int i = 0; i < kMaxBuffers; i++)
    if (w->bufs[i].bound && c >= w->bufs[i].base && c <= w->bufs[i].end) return &w->bufs[i];
  return &w->sink;
}

// Carve an allocation (16-byte aligned at least) followed by a canary red zone out of the arena.
static char* tg_carve(Worker* w, size_t size, size_t align, const void* key, const char* name, const char* file,
                      unsigned line) {
  if (align < 16) align = 16;
  size_t off = (w->arena_used + align - 1) & ~(align - 1);
  w->tgvars[w->ntgvars++] = TgVar{key, w->arena + off, size, name, file, line};
  memset(w->arena + off + size, kCanary, kRedZone);
  w->arena_used = off + size + kRedZone;
  w->tg_bytes += (size + 15) & ~size_t(15);
  return w->arena + off;
}

void* tg_static(Lane* L, const void* key, size_t size, size_t align, const char* name, const char* file, unsigned line) {
  Worker* w = L->worker;
  for (int i = 0; i < w->ntgvars; i++)
    if (w->tgvars[i].key == key) return w->tgvars[i].ptr;
  if (w->tg_bytes + size > kMaxThreadgroupMemory)
    lane_failf(L, E_LIMIT,
               "threadgroup memory above the 32768-byte limit: '%s' (%zu bytes) at %s:%u brings the total to %zu bytes",
               name, size, file, line, w->tg_bytes + size);
  if (w->ntgvars == 64 + kMaxBuffers) lane_failf(L, E_LIMIT, "more than 64 threadgroup variables");
  return tg_carve(w, size, align, key, name, file, line);
}

// After a threadgroup: a red zone that lost its canary means a write past an allocation's end.
static bool check_red_zones(Worker* w) {
  for (int i = 0; i < w->ntgvars; i++) {
    const TgVar& v = w->tgvars[i];
    for (size_t k = 0; k < kRedZone; k++)
      if (static_cast<unsigned char>(v.ptr[v.size + k]) != kCanary) {
        w->failed = 1;
        w->err_kind = E_OOB;
        snprintf(w->err_msg, sizeof w->err_msg,
                 "threadgroup memory written out of bounds: %zu bytes past the end of '%s' (%zu bytes%s%s%s%u) "
                 "[threadgroup (%u,%u,%u)]",
                 k, v.name, v.size, v.file ? ", declared at " : "", v.file ? v.file : "", v.file ? ":" : "",
                 v.file ? v.line : 0u, w->tgid[0], w->tgid[1], w->tgid[2]);
        return false;
      }
  }
  return true;
}

void builtin_value(const Lane* L, Builtin b, uint32_t o[3]) {
  const Worker* w = L->worker;
  uint32_t i = L->index, ax = w->actual[0], ay = w->actual[1];
  uint32_t lid[3] = {i % ax, (i / ax) % ay, i / (ax * ay)};
  auto set = [&](uint32_t x, uint32_t y, uint32_t z) { o[0] = x; o[1] = y; o[2] = z; };
  switch (b) {
    case B_thread_position_in_grid:
      set(w->tgid[0] * w->nominal[0] + lid[0], w->tgid[1] * w->nominal[1] + lid[1], w->tgid[2] * w->nominal[2] + lid[2]);
      break;
    case B_thread_position_in_threadgroup: set(lid[0], lid[1], lid[2]); break;
    case B_thread_index_in_threadgroup: set(i, 0, 0); break;
    case B_threadgroup_position_in_grid: set(w->tgid[0], w->tgid[1], w->tgid[2]); break;
    case B_threadgroups_per_grid: set(w->ngroups[0], w->ngroups[1], w->ngroups[2]); break;
    case B_threads_per_threadgroup: set(w->actual[0], w->actual[1], w->actual[2]); break;
    case B_dispatch_threads_per_threadgroup: set(w->nominal[0], w->nominal[1], w->nominal[2]); break;
    case B_threads_per_grid: set(w->grid[0], w->grid[1], w->grid[2]); break;
    case B_thread_index_in_simdgroup: set(L->lane, 0, 0); break;
    case B_threads_per_simdgroup: case B_thread_execution_width: set(kSimdWidth, 0, 0); break;
    case B_simdgroup_index_in_threadgroup: set(i / kSimdWidth, 0, 0); break;
    case B_simdgroups_per_threadgroup: set(w->nsimd, 0, 0); break;
    case B_quadgroup_index_in_threadgroup: set(i / 4, 0, 0); break;
    case B_thread_index_in_quadgroup: set(L->lane % 4, 0, 0); break;
    case B_quadgroups_per_threadgroup: set((w->nthreads + 3) / 4, 0, 0); break;
  }
}

// ---- fibers ---------------------------------------------------------------------------------
// One region per lane: [guard page | stack | Lane record]. Pools are per worker slot and reused.
static char* g_pools[64];
static char* region_pool(int slot) {
  if (!g_pools[slot]) {
    size_t len = (kMaxThreads + 1) * kRegion;
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) { perror("metal_emu: mmap"); abort(); }
    char* base = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(m) + kRegion - 1) & ~(kRegion - 1));
    for (int i = 0; i < kMaxThreads; i++) mprotect(base + i * kRegion, 4096, PROT_NONE);  // stack overflow guard
    g_pools[slot] = base;
  }
  return g_pools[slot];
}

// ---- faults inside a lane --------------------------------------------------------------------
// A lane that runs off its stack (guard page) or dereferences a wild thread/threadgroup pointer
// raises SIGSEGV on its worker thread. The handler (on an alternate signal stack) records the
// error and switches to the scheduler, abandoning the lane, so Python gets an exception instead
// of a dead process. Faults elsewhere go to the previous handler.
static thread_local Worker* t_worker;
static struct sigaction g_old_segv, g_old_bus;
static std::once_flag g_sig_once;

static uintptr_t fault_pc(void* uc) {
  auto* u = static_cast<ucontext_t*>(uc);
#if defined(__x86_64__) && defined(__linux__)
  return uintptr_t(u->uc_mcontext.gregs[REG_RIP]);
#elif defined(__aarch64__) && defined(__linux__)
  return uintptr_t(u->uc_mcontext.pc);
#else
  (void)u;
  return 0;
#endif
}

static void on_fault(int sig, siginfo_t* info, void* uc) {
  Worker* w = t_worker;
  if (w && w->running && !w->failed) {
    uintptr_t a = reinterpret_cast<uintptr_t>(info->si_addr), base = reinterpret_cast<uintptr_t>(w->regions);
    bool guard = a >= base && a < base + kMaxThreads * kRegion && (a - base) % kRegion < 4096;
    Lane* L = w->running;
    w->failed = 1;
    w->err_kind = guard ? E_LIMIT : E_OOB;
    if (guard)
      snprintf(w->err_msg, sizeof w->err_msg, "lane stack overflow: a thread used more than its %zu KB stack",
               size_t((kRegion - 4096) / 1024 - 20));
    else
      snprintf(w->err_msg, sizeof w->err_msg,
               "invalid memory access at address %p (a thread or threadgroup pointer out of bounds?)", info->si_addr);
    uint32_t t[3];
    builtin_value(L, B_thread_position_in_grid, t);
    size_t len = strlen(w->err_msg);
    snprintf(w->err_msg + len, sizeof w->err_msg - len, " [thread (%u,%u,%u) of threadgroup (%u,%u,%u)]", t[0], t[1],
             t[2], w->tgid[0], w->tgid[1], w->tgid[2]);
    Dl_info dl;
    uintptr_t pc = fault_pc(uc);
    w->err_addr = 0;
    if (pc && dladdr(reinterpret_cast<void*>(pc), &dl) && dl.dli_fbase)
      w->err_addr = pc + 1 - reinterpret_cast<uintptr_t>(dl.dli_fbase);  // +1: Python looks up addr - 1
    L->group->state[L->lane] = L_DONE;
    void* dead;
    metal_emu_switch(&dead, w->sched_sp);  // never returns
  }
  struct sigaction* old = sig == SIGSEGV ? &g_old_segv : &g_old_bus;
  if (old->sa_flags & SA_SIGINFO) {
    old->sa_sigaction(sig, info, uc);
  } else if (old->sa_handler != SIG_IGN && old->sa_handler != SIG_DFL) {
    old->sa_handler(sig);
  } else {
    sigaction(sig, old, nullptr);  // returning re-runs the access under the default action
  }
}

static void install_fault_handler() {
  std::call_once(g_sig_once, [] {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_old_segv);
    sigaction(SIGBUS, &sa, &g_old_bus);
  });
}

constexpr size_t kArenaBytes = 2 * kMaxThreadgroupMemory + (64 + kMaxBuffers) * (kRedZone + 64);

static void lane_main(void* arg) {
  Lane* L = static_cast<Lane*>(arg);
  L->worker->launch->k->entry(L);
  L->group->state[L->lane] = L_DONE;
  L->group->done++;
  metal_emu_switch(&L->sp, L->worker->sched_sp);
  __builtin_unreachable();
}

// ---- the scheduler --------------------------------------------------------------------------
static void append_lanes(std::string& s, const std::vector<int>& idx) {
  char b[64];
  for (size_t k = 0; k < idx.size();) {
    size_t j = k;
    while (j + 1 < idx.size() && idx[j + 1] == idx[j] + 1) j++;
    snprintf(b, sizeof b, j > k ? "%s%d-%d" : "%s%d", k ? "," : "", idx[k], idx[j]);
    s += b;
    k = j + 1;
  }
}
static std::string site_str(const Site& s) {
  char b[512];
  snprintf(b, sizeof b, "%s (%s:%u)", s.what, s.file, s.line);
  return b;
}
// Lanes grouped by what they are doing: "lanes 0-15 wait at simd_sum (k.metal:12); lanes 16-31 have exited".
static std::string describe(Lane* const* lanes, int n, bool thread_index) {
  std::vector<std::pair<std::string, std::vector<int>>> groups;
  for (int i = 0; i < n; i++) {
    const Lane* L = lanes[i];
    const Group* G = L->group;
    std::string key = G->state[L->lane] == L_DONE ? "have exited" : "wait at " + site_str(G->site[L->lane]);
    size_t g = 0;
    while (g < groups.size() && groups[g].first != key) g++;
    if (g == groups.size()) groups.push_back({key, {}});
    groups[g].second.push_back(thread_index ? int(L->index) : int(L->lane));
  }
  std::string s;
  for (auto& [key, idx] : groups) {
    if (!s.empty()) s += "; ";
    s += thread_index ? "threads " : "lanes ";
    append_lanes(s, idx);
    s += " " + key;
  }
  return s;
}
static void sched_fail(Worker* w, int kind, const std::string& msg) {
  w->failed = 1;
  w->err_kind = kind;
  snprintf(w->err_msg, sizeof w->err_msg, "%s [threadgroup (%u,%u,%u)]", msg.c_str(), w->tgid[0], w->tgid[1], w->tgid[2]);
}

static void run_threadgroup(Worker* w, std::vector<Lane*>& lanes) {
  const LaunchDesc* d = w->launch->d;
  for (int k = 0; k < 3; k++) {
    w->nominal[k] = d->tg[k];
    w->actual[k] = d->mode == 0 ? std::min(d->tg[k], d->grid[k] - w->tgid[k] * d->tg[k]) : d->tg[k];
  }
  uint32_t n = w->actual[0] * w->actual[1] * w->actual[2];
  w->nthreads = n;
  w->nsimd = (n + kSimdWidth - 1) / kSimdWidth;
  memset(w->arena, 0xff, w->arena_used);  // loud garbage (NaN, -1) for reads before writes
  w->arena_used = 0;
  w->tg_bytes = 0;
  w->ntgvars = 0;
  static const char* const kDynNames[kMaxBuffers] = {
      "threadgroup(0)", "threadgroup(1)", "threadgroup(2)", "threadgroup(3)", "threadgroup(4)", "threadgroup(5)",
      "threadgroup(6)", "threadgroup(7)", "threadgroup(8)", "threadgroup(9)", "threadgroup(10)", "threadgroup(11)",
      "threadgroup(12)", "threadgroup(13)", "threadgroup(14)", "threadgroup(15)", "threadgroup(16)",
      "threadgroup(17)", "threadgroup(18)", "threadgroup(19)", "threadgroup(20)", "threadgroup(21)",
      "threadgroup(22)", "threadgroup(23)", "threadgroup(24)", "threadgroup(25)", "threadgroup(26)",
      "threadgroup(27)", "threadgroup(28)", "threadgroup(29)", "threadgroup(30)", "threadgroup(31)"};
  for (int b = 0; b < kMaxBuffers; b++)
    w->tg_dyn[b] = d->tg_size[b] ? tg_carve(w, d->tg_size[b], 16, nullptr, kDynNames[b], nullptr, 0) : nullptr;
  for (uint32_t s = 0; s < w->nsimd; s++) {
    Group* g = &w->groups[s];
    g->index = int(s);
    g->n = int(std::min<uint32_t>(kSimdWidth, n - s * kSimdWidth));
    g->arrived = 0;
    g->done = 0;
    g->ready = g->n;
  }
  for (uint32_t i = 0; i < n; i++) {
    Lane* L = reinterpret_cast<Lane*>(lane_record(reinterpret_cast<uintptr_t>(w->regions + i * kRegion)));
    L->lane = i % kSimdWidth;
    L->index = i;
    L->group = &w->groups[i / kSimdWidth];
    L->group->lanes[L->lane] = L;
    L->group->state[L->lane] = L_READY;
    L->worker = w;
    L->last_load = 0;
    L->sp = init_frame(reinterpret_cast<char*>(L), L, lane_main, metal_emu_trampoline);
    lanes[i] = L;
  }
  // order 1 runs SIMD-groups, and lanes within them, last to first: results that change with the
  // order reveal missing barriers (hardware runs SIMD-groups concurrently, in no fixed order).
  const bool reverse = d->order == 1;
  for (;;) {
    for (uint32_t step = 0; step < w->nsimd; step++) {
      const uint32_t s = reverse ? w->nsimd - 1 - step : step;
      Group* g = &w->groups[s];
      while (g->ready > 0) {
        for (int j = 0; j < g->n; j++) {
          const int i = reverse ? g->n - 1 - j : j;
          if (g->state[i] != L_READY) continue;
          g->state[i] = L_RUN;
          g->ready--;
          w->running = g->lanes[i];
          metal_emu_switch(&w->sched_sp, g->lanes[i]->sp);
          w->running = nullptr;
          if (w->failed) return;
        }
      }
      for (int i = 0; i < g->n; i++)
        if (g->state[i] == L_SIMD) {
          sched_fail(w, E_DIVERGENCE, "SIMD-group divergence in simdgroup " + std::to_string(s) + ": " +
                                          describe(g->lanes, g->n, false));
          return;
        }
    }
    uint32_t done = 0;
    for (uint32_t s = 0; s < w->nsimd; s++) done += uint32_t(w->groups[s].done);
    if (done == n) {
      check_red_zones(w);
      return;
    }
    bool same = done == 0;
    const Site& first = w->groups[0].site[0];
    for (uint32_t s = 0; s < w->nsimd && same; s++)
      for (int i = 0; i < w->groups[s].n && same; i++) same = same_site(w->groups[s].site[i], first);
    if (!same) {
      sched_fail(w, E_DIVERGENCE, "threadgroup_barrier divergence: " + describe(lanes.data(), int(n), true));
      return;
    }
    for (uint32_t s = 0; s < w->nsimd; s++) {
      Group* g = &w->groups[s];
      for (int i = 0; i < g->n; i++) g->state[i] = L_READY;
      g->ready = g->n;
    }
  }
}

static void worker_loop(Worker* w, std::atomic<uint64_t>* next, std::atomic<int>* abort_flag, uint64_t total) {
  const uint32_t* ng = w->launch->ngroups;
  // an alternate signal stack for on_fault (the faulting lane's own stack may be exhausted)
  static thread_local std::vector<char> altstack(1 << 16);
  stack_t ss{}, old_ss{};
  ss.ss_sp = altstack.data();
  ss.ss_size = altstack.size();
  sigaltstack(&ss, &old_ss);
  t_worker = w;
  std::vector<Lane*> lanes(kMaxThreads);
  std::vector<Group> groups(kMaxThreads / kSimdWidth);
  w->groups = groups.data();
  while (!abort_flag->load(std::memory_order_relaxed)) {
    uint64_t t = next->fetch_add(1);
    if (t >= total) break;
    if (w->launch->d->order == 1) t = total - 1 - t;
    w->tgid[0] = uint32_t(t % ng[0]);
    w->tgid[1] = uint32_t((t / ng[0]) % ng[1]);
    w->tgid[2] = uint32_t(t / (uint64_t(ng[0]) * ng[1]));
    run_threadgroup(w, lanes);
    if (w->failed) { abort_flag->store(1); break; }
  }
  t_worker = nullptr;
  sigaltstack(&old_ss, nullptr);
}

}  // namespace metal_emu

using namespace metal_emu;

API int metal_emu_kernel_count() { return int(g_kernels.size()); }
API const char* metal_emu_kernel_name(int i) { return g_kernels[i]->host_name; }
API unsigned metal_emu_kernel_max_threads(int i) { return g_kernels[i]->max_threads; }
API const char* metal_emu_kernel_file(int i) { return g_kernels[i]->file; }
API int metal_emu_kernel_line(int i) { return g_kernels[i]->line; }
API int metal_emu_fc_count() { return int(g_fcs.size()); }
API void metal_emu_fc_info(int i, int* index, const char** name, int* size, int* type) {
  *index = g_fcs[i].index; *name = g_fcs[i].name; *size = g_fcs[i].size; *type = g_fcs[i].type;
}
API void metal_emu_fc_set(int i, const void* value, int defined) {
  std::lock_guard<std::mutex> lock(g_dispatch_mutex);
  if (defined) memcpy(g_fcs[i].addr, value, size_t(g_fcs[i].size));
  else memset(g_fcs[i].addr, 0, size_t(g_fcs[i].size));
  g_fc_defined[i] = char(defined != 0);
}
API int metal_emu_launch_desc_size() { return int(sizeof(LaunchDesc)); }

API int metal_emu_dispatch(LaunchDesc* d) {
  std::lock_guard<std::mutex> lock(g_dispatch_mutex);
  Launch launch{d, g_kernels[size_t(d->kernel)], {}};
  uint64_t total = 1;
  for (int k = 0; k < 3; k++) {
    launch.ngroups[k] = d->mode == 0 ? (d->grid[k] + d->tg[k] - 1) / d->tg[k] : d->grid[k];
    total *= launch.ngroups[k];
  }
  d->err_kind = 0;
  d->err_msg[0] = 0;
  if (total == 0) return 0;
  int nw = int(std::min<uint64_t>(uint64_t(std::max(1, std::min(d->nworkers, 64))), total));
  std::vector<Worker*> workers(static_cast<size_t>(nw));
  for (int i = 0; i < nw; i++) {
    Worker* w = static_cast<Worker*>(calloc(1, sizeof(Worker)));
    // room for 32 KB of allocations plus their alignment and red zones
    w->arena = static_cast<char*>(aligned_alloc(64, kArenaBytes));
    w->arena_used = kArenaBytes;  // poison all of it before the first threadgroup
    w->launch = &launch;
    w->regions = region_pool(i);
    for (int b = 0; b < kMaxBuffers; b++) {
      char* base = reinterpret_cast<char*>(d->buf_ptr[b]);
      w->bufs[b] = BufferInfo{base, base + d->buf_size[b], 0, 0, b, int(d->buf_bound[b] != 0)};
    }
    w->sink = BufferInfo{nullptr, reinterpret_cast<char*>(~uintptr_t(0) - 4096), 0, 0, -1, 1};
    for (int k = 0; k < 3; k++) {
      w->ngroups[k] = launch.ngroups[k];
      w->grid[k] = d->mode == 0 ? d->grid[k] : d->grid[k] * d->tg[k];
    }
    workers[size_t(i)] = w;
  }
  install_fault_handler();
  std::atomic<uint64_t> next{0};
  std::atomic<int> abort_flag{0};
  std::vector<std::thread> threads;
  for (int i = 1; i < nw; i++) threads.emplace_back(worker_loop, workers[size_t(i)], &next, &abort_flag, total);
  worker_loop(workers[0], &next, &abort_flag, total);
  for (auto& t : threads) t.join();
  for (int b = 0; b < kMaxBuffers; b++) d->bytes_read[b] = d->bytes_written[b] = 0;
  for (Worker* w : workers) {
    for (int b = 0; b < kMaxBuffers; b++) {
      d->bytes_read[b] += w->bufs[b].read;
      d->bytes_written[b] += w->bufs[b].written;
    }
    if (w->failed && !d->err_kind) {
      d->err_kind = w->err_kind;
      d->err_addr = w->err_addr;
      snprintf(d->err_msg, sizeof d->err_msg, "%s", w->err_msg);
    }
    free(w->arena);
    free(w);
  }
  return d->err_kind;
}
