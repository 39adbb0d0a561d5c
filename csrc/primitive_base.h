// Shared pieces of our primitives: GPU evaluation is wired per primitive on
// macOS (csrc/metal/); elsewhere a GPU stream is a clear error, never a hang.
#pragma once

#include <string>
#include <vector>

#include "mlx/backend/cpu/encoder.h"
#include "mlx/primitives.h"

namespace tandem {

namespace mx = mlx::core;

[[noreturn]] inline void no_gpu(const char* name) {
  throw std::runtime_error(std::string(name) +
                           ": no GPU kernel in this build (Metal kernels are built on macOS only); "
                           "use a CPU stream");
}

// Queues fn on the primitive's CPU stream with inputs and outputs (already
// given their buffers) kept alive until it has run.
template <class F>
void enqueue_cpu(const mx::Stream& s, const std::vector<mx::array>& inputs,
                 std::vector<mx::array>& outputs, F&& fn) {
  auto& enc = mx::cpu::get_command_encoder(s);
  for (auto& i : inputs) enc.set_input_array(i);
  for (auto& o : outputs) enc.set_output_array(o);
  std::vector<mx::array> in, out;
  for (auto& i : inputs) in.push_back(mx::array::unsafe_weak_copy(i));
  for (auto& o : outputs) out.push_back(mx::array::unsafe_weak_copy(o));
  enc.dispatch([in = std::move(in), out = std::move(out), fn = std::forward<F>(fn)]() mutable {
    fn(in, out);
  });
}

// Allocates the outputs, then enqueue_cpu.
template <class F>
void dispatch_cpu(const mx::Stream& s, const std::vector<mx::array>& inputs,
                  std::vector<mx::array>& outputs, F&& fn) {
  for (auto& o : outputs) o.set_data(mx::allocator::malloc(o.nbytes()));
  enqueue_cpu(s, inputs, outputs, std::forward<F>(fn));
}

} // namespace tandem
