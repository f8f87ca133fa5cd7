// Bindings for the dense layer: check and convert arguments, release the GIL, call rnnext::dense_*.
#include "bindings/checks.h"
#include "rnnext/dense.h"

namespace rnnext::bindings {
namespace {

DenseActivation parse_activation(const Args& args, const std::string& name) {
  if (name == "linear") return DenseActivation::Linear;
  if (name == "sigmoid") return DenseActivation::Sigmoid;
  if (name == "tanh") return DenseActivation::Tanh;
  if (name == "relu") return DenseActivation::Relu;
  if (name == "softmax") return DenseActivation::Softmax;
  args.fail_value("activation is '" + name + "', expected 'linear', 'sigmoid', 'tanh', 'relu' or 'softmax'");
}

template <typename Body>
void with_activation(DenseActivation act, Body&& body) {
  with_variant<DenseActivation::Linear, DenseActivation::Sigmoid, DenseActivation::Tanh, DenseActivation::Relu,
               DenseActivation::Softmax>(act, std::forward<Body>(body));
}

// x [M, F] and kernel [F, U] give the sizes of a call.
struct DenseDims {
  py::ssize_t M, F, U;
};

DenseDims dense_dims(const Args& args, const py::handle& x_obj, const py::handle& kernel_obj) {
  const py::array x = args.numpy("x", x_obj), kernel = args.numpy("kernel", kernel_obj);
  if (x.ndim() != 2)
    args.fail_value("x has shape " + shape_string(x) + ", expected (M, F) (flatten the leading axes into M rows)");
  const py::ssize_t F = x.shape(1);
  if (kernel.ndim() != 2 || kernel.shape(0) != F || kernel.shape(1) < 1)
    args.fail_value("kernel has shape " + shape_string(kernel) + ", expected (F=" + std::to_string(F) +
                    ", U) with U >= 1");
  return {x.shape(0), F, kernel.shape(1)};
}

// A weight gradient to add into: the caller's buffer (a Parameter.grad), or fresh zeros when it is None.
template <typename Scalar>
CArray<Scalar> accumulator(const Args& args, const char* name, const py::handle& obj, const std::vector<Dim>& dims) {
  if (!obj.is_none()) return args.output_array<Scalar>(name, obj, dims);
  std::vector<py::ssize_t> shape;
  for (const Dim& dim : dims) shape.push_back(dim.size);
  auto zeros = new_array<Scalar>(shape);
  std::fill_n(zeros.mutable_data(), zeros.size(), Scalar(0));
  return zeros;
}

template <typename Scalar>
py::array dense_forward_impl(const Args& args, py::handle x_obj, py::handle kernel_obj, py::handle bias_obj,
                                  DenseActivation act) {
  const auto [M, F, U] = dense_dims(args, x_obj, kernel_obj);
  auto x = args.array<Scalar>("x", x_obj, {{"M", M}, {"F", F}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"F", F}, {"U", U}});
  auto bias = args.array<Scalar>("bias", bias_obj, {{"U", U}});
  auto y = new_array<Scalar>({M, U});
  {
    py::gil_scoped_release release;
    with_activation(act, [&](auto variant) {
      dense_forward<Scalar, decltype(variant)::value>(y.mutable_data(), x.data(), kernel.data(), bias.data(), M, F, U);
    });
  }
  return y;
}

template <typename Scalar>
py::dict dense_backward_impl(const Args& args, py::handle dy_obj, py::handle y_obj, py::handle x_obj,
                             py::handle kernel_obj, DenseActivation act, py::handle dkernel_obj,
                             py::handle dbias_obj) {
  const auto [M, F, U] = dense_dims(args, x_obj, kernel_obj);
  auto dy = args.array<Scalar>("dy", dy_obj, {{"M", M}, {"U", U}});
  auto y = args.array<Scalar>("y", y_obj, {{"M", M}, {"U", U}});
  auto x = args.array<Scalar>("x", x_obj, {{"M", M}, {"F", F}});
  auto kernel = args.array<Scalar>("kernel", kernel_obj, {{"F", F}, {"U", U}});
  auto dkernel = accumulator<Scalar>(args, "dkernel", dkernel_obj, {{"F", F}, {"U", U}});
  auto dbias = accumulator<Scalar>(args, "dbias", dbias_obj, {{"U", U}});
  auto dx = new_array<Scalar>({M, F});
  {
    py::gil_scoped_release release;
    with_activation(act, [&](auto variant) {
      dense_backward<Scalar, decltype(variant)::value>(dx.mutable_data(), dkernel.mutable_data(),
                                                       dbias.mutable_data(), dy.data(), y.data(), x.data(),
                                                       kernel.data(), M, F, U);
    });
  }
  py::dict grads;
  grads["x"] = dx;
  grads["kernel"] = dkernel;
  grads["bias"] = dbias;
  return grads;
}

}  // namespace

void bind_dense(py::module_& m) {
  m.def(
      "dense_forward",
      [](py::handle x, py::handle kernel, py::handle bias, const std::string& activation) {
        const Args args("dense_forward");
        const DenseActivation act = parse_activation(args, activation);
        return with_dtype(args, x, [&](auto scalar) {
          return dense_forward_impl<decltype(scalar)>(args, x, kernel, bias, act);
        });
      },
      py::arg("x"), py::arg("kernel"), py::arg("bias"), py::arg("activation") = "linear",
      "Dense forward over x [M, F]: y = act(x.kernel + bias), kernel [F, U], bias [U].\n"
      "activation in linear, sigmoid, tanh, relu, softmax (over each row). Returns y [M, U].");
  m.def(
      "dense_backward",
      [](py::handle dy, py::handle y, py::handle x, py::handle kernel, const std::string& activation,
         py::handle dkernel, py::handle dbias) {
        const Args args("dense_backward");
        const DenseActivation act = parse_activation(args, activation);
        return with_dtype(args, x, [&](auto scalar) {
          return dense_backward_impl<decltype(scalar)>(args, dy, y, x, kernel, act, dkernel, dbias);
        });
      },
      py::arg("dy"), py::arg("y"), py::arg("x"), py::arg("kernel"), py::arg("activation") = "linear",
      py::arg("dkernel") = py::none(), py::arg("dbias") = py::none(),
      "Dense backward from dy [M, U] and the forward's output y [M, U]. Returns a dict of gradients keyed x, kernel,\n"
      "bias. dkernel [F, U] and dbias [U], when given, are ADDED to in place (a layer's Parameter.grad) and\n"
      "returned; they must not overlap the inputs. Otherwise fresh arrays are returned.");
}

}  // namespace rnnext::bindings
