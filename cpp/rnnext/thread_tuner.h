// The thread count of a time loop (and of the large products around it), chosen by measurement unless the user
// has fixed it.
//
// The threads of a time loop meet at a barrier every step. On an idle machine two threads beat one (an LSTM with
// N = 50, H = 128 took 0.62x the time). When another process holds a core, the thread the operating system has
// descheduled holds its partner up at every barrier, and two threads were measured 3 to 26 times slower than one.
// Which one wins depends on the machine's load, which changes while a program runs. Being late at a barrier
// cannot be told apart from a hypervisor's steal (tried and reverted in a2f1200). So each loop times itself.
// Per shape it keeps the mean time per step of one thread and of all threads, and runs the faster. Now and
// then it runs the slower again, as rarely as keeps that exploration's extra cost near kExploreCost of the
// running time. The large products before and after the loop (gemm.h) choose the same way: their threads meet
// at barriers too. The thread count never changes a result (unit blocks and work items are fixed), so the
// choice may change from call to call.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <typeinfo>

#include "rnnext/common.h"

namespace rnnext {

// False once set_num_threads has fixed the count: every loop then uses it as given.
inline std::atomic<bool>& thread_tuning() {
  static std::atomic<bool> tuning{true};
  return tuning;
}

// The choice between one thread and `many` for one shape, from the times recorded for each.
class ThreadChooser {
 public:
  // Explored calls cost at most about this share of the running time.
  static constexpr double kExploreCost = 0.02;
  // Each count is tried this often first (calls alternate), so one slow warm-up call decides nothing.
  static constexpr int kWarmUpTries = 3;
  // Weight of the newest time in each mean.
  static constexpr double kNewWeight = 0.25;
  // The slower count is tried again after at most this many calls, however much slower it was.
  static constexpr int64_t kMaxInterval = 4096;

  explicit ThreadChooser(int many) : many_(std::max(many, 1)) {}

  int many() const { return many_; }

  // The thread count for the next call.
  int choose() {
    if (many_ == 1) return 1;
    const int warm_up = std::min(tries_[0], tries_[1]);
    if (warm_up < kWarmUpTries) return tries_[1] <= tries_[0] ? many_ : 1;
    const int best = mean_[0] <= mean_[1] ? 0 : 1, other = 1 - best;
    // Exploring every k calls costs (ratio - 1) / k of the time; k is the smallest that keeps it under kExploreCost.
    const double ratio = mean_[other] / std::max(mean_[best], 1e-12);
    const double interval = std::min(double(kMaxInterval), std::ceil((ratio - 1.0) / kExploreCost));
    if (++since_explored_ >= std::max<int64_t>(2, int64_t(interval))) {
      since_explored_ = 0;
      return count(other);
    }
    return count(best);
  }

  // The measured time of a call that ran on `threads` threads, per time step.
  void record(int threads, double seconds_per_step) {
    const int slot = threads == 1 ? 0 : 1;
    mean_[slot] = tries_[slot] == 0 ? seconds_per_step
                                    : (1.0 - kNewWeight) * mean_[slot] + kNewWeight * seconds_per_step;
    ++tries_[slot];
  }

  double mean(int threads) const { return mean_[threads == 1 ? 0 : 1]; }
  int tries(int threads) const { return tries_[threads == 1 ? 0 : 1]; }

 private:
  int count(int slot) const { return slot == 0 ? 1 : many_; }

  int many_;
  double mean_[2] = {0.0, 0.0};
  int tries_[2] = {0, 0};
  int64_t since_explored_ = 0;
};

// One run of a parallel region: its thread count (chosen, or as set), and on destruction the time it took,
// recorded for its kind of work: `site` (the time loop's stage types, so the cell, variant and direction; or the
// product's function and scalar type), two sizes that fix its shape, and `scale`, the amount of work that varies
// (time steps, rows), to the nearest power of two, by which the time is divided.
class TimedRun {
 public:
  TimedRun(const std::type_info& site, Index a, Index b, Index scale, int candidates)
      : threads_(candidates), scale_(std::max<Index>(scale, 1)) {
    if (candidates <= 1 || !thread_tuning().load(std::memory_order_relaxed)) return;
    const Key key{site.hash_code(), a, b, Index(std::ilogb(double(scale_))), candidates};
    std::lock_guard<std::mutex> lock(mutex());
    chooser_ = &choosers().try_emplace(key, candidates).first->second;
    threads_ = chooser_->choose();
    started_ = std::chrono::steady_clock::now();
  }
  ~TimedRun() {
    if (chooser_ == nullptr) return;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    std::lock_guard<std::mutex> lock(mutex());
    chooser_->record(threads_, seconds / double(scale_));
  }
  TimedRun(const TimedRun&) = delete;
  TimedRun& operator=(const TimedRun&) = delete;

  int threads() const { return threads_; }

 private:
  using Key = std::tuple<size_t, Index, Index, Index, int>;
  // Choosers live for the whole process (a few per model shape); std::map keeps their addresses stable.
  static std::map<Key, ThreadChooser>& choosers() {
    static std::map<Key, ThreadChooser> table;
    return table;
  }
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }

  int threads_;
  Index scale_;
  ThreadChooser* chooser_ = nullptr;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace rnnext
