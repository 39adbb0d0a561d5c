// Shared by the macOS eval_gpu bodies: our metallib and one planned launch on the command encoder.
#pragma once

#include <utility>
#include <vector>

#include "mlx/array.h"
#include "mlx/backend/metal/device.h"
#include "metal/launch.h"

namespace tandem::metal {

namespace mx = mlx::core;

ActDtype act_dtype(const char* op, mx::Dtype t);

// Binds inputs and outputs (buffer index, array), the packed argument struct at L.args_index, and
// dispatches L's threadgroups. Kernels come from mlx_tandem.metallib next to the extension binary.
void encode_launch(const mx::Stream& s, const Launch& L, const std::vector<std::pair<int, const mx::array*>>& in,
                   const std::vector<std::pair<int, mx::array*>>& out);

}  // namespace tandem::metal
