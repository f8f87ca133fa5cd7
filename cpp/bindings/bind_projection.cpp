// Bindings for the LSTM with projection: check and convert arguments, release the GIL, call
// rnnext::ProjectedLstmForward / projected_lstm_backward; its stepper (bindings/stepper.h).
#include "bindings/checks.h"
#include "bindings/mask_checks.h"
#include "bindings/stepper.h"
#include "rnnext/lstm_projection.h"

namespace rnnext::bindings {
namespace {

// The weights of one call; H and P are read from projection [H, P] (projection_sizes).
template <typename Scalar>
struct ProjectedLstmArgs {
  py::ssize_t T, N, I, H, P;
  CArray<Scalar> kernel, recurrent, bias, projection;

  ProjectedLstmWeights<Scalar> weights() const { return {kernel.data(), recurrent.data(), bias.data(), projection.data(), P}; }
  Dims dims() const { return {T, N, I, H}; }
  // The masks argument: h's masks have P units (state [N, P], weight [P, 4H], zoneout_h [T, N, P]).
  MaskArgs<Scalar> masks(const Args& args, const py::handle& obj) const {
    return MaskArgs<Scalar>(args, obj, {T, N, I, H, 4 * H, "4*H", P}, {"zoneout_h", "zoneout_c"});
  }
};

// H and P from a projection [H, P], with 1 <= P < H as torch requires; `name` names it in the message.
std::pair<py::ssize_t, py::ssize_t> projection_sizes(const Args& args, const std::string& name, py::handle obj) {
  py::array projection = args.numpy(name.c_str(), obj);
  if (projection.ndim() != 2 || projection.shape(1) < 1 || projection.shape(1) >= projection.shape(0))
    args.fail_value(name + " has shape " + shape_string(projection) + ", expected (H, P) with 1 <= P < H");
  return {projection.shape(0), projection.shape(1)};
}

template <typename Scalar>
ProjectedLstmArgs<Scalar> projected_lstm_args(const Args& args, const CArray<Scalar>& x, py::handle kernel,
                                              py::handle recurrent, py::handle bias, py::handle projection_obj) {
  const auto [H, P] = projection_sizes(args, "projection", projection_obj);
  const Dim gates{"4*H", 4 * H};
  return {x.shape(0),
          x.shape(1),
          x.shape(2),
          H,
          P,
          args.array<Scalar>("kernel", kernel, {{"I", x.shape(2)}, gates}),
          args.array<Scalar>("recurrent_kernel", recurrent, {{"P", P}, gates}),
          args.array<Scalar>("bias", bias, {gates}),
          args.array<Scalar>("projection", projection_obj, {{"H", H}, {"P", P}})};
}

template <typename Scalar>
py::tuple projected_lstm_forward_impl(const Args& args, py::handle x_obj, py::handle h0_obj, py::handle c0_obj,
                                      py::handle kernel, py::handle recurrent, py::handle bias, py::handle projection,
                                      py::handle lengths_obj, bool keep_cache, py::handle masks_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const auto w = projected_lstm_args<Scalar>(args, x, kernel, recurrent, bias, projection);
  const py::ssize_t T = w.T, N = w.N, H = w.H, P = w.P;
  auto h0 = args.array<Scalar>("h0", h0_obj, {{"N", N}, {"P", P}});
  auto c0 = args.array<Scalar>("c0", c0_obj, {{"N", N}, {"H", H}});
  auto lengths = args.lengths(lengths_obj, T, N);
  const MaskArgs<Scalar> masks = w.masks(args, masks_obj);
  auto y = new_array<Scalar>({T, N, P}), h_n = new_array<Scalar>({N, P}), c_n = new_array<Scalar>({N, H});
  if (!keep_cache) {
    const Scalar* states0[] = {h0.data(), c0.data()};
    Scalar* states_n[] = {h_n.mutable_data(), c_n.mutable_data()};
    {
      py::gil_scoped_release release;
      ProjectedLstmForward<Scalar>(w.weights(), w.dims(), data_or_null(lengths), false, masks.masks())
          .run(y.mutable_data(), states0, states_n, x.data());
    }
    return py::make_tuple(y, h_n, c_n, py::none());
  }
  auto h = new_array<Scalar>({T + 1, N, P}), c = new_array<Scalar>({T + 1, N, H});
  auto gates = new_array<Scalar>({T, N, 4 * H}), m = new_array<Scalar>({T, N, H});
  std::copy_n(h0.data(), N * P, h.mutable_data());
  std::copy_n(c0.data(), N * H, c.mutable_data());
  const ProjectedLstmCache<Scalar> cache{h.mutable_data(), c.mutable_data(), gates.mutable_data(), m.mutable_data()};
  {
    py::gil_scoped_release release;
    ProjectedLstmForward<Scalar>(w.weights(), w.dims(), data_or_null(lengths), false, masks.masks())
        .run_cached(y.mutable_data(), cache, x.data());
  }
  std::copy_n(h.data() + T * N * P, N * P, h_n.mutable_data());
  std::copy_n(c.data() + T * N * H, N * H, c_n.mutable_data());
  py::dict out;
  out["h"] = h;
  out["c"] = c;
  out["gates"] = gates;
  out["m"] = m;
  return py::make_tuple(y, h_n, c_n, out);
}

template <typename Scalar>
py::dict projected_lstm_backward_impl(const Args& args, py::handle dy_obj, py::handle dh_obj, py::handle dc_obj,
                                      const py::dict& cache, py::handle x_obj, py::handle kernel, py::handle recurrent,
                                      py::handle bias, py::handle projection, py::handle lengths_obj,
                                      py::handle masks_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const auto w = projected_lstm_args<Scalar>(args, x, kernel, recurrent, bias, projection);
  const py::ssize_t T = w.T, N = w.N, I = w.I, H = w.H, P = w.P;
  const Dim steps{"T", T}, rows{"N", N}, units{"H", H}, projected{"P", P};
  auto dy = args.optional_array<Scalar>("dy", dy_obj, {steps, rows, projected});
  auto dh_n = args.optional_array<Scalar>("dh_n", dh_obj, {rows, projected});
  auto dc_n = args.optional_array<Scalar>("dc_n", dc_obj, {rows, units});
  auto h = cache_entry<Scalar>(args, cache, "h", {{"T+1", T + 1}, rows, projected});
  auto c = cache_entry<Scalar>(args, cache, "c", {{"T+1", T + 1}, rows, units});
  auto gates = cache_entry<Scalar>(args, cache, "gates", {steps, rows, {"4*H", 4 * H}});
  auto m = cache_entry<Scalar>(args, cache, "m", {steps, rows, units});
  auto lengths = args.lengths(lengths_obj, T, N);
  const MaskArgs<Scalar> masks = w.masks(args, masks_obj);

  auto dx = new_array<Scalar>({T, N, I}), dkernel = new_array<Scalar>({I, 4 * H});
  auto drecurrent = new_array<Scalar>({P, 4 * H}), dbias = new_array<Scalar>({4 * H});
  auto dprojection = new_array<Scalar>({H, P});
  CArray<Scalar> dh0 = copy_or_zeros(dh_n, N, P), dc0 = copy_or_zeros(dc_n, N, H);
  const ProjectedLstmCache<const Scalar> state{h.data(), c.data(), gates.data(), m.data()};
  const ProjectedLstmGrads<Scalar> grads_out{dx.mutable_data(),      dh0.mutable_data(),        dc0.mutable_data(),
                                             dkernel.mutable_data(), drecurrent.mutable_data(), dbias.mutable_data(),
                                             dprojection.mutable_data()};
  {
    py::gil_scoped_release release;
    projected_lstm_backward(grads_out, data_or_null(dy), state, x.data(), w.weights(), data_or_null(lengths), w.dims(),
                            masks.masks());
  }
  py::dict grads;
  grads["x"] = dx;
  grads["h0"] = dh0;
  grads["c0"] = dc0;
  grads["kernel"] = dkernel;
  grads["recurrent_kernel"] = drecurrent;
  grads["bias"] = dbias;
  grads["projection"] = dprojection;
  return grads;
}

// layers: one (kernel, recurrent_kernel, bias, projection) per layer, layer k > 0 reading the P outputs of the
// layer below; H and P from the first layer's projection [H, P].
template <typename Scalar>
StepperHandle projected_lstm_stepper_impl(const Args& args, const std::vector<py::tuple>& layers, py::ssize_t N) {
  const auto [H, P] = projection_sizes(args, "layers[0].projection", layers[0][3]);
  const py::ssize_t I = stepper_input_size(args, layers[0][0], 4 * H, "4*H");
  const Dim gates{"4*H", 4 * H}, units{"H", H}, projected{"P", P};
  std::vector<py::array> owned;
  std::vector<ProjectedLstmWeights<Scalar>> weights;
  for (size_t k = 0; k < layers.size(); ++k) {
    const py::tuple& layer = layers[k];
    auto kernel = stepper_weight<Scalar>(args, k, "kernel", layer[0], {k == 0 ? Dim{"I", I} : projected, gates});
    auto recurrent = stepper_weight<Scalar>(args, k, "recurrent_kernel", layer[1], {projected, gates});
    auto bias = stepper_weight<Scalar>(args, k, "bias", layer[2], {gates});
    auto projection = stepper_weight<Scalar>(args, k, "projection", layer[3], {units, projected});
    weights.push_back({kernel.data(), recurrent.data(), bias.data(), projection.data(), P});
    owned.insert(owned.end(), {kernel, recurrent, bias, projection});
  }
  return make_stepper_handle<Scalar, ProjectedLstmForward<Scalar>>("projected_lstm_stepper", weights,
                                                                   std::move(owned), N, I, H, projected,
                                                                   {projected, units});
}

}  // namespace

void bind_projection(py::module_& m) {
  m.def(
      "projected_lstm_forward",
      [](py::handle x, py::handle h0, py::handle c0, py::handle kernel, py::handle recurrent_kernel, py::handle bias,
         py::handle projection, py::handle lengths, bool keep_cache, py::handle masks) {
        const Args args("projected_lstm_forward");
        return with_dtype(args, x, [&](auto scalar) {
          return projected_lstm_forward_impl<decltype(scalar)>(args, x, h0, c0, kernel, recurrent_kernel, bias,
                                                               projection, lengths, keep_cache, masks);
        });
      },
      py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("projection"), py::arg("lengths") = py::none(), py::arg("keep_cache") = true,
      py::arg("masks") = py::none(),
      "LSTM with projection (torch.nn.LSTM's proj_size) over x [T, N, I] from h0 [N, P], c0 [N, H]; gate order\n"
      "i,f,g,o, recurrent_kernel [P, 4H], h[t+1] = (o * tanh(c[t+1])) . projection [H, P], 1 <= P < H.\n"
      "Returns (y [T, N, P], h_n [N, P], c_n [N, H], cache); keep_cache=False gives None for the cache.\n"
      "masks: as lstm_forward's with h's of P units (state [N, P], weight [P, 4H], zoneout_h [T, N, P],\n"
      "zoneout_c [T, N, H]); pass the same to projected_lstm_backward.");
  m.def(
      "projected_lstm_backward",
      [](py::handle dy, py::handle dh_n, py::handle dc_n, py::handle cache, py::handle x, py::handle kernel,
         py::handle recurrent_kernel, py::handle bias, py::handle projection, py::handle lengths, py::handle masks) {
        const Args args("projected_lstm_backward");
        return with_dtype(args, x, [&](auto scalar) {
          return projected_lstm_backward_impl<decltype(scalar)>(args, dy, dh_n, dc_n, forward_cache(args, cache), x,
                                                                kernel, recurrent_kernel, bias, projection, lengths,
                                                                masks);
        });
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"), py::arg("cache"), py::arg("x"), py::arg("kernel"),
      py::arg("recurrent_kernel"), py::arg("bias"), py::arg("projection"), py::arg("lengths") = py::none(),
      py::arg("masks") = py::none(),
      "Backpropagation through time of projected_lstm_forward. dy [T, N, P], dh_n [N, P], dc_n [N, H] may be None.\n"
      "Returns a dict of gradients keyed x, h0, c0, kernel, recurrent_kernel, bias, projection.");
  m.def(
      "projected_lstm_stepper",
      [](py::handle layers, py::ssize_t batch_size) {
        const Args args("projected_lstm_stepper");
        const auto entries = stepper_layers(args, layers, 4, "(kernel, recurrent_kernel, bias, projection)");
        const py::ssize_t N = stepper_batch_size(args, batch_size);
        return with_dtype(args, "layers[0].kernel", entries[0][0], [&](auto scalar) {
          return projected_lstm_stepper_impl<decltype(scalar)>(args, entries, N);
        });
      },
      py::arg("layers"), py::arg("batch_size"),
      "A stepper for a stack of single-direction LSTM layers with projection, one (kernel, recurrent_kernel, bias,\n"
      "projection) per layer, with its own copies of the weights packed once: .step(x [N, I], states) with states\n"
      "one (h [N, P], c [N, H]) per layer returns (y [N, P], new states), what projected_lstm_forward gives for T = 1.");
}

}  // namespace rnnext::bindings
