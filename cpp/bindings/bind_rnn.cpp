// Bindings for the simple RNN cell: check and convert arguments, release the GIL, call rnnext::rnn_*.
#include "bindings/checks.h"
#include "bindings/mask_checks.h"
#include "bindings/stepper.h"
#include "rnnext/rnn.h"

namespace rnnext::bindings {
namespace {

Activation parse_activation(const Args& args, const std::string& name) {
  if (name == "tanh") return Activation::Tanh;
  if (name == "relu") return Activation::Relu;
  if (name == "sigmoid") return Activation::Sigmoid;
  args.fail_value("activation is '" + name + "', expected 'tanh', 'relu' or 'sigmoid'");
}

// The activation as a template argument of the cell (the variant dispatch of this cell, once per call).
template <typename Body>
void with_activation(Activation act, Body&& body) {
  with_variant<Activation::Tanh, Activation::Relu, Activation::Sigmoid>(act, std::forward<Body>(body));
}

template <typename Scalar>
py::tuple rnn_forward_impl(const Args& args, py::handle x_obj, py::handle h0_obj, py::handle kernel_obj,
                           py::handle recurrent_obj, py::handle bias_obj, py::handle lengths_obj, Activation act,
                           bool keep_cache, py::handle masks_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const py::ssize_t T = x.shape(0), N = x.shape(1), I = x.shape(2), H = args.hidden_size(recurrent_obj, 1, "H");
  auto h0 = args.array<Scalar>("h0", h0_obj, {{"N", N}, {"H", H}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"I", I}, {"H", H}});
  auto recurrent = args.array<Scalar>("recurrent_kernel", recurrent_obj, {{"H", H}, {"H", H}});
  auto bias = args.array<Scalar>("bias", bias_obj, {{"H", H}});
  auto lengths = args.lengths(lengths_obj, T, N);
  const MaskArgs<Scalar> masks(args, masks_obj, {T, N, I, H, H, "H"}, {"zoneout_h"});

  const RnnWeights<Scalar> weights{kernel.data(), recurrent.data(), bias.data()};
  const Dims d{T, N, I, H};
  auto y = new_array<Scalar>({T, N, H}), h_n = new_array<Scalar>({N, H});
  if (!keep_cache) {
    const Scalar* states0[] = {h0.data()};
    Scalar* states_n[] = {h_n.mutable_data()};
    {
      py::gil_scoped_release release;
      with_activation(act, [&](auto variant) {
        RnnForward<Scalar, decltype(variant)::value>(weights, d, data_or_null(lengths), false, masks.masks())
            .run(y.mutable_data(), states0, states_n, x.data());
      });
    }
    return py::make_tuple(y, h_n, py::none());
  }
  auto h = new_array<Scalar>({T + 1, N, H});
  std::optional<CArray<Scalar>> candidate;  // zoneout only: h[t+1] no longer holds the activation's output
  if (masks.zoneout()) candidate = new_array<Scalar>({T, N, H});
  std::copy_n(h0.data(), N * H, h.mutable_data());
  {
    py::gil_scoped_release release;
    with_activation(act, [&](auto variant) {
      rnn_forward<Scalar, decltype(variant)::value>(y.mutable_data(), h.mutable_data(),
                                                    candidate ? candidate->mutable_data() : nullptr, x.data(),
                                                    weights, data_or_null(lengths), d, masks.masks());
    });
  }
  std::copy_n(h.data() + T * N * H, N * H, h_n.mutable_data());
  py::dict cache;
  cache["h"] = h;
  if (candidate) cache["candidate"] = *candidate;
  return py::make_tuple(y, h_n, cache);
}

// layers: one (kernel, recurrent_kernel, bias) per layer, layer k > 0 reading the H outputs of the layer below.
template <typename Scalar>
StepperHandle rnn_stepper_impl(const Args& args, const std::vector<py::tuple>& layers, py::ssize_t N, Activation act) {
  const py::ssize_t H = args.hidden_size(layers[0][1], 1, "H");
  const py::ssize_t I = stepper_input_size(args, layers[0][0], H, "H");
  std::vector<py::array> owned;
  std::vector<RnnWeights<Scalar>> weights;
  for (size_t k = 0; k < layers.size(); ++k) {
    const py::tuple& layer = layers[k];
    auto kernel = stepper_weight<Scalar>(args, k, "kernel", layer[0], {{k == 0 ? "I" : "H", k == 0 ? I : H}, {"H", H}});
    auto recurrent = stepper_weight<Scalar>(args, k, "recurrent_kernel", layer[1], {{"H", H}, {"H", H}});
    auto bias = stepper_weight<Scalar>(args, k, "bias", layer[2], {{"H", H}});
    weights.push_back({kernel.data(), recurrent.data(), bias.data()});
    owned.insert(owned.end(), {kernel, recurrent, bias});
  }
  std::optional<StepperHandle> made;
  with_activation(act, [&](auto variant) {
    using Forward = RnnForward<Scalar, decltype(variant)::value>;
    made.emplace(make_stepper_handle<Scalar, Forward>("rnn_stepper", weights, std::move(owned), N, I, H));
  });
  return std::move(*made);
}

template <typename Scalar>
py::dict rnn_backward_impl(const Args& args, py::handle dy_obj, py::handle dh_obj, const py::dict& cache,
                           py::handle x_obj, py::handle kernel_obj, py::handle recurrent_obj, py::handle bias_obj,
                           py::handle lengths_obj, Activation act, py::handle masks_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const py::ssize_t T = x.shape(0), N = x.shape(1), I = x.shape(2), H = args.hidden_size(recurrent_obj, 1, "H");
  auto dy = args.optional_array<Scalar>("dy", dy_obj, {{"T", T}, {"N", N}, {"H", H}});
  auto dh_n = args.optional_array<Scalar>("dh_n", dh_obj, {{"N", N}, {"H", H}});
  auto h = cache_entry<Scalar>(args, cache, "h", {{"T+1", T + 1}, {"N", N}, {"H", H}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"I", I}, {"H", H}});
  auto recurrent = args.array<Scalar>("recurrent_kernel", recurrent_obj, {{"H", H}, {"H", H}});
  auto bias = args.array<Scalar>("bias", bias_obj, {{"H", H}});
  auto lengths = args.lengths(lengths_obj, T, N);
  const MaskArgs<Scalar> masks(args, masks_obj, {T, N, I, H, H, "H"}, {"zoneout_h"});
  std::optional<CArray<Scalar>> candidate;
  if (masks.zoneout()) candidate = cache_entry<Scalar>(args, cache, "candidate", {{"T", T}, {"N", N}, {"H", H}});

