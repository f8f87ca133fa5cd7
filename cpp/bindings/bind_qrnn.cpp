// Bindings for the QRNN cell: check and convert arguments, release the GIL, call rnnext::qrnn_*.
#include "bindings/scan_checks.h"
#include "rnnext/qrnn.h"

namespace rnnext::bindings {
namespace {

// (K, H) from kernel [K, I, 3H].
std::pair<py::ssize_t, py::ssize_t> qrnn_sizes(const Args& args, const py::handle& kernel, py::ssize_t I) {
  py::array k = args.numpy("kernel", kernel);
  if (k.ndim() != 3 || k.shape(0) < 1 || k.shape(1) != I || k.shape(2) < 3 || k.shape(2) % 3 != 0)
    args.fail_value("kernel has shape " + shape_string(k) + ", expected (K, I=" + std::to_string(I) +
                    ", 3*H) with the width K >= 1 and H >= 1");
  return {k.shape(0), k.shape(2) / 3};
}

template <typename Scalar>
py::tuple qrnn_forward_impl(const Args& args, py::handle x_obj, py::handle h0_obj, py::handle c0_obj,
                            py::handle x0_obj, py::handle kernel_obj, py::handle bias_obj, py::handle lengths_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const py::ssize_t T = x.shape(0), N = x.shape(1), I = x.shape(2);
  const auto [K, H] = qrnn_sizes(args, kernel_obj, I);
  auto h0 = args.array<Scalar>("h0", h0_obj, {{"N", N}, {"H", H}});
  auto c0 = args.array<Scalar>("c0", c0_obj, {{"N", N}, {"H", H}});
  auto x0 = args.array<Scalar>("x0", x0_obj, {{"N", N}, {"(K-1)*I", (K - 1) * I}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"K", K}, {"I", I}, {"3*H", 3 * H}});
  auto bias = args.array<Scalar>("bias", bias_obj, {{"3*H", 3 * H}});
  auto lengths = args.lengths(lengths_obj, T, N);

  auto y = new_array<Scalar>({T, N, H}), h_n = new_array<Scalar>({N, H}), x_n = new_array<Scalar>({N, (K - 1) * I});
  auto c = new_array<Scalar>({T + 1, N, H}), gates = new_array<Scalar>({T, N, 3 * H});
  std::copy_n(h0.data(), N * H, h_n.mutable_data());
  std::copy_n(c0.data(), N * H, c.mutable_data());
  const QrnnWeights<Scalar> weights{kernel.data(), bias.data(), K};
  {
    py::gil_scoped_release release;
    qrnn_forward(y.mutable_data(), h_n.mutable_data(), x_n.mutable_data(), c.mutable_data(), gates.mutable_data(),
                 x.data(), x0.data(), weights, data_or_null(lengths), Dims{T, N, I, H});
  }
  py::dict cache;
  cache["c"] = c;
  cache["gates"] = gates;
  return py::make_tuple(y, h_n, last_state(c, T, N, H), x_n, cache);
}

template <typename Scalar>
py::dict qrnn_backward_impl(const Args& args, py::handle dy_obj, py::handle dh_obj, py::handle dc_obj,
                            py::handle dx_obj, const py::dict& cache, py::handle x_obj, py::handle x0_obj,
                            py::handle kernel_obj, py::handle bias_obj, py::handle lengths_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const py::ssize_t T = x.shape(0), N = x.shape(1), I = x.shape(2);
  const auto [K, H] = qrnn_sizes(args, kernel_obj, I);
  auto dy = args.optional_array<Scalar>("dy", dy_obj, {{"T", T}, {"N", N}, {"H", H}});
  auto dh_n = args.optional_array<Scalar>("dh_n", dh_obj, {{"N", N}, {"H", H}});
  auto dc_n = args.optional_array<Scalar>("dc_n", dc_obj, {{"N", N}, {"H", H}});
  auto dx_n = args.optional_array<Scalar>("dx_n", dx_obj, {{"N", N}, {"(K-1)*I", (K - 1) * I}});
  auto c = cache_entry<Scalar>(args, cache, "c", {{"T+1", T + 1}, {"N", N}, {"H", H}});
  auto gates = cache_entry<Scalar>(args, cache, "gates", {{"T", T}, {"N", N}, {"3*H", 3 * H}});
  auto x0 = args.array<Scalar>("x0", x0_obj, {{"N", N}, {"(K-1)*I", (K - 1) * I}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"K", K}, {"I", I}, {"3*H", 3 * H}});
  auto bias = args.array<Scalar>("bias", bias_obj, {{"3*H", 3 * H}});
  auto lengths = args.lengths(lengths_obj, T, N);

