// Layer-normalised GRU (Ba, Kiros & Hinton 2016, with haste's LayerNormGRU placement), reset_after only:
//   a[t] = LN(x[t] . kernel; ln_input_gamma) + bias[0],   b[t] = LN(h[t] . recurrent_kernel; ln_recurrent_gamma) + bias[1]
//   r = sigmoid(a_r + b_r),  z = sigmoid(a_z + b_z),  n = tanh(a_n + r * b_n),  h[t+1] = (1 - z) * n + z * h[t]
// Statistics per row over all 3H pre-activations of each side (layer_norm.h). The reset gate multiplies the
// normalised recurrent term of n, as reset_after multiplies h . U_n + b_hn; reset_after = false would put r
// before a product whose normalisation needs every unit's r, and is not offered. Each forward step is two stages
// of time_loop.h (the recurrent product and its block moments; the normalisation, gates and h[t+1]); the
// backward step backpropagates into the gates, then through the recurrent normalisation, then into h[t].
// The regularisers' masks (time_loop.h) act as in the plain GRU: dropout on x before its product (so before the
// input normalisation), recurrent dropout on h[t] and weight-drop on recurrent_kernel before the recurrent product
// (so before its normalisation), and zoneout on h: h[t+1] = k * h[t] + (1 - k) * ((1 - z) * n + z * h[t]).
#pragma once

#include "rnnext/common.h"
#include "rnnext/gemm.h"
#include "rnnext/layer_norm.h"
#include "rnnext/time_loop.h"

namespace rnnext {

constexpr Index kLayerNormGruGates = 3;  // r, z, n

template <typename Scalar>
struct LayerNormGruWeights {
  const Scalar* kernel;              // [I, 3H]
  const Scalar* recurrent_kernel;    // [H, 3H]
  const Scalar* bias;                // [2, 3H] input row, recurrent row
  const Scalar* ln_input_gamma;      // [3H]
  const Scalar* ln_recurrent_gamma;  // [3H]
};

template <typename Element>
struct LayerNormGruCache {
  Element* h;               // [T+1, N, H] slot 0 = h0
  Element* gates;           // [T, N, 3H] activated r, z, n
  Element* input_norm;      // [T, N, 3H]
  Element* input_rstd;      // [T, N]
  Element* recurrent_norm;  // [T, N, 3H]
  Element* recurrent_rstd;  // [T, N]
};

template <typename Scalar>
struct LayerNormGruGrads {
  Scalar* x;                   // [T, N, I]
  Scalar* h0;                  // [N, H] on entry the gradient on h[T], on exit the one on h0
  Scalar* kernel;              // [I, 3H]
  Scalar* recurrent_kernel;    // [H, 3H]
  Scalar* bias;                // [2, 3H]
  Scalar* ln_input_gamma;      // [3H]
  Scalar* ln_recurrent_gamma;  // [3H]
};

// Forward stage 2: normalise recurrent[t] in place, the gates (activated in place in gates[t], which holds a[t]),
// h[t+1] and y[t]; masked rows carry h[t].
template <typename Scalar>
struct LnGruGateStage {
  static constexpr bool packs = false, rows = true;
  Sequence<Scalar> y, h, gates, recurrent, recurrent_rstd;  // [T, N, H], [T+1, N, H], [T, N, 3H] x2, [T, N, 1]
  const Moments<Scalar>* moments;                           // [N, blocks]
  const Scalar* recurrent_gamma;                            // [3H]
  const Scalar* recurrent_bias;                             // [3H]
  BlockIndex blocks;
  Zoneout<Scalar> zoneout;

  void products(Index, Index, const UnitBlock&) const {}
  template <typename W>
  void activate(Index t, Index n, Index j, W w) const {
    using BlockValues = BlockArray<Scalar, W>;
    const Index H = h.width;
    const RowStats<Scalar> s = row_stats(moments + n * blocks.count, blocks.count);
    if (j == 0) recurrent_rstd.step(t)[n] = s.rstd;
    for (Index k = 0; k < kLayerNormGruGates; ++k) {
      auto normalised = recurrent.segment(t, n, k * H + j, w);
      normalised = (normalised - s.mean) * s.rstd;
    }
    auto b_of = [&](Index k) -> BlockValues {
      return segment(recurrent_gamma, 0, 0, k * H + j, w) * recurrent.segment(t, n, k * H + j, w) +
             segment(recurrent_bias, 0, 0, k * H + j, w);
    };
    auto r = gates.segment(t, n, j, w), z = gates.segment(t, n, H + j, w), cand = gates.segment(t, n, 2 * H + j, w);
    r = sigmoid(r + b_of(0));
    z = sigmoid(z + b_of(1));
    cand = tanh_of(cand + r * b_of(2));
  }
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    activate(t, n, j, w);
    const Index H = h.width;
    auto state = h.segment(t + 1, n, j, w);
    const auto z = gates.segment(t, n, H + j, w);
    state = (Scalar(1) - z) * gates.segment(t, n, 2 * H + j, w) + z * h.segment(t, n, j, w);
    if (zoneout.active()) {
      const auto keep = zoneout.share(t, n, j, w, h.N, H);
      state = keep * h.segment(t, n, j, w) + (Scalar(1) - keep) * state;
    }
    y.segment(t, n, j, w) = state;
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const {
    activate(t, n, j, w);
    h.segment(t + 1, n, j, w) = h.segment(t, n, j, w);
    y.segment(t, n, j, w).setZero();
  }
};

// A forward pass as LayerNormLstmForward's (run_cached, run, and `reuse` for a stepper).
template <typename Scalar>
class LayerNormGruForward : PackedForward<Scalar, LayerNormGruWeights<Scalar>> {
  using Base = PackedForward<Scalar, LayerNormGruWeights<Scalar>>;
  using Base::d_, Base::loop_, Base::U_, Base::weights_;

