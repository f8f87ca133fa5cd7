// LSTM on the device, forward and BPTT, with optional peepholes and coupled gates (i = 1 - f), with the math and
// masking of cpp/rnnext/lstm.h: gates i,f,g,o (coupled: f,g,o), c_new = f * c + i * g, h_new = o * tanh(c_new).
#include "cuda/cells.h"
#include "cuda/pointwise.cuh"

namespace rnnext::cuda {

// Where each gate's block sits along G*H, and each peephole's row (cpp/rnnext/lstm.h's LstmLayout). Outside the
// anonymous namespace: nvcc warns about the members one variant leaves unused there.
template <bool Coupled>
struct LstmLayout {
  static constexpr int64_t G = Coupled ? 3 : 4;
  static constexpr int64_t i = 0, f = Coupled ? 0 : 1, g = Coupled ? 1 : 2, o = Coupled ? 2 : 3;  // i: not coupled
  static constexpr int64_t peep_i = 0, peep_f = Coupled ? 0 : 1, peep_o = Coupled ? 1 : 2;        // peep_i: not coupled
};

namespace {

// Step t: gates_t holds x[t] . kernel; add bias and h[t] . U (rec), activate in place (the cache keeps them
// activated), write c[t+1], h[t+1] and y[t]. Masked rows are activated too (cached) and carry the states.
template <typename Scalar, bool Peephole, bool Coupled>
__global__ void lstm_forward_step(Scalar* gates_t /* [N, G*H] */, Scalar* c_next, Scalar* h_next, Scalar* y_t,
                                  const Scalar* c_prev, const Scalar* h_prev /* [N, H] */,
                                  const Scalar* rec /* [N, G*H] */, const Scalar* bias /* [G*H] */,
                                  const Scalar* peephole /* [P, H] */, const int64_t* lengths, int64_t t, int64_t N,
                                  int64_t H) {
  using L = LstmLayout<Coupled>;
  const int64_t GH = L::G * H;
  RNNEXT_GRID_STRIDE(index, N * H) {
    const int64_t n = index / H, j = index % H;
    Scalar* gate = gates_t + n * GH + j;
    const Scalar* rec_row = rec + n * GH + j;
    auto pre = [&](int64_t k) { return (gate[k * H] + bias[k * H + j]) + rec_row[k * H]; };
    const Scalar cell_prev = c_prev[index];
    Scalar f_pre = pre(L::f);
    if constexpr (Peephole) f_pre += peephole[L::peep_f * H + j] * cell_prev;
    const Scalar f = sigmoid(f_pre), g = tanh_of(pre(L::g));
    Scalar cell;
    if constexpr (Coupled) {
      cell = f * cell_prev + (Scalar(1) - f) * g;
    } else {
      Scalar i_pre = pre(L::i);
      if constexpr (Peephole) i_pre += peephole[L::peep_i * H + j] * cell_prev;
      const Scalar i = sigmoid(i_pre);
      gate[L::i * H] = i;
      cell = f * cell_prev + i * g;
    }
    Scalar o_pre = pre(L::o);
    if constexpr (Peephole) o_pre += peephole[L::peep_o * H + j] * cell;
    const Scalar o = sigmoid(o_pre);
    gate[L::f * H] = f;
    gate[L::g * H] = g;
    gate[L::o * H] = o;
    if (step_valid(lengths, t, n)) {
      c_next[index] = cell;
      h_next[index] = o * tanh_of(cell);
      y_t[index] = h_next[index];
    } else {
      c_next[index] = cell_prev;
      h_next[index] = h_prev[index];
      y_t[index] = Scalar(0);
    }
  }
}

// Step t backward: backpropagate h[t+1] and c[t+1] into the gate pre-activations dz[t] and into c[t] (dc, in
// place). Masked rows get dz = 0 and pass dh and dc on unchanged.
template <typename Scalar, bool Peephole, bool Coupled>
__global__ void lstm_backward_step(Scalar* dz_t /* [N, G*H] */, Scalar* dh, Scalar* dc /* [N, H] */,
                                   const Scalar* dh_rec, const Scalar* dy_t /* or null */,
                                   const Scalar* gates_t /* [N, G*H] */, const Scalar* c_prev,
                                   const Scalar* c_next /* [N, H] */, const Scalar* peephole,
                                   const int64_t* lengths, int64_t t, int64_t T, int64_t N, int64_t H) {
  using L = LstmLayout<Coupled>;
  const int64_t GH = L::G * H;
  RNNEXT_GRID_STRIDE(index, N * H) {
    const int64_t n = index / H, j = index % H;
    Scalar* dgate = dz_t + n * GH + j;
    const Scalar dh_in = has_recurrent_gradient(lengths, t, T, n) ? dh[index] + dh_rec[index] : dh[index];
    if (!step_valid(lengths, t, n)) {
      for (int64_t k = 0; k < L::G; ++k) dgate[k * H] = Scalar(0);
      dh[index] = dh_in;
      continue;
    }
    const Scalar* gate = gates_t + n * GH + j;
    const Scalar f = gate[L::f * H], g = gate[L::g * H], o = gate[L::o * H];
    const Scalar cell_prev = c_prev[index], tanh_cell = tanh_of(c_next[index]);
    Scalar dh_total = dh_in;
    if (dy_t != nullptr) dh_total += dy_t[index];
    dh[index] = Scalar(0);  // h[t] reaches h[t+1] only through the product

    // Backpropagate h_new = o * tanh(c_new) into the output gate and the cell.
    const Scalar do_pre = dh_total * tanh_cell * o * (Scalar(1) - o);
    dgate[L::o * H] = do_pre;
    Scalar dcell_total = dc[index] + dh_total * o * (Scalar(1) - tanh_cell * tanh_cell);
    if constexpr (Peephole) dcell_total += do_pre * peephole[L::peep_o * H + j];
    // Backpropagate c_new = f * c[t] + i * g into f, i (or 1 - f) and g.
    Scalar df_pre, di_pre = Scalar(0);
    if constexpr (Coupled) {
      df_pre = dcell_total * (cell_prev - g) * f * (Scalar(1) - f);
      dgate[L::g * H] = dcell_total * (Scalar(1) - f) * (Scalar(1) - g * g);
    } else {
      const Scalar i = gate[L::i * H];
      df_pre = dcell_total * cell_prev * f * (Scalar(1) - f);
      di_pre = dcell_total * g * i * (Scalar(1) - i);
      dgate[L::i * H] = di_pre;
      dgate[L::g * H] = dcell_total * i * (Scalar(1) - g * g);
    }
    dgate[L::f * H] = df_pre;
    // Into c[t]: directly through f, and through the i and f peepholes.
    Scalar dcell = dcell_total * f;
    if constexpr (Peephole) {
      dcell += df_pre * peephole[L::peep_f * H + j];
      if constexpr (!Coupled) dcell += di_pre * peephole[L::peep_i * H + j];
    }
    dc[index] = dcell;
  }
}

template <typename Scalar, bool Peephole, bool Coupled>
void forward(Run<Scalar>& run) {
  const Dims d = run.d;
  const int64_t N = d.N, H = d.H, NH = N * H, GH = LstmLayout<Coupled>::G * H;
  gemm<Scalar>(false, false, d.T * N, GH, d.I, 1, run.x.data(), d.I, run.kernel.data(), GH, 0, run.gates.data(), GH);
  DeviceBuffer<Scalar> rec(N * GH);  // [N, G*H] h[t] . U
  for (int64_t t = 0; t < d.T; ++t) {
    const Scalar* h_prev = run.h.data() + t * NH;
    gemm<Scalar>(false, false, N, GH, H, 1, h_prev, H, run.recurrent_kernel.data(), GH, 0, rec.data(), GH);
    launch("lstm_forward_step", NH, lstm_forward_step<Scalar, Peephole, Coupled>,
           run.gates.data() + t * N * GH, run.c.data() + (t + 1) * NH, run.h.data() + (t + 1) * NH,
           run.y.data() + t * NH, run.c.data() + t * NH, h_prev, rec.data(), run.bias.data(), run.peephole.data(),
           run.lengths_or_null(), t, N, H);
  }
}

template <typename Scalar, bool Peephole, bool Coupled>
void backward(Grads<Scalar>& grads, const Scalar* dy, const Run<Scalar>& run) {
  using L = LstmLayout<Coupled>;
  const Dims d = run.d;
  const int64_t T = d.T, N = d.N, H = d.H, NH = N * H, GH = L::G * H, rows = T * N;
  DeviceBuffer<Scalar> dz(rows * GH), dh_rec(NH);  // [T, N, G*H] gradient on the gate pre-activations; [N, H]
  for (int64_t t = T - 1; t >= 0; --t) {
    Scalar* dz_t = dz.data() + t * N * GH;
    launch("lstm_backward_step", NH, lstm_backward_step<Scalar, Peephole, Coupled>,
           dz_t, grads.h0.data(), grads.c0.data(), dh_rec.data(), dy ? dy + t * NH : nullptr,
           run.gates.data() + t * N * GH, run.c.data() + t * NH, run.c.data() + (t + 1) * NH, run.peephole.data(),
           run.lengths_or_null(), t, T, N, H);
    gemm<Scalar>(false, true, N, H, GH, 1, dz_t, GH, run.recurrent_kernel.data(), GH, 0, dh_rec.data(), H);
  }
  launch("finish_state_gradient", NH, finish_state_gradient<Scalar>,
         grads.h0.data(), dh_rec.data(), run.lengths_or_null(), N, H);
  weight_gradients(grads, dz.data(), run.x.data(), run.kernel.data(), run.h.data(), rows, d.I, H, GH);

  if constexpr (Peephole) {
    // i and f look at c[t], o at c[t+1]; masked steps contribute nothing since their dz is zero.
    DeviceBuffer<Scalar> products(rows * H);  // [T*N, H]
    const DeviceBuffer<Scalar> all_ones = ones<Scalar>(rows);
    auto peephole_gradient = [&](int64_t row, int64_t gate, const Scalar* cell) {
      launch("multiply_rows", rows * H, multiply_rows<Scalar>,
             products.data(), dz.data() + gate * H, GH, cell, H, rows, H);
      column_sums<Scalar>(grads.peephole.data() + row * H, products.data(), H, rows, H, all_ones.data());
    };
    peephole_gradient(L::peep_f, L::f, run.c.data());
    peephole_gradient(L::peep_o, L::o, run.c.data() + NH);
    if constexpr (!Coupled) peephole_gradient(L::peep_i, L::i, run.c.data());
  }
}

template <typename Body>
void with_variant(const CellOptions& options, Body&& body) {
  using Yes = std::true_type;
  using No = std::false_type;
  if (options.peephole) {
    options.coupled ? body(Yes(), Yes()) : body(Yes(), No());
  } else {
    options.coupled ? body(No(), Yes()) : body(No(), No());
  }
}

}  // namespace

template <typename Scalar>
void lstm_forward(Run<Scalar>& run) {
  with_variant(run.options, [&](auto peephole, auto coupled) {
    forward<Scalar, decltype(peephole)::value, decltype(coupled)::value>(run);
  });
}

template <typename Scalar>
void lstm_backward(Grads<Scalar>& grads, const Scalar* dy, const Run<Scalar>& run) {
  with_variant(run.options, [&](auto peephole, auto coupled) {
    backward<Scalar, decltype(peephole)::value, decltype(coupled)::value>(grads, dy, run);
  });
}

template void lstm_forward<float>(Run<float>&);
template void lstm_forward<double>(Run<double>&);
template void lstm_backward<float>(Grads<float>&, const float*, const Run<float>&);
template void lstm_backward<double>(Grads<double>&, const double*, const Run<double>&);

}  // namespace rnnext::cuda
