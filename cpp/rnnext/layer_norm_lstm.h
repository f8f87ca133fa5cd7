// Layer-normalised LSTM (Ba, Kiros & Hinton 2016, with haste's LayerNormLSTM placement): forward and BPTT.
//   z[t]    = LN(x[t] . kernel; ln_input_gamma) + LN(h[t] . recurrent_kernel; ln_recurrent_gamma) + bias
//   i,f,g,o = sigmoid, sigmoid, tanh, sigmoid of z[t]'s blocks;  c[t+1] = f * c[t] + i * g
//   h[t+1]  = o * tanh(LN(c[t+1]; ln_cell_gamma, ln_cell_beta))
// Statistics are per row over all 4H pre-activations (and the H cells), as in the paper and haste; the gate
// normalisations have no shift of their own (it would duplicate bias). layer_norm.h says how the statistics of a
// row spread over unit blocks are combined. Each step is three stages of time_loop.h: the recurrent product and
// its block moments; its normalisation, the gates and c[t+1] with the cell's block moments; the cell's
// normalisation and h[t+1]. The backward step mirrors them, then backpropagates into h[t] (BackpropIntoState).
// The regularisers' masks (time_loop.h) act as in the plain LSTM: dropout on x before its product (so before the
// input normalisation), recurrent dropout on h[t] and weight-drop on recurrent_kernel before the recurrent product
// (so before its normalisation), and zoneout on the candidates c~ = f * c[t] + i * g and h~ = o * tanh(LN(c~)):
// c[t+1] = k_c * c[t] + (1 - k_c) * c~, h[t+1] = k_h * h[t] + (1 - k_h) * h~ (the cell normalisation sees c~).
#pragma once

#include "rnnext/common.h"
#include "rnnext/gemm.h"
#include "rnnext/layer_norm.h"
#include "rnnext/time_loop.h"

namespace rnnext {

constexpr Index kLayerNormLstmGates = 4;  // i, f, g, o

template <typename Scalar>
struct LayerNormLstmWeights {
  const Scalar* kernel;              // [I, 4H]
  const Scalar* recurrent_kernel;    // [H, 4H]
  const Scalar* bias;                // [4H]
  const Scalar* ln_input_gamma;      // [4H]
  const Scalar* ln_recurrent_gamma;  // [4H]
  const Scalar* ln_cell_gamma;       // [H]
  const Scalar* ln_cell_beta;        // [H]
};

// What the forward pass keeps for the backward pass (Element: Scalar to write, const Scalar to read).
template <typename Element>
struct LayerNormLstmCache {
  Element* h;               // [T+1, N, H] slot 0 = h0
  Element* c;               // [T+1, N, H] slot 0 = c0
  Element* gates;           // [T, N, 4H] activated gates
  Element* input_norm;      // [T, N, 4H] normalised x[t] . kernel
  Element* input_rstd;      // [T, N]
  Element* recurrent_norm;  // [T, N, 4H] normalised h[t] . recurrent_kernel
  Element* recurrent_rstd;  // [T, N]
  Element* cell_norm;       // [T, N, H] normalised c[t+1]
  Element* cell_rstd;       // [T, N]
};

template <typename Scalar>
struct LayerNormLstmGrads {
  Scalar* x;                   // [T, N, I]
  Scalar* h0;                  // [N, H] on entry the gradient on h[T], on exit the one on h0
  Scalar* c0;                  // [N, H] on entry the gradient on c[T], on exit the one on c0
  Scalar* kernel;              // [I, 4H]
  Scalar* recurrent_kernel;    // [H, 4H]
  Scalar* bias;                // [4H]
  Scalar* ln_input_gamma;      // [4H]
  Scalar* ln_recurrent_gamma;  // [4H]
  Scalar* ln_cell_gamma;       // [H]
  Scalar* ln_cell_beta;        // [H]
};

// Forward stage 2: normalise recurrent[t] in place (the cache keeps it normalised), add it with its gain to the
// normalised input projection in gates[t], activate the gates, the candidate c~ into c[t+1] and its block moments.
template <typename Scalar>
struct LnLstmGateStage {
  static constexpr bool packs = false, rows = true;
  Sequence<Scalar> gates, recurrent, recurrent_rstd, c;  // [T, N, 4H], [T, N, 4H], [T, N, 1], [T+1, N, H]
  const Moments<Scalar>* recurrent_moments;              // [N, blocks]
  Moments<Scalar>* cell_moments;                          // [N, blocks]
  const Scalar* recurrent_gamma;                          // [4H]
  BlockIndex blocks;

