// Shared pieces of the rnnext engine: conventions, array views, activations, threading and the
// GEMM-shaped helpers that every cell uses before and after its time loop.
//
// Conventions (docs/conventions.md says the same at length):
//   T steps, N batch rows, I input size, H hidden size, G gate blocks (RNN 1, LSTM 4, coupled LSTM 3, GRU 3).
//   Sequences are time-major and row-major: x [T, N, I], y [T, N, H].
//   Weights: kernel [I, G*H], recurrent_kernel [H, G*H], bias [G*H]; gate blocks side by side along G*H.
//   Gate order: LSTM i,f,g,o (coupled: f,g,o); GRU r,z,n.
//   States are stored as h [T+1, N, H] with slot 0 = initial state, so step t reads h[t] and writes h[t+1].
//   lengths [N] (optional): step t of row n is valid when t < lengths[n]; invalid steps carry the state and
//   output zero. Weight gradients are assigned (never accumulated) by the engine.
//
// Parallelism: the hidden units are cut into fixed blocks of units (unit_block_size). Inside the time loop
// (time_loop.h) each thread owns whole blocks: it computes their gate columns with small GEMMs over pre-packed
// weights (gemm.h) and runs the fused pointwise pass on them. Block shapes never depend on the thread count, which
// keeps results bitwise identical for any number of threads. OpenMP is never used across time steps.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "rnnext/buffer_pool.h"
#include "rnnext/thread_tuner.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace rnnext {

using Index = Eigen::Index;

template <typename Scalar>
using VectorMap = Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>>;
template <typename Scalar>
using ConstVectorMap = Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>>;

// ---------------------------------------------------------------------------------------------------------
// Sizes of one call. Every buffer comment below uses these letters.
struct Dims {
  Index T = 0, N = 0, I = 0, H = 0;
};

// ---------------------------------------------------------------------------------------------------------
// Threads. One count for the whole process, read by every parallel region of the engine: OpenMP's own setting
// (omp_set_num_threads) belongs to the calling thread, so a new Python thread would not see it.
#ifdef _OPENMP
// OMP_NUM_THREADS, or one per processor, as the process started.
inline int default_threads() {
  static const int threads = omp_get_max_threads();
  return threads;
}
inline std::atomic<int>& thread_setting() {
  static std::atomic<int> threads{default_threads()};
  return threads;
}
#else
inline int default_threads() { return 1; }
#endif

inline int max_threads() {
#ifdef _OPENMP
  return thread_setting().load(std::memory_order_relaxed);
#else
  return 1;
#endif
}

// The most threads set_threads accepts. The threads meet at a barrier every time step, so more threads than
// processors only adds waiting; the margin leaves room to oversubscribe on purpose, while a count far beyond it
// would make OpenMP fail to create threads (or crash) at the next call instead of now.
inline int thread_limit() {
#ifdef _OPENMP
  return std::max(1, std::min(omp_get_thread_limit(), 4 * omp_get_num_procs()));
#else
  return 1;
#endif
}

// Eigen never threads its own products here (see "The large products" below); only OpenMP threads count.
inline void set_threads(int n) {
#ifdef _OPENMP
  thread_setting().store(n, std::memory_order_relaxed);
#else
  (void)n;
#endif
}

// Threads worth using inside the time loop: a barrier per step costs about a microsecond, so tiny steps
// run on one thread. The choice changes speed only, never results (blocks are fixed).
inline int loop_threads(Index N, Index H, Index G, Index unit_blocks) {
  const double flops_per_step = 2.0 * double(N) * double(H) * double(G) * double(H);
  int useful = flops_per_step < 2.0e5 ? 1 : max_threads();
  return int(std::max<Index>(1, std::min<Index>(useful, unit_blocks)));
}

// Hidden units [begin, begin + size) handled together by one thread.
struct UnitBlock {
  Index begin, size;
};

// Units per block: 32 for batches (small enough to balance two threads at H = 128), 128 for a single
// sequence, whose in-loop products are matrix-vector products that need long columns to keep several
// independent accumulators busy. The size depends on N only, never on the thread count.
constexpr Index kBatchUnitBlock = 32;
constexpr Index kVectorUnitBlock = 128;

