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

// What a stage packs before its products: `source` [N, stride] (row-major) into the shared `packed`; with a
// mask, source's first `width` columns times mask [N, width] (recurrent dropout), written to `masked` first.
template <typename Scalar>
struct StepOperand {
  PackedRhs<Scalar>* packed;
  const Scalar* source;
  Index stride;
  const Scalar* mask = nullptr;  // [N, width] or null
  Scalar* masked = nullptr;      // [N, width] scratch of the call
  Index rows = 0, width = 0;
};

// ---------------------------------------------------------------------------------------------------------
// The regularisers' masks of one call (issue 15), drawn by the caller and passed to its forward and backward
// pass alike; a null mask is off. Dropout masks hold 0 or 1 / (1 - rate) (inverted dropout).
template <typename Scalar>
struct Zoneout {
  const Scalar* keep = nullptr;  // [T, N, H] training: 1 where a unit keeps its previous value, else 0
  Scalar rate = 0;               // without keep: evaluation, the expectation h = rate * h[t] + (1 - rate) * h~

  bool active() const { return keep != nullptr || rate != Scalar(0); }
  // The share of the previous value kept for row n's units [j, j + w) at step t.
  template <typename W>
  BlockArray<Scalar, W> share(Index t, Index n, Index j, W w, Index N, Index H) const {
    if (keep != nullptr) return segment(keep + t * N * H, n, H, j, w);
    return BlockArray<Scalar, W>::Constant(w.size, rate);
  }
  // The same for one unit u (the stages that walk raw rows, e.g. the LSTM projection's).
  Scalar share(Index t, Index n, Index u, Index N, Index H) const {
    return keep != nullptr ? keep[(t * N + n) * H + u] : rate;
  }
};

template <typename Scalar>
struct Masks {
  const Scalar* input = nullptr;   // [N, I] variational dropout on every x[t] (Keras's dropout)
  const Scalar* state = nullptr;   // [N, H] on every h[t] where it enters the recurrent product (recurrent_dropout)
  const Scalar* weight = nullptr;  // [H, G*H] weight-drop (DropConnect) on recurrent_kernel, once per call
  Zoneout<Scalar> zoneout_h, zoneout_c;  // zoneout_c: LSTM only
};

// out [T, N, width] = in [T, N, width] with row n of every step times mask row n (in may be out).
template <typename Scalar>
void mask_rows(Scalar* out, const Scalar* in, const Scalar* mask /* [N, width] */, Index T, Index N, Index width) {
  parallel_chunks(chunk_count(T * N, kRowChunk), double(T * N) * double(width), [&](Index chunk) {
    const Index first = chunk * kRowChunk, last = std::min(T * N, first + kRowChunk);
    for (Index row = first; row < last; ++row)
      VectorMap<Scalar>(out + row * width, width) =
          ConstVectorMap<Scalar>(in + row * width, width) * ConstVectorMap<Scalar>(mask + (row % N) * width, width);
  });
}

// The operands that a call's masks change, each a masked copy (or the operand itself when its mask is off):
// the recurrent kernel * weight mask, made once per call and read by the forward and backward passes; the
// inputs x * input mask; the states h[t] * state mask that the recurrent kernel's gradient reads. The states
// have H units, or state_width (an LSTM with projection's P; then recurrent_kernel and the weight mask are
// [P, G*H] and the state mask [N, P]).
template <typename Scalar>
class MaskedOperands {
 public:
  MaskedOperands(const Masks<Scalar>& masks, const Dims& d, Index GH, const Scalar* recurrent_kernel /* [H, G*H] */,
                 Index state_width = 0 /* 0: H */)
      : masks_(masks), d_(d), GH_(GH), S_(state_width > 0 ? state_width : d.H),
        x_(masks.input ? d.T * d.N * d.I : 0), recurrent_(masks.weight ? S_ * GH : 0),
        recurrent_kernel_(recurrent_kernel) {
    if (masks.weight) {
      VectorMap<Scalar>(recurrent_.data(), S_ * GH) =
          ConstVectorMap<Scalar>(recurrent_kernel, S_ * GH) * ConstVectorMap<Scalar>(masks.weight, S_ * GH);
      recurrent_kernel_ = recurrent_.data();
    }
  }
  const Masks<Scalar>& masks() const { return masks_; }
  const Scalar* recurrent_kernel() const { return recurrent_kernel_; }

