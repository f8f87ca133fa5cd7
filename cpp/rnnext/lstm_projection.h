// LSTM with a projection of its output (LSTMP, Sak et al. 2014; torch.nn.LSTM's proj_size): forward and BPTT.
//   gates i,f,g,o = x[t] . kernel + h[t] . recurrent_kernel + bias      (h [N, P], recurrent_kernel [P, 4H])
//   c[t+1] = f * c[t] + i * g,   m[t] = o * tanh(c[t+1]),   h[t+1] = m[t] . projection   (projection [H, P])
// c keeps H units; h and y have P < H. Each step is two stages of time_loop.h: the gates and m[t] on the cell's
// unit blocks, then the projection on unit blocks of P (block b of the loop computes projection block b, while
// there is one: P < H gives no more blocks than H). The backward step backpropagates h[t+1] into m[t], the gates
// and c[t], then into h[t], on the same two kinds of blocks.
// The regularisers' masks (time_loop.h) act as in the plain LSTM, with h's of P units: dropout on x, recurrent
// dropout on h[t] [N, P] where it enters the product, weight-drop on recurrent_kernel [P, 4H], and zoneout on c
// (c[t+1] = k_c * c[t] + (1 - k_c) * c~, m[t] = o * tanh(c~)) and on h (h[t+1] = k_h * h[t] + (1 - k_h) *
// m[t] . projection, k_h [T, N, P]).
#pragma once

#include "rnnext/common.h"
#include "rnnext/gemm.h"
#include "rnnext/time_loop.h"

namespace rnnext {

constexpr Index kProjectedLstmGates = 4;  // i, f, g, o

template <typename Scalar>
struct ProjectedLstmWeights {
  const Scalar* kernel;            // [I, 4H]
  const Scalar* recurrent_kernel;  // [P, 4H]
  const Scalar* bias;              // [4H]
  const Scalar* projection;        // [H, P]
  Index P;                         // the projection's width, 1 <= P < H
};

template <typename Element>
struct ProjectedLstmCache {
  Element* h;      // [T+1, N, P] slot 0 = h0
  Element* c;      // [T+1, N, H] slot 0 = c0
  Element* gates;  // [T, N, 4H] activated gates
  Element* m;      // [T, N, H] o * tanh(c[t+1]), the projection's input
};

template <typename Scalar>
struct ProjectedLstmGrads {
  Scalar* x;                 // [T, N, I]
  Scalar* h0;                // [N, P] on entry the gradient on h[T], on exit the one on h0
  Scalar* c0;                // [N, H] on entry the gradient on c[T], on exit the one on c0
  Scalar* kernel;            // [I, 4H]
  Scalar* recurrent_kernel;  // [P, 4H]
  Scalar* bias;              // [4H]
  Scalar* projection;        // [H, P]
};

// A product out[:, block] (=|+=) states [N, depth] . A for one block of output columns at a time: A's columns
// packed once per call (as pack_gate_columns or pack_unit_rows lays them out), the step's states packed once per
// step by all threads.
template <typename Scalar>
class BlockProduct {
 public:
  BlockProduct(std::vector<PackedLhs<Scalar>> columns, const GemmDepth& depth, Index N)
      : columns_(std::move(columns)), states_(depth, N, N == 1) {}

  StepOperand<Scalar> operand(const Scalar* states /* [N, stride] */, Index stride) { return {&states_, states, stride}; }
  Index blocks() const { return Index(columns_.size()); }
  void add(Scalar* out, Index stride, Index b) const { states_.multiply_add(out, stride, columns_[size_t(b)]); }
  void set(Scalar* out, Index stride, Index b) const {
    const PackedLhs<Scalar>& a = columns_[size_t(b)];
    states_.multiply_set(out, stride, a, 0, a.rows(), nullptr);
  }

 private:
  std::vector<PackedLhs<Scalar>> columns_;
  PackedRhs<Scalar> states_;
};

// The unit blocks of P (the same block size as the loop's, which depends on N only).
inline std::vector<UnitBlock> projection_blocks(Index P, Index N) { return unit_blocks(P, N); }

// Forward stage 1: gates[t] holds x[t] . kernel + bias; add h[t] . U, activate in place, write c[t+1] and m[t]
// (under zoneout c[t+1] mixes c[t] and the candidate c~, and m[t] = o * tanh(c~)).
template <typename Scalar>
struct ProjectedLstmGateStage {
  static constexpr bool packs = true, rows = true;
  GateColumns<Scalar>& U;
  Sequence<Scalar> h, c, gates, m;  // [T+1, N, P], [T+1, N, H], [T, N, 4H], [T, N, H]
  Zoneout<Scalar> zoneout_c;

