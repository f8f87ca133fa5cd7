// Bindings for the SRU cell: check and convert arguments, release the GIL, call rnnext::sru_*.
#include "bindings/scan_checks.h"
#include "rnnext/sru.h"

namespace rnnext::bindings {
namespace {

// H from recurrent_weight [2, H] (rows v_f, v_r).
py::ssize_t sru_hidden_size(const Args& args, const py::handle& recurrent_weight) {
  py::array v = args.numpy("recurrent_weight", recurrent_weight);
  if (v.ndim() != 2 || v.shape(0) != 2 || v.shape(1) < 1)
    args.fail_value("recurrent_weight has shape " + shape_string(v) + ", expected (2, H) with H >= 1 (rows v_f, v_r)");
  return v.shape(1);
}

// The gate blocks G the kernel holds: 4 (projected highway), or 3 (highway x itself, only when I = H).
py::ssize_t sru_gates(const Args& args, const py::handle& kernel, py::ssize_t I, py::ssize_t H) {
  py::array k = args.numpy("kernel", kernel);
  if (k.ndim() == 2 && k.shape(0) == I && k.shape(1) == 4 * H) return 4;
  if (k.ndim() == 2 && k.shape(0) == I && k.shape(1) == 3 * H && I == H) return 3;
  args.fail_value("kernel has shape " + shape_string(k) + ", expected (I=" + std::to_string(I) +
                  ", 4*H=" + std::to_string(4 * H) + "), or (I, 3*H=" + std::to_string(3 * H) +
                  ") when I = H (the highway then adds x itself)");
}

template <typename Scalar>
py::tuple sru_forward_impl(const Args& args, py::handle x_obj, py::handle h0_obj, py::handle c0_obj,
                           py::handle kernel_obj, py::handle recurrent_obj, py::handle bias_obj,
                           py::handle lengths_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const py::ssize_t T = x.shape(0), N = x.shape(1), I = x.shape(2), H = sru_hidden_size(args, recurrent_obj);
  auto h0 = args.array<Scalar>("h0", h0_obj, {{"N", N}, {"H", H}});
  auto c0 = args.array<Scalar>("c0", c0_obj, {{"N", N}, {"H", H}});
  const py::ssize_t G = sru_gates(args, kernel_obj, I, H);
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"I", I}, {G == 4 ? "4*H" : "3*H", G * H}});
  auto recurrent = args.array<Scalar>("recurrent_weight", recurrent_obj, {{"", 2}, {"H", H}});
  auto bias = args.array<Scalar>("bias", bias_obj, {{"", 2}, {"H", H}});
  auto lengths = args.lengths(lengths_obj, T, N);

  auto y = new_array<Scalar>({T, N, H}), h_n = new_array<Scalar>({N, H}), c = new_array<Scalar>({T + 1, N, H});
  auto gates = new_array<Scalar>({T, N, G * H});
  std::copy_n(h0.data(), N * H, h_n.mutable_data());
  std::copy_n(c0.data(), N * H, c.mutable_data());
  const SruWeights<Scalar> weights{kernel.data(), recurrent.data(), bias.data()};
  {
    py::gil_scoped_release release;
    sru_forward(y.mutable_data(), h_n.mutable_data(), c.mutable_data(), gates.mutable_data(), x.data(), weights, G,
                data_or_null(lengths), Dims{T, N, I, H});
  }
  py::dict cache;
  cache["c"] = c;
  cache["gates"] = gates;
  return py::make_tuple(y, h_n, last_state(c, T, N, H), cache);
}

