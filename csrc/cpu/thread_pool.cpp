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

class Pool {
 public:
  explicit Pool(int n) : n_(n) {
    for (int i = 1; i < n_; ++i) workers_.emplace_back([this] { worker(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
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
    {
      std::lock_guard<std::mutex> lk(m_);
      fn_ = &fn;
      n_tasks_ = n_tasks;
      next_.store(0);
      pending_ = n_ - 1;
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    work();
    std::unique_lock<std::mutex> lk(m_);
    done_cv_.wait(lk, [this] { return pending_ == 0; });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
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

  void work() {
    in_pool_task = true;
    for (int t; (t = next_.fetch_add(1)) < n_tasks_;) {
      try {
        (*fn_)(t);
      } catch (...) {
        std::lock_guard<std::mutex> lk(m_);
        if (!error_) error_ = std::current_exception();
      }
    }
    in_pool_task = false;
  }

  void worker() {
    unsigned long seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      work();
      std::lock_guard<std::mutex> lk(m_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }

  int n_;
  std::vector<std::thread> workers_;
  std::mutex m_, busy_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* fn_ = nullptr;
  int n_tasks_ = 0;
  std::atomic<int> next_{0};
  int pending_ = 0;
  unsigned long generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
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