inline Index unit_block_size(Index N) { return N == 1 ? kVectorUnitBlock : kBatchUnitBlock; }

inline std::vector<UnitBlock> unit_blocks(Index H, Index N) {
  const Index size = unit_block_size(N);
  std::vector<UnitBlock> blocks;
  for (Index j = 0; j < H; j += size) blocks.push_back({j, std::min(size, H - j)});
  return blocks;
}

// ---------------------------------------------------------------------------------------------------------
// Scratch memory of one call (gate gradients in the backward passes). It is left uninitialised: every element
// is written before it is read, and zeroing tens of megabytes would cost a pass over memory. Large buffers come
// from the BufferPool, which keeps them for the next call instead of letting them fault in again.
template <typename Scalar>
class Workspace {
 public:
  explicit Workspace(Index size) {
    const size_t bytes = std::max<size_t>(size_t(size) * sizeof(Scalar), 1);
    const bool pooled = BufferPool::pooled(bytes);
    void* memory = pooled ? BufferPool::instance().acquire(bytes) : std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (memory == nullptr) throw std::bad_alloc();
    data_ = std::unique_ptr<Scalar, Free>(static_cast<Scalar*>(memory), Free{pooled});
  }
  Scalar* data() { return data_.get(); }

 private:
  struct Free {
    bool pooled;
    void operator()(Scalar* p) const {
      if (pooled) {
        BufferPool::instance().release(p);
      } else {
        std::free(p);
      }
    }
  };
  std::unique_ptr<Scalar, Free> data_;
};

// ---------------------------------------------------------------------------------------------------------
// Masking by lengths. `lengths == nullptr` means every step is valid.
inline bool step_valid(const int64_t* lengths, Index t, Index n) {
  return lengths == nullptr || t < lengths[n];
}

// ---------------------------------------------------------------------------------------------------------
// Activations on contiguous segments (Eigen vectorises tanh and logistic for float). Derivatives are written
// on the activation's output y.
enum class Activation { Tanh, Relu, Sigmoid };

// sigmoid and tanh on array expressions. float uses Eigen's vectorised logistic and tanh, whose scalar and
// packet paths agree bit for bit. double uses the C library's scalar functions: Eigen's double packet exp
// differs from std::exp in the last bit, and which path an element takes depends on the buffer's alignment,
// so results would vary from call to call.
template <typename Derived>
auto sigmoid(const Eigen::ArrayBase<Derived>& a) {
  using Scalar = typename Derived::Scalar;
  if constexpr (std::is_same_v<Scalar, float>) {
    return a.logistic();
  } else {
    return a.unaryExpr([](Scalar v) { return Scalar(1) / (Scalar(1) + std::exp(-v)); });
  }
}

template <typename Derived>
auto tanh_of(const Eigen::ArrayBase<Derived>& a) {
  using Scalar = typename Derived::Scalar;
  if constexpr (std::is_same_v<Scalar, float>) {
    return a.tanh();
  } else {
    return a.unaryExpr([](Scalar v) { return std::tanh(v); });
  }
}

// The width of a unit block as a type, so the pointwise passes see full blocks at compile time. Eigen
// evaluates a fixed-size segment as whole packets with unaligned loads; given a run-time size it first
// peels scalar elements up to the next alignment boundary, which made most of a 32-unit segment scalar
// (about a third of an LSTM step's time). Any other size (a last, partial block) keeps the run-time size.
template <Index Fixed>
struct BlockWidth {
  static constexpr Index fixed = Fixed;
  static constexpr Index max_size = Fixed == Eigen::Dynamic ? kVectorUnitBlock : Fixed;
  Index size;
};
static_assert(kBatchUnitBlock <= kVectorUnitBlock, "a run-time-size block must fit BlockWidth<Dynamic>::max_size");

