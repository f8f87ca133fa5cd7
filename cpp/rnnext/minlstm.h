// minLSTM (Feng et al. 2024, "Were RNNs All We Needed?", the sequential form of its Algorithm 3, with the
// length-independence normalisation of the gates), forward over a whole sequence and backpropagation through
// time, gate order f, i, h~:
//   f = sigmoid(x[t] . kernel_f + bias_f),  i = sigmoid(x[t] . kernel_i + bias_i),  h~ = x[t] . kernel_h + bias_h
//   f' = f / (f + i),  i' = i / (f + i),  h[t+1] = f' * h[t] + i' * h~
// No gate reads h: the three are one GEMM over all T*N rows before the scan (scan_loop.h), and the scan is
// elementwise. As for minGRU (mingru.h), a sequential scan needs neither the paper's log-space form nor g(h~).
// Backward is the reverse scan, then one GEMM per weight.
#pragma once

#include "rnnext/common.h"
#include "rnnext/scan_loop.h"

namespace rnnext {

constexpr Index kMinLstmGates = 3;

// Forward. On entry h[0] holds h0; on exit h[1..T] hold the states, gates the activated gates (f, i, h~; the
// sigmoids, not yet normalised), y the outputs. f and i are activated at masked steps too (they are cached).
template <typename Scalar>
void minlstm_forward(Scalar* y /* [T, N, H] */, Scalar* h /* [T+1, N, H] */, Scalar* gates /* [T, N, 3H] */,
                     const Scalar* x /* [T, N, I] */, const InputGateWeights<Scalar>& weights,
                     const int64_t* lengths /* [N] or null */, const Dims& d) {
  const Index T = d.T, N = d.N, H = d.H, GH = kMinLstmGates * H;
  project_inputs(gates, x, weights.kernel, weights.bias, T * N, d.I, GH);
  const ScanSequence<Scalar> outputs{y, N, H}, states{h, N, H}, gate_values{gates, N, GH};
  ScanLoop(d, lengths).run([&](Index n, Index j, auto w, Index steps) {
    using Values = BlockArray<Scalar, decltype(w)>;
    Values state = states.at(0, n, j, w), sum(w.size);
    for (Index t = 0; t < T; ++t) {
      auto f = gate_values.at(t, n, j, w), i = gate_values.at(t, n, H + j, w);
      auto candidate = gate_values.at(t, n, 2 * H + j, w);
      auto out = outputs.at(t, n, j, w);
      f = sigmoid(f);
      i = sigmoid(i);
      if (t < steps) {
        sum = f + i;
        state = f / sum * state + i / sum * candidate;
        out = state;
      } else {
        out.setZero();
      }
      states.at(t + 1, n, j, w) = state;
    }
  });
}

// Backward. grads.h0 holds dh_n on entry. dy may be null.
template <typename Scalar>
void minlstm_backward(const InputGateGrads<Scalar>& grads, const Scalar* dy /* [T, N, H] or null */,
                      const Scalar* h /* [T+1, N, H] */, const Scalar* gates /* [T, N, 3H] */,
                      const Scalar* x /* [T, N, I] */, const InputGateWeights<Scalar>& weights,
                      const int64_t* lengths /* [N] or null */, const Dims& d) {
  const Index T = d.T, N = d.N, H = d.H, I = d.I, GH = kMinLstmGates * H, rows = T * N;
  Workspace<Scalar> dz(rows * GH);  // [T, N, 3H] gradient on the gate pre-activations
  const ScanSequence<Scalar> gate_grads{dz.data(), N, GH};
  const ScanSequence<const Scalar> output_grads{dy, N, H}, states{h, N, H}, gate_values{gates, N, GH};
  ScanLoop(d, lengths).run([&](Index n, Index j, auto w, Index steps) {
    using Values = BlockArray<Scalar, decltype(w)>;
    auto dstate = segment(grads.h0, n, H, j, w);
    Values dh = dstate, total(w.size), sum(w.size), spread(w.size);
    for (Index t = T - 1; t >= 0; --t) {
      auto dz_f = gate_grads.at(t, n, j, w), dz_i = gate_grads.at(t, n, H + j, w);
      auto dz_candidate = gate_grads.at(t, n, 2 * H + j, w);
      if (t >= steps) {
        dz_f.setZero();
        dz_i.setZero();
        dz_candidate.setZero();
        continue;
      }
      const auto f = gate_values.at(t, n, j, w), i = gate_values.at(t, n, H + j, w);
      const auto candidate = gate_values.at(t, n, 2 * H + j, w);
      total = dh;
      if (dy != nullptr) total += output_grads.at(t, n, j, w);
      sum = f + i;
      // backprop h[t+1] = f' * h[t] + i' * h~: d f' - d i' = total * (h[t] - h~) is all that reaches f and i,
      // since f' + i' = 1; then through f' = f / (f + i), i' = i / (f + i) and the sigmoids.
      spread = total * (states.at(t, n, j, w) - candidate) / (sum * sum);
      dz_f = spread * i * f * (Scalar(1) - f);
      dz_i = -spread * f * i * (Scalar(1) - i);
      dz_candidate = total * i / sum;
      dh = total * f / sum;
    }
    dstate = dh;
  });
  input_gate_gradients(grads, dz.data(), x, weights.kernel, rows, I, GH);
}

}  // namespace rnnext