  auto dx = new_array<Scalar>({T, N, I}), dkernel = new_array<Scalar>({K, I, 3 * H});
  auto dbias = new_array<Scalar>({3 * H});
  CArray<Scalar> dh0 = copy_or_zeros(dh_n, N, H), dc0 = copy_or_zeros(dc_n, N, H);
  CArray<Scalar> dx0 = copy_or_zeros(dx_n, N, (K - 1) * I);
  const QrnnWeights<Scalar> weights{kernel.data(), bias.data(), K};
  const QrnnGrads<Scalar> grads_out{dx.mutable_data(),  dh0.mutable_data(),     dc0.mutable_data(),
                                    dx0.mutable_data(), dkernel.mutable_data(), dbias.mutable_data()};
  {
    py::gil_scoped_release release;
    qrnn_backward(grads_out, data_or_null(dy), c.data(), gates.data(), x.data(), x0.data(), weights,
                  data_or_null(lengths), Dims{T, N, I, H});
  }
  py::dict grads;
  grads["x"] = dx;
  grads["h0"] = dh0;
  grads["c0"] = dc0;
  grads["x0"] = dx0;
  grads["kernel"] = dkernel;
  grads["bias"] = dbias;
  return grads;
}

}  // namespace

void bind_qrnn(py::module_& m) {
  m.def(
      "qrnn_forward",
      [](py::handle x, py::handle h0, py::handle c0, py::handle x0, py::handle kernel, py::handle bias,
         py::handle lengths) {
        const Args args("qrnn_forward");
        return with_dtype(args, x, [&](auto scalar) {
          return qrnn_forward_impl<decltype(scalar)>(args, x, h0, c0, x0, kernel, bias, lengths);
        });
      },
      py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("x0"), py::arg("kernel"), py::arg("bias"),
      py::arg("lengths") = py::none(),
      "QRNN forward over x [T, N, I] from (h0, c0) [N, H] and the input history x0 [N, (K-1)*I], gate blocks z, f, o:\n"
      "a causal convolution of width K (kernel [K, I, 3H]), then c_new = f * c + (1 - f) * z, h = o * c_new.\n"
      "Returns (y [T, N, H], h_n [N, H], c_n [N, H], x_n [N, (K-1)*I], cache). See docs/conventions.md.");
  m.def(
      "qrnn_backward",
      [](py::handle dy, py::handle dh_n, py::handle dc_n, py::handle dx_n, const py::dict& cache, py::handle x,
         py::handle x0, py::handle kernel, py::handle bias, py::handle lengths) {
        const Args args("qrnn_backward");
        return with_dtype(args, x, [&](auto scalar) {
          return qrnn_backward_impl<decltype(scalar)>(args, dy, dh_n, dc_n, dx_n, cache, x, x0, kernel, bias, lengths);
        });
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"), py::arg("dx_n"), py::arg("cache"), py::arg("x"), py::arg("x0"),
      py::arg("kernel"), py::arg("bias"), py::arg("lengths") = py::none(),
      "QRNN backpropagation through time. dy, dh_n, dc_n and dx_n may be None (zero).\n"
      "Returns a dict of gradients keyed x, h0, c0, x0, kernel, bias.");
}

}  // namespace rnnext::bindings
