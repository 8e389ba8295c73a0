// Thread pool with a shared task counter: workers sleep on a condition variable between regions.
#include "thread_pool.h"

#include <algorithm>

namespace rlhf {

ThreadPool& ThreadPool::instance() {
  static ThreadPool pool;
  return pool;
}

ThreadPool::ThreadPool() {
  const unsigned hw = std::thread::hardware_concurrency();
  startWorkers(hw == 0 ? 1 : static_cast<int>(hw));
}

ThreadPool::~ThreadPool() { stopWorkers(); }

void ThreadPool::startWorkers(int n) {
  numThreads_ = n;
  stopping_ = false;
  for (int i = 1; i < n; ++i) workers_.emplace_back([this] { workerLoop(); });
}

void ThreadPool::stopWorkers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
  workers_.clear();
}

void ThreadPool::setNumThreads(int n) {
  std::lock_guard<std::mutex> region(regionMutex_);
  if (n == numThreads_) return;
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
    if (++finished_ == tasks_) done_.notify_all();
  }
}

void ThreadPool::workerLoop() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
    }
    drain();
  }
}

void ThreadPool::run(int64_t tasks, const std::function<void(int64_t)>& task) {
  if (tasks <= 0) return;
  std::lock_guard<std::mutex> region(regionMutex_);
  if (tasks == 1 || workers_.empty()) {
    for (int64_t i = 0; i < tasks; ++i) task(i);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    task_ = &task;
    tasks_ = tasks;
    next_ = 0;
    finished_ = 0;
    ++generation_;
  }
  wake_.notify_all();
  drain();
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [&] { return finished_ == tasks_; });
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
