// Cross-checks the SIMD FP8 matmul of one ISA against the portable scalar
// kernel over ragged shapes and block sizes. Built for aarch64 and run under
// qemu-user by tests/test_fp8_matmul_native.py (the NEON path has no native
// host here), and with the AVX-512 kernels compiled over SIMDe by
// tests/test_avx512_emulated.py (argv[1] = "avx512"; default: the detected ISA).
// The expert-gathered matmul (its batched GEMV and per-expert GEMM) is cross-checked the
// same way. Prints "ok <cases>" or the first mismatch; exit code 1 on failure.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cpu/kernels.h"

using namespace tandem::cpu;

// Random gathers (repeated, unsorted picks; few rows per expert and many) against the scalar path.
static bool check_gather(Isa isa, std::mt19937& rng, int& cases) {
  const int64_t shapes[][5] = {  // T, k, E, N, K
      {1, 8, 64, 33, 130}, {3, 4, 7, 16, 64}, {40, 2, 3, 17, 129}, {5, 1, 1, 130, 300}, {12, 8, 256, 7, 17}};
  const int64_t blocks[][2] = {{128, 128}, {3, 5}, {16, 1}};
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& sh : shapes)
    for (auto& b : blocks) {
      const int64_t T = sh[0], k = sh[1], E = sh[2], N = sh[3], K = sh[4], bn = b[0], bk = b[1];
      const int64_t sc = ((N + bn - 1) / bn) * ((K + bk - 1) / bk);
      std::vector<uint8_t> codes(E * N * K);
      for (auto& c : codes) c = static_cast<uint8_t>(rng() % 0xFF) & 0xFE;
      std::vector<float> scales(E * sc), x(T * K), y_ref(T * k * N), y(T * k * N), y_abs(T * k * N);
      for (auto& v : scales) v = std::ldexp(1.0f, static_cast<int>(rng() % 12) - 10);
      for (auto& v : x) v = u(rng);
      std::vector<int32_t> idx(T * k);
      for (auto& i : idx) i = static_cast<int32_t>(rng() % E);
      GatherFp8MatmulArgs g{x.data(), codes.data(), scales.data(), idx.data(), y_ref.data(), T, k, E, N, K, bn, bk};
      gather_fp8_matmul(Isa::Scalar, g);
      std::vector<uint8_t> abs_codes(codes);
      std::vector<float> abs_x(x);
      for (auto& c : abs_codes) c &= 0x7F;
      for (auto& v : abs_x) v = std::fabs(v);
      GatherFp8MatmulArgs g_abs = g;
      g_abs.x = abs_x.data();
      g_abs.codes = abs_codes.data();
      g_abs.y = y_abs.data();
      gather_fp8_matmul(Isa::Scalar, g_abs);
      g.y = y.data();
      gather_fp8_matmul(isa, g);
      for (int64_t i = 0; i < T * k * N; ++i)
        if (std::fabs(y[i] - y_ref[i]) > 2.0 * K * 1.2e-7 * y_abs[i] + 1e-30) {
          std::printf("gather mismatch isa=%s T=%ld k=%ld E=%ld N=%ld K=%ld block=(%ld,%ld) i=%ld got=%g want=%g\n",
                      isa_name(isa), long(T), long(k), long(E), long(N), long(K), long(bn), long(bk), long(i),
                      y[i], y_ref[i]);
          return false;
        }
      ++cases;
    }
  return true;
}

int main(int argc, char** argv) {
  const Isa isa = argc > 1 && std::string(argv[1]) == "avx512" ? Isa::Avx512 : detected_isa();
  std::mt19937 rng(1234);
  const int64_t ms[] = {1, 2, 3, 4, 5, 7, 8, 9, 13, 65};
  const int64_t ns[] = {1, 3, 7, 16, 33, 130};
  const int64_t ks[] = {1, 5, 8, 17, 64, 129, 300};
  const int64_t blocks[][2] = {{128, 128}, {1, 32}, {64, 32}, {3, 5}, {1, 1000000}};
  int cases = 0;
  for (int64_t m : ms)
    for (int64_t n : ns)
      for (int64_t k : ks)
        for (auto& b : blocks) {
          const int64_t bn = b[0], bk = std::min<int64_t>(b[1], k);
          std::vector<uint8_t> codes(n * k);
          for (auto& c : codes) c = static_cast<uint8_t>(rng() % 0xFF) & 0xFE;  // no NaN codes
          const int64_t sc = ((n + bn - 1) / bn) * ((k + bk - 1) / bk);
          std::vector<float> scales(sc), x(m * k), y_ref(m * n), y(m * n), y_abs(m * n);
          std::uniform_real_distribution<float> u(-1.0f, 1.0f);
          for (auto& s : scales) s = std::ldexp(1.0f, static_cast<int>(rng() % 12) - 10);
          for (auto& v : x) v = u(rng);
          Fp8MatmulArgs a{x.data(), codes.data(), scales.data(), y_ref.data(), m, n, k, bn, bk};
          fp8_matmul_scalar(a);
          // sum |x| |w| bounds the rounding error whatever the cancellation
          std::vector<uint8_t> abs_codes(codes);
          std::vector<float> abs_x(x);
          for (auto& c : abs_codes) c &= 0x7F;
          for (auto& v : abs_x) v = std::fabs(v);
          Fp8MatmulArgs a_abs{abs_x.data(), abs_codes.data(), scales.data(), y_abs.data(), m, n, k, bn, bk};
          fp8_matmul_scalar(a_abs);
          a.y = y.data();
          fp8_matmul(isa, a);
          for (int64_t i = 0; i < m * n; ++i) {
            const double tol = 2.0 * k * 1.2e-7 * y_abs[i] + 1e-30;
            if (std::fabs(y[i] - y_ref[i]) > tol) {
              std::printf("mismatch isa=%s m=%ld n=%ld k=%ld block=(%ld,%ld) i=%ld got=%g want=%g\n",
                          isa_name(isa), long(m), long(n), long(k), long(bn), long(bk), long(i),
                          y[i], y_ref[i]);
              return 1;
            }
          }
          ++cases;
        }
  if (!check_gather(isa, rng, cases)) return 1;
  std::printf("ok %d isa=%s\n", cases, isa_name(isa));
  return 0;
}
