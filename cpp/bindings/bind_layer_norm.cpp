// Bindings for the layer-normalised cells: check and convert arguments, release the GIL, call
// rnnext::layer_norm_lstm_* and layer_norm_gru_*; their steppers (bindings/stepper.h).
#include "bindings/checks.h"
#include "bindings/mask_checks.h"
#include "bindings/stepper.h"
#include "rnnext/layer_norm_gru.h"
#include "rnnext/layer_norm_lstm.h"

namespace rnnext::bindings {
namespace {

// The weights of one layer-normalised LSTM call, checked against x and recurrent_kernel [H, 4H].
template <typename Scalar>
struct LayerNormLstmArgs {
  py::ssize_t T, N, I, H;
  CArray<Scalar> kernel, recurrent, bias, input_gamma, recurrent_gamma, cell_gamma, cell_beta;

  LayerNormLstmWeights<Scalar> weights() const {
    return {kernel.data(), recurrent.data(), bias.data(), input_gamma.data(), recurrent_gamma.data(),
            cell_gamma.data(), cell_beta.data()};
  }
  Dims dims() const { return {T, N, I, H}; }
};

template <typename Scalar>
LayerNormLstmArgs<Scalar> layer_norm_lstm_args(const Args& args, const CArray<Scalar>& x, py::handle kernel,
                                               py::handle recurrent, py::handle bias, py::handle input_gamma,
                                               py::handle recurrent_gamma, py::handle cell_gamma, py::handle cell_beta) {
  const py::ssize_t T = x.shape(0), N = x.shape(1), I = x.shape(2), H = args.hidden_size(recurrent, 4, "4*H");
  const Dim gates{"4*H", 4 * H}, units{"H", H};
  return {T,
          N,
          I,
          H,
          args.array<Scalar>("kernel", kernel, {{"I", I}, gates}),
          args.array<Scalar>("recurrent_kernel", recurrent, {units, gates}),
          args.array<Scalar>("bias", bias, {gates}),
          args.array<Scalar>("ln_input_gamma", input_gamma, {gates}),
          args.array<Scalar>("ln_recurrent_gamma", recurrent_gamma, {gates}),
          args.array<Scalar>("ln_cell_gamma", cell_gamma, {units}),
          args.array<Scalar>("ln_cell_beta", cell_beta, {units})};
}

// The call's masks, as lstm_forward's (input [N, I], state [N, H], weight [H, 4H], zoneout_h, zoneout_c).
template <typename Scalar>
MaskArgs<Scalar> layer_norm_lstm_masks(const Args& args, py::handle masks_obj, const LayerNormLstmArgs<Scalar>& w) {
  return MaskArgs<Scalar>(args, masks_obj, {w.T, w.N, w.I, w.H, 4 * w.H, "4*H"}, {"zoneout_h", "zoneout_c"});
}

template <typename Scalar>
py::tuple layer_norm_lstm_forward_impl(const Args& args, py::handle x_obj, py::handle h0_obj, py::handle c0_obj,
                                       py::handle kernel, py::handle recurrent, py::handle bias, py::handle input_gamma,
                                       py::handle recurrent_gamma, py::handle cell_gamma, py::handle cell_beta,
                                       py::handle lengths_obj, bool keep_cache, py::handle masks_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const auto w = layer_norm_lstm_args<Scalar>(args, x, kernel, recurrent, bias, input_gamma, recurrent_gamma,
                                              cell_gamma, cell_beta);
  const py::ssize_t T = w.T, N = w.N, H = w.H;
  auto h0 = args.array<Scalar>("h0", h0_obj, {{"N", N}, {"H", H}});
  auto c0 = args.array<Scalar>("c0", c0_obj, {{"N", N}, {"H", H}});
  auto lengths = args.lengths(lengths_obj, T, N);
  const auto masks = layer_norm_lstm_masks<Scalar>(args, masks_obj, w);
  auto y = new_array<Scalar>({T, N, H}), h_n = new_array<Scalar>({N, H}), c_n = new_array<Scalar>({N, H});
  if (!keep_cache) {
    const Scalar* states0[] = {h0.data(), c0.data()};
    Scalar* states_n[] = {h_n.mutable_data(), c_n.mutable_data()};
    {
      py::gil_scoped_release release;
      LayerNormLstmForward<Scalar>(w.weights(), w.dims(), data_or_null(lengths), false, masks.masks())
          .run(y.mutable_data(), states0, states_n, x.data());
    }
    return py::make_tuple(y, h_n, c_n, py::none());
  }

  auto h = new_array<Scalar>({T + 1, N, H}), c = new_array<Scalar>({T + 1, N, H});
  auto gates = new_array<Scalar>({T, N, 4 * H}), input_norm = new_array<Scalar>({T, N, 4 * H});
  auto input_rstd = new_array<Scalar>({T, N}), recurrent_norm = new_array<Scalar>({T, N, 4 * H});
  auto recurrent_rstd = new_array<Scalar>({T, N}), cell_norm = new_array<Scalar>({T, N, H});
  auto cell_rstd = new_array<Scalar>({T, N});
  std::copy_n(h0.data(), N * H, h.mutable_data());
  std::copy_n(c0.data(), N * H, c.mutable_data());
  const LayerNormLstmCache<Scalar> cache{h.mutable_data(),          c.mutable_data(),           gates.mutable_data(),
                                         input_norm.mutable_data(), input_rstd.mutable_data(), recurrent_norm.mutable_data(),
                                         recurrent_rstd.mutable_data(), cell_norm.mutable_data(), cell_rstd.mutable_data()};
  {
    py::gil_scoped_release release;
    layer_norm_lstm_forward(y.mutable_data(), cache, x.data(), w.weights(), data_or_null(lengths), w.dims(),
                            masks.masks());
  }
  std::copy_n(h.data() + T * N * H, N * H, h_n.mutable_data());
  std::copy_n(c.data() + T * N * H, N * H, c_n.mutable_data());
  py::dict out;
  out["h"] = h;
  out["c"] = c;
  out["gates"] = gates;
  out["input_norm"] = input_norm;
  out["input_rstd"] = input_rstd;
  out["recurrent_norm"] = recurrent_norm;
  out["recurrent_rstd"] = recurrent_rstd;
  out["cell_norm"] = cell_norm;
  out["cell_rstd"] = cell_rstd;
  return py::make_tuple(y, h_n, c_n, out);
}

template <typename Scalar>
py::dict layer_norm_lstm_backward_impl(const Args& args, py::handle dy_obj, py::handle dh_obj, py::handle dc_obj,
                                       const py::dict& cache, py::handle x_obj, py::handle kernel, py::handle recurrent,
                                       py::handle bias, py::handle input_gamma, py::handle recurrent_gamma,
                                       py::handle cell_gamma, py::handle cell_beta, py::handle lengths_obj,
                                       py::handle masks_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const auto w = layer_norm_lstm_args<Scalar>(args, x, kernel, recurrent, bias, input_gamma, recurrent_gamma,
                                              cell_gamma, cell_beta);
  const py::ssize_t T = w.T, N = w.N, I = w.I, H = w.H;
  const Dim steps{"T", T}, rows{"N", N}, units{"H", H}, gates{"4*H", 4 * H};
  auto dy = args.optional_array<Scalar>("dy", dy_obj, {steps, rows, units});
  auto dh_n = args.optional_array<Scalar>("dh_n", dh_obj, {rows, units});
  auto dc_n = args.optional_array<Scalar>("dc_n", dc_obj, {rows, units});
  auto h = cache_entry<Scalar>(args, cache, "h", {{"T+1", T + 1}, rows, units});
  auto c = cache_entry<Scalar>(args, cache, "c", {{"T+1", T + 1}, rows, units});
  auto gate_values = cache_entry<Scalar>(args, cache, "gates", {steps, rows, gates});
  auto input_norm = cache_entry<Scalar>(args, cache, "input_norm", {steps, rows, gates});
  auto input_rstd = cache_entry<Scalar>(args, cache, "input_rstd", {steps, rows});
  auto recurrent_norm = cache_entry<Scalar>(args, cache, "recurrent_norm", {steps, rows, gates});
  auto recurrent_rstd = cache_entry<Scalar>(args, cache, "recurrent_rstd", {steps, rows});
  auto cell_norm = cache_entry<Scalar>(args, cache, "cell_norm", {steps, rows, units});
  auto cell_rstd = cache_entry<Scalar>(args, cache, "cell_rstd", {steps, rows});
  auto lengths = args.lengths(lengths_obj, T, N);
  const auto masks = layer_norm_lstm_masks<Scalar>(args, masks_obj, w);

  auto dx = new_array<Scalar>({T, N, I}), dkernel = new_array<Scalar>({I, 4 * H});
  auto drecurrent = new_array<Scalar>({H, 4 * H}), dbias = new_array<Scalar>({4 * H});
  auto dinput_gamma = new_array<Scalar>({4 * H}), drecurrent_gamma = new_array<Scalar>({4 * H});
  auto dcell_gamma = new_array<Scalar>({H}), dcell_beta = new_array<Scalar>({H});
  CArray<Scalar> dh0 = copy_or_zeros(dh_n, N, H), dc0 = copy_or_zeros(dc_n, N, H);
  const LayerNormLstmCache<const Scalar> state{h.data(),          c.data(),           gate_values.data(),
                                               input_norm.data(), input_rstd.data(), recurrent_norm.data(),
                                               recurrent_rstd.data(), cell_norm.data(), cell_rstd.data()};
  const LayerNormLstmGrads<Scalar> grads_out{dx.mutable_data(),         dh0.mutable_data(),          dc0.mutable_data(),
                                             dkernel.mutable_data(),    drecurrent.mutable_data(),   dbias.mutable_data(),
                                             dinput_gamma.mutable_data(), drecurrent_gamma.mutable_data(),
                                             dcell_gamma.mutable_data(), dcell_beta.mutable_data()};
  {
    py::gil_scoped_release release;
    layer_norm_lstm_backward(grads_out, data_or_null(dy), state, x.data(), w.weights(), data_or_null(lengths), w.dims(),
                             masks.masks());
  }
  py::dict grads;
  grads["x"] = dx;
  grads["h0"] = dh0;
  grads["c0"] = dc0;
  grads["kernel"] = dkernel;
  grads["recurrent_kernel"] = drecurrent;
  grads["bias"] = dbias;
  grads["ln_input_gamma"] = dinput_gamma;
  grads["ln_recurrent_gamma"] = drecurrent_gamma;
  grads["ln_cell_gamma"] = dcell_gamma;
  grads["ln_cell_beta"] = dcell_beta;
  return grads;
}

// The weights of one layer-normalised GRU call, checked against x and recurrent_kernel [H, 3H].
template <typename Scalar>
struct LayerNormGruArgs {
  py::ssize_t T, N, I, H;
  CArray<Scalar> kernel, recurrent, bias, input_gamma, recurrent_gamma;