  // x [T, N, I] times the input mask (in a buffer of this object's, overwritten by the next call).
  const Scalar* inputs(const Scalar* x) const {
    if (masks_.input == nullptr) return x;
    mask_rows(x_.data(), x, masks_.input, d_.T, d_.N, d_.I);
    return x_.data();
  }
  // states [T, N, H] (h[0..T-1], or GRU's r * h[t]) times the state mask, in `scratch` [T, N, H] when it is on.
  const Scalar* states(const Scalar* states, Workspace<Scalar>& scratch) const {
    if (masks_.state == nullptr) return states;
    mask_rows(scratch.data(), states, masks_.state, d_.T, d_.N, S_);
    return scratch.data();
  }
  // From the gradients on the masked operands to those on the operands themselves.
  void unmask(Scalar* dx /* [T, N, I] */, Scalar* drecurrent /* [H, G*H] */) const {
    if (masks_.input) mask_rows(dx, dx, masks_.input, d_.T, d_.N, d_.I);
    if (masks_.weight)
      VectorMap<Scalar>(drecurrent, S_ * GH_) *= ConstVectorMap<Scalar>(masks_.weight, S_ * GH_);
  }

 private:
  Masks<Scalar> masks_;
  Dims d_;
  Index GH_, S_;  // S_: the states' width
  mutable Workspace<Scalar> x_;
  Workspace<Scalar> recurrent_;
  const Scalar* recurrent_kernel_;
};

// Share `share` of `shares` of a masked step operand's rows: masked = source * mask.
template <typename Scalar>
void mask_share(const StepOperand<Scalar>& operand, Index share, Index shares) {
  for (Index n = operand.rows * share / shares; n < operand.rows * (share + 1) / shares; ++n)
    VectorMap<Scalar>(operand.masked + n * operand.width, operand.width) =
        ConstVectorMap<Scalar>(operand.source + n * operand.stride, operand.width) *
        ConstVectorMap<Scalar>(operand.mask + n * operand.width, operand.width);
}

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
      if (operand.mask != nullptr) {  // each thread masks its share of the rows, then all pack from them
        mask_share(operand, thread_id(), thread_count());
#pragma omp barrier
        operand.packed->pack_share(operand.masked, operand.width, thread_id(), thread_count());
      } else {
        operand.packed->pack_share(operand.source, operand.stride, thread_id(), thread_count());
      }
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
  GateColumns(const Scalar* recurrent_kernel /* [H, G*H] */, const Dims& d, Index G, const TimeLoop& loop,
              const Scalar* state_mask /* [N, H] or null */ = nullptr)
      : GateColumns(recurrent_kernel, d, G, loop, d.H, state_mask) {}
  // States of another width than H (an LSTM with projection's P): recurrent_kernel [state_width, G*H], and a state
  // mask, if any, [N, state_width].
  GateColumns(const Scalar* recurrent_kernel, const Dims& d, Index G, const TimeLoop& loop, Index state_width,
              const Scalar* state_mask = nullptr)
      : G_(G),
        N_(d.N),
        H_(state_width),
        depth_(gemm_depth<Scalar>(state_width, G * d.H, d.N)),
        columns_(pack_gate_columns(recurrent_kernel, d.H, G, loop.blocks(), depth_, d.N)),
        states_(depth_, d.N, d.N == 1),
        state_mask_(state_mask),
        masked_(state_mask ? d.N * state_width : 0) {}

  // The step's states [N, stride] (their first H columns), times the state mask when there is one.
  StepOperand<Scalar> operand(const Scalar* states, Index stride) {
    return {&states_, states, stride, state_mask_, masked_.data(), N_, H_};
  }
  // z points at the block's first unit of gate k in a row-major [N, stride] buffer.
  void add(Scalar* z, Index stride, Index b, Index k) const {
    states_.multiply_add(z, stride, columns_[size_t(b * G_ + k)]);
  }

 private:
  Index G_, N_, H_;  // H_: the states' width
  GemmDepth depth_;
  std::vector<PackedLhs<Scalar>> columns_;
  PackedRhs<Scalar> states_;
  const Scalar* state_mask_;
  Workspace<Scalar> masked_;  // [N, H] the masked states of the step
};

