// GRU: forward over a whole sequence and backpropagation through time, gate order r, z, n, in both
// published variants:
//   reset_after = true  (cuDNN, PyTorch, Keras): n = tanh(x.W_n + b_xn + r * (h.U_n + b_hn)), bias [2, 3H]
//   reset_after = false (Cho et al. 2014):        n = tanh(x.W_n + (r * h).U_n + b_n),        bias [3H]
//   h_new = (1 - z) * n + z * h[t]   (PyTorch, Keras and Cho et al.; some course notes swap z and 1 - z)
// Zoneout keeps a share k of the previous state: h_new = k * h[t] + (1 - k) * ((1 - z) * n + z * h[t]).
// The time loop is time_loop.h's; this file holds the products and pointwise math of each stage of a step,
// forward and backward side by side, with the variant as a template parameter. reset_after = false needs one
// more stage each way: n's product needs r * h[t] of every unit, and its gradient d(r * h) feeds dz_r.
#pragma once

#include <optional>

#include "rnnext/common.h"
#include "rnnext/gemm.h"
#include "rnnext/time_loop.h"

namespace rnnext {

constexpr Index kGruGates = 3;
constexpr Index kGateR = 0, kGateZ = 1, kGateN = 2;

template <typename Scalar>
struct GruWeights {
  const Scalar* kernel;            // [I, 3H]
  const Scalar* recurrent_kernel;  // [H, 3H]
  const Scalar* bias;              // [2, 3H] (input row, recurrent row) when reset_after, else [3H]
};

// The forward pass's states, activated gates and the variant's recurrent term, which the backward pass reads.
// Element is Scalar for the forward pass, which writes it, and const Scalar for the backward pass.
template <typename Element>
struct GruCache {
  Element* h;          // [T+1, N, H] slot 0 = h0
  Element* gates;      // [T, N, 3H] activated gates r, z, n
  Element* recurrent;  // [T, N, H] "hn" = h[t].U_n + b_hn when reset_after, "rh" = r * h[t] otherwise
};

template <typename Scalar>
struct GruGrads {
  Scalar* x;                 // [T, N, I]
  Scalar* h0;                // [N, H] on entry the gradient on h[T] (dh_n), on exit the one on h0
  Scalar* kernel;            // [I, 3H]
  Scalar* recurrent_kernel;  // [H, 3H]
  Scalar* bias;              // the bias's shape: [2, 3H] when reset_after, else [3H]
};

// Forward: what both stages of a step share. gates[t] holds x[t] . kernel plus the biases that are simply
// added; finish() writes h[t+1] and y[t] once n is known, carry() stands in for it at masked rows.
template <typename Scalar>
struct GruForwardBase {
  GateColumns<Scalar>& U;
  Sequence<Scalar> y, h, gates, recurrent;  // [T, N, H], [T+1, N, H], [T, N, 3H], [T, N, H]
  Zoneout<Scalar> zoneout;

  template <typename W>
  auto gate(Index t, Index n, Index k, Index j, W w) const {
    return gates.segment(t, n, k * h.width + j, w);
  }
  template <typename W>
  void finish(Index t, Index n, Index j, W w) const {
    auto z = gate(t, n, kGateZ, j, w), cand = gate(t, n, kGateN, j, w);
    auto state = h.segment(t + 1, n, j, w);
    state = (Scalar(1) - z) * cand + z * h.segment(t, n, j, w);
    if (zoneout.active()) {
      const auto keep = zoneout.share(t, n, j, w, h.N, h.width);
      state = keep * h.segment(t, n, j, w) + (Scalar(1) - keep) * state;
    }
    y.segment(t, n, j, w) = state;
  }
  template <typename W>
  void carry(Index t, Index n, Index j, W w) const {
    h.segment(t + 1, n, j, w) = h.segment(t, n, j, w);
    y.segment(t, n, j, w).setZero();
  }
};

// Forward, first stage (the only one when reset_after): r, z += h[t] . U_rz, and hn += h[t] . U_n when
// reset_after (hn starts as b_hn); then r and z, and n = tanh(. + r * hn) when reset_after, or rh = r * h[t]
// for the second stage. All of it at masked rows too (it is cached).
template <typename Scalar, bool ResetAfter>
struct GruForwardGates : GruForwardBase<Scalar> {
  using B = GruForwardBase<Scalar>;
  using B::U, B::h, B::gates, B::recurrent, B::gate, B::finish, B::carry;
  static constexpr bool packs = true, rows = true;

