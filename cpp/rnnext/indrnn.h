// IndRNN (Li et al. 2018, "Independently Recurrent Neural Network (IndRNN): Building A Longer and Deeper RNN"),
// forward over a whole sequence and backpropagation through time:
//   h[t+1] = act(x[t] . kernel + recurrent_weight * h[t] + bias),  act in {relu (the paper's), tanh}
// recurrent_weight [H] is elementwise: each unit sees only its own past. The only product is the input
// projection, one GEMM over all T*N rows before the scan (scan_loop.h); backward is the reverse scan, then one
// GEMM per weight and column sums for the bias and recurrent_weight.
#pragma once

#include "rnnext/common.h"
#include "rnnext/gemm.h"
#include "rnnext/scan_loop.h"

namespace rnnext {

template <typename Scalar>
struct IndRnnWeights {
  const Scalar* kernel;            // [I, H]
  const Scalar* recurrent_weight;  // [H]
  const Scalar* bias;              // [H]
};

template <typename Scalar>
struct IndRnnGrads {
  Scalar* x;                 // [T, N, I]
  Scalar* h0;                // [N, H] on entry the gradient on h[T] (dh_n), on exit the one on h0
  Scalar* kernel;            // [I, H]
  Scalar* recurrent_weight;  // [H]
  Scalar* bias;              // [H]
};

// Forward. On entry h[0] holds h0; on exit h[1..T] hold the states and y the outputs.
template <typename Scalar, Activation Act>
void indrnn_forward(Scalar* y /* [T, N, H] */, Scalar* h /* [T+1, N, H] */, const Scalar* x /* [T, N, I] */,
                    const IndRnnWeights<Scalar>& weights, const int64_t* lengths /* [N] or null */, const Dims& d) {
  const Index T = d.T, N = d.N, H = d.H;
  // y doubles as the buffer of input projections: y[t] holds x[t].kernel + bias until the scan overwrites it.
  project_inputs(y, x, weights.kernel, weights.bias, T * N, d.I, H);
  const ScanSequence<Scalar> outputs{y, N, H}, states{h, N, H};
  ScanLoop(d, lengths).run([&](Index n, Index j, auto w, Index steps) {
    const auto u = segment(weights.recurrent_weight, 0, H, j, w);
    BlockArray<Scalar, decltype(w)> state = states.at(0, n, j, w);
    for (Index t = 0; t < T; ++t) {
      auto out = outputs.at(t, n, j, w);
      if (t < steps) {
        state = activate<Act>(out + u * state);
        out = state;
      } else {
        out.setZero();  // a masked step carries the state
      }
      states.at(t + 1, n, j, w) = state;
    }
  });
}

// Backward. grads.h0 holds dh_n on entry. dy may be null (no gradient on the outputs).
template <typename Scalar, Activation Act>
void indrnn_backward(const IndRnnGrads<Scalar>& grads, const Scalar* dy /* [T, N, H] or null */,
                     const Scalar* h /* [T+1, N, H] */, const Scalar* x /* [T, N, I] */,
                     const IndRnnWeights<Scalar>& weights, const int64_t* lengths /* [N] or null */, const Dims& d) {
  const Index T = d.T, N = d.N, H = d.H, I = d.I, rows = T * N;
  Workspace<Scalar> dpre(rows * H);    // [T, N, H] gradient on the pre-activations
  Workspace<Scalar> du_rows(N * H);    // [N, H] each row's share of d recurrent_weight, summed over its steps
  const ScanSequence<Scalar> pre_grads{dpre.data(), N, H};
  const ScanSequence<const Scalar> output_grads{dy, N, H}, states{h, N, H};
  ScanLoop(d, lengths).run([&](Index n, Index j, auto w, Index steps) {
    using Values = BlockArray<Scalar, decltype(w)>;
    const auto u = segment(weights.recurrent_weight, 0, H, j, w);
    auto dstate = segment(grads.h0, n, H, j, w);
    Values dh = dstate, du = Values::Zero(w.size), total(w.size);
    for (Index t = T - 1; t >= 0; --t) {
      auto grad = pre_grads.at(t, n, j, w);
      if (t >= steps) {  // a masked step passes dh straight through to the carried state
        grad.setZero();
        continue;
      }
      total = dh;
      if (dy != nullptr) total += output_grads.at(t, n, j, w);
      grad = activation_grad<Act>(total, states.at(t + 1, n, j, w));
      du += grad * states.at(t, n, j, w);
      dh = grad * u;
    }
    dstate = dh;
    segment(du_rows.data(), n, H, j, w) = du;
  });
  column_sums(grads.recurrent_weight, du_rows.data(), H, N, H);
  rows_times_weight(grads.x, I, dpre.data(), H, rows, H, weights.kernel, H, I, true, nullptr, false);
  transposed_times(grads.kernel, H, x, I, I, dpre.data(), H, H, rows);
  column_sums(grads.bias, dpre.data(), H, rows, H);
}

}  // namespace rnnext
