// Simple (Elman) RNN: forward over a whole sequence and backpropagation through time.
//   h_new = act(x[t] . kernel + h[t] . recurrent_kernel + bias),  act in {tanh, relu, sigmoid}
// Zoneout keeps a share k of the previous state, with the candidate h~ = act(.): h_new = k * h[t] + (1 - k) * h~;
// the candidates are then cached too, since h[t+1] no longer holds them and act' is written on them.
// The time loop is time_loop.h's; this file holds the products and pointwise math of one step, forward and
// backward side by side, with the activation as a template parameter.
#pragma once

#include <optional>

#include "rnnext/common.h"
#include "rnnext/gemm.h"
#include "rnnext/time_loop.h"

namespace rnnext {

template <typename Scalar>
struct RnnWeights {
  const Scalar* kernel;            // [I, H]
  const Scalar* recurrent_kernel;  // [H, H]
  const Scalar* bias;              // [H]
};

template <typename Scalar>
struct RnnGrads {
  Scalar* x;                 // [T, N, I]
  Scalar* h0;                // [N, H] on entry the gradient on h[T] (dh_n), on exit the one on h0
  Scalar* kernel;            // [I, H]
  Scalar* recurrent_kernel;  // [H, H]
  Scalar* bias;              // [H]
};

// Forward step: y[t] holds x[t] . kernel + bias; add h[t] . U, activate in place, write h[t+1] (under zoneout the
// mix of h[t] and the candidate, which is kept in `candidate` when its data is not null).
template <typename Scalar, Activation Act>
struct RnnForwardStep {
  static constexpr bool packs = true, rows = true;
  GateColumns<Scalar>& U;
  Sequence<Scalar> y, h;    // [T, N, H], [T+1, N, H]
  Zoneout<Scalar> zoneout;
  Sequence<Scalar> candidate;  // [T, N, H] h~ for the backward pass; data null unless cached under zoneout

  StepOperand<Scalar> operand(Index t) const { return U.operand(h.step(t), h.width); }
  void products(Index t, Index b, const UnitBlock& block) const { U.add(y.step(t) + block.begin, y.width, b, 0); }
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    auto out = y.segment(t, n, j, w);
    if constexpr (Act == Activation::Tanh) out = tanh_of(out);
    if constexpr (Act == Activation::Sigmoid) out = sigmoid(out);
    if constexpr (Act == Activation::Relu) out = out.max(Scalar(0));
    if (!zoneout.active()) {
      h.segment(t + 1, n, j, w) = out;
      return;
    }
    if (candidate.data != nullptr) candidate.segment(t, n, j, w) = out;
    const auto keep = zoneout.share(t, n, j, w, h.N, h.width);
    out = keep * h.segment(t, n, j, w) + (Scalar(1) - keep) * out;
    h.segment(t + 1, n, j, w) = out;
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const {
    h.segment(t + 1, n, j, w) = h.segment(t, n, j, w);
    y.segment(t, n, j, w).setZero();
    if (candidate.data != nullptr) candidate.segment(t, n, j, w).setZero();
  }
};

// Backward step, first stage: through the activation, dpre = (dh + dy) * act'(h_new). Valid rows restart dh
// from zero (under zoneout from its direct path k * (dh + dy)) for the product of the next stage
// (BackpropIntoState); masked rows keep it and get dpre = 0.
template <typename Scalar, Activation Act>
struct RnnBackwardStep {
  static constexpr bool packs = false, rows = true;
  Sequence<Scalar> dpre;      // [T, N, H] gradient on the pre-activations
  Scalar* dh;                 // [N, H] gradient on h[t+1]
  Sequence<const Scalar> dy;  // [T, N, H], data null when absent
  Sequence<const Scalar> h;   // [T+1, N, H]
  Zoneout<Scalar> zoneout;
  Sequence<const Scalar> candidate;  // [T, N, H] the cached h~ (zoneout only)

  void products(Index, Index, const UnitBlock&) const {}
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    auto grad = dpre.segment(t, n, j, w);
    auto dstate = segment(dh, n, h.width, j, w);
    grad = dstate;
    if (dy.data != nullptr) grad += dy.segment(t, n, j, w);
    if (zoneout.active()) {  // through the mix: k * grad straight into h[t], the rest into the candidate
      const auto keep = zoneout.share(t, n, j, w, h.N, h.width);
      dstate = keep * grad;
      grad *= Scalar(1) - keep;
      activation_gradient(grad, candidate.segment(t, n, j, w));
      return;
    }
    activation_gradient(grad, h.segment(t + 1, n, j, w));
    dstate.setZero();
  }
  // grad *= act'(a), written on the activation's output y = act(a).
  template <typename Grad, typename Output>
  static void activation_gradient(Grad&& grad, const Output& y) {
    if constexpr (Act == Activation::Tanh) grad *= Scalar(1) - y * y;
    if constexpr (Act == Activation::Sigmoid) grad *= y * (Scalar(1) - y);
    if constexpr (Act == Activation::Relu) grad = (y > Scalar(0)).select(grad, Scalar(0));
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const {
    dpre.segment(t, n, j, w).setZero();
  }
};

// A forward pass with its weights packed once, for one call or many (see LstmForward in lstm.h).
template <typename Scalar, Activation Act>
class RnnForward : PackedForward<Scalar, RnnWeights<Scalar>> {
  using Base = PackedForward<Scalar, RnnWeights<Scalar>>;
  using Base::d_, Base::loop_, Base::U_, Base::weights_;