  void products(Index, Index, const UnitBlock&) const {}
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    const Index H = c.width;
    const RowStats<Scalar> s = row_stats(recurrent_moments + n * blocks.count, blocks.count);
    if (j == 0) recurrent_rstd.step(t)[n] = s.rstd;
    for (Index k = 0; k < kLayerNormLstmGates; ++k) {
      auto normalised = recurrent.segment(t, n, k * H + j, w);
      normalised = (normalised - s.mean) * s.rstd;
      gates.segment(t, n, k * H + j, w) += segment(recurrent_gamma, 0, 0, k * H + j, w) * normalised;
    }
    auto i = gates.segment(t, n, j, w), f = gates.segment(t, n, H + j, w);
    auto g = gates.segment(t, n, 2 * H + j, w), o = gates.segment(t, n, 3 * H + j, w);
    i = sigmoid(i);
    f = sigmoid(f);
    g = tanh_of(g);
    o = sigmoid(o);
    auto cell = c.segment(t + 1, n, j, w);
    cell = f * c.segment(t, n, j, w) + i * g;
    cell_moments[n * blocks.count + blocks.of(j)] = moments_of(cell);
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const { row(t, n, j, w); }
};

// Forward stage 3: normalise the candidate c~ in c[t+1], write h[t+1] = o * tanh(gain * normalised + shift) and
// y[t]; with zoneout, c[t+1] and h[t+1] then keep their shares of c[t] and h[t].
template <typename Scalar>
struct LnLstmOutputStage {
  static constexpr bool packs = false, rows = true;
  Sequence<Scalar> y, h, c, gates, cell_norm, cell_rstd;  // [T, N, H], [T+1, N, H] x2, [T, N, 4H], [T, N, H], [T, N, 1]
  const Moments<Scalar>* cell_moments;                    // [N, blocks]
  const Scalar* cell_gamma;                               // [H]
  const Scalar* cell_beta;                                // [H]
  BlockIndex blocks;
  Zoneout<Scalar> zoneout_h, zoneout_c;

  template <typename W>
  void normalise(Index t, Index n, Index j, W w) const {
    const RowStats<Scalar> s = row_stats(cell_moments + n * blocks.count, blocks.count);
    if (j == 0) cell_rstd.step(t)[n] = s.rstd;
    cell_norm.segment(t, n, j, w) = (c.segment(t + 1, n, j, w) - s.mean) * s.rstd;
  }
  void products(Index, Index, const UnitBlock&) const {}
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    normalise(t, n, j, w);
    const Index H = h.width;
    auto state = h.segment(t + 1, n, j, w);
    state = gates.segment(t, n, 3 * H + j, w) *
            tanh_of(segment(cell_gamma, 0, 0, j, w) * cell_norm.segment(t, n, j, w) + segment(cell_beta, 0, 0, j, w));
    if (zoneout_c.active()) {
      const auto keep = zoneout_c.share(t, n, j, w, h.N, H);
      auto cell = c.segment(t + 1, n, j, w);
      cell = keep * c.segment(t, n, j, w) + (Scalar(1) - keep) * cell;
    }
    if (zoneout_h.active()) {
      const auto keep = zoneout_h.share(t, n, j, w, h.N, H);
      state = keep * h.segment(t, n, j, w) + (Scalar(1) - keep) * state;
    }
    y.segment(t, n, j, w) = state;
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const {
    normalise(t, n, j, w);
    h.segment(t + 1, n, j, w) = h.segment(t, n, j, w);
    c.segment(t + 1, n, j, w) = c.segment(t, n, j, w);
    y.segment(t, n, j, w).setZero();
  }
};

// A forward pass: run_cached keeps what lstm_backward reads; run keeps only what the next step reads (two
// slots of states, one of each normalised buffer), with the same arithmetic and so the same results. With
// `reuse` (stepper.h) the input kernel is packed once for many calls of one shape.
template <typename Scalar>
class LayerNormLstmForward : PackedForward<Scalar, LayerNormLstmWeights<Scalar>> {
  using Base = PackedForward<Scalar, LayerNormLstmWeights<Scalar>>;
  using Base::d_, Base::loop_, Base::U_, Base::weights_;

 public:
  static constexpr Index G = kLayerNormLstmGates;
  static constexpr int kStates = 2;  // h, c
  using Weights = LayerNormLstmWeights<Scalar>;

  LayerNormLstmForward(const Weights& weights, const Dims& d, const int64_t* lengths /* [N] or null */, bool reuse,
                       const Masks<Scalar>& masks = {})
      : Base(weights, d, G, lengths, reuse, masks) {}

