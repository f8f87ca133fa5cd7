// Bindings for minGRU and minLSTM, whose gates all read x only (kernel [I, G*H], bias [G*H], no recurrent
// kernel): check and convert arguments, release the GIL, call rnnext::mingru_* / rnnext::minlstm_*. The two
// differ only in G and the engine function, so one template binds both.
#include "bindings/scan_checks.h"
#include "rnnext/mingru.h"
#include "rnnext/minlstm.h"

namespace rnnext::bindings {
namespace {

// Each cell: its gate count, the label of G*H in messages, and its engine functions.
struct MinGru {
  static constexpr py::ssize_t gates = kMinGruGates;
  static constexpr const char* gates_label = "2*H";
  template <typename Scalar, typename... Args>
  static void forward(Args&&... args) { mingru_forward<Scalar>(std::forward<Args>(args)...); }
  template <typename Scalar, typename... Args>
  static void backward(Args&&... args) { mingru_backward<Scalar>(std::forward<Args>(args)...); }
};

struct MinLstm {
  static constexpr py::ssize_t gates = kMinLstmGates;
  static constexpr const char* gates_label = "3*H";
  template <typename Scalar, typename... Args>
  static void forward(Args&&... args) { minlstm_forward<Scalar>(std::forward<Args>(args)...); }
  template <typename Scalar, typename... Args>
  static void backward(Args&&... args) { minlstm_backward<Scalar>(std::forward<Args>(args)...); }
};

template <typename Cell, typename Scalar>
py::tuple forward_impl(const Args& args, py::handle x_obj, py::handle h0_obj, py::handle kernel_obj,
                       py::handle bias_obj, py::handle lengths_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const py::ssize_t T = x.shape(0), N = x.shape(1), I = x.shape(2);
  const py::ssize_t G = Cell::gates, H = hidden_from_kernel(args, kernel_obj, I, G, Cell::gates_label);
  auto h0 = args.array<Scalar>("h0", h0_obj, {{"N", N}, {"H", H}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"I", I}, {Cell::gates_label, G * H}});
  auto bias = args.array<Scalar>("bias", bias_obj, {{Cell::gates_label, G * H}});
  auto lengths = args.lengths(lengths_obj, T, N);

  auto y = new_array<Scalar>({T, N, H}), h = new_array<Scalar>({T + 1, N, H}), gates = new_array<Scalar>({T, N, G * H});
  std::copy_n(h0.data(), N * H, h.mutable_data());
  {
    py::gil_scoped_release release;
    Cell::template forward<Scalar>(y.mutable_data(), h.mutable_data(), gates.mutable_data(), x.data(),
                                   InputGateWeights<Scalar>{kernel.data(), bias.data()}, data_or_null(lengths),
                                   Dims{T, N, I, H});
  }
  py::dict cache;
  cache["h"] = h;
  cache["gates"] = gates;
  return py::make_tuple(y, last_state(h, T, N, H), cache);
}

template <typename Cell, typename Scalar>
py::dict backward_impl(const Args& args, py::handle dy_obj, py::handle dh_obj, const py::dict& cache,
                       py::handle x_obj, py::handle kernel_obj, py::handle bias_obj, py::handle lengths_obj) {
  auto x = args.sequence<Scalar>(x_obj);
  const py::ssize_t T = x.shape(0), N = x.shape(1), I = x.shape(2);
  const py::ssize_t G = Cell::gates, H = hidden_from_kernel(args, kernel_obj, I, G, Cell::gates_label);
  auto dy = args.optional_array<Scalar>("dy", dy_obj, {{"T", T}, {"N", N}, {"H", H}});
  auto dh_n = args.optional_array<Scalar>("dh_n", dh_obj, {{"N", N}, {"H", H}});
  auto h = cache_entry<Scalar>(args, cache, "h", {{"T+1", T + 1}, {"N", N}, {"H", H}});
  auto gates = cache_entry<Scalar>(args, cache, "gates", {{"T", T}, {"N", N}, {Cell::gates_label, G * H}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"I", I}, {Cell::gates_label, G * H}});
  auto bias = args.array<Scalar>("bias", bias_obj, {{Cell::gates_label, G * H}});
  auto lengths = args.lengths(lengths_obj, T, N);

  auto dx = new_array<Scalar>({T, N, I}), dkernel = new_array<Scalar>({I, G * H}), dbias = new_array<Scalar>({G * H});
  CArray<Scalar> dh0 = copy_or_zeros(dh_n, N, H);
  {
    py::gil_scoped_release release;
    const InputGateGrads<Scalar> grads_out{dx.mutable_data(), dh0.mutable_data(), dkernel.mutable_data(),
                                           dbias.mutable_data()};
    Cell::template backward<Scalar>(grads_out, data_or_null(dy), h.data(), gates.data(), x.data(),
                                    InputGateWeights<Scalar>{kernel.data(), bias.data()}, data_or_null(lengths),
                                    Dims{T, N, I, H});
  }
  py::dict grads;
  grads["x"] = dx;
  grads["h0"] = dh0;
  grads["kernel"] = dkernel;
  grads["bias"] = dbias;
  return grads;
}

template <typename Cell>
void bind_cell(py::module_& m, const char* forward_name, const char* backward_name, const char* forward_doc) {
  m.def(
      forward_name,
      [forward_name](py::handle x, py::handle h0, py::handle kernel, py::handle bias, py::handle lengths) {
        const Args args(forward_name);
        return with_dtype(args, x, [&](auto scalar) {
          return forward_impl<Cell, decltype(scalar)>(args, x, h0, kernel, bias, lengths);
        });
      },
      py::arg("x"), py::arg("h0"), py::arg("kernel"), py::arg("bias"), py::arg("lengths") = py::none(),
      forward_doc);
  m.def(
      backward_name,
      [backward_name](py::handle dy, py::handle dh_n, const py::dict& cache, py::handle x, py::handle kernel,
                      py::handle bias, py::handle lengths) {
        const Args args(backward_name);
        return with_dtype(args, x, [&](auto scalar) {
          return backward_impl<Cell, decltype(scalar)>(args, dy, dh_n, cache, x, kernel, bias, lengths);
        });
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("cache"), py::arg("x"), py::arg("kernel"), py::arg("bias"),
      py::arg("lengths") = py::none(),
      "Backpropagation through time. dy and dh_n may be None (zero).\n"
      "Returns a dict of gradients keyed x, h0, kernel, bias.");
}

}  // namespace

void bind_min_cells(py::module_& m) {
  bind_cell<MinGru>(m, "mingru_forward", "mingru_backward",
                    "minGRU forward over x [T, N, I] from h0 [N, H], gate order z, h~: z = sigmoid(x.kernel_z + b_z),\n"
                    "h~ = x.kernel_h + b_h, h_new = (1 - z) * h + z * h~.\n"
                    "Returns (y [T, N, H], h_n [N, H], cache). See docs/conventions.md.");
  bind_cell<MinLstm>(m, "minlstm_forward", "minlstm_backward",
                     "minLSTM forward over x [T, N, I] from h0 [N, H], gate order f, i, h~: f, i = sigmoid(x.kernel + b),\n"
                     "h~ = x.kernel_h + b_h, h_new = (f * h + i * h~) / (f + i).\n"
                     "Returns (y [T, N, H], h_n [N, H], cache). See docs/conventions.md.");
}

}  // namespace rnnext::bindings
