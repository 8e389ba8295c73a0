// The library's own thread pool, one per process, shared by every Node environment (the main
// thread, worker_threads) and every libuv worker running an Async call. One parallel region runs
// at a time and the others wait their turn; the calling thread takes part, so a pool of one
// thread is just a loop. A region opened from inside a region runs inline. Between regions a worker spins briefly before it
// sleeps, so that the regions of a training step, microseconds apart, do not each pay a futex
// wake-up.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace rlhf {

class ThreadPool {
 public:
  // Never destroyed: at process exit a libuv worker may still be inside run(), and tearing the
  // pool down under it would be a use after free. The OS reclaims the threads.
  static ThreadPool& instance();

  int numThreads() const { return numThreads_.load(std::memory_order_relaxed); }
  // n >= 1; waits for any region in flight, then resizes.
  void setNumThreads(int n);
  // Runs task(i) for every i in [0, tasks) spread over the threads; returns when all are done.
  void run(int64_t tasks, const std::function<void(int64_t)>& task);

 private:
  ThreadPool();
  void startWorkers(int n);
  void stopWorkers();
  void workerLoop();
  void drain();
  void waitForRegion(uint64_t seen);
  void waitForFinish();

  std::atomic<int> numThreads_{1};
  std::vector<std::thread> workers_;
  std::mutex regionMutex_;  // one parallel region at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t tasks_ = 0, next_ = 0;
  std::atomic<int64_t> finished_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> sleepers_{0};  // workers waiting on wake_ (the others are spinning)
  std::atomic<bool> stopping_{false};
};

// Splits [0, n) into at most numThreads contiguous ranges of at least `grain` items, whose
// starts are multiples of `align`, and calls body(begin, end) for each. Runs inline when the
// work is too small to share.
void parallelFor(int64_t n, int64_t grain, int64_t align,
                 const std::function<void(int64_t, int64_t)>& body);

}  // namespace rlhf
