// LSTM: forward over a whole sequence and backpropagation through time, with optional peepholes
// (Gers & Schmidhuber 2000) and coupled input/forget gates (i = 1 - f).
//   gates i,f,g,o (coupled: f,g,o) = x[t] . kernel + h[t] . recurrent_kernel + bias  [+ peepholes]
//   c_new = f * c[t] + i * g,   h_new = o * tanh(c_new)
#pragma once

#include "rnnext/common.h"
#include "rnnext/gemm.h"

namespace rnnext {

struct LstmOptions {
  bool peephole = false;  // peephole [P, H]: rows (i, f, o), or (f, o) when coupled
  bool coupled = false;   // i = 1 - f, so there are three gate blocks (f, g, o)
  Index gates() const { return coupled ? 3 : 4; }
};

// Where each gate's block sits along G*H, and each peephole's row.
struct LstmLayout {
  Index i, f, g, o;           // gate block index (i is unused when coupled)
  Index peep_i, peep_f, peep_o;  // peephole row (peep_i unused when coupled)
  explicit LstmLayout(const LstmOptions& opt)
      : i(0), f(opt.coupled ? 0 : 1), g(opt.coupled ? 1 : 2), o(opt.coupled ? 2 : 3),
        peep_i(0), peep_f(opt.coupled ? 0 : 1), peep_o(opt.coupled ? 1 : 2) {}
};

// Forward. On entry h[0], c[0] hold h0, c0; on exit h, c hold every state, y the outputs and gates the
// activated gates of every step.
template <typename Scalar>
void lstm_forward(Scalar* y /* [T, N, H] */, Scalar* h /* [T+1, N, H] */, Scalar* c /* [T+1, N, H] */,
                  Scalar* gates /* [T, N, G*H] */,
                  const Scalar* x /* [T, N, I] */, const Scalar* kernel /* [I, G*H] */,
                  const Scalar* recurrent_kernel /* [H, G*H] */, const Scalar* bias /* [G*H] */,
                  const Scalar* peephole /* [P, H] or null */, const int64_t* lengths /* [N] or null */,
                  const Dims& d, const LstmOptions& opt) {
  const Index T = d.T, N = d.N, H = d.H, G = opt.gates(), GH = G * H;
  const LstmLayout L(opt);
  // gates doubles as the buffer of input projections until step t activates its slice in place.
  project_inputs(gates, x, kernel, bias, T * N, d.I, GH);

  const auto blocks = unit_blocks(H, N);
  const GemmDepth depth = gemm_depth<Scalar>(H, GH, N);
  const auto weights = pack_gate_columns(recurrent_kernel, H, G, blocks, depth, N);
  PackedRhs<Scalar> states(depth, N, N == 1);
  const int threads = loop_threads(N, H, G, Index(blocks.size()));

#pragma omp parallel num_threads(threads) if (threads > 1)
  for (Index t = 0; t < T; ++t) {
    const Scalar* h_prev = h + t * N * H;
    const Scalar* c_prev = c + t * N * H;
    Scalar* h_next = h + (t + 1) * N * H;
    Scalar* c_next = c + (t + 1) * N * H;
    Scalar* gates_t = gates + t * N * GH;
    states.pack_share(h_prev, H, thread_id(), thread_count());
#pragma omp barrier
#pragma omp for schedule(static)
    for (Index b = 0; b < Index(blocks.size()); ++b) {
      const Index j = blocks[b].begin;
      for (Index k = 0; k < G; ++k)  // gates[t] += h[t] . U for this block's columns of gate k
        states.multiply_add(gates_t + k * H + j, GH, weights[size_t(b * G + k)]);
      with_block_width(blocks[b].size, [&](auto w) {
        for (Index n = 0; n < N; ++n) {
          auto gate = [&](Index k) { return segment(gates_t, n, GH, k * H + j, w); };
          auto cell_prev = segment(c_prev, n, H, j, w);
          auto cell = segment(c_next, n, H, j, w);
          auto f = gate(L.f), g = gate(L.g), o = gate(L.o);
          if (opt.peephole) {
            f = sigmoid(f + segment(peephole, L.peep_f, H, j, w) * cell_prev);
          } else {
            f = sigmoid(f);
          }
          g = tanh_of(g);
          if (opt.coupled) {
            cell = f * cell_prev + (Scalar(1) - f) * g;
          } else {
            auto i = gate(L.i);
            if (opt.peephole) {
              i = sigmoid(i + segment(peephole, L.peep_i, H, j, w) * cell_prev);
            } else {
              i = sigmoid(i);
            }
            cell = f * cell_prev + i * g;
          }
          if (opt.peephole) {
            o = sigmoid(o + segment(peephole, L.peep_o, H, j, w) * cell);
          } else {
            o = sigmoid(o);
          }
          auto state = segment(h_next, n, H, j, w);
          auto out = segment(y + t * N * H, n, H, j, w);
          if (step_valid(lengths, t, n)) {
            state = o * tanh_of(cell);
            out = state;
          } else {
            state = segment(h_prev, n, H, j, w);
            cell = cell_prev;
            out.setZero();
          }
        }
      });
    }
  }
}

// Backward. On entry dh0, dc0 hold the gradients on the final h and c; on exit, those on h0 and c0.
// dy may be null; dpeephole is only written when opt.peephole.
template <typename Scalar>
void lstm_backward(Scalar* dx /* [T, N, I] */, Scalar* dh0 /* [N, H] */, Scalar* dc0 /* [N, H] */,
                   Scalar* dkernel /* [I, G*H] */, Scalar* drecurrent_kernel /* [H, G*H] */,
                   Scalar* dbias /* [G*H] */, Scalar* dpeephole /* [P, H] or null */,
                   const Scalar* dy /* [T, N, H] or null */, const Scalar* h /* [T+1, N, H] */,
                   const Scalar* c /* [T+1, N, H] */, const Scalar* gates /* [T, N, G*H] */,
                   const Scalar* x /* [T, N, I] */, const Scalar* kernel /* [I, G*H] */,
                   const Scalar* recurrent_kernel /* [H, G*H] */, const Scalar* peephole /* [P, H] or null */,
                   const int64_t* lengths /* [N] or null */, const Dims& d, const LstmOptions& opt) {
  const Index T = d.T, N = d.N, H = d.H, G = opt.gates(), GH = G * H;
  const LstmLayout L(opt);
  Workspace<Scalar> dz(T * N * GH);  // [T, N, G*H] gradient on the gate pre-activations
  Scalar* dh = dh0;  // gradients on h[t+1] and c[t+1], carried backwards in place
  Scalar* dc = dc0;
  const auto blocks = unit_blocks(H, N);
  const GemmDepth depth = gemm_depth<Scalar>(GH, H, N);
  const auto weight_rows = pack_unit_rows(recurrent_kernel, GH, Index(0), blocks, depth, N);
  PackedRhs<Scalar> grads(depth, N, N == 1);
  const int threads = loop_threads(N, H, G, Index(blocks.size()));

#pragma omp parallel num_threads(threads) if (threads > 1)
  for (Index t = T - 1; t >= 0; --t) {
    const Scalar* c_prev = c + t * N * H;
    const Scalar* c_next = c + (t + 1) * N * H;
    const Scalar* gates_t = gates + t * N * GH;
    Scalar* dz_t = dz.data() + t * N * GH;
#pragma omp for schedule(static)
    for (Index b = 0; b < Index(blocks.size()); ++b) {
      const Index j = blocks[b].begin;
      with_block_width(blocks[b].size, [&](auto w) {
        using BlockValues = BlockArray<Scalar, std::decay_t<decltype(w)>>;
        for (Index n = 0; n < N; ++n) {
          auto dgate = [&](Index k) { return segment(dz_t, n, GH, k * H + j, w); };
          if (!step_valid(lengths, t, n)) {
            for (Index k = 0; k < G; ++k) dgate(k).setZero();
            continue;
          }
          auto gate = [&](Index k) { return segment(gates_t, n, GH, k * H + j, w); };
          auto f = gate(L.f), g = gate(L.g), o = gate(L.o);
          auto cell_prev = segment(c_prev, n, H, j, w);
          auto dcell = segment(dc, n, H, j, w);
          auto dstate = segment(dh, n, H, j, w);
          BlockValues dh_total = dstate;
          if (dy != nullptr) dh_total += segment(dy + t * N * H, n, H, j, w);
          dstate.setZero();  // restarted here, accumulated by the product below
          const BlockValues tanh_cell = tanh_of(segment(c_next, n, H, j, w));

          // Backpropagate h_new = o * tanh(c_new) into the output gate and the cell.
          dgate(L.o) = dh_total * tanh_cell * o * (Scalar(1) - o);
          BlockValues dcell_total = dcell + dh_total * o * (Scalar(1) - tanh_cell * tanh_cell);
          if (opt.peephole) dcell_total += dgate(L.o) * segment(peephole, L.peep_o, H, j, w);
          // Backpropagate c_new = f * c[t] + i * g into f, i (or 1 - f) and g.
          if (opt.coupled) {
            dgate(L.f) = dcell_total * (cell_prev - g) * f * (Scalar(1) - f);
            dgate(L.g) = dcell_total * (Scalar(1) - f) * (Scalar(1) - g * g);
          } else {
            auto i = gate(L.i);
            dgate(L.f) = dcell_total * cell_prev * f * (Scalar(1) - f);
            dgate(L.i) = dcell_total * g * i * (Scalar(1) - i);
            dgate(L.g) = dcell_total * i * (Scalar(1) - g * g);
          }
          // Into c[t]: directly through f, and through the i and f peepholes.
          dcell = dcell_total * f;
          if (opt.peephole) {
            dcell += dgate(L.f) * segment(peephole, L.peep_f, H, j, w);
            if (!opt.coupled) dcell += dgate(L.i) * segment(peephole, L.peep_i, H, j, w);
          }
        }
      });
    }
    grads.pack_share(dz_t, GH, thread_id(), thread_count());
#pragma omp barrier
    // Backpropagate into h[t]: dh += dz . U^T (zero at invalid rows, which pass dh through). Same blocks per
    // thread as above; the next step's first loop ends in a barrier before anyone repacks.
#pragma omp for schedule(static) nowait
    for (Index b = 0; b < Index(blocks.size()); ++b)
      grads.multiply_add(dh + blocks[b].begin, H, weight_rows[size_t(b)]);
  }

  weight_gradients(dx, dkernel, drecurrent_kernel, dbias, dz.data(), x, kernel, h, T * N, d.I, H, GH);

  if (opt.peephole) {
    // i and f look at c[t], o at c[t+1]; masked steps contribute nothing since their dz is zero.
    // Summed row by row in order, like column_sums, so results do not depend on buffer alignment.
    auto peep_row = [&](Index row) { return VectorMap<Scalar>(dpeephole + row * H, H); };
    peep_row(L.peep_f).setZero();
    peep_row(L.peep_o).setZero();
    if (!opt.coupled) peep_row(L.peep_i).setZero();
    for (Index row = 0; row < T * N; ++row) {
      const Scalar* dz_row = dz.data() + row * GH;
      ConstVectorMap<Scalar> cell_prev(c + row * H, H), cell_next(c + (row + N) * H, H);
      peep_row(L.peep_f) += ConstVectorMap<Scalar>(dz_row + L.f * H, H) * cell_prev;
      peep_row(L.peep_o) += ConstVectorMap<Scalar>(dz_row + L.o * H, H) * cell_next;
      if (!opt.coupled) peep_row(L.peep_i) += ConstVectorMap<Scalar>(dz_row + L.i * H, H) * cell_prev;
    }
  }
}

}  // namespace rnnext
