// LSTM: forward over a whole sequence and backpropagation through time, with optional peepholes
// (Gers & Schmidhuber 2000) and coupled input/forget gates (i = 1 - f).
//   gates i,f,g,o (coupled: f,g,o) = x[t] . kernel + h[t] . recurrent_kernel + bias  [+ peepholes]
//   c_new = f * c[t] + i * g,   h_new = o * tanh(c_new)
// Zoneout (Krueger et al. 2016) keeps a share k of the previous states, with the candidates c~ = f * c[t] + i * g
// and h~ = o * tanh(c~):  c_new = k_c * c[t] + (1 - k_c) * c~,  h_new = k_h * h[t] + (1 - k_h) * h~. The output
// peephole looks at the cell that is kept, c_new (c~ without zoneout), as i and f look at c[t], the kept c_new
// of the step before.
// The time loop is time_loop.h's; this file holds the pointwise math of one step, forward and backward side by
// side, with the two options as template parameters; the masks of the regularisers are data (time_loop.h).
#pragma once

#include <optional>

#include "rnnext/common.h"
#include "rnnext/gemm.h"
#include "rnnext/time_loop.h"

namespace rnnext {

// Where each gate's block sits along G*H, and each peephole's row.
template <bool Coupled>
struct LstmLayout {
  static constexpr Index G = Coupled ? 3 : 4;  // gate blocks
  static constexpr Index P = Coupled ? 2 : 3;  // peephole rows
  static constexpr Index i = 0, f = Coupled ? 0 : 1, g = Coupled ? 1 : 2, o = Coupled ? 2 : 3;  // i: not coupled
  static constexpr Index peep_i = 0, peep_f = Coupled ? 0 : 1, peep_o = Coupled ? 1 : 2;        // peep_i: not coupled
};

template <typename Scalar>
struct LstmWeights {
  const Scalar* kernel;            // [I, G*H]
  const Scalar* recurrent_kernel;  // [H, G*H]
  const Scalar* bias;              // [G*H]
  const Scalar* peephole;          // [P, H]: rows (i, f, o), or (f, o) when coupled; null without peepholes
};

// The forward pass's states and activated gates, which the backward pass reads. Element is Scalar for the
// forward pass, which writes it, and const Scalar for the backward pass.
template <typename Element>
struct LstmCache {
  Element* h;      // [T+1, N, H] slot 0 = h0
  Element* c;      // [T+1, N, H] slot 0 = c0
  Element* gates;  // [T, N, G*H] activated gates
};

template <typename Scalar>
struct LstmGrads {
  Scalar* x;                 // [T, N, I]
  Scalar* h0;                // [N, H] on entry the gradient on h[T] (dh_n), on exit the one on h0
  Scalar* c0;                // [N, H] on entry the gradient on c[T] (dc_n), on exit the one on c0
  Scalar* kernel;            // [I, G*H]
  Scalar* recurrent_kernel;  // [H, G*H]
  Scalar* bias;              // [G*H]
  Scalar* peephole;          // [P, H], written only with peepholes
};

// Forward step: gates[t] holds x[t] . kernel + bias; add h[t] . U, activate the gates in place (the cache keeps
// them activated), write c[t+1], h[t+1] and y[t].
template <typename Scalar, bool Peephole, bool Coupled>
struct LstmForwardStep {
  using L = LstmLayout<Coupled>;
  static constexpr bool packs = true, rows = true;
  GateColumns<Scalar>& U;
  Sequence<Scalar> y, h, c, gates;  // [T, N, H], [T+1, N, H], [T+1, N, H], [T, N, G*H]
  const Scalar* peephole;           // [P, H] or null
  Zoneout<Scalar> zoneout_h, zoneout_c;

  StepOperand<Scalar> operand(Index t) const { return U.operand(h.step(t), h.width); }
  void products(Index t, Index b, const UnitBlock& block) const {
    for (Index k = 0; k < L::G; ++k) U.add(gates.step(t) + k * h.width + block.begin, gates.width, b, k);
  }