 public:
  static constexpr int kStates = 1;  // h
  using Weights = RnnWeights<Scalar>;

  RnnForward(const Weights& weights, const Dims& d, const int64_t* lengths /* [N] or null */, bool reuse,
             const Masks<Scalar>& masks = {})
      : Base(weights, d, 1, lengths, reuse, masks) {}

  // On entry h[0] holds h0; on exit h[1..T] hold the states, y the outputs and, under zoneout, candidate the
  // candidates h~ (candidate may be null without zoneout).
  void run_cached(Scalar* y /* [T, N, H] */, Scalar* h /* [T+1, N, H] */, Scalar* candidate /* [T, N, H] */,
                  const Scalar* x /* [T, N, I] */) const {
    loop(y, {h, d_.N, d_.H}, x, candidate);
  }

  // states0 = (h0,) [N, H] in, states_n = (h_n,) out; nothing is cached.
  void run(Scalar* y, const Scalar* const* states0, Scalar* const* states_n, const Scalar* x) const {
    const Index N = d_.N, H = d_.H;
    Workspace<Scalar> h(2 * N * H);
    const Sequence<Scalar> h_ring{h.data(), N, H, Sequence<Scalar>::kRingOfTwo};
    std::copy_n(states0[0], N * H, h_ring.step(0));
    loop(y, h_ring, x);
    std::copy_n(h_ring.step(d_.T), N * H, states_n[0]);
  }

 private:
  void loop(Scalar* y, const Sequence<Scalar>& h, const Scalar* x, Scalar* candidate = nullptr) const {
    const Index N = d_.N, H = d_.H;
    // y doubles as the buffer of input projections: y[t] holds x[t].kernel + bias until step t overwrites it.
    this->project(y, x, weights_.bias, H);
    const Zoneout<Scalar>& zoneout = this->masked_.masks().zoneout_h;
    RnnForwardStep<Scalar, Act> step{U_, {y, N, H}, h, zoneout, {zoneout.active() ? candidate : nullptr, N, H}};
    loop_.forward(step);
  }
};

// Forward over a whole sequence, cached for rnn_backward (see RnnForward::run_cached).
template <typename Scalar, Activation Act>
void rnn_forward(Scalar* y /* [T, N, H] */, Scalar* h /* [T+1, N, H] */, Scalar* candidate /* [T, N, H] or null */,
                 const Scalar* x /* [T, N, I] */, const RnnWeights<Scalar>& weights,
                 const int64_t* lengths /* [N] or null */, const Dims& d, const Masks<Scalar>& masks = {}) {
  RnnForward<Scalar, Act>(weights, d, lengths, false, masks).run_cached(y, h, candidate, x);
}

// Backward. grads.h0 holds dh_n on entry. dy may be null (no gradient on the outputs). masks: the forward
// pass's; candidate: the forward's candidates, read under zoneout only.
template <typename Scalar, Activation Act>
void rnn_backward(const RnnGrads<Scalar>& grads, const Scalar* dy /* [T, N, H] or null */,
                  const Scalar* h /* [T+1, N, H] */, const Scalar* candidate /* [T, N, H] or null */,
                  const Scalar* x /* [T, N, I] */, const RnnWeights<Scalar>& weights,
                  const int64_t* lengths /* [N] or null */, const Dims& d, const Masks<Scalar>& masks = {}) {
  const Index T = d.T, N = d.N, H = d.H;
  Workspace<Scalar> dpre(T * N * H);  // [T, N, H] gradient on the pre-activations
  const MaskedOperands<Scalar> masked(masks, d, H, weights.recurrent_kernel);
  const TimeLoop loop(d, 1, lengths);
  UnitRows<Scalar> U(masked.recurrent_kernel(), d, 1, 0, H, loop);
  RnnBackwardStep<Scalar, Act> through_activation{{dpre.data(), N, H}, grads.h0, {dy, N, H}, {h, N, H},
                                                  masks.zoneout_h, {candidate, N, H}};
  BackpropIntoState<Scalar> into_state(U, {dpre.data(), N, H}, grads.h0, d, lengths, masks.state);
  loop.backward(through_activation, into_state);

  Workspace<Scalar> masked_states(masks.state ? T * N * H : 0);  // [T, N, H]
  weight_gradients(grads.x, grads.kernel, grads.recurrent_kernel, grads.bias, dpre.data(), masked.inputs(x),
                   weights.kernel, masked.states(h, masked_states), T * N, d.I, H, H);
  masked.unmask(grads.x, grads.recurrent_kernel);
}

}  // namespace rnnext
