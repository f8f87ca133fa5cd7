// The time loop shared by every cell. One driver runs a forward pass (t = 0 .. T-1), one a backward pass
// (t = T-1 .. 0); a cell supplies each step as a short list of stages holding only its products and its pointwise
// math (rnn.h, lstm.h, gru.h), with its variants as template parameters.
//
// A stage, as every thread of the loop's team runs it at step t:
//   1. if Stage::packs: each thread packs its share of the stage's step operand, operand(t); then a barrier, since
//      every block's product reads every share;
//   2. omp for schedule(static) over the unit blocks: the block's products, products(t, b, block), then, if
//      Stage::rows, for every batch row n, with the block's width as a type (with_block_width):
//      row(t, n, block.begin, width) where step t is valid, masked_row(t, n, block.begin, width) where it is not;
//   3. the barrier closing the omp for, except after the last stage of a step when the first stage of a step packs
//      nothing (every backward pass): that stage then runs on the same blocks per thread (a static schedule of the
//      same count), and its own closing barrier comes before anyone repacks an operand the last stage still reads.
//      So a stage that does not pack may read only its own blocks' columns of what the stage before it wrote.
// Block shapes never depend on the thread count (common.h), so neither do results.
#pragma once

#include <optional>

#include "rnnext/common.h"
#include "rnnext/gemm.h"
#include "rnnext/thread_tuner.h"

namespace rnnext {

// What a stage packs before its products: `source` [N, stride] (row-major) into the shared `packed`.
template <typename Scalar>
struct StepOperand {
  PackedRhs<Scalar>* packed;
  const Scalar* source;
  Index stride;
};

// A time-major buffer [T (or T+1), N, width] seen one step at a time; or, for states that no backward pass
// will read, a ring of two slots [2, N, width] (step t in slot t % 2), since step t reads only slot t.
template <typename Scalar>
struct Sequence {
  Scalar* data;
  Index N, width;
  Index slot_mask = ~Index(0);  // every step its own slot; kRingOfTwo for a ring

  static constexpr Index kRingOfTwo = 1;
  Scalar* step(Index t) const { return data + (t & slot_mask) * N * width; }
  // Row n's columns [begin, begin + w) of step t.
  template <Index Fixed>
  auto segment(Index t, Index n, Index begin, BlockWidth<Fixed> w) const {
    return rnnext::segment(step(t), n, width, begin, w);
  }
};

// The unit blocks of one call and the two drivers, which choose their threads at each run.
class TimeLoop {
 public:
  // G gate blocks per unit: the work per step, which decides the thread count.
  TimeLoop(const Dims& d, Index G, const int64_t* lengths /* [N] or null */)
      : T_(d.T), N_(d.N), H_(d.H), G_(G), lengths_(lengths), blocks_(unit_blocks(d.H, d.N)) {}

  const std::vector<UnitBlock>& blocks() const { return blocks_; }

  template <typename... Stages>
  void forward(Stages&... stages) const {
    run(0, T_, 1, stages...);
  }
  template <typename... Stages>
  void backward(Stages&... stages) const {
    run(T_ - 1, -1, -1, stages...);
  }

 private:
  template <typename First, typename... Rest>
  void run(Index first_t, Index end_t, Index dt, First& first, Rest&... rest) const {
    // Chosen at each run, not once: a loop run many times (stepper.h) follows set_num_threads, and unless that
    // fixed the count, each run is timed for the next choice (thread_tuner.h).
    const TimedRun timed(typeid(First), N_, H_, (end_t - first_t) * dt, loop_threads(N_, H_, G_, Index(blocks_.size())));
    const int threads = timed.threads();
#pragma omp parallel num_threads(threads) if (threads > 1)
    for (Index t = first_t; t != end_t; t += dt) step<First::packs>(t, first, rest...);
  }

  // The stages of step t in order; the last ends in a barrier only when LastWaits.
  template <bool LastWaits, typename Stage, typename... Rest>
  void step(Index t, Stage& stage, Rest&... rest) const {
    run_stage<(LastWaits || sizeof...(Rest) > 0)>(t, stage);
    if constexpr (sizeof...(Rest) > 0) step<LastWaits>(t, rest...);
  }

  template <bool Wait, typename Stage>
  void run_stage(Index t, Stage& stage) const {
    if constexpr (Stage::packs) {
      const auto operand = stage.operand(t);
      operand.packed->pack_share(operand.source, operand.stride, thread_id(), thread_count());
#pragma omp barrier
    }
    const Index count = Index(blocks_.size());
    if constexpr (Wait) {
#pragma omp for schedule(static)
      for (Index b = 0; b < count; ++b) run_block(t, b, stage);
    } else {
#pragma omp for schedule(static) nowait
      for (Index b = 0; b < count; ++b) run_block(t, b, stage);
    }
  }

  template <typename Stage>
  void run_block(Index t, Index b, Stage& stage) const {
    const UnitBlock& block = blocks_[size_t(b)];
    stage.products(t, b, block);
    if constexpr (Stage::rows) {
      with_block_width(block.size, [&](auto w) {
        for (Index n = 0; n < N_; ++n) {
          if (step_valid(lengths_, t, n)) {
            stage.row(t, n, block.begin, w);
          } else {
            stage.masked_row(t, n, block.begin, w);
          }
        }
      });
    }
  }

