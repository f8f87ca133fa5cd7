// The time loop of the cells whose recurrence is elementwise (indrnn.h, mingru.h, minlstm.h): no step needs the
// other units of the step before, so, unlike time_loop.h, there is no product and no barrier per step. The N*H
// columns of a call are cut into fixed work items (one batch row, kBatchUnitBlock units) and each thread runs its
// items through all T steps, keeping the state of the item in registers. Items never depend on the thread count
// and every column is computed alone, so results are bitwise the same for any number of threads.
// Each cell's input-side products (all T*N rows at once) come before the scan, its weight gradients after it; the
// cells whose gates all read x only (minGRU, minLSTM) share their weight structs and input-side gradients here.
#pragma once

#include "rnnext/common.h"
#include "rnnext/gemm.h"

namespace rnnext {

// Below this many elements (T*N*H) a parallel region (microseconds) costs more than the scan it would split.
constexpr double kParallelScan = double(1 << 15);

class ScanLoop {
 public:
  ScanLoop(const Dims& d, const int64_t* lengths /* [N] or null */)
      : T_(d.T), N_(d.N), H_(d.H), lengths_(lengths), blocks_(chunk_count(d.H, kBatchUnitBlock)) {}

  // Calls body(n, j, width, steps) for every batch row n and block of units [j, j + width.size), where steps is
  // the number of valid steps of row n (lengths[n], or T): steps t < steps run the cell, later ones are masked.
  template <typename Body>
  void run(Body&& body) const {
    const Index items = N_ * blocks_;
    const bool parallel = items > 1 && double(T_) * double(N_) * double(H_) >= kParallelScan;
    const TimedRun timed(typeid(Body), N_, H_, T_, parallel ? max_threads() : 1);
#pragma omp parallel for schedule(static) num_threads(timed.threads()) if (timed.threads() > 1)
    for (Index item = 0; item < items; ++item) {
      const Index n = item / blocks_, j = item % blocks_ * kBatchUnitBlock;
      const Index steps = lengths_ == nullptr ? T_ : Index(lengths_[n]);
      with_block_width(std::min(kBatchUnitBlock, H_ - j), [&](auto width) { body(n, j, width, steps); });
    }
  }

 private:
  Index T_, N_, H_;
  const int64_t* lengths_;
  Index blocks_;
};

// The weights and gradients of a cell whose gates all read x only (minGRU, minLSTM): G gate blocks.
template <typename Scalar>
struct InputGateWeights {
  const Scalar* kernel;  // [I, G*H]
  const Scalar* bias;    // [G*H]
};

template <typename Scalar>
struct InputGateGrads {
  Scalar* x;       // [T, N, I]
  Scalar* h0;      // [N, H] on entry the gradient on h[T] (dh_n), on exit the one on h0
  Scalar* kernel;  // [I, G*H]
  Scalar* bias;    // [G*H]
};

// The input side of the backward pass of such a cell, given the gate gradients dz [T*N, G*H]:
// dx = dz . kernel^T, dkernel = x^T . dz, dbias = column sums of dz (gemm.h, common.h).
template <typename Scalar>
void input_gate_gradients(const InputGateGrads<Scalar>& grads, const Scalar* dz /* [rows, G*H] */,
                          const Scalar* x /* [rows, I] */, const Scalar* kernel /* [I, G*H] */, Index rows, Index I,
                          Index GH) {
  rows_times_weight(grads.x, I, dz, GH, rows, GH, kernel, GH, I, true, nullptr, false);
  transposed_times(grads.kernel, GH, x, I, I, dz, GH, GH, rows);
  column_sums(grads.bias, dz, GH, rows, GH);
}

// A time-major buffer [T (or T+1), N, width] read or written one item at a time: columns [j, j + w) of row n.
template <typename Scalar>
struct ScanSequence {
  Scalar* data;
  Index N, width;

  template <Index Fixed>
  auto at(Index t, Index n, Index j, BlockWidth<Fixed> w) const {
    return segment(data + t * N * width, n, width, j, w);
  }
};

// act(a) for the activations of an elementwise recurrence, and the gradient on the pre-activation given the one
// on the output y = act(a) (written on y, as everywhere in the engine). Both return expressions: assign them to a
// block (an evaluated temporary of a partial block would be a heap allocation per step).
template <Activation Act, typename Derived>
auto activate(const Eigen::ArrayBase<Derived>& a) {
  using Scalar = typename Derived::Scalar;
  if constexpr (Act == Activation::Tanh) {
    return tanh_of(a);
  } else {
    static_assert(Act == Activation::Relu, "scan cells take relu or tanh");
    return a.max(Scalar(0));
  }
}

template <Activation Act, typename Grad, typename Out>
auto activation_grad(const Eigen::ArrayBase<Grad>& grad, const Eigen::ArrayBase<Out>& y) {
  using Scalar = typename Grad::Scalar;
  if constexpr (Act == Activation::Tanh) {
    return grad * (Scalar(1) - y * y);
  } else {
    return (y > Scalar(0)).select(grad, Scalar(0));
  }
}

}  // namespace rnnext