  // The gates i, f, g and the candidate c~ into c[t+1], at masked rows too (they are cached).
  template <typename W>
  void activate_cell(Index t, Index n, Index j, W w) const {
    const Index H = h.width;
    auto gate = [&](Index k) { return gates.segment(t, n, k * H + j, w); };
    auto cell_prev = c.segment(t, n, j, w);
    auto cell = c.segment(t + 1, n, j, w);
    auto f = gate(L::f), g = gate(L::g);
    if constexpr (Peephole) {
      f = sigmoid(f + segment(peephole, L::peep_f, H, j, w) * cell_prev);
    } else {
      f = sigmoid(f);
    }
    g = tanh_of(g);
    if constexpr (Coupled) {
      cell = f * cell_prev + (Scalar(1) - f) * g;
    } else {
      auto i = gate(L::i);
      if constexpr (Peephole) {
        i = sigmoid(i + segment(peephole, L::peep_i, H, j, w) * cell_prev);
      } else {
        i = sigmoid(i);
      }
      cell = f * cell_prev + i * g;
    }
  }
  // The output gate, its peephole looking at `cell`.
  template <typename W, typename Cell>
  void activate_output(Index t, Index n, Index j, W w, const Cell& cell) const {
    auto o = gates.segment(t, n, L::o * h.width + j, w);
    if constexpr (Peephole) {
      o = sigmoid(o + segment(peephole, L::peep_o, h.width, j, w) * cell);
    } else {
      o = sigmoid(o);
    }
  }
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    activate_cell(t, n, j, w);
    auto state = h.segment(t + 1, n, j, w);
    auto cell = c.segment(t + 1, n, j, w);
    if (!zoneout_c.active()) {
      activate_output(t, n, j, w, cell);
      state = gates.segment(t, n, L::o * h.width + j, w) * tanh_of(cell);
    } else {  // the peephole sees the kept cell, h~ the candidate's tanh
      const BlockArray<Scalar, W> candidate = cell;
      const auto keep = zoneout_c.share(t, n, j, w, h.N, h.width);
      cell = keep * c.segment(t, n, j, w) + (Scalar(1) - keep) * candidate;
      activate_output(t, n, j, w, cell);
      state = gates.segment(t, n, L::o * h.width + j, w) * tanh_of(candidate);
    }
    if (zoneout_h.active()) {
      const auto keep = zoneout_h.share(t, n, j, w, h.N, h.width);
      state = keep * h.segment(t, n, j, w) + (Scalar(1) - keep) * state;
    }
    y.segment(t, n, j, w) = state;
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const {
    activate_cell(t, n, j, w);
    activate_output(t, n, j, w, c.segment(t + 1, n, j, w));
    h.segment(t + 1, n, j, w) = h.segment(t, n, j, w);
    c.segment(t + 1, n, j, w) = c.segment(t, n, j, w);
    y.segment(t, n, j, w).setZero();
  }
};

// Backward step, first stage: backpropagate h_new and c_new into the gate pre-activations dz[t] and into c[t].
// Valid rows restart dh from zero for the product of the next stage (BackpropIntoState); masked rows get dz = 0
// and keep dh and dc.
template <typename Scalar, bool Peephole, bool Coupled>
struct LstmBackwardStep {
  using L = LstmLayout<Coupled>;
  static constexpr bool packs = false, rows = true;
  Sequence<Scalar> dz;                 // [T, N, G*H] gradient on the gate pre-activations
  Scalar* dh;                          // [N, H] gradient on h[t+1]
  Scalar* dc;                          // [N, H] gradient on c[t+1], turned into the one on c[t]
  Sequence<const Scalar> dy, c, gates;  // [T, N, H] (data null when absent), [T+1, N, H], [T, N, G*H]
  const Scalar* peephole;              // [P, H] or null
  Zoneout<Scalar> zoneout_h, zoneout_c;

  void products(Index, Index, const UnitBlock&) const {}
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    using BlockValues = BlockArray<Scalar, W>;
    const Index H = c.width;
    auto dgate = [&](Index k) { return dz.segment(t, n, k * H + j, w); };
    auto gate = [&](Index k) { return gates.segment(t, n, k * H + j, w); };
    auto f = gate(L::f), g = gate(L::g), o = gate(L::o);
    auto cell_prev = c.segment(t, n, j, w);
    auto dcell = segment(dc, n, H, j, w);
    auto dstate = segment(dh, n, H, j, w);
    BlockValues dh_total = dstate;
    if (dy.data != nullptr) dh_total += dy.segment(t, n, j, w);
    dstate.setZero();  // restarted here, accumulated by the product of the next stage
    BlockValues cell = c.segment(t + 1, n, j, w), dcell_next = dcell;
    if (zoneout_h.active() || zoneout_c.active()) {
      // Through the zoneout mix into the candidates h~ and c~ (recomputed, the cache holds c_new), and
      // directly into h[t] and c[t].
      cell = f * cell_prev;
      if constexpr (Coupled) {
        cell += (Scalar(1) - f) * g;
      } else {
        cell += gate(L::i) * g;
      }
      if (zoneout_h.active()) {
        const BlockValues keep = zoneout_h.share(t, n, j, w, c.N, H);
        dstate = keep * dh_total;
        dh_total *= Scalar(1) - keep;
      }
      if (zoneout_c.active()) {
        const BlockValues keep = zoneout_c.share(t, n, j, w, c.N, H);
        dcell_next *= Scalar(1) - keep;
        dcell *= keep;
      } else {
        dcell.setZero();
      }
    } else {
      dcell.setZero();
    }
    const BlockValues tanh_cell = tanh_of(cell);

