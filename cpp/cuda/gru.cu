// GRU on the device, forward and BPTT, gate order r, z, n, in both variants of cpp/rnnext/gru.h:
//   reset_after = true:  n = tanh(x.W_n + b_in + r * (h.U_n + b_hn)), bias [2, 3H] (input row, recurrent row)
//   reset_after = false: n = tanh(x.W_n + b_n + (r * h).U_n),         bias [3H]
//   h_new = (1 - z) * n + z * h[t]
// reset_after = false needs a second product per step each way: n's product reads r * h[t] of every unit.
#include "cuda/cells.h"
#include "cuda/pointwise.cuh"

namespace rnnext::cuda {
namespace {

constexpr int64_t kR = 0, kZ = 1, kN = 2;

template <typename Scalar>
__device__ void finish(Scalar* h_next, Scalar* y_t, const Scalar* h_prev, Scalar z, Scalar cand, bool valid,
                       int64_t index) {
  if (valid) {
    h_next[index] = (Scalar(1) - z) * cand + z * h_prev[index];
    y_t[index] = h_next[index];
  } else {
    h_next[index] = h_prev[index];
    y_t[index] = Scalar(0);
  }
}

// reset_after, step t: gates_t holds x[t] . kernel, rec h[t] . U; the biases join as the CPU engine adds them.
template <typename Scalar>
__global__ void gru_forward_step(Scalar* gates_t /* [N, 3H] */, Scalar* hn_t /* [N, H] */, Scalar* h_next,
                                 Scalar* y_t, const Scalar* h_prev, const Scalar* rec /* [N, 3H] */,
                                 const Scalar* bias /* [2, 3H] */, const int64_t* lengths, int64_t t, int64_t N,
                                 int64_t H) {
  const int64_t GH = 3 * H;
  RNNEXT_GRID_STRIDE(index, N * H) {
    const int64_t n = index / H, j = index % H;
    Scalar* gate = gates_t + n * GH + j;
    const Scalar* rec_row = rec + n * GH + j;
    const Scalar r = sigmoid((gate[kR * H] + (bias[kR * H + j] + bias[GH + kR * H + j])) + rec_row[kR * H]);
    const Scalar z = sigmoid((gate[kZ * H] + (bias[kZ * H + j] + bias[GH + kZ * H + j])) + rec_row[kZ * H]);
    const Scalar hn = bias[GH + kN * H + j] + rec_row[kN * H];
    const Scalar cand = tanh_of((gate[kN * H] + bias[kN * H + j]) + r * hn);
    gate[kR * H] = r;
    gate[kZ * H] = z;
    gate[kN * H] = cand;
    hn_t[index] = hn;
    finish(h_next, y_t, h_prev, z, cand, step_valid(lengths, t, n), index);
  }
}

// reset_after = false, step t, first kernel: r and z from rec's first 2H columns, and rh = r * h[t].
template <typename Scalar>
__global__ void gru_forward_gates(Scalar* gates_t, Scalar* rh_t /* [N, H] */, const Scalar* h_prev,
                                  const Scalar* rec /* [N, 3H] */, const Scalar* bias /* [3H] */, int64_t N,
                                  int64_t H) {
  const int64_t GH = 3 * H;
  RNNEXT_GRID_STRIDE(index, N * H) {
    const int64_t n = index / H, j = index % H;
    Scalar* gate = gates_t + n * GH + j;
    const Scalar* rec_row = rec + n * GH + j;
    const Scalar r = sigmoid((gate[kR * H] + bias[kR * H + j]) + rec_row[kR * H]);
    gate[kZ * H] = sigmoid((gate[kZ * H] + bias[kZ * H + j]) + rec_row[kZ * H]);
    gate[kR * H] = r;
    rh_t[index] = r * h_prev[index];
  }
}

// reset_after = false, step t, second kernel: n from rec's last H columns (rh . U_n), then h[t+1] and y[t].
template <typename Scalar>
__global__ void gru_forward_candidate(Scalar* gates_t, Scalar* h_next, Scalar* y_t, const Scalar* h_prev,
                                      const Scalar* rec, const Scalar* bias, const int64_t* lengths, int64_t t,
                                      int64_t N, int64_t H) {
  const int64_t GH = 3 * H;
  RNNEXT_GRID_STRIDE(index, N * H) {
    const int64_t n = index / H, j = index % H;
    Scalar* gate = gates_t + n * GH + j;
    const Scalar cand = tanh_of((gate[kN * H] + bias[kN * H + j]) + rec[n * GH + kN * H + j]);
    gate[kN * H] = cand;
    finish(h_next, y_t, h_prev, gate[kZ * H], cand, step_valid(lengths, t, n), index);
  }
}

// Step t backward, first kernel: backpropagate h_new = (1 - z) * n + z * h[t] into dz_z, dz_n (and dz_r with
// reset_after, whose dz_n is on the recurrent side, r * dcand, with the input side's dcand kept in dx_cand), and
// the direct path dh = dh_total * z. Masked rows get dz = 0 and pass dh on unchanged.
template <typename Scalar, bool ResetAfter>
__global__ void gru_backward_step(Scalar* dz_t /* [N, 3H] */, Scalar* dx_cand_t /* [N, H], reset_after */,
                                  Scalar* dh, const Scalar* dh_rec, const Scalar* dy_t, const Scalar* gates_t,
                                  const Scalar* recurrent_t /* [N, H] hn */, const Scalar* h_prev,
                                  const int64_t* lengths, int64_t t, int64_t T, int64_t N, int64_t H) {
  const int64_t GH = 3 * H;
  RNNEXT_GRID_STRIDE(index, N * H) {
    const int64_t n = index / H, j = index % H;
    Scalar* dgate = dz_t + n * GH + j;
    const Scalar dh_in = has_recurrent_gradient(lengths, t, T, n) ? dh[index] + dh_rec[index] : dh[index];
    if (!step_valid(lengths, t, n)) {
      for (int64_t k = 0; k < 3; ++k) dgate[k * H] = Scalar(0);
      if constexpr (ResetAfter) dx_cand_t[index] = Scalar(0);
      dh[index] = dh_in;
      continue;
    }
    const Scalar* gate = gates_t + n * GH + j;
    const Scalar r = gate[kR * H], z = gate[kZ * H], cand = gate[kN * H];
    Scalar dh_total = dh_in;
    if (dy_t != nullptr) dh_total += dy_t[index];
    const Scalar dcand_pre = dh_total * (Scalar(1) - z) * (Scalar(1) - cand * cand);
    dgate[kZ * H] = dh_total * (h_prev[index] - cand) * z * (Scalar(1) - z);
    dh[index] = dh_total * z;
    if constexpr (ResetAfter) {
      dgate[kR * H] = dcand_pre * recurrent_t[index] * r * (Scalar(1) - r);
      dgate[kN * H] = dcand_pre * r;
      dx_cand_t[index] = dcand_pre;
    } else {
      dgate[kR * H] = Scalar(0);  // written by gru_backward_reset once d(r * h) is known
      dgate[kN * H] = dcand_pre;
    }
  }
}

// reset_after = false, step t, second kernel: drh = dz_n . U_n^T backpropagated into r and h[t] (valid rows).
template <typename Scalar>
__global__ void gru_backward_reset(Scalar* dz_t, Scalar* dh, const Scalar* drh /* [N, H] */, const Scalar* gates_t,
                                   const Scalar* h_prev, const int64_t* lengths, int64_t t, int64_t N, int64_t H) {
  const int64_t GH = 3 * H;
  RNNEXT_GRID_STRIDE(index, N * H) {
    const int64_t n = index / H, j = index % H;
    if (!step_valid(lengths, t, n)) continue;
    const Scalar r = gates_t[n * GH + kR * H + j];
    dz_t[n * GH + kR * H + j] = drh[index] * h_prev[index] * r * (Scalar(1) - r);
    dh[index] += drh[index] * r;
  }
}

template <typename Scalar, bool ResetAfter>
void forward(Run<Scalar>& run) {
  const Dims d = run.d;
  const int64_t N = d.N, H = d.H, NH = N * H, GH = 3 * H;
  const Scalar* U = run.recurrent_kernel.data();
  gemm<Scalar>(false, false, d.T * N, GH, d.I, 1, run.x.data(), d.I, run.kernel.data(), GH, 0, run.gates.data(), GH);
  DeviceBuffer<Scalar> rec(N * GH);  // [N, 3H] the step's recurrent products
  for (int64_t t = 0; t < d.T; ++t) {
    const Scalar* h_prev = run.h.data() + t * NH;
    Scalar *gates_t = run.gates.data() + t * N * GH, *recurrent_t = run.recurrent.data() + t * NH;
    Scalar *h_next = run.h.data() + (t + 1) * NH, *y_t = run.y.data() + t * NH;
    if constexpr (ResetAfter) {
      gemm<Scalar>(false, false, N, GH, H, 1, h_prev, H, U, GH, 0, rec.data(), GH);
      launch("gru_forward_step", NH, gru_forward_step<Scalar>,
             gates_t, recurrent_t, h_next, y_t, h_prev, rec.data(), run.bias.data(), run.lengths_or_null(), t, N, H);
    } else {
      gemm<Scalar>(false, false, N, 2 * H, H, 1, h_prev, H, U, GH, 0, rec.data(), GH);
      launch("gru_forward_gates", NH, gru_forward_gates<Scalar>,
             gates_t, recurrent_t, h_prev, rec.data(), run.bias.data(), N, H);
      gemm<Scalar>(false, false, N, H, H, 1, recurrent_t, H, U + kN * H, GH, 0, rec.data() + kN * H, GH);
      launch("gru_forward_candidate", NH, gru_forward_candidate<Scalar>,
             gates_t, h_next, y_t, h_prev, rec.data(), run.bias.data(), run.lengths_or_null(), t, N, H);
    }
  }
}

template <typename Scalar, bool ResetAfter>
void backward(Grads<Scalar>& grads, const Scalar* dy, const Run<Scalar>& run) {
  const Dims d = run.d;
  const int64_t T = d.T, N = d.N, H = d.H, I = d.I, NH = N * H, GH = 3 * H, rows = T * N;
  const Scalar *U = run.recurrent_kernel.data(), *W = run.kernel.data(), *x = run.x.data(), *h = run.h.data();
  DeviceBuffer<Scalar> dz(rows * GH), dh_rec(NH);          // [T, N, 3H]; [N, H]
  DeviceBuffer<Scalar> dx_cand(ResetAfter ? rows * H : 0);  // [T, N, H]
  DeviceBuffer<Scalar> drh(ResetAfter ? 0 : NH);           // [N, H] gradient on r * h[t], this step's
  Scalar* dh = grads.h0.data();
  for (int64_t t = T - 1; t >= 0; --t) {
    Scalar* dz_t = dz.data() + t * N * GH;
    const Scalar *gates_t = run.gates.data() + t * N * GH, *h_prev = h + t * NH;
    launch("gru_backward_step", NH, gru_backward_step<Scalar, ResetAfter>,
           dz_t, ResetAfter ? dx_cand.data() + t * NH : nullptr, dh, dh_rec.data(), dy ? dy + t * NH : nullptr,
           gates_t, run.recurrent.data() + t * NH, h_prev, run.lengths_or_null(), t, T, N, H);
    if constexpr (ResetAfter) {
      gemm<Scalar>(false, true, N, H, GH, 1, dz_t, GH, U, GH, 0, dh_rec.data(), H);
    } else {
      gemm<Scalar>(false, true, N, H, H, 1, dz_t + kN * H, GH, U + kN * H, GH, 0, drh.data(), H);
      launch("gru_backward_reset", NH, gru_backward_reset<Scalar>,
             dz_t, dh, drh.data(), gates_t, h_prev, run.lengths_or_null(), t, N, H);
      gemm<Scalar>(false, true, N, H, 2 * H, 1, dz_t, GH, U, GH, 0, dh_rec.data(), H);
    }
  }
  launch("finish_state_gradient", NH, finish_state_gradient<Scalar>, dh, dh_rec.data(), run.lengths_or_null(), N, H);

  const DeviceBuffer<Scalar> all_ones = ones<Scalar>(rows);
  Scalar *dx = grads.x.data(), *dW = grads.kernel.data(), *dU = grads.recurrent_kernel.data();
  Scalar* db = grads.bias.data();
  if constexpr (ResetAfter) {
    // The input side sees (dz_r, dz_z, dx_cand); the recurrent side sees dz = (dz_r, dz_z, dx_cand * r).
    const Scalar* dcand = dx_cand.data();
    gemm<Scalar>(false, true, rows, I, 2 * H, 1, dz.data(), GH, W, GH, 0, dx, I);
    gemm<Scalar>(false, true, rows, I, H, 1, dcand, H, W + kN * H, GH, 1, dx, I);
    gemm<Scalar>(true, false, I, 2 * H, rows, 1, x, I, dz.data(), GH, 0, dW, GH);
    gemm<Scalar>(true, false, I, H, rows, 1, x, I, dcand, H, 0, dW + kN * H, GH);
    gemm<Scalar>(true, false, H, GH, rows, 1, h, H, dz.data(), GH, 0, dU, GH);
    column_sums<Scalar>(db, dz.data(), GH, rows, 2 * H, all_ones.data());
    column_sums<Scalar>(db + kN * H, dcand, H, rows, H, all_ones.data());
    column_sums<Scalar>(db + GH, dz.data(), GH, rows, GH, all_ones.data());
  } else {
    // Both sides see dz; the n columns of U multiply r * h[t] (the cached rh), the r and z columns h[t].
    gemm<Scalar>(false, true, rows, I, GH, 1, dz.data(), GH, W, GH, 0, dx, I);
    gemm<Scalar>(true, false, I, GH, rows, 1, x, I, dz.data(), GH, 0, dW, GH);
    gemm<Scalar>(true, false, H, 2 * H, rows, 1, h, H, dz.data(), GH, 0, dU, GH);
    gemm<Scalar>(true, false, H, H, rows, 1, run.recurrent.data(), H, dz.data() + kN * H, GH, 0, dU + kN * H, GH);
    column_sums<Scalar>(db, dz.data(), GH, rows, GH, all_ones.data());
  }
}

}  // namespace

template <typename Scalar>
void gru_forward(Run<Scalar>& run) {
  run.options.reset_after ? forward<Scalar, true>(run) : forward<Scalar, false>(run);
}

template <typename Scalar>
void gru_backward(Grads<Scalar>& grads, const Scalar* dy, const Run<Scalar>& run) {
  run.options.reset_after ? backward<Scalar, true>(grads, dy, run) : backward<Scalar, false>(grads, dy, run);
}

template void gru_forward<float>(Run<float>&);
template void gru_forward<double>(Run<double>&);
template void gru_backward<float>(Grads<float>&, const float*, const Run<float>&);
template void gru_backward<double>(Grads<double>&, const double*, const Run<double>&);

}  // namespace rnnext::cuda
