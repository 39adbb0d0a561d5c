// A C driver for the runtime without Python, used to check the fiber code on other CPUs
// (test_platforms.py cross-compiles it for aarch64 and runs it under qemu-user). It links the
// units generated from kernels/reduce.metal, collectives.metal and broken.metal.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "launch.h"

using metal_emu::LaunchDesc;

static int find(const char* name) {
  for (int i = 0; i < metal_emu_kernel_count(); i++)
    if (!strcmp(metal_emu_kernel_name(i), name)) return i;
  fprintf(stderr, "no kernel %s\n", name);
  return -1;
}
static LaunchDesc desc(const char* name, uint32_t grid, uint32_t tg) {
  LaunchDesc d;
  memset(&d, 0, sizeof d);
  d.kernel = find(name);
  d.grid[0] = grid, d.grid[1] = d.grid[2] = 1;
  d.tg[0] = tg, d.tg[1] = d.tg[2] = 1;
  d.nworkers = 2;
  return d;
}
template <class T> static void bind(LaunchDesc& d, int i, std::vector<T>& v) {
  d.buf_ptr[i] = reinterpret_cast<uint64_t>(v.data());
  d.buf_size[i] = v.size() * sizeof(T);
  d.buf_bound[i] = 1;
}

int main() {
  int failures = 0;
  {  // simd_sum + threadgroup memory + barrier
    const uint32_t n = 5000, tg = 256, ng = (n + tg - 1) / tg;
    std::vector<float> x(n), partial(ng);
    std::vector<uint32_t> args{n};
    for (uint32_t i = 0; i < n; i++) x[i] = float(i % 7) - 3.0f;
    LaunchDesc d = desc("reduce_sum", n, tg);
    bind(d, 0, x), bind(d, 1, partial), bind(d, 2, args);
    int rc = metal_emu_dispatch(&d);
    double got = 0, want = 0;
    for (float p : partial) got += p;
    for (float v : x) want += v;
    bool ok = rc == 0 && std::fabs(got - want) < 1e-3 && d.bytes_read[0] == n * 4;
    printf("reduce_sum: %s (rc %d, %g vs %g)\n", ok ? "ok" : "FAIL", rc, got, want);
    failures += !ok;
  }
  {  // Hillis-Steele scan: many barriers
    const uint32_t n = 1000, tg = 100;
    std::vector<uint32_t> x(n), out(n);
    for (uint32_t i = 0; i < n; i++) x[i] = i % 13;
    LaunchDesc d = desc("block_scan", n, tg);
    bind(d, 0, x), bind(d, 1, out);
    d.tg_size[0] = 400;
    int rc = metal_emu_dispatch(&d);
    bool ok = rc == 0;
    for (uint32_t i = 0, acc = 0; i < n && ok; i++) {
      acc = (i % tg == 0 ? 0 : acc) + x[i];
      ok = out[i] == acc;
    }
    printf("block_scan: %s\n", ok ? "ok" : "FAIL");
    failures += !ok;
  }
  {  // divergence, out-of-bounds, stack overflow (signal handler path)
    struct Case { const char* kernel; int want; uint32_t grid, tg; } cases[] = {
        {"barrier_in_branch", 1, 64, 64}, {"read_past_end", 2, 64, 32}, {"stack_overflow", 3, 4, 4}};
    for (const Case& c : cases) {
      std::vector<float> a(64), b(64);
      std::vector<uint32_t> n{60000};
      LaunchDesc d = desc(c.kernel, c.grid, c.tg);
      bind(d, 0, a);
      if (!strcmp(c.kernel, "stack_overflow")) bind(d, 1, n);
      else bind(d, 1, b);
      int rc = metal_emu_dispatch(&d);
      bool ok = rc == c.want;
      printf("%s: %s (rc %d: %s)\n", c.kernel, ok ? "ok" : "FAIL", rc, d.err_msg);
      failures += !ok;
    }
  }
  printf(failures ? "FAILED\n" : "ALL OK\n");
  return failures ? 1 : 0;
}