    // Backpropagate h_new = o * tanh(c_new) into the output gate and the cell.
    dgate(L::o) = dh_total * tanh_cell * o * (Scalar(1) - o);
    BlockValues dcell_total = dcell_next + dh_total * o * (Scalar(1) - tanh_cell * tanh_cell);
    if constexpr (Peephole) {
      if (!zoneout_c.active()) {
        dcell_total += dgate(L::o) * segment(peephole, L::peep_o, H, j, w);
      } else {  // the output peephole looked at the kept cell: its gradient splits as dc's did
        const BlockValues dpeep = dgate(L::o) * segment(peephole, L::peep_o, H, j, w);
        const BlockValues keep = zoneout_c.share(t, n, j, w, c.N, H);
        dcell += keep * dpeep;
        dcell_total += (Scalar(1) - keep) * dpeep;
      }
    }
    // Backpropagate c_new = f * c[t] + i * g into f, i (or 1 - f) and g.
    if constexpr (Coupled) {
      dgate(L::f) = dcell_total * (cell_prev - g) * f * (Scalar(1) - f);
      dgate(L::g) = dcell_total * (Scalar(1) - f) * (Scalar(1) - g * g);
    } else {
      auto i = gate(L::i);
      dgate(L::f) = dcell_total * cell_prev * f * (Scalar(1) - f);
      dgate(L::i) = dcell_total * g * i * (Scalar(1) - i);
      dgate(L::g) = dcell_total * i * (Scalar(1) - g * g);
    }
    // Into c[t]: directly through f, and through the i and f peepholes (dcell holds zoneout's direct path).
    dcell += dcell_total * f;
    if constexpr (Peephole) {
      dcell += dgate(L::f) * segment(peephole, L::peep_f, H, j, w);
      if constexpr (!Coupled) dcell += dgate(L::i) * segment(peephole, L::peep_i, H, j, w);
    }
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const {
    for (Index k = 0; k < L::G; ++k) dz.segment(t, n, k * c.width + j, w).setZero();
  }
};

// A forward pass with its weights packed once: for one call (lstm_forward), or for many calls of one shape
// (stepper.h). run_cached keeps every state and activated gate for a backward pass; run keeps only what the
// next step reads (two slots of states), with the same arithmetic and so the same results, bit for bit.
template <typename Scalar, bool Peephole, bool Coupled>
class LstmForward : PackedForward<Scalar, LstmWeights<Scalar>> {
  using Base = PackedForward<Scalar, LstmWeights<Scalar>>;
  using Base::d_, Base::loop_, Base::U_, Base::weights_;

 public:
  static constexpr Index G = LstmLayout<Coupled>::G;
  static constexpr int kStates = 2;  // h, c
  using Weights = LstmWeights<Scalar>;

  LstmForward(const Weights& weights, const Dims& d, const int64_t* lengths /* [N] or null */, bool reuse,
              const Masks<Scalar>& masks = {})
      : Base(weights, d, G, lengths, reuse, masks) {}

  // On entry cache.h[0], cache.c[0] hold h0, c0; on exit the cache holds every state and the activated gates
  // of every step, and y the outputs.
  void run_cached(Scalar* y /* [T, N, H] */, const LstmCache<Scalar>& cache, const Scalar* x /* [T, N, I] */) const {
    const Index N = d_.N, H = d_.H;
    loop(y, {cache.h, N, H}, {cache.c, N, H}, cache.gates, x);
  }

  // states0 = (h0, c0) [N, H] in, states_n = (h_n, c_n) [N, H] out; nothing is cached.
  void run(Scalar* y /* [T, N, H] */, const Scalar* const* states0, Scalar* const* states_n,
           const Scalar* x /* [T, N, I] */) const {
    const Index T = d_.T, N = d_.N, H = d_.H;
    Workspace<Scalar> h(2 * N * H), c(2 * N * H), gates(T * N * G * H);
    const Sequence<Scalar> h_ring{h.data(), N, H, Sequence<Scalar>::kRingOfTwo};
    const Sequence<Scalar> c_ring{c.data(), N, H, Sequence<Scalar>::kRingOfTwo};
    std::copy_n(states0[0], N * H, h_ring.step(0));
    std::copy_n(states0[1], N * H, c_ring.step(0));
    loop(y, h_ring, c_ring, gates.data(), x);
    std::copy_n(h_ring.step(T), N * H, states_n[0]);
    std::copy_n(c_ring.step(T), N * H, states_n[1]);
  }

