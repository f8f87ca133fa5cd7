// The cells of the CUDA engine: one forward and one backward per cell (rnn.cu, lstm.cu, gru.cu), following haste's
// design and the CPU engine's math (cpp/rnnext/rnn.h, lstm.h, gru.h): the input projection x . kernel for all T*N
// rows as one GEMM before the time loop; in the loop, one recurrent GEMM per step (two for GRU with
// reset_after = false) and one fused pointwise kernel; the backward pass stores every gate gradient dz [T, N, G*H],
// then computes dx, dkernel, drecurrent_kernel (and dbias as a GEMV) with one GEMM each.
// Everything a backward pass reads stays on the device in a Run, from the forward call that made it.
#pragma once

#include "cuda/device.h"

namespace rnnext::cuda {

enum class Activation { Tanh, Relu, Sigmoid };

// The variant of a cell, fixed when its forward pass runs.
struct CellOptions {
  Activation activation = Activation::Tanh;  // RNN
  bool peephole = false, coupled = false;    // LSTM
  bool reset_after = true;                   // GRU
};

// One forward pass on the device: its inputs (uploaded) and what it cached for the backward pass.
template <typename Scalar>
struct Run {
  Dims d;
  CellOptions options;
  int64_t G = 1;                            // gate blocks: RNN 1, LSTM 4 (coupled 3), GRU 3
  DeviceBuffer<Scalar> x;                   // [T, N, I]
  DeviceBuffer<Scalar> kernel;              // [I, G*H]
  DeviceBuffer<Scalar> recurrent_kernel;    // [H, G*H]
  DeviceBuffer<Scalar> bias;                // [G*H], GRU reset_after [2, 3H]
  DeviceBuffer<Scalar> peephole;            // [P, H] or empty
  DeviceBuffer<int64_t> lengths;            // [N] or empty: step t of row n is valid when t < lengths[n]
  DeviceBuffer<Scalar> y;                   // [T, N, H]
  DeviceBuffer<Scalar> h;                   // [T+1, N, H] slot 0 = h0
  DeviceBuffer<Scalar> c;                   // [T+1, N, H] slot 0 = c0 (LSTM)
  DeviceBuffer<Scalar> gates;               // [T, N, G*H] activated gates (LSTM, GRU); RNN: empty
  DeviceBuffer<Scalar> recurrent;           // [T, N, H] GRU: hn = h.U_n + b_hn (reset_after), else r * h
  const int64_t* lengths_or_null() const { return lengths.size() > 0 ? lengths.data() : nullptr; }
};

// The gradients of one backward pass, on the device. h0 (and c0) hold dh_n (dc_n) on entry.
template <typename Scalar>
struct Grads {
  DeviceBuffer<Scalar> x;                 // [T, N, I]
  DeviceBuffer<Scalar> h0, c0;            // [N, H]
  DeviceBuffer<Scalar> kernel;            // [I, G*H]
  DeviceBuffer<Scalar> recurrent_kernel;  // [H, G*H]
  DeviceBuffer<Scalar> bias;              // the bias's shape
  DeviceBuffer<Scalar> peephole;          // [P, H] or empty
};

// Forward passes: on entry run holds x, the weights, lengths, h[0] (and c[0]); on exit y, the states and the cache.
template <typename Scalar>
void rnn_forward(Run<Scalar>& run);
template <typename Scalar>
void lstm_forward(Run<Scalar>& run);
template <typename Scalar>
void gru_forward(Run<Scalar>& run);

// Backward passes. dy [T, N, H] may be null; grads are allocated by the caller, h0/c0 filled with dh_n/dc_n.
template <typename Scalar>
void rnn_backward(Grads<Scalar>& grads, const Scalar* dy, const Run<Scalar>& run);
template <typename Scalar>
void lstm_backward(Grads<Scalar>& grads, const Scalar* dy, const Run<Scalar>& run);
template <typename Scalar>
void gru_backward(Grads<Scalar>& grads, const Scalar* dy, const Run<Scalar>& run);

}  // namespace rnnext::cuda
