// The library's own thread pool. One parallel region runs at a time; the calling thread takes
// part, so a pool of one thread is just a loop. Between regions a worker spins briefly before it
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
  static ThreadPool& instance();
  ~ThreadPool();

  int numThreads() const { return numThreads_; }
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

  int numThreads_ = 1;
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