// What a cell's forward class (LstmForward, GruForward, RnnForward) holds: its weights, the call's sizes, the time
// loop, the recurrent kernel packed per gate block, and, when it serves many calls (reuse), the input kernel
// packed once too (otherwise each call packs it with its input projection). The call's masks (training) change
// the recurrent kernel before it is packed, the inputs before their projection and the states before each step's
// product. The states multiplied by the recurrent kernel have H units, or state_width (an LSTM with projection's P).
template <typename Scalar, typename Weights>
class PackedForward {
 protected:
  PackedForward(const Weights& weights, const Dims& d, Index G, const int64_t* lengths /* [N] or null */, bool reuse,
                const Masks<Scalar>& masks, Index state_width /* 0: H */ = 0)
      : weights_(weights),
        d_(d),
        masked_(masks, d, G * d.H, weights.recurrent_kernel, state_width),
        loop_(d, G, lengths),
        U_(masked_.recurrent_kernel(), d, G, loop_, state_width > 0 ? state_width : d.H, masks.state) {
    if (reuse) kernel_.emplace(weights.kernel, G * d.H, d.I, G * d.H, d.T * d.N);
  }
  const PackedWeight<Scalar>* packed_kernel() const { return kernel_ ? &*kernel_ : nullptr; }
  // projection [T*N, G*H] = x . kernel + bias, with x under its dropout mask.
  void project(Scalar* projection, const Scalar* x /* [T, N, I] */, const Scalar* bias /* [G*H] */, Index GH) const {
    project_inputs(projection, masked_.inputs(x), weights_.kernel, bias, d_.T * d_.N, d_.I, GH, packed_kernel());
  }

  Weights weights_;
  Dims d_;
  MaskedOperands<Scalar> masked_;
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
// aside around the product and put back (each thread moves only its own blocks' columns). With a state mask
// (recurrent dropout) the product is the gradient on the masked state: it is multiplied by the mask before it
// joins what dh already holds (the paths that bypass the product: GRU's z * h[t], zoneout).
template <typename Scalar>
class BackpropIntoState {
 public:
  static constexpr bool packs = true, rows = false;

  BackpropIntoState(UnitRows<Scalar>& U, Sequence<const Scalar> dz /* [T, N, G*H], of which U's columns are used */,
                    Scalar* dh /* [N, H] the gradient on h[t+1], turned into the one on h[t] */, const Dims& d,
                    const int64_t* lengths /* [N] or null */, const Scalar* state_mask /* [N, H] or null */ = nullptr)
      : U_(U), dz_(dz), dh_(dh), N_(d.N), H_(d.H), lengths_(lengths), mask_(state_mask),
        kept_(lengths || state_mask ? d.N * d.H : 0) {}

  StepOperand<Scalar> operand(Index t) const { return U_.operand(dz_.step(t), dz_.width); }
  void products(Index t, Index b, const UnitBlock& block) {
    Scalar* dh = dh_ + block.begin;
    Scalar* kept = kept_.data() + block.begin;  // [N, H]
    if (mask_ != nullptr) {
      for (Index n = 0; n < N_; ++n) {
        std::copy_n(dh + n * H_, block.size, kept + n * H_);
        std::fill_n(dh + n * H_, block.size, Scalar(0));
      }
      U_.add(dh, H_, b);
      for (Index n = 0; n < N_; ++n) {
        VectorMap<Scalar> row(dh + n * H_, block.size);
        ConstVectorMap<Scalar> before(kept + n * H_, block.size);
        if (step_valid(lengths_, t, n)) {
          row = before + row * ConstVectorMap<Scalar>(mask_ + n * H_ + block.begin, block.size);
        } else {
          row = before;
        }
      }
      return;
    }
    if (lengths_ == nullptr) {
      U_.add(dh, H_, b);
      return;
    }
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
  const Scalar* mask_;
  Workspace<Scalar> kept_;
};

}  // namespace rnnext
