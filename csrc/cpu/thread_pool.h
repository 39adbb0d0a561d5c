// One persistent pool for every CPU kernel: threads = physical cores
// (TANDEM_NUM_THREADS overrides). The caller thread takes part as worker 0.
#pragma once

#include <cstddef>
#include <functional>

namespace tandem::cpu {

int num_threads();

// Runs fn(task) for task in [0, n_tasks) across the pool and returns when all
// are done. Calls from inside a task, or concurrent calls from other threads
// while the pool is busy, run inline on the caller (never deadlock).
void parallel_for(int n_tasks, const std::function<void(int)>& fn);

} // namespace tandem::cpu