  auto dx = new_array<Scalar>({T, N, I}), dkernel = new_array<Scalar>({I, H}), drecurrent = new_array<Scalar>({H, H});
  auto dbias = new_array<Scalar>({H});
  CArray<Scalar> dh0 = copy_or_zeros(dh_n, N, H);
  const RnnWeights<Scalar> weights{kernel.data(), recurrent.data(), bias.data()};
  const RnnGrads<Scalar> grads_out{dx.mutable_data(), dh0.mutable_data(), dkernel.mutable_data(),
                                   drecurrent.mutable_data(), dbias.mutable_data()};
  {
    py::gil_scoped_release release;
    with_activation(act, [&](auto variant) {
      rnn_backward<Scalar, decltype(variant)::value>(grads_out, data_or_null(dy), h.data(),
                                                     candidate ? candidate->data() : nullptr, x.data(), weights,
                                                     data_or_null(lengths), Dims{T, N, I, H}, masks.masks());
    });
  }
  py::dict grads;
  grads["x"] = dx;
  grads["h0"] = dh0;
  grads["kernel"] = dkernel;
  grads["recurrent_kernel"] = drecurrent;
  grads["bias"] = dbias;
  return grads;
}

}  // namespace

void bind_rnn(py::module_& m) {
  m.def(
      "rnn_forward",
      [](py::handle x, py::handle h0, py::handle kernel, py::handle recurrent_kernel, py::handle bias,
         py::handle lengths, const std::string& activation, bool keep_cache, py::handle masks) {
        const Args args("rnn_forward");
        const Activation act = parse_activation(args, activation);
        return with_dtype(args, x, [&](auto scalar) {
          return rnn_forward_impl<decltype(scalar)>(args, x, h0, kernel, recurrent_kernel, bias, lengths, act,
                                                    keep_cache, masks);
        });
      },
      py::arg("x"), py::arg("h0"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("lengths") = py::none(), py::arg("activation") = "tanh", py::arg("keep_cache") = true,
      py::arg("masks") = py::none(),
      "Simple RNN forward over x [T, N, I] from h0 [N, H]: h_new = act(x.kernel + h.recurrent_kernel + bias).\n"
      "Returns (y [T, N, H], h_n [N, H], cache); with keep_cache=False the cache is None (an inference pass:\n"
      "the same outputs, bit for bit). masks: None or a dict of input [N, I], state [N, H], weight [H, H]\n"
      "dropout masks and zoneout_h (a rate, or keep masks [T, N, H]; the cache then holds the candidates\n"
      "h~ as 'candidate'); pass the same to rnn_backward. See docs/conventions.md.");
  m.def(
      "rnn_stepper",
      [](py::handle layers, py::ssize_t batch_size, const std::string& activation) {
        const Args args("rnn_stepper");
        const Activation act = parse_activation(args, activation);
        const auto entries = stepper_layers(args, layers, 3, "(kernel, recurrent_kernel, bias)");
        const py::ssize_t N = stepper_batch_size(args, batch_size);
        return with_dtype(args, "layers[0].kernel", entries[0][0], [&](auto scalar) {
          return rnn_stepper_impl<decltype(scalar)>(args, entries, N, act);
        });
      },
      py::arg("layers"), py::arg("batch_size"), py::arg("activation") = "tanh",
      "A stepper for a stack of single-direction simple RNN layers, one (kernel, recurrent_kernel, bias) per\n"
      "layer, with its own copies of the weights packed once: .step(x [N, I], states) with states one (h,) per\n"
      "layer returns (y [N, H], new states), what rnn_forward gives for T = 1.");
  m.def(
      "rnn_backward",
      [](py::handle dy, py::handle dh_n, py::handle cache, py::handle x, py::handle kernel,
         py::handle recurrent_kernel, py::handle bias, py::handle lengths, const std::string& activation,
         py::handle masks) {
        const Args args("rnn_backward");
        const Activation act = parse_activation(args, activation);
        return with_dtype(args, x, [&](auto scalar) {
          return rnn_backward_impl<decltype(scalar)>(args, dy, dh_n, forward_cache(args, cache), x, kernel, recurrent_kernel, bias,
                                                     lengths, act, masks);
        });
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("cache"), py::arg("x"), py::arg("kernel"), py::arg("recurrent_kernel"),
      py::arg("bias"), py::arg("lengths") = py::none(), py::arg("activation") = "tanh", py::arg("masks") = py::none(),
      "Simple RNN backpropagation through time. dy and dh_n may be None (zero).\n"
      "Returns a dict of gradients keyed x, h0, kernel, recurrent_kernel, bias.");
}

}  // namespace rnnext::bindings
