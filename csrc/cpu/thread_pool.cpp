#include "cpu/thread_pool.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tandem::cpu {
namespace {

int physical_cores() {
  // Count distinct (package, core) pairs so SMT siblings are not doubled.
  std::set<std::pair<int, int>> cores;
  for (unsigned i = 0; i < 4096; ++i) {
    std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(i) + "/topology/";
    std::ifstream pkg(base + "physical_package_id"), core(base + "core_id");
    int p, c;
    if (!(pkg >> p) || !(core >> c)) break;
    cores.insert({p, c});
  }
  int n = static_cast<int>(cores.size());
  int hw = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = hw > 0 ? hw : 1;
  return n;
}

thread_local bool in_pool_task = false;

// A decode step issues hundreds of small kernels back to back, so the caller
// never waits for a sleeping worker to wake up: tasks are claimed from a
// shared counter, the caller claims too, and it waits only for tasks that a
// worker has actually started. Workers spin briefly before sleeping so that
// back-to-back kernels usually find them awake.
constexpr int kSpinIterations = 4000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

struct Job {
  const std::function<void(int)>* fn;
  int n_tasks;
  std::atomic<int> next{0}, done{0};
  std::mutex error_mutex;
  std::exception_ptr error;

  void execute() {
    for (int t; (t = next.fetch_add(1)) < n_tasks; done.fetch_add(1)) {
      try {
        (*fn)(t);
      } catch (...) {
        std::lock_guard<std::mutex> lk(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
  }
};

class Pool {
 public:
  explicit Pool(int n) : n_(n) {
    for (int i = 1; i < n_; ++i) workers_.emplace_back([this] { worker(); });
  }
  ~Pool() {
    stop_.store(true);
    {
      std::lock_guard<std::mutex> lk(m_);
      generation_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return n_; }

  void run(int n_tasks, const std::function<void(int)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (n_tasks <= 1 || n_ == 1 || in_pool_task || !busy.owns_lock()) {
      run_inline(n_tasks, fn);
      return;
    }
    Job job;
    job.fn = &fn;
    job.n_tasks = n_tasks;
    job_.store(&job);
    {
      std::lock_guard<std::mutex> lk(m_);
      generation_.fetch_add(1);
    }
    cv_.notify_all();
    in_pool_task = true;
    job.execute();
    in_pool_task = false;
    while (job.done.load() < n_tasks) cpu_relax();  // tasks that workers are running
    job_.store(nullptr);
    while (refs_.load() != 0) cpu_relax();  // workers still holding the job
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  static void run_inline(int n_tasks, const std::function<void(int)>& fn) {
    bool prev = in_pool_task;
    in_pool_task = true;
    try {
      for (int t = 0; t < n_tasks; ++t) fn(t);
    } catch (...) {
      in_pool_task = prev;
      throw;
    }
    in_pool_task = prev;
  }

  void worker() {
    in_pool_task = true;
    unsigned long seen = 0;
    for (;;) {
      for (int i = 0; i < kSpinIterations && generation_.load() == seen; ++i) cpu_relax();
      if (generation_.load() == seen) {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return generation_.load() != seen; });
      }
      seen = generation_.load();
      if (stop_.load()) return;
      // Announce before looking: the caller clears job_ and then waits for refs_ to drain.
      refs_.fetch_add(1);
      if (Job* job = job_.load()) job->execute();
      refs_.fetch_sub(1);
    }
  }

  int n_;
  std::vector<std::thread> workers_;
  std::mutex m_, busy_;
  std::condition_variable cv_;
  std::atomic<Job*> job_{nullptr};
  std::atomic<int> refs_{0};
  std::atomic<unsigned long> generation_{0};
  std::atomic<bool> stop_{false};
};

Pool& pool() {
  static Pool* p = [] {
    int n = physical_cores();
    if (const char* env = std::getenv("TANDEM_NUM_THREADS")) {
      int v = std::atoi(env);
      if (v > 0) n = v;
    }
    return new Pool(n);  // leaked on purpose: joining threads at exit races interpreter teardown
  }();
  return *p;
}

} // namespace

int num_threads() { return pool().size(); }

void parallel_for(int n_tasks, const std::function<void(int)>& fn) { pool().run(n_tasks, fn); }

} // namespace tandem::cpu
