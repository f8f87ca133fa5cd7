// QRNN (Bradbury et al. 2017, "Quasi-Recurrent Neural Networks", eq. 1-4 with fo-pooling): a causal convolution
// of width K over the input, then an elementwise recurrence, gate blocks z, f, o:
//   z = tanh(sum_j x[t-j] . kernel[j]_z + b_z),  f = sigmoid(sum_j x[t-j] . kernel[j]_f + b_f),
//   o = sigmoid(sum_j x[t-j] . kernel[j]_o + b_o)                                            (j = 0 .. K-1)
//   c[t+1] = f * c[t] + (1 - f) * z,  h[t+1] = o * c[t+1]
// The inputs before this call, x[-1] .. x[-(K-1)], are the history x0 [N, (K-1)*I] (block j-1 holds x[-j]), and
// the call returns the history after each row's last valid step the same way, so a long sequence can be run in
// pieces (stateful layers, step()). c is the recurrent state; h_n is the output after each row's last valid step
// (h0 for a row of length 0), as for SRU (sru.h). The convolution is K GEMMs over all T*N rows before the scan
// (scan_loop.h), each over the input shifted by j steps; backward is the reverse scan, then K GEMMs each for dx
// and dkernel.
#pragma once

#include "rnnext/common.h"
#include "rnnext/gemm.h"
#include "rnnext/scan_loop.h"