  StepOperand<Scalar> operand(Index t) const { return U.operand(h.step(t), h.width); }
  // rh = r * h[t] unmasked (cached so); the recurrent dropout mask joins it when the next stage packs it.
  void products(Index t, Index b, const UnitBlock& block) const {
    const Index H = h.width, j = block.begin;
    U.add(gates.step(t) + kGateR * H + j, gates.width, b, kGateR);
    U.add(gates.step(t) + kGateZ * H + j, gates.width, b, kGateZ);
    if constexpr (ResetAfter) U.add(recurrent.step(t) + j, H, b, kGateN);
  }
  template <typename W>
  void activate(Index t, Index n, Index j, W w) const {
    auto r = gate(t, n, kGateR, j, w), z = gate(t, n, kGateZ, j, w);
    auto rec = recurrent.segment(t, n, j, w);
    r = sigmoid(r);
    z = sigmoid(z);
    if constexpr (ResetAfter) {
      auto cand = gate(t, n, kGateN, j, w);
      cand = tanh_of(cand + r * rec);
    } else {
      rec = r * h.segment(t, n, j, w);
    }
  }
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    activate(t, n, j, w);
    if constexpr (ResetAfter) finish(t, n, j, w);
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const {
    activate(t, n, j, w);
    if constexpr (ResetAfter) carry(t, n, j, w);
  }
};

// Forward, second stage (reset_after = false): n += rh . U_n, which needs rh of every unit, then n = tanh(.).
template <typename Scalar>
struct GruForwardCandidate : GruForwardBase<Scalar> {
  using B = GruForwardBase<Scalar>;
  using B::U, B::h, B::gates, B::recurrent, B::gate, B::finish, B::carry;
  static constexpr bool packs = true, rows = true;

  StepOperand<Scalar> operand(Index t) const { return U.operand(recurrent.step(t), recurrent.width); }
  void products(Index t, Index b, const UnitBlock& block) const {
    U.add(gates.step(t) + kGateN * h.width + block.begin, gates.width, b, kGateN);
  }
  template <typename W>
  void activate(Index t, Index n, Index j, W w) const {
    auto cand = gate(t, n, kGateN, j, w);
    cand = tanh_of(cand);
  }
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    activate(t, n, j, w);
    finish(t, n, j, w);
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const {
    activate(t, n, j, w);
    carry(t, n, j, w);
  }
};

// Backward step, first stage: backpropagate h_new = (1 - z) * n + z * h[t] into z, n (and r when reset_after),
// and the direct path into h[t]; the products of the later stages add the paths through the gates. dz[t] is the
// gradient on the recurrent pre-activations (h[t].U [+ b_h]): when reset_after, dz_n is scaled by r there, so the
// input side's dz_n is kept apart in dx_cand. Masked rows get dz = 0 and keep dh.
template <typename Scalar, bool ResetAfter>
struct GruBackwardStep {
  static constexpr bool packs = false, rows = true;
  Sequence<Scalar> dz, dx_cand;  // [T, N, 3H], [T, N, H] (reset_after only)
  Scalar* dh;                    // [N, H] gradient on h[t+1], turned into the one on h[t]
  Sequence<const Scalar> dy;     // [T, N, H], data null when absent
  Sequence<const Scalar> h, gates, recurrent;  // the cache: [T+1, N, H], [T, N, 3H], [T, N, H]
  Zoneout<Scalar> zoneout;