template <typename Scalar>
py::dict sru_backward_impl(const Args& args, py::handle dy_obj, py::handle dh_obj, py::handle dc_obj,
                           const py::dict& cache, py::handle x_obj, py::handle kernel_obj, py::handle recurrent_obj,
                           py::handle bias_obj, py::handle lengths_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const py::ssize_t T = x.shape(0), N = x.shape(1), I = x.shape(2), H = sru_hidden_size(args, recurrent_obj);
  auto dy = args.optional_array<Scalar>("dy", dy_obj, {{"T", T}, {"N", N}, {"H", H}});
  auto dh_n = args.optional_array<Scalar>("dh_n", dh_obj, {{"N", N}, {"H", H}});
  auto dc_n = args.optional_array<Scalar>("dc_n", dc_obj, {{"N", N}, {"H", H}});
  const py::ssize_t G = sru_gates(args, kernel_obj, I, H);
  const char* gates_label = G == 4 ? "4*H" : "3*H";
  auto c = cache_entry<Scalar>(args, cache, "c", {{"T+1", T + 1}, {"N", N}, {"H", H}});
  auto gates = cache_entry<Scalar>(args, cache, "gates", {{"T", T}, {"N", N}, {gates_label, G * H}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"I", I}, {gates_label, G * H}});
  auto recurrent = args.array<Scalar>("recurrent_weight", recurrent_obj, {{"", 2}, {"H", H}});
  auto bias = args.array<Scalar>("bias", bias_obj, {{"", 2}, {"H", H}});
  auto lengths = args.lengths(lengths_obj, T, N);

  auto dx = new_array<Scalar>({T, N, I}), dkernel = new_array<Scalar>({I, G * H});
  auto drecurrent = new_array<Scalar>({py::ssize_t(2), H}), dbias = new_array<Scalar>({py::ssize_t(2), H});
  CArray<Scalar> dh0 = copy_or_zeros(dh_n, N, H), dc0 = copy_or_zeros(dc_n, N, H);
  const SruWeights<Scalar> weights{kernel.data(), recurrent.data(), bias.data()};
  const SruGrads<Scalar> grads_out{dx.mutable_data(),      dh0.mutable_data(),        dc0.mutable_data(),
                                   dkernel.mutable_data(), drecurrent.mutable_data(), dbias.mutable_data()};
  {
    py::gil_scoped_release release;
    sru_backward(grads_out, data_or_null(dy), c.data(), gates.data(), x.data(), weights, G, data_or_null(lengths),
                 Dims{T, N, I, H});
  }
  py::dict grads;
  grads["x"] = dx;
  grads["h0"] = dh0;
  grads["c0"] = dc0;
  grads["kernel"] = dkernel;
  grads["recurrent_weight"] = drecurrent;
  grads["bias"] = dbias;
  return grads;
}

}  // namespace

void bind_sru(py::module_& m) {
  m.def(
      "sru_forward",
      [](py::handle x, py::handle h0, py::handle c0, py::handle kernel, py::handle recurrent_weight, py::handle bias,
         py::handle lengths) {
        const Args args("sru_forward");
        return with_dtype(args, x, [&](auto scalar) {
          return sru_forward_impl<decltype(scalar)>(args, x, h0, c0, kernel, recurrent_weight, bias, lengths);
        });
      },
      py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("kernel"), py::arg("recurrent_weight"), py::arg("bias"),
      py::arg("lengths") = py::none(),
      "SRU forward over x [T, N, I] from (h0, c0) [N, H], gate blocks h~, f, r[, skip]:\n"
      "f, r = sigmoid(x.kernel + v * c + b), c_new = f * c + (1 - f) * h~, h = r * c_new + (1 - r) * skip.\n"
      "Returns (y [T, N, H], h_n [N, H], c_n [N, H], cache). See docs/conventions.md.");
  m.def(
      "sru_backward",
      [](py::handle dy, py::handle dh_n, py::handle dc_n, const py::dict& cache, py::handle x, py::handle kernel,
         py::handle recurrent_weight, py::handle bias, py::handle lengths) {
        const Args args("sru_backward");
        return with_dtype(args, x, [&](auto scalar) {
          return sru_backward_impl<decltype(scalar)>(args, dy, dh_n, dc_n, cache, x, kernel, recurrent_weight, bias,
                                                     lengths);
        });
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"), py::arg("cache"), py::arg("x"), py::arg("kernel"),
      py::arg("recurrent_weight"), py::arg("bias"), py::arg("lengths") = py::none(),
      "SRU backpropagation through time. dy, dh_n and dc_n may be None (zero).\n"
      "Returns a dict of gradients keyed x, h0, c0, kernel, recurrent_weight, bias.");
}

}  // namespace rnnext::bindings
