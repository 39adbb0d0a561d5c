#include "cpu/isa.h"

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace tandem::cpu {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Neon: return "neon";
  }
  return "?";
}

static Isa detect() {
#if defined(TANDEM_X86)
  __builtin_cpu_init();
  bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("f16c") &&
      __builtin_cpu_supports("fma");
  if (avx512) return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c"))
    return Isa::Avx2;
#elif defined(TANDEM_ARM)
  return Isa::Neon;
#endif
  return Isa::Scalar;
}

Isa detected_isa() {
  static const Isa isa = detect();
  return isa;
}

static bool supports(Isa want, Isa have) {
  if (want == Isa::Scalar) return true;
  if (want == Isa::Neon) return have == Isa::Neon;
  if (have == Isa::Neon) return false;
  return static_cast<int>(want) <= static_cast<int>(have);
}

Isa active_isa() {
  const char* env = std::getenv("TANDEM_ISA");
  Isa have = detected_isa();
  if (!env || !*env) return have;
  std::string s(env);
  Isa want;
  if (s == "scalar") want = Isa::Scalar;
  else if (s == "avx2") want = Isa::Avx2;
  else if (s == "avx512") want = Isa::Avx512;
  else if (s == "neon") want = Isa::Neon;
  else throw std::invalid_argument("TANDEM_ISA must be scalar, avx2, avx512 or neon, got '" + s + "'");
  if (!supports(want, have))
    throw std::invalid_argument(std::string("TANDEM_ISA=") + s +
                                " is not supported by this processor (best: " + isa_name(have) + ")");
  return want;
}

} // namespace tandem::cpu
