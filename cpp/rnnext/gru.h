// GRU: forward over a whole sequence and backpropagation through time, gate order r, z, n, in both
// published variants:
//   reset_after = true  (cuDNN, PyTorch, Keras): n = tanh(x.W_n + b_xn + r * (h.U_n + b_hn)), bias [2, 3H]
//   reset_after = false (Cho et al. 2014):        n = tanh(x.W_n + (r * h).U_n + b_n),        bias [3H]
//   h_new = (1 - z) * n + z * h[t]   (PyTorch, Keras and Cho et al.; some course notes swap z and 1 - z)
#pragma once

#include "rnnext/common.h"

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
  const Scalar* recurrent_bias = reset_after ? bias + GH : nullptr;  // [3H]
  project_inputs(gates, x, kernel, bias, T * N, d.I, GH);  // row 0 of a [2, 3H] bias is the input bias

  const auto blocks = unit_blocks(H);
  std::vector<Scalar> packed;
  const auto offsets = pack_recurrent_blocks(recurrent_kernel, H, G, blocks, packed);
  std::vector<Scalar> recurrent_part(size_t(N * GH));  // per block [N, 3*size]
  const int threads = loop_threads(N, H, G, Index(blocks.size()));
  EigenSingleThreaded single;

  // Finishes a row once n's pre-activation is in place: n = tanh(.), h_new = (1 - z) * n + z * h[t], mask.
  auto finish_row = [&](Index t, Index n, Index j, Index w, Scalar* gates_t) {
    const Scalar* h_prev = h + t * N * H;
    auto z = segment(static_cast<const Scalar*>(gates_t), n, GH, kGateZ * H + j, w);
    auto cand = segment(static_cast<const Scalar*>(gates_t), n, GH, kGateN * H + j, w);
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
#pragma omp for schedule(static)
    for (Index b = 0; b < Index(blocks.size()); ++b) {
      const Index j = blocks[b].begin, w = blocks[b].size;
      MatrixMap<Scalar> hu(recurrent_part.data() + N * G * j, N, G * w);
      ConstMatrixMap<Scalar> u_block(packed.data() + offsets[b], H, G * w);
      // reset_after needs all three gate columns of h[t].U at once; otherwise only r and z are known yet.
      if (reset_after) {
        hu.noalias() = ConstMatrixMap<Scalar>(h_prev, N, H) * u_block;
      } else {
        hu.leftCols(2 * w).noalias() = ConstMatrixMap<Scalar>(h_prev, N, H) * u_block.leftCols(2 * w);
      }
      for (Index n = 0; n < N; ++n) {
        auto gate = [&](Index k) { return segment(gates_t, n, GH, k * H + j, w); };
        auto recurrent = [&](Index k) { return VectorMap<Scalar>(hu.data() + n * G * w + k * w, w); };
        auto r = gate(kGateR), z = gate(kGateZ);
        auto rec = segment(rec_t, n, H, j, w);
        if (reset_after) {
          auto bias_of = [&](Index k) { return ConstVectorMap<Scalar>(recurrent_bias + k * H + j, w); };
          r = (r + recurrent(kGateR) + bias_of(kGateR)).logistic();
          z = (z + recurrent(kGateZ) + bias_of(kGateZ)).logistic();
          rec = recurrent(kGateN) + bias_of(kGateN);
          gate(kGateN) = (gate(kGateN) + r * rec).tanh();
          finish_row(t, n, j, w, gates_t);
        } else {
          r = (r + recurrent(kGateR)).logistic();
          z = (z + recurrent(kGateZ)).logistic();
          rec = r * segment(h_prev, n, H, j, w);
        }
      }
    }
    if (reset_after) continue;  // uniform across threads, so every thread skips the same worksharing loop
    // reset_after = false: n needs (r * h[t]) of every unit, complete after the loop above.
#pragma omp for schedule(static)
    for (Index b = 0; b < Index(blocks.size()); ++b) {
      const Index j = blocks[b].begin, w = blocks[b].size;
      MatrixMap<Scalar> hn(recurrent_part.data() + N * G * j, N, w);
      hn.noalias() = ConstMatrixMap<Scalar>(rec_t, N, H) *
                     ConstMatrixMap<Scalar>(packed.data() + offsets[b], H, G * w).rightCols(w);
      for (Index n = 0; n < N; ++n) {
        auto cand = segment(gates_t, n, GH, kGateN * H + j, w);
        cand = (cand + hn.row(n).transpose().array()).tanh();
        finish_row(t, n, j, w, gates_t);
      }
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
  std::vector<Scalar> dz(size_t(rows * GH));                           // [T, N, 3H]
  std::vector<Scalar> dx_cand(reset_after ? size_t(rows * H) : 0);     // [T, N, H]
  std::vector<Scalar> scratch(size_t(N * H));                          // per block [N, size]
  Scalar* dh = dh0;
  const auto blocks = unit_blocks(H);
  const int threads = loop_threads(N, H, G, Index(blocks.size()));
  EigenSingleThreaded single;

  // dh[t] += back . (column range of U)^T at valid rows of one block.
  auto add_back = [&](Index t, Index j, Index w, const Scalar* grad, Index grad_cols, Index u_col) {
    MatrixMap<Scalar> back(scratch.data() + N * j, N, w);
    back.noalias() = ConstStridedMap<Scalar>(grad, N, grad_cols, Eigen::OuterStride<>(GH)) *
                     ConstStridedMap<Scalar>(recurrent_kernel + j * GH + u_col, w, grad_cols,
                                             Eigen::OuterStride<>(GH)).transpose();
    for (Index n = 0; n < N; ++n)
      if (step_valid(lengths, t, n)) segment(dh, n, H, j, w) += back.row(n).transpose().array();
  };

#pragma omp parallel num_threads(threads) if (threads > 1)
  for (Index t = T - 1; t >= 0; --t) {
    const Scalar* h_prev = h + t * N * H;
    const Scalar* gates_t = gates + t * N * GH;
    const Scalar* rec_t = recurrent_out + t * N * H;
    Scalar* dz_t = dz.data() + t * N * GH;
    // Backpropagate h_new = (1 - z) * n + z * h[t] into z, n (and r when reset_after), and the direct
    // path into h[t].
#pragma omp for schedule(static)
    for (Index b = 0; b < Index(blocks.size()); ++b) {
      const Index j = blocks[b].begin, w = blocks[b].size;
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
        BlockArray<Scalar> dh_total = dstate;
        if (dy != nullptr) dh_total += segment(dy + t * N * H, n, H, j, w);
        const BlockArray<Scalar> dcand_pre = dh_total * (Scalar(1) - z) * (Scalar(1) - cand * cand);
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
    }
    if (reset_after) {
      // dh[t] += dz . U^T for all three gates at once.
#pragma omp for schedule(static) nowait
      for (Index b = 0; b < Index(blocks.size()); ++b)
        add_back(t, blocks[b].begin, blocks[b].size, dz_t, GH, 0);
      continue;
    }
    // reset_after = false: backpropagate n = tanh(. + (r * h).U_n) into r * h, then into r and h[t].
#pragma omp for schedule(static)
    for (Index b = 0; b < Index(blocks.size()); ++b) {
      const Index j = blocks[b].begin, w = blocks[b].size;
      MatrixMap<Scalar> drh(scratch.data() + N * j, N, w);
      drh.noalias() = ConstStridedMap<Scalar>(dz_t + kGateN * H, N, H, Eigen::OuterStride<>(GH)) *
                      ConstStridedMap<Scalar>(recurrent_kernel + j * GH + kGateN * H, w, H,
                                              Eigen::OuterStride<>(GH)).transpose();
      for (Index n = 0; n < N; ++n) {
        if (!step_valid(lengths, t, n)) continue;
        auto r = segment(gates_t, n, GH, kGateR * H + j, w);
        const auto drh_row = drh.row(n).transpose().array();
        segment(dz_t, n, GH, kGateR * H + j, w) = drh_row * segment(h_prev, n, H, j, w) * r * (Scalar(1) - r);
        segment(dh, n, H, j, w) += drh_row * r;
      }
    }
    // dh[t] += dz_rz . U_rz^T
#pragma omp for schedule(static) nowait
    for (Index b = 0; b < Index(blocks.size()); ++b)
      add_back(t, blocks[b].begin, blocks[b].size, dz_t, 2 * H, 0);
  }

  ConstMatrixMap<Scalar> inputs(x, rows, I), states(h, rows, H), kern(kernel, I, GH), dzm(dz.data(), rows, GH);
  MatrixMap<Scalar> dinputs(dx, rows, I), dkern(dkernel, I, GH), drec(drecurrent_kernel, H, GH);
  using RowVector = Eigen::Map<Eigen::Matrix<Scalar, 1, Eigen::Dynamic>>;
  if (reset_after) {
    // The input side sees (dz_r, dz_z, dx_cand); the recurrent side sees dz = (dz_r, dz_z, dx_cand * r).
    ConstMatrixMap<Scalar> dcand(dx_cand.data(), rows, H);
    drec.noalias() = states.transpose() * dzm;
    dkern.leftCols(2 * H).noalias() = inputs.transpose() * dzm.leftCols(2 * H);
    dkern.rightCols(H).noalias() = inputs.transpose() * dcand;
    dinputs.noalias() = dzm.leftCols(2 * H) * kern.leftCols(2 * H).transpose();
    dinputs.noalias() += dcand * kern.rightCols(H).transpose();
    RowVector(dbias, 2 * H) = dzm.leftCols(2 * H).colwise().sum();
    RowVector(dbias + 2 * H, H) = dcand.colwise().sum();
    RowVector(dbias + GH, GH) = dzm.colwise().sum();
  } else {
    // Both sides see dz; the n columns of U multiply r * h[t] ("rh"), the r and z columns multiply h[t].
    dinputs.noalias() = dzm * kern.transpose();
    dkern.noalias() = inputs.transpose() * dzm;
    drec.leftCols(2 * H).noalias() = states.transpose() * dzm.leftCols(2 * H);
    drec.rightCols(H).noalias() = ConstMatrixMap<Scalar>(recurrent_out, rows, H).transpose() * dzm.rightCols(H);
    RowVector(dbias, GH) = dzm.colwise().sum();
  }
}

}  // namespace rnnext
