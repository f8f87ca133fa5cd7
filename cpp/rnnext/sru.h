// SRU (Lei et al. 2018, "Simple Recurrent Units for Highly Parallelizable Recurrence", eq. 1-4, with the
// highway connection and the elementwise recurrent weights v_f, v_r), forward over a whole sequence and
// backpropagation through time, gate blocks h~, f, r[, s]:
//   h~ = x[t] . kernel_h
//   f = sigmoid(x[t] . kernel_f + v_f * c[t] + b_f),  r = sigmoid(x[t] . kernel_r + v_r * c[t] + b_r)
//   c[t+1] = f * c[t] + (1 - f) * h~
//   h[t+1] = r * c[t+1] + (1 - r) * skip,  skip = x[t] when kernel is [I, 3H] (needs I = H, the paper's case),
//                                          skip = x[t] . kernel_s when it is [I, 4H] (the projected highway)
// c is the recurrent state; the output h feeds nothing back. h_n is the output after each row's last valid step
// (h0 for a row of length 0), so the final state (h, c) is what an LSTM's would be. The paper's scaling
// correction of the highway (alpha) is not applied. The input products are one GEMM over all T*N rows before the
// scan (scan_loop.h); backward is the reverse scan, then one GEMM per weight and column sums for v and b.
#pragma once

#include "rnnext/common.h"
#include "rnnext/gemm.h"
#include "rnnext/scan_loop.h"

