// Bindings for the LSTM cell: check and convert arguments, release the GIL, call rnnext::lstm_*.
#include "bindings/checks.h"
#include "bindings/mask_checks.h"
#include "bindings/stepper.h"
#include "rnnext/lstm.h"

namespace rnnext::bindings {
namespace {

struct LstmShapes {
  py::ssize_t T, N, I, H, G, P;
  std::string gates_label() const { return std::to_string(G) + "*H"; }
};

template <typename Scalar>
MaskArgs<Scalar> lstm_masks(const Args& args, const py::handle& masks_obj, const LstmShapes& s) {
  return MaskArgs<Scalar>(args, masks_obj, {s.T, s.N, s.I, s.H, s.G * s.H, s.gates_label()}, {"zoneout_h", "zoneout_c"});
}

template <typename Scalar>
LstmShapes lstm_shapes(const Args& args, const CArray<Scalar>& x, const py::handle& recurrent_kernel, bool coupled) {
  const py::ssize_t G = coupled ? 3 : 4;
  const std::string label = std::to_string(G) + "*H";
  return {x.shape(0), x.shape(1), x.shape(2), args.hidden_size(recurrent_kernel, G, label.c_str()), G, coupled ? 2 : 3};
}

// The options as template arguments of the cell (the variant dispatch of this cell, once per call).
template <typename Body>
void with_lstm_variant(bool peephole, bool coupled, Body&& body) {
  with_variant<false, true>(peephole, [&](auto with_peephole) {
    with_variant<false, true>(coupled, [&](auto with_coupled) { body(with_peephole, with_coupled); });
  });
}

template <typename Scalar>
py::tuple lstm_forward_impl(const Args& args, py::handle x_obj, py::handle h0_obj, py::handle c0_obj,
                            py::handle kernel_obj, py::handle recurrent_obj, py::handle bias_obj,
                            py::handle peephole_obj, py::handle lengths_obj, bool coupled, bool keep_cache,
                            py::handle masks_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const LstmShapes s = lstm_shapes(args, x, recurrent_obj, coupled);
  const std::string gl = s.gates_label();
  auto h0 = args.array<Scalar>("h0", h0_obj, {{"N", s.N}, {"H", s.H}});
  auto c0 = args.array<Scalar>("c0", c0_obj, {{"N", s.N}, {"H", s.H}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"I", s.I}, {gl.c_str(), s.G * s.H}});
  auto recurrent = args.array<Scalar>("recurrent_kernel", recurrent_obj, {{"H", s.H}, {gl.c_str(), s.G * s.H}});
  auto bias = args.array<Scalar>("bias", bias_obj, {{gl.c_str(), s.G * s.H}});
  auto peephole = args.optional_array<Scalar>("peephole", peephole_obj, {{coupled ? "P(f,o)" : "P(i,f,o)", s.P}, {"H", s.H}});
  auto lengths = args.lengths(lengths_obj, s.T, s.N);
  const MaskArgs<Scalar> masks = lstm_masks<Scalar>(args, masks_obj, s);

