// Bindings for the GRU cell: check and convert arguments, release the GIL, call rnnext::gru_*.
#include "bindings/checks.h"
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
                           py::handle recurrent_obj, py::handle bias_obj, py::handle lengths_obj, bool reset_after) {
  auto x = args.sequence<Scalar>(x_obj);
  const py::ssize_t T = x.shape(0), N = x.shape(1), I = x.shape(2), H = args.hidden_size(recurrent_obj, 3, "3*H");
  auto h0 = args.array<Scalar>("h0", h0_obj, {{"N", N}, {"H", H}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"I", I}, {"3*H", 3 * H}});
  auto recurrent = args.array<Scalar>("recurrent_kernel", recurrent_obj, {{"H", H}, {"3*H", 3 * H}});
  auto bias = args.array<Scalar>("bias", bias_obj, gru_bias_dims(H, reset_after));
  auto lengths = args.lengths(lengths_obj, T, N);

  CArray<Scalar> y({T, N, H}), h({T + 1, N, H}), gates({T, N, 3 * H}), recurrent_out({T, N, H});
  std::copy_n(h0.data(), N * H, h.mutable_data());
  const GruWeights<Scalar> weights{kernel.data(), recurrent.data(), bias.data()};
  const GruCache<Scalar> state{h.mutable_data(), gates.mutable_data(), recurrent_out.mutable_data()};
  {
    py::gil_scoped_release release;
    with_variant<false, true>(reset_after, [&](auto variant) {
      gru_forward<Scalar, decltype(variant)::value>(y.mutable_data(), state, x.data(), weights, data_or_null(lengths),
                                                    Dims{T, N, I, H});
    });
  }
  CArray<Scalar> h_n({N, H});
  std::copy_n(h.data() + T * N * H, N * H, h_n.mutable_data());
  py::dict cache;
  cache["h"] = h;
  cache["gates"] = gates;
  cache[recurrent_key(reset_after)] = recurrent_out;
  return py::make_tuple(y, h_n, cache);
}

template <typename Scalar>
py::dict gru_backward_impl(const Args& args, py::handle dy_obj, py::handle dh_obj, const py::dict& cache,
                           py::handle x_obj, py::handle kernel_obj, py::handle recurrent_obj, py::handle bias_obj,
                           py::handle lengths_obj, bool reset_after) {
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

  std::vector<py::ssize_t> bias_shape;
  for (const Dim& dim : bias_dims) bias_shape.push_back(dim.size);
  CArray<Scalar> dx({T, N, I}), dkernel({I, 3 * H}), drecurrent({H, 3 * H}), dbias(bias_shape);
  CArray<Scalar> dh0 = copy_or_zeros(dh_n, N, H);
  const GruWeights<Scalar> weights{kernel.data(), recurrent.data(), bias.data()};
  const GruCache<const Scalar> state{h.data(), gates.data(), recurrent_out.data()};
  const GruGrads<Scalar> grads_out{dx.mutable_data(), dh0.mutable_data(), dkernel.mutable_data(),
                                   drecurrent.mutable_data(), dbias.mutable_data()};
  {
    py::gil_scoped_release release;
    with_variant<false, true>(reset_after, [&](auto variant) {
      gru_backward<Scalar, decltype(variant)::value>(grads_out, data_or_null(dy), state, x.data(), weights,
                                                     data_or_null(lengths), Dims{T, N, I, H});
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
         py::handle lengths, bool reset_after) {
        const Args args("gru_forward");
        return with_dtype(args, x, [&](auto scalar) {
          return gru_forward_impl<decltype(scalar)>(args, x, h0, kernel, recurrent_kernel, bias, lengths, reset_after);
        });
      },
      py::arg("x"), py::arg("h0"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("lengths") = py::none(), py::arg("reset_after") = true,
      "GRU forward over x [T, N, I] from h0 [N, H]; gate order r,z,n; h_new = (1 - z) * n + z * h.\n"
      "Returns (y [T, N, H], h_n [N, H], cache). See docs/conventions.md.");
  m.def(
      "gru_backward",
      [](py::handle dy, py::handle dh_n, const py::dict& cache, py::handle x, py::handle kernel,
         py::handle recurrent_kernel, py::handle bias, py::handle lengths, bool reset_after) {
        const Args args("gru_backward");
        return with_dtype(args, x, [&](auto scalar) {
          return gru_backward_impl<decltype(scalar)>(args, dy, dh_n, cache, x, kernel, recurrent_kernel, bias,
                                                     lengths, reset_after);
        });
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("cache"), py::arg("x"), py::arg("kernel"), py::arg("recurrent_kernel"),
      py::arg("bias"), py::arg("lengths") = py::none(), py::arg("reset_after") = true,
      "GRU backpropagation through time. dy and dh_n may be None (zero).\n"
      "Returns a dict of gradients keyed x, h0, kernel, recurrent_kernel, bias.");
}

}  // namespace rnnext::bindings