namespace rnnext {

constexpr Index kSruBlockCandidate = 0, kSruBlockForget = 1, kSruBlockReset = 2, kSruBlockSkip = 3;

template <typename Scalar>
struct SruWeights {
  const Scalar* kernel;            // [I, G*H], G = 3 (skip = x, I = H) or 4 (skip = x . kernel_s)
  const Scalar* recurrent_weight;  // [2, H] rows v_f, v_r
  const Scalar* bias;              // [2, H] rows b_f, b_r
};

template <typename Scalar>
struct SruGrads {
  Scalar* x;                 // [T, N, I]
  Scalar* h0;                // [N, H] on entry the gradient on h_n, on exit the one on h0 (rows of length 0)
  Scalar* c0;                // [N, H] on entry the gradient on c[T] (dc_n), on exit the one on c0
  Scalar* kernel;            // [I, G*H]
  Scalar* recurrent_weight;  // [2, H]
  Scalar* bias;              // [2, H]
};

// Forward. On entry c[0] holds c0 and h_n holds h0; on exit c[1..T] hold the states, gates the activated gates
// (h~, f, r[, skip]: f and r after the sigmoid, at masked steps too), y the outputs and h_n the last valid output.
// G = 3 or 4.
template <typename Scalar>
void sru_forward(Scalar* y /* [T, N, H] */, Scalar* h_n /* [N, H] */, Scalar* c /* [T+1, N, H] */,
                 Scalar* gates /* [T, N, G*H] */, const Scalar* x /* [T, N, I] */, const SruWeights<Scalar>& weights,
                 Index G, const int64_t* lengths /* [N] or null */, const Dims& d) {
  const Index T = d.T, N = d.N, H = d.H, GH = G * H;
  std::vector<Scalar> input_bias(size_t(GH), Scalar(0));  // b_f and b_r join the projection; h~ and skip have none
  std::copy_n(weights.bias, 2 * H, input_bias.begin() + kSruBlockForget * H);
  project_inputs(gates, x, weights.kernel, input_bias.data(), T * N, d.I, GH);
  const bool projected_skip = G == 4;
  const ScanSequence<Scalar> outputs{y, N, H}, cells{c, N, H}, gate_values{gates, N, GH};
  const ScanSequence<const Scalar> inputs{x, N, d.I};
  ScanLoop(d, lengths).run([&](Index n, Index j, auto w, Index steps) {
    using Values = BlockArray<Scalar, decltype(w)>;
    const auto v_f = segment(weights.recurrent_weight, 0, H, j, w), v_r = segment(weights.recurrent_weight, 1, H, j, w);
    Values state = cells.at(0, n, j, w);
    for (Index t = 0; t < T; ++t) {
      auto candidate = gate_values.at(t, n, kSruBlockCandidate * H + j, w);
      auto f = gate_values.at(t, n, kSruBlockForget * H + j, w), r = gate_values.at(t, n, kSruBlockReset * H + j, w);
      auto out = outputs.at(t, n, j, w);
      f = sigmoid(f + v_f * state);  // at masked steps too: they are cached
      r = sigmoid(r + v_r * state);
      if (t < steps) {
        state = f * state + (Scalar(1) - f) * candidate;
        if (projected_skip) {
          out = r * state + (Scalar(1) - r) * gate_values.at(t, n, kSruBlockSkip * H + j, w);
        } else {
          out = r * state + (Scalar(1) - r) * inputs.at(t, n, j, w);
        }
        if (t == steps - 1) segment(h_n, n, H, j, w) = out;
      } else {
        out.setZero();
      }
      cells.at(t + 1, n, j, w) = state;
    }
  });
}

// Backward. grads.h0 holds dh_n and grads.c0 dc_n on entry. dy may be null.
template <typename Scalar>
void sru_backward(const SruGrads<Scalar>& grads, const Scalar* dy /* [T, N, H] or null */,
                  const Scalar* c /* [T+1, N, H] */, const Scalar* gates /* [T, N, G*H] */,
                  const Scalar* x /* [T, N, I] */, const SruWeights<Scalar>& weights, Index G,
                  const int64_t* lengths /* [N] or null */, const Dims& d) {
  const Index T = d.T, N = d.N, H = d.H, I = d.I, GH = G * H, rows = T * N;
  const bool projected_skip = G == 4;
  Workspace<Scalar> dz(rows * GH);                   // [T, N, G*H] gradient on the projections
  Workspace<Scalar> dskip(projected_skip ? 0 : rows * H);  // [T, N, H] the highway's gradient on x (I = H)
  Workspace<Scalar> dv_rows(2 * N * H);              // [2, N, H] each row's share of dv_f, dv_r
  const ScanSequence<Scalar> gate_grads{dz.data(), N, GH}, skip_grads{dskip.data(), N, H};
  const ScanSequence<const Scalar> output_grads{dy, N, H}, cells{c, N, H}, gate_values{gates, N, GH};
  const ScanSequence<const Scalar> inputs{x, N, I};
  ScanLoop(d, lengths).run([&](Index n, Index j, auto w, Index steps) {
    using Values = BlockArray<Scalar, decltype(w)>;
    const auto v_f = segment(weights.recurrent_weight, 0, H, j, w), v_r = segment(weights.recurrent_weight, 1, H, j, w);
    auto dh_last = segment(grads.h0, n, H, j, w);
    auto dcell = segment(grads.c0, n, H, j, w);
    Values dc = dcell, dh(w.size), dforget(w.size), dreset(w.size);
    Values dv_f = Values::Zero(w.size), dv_r = Values::Zero(w.size);
    for (Index t = T - 1; t >= 0; --t) {
      auto dz_candidate = gate_grads.at(t, n, kSruBlockCandidate * H + j, w);
      auto dz_f = gate_grads.at(t, n, kSruBlockForget * H + j, w), dz_r = gate_grads.at(t, n, kSruBlockReset * H + j, w);
      auto dz_skip = projected_skip ? gate_grads.at(t, n, kSruBlockSkip * H + j, w) : skip_grads.at(t, n, j, w);
      if (t >= steps) {  // a masked step passes dc through; its projections get nothing
        dz_candidate.setZero();
        dz_f.setZero();
        dz_r.setZero();
        dz_skip.setZero();
        continue;
      }
      const auto candidate = gate_values.at(t, n, kSruBlockCandidate * H + j, w);
      const auto f = gate_values.at(t, n, kSruBlockForget * H + j, w), r = gate_values.at(t, n, kSruBlockReset * H + j, w);
      const auto c_prev = cells.at(t, n, j, w), c_new = cells.at(t + 1, n, j, w);
      dh.setZero();
      if (dy != nullptr) dh = output_grads.at(t, n, j, w);
      if (t == steps - 1) dh += dh_last;  // h_n is this step's output
      // backprop h = r * c_new + (1 - r) * skip into r (through its sigmoid), skip and c_new
      if (projected_skip) {
        dreset = dh * (c_new - gate_values.at(t, n, kSruBlockSkip * H + j, w)) * r * (Scalar(1) - r);
      } else {
        dreset = dh * (c_new - inputs.at(t, n, j, w)) * r * (Scalar(1) - r);
      }
      dz_skip = dh * (Scalar(1) - r);
      dc += dh * r;
      // backprop c_new = f * c_prev + (1 - f) * h~ into f (through its sigmoid), h~ and c_prev, then the paths
      // of c_prev through v_f * c_prev and v_r * c_prev
      dforget = dc * (c_prev - candidate) * f * (Scalar(1) - f);
      dz_candidate = dc * (Scalar(1) - f);
      dz_f = dforget;
      dz_r = dreset;
      dv_f += dforget * c_prev;
      dv_r += dreset * c_prev;
      dc = dc * f + dforget * v_f + dreset * v_r;
    }
    dcell = dc;
    if (steps > 0) dh_last.setZero();  // h0 reaches h_n only in a row of length 0
    segment(dv_rows.data(), n, H, j, w) = dv_f;
    segment(dv_rows.data() + N * H, n, H, j, w) = dv_r;
  });
  column_sums(grads.recurrent_weight, dv_rows.data(), H, N, H);
  column_sums(grads.recurrent_weight + H, dv_rows.data() + N * H, H, N, H);
  column_sums(grads.bias, dz.data() + kSruBlockForget * H, GH, rows, 2 * H);
  rows_times_weight(grads.x, I, dz.data(), GH, rows, GH, weights.kernel, GH, I, true, nullptr, false);
  if (!projected_skip) {  // dx += the highway's gradient, in the fixed element chunks of parallel_elements
    Scalar* dx = grads.x;
    const Scalar* skip = dskip.data();
    parallel_elements(rows * H, [&](Index begin, Index end) {
      VectorMap<Scalar>(dx + begin, end - begin) += ConstVectorMap<Scalar>(skip + begin, end - begin);
    });
  }
  transposed_times(grads.kernel, GH, x, I, I, dz.data(), GH, GH, rows);
}

}  // namespace rnnext
