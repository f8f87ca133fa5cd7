// Large buffers kept for reuse between engine calls: the workspaces of a pass and the arrays the bindings return
// (caches, outputs, gradients).
//
// Why: a training step allocates the same few large buffers every call, and glibc gives freed memory back to the
// system once more than its trim threshold is free at the top of its heap (or unmaps a buffer it mapped). The next
// call then faults every 4 KiB page in again: an LSTM step at T = 100, N = 32, H = 256 took 5,600 page faults and
// 13% of its time for them, a layer-normalised one 8,100 and 23%. Kept here, a buffer is reused without a fault.
//
// Only buffers of kPooledBytes or more come here. Idle buffers are kept up to a limit (set_limit; 0 frees them
// all and keeps none), the least recently released freed first. A request takes the smallest idle buffer that
// fits it with at most an eighth to spare. Buffers of 4 MiB or more are 2 MiB aligned and advised to use
// transparent huge pages, as NumPy does for its own arrays. Under AddressSanitizer idle buffers are poisoned, so a
// use after release is still reported.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define RNNEXT_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define RNNEXT_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define RNNEXT_POISON(p, n) ((void)(p), (void)(n))
#define RNNEXT_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace rnnext {

class BufferPool {
 public:
  static constexpr size_t kPooledBytes = size_t(512) << 10;
  static constexpr size_t kDefaultLimit = size_t(1) << 30;  // of idle bytes

  struct Stats {
    size_t idle_bytes, idle_buffers, in_use_bytes, in_use_buffers, limit;
    uint64_t reused, allocated;  // requests served from idle buffers, and by new ones
  };

  // The process's pool (never destroyed: arrays released at interpreter exit may still return their buffers).
  static BufferPool& instance() {
    static BufferPool* pool = new BufferPool();
    return *pool;
  }

  static bool pooled(size_t bytes) { return bytes >= kPooledBytes; }

  // A buffer of at least `bytes` (pooled(bytes)), 64-byte aligned.
  void* acquire(size_t bytes) {
    const size_t wanted = rounded(bytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      size_t best = idle_.size();
      for (size_t k = 0; k < idle_.size(); ++k)
        if (idle_[k].bytes >= wanted && idle_[k].bytes - wanted <= wanted / 8 &&
            (best == idle_.size() || idle_[k].bytes < idle_[best].bytes))
          best = k;
      if (best < idle_.size()) {
        const Buffer buffer = idle_[best];
        idle_.erase(idle_.begin() + std::ptrdiff_t(best));
        idle_bytes_ -= buffer.bytes;
        in_use_.emplace(buffer.data, buffer.bytes);
        in_use_bytes_ += buffer.bytes;
        ++reused_;
        RNNEXT_UNPOISON(buffer.data, buffer.bytes);
        return buffer.data;
      }
    }
    void* data = allocate(wanted);
    std::lock_guard<std::mutex> lock(mutex_);
    in_use_.emplace(data, wanted);
    in_use_bytes_ += wanted;
    ++allocated_;
    return data;
  }

  // Gives back a buffer from acquire; it is kept idle while the limit allows.
  void release(void* data) {
    std::vector<void*> freed;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto found = in_use_.find(data);
      if (found == in_use_.end()) std::abort();  // not ours: a bug in the engine, not in the caller's input
      const Buffer buffer{data, found->second};
      in_use_.erase(found);
      in_use_bytes_ -= buffer.bytes;
      RNNEXT_POISON(buffer.data, buffer.bytes);
      idle_.push_back(buffer);
      idle_bytes_ += buffer.bytes;
      freed = trim();
    }
    for (void* p : freed) std::free(p);
  }

  // The most idle bytes kept from now on; idle buffers over it are freed at once.
  void set_limit(size_t bytes) {
    std::vector<void*> freed;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      limit_ = bytes;
      freed = trim();
    }
    for (void* p : freed) std::free(p);
  }

  Stats stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return {idle_bytes_, idle_.size(), in_use_bytes_, in_use_.size(), limit_, reused_, allocated_};
  }

 private:
  struct Buffer {
    void* data;
    size_t bytes;
  };
  static constexpr size_t kHugePage = size_t(2) << 20;

  BufferPool() = default;

  // Sizes in steps of 64 KiB, or of 2 MiB from 4 MiB on (whole huge pages).
  static size_t rounded(size_t bytes) {
    const size_t step = bytes >= 2 * kHugePage ? kHugePage : size_t(64) << 10;
    return (bytes + step - 1) / step * step;
  }

  static void* allocate(size_t bytes) {
    const size_t alignment = bytes >= 2 * kHugePage ? kHugePage : 64;
    void* memory = std::aligned_alloc(alignment, bytes);  // bytes is a multiple of the alignment
    if (memory == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (alignment == kHugePage) madvise(memory, bytes, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
    return memory;
  }

  // Drops the least recently released idle buffers until the idle bytes are within the limit; the caller frees
  // them outside the lock.
  std::vector<void*> trim() {
    std::vector<void*> freed;
    size_t oldest = 0;
    while (idle_bytes_ > limit_) {
      idle_bytes_ -= idle_[oldest].bytes;
      RNNEXT_UNPOISON(idle_[oldest].data, idle_[oldest].bytes);
      freed.push_back(idle_[oldest].data);
      ++oldest;
    }
    idle_.erase(idle_.begin(), idle_.begin() + std::ptrdiff_t(oldest));
    return freed;
  }

  mutable std::mutex mutex_;
  std::vector<Buffer> idle_;  // in the order they were released
  std::unordered_map<void*, size_t> in_use_;
  size_t idle_bytes_ = 0, in_use_bytes_ = 0, limit_ = kDefaultLimit;
  uint64_t reused_ = 0, allocated_ = 0;
};

}  // namespace rnnext
