// Simple (Elman) RNN on the device: h_new = act(x[t] . kernel + bias + h[t] . recurrent_kernel), forward and BPTT,
// with the math and masking of cpp/rnnext/rnn.h.
#include "cuda/cells.h"
#include "cuda/pointwise.cuh"

namespace rnnext::cuda {
namespace {

template <typename Scalar, Activation Act>
__device__ Scalar activate(Scalar pre) {
  if constexpr (Act == Activation::Tanh) return tanh_of(pre);
  if constexpr (Act == Activation::Sigmoid) return sigmoid(pre);
  if constexpr (Act == Activation::Relu) return pre > Scalar(0) ? pre : Scalar(0);
}

// Derivative written on the activation's output y.
template <typename Scalar, Activation Act>
__device__ Scalar derivative_at(Scalar y) {
  if constexpr (Act == Activation::Tanh) return Scalar(1) - y * y;
  if constexpr (Act == Activation::Sigmoid) return y * (Scalar(1) - y);
  if constexpr (Act == Activation::Relu) return y > Scalar(0) ? Scalar(1) : Scalar(0);
}

// Step t: y_t holds x[t] . kernel; add bias and h[t] . U (rec), activate, write h[t+1] and y[t].
template <typename Scalar, Activation Act>
__global__ void rnn_forward_step(Scalar* y_t /* [N, H] */, Scalar* h_next, const Scalar* h_prev /* [N, H] */,
                                 const Scalar* rec /* [N, H] */, const Scalar* bias /* [H] */,
                                 const int64_t* lengths, int64_t t, int64_t N, int64_t H) {
  RNNEXT_GRID_STRIDE(index, N * H) {
    const int64_t n = index / H, j = index % H;
    if (step_valid(lengths, t, n)) {
      const Scalar out = activate<Scalar, Act>((y_t[index] + bias[j]) + rec[index]);
      h_next[index] = out;
      y_t[index] = out;
    } else {
      h_next[index] = h_prev[index];
      y_t[index] = Scalar(0);
    }
  }
}

// Step t backward: dpre[t] = (dh + dy[t]) * act'(h[t+1]) at valid rows; masked rows pass dh on unchanged.
template <typename Scalar, Activation Act>
__global__ void rnn_backward_step(Scalar* dpre_t /* [N, H] */, Scalar* dh /* [N, H] */, const Scalar* dh_rec,
                                  const Scalar* dy_t /* [N, H] or null */, const Scalar* h_next,
                                  const int64_t* lengths, int64_t t, int64_t T, int64_t N, int64_t H) {
  RNNEXT_GRID_STRIDE(index, N * H) {
    const int64_t n = index / H;
    const Scalar dh_in = has_recurrent_gradient(lengths, t, T, n) ? dh[index] + dh_rec[index] : dh[index];
    if (step_valid(lengths, t, n)) {
      Scalar grad = dh_in;
      if (dy_t != nullptr) grad += dy_t[index];
      dpre_t[index] = grad * derivative_at<Scalar, Act>(h_next[index]);
      dh[index] = Scalar(0);  // h[t] reaches h[t+1] only through the product
    } else {
      dpre_t[index] = Scalar(0);
      dh[index] = dh_in;
    }
  }
}

template <typename Scalar, Activation Act>
void forward(Run<Scalar>& run) {
  const Dims d = run.d;
  const int64_t N = d.N, H = d.H, NH = N * H;
  gemm<Scalar>(false, false, d.T * N, H, d.I, 1, run.x.data(), d.I, run.kernel.data(), H, 0, run.y.data(), H);
  DeviceBuffer<Scalar> rec(NH);  // [N, H] h[t] . U
  for (int64_t t = 0; t < d.T; ++t) {
    const Scalar* h_prev = run.h.data() + t * NH;
    gemm<Scalar>(false, false, N, H, H, 1, h_prev, H, run.recurrent_kernel.data(), H, 0, rec.data(), H);
    launch("rnn_forward_step", NH, rnn_forward_step<Scalar, Act>,
           run.y.data() + t * NH, run.h.data() + (t + 1) * NH, h_prev, rec.data(), run.bias.data(),
           run.lengths_or_null(), t, N, H);
  }
}

template <typename Scalar, Activation Act>
void backward(Grads<Scalar>& grads, const Scalar* dy, const Run<Scalar>& run) {
  const Dims d = run.d;
  const int64_t T = d.T, N = d.N, H = d.H, NH = N * H;
  DeviceBuffer<Scalar> dpre(T * NH), dh_rec(NH);  // [T, N, H] gradient on the pre-activations; [N, H]
  for (int64_t t = T - 1; t >= 0; --t) {
    launch("rnn_backward_step", NH, rnn_backward_step<Scalar, Act>,
           dpre.data() + t * NH, grads.h0.data(), dh_rec.data(), dy ? dy + t * NH : nullptr,
           run.h.data() + (t + 1) * NH, run.lengths_or_null(), t, T, N, H);
    gemm<Scalar>(false, true, N, H, H, 1, dpre.data() + t * NH, H, run.recurrent_kernel.data(), H, 0, dh_rec.data(), H);
  }
  launch("finish_state_gradient", NH, finish_state_gradient<Scalar>,
         grads.h0.data(), dh_rec.data(), run.lengths_or_null(), N, H);
  weight_gradients(grads, dpre.data(), run.x.data(), run.kernel.data(), run.h.data(), T * N, d.I, H, H);
}

template <typename Body>
void with_activation(Activation act, Body&& body) {
  switch (act) {
    case Activation::Tanh: return body(std::integral_constant<Activation, Activation::Tanh>());
    case Activation::Relu: return body(std::integral_constant<Activation, Activation::Relu>());
    case Activation::Sigmoid: return body(std::integral_constant<Activation, Activation::Sigmoid>());
  }
}

}  // namespace

template <typename Scalar>
void rnn_forward(Run<Scalar>& run) {
  with_activation(run.options.activation, [&](auto act) { forward<Scalar, decltype(act)::value>(run); });
}

template <typename Scalar>
void rnn_backward(Grads<Scalar>& grads, const Scalar* dy, const Run<Scalar>& run) {
  with_activation(run.options.activation, [&](auto act) { backward<Scalar, decltype(act)::value>(grads, dy, run); });
}

template void rnn_forward<float>(Run<float>&);
template void rnn_forward<double>(Run<double>&);
template void rnn_backward<float>(Grads<float>&, const float*, const Run<float>&);
template void rnn_backward<double>(Grads<double>&, const double*, const Run<double>&);

}  // namespace rnnext::cuda
