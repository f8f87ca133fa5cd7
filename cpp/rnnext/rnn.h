// Simple (Elman) RNN: forward over a whole sequence and backpropagation through time.
//   h_new = act(x[t] . kernel + h[t] . recurrent_kernel + bias),  act in {tanh, relu, sigmoid}
#pragma once

#include "rnnext/common.h"

namespace rnnext {

// Derivative of the activation, written on its output y.
template <typename Scalar>
void rnn_activation_grad(Activation act, VectorMap<Scalar> grad, ConstVectorMap<Scalar> y) {
  switch (act) {
    case Activation::Tanh: grad *= Scalar(1) - y * y; break;
    case Activation::Sigmoid: grad *= y * (Scalar(1) - y); break;
    case Activation::Relu: grad = (y > Scalar(0)).select(grad, Scalar(0)); break;
  }
}

// Forward. On entry h[0] holds h0; on exit h[1..T] hold the states and y the outputs.
template <typename Scalar>
void rnn_forward(Scalar* y /* [T, N, H] */, Scalar* h /* [T+1, N, H] */,
                 const Scalar* x /* [T, N, I] */, const Scalar* kernel /* [I, H] */,
                 const Scalar* recurrent_kernel /* [H, H] */, const Scalar* bias /* [H] */,
                 const int64_t* lengths /* [N] or null */, const Dims& d, Activation act) {
  const Index T = d.T, N = d.N, H = d.H;
  // y doubles as the buffer of input projections: y[t] holds x[t].kernel + bias until step t overwrites it.
  project_inputs(y, x, kernel, bias, T * N, d.I, H);

  const auto blocks = unit_blocks(H);
  std::vector<Scalar> packed;
  const auto offsets = pack_recurrent_blocks(recurrent_kernel, H, Index(1), blocks, packed);
  std::vector<Scalar> recurrent_part(size_t(N * H));  // [N, H] in block layout: h[t] . U for each block
  const int threads = loop_threads(N, H, 1, Index(blocks.size()));
  EigenSingleThreaded single;

#pragma omp parallel num_threads(threads) if (threads > 1)
  for (Index t = 0; t < T; ++t) {
    const Scalar* h_prev = h + t * N * H;
    Scalar* h_next = h + (t + 1) * N * H;
    Scalar* y_t = y + t * N * H;
#pragma omp for schedule(static)
    for (Index b = 0; b < Index(blocks.size()); ++b) {
      const UnitBlock blk = blocks[b];
      MatrixMap<Scalar> hu(recurrent_part.data() + N * blk.begin, N, blk.size);
      hu.noalias() = ConstMatrixMap<Scalar>(h_prev, N, H) * ConstMatrixMap<Scalar>(packed.data() + offsets[b], H, blk.size);
      for (Index n = 0; n < N; ++n) {
        auto out = segment(y_t, n, H, blk.begin, blk.size);
        auto pre = out + hu.row(n).transpose().array();
        switch (act) {
          case Activation::Tanh: out = pre.tanh(); break;
          case Activation::Sigmoid: out = pre.logistic(); break;
          case Activation::Relu: out = pre.max(Scalar(0)); break;
        }
        auto state = segment(h_next, n, H, blk.begin, blk.size);
        if (step_valid(lengths, t, n)) {
          state = out;
        } else {
          state = segment(h_prev, n, H, blk.begin, blk.size);
          out.setZero();
        }
      }
    }
  }
}

// Backward. On entry dh0 holds dh_n (the gradient on the final state); on exit it holds the gradient on h0.
// dy may be null (no gradient on the outputs).
template <typename Scalar>
void rnn_backward(Scalar* dx /* [T, N, I] */, Scalar* dh0 /* [N, H] */, Scalar* dkernel /* [I, H] */,
                  Scalar* drecurrent_kernel /* [H, H] */, Scalar* dbias /* [H] */,
                  const Scalar* dy /* [T, N, H] or null */, const Scalar* h /* [T+1, N, H] */,
                  const Scalar* x /* [T, N, I] */, const Scalar* kernel /* [I, H] */,
                  const Scalar* recurrent_kernel /* [H, H] */, const int64_t* lengths /* [N] or null */,
                  const Dims& d, Activation act) {
  const Index T = d.T, N = d.N, H = d.H;
  std::vector<Scalar> dpre(size_t(T * N * H));   // [T, N, H] gradient on the pre-activations
  std::vector<Scalar> back_part(size_t(N * H));  // [N, H] in block layout: dpre[t] . U^T for each block
  Scalar* dh = dh0;                              // the gradient on h[t+1], carried backwards in place
  const auto blocks = unit_blocks(H);
  const int threads = loop_threads(N, H, 1, Index(blocks.size()));
  EigenSingleThreaded single;

#pragma omp parallel num_threads(threads) if (threads > 1)
  for (Index t = T - 1; t >= 0; --t) {
    const Scalar* h_next = h + (t + 1) * N * H;
    Scalar* dpre_t = dpre.data() + t * N * H;
    // Backpropagate through the activation: dpre = (dh + dy) * act'(h_new).
#pragma omp for schedule(static)
    for (Index b = 0; b < Index(blocks.size()); ++b) {
      const UnitBlock blk = blocks[b];
      for (Index n = 0; n < N; ++n) {
        auto grad = segment(dpre_t, n, H, blk.begin, blk.size);
        if (!step_valid(lengths, t, n)) {
          grad.setZero();
          continue;
        }
        grad = segment(static_cast<const Scalar*>(dh), n, H, blk.begin, blk.size);
        if (dy != nullptr) grad += segment(dy + t * N * H, n, H, blk.begin, blk.size);
        rnn_activation_grad<Scalar>(act, grad, segment(h_next, n, H, blk.begin, blk.size));
      }
    }
    // Backpropagate into h[t]: dh = dpre . U^T at valid rows; invalid rows pass dh through. The static
    // schedule gives each thread the same blocks as above, so no barrier is needed before the next step.
#pragma omp for schedule(static) nowait
    for (Index b = 0; b < Index(blocks.size()); ++b) {
      const UnitBlock blk = blocks[b];
      MatrixMap<Scalar> back(back_part.data() + N * blk.begin, N, blk.size);
      back.noalias() = ConstMatrixMap<Scalar>(dpre_t, N, H) *
                       ConstMatrixMap<Scalar>(recurrent_kernel + blk.begin * H, blk.size, H).transpose();
      for (Index n = 0; n < N; ++n)
        if (step_valid(lengths, t, n)) segment(dh, n, H, blk.begin, blk.size) = back.row(n).transpose().array();
    }
  }

  weight_gradients(dx, dkernel, drecurrent_kernel, dbias, dpre.data(), x, kernel, h, T * N, d.I, H, H);
}

}  // namespace rnnext