  void products(Index, Index, const UnitBlock&) const {}
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    using BlockValues = BlockArray<Scalar, W>;
    const Index H = h.width;
    auto dgate = [&](Index k) { return dz.segment(t, n, k * H + j, w); };
    auto gate = [&](Index k) { return gates.segment(t, n, k * H + j, w); };
    auto r = gate(kGateR), z = gate(kGateZ), cand = gate(kGateN);
    auto dstate = segment(dh, n, H, j, w);
    BlockValues dh_total = dstate;
    if (dy.data != nullptr) dh_total += dy.segment(t, n, j, w);
    BlockValues kept_path = BlockValues::Zero(w.size);  // zoneout's direct path into h[t]
    if (zoneout.active()) {
      const BlockValues keep = zoneout.share(t, n, j, w, h.N, H);
      kept_path = keep * dh_total;
      dh_total *= Scalar(1) - keep;
    }
    const BlockValues dcand_pre = dh_total * (Scalar(1) - z) * (Scalar(1) - cand * cand);
    dgate(kGateZ) = dh_total * (h.segment(t, n, j, w) - cand) * z * (Scalar(1) - z);
    dstate = dh_total * z + kept_path;
    if constexpr (ResetAfter) {
      auto hn = recurrent.segment(t, n, j, w);
      dgate(kGateR) = dcand_pre * hn * r * (Scalar(1) - r);
      dgate(kGateN) = dcand_pre * r;
      dx_cand.segment(t, n, j, w) = dcand_pre;
    } else {
      dgate(kGateN) = dcand_pre;
    }
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const {
    for (Index k = 0; k < kGruGates; ++k) dz.segment(t, n, k * h.width + j, w).setZero();
    if constexpr (ResetAfter) dx_cand.segment(t, n, j, w).setZero();
  }
};

// reset_after = false, middle stage: backpropagate n = tanh(. + (r * h).U_n) into r * h (drh = dz_n . U_n^T),
// then into r and h[t].
template <typename Scalar>
struct GruBackwardReset {
  static constexpr bool packs = true, rows = true;
  UnitRows<Scalar>& U_n;
  Sequence<Scalar> dz;              // [T, N, 3H]
  Scalar* drh;                      // [N, H] gradient on r * h[t], this step's only
  Scalar* dh;                       // [N, H]
  Sequence<const Scalar> h, gates;  // [T+1, N, H], [T, N, 3H]
  const Scalar* state_mask;         // [N, H] or null: the product gives the gradient on r * h[t] * mask

  StepOperand<Scalar> operand(Index t) const { return U_n.operand(dz.step(t) + kGateN * h.width, dz.width); }
  void products(Index, Index b, const UnitBlock& block) const {
    const Index H = h.width;
    for (Index n = 0; n < h.N; ++n) std::fill_n(drh + n * H + block.begin, block.size, Scalar(0));
    U_n.add(drh + block.begin, H, b);
    if (state_mask != nullptr)
      for (Index n = 0; n < h.N; ++n)
        VectorMap<Scalar>(drh + n * H + block.begin, block.size) *=
            ConstVectorMap<Scalar>(state_mask + n * H + block.begin, block.size);
  }
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    const Index H = h.width;
    auto r = gates.segment(t, n, kGateR * H + j, w);
    auto drh_row = segment(drh, n, H, j, w);
    dz.segment(t, n, kGateR * H + j, w) = drh_row * h.segment(t, n, j, w) * r * (Scalar(1) - r);
    segment(dh, n, H, j, w) += drh_row * r;
  }
  template <typename W>
  void masked_row(Index, Index, Index, W) const {}
};

// A forward pass with its weights packed once, for one call or many (see LstmForward in lstm.h).
template <typename Scalar, bool ResetAfter>
class GruForward : PackedForward<Scalar, GruWeights<Scalar>> {
  using Base = PackedForward<Scalar, GruWeights<Scalar>>;
  using Base::d_, Base::loop_, Base::U_, Base::weights_;

 public:
  static constexpr Index G = kGruGates;
  static constexpr int kStates = 1;  // h
  using Weights = GruWeights<Scalar>;

