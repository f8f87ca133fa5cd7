// Bindings for the GRU cell: check and convert arguments, release the GIL, call rnnext::gru_*.
#include "bindings/checks.h"
#include "bindings/mask_checks.h"
#include "bindings/stepper.h"
#include "rnnext/gru.h"

namespace rnnext::bindings {
namespace {

// The bias is [2, 3H] (input and recurrent rows) when reset_after, else [3H].
std::vector<Dim> gru_bias_dims(py::ssize_t H, bool reset_after) {
  if (reset_after) return {{"", 2}, {"3*H", 3 * H}};
  return {{"3*H", 3 * H}};
}

const char* recurrent_key(bool reset_after) { return reset_after ? "hn" : "rh"; }

template <typename Scalar>
py::tuple gru_forward_impl(const Args& args, py::handle x_obj, py::handle h0_obj, py::handle kernel_obj,
                           py::handle recurrent_obj, py::handle bias_obj, py::handle lengths_obj, bool reset_after,
                           bool keep_cache, py::handle masks_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const py::ssize_t T = x.shape(0), N = x.shape(1), I = x.shape(2), H = args.hidden_size(recurrent_obj, 3, "3*H");
  auto h0 = args.array<Scalar>("h0", h0_obj, {{"N", N}, {"H", H}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"I", I}, {"3*H", 3 * H}});
  auto recurrent = args.array<Scalar>("recurrent_kernel", recurrent_obj, {{"H", H}, {"3*H", 3 * H}});
  auto bias = args.array<Scalar>("bias", bias_obj, gru_bias_dims(H, reset_after));
  auto lengths = args.lengths(lengths_obj, T, N);
  const MaskArgs<Scalar> masks(args, masks_obj, {T, N, I, H, 3 * H, "3*H"}, {"zoneout_h"});

  const GruWeights<Scalar> weights{kernel.data(), recurrent.data(), bias.data()};
  const Dims d{T, N, I, H};
  auto y = new_array<Scalar>({T, N, H}), h_n = new_array<Scalar>({N, H});
  if (!keep_cache) {
    const Scalar* states0[] = {h0.data()};
    Scalar* states_n[] = {h_n.mutable_data()};
    {
      py::gil_scoped_release release;
      with_variant<false, true>(reset_after, [&](auto variant) {
        GruForward<Scalar, decltype(variant)::value>(weights, d, data_or_null(lengths), false, masks.masks())
            .run(y.mutable_data(), states0, states_n, x.data());
      });
    }
    return py::make_tuple(y, h_n, py::none());
  }
  auto h = new_array<Scalar>({T + 1, N, H}), gates = new_array<Scalar>({T, N, 3 * H});
  auto recurrent_out = new_array<Scalar>({T, N, H});
  std::copy_n(h0.data(), N * H, h.mutable_data());
  const GruCache<Scalar> state{h.mutable_data(), gates.mutable_data(), recurrent_out.mutable_data()};
  {
    py::gil_scoped_release release;
    with_variant<false, true>(reset_after, [&](auto variant) {
      gru_forward<Scalar, decltype(variant)::value>(y.mutable_data(), state, x.data(), weights, data_or_null(lengths), d,
                                                    masks.masks());
    });
  }
  std::copy_n(h.data() + T * N * H, N * H, h_n.mutable_data());
  py::dict cache;
  cache["h"] = h;
  cache["gates"] = gates;
  cache[recurrent_key(reset_after)] = recurrent_out;
  return py::make_tuple(y, h_n, cache);
}

// layers: one (kernel, recurrent_kernel, bias) per layer, layer k > 0 reading the H outputs of the layer below.
template <typename Scalar>
StepperHandle gru_stepper_impl(const Args& args, const std::vector<py::tuple>& layers, py::ssize_t N,
                               bool reset_after) {
  const py::ssize_t H = args.hidden_size(layers[0][1], 3, "3*H");
  const py::ssize_t I = stepper_input_size(args, layers[0][0], 3 * H, "3*H");
  std::vector<py::array> owned;
  std::vector<GruWeights<Scalar>> weights;
  for (size_t k = 0; k < layers.size(); ++k) {
    const py::tuple& layer = layers[k];
    auto kernel = stepper_weight<Scalar>(args, k, "kernel", layer[0], {{k == 0 ? "I" : "H", k == 0 ? I : H}, {"3*H", 3 * H}});
    auto recurrent = stepper_weight<Scalar>(args, k, "recurrent_kernel", layer[1], {{"H", H}, {"3*H", 3 * H}});
    auto bias = stepper_weight<Scalar>(args, k, "bias", layer[2], gru_bias_dims(H, reset_after));
    weights.push_back({kernel.data(), recurrent.data(), bias.data()});
    owned.insert(owned.end(), {kernel, recurrent, bias});
  }
  std::optional<StepperHandle> made;
  with_variant<false, true>(reset_after, [&](auto variant) {
    using Forward = GruForward<Scalar, decltype(variant)::value>;
    made.emplace(make_stepper_handle<Scalar, Forward>("gru_stepper", weights, std::move(owned), N, I, H));
  });
  return std::move(*made);
}

template <typename Scalar>
py::dict gru_backward_impl(const Args& args, py::handle dy_obj, py::handle dh_obj, const py::dict& cache,
                           py::handle x_obj, py::handle kernel_obj, py::handle recurrent_obj, py::handle bias_obj,
                           py::handle lengths_obj, bool reset_after, py::handle masks_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const py::ssize_t T = x.shape(0), N = x.shape(1), I = x.shape(2), H = args.hidden_size(recurrent_obj, 3, "3*H");
  auto dy = args.optional_array<Scalar>("dy", dy_obj, {{"T", T}, {"N", N}, {"H", H}});
  auto dh_n = args.optional_array<Scalar>("dh_n", dh_obj, {{"N", N}, {"H", H}});
  auto h = cache_entry<Scalar>(args, cache, "h", {{"T+1", T + 1}, {"N", N}, {"H", H}});
  auto gates = cache_entry<Scalar>(args, cache, "gates", {{"T", T}, {"N", N}, {"3*H", 3 * H}});
  auto recurrent_out = cache_entry<Scalar>(args, cache, recurrent_key(reset_after), {{"T", T}, {"N", N}, {"H", H}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"I", I}, {"3*H", 3 * H}});
  auto recurrent = args.array<Scalar>("recurrent_kernel", recurrent_obj, {{"H", H}, {"3*H", 3 * H}});
  const auto bias_dims = gru_bias_dims(H, reset_after);
  auto bias = args.array<Scalar>("bias", bias_obj, bias_dims);
  auto lengths = args.lengths(lengths_obj, T, N);
  const MaskArgs<Scalar> masks(args, masks_obj, {T, N, I, H, 3 * H, "3*H"}, {"zoneout_h"});

