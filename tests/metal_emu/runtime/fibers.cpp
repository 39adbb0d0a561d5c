// Fibers: the per-worker pools of lane regions, the lane entry point, and the SIGSEGV/SIGBUS
// handler that turns a lane's fault into an error instead of a dead process.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>

#include "internal.h"
#include "switch.h"

namespace metal_emu {

// ---- fibers ---------------------------------------------------------------------------------
// One region per lane: [guard page | stack | Lane record]. Pools are per worker slot and reused.
static char* g_pools[64];
char* region_pool(int slot) {
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
void set_fault_worker(Worker* w) { t_worker = w; }
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

void install_fault_handler() {
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

static void lane_main(void* arg) {
  Lane* L = static_cast<Lane*>(arg);
  L->worker->launch->k->entry(L);
  L->group->state[L->lane] = L_DONE;
  L->group->done++;
  metal_emu_switch(&L->sp, L->worker->sched_sp);
  __builtin_unreachable();
}

// The stack starts right below the lane's record; the first switch enters lane_main(L).
void* lane_initial_sp(Lane* L) { return init_frame(reinterpret_cast<char*>(L), L, lane_main, metal_emu_trampoline); }

}  // namespace metal_emu