  const LstmWeights<Scalar> weights{kernel.data(), recurrent.data(), bias.data(), data_or_null(peephole)};
  const Dims d{s.T, s.N, s.I, s.H};
  auto y = new_array<Scalar>({s.T, s.N, s.H}), h_n = new_array<Scalar>({s.N, s.H}), c_n = new_array<Scalar>({s.N, s.H});
  if (!keep_cache) {
    const Scalar* states0[] = {h0.data(), c0.data()};
    Scalar* states_n[] = {h_n.mutable_data(), c_n.mutable_data()};
    {
      py::gil_scoped_release release;
      with_lstm_variant(peephole.has_value(), coupled, [&](auto with_peephole, auto with_coupled) {
        LstmForward<Scalar, decltype(with_peephole)::value, decltype(with_coupled)::value>(
            weights, d, data_or_null(lengths), false, masks.masks())
            .run(y.mutable_data(), states0, states_n, x.data());
      });
    }
    return py::make_tuple(y, h_n, c_n, py::none());
  }
  auto h = new_array<Scalar>({s.T + 1, s.N, s.H}), c = new_array<Scalar>({s.T + 1, s.N, s.H});
  auto gates = new_array<Scalar>({s.T, s.N, s.G * s.H});
  std::copy_n(h0.data(), s.N * s.H, h.mutable_data());
  std::copy_n(c0.data(), s.N * s.H, c.mutable_data());
  const LstmCache<Scalar> state{h.mutable_data(), c.mutable_data(), gates.mutable_data()};
  {
    py::gil_scoped_release release;
    with_lstm_variant(peephole.has_value(), coupled, [&](auto with_peephole, auto with_coupled) {
      lstm_forward<Scalar, decltype(with_peephole)::value, decltype(with_coupled)::value>(
          y.mutable_data(), state, x.data(), weights, data_or_null(lengths), d, masks.masks());
    });
  }
  std::copy_n(h.data() + s.T * s.N * s.H, s.N * s.H, h_n.mutable_data());
  std::copy_n(c.data() + s.T * s.N * s.H, s.N * s.H, c_n.mutable_data());
  py::dict cache;
  cache["h"] = h;
  cache["c"] = c;
  cache["gates"] = gates;
  return py::make_tuple(y, h_n, c_n, cache);
}

// layers: one (kernel, recurrent_kernel, bias, peephole or None) per layer, layer k > 0 reading the H outputs
// of the layer below; batch_size rows per step.
template <typename Scalar>
StepperHandle lstm_stepper_impl(const Args& args, const std::vector<py::tuple>& layers, py::ssize_t N, bool coupled,
                                bool peephole) {
  const py::ssize_t G = coupled ? 3 : 4, P = coupled ? 2 : 3;
  const std::string gl = std::to_string(G) + "*H";
  const py::ssize_t H = args.hidden_size(layers[0][1], G, gl.c_str());
  const py::ssize_t I = stepper_input_size(args, layers[0][0], G * H, gl.c_str());
  std::vector<py::array> owned;
  std::vector<LstmWeights<Scalar>> weights;
  for (size_t k = 0; k < layers.size(); ++k) {
    const py::tuple& layer = layers[k];
    const py::ssize_t I_k = k == 0 ? I : H;
    auto kernel = stepper_weight<Scalar>(args, k, "kernel", layer[0], {{k == 0 ? "I" : "H", I_k}, {gl.c_str(), G * H}});
    auto recurrent = stepper_weight<Scalar>(args, k, "recurrent_kernel", layer[1], {{"H", H}, {gl.c_str(), G * H}});
    auto bias = stepper_weight<Scalar>(args, k, "bias", layer[2], {{gl.c_str(), G * H}});
    if (layer[3].is_none() == peephole)
      args.fail_value("layers[" + std::to_string(k) + "].peephole is " + (peephole ? "None" : "given") +
                      ", expected " + (peephole ? "an array (the first layer has one)" : "None like the first layer's"));
    std::optional<CArray<Scalar>> peep;
    if (peephole)
      peep = stepper_weight<Scalar>(args, k, "peephole", layer[3], {{coupled ? "P(f,o)" : "P(i,f,o)", P}, {"H", H}});
    weights.push_back({kernel.data(), recurrent.data(), bias.data(), data_or_null(peep)});
    owned.insert(owned.end(), {kernel, recurrent, bias});
    if (peep) owned.push_back(*peep);
  }
  std::optional<StepperHandle> made;
  with_lstm_variant(peephole, coupled, [&](auto with_peephole, auto with_coupled) {
    using Forward = LstmForward<Scalar, decltype(with_peephole)::value, decltype(with_coupled)::value>;
    made.emplace(make_stepper_handle<Scalar, Forward>("lstm_stepper", weights, std::move(owned), N, I, H));
  });
  return std::move(*made);
}

template <typename Scalar>
py::dict lstm_backward_impl(const Args& args, py::handle dy_obj, py::handle dh_obj, py::handle dc_obj,
                            const py::dict& cache, py::handle x_obj, py::handle kernel_obj, py::handle recurrent_obj,
                            py::handle bias_obj, py::handle peephole_obj, py::handle lengths_obj, bool coupled,
                            py::handle masks_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const LstmShapes s = lstm_shapes(args, x, recurrent_obj, coupled);
  const std::string gl = s.gates_label();
  auto dy = args.optional_array<Scalar>("dy", dy_obj, {{"T", s.T}, {"N", s.N}, {"H", s.H}});
  auto dh_n = args.optional_array<Scalar>("dh_n", dh_obj, {{"N", s.N}, {"H", s.H}});
  auto dc_n = args.optional_array<Scalar>("dc_n", dc_obj, {{"N", s.N}, {"H", s.H}});
  auto h = cache_entry<Scalar>(args, cache, "h", {{"T+1", s.T + 1}, {"N", s.N}, {"H", s.H}});
  auto c = cache_entry<Scalar>(args, cache, "c", {{"T+1", s.T + 1}, {"N", s.N}, {"H", s.H}});
  auto gates = cache_entry<Scalar>(args, cache, "gates", {{"T", s.T}, {"N", s.N}, {gl.c_str(), s.G * s.H}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"I", s.I}, {gl.c_str(), s.G * s.H}});
  auto recurrent = args.array<Scalar>("recurrent_kernel", recurrent_obj, {{"H", s.H}, {gl.c_str(), s.G * s.H}});
  auto bias = args.array<Scalar>("bias", bias_obj, {{gl.c_str(), s.G * s.H}});
  auto peephole = args.optional_array<Scalar>("peephole", peephole_obj, {{coupled ? "P(f,o)" : "P(i,f,o)", s.P}, {"H", s.H}});
  auto lengths = args.lengths(lengths_obj, s.T, s.N);
  const MaskArgs<Scalar> masks = lstm_masks<Scalar>(args, masks_obj, s);