namespace rnnext {

constexpr Index kQrnnGates = 3;
constexpr Index kQrnnBlockZ = 0, kQrnnBlockF = 1, kQrnnBlockO = 2;

template <typename Scalar>
struct QrnnWeights {
  const Scalar* kernel;  // [K, I, 3H] tap j multiplies x[t-j]
  const Scalar* bias;    // [3H]
  Index width;           // K >= 1
};

template <typename Scalar>
struct QrnnGrads {
  Scalar* x;        // [T, N, I]
  Scalar* h0;       // [N, H] on entry the gradient on h_n, on exit the one on h0 (rows of length 0)
  Scalar* c0;       // [N, H] on entry the gradient on c_n, on exit the one on c0
  Scalar* x0;       // [N, (K-1)*I] on entry the gradient on x_n, on exit the one on x0
  Scalar* kernel;   // [K, I, 3H]
  Scalar* bias;     // [3H]
};

// The input with its history in front, [T+K-1, N, I]: step t of x is row t+K-1, x[-j] row K-1-j.
template <typename Scalar>
void qrnn_extended_input(Scalar* extended, const Scalar* x, const Scalar* x0, Index K, const Dims& d) {
  const Index N = d.N, I = d.I;
  for (Index j = 1; j < K; ++j)
    for (Index n = 0; n < N; ++n)
      std::copy_n(x0 + n * (K - 1) * I + (j - 1) * I, I, extended + ((K - 1 - j) * N + n) * I);
  std::copy_n(x, d.T * N * I, extended + (K - 1) * N * I);
}

// The history after each row's last valid step (L = lengths[n]): x_n block j-1 = x[L-j], extended row K-1+L-j.
template <typename Scalar>
void qrnn_history(Scalar* x_n /* [N, (K-1)*I] */, const Scalar* extended, Index K, const int64_t* lengths,
                  const Dims& d) {
  const Index N = d.N, I = d.I;
  for (Index n = 0; n < N; ++n) {
    const Index steps = lengths == nullptr ? d.T : Index(lengths[n]);
    for (Index j = 1; j < K; ++j)
      std::copy_n(extended + ((K - 1 + steps - j) * N + n) * I, I, x_n + n * (K - 1) * I + (j - 1) * I);
  }
}

// Forward. On entry c[0] holds c0 and h_n holds h0; on exit c[1..T] hold the states, gates the activated gates
// (z, f, o, at masked steps too), y the outputs, h_n the last valid output and x_n the history.
template <typename Scalar>
void qrnn_forward(Scalar* y /* [T, N, H] */, Scalar* h_n /* [N, H] */, Scalar* x_n /* [N, (K-1)*I] */,
                  Scalar* c /* [T+1, N, H] */, Scalar* gates /* [T, N, 3H] */, const Scalar* x /* [T, N, I] */,
                  const Scalar* x0 /* [N, (K-1)*I] */, const QrnnWeights<Scalar>& weights,
                  const int64_t* lengths /* [N] or null */, const Dims& d) {
  const Index T = d.T, N = d.N, I = d.I, H = d.H, K = weights.width, GH = kQrnnGates * H, rows = T * N;
  Workspace<Scalar> extended((T + K - 1) * N * I);  // [T+K-1, N, I]
  qrnn_extended_input(extended.data(), x, x0, K, d);
  project_inputs(gates, x, weights.kernel, weights.bias, rows, I, GH);
  for (Index j = 1; j < K; ++j)  // tap j reads the input j steps back: the extended rows j*N earlier
    rows_times_weight(gates, GH, extended.data() + (K - 1 - j) * N * I, I, rows, I, weights.kernel + j * I * GH,
                      GH, GH, false, nullptr, true);
  const ScanSequence<Scalar> outputs{y, N, H}, cells{c, N, H}, gate_values{gates, N, GH};
  ScanLoop(d, lengths).run([&](Index n, Index j, auto w, Index steps) {
    BlockArray<Scalar, decltype(w)> state = cells.at(0, n, j, w);
    for (Index t = 0; t < T; ++t) {
      auto z = gate_values.at(t, n, kQrnnBlockZ * H + j, w), f = gate_values.at(t, n, kQrnnBlockF * H + j, w);
      auto o = gate_values.at(t, n, kQrnnBlockO * H + j, w);
      auto out = outputs.at(t, n, j, w);
      z = tanh_of(z);
      f = sigmoid(f);
      o = sigmoid(o);
      if (t < steps) {
        state = f * state + (Scalar(1) - f) * z;
        out = o * state;
        if (t == steps - 1) segment(h_n, n, H, j, w) = out;
      } else {
        out.setZero();
      }
      cells.at(t + 1, n, j, w) = state;
    }
  });
  qrnn_history(x_n, extended.data(), K, lengths, d);
}

// Backward. grads.h0, grads.c0 and grads.x0 hold dh_n, dc_n and dx_n on entry. dy may be null.
template <typename Scalar>
void qrnn_backward(const QrnnGrads<Scalar>& grads, const Scalar* dy /* [T, N, H] or null */,
                   const Scalar* c /* [T+1, N, H] */, const Scalar* gates /* [T, N, 3H] */,
                   const Scalar* x /* [T, N, I] */, const Scalar* x0 /* [N, (K-1)*I] */,
                   const QrnnWeights<Scalar>& weights, const int64_t* lengths /* [N] or null */, const Dims& d) {
  const Index T = d.T, N = d.N, I = d.I, H = d.H, K = weights.width, GH = kQrnnGates * H, rows = T * N;
  Workspace<Scalar> dz(rows * GH);  // [T, N, 3H] gradient on the convolution's outputs
  const ScanSequence<Scalar> gate_grads{dz.data(), N, GH};
  const ScanSequence<const Scalar> output_grads{dy, N, H}, cells{c, N, H}, gate_values{gates, N, GH};
  ScanLoop(d, lengths).run([&](Index n, Index j, auto w, Index steps) {
    using Values = BlockArray<Scalar, decltype(w)>;
    auto dh_last = segment(grads.h0, n, H, j, w);
    auto dcell = segment(grads.c0, n, H, j, w);
    Values dc = dcell, dh(w.size);
    for (Index t = T - 1; t >= 0; --t) {
      auto dz_z = gate_grads.at(t, n, kQrnnBlockZ * H + j, w), dz_f = gate_grads.at(t, n, kQrnnBlockF * H + j, w);
      auto dz_o = gate_grads.at(t, n, kQrnnBlockO * H + j, w);
      if (t >= steps) {  // a masked step passes dc through; its gates get nothing
        dz_z.setZero();
        dz_f.setZero();
        dz_o.setZero();
        continue;
      }
      const auto z = gate_values.at(t, n, kQrnnBlockZ * H + j, w), f = gate_values.at(t, n, kQrnnBlockF * H + j, w);
      const auto o = gate_values.at(t, n, kQrnnBlockO * H + j, w);
      const auto c_prev = cells.at(t, n, j, w), c_new = cells.at(t + 1, n, j, w);
      dh.setZero();
      if (dy != nullptr) dh = output_grads.at(t, n, j, w);
      if (t == steps - 1) dh += dh_last;  // h_n is this step's output
      // backprop h = o * c_new into o (through its sigmoid) and c_new, then c_new = f * c_prev + (1 - f) * z into
      // f, z (through their sigmoid and tanh) and c_prev
      dz_o = dh * c_new * o * (Scalar(1) - o);
      dc += dh * o;
      dz_z = dc * (Scalar(1) - f) * (Scalar(1) - z * z);
      dz_f = dc * (c_prev - z) * f * (Scalar(1) - f);
      dc *= f;
    }
    dcell = dc;
    if (steps > 0) dh_last.setZero();  // h0 reaches h_n only in a row of length 0
  });
  column_sums(grads.bias, dz.data(), GH, rows, GH);

  // The convolution's gradients on the extended input [T+K-1, N, I], one GEMM per tap, taps added in order.
  Workspace<Scalar> extended((T + K - 1) * N * I), dextended((T + K - 1) * N * I);
  qrnn_extended_input(extended.data(), x, x0, K, d);
  std::fill_n(dextended.data(), (T + K - 1) * N * I, Scalar(0));
  for (Index j = 0; j < K; ++j) {
    const Index first_row = (K - 1 - j) * N;  // the extended rows tap j reads for steps 0 .. T-1
    rows_times_weight(dextended.data() + first_row * I, I, dz.data(), GH, rows, GH, weights.kernel + j * I * GH, GH,
                      I, true, nullptr, true);
    transposed_times(grads.kernel + j * I * GH, GH, extended.data() + first_row * I, I, I, dz.data(), GH, GH, rows);
  }
  // x_n is a copy of extended rows: its gradient joins theirs, then splits into dx and dx0.
  for (Index n = 0; n < N; ++n) {
    const Index steps = lengths == nullptr ? T : Index(lengths[n]);
    for (Index j = 1; j < K; ++j) {
      VectorMap<Scalar>(dextended.data() + ((K - 1 + steps - j) * N + n) * I, I) +=
          ConstVectorMap<Scalar>(grads.x0 + n * (K - 1) * I + (j - 1) * I, I);
    }
  }
  std::copy_n(dextended.data() + (K - 1) * N * I, rows * I, grads.x);
  for (Index j = 1; j < K; ++j)
    for (Index n = 0; n < N; ++n)
      std::copy_n(dextended.data() + ((K - 1 - j) * N + n) * I, I, grads.x0 + n * (K - 1) * I + (j - 1) * I);
}

}  // namespace rnnext