  GruForward(const Weights& weights, const Dims& d, const int64_t* lengths /* [N] or null */, bool reuse,
             const Masks<Scalar>& masks = {})
      : Base(weights, d, G, lengths, reuse, masks), input_bias_(weights.bias, weights.bias + G * d.H) {
    // Every bias that is simply added joins the input projection: with reset_after the recurrent biases of r
    // and z, while b_hn stays inside r * (h.U_n + b_hn).
    if constexpr (ResetAfter)
      for (Index col = 0; col < 2 * d.H; ++col) input_bias_[size_t(col)] += weights.bias[G * d.H + col];
  }

  // On entry cache.h[0] holds h0; on exit the cache holds every state, the activated gates and the variant's
  // recurrent term, and y the outputs.
  void run_cached(Scalar* y /* [T, N, H] */, const GruCache<Scalar>& cache, const Scalar* x /* [T, N, I] */) const {
    const Index N = d_.N, H = d_.H;
    loop(y, {cache.h, N, H}, cache.gates, {cache.recurrent, N, H}, x);
  }

  // states0 = (h0,) [N, H] in, states_n = (h_n,) out; nothing is cached.
  void run(Scalar* y, const Scalar* const* states0, Scalar* const* states_n, const Scalar* x) const {
    const Index T = d_.T, N = d_.N, H = d_.H;
    // The recurrent term is kept whole when reset_after: it starts as b_hn for every step before the loop.
    Workspace<Scalar> h(2 * N * H), gates(T * N * G * H), recurrent((ResetAfter ? T : 2) * N * H);
    const Sequence<Scalar> h_ring{h.data(), N, H, Sequence<Scalar>::kRingOfTwo};
    const Sequence<Scalar> recurrent_steps{recurrent.data(), N, H,
                                           ResetAfter ? ~Index(0) : Sequence<Scalar>::kRingOfTwo};
    std::copy_n(states0[0], N * H, h_ring.step(0));
    loop(y, h_ring, gates.data(), recurrent_steps, x);
    std::copy_n(h_ring.step(T), N * H, states_n[0]);
  }

 private:
  void loop(Scalar* y, const Sequence<Scalar>& h, Scalar* gates, const Sequence<Scalar>& recurrent,
            const Scalar* x) const {
    const Index T = d_.T, N = d_.N, H = d_.H, GH = G * H;
    this->project(gates, x, input_bias_.data(), GH);
    if constexpr (ResetAfter) {  // hn starts as b_hn; the loop adds h[t].U_n
      for (Index row = 0; row < T * N; ++row) std::copy_n(weights_.bias + GH + 2 * H, H, recurrent.data + row * H);
    }
    const GruForwardBase<Scalar> base{U_, {y, N, H}, h, {gates, N, GH}, recurrent,  // U_ also packs r * h[t]
                                      this->masked_.masks().zoneout_h};
    GruForwardGates<Scalar, ResetAfter> gate_stage{base};
    if constexpr (ResetAfter) {
      loop_.forward(gate_stage);
    } else {
      GruForwardCandidate<Scalar> candidate{base};
      loop_.forward(gate_stage, candidate);
    }
  }

  std::vector<Scalar> input_bias_;  // [3H]
};

// Forward over a whole sequence, cached for gru_backward (see GruForward::run_cached).
template <typename Scalar, bool ResetAfter>
void gru_forward(Scalar* y /* [T, N, H] */, const GruCache<Scalar>& cache, const Scalar* x /* [T, N, I] */,
                 const GruWeights<Scalar>& weights, const int64_t* lengths /* [N] or null */, const Dims& d,
                 const Masks<Scalar>& masks = {}) {
  GruForward<Scalar, ResetAfter>(weights, d, lengths, false, masks).run_cached(y, cache, x);
}

