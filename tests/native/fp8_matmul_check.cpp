// Cross-checks the SIMD FP8 matmul of one ISA against the portable scalar
// kernel over ragged shapes and block sizes. Built for aarch64 and run under
// qemu-user by tests/test_fp8_matmul_native.py (the NEON path has no native
// host here), and with the AVX-512 kernels compiled over SIMDe by
// tests/test_avx512_emulated.py (argv[1] = "avx512"; default: the detected ISA).
// Prints "ok <cases>" or the first mismatch; exit code 1 on failure.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cpu/kernels.h"

using namespace tandem::cpu;

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
  std::printf("ok %d isa=%s\n", cases, isa_name(isa));
  return 0;
}