  LayerNormGruWeights<Scalar> weights() const {
    return {kernel.data(), recurrent.data(), bias.data(), input_gamma.data(), recurrent_gamma.data()};
  }
  Dims dims() const { return {T, N, I, H}; }
};

template <typename Scalar>
LayerNormGruArgs<Scalar> layer_norm_gru_args(const Args& args, const CArray<Scalar>& x, py::handle kernel,
                                             py::handle recurrent, py::handle bias, py::handle input_gamma,
                                             py::handle recurrent_gamma) {
  const py::ssize_t H = args.hidden_size(recurrent, 3, "3*H");
  const Dim gates{"3*H", 3 * H};
  return {x.shape(0),
          x.shape(1),
          x.shape(2),
          H,
          args.array<Scalar>("kernel", kernel, {{"I", x.shape(2)}, gates}),
          args.array<Scalar>("recurrent_kernel", recurrent, {{"H", H}, gates}),
          args.array<Scalar>("bias", bias, {{"", 2}, gates}),
          args.array<Scalar>("ln_input_gamma", input_gamma, {gates}),
          args.array<Scalar>("ln_recurrent_gamma", recurrent_gamma, {gates})};
}

template <typename Scalar>
py::tuple layer_norm_gru_forward_impl(const Args& args, py::handle x_obj, py::handle h0_obj, py::handle kernel,
                                      py::handle recurrent, py::handle bias, py::handle input_gamma,
                                      py::handle recurrent_gamma, py::handle lengths_obj, bool keep_cache,
                                      py::handle masks_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const auto w = layer_norm_gru_args<Scalar>(args, x, kernel, recurrent, bias, input_gamma, recurrent_gamma);
  const py::ssize_t T = w.T, N = w.N, H = w.H;
  auto h0 = args.array<Scalar>("h0", h0_obj, {{"N", N}, {"H", H}});
  auto lengths = args.lengths(lengths_obj, T, N);
  const MaskArgs<Scalar> masks(args, masks_obj, {T, N, w.I, H, 3 * H, "3*H"}, {"zoneout_h"});
  auto y = new_array<Scalar>({T, N, H}), h_n = new_array<Scalar>({N, H});
  if (!keep_cache) {
    const Scalar* states0[] = {h0.data()};
    Scalar* states_n[] = {h_n.mutable_data()};
    {
      py::gil_scoped_release release;
      LayerNormGruForward<Scalar>(w.weights(), w.dims(), data_or_null(lengths), false, masks.masks())
          .run(y.mutable_data(), states0, states_n, x.data());
    }
    return py::make_tuple(y, h_n, py::none());
  }
  auto h = new_array<Scalar>({T + 1, N, H}), gates = new_array<Scalar>({T, N, 3 * H});
  auto input_norm = new_array<Scalar>({T, N, 3 * H}), input_rstd = new_array<Scalar>({T, N});
  auto recurrent_norm = new_array<Scalar>({T, N, 3 * H}), recurrent_rstd = new_array<Scalar>({T, N});
  std::copy_n(h0.data(), N * H, h.mutable_data());
  const LayerNormGruCache<Scalar> cache{h.mutable_data(),          gates.mutable_data(),
                                        input_norm.mutable_data(), input_rstd.mutable_data(),
                                        recurrent_norm.mutable_data(), recurrent_rstd.mutable_data()};
  {
    py::gil_scoped_release release;
    LayerNormGruForward<Scalar>(w.weights(), w.dims(), data_or_null(lengths), false, masks.masks())
        .run_cached(y.mutable_data(), cache, x.data());
  }
  std::copy_n(h.data() + T * N * H, N * H, h_n.mutable_data());
  py::dict out;
  out["h"] = h;
  out["gates"] = gates;
  out["input_norm"] = input_norm;
  out["input_rstd"] = input_rstd;
  out["recurrent_norm"] = recurrent_norm;
  out["recurrent_rstd"] = recurrent_rstd;
  return py::make_tuple(y, h_n, out);
}

template <typename Scalar>
py::dict layer_norm_gru_backward_impl(const Args& args, py::handle dy_obj, py::handle dh_obj, const py::dict& cache,
                                      py::handle x_obj, py::handle kernel, py::handle recurrent, py::handle bias,
                                      py::handle input_gamma, py::handle recurrent_gamma, py::handle lengths_obj,
                                      py::handle masks_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const auto w = layer_norm_gru_args<Scalar>(args, x, kernel, recurrent, bias, input_gamma, recurrent_gamma);
  const py::ssize_t T = w.T, N = w.N, I = w.I, H = w.H;
  const Dim steps{"T", T}, rows{"N", N}, units{"H", H}, gates{"3*H", 3 * H};
  auto dy = args.optional_array<Scalar>("dy", dy_obj, {steps, rows, units});
  auto dh_n = args.optional_array<Scalar>("dh_n", dh_obj, {rows, units});
  auto h = cache_entry<Scalar>(args, cache, "h", {{"T+1", T + 1}, rows, units});
  auto gate_values = cache_entry<Scalar>(args, cache, "gates", {steps, rows, gates});
  auto input_norm = cache_entry<Scalar>(args, cache, "input_norm", {steps, rows, gates});
  auto input_rstd = cache_entry<Scalar>(args, cache, "input_rstd", {steps, rows});
  auto recurrent_norm = cache_entry<Scalar>(args, cache, "recurrent_norm", {steps, rows, gates});
  auto recurrent_rstd = cache_entry<Scalar>(args, cache, "recurrent_rstd", {steps, rows});
  auto lengths = args.lengths(lengths_obj, T, N);
  const MaskArgs<Scalar> masks(args, masks_obj, {T, N, I, H, 3 * H, "3*H"}, {"zoneout_h"});

  auto dx = new_array<Scalar>({T, N, I}), dkernel = new_array<Scalar>({I, 3 * H});
  auto drecurrent = new_array<Scalar>({H, 3 * H}), dbias = new_array<Scalar>({py::ssize_t(2), 3 * H});
  auto dinput_gamma = new_array<Scalar>({3 * H}), drecurrent_gamma = new_array<Scalar>({3 * H});
  CArray<Scalar> dh0 = copy_or_zeros(dh_n, N, H);
  const LayerNormGruCache<const Scalar> state{h.data(),          gate_values.data(),    input_norm.data(),
                                              input_rstd.data(), recurrent_norm.data(), recurrent_rstd.data()};
  const LayerNormGruGrads<Scalar> grads_out{dx.mutable_data(),         dh0.mutable_data(),
                                            dkernel.mutable_data(),    drecurrent.mutable_data(),
                                            dbias.mutable_data(),      dinput_gamma.mutable_data(),
                                            drecurrent_gamma.mutable_data()};
  {
    py::gil_scoped_release release;
    layer_norm_gru_backward(grads_out, data_or_null(dy), state, x.data(), w.weights(), data_or_null(lengths), w.dims(),
                            masks.masks());
  }
  py::dict grads;
  grads["x"] = dx;
  grads["h0"] = dh0;
  grads["kernel"] = dkernel;
  grads["recurrent_kernel"] = drecurrent;
  grads["bias"] = dbias;
  grads["ln_input_gamma"] = dinput_gamma;
  grads["ln_recurrent_gamma"] = drecurrent_gamma;
  return grads;
}

// The checked copies of a stepper's weights, which it owns: entry `entry` of layer `layer`'s tuple.
template <typename Scalar>
class StepperWeights {
 public:
  StepperWeights(const Args& args, const std::vector<py::tuple>& layers) : args_(args), layers_(layers) {}
  const Scalar* operator()(size_t layer, size_t entry, const char* name, const std::vector<Dim>& dims) {
    CArray<Scalar> copy = stepper_weight<Scalar>(args_, layer, name, layers_[layer][entry], dims);
    owned_.push_back(copy);
    return copy.data();
  }
  std::vector<py::array> release() { return std::move(owned_); }

