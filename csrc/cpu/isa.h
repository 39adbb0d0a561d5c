// Which instruction-set path the CPU kernels take.
#pragma once

namespace tandem::cpu {

enum class Isa { Scalar, Avx2, Avx512, Neon };

const char* isa_name(Isa isa);
// Best path this processor supports.
Isa detected_isa();
// The path to run now: TANDEM_ISA (scalar|avx2|avx512|neon) if set, else the
// detected one. Asking for a path the processor lacks throws ValueError-style
// std::invalid_argument so tests fail loudly instead of faulting.
Isa active_isa();

} // namespace tandem::cpu