// Backward. grads.h0 holds dh_n on entry. dy may be null. masks: the forward pass's.
template <typename Scalar, bool ResetAfter>
void gru_backward(const GruGrads<Scalar>& grads, const Scalar* dy /* [T, N, H] or null */,
                  const GruCache<const Scalar>& cache, const Scalar* x_in /* [T, N, I] */,
                  const GruWeights<Scalar>& weights, const int64_t* lengths /* [N] or null */, const Dims& d,
                  const Masks<Scalar>& masks = {}) {
  const Index T = d.T, N = d.N, H = d.H, I = d.I, G = kGruGates, GH = G * H, rows = T * N;
  Workspace<Scalar> dz(rows * GH);                       // [T, N, 3H]
  Workspace<Scalar> dx_cand(ResetAfter ? rows * H : 0);  // [T, N, H]
  const MaskedOperands<Scalar> masked(masks, d, GH, weights.recurrent_kernel);
  const Scalar* recurrent_kernel = masked.recurrent_kernel();
  const TimeLoop loop(d, G, lengths);
  GruBackwardStep<Scalar, ResetAfter> through_state{
      {dz.data(), N, GH}, {dx_cand.data(), N, H}, grads.h0, {dy, N, H}, {cache.h, N, H}, {cache.gates, N, GH},
      {cache.recurrent, N, H}, masks.zoneout_h};
  // reset_after: dh += dz . U^T over all 3H columns. Otherwise d(r*h) = dz_n . U_n^T first, then
  // dh += dz_rz . U_rz^T once dz_r is known.
  UnitRows<Scalar> U(recurrent_kernel, d, G, 0, ResetAfter ? GH : 2 * H, loop);
  BackpropIntoState<Scalar> into_state(U, {dz.data(), N, GH}, grads.h0, d, lengths, masks.state);
  if constexpr (ResetAfter) {
    loop.backward(through_state, into_state);
  } else {
    Workspace<Scalar> drh(N * H);  // [N, H]
    UnitRows<Scalar> U_n(recurrent_kernel, d, G, kGateN * H, H, loop);
    GruBackwardReset<Scalar> through_reset{U_n, {dz.data(), N, GH}, drh.data(), grads.h0, {cache.h, N, H},
                                           {cache.gates, N, GH}, masks.state};
    loop.backward(through_state, through_reset, into_state);
  }

  // The weight gradients read the operands as the products saw them: x, h[t] and r * h[t] under their masks.
  const Scalar* x = masked.inputs(x_in);
  Workspace<Scalar> masked_states(masks.state ? rows * H : 0), masked_reset(masks.state && !ResetAfter ? rows * H : 0);
  const Scalar* states = masked.states(cache.h, masked_states);
  const Scalar* dz_all = dz.data();
  if constexpr (ResetAfter) {
    // The input side sees (dz_r, dz_z, dx_cand); the recurrent side sees dz = (dz_r, dz_z, dx_cand * r).
    const Scalar* dcand = dx_cand.data();
    rows_times_weight(grads.x, I, dz_all, GH, rows, 2 * H, weights.kernel, GH, I, true, nullptr, false);
    rows_times_weight(grads.x, I, dcand, H, rows, H, weights.kernel + 2 * H, GH, I, true, nullptr, true);
    transposed_times(grads.kernel, GH, x, I, I, dz_all, GH, 2 * H, rows);
    transposed_times(grads.kernel + 2 * H, GH, x, I, I, dcand, H, H, rows);
    transposed_times(grads.recurrent_kernel, GH, states, H, H, dz_all, GH, GH, rows);
    column_sums(grads.bias, dz_all, GH, rows, 2 * H);
    column_sums(grads.bias + 2 * H, dcand, H, rows, H);
    column_sums(grads.bias + GH, dz_all, GH, rows, GH);
  } else {
    // Both sides see dz; the n columns of U multiply r * h[t] ("rh"), the r and z columns multiply h[t].
    rows_times_weight(grads.x, I, dz_all, GH, rows, GH, weights.kernel, GH, I, true, nullptr, false);
    transposed_times(grads.kernel, GH, x, I, I, dz_all, GH, GH, rows);
    transposed_times(grads.recurrent_kernel, GH, states, H, H, dz_all, GH, 2 * H, rows);
    transposed_times(grads.recurrent_kernel + 2 * H, GH, masked.states(cache.recurrent, masked_reset), H, H,
                     dz_all + 2 * H, GH, H, rows);
    column_sums(grads.bias, dz_all, GH, rows, GH);
  }
  masked.unmask(grads.x, grads.recurrent_kernel);
}

}  // namespace rnnext
