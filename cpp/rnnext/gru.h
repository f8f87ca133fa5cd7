// GRU: forward over a whole sequence and backpropagation through time, gate order r, z, n, in both
// published variants:
//   reset_after = true  (cuDNN, PyTorch, Keras): n = tanh(x.W_n + b_xn + r * (h.U_n + b_hn)), bias [2, 3H]
//   reset_after = false (Cho et al. 2014):        n = tanh(x.W_n + (r * h).U_n + b_n),        bias [3H]
//   h_new = (1 - z) * n + z * h[t]   (PyTorch, Keras and Cho et al.; some course notes swap z and 1 - z)
#pragma once

#include "rnnext/common.h"
#include "rnnext/gemm.h"

namespace rnnext {

constexpr Index kGruGates = 3;
constexpr Index kGateR = 0, kGateZ = 1, kGateN = 2;

// Forward. On entry h[0] holds h0. `recurrent_out` is the cache entry of the variant: "hn" [T, N, H] =
// h[t].U_n + b_hn when reset_after, "rh" [T, N, H] = r * h[t] otherwise.
template <typename Scalar>
void gru_forward(Scalar* y /* [T, N, H] */, Scalar* h /* [T+1, N, H] */, Scalar* gates /* [T, N, 3H] */,
                 Scalar* recurrent_out /* [T, N, H] */,
                 const Scalar* x /* [T, N, I] */, const Scalar* kernel /* [I, 3H] */,
                 const Scalar* recurrent_kernel /* [H, 3H] */, const Scalar* bias /* [2, 3H] or [3H] */,
                 const int64_t* lengths /* [N] or null */, const Dims& d, bool reset_after) {
  const Index T = d.T, N = d.N, H = d.H, G = kGruGates, GH = G * H;
  // Input projection plus every bias that is simply added: with reset_after the recurrent biases of r and z
  // join the input biases, while b_hn stays inside r * (h.U_n + b_hn).
  std::vector<Scalar> input_bias(bias, bias + GH);
  if (reset_after)
    for (Index col = 0; col < 2 * H; ++col) input_bias[size_t(col)] += bias[GH + col];
  project_inputs(gates, x, kernel, input_bias.data(), T * N, d.I, GH);
  if (reset_after) {  // hn starts as b_hn; the loop adds h[t].U_n
    for (Index row = 0; row < T * N; ++row) std::copy_n(bias + GH + 2 * H, H, recurrent_out + row * H);
  }

  const auto blocks = unit_blocks(H, N);
  const GemmDepth depth = gemm_depth<Scalar>(H, GH, N);
  const auto weights = pack_gate_columns(recurrent_kernel, H, G, blocks, depth, N);
  auto weight = [&](Index b, Index k) -> const PackedLhs<Scalar>& { return weights[size_t(b * G + k)]; };
  PackedRhs<Scalar> states(depth, N, N == 1);  // h[t], and r * h[t] in the second half of a reset_after=false step
  const int threads = loop_threads(N, H, G, Index(blocks.size()));

  // Finishes a row once n's pre-activation is in place: n = tanh(.), h_new = (1 - z) * n + z * h[t], mask.
  auto finish_row = [&](Index t, Index n, Index j, auto w) {
    const Scalar* h_prev = h + t * N * H;
    Scalar* gates_t = gates + t * N * GH;
    auto z = segment(gates_t, n, GH, kGateZ * H + j, w);
    auto cand = segment(gates_t, n, GH, kGateN * H + j, w);
    auto state = segment(h + (t + 1) * N * H, n, H, j, w);
    auto out = segment(y + t * N * H, n, H, j, w);
    if (step_valid(lengths, t, n)) {
      state = (Scalar(1) - z) * cand + z * segment(h_prev, n, H, j, w);
      out = state;
    } else {
      state = segment(h_prev, n, H, j, w);
      out.setZero();
    }
  };

#pragma omp parallel num_threads(threads) if (threads > 1)
  for (Index t = 0; t < T; ++t) {
    const Scalar* h_prev = h + t * N * H;
    Scalar* gates_t = gates + t * N * GH;
    Scalar* rec_t = recurrent_out + t * N * H;
    states.pack_share(h_prev, H, thread_id(), thread_count());
#pragma omp barrier
#pragma omp for schedule(static)
    for (Index b = 0; b < Index(blocks.size()); ++b) {
      const Index j = blocks[b].begin;
      states.multiply_add(gates_t + kGateR * H + j, GH, weight(b, kGateR));
      states.multiply_add(gates_t + kGateZ * H + j, GH, weight(b, kGateZ));
      if (reset_after) states.multiply_add(rec_t + j, H, weight(b, kGateN));  // hn = h[t].U_n + b_hn
      with_block_width(blocks[b].size, [&](auto w) {
        for (Index n = 0; n < N; ++n) {
          auto r = segment(gates_t, n, GH, kGateR * H + j, w), z = segment(gates_t, n, GH, kGateZ * H + j, w);
          auto rec = segment(rec_t, n, H, j, w);
          r = sigmoid(r);
          z = sigmoid(z);
          if (reset_after) {
            auto cand = segment(gates_t, n, GH, kGateN * H + j, w);
            cand = tanh_of(cand + r * rec);
            finish_row(t, n, j, w);
          } else {
            rec = r * segment(h_prev, n, H, j, w);
          }
        }
      });
    }
    if (reset_after) continue;  // uniform across threads, so every thread skips the same constructs
    // reset_after = false: n needs (r * h[t]) of every unit, complete after the loop above.
    states.pack_share(rec_t, H, thread_id(), thread_count());
#pragma omp barrier
#pragma omp for schedule(static)
    for (Index b = 0; b < Index(blocks.size()); ++b) {
      const Index j = blocks[b].begin;
      states.multiply_add(gates_t + kGateN * H + j, GH, weight(b, kGateN));
      with_block_width(blocks[b].size, [&](auto w) {
        for (Index n = 0; n < N; ++n) {
          auto cand = segment(gates_t, n, GH, kGateN * H + j, w);
          cand = tanh_of(cand);
          finish_row(t, n, j, w);
        }
      });
    }
  }
}

// Backward. On entry dh0 holds the gradient on the final state; on exit, the one on h0. dy may be null.
// dbias has the bias's shape ([2, 3H] when reset_after).
template <typename Scalar>
void gru_backward(Scalar* dx /* [T, N, I] */, Scalar* dh0 /* [N, H] */, Scalar* dkernel /* [I, 3H] */,
                  Scalar* drecurrent_kernel /* [H, 3H] */, Scalar* dbias /* [2, 3H] or [3H] */,
                  const Scalar* dy /* [T, N, H] or null */, const Scalar* h /* [T+1, N, H] */,
                  const Scalar* gates /* [T, N, 3H] */, const Scalar* recurrent_out /* [T, N, H] */,
                  const Scalar* x /* [T, N, I] */, const Scalar* kernel /* [I, 3H] */,
                  const Scalar* recurrent_kernel /* [H, 3H] */, const int64_t* lengths /* [N] or null */,
                  const Dims& d, bool reset_after) {
  const Index T = d.T, N = d.N, H = d.H, I = d.I, G = kGruGates, GH = G * H, rows = T * N;
  // Gradient on the recurrent pre-activations (h[t].U [+ b_h]) per step. reset_after: dz_n is scaled by r
  // there, so the input side's n-block dz_n is kept apart in dx_cand; otherwise both sides share dz.
  Workspace<Scalar> dz(rows * GH);                        // [T, N, 3H]
  Workspace<Scalar> dx_cand(reset_after ? rows * H : 0);  // [T, N, H]
  Workspace<Scalar> drh(reset_after ? 0 : N * H);         // [N, H] gradient on r * h[t]
  Scalar* dh = dh0;
  const auto blocks = unit_blocks(H, N);
  // reset_after: dh += dz . U^T over all 3H columns. Otherwise d(r*h) = dz_n . U_n^T first, then
  // dh += dz_rz . U_rz^T once dz_r is known.
  const GemmDepth depth_all = gemm_depth<Scalar>(reset_after ? GH : 2 * H, H, N);
  const GemmDepth depth_n = gemm_depth<Scalar>(H, H, N);
  const auto rows_all = pack_unit_rows(recurrent_kernel, GH, Index(0), blocks, depth_all, N);
  const auto rows_n = reset_after ? decltype(rows_all)() : pack_unit_rows(recurrent_kernel, GH, kGateN * H, blocks, depth_n, N);
  PackedRhs<Scalar> grads_all(depth_all, N, N == 1), grads_n(depth_n, reset_after ? 0 : N, N == 1);
  const int threads = loop_threads(N, H, G, Index(blocks.size()));

#pragma omp parallel num_threads(threads) if (threads > 1)
  for (Index t = T - 1; t >= 0; --t) {
    const Scalar* h_prev = h + t * N * H;
    const Scalar* gates_t = gates + t * N * GH;
    const Scalar* rec_t = recurrent_out + t * N * H;
    Scalar* dz_t = dz.data() + t * N * GH;
    // Backpropagate h_new = (1 - z) * n + z * h[t] into z, n (and r when reset_after), and the direct
    // path into h[t]; the products below add the paths through the gates.
#pragma omp for schedule(static)
    for (Index b = 0; b < Index(blocks.size()); ++b) {
      const Index j = blocks[b].begin;
      with_block_width(blocks[b].size, [&](auto w) {
        using BlockValues = BlockArray<Scalar, std::decay_t<decltype(w)>>;
        for (Index n = 0; n < N; ++n) {
          auto dgate = [&](Index k) { return segment(dz_t, n, GH, k * H + j, w); };
          if (!step_valid(lengths, t, n)) {
            for (Index k = 0; k < G; ++k) dgate(k).setZero();
            if (reset_after) segment(dx_cand.data() + t * N * H, n, H, j, w).setZero();
            continue;
          }
          auto gate = [&](Index k) { return segment(gates_t, n, GH, k * H + j, w); };
          auto r = gate(kGateR), z = gate(kGateZ), cand = gate(kGateN);
          auto dstate = segment(dh, n, H, j, w);
          BlockValues dh_total = dstate;
          if (dy != nullptr) dh_total += segment(dy + t * N * H, n, H, j, w);
          const BlockValues dcand_pre = dh_total * (Scalar(1) - z) * (Scalar(1) - cand * cand);
          dgate(kGateZ) = dh_total * (segment(h_prev, n, H, j, w) - cand) * z * (Scalar(1) - z);
          dstate = dh_total * z;
          if (reset_after) {
            auto hn = segment(rec_t, n, H, j, w);
            dgate(kGateR) = dcand_pre * hn * r * (Scalar(1) - r);
            dgate(kGateN) = dcand_pre * r;
            segment(dx_cand.data() + t * N * H, n, H, j, w) = dcand_pre;
          } else {
            dgate(kGateN) = dcand_pre;
          }
        }
      });
    }
    if (!reset_after) {
      // Backpropagate n = tanh(. + (r * h).U_n) into r * h, then into r and h[t].
      grads_n.pack_share(dz_t + kGateN * H, GH, thread_id(), thread_count());
#pragma omp barrier
#pragma omp for schedule(static)
      for (Index b = 0; b < Index(blocks.size()); ++b) {
        const Index j = blocks[b].begin;
        with_block_width(blocks[b].size, [&](auto w) {
          for (Index n = 0; n < N; ++n) segment(drh.data(), n, H, j, w).setZero();
          grads_n.multiply_add(drh.data() + j, H, rows_n[size_t(b)]);
          for (Index n = 0; n < N; ++n) {
            if (!step_valid(lengths, t, n)) continue;
            auto r = segment(gates_t, n, GH, kGateR * H + j, w);
            auto drh_row = segment(drh.data(), n, H, j, w);
            segment(dz_t, n, GH, kGateR * H + j, w) = drh_row * segment(h_prev, n, H, j, w) * r * (Scalar(1) - r);
            segment(dh, n, H, j, w) += drh_row * r;
          }
        });
      }
    }
    // dh[t] += dz . U^T over the columns not yet used (all of them when reset_after, else r and z).
    grads_all.pack_share(dz_t, GH, thread_id(), thread_count());
#pragma omp barrier
#pragma omp for schedule(static) nowait
    for (Index b = 0; b < Index(blocks.size()); ++b)
      grads_all.multiply_add(dh + blocks[b].begin, H, rows_all[size_t(b)]);
  }

  if (reset_after) {
    // The input side sees (dz_r, dz_z, dx_cand); the recurrent side sees dz = (dz_r, dz_z, dx_cand * r).
    const Scalar* dcand = dx_cand.data();
    rows_times_weight(dx, I, dz.data(), GH, rows, 2 * H, kernel, GH, I, true, nullptr, false);
    rows_times_weight(dx, I, dcand, H, rows, H, kernel + 2 * H, GH, I, true, nullptr, true);
    transposed_times(dkernel, GH, x, I, I, dz.data(), GH, 2 * H, rows);
    transposed_times(dkernel + 2 * H, GH, x, I, I, dcand, H, H, rows);
    transposed_times(drecurrent_kernel, GH, h, H, H, dz.data(), GH, GH, rows);
    column_sums(dbias, dz.data(), GH, rows, 2 * H);
    column_sums(dbias + 2 * H, dcand, H, rows, H);
    column_sums(dbias + GH, dz.data(), GH, rows, GH);
  } else {
    // Both sides see dz; the n columns of U multiply r * h[t] ("rh"), the r and z columns multiply h[t].
    rows_times_weight(dx, I, dz.data(), GH, rows, GH, kernel, GH, I, true, nullptr, false);
    transposed_times(dkernel, GH, x, I, I, dz.data(), GH, GH, rows);
    transposed_times(drecurrent_kernel, GH, h, H, H, dz.data(), GH, 2 * H, rows);
    transposed_times(drecurrent_kernel + 2 * H, GH, recurrent_out, H, H, dz.data() + 2 * H, GH, H, rows);
    column_sums(dbias, dz.data(), GH, rows, GH);
  }
}

}  // namespace rnnext