// Calls body(width) with the block's width as a BlockWidth.
template <typename Body>
void with_block_width(Index size, Body&& body) {
  if (size == kBatchUnitBlock) {
    body(BlockWidth<kBatchUnitBlock>{size});
  } else if (size == kVectorUnitBlock) {
    body(BlockWidth<kVectorUnitBlock>{size});
  } else {
    body(BlockWidth<Eigen::Dynamic>{size});
  }
}

// A short array of one unit block, kept on the stack.
template <typename Scalar, typename Width>
using BlockArray = Eigen::Array<Scalar, Width::fixed, 1, 0, Width::max_size, 1>;

// Segment [begin, begin + width) of row `row` of a row-major matrix with `row_size` columns.
template <typename Scalar, Index Fixed>
auto segment(Scalar* base, Index row, Index row_size, Index begin, BlockWidth<Fixed> width) {
  return Eigen::Map<Eigen::Array<Scalar, Fixed, 1>>(base + row * row_size + begin, width.size);
}
template <typename Scalar, Index Fixed>
auto segment(const Scalar* base, Index row, Index row_size, Index begin, BlockWidth<Fixed> width) {
  return Eigen::Map<const Eigen::Array<Scalar, Fixed, 1>>(base + row * row_size + begin, width.size);
}

// ---------------------------------------------------------------------------------------------------------
// The large products before and after the time loop, over all T*N rows at once (gemm.h). rnnext threads them
// itself (Eigen's own threading stays off): each is cut into chunks of fixed size, one single-threaded
// product per chunk, so chunk boundaries, and hence results, never depend on the thread count.
constexpr Index kRowChunk = 256;     // rows of T*N per chunk of an input-side product
constexpr Index kColumnChunk = 256;  // output columns per chunk of a weight-gradient product

// Runs body(chunk) for every chunk, on several threads only when the work (in flops) pays for waking them:
// a parallel region costs microseconds on an idle machine and far more on a busy one.
constexpr double kParallelWork = 2.0e6;

template <typename Body>
void parallel_chunks(Index chunks, double work, Body body) {
  const TimedRun timed(typeid(Body), 0, 0, chunks, chunks > 1 && work > kParallelWork ? max_threads() : 1);
#pragma omp parallel for schedule(dynamic) num_threads(timed.threads()) if (timed.threads() > 1)
  for (Index chunk = 0; chunk < chunks; ++chunk) body(chunk);
}

inline Index chunk_count(Index size, Index chunk) { return (size + chunk - 1) / chunk; }

// Elementwise passes (optimizer updates, clipping, embeddings) split their elements into fixed chunks; a static
// schedule gives each thread a contiguous run of them. Below kParallelElements elements a parallel region
// (microseconds) costs more than the pass it would split.
constexpr Index kElementChunk = Index(1) << 14;
constexpr Index kParallelElements = Index(1) << 16;

// Runs body(begin, end) over [0, size) in chunks of kElementChunk.
template <typename Body>
void parallel_elements(Index size, Body body) {
  const Index chunks = chunk_count(size, kElementChunk);
  const TimedRun timed(typeid(Body), 0, 0, size, size >= kParallelElements ? max_threads() : 1);
#pragma omp parallel for schedule(static) num_threads(timed.threads()) if (timed.threads() > 1)
  for (Index chunk = 0; chunk < chunks; ++chunk)
    body(chunk * kElementChunk, std::min(size, (chunk + 1) * kElementChunk));
}

// out [n] = column sums of in [rows, n], added row by row in order (Eigen's colwise().sum() may regroup the
// additions depending on the buffer's alignment, which would make results vary between calls). With
// `accumulate`, the rows are added to what out holds.
template <typename Scalar>
void column_sums(Scalar* out, const Scalar* in, Index in_stride, Index rows, Index n, bool accumulate = false) {
  parallel_chunks(chunk_count(n, kColumnChunk), double(rows) * double(n), [&](Index chunk) {
    const Index first = chunk * kColumnChunk, count = std::min(kColumnChunk, n - first);
    VectorMap<Scalar> sum(out + first, count);
    if (!accumulate) sum.setZero();
    for (Index row = 0; row < rows; ++row) sum += ConstVectorMap<Scalar>(in + row * in_stride + first, count);
  });
}

}  // namespace rnnext
