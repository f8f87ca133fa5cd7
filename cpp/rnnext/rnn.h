// Simple (Elman) RNN: forward over a whole sequence and backpropagation through time.
//   h_new = act(x[t] . kernel + h[t] . recurrent_kernel + bias),  act in {tanh, relu, sigmoid}
#pragma once

#include "rnnext/common.h"
#include "rnnext/gemm.h"

namespace rnnext {

// Derivative of the activation, written on its output y.
template <typename Grad, typename Output>
void rnn_activation_grad(Activation act, Grad grad, const Output& y) {
  using Scalar = typename Grad::Scalar;
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

  const auto blocks = unit_blocks(H, N);
  const GemmDepth depth = gemm_depth<Scalar>(H, H, N);
  const auto weights = pack_gate_columns(recurrent_kernel, H, Index(1), blocks, depth, N);
  PackedRhs<Scalar> states(depth, N, N == 1);
  const int threads = loop_threads(N, H, 1, Index(blocks.size()));

#pragma omp parallel num_threads(threads) if (threads > 1)
  for (Index t = 0; t < T; ++t) {
    const Scalar* h_prev = h + t * N * H;
    Scalar* h_next = h + (t + 1) * N * H;
    Scalar* y_t = y + t * N * H;
    states.pack_share(h_prev, H, thread_id(), thread_count());
#pragma omp barrier
#pragma omp for schedule(static)
    for (Index b = 0; b < Index(blocks.size()); ++b) {
      const Index j = blocks[b].begin;
      states.multiply_add(y_t + j, H, weights[size_t(b)]);  // y[t] += h[t] . U for this block
      with_block_width(blocks[b].size, [&](auto w) {
        for (Index n = 0; n < N; ++n) {
          auto out = segment(y_t, n, H, j, w);
          switch (act) {
            case Activation::Tanh: out = tanh_of(out); break;
            case Activation::Sigmoid: out = sigmoid(out); break;
            case Activation::Relu: out = out.max(Scalar(0)); break;
          }
          auto state = segment(h_next, n, H, j, w);
          if (step_valid(lengths, t, n)) {
            state = out;
          } else {
            state = segment(h_prev, n, H, j, w);
            out.setZero();
          }
        }
      });
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
  Workspace<Scalar> dpre(T * N * H);  // [T, N, H] gradient on the pre-activations
  Scalar* dh = dh0;                             // the gradient on h[t+1], carried backwards in place
  const auto blocks = unit_blocks(H, N);
  const GemmDepth depth = gemm_depth<Scalar>(H, H, N);
  const auto weight_rows = pack_unit_rows(recurrent_kernel, H, Index(0), blocks, depth, N);
  PackedRhs<Scalar> grads(depth, N, N == 1);
  const int threads = loop_threads(N, H, 1, Index(blocks.size()));

#pragma omp parallel num_threads(threads) if (threads > 1)
  for (Index t = T - 1; t >= 0; --t) {
    const Scalar* h_next = h + (t + 1) * N * H;
    Scalar* dpre_t = dpre.data() + t * N * H;
    // Backpropagate through the activation: dpre = (dh + dy) * act'(h_new). Valid rows restart dh from zero
    // for the product below; invalid rows keep it (their dpre is zero, so it passes through unchanged).
#pragma omp for schedule(static)
    for (Index b = 0; b < Index(blocks.size()); ++b) {
      const Index j = blocks[b].begin;
      with_block_width(blocks[b].size, [&](auto w) {
        for (Index n = 0; n < N; ++n) {
          auto grad = segment(dpre_t, n, H, j, w);
          if (!step_valid(lengths, t, n)) {
            grad.setZero();
            continue;
          }
          auto dstate = segment(dh, n, H, j, w);
          grad = dstate;
          if (dy != nullptr) grad += segment(dy + t * N * H, n, H, j, w);
          rnn_activation_grad(act, grad, segment(h_next, n, H, j, w));
          dstate.setZero();
        }
      });
    }
    grads.pack_share(dpre_t, H, thread_id(), thread_count());
#pragma omp barrier
    // Backpropagate into h[t]: dh += dpre . U^T. The static schedule gives each thread the same blocks as
    // above, and the next step's first loop ends in a barrier before anyone repacks, so no wait is needed here.
#pragma omp for schedule(static) nowait
    for (Index b = 0; b < Index(blocks.size()); ++b)
      grads.multiply_add(dh + blocks[b].begin, H, weight_rows[size_t(b)]);
  }

  weight_gradients(dx, dkernel, drecurrent_kernel, dbias, dpre.data(), x, kernel, h, T * N, d.I, H, H);
}

}  // namespace rnnext