  StepOperand<Scalar> operand(Index t) const { return U.operand(h.step(t), h.width); }
  void products(Index t, Index b, const UnitBlock& block) const {
    for (Index k = 0; k < kProjectedLstmGates; ++k) U.add(gates.step(t) + k * c.width + block.begin, gates.width, b, k);
  }
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    const Index H = c.width;
    auto i = gates.segment(t, n, j, w), f = gates.segment(t, n, H + j, w);
    auto g = gates.segment(t, n, 2 * H + j, w), o = gates.segment(t, n, 3 * H + j, w);
    i = sigmoid(i);
    f = sigmoid(f);
    g = tanh_of(g);
    o = sigmoid(o);
    auto cell = c.segment(t + 1, n, j, w);
    cell = f * c.segment(t, n, j, w) + i * g;
    m.segment(t, n, j, w) = o * tanh_of(cell);
    if (zoneout_c.active()) {
      const auto keep = zoneout_c.share(t, n, j, w, c.N, c.width);
      cell = keep * c.segment(t, n, j, w) + (Scalar(1) - keep) * cell;
    }
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const {
    row(t, n, j, w);  // the gates are cached like valid rows'; the state is carried
    c.segment(t + 1, n, j, w) = c.segment(t, n, j, w);
  }
};

// Forward stage 2: h[t+1] = m[t] . projection on projection block b (under zoneout mixed with h[t]), y[t] =
// h[t+1]; masked rows carry h[t].
template <typename Scalar>
struct ProjectionStage {
  static constexpr bool packs = true, rows = false;
  BlockProduct<Scalar>& projection;
  const std::vector<UnitBlock>& blocks;  // of P
  Sequence<Scalar> y, h, m;              // [T, N, P], [T+1, N, P], [T, N, H]
  const int64_t* lengths;                // [N] or null
  Zoneout<Scalar> zoneout_h;             // keep masks [T, N, P]

  StepOperand<Scalar> operand(Index t) const { return projection.operand(m.step(t), m.width); }
  void products(Index t, Index b, const UnitBlock&) const {
    if (b >= projection.blocks()) return;
    const UnitBlock& block = blocks[size_t(b)];
    const Index P = h.width;
    Scalar* next = h.step(t + 1) + block.begin;
    projection.set(next, P, b);
    for (Index n = 0; n < h.N; ++n) {
      Scalar* out = y.step(t) + n * P + block.begin;
      if (step_valid(lengths, t, n)) {
        if (zoneout_h.active()) {
          const Scalar* prev = h.step(t) + n * P + block.begin;
          for (Index k = 0; k < block.size; ++k) {
            const Scalar keep = zoneout_h.share(t, n, block.begin + k, h.N, P);
            next[n * P + k] = keep * prev[k] + (Scalar(1) - keep) * next[n * P + k];
          }
        }
        std::copy_n(next + n * P, block.size, out);
      } else {
        std::copy_n(h.step(t) + n * P + block.begin, block.size, next + n * P);
        std::fill_n(out, block.size, Scalar(0));
      }
    }
  }
};

// A forward pass with its weights packed once, for one call or for many calls of one shape (stepper.h, with
// reuse): run_cached keeps what the backward pass reads; run keeps two slots of states, with the same results.
template <typename Scalar>
class ProjectedLstmForward : PackedForward<Scalar, ProjectedLstmWeights<Scalar>> {
  using Base = PackedForward<Scalar, ProjectedLstmWeights<Scalar>>;
  using Base::d_, Base::loop_, Base::U_, Base::weights_;

 public:
  static constexpr Index G = kProjectedLstmGates;
  static constexpr int kStates = 2;  // h [N, P], c [N, H]
  using Weights = ProjectedLstmWeights<Scalar>;

  ProjectedLstmForward(const Weights& weights, const Dims& d, const int64_t* lengths /* [N] or null */, bool reuse,
                       const Masks<Scalar>& masks = {})
      : Base(weights, d, G, lengths, reuse, masks, weights.P),
        lengths_(lengths),
        p_blocks_(projection_blocks(weights.P, d.N)),
        projection_(pack_gate_columns(weights.projection, weights.P, 1, p_blocks_,
                                      gemm_depth<Scalar>(d.H, weights.P, d.N), d.N),
                    gemm_depth<Scalar>(d.H, weights.P, d.N), d.N) {}