 private:
  void loop(Scalar* y, const Sequence<Scalar>& h, const Sequence<Scalar>& c, Scalar* gates, const Scalar* x) const {
    const Index N = d_.N, H = d_.H, GH = G * H;
    // gates doubles as the buffer of input projections until step t activates its slice in place.
    this->project(gates, x, weights_.bias, GH);
    const Masks<Scalar>& masks = this->masked_.masks();
    LstmForwardStep<Scalar, Peephole, Coupled> step{
        U_, {y, N, H}, h, c, {gates, N, GH}, weights_.peephole, masks.zoneout_h, masks.zoneout_c};
    loop_.forward(step);
  }
};

// Forward over a whole sequence, cached for lstm_backward (see LstmForward::run_cached).
template <typename Scalar, bool Peephole, bool Coupled>
void lstm_forward(Scalar* y /* [T, N, H] */, const LstmCache<Scalar>& cache, const Scalar* x /* [T, N, I] */,
                  const LstmWeights<Scalar>& weights, const int64_t* lengths /* [N] or null */, const Dims& d,
                  const Masks<Scalar>& masks = {}) {
  LstmForward<Scalar, Peephole, Coupled>(weights, d, lengths, false, masks).run_cached(y, cache, x);
}

// Backward. grads.h0 and grads.c0 hold dh_n and dc_n on entry. dy may be null. masks: the forward pass's.
template <typename Scalar, bool Peephole, bool Coupled>
void lstm_backward(const LstmGrads<Scalar>& grads, const Scalar* dy /* [T, N, H] or null */,
                   const LstmCache<const Scalar>& cache, const Scalar* x /* [T, N, I] */,
                   const LstmWeights<Scalar>& weights, const int64_t* lengths /* [N] or null */, const Dims& d,
                   const Masks<Scalar>& masks = {}) {
  using L = LstmLayout<Coupled>;
  const Index T = d.T, N = d.N, H = d.H, GH = L::G * H;
  Workspace<Scalar> dz(T * N * GH);  // [T, N, G*H] gradient on the gate pre-activations
  const MaskedOperands<Scalar> masked(masks, d, GH, weights.recurrent_kernel);
  const TimeLoop loop(d, L::G, lengths);
  UnitRows<Scalar> U(masked.recurrent_kernel(), d, L::G, 0, GH, loop);
  LstmBackwardStep<Scalar, Peephole, Coupled> through_gates{
      {dz.data(), N, GH}, grads.h0, grads.c0, {dy, N, H}, {cache.c, N, H}, {cache.gates, N, GH}, weights.peephole,
      masks.zoneout_h, masks.zoneout_c};
  BackpropIntoState<Scalar> into_state(U, {dz.data(), N, GH}, grads.h0, d, lengths, masks.state);
  loop.backward(through_gates, into_state);

  Workspace<Scalar> masked_states(masks.state ? T * N * H : 0);  // [T, N, H]
  weight_gradients(grads.x, grads.kernel, grads.recurrent_kernel, grads.bias, dz.data(), masked.inputs(x),
                   weights.kernel, masked.states(cache.h, masked_states), T * N, d.I, H, GH);
  masked.unmask(grads.x, grads.recurrent_kernel);

  if constexpr (Peephole) {
    // i and f look at c[t], o at c[t+1]; masked steps contribute nothing since their dz is zero.
    // Summed row by row in order, like column_sums, so results do not depend on buffer alignment.
    auto peep_row = [&](Index row) { return VectorMap<Scalar>(grads.peephole + row * H, H); };
    for (Index row = 0; row < L::P; ++row) peep_row(row).setZero();
    for (Index row = 0; row < T * N; ++row) {
      const Scalar* dz_row = dz.data() + row * GH;
      ConstVectorMap<Scalar> cell_prev(cache.c + row * H, H), cell_next(cache.c + (row + N) * H, H);
      peep_row(L::peep_f) += ConstVectorMap<Scalar>(dz_row + L::f * H, H) * cell_prev;
      peep_row(L::peep_o) += ConstVectorMap<Scalar>(dz_row + L::o * H, H) * cell_next;
      if constexpr (!Coupled) peep_row(L::peep_i) += ConstVectorMap<Scalar>(dz_row + L::i * H, H) * cell_prev;
    }
  }
}

}  // namespace rnnext