  std::vector<py::ssize_t> bias_shape;
  for (const Dim& dim : bias_dims) bias_shape.push_back(dim.size);
  auto dx = new_array<Scalar>({T, N, I}), dkernel = new_array<Scalar>({I, 3 * H});
  auto drecurrent = new_array<Scalar>({H, 3 * H}), dbias = new_array<Scalar>(bias_shape);
  CArray<Scalar> dh0 = copy_or_zeros(dh_n, N, H);
  const GruWeights<Scalar> weights{kernel.data(), recurrent.data(), bias.data()};
  const GruCache<const Scalar> state{h.data(), gates.data(), recurrent_out.data()};
  const GruGrads<Scalar> grads_out{dx.mutable_data(), dh0.mutable_data(), dkernel.mutable_data(),
                                   drecurrent.mutable_data(), dbias.mutable_data()};
  {
    py::gil_scoped_release release;
    with_variant<false, true>(reset_after, [&](auto variant) {
      gru_backward<Scalar, decltype(variant)::value>(grads_out, data_or_null(dy), state, x.data(), weights,
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

void bind_gru(py::module_& m) {
  m.def(
      "gru_forward",
      [](py::handle x, py::handle h0, py::handle kernel, py::handle recurrent_kernel, py::handle bias,
         py::handle lengths, bool reset_after, bool keep_cache, py::handle masks) {
        const Args args("gru_forward");
        return with_dtype(args, x, [&](auto scalar) {
          return gru_forward_impl<decltype(scalar)>(args, x, h0, kernel, recurrent_kernel, bias, lengths, reset_after,
                                                    keep_cache, masks);
        });
      },
      py::arg("x"), py::arg("h0"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("lengths") = py::none(), py::arg("reset_after") = true, py::arg("keep_cache") = true,
      py::arg("masks") = py::none(),
      "GRU forward over x [T, N, I] from h0 [N, H]; gate order r,z,n; h_new = (1 - z) * n + z * h.\n"
      "Returns (y [T, N, H], h_n [N, H], cache); with keep_cache=False the cache is None (an inference pass:\n"
      "the same outputs, bit for bit). masks: None or a dict of input [N, I], state [N, H], weight [H, 3H]\n"
      "dropout masks and zoneout_h (a rate, or keep masks [T, N, H]); pass the same to gru_backward.\n"
      "See docs/conventions.md.");
  m.def(
      "gru_stepper",
      [](py::handle layers, py::ssize_t batch_size, bool reset_after) {
        const Args args("gru_stepper");
        const auto entries = stepper_layers(args, layers, 3, "(kernel, recurrent_kernel, bias)");
        const py::ssize_t N = stepper_batch_size(args, batch_size);
        return with_dtype(args, "layers[0].kernel", entries[0][0], [&](auto scalar) {
          return gru_stepper_impl<decltype(scalar)>(args, entries, N, reset_after);
        });
      },
      py::arg("layers"), py::arg("batch_size"), py::arg("reset_after") = true,
      "A stepper for a stack of single-direction GRU layers, one (kernel, recurrent_kernel, bias) per layer, with\n"
      "its own copies of the weights packed once: .step(x [N, I], states) with states one (h,) per layer returns\n"
      "(y [N, H], new states), what gru_forward gives for T = 1.");
  m.def(
      "gru_backward",
      [](py::handle dy, py::handle dh_n, py::handle cache, py::handle x, py::handle kernel,
         py::handle recurrent_kernel, py::handle bias, py::handle lengths, bool reset_after, py::handle masks) {
        const Args args("gru_backward");
        return with_dtype(args, x, [&](auto scalar) {
          return gru_backward_impl<decltype(scalar)>(args, dy, dh_n, forward_cache(args, cache), x, kernel, recurrent_kernel, bias,
                                                     lengths, reset_after, masks);
        });
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("cache"), py::arg("x"), py::arg("kernel"), py::arg("recurrent_kernel"),
      py::arg("bias"), py::arg("lengths") = py::none(), py::arg("reset_after") = true, py::arg("masks") = py::none(),
      "GRU backpropagation through time. dy and dh_n may be None (zero).\n"
      "Returns a dict of gradients keyed x, h0, kernel, recurrent_kernel, bias.");
}

}  // namespace rnnext::bindings
