// Errors raised from inside a lane (bounds, unbound buffers, limits), threadgroup memory with its
// red zones, and the builtin values lanes are launched with.
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <dlfcn.h>

#include "internal.h"

namespace metal_emu {

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
char* tg_carve(Worker* w, size_t size, size_t align, const void* key, const char* name, const char* file,
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
bool check_red_zones(Worker* w) {
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

}  // namespace metal_emu