 public:
  static constexpr Index G = kLayerNormGruGates;
  static constexpr int kStates = 1;  // h
  using Weights = LayerNormGruWeights<Scalar>;

  LayerNormGruForward(const Weights& weights, const Dims& d, const int64_t* lengths /* [N] or null */, bool reuse,
                      const Masks<Scalar>& masks = {})
      : Base(weights, d, G, lengths, reuse, masks) {}

  // On entry cache.h[0] holds h0.
  void run_cached(Scalar* y /* [T, N, H] */, const LayerNormGruCache<Scalar>& cache, const Scalar* x /* [T, N, I] */) const {
    const Index N = d_.N, H = d_.H;
    loop(y, x, {cache.h, N, H}, cache.gates, cache.input_norm, cache.input_rstd, {cache.recurrent_norm, N, G * H},
         {cache.recurrent_rstd, N, 1});
  }

  // states0[0] = h0 [N, H] in, states_n[0] = h_n [N, H] out; nothing is cached.
  void run(Scalar* y /* [T, N, H] */, const Scalar* const* states0, Scalar* const* states_n,
           const Scalar* x /* [T, N, I] */) const {
    const Index T = d_.T, N = d_.N, H = d_.H;
    Workspace<Scalar> h(2 * N * H), gates(T * N * G * H), recurrent(N * G * H), rstd(N);
    constexpr Index kOneSlot = 0;  // a buffer that only the step writing it reads
    const Sequence<Scalar> h_ring{h.data(), N, H, Sequence<Scalar>::kRingOfTwo};
    std::copy_n(states0[0], N * H, h_ring.step(0));
    loop(y, x, h_ring, gates.data(), nullptr, nullptr, {recurrent.data(), N, G * H, kOneSlot}, {rstd.data(), N, 1, kOneSlot});
    std::copy_n(h_ring.step(T), N * H, states_n[0]);
  }

 private:
  void loop(Scalar* y, const Scalar* x, const Sequence<Scalar>& h, Scalar* gates, Scalar* input_norm,
            Scalar* input_rstd, const Sequence<Scalar>& recurrent, const Sequence<Scalar>& recurrent_rstd) const {
    const Index N = d_.N, H = d_.H, GH = G * H;
    // gates holds a[t] (normalised input projection plus the input bias) until step t activates it in place.
    normalised_input_projection(gates, input_norm, input_rstd, this->masked_.inputs(x), weights_.kernel,
                                weights_.ln_input_gamma, weights_.bias, d_.T * N, d_.I, GH, this->packed_kernel());
    const BlockIndex blocks{unit_block_size(N), Index(loop_.blocks().size())};
    std::vector<Moments<Scalar>> moments(size_t(N * blocks.count));
    NormalisedRecurrentProduct<Scalar, G> product{U_, h, recurrent, moments.data(), blocks};  // U_ masks h[t]
    LnGruGateStage<Scalar> activate{{y, N, H},     h,
                                    {gates, N, GH}, recurrent,
                                    recurrent_rstd, moments.data(),
                                    weights_.ln_recurrent_gamma, weights_.bias + GH,
                                    blocks,         this->masked_.masks().zoneout_h};
    loop_.forward(product, activate);
  }
};

// Backward stage 1: backpropagate h[t+1] = (1 - z) * n + z * h[t] into the input-side gradients da[t] and the
// recurrent-side ones db[t] (after their normalisation), with the block sums of its backward pass. dh becomes
// z * dh_total (plus zoneout's k * dh), the direct path into h[t], to which BackpropIntoState adds; masked rows
// keep dh.
template <typename Scalar>
struct LnGruBackGateStage {
  static constexpr bool packs = false, rows = true;
  Sequence<Scalar> da, db;                                 // [T, N, 3H] x2
  Scalar* dh;                                              // [N, H]
  Sequence<const Scalar> dy, h, gates, recurrent_norm;     // [T, N, H] (data null when absent), [T+1, N, H], [T, N, 3H] x2
  BackwardSums<Scalar>* sums;                              // [N, blocks]
  const Scalar* recurrent_gamma;                           // [3H]
  const Scalar* recurrent_bias;                            // [3H]
  BlockIndex blocks;
  Zoneout<Scalar> zoneout;

