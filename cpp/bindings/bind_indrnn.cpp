// Bindings for the IndRNN cell: check and convert arguments, release the GIL, call rnnext::indrnn_*.
#include "bindings/scan_checks.h"
#include "rnnext/indrnn.h"

namespace rnnext::bindings {
namespace {

// IndRNN takes relu (the paper's choice, which its elementwise recurrence makes trainable) or tanh.
Activation indrnn_activation(const Args& args, const std::string& name) {
  if (name == "relu") return Activation::Relu;
  if (name == "tanh") return Activation::Tanh;
  args.fail_value("activation is '" + name + "', expected 'relu' or 'tanh'");
}

// H from recurrent_weight [H].
py::ssize_t indrnn_hidden_size(const Args& args, const py::handle& recurrent_weight) {
  py::array u = args.numpy("recurrent_weight", recurrent_weight);
  if (u.ndim() != 1 || u.shape(0) < 1)
    args.fail_value("recurrent_weight has shape " + shape_string(u) + ", expected (H,) with H >= 1");
  return u.shape(0);
}

template <typename Scalar>
py::tuple indrnn_forward_impl(const Args& args, py::handle x_obj, py::handle h0_obj, py::handle kernel_obj,
                              py::handle recurrent_obj, py::handle bias_obj, py::handle lengths_obj, Activation act) {
  auto x = args.sequence<Scalar>(x_obj);
  const py::ssize_t T = x.shape(0), N = x.shape(1), I = x.shape(2), H = indrnn_hidden_size(args, recurrent_obj);
  auto h0 = args.array<Scalar>("h0", h0_obj, {{"N", N}, {"H", H}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"I", I}, {"H", H}});
  auto recurrent = args.array<Scalar>("recurrent_weight", recurrent_obj, {{"H", H}});
  auto bias = args.array<Scalar>("bias", bias_obj, {{"H", H}});
  auto lengths = args.lengths(lengths_obj, T, N);

  auto y = new_array<Scalar>({T, N, H}), h = new_array<Scalar>({T + 1, N, H});
  std::copy_n(h0.data(), N * H, h.mutable_data());
  const IndRnnWeights<Scalar> weights{kernel.data(), recurrent.data(), bias.data()};
  {
    py::gil_scoped_release release;
    with_variant<Activation::Relu, Activation::Tanh>(act, [&](auto variant) {
      indrnn_forward<Scalar, decltype(variant)::value>(y.mutable_data(), h.mutable_data(), x.data(), weights,
                                                       data_or_null(lengths), Dims{T, N, I, H});
    });
  }
  py::dict cache;
  cache["h"] = h;
  return py::make_tuple(y, last_state(h, T, N, H), cache);
}

template <typename Scalar>
py::dict indrnn_backward_impl(const Args& args, py::handle dy_obj, py::handle dh_obj, const py::dict& cache,
                              py::handle x_obj, py::handle kernel_obj, py::handle recurrent_obj, py::handle bias_obj,
                              py::handle lengths_obj, Activation act) {
  auto x = args.sequence<Scalar>(x_obj);
  const py::ssize_t T = x.shape(0), N = x.shape(1), I = x.shape(2), H = indrnn_hidden_size(args, recurrent_obj);
  auto dy = args.optional_array<Scalar>("dy", dy_obj, {{"T", T}, {"N", N}, {"H", H}});
  auto dh_n = args.optional_array<Scalar>("dh_n", dh_obj, {{"N", N}, {"H", H}});
  auto h = cache_entry<Scalar>(args, cache, "h", {{"T+1", T + 1}, {"N", N}, {"H", H}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"I", I}, {"H", H}});
  auto recurrent = args.array<Scalar>("recurrent_weight", recurrent_obj, {{"H", H}});
  auto bias = args.array<Scalar>("bias", bias_obj, {{"H", H}});
  auto lengths = args.lengths(lengths_obj, T, N);

  auto dx = new_array<Scalar>({T, N, I}), dkernel = new_array<Scalar>({I, H}), drecurrent = new_array<Scalar>({H});
  auto dbias = new_array<Scalar>({H});
  CArray<Scalar> dh0 = copy_or_zeros(dh_n, N, H);
  const IndRnnWeights<Scalar> weights{kernel.data(), recurrent.data(), bias.data()};
  const IndRnnGrads<Scalar> grads_out{dx.mutable_data(), dh0.mutable_data(), dkernel.mutable_data(),
                                      drecurrent.mutable_data(), dbias.mutable_data()};
  {
    py::gil_scoped_release release;
    with_variant<Activation::Relu, Activation::Tanh>(act, [&](auto variant) {
      indrnn_backward<Scalar, decltype(variant)::value>(grads_out, data_or_null(dy), h.data(), x.data(), weights,
                                                        data_or_null(lengths), Dims{T, N, I, H});
    });
  }
  py::dict grads;
  grads["x"] = dx;
  grads["h0"] = dh0;
  grads["kernel"] = dkernel;
  grads["recurrent_weight"] = drecurrent;
  grads["bias"] = dbias;
  return grads;
}

}  // namespace

void bind_indrnn(py::module_& m) {
  m.def(
      "indrnn_forward",
      [](py::handle x, py::handle h0, py::handle kernel, py::handle recurrent_weight, py::handle bias,
         py::handle lengths, const std::string& activation) {
        const Args args("indrnn_forward");
        const Activation act = indrnn_activation(args, activation);
        return with_dtype(args, x, [&](auto scalar) {
          return indrnn_forward_impl<decltype(scalar)>(args, x, h0, kernel, recurrent_weight, bias, lengths, act);
        });
      },
      py::arg("x"), py::arg("h0"), py::arg("kernel"), py::arg("recurrent_weight"), py::arg("bias"),
      py::arg("lengths") = py::none(), py::arg("activation") = "relu",
      "IndRNN forward over x [T, N, I] from h0 [N, H]: h_new = act(x.kernel + recurrent_weight * h + bias),\n"
      "recurrent_weight [H] elementwise. Returns (y [T, N, H], h_n [N, H], cache). See docs/conventions.md.");
  m.def(
      "indrnn_backward",
      [](py::handle dy, py::handle dh_n, const py::dict& cache, py::handle x, py::handle kernel,
         py::handle recurrent_weight, py::handle bias, py::handle lengths, const std::string& activation) {
        const Args args("indrnn_backward");
        const Activation act = indrnn_activation(args, activation);
        return with_dtype(args, x, [&](auto scalar) {
          return indrnn_backward_impl<decltype(scalar)>(args, dy, dh_n, cache, x, kernel, recurrent_weight, bias,
                                                        lengths, act);
        });
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("cache"), py::arg("x"), py::arg("kernel"), py::arg("recurrent_weight"),
      py::arg("bias"), py::arg("lengths") = py::none(), py::arg("activation") = "relu",
      "IndRNN backpropagation through time. dy and dh_n may be None (zero).\n"
      "Returns a dict of gradients keyed x, h0, kernel, recurrent_weight, bias.");
}

}  // namespace rnnext::bindings
