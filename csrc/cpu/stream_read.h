#pragma once

#include <cstdint>

namespace tandem::cpu {

// Reads every byte once across the pool; returns a checksum so the reads stay.
uint64_t stream_read(const uint8_t* data, int64_t nbytes);

} // namespace tandem::cpu