  void products(Index, Index, const UnitBlock&) const {}
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    using BlockValues = BlockArray<Scalar, W>;
    const Index H = h.width;
    auto dstate = segment(dh, n, H, j, w);
    BlockValues dh_total = dstate;
    if (dy.data != nullptr) dh_total += dy.segment(t, n, j, w);
    BlockValues kept_path = BlockValues::Zero(w.size);  // zoneout's direct path into h[t]
    if (zoneout.active()) {
      const BlockValues keep = zoneout.share(t, n, j, w, h.N, H);
      kept_path = keep * dh_total;
      dh_total *= Scalar(1) - keep;
    }
    const auto r = gates.segment(t, n, j, w), z = gates.segment(t, n, H + j, w), cand = gates.segment(t, n, 2 * H + j, w);
    const BlockValues b_n = segment(recurrent_gamma, 0, 0, 2 * H + j, w) * recurrent_norm.segment(t, n, 2 * H + j, w) +
                            segment(recurrent_bias, 0, 0, 2 * H + j, w);
    const BlockValues dn_pre = dh_total * (Scalar(1) - z) * (Scalar(1) - cand * cand);
    const BlockValues dz_pre = dh_total * (h.segment(t, n, j, w) - cand) * z * (Scalar(1) - z);
    const BlockValues dr_pre = dn_pre * b_n * r * (Scalar(1) - r);
    dstate = dh_total * z + kept_path;  // the direct paths; BackpropIntoState adds the recurrent product's
    da.segment(t, n, j, w) = dr_pre;
    da.segment(t, n, H + j, w) = dz_pre;
    da.segment(t, n, 2 * H + j, w) = dn_pre;
    db.segment(t, n, j, w) = dr_pre;
    db.segment(t, n, H + j, w) = dz_pre;
    db.segment(t, n, 2 * H + j, w) = dn_pre * r;
    sums[n * blocks.count + blocks.of(j)] =
        recurrent_block_sums<Scalar, kLayerNormGruGates>(db, recurrent_norm, recurrent_gamma, t, n, j, w);
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const {
    const Index H = h.width;
    for (Index k = 0; k < kLayerNormGruGates; ++k) {
      da.segment(t, n, k * H + j, w).setZero();
      db.segment(t, n, k * H + j, w).setZero();
    }
    sums[n * blocks.count + blocks.of(j)] = {Scalar(0), Scalar(0)};
  }
};

// Backward. grads.h0 holds dh_n on entry. dy may be null. masks: the forward pass's.
template <typename Scalar>
void layer_norm_gru_backward(const LayerNormGruGrads<Scalar>& grads, const Scalar* dy /* [T, N, H] or null */,
                             const LayerNormGruCache<const Scalar>& cache, const Scalar* x_in /* [T, N, I] */,
                             const LayerNormGruWeights<Scalar>& weights, const int64_t* lengths /* [N] or null */,
                             const Dims& d, const Masks<Scalar>& masks = {}) {
  constexpr Index G = kLayerNormGruGates;
  const Index T = d.T, N = d.N, H = d.H, GH = G * H, rows = T * N;
  Workspace<Scalar> da(rows * GH), db(rows * GH), d_recurrent(rows * GH);
  const TimeLoop loop(d, G, lengths);
  const BlockIndex blocks{unit_block_size(N), Index(loop.blocks().size())};
  std::vector<BackwardSums<Scalar>> sums(size_t(N * blocks.count));
  const MaskedOperands<Scalar> masked(masks, d, GH, weights.recurrent_kernel);
  UnitRows<Scalar> U(masked.recurrent_kernel(), d, G, 0, GH, loop);
  const Scalar* recurrent_bias = weights.bias + GH;
  LnGruBackGateStage<Scalar> through_gates{{da.data(), N, GH},         {db.data(), N, GH},
                                           grads.h0,                   {dy, N, H},
                                           {cache.h, N, H},            {cache.gates, N, GH},
                                           {cache.recurrent_norm, N, GH}, sums.data(),
                                           weights.ln_recurrent_gamma, recurrent_bias,
                                           blocks,                     masks.zoneout_h};
  NormalisedRecurrentBackward<Scalar, G> through_norm{{d_recurrent.data(), N, GH}, {db.data(), N, GH},
                                               {cache.recurrent_norm, N, GH}, {cache.recurrent_rstd, N, 1},
                                               sums.data(), weights.ln_recurrent_gamma, blocks};
  BackpropIntoState<Scalar> into_state(U, {d_recurrent.data(), N, GH}, grads.h0, d, lengths, masks.state);
  loop.backward(through_gates, through_norm, into_state);

  column_sums(grads.bias, da.data(), GH, rows, GH);
  column_sums(grads.bias + GH, db.data(), GH, rows, GH);
  column_product_sums(grads.ln_recurrent_gamma, db.data(), cache.recurrent_norm, rows, GH);
  column_product_sums(grads.ln_input_gamma, da.data(), cache.input_norm, rows, GH);
  product_gradients(grads.x, grads.kernel, grads.recurrent_kernel, da.data(), d_recurrent.data(), cache.h, x_in,
                    weights.kernel, cache.input_norm, cache.input_rstd, weights.ln_input_gamma, masked, lengths, d, GH);
}

}  // namespace rnnext
