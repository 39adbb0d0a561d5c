// The scheduler: runs each threadgroup's lanes between rendezvous points, diagnoses divergence,
// spreads threadgroups over OS threads, and the dispatch entry point.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <signal.h>
#include <string>
#include <thread>

#include "internal.h"

namespace metal_emu {

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
    L->sp = lane_initial_sp(L);
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

void worker_loop(Worker* w, std::atomic<uint64_t>* next, std::atomic<int>* abort_flag, uint64_t total) {
  const uint32_t* ng = w->launch->ngroups;
  // an alternate signal stack for on_fault (the faulting lane's own stack may be exhausted)
  static thread_local std::vector<char> altstack(1 << 16);
  stack_t ss{}, old_ss{};
  ss.ss_sp = altstack.data();
  ss.ss_size = altstack.size();
  sigaltstack(&ss, &old_ss);
  set_fault_worker(w);
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
  set_fault_worker(nullptr);
  sigaltstack(&old_ss, nullptr);
}

}  // namespace metal_emu

using namespace metal_emu;

API int metal_emu_dispatch(LaunchDesc* d) {
  std::lock_guard<std::mutex> lock(dispatch_mutex());
  Launch launch{d, kernels()[size_t(d->kernel)], {}};
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

