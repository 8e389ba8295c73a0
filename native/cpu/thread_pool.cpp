// Thread pool with a shared task counter: between regions workers spin for kSpin, then sleep on a
// condition variable.
#include "thread_pool.h"

#include <algorithm>
#include <chrono>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace rlhf {

// How long a worker keeps polling for the next region before it sleeps: longer than the gaps
// between the kernels of one step, short enough that an idle process stops using the CPU at once.
constexpr std::chrono::microseconds kSpin{100};

static inline void cpuRelax() {
#if defined(__SSE2__)
  _mm_pause();
#endif
}

// Polls `done` until it holds or kSpin has passed; true when it held.
template <typename Done>
static bool spinUntil(Done done) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (int i = 1;; ++i) {
    if (done()) return true;
    cpuRelax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > until) return done();
  }
}

// Set while a thread runs a region's task (or opened the region), so that a nested region runs
// inline instead of waiting forever for the region it is part of.
static thread_local bool tInRegion = false;

ThreadPool& ThreadPool::instance() {
  static ThreadPool* const pool = new ThreadPool();
  return *pool;
}

ThreadPool::ThreadPool() {
  const unsigned hw = std::thread::hardware_concurrency();
  startWorkers(hw == 0 ? 1 : static_cast<int>(hw));
}

void ThreadPool::startWorkers(int n) {
  numThreads_.store(n, std::memory_order_relaxed);
  stopping_.store(false);
  for (int i = 1; i < n; ++i) workers_.emplace_back([this] { workerLoop(); });
}

void ThreadPool::stopWorkers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_.store(true);
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
  workers_.clear();
}

void ThreadPool::setNumThreads(int n) {
  std::lock_guard<std::mutex> region(regionMutex_);
  if (n == numThreads()) return;
  stopWorkers();
  startWorkers(n);
}

// Takes tasks until none are left; called by workers and by the thread that opened the region.
void ThreadPool::drain() {
  for (;;) {
    int64_t i;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (next_ >= tasks_) return;
      i = next_++;
    }
    (*task_)(i);
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_.fetch_add(1) + 1 == tasks_) done_.notify_all();
  }
}

// Returns once a region newer than `seen` has opened (or the pool is stopping).
void ThreadPool::waitForRegion(uint64_t seen) {
  auto opened = [&] { return stopping_.load() || generation_.load() != seen; };
  if (spinUntil(opened)) return;
  std::unique_lock<std::mutex> lock(mutex_);
  sleepers_.fetch_add(1);
  wake_.wait(lock, opened);
  sleepers_.fetch_sub(1);
}

void ThreadPool::workerLoop() {
  tInRegion = true;  // everything a worker runs is inside a region
  uint64_t seen = 0;
  for (;;) {
    waitForRegion(seen);
    if (stopping_.load()) return;
    seen = generation_.load();
    drain();
  }
}

// Returns once every task of the open region has finished.
void ThreadPool::waitForFinish() {
  auto finished = [&] { return finished_.load() == tasks_; };
  if (spinUntil(finished)) return;
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, finished);
}

void ThreadPool::run(int64_t tasks, const std::function<void(int64_t)>& task) {
  if (tasks <= 0) return;
  if (tInRegion) {
    for (int64_t i = 0; i < tasks; ++i) task(i);
    return;
  }
  std::lock_guard<std::mutex> region(regionMutex_);
  struct InRegion {
    InRegion() { tInRegion = true; }
    ~InRegion() { tInRegion = false; }
  } inRegion;
  if (tasks == 1 || workers_.empty()) {
    for (int64_t i = 0; i < tasks; ++i) task(i);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    task_ = &task;
    tasks_ = tasks;
    next_ = 0;
    finished_.store(0);
    generation_.fetch_add(1);
  }
  if (sleepers_.load() > 0) wake_.notify_all();
  drain();
  waitForFinish();
  std::lock_guard<std::mutex> lock(mutex_);
  task_ = nullptr;
}

void parallelFor(int64_t n, int64_t grain, int64_t align,
                 const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  const int64_t threads = ThreadPool::instance().numThreads();
  int64_t parts = std::min<int64_t>(threads, std::max<int64_t>(1, n / std::max<int64_t>(grain, 1)));
  if (parts <= 1) {
    body(0, n);
    return;
  }
  // Equal shares rounded up to `align`, so that no two threads write one cache line.
  const int64_t share = ((n + parts - 1) / parts + align - 1) / align * align;
  parts = (n + share - 1) / share;
  ThreadPool::instance().run(parts, [&](int64_t p) {
    const int64_t begin = p * share;
    body(begin, std::min(n, begin + share));
  });
}

}  // namespace rlhf