  auto dx = new_array<Scalar>({s.T, s.N, s.I}), dkernel = new_array<Scalar>({s.I, s.G * s.H});
  auto drecurrent = new_array<Scalar>({s.H, s.G * s.H}), dbias = new_array<Scalar>({s.G * s.H});
  CArray<Scalar> dh0 = copy_or_zeros(dh_n, s.N, s.H), dc0 = copy_or_zeros(dc_n, s.N, s.H);
  std::optional<CArray<Scalar>> dpeephole;
  if (peephole) dpeephole = new_array<Scalar>({s.P, s.H});
  const LstmWeights<Scalar> weights{kernel.data(), recurrent.data(), bias.data(), data_or_null(peephole)};
  const LstmCache<const Scalar> state{h.data(), c.data(), gates.data()};
  const LstmGrads<Scalar> grads_out{dx.mutable_data(), dh0.mutable_data(), dc0.mutable_data(),
                                    dkernel.mutable_data(), drecurrent.mutable_data(), dbias.mutable_data(),
                                    dpeephole ? dpeephole->mutable_data() : nullptr};
  {
    py::gil_scoped_release release;
    with_lstm_variant(peephole.has_value(), coupled, [&](auto with_peephole, auto with_coupled) {
      lstm_backward<Scalar, decltype(with_peephole)::value, decltype(with_coupled)::value>(
          grads_out, data_or_null(dy), state, x.data(), weights, data_or_null(lengths), Dims{s.T, s.N, s.I, s.H},
          masks.masks());
    });
  }
  py::dict grads;
  grads["x"] = dx;
  grads["h0"] = dh0;
  grads["c0"] = dc0;
  grads["kernel"] = dkernel;
  grads["recurrent_kernel"] = drecurrent;
  grads["bias"] = dbias;
  grads["peephole"] = dpeephole ? py::object(*dpeephole) : py::object(py::none());
  return grads;
}

}  // namespace

void bind_lstm(py::module_& m) {
  m.def(
      "lstm_forward",
      [](py::handle x, py::handle h0, py::handle c0, py::handle kernel, py::handle recurrent_kernel, py::handle bias,
         py::handle peephole, py::handle lengths, bool coupled, bool keep_cache, py::handle masks) {
        const Args args("lstm_forward");
        return with_dtype(args, x, [&](auto scalar) {
          return lstm_forward_impl<decltype(scalar)>(args, x, h0, c0, kernel, recurrent_kernel, bias, peephole,
                                                     lengths, coupled, keep_cache, masks);
        });
      },
      py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("peephole") = py::none(), py::arg("lengths") = py::none(), py::arg("coupled") = false,
      py::arg("keep_cache") = true, py::arg("masks") = py::none(),
      "LSTM forward over x [T, N, I] from (h0, c0) [N, H]; gate order i,f,g,o (coupled: f,g,o).\n"
      "Returns (y [T, N, H], h_n [N, H], c_n [N, H], cache); with keep_cache=False the cache is None (an\n"
      "inference pass: the same outputs, bit for bit, without the memory a backward pass needs).\n"
      "masks: None or a dict of input [N, I], state [N, H], weight [H, G*H] dropout masks and zoneout_h,\n"
      "zoneout_c (a rate, or keep masks [T, N, H]); pass the same to lstm_backward. See docs/conventions.md.");
  m.def(
      "lstm_stepper",
      [](py::handle layers, py::ssize_t batch_size, bool coupled) {
        const Args args("lstm_stepper");
        const auto entries = stepper_layers(args, layers, 4, "(kernel, recurrent_kernel, bias, peephole or None)");
        const py::ssize_t N = stepper_batch_size(args, batch_size);
        const bool peephole = !entries[0][3].is_none();
        return with_dtype(args, "layers[0].kernel", entries[0][0], [&](auto scalar) {
          return lstm_stepper_impl<decltype(scalar)>(args, entries, N, coupled, peephole);
        });
      },
      py::arg("layers"), py::arg("batch_size"), py::arg("coupled") = false,
      "A stepper for a stack of single-direction LSTM layers, one (kernel, recurrent_kernel, bias, peephole or\n"
      "None) per layer, with its own copies of the weights packed once: .step(x [N, I], states) with states one\n"
      "(h, c) per layer returns (y [N, H], new states), what lstm_forward gives for T = 1.");
  m.def(
      "lstm_backward",
      [](py::handle dy, py::handle dh_n, py::handle dc_n, py::handle cache, py::handle x, py::handle kernel,
         py::handle recurrent_kernel, py::handle bias, py::handle peephole, py::handle lengths, bool coupled,
         py::handle masks) {
        const Args args("lstm_backward");
        return with_dtype(args, x, [&](auto scalar) {
          return lstm_backward_impl<decltype(scalar)>(args, dy, dh_n, dc_n, forward_cache(args, cache), x, kernel, recurrent_kernel, bias,
                                                      peephole, lengths, coupled, masks);
        });
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"), py::arg("cache"), py::arg("x"), py::arg("kernel"),
      py::arg("recurrent_kernel"), py::arg("bias"), py::arg("peephole") = py::none(), py::arg("lengths") = py::none(),
      py::arg("coupled") = false, py::arg("masks") = py::none(),
      "LSTM backpropagation through time. dy, dh_n, dc_n may be None (zero).\n"
      "Returns a dict of gradients keyed x, h0, c0, kernel, recurrent_kernel, bias, peephole.");
}

}  // namespace rnnext::bindings