  // On entry cache.h[0], cache.c[0] hold h0, c0.
  void run_cached(Scalar* y /* [T, N, P] */, const ProjectedLstmCache<Scalar>& cache, const Scalar* x /* [T, N, I] */) {
    const Index N = d_.N, H = d_.H;
    loop(y, x, {cache.h, N, weights_.P}, {cache.c, N, H}, cache.gates, {cache.m, N, H});
  }

  // states0 = (h0 [N, P], c0 [N, H]) in, states_n = (h_n, c_n) out; nothing is cached.
  void run(Scalar* y /* [T, N, P] */, const Scalar* const* states0, Scalar* const* states_n, const Scalar* x /* [T, N, I] */) {
    const Index T = d_.T, N = d_.N, H = d_.H, P = weights_.P;
    Workspace<Scalar> h(2 * N * P), c(2 * N * H), gates(T * N * G * H), m(N * H);
    const Sequence<Scalar> h_ring{h.data(), N, P, Sequence<Scalar>::kRingOfTwo};
    const Sequence<Scalar> c_ring{c.data(), N, H, Sequence<Scalar>::kRingOfTwo};
    constexpr Index kOneSlot = 0;  // m[t] is read only by the step that writes it
    std::copy_n(states0[0], N * P, h_ring.step(0));
    std::copy_n(states0[1], N * H, c_ring.step(0));
    loop(y, x, h_ring, c_ring, gates.data(), {m.data(), N, H, kOneSlot});
    std::copy_n(h_ring.step(T), N * P, states_n[0]);
    std::copy_n(c_ring.step(T), N * H, states_n[1]);
  }

 private:
  void loop(Scalar* y, const Scalar* x, const Sequence<Scalar>& h, const Sequence<Scalar>& c, Scalar* gates,
            const Sequence<Scalar>& m) {
    const Index N = d_.N, GH = G * d_.H;
    this->project(gates, x, weights_.bias, GH);
    const Masks<Scalar>& masks = this->masked_.masks();
    ProjectedLstmGateStage<Scalar> cell{U_, h, c, {gates, N, GH}, m, masks.zoneout_c};
    ProjectionStage<Scalar> project{projection_, p_blocks_, {y, N, weights_.P}, h, m, lengths_, masks.zoneout_h};
    loop_.forward(cell, project);
  }

  const int64_t* lengths_;
  std::vector<UnitBlock> p_blocks_;
  BlockProduct<Scalar> projection_;
};

// Backward stage 1, on projection block b: the gradient on h[t+1] with dy[t] added (under zoneout its share
// 1 - k_h, the gradient on m[t] . projection), kept per step for the projection's gradient (zero at masked rows);
// valid rows restart dh from zero (from zoneout's direct path k_h * (dh + dy)) for stage 3, masked rows keep it.
template <typename Scalar>
struct ProjectedOutputGradStage {
  static constexpr bool packs = false, rows = false;
  const std::vector<UnitBlock>& blocks;  // of P
  Index count;                           // projection blocks
  Sequence<Scalar> dh_total;             // [T, N, P]
  Scalar* dh;                            // [N, P]
  Sequence<const Scalar> dy;             // [T, N, P], data null when absent
  const int64_t* lengths;
  Zoneout<Scalar> zoneout_h;