  // On entry cache.h[0], cache.c[0] hold h0, c0.
  void run_cached(Scalar* y /* [T, N, H] */, const LayerNormLstmCache<Scalar>& cache, const Scalar* x /* [T, N, I] */) const {
    const Index N = d_.N, H = d_.H;
    loop(y, x, {cache.h, N, H}, {cache.c, N, H}, cache.gates, cache.input_norm, cache.input_rstd,
         {cache.recurrent_norm, N, G * H}, {cache.recurrent_rstd, N, 1}, {cache.cell_norm, N, H}, {cache.cell_rstd, N, 1});
  }

  // states0 = (h0, c0) [N, H] in, states_n = (h_n, c_n) [N, H] out; nothing is cached.
  void run(Scalar* y /* [T, N, H] */, const Scalar* const* states0, Scalar* const* states_n, const Scalar* x /* [T, N, I] */) const {
    const Index T = d_.T, N = d_.N, H = d_.H;
    Workspace<Scalar> h(2 * N * H), c(2 * N * H), gates(T * N * G * H), recurrent(N * G * H), cell_norm(N * H), rstd(2 * N);
    constexpr Index kOneSlot = 0;  // a buffer that only the step writing it reads
    const Sequence<Scalar> h_ring{h.data(), N, H, Sequence<Scalar>::kRingOfTwo};
    const Sequence<Scalar> c_ring{c.data(), N, H, Sequence<Scalar>::kRingOfTwo};
    std::copy_n(states0[0], N * H, h_ring.step(0));
    std::copy_n(states0[1], N * H, c_ring.step(0));
    loop(y, x, h_ring, c_ring, gates.data(), nullptr, nullptr, {recurrent.data(), N, G * H, kOneSlot},
         {rstd.data(), N, 1, kOneSlot}, {cell_norm.data(), N, H, kOneSlot}, {rstd.data() + N, N, 1, kOneSlot});
    std::copy_n(h_ring.step(T), N * H, states_n[0]);
    std::copy_n(c_ring.step(T), N * H, states_n[1]);
  }

 private:
  void loop(Scalar* y, const Scalar* x, const Sequence<Scalar>& h, const Sequence<Scalar>& c, Scalar* gates,
            Scalar* input_norm, Scalar* input_rstd, const Sequence<Scalar>& recurrent, const Sequence<Scalar>& recurrent_rstd,
            const Sequence<Scalar>& cell_norm, const Sequence<Scalar>& cell_rstd) const {
    const Index N = d_.N, H = d_.H, GH = G * H;
    // gates holds the normalised input projections (with the bias) until step t activates its slice in place.
    normalised_input_projection(gates, input_norm, input_rstd, this->masked_.inputs(x), weights_.kernel,
                                weights_.ln_input_gamma, weights_.bias, d_.T * N, d_.I, GH, this->packed_kernel());
    const BlockIndex blocks{unit_block_size(N), Index(loop_.blocks().size())};
    std::vector<Moments<Scalar>> recurrent_moments(size_t(N * blocks.count)), cell_moments(size_t(N * blocks.count));
    NormalisedRecurrentProduct<Scalar, G> product{U_, h, recurrent, recurrent_moments.data(), blocks};  // U_ masks h[t]
    const Masks<Scalar>& masks = this->masked_.masks();
    LnLstmGateStage<Scalar> activate{{gates, N, GH}, recurrent, recurrent_rstd, c, recurrent_moments.data(),
                                     cell_moments.data(), weights_.ln_recurrent_gamma, blocks};
    LnLstmOutputStage<Scalar> output{{y, N, H}, h, c, {gates, N, GH}, cell_norm, cell_rstd, cell_moments.data(),
                                     weights_.ln_cell_gamma, weights_.ln_cell_beta, blocks, masks.zoneout_h,
                                     masks.zoneout_c};
    loop_.forward(product, activate, output);
  }
};

template <typename Scalar>
void layer_norm_lstm_forward(Scalar* y /* [T, N, H] */, const LayerNormLstmCache<Scalar>& cache,
                             const Scalar* x /* [T, N, I] */, const LayerNormLstmWeights<Scalar>& weights,
                             const int64_t* lengths /* [N] or null */, const Dims& d, const Masks<Scalar>& masks = {}) {
  LayerNormLstmForward<Scalar>(weights, d, lengths, false, masks).run_cached(y, cache, x);
}

// Backward stage 1: backpropagate h~ = o * tanh(cell_out) into the output gate and into cell_out (kept for the
// gain gradients), with the block sums of the cell normalisation's backward pass. Valid rows restart dh for
// BackpropIntoState (from zoneout's direct path into h[t], else zero); masked rows get zero gradients and keep dh
// and dc.
template <typename Scalar>
struct LnLstmBackOutputStage {
  static constexpr bool packs = false, rows = true;
  Sequence<Scalar> dz, d_cell_out;                    // [T, N, 4H], [T, N, H]
  Scalar* dh;                                         // [N, H] gradient on h[t+1]
  Sequence<const Scalar> dy, gates, cell_norm;        // [T, N, H] (data null when absent), [T, N, 4H], [T, N, H]
  BackwardSums<Scalar>* cell_sums;                    // [N, blocks]
  const Scalar* cell_gamma;                           // [H]
  const Scalar* cell_beta;                            // [H]
  BlockIndex blocks;
  Zoneout<Scalar> zoneout_h;