 private:
  const Args& args_;
  const std::vector<py::tuple>& layers_;
  std::vector<py::array> owned_;
};

// A stepper of G gate blocks from `layers`, one tuple per layer in the forward's weight order (layer k > 0 reading
// the H outputs below); layer_weights(copy, k, inputs, gates, units) checks and copies layer k's tuple.
template <typename Scalar, typename Forward, typename LayerWeights>
StepperHandle layer_norm_stepper(const char* function, const Args& args, const std::vector<py::tuple>& layers,
                                 py::ssize_t N, py::ssize_t G, const char* gates_label, LayerWeights layer_weights) {
  const py::ssize_t H = args.hidden_size(layers[0][1], G, gates_label);
  const py::ssize_t I = stepper_input_size(args, layers[0][0], G * H, gates_label);
  const Dim gates{gates_label, G * H}, units{"H", H};
  StepperWeights<Scalar> copy(args, layers);
  std::vector<typename Forward::Weights> weights;
  for (size_t k = 0; k < layers.size(); ++k)
    weights.push_back(layer_weights(copy, k, k == 0 ? Dim{"I", I} : units, gates, units));
  return make_stepper_handle<Scalar, Forward>(function, weights, copy.release(), N, I, H);
}

template <typename Scalar>
StepperHandle layer_norm_lstm_stepper_impl(const Args& args, const std::vector<py::tuple>& layers, py::ssize_t N) {
  return layer_norm_stepper<Scalar, LayerNormLstmForward<Scalar>>(
      "layer_norm_lstm_stepper", args, layers, N, 4, "4*H",
      [](StepperWeights<Scalar>& copy, size_t k, const Dim& inputs, const Dim& gates, const Dim& units) {
        return LayerNormLstmWeights<Scalar>{
            copy(k, 0, "kernel", {inputs, gates}),           copy(k, 1, "recurrent_kernel", {units, gates}),
            copy(k, 2, "bias", {gates}),                     copy(k, 3, "ln_input_gamma", {gates}),
            copy(k, 4, "ln_recurrent_gamma", {gates}),       copy(k, 5, "ln_cell_gamma", {units}),
            copy(k, 6, "ln_cell_beta", {units})};
      });
}

template <typename Scalar>
StepperHandle layer_norm_gru_stepper_impl(const Args& args, const std::vector<py::tuple>& layers, py::ssize_t N) {
  return layer_norm_stepper<Scalar, LayerNormGruForward<Scalar>>(
      "layer_norm_gru_stepper", args, layers, N, 3, "3*H",
      [](StepperWeights<Scalar>& copy, size_t k, const Dim& inputs, const Dim& gates, const Dim& units) {
        return LayerNormGruWeights<Scalar>{copy(k, 0, "kernel", {inputs, gates}),
                                           copy(k, 1, "recurrent_kernel", {units, gates}),
                                           copy(k, 2, "bias", {{"", 2}, gates}), copy(k, 3, "ln_input_gamma", {gates}),
                                           copy(k, 4, "ln_recurrent_gamma", {gates})};
      });
}

}  // namespace

void bind_layer_norm(py::module_& m) {
  m.def(
      "layer_norm_lstm_stepper",
      [](py::handle layers, py::ssize_t batch_size) {
        const Args args("layer_norm_lstm_stepper");
        const auto entries = stepper_layers(args, layers, 7,
                                            "(kernel, recurrent_kernel, bias, ln_input_gamma, ln_recurrent_gamma, "
                                            "ln_cell_gamma, ln_cell_beta)");
        const py::ssize_t N = stepper_batch_size(args, batch_size);
        return with_dtype(args, "layers[0].kernel", entries[0][0], [&](auto scalar) {
          return layer_norm_lstm_stepper_impl<decltype(scalar)>(args, entries, N);
        });
      },
      py::arg("layers"), py::arg("batch_size"),
      "A stepper for a stack of single-direction layer-normalised LSTM layers, one tuple of layer_norm_lstm_forward's\n"
      "weights per layer, with its own copies packed once: .step(x [N, I], states) with states one (h, c) per layer\n"
      "returns (y [N, H], new states), what layer_norm_lstm_forward gives for T = 1.");
  m.def(
      "layer_norm_gru_stepper",
      [](py::handle layers, py::ssize_t batch_size) {
        const Args args("layer_norm_gru_stepper");
        const auto entries =
            stepper_layers(args, layers, 5, "(kernel, recurrent_kernel, bias, ln_input_gamma, ln_recurrent_gamma)");
        const py::ssize_t N = stepper_batch_size(args, batch_size);
        return with_dtype(args, "layers[0].kernel", entries[0][0], [&](auto scalar) {
          return layer_norm_gru_stepper_impl<decltype(scalar)>(args, entries, N);
        });
      },
      py::arg("layers"), py::arg("batch_size"),
      "A stepper for a stack of single-direction layer-normalised GRU layers, one tuple of layer_norm_gru_forward's\n"
      "weights per layer, with its own copies packed once: .step(x [N, I], states) with states one (h,) per layer\n"
      "returns (y [N, H], new states), what layer_norm_gru_forward gives for T = 1.");
  m.def(
      "layer_norm_lstm_forward",
      [](py::handle x, py::handle h0, py::handle c0, py::handle kernel, py::handle recurrent_kernel, py::handle bias,
         py::handle ln_input_gamma, py::handle ln_recurrent_gamma, py::handle ln_cell_gamma, py::handle ln_cell_beta,
         py::handle lengths, bool keep_cache, py::handle masks) {
        const Args args("layer_norm_lstm_forward");
        return with_dtype(args, x, [&](auto scalar) {
          return layer_norm_lstm_forward_impl<decltype(scalar)>(args, x, h0, c0, kernel, recurrent_kernel, bias,
                                                                ln_input_gamma, ln_recurrent_gamma, ln_cell_gamma,
                                                                ln_cell_beta, lengths, keep_cache, masks);
        });
      },
      py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("ln_input_gamma"), py::arg("ln_recurrent_gamma"), py::arg("ln_cell_gamma"), py::arg("ln_cell_beta"),
      py::arg("lengths") = py::none(), py::arg("keep_cache") = true, py::arg("masks") = py::none(),
      "Layer-normalised LSTM forward over x [T, N, I] from (h0, c0) [N, H]; gate order i,f,g,o. The input and\n"
      "recurrent pre-activations are normalised over their 4H values with gains ln_input_gamma, ln_recurrent_gamma\n"
      "[4H], c[t+1] over its H values with ln_cell_gamma, ln_cell_beta [H] before its tanh.\n"
      "Returns (y [T, N, H], h_n [N, H], c_n [N, H], cache); keep_cache=False gives None for the cache.\n"
      "masks: as lstm_forward's (input, state, weight, zoneout_h, zoneout_c); pass the same to\n"
      "layer_norm_lstm_backward.");
  m.def(
      "layer_norm_lstm_backward",
      [](py::handle dy, py::handle dh_n, py::handle dc_n, py::handle cache, py::handle x, py::handle kernel,
         py::handle recurrent_kernel, py::handle bias, py::handle ln_input_gamma, py::handle ln_recurrent_gamma,
         py::handle ln_cell_gamma, py::handle ln_cell_beta, py::handle lengths, py::handle masks) {
        const Args args("layer_norm_lstm_backward");
        return with_dtype(args, x, [&](auto scalar) {
          return layer_norm_lstm_backward_impl<decltype(scalar)>(args, dy, dh_n, dc_n, forward_cache(args, cache), x,
                                                                 kernel, recurrent_kernel, bias, ln_input_gamma,
                                                                 ln_recurrent_gamma, ln_cell_gamma, ln_cell_beta, lengths,
                                                                 masks);
        });
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"), py::arg("cache"), py::arg("x"), py::arg("kernel"),
      py::arg("recurrent_kernel"), py::arg("bias"), py::arg("ln_input_gamma"), py::arg("ln_recurrent_gamma"),
      py::arg("ln_cell_gamma"), py::arg("ln_cell_beta"), py::arg("lengths") = py::none(), py::arg("masks") = py::none(),
      "Layer-normalised LSTM backpropagation through time. dy, dh_n, dc_n may be None (zero).\n"
      "Returns a dict of gradients keyed x, h0, c0, kernel, recurrent_kernel, bias, ln_input_gamma,\n"
      "ln_recurrent_gamma, ln_cell_gamma, ln_cell_beta.");
  m.def(
      "layer_norm_gru_forward",
      [](py::handle x, py::handle h0, py::handle kernel, py::handle recurrent_kernel, py::handle bias,
         py::handle ln_input_gamma, py::handle ln_recurrent_gamma, py::handle lengths, bool keep_cache,
         py::handle masks) {
        const Args args("layer_norm_gru_forward");
        return with_dtype(args, x, [&](auto scalar) {
          return layer_norm_gru_forward_impl<decltype(scalar)>(args, x, h0, kernel, recurrent_kernel, bias,
                                                               ln_input_gamma, ln_recurrent_gamma, lengths, keep_cache,
                                                               masks);
        });
      },
      py::arg("x"), py::arg("h0"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("ln_input_gamma"), py::arg("ln_recurrent_gamma"), py::arg("lengths") = py::none(),
      py::arg("keep_cache") = true, py::arg("masks") = py::none(),
      "Layer-normalised GRU (reset_after) forward over x [T, N, I] from h0 [N, H]; gate order r,z,n, bias [2, 3H].\n"
      "The input and recurrent pre-activations are normalised over their 3H values with gains ln_input_gamma,\n"
      "ln_recurrent_gamma [3H]. Returns (y [T, N, H], h_n [N, H], cache); keep_cache=False gives None for the cache.\n"
      "masks: as gru_forward's (input, state, weight, zoneout_h); pass the same to layer_norm_gru_backward.");
  m.def(
      "layer_norm_gru_backward",
      [](py::handle dy, py::handle dh_n, py::handle cache, py::handle x, py::handle kernel, py::handle recurrent_kernel,
         py::handle bias, py::handle ln_input_gamma, py::handle ln_recurrent_gamma, py::handle lengths,
         py::handle masks) {
        const Args args("layer_norm_gru_backward");
        return with_dtype(args, x, [&](auto scalar) {
          return layer_norm_gru_backward_impl<decltype(scalar)>(args, dy, dh_n, forward_cache(args, cache), x, kernel,
                                                                recurrent_kernel, bias, ln_input_gamma,
                                                                ln_recurrent_gamma, lengths, masks);
        });
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("cache"), py::arg("x"), py::arg("kernel"), py::arg("recurrent_kernel"),
      py::arg("bias"), py::arg("ln_input_gamma"), py::arg("ln_recurrent_gamma"), py::arg("lengths") = py::none(),
      py::arg("masks") = py::none(),
      "Layer-normalised GRU backpropagation through time. dy, dh_n may be None (zero).\n"
      "Returns a dict of gradients keyed x, h0, kernel, recurrent_kernel, bias, ln_input_gamma, ln_recurrent_gamma.");
}

}  // namespace rnnext::bindings