  void products(Index t, Index b, const UnitBlock&) const {
    if (b >= count) return;
    const UnitBlock& block = blocks[size_t(b)];
    const Index P = dh_total.width;
    for (Index n = 0; n < dh_total.N; ++n) {
      Scalar* total = dh_total.step(t) + n * P + block.begin;
      if (!step_valid(lengths, t, n)) {
        std::fill_n(total, block.size, Scalar(0));
        continue;
      }
      Scalar* state = dh + n * P + block.begin;
      for (Index k = 0; k < block.size; ++k) total[k] = state[k];
      if (dy.data != nullptr) {
        const Scalar* out = dy.step(t) + n * P + block.begin;
        for (Index k = 0; k < block.size; ++k) total[k] += out[k];
      }
      if (!zoneout_h.active()) {
        std::fill_n(state, block.size, Scalar(0));
        continue;
      }
      for (Index k = 0; k < block.size; ++k) {
        const Scalar keep = zoneout_h.share(t, n, block.begin + k, dh_total.N, P);
        state[k] = keep * total[k];
        total[k] *= Scalar(1) - keep;
      }
    }
  }
};

// Backward stage 2, on the cell's unit blocks: dm = dh_total[t] . projection^T, then through m = o * tanh(c~)
// and c~ = f * c[t] + i * g (c[t+1] without zoneout; with it the candidate, recomputed) into the gate
// pre-activations dz[t] and into c[t].
template <typename Scalar>
struct ProjectedGateGradStage {
  static constexpr bool packs = true, rows = true;
  BlockProduct<Scalar>& projection_rows;  // rows of projection per cell block
  Sequence<const Scalar> dh_total;        // [T, N, P]
  Sequence<Scalar> dz;                    // [T, N, 4H]
  Scalar* dm;                             // [N, H] scratch of the step
  Scalar* dc;                             // [N, H] gradient on c[t+1], turned into the one on c[t]
  Sequence<const Scalar> c, gates;        // [T+1, N, H], [T, N, 4H]
  Zoneout<Scalar> zoneout_c;

  StepOperand<Scalar> operand(Index t) const { return projection_rows.operand(dh_total.step(t), dh_total.width); }
  void products(Index, Index b, const UnitBlock& block) const { projection_rows.set(dm + block.begin, c.width, b); }
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    using BlockValues = BlockArray<Scalar, W>;
    const Index H = c.width;
    const auto i = gates.segment(t, n, j, w), f = gates.segment(t, n, H + j, w);
    const auto g = gates.segment(t, n, 2 * H + j, w), o = gates.segment(t, n, 3 * H + j, w);
    const auto d_m = segment(static_cast<const Scalar*>(dm), n, H, j, w);
    auto dcell = segment(dc, n, H, j, w);
    BlockValues cell = c.segment(t + 1, n, j, w), dcell_next = dcell, dcell_kept = BlockValues::Zero(w.size);
    if (zoneout_c.active()) {  // through the mix into the candidate (recomputed) and directly into c[t]
      cell = f * c.segment(t, n, j, w) + i * g;
      const BlockValues keep = zoneout_c.share(t, n, j, w, c.N, H);
      dcell_kept = keep * dcell_next;
      dcell_next *= Scalar(1) - keep;
    }
    const BlockValues tanh_cell = tanh_of(cell);
    dz.segment(t, n, 3 * H + j, w) = d_m * tanh_cell * o * (Scalar(1) - o);
    const BlockValues dcell_total = dcell_next + d_m * o * (Scalar(1) - tanh_cell * tanh_cell);
    dz.segment(t, n, j, w) = dcell_total * g * i * (Scalar(1) - i);
    dz.segment(t, n, H + j, w) = dcell_total * c.segment(t, n, j, w) * f * (Scalar(1) - f);
    dz.segment(t, n, 2 * H + j, w) = dcell_total * i * (Scalar(1) - g * g);
    if (zoneout_c.active()) {
      dcell = dcell_total * f + dcell_kept;
    } else {
      dcell = dcell_total * f;
    }
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const {
    for (Index k = 0; k < kProjectedLstmGates; ++k) dz.segment(t, n, k * c.width + j, w).setZero();
  }
};

// Backward stage 3, on projection block b: dh += dz[t] . recurrent_kernel^T. Masked rows' dh is set aside
// around the product (0 times a non-finite weight would be NaN), as BackpropIntoState does; with a state mask the
// product, the gradient on the masked h[t], is multiplied by it before it joins dh.
template <typename Scalar>
struct ProjectedStateGradStage {
  static constexpr bool packs = true, rows = false;
  BlockProduct<Scalar>& recurrent_rows;  // rows of recurrent_kernel per projection block
  const std::vector<UnitBlock>& blocks;  // of P
  Sequence<const Scalar> dz;             // [T, N, 4H]
  Scalar* dh;                            // [N, P]
  Scalar* kept;                          // [N, P] scratch
  Index P;
  const int64_t* lengths;
  const Scalar* state_mask;              // [N, P] or null

