// minGRU (Feng et al. 2024, "Were RNNs All We Needed?", the sequential form of its Algorithm 1), forward over a
// whole sequence and backpropagation through time, gate order z, h~:
//   z = sigmoid(x[t] . kernel_z + bias_z),  h~ = x[t] . kernel_h + bias_h,
//   h[t+1] = (1 - z) * h[t] + z * h~
// Neither gate reads h, so both are one GEMM over all T*N rows before the scan (scan_loop.h), and the scan is
// elementwise. The paper's log-space form exists to make a parallel prefix scan numerically safe on a GPU; a
// sequential scan over T, one column per lane, needs neither the log-space nor its positivity transform g(h~).
// Backward is the reverse scan, then one GEMM per weight.
#pragma once

#include "rnnext/common.h"
#include "rnnext/scan_loop.h"

namespace rnnext {

constexpr Index kMinGruGates = 2;

// Forward. On entry h[0] holds h0; on exit h[1..T] hold the states, gates the activated gates (z, h~), y the
// outputs. z is activated at masked steps too (it is cached).
template <typename Scalar>
void mingru_forward(Scalar* y /* [T, N, H] */, Scalar* h /* [T+1, N, H] */, Scalar* gates /* [T, N, 2H] */,
                    const Scalar* x /* [T, N, I] */, const InputGateWeights<Scalar>& weights,
                    const int64_t* lengths /* [N] or null */, const Dims& d) {
  const Index T = d.T, N = d.N, H = d.H, GH = kMinGruGates * H;
  project_inputs(gates, x, weights.kernel, weights.bias, T * N, d.I, GH);
  const ScanSequence<Scalar> outputs{y, N, H}, states{h, N, H}, gate_values{gates, N, GH};
  ScanLoop(d, lengths).run([&](Index n, Index j, auto w, Index steps) {
    BlockArray<Scalar, decltype(w)> state = states.at(0, n, j, w);
    for (Index t = 0; t < T; ++t) {
      auto z = gate_values.at(t, n, j, w), candidate = gate_values.at(t, n, H + j, w);
      auto out = outputs.at(t, n, j, w);
      z = sigmoid(z);
      if (t < steps) {
        state = (Scalar(1) - z) * state + z * candidate;
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
void mingru_backward(const InputGateGrads<Scalar>& grads, const Scalar* dy /* [T, N, H] or null */,
                     const Scalar* h /* [T+1, N, H] */, const Scalar* gates /* [T, N, 2H] */,
                     const Scalar* x /* [T, N, I] */, const InputGateWeights<Scalar>& weights,
                     const int64_t* lengths /* [N] or null */, const Dims& d) {
  const Index T = d.T, N = d.N, H = d.H, I = d.I, GH = kMinGruGates * H, rows = T * N;
  Workspace<Scalar> dz(rows * GH);  // [T, N, 2H] gradient on the gate pre-activations
  const ScanSequence<Scalar> gate_grads{dz.data(), N, GH};
  const ScanSequence<const Scalar> output_grads{dy, N, H}, states{h, N, H}, gate_values{gates, N, GH};
  ScanLoop(d, lengths).run([&](Index n, Index j, auto w, Index steps) {
    using Values = BlockArray<Scalar, decltype(w)>;
    auto dstate = segment(grads.h0, n, H, j, w);
    Values dh = dstate, total(w.size);
    for (Index t = T - 1; t >= 0; --t) {
      auto dz_z = gate_grads.at(t, n, j, w), dz_candidate = gate_grads.at(t, n, H + j, w);
      if (t >= steps) {
        dz_z.setZero();
        dz_candidate.setZero();
        continue;
      }
      const auto z = gate_values.at(t, n, j, w), candidate = gate_values.at(t, n, H + j, w);
      total = dh;
      if (dy != nullptr) total += output_grads.at(t, n, j, w);
      // backprop h[t+1] = (1 - z) * h[t] + z * h~ into z (through the sigmoid), h~ and h[t]
      dz_z = total * (candidate - states.at(t, n, j, w)) * z * (Scalar(1) - z);
      dz_candidate = total * z;
      dh = total * (Scalar(1) - z);
    }
    dstate = dh;
  });
  input_gate_gradients(grads, dz.data(), x, weights.kernel, rows, I, GH);
}

}  // namespace rnnext