  Index T_, N_, H_, G_;
  const int64_t* lengths_;
  std::vector<UnitBlock> blocks_;
};

// The recurrent product of a forward step, z += states . U_k for one unit block b and gate k: U's gate columns
// packed once per call, the step's states (h[t]) packed once per step by all threads.
template <typename Scalar>
class GateColumns {
 public:
  GateColumns(const Scalar* recurrent_kernel /* [H, G*H] */, const Dims& d, Index G, const TimeLoop& loop)
      : GateColumns(recurrent_kernel, d, G, loop, d.H) {}
  // States of another width than H (an LSTM with projection's P): recurrent_kernel [state_width, G*H].
  GateColumns(const Scalar* recurrent_kernel, const Dims& d, Index G, const TimeLoop& loop, Index state_width)
      : G_(G),
        depth_(gemm_depth<Scalar>(state_width, G * d.H, d.N)),
        columns_(pack_gate_columns(recurrent_kernel, d.H, G, loop.blocks(), depth_, d.N)),
        states_(depth_, d.N, d.N == 1) {}

  StepOperand<Scalar> operand(const Scalar* states /* [N, stride] */, Index stride) {
    return {&states_, states, stride};
  }
  // z points at the block's first unit of gate k in a row-major [N, stride] buffer.
  void add(Scalar* z, Index stride, Index b, Index k) const {
    states_.multiply_add(z, stride, columns_[size_t(b * G_ + k)]);
  }

 private:
  Index G_;
  GemmDepth depth_;
  std::vector<PackedLhs<Scalar>> columns_;
  PackedRhs<Scalar> states_;
};

// What a cell's forward class (LstmForward, GruForward, RnnForward) holds: its weights, the call's sizes, the time
// loop, the recurrent kernel packed per gate block, and, when it serves many calls (reuse), the input kernel
// packed once too (otherwise each call packs it with its input projection).
template <typename Scalar, typename Weights>
class PackedForward {
 protected:
  PackedForward(const Weights& weights, const Dims& d, Index G, const int64_t* lengths /* [N] or null */, bool reuse)
      : weights_(weights), d_(d), loop_(d, G, lengths), U_(weights.recurrent_kernel, d, G, loop_) {
    if (reuse) kernel_.emplace(weights.kernel, G * d.H, d.I, G * d.H, d.T * d.N);
  }
  const PackedWeight<Scalar>* packed_kernel() const { return kernel_ ? &*kernel_ : nullptr; }

  Weights weights_;
  Dims d_;
  TimeLoop loop_;
  mutable GateColumns<Scalar> U_;  // its packed step operand is scratch of each call
  std::optional<PackedWeight<Scalar>> kernel_;
};

// The recurrent product of a backward step, dh += dz . U^T for one unit block, over the columns
// [first_column, first_column + columns) of U: the block's rows of U packed once per call, the step's gate
// gradients dz packed once per step by all threads.
template <typename Scalar>
class UnitRows {
 public:
  UnitRows(const Scalar* recurrent_kernel /* [H, G*H] */, const Dims& d, Index G, Index first_column, Index columns,
           const TimeLoop& loop)
      : depth_(gemm_depth<Scalar>(columns, d.H, d.N)),
        rows_(pack_unit_rows(recurrent_kernel, G * d.H, first_column, loop.blocks(), depth_, d.N)),
        grads_(depth_, d.N, d.N == 1) {}

  StepOperand<Scalar> operand(const Scalar* dz /* [N, stride] */, Index stride) { return {&grads_, dz, stride}; }
  // dh points at the block's first unit in a row-major [N, stride] buffer.
  void add(Scalar* dh, Index stride, Index b) const { grads_.multiply_add(dh, stride, rows_[size_t(b)]); }

 private:
  GemmDepth depth_;
  std::vector<PackedLhs<Scalar>> rows_;
  PackedRhs<Scalar> grads_;
};

// The last stage of every backward step: backpropagate into h[t], dh += dz[t] . U^T. A row whose step is masked
// has dz = 0 and must pass dh through exactly; but 0 times a NaN or infinite weight is NaN, so such rows' dh is set
// aside around the product and put back (each thread moves only its own blocks' columns).
template <typename Scalar>
class BackpropIntoState {
 public:
  static constexpr bool packs = true, rows = false;

  BackpropIntoState(UnitRows<Scalar>& U, Sequence<const Scalar> dz /* [T, N, G*H], of which U's columns are used */,
                    Scalar* dh /* [N, H] the gradient on h[t+1], turned into the one on h[t] */, const Dims& d,
                    const int64_t* lengths /* [N] or null */)
      : U_(U), dz_(dz), dh_(dh), N_(d.N), H_(d.H), lengths_(lengths), kept_(lengths ? d.N * d.H : 0) {}

  StepOperand<Scalar> operand(Index t) const { return U_.operand(dz_.step(t), dz_.width); }
  void products(Index t, Index b, const UnitBlock& block) {
    Scalar* dh = dh_ + block.begin;
    if (lengths_ == nullptr) {
      U_.add(dh, H_, b);
      return;
    }
    Scalar* kept = kept_.data() + block.begin;  // [N, H]
    for (Index n = 0; n < N_; ++n)
      if (!step_valid(lengths_, t, n)) std::copy_n(dh + n * H_, block.size, kept + n * H_);
    U_.add(dh, H_, b);
    for (Index n = 0; n < N_; ++n)
      if (!step_valid(lengths_, t, n)) std::copy_n(kept + n * H_, block.size, dh + n * H_);
  }

 private:
  UnitRows<Scalar>& U_;
  Sequence<const Scalar> dz_;
  Scalar* dh_;
  Index N_, H_;
  const int64_t* lengths_;
  Workspace<Scalar> kept_;
};

}  // namespace rnnext