  StepOperand<Scalar> operand(Index t) const { return recurrent_rows.operand(dz.step(t), dz.width); }
  void products(Index t, Index b, const UnitBlock&) const {
    if (b >= recurrent_rows.blocks()) return;
    const UnitBlock& block = blocks[size_t(b)];
    Scalar* state = dh + block.begin;
    if (state_mask != nullptr) {
      for (Index n = 0; n < dz.N; ++n) {
        std::copy_n(state + n * P, block.size, kept + block.begin + n * P);
        std::fill_n(state + n * P, block.size, Scalar(0));
      }
      recurrent_rows.add(state, P, b);
      for (Index n = 0; n < dz.N; ++n) {
        VectorMap<Scalar> row(state + n * P, block.size);
        ConstVectorMap<Scalar> before(kept + block.begin + n * P, block.size);
        if (step_valid(lengths, t, n)) {
          row = before + row * ConstVectorMap<Scalar>(state_mask + n * P + block.begin, block.size);
        } else {
          row = before;
        }
      }
      return;
    }
    if (lengths != nullptr)
      for (Index n = 0; n < dz.N; ++n)
        if (!step_valid(lengths, t, n)) std::copy_n(state + n * P, block.size, kept + block.begin + n * P);
    recurrent_rows.add(state, P, b);
    if (lengths != nullptr)
      for (Index n = 0; n < dz.N; ++n)
        if (!step_valid(lengths, t, n)) std::copy_n(kept + block.begin + n * P, block.size, state + n * P);
  }
};

// Backward. grads.h0 [N, P] and grads.c0 [N, H] hold dh_n and dc_n on entry. dy [T, N, P] may be null. masks:
// the forward pass's.
template <typename Scalar>
void projected_lstm_backward(const ProjectedLstmGrads<Scalar>& grads, const Scalar* dy,
                             const ProjectedLstmCache<const Scalar>& cache, const Scalar* x /* [T, N, I] */,
                             const ProjectedLstmWeights<Scalar>& weights,
                             const int64_t* lengths /* [N] or null */, const Dims& d, const Masks<Scalar>& masks = {}) {
  constexpr Index G = kProjectedLstmGates;
  const Index T = d.T, N = d.N, H = d.H, P = weights.P, GH = G * H, rows = T * N;
  Workspace<Scalar> dz(rows * GH), dh_total(rows * P), dm(N * H), kept(N * P);
  const MaskedOperands<Scalar> masked(masks, d, GH, weights.recurrent_kernel, P);
  const TimeLoop loop(d, G, lengths);
  const std::vector<UnitBlock> p_blocks = projection_blocks(P, N);
  const GemmDepth projection_depth = gemm_depth<Scalar>(P, H, N), recurrent_depth = gemm_depth<Scalar>(GH, P, N);
  BlockProduct<Scalar> projection_rows(pack_unit_rows(weights.projection, P, 0, loop.blocks(), projection_depth, N),
                                       projection_depth, N);
  BlockProduct<Scalar> recurrent_rows(
      pack_unit_rows(masked.recurrent_kernel(), GH, 0, p_blocks, recurrent_depth, N), recurrent_depth, N);
  ProjectedOutputGradStage<Scalar> into_output{p_blocks, Index(p_blocks.size()), {dh_total.data(), N, P}, grads.h0,
                                               {dy, N, P}, lengths, masks.zoneout_h};
  ProjectedGateGradStage<Scalar> into_gates{projection_rows, {dh_total.data(), N, P}, {dz.data(), N, GH}, dm.data(),
                                            grads.c0, {cache.c, N, H}, {cache.gates, N, GH}, masks.zoneout_c};
  ProjectedStateGradStage<Scalar> into_state{recurrent_rows, p_blocks, {dz.data(), N, GH}, grads.h0, kept.data(), P,
                                             lengths, masks.state};
  loop.backward(into_output, into_gates, into_state);

  // The weight gradients read the operands as the products saw them: x and h[t] under their masks.
  Workspace<Scalar> masked_states(masks.state ? rows * P : 0);  // [T, N, P]
  weight_gradients(grads.x, grads.kernel, grads.recurrent_kernel, grads.bias, dz.data(), masked.inputs(x),
                   weights.kernel, masked.states(cache.h, masked_states), rows, d.I, P, GH);
  masked.unmask(grads.x, grads.recurrent_kernel);
  transposed_times(grads.projection, P, cache.m, H, H, dh_total.data(), P, P, rows);
}

}  // namespace rnnext