  void products(Index, Index, const UnitBlock&) const {}
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    using BlockValues = BlockArray<Scalar, W>;
    const Index H = d_cell_out.width;
    auto dstate = segment(dh, n, H, j, w);
    BlockValues dh_total = dstate;
    if (dy.data != nullptr) dh_total += dy.segment(t, n, j, w);
    if (zoneout_h.active()) {  // through the mix: straight into h[t], and into the candidate h~
      const BlockValues keep = zoneout_h.share(t, n, j, w, d_cell_out.N, H);
      dstate = keep * dh_total;
      dh_total *= Scalar(1) - keep;
    } else {
      dstate.setZero();  // restarted here, accumulated by BackpropIntoState
    }
    const auto o = gates.segment(t, n, 3 * H + j, w);
    const auto gamma = segment(cell_gamma, 0, 0, j, w);
    const auto norm = cell_norm.segment(t, n, j, w);
    const BlockValues tanh_cell = tanh_of(gamma * norm + segment(cell_beta, 0, 0, j, w));
    dz.segment(t, n, 3 * H + j, w) = dh_total * tanh_cell * o * (Scalar(1) - o);
    auto d_out = d_cell_out.segment(t, n, j, w);
    d_out = dh_total * o * (Scalar(1) - tanh_cell * tanh_cell);
    const BlockValues d_norm = d_out * gamma;
    cell_sums[n * blocks.count + blocks.of(j)] = {ordered_sum(d_norm), ordered_sum(d_norm * norm)};
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const {
    for (Index k = 0; k < kLayerNormLstmGates; ++k) dz.segment(t, n, k * d_cell_out.width + j, w).setZero();
    d_cell_out.segment(t, n, j, w).setZero();
    cell_sums[n * blocks.count + blocks.of(j)] = {Scalar(0), Scalar(0)};
  }
};

// Backward stage 2: through zoneout's mix into c~ (and straight into c[t]), through the cell normalisation into
// c~, then through c~ = f * c[t] + i * g into the gates i, f, g and c[t]; the block sums of the recurrent
// normalisation's backward pass.
template <typename Scalar>
struct LnLstmBackCellStage {
  static constexpr bool packs = false, rows = true;
  Sequence<Scalar> dz;                                              // [T, N, 4H]
  Scalar* dc;                                                       // [N, H] gradient on c[t+1], turned into c[t]'s
  Sequence<const Scalar> d_cell_out, c, gates, cell_norm, cell_rstd, recurrent_norm;
  //                      [T, N, H], [T+1, N, H], [T, N, 4H], [T, N, H], [T, N, 1], [T, N, 4H]
  const BackwardSums<Scalar>* cell_sums;                            // [N, blocks]
  BackwardSums<Scalar>* recurrent_sums;                             // [N, blocks]
  const Scalar* cell_gamma;                                         // [H]
  const Scalar* recurrent_gamma;                                    // [4H]
  BlockIndex blocks;
  Zoneout<Scalar> zoneout_c;

  void products(Index, Index, const UnitBlock&) const {}
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    using BlockValues = BlockArray<Scalar, W>;
    const Index H = c.width;
    const BackwardSums<Scalar> sums = total(cell_sums + n * blocks.count, blocks.count);
    const Scalar mean_d = sums.d / Scalar(H), mean_dn = sums.d_normalised / Scalar(H);
    const auto norm = cell_norm.segment(t, n, j, w);
    auto dcell = segment(dc, n, H, j, w);
    const BlockValues d_norm = d_cell_out.segment(t, n, j, w) * segment(cell_gamma, 0, 0, j, w);
    BlockValues dcell_total = dcell, kept_path = BlockValues::Zero(w.size);  // zoneout's direct path into c[t]
    if (zoneout_c.active()) {
      const BlockValues keep = zoneout_c.share(t, n, j, w, c.N, H);
      kept_path = keep * dcell_total;
      dcell_total *= Scalar(1) - keep;
    }
    dcell_total += cell_rstd.step(t)[n] * (d_norm - mean_d - norm * mean_dn);
    const auto i = gates.segment(t, n, j, w), f = gates.segment(t, n, H + j, w), g = gates.segment(t, n, 2 * H + j, w);
    dz.segment(t, n, j, w) = dcell_total * g * i * (Scalar(1) - i);
    dz.segment(t, n, H + j, w) = dcell_total * c.segment(t, n, j, w) * f * (Scalar(1) - f);
    dz.segment(t, n, 2 * H + j, w) = dcell_total * i * (Scalar(1) - g * g);
    dcell = dcell_total * f + kept_path;
    recurrent_sums[n * blocks.count + blocks.of(j)] =
        recurrent_block_sums<Scalar, kLayerNormLstmGates>(dz, recurrent_norm, recurrent_gamma, t, n, j, w);
  }
  template <typename W>
  void masked_row(Index, Index, Index, W) const {}
};

// Backward. grads.h0 and grads.c0 hold dh_n and dc_n on entry. dy may be null. masks: the forward pass's.
template <typename Scalar>
void layer_norm_lstm_backward(const LayerNormLstmGrads<Scalar>& grads, const Scalar* dy /* [T, N, H] or null */,
                              const LayerNormLstmCache<const Scalar>& cache, const Scalar* x_in /* [T, N, I] */,
                              const LayerNormLstmWeights<Scalar>& weights, const int64_t* lengths /* [N] or null */,
                              const Dims& d, const Masks<Scalar>& masks = {}) {
  constexpr Index G = kLayerNormLstmGates;
  const Index T = d.T, N = d.N, H = d.H, GH = G * H, rows = T * N;
  Workspace<Scalar> dz(rows * GH), d_recurrent(rows * GH), d_cell_out(rows * H);
  const TimeLoop loop(d, G, lengths);
  const BlockIndex blocks{unit_block_size(N), Index(loop.blocks().size())};
  std::vector<BackwardSums<Scalar>> cell_sums(size_t(N * blocks.count)), recurrent_sums(size_t(N * blocks.count));
  const MaskedOperands<Scalar> masked(masks, d, GH, weights.recurrent_kernel);
  UnitRows<Scalar> U(masked.recurrent_kernel(), d, G, 0, GH, loop);
  LnLstmBackOutputStage<Scalar> through_output{{dz.data(), N, GH}, {d_cell_out.data(), N, H}, grads.h0, {dy, N, H},
                                               {cache.gates, N, GH}, {cache.cell_norm, N, H}, cell_sums.data(),
                                               weights.ln_cell_gamma, weights.ln_cell_beta, blocks, masks.zoneout_h};
  LnLstmBackCellStage<Scalar> through_cell{{dz.data(), N, GH}, grads.c0, {d_cell_out.data(), N, H}, {cache.c, N, H},
                                           {cache.gates, N, GH}, {cache.cell_norm, N, H}, {cache.cell_rstd, N, 1},
                                           {cache.recurrent_norm, N, GH}, cell_sums.data(), recurrent_sums.data(),
                                           weights.ln_cell_gamma, weights.ln_recurrent_gamma, blocks, masks.zoneout_c};
  NormalisedRecurrentBackward<Scalar, G> through_norm{{d_recurrent.data(), N, GH}, {dz.data(), N, GH},
                                                {cache.recurrent_norm, N, GH}, {cache.recurrent_rstd, N, 1},
                                                recurrent_sums.data(), weights.ln_recurrent_gamma, blocks};
  BackpropIntoState<Scalar> into_state(U, {d_recurrent.data(), N, GH}, grads.h0, d, lengths, masks.state);
  loop.backward(through_output, through_cell, through_norm, into_state);

  // The gains and shifts; masked steps contribute nothing since their gradients are zero.
  column_product_sums(grads.ln_cell_gamma, d_cell_out.data(), cache.cell_norm, rows, H);
  column_sums(grads.ln_cell_beta, d_cell_out.data(), H, rows, H);
  column_product_sums(grads.ln_recurrent_gamma, dz.data(), cache.recurrent_norm, rows, GH);
  column_product_sums(grads.ln_input_gamma, dz.data(), cache.input_norm, rows, GH);
  column_sums(grads.bias, dz.data(), GH, rows, GH);
  product_gradients(grads.x, grads.kernel, grads.recurrent_kernel, dz.data(), d_recurrent.data(), cache.h, x_in,
                    weights.kernel, cache.input_norm, cache.input_rstd, weights.ln_input_gamma, masked, lengths, d, GH);
}

}  // namespace rnnext
